"""Token ids a generator must know: end-of-sequence, multimodal placeholders, the tokenizer's decodable range.

Both rollout backends and the speech stage read them here: the `hf` generator bans placeholders and ids past
the tokenizer, vLLM's worker extension bans the same set after log-probs, the speech stage stops a response
at its first end-of-sequence id.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import GenerationConfig

#: thinker-config ids its forward and ``get_rope_index`` read as multimodal markers, not as text:
#: placeholders filled with encoder outputs and the bos/eos that delimit audio and vision segments
PLACEHOLDER_ID_ATTRS = (
    "audio_token_id",
    "image_token_id",
    "video_token_id",
    "audio_start_token_id",
    "audio_end_token_id",
    "vision_start_token_id",
    "vision_end_token_id",
)


def placeholder_token_ids(config: Any, vocab_size: int) -> set[int]:
    """The ids of ``PLACEHOLDER_ID_ATTRS`` set in the thinker ``config`` that the LM head can produce."""
    if getattr(config, "audio_token_id", None) is None:
        raise ValueError("the thinker config has no audio_token_id: cannot tell audio placeholders from text")
    ids = {getattr(config, attr, None) for attr in PLACEHOLDER_ID_ATTRS}
    return {int(i) for i in ids if i is not None and 0 <= int(i) < vocab_size}


def tokenizer_size(path: str, vocab_size: int) -> int:
    """Ids the checkpoint's tokenizer can decode (``len(tokenizer)``), at most ``vocab_size``."""
    from transformers import AutoTokenizer

    return min(len(AutoTokenizer.from_pretrained(path)), vocab_size)


def eos_token_ids(model: torch.nn.Module, path: str) -> set[int]:
    """End-of-sequence ids from the checkpoint's generation config, else from the text config."""
    try:
        eos = GenerationConfig.from_pretrained(path).eos_token_id
    except OSError:  # no generation_config.json
        eos = None
    if eos is None:
        eos = model.config.get_text_config().eos_token_id
    if eos is None:
        raise ValueError(f"no eos_token_id in {path}: cannot tell when a response ends")
    return {int(e) for e in ([eos] if isinstance(eos, int) else eos)}
