"""Qwen2.5-Omni: the thinker (audio encoder + vision encoder + Qwen2.5 decoder) trained, talker and token2wav kept.

Facts (transformers 5.19, vLLM 0.32; ``../shared/AUDIO_MODELS.md`` §1): a full checkpoint (``qwen2_5_omni``) holds
``thinker.*``, ``talker.*``, ``token2wav.*``; the thinker class loads its part. 25 audio tokens per second, no cut
in the encoder (the stock processor's 30 s cut is lifted by ``audio_features.WholeAudioOmniProcessor``). TMRoPE
positions (3 rows) from transformers' own ``get_rope_index`` (``positions.OmniRopeIndex``). vLLM serves full
checkpoints only, as ``Qwen2_5OmniThinkerForConditionalGeneration``, and maps ``thinker.``-prefixed names.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from verl_audio.models.families.base import AudioFamily


class Qwen25Omni(AudioFamily):
    name = "qwen2_5_omni"
    model_types = ("qwen2_5_omni", "qwen2_5_omni_thinker")
    trainable_class = "Qwen2_5OmniThinkerForConditionalGeneration"
    full_class = "Qwen2_5OmniForConditionalGeneration"
    part_prefix = "thinker."
    other_parts = ("talker.", "token2wav.")
    audio_encoder = "audio_tower"
    vision_encoder = "visual"
    wrap_layers = ("Qwen2_5OmniDecoderLayer", "Qwen2_5OmniAudioEncoderLayer", "Qwen2_5OmniVisionBlock")
    wrap_containers = ("Qwen2_5OmniAudioEncoder", "Qwen2_5OmniVisionEncoder")
    placeholder_attrs = ("audio_token_id", "image_token_id", "video_token_id", "audio_start_token_id",
                         "audio_end_token_id", "vision_start_token_id", "vision_end_token_id")
    position_rows = 3
    can_speak = True
    vllm_lora = True
    vllm_architecture = "Qwen2_5OmniForConditionalGeneration"
    processor_class = "Qwen2_5OmniProcessor"

    def thinker_config(self, hf_config: Any) -> Any:
        from verl_audio.models.omni_config import thinker_config

        return thinker_config(hf_config)

    def clip_tokens(self, num_samples: int) -> int:
        from verl_audio.models.audio_features import audio_tokens_for_samples

        return audio_tokens_for_samples(num_samples)

    def item_tokens(self, frames: int) -> int:
        from verl_audio.models.audio_features import audio_placeholder_count

        return audio_placeholder_count(frames)

    def encode(self, model: torch.nn.Module, features: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        out = model.get_audio_features(features, mask, return_dict=True).last_hidden_state
        return list(out.split([self.item_tokens(int(f)) for f in mask.sum(-1).tolist()]))

    def load_processor(self, path: str | Path) -> Any:
        from verl_audio.models.omni_processor import load_verl_processor

        return load_verl_processor(path)

    def positions(self, model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor,
                  frames: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        seqlens = torch.tensor(list(frames), dtype=torch.long, device=ids.device) if frames else None
        positions, deltas = model.get_rope_index(ids, None, None, mask, False, seqlens, None)
        return positions, deltas.to(ids.device) - (1 - mask).sum(dim=-1, keepdim=True)

    def build_tiny(self, out: str | Path, **kwargs: Any) -> Path:
        from verl_audio.models.tiny_qwen2_5_omni import build_tiny_omni

        return build_tiny_omni(out, **kwargs)


FAMILY = Qwen25Omni()
