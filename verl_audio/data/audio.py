"""Audio file loading and validation: any readable file -> mono float32 at 16 kHz, or one clear error.

Decoding cannot be redirected: the first bytes of a file decide what it is (`sniff_container`), only real
audio containers go on, and libsndfile (through soundfile) is the only decoder. libsndfile reads WAV,
RF64, W64, FLAC, OGG (Vorbis, Opus), MP3, AIFF, CAF and AU and never follows a reference in a file.
A playlist (M3U/HLS, PLS), an ffmpeg concat script, a URL or any other text is "not audio"; MP4/M4A,
Matroska/WebM, ASF/WMA and raw AAC are refused as containers libsndfile does not read (convert them to
FLAC or WAV). No ffmpeg or audioread is ever invoked. Every failure is an :class:`AudioError` naming the
file, the reason and a short `kind` for summaries.
"""

from __future__ import annotations

import os
import struct

import numpy as np
import soundfile as sf

TARGET_SR = 16000

# compressed formats may legitimately decode a little short of the header's count (encoder delay,
# padding); a shortfall beyond this is a header that lies. WAV is checked exactly (_wav_declared_frames).
_SHORTFALL_FRAMES = 4096
_SHORTFALL_FRACTION = 0.005
_SNIFF_BYTES = 512


class AudioError(ValueError):
    """A bad audio file: `.path` is the file, `.reason` says what is wrong with it, `.kind` names the fault."""

    def __init__(self, path: str | os.PathLike, reason: str, kind: str = "bad audio"):
        self.path = os.fspath(path)
        self.reason = reason
        self.kind = kind
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # Ray and multiprocessing re-raise it in another process
        return (type(self), (self.path, self.reason, self.kind))


def load_audio(path: str | os.PathLike, sampling_rate: int = TARGET_SR) -> np.ndarray:
    """The whole file as a mono float32 array at `sampling_rate` (channels averaged, soxr resampling)."""
    data, sr = decode_audio(path)
    return resample(data, sr, sampling_rate, name=path)


def decode_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Decode and validate the whole file: (mono float32 samples, native sample rate)."""
    path = _check_file(path)
    _check_container(path)
    expected_frames, exact = _header_frames(path)
    try:
        data, sr = sf.read(path, dtype="float32", always_2d=True)
    except (RuntimeError, OSError) as e:  # LibsndfileError is a RuntimeError
        raise AudioError(path, f"cannot decode: {e}", "cannot decode") from e
    if expected_frames is not None:
        _check_length(path, expected_frames, data.shape[0], sr, exact)
    mono = data.mean(axis=1, dtype=np.float32) if data.ndim == 2 else data.astype(np.float32)
    _check_samples(path, mono)
    return np.ascontiguousarray(mono), int(sr)


def resample(data: np.ndarray, orig_sr: int, target_sr: int = TARGET_SR, name: object = "<array>") -> np.ndarray:
    """Mono float32 `data` at `orig_sr` -> float32 at `target_sr` (validated: non-empty, finite)."""
    if orig_sr <= 0 or target_sr <= 0:
        raise AudioError(str(name), f"invalid sampling rate {orig_sr} -> {target_sr}", "bad rate")
    data = np.asarray(data, dtype=np.float32)
    if data.ndim == 2:  # (channels, samples) as librosa and processors lay it out
        data = data.mean(axis=0 if data.shape[0] < data.shape[1] else 1, dtype=np.float32)
    if data.ndim != 1:
        raise AudioError(str(name), f"expected a 1-D or 2-D sample array, got shape {data.shape}", "bad shape")
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
    _check_container(path)
    try:
        info = sf.info(path)
    except (RuntimeError, OSError) as e:
        raise AudioError(path, f"unreadable header: {e}", "cannot decode") from e
    if info.samplerate <= 0:
        raise AudioError(path, f"invalid sample rate {info.samplerate} in header", "cannot decode")
    declared = _wav_declared_frames(path)
    if declared is not None:
        # libsndfile clamps a WAV's count to the bytes present; the header's own count is the claim
        _check_length(path, declared, info.frames, info.samplerate, exact=True)
    frames = info.frames
    if frames <= 0:
        raise AudioError(path, "zero samples (header declares no audio frames)", "no samples")
    return frames / float(info.samplerate)


def sniff_container(head: bytes) -> tuple[str | None, str]:
    """(container libsndfile reads, or None; what the bytes are) from the first bytes of a file."""
    if len(head) >= 12 and head[:4] in (b"RIFF", b"RIFX", b"RF64", b"BW64") and head[8:12] == b"WAVE":
        return "WAV", "WAV"
    if head[:4] == b"riff":
        return "W64", "Sony Wave64"
    for magic, name in ((b"fLaC", "FLAC"), (b"OggS", "OGG"), (b"caff", "CAF"), (b".snd", "AU")):
        if head.startswith(magic):
            return name, name
    if len(head) >= 12 and head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "AIFF", "AIFF"
    if head.startswith(b"ID3"):
        return "MP3", "MP3 (ID3 tag)"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        if head[1] & 0x06:  # MPEG layer bits set: an MPEG audio frame
            return "MP3", "MPEG audio"
        return None, "raw AAC (ADTS), which libsndfile does not read"
    for magic, name in ((b"\x1aE\xdf\xa3", "Matroska/WebM"), (b"0&\xb2u", "ASF/WMA")):
        if head.startswith(magic):
            return None, f"a {name} container, which libsndfile does not read"
    if head[4:8] == b"ftyp":
        return None, "an MP4/M4A container, which libsndfile does not read"
    return None, _describe_non_audio(head)


def _describe_non_audio(head: bytes) -> str:
    if any(byte < 32 and byte not in b"\t\r\n" for byte in head):
        return f"unrecognised content (first bytes {head[:8].hex(' ')})"
    start = head.decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
    if start.upper().startswith("#EXT"):
        what = "an M3U/HLS playlist"
    elif start.lower().startswith("[playlist]"):
        what = "a PLS playlist"
    elif start.startswith("ffconcat") or start.startswith("file "):
        what = "an ffmpeg concat script"
    elif start.startswith("<"):
        what = "an XML/HTML document (a DASH/SMIL manifest or a web page)"
    elif "://" in start.split("\n", 1)[0]:
        what = "a URL"
    else:
        what = "a text file"
    return f"{what}; references in it are never followed"


def _check_container(path: str) -> str:
    """The container name of an audio file; AudioError ("not audio") for anything else."""
    with open(path, "rb") as f:
        head = f.read(_SNIFF_BYTES)
    container, what = sniff_container(head)
    if container is None:
        supported = "WAV, FLAC, OGG, MP3, AIFF, CAF, AU"
        raise AudioError(path, f"not audio: {what} (audio is decoded with libsndfile only: {supported})", "not audio")
    return container


def _check_file(path: str | os.PathLike) -> str:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise AudioError(path, "missing: no such file", "missing")
    if not os.path.isfile(path):
        raise AudioError(path, "not a regular file", "not a file")
    if os.path.getsize(path) == 0:
        raise AudioError(path, "empty file (0 bytes)", "empty file")
    return path


def _check_length(path: str, expected: int, got: int, sr: int, exact: bool) -> None:
    shortfall = expected - got
    allowed = 0 if exact else max(_SHORTFALL_FRAMES, _SHORTFALL_FRACTION * expected)
    if shortfall > allowed:
        raise AudioError(
            path,
            f"header declares {expected} frames ({expected / sr:.3f} s) but only {got} "
            f"({got / sr:.3f} s) are present: truncated file or lying header",
            "truncated",
        )


def _check_samples(path: str, mono: np.ndarray) -> None:
    if mono.size == 0:
        raise AudioError(path, "zero samples decoded", "no samples")
    bad = int(np.count_nonzero(~np.isfinite(mono)))
    if bad:
        raise AudioError(path, f"{bad} of {mono.size} samples are NaN or infinite", "non-finite")


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
