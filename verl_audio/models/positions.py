"""TMRoPE position ids for Qwen2.5-Omni prompts, computed the way the model computes them.

verl's agent loop (``AgentLoopWorker._compute_position_ids``) asks its processor for
``get_rope_index(input_ids=, attention_mask=, image_grid_thw=, video_grid_thw=,
**get_rope_index_kwargs(multi_modal_inputs))`` and expects ``(3, 1, L)`` rotary rows back; it then
prepends a text row (0, 1, 2, ... over the attended tokens, 1 on padding) to make the ``(1, 4, L)``
layout the actor receives. For Qwen2-VL verl binds the model's own ``get_rope_index`` to the
processor; here the same transformers function is used, unchanged, on a small holder that carries
the thinker config, because the Omni method also calls ``self.get_chunked_index`` with the model's
three-argument signature, which the Omni *processor* defines with two arguments (binding it to the
processor would break the audio-in-video branch).

Audio lengths reach it as ``audio_seqlens`` (mel frames per clip, from ``feature_attention_mask``),
exactly as ``Qwen2_5OmniThinkerForConditionalGeneration.forward`` passes ``audio_feature_lengths``.
transformers uses them only when an image or video grid is present; for audio-only and text-only
prompts it takes a 1-D branch (cumulative sum of the attention mask). Both give consecutive positions
for audio, because Omni places an audio clip's tokens at consecutive positions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from transformers.models.qwen2_5_omni.modeling_qwen2_5_omni import (
    Qwen2_5OmniPreTrainedModelForConditionalGeneration as _OmniModelBase,
)

from verl_audio.models.omni_config import thinker_config

#: thinker-config attributes the transformers function reads; missing ones would surface as an
#: AttributeError deep inside a rollout, so they are checked when the holder is built
REQUIRED_THINKER_ATTRS = (
    "image_token_id", "video_token_id", "audio_token_id", "vision_start_token_id",
    "audio_start_token_id", "position_id_per_seconds", "seconds_per_chunk",
)




class OmniRopeIndex:
    """transformers' Qwen2.5-Omni ``get_rope_index``, bound to a thinker config instead of a model.

    The three methods are the transformers functions themselves (not copies), so a change upstream
    is picked up, and ``tests/test_upstream_drift.py`` fails if their signatures move.
    """

    get_rope_index = _OmniModelBase.get_rope_index
    get_llm_pos_ids_for_vision = _OmniModelBase.get_llm_pos_ids_for_vision
    get_chunked_index = _OmniModelBase.get_chunked_index

    def __init__(self, config: Any) -> None:
        self.config = thinker_config(config)
        missing = [name for name in REQUIRED_THINKER_ATTRS if getattr(self.config, name, None) is None]
        if missing:
            raise ValueError(f"Qwen2.5-Omni thinker config lacks {missing}, which get_rope_index reads")
        # the model sets this in Qwen2_5OmniThinkerForConditionalGeneration.__init__
        self.spatial_merge_size = self.config.vision_config.spatial_merge_size


def rope_index_kwargs(multi_modal_inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The Omni-specific ``get_rope_index`` kwargs carried by a processor output.

    ``audio_seqlens``: mel frames per clip (``feature_attention_mask.sum(-1)``), what the model's
    forward passes as ``audio_feature_lengths``; ``second_per_grids``: the processor's
    ``video_second_per_grid``. Absent inputs are left out, so the transformers defaults apply.
    """
    kwargs: dict[str, Any] = {}
    mask = multi_modal_inputs.get("feature_attention_mask")
    if mask is not None:
        kwargs["audio_seqlens"] = torch.as_tensor(mask).sum(-1)
    seconds = multi_modal_inputs.get("video_second_per_grid")
    if seconds is not None:
        kwargs["second_per_grids"] = torch.as_tensor(seconds)
    return kwargs

