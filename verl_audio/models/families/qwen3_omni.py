"""The Qwen3-Omni-MoE thinker: its audio encoder, vision encoder and mixture-of-experts decoder are trained.

Facts (transformers 5.19, vLLM 0.32; ``../shared/AUDIO_MODELS.md`` §3): a full checkpoint (``qwen3_omni_moe``)
holds ``thinker.*`` (and ``talker.*``, ``code2wav.*`` when it can speak); 13 audio tokens per 100 mel frames, no
cut; interleaved multimodal RoPE (3 rows) from transformers' ``get_rope_index``, which returns floats
(``qwen3_omni_processor`` makes them integers). The experts are fused 3-D tensors in memory; vLLM's thinker
loads them fused or per expert and maps bare ``model.`` names itself. Speech output needs the Qwen3 talker,
which the speech stage does not drive: refused at start. On vLLM's CPU build a weight update leaves the MoE
experts unpacked (``verl_audio.rollout.vllm.worker`` repacks them).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from verl_audio.models.families.base import AudioFamily

CHUNK_FRAMES = 100  # the encoder's window: 2 * n_window frames, 13 tokens
_FUSED_EXPERTS = re.compile(r"(.+\.mlp\.experts)\.(gate_up_proj|down_proj)")


class Qwen3OmniThinker(AudioFamily):
    name = "qwen3_omni"
    model_types = ("qwen3_omni_moe", "qwen3_omni_moe_thinker")
    trainable_class = "Qwen3OmniMoeThinkerForConditionalGeneration"
    full_class = "Qwen3OmniMoeForConditionalGeneration"
    part_prefix = "thinker."
    other_parts = ("talker.", "code2wav.")
    audio_encoder = "audio_tower"
    vision_encoder = "visual"
    wrap_layers = ("Qwen3OmniMoeThinkerTextDecoderLayer", "Qwen3OmniMoeAudioEncoderLayer", "Qwen3OmniMoeVisionBlock")
    wrap_containers = ("Qwen3OmniMoeAudioEncoder", "Qwen3OmniMoeVisionEncoder")
    placeholder_attrs = ("audio_token_id", "image_token_id", "video_token_id", "audio_start_token_id",
                         "audio_end_token_id", "vision_start_token_id", "vision_end_token_id")
    position_rows = 3
    vllm_lora = False
    vllm_lora_note = "MoE + LoRA selects vLLM's Triton experts, absent from its CPU build; untested on GPU here"
    moe = True
    vllm_architecture = "Qwen3OmniMoeForConditionalGeneration"
    processor_class = "Qwen3OmniMoeProcessor"

    def thinker_config(self, hf_config: Any) -> Any:
        from verl_audio.models.qwen3_omni_processor import thinker_config

        return thinker_config(hf_config)

    def item_tokens(self, frames: int) -> int:
        full, rest = divmod(frames, CHUNK_FRAMES)
        tail = 0 if rest == 0 else ((((rest - 1) // 2 + 1) - 1) // 2 + 1 - 1) // 2 + 1
        return 13 * full + tail

    def clip_tokens(self, num_samples: int) -> int:
        return self.item_tokens(self.feature_frames(num_samples))

    def encode(self, model: torch.nn.Module, features: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        out = model.get_audio_features(features, feature_attention_mask=mask, return_dict=True).last_hidden_state
        return list(out.split([self.item_tokens(int(f)) for f in mask.sum(-1).tolist()]))

    def load_processor(self, path: str | Path) -> Any:
        from verl_audio.models.qwen3_omni_processor import load_verl_processor

        return load_verl_processor(path)

    def positions(self, model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor,
                  frames: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        seqlens = torch.tensor(list(frames), dtype=torch.long, device=ids.device) if frames else None
        positions, deltas = model.get_rope_index(ids, None, None, mask, False, seqlens, None)
        return positions.long(), deltas.long().to(ids.device) - (1 - mask).sum(dim=-1, keepdim=True)

    def checkpoint_tensors(self, name: str, tensor: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
        """transformers 5 holds a layer's experts fused (``gate_up_proj``: experts x (gate rows, then up rows) x
        hidden; ``down_proj``: experts x hidden x intermediate); the released checkpoint has one tensor each."""
        match = _FUSED_EXPERTS.fullmatch(name)
        if match is None:
            return super().checkpoint_tensors(name, tensor)
        base = self.checkpoint_name(match.group(1))
        if match.group(2) == "down_proj":
            return [(f"{base}.{e}.down_proj.weight", tensor[e]) for e in range(tensor.shape[0])]
        half = tensor.shape[1] // 2
        return [item for e in range(tensor.shape[0])
                for item in ((f"{base}.{e}.gate_proj.weight", tensor[e, :half]),
                             (f"{base}.{e}.up_proj.weight", tensor[e, half:]))]

    def build_tiny(self, out: str | Path, **kwargs: Any) -> Path:
        from verl_audio.models.tiny_qwen3_omni import build_tiny_qwen3_omni

        return build_tiny_qwen3_omni(out, **{k: v for k, v in kwargs.items() if k in ("vocab", "seed", "talker")})


FAMILY = Qwen3OmniThinker()
