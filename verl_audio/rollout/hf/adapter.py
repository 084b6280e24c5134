"""``HFServerAdapter``: the actor-worker side of the `hf` backend (verl's ``_ROLLOUT_REGISTRY[("hf", "async")]``).

verl builds it in every actor worker before the replicas exist, so the server is looked up lazily by
its Ray actor name. Weights: ``ActorRolloutRefWorker.update_weights`` hands every rank a generator
of full tensors with the thinker's HF names, whose items are produced by collectives — so every rank
drains it, and only the first rank of each replica forwards the tensors, moved to CPU and grouped in
buckets of ``checkpoint_engine.update_weights_bucket_megabytes``, to its server through Ray's object
store. That copy is the simple correct path for CPU and small models; a CUDA-IPC path would avoid it.

LoRA (``peft_config`` given): an adapter update (``base_sync_done``) is sent whole, in one call, and the
server applies it to LoRA layers injected into its model on the first one (``verl_audio.models.lora``); a base
update (the first sync of a rollout started on dummy weights) goes in buckets like full weights.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import ray
import torch
from verl.workers.rollout.base import BaseRollout

from verl_audio.rollout.hf.replica import server_actor_name

logger = logging.getLogger(__name__)


async def _items(weights: Iterable[Any] | AsyncIterator[Any]) -> AsyncIterator[Any]:
    if hasattr(weights, "__aiter__"):
        async for item in weights:  # type: ignore[union-attr]
            yield item
    else:
        for item in weights:  # type: ignore[union-attr]
            yield item


class HFServerAdapter(BaseRollout):
    """Wakes, sleeps and loads weights into this worker's replica server."""

    def __init__(self, config: Any, model_config: Any, device_mesh: Any, replica_rank: int = -1) -> None:
        super().__init__(config, model_config, device_mesh)
        rank = int(os.environ.get("RANK", "0"))
        per_replica = (
            self.config.tensor_model_parallel_size
            * self.config.data_parallel_size
            * self.config.pipeline_model_parallel_size
        )
        self.replica_rank = rank // per_replica if replica_rank == -1 else replica_rank
        self.rollout_rank = rank % per_replica
        self.has_server = self.rollout_rank == 0
        self.bucket_bytes = int(self.config.checkpoint_engine.update_weights_bucket_megabytes) << 20
        self.server_handle: ray.actor.ActorHandle | None = None

    def _server(self) -> ray.actor.ActorHandle:
        if self.server_handle is None:
            self.server_handle = ray.get_actor(server_actor_name(self.replica_rank))
        return self.server_handle

    async def resume(self, tags: list[str]) -> None:
        """Bring weights (``weights``) back to the device; ``kv_cache`` is allocated per batch."""
        if self.config.free_cache_engine and self.has_server:
            await self._server().wake_up.remote(tags=tags)

    async def release(self) -> None:
        """Let the server free the accelerator (it moves weights to CPU on CUDA)."""
        if self.config.free_cache_engine and self.has_server:
            await self._server().sleep.remote()

    @torch.no_grad()
    async def update_weights(
        self,
        weights: Iterable[tuple[str, torch.Tensor]] | AsyncIterator[tuple[str, torch.Tensor]],
        wire_format: str = "named_tensors",
        global_steps: int | None = None,
        peft_config: Any = None,
        base_sync_done: bool = False,
        **kwargs: Any,
    ) -> None:
        """Drain ``weights`` on every rank; the replica's first rank sends them to its server in buckets."""
        if wire_format != "named_tensors":
            raise NotImplementedError(f"the hf rollout backend takes wire_format='named_tensors', not {wire_format!r}")
        if peft_config is not None and base_sync_done:
            return await self._update_adapter(weights, peft_config, global_steps)
        start = time.perf_counter()
        bucket: list[tuple[str, torch.Tensor]] = []
        size = sent = 0
        async for name, tensor in _items(weights):
            if not self.has_server:
                continue  # still drained: producing each tensor is a collective
            tensor = tensor.detach().to("cpu").contiguous()
            bucket.append((name, tensor))
            size += tensor.numel() * tensor.element_size()
            if size >= self.bucket_bytes:
                sent += await self._server().update_weights.remote(bucket)
                bucket, size = [], 0
        if not self.has_server:
            return
        if bucket:
            sent += await self._server().update_weights.remote(bucket)
        await self._server().finish_weight_update.remote(global_steps)  # logs parameters left unchanged
        if self.replica_rank == 0:
            logger.info(
                "hf rollout: %d tensors to replica 0 in %.2fs (step %s)",
                sent,
                time.perf_counter() - start,
                global_steps,
            )
        if sent == 0:
            raise RuntimeError("weight update sent no tensor the rollout model knows; check the weight names")

    async def _update_adapter(self, weights: Any, peft_config: dict, global_steps: int | None) -> None:
        """Send a LoRA adapter (all its tensors at once: a few MB even at 7B) to the replica's server."""
        start = time.perf_counter()
        tensors = []
        async for name, tensor in _items(weights):
            if self.has_server:
                tensors.append((name, tensor.detach().to("cpu").contiguous()))
        if not self.has_server:
            return
        modules = await self._server().update_adapter.remote(tensors, dict(peft_config), global_steps)
        if self.replica_rank == 0:
            logger.info("hf rollout: LoRA adapter (%d tensors, %d modules, %.1f KB) to replica 0 in %.3fs (step %s)",
                        len(tensors), modules, sum(t.numel() * t.element_size() for _, t in tensors) / 1024,
                        time.perf_counter() - start, global_steps)
