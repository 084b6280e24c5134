"""verl_audio.data.audio: readable files -> mono float32 16 kHz; every bad file -> AudioError naming it."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from verl_audio.data import audio as audio_mod
from verl_audio.data.audio import AudioError, audio_duration, decode_audio, load_audio, resample

FREQ = 440.0


def tone(sr: int, seconds: float, freq: float = FREQ, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(sr * seconds))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(x: np.ndarray, sr: int = 16000) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[np.argmax(spectrum)])


@pytest.mark.parametrize(
    "name, sr, kwargs, tolerance",
    [
        ("a.wav", 8000, {"subtype": "PCM_16"}, 0),
        ("b.wav", 16000, {"subtype": "PCM_24"}, 0),
        ("c.wav", 44100, {"subtype": "FLOAT"}, 0),
        ("d.flac", 22050, {}, 0),
        ("e.ogg", 48000, {"subtype": "VORBIS"}, 0.01),
        ("f.mp3", 24000, {"format": "MP3"}, 0.1),  # encoder delay/padding
    ],
)
def test_formats_and_rates_give_16k_mono_float32(tmp_path, name, sr, kwargs, tolerance):
    path = tmp_path / name
    sf.write(path, tone(sr, 2.0), sr, **kwargs)
    x = load_audio(path)
    assert x.dtype == np.float32 and x.ndim == 1 and x.flags.c_contiguous
    assert abs(len(x) / 16000 - 2.0) <= tolerance + 1 / 16000
    assert abs(peak_hz(x) - FREQ) < 5  # the content survives decoding and resampling
    assert 0.4 < np.max(np.abs(x)) < 0.6
    assert abs(audio_duration(path) - 2.0) <= tolerance + 1e-6


def test_other_sampling_rate_is_honoured(tmp_path):
    path = tmp_path / "a.wav"
    sf.write(path, tone(44100, 1.0), 44100)
    x = load_audio(path, sampling_rate=24000)
    assert len(x) == 24000 and abs(peak_hz(x, 24000) - FREQ) < 5


def test_whole_length_is_kept(tmp_path):
    """Long inputs are not cut at 30 s (a feature-extractor default) or anywhere else."""
    path = tmp_path / "long.flac"
    sf.write(path, tone(24000, 95.0), 24000)
    assert len(load_audio(path)) == 95 * 16000
    assert audio_duration(path) == pytest.approx(95.0)


def test_stereo_is_averaged_to_mono(tmp_path):
    left = tone(16000, 1.0, amp=0.5)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, np.zeros_like(left)], axis=1), 16000, subtype="FLOAT")
    x = load_audio(path)
    assert x.shape == (16000,)
    np.testing.assert_allclose(x, left / 2, atol=1e-6)
    data, sr = decode_audio(path)
    assert sr == 16000 and data.ndim == 1


def test_audio_duration_reads_only_the_header(tmp_path, monkeypatch):
    path = tmp_path / "a.wav"
    sf.write(path, tone(24000, 3.5), 24000)

    def no_decoding(*args, **kwargs):
        raise AssertionError("audio_duration must not decode samples")

    monkeypatch.setattr(audio_mod.sf, "read", no_decoding)
    assert audio_duration(path) == pytest.approx(3.5)


def _wav_bytes(sr: int = 16000, seconds: float = 1.0) -> bytes:
    import io

    buf = io.BytesIO()
    sf.write(buf, tone(sr, seconds), sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, str, bool]]:
    """name -> (path, reason regex, whether audio_duration (header only) must also reject it)."""
    good = _wav_bytes()
    files = {}

    def put(name, data, pattern, header_too=True):
        path = tmp_path / name
        path.write_bytes(data)
        files[name] = (path, pattern, header_too)

    files["missing"] = (tmp_path / "nope.wav", r": missing: no such file", True)
    put("zero_bytes.wav", b"", r"empty file \(0 bytes\)")
    put("text.wav", b"this is a text file, not audio\n" * 20, r"not audio: a text file")
    put("truncated_header.wav", good[:20], r"cannot decode|unreadable header")
    put("truncated_data.wav", good[: len(good) // 2], r"header declares 16000 frames .* only \d+ .*truncated")
    put("header_only.wav", good[:44], r"header declares 16000 frames .* only 0")
    lying = bytearray(good)
    lying[40:44] = struct.pack("<I", 64000)  # data chunk claims 2 s, file holds 1 s
    put("lying_header.wav", bytes(lying), r"header declares 32000 frames \(2\.000 s\) but only 16000")
    nan = tone(16000, 1.0)
    nan[[5, 500]] = np.nan
    sf.write(tmp_path / "nan.wav", nan, 16000, subtype="FLOAT")
    files["nan.wav"] = (tmp_path / "nan.wav", r"2 of 16000 samples are NaN or infinite", False)
    inf = tone(16000, 1.0)
    inf[7] = np.inf
    sf.write(tmp_path / "inf.wav", inf, 16000, subtype="FLOAT")
    files["inf.wav"] = (tmp_path / "inf.wav", r"1 of 16000 samples are NaN or infinite", False)
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    files["empty.wav"] = (tmp_path / "empty.wav", r"zero samples", True)
    flac = tmp_path / "ok.flac"
    sf.write(flac, tone(16000, 2.0), 16000)
    put("truncated.flac", flac.read_bytes()[: flac.stat().st_size // 2], r"cannot decode", header_too=False)
    (tmp_path / "a_dir.wav").mkdir()
    files["a_dir.wav"] = (tmp_path / "a_dir.wav", r"not a regular file", True)
    return files


BAD = [
    "missing",
    "zero_bytes.wav",
    "text.wav",
    "truncated_header.wav",
    "truncated_data.wav",
    "header_only.wav",
    "lying_header.wav",
    "nan.wav",
    "inf.wav",
    "empty.wav",
    "truncated.flac",
    "a_dir.wav",
]


@pytest.mark.parametrize("name", BAD)
def test_each_bad_file_raises_audio_error_naming_it(tmp_path, name):
    path, pattern, header_too = _bad_files(tmp_path)[name]
    with pytest.raises(AudioError, match=pattern) as info:
        load_audio(path)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.path == str(path) and str(path) in str(err)
    assert err.reason and err.reason in str(err)
    if header_too:
        with pytest.raises(AudioError) as info:
            audio_duration(path)
        assert info.value.path == str(path)
    else:
        assert audio_duration(path) > 0  # the header is fine; only decoding finds the fault


def test_resample_validates_arrays():
    assert resample(tone(8000, 1.0), 8000).shape == (16000,)
    stereo = np.stack([tone(16000, 0.5), tone(16000, 0.5)])  # (channels, samples)
    np.testing.assert_allclose(resample(stereo, 16000), tone(16000, 0.5), atol=1e-6)
    with pytest.raises(AudioError, match="zero samples"):
        resample(np.zeros(0, np.float32), 16000, name="clip")
    with pytest.raises(AudioError, match="NaN"):
        resample(np.array([0.0, np.nan], np.float32), 16000)
    with pytest.raises(AudioError, match="invalid sampling rate"):
        resample(tone(8000, 0.1), 0)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    declared=st.integers(min_value=0, max_value=2**32 - 1),
    body=st.binary(max_size=600),
    block_align=st.integers(min_value=0, max_value=8),
)
def test_arbitrary_wav_bytes_never_escape_as_other_errors(tmp_path, declared, body, block_align):
    """Whatever a WAV-looking file holds, the loaders return audio or raise AudioError, nothing else."""
    fmt = struct.pack("<HHIIHH", 1, 1, 16000, 32000, block_align, 16)
    data = b"RIFF" + struct.pack("<I", 36 + len(body)) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
    data += b"data" + struct.pack("<I", declared) + body
    path = tmp_path / "fuzz.wav"
    path.write_bytes(data)
    for fn in (load_audio, audio_duration):
        try:
            out = fn(path)
        except AudioError as e:
            assert e.path == str(path) and e.reason
        else:
            assert np.all(np.isfinite(out))


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg absent (used only to make the test file)")
def test_formats_libsndfile_lacks_are_refused_not_handed_to_ffmpeg(tmp_path):
    wav = tmp_path / "a.wav"
    sf.write(wav, tone(44100, 2.0), 44100)
    m4a = tmp_path / "a.m4a"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(wav), "-c:a", "aac", str(m4a)], check=True)
    for fn in (load_audio, audio_duration):
        with pytest.raises(AudioError, match="MP4/M4A container, which libsndfile does not read") as info:
            fn(m4a)
        assert info.value.kind == "not audio"
