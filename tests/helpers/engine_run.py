"""verl's TrainingWorker with the audio engine (any model family) on CPU, one process per rank (torchrun).

    torchrun --nproc_per_node N tests/helpers/engine_run.py --model DIR --out DIR [--strategy fsdp2] ...

Each rank takes its share of a batch of audio prompts (clips of different lengths, left-padded
prompts, right-padded responses, verl's (4, L) position ids), runs ``infer_batch`` and compares the
response log-probs with a plain transformers thinker forward of each sequence on its own; with
``--train`` it runs one ``train_batch`` with verl's ``ppo_loss`` and recomputes the loss; with
``--save`` it writes a verl actor checkpoint; with ``--lora-rank R`` the engine trains LoRA adapters (the
training step then records which base and adapter tensors changed, the reference forward with the adapter off
and the actor's log-probs after the step); with ``--cache-check`` it runs GRPO-like batches (each clip
in two rows) through infer, infer again, infer with one new clip and a training step, recording the
log-probs and the audio-encoder counters of each (``--audio-cache-size 0``: without the cache). Results
go to ``OUT/rank<r>.json``. With
``--ray-workers N`` (plain ``python``, no torchrun) the same inference runs through verl's
``RayWorkerGroup`` instead (``OUT/ray.json``).

Importable helpers: ``build_audio_batch``, ``run_torchrun``, ``run_ray`` and ``make_actor_checkpoint``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

CLIP_SECONDS = (0.5, 1.3, 0.8, 1.1)
RESPONSE_LENGTHS = (5, 8, 3, 6)
#: --cache-check clips: longer than one encoder window (2 s), as ALR questions are
CACHE_CLIP_SECONDS = (2.2, 2.6, 3.0)


def build_audio_batch(model_dir: str | Path, thinker: Any, n: int = 4, seed: int = 0,
                      clip_ids: list[int] | None = None, first_clip_seconds: float | None = None) -> dict[str, Any]:
    """Left-padded audio prompts + right-padded random responses, as verl's rollout hands them over.

    ``thinker`` supplies ``get_rope_index`` for families with multimodal positions. Returns padded tensors
    (``input_ids``, ``attention_mask``, ``position_ids`` (B, 4, L), or (B, L) for 1-D positions, ``prompts``,
    ``responses``, ``response_mask``) plus ``multi_modal_inputs``: one dict per sample with that sample's
    audio features. ``clip_ids``: row i hears clip ``clip_ids[i]`` (``CACHE_CLIP_SECONDS``, the same samples in
    every batch built with this seed); by default every row has a clip of its own. ``first_clip_seconds``: row 0's
    clip has this length instead.
    """
    from verl_audio.models.families import family_of_path

    family = family_of_path(model_dir)
    processor = family.load_processor(model_dir)
    rng = np.random.default_rng(seed)
    prompts, mm_inputs, responses = [], [], []
    special = set(processor.tokenizer.all_special_ids)
    normal = [i for i in range(len(processor.tokenizer)) if i not in special]
    for i in range(n):
        if clip_ids is None:
            seconds = first_clip_seconds if i == 0 and first_clip_seconds else CLIP_SECONDS[i % len(CLIP_SECONDS)]
            clip = (0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32)
        else:
            c = clip_ids[i]
            clip_rng = np.random.default_rng([seed, c])
            seconds = CACHE_CLIP_SECONDS[c % len(CACHE_CLIP_SECONDS)]
            clip = (0.1 * clip_rng.standard_normal(int(16000 * seconds))).astype(np.float32)
        question = ["What is heard?", "Describe the sound.", "Which instrument?", "Count the beeps."][i % 4]
        content = [{"type": "audio", "audio": "clip"}, {"type": "text", "text": question}]
        messages = [{"role": "user", "content": content}]
        text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        out = processor(text=[text], audio=[clip], return_tensors="pt", sampling_rate=16000)
        prompts.append(out["input_ids"][0])
        mm_inputs.append({k: out[k] for k in ("input_features", "feature_attention_mask")})
        response = rng.choice(normal, RESPONSE_LENGTHS[i % len(RESPONSE_LENGTHS)])
        responses.append(torch.tensor(response, dtype=torch.long))
    pad = processor.tokenizer.pad_token_id
    prompt_len, response_len = max(map(len, prompts)), max(map(len, responses))
    prompt_ids = torch.full((n, prompt_len), pad, dtype=torch.long)
    response_ids = torch.full((n, response_len), pad, dtype=torch.long)
    prompt_mask = torch.zeros((n, prompt_len), dtype=torch.long)
    response_mask = torch.zeros((n, response_len), dtype=torch.long)
    for i, (p, r) in enumerate(zip(prompts, responses, strict=True)):
        prompt_ids[i, prompt_len - len(p):], prompt_mask[i, prompt_len - len(p):] = p, 1
        response_ids[i, : len(r)], response_mask[i, : len(r)] = r, 1
    input_ids = torch.cat([prompt_ids, response_ids], dim=1)
    attention_mask = torch.cat([prompt_mask, response_mask], dim=1)
    text_row = torch.ones_like(input_ids)  # verl's layout: 0..n-1 on valid tokens, 1 on padding
    for i in range(n):
        valid = attention_mask[i].bool()
        text_row[i, valid] = torch.arange(int(valid.sum()))
    if family.position_rows == 1:
        position_ids = text_row * attention_mask  # verl's 1-D positions: the attended tokens counted
    else:
        audio_seqlens = torch.cat([m["feature_attention_mask"].sum(-1) for m in mm_inputs])
        rope, _ = thinker.get_rope_index(input_ids, None, None, attention_mask, False, audio_seqlens, None)
        position_ids = torch.cat([text_row.unsqueeze(1), rope.long().transpose(0, 1)], dim=1)  # (B, 4, L)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids,
            "prompts": prompt_ids, "responses": response_ids, "response_mask": response_mask,
            "multi_modal_inputs": mm_inputs}


def reference_logprobs(thinker: Any, batch: dict[str, Any], i: int) -> torch.Tensor:
    """Response log-probs of sample ``i`` from a plain thinker forward of that sequence alone, unpadded."""
    valid = batch["attention_mask"][i].bool()
    ids = batch["input_ids"][i, valid].unsqueeze(0)
    with torch.no_grad():
        logits = thinker(input_ids=ids, attention_mask=torch.ones_like(ids), **batch["multi_modal_inputs"][i]).logits
    n_resp = int(batch["response_mask"][i].sum())
    logp = torch.log_softmax(logits[0, -n_resp - 1 : -1].float(), dim=-1)
    return logp.gather(-1, ids[0, -n_resp:].unsqueeze(-1)).squeeze(-1)


def _to_td(batch: dict[str, Any], rows: slice, extra: dict[str, torch.Tensor] | None = None) -> Any:
    from verl import DataProto
    from verl.utils import tensordict_utils as tu
    from verl.workers.utils.padding import left_right_2_no_padding

    tensors = {k: v[rows] for k, v in batch.items() if isinstance(v, torch.Tensor)}
    tensors.update({k: v[rows] for k, v in (extra or {}).items()})
    mm = np.empty(len(tensors["input_ids"]), dtype=object)
    mm[:] = batch["multi_modal_inputs"][rows]
    data = DataProto.from_dict(tensors, non_tensors={"multi_modal_inputs": mm},
                               meta_info={"temperature": 1.0})
    td = left_right_2_no_padding(data.to_tensordict())
    tu.assign_non_tensor(td, global_token_num=tensors["attention_mask"].sum(-1).tolist(),
                         global_batch_size=len(batch["input_ids"]))
    return td


def _fingerprint(engine: Any) -> dict[str, torch.Tensor]:
    """Full (unsharded) copies of the audio-encoder, audio-projector and first decoder-layer weights (collective
    call)."""
    params, _ = engine.get_per_tensor_param()
    audio = engine.family.audio_encoder + "."
    return {n: v.detach().float().clone() for n, v in params
            if n.startswith(audio) or _in_projector(engine, n) or "layers.0." in n}


def _in_projector(engine: Any, name: str) -> bool:
    """Whether weight ``name`` belongs to the family's audio projector apart from its encoder."""
    return any(f"{path.split('.')[-1]}." in name for path in engine.family.audio_encoder_extra)


def _lora_state(engine: Any) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Full copies of a LoRA engine's base weights and adapter tensors, as verl sends them (collective call)."""
    base, _ = engine.get_per_tensor_param(base_sync_done=False)
    base = {n: v.detach().clone() for n, v in base}
    adapter, _ = engine.get_per_tensor_param(base_sync_done=True)
    adapter = {n: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().clone() for n, v in adapter}
    return base, adapter


def _logp_rows(out: Any, td: Any, lengths: torch.Tensor) -> list[list[float]]:
    """Each row's response log-probs, cut to its response length."""
    from verl.utils import tensordict_utils as tu
    from verl.workers.utils.padding import no_padding_2_padding

    logp = no_padding_2_padding(tu.get(out, "log_probs"), td).float()
    return [row[: int(n)].tolist() for row, n in zip(logp, lengths.tolist(), strict=True)]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--strategy", default="fsdp2", choices=("fsdp", "fsdp2"))
    parser.add_argument("--no-remove-padding", action="store_true")
    parser.add_argument("--attn", default="sdpa", choices=("sdpa", "eager"), help="engine attention implementation")
    parser.add_argument("--no-freeze", action="store_true", help="train the audio encoder too")
    parser.add_argument("--train-projector", action="store_true",
                        help="model.freeze_audio_projector=False (a family's projector apart from its encoder)")
    parser.add_argument("--grad-ckpt", action="store_true", help="enable gradient checkpointing")
    parser.add_argument("--bf16", action="store_true", help="verl's default mixed precision (bf16 compute)")
    parser.add_argument("--plain-config", action="store_true",
                        help="verl's HFModelConfig with model_type set from config.json, not AudioModelConfig")
    parser.add_argument("--ref", action="store_true", help="a forward-only engine, as verl builds the reference")
    parser.add_argument("--train", action="store_true")
    parser.add_argument("--save", default=None, help="write a verl actor checkpoint here")
    parser.add_argument("--cache-check", action="store_true", help="audio-encoder cache run (see module doc)")
    parser.add_argument("--audio-cache-size", type=int, default=None, help="model.audio_encoder_cache_size")
    parser.add_argument("--lora-rank", type=int, default=0, help="model.lora_rank (LoRA adapters, alpha 16)")
    parser.add_argument("--lora-targets", default="all-linear", help="model.target_modules (with --lora-rank)")
    parser.add_argument("--lora-encoder-targets", default=None, help="model.audio_encoder_lora_targets")
    parser.add_argument("--first-clip-seconds", type=float, default=None, help="row 0 hears a clip this long")
    parser.add_argument("--ray-workers", type=int, default=0,
                        help="instead of torchrun ranks: drive N Ray TrainingWorkers (RayWorkerGroup), inference only")
    return parser.parse_args(argv)


def _worker_config(args: argparse.Namespace) -> Any:
    """verl's TrainingWorkerConfig for the thinker: fp32 weights, mixed precision off (unless --bf16),
    micro-batches of 2 (so a training step accumulates gradients over two of them per rank)."""
    from verl.trainer.config import CheckpointConfig
    from verl.workers.config import FSDPEngineConfig, FSDPOptimizerConfig, HFModelConfig, TrainingWorkerConfig

    from verl_audio.models.audio_engine import AudioModelConfig

    common = dict(path=args.model, override_config={"attn_implementation": args.attn},
                  use_remove_padding=not args.no_remove_padding, enable_gradient_checkpointing=args.grad_ckpt)
    if args.plain_config:  # options at their defaults (the audio encoder frozen)
        model_type = json.loads((Path(args.model) / "config.json").read_text())["model_type"]
        model_config = HFModelConfig(model_type=model_type, **common)
    else:
        if args.audio_cache_size is not None:
            common["audio_encoder_cache_size"] = args.audio_cache_size
        model_config = AudioModelConfig(freeze_audio_encoder=not args.no_freeze, lora_rank=args.lora_rank,
                                        freeze_audio_projector=False if args.train_projector else None,
                                        lora_alpha=16, target_modules=args.lora_targets,
                                        audio_encoder_lora_targets=args.lora_encoder_targets, **common)
    fp32 = None if args.bf16 else {"param_dtype": "fp32", "reduce_dtype": "fp32", "buffer_dtype": "fp32"}
    engine_config = FSDPEngineConfig(strategy=args.strategy, forward_only=args.ref, model_dtype="fp32",
                                     mixed_precision=fp32,
                                     use_torch_compile=False, micro_batch_size_per_gpu=2,
                                     infer_micro_batch_size_per_gpu=2, use_dynamic_bsz=False)
    return TrainingWorkerConfig(model_type=model_config.model_type, model_config=model_config,
                                engine_config=engine_config, optimizer_config=FSDPOptimizerConfig(lr=1e-3),
                                checkpoint_config=CheckpointConfig())


def _reference(args: argparse.Namespace, config: Any) -> Any:
    """The family's trainable model, loaded by transformers alone (fp32)."""
    from verl_audio.models.families import family_of_path

    family = family_of_path(args.model)
    return family.load_trainable(args.model, config=family.thinker_config(config.model_config.hf_config),
                                 dtype=torch.float32).eval()


def _diffs(out: Any, td: Any, reference: Any, batch: dict[str, Any], rows: range) -> list[float]:
    """Per sample: max |engine - reference| over the response log-probs."""
    from verl.utils import tensordict_utils as tu
    from verl.workers.utils.padding import no_padding_2_padding

    engine_logp = no_padding_2_padding(tu.get(out, "log_probs"), td).float()
    diffs = []
    for j, i in enumerate(rows):
        ref = reference_logprobs(reference, batch, i)
        diffs.append(float((engine_logp[j, : len(ref)] - ref).abs().max()))
    return diffs


def ray_main(args: argparse.Namespace) -> None:
    """``infer_batch`` through verl's RayWorkerGroup; Ray's "GPU" resource counts logical CPU worker slots."""
    import ray
    from verl.single_controller.ray import RayClassWithInitArgs, RayResourcePool, RayWorkerGroup
    from verl.utils import tensordict_utils as tu
    from verl.workers.engine_workers import TrainingWorker

    env = {"VERL_PLATFORM": "cpu", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
           "TOKENIZERS_PARALLELISM": "false"}
    ray.init(num_cpus=args.ray_workers + 2, num_gpus=args.ray_workers, include_dashboard=False,
             runtime_env={"env_vars": env})
    try:
        config = _worker_config(args)
        pool = RayResourcePool(process_on_nodes=[args.ray_workers], max_colocate_count=1)
        group = RayWorkerGroup(resource_pool=pool, ray_cls_with_init=RayClassWithInitArgs(
            cls=ray.remote(TrainingWorker), config=config))
        group.reset()
        reference = _reference(args, config)
        batch = build_audio_batch(args.model, reference, n=4)
        td = _to_td(batch, slice(None))
        tu.assign_non_tensor(td, compute_loss=False)
        diffs = _diffs(group.infer_batch(td).get(), td, reference, batch, range(len(batch["input_ids"])))
    finally:
        ray.shutdown()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    result = {"world_size": args.ray_workers, "max_abs_diff": max(diffs), "per_sample": diffs}
    (Path(args.out) / "ray.json").write_text(json.dumps(result, indent=1))


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    os.environ.setdefault("VERL_PLATFORM", "cpu")
    if args.ray_workers:
        return ray_main(args)
    from verl.utils import tensordict_utils as tu
    from verl.workers.config import ActorConfig
    from verl.workers.engine_workers import TrainingWorker
    from verl.workers.utils.losses import ppo_loss
    from verl.workers.utils.padding import no_padding_2_padding

    torch.manual_seed(0)
    config = _worker_config(args)
    worker = TrainingWorker(config)
    worker.reset()
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()

    reference = _reference(args, config)
    if args.cache_check:
        return cache_check(args, worker, reference, rank, world)
    batch = build_audio_batch(args.model, reference, n=4, first_clip_seconds=args.first_clip_seconds)
    per_rank = len(batch["input_ids"]) // world
    rows = slice(rank * per_rank, (rank + 1) * per_rank)
    td = _to_td(batch, rows)
    tu.assign_non_tensor(td, compute_loss=False)
    out = worker.infer_batch(td)
    diffs = _diffs(out, td, reference, batch, range(rows.start, rows.stop))
    engine_logp = no_padding_2_padding(tu.get(out, "log_probs"), td).float()  # old log-probs for PPO
    audio_id = worker.engine.family.audio_token_id(config.model_config.hf_config)
    result: dict[str, Any] = {"rank": rank, "world_size": world, "max_abs_diff": max(diffs), "per_sample": diffs,
                              "model_type": config.model_type, "engine": type(worker.engine).__name__,
                              # the audio placeholders in the ids this rank's engine ran with, per row
                              "audio_tokens": (batch["input_ids"][rows] == audio_id).sum(-1).tolist()}

    if args.train:
        actor = ActorConfig(strategy=args.strategy, rollout_n=1, ppo_micro_batch_size_per_gpu=2, use_kl_loss=False,
                            ppo_mini_batch_size=len(batch["input_ids"]))
        worker.set_loss_fn(partial(ppo_loss, config=actor))
        gen = torch.Generator().manual_seed(1)
        full_logp = torch.zeros(batch["responses"].shape)
        full_logp[rows] = engine_logp
        extra = {"old_log_probs": full_logp, "advantages": torch.randn(batch["responses"].shape, generator=gen)}

        def loss_now() -> float:
            data = _to_td(batch, rows, extra)
            tu.assign_non_tensor(data, compute_loss=True)
            return float(tu.get(worker.infer_batch(data), "metrics")["loss"])

        before_weights = _fingerprint(worker.engine)
        if args.lora_rank:
            base_before, adapter_before = _lora_state(worker.engine)
        result["loss_before"] = loss_now()
        metrics = tu.get(worker.train_batch(_to_td(batch, rows, extra)), "metrics")
        result["grad_norm"] = float(metrics["grad_norm"])
        result["train_encoder"] = _encoder_counts(metrics)
        result["loss_after"] = loss_now()
        after_weights = _fingerprint(worker.engine)
        if args.lora_rank:
            base_after, adapter_after = _lora_state(worker.engine)
            result["base_tensors"] = len(base_after)
            result["base_changed"] = sorted(n for n in base_after if not torch.equal(base_before[n], base_after[n]))
            result["adapter_tensors"] = sorted(adapter_after)
            Path(args.out).mkdir(parents=True, exist_ok=True)
            torch.save(adapter_after, Path(args.out) / f"adapter_rank{rank}.pt")  # as the rollout receives it
            result["adapter_changed"] = sorted(n for n in adapter_after
                                               if not torch.equal(adapter_before[n], adapter_after[n]))
            trained = _to_td(batch, rows)
            tu.assign_non_tensor(trained, compute_loss=False)
            result["trained_logp"] = _logp_rows(worker.infer_batch(trained), trained,
                                                batch["response_mask"][rows].sum(-1))
            ref = _to_td(batch, rows)
            tu.assign_non_tensor(ref, compute_loss=False, no_lora_adapter=True)  # as verl asks for the reference
            result["ref_max_abs_diff"] = max(_diffs(worker.infer_batch(ref), ref, reference, batch,
                                                    range(rows.start, rows.stop)))
        changed = {n for n in before_weights if not torch.equal(before_weights[n], after_weights[n])}
        audio = worker.engine.family.audio_encoder + "."
        result["audio_changed"] = sorted(n for n in changed if n.startswith(audio))
        result["projector_changed"] = sorted(n for n in changed if _in_projector(worker.engine, n))
        result["text_changed"] = sorted(n for n in changed
                                        if not n.startswith(audio) and not _in_projector(worker.engine, n))

    if args.save:
        worker.save_checkpoint(args.save, global_step=1)
        result["checkpoint"] = sorted(str(p.relative_to(args.save)) for p in Path(args.save).rglob("*") if p.is_file())
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / f"rank{rank}.json").write_text(json.dumps(result, indent=1))
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def _encoder_counts(metrics: dict[str, Any]) -> dict[str, float]:
    """The audio-encoder counters of one engine call, summed over ranks (and micro-batches)."""
    from verl_audio.models.encoder_cache import METRIC_HITS, METRIC_PASSES

    return {name: float(np.sum(metrics[key])) for name, key in (("passes", METRIC_PASSES), ("hits", METRIC_HITS))}


def cache_check(args: argparse.Namespace, worker: Any, reference: Any, rank: int, world: int) -> None:
    """Infer, infer again, infer with a new clip on the last rank's rows, train, infer: log-probs + counters.

    Four rows, each clip in two of them: ``[0, 0, 1, 1]``, then ``[0, 0, 2, 2]``; at world size 2 the
    first rank's rows are then all cached while the second rank encodes clip 2.
    """
    from verl.utils import tensordict_utils as tu
    from verl.workers.config import ActorConfig
    from verl.workers.utils.losses import ppo_loss
    from verl.workers.utils.padding import no_padding_2_padding

    per_rank = 4 // world
    rows = slice(rank * per_rank, (rank + 1) * per_rank)
    first = build_audio_batch(args.model, reference, n=4, clip_ids=[0, 0, 1, 1])
    second = build_audio_batch(args.model, reference, n=4, clip_ids=[0, 0, 2, 2])
    result: dict[str, Any] = {"rank": rank, "world_size": world, "calls": {}}

    def infer(name: str, batch: dict[str, Any]) -> torch.Tensor:
        td = _to_td(batch, rows)
        tu.assign_non_tensor(td, compute_loss=False)
        out = worker.infer_batch(td)
        logp = no_padding_2_padding(tu.get(out, "log_probs"), td).float()
        result["calls"][name] = {**_encoder_counts(tu.get(out, "metrics")),
                                 "log_probs": [[float(x) for x in row] for row in logp]}
        return logp

    old_logp = infer("first", first)
    infer("again", first)
    infer("new_clip", second)

    actor = ActorConfig(strategy=args.strategy, rollout_n=1, ppo_micro_batch_size_per_gpu=2, use_kl_loss=False,
                        ppo_mini_batch_size=4)
    worker.set_loss_fn(partial(ppo_loss, config=actor))
    gen = torch.Generator().manual_seed(1)
    full_logp = torch.zeros(first["responses"].shape)
    full_logp[rows] = old_logp
    extra = {"old_log_probs": full_logp, "advantages": torch.randn(first["responses"].shape, generator=gen)}
    metrics = tu.get(worker.train_batch(_to_td(first, rows, extra)), "metrics")
    result["calls"]["train"] = {**_encoder_counts(metrics), "grad_norm": float(metrics["grad_norm"])}
    infer("after_train", first)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / f"rank{rank}.json").write_text(json.dumps(result, indent=1))
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def run_torchrun(model_dir: str | Path, out_dir: str | Path, *, world_size: int = 1, timeout: float = 600,
                 extra: list[str] | None = None) -> list[dict[str, Any]]:
    """Run this script under torchrun on CPU; return each rank's result (raises with the log on failure)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world_size}",
           str(Path(__file__).resolve()), "--model", str(model_dir), "--out", str(out_dir), *(extra or [])]
    env = {**os.environ, "VERL_PLATFORM": "cpu", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"torchrun failed ({proc.returncode}):\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}")
    return [json.loads((Path(out_dir) / f"rank{r}.json").read_text()) for r in range(world_size)]


def run_ray(model_dir: str | Path, out_dir: str | Path, *, workers: int = 2, timeout: float = 600) -> dict[str, Any]:
    """Run the Ray path of this script in a fresh interpreter; return its result."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--model", str(model_dir), "--out", str(out_dir),
           "--ray-workers", str(workers)]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # always a fresh local Ray
    env.update(VERL_PLATFORM="cpu", PYTHONWARNINGS="ignore")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"ray run failed ({proc.returncode}):\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}")
    return json.loads((Path(out_dir) / "ray.json").read_text())


def make_actor_checkpoint(model_dir: str | Path, ckpt_dir: str | Path, *, strategy: str = "fsdp2",
                          world_size: int = 1, timeout: float = 600) -> Path:
    """Save a verl actor checkpoint of the thinker in ``model_dir`` after one PPO step; return ``ckpt_dir``.

    Layout (verl's FSDP checkpoint manager): ``model_world_size_{W}_rank_{r}.pt``,
    ``optim_world_size_{W}_rank_{r}.pt``, ``extra_state_world_size_{W}_rank_{r}.pt`` per rank,
    ``fsdp_config.json`` and ``huggingface/`` (thinker ``config.json``, generation config, tokenizer).
    """
    ckpt_dir = Path(ckpt_dir)
    run_torchrun(model_dir, ckpt_dir.parent / f"{ckpt_dir.name}.results", world_size=world_size, timeout=timeout,
                 extra=["--strategy", strategy, "--train", "--save", str(ckpt_dir)])
    return ckpt_dir


if __name__ == "__main__":
    main()
