"""A perception task that needs no speech synthesis: is a pure tone high or low?

Used as a fast sanity task for audio RL (a policy that hears its input should reach ~100%).
The bands are far apart (200-600 Hz vs 1500-3000 Hz), so the label is never ambiguous.

The multiple-choice variant (``generate_tone_mcq``, ``examples/hear_tones_mcq``) asks "How high is the tone?"
with the bands of ``MCQ_CHOICES[k]`` as choices in shuffled order (four pitch bands, ``MCQ_BANDS``, or the two of
the one-word task, ``BANDS``) and writes MMAU-style annotation items.
"""

from __future__ import annotations

import json
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
#: the multiple-choice variant's answers and their bands (Hz); gaps between neighbours keep every clip unambiguous
MCQ_BANDS: dict[str, tuple[float, float]] = {
    "very low": (150.0, 300.0),
    "low": (400.0, 700.0),
    "high": (1300.0, 2000.0),
    "very high": (2800.0, 4000.0),
}
#: the band sets the multiple-choice variant offers, by number of choices
MCQ_CHOICES: dict[int, dict[str, tuple[float, float]]] = {4: MCQ_BANDS, 2: BANDS}
MCQ_QUESTION = "How high is the tone?"
MCQ_DATASET = "hear_tones_mcq"
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
        records.append(_write_tone(out / f"{label}_{i:04d}.wav", label, BANDS[label], rng, noise_rng, noise))
    return records


def _write_tone(path: Path, label: str, band: tuple[float, float], rng: random.Random,
                noise_rng: np.random.Generator, noise: bool) -> dict:
    """Draw one clip of ``band`` (frequency, length, level, phase, noise), write it, return its record."""
    freq = rng.uniform(*band)
    n_samples = int(round(rng.uniform(*DURATION_S) * SAMPLE_RATE))
    duration = n_samples / SAMPLE_RATE
    amplitude = rng.uniform(*AMPLITUDE)
    wave = tone(freq, duration, amplitude, phase=rng.uniform(0, 2 * np.pi))
    snr = rng.uniform(*SNR_DB) if noise else None
    if snr is not None:
        wave = add_noise(wave, snr, noise_rng)
    sf.write(path, np.clip(wave, -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16")
    return dict(path=str(path), label=label, freq=freq, duration=duration, amplitude=amplitude, snr=snr)


def generate_tone_mcq(out_dir: str | Path, n: int, seed: int = 0, noise: bool = True, silent: bool = False,
                      audio_folder: str = "audio", bands: dict[str, tuple[float, float]] = MCQ_BANDS) -> list[dict]:
    """Write ``n`` tone clips to ``out_dir/<audio_folder>/tone_<index:04d>.wav`` and return their MMAU-style items.

    Answers are balanced over ``bands`` (``n // len(bands)`` each, the rest drawn at random) and shuffled by
    ``seed``; each item lists all bands as choices in its own shuffled order. Items: ``id``, ``audio_id`` (relative to
    ``out_dir``, as MMAU's ``./test-mini-audios/...``), ``question``, ``choices``, ``answer``, ``dataset``,
    ``task`` (sound), ``difficulty`` (easy for one-word answers, medium for two), ``category`` (pitch),
    ``sub-category`` (the answer's band), ``freq`` (Hz) and ``duration`` (s). ``silent``: the clips are written
    as digital silence of the same length (the ablation's training audio).
    """
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    out = Path(out_dir)
    (out / audio_folder).mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    noise_rng = np.random.default_rng(seed)
    names = list(bands)
    labels = [names[i % len(names)] for i in range(n - n % len(names))]
    labels += [rng.choice(names) for _ in range(n % len(names))]
    rng.shuffle(labels)
    items = []
    for i, label in enumerate(labels):
        path = out / audio_folder / f"tone_{i:04d}.wav"
        rec = _write_tone(path, label, bands[label], rng, noise_rng, noise)
        if silent:
            sf.write(path, np.zeros(int(round(rec["duration"] * SAMPLE_RATE)), dtype=np.float32), SAMPLE_RATE,
                     subtype="PCM_16")
        choices = list(names)
        rng.shuffle(choices)
        items.append({
            "id": f"tone_{seed}_{i:04d}",
            "audio_id": f"./{audio_folder}/{path.name}",
            "question": MCQ_QUESTION,
            "choices": choices,
            "answer": label,
            "dataset": MCQ_DATASET,
            "task": "sound",
            "difficulty": "medium" if " " in label else "easy",
            "category": "pitch",
            "sub-category": label,
            "freq": rec["freq"],
            "duration": rec["duration"],
        })
    return items


def write_annotation(items: list[dict], path: str | Path) -> Path:
    """Write ``items`` as an MMAU-style annotation file (a JSON list)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(items, indent=1), encoding="utf-8")
    return path


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
