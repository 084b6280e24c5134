"""What the rest of verl-audio asks of an audio model family: one ``AudioFamily`` subclass per family.

A family module declares the facts (config model types, the class that is trained, the audio encoder's path,
the FSDP units, the placeholder token, how many audio tokens a clip gives, the ids never to sample, what vLLM
calls its weights, whether it can speak) and implements the few behaviours that differ (the whole-audio
processor, position ids, the audio encoder over a batch of clips, a tiny random builder). The processor,
engine, rollouts, speech, export and eval ask the family instead of naming a model; adding a family means one
module and its tests (``verl_audio.models.families``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch


class AudioFamily:
    """Base class of the family declarations (attributes) and behaviours (methods); see the module doc."""

    #: short name used by ``--family`` / ``MODEL_FAMILY`` and in logs
    name: str = ""
    #: ``config.json`` model types served by this family (full checkpoint first)
    model_types: tuple[str, ...] = ()
    #: transformers class trained by the actor and run by the `hf` rollout (the thinker for Omni models)
    trainable_class: str = ""
    #: transformers class of a full checkpoint (what an export reloads as)
    full_class: str = ""
    #: checkpoint prefix of the trainable part inside a full checkpoint ("" when the checkpoint is that part)
    part_prefix: str = ""
    #: checkpoint prefixes of the other parts (talker, codec), skipped when the trainable part is loaded
    other_parts: tuple[str, ...] = ()
    #: attribute path of the audio encoder in the trainable model (frozen and cached when frozen)
    audio_encoder: str = ""
    #: an audio projector apart from the encoder (Qwen2-Audio's); frozen with it unless model.freeze_audio_projector
    audio_encoder_extra: tuple[str, ...] = ()
    #: attribute path of a vision encoder, or None
    vision_encoder: str | None = None
    #: FSDP units: the decoder layer and the encoders' layers (leaves only: FSDP2 wraps parents first)
    wrap_layers: tuple[str, ...] = ()
    #: modules that hold the units above (FSDP1 wraps them as units too, so frozen weights stay apart)
    wrap_containers: tuple[str, ...] = ()
    #: thinker-config attributes naming multimodal markers the policy must never sample
    placeholder_attrs: tuple[str, ...] = ("audio_token_id",)
    #: the same kind of markers named by their token text (for ids the config does not carry)
    placeholder_tokens: tuple[str, ...] = ()
    #: rows of position ids the model takes per token (1: plain, 3: multimodal RoPE)
    position_rows: int = 1
    #: longest clip one audio item may carry, in seconds (longer clips are split into windows), or None
    window_seconds: float | None = None
    #: module path of the decoder layers in the trainable model (where LoRA adapters go by default)
    decoder_layers: str = "model.layers"
    #: whether the family can speak (a talker the speech stage drives)
    can_speak: bool = False
    #: whether vLLM can apply LoRA adapters to this family (else merged weights are synced)
    vllm_lora: bool = False
    #: why not, when it cannot (said in the log when merged weights are synced instead)
    vllm_lora_note: str = ""
    #: whether the language model is a mixture of experts
    moe: bool = False
    #: vLLM architecture of a full checkpoint
    vllm_architecture: str = ""
    #: transformers processor class (``processor_class`` of a processor-only directory's config)
    processor_class: str = ""

    def __repr__(self) -> str:
        return f"<AudioFamily {self.name}>"

    # ---- configs ---------------------------------------------------------------------------------

    def thinker_config(self, hf_config: Any) -> Any:
        """The config of the trainable part (the thinker inside a full Omni config; else the config itself)."""
        return hf_config

    def text_config(self, hf_config: Any) -> Any:
        """The language model's config (vocabulary, eos, positions)."""
        return self.thinker_config(hf_config).get_text_config()

    def audio_token_id(self, hf_config: Any) -> int:
        return int(self.thinker_config(hf_config).audio_token_id)

    def placeholder_ids(self, hf_config: Any, tokenizer: Any, vocab_size: int) -> set[int]:
        """Ids of the multimodal markers (``placeholder_attrs``, ``placeholder_tokens``) the LM head can produce:
        never sampled by either rollout."""
        config = self.thinker_config(hf_config)
        if getattr(config, "audio_token_id", None) is None:
            raise ValueError(f"{self.name} config has no audio_token_id: cannot tell audio placeholders from text")
        ids = {getattr(config, attr, None) for attr in self.placeholder_attrs}
        for token in self.placeholder_tokens:
            found = tokenizer.convert_tokens_to_ids(token)
            if found is None or found == tokenizer.unk_token_id:
                raise ValueError(f"the {self.name} tokenizer has no {token}")
            ids.add(found)
        return {int(i) for i in ids if i is not None and 0 <= int(i) < vocab_size}

    # ---- the trainable model ---------------------------------------------------------------------

    def model_class(self) -> type:
        import transformers

        return getattr(transformers, self.trainable_class)

    def load_trainable(self, path: str | Path, **kwargs: Any) -> torch.nn.Module:
        """The trainable part of checkpoint ``path`` (a full checkpoint's other parts skipped, anything else
        that does not fit raises)."""
        from verl_audio.models.loading import load_part

        return load_part(self.model_class(), str(path), other_parts=self.other_parts, **kwargs)

    def module(self, model: torch.nn.Module, path: str) -> torch.nn.Module | None:
        """``model``'s submodule at dotted ``path`` (None when absent)."""
        for part in path.split("."):
            model = getattr(model, part, None)
            if model is None:
                return None
        return model

    def text_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """The decoder stack (embeddings -> last hidden states) of the trainable model."""
        return model.model

    def lm_head(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.lm_head

    def before_fsdp(self, model: torch.nn.Module) -> None:
        """Adjust the freshly built model for verl's FSDP wrapping (in place); nothing by default."""

    # ---- audio -----------------------------------------------------------------------------------

    def windows(self, clip: np.ndarray) -> list[np.ndarray]:
        """The audio items one clip becomes (itself, or consecutive windows of ``window_seconds``)."""
        return [clip]

    def clip_tokens(self, num_samples: int) -> int:
        """Audio placeholders a clip of ``num_samples`` (16 kHz) fills in the prompt, all its windows together."""
        raise NotImplementedError

    def feature_frames(self, num_samples: int) -> int:
        """Mel frames of one audio item of ``num_samples``."""
        return -(-num_samples // 160)

    def item_tokens(self, frames: int) -> int:
        """Placeholders of one audio item of ``frames`` mel frames."""
        raise NotImplementedError

    def extract(self, feature_extractor: Any, samples: np.ndarray) -> tuple[torch.Tensor, int]:
        """One item's log-mel features, (mel bins, frames) float32, and the frames its mask marks, under the
        whole-audio rule of ``verl_audio.models.audio_features`` (what the family's processor gives in any call)."""
        from verl_audio.models.audio_features import extract_audio_features

        out = extract_audio_features(feature_extractor, [samples])
        frames = int(out["feature_attention_mask"][0].sum())
        return out["input_features"][0, :, :frames].float().contiguous(), frames

    def encode(self, model: torch.nn.Module, features: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        """The audio encoder (with its projection to the text width) over a zero-padded batch of items:
        one ``(item_tokens, hidden)`` tensor per item."""
        raise NotImplementedError

    # ---- prompts and positions -------------------------------------------------------------------

    def load_processor(self, path: str | Path) -> Any:
        """The whole-audio processor of checkpoint ``path``, ready for verl (``get_rope_index`` when the family
        has multimodal positions)."""
        raise NotImplementedError

    def positions(self, model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor,
                  frames: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Prefill position ids of a left-padded batch and the per-row delta decode steps add:
        ``(position_rows, B, L)`` (or ``(B, L)`` for 1 row) and ``(B, 1)``."""
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
        delta = positions[:, -1:] + 1 - mask.shape[1]
        return positions, delta

    # ---- weights ---------------------------------------------------------------------------------

    def checkpoint_name(self, name: str) -> str:
        """The released checkpoint's name of a trainable-model tensor (what export writes, vLLM loads)."""
        return self.part_prefix + name

    def checkpoint_tensors(self, name: str, tensor: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
        """The released checkpoint's tensors holding one trainable-model tensor (a fused tensor is split)."""
        return [(self.checkpoint_name(name), tensor)]

    def trainable_name(self, checkpoint_name: str) -> str:
        """Inverse of ``checkpoint_name`` (a checkpoint's tensor -> the trainable model's name)."""
        if self.part_prefix and checkpoint_name.startswith(self.part_prefix):
            return checkpoint_name[len(self.part_prefix):]
        return checkpoint_name

    # ---- tiny models -----------------------------------------------------------------------------

    def build_tiny(self, out: str | Path, **kwargs: Any) -> Path:
        """A random tiny checkpoint + processor of this family in ``out`` (offline, seconds)."""
        raise NotImplementedError


def rename(name: str, table: Sequence[tuple[str, str]]) -> str:
    """``name`` with the first matching prefix of ``table`` (pairs of regex prefix, replacement) replaced."""
    for pattern, replacement in table:
        new, count = re.subn(f"^{pattern}", replacement, name)
        if count:
            return new
    return name
