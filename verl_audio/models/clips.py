"""An audio item's log-mel features and the audio encoder over a batch of them: what generation and speech share.

The rollout's featurizer makes ``ClipFeatures`` (one per distinct item: a clip, or a window of one for families
that cap an item's length; cached by content); the `hf` rollout's generator and the speech stage run the
family's audio encoder over them with ``encode_clips``, as one zero-padded batch, and scatter the outputs into
the prompt's audio placeholder slots.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class ClipFeatures:
    """One audio item's log-mel features (``features``: mel bins x width, float32 on CPU), the ``frames`` of them
    its attention mask marks (the width, except for families whose encoder takes a fixed width, which keep their
    padding as the processor makes it), and the placeholders (encoder outputs) the family gives it."""

    key: str
    features: torch.Tensor
    frames: int
    tokens: int


def encode_clips(family: Any, model: Any, clips: Sequence[ClipFeatures], device: Any) -> torch.Tensor:
    """The family's audio encoder of ``model`` over ``clips`` as one zero-padded batch: every clip's outputs,
    concatenated in order (``sum(c.tokens)`` rows)."""
    width = max(int(c.features.shape[-1]) for c in clips)
    feats = torch.zeros(len(clips), clips[0].features.shape[0], width)
    mask = torch.zeros(len(clips), width, dtype=torch.long)
    for i, c in enumerate(clips):
        feats[i, :, : c.features.shape[-1]] = c.features
        mask[i, : c.frames] = 1
    out = family.encode(model, feats.to(device, model.dtype), mask.to(device))
    counts = [int(o.shape[0]) for o in out]
    if counts != [c.tokens for c in clips]:
        raise ValueError(f"{family.name}: the audio encoder gave {counts} outputs for clips that call for "
                         f"{[c.tokens for c in clips]}")
    return torch.cat(out)
