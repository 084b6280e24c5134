"""A clip's log-mel features and the audio encoder over a batch of them: what generation and speech share.

The rollout's featurizer makes ``ClipFeatures`` (one per distinct clip, cached by content); the `hf` rollout's
generator and the speech stage run the thinker's audio encoder over them with ``encode_clips``, as one
zero-padded batch, and scatter the outputs into the prompt's ``<|AUDIO|>`` slots.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from verl_audio.models.audio_features import audio_placeholder_count


@dataclass(frozen=True)
class ClipFeatures:
    """One clip's log-mel features, unpadded: ``features`` is (mel bins, frames) float32 on CPU."""

    key: str
    features: torch.Tensor

    @property
    def frames(self) -> int:
        return int(self.features.shape[-1])

    @property
    def tokens(self) -> int:
        """``<|AUDIO|>`` placeholders (audio-encoder outputs) of this clip."""
        return audio_placeholder_count(self.frames)


def encode_clips(model: Any, clips: Sequence[ClipFeatures], device: Any) -> torch.Tensor:
    """The audio encoder of ``model`` (a thinker) over ``clips`` as one zero-padded batch; the outputs of
    all clips concatenated, ``sum(c.tokens)`` rows (the encoder keeps only the frames the mask marks)."""
    frames = max(c.frames for c in clips)
    feats = torch.zeros(len(clips), clips[0].features.shape[0], frames)
    mask = torch.zeros(len(clips), frames, dtype=torch.long)
    for i, c in enumerate(clips):
        feats[i, :, : c.frames] = c.features
        mask[i, : c.frames] = 1
    return model.get_audio_features(feats.to(device, model.dtype), mask.to(device), return_dict=True).last_hidden_state
