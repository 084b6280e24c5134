"""The Qwen2.5-Omni processor that verl gets for Omni checkpoints.

verl 0.9.1's ``hf_processor`` binds a model's ``get_rope_index`` to the processor for the processor
classes it knows; ``Qwen2_5OmniProcessor`` is not one of them, so it warns and returns ``None``, and
the agent loop would then treat audio prompts as text. ``load_verl_processor`` builds what verl
expects instead:

* the Omni processor from ``audio_features.load_omni_processor``: a ``WholeAudioOmniProcessor``, whose
  every call (prompt building, ``_compute_multi_modal_inputs``, the dataset's length filter) keeps its
  clips whole and pads them only to the longest clip of the call, with the same features as the
  rollout's; its class name and saved configs are the stock ``Qwen2_5OmniProcessor``'s,
* ``processor.config``: the checkpoint config, as verl's ``hf_processor`` sets it,
* ``processor.get_rope_index``: transformers' Omni ``get_rope_index`` (see ``positions``), returning
  ``(3, B, L)`` TMRoPE rows,
* ``processor.get_rope_index_kwargs(multi_modal_inputs)``: the audio lengths (``audio_seqlens``) the
  agent loop passes on to it,
* ``processor.image_token_id`` / ``video_token_id``: the ids verl's vLLM server collapses placeholder runs by.

``omni_aware_hf_processor(original)`` wraps verl's function so that an Omni checkpoint directory gets
this processor and everything else goes to verl unchanged; ``verl_audio.patches.patch_omni_hf_processor``
installs it at ``import verl`` (in every process), so this module imports transformers only when a
processor is actually built.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from verl_audio.models.omni_config import OMNI_MODEL_TYPES

logger = logging.getLogger(__name__)

OMNI_PROCESSOR_CLASS = "Qwen2_5OmniProcessor"


def is_omni_checkpoint(name_or_path: Any) -> bool:
    """Whether ``name_or_path`` is a local directory holding a Qwen2.5-Omni checkpoint or processor.

    Decided from ``config.json``'s ``model_type`` or, for a processor-only directory, from the
    ``processor_class`` of its preprocessor config. Hub ids (not directories) are left to verl.
    """
    path = Path(str(name_or_path))
    if not path.is_dir():
        return False
    config = path / "config.json"
    if config.is_file():
        return json.loads(config.read_text(encoding="utf-8")).get("model_type") in OMNI_MODEL_TYPES
    for name in ("processor_config.json", "preprocessor_config.json"):
        file = path / name
        if file.is_file() and json.loads(file.read_text(encoding="utf-8")).get("processor_class") == OMNI_PROCESSOR_CLASS:
            return True
    return False


def attach_rope_index(processor: Any, config: Any) -> Any:
    """Give ``processor`` the attributes verl's agent loop uses for M-RoPE models (in place; returns it)."""
    from verl_audio.models.positions import OmniRopeIndex, rope_index_kwargs

    processor.config = config
    # verl's vLLM server collapses image/video placeholder runs by these ids (the Omni processor has none)
    tokenizer = processor.tokenizer
    processor.image_token_id = tokenizer.convert_tokens_to_ids(processor.image_token)
    processor.video_token_id = tokenizer.convert_tokens_to_ids(processor.video_token)
    processor.get_rope_index = OmniRopeIndex(config).get_rope_index
    # a plain function attribute: verl calls it as ``processor.get_rope_index_kwargs(mm_inputs)``
    processor.get_rope_index_kwargs = rope_index_kwargs
    return processor


def load_verl_processor(path: str | Path, *, max_seconds: int | None = None) -> Any:
    """The Omni processor for checkpoint ``path``, ready for verl (see module doc).

    ``path`` must hold the processor files and a ``config.json`` (the thinker config supplies the
    token ids and TMRoPE settings).
    """
    from transformers import AutoConfig

    from verl_audio.models.audio_features import load_omni_processor

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} has no config.json: the Omni processor needs the model config for TMRoPE")
    processor = load_omni_processor(path, max_seconds=max_seconds)
    return attach_rope_index(processor, AutoConfig.from_pretrained(path))


def omni_aware_hf_processor(original: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap verl's ``hf_processor``: Omni checkpoint directories get ``load_verl_processor``.

    verl swallows processor errors (returning ``None`` with a warning); for Omni checkpoints errors
    propagate, because a ``None`` processor silently turns audio prompts into text prompts.
    """

    @functools.wraps(original)
    def hf_processor(name_or_path: Any, **kwargs: Any) -> Any:
        if is_omni_checkpoint(name_or_path):
            # trust_remote_code / use_fast do not apply: the Omni processor is built in, its image
            # processor is picked by load_omni_processor
            logger.debug("loading the Qwen2.5-Omni processor for %s (ignoring %s)", name_or_path, sorted(kwargs))
            return load_verl_processor(name_or_path)
        return original(name_or_path, **kwargs)

    return hf_processor

