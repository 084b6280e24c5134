"""The `hf` rollout backend: Qwen2.5-Omni thinker generation with audio, in verl's server-mode rollout.

Select it with ``actor_rollout_ref.rollout.name=hf`` once ``register()`` has run (the plugin does it at
``import verl``). Pieces, in the order a request meets them:

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

BACKEND = "hf"
ADAPTER = "verl_audio.rollout.adapter.HFServerAdapter"


def _load_replica() -> type:
    from verl_audio.rollout.replica import HFReplica

    return HFReplica


def register() -> list[str]:
    """Register the backend in verl's replica and worker-adapter registries (idempotent); returns its names."""
    from verl.workers.rollout.base import _ROLLOUT_REGISTRY
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    RolloutReplicaRegistry.register(BACKEND, _load_replica)
    _ROLLOUT_REGISTRY[(BACKEND, "async")] = ADAPTER
    return [f"rollout:{BACKEND}"]
