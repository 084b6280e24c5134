"""The model families verl-audio trains, and the one lookup from a checkpoint to its family.

One module per family (``qwen2_5_omni``, ``qwen2_audio``, ``qwen3_omni``), each an ``AudioFamily`` (``base``).
A checkpoint's family is read from its ``config.json`` ``model_type`` (the names are exact; ``architectures[0]``
must agree when present); anything else raises ``UnknownFamily`` listing the families. Importing this package
is light: the family modules import transformers' model code only when a method needs it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from verl_audio.models.families.base import AudioFamily
from verl_audio.models.families.qwen2_5_omni import FAMILY as QWEN2_5_OMNI
from verl_audio.models.families.qwen2_audio import FAMILY as QWEN2_AUDIO
from verl_audio.models.families.qwen3_omni import FAMILY as QWEN3_OMNI

FAMILIES: dict[str, AudioFamily] = {f.name: f for f in (QWEN2_5_OMNI, QWEN2_AUDIO, QWEN3_OMNI)}
#: every config model type a family serves
MODEL_TYPES: dict[str, AudioFamily] = {t: f for f in FAMILIES.values() for t in f.model_types}


class UnknownFamily(ValueError):
    """A checkpoint or name that is none of verl-audio's model families."""


def family_named(name: str) -> AudioFamily:
    """The family called ``name`` (``qwen2_5_omni``, ``qwen2_audio``, ``qwen3_omni``)."""
    if name not in FAMILIES:
        raise UnknownFamily(f"unknown model family {name!r}; families: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def family_of_config(hf_config: Any) -> AudioFamily:
    """The family of a transformers config (its ``model_type``)."""
    model_type = getattr(hf_config, "model_type", None)
    if model_type not in MODEL_TYPES:
        raise UnknownFamily(f"model_type {model_type!r} is none of verl-audio's families "
                            f"({', '.join(f'{f.name}: {list(f.model_types)}' for f in FAMILIES.values())})")
    return MODEL_TYPES[model_type]


#: families by their transformers processor class
PROCESSOR_CLASSES: dict[str, AudioFamily] = {f.processor_class: f for f in FAMILIES.values()}


def family_of_processor_dir(path: str | Path) -> AudioFamily | None:
    """The family whose processor a local directory's ``processor_config.json`` / ``preprocessor_config.json``
    names (``processor_class``), or None."""
    for name in ("processor_config.json", "preprocessor_config.json"):
        file = Path(str(path)) / name
        if file.is_file():
            family = PROCESSOR_CLASSES.get(json.loads(file.read_text(encoding="utf-8")).get("processor_class"))
            if family is not None:
                return family
    return None


def family_of_path(path: str | Path) -> AudioFamily | None:
    """The family of a local checkpoint directory from its ``config.json``; None when it is not one of ours
    (or not a local checkpoint). A ``model_type`` of ours whose ``architectures[0]`` names another family raises."""
    config = Path(str(path)) / "config.json"
    if not config.is_file():
        return None
    data = json.loads(config.read_text(encoding="utf-8"))
    family = MODEL_TYPES.get(data.get("model_type"))
    architectures = data.get("architectures") or []
    if family is not None and architectures:
        known = {family.trainable_class, family.full_class, family.vllm_architecture}
        if architectures[0] not in known:
            raise UnknownFamily(f"{config}: model_type {data['model_type']!r} is {family.name}, but architectures[0] "
                                f"{architectures[0]!r} is not one of its classes {sorted(known)}")
    return family
