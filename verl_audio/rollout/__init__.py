"""Rollout backends for Qwen2.5-Omni with audio, in verl's server-mode rollout.

``register()`` (the plugin runs it at ``import verl``) installs two backends in verl's registries:

* ``rollout.name=vllm``: verl's own vLLM rollout, with its replica class replaced by
  ``vllm_server.OmniVLLMReplica`` (whole audio for Omni, vLLM's CPU build, a speech server beside it; see
  that module) and its worker-side ``ServerAdapter`` by ``vllm_adapter.OmniVLLMServerAdapter`` (verl's,
  plus the weights for that speech server).
* ``rollout.name=hf``: the reference backend, transformers generation. Pieces, in the order a request
  meets them:

* ``replica.HFReplica``: verl's ``RolloutReplica``; starts one server actor per replica (hybrid mode).
* ``server.HFRolloutServer``: vLLM-compatible async ``generate`` and the control calls.
* ``batcher.RequestBatcher``: concurrent requests -> padded batches (collection window, abort gate).
* ``features``: audio -> log-mel features, cached by clip content (the n copies of a prompt share them).
* ``engine.OmniGenerator``: the thinker, a left-padded prefill with audio and a KV-cached decode loop.
* ``sampling``: verl's sampling params, temperature/top-k/top-p, and the log-probs verl compares.
* ``adapter.HFServerAdapter``: verl's worker-side ``BaseRollout``; pushes the actor's weights each step.
* ``config.HFRolloutOptions``: ``rollout.engine_kwargs.hf``.
"""

from __future__ import annotations

#: name of the `hf` backend in verl's registries and prefix of its server actors' names
BACKEND = "hf"
ADAPTER = "verl_audio.rollout.adapter.HFServerAdapter"
#: verl's vLLM backend name, whose replica and adapter classes are replaced
VLLM_BACKEND = "vllm"
VLLM_ADAPTER = "verl_audio.rollout.vllm_adapter.OmniVLLMServerAdapter"
#: verl 0.9.1's own entry for the vLLM adapter (the one replaced)
VERL_VLLM_ADAPTER = "verl.workers.rollout.vllm_rollout.ServerAdapter"


def _load_replica() -> type:
    from verl_audio.rollout.replica import HFReplica

    return HFReplica


def _load_vllm_replica() -> type:
    try:
        from verl_audio.rollout.vllm_server import OmniVLLMReplica
    except ImportError as exc:
        raise ImportError(
            f"rollout.name=vllm needs vLLM ({exc}); scripts/setup_env.sh installs it unless VLLM=none"
        ) from exc
    return OmniVLLMReplica


def register() -> list[str]:
    """Register both backends in verl's replica and worker-adapter registries (idempotent); returns their names."""
    from verl_audio.patches import register_rollout_adapter
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    RolloutReplicaRegistry.register(BACKEND, _load_replica)
    register_rollout_adapter(BACKEND, ADAPTER)
    RolloutReplicaRegistry.register(VLLM_BACKEND, _load_vllm_replica)
    register_rollout_adapter(VLLM_BACKEND, VLLM_ADAPTER, replaces=VERL_VLLM_ADAPTER)
    return [f"rollout:{BACKEND}", f"rollout:{VLLM_BACKEND}"]
