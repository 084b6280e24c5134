"""``OmniVLLMReplica``: verl's vLLM replica starting ``OmniVLLMHttpServer`` actors, and a speech server beside them.

vLLM returns no hidden states, so with ``engine_kwargs.speech.enable`` the replica also starts a
``StandaloneSpeechServer`` (``speech_server_<replica>``) on its first worker's node, with its own thinker copy;
``verl_audio.rollout.vllm.adapter`` feeds it the weights the vLLM server receives.
"""

from __future__ import annotations

from typing import Any

import ray
from verl.workers.rollout.vllm_rollout.vllm_async_server import vLLMReplica

from verl_audio.rollout.options import model_path
from verl_audio.rollout.placement import worker_placement
from verl_audio.rollout.vllm.server import OmniVLLMHttpServer
from verl_audio.speech.config import speech_enabled


class OmniVLLMReplica(vLLMReplica):
    """verl's vLLM replica, starting ``OmniVLLMHttpServer`` actors (and a speech server when speech is on)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.server_class = ray.remote(OmniVLLMHttpServer)
        self.speech_server: Any = None

    async def launch_servers(self) -> None:
        await super().launch_servers()
        if self.is_reward_model or self.is_teacher_model or not speech_enabled(self.config.engine_kwargs):
            return
        from verl_audio.rollout.speech_server import launch_standalone

        node_id, _, devices = await self.workers[0].__ray_call__.remote(worker_placement)
        self.speech_server = launch_standalone(self.replica_rank, node_id, model_path(self.model_config),
                                               self.config.engine_kwargs, self.config.dtype,
                                               devices[0] if devices else None)  # fmt: skip
        await self.speech_server.get_stats.remote()  # construction errors surface at start, not at the first row
