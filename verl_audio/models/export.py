"""Export a verl actor checkpoint of an audio model as a full model directory of its family.

    python -m verl_audio.models.export --ckpt CKPTS/global_step_N/actor --base BASE_DIR --out OUT [--verify]
                                       [--dtype bfloat16|float16|float32] [--adapter-out DIR]

What is written to ``OUT``:

* the trained model under the released checkpoint's names (``AudioFamily.checkpoint_name``: the Omni
  thinkers' ``thinker.*``, Qwen2-Audio's ``language_model.model.*``...), in bfloat16 (the released dtype, and
  what verl's own model merger produces),
* every other tensor of the base checkpoint (an Omni model's ``talker.*``, ``token2wav.*`` / ``code2wav.*``)
  byte for byte,
* every non-weight file of the base directory: ``config.json``, ``generation_config.json``, tokenizer
  and processor files, chat template, ``spk_dict.pt`` (the speakers ``generate(return_audio=True)`` reads).

The trained model comes from the checkpoint's sharded ``model_world_size_W_rank_R.pt`` files (FSDP1 or
FSDP2), merged here in their saved precision (``merge_fsdp_shards``), or, without shards, from the full model verl writes to
``huggingface/`` when ``checkpoint.save_contents`` holds ``hf_model``. Its tensor names and shapes
must equal the base's (the family is read from the base's ``config.json``); the checkpoint may hold the
trainable part under its in-memory names or a full model.

LoRA checkpoints (``lora_train_meta.json`` beside the shards: rank and alpha) are merged: each adapted weight
becomes W + alpha / r * B @ A (computed in float32), so the export loads as the stock class with no peft. A
checkpoint saved with ``checkpoint.save_lora_only`` holds the adapters alone; they are merged onto the base's
weights. ``--adapter-out DIR`` also writes the adapter alone in peft's format (``adapter_config.json`` +
``adapter_model.safetensors``, module names of the full model: ``PeftModel.from_pretrained`` on the stock
class, or a vLLM ``LoRARequest`` for families vLLM has LoRA for).

What is unpickled: verl's FSDP shards are torch pickles. Each is opened with ``torch.load(weights_only=True,
mmap=True)``, which accepts only tensors, containers and the DTensor/DeviceMesh types torch itself allow-lists; a
shard holding anything else is refused. The base model and the export are safetensors only.
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
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from verl_audio.models import lora

logger = logging.getLogger(__name__)

EXPORT_DTYPE = torch.bfloat16
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
SHARD_RE = re.compile(r"model_world_size_(\d+)_rank_(\d+)\.pt")
# weight files of a Hugging Face directory; everything else in the base directory is copied
_WEIGHT_FILE_RE = re.compile(r".*\.safetensors(\.index\.json)?|pytorch_model.*\.bin(\.index\.json)?")


def load_shard(path: Path) -> dict[str, Any]:
    """One rank's shard, opened with ``weights_only=True`` (memory-mapped); ValueError when it holds anything but
    tensors and torch's allow-listed DTensor types."""
    import torch.distributed.tensor  # noqa: F401  (registers DTensor, DeviceMesh, Shard, ... as safe globals)

    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # pickle.UnpicklingError and friends: whatever it is, it is not plain weights
        raise ValueError(f"{path} is not a plain-weights checkpoint shard (torch.load(weights_only=True) refused it: "
                         f"{type(e).__name__}: {str(e)[:300]}); it is not loaded") from e


def merge_fsdp_shards(ckpt: Path, world_size: int) -> dict[str, torch.Tensor]:
    """The full tensors of verl's FSDP1/FSDP2 shards (``model_world_size_W_rank_R.pt``), in their saved dtype.

    Each DTensor's local pieces are concatenated along its shard dimension in rank order (one copy of a replicated
    one); plain entries are replicated and must agree. A hybrid mesh (``ddp`` x ``fsdp``) is merged from the first
    replica's ranks. The layout verl's ``FSDPModelMerger`` reads, without its cast to bfloat16 (an fp32 export of
    a LoRA merge needs the fp32 adapters)."""
    from torch.distributed.tensor import DTensor

    first = load_shard(ckpt / f"model_world_size_{world_size}_rank_0.pt")
    mesh_names = next((t.device_mesh.mesh_dim_names for t in first.values() if isinstance(t, DTensor)), ("fsdp",))
    if mesh_names not in (("fsdp",), ("ddp", "fsdp")):
        raise NotImplementedError(f"{ckpt}: device mesh {mesh_names} is not supported (FSDP or HSDP only)")
    sample = next((t for t in first.values() if isinstance(t, DTensor)), None)
    ranks = int(sample.device_mesh.mesh.shape[-1]) if sample is not None else world_size
    shards = [first] + [load_shard(ckpt / f"model_world_size_{world_size}_rank_{r}.pt") for r in range(1, ranks)]
    merged = {}
    for key, tensor in first.items():
        pieces = [shard[key] for shard in shards]
        if isinstance(tensor, DTensor):
            (placement,) = tensor.placements[len(mesh_names) - 1:]  # the fsdp dimension
            local = [piece._local_tensor for piece in pieces]
            merged[key] = torch.cat(local, dim=placement.dim).contiguous() if placement.is_shard() else local[0]
        else:
            if any(p.shape != tensor.shape or not torch.equal(p, tensor) for p in pieces[1:]):
                raise ValueError(f"{ckpt}: plain entry {key!r} differs between ranks (expected a replicated tensor)")
            merged[key] = tensor
    return merged


def load_checkpoint_state(ckpt: str | Path) -> dict[str, torch.Tensor]:
    """The full (unsharded) model state of a verl FSDP actor checkpoint directory, names as saved (a LoRA
    checkpoint's peft-model names included)."""
    ckpt = Path(ckpt)
    if not ckpt.is_dir():
        raise FileNotFoundError(f"checkpoint directory {ckpt} does not exist")
    shards = sorted(p.name for p in ckpt.iterdir() if SHARD_RE.fullmatch(p.name))
    hf_weights = sorted((ckpt / "huggingface").glob("*.safetensors")) if (ckpt / "huggingface").is_dir() else []
    if shards:
        if not (ckpt / "fsdp_config.json").is_file():
            raise FileNotFoundError(f"{ckpt} has model shards but no fsdp_config.json (verl writes both)")
        world_size = int(json.loads((ckpt / "fsdp_config.json").read_text(encoding="utf-8"))["world_size"])
        state = merge_fsdp_shards(ckpt, world_size)
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
    return state


def lora_meta(ckpt: Path, state: dict[str, torch.Tensor]) -> dict[str, Any] | None:
    """Rank and alpha of a LoRA checkpoint (verl's ``lora_train_meta.json``), None for a plain one."""
    adapters = any(lora.is_adapter_tensor(name) for name in state)
    meta = ckpt / "lora_train_meta.json"
    if not meta.is_file():
        if adapters:
            raise ValueError(f"{ckpt} holds LoRA adapter tensors but no lora_train_meta.json (their rank and alpha)")
        return None
    info = json.loads(meta.read_text(encoding="utf-8"))
    if not adapters:
        raise ValueError(f"{ckpt} has lora_train_meta.json but no adapter tensor")
    return info


def trained_state(family: Any, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The trained part's tensors under the released checkpoint's names, from an in-memory or full-model state."""
    prefix = family.part_prefix
    if prefix and any(name.startswith(prefix) for name in state):
        others = sorted({name.split(".")[0] for name in state if not name.startswith(prefix)})
        if others:
            logger.info("checkpoint also holds %s; the base's are exported instead", others)
        state = {family.trainable_name(name): t for name, t in state.items() if name.startswith(prefix)}
    return {out: t.contiguous() for name, tensor in state.items() for out, t in family.checkpoint_tensors(name, tensor)}


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


def _check_trained(family: Any, trained: dict[str, torch.Tensor], base_files: dict[str, Path]) -> None:
    """Names and shapes of the trained part must equal the base's."""
    base_names = {name for name in base_files if not name.startswith(family.other_parts)}
    missing, unexpected = sorted(base_names - set(trained)), sorted(set(trained) - base_names)
    if missing or unexpected:
        raise ValueError(f"checkpoint does not match the base {family.name} model: missing {missing[:10]} "
                         f"({len(missing)}), unexpected {unexpected[:10]} ({len(unexpected)})")
    for name, tensor in trained.items():
        with safe_open(base_files[name], "pt") as f:
            shape = tuple(f.get_slice(name).get_shape())
        if tuple(tensor.shape) != shape:
            raise ValueError(f"{name}: checkpoint shape {tuple(tensor.shape)} != base shape {shape}")


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


def _merged_onto_base(family: Any, state: dict[str, torch.Tensor], meta: dict[str, Any],
                      base_files: dict[str, Path]) -> dict[str, torch.Tensor]:
    """A LoRA-only checkpoint merged onto the base's trainable tensors (checkpoint names)."""
    trained = {}
    for name, file in base_files.items():
        if not name.startswith(family.other_parts):
            with safe_open(file, "pt") as f:
                trained[name] = f.get_tensor(name)
    scale = lora.scaling(int(meta["r"]), meta["lora_alpha"], bool(meta.get("use_rslora", False)))
    for module, (a, b) in lora.adapter_tensors(state).items():
        name = family.checkpoint_name(f"{module}.weight")
        if name not in trained:
            raise KeyError(f"LoRA adapter on {module}, but the base has no {name}")
        weight = trained[name]
        trained[name] = (weight.float() + scale * (b.float() @ a.float())).to(weight.dtype)
    return trained


def write_adapter(family: Any, state: dict[str, torch.Tensor], meta: dict[str, Any], base: Path, out: Path) -> int:
    """The adapters of a LoRA checkpoint in peft's format, named after the full model's modules; returns the
    number of adapted modules."""
    pairs = lora.adapter_tensors(state)
    modules = sorted(family.part_prefix + module for module in pairs)
    tensors = {}
    for module, (a, b) in pairs.items():
        tensors[f"{lora.PEFT_PREFIX}{family.part_prefix}{module}.lora_A.weight"] = a.contiguous()
        tensors[f"{lora.PEFT_PREFIX}{family.part_prefix}{module}.lora_B.weight"] = b.contiguous()
    config = {"peft_type": "LORA", "r": int(meta["r"]), "lora_alpha": meta["lora_alpha"], "target_modules": modules,
              "lora_dropout": 0.0, "bias": "none", "use_rslora": bool(meta.get("use_rslora", False)),
              "base_model_name_or_path": str(base), "task_type": None, "fan_in_fan_out": False,
              "modules_to_save": None}
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, out / "adapter_model.safetensors", metadata={"format": "pt"})
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return len(modules)


def export_model(ckpt: str | Path, base: str | Path, out: str | Path, *, max_shard_bytes: int = 4 << 30,
                 dtype: torch.dtype = EXPORT_DTYPE, adapter_out: str | Path | None = None) -> dict:
    """Write the full model directory ``out`` (see module doc), and the adapter alone to ``adapter_out`` for a LoRA
    checkpoint; returns a summary of what was written."""
    from verl_audio.models.families import family_of_path

    base, out = Path(base), Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"output directory {out} is not empty")
    if not (base / "config.json").is_file():
        raise FileNotFoundError(f"base directory {base} has no config.json")
    family = family_of_path(base)
    if family is None:
        raise ValueError(f"base directory {base} is no checkpoint of a verl-audio model family")
    base_files = base_weight_files(base)
    state = load_checkpoint_state(ckpt)
    meta = lora_meta(Path(ckpt), state)
    adapted = 0
    if meta is not None:
        adapted = len(lora.adapted_modules(state))
        if adapter_out is not None:
            write_adapter(family, state, meta, base, Path(adapter_out))
        if all(lora.is_adapter_tensor(name) for name in state):  # checkpoint.save_lora_only
            merged = _merged_onto_base(family, state, meta, base_files)
        else:
            merged = trained_state(family, lora.merge_checkpoint_state(state, int(meta["r"]), meta["lora_alpha"],
                                                                       bool(meta.get("use_rslora", False))))
    elif adapter_out is not None:
        raise ValueError(f"--adapter-out: {ckpt} is no LoRA checkpoint")
    else:
        merged = trained_state(family, state)
    trained = {name: (t.to(dtype) if t.is_floating_point() else t).contiguous() for name, t in merged.items()}
    _check_trained(family, trained, base_files)

    kept = [name for name in base_files if name.startswith(family.other_parts)]  # talker.*, token2wav.* ...
    sizes = {name: t.numel() * t.element_size() for name, t in trained.items()}
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
            if name in trained:
                tensors[name] = trained[name]
            else:
                with safe_open(base_files[name], "pt") as f:
                    tensors[name] = f.get_tensor(name)
        save_file(tensors, out / file, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(names, file))
    if len(plan) > 1:
        index = {"metadata": {"total_size": sum(sizes.values())}, "weight_map": dict(sorted(weight_map.items()))}
        (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return {"family": family.name, "trained_tensors": len(trained), "base_tensors": len(kept), "files": len(plan),
            "bytes": sum(sizes.values()), "lora_modules_merged": adapted, "out": str(out)}


_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def _dtype_bytes(name: str) -> int:
    if name not in _DTYPE_BYTES:
        raise ValueError(f"unsupported safetensors dtype {name}")
    return _DTYPE_BYTES[name]


def verify_export(out: str | Path) -> None:
    """Load ``out`` as its family's full class; raise on missing, unexpected or mismatched keys."""
    import transformers

    from verl_audio.models.families import family_of_path

    family = family_of_path(out)
    cls = getattr(transformers, family.full_class)
    if family.can_speak:
        # Omni's from_pretrained override calls load_speakers on its result, which breaks with
        # output_loading_info=True (a tuple comes back); so load through the parent class's method
        # (bound to the Omni class) and load the speakers the way the override does
        model, info = super(cls, cls).from_pretrained(out, output_loading_info=True)
    else:
        model, info = cls.from_pretrained(out, output_loading_info=True)
    problems = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    if problems:
        raise ValueError(f"exported model {out} does not load cleanly: {problems}")
    if family.can_speak:
        model.load_speakers(str(Path(out) / "spk_dict.pt"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="verl's FSDP shards are torch pickles: each is opened with torch.load(weights_only=True), which "
               "refuses anything but tensors and torch's allow-listed types.")
    parser.add_argument("--ckpt", required=True, help="verl actor checkpoint directory (global_step_N/actor)")
    parser.add_argument("--base", required=True, help="the original model directory (its other parts, processor files)")
    parser.add_argument("--out", required=True, help="output directory (must be empty or absent)")
    parser.add_argument("--max-shard-gb", type=float, default=4.0, help="largest safetensors file to write")
    parser.add_argument("--verify", action="store_true", help="load the export with transformers and check its keys")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16",
                        help="dtype of the trained tensors written (the released models' is bfloat16)")
    parser.add_argument("--adapter-out", default=None, help="LoRA checkpoints: also write the adapter alone here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    start = time.perf_counter()
    summary = export_model(args.ckpt, args.base, args.out, max_shard_bytes=int(args.max_shard_gb * (1 << 30)),
                           dtype=DTYPES[args.dtype], adapter_out=args.adapter_out)
    if args.verify:
        verify_export(args.out)
        summary["verified"] = True
    summary["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
