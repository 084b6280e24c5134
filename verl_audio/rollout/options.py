"""Reading verl's rollout settings the same way in both backends and the speech server: device, dtype, model path."""

from __future__ import annotations

from typing import Any

import torch

DEVICES = ("auto", "cpu", "cuda")
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}  # fmt: skip


def model_path(model_config: Any) -> str:
    """The local checkpoint directory of verl's model config (an ``HFModelConfig``, DictConfig or dict)."""
    path = model_config.get("local_path") or model_config.get("path")
    if not path:
        raise ValueError("model config has neither 'local_path' nor 'path'")
    return str(path)


def resolve_device(option: str) -> torch.device:
    """``auto`` -> cuda when verl's platform is CUDA and torch sees a GPU, else cpu; ``cuda`` without one raises."""
    if option == "auto":
        from verl.utils.device import get_device_name

        return torch.device("cuda" if get_device_name() == "cuda" and torch.cuda.is_available() else "cpu")
    if option == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("rollout.engine_kwargs.hf.device=cuda but torch sees no CUDA device")
    return torch.device(option)


def resolve_dtype(name: str) -> torch.dtype:
    """verl's ``rollout.dtype`` string -> torch dtype."""
    if name not in DTYPES:
        raise ValueError(f"rollout.dtype must be one of {sorted(DTYPES)}, got {name!r}")
    return DTYPES[name]
