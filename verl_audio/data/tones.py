"""A perception task that needs no speech synthesis: is a pure tone high or low?

Used as a fast sanity task for audio RL (a policy that hears its input should reach ~100%).
The bands are far apart (200-600 Hz vs 1500-3000 Hz), so the label is never ambiguous.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLE_RATE = 16_000
DATA_SOURCE = "hear_tones"
TONE_QUESTION = "Is the tone high or low?"
TONE_INSTRUCTION = "Answer with one word: high or low."
TONE_PROMPT = f"<audio>{TONE_QUESTION} {TONE_INSTRUCTION}"
TONE_LABELS: tuple[str, str] = ("high", "low")

BANDS: dict[str, tuple[float, float]] = {"high": (1500.0, 3000.0), "low": (200.0, 600.0)}
DURATION_S = (0.5, 1.5)
AMPLITUDE = (0.1, 0.5)  # peak amplitude of the tone, full scale = 1.0
SNR_DB = (20.0, 40.0)  # white noise, when enabled
FADE_S = 0.01  # raised-cosine ramps: a hard onset would click, spreading energy across all bands


def tone(freq: float, duration: float, amplitude: float, sample_rate: int = SAMPLE_RATE,
         phase: float = 0.0) -> np.ndarray:
    """A sine of ``freq`` Hz and peak ``amplitude`` with short fades at both ends (float64)."""
    n = int(round(duration * sample_rate))
    t = np.arange(n) / sample_rate
    wave = amplitude * np.sin(2 * np.pi * freq * t + phase)
    ramp = min(int(FADE_S * sample_rate), n // 2)
    if ramp > 0:
        env = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
        wave[:ramp] *= env
        wave[n - ramp :] *= env[::-1]
    return wave


def add_noise(signal: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """``signal`` plus white Gaussian noise whose power is ``snr_db`` below the signal's."""
    power = float(np.mean(signal**2))
    noise = rng.standard_normal(len(signal))
    noise *= np.sqrt(power / 10 ** (snr_db / 10)) / max(float(np.std(noise)), 1e-12)
    return signal + noise


def generate_tones(out_dir: str | Path, n: int, seed: int = 0, noise: bool = True) -> list[dict]:
    """Write ``n`` tones to ``out_dir`` as ``<label>_<index:04d>.wav`` (16 kHz mono 16-bit).

    Labels are balanced (``n // 2`` of each, the odd one drawn at random) and shuffled by ``seed``.
    Returns one record per file: path, label, freq (Hz), duration (s), amplitude (peak),
    snr (dB; None without noise).
    """
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    noise_rng = np.random.default_rng(seed)
    labels = [TONE_LABELS[i % 2] for i in range(n - n % 2)] + ([rng.choice(TONE_LABELS)] if n % 2 else [])
    rng.shuffle(labels)
    records = []
    for i, label in enumerate(labels):
        freq = rng.uniform(*BANDS[label])
        n_samples = int(round(rng.uniform(*DURATION_S) * SAMPLE_RATE))
        duration = n_samples / SAMPLE_RATE
        amplitude = rng.uniform(*AMPLITUDE)
        wave = tone(freq, duration, amplitude, phase=rng.uniform(0, 2 * np.pi))
        snr = rng.uniform(*SNR_DB) if noise else None
        if snr is not None:
            wave = add_noise(wave, snr, noise_rng)
        path = out / f"{label}_{i:04d}.wav"
        sf.write(path, np.clip(wave, -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16")
        records.append(dict(path=str(path), label=label, freq=freq, duration=duration,
                            amplitude=amplitude, snr=snr))
    return records


def tone_rows(records: list[dict], split: str) -> list[dict]:
    """Training rows for ``records``, in the same shape as the ALR preparation's rows."""
    rows = []
    for index, rec in enumerate(records):
        if rec["label"] not in TONE_LABELS:
            raise ValueError(f"tone label must be one of {TONE_LABELS}, got {rec['label']!r}")
        rows.append({
            "data_source": DATA_SOURCE,
            "prompt": [{"role": "user", "content": TONE_PROMPT}],
            "audios": [rec["path"]],
            "ability": "audio-perception",
            "reward_model": {"style": "rule", "ground_truth": rec["label"]},
            "extra_info": {
                "id": Path(rec["path"]).stem,
                "split": split,
                "index": index,
                "label": rec["label"],
                "input_modality": "audio",
                "output_modality": "text",
                "question_audio_seconds": float(rec["duration"]),
            },
        })
    return rows
