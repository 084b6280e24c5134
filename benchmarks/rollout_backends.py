"""Rollout backends `hf` and `vllm` on this machine: generation tokens/s, and time per GRPO step.

    python benchmarks/rollout_backends.py [--sizes tiny,small] [--requests 16] [--tokens 64] [--steps 3]

Generation: for each model size, one replica of each backend is started through verl's registry (a
Ray actor, as in training) and sent ``--requests`` concurrent requests (5 s clip + a short question,
sampled at temperature 1 with ``ignore_eos``, ``--tokens`` new tokens each); it prints the wall time and
generated tokens per second of the batch, after one warm-up request. Sizes: ``tiny`` is the recipe's
tiny Omni (hidden 64, 2 layers, about 0.2 M parameters in the LM); ``small`` widens the thinker's LM to hidden
512, 8 layers (about 25 M), where the work per token starts to outweigh each engine's fixed cost per step.

GRPO step: ``recipes/soundmind_alr.sh`` (PRESET=tiny, ROLLOUT=hf and ROLLOUT=vllm) for ``--steps`` steps;
prints the mean of ``timing_s/step`` and ``timing_s/gen`` over the steps after the first.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
from recipe_runs import later_steps

SR = 16_000


SMALL_TEXT = {"hidden_size": 512, "intermediate_size": 1536, "num_hidden_layers": 8, "num_attention_heads": 16,
              "num_key_value_heads": 4, "head_dim": 32}


def _small(config) -> None:
    thinker = config.thinker_config
    for key, value in SMALL_TEXT.items():
        setattr(thinker.text_config, key, value)
    thinker.text_config.layer_types = ["full_attention"] * SMALL_TEXT["num_hidden_layers"]
    thinker.audio_config.output_dim = thinker.vision_config.out_hidden_size = SMALL_TEXT["hidden_size"]


def build_model(out: Path, size: str) -> Path:
    """The tiny Omni (head dim 32, vLLM's CPU minimum), or its thinker widened and deepened for ``small``."""
    from verl_audio.models.tiny import build_tiny_omni

    if not (out / "config.json").exists():
        build_tiny_omni(out, head_dim=32, edit_config=_small if size == "small" else None)
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
    later = later_steps(out, f"bench_{backend}", [f"trainer.total_training_steps={steps}"], ROLLOUT=backend)
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
