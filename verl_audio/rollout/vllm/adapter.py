"""``OmniVLLMServerAdapter``: verl's vLLM ``ServerAdapter`` that also feeds the replica's speech server.

The actor worker side of ``rollout.name=vllm`` (verl's ``_ROLLOUT_REGISTRY[("vllm", "async")]``, pointed
here by ``verl_audio.rollout.register``). Without speech it is verl's adapter unchanged. With
``engine_kwargs.speech.enable`` the replica runs a ``StandaloneSpeechServer`` with its own thinker
(vLLM returns no hidden states to condition the talker on), and that thinker must speak with this step's
weights: every tensor verl streams to vLLM is also copied to CPU and sent, in buckets of
``checkpoint_engine.update_weights_bucket_megabytes`` (at most two of them in flight), to
``speech_server_<replica>``; the update ends with ``finish_weight_update(global_steps)`` once vLLM has its
weights too.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import ray
import torch
from verl.workers.rollout.utils import ensure_async_iterator
from verl.workers.rollout.vllm_rollout.vllm_rollout import ServerAdapter

from verl_audio.rollout.speech_endpoints import speech_actor_name
from verl_audio.speech.config import speech_enabled

#: weight buckets sent to the speech server and not yet loaded there, at most
MAX_BUCKETS_IN_FLIGHT = 2


class OmniVLLMServerAdapter(ServerAdapter):
    """verl's adapter; full-tensor updates also reach the speech server when speech is on."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.speaks = speech_enabled(self.config.engine_kwargs)
        self.bucket_bytes = int(self.config.checkpoint_engine.update_weights_bucket_megabytes) << 20
        self._speech: ray.actor.ActorHandle | None = None

    def _speech_server(self) -> ray.actor.ActorHandle:
        if self._speech is None:
            self._speech = ray.get_actor(speech_actor_name(self.replica_rank))
        return self._speech

    async def _tee(self, weights: Any, loaded: list[int]) -> AsyncIterator[tuple[str, torch.Tensor]]:
        """Yield ``weights`` unchanged; CPU copies go to the speech server in buckets, at most
        ``MAX_BUCKETS_IN_FLIGHT`` of them unanswered (the oldest is awaited first), so a large thinker never
        sits in Ray's object store whole. Tensors loaded per bucket are appended to ``loaded``."""
        in_flight: deque[Any] = deque()

        async def send(bucket: list[tuple[str, torch.Tensor]]) -> None:
            while len(in_flight) >= MAX_BUCKETS_IN_FLIGHT:
                loaded.append(await in_flight.popleft())
            in_flight.append(self._speech_server().update_weights.remote(bucket))  # serialized now: order kept

        bucket: list[tuple[str, torch.Tensor]] = []
        size = 0
        async for name, tensor in ensure_async_iterator(weights):
            copy = tensor.detach().to("cpu", copy=True)
            bucket.append((name, copy))
            size += copy.numel() * copy.element_size()
            if size >= self.bucket_bytes:
                await send(bucket)
                bucket, size = [], 0
            yield name, tensor
        if bucket:
            await send(bucket)
        while in_flight:
            loaded.append(await in_flight.popleft())

    async def update_weights(self, weights: Any, global_steps: int | None = None,
                             wire_format: str = "named_tensors", **kwargs: Any) -> None:  # fmt: skip
        if self.speaks and wire_format != "named_tensors":
            raise NotImplementedError(f"speech beside vLLM takes full-tensor weight updates (named_tensors), not "
                                      f"{wire_format!r}: the speech server would keep stale weights")
        if not (self.speaks and self._has_server):
            return await super().update_weights(weights, global_steps=global_steps, wire_format=wire_format, **kwargs)
        per_bucket: list[int] = []
        await super().update_weights(self._tee(weights, per_bucket), global_steps=global_steps,
                                     wire_format=wire_format, **kwargs)  # fmt: skip
        loaded = sum(per_bucket)
        if loaded == 0:
            raise RuntimeError(f"{speech_actor_name(self.replica_rank)}: the weight update held no thinker tensor; "
                               "check the weight names")
        await self._speech_server().finish_weight_update.remote(global_steps)
