"""Audio file loading and validation: any readable file -> mono float32 at 16 kHz, or one clear error.

libsndfile (through soundfile) reads WAV, FLAC, OGG/Vorbis, MP3, AIFF and more; a format it does
not recognise (m4a, aac, wma, ...) goes through librosa's audioread fallback, which needs ffmpeg.
Every failure is an :class:`AudioError` naming the file and the reason.
"""

from __future__ import annotations

import os
import struct
import warnings

import numpy as np
import soundfile as sf

TARGET_SR = 16000

# libsndfile's error code for "Format not recognised": only then is another decoder worth a try
_SF_ERR_UNRECOGNISED_FORMAT = 1
# compressed formats may legitimately decode a little short of the header's count (encoder delay,
# padding); a shortfall beyond this is a header that lies. WAV is checked exactly (_wav_declared_frames).
_SHORTFALL_FRAMES = 4096
_SHORTFALL_FRACTION = 0.005


class AudioError(ValueError):
    """A bad audio file: `.path` is the file, `.reason` says what is wrong with it."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def load_audio(path: str | os.PathLike, sampling_rate: int = TARGET_SR) -> np.ndarray:
    """The whole file as a mono float32 array at `sampling_rate` (channels averaged, soxr resampling)."""
    data, sr = decode_audio(path)
    return resample(data, sr, sampling_rate, name=path)


def decode_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Decode and validate the whole file: (mono float32 samples, native sample rate)."""
    path = _check_file(path)
    expected_frames, exact = _header_frames(path)
    try:
        data, sr = sf.read(path, dtype="float32", always_2d=True)
    except sf.LibsndfileError as e:
        if getattr(e, "code", None) != _SF_ERR_UNRECOGNISED_FORMAT:
            raise AudioError(path, f"cannot decode: {e}") from e
        data, sr = _decode_fallback(path, sf_error=e)
        expected_frames = None  # audioread gives no trustworthy header count to compare with
    except (RuntimeError, OSError) as e:
        raise AudioError(path, f"cannot decode: {e}") from e
    if expected_frames is not None:
        _check_length(path, expected_frames, data.shape[0], sr, exact)
    mono = data.mean(axis=1, dtype=np.float32) if data.ndim == 2 else data.astype(np.float32)
    _check_samples(path, mono)
    return np.ascontiguousarray(mono), int(sr)


def resample(data: np.ndarray, orig_sr: int, target_sr: int = TARGET_SR, name: object = "<array>") -> np.ndarray:
    """Mono float32 `data` at `orig_sr` -> float32 at `target_sr` (validated: non-empty, finite)."""
    if orig_sr <= 0 or target_sr <= 0:
        raise AudioError(str(name), f"invalid sampling rate {orig_sr} -> {target_sr}")
    data = np.asarray(data, dtype=np.float32)
    if data.ndim == 2:  # (channels, samples) as librosa and processors lay it out
        data = data.mean(axis=0 if data.shape[0] < data.shape[1] else 1, dtype=np.float32)
    if data.ndim != 1:
        raise AudioError(str(name), f"expected a 1-D or 2-D sample array, got shape {data.shape}")
    _check_samples(str(name), data)
    if orig_sr == target_sr:
        return np.ascontiguousarray(data)
    import soxr  # the resampler librosa's "soxr_hq" uses, called directly to control the length

    out = soxr.resample(data, orig_sr, target_sr, quality="HQ")
    # exactly round(n * target / orig) samples, computed in integers (float ratios drift by one)
    want = (data.shape[0] * target_sr + orig_sr // 2) // orig_sr
    out = out[:want] if out.shape[0] >= want else np.pad(out, (0, want - out.shape[0]))
    return np.ascontiguousarray(out, dtype=np.float32)


def audio_duration(path: str | os.PathLike) -> float:
    """Length in seconds from the file header, without decoding; validated like `load_audio`."""
    path = _check_file(path)
    try:
        info = sf.info(path)
    except sf.LibsndfileError as e:
        if getattr(e, "code", None) != _SF_ERR_UNRECOGNISED_FORMAT:
            raise AudioError(path, f"unreadable header: {e}") from e
        return _duration_fallback(path, sf_error=e)
    except (RuntimeError, OSError) as e:
        raise AudioError(path, f"unreadable header: {e}") from e
    if info.samplerate <= 0:
        raise AudioError(path, f"invalid sample rate {info.samplerate} in header")
    declared = _wav_declared_frames(path)
    if declared is not None:
        # libsndfile clamps a WAV's count to the bytes present; the header's own count is the claim
        _check_length(path, declared, info.frames, info.samplerate, exact=True)
    frames = info.frames
    if frames <= 0:
        raise AudioError(path, "zero samples (header declares no audio frames)")
    return frames / float(info.samplerate)


def _check_file(path: str | os.PathLike) -> str:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise AudioError(path, "missing: no such file")
    if not os.path.isfile(path):
        raise AudioError(path, "not a regular file")
    if os.path.getsize(path) == 0:
        raise AudioError(path, "empty file (0 bytes)")
    return path


def _check_length(path: str, expected: int, got: int, sr: int, exact: bool) -> None:
    shortfall = expected - got
    allowed = 0 if exact else max(_SHORTFALL_FRAMES, _SHORTFALL_FRACTION * expected)
    if shortfall > allowed:
        raise AudioError(
            path,
            f"header declares {expected} frames ({expected / sr:.3f} s) but only {got} "
            f"({got / sr:.3f} s) are present: truncated file or lying header",
        )


def _check_samples(path: str, mono: np.ndarray) -> None:
    if mono.size == 0:
        raise AudioError(path, "zero samples decoded")
    bad = int(np.count_nonzero(~np.isfinite(mono)))
    if bad:
        raise AudioError(path, f"{bad} of {mono.size} samples are NaN or infinite")


def _header_frames(path: str) -> tuple[int | None, bool]:
    """(frame count the header claims before any clamping by the decoder, whether it is exact)."""
    frames = _wav_declared_frames(path)
    if frames is not None:
        return frames, True
    try:
        return int(sf.info(path).frames), False  # FLAC STREAMINFO, MP3 Xing, ...: not clamped
    except (RuntimeError, OSError):
        return None, False  # unreadable header: the decode that follows reports why


def _wav_declared_frames(path: str) -> int | None:
    """For a RIFF/WAVE file: the `data` chunk's declared size in frames; None for other files.

    libsndfile silently shortens a WAV whose `data` size exceeds the file, so this is read here.
    """
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
            return None
        endian = "<" if head[:4] == b"RIFF" else ">"
        block_align = None
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return None  # no data chunk: libsndfile's own error is more precise
            cid, size = chunk[:4], struct.unpack(endian + "I", chunk[4:])[0]
            if cid == b"fmt ":
                fmt = f.read(size)
                if len(fmt) >= 14:
                    block_align = struct.unpack(endian + "H", fmt[12:14])[0]
                f.seek(size % 2, os.SEEK_CUR)
            elif cid == b"data":
                if not block_align or size in (0, 0xFFFFFFFF):
                    return None  # streamed/unknown length: nothing declared to check against
                return size // block_align
            else:
                f.seek(size + size % 2, os.SEEK_CUR)


def _fallback_error(path: str, sf_error: Exception, error: Exception) -> AudioError:
    hint = " (no decoder backend: install ffmpeg to read this format)" if "NoBackend" in type(error).__name__ else ""
    return AudioError(
        path, f"not audio or unsupported format (libsndfile: {sf_error}; audioread/ffmpeg: {error!r}{hint})"
    )


def _decode_fallback(path: str, sf_error: Exception) -> tuple[np.ndarray, int]:
    import librosa

    try:
        with warnings.catch_warnings():  # librosa warns that it falls back; the failure, if any, is raised
            warnings.simplefilter("ignore", (UserWarning, FutureWarning))
            data, sr = librosa.load(path, sr=None, mono=False)
    except Exception as e:  # audioread raises several unrelated types; all mean "not decodable"
        raise _fallback_error(path, sf_error, e) from e
    data = np.asarray(data, dtype=np.float32)
    return (data[:, None] if data.ndim == 1 else data.T), int(sr)


def _duration_fallback(path: str, sf_error: Exception) -> float:
    import librosa

    try:
        with warnings.catch_warnings():  # see _decode_fallback
            warnings.simplefilter("ignore", (UserWarning, FutureWarning))
            seconds = float(librosa.get_duration(path=path))
    except Exception as e:  # see _decode_fallback
        raise _fallback_error(path, sf_error, e) from e
    if not seconds > 0:
        raise AudioError(path, "zero samples (duration 0)")
    return seconds
