"""The `hf` rollout server on CUDA: same greedy output as on CPU, sleep frees the device, bf16 runs."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from verl.workers.config import RolloutConfig

from verl_audio.models.audio_features import audio_processor_kwargs, load_omni_processor
from verl_audio.models.tiny import build_tiny_omni
from verl_audio.rollout.hf.server import HFRolloutServer

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]

SR = 16_000
GREEDY = {"temperature": 0, "top_p": 1.0, "top_k": -1, "logprobs": True}


def _server(path: Path, device: str, dtype: str = "float32") -> HFRolloutServer:
    config = RolloutConfig(
        name="hf",
        prompt_length=256,
        response_length=16,
        dtype=dtype,
        tensor_model_parallel_size=1,
        engine_kwargs={"hf": {"device": device, "batch_window_ms": 50}},
    )
    return HFRolloutServer(config, {"path": str(path)})


def _prompts(path: Path) -> list[tuple[list[int], np.ndarray]]:
    processor = load_omni_processor(path)
    out = []
    for seed, (text, seconds) in enumerate([("Is it?", 1.0), ("Describe the sound in detail", 2.2)]):
        messages = [{"role": "user", "content": [{"type": "audio", "audio": "q.wav"}, {"type": "text", "text": text}]}]
        chat = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        audio = (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * SR))).astype(np.float32)
        ids = processor(text=chat, audio=[audio], return_tensors="pt", **audio_processor_kwargs([audio]))["input_ids"]
        out.append((ids[0].tolist(), audio))
    return out


async def _ask_all(server: HFRolloutServer, prompts: list, **params: Any) -> list[Any]:
    return await asyncio.gather(
        *[
            server.generate(ids, dict(params), "r", audio_data=[audio], mm_processor_kwargs={"sampling_rate": SR})
            for ids, audio in prompts
        ]
    )


def test_cuda_matches_cpu_sleeps_and_runs_bf16(tmp_path: Path) -> None:
    path = build_tiny_omni(tmp_path / "tiny")
    prompts = _prompts(path)
    cpu, gpu = _server(path, "cpu"), _server(path, "cuda")
    assert gpu.device.type == "cuda" and next(gpu.engine.model.parameters()).is_cuda

    async def run() -> None:
        on_cpu = await _ask_all(cpu, prompts, **GREEDY)
        on_gpu = await _ask_all(gpu, prompts, **GREEDY)
        for a, b in zip(on_cpu, on_gpu, strict=True):
            assert a.token_ids == b.token_ids
            np.testing.assert_allclose(a.log_probs, b.log_probs, atol=1e-3)

        held = torch.cuda.memory_allocated()
        await gpu.sleep()
        assert not next(gpu.engine.model.parameters()).is_cuda
        assert torch.cuda.memory_allocated() < held
        pending = asyncio.ensure_future(_ask_all(gpu, prompts[:1], **GREEDY))
        await asyncio.sleep(0.2)
        assert not pending.done()  # requests wait while the weights are off the device
        await gpu.wake_up(tags=["weights"])
        assert (await pending)[0].token_ids == on_gpu[0].token_ids

        bf16 = _server(path, "cuda", "bfloat16")
        sampled = await _ask_all(bf16, prompts, temperature=1.0, top_p=0.9, logprobs=True)
        assert all(len(o.token_ids) == len(o.log_probs) > 0 for o in sampled)

    asyncio.run(run())
