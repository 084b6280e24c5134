"""Quality flags for audio that decodes but is quietly wrong: clipping, silence, over-long clips.

A flagged clip is usable; preparation and the dataset report it (`<split>.warnings.jsonl`,
`audio_warnings.jsonl`) and reject it only when asked (`--strict`, `verl_audio.reject_flagged_audio`).
"""

from __future__ import annotations

import numpy as np

#: the whole-audio feature extractor's window (`verl_audio.models.audio_features.MAX_AUDIO_SECONDS`);
#: longer clips would not fit the processor's features
MAX_AUDIO_SECONDS = 120
#: a frame is voiced when its RMS reaches this level (-60 dBFS); a clip with no such frame is silent
SILENCE_RMS = 1e-3
FRAME_SECONDS = 0.03


def quality_flags(mono: np.ndarray, sampling_rate: int, max_seconds: float = MAX_AUDIO_SECONDS) -> list[str]:
    """Reasons a decoded mono clip is suspect (empty list: none). Integer PCM never exceeds 1.0 once
    decoded, so a peak above full scale means float samples beyond [-1, 1]."""
    flags = []
    peak = float(np.max(np.abs(mono))) if mono.size else 0.0
    if peak > 1.0:
        over = int(np.count_nonzero(np.abs(mono) > 1.0))
        flags.append(f"clipping: peak {peak:.3g} > 1.0 ({over} of {mono.size} samples beyond full scale)")
    frame = max(1, int(FRAME_SECONDS * sampling_rate))
    usable = mono[: mono.size - mono.size % frame] if mono.size >= frame else np.pad(mono, (0, frame - mono.size))
    rms = np.sqrt(np.mean(np.square(usable.reshape(-1, frame), dtype=np.float64), axis=1))
    if not np.any(rms >= SILENCE_RMS):
        flags.append(f"silent: no {int(FRAME_SECONDS * 1000)} ms frame reaches -60 dBFS (peak {peak:.3g})")
    seconds = mono.size / float(sampling_rate)
    if seconds > max_seconds:
        flags.append(f"too long: {seconds:.2f} s > {max_seconds:g} s, the longest clip the audio features take")
    return flags


def flag_kind(flag: str) -> str:
    """The short name of a flag (`clipping`, `silent`, `too long`) for summaries."""
    return flag.split(":", 1)[0]
