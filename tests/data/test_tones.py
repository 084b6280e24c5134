"""The high/low tone task: the audio really has the frequency, length, level and noise it is labelled with."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from verl_audio.data.tones import (
    BANDS,
    FADE_S,
    SAMPLE_RATE,
    TONE_PROMPT,
    TONE_QUESTION,
    generate_tones,
    tone_rows,
)


def dominant_freq(audio: np.ndarray, sr: int) -> float:
    """Peak of a Hann-windowed, 8x zero-padded FFT (resolution well under 1 Hz for >= 0.5 s)."""
    spec = np.abs(np.fft.rfft(audio * np.hanning(len(audio)), n=8 * len(audio)))
    return float(np.argmax(spec) * sr / (8 * len(audio)))


def fit_sine(audio: np.ndarray, sr: int, freq: float) -> tuple[float, float]:
    """(amplitude, residual power) of a least-squares sine at ``freq`` over the part between the fades."""
    edge = int(FADE_S * sr)
    x = audio[edge:-edge]
    t = (np.arange(len(x)) + edge) / sr
    basis = np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, x, rcond=None)
    residual = x - basis @ coef
    return float(np.hypot(*coef)), float(np.mean(residual**2))


@pytest.fixture(scope="module")
def noisy(tmp_path_factory) -> list[dict]:
    return generate_tones(tmp_path_factory.mktemp("tones"), 24, seed=1)


def test_files_are_named_by_label_and_are_16k_mono_pcm16(noisy):
    for i, rec in enumerate(noisy):
        path = Path(rec["path"])
        assert path.name == f"{rec['label']}_{i:04d}.wav"
        info = sf.info(path)
        assert (info.samplerate, info.channels, info.subtype) == (SAMPLE_RATE, 1, "PCM_16")
        assert abs(info.duration - rec["duration"]) < 1e-9
        assert 0.5 <= rec["duration"] <= 1.5


def test_labels_are_balanced_and_shuffled(noisy):
    labels = [r["label"] for r in noisy]
    assert labels.count("high") == labels.count("low") == 12
    assert labels != ["high", "low"] * 12 and labels != ["low", "high"] * 12
    odd = generate_tones(Path(noisy[0]["path"]).parent / "odd", 5, seed=2)
    assert sorted(r["label"] for r in odd).count("high") in (2, 3)


def test_measured_frequency_is_in_the_labelled_band(noisy):
    for rec in noisy:
        audio, sr = sf.read(rec["path"])
        f = dominant_freq(audio, sr)
        lo, hi = BANDS[rec["label"]]
        assert lo <= f <= hi, (rec, f)
        assert abs(f - rec["freq"]) < 1.0, (rec, f)


def test_measured_amplitude_and_snr_match_the_record(noisy):
    for rec in noisy:
        audio, sr = sf.read(rec["path"])
        amplitude, noise_power = fit_sine(audio, sr, rec["freq"])
        assert 0.1 <= amplitude <= 0.5 and abs(amplitude - rec["amplitude"]) < 0.01 * rec["amplitude"], rec
        # The record's SNR is relative to the whole faded tone; its power is within 0.1 dB of A^2/2.
        snr = 10 * np.log10((rec["amplitude"] ** 2 / 2) / noise_power)
        assert rec["snr"] >= 20 and abs(snr - rec["snr"]) < 0.5, (rec, snr)


def test_without_noise_the_tone_is_clean(tmp_path):
    for rec in generate_tones(tmp_path, 6, seed=3, noise=False):
        assert rec["snr"] is None
        audio, sr = sf.read(rec["path"])
        amplitude, noise_power = fit_sine(audio, sr, rec["freq"])
        assert 10 * np.log10((amplitude**2 / 2) / noise_power) > 60  # only 16-bit quantisation left
        assert np.max(np.abs(audio)) <= rec["amplitude"] + 1e-4


def test_generation_is_deterministic(tmp_path):
    a, b, c = (generate_tones(tmp_path / d, 6, seed=s) for d, s in (("a", 9), ("b", 9), ("c", 10)))
    assert [Path(r["path"]).read_bytes() for r in a] == [Path(r["path"]).read_bytes() for r in b]
    assert [r["freq"] for r in a] != [r["freq"] for r in c]
    assert generate_tones(tmp_path / "none", 0) == []
    with pytest.raises(ValueError):
        generate_tones(tmp_path / "neg", -1)


def test_tone_rows_have_the_preparation_row_shape(noisy):
    rows = tone_rows(noisy, "train")
    assert len(rows) == len(noisy)
    for i, (row, rec) in enumerate(zip(rows, noisy)):
        assert set(row) == {"data_source", "prompt", "audios", "ability", "reward_model", "extra_info"}
        assert row["data_source"] == "hear_tones" and row["ability"] == "audio-perception"
        (turn,) = row["prompt"]
        assert turn["role"] == "user" and turn["content"] == TONE_PROMPT
        assert turn["content"].count("<audio>") == 1 and TONE_QUESTION in turn["content"]
        assert turn["content"].endswith("Answer with one word: high or low.")  # what reward_fns.tones scores
        assert row["audios"] == [rec["path"]]
        assert row["reward_model"] == {"style": "rule", "ground_truth": rec["label"]}
        assert row["extra_info"] == {
            "id": Path(rec["path"]).stem, "split": "train", "index": i, "label": rec["label"],
            "input_modality": "audio", "output_modality": "text", "question_audio_seconds": rec["duration"],
        }
    with pytest.raises(ValueError):
        tone_rows([dict(noisy[0], label="middle")], "dev")
