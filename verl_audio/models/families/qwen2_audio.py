"""Qwen2-Audio: a Whisper-style audio encoder + projector + Qwen2 decoder, trained as one model.

Facts (transformers 5.19, vLLM 0.32; ``../shared/AUDIO_MODELS.md`` §2): the encoder takes exactly 3,000 mel
frames (30 s) per item, so long clips enter as consecutive 30 s windows (``qwen2_audio_processor``); 25 tokens
per second; 1-D positions (the processor has no ``get_rope_index``: verl numbers the attended tokens). There is
no ``get_audio_features``: ``encode`` runs the encoder and projector as ``Qwen2AudioModel.forward`` does.
In memory the model is ``model.audio_tower``, ``model.multi_modal_projector``, ``model.language_model``,
``lm_head``; released checkpoints (and vLLM, which has no name mapper and no LoRA for this class) use
``audio_tower``, ``multi_modal_projector``, ``language_model.model``, ``language_model.lm_head``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from verl_audio.models.families.base import AudioFamily, rename

#: in-memory name prefix -> released checkpoint prefix
_RELEASED = (("model\\.language_model\\.", "language_model.model."), ("lm_head\\.", "language_model.lm_head."),
             ("model\\.audio_tower\\.", "audio_tower."), ("model\\.multi_modal_projector\\.", "multi_modal_projector."))
_IN_MEMORY = (("language_model\\.model\\.", "model.language_model."), ("language_model\\.lm_head\\.", "lm_head."),
              ("audio_tower\\.", "model.audio_tower."), ("multi_modal_projector\\.", "model.multi_modal_projector."))


class Qwen2Audio(AudioFamily):
    name = "qwen2_audio"
    model_types = ("qwen2_audio",)
    trainable_class = "Qwen2AudioForConditionalGeneration"
    full_class = "Qwen2AudioForConditionalGeneration"
    audio_encoder = "model.audio_tower"
    audio_encoder_extra = ("model.multi_modal_projector",)
    wrap_layers = ("Qwen2DecoderLayer", "Qwen2AudioEncoderLayer")
    wrap_containers = ("Qwen2AudioEncoder",)
    placeholder_attrs = ("audio_token_id",)
    placeholder_tokens = ("<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>")
    position_rows = 1
    decoder_layers = "model.language_model.layers"
    window_seconds = 30.0
    vllm_architecture = "Qwen2AudioForConditionalGeneration"
    processor_class = "Qwen2AudioProcessor"
    vllm_lora_note = "its vLLM class does not implement SupportsLoRA"

    def text_config(self, hf_config: Any) -> Any:
        return hf_config.text_config

    def windows(self, clip: np.ndarray) -> list[np.ndarray]:
        from verl_audio.models.qwen2_audio_processor import windows

        return windows(clip)

    def clip_tokens(self, num_samples: int) -> int:
        from verl_audio.models.qwen2_audio_processor import clip_tokens

        return clip_tokens(num_samples)

    def feature_frames(self, num_samples: int) -> int:
        from verl_audio.models.qwen2_audio_processor import window_frames

        return window_frames(num_samples)

    def item_tokens(self, frames: int) -> int:
        from verl_audio.models.qwen2_audio_processor import window_tokens

        return window_tokens(frames)

    def extract(self, feature_extractor: Any, samples: np.ndarray) -> tuple[torch.Tensor, int]:
        """A window's features in its own 30 s frame, padding included, exactly as the processor makes them (the
        encoder takes all 3,000 frames; its convolutions see the padding next to the last marked frame)."""
        out = feature_extractor([samples], sampling_rate=16000, padding="max_length", truncation=False,
                                return_attention_mask=True, return_tensors="pt")
        return out["input_features"][0].float().contiguous(), int(out["attention_mask"][0].sum())

    def before_fsdp(self, model: torch.nn.Module) -> None:
        """The encoder reads its position table's weight directly, never calling it; as an ``nn.Embedding`` verl's
        FSDP2 would make it a unit of its own, unsharded only when called, and the encoder would meet a sharded
        tensor. Held by a plain module (same parameter, same name), it belongs to the model's root unit."""
        tower = model.model.audio_tower
        table = torch.nn.Module()
        table.weight = tower.embed_positions.weight
        tower.embed_positions = table

    def text_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.model.language_model

    def encode(self, model: torch.nn.Module, features: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        """The encoder and projector over items of exactly 3,000 frames, as ``Qwen2AudioModel.forward`` runs them."""
        from transformers.masking_utils import create_bidirectional_mask

        inner = model.model
        tower = inner.audio_tower
        frames = tower.config.max_source_positions * 2
        if features.shape[-1] != frames:
            raise ValueError(f"Qwen2-Audio's encoder takes items of exactly {frames} frames, got {features.shape[-1]}")
        lengths, out_lengths = tower._get_feat_extract_output_lengths(mask.sum(-1))
        steps = (frames - 2) // 2 + 1
        positions = torch.arange(steps, dtype=lengths.dtype, device=lengths.device).expand(len(features), steps)
        valid = (positions < lengths.unsqueeze(1)).long()
        dummy = torch.zeros((len(features), steps, 1), dtype=features.dtype, device=features.device)
        attention = create_bidirectional_mask(config=tower.config, inputs_embeds=dummy, attention_mask=valid)
        hidden = tower(features, attention_mask=attention).last_hidden_state
        projected = inner.multi_modal_projector(hidden)
        return [projected[i, : int(n)] for i, n in enumerate(out_lengths.tolist())]

    def load_processor(self, path: str | Path) -> Any:
        from transformers import AutoConfig, AutoProcessor

        from verl_audio.models.qwen2_audio_processor import WindowedQwen2AudioProcessor

        processor = WindowedQwen2AudioProcessor.from_processor(AutoProcessor.from_pretrained(path))
        processor.config = AutoConfig.from_pretrained(path)
        return processor

    def checkpoint_name(self, name: str) -> str:
        return rename(name, _RELEASED)

    def trainable_name(self, checkpoint_name: str) -> str:
        return rename(checkpoint_name, _IN_MEMORY)

    def build_tiny(self, out: str | Path, **kwargs: Any) -> Path:
        from verl_audio.models.tiny_qwen2_audio import build_tiny_qwen2_audio

        return build_tiny_qwen2_audio(out, **{k: v for k, v in kwargs.items() if k in ("vocab", "seed")})


FAMILY = Qwen2Audio()
