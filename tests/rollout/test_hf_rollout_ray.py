"""The `hf` backend through Ray, found by its registry name: replica -> server actor -> generate; adapter -> weights."""

from __future__ import annotations

import asyncio
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray
import torch
from transformers import Qwen2_5OmniThinkerForConditionalGeneration
from verl.workers.config import RolloutConfig
from verl.workers.rollout.base import get_rollout_class
from verl.workers.rollout.replica import RolloutReplicaRegistry, TokenOutput

from verl_audio.models.audio_features import audio_processor_kwargs, load_omni_processor
from verl_audio.models.tiny import build_tiny_omni
from verl_audio.rollout import register

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SR = 16_000
GREEDY = {"temperature": 0, "top_p": 1.0, "top_k": -1, "logprobs": True}


@ray.remote(num_cpus=0)
class _Worker:
    """Stands in for an actor worker: the replica only asks where it runs."""


class _ModelConfig:
    """An already-built model config, as the adapter's base class takes it."""


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_omni(tmp_path_factory.mktemp("hf_rollout_ray") / "tiny")


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    """A local Ray cluster (or the one a previous test module left running)."""
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, namespace="hf_rollout_test", log_to_driver=False)
    yield
    if started:
        ray.shutdown()


def _prompt(ckpt: Path, seconds: float, seed: int) -> tuple[list[int], np.ndarray]:
    processor = load_omni_processor(ckpt)
    messages = [{"role": "user", "content": [{"type": "audio", "audio": "q.wav"}, {"type": "text", "text": "Why?"}]}]
    chat = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    audio = (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * SR))).astype(np.float32)
    ids = processor(text=chat, audio=[audio], return_tensors="pt", **audio_processor_kwargs([audio]))["input_ids"]
    return ids[0].tolist(), audio


def test_replica_by_registry_name_generates_and_takes_weights(
    ckpt: Path, cluster: None, tmp_path: Path, monkeypatch
) -> None:
    register()
    config = RolloutConfig(
        name="hf",
        prompt_length=128,
        response_length=12,
        dtype="float32",
        tensor_model_parallel_size=1,
        engine_kwargs={"hf": {"batch_window_ms": 200}},  # the two requests must meet despite busy CPUs
    )
    replica = RolloutReplicaRegistry.get("hf")(replica_rank=0, config=config, model_config={"path": str(ckpt)})
    prompts = [_prompt(ckpt, 1.0, 0), _prompt(ckpt, 0.6, 1)]
    new_weights = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(
        build_tiny_omni(tmp_path / "other", seed=1), dtype=torch.float32
    ).state_dict()

    async def ask(server: Any, prompt: tuple[list[int], np.ndarray]) -> TokenOutput:
        return await server.generate.remote(
            prompt_ids=prompt[0],
            sampling_params=dict(GREEDY),
            request_id="r",
            image_data=None,
            video_data=None,
            audio_data=[prompt[1]],
            mm_processor_kwargs={"sampling_rate": SR},
        )

    async def run() -> None:
        await replica.init_hybrid(types.SimpleNamespace(workers=[_Worker.remote()]))
        server = replica.server_handle
        assert replica.server_address == "hf://" + ray.util.get_node_ip_address() + "/hf_server_0_0"
        first = await asyncio.gather(*[ask(server, p) for p in prompts])
        stats = await server.get_stats.remote()
        assert stats["batches"] == 1 and stats["sequences"] == 2
        for out in first:
            assert isinstance(out, TokenOutput) and out.stop_reason == "completed"
            assert len(out.token_ids) == len(out.log_probs) == 12

        # the worker-side adapter, as verl builds it, finds the server by name and pushes new weights
        monkeypatch.setenv("RANK", "0")
        adapter = get_rollout_class("hf", "async")(config=config, model_config=_ModelConfig(), device_mesh=None)
        await adapter.resume(tags=["weights"])
        await adapter.update_weights(iter(new_weights.items()), global_steps=3)
        await adapter.resume(tags=["kv_cache"])
        second = await ask(server, prompts[0])
        assert second.extra_fields["global_steps"] == 3
        assert second.token_ids != first[0].token_ids

        # the replica's control calls all reach the server
        await replica.abort_all_requests()
        await replica.resume_generation()
        await replica.sleep()
        await replica.wake_up()
        await replica.clear_kv_cache()
        await replica.release_kv_cache()
        await replica.resume_kv_cache()
        await replica.start_profile()
        await replica.stop_profile()
        third = await ask(server, prompts[0])
        assert third.token_ids == second.token_ids

    asyncio.run(run())
