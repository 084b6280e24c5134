"""Rollout backends `hf` and `vllm` on this machine: generation tokens/s, and time per GRPO step.

    python benchmarks/rollout_backends.py [--sizes tiny,small] [--requests 16] [--tokens 64] [--steps 3]

Generation: for each model size, one replica of each backend is started through verl's registry (a
Ray actor, as in training) and sent ``--requests`` concurrent requests (5 s clip + a short question,
sampled at temperature 1 with ``ignore_eos``, ``--tokens`` new tokens each); it prints the wall time and
generated tokens per second of the batch, after one warm-up request. Sizes: ``tiny`` is the recipe's
tiny Omni (hidden 64, 2 layers, about 0.4 M parameters in the LM); ``small`` widens the thinker to hidden 512,
8 layers (about 30 M in the LM), where batching work per token starts to matter.

GRPO step: ``recipes/soundmind_alr.sh`` (PRESET=tiny, ROLLOUT=hf and ROLLOUT=vllm) for ``--steps`` steps;
prints the mean of ``timing_s/step`` and ``timing_s/gen`` over the steps after the first.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SR = 16_000


def build_model(out: Path, size: str) -> Path:
    """The tiny Omni (head dim 32, vLLM's CPU minimum), or a wider, deeper thinker for ``small``."""
    import torch
    from transformers import Qwen2_5OmniForConditionalGeneration

    from verl_audio.models import tiny

    if (out / "config.json").exists():
        return out
    path = tiny.build_tiny_omni(out, head_dim=32)
    if size == "tiny":
        return path
    config = Qwen2_5OmniForConditionalGeneration.from_pretrained(path).config
    text = config.thinker_config.text_config
    text.hidden_size, text.intermediate_size, text.num_hidden_layers = 512, 1536, 8
    text.num_attention_heads, text.num_key_value_heads, text.head_dim = 16, 4, 32
    config.thinker_config.audio_config.output_dim = 512
    config.thinker_config.vision_config.out_hidden_size = 512
    torch.manual_seed(0)
    model = Qwen2_5OmniForConditionalGeneration(config)
    model.save_pretrained(out, safe_serialization=True)
    return out


async def _generate(replica: Any, prompts: list[tuple[list[int], np.ndarray]], tokens: int) -> tuple[float, int]:
    params = {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "logprobs": True, "max_tokens": tokens,
              "ignore_eos": True}
    start = time.perf_counter()
    outs = await asyncio.gather(*[
        replica.server_handle.generate.remote(prompt_ids=ids, sampling_params=dict(params), request_id=f"b{i}",
                                              audio_data=[clip], mm_processor_kwargs={"sampling_rate": SR})
        for i, (ids, clip) in enumerate(prompts)])
    return time.perf_counter() - start, sum(len(o.token_ids) for o in outs)


def generation(model: Path, backend: str, requests: int, tokens: int) -> dict[str, float]:
    """Wall seconds and new tokens/s for ``requests`` concurrent requests to one ``backend`` replica."""
    import ray
    from verl.workers.config import RolloutConfig
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    from verl_audio.models.audio_features import load_omni_processor

    processor = load_omni_processor(model)
    chat = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "audio", "audio": "q.wav"}, {"type": "text", "text": "Entailed?"}]}],
        add_generation_prompt=True, tokenize=False)
    rng = np.random.default_rng(0)
    prompts = []
    for _ in range(requests):
        clip = (0.1 * rng.standard_normal(5 * SR)).astype(np.float32)
        ids = processor(text=chat, audio=[clip], return_tensors="pt", sampling_rate=SR)["input_ids"][0].tolist()
        prompts.append((ids, clip))
    ray.init(num_cpus=4, num_gpus=1, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"VLLM_CPU_KVCACHE_SPACE": "2"}})
    try:
        worker = ray.remote(num_gpus=1, num_cpus=0)(type("Worker", (), {})).remote()
        config = RolloutConfig(name=backend, prompt_length=1024, response_length=tokens, dtype="float32",
                               tensor_model_parallel_size=1, enable_sleep_mode=False, free_cache_engine=False,
                               enforce_eager=True, logprobs_mode="raw_logprobs", max_model_len=2048, load_format="auto",
                               engine_kwargs={"hf": {"batch_window_ms": 200, "max_batch_size": requests}})
        replica = RolloutReplicaRegistry.get(backend)(replica_rank=0, config=config, model_config={"path": str(model)},
                                                      gpus_per_node=1)
        loop = asyncio.new_event_loop()
        start = time.perf_counter()
        loop.run_until_complete(replica.init_hybrid(types.SimpleNamespace(workers=[worker])))
        launch = time.perf_counter() - start
        loop.run_until_complete(_generate(replica, prompts[:1], tokens))  # warm-up
        wall, generated = loop.run_until_complete(_generate(replica, prompts, tokens))
        loop.close()
    finally:
        ray.shutdown()
    return {"launch_s": launch, "wall_s": wall, "tokens_per_s": generated / wall}


def grpo_steps(out: Path, backend: str, steps: int) -> dict[str, float]:
    """Mean ``timing_s/step`` and ``timing_s/gen`` of a tiny-preset run over steps 2..N."""
    from verl_audio.trainer.metrics_log import training_steps

    name = f"bench_{backend}"
    env = {**os.environ, "PRESET": "tiny", "ROLLOUT": backend, "OUTPUTS": str(out), "EXPERIMENT": name,
           "PYTHON": sys.executable}
    overrides = [f"trainer.total_training_steps={steps}", "trainer.save_freq=-1", "trainer.test_freq=-1",
                 "verl_audio.export=false", "verl_audio.plot=false", "trainer.resume_mode=disable"]
    result = subprocess.run(["bash", str(REPO / "recipes/soundmind_alr.sh"), *overrides], cwd=REPO, env=env,
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{backend} run failed (rc {result.returncode}):\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    data = training_steps(out / name / "metrics.jsonl")
    later = [d for step, d in data.items() if step > 1] or list(data.values())
    return {key: statistics.mean(d[f"timing_s/{key}"] for d in later) for key in ("step", "gen")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="tiny,small", help="comma-separated model sizes: tiny, small")
    parser.add_argument("--requests", type=int, default=16, help="concurrent generation requests")
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per request")
    parser.add_argument("--steps", type=int, default=3, help="GRPO steps per backend (0: skip)")
    parser.add_argument("--out", default="outputs/bench_rollout_backends", help="folder for models and runs")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    print(f"generation: {args.requests} concurrent requests x {args.tokens} new tokens, 5 s clip each")
    print(f"{'size':<8}{'backend':<9}{'launch s':>10}{'wall s':>9}{'tokens/s':>10}")
    for size in args.sizes.split(","):
        model = build_model(out / f"model_{size}", size)
        for backend in ("hf", "vllm"):
            r = generation(model, backend, args.requests, args.tokens)
            print(f"{size:<8}{backend:<9}{r['launch_s']:>10.1f}{r['wall_s']:>9.2f}{r['tokens_per_s']:>10.1f}", flush=True)
    if args.steps > 0:
        print(f"GRPO step, tiny preset, mean of steps 2..{args.steps} (seconds)")
        print(f"{'backend':<9}{'step':>8}{'rollout':>9}")
        for backend in ("hf", "vllm"):
            r = grpo_steps(out, backend, args.steps)
            print(f"{backend:<9}{r['step']:>8.2f}{r['gen']:>9.2f}", flush=True)


if __name__ == "__main__":
    main()
