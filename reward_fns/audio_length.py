"""The audio-length rule: voiced seconds of the generated speech relative to the reference, capped at 1.

Voiced time comes from WebRTC's voice-activity detector (webrtcvad-wheels), which wants 16-bit mono PCM
at 8/16/32/48 kHz in 10/20/30 ms frames; other rates are resampled to 16 kHz first.
"""

from __future__ import annotations

from typing import Any

from reward_fns.protocol import reference_amount, resample, to_mono_float32

VAD_RATES = (8000, 16000, 32000, 48000)
FRAME_MS = 30
DEFAULT_AGGRESSIVENESS = 2  # webrtcvad's 0 (keeps most) .. 3 (drops most non-speech)


def _vad(aggressiveness: int) -> Any:
    """A fresh detector per clip: webrtcvad keeps state across frames, so a shared one would carry the
    previous clip's speech into the next (silence after a tone scored voiced). Construction takes ~1 us."""
    import webrtcvad

    return webrtcvad.Vad(aggressiveness)


def voiced_seconds(audio: Any, sampling_rate: int, aggressiveness: int = DEFAULT_AGGRESSIVENESS) -> float:
    """Seconds of `audio` (1-D waveform) that the VAD marks as speech, counted in 30 ms frames."""
    if not 0 <= int(aggressiveness) <= 3:
        raise ValueError(f"VAD aggressiveness must be 0..3, got {aggressiveness}")
    wave = to_mono_float32(audio)
    rate = int(sampling_rate)
    if rate not in VAD_RATES:
        wave, rate = resample(wave, rate, 16000), 16000
    pcm = (wave * 32767.0).astype("<i2").tobytes()
    frame_bytes = rate * FRAME_MS // 1000 * 2
    is_speech = _vad(int(aggressiveness)).is_speech
    voiced = sum(
        is_speech(pcm[start : start + frame_bytes], rate)
        for start in range(0, len(pcm) - frame_bytes + 1, frame_bytes)
    )
    return voiced * FRAME_MS / 1000.0


def audio_length_reward(
    audio: Any,
    sampling_rate: int,
    ref_audio_seconds: object,
    aggressiveness: int = DEFAULT_AGGRESSIVENESS,
) -> float | None:
    """`min(1, voiced_seconds / ref_audio_seconds)`; None (not applicable) without a positive reference."""
    ref = reference_amount(ref_audio_seconds)
    if ref is None:
        return None
    return min(1.0, voiced_seconds(audio, sampling_rate, aggressiveness) / ref)
