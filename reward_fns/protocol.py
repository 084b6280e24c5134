"""What the rewards read from verl's `extra_info`: key names, the output modality and the response audio.

The data preparation writes `ref_text_words`, `ref_audio_seconds` and `output_modality`; the rollout
adds the generated speech under `response_audio` as `{"array": 1-D float32 ndarray, "sampling_rate": int}`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from verl_audio.modality import row_modality

REF_TEXT_WORDS = "ref_text_words"
REF_AUDIO_SECONDS = "ref_audio_seconds"
RESPONSE_AUDIO = "response_audio"
#: ALR modes (``<input>_to_<output>``) and their labels, in the order of the paper's table
MODE_LABELS = {
    "audio_to_text": "audio→text",
    "text_to_text": "text→text",
    "text_to_audio": "text→audio",
    "audio_to_audio": "audio→audio",
    "both_to_text": "audio+text→text",
    "both_to_audio": "audio+text→audio",
}


def output_modality(extra_info: Mapping[str, Any] | None) -> str:
    """'text' or 'audio' from extra_info (``verl_audio.modality.row_modality``: missing means text)."""
    return row_modality(extra_info).output


def mode_of(extra_info: Mapping[str, Any] | None) -> str | None:
    """``<input>_to_<output>`` (e.g. ``audio_to_text``) from extra_info, or None without an input modality."""
    return row_modality(extra_info).mode


def reference_amount(value: object) -> float | None:
    """A usable positive reference (words or seconds), or None when missing, NaN or not positive."""
    if value is None or isinstance(value, bool):
        return None
    try:
        ref = float(value)  # parquet hands back numpy scalars
    except (TypeError, ValueError) as err:
        raise ValueError(f"reference length is not a number: {value!r}") from err
    return ref if math.isfinite(ref) and ref > 0 else None


def response_audio(extra_info: Mapping[str, Any] | None) -> tuple[np.ndarray, int]:
    """The generated speech as (mono float32 waveform, sampling rate); ValueError when absent or malformed.

    A speech output without audio means the rollout did not pass it on, which is a pipeline error and is
    not scored as silence; a rollout that produced no speech passes an empty array instead.
    """
    item = (extra_info or {}).get(RESPONSE_AUDIO)
    if not isinstance(item, Mapping) or "array" not in item or "sampling_rate" not in item:
        raise ValueError(
            f"output_modality is 'audio' but extra_info[{RESPONSE_AUDIO!r}] is not "
            f"{{'array': ndarray, 'sampling_rate': int}} (got {type(item).__name__})"
        )
    rate = int(item["sampling_rate"])
    if rate <= 0:
        raise ValueError(f"response audio sampling_rate must be positive, got {rate}")
    return to_mono_float32(item["array"]), rate


def to_mono_float32(audio: object) -> np.ndarray:
    """A 1-D float32 waveform in [-1, 1]; int16 PCM is rescaled, non-finite samples become 0."""
    array = np.asarray(audio)
    if array.ndim != 1:
        raise ValueError(f"response audio must be 1-D (mono), got shape {array.shape}")
    if np.issubdtype(array.dtype, np.integer):
        array = array.astype(np.float32) / 32768.0
    array = np.nan_to_num(array.astype(np.float32, copy=False), nan=0.0, posinf=0.0, neginf=0.0)
    return np.clip(array, -1.0, 1.0)


def resample(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    """``audio`` at ``target`` Hz with the data pipeline's resampler (``verl_audio.data.audio.resample``).

    One resampler for data and rewards; it refuses non-finite samples, which ``to_mono_float32`` has
    already replaced by silence for generated speech (a reward scores what it is given, it does not stop a run).
    """
    if rate == target or audio.size == 0:
        return audio
    from verl_audio.data.audio import resample as resample_clip

    return resample_clip(audio, rate, target, name="response audio")
