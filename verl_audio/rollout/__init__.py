"""Rollout backends for audio models in verl's server-mode rollout, and what they share.

``register()`` (the plugin runs it at ``import verl``) installs two backends in verl's registries, each by
dotted path, so a backend's modules (and vLLM) are imported only when a run picks it:

* ``rollout.name=hf`` (``hf/``): the reference backend, transformers generation: ``hf.replica.HFReplica``
  starts one ``hf.server.HFRolloutServer`` per replica, which batches requests (``batcher``) into
  ``hf.engine.AudioGenerator``; ``hf.adapter.HFServerAdapter`` pushes the actor's weights each step.
* ``rollout.name=vllm`` (``vllm/``): verl's own vLLM rollout with its replica class replaced by
  ``vllm.replica.OmniVLLMReplica`` (whole audio, vLLM's CPU build, a speech server beside it) and its
  worker-side ``ServerAdapter`` by ``vllm.adapter.OmniVLLMServerAdapter`` (verl's, plus the speech copy).

Shared by both: ``features`` (audio -> log-mel features, cached by content), ``sampling`` (verl's sampling
params and the log-probs verl compares), ``batcher``, ``placement`` (where a server runs), ``options``
(device, dtype, model path), and the speech service the backends start or attach (``speech_server``,
``speech_endpoints``, ``agent_loop``), which runs the speech stage of ``verl_audio.speech``. Neither backend
imports the other.
"""

from __future__ import annotations

HF_BACKEND = "hf"
VLLM_BACKEND = "vllm"
#: worker-side adapters by backend, as dotted paths (verl's `_ROLLOUT_REGISTRY` stores them so)
HF_ADAPTER = "verl_audio.rollout.hf.adapter.HFServerAdapter"
VLLM_ADAPTER = "verl_audio.rollout.vllm.adapter.OmniVLLMServerAdapter"
#: verl 0.9.1's own entry for the vLLM adapter (the one replaced)
VERL_VLLM_ADAPTER = "verl.workers.rollout.vllm_rollout.ServerAdapter"


def _load_hf_replica() -> type:
    from verl_audio.rollout.hf.replica import HFReplica

    return HFReplica


def _load_vllm_replica() -> type:
    try:
        from verl_audio.rollout.vllm.replica import OmniVLLMReplica
    except ImportError as exc:
        raise ImportError(
            f"rollout.name=vllm needs vLLM ({exc}); scripts/setup_env.sh installs it unless VLLM=none"
        ) from exc
    return OmniVLLMReplica


def register() -> list[str]:
    """Register both backends in verl's replica and worker-adapter registries (idempotent); returns their names."""
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    from verl_audio.patches import register_rollout_adapter

    RolloutReplicaRegistry.register(HF_BACKEND, _load_hf_replica)
    register_rollout_adapter(HF_BACKEND, HF_ADAPTER)
    RolloutReplicaRegistry.register(VLLM_BACKEND, _load_vllm_replica)
    register_rollout_adapter(VLLM_BACKEND, VLLM_ADAPTER, replaces=VERL_VLLM_ADAPTER)
    return [f"rollout:{HF_BACKEND}", f"rollout:{VLLM_BACKEND}"]
