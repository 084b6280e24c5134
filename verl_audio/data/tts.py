"""Voice text with the espeak-ng speech synthesiser, as 16 kHz mono audio.

espeak-ng is a system program (``apt-get install espeak-ng``), not a Python package; it is only
needed to *generate* spoken data, never to train on data that already exists.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

ESPEAK = "espeak-ng"
SAMPLE_RATE = 16_000
DEFAULT_VOICE = "en-us"
DEFAULT_SPEED = 175  # words per minute, espeak-ng's own default

# Silence handling: espeak-ng pauses ~0.3-0.6 s at every sentence and line break. Capping those
# pauses keeps the speech natural while keeping generated releases small.
_FRAME_S = 0.01
_SILENCE_DB = -45.0  # frame RMS below this (relative to full scale) counts as silence


class TTSUnavailableError(RuntimeError):
    """espeak-ng is not installed (or not on PATH)."""


def espeak_available() -> bool:
    """Whether the espeak-ng program can be found on PATH."""
    return shutil.which(ESPEAK) is not None


def _require_espeak() -> str:
    path = shutil.which(ESPEAK)
    if path is None:
        raise TTSUnavailableError(
            f"{ESPEAK} is not installed or not on PATH; it is needed to voice text. "
            f"Install it with `apt-get install espeak-ng` (Debian/Ubuntu) or `brew install espeak-ng` (macOS)."
        )
    return path


def synthesize(
    text: str,
    *,
    speed: int = DEFAULT_SPEED,
    voice: str = DEFAULT_VOICE,
    sample_rate: int = SAMPLE_RATE,
    max_pause_s: float | None = 0.25,
) -> np.ndarray:
    """Speak ``text`` with espeak-ng; return float32 mono samples at ``sample_rate``.

    ``max_pause_s`` caps every internal silence and trims the edges to that length
    (None keeps espeak-ng's timing untouched).
    """
    if not text.strip():
        raise ValueError("cannot voice empty text")
    exe = _require_espeak()
    with tempfile.TemporaryDirectory(prefix="tts_") as tmp:
        wav = Path(tmp) / "speech.wav"
        # The text goes through stdin so that text starting with '-' is never read as an option.
        cmd = [exe, "-w", str(wav), "-s", str(int(speed)), "-v", voice]
        proc = subprocess.run(cmd, input=text.encode("utf-8"), capture_output=True, check=False)
        # espeak-ng exits 0 even when it cannot write its output, so check the file as well.
        if proc.returncode != 0 or not wav.is_file() or wav.stat().st_size <= 44:
            err = proc.stderr.decode("utf-8", "replace").strip()
            raise RuntimeError(f"{ESPEAK} failed (exit {proc.returncode}) for voice {voice!r}: {err or 'no output'}")
        audio, sr = sf.read(wav, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    audio = resample(audio, sr, sample_rate)
    if max_pause_s is not None:
        audio = cap_pauses(audio, sample_rate, max_pause_s)
    # Resampling can overshoot slightly; keep within int16 range when written.
    return np.clip(audio, -1.0, 1.0).astype(np.float32)


def voice_to_wav(
    text: str,
    out_path: str | Path,
    *,
    speed: int = DEFAULT_SPEED,
    voice: str = DEFAULT_VOICE,
    sample_rate: int = SAMPLE_RATE,
    max_pause_s: float | None = 0.25,
) -> float:
    """Speak ``text`` into a 16-bit PCM mono WAV at ``out_path``; return its duration in seconds."""
    audio = synthesize(text, speed=speed, voice=voice, sample_rate=sample_rate, max_pause_s=max_pause_s)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    sf.write(out, audio, sample_rate, subtype="PCM_16")
    return len(audio) / sample_rate


def resample(audio: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Polyphase resampling (exact rational ratio, deterministic)."""
    if sr_in == sr_out:
        return audio
    g = np.gcd(int(sr_in), int(sr_out))
    return resample_poly(audio, sr_out // g, sr_in // g).astype(np.float32)


def cap_pauses(audio: np.ndarray, sample_rate: int, max_pause_s: float) -> np.ndarray:
    """Shorten every silent stretch longer than ``max_pause_s`` (edges included) to that length."""
    frame = max(1, int(round(_FRAME_S * sample_rate)))
    n_frames = len(audio) // frame
    if n_frames == 0:
        return audio
    frames = audio[: n_frames * frame].reshape(n_frames, frame)
    rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))
    silent = 20 * np.log10(np.maximum(rms, 1e-10)) < _SILENCE_DB
    keep = np.ones(n_frames, dtype=bool)
    max_frames = int(max_pause_s / _FRAME_S)
    start = None
    for i in range(n_frames + 1):
        if i < n_frames and silent[i]:
            start = i if start is None else start
            continue
        if start is not None:
            run = i - start
            if run > max_frames:
                # Keep half the allowed pause on each side of the cut so speech onsets stay intact.
                head = max_frames // 2
                keep[start + head : i - (max_frames - head)] = False
            start = None
    kept = frames[keep].reshape(-1)
    return np.concatenate([kept, audio[n_frames * frame :]]) if keep[-1] else kept
