"""The Qwen2.5-Omni processor that verl gets for Omni checkpoints, and the patch serving every audio family.

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

``verl_audio.patches.patch_audio_hf_processor`` makes verl's ``hf_processor`` return this processor for
Qwen2.5-Omni checkpoint directories (and each other family's for theirs), in every process; this module
imports transformers only when a processor is actually built.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

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
