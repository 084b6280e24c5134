"""Which checkpoints are Qwen2.5-Omni, and where their thinker config sits (no heavy imports)."""

from __future__ import annotations

from typing import Any

#: config ``model_type`` values of Qwen2.5-Omni checkpoints: full (thinker + talker + token2wav) and thinker-only
OMNI_MODEL_TYPES = ("qwen2_5_omni", "qwen2_5_omni_thinker")
#: prefixes of a full checkpoint's tensors that are not the thinker's
NON_THINKER_PREFIXES = ("talker.", "token2wav.")


def thinker_config(hf_config: Any) -> Any:
    """The thinker's config inside a full Omni config, or ``hf_config`` itself for a thinker checkpoint."""
    model_type = getattr(hf_config, "model_type", None)
    if model_type == "qwen2_5_omni":
        return hf_config.thinker_config
    if model_type == "qwen2_5_omni_thinker":
        return hf_config
    raise ValueError(f"not a Qwen2.5-Omni config: model_type {model_type!r} (expected one of {OMNI_MODEL_TYPES})")
