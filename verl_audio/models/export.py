"""Export a verl actor checkpoint of the Qwen2.5-Omni thinker as a full Qwen2.5-Omni model directory.

    python -m verl_audio.models.export --ckpt CKPTS/global_step_N/actor --base BASE_OMNI_DIR --out OUT [--verify]

What is written to ``OUT``:

* the trained thinker as ``thinker.*`` tensors, in bfloat16 (the released Omni dtype, and what verl's
  own model merger produces),
* every other tensor of the base checkpoint (``talker.*``, ``token2wav.*``) byte for byte,
* every non-weight file of the base directory: ``config.json``, ``generation_config.json``, tokenizer
  and processor files, chat template, ``spk_dict.pt`` (the speakers ``generate(return_audio=True)`` reads).

The thinker comes from the checkpoint's sharded ``model_world_size_W_rank_R.pt`` files (FSDP1 or
FSDP2), merged by verl's ``FSDPModelMerger``, or, without shards, from the full model verl writes to
``huggingface/`` when ``checkpoint.save_contents`` holds ``hf_model``. Its tensor names and shapes
must equal the base's thinker; the checkpoint may hold a thinker-only model (``model.*``,
``audio_tower.*``, ``visual.*``, ``lm_head.weight``) or the full model (``thinker.*`` ...). LoRA
checkpoints are refused (merge the adapter first).

What is unpickled: verl's FSDP shards are torch pickles, and verl's merger loads them with
``weights_only=False``. Each shard is first opened here with ``torch.load(weights_only=True, mmap=True)``,
which accepts only tensors, containers and the DTensor/DeviceMesh types torch itself allow-lists; a shard
holding anything else is refused before the merger reads it. The base model and the export are
safetensors only. Still, export only checkpoints you or your own runs wrote.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import shutil
import time
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

logger = logging.getLogger(__name__)

THINKER = "thinker."
EXPORT_DTYPE = torch.bfloat16
SHARD_RE = re.compile(r"model_world_size_(\d+)_rank_(\d+)\.pt")
# weight files of a Hugging Face directory; everything else in the base directory is copied
_WEIGHT_FILE_RE = re.compile(r".*\.safetensors(\.index\.json)?|pytorch_model.*\.bin(\.index\.json)?")


def _merge_fsdp_shards(ckpt: Path) -> dict[str, torch.Tensor]:
    """verl's FSDP merge (world size from fsdp_config.json, DTensor placements) without its save step."""
    from verl.model_merger.base_model_merger import ModelMergerConfig
    from verl.model_merger.fsdp_model_merger import FSDPModelMerger

    config = ModelMergerConfig(operation="merge", backend="fsdp", local_dir=str(ckpt), target_dir=None,
                               hf_model_config_path=str(ckpt / "huggingface"))
    merger = FSDPModelMerger(config)
    # the steps of FSDPModelMerger.merge_and_save up to (not including) save_hf_model_and_tokenizer
    world_size = merger._get_world_size()
    mesh, mesh_dim_names = merger._extract_device_mesh_info(merger._load_rank_zero_state_dict(world_size), world_size)
    total_shards, mesh_shape = merger._calculate_shard_configuration(mesh, mesh_dim_names)
    return merger._load_and_merge_state_dicts(world_size, total_shards, mesh_shape, mesh_dim_names)


def check_shard_weights_only(path: Path) -> None:
    """Open one shard with ``weights_only=True`` (memory-mapped: nothing is read but its structure);
    ValueError when it holds anything but tensors and torch's allow-listed DTensor types."""
    import torch.distributed.tensor  # noqa: F401  (registers DTensor, DeviceMesh, Shard, ... as safe globals)

    try:
        torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # pickle.UnpicklingError and friends: whatever it is, it is not plain weights
        raise ValueError(f"{path} is not a plain-weights checkpoint shard (torch.load(weights_only=True) refused it: "
                         f"{type(e).__name__}: {str(e)[:300]}); it is not loaded") from e


def load_checkpoint_state(ckpt: str | Path) -> dict[str, torch.Tensor]:
    """The full (unsharded) model state of a verl FSDP actor checkpoint directory, names as saved."""
    ckpt = Path(ckpt)
    if not ckpt.is_dir():
        raise FileNotFoundError(f"checkpoint directory {ckpt} does not exist")
    if (ckpt / "lora_train_meta.json").is_file():
        raise NotImplementedError(f"{ckpt} is a LoRA checkpoint: merge the adapter into the thinker first")
    shards = sorted(p.name for p in ckpt.iterdir() if SHARD_RE.fullmatch(p.name))
    hf_weights = sorted((ckpt / "huggingface").glob("*.safetensors")) if (ckpt / "huggingface").is_dir() else []
    if shards:
        if not (ckpt / "fsdp_config.json").is_file():
            raise FileNotFoundError(f"{ckpt} has model shards but no fsdp_config.json (verl writes both)")
        for name in shards:
            check_shard_weights_only(ckpt / name)
        state = _merge_fsdp_shards(ckpt)
    elif hf_weights:
        state = {}
        for file in hf_weights:
            state.update(load_file(file))
    else:
        found = sorted(p.name for p in ckpt.iterdir())
        raise FileNotFoundError(
            f"no model weights in {ckpt}: expected model_world_size_*_rank_*.pt shards or huggingface/*.safetensors "
            f"(checkpoint.save_contents must include 'model' or 'hf_model'); found {found}"
        )
    if any("lora_" in name for name in state):
        raise NotImplementedError(f"{ckpt} holds LoRA weights: merge the adapter into the thinker first")
    return state


def thinker_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Thinker tensors named relative to the thinker, from a thinker-only or a full-model state."""
    if any(name.startswith(THINKER) for name in state):
        others = sorted({name.split(".")[0] for name in state if not name.startswith(THINKER)})
        if others:
            logger.info("checkpoint also holds %s; the base's are exported instead", others)
        return {name[len(THINKER):]: t for name, t in state.items() if name.startswith(THINKER)}
    return dict(state)


def base_weight_files(base: Path) -> dict[str, Path]:
    """Tensor name -> safetensors file of the base directory."""
    index = base / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        return {name: base / file for name, file in weight_map.items()}
    files = sorted(base.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no safetensors weights in base directory {base} (only safetensors are supported)")
    names: dict[str, Path] = {}
    for file in files:
        with safe_open(file, "pt") as f:
            names.update(dict.fromkeys(f.keys(), file))
    return names


def _check_thinker(trained: dict[str, torch.Tensor], base_files: dict[str, Path]) -> None:
    """Names and shapes of the trained thinker must equal the base's thinker."""
    base_names = {name[len(THINKER):] for name in base_files if name.startswith(THINKER)}
    missing, unexpected = sorted(base_names - set(trained)), sorted(set(trained) - base_names)
    if missing or unexpected:
        raise ValueError(f"checkpoint thinker does not match the base thinker: missing {missing[:10]} "
                         f"({len(missing)}), unexpected {unexpected[:10]} ({len(unexpected)})")
    for name, tensor in trained.items():
        with safe_open(base_files[THINKER + name], "pt") as f:
            shape = tuple(f.get_slice(THINKER + name).get_shape())
        if tuple(tensor.shape) != shape:
            raise ValueError(f"{THINKER + name}: checkpoint shape {tuple(tensor.shape)} != base shape {shape}")


def _plan_shards(sizes: dict[str, int], max_bytes: int) -> list[list[str]]:
    shards: list[list[str]] = [[]]
    used = 0
    for name, size in sizes.items():
        if shards[-1] and used + size > max_bytes:
            shards.append([])
            used = 0
        shards[-1].append(name)
        used += size
    return shards


def export_omni(ckpt: str | Path, base: str | Path, out: str | Path, *, max_shard_bytes: int = 4 << 30) -> dict:
    """Write the full Omni directory ``out`` (see module doc); returns a summary of what was written."""
    base, out = Path(base), Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"output directory {out} is not empty")
    if not (base / "config.json").is_file():
        raise FileNotFoundError(f"base directory {base} has no config.json")
    base_files = base_weight_files(base)
    trained = {name: (t.to(EXPORT_DTYPE) if t.is_floating_point() else t).contiguous()
               for name, t in thinker_state(load_checkpoint_state(ckpt)).items()}
    _check_thinker(trained, base_files)

    kept = [name for name in base_files if not name.startswith(THINKER)]  # talker.*, token2wav.*
    sizes = {THINKER + name: t.numel() * t.element_size() for name, t in trained.items()}
    for name in kept:
        with safe_open(base_files[name], "pt") as f:
            view = f.get_slice(name)
            sizes[name] = math.prod(view.get_shape()) * _dtype_bytes(view.get_dtype())
    plan = _plan_shards(sizes, max_shard_bytes)

    out.mkdir(parents=True, exist_ok=True)
    for item in sorted(base.iterdir()):
        if item.is_file() and not _WEIGHT_FILE_RE.fullmatch(item.name):
            shutil.copy2(item, out / item.name)
    weight_map = {}
    for i, names in enumerate(plan, start=1):
        file = "model.safetensors" if len(plan) == 1 else f"model-{i:05d}-of-{len(plan):05d}.safetensors"
        tensors = {}
        for name in names:
            if name.startswith(THINKER):
                tensors[name] = trained[name[len(THINKER):]]
            else:
                with safe_open(base_files[name], "pt") as f:
                    tensors[name] = f.get_tensor(name)
        save_file(tensors, out / file, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(names, file))
    if len(plan) > 1:
        index = {"metadata": {"total_size": sum(sizes.values())}, "weight_map": dict(sorted(weight_map.items()))}
        (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return {"thinker_tensors": len(trained), "base_tensors": len(kept), "files": len(plan),
            "bytes": sum(sizes.values()), "out": str(out)}


_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def _dtype_bytes(name: str) -> int:
    if name not in _DTYPE_BYTES:
        raise ValueError(f"unsupported safetensors dtype {name}")
    return _DTYPE_BYTES[name]


def verify_export(out: str | Path) -> None:
    """Load ``out`` as ``Qwen2_5OmniForConditionalGeneration``; raise on missing, unexpected or mismatched keys."""
    from transformers import Qwen2_5OmniForConditionalGeneration as Omni

    # Omni's from_pretrained override calls load_speakers on its result, which breaks with
    # output_loading_info=True (a tuple comes back); so load through the parent class's method
    # (bound to the Omni class) and load the speakers the way the override does
    model, info = super(Omni, Omni).from_pretrained(out, output_loading_info=True)
    problems = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    if problems:
        raise ValueError(f"exported model {out} does not load cleanly: {problems}")
    model.load_speakers(str(Path(out) / "spk_dict.pt"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="verl's FSDP shards are torch pickles: each is checked with torch.load(weights_only=True) before "
               "verl's merger (weights_only=False) reads it. Export only checkpoints from runs you trust.")
    parser.add_argument("--ckpt", required=True, help="verl actor checkpoint directory (global_step_N/actor)")
    parser.add_argument("--base", required=True, help="the original Qwen2.5-Omni directory (talker, token2wav, processor)")
    parser.add_argument("--out", required=True, help="output directory (must be empty or absent)")
    parser.add_argument("--max-shard-gb", type=float, default=4.0, help="largest safetensors file to write")
    parser.add_argument("--verify", action="store_true", help="load the export with transformers and check its keys")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    start = time.perf_counter()
    summary = export_omni(args.ckpt, args.base, args.out, max_shard_bytes=int(args.max_shard_gb * (1 << 30)))
    if args.verify:
        verify_export(args.out)
        summary["verified"] = True
    summary["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
