"""Audio references of any form (path, datasets-style dict, array) -> one mono float32 array at a rate.

The one decoding entry for rows and requests: the dataset (``AudioRLHFDataset``), the agent loop's multimodal
inputs, the rollout's featurizer and eval all call ``to_array``. Paths are read with ``data.audio.load_audio``
(or, confined to the data's audio roots, through this process's decode cache).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from verl_audio.data.audio import TARGET_SR, AudioError, load_audio, resample
from verl_audio.data.confine import confine
from verl_audio.data.decode_cache import CACHE


def to_array(audio: Any, sampling_rate: int = TARGET_SR, roots: Sequence[str] | None = None) -> np.ndarray:
    """An audio reference -> mono float32 array at `sampling_rate`.

    Accepts a path (str or PathLike), a dict with "path", or a dict with "array" and "sampling_rate"
    (the Hugging Face datasets Audio layout); a bare array is taken to be at `sampling_rate` already.
    With `roots`, a path is confined to them and decoded through this process's decode cache; without,
    the caller vouches for the path (a file it chose itself) and it is decoded directly.
    """
    if isinstance(audio, dict) and audio.get("array") is None and audio.get("path"):
        audio = audio["path"]
    if isinstance(audio, (str, os.PathLike)):
        if roots is not None:
            return CACHE.load(confine(audio, roots), sampling_rate)
        return load_audio(audio, sampling_rate)
    if isinstance(audio, dict):
        if audio.get("array") is not None:
            if audio.get("sampling_rate") is None:
                raise AudioError(audio.get("path") or "<array>", "audio array given without 'sampling_rate'")
            return resample(audio["array"], int(audio["sampling_rate"]), sampling_rate, audio.get("path") or "<array>")
        raise TypeError(f"audio dict needs 'path' or 'array' + 'sampling_rate', got keys {sorted(audio)}")
    if isinstance(audio, np.ndarray) or hasattr(audio, "numpy"):  # numpy array or torch tensor
        data = audio.numpy() if hasattr(audio, "numpy") else audio
        return resample(data, sampling_rate, sampling_rate)
    raise TypeError(f"unsupported audio reference of type {type(audio).__name__}: {audio!r:.80}")
