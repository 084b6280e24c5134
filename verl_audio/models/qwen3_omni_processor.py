"""The Qwen3-Omni thinker's processor for verl: whole clips with batch-independent features, integer positions.

* **Features.** The stock processor pads a call's clips to the longest (``padding=True``) and drops the last mask
  column when that length is not a multiple of the hop, so a clip's frame count (and its placeholder count:
  13 per 100 frames) depends on the other clips of the call, while vLLM always counts ceil(n / 160). Calls here
  follow the project's whole-audio rule (``audio_features``: every clip padded past its end by guard hops, to a
  multiple of the hop), so every clip gets ceil(n / 160) frames, as in vLLM, and the same features whatever
  else the call holds.
* **Positions.** transformers' ``get_rope_index`` (interleaved multimodal RoPE, bound to the thinker config as
  ``positions.OmniRopeIndex`` binds Qwen2.5-Omni's) returns float32 rows; verl would concatenate them with its
  long text row into float position ids. ``Qwen3OmniRopeIndex`` returns them as integers.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import Qwen3OmniMoeProcessor
from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import (
    Qwen3OmniMoePreTrainedModelForConditionalGeneration as _ThinkerBase,
)

from verl_audio.models.audio_features import cut_to_marked_frames, whole_audio_kwargs

#: thinker-config attributes transformers' get_rope_index reads (vision_start_token_id is not declared by the class)
REQUIRED_THINKER_ATTRS = ("image_token_id", "video_token_id", "audio_token_id", "vision_start_token_id",
                          "audio_start_token_id", "position_id_per_seconds")


def thinker_config(hf_config: Any) -> Any:
    return hf_config.thinker_config if getattr(hf_config, "model_type", None) == "qwen3_omni_moe" else hf_config


class WholeAudioQwen3OmniProcessor(Qwen3OmniMoeProcessor):
    """``Qwen3OmniMoeProcessor`` whose calls keep clips whole with batch-independent features (module doc)."""

    def __call__(self, text: Any = None, images: Any = None, videos: Any = None, audio: Any = None, **kwargs: Any):
        if audio is None:
            return super().__call__(text=text, images=images, videos=videos, **kwargs)
        audio_kwargs = {**(kwargs.pop("audio_kwargs", None) or {}), **whole_audio_kwargs(audio),
                        "padding": "max_length"}
        kwargs.pop("sampling_rate", None)
        out = super().__call__(text=text, images=images, videos=videos, audio=audio, audio_kwargs=audio_kwargs,
                               **kwargs)
        return cut_to_marked_frames(out)

    @classmethod
    def from_processor(cls, processor: Qwen3OmniMoeProcessor) -> WholeAudioQwen3OmniProcessor:
        if isinstance(processor, cls):
            return processor
        return cls(image_processor=processor.image_processor, video_processor=processor.video_processor,
                   feature_extractor=processor.feature_extractor, tokenizer=processor.tokenizer,
                   chat_template=processor.chat_template)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "processor_class": Qwen3OmniMoeProcessor.__name__}

    def save_pretrained(self, save_directory: Any, **kwargs: Any) -> Any:
        stock = Qwen3OmniMoeProcessor(image_processor=self.image_processor, video_processor=self.video_processor,
                                      feature_extractor=self.feature_extractor, tokenizer=self.tokenizer,
                                      chat_template=self.chat_template)
        return stock.save_pretrained(save_directory, **kwargs)


class Qwen3OmniRopeIndex:
    """transformers' Qwen3-Omni ``get_rope_index`` on a thinker config, returning integer positions."""

    _rope_index = _ThinkerBase.get_rope_index
    get_llm_pos_ids_for_vision = _ThinkerBase.get_llm_pos_ids_for_vision

    def __init__(self, config: Any) -> None:
        self.config = thinker_config(config)
        missing = [name for name in REQUIRED_THINKER_ATTRS if getattr(self.config, name, None) is None]
        if missing:
            raise ValueError(f"Qwen3-Omni thinker config lacks {missing}, which get_rope_index reads")
        self.spatial_merge_size = self.config.vision_config.spatial_merge_size

    def get_rope_index(self, input_ids: Any = None, image_grid_thw: Any = None, video_grid_thw: Any = None,
                       attention_mask: Any = None, use_audio_in_video: bool = False, audio_seqlens: Any = None,
                       second_per_grids: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        positions, deltas = self._rope_index(input_ids, image_grid_thw, video_grid_thw, attention_mask,
                                             use_audio_in_video, audio_seqlens, second_per_grids)
        return positions.long(), deltas.long()


def rope_index_kwargs(multi_modal_inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The audio lengths (mel frames per clip) ``get_rope_index`` takes, from a processor output."""
    mask = multi_modal_inputs.get("feature_attention_mask")
    return {} if mask is None else {"audio_seqlens": torch.as_tensor(mask).sum(-1)}


def load_verl_processor(path: str | Path) -> WholeAudioQwen3OmniProcessor:
    """The processor verl gets for a Qwen3-Omni checkpoint: whole audio, the config, integer positions."""
    from transformers import AutoConfig, AutoProcessor

    from verl_audio.models.audio_features import CachingWhisperFeatureExtractor, disable_audio_truncation

    processor = WholeAudioQwen3OmniProcessor.from_processor(AutoProcessor.from_pretrained(path))
    processor.feature_extractor = CachingWhisperFeatureExtractor.from_extractor(processor.feature_extractor)
    disable_audio_truncation(processor.tokenizer)
    processor.config = AutoConfig.from_pretrained(path)
    # verl's vLLM server collapses image/video placeholder runs by these ids (the stock processor has none)
    processor.image_token_id = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
    processor.video_token_id = processor.tokenizer.convert_tokens_to_ids(processor.video_token)
    processor.get_rope_index = Qwen3OmniRopeIndex(processor.config).get_rope_index
    processor.get_rope_index_kwargs = rope_index_kwargs
    return processor
