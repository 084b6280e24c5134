"""Decoded clips and verdicts per process, keyed by the file's path, size and mtime.

verl repeats each prompt `rollout.n` times and its agent loop decodes the audio of every copy on its
own; here the copies of a prompt share one decode (concurrent requests wait for the first), later
steps reuse the samples while they fit in `VERL_AUDIO_DECODE_CACHE_MB` (LRU by bytes), and a file that
changes (new size or mtime) is decoded again. A failure is remembered under the same key, so a known
bad file is reported again without being reopened, and a repaired one is tried afresh.
`decode_count()` counts the decodes this process made, for the per-step metric.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from verl_audio.data.audio import TARGET_SR, AudioError, decode_audio, resample
from verl_audio.data.audio_quality import quality_flags

CACHE_MB_ENV = "VERL_AUDIO_DECODE_CACHE_MB"
DEFAULT_CACHE_MB = 256
_VERDICTS = 65536  # remembered outcomes (a few hundred bytes each), far more than clips in a split


@dataclass(frozen=True)
class FileKey:
    """A file version: real path, size in bytes, modification time in ns."""

    path: str
    size: int
    mtime_ns: int


def file_key(path: str | os.PathLike) -> FileKey:
    """The version of `path` (already confined); AudioError when it is missing or not a file."""
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise AudioError(path, "missing: no such file", "missing") from None
    except OSError as e:
        raise AudioError(path, f"cannot stat: {e}", "missing") from e
    return FileKey(path, int(st.st_size), int(st.st_mtime_ns))


@dataclass(frozen=True)
class Verdict:
    """What decoding one file version gave: its length and quality flags, or the error."""

    seconds: float | None = None
    flags: tuple[str, ...] = ()
    error: AudioError | None = None


class DecodeCache:
    """Thread-safe: samples by (file version, rate) bounded in bytes, verdicts by file version."""

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity_bytes = capacity_bytes
        self.decodes = 0
        self._bytes = 0
        self._samples: OrderedDict[tuple[FileKey, int], np.ndarray] = OrderedDict()
        self._verdicts: OrderedDict[FileKey, Verdict] = OrderedDict()
        self._inflight: dict[tuple[FileKey, int], threading.Event] = {}
        self._lock = threading.Lock()

    def verdict(self, key: FileKey) -> Verdict | None:
        with self._lock:
            return self._verdicts.get(key)

    def load(self, path: str | os.PathLike, sampling_rate: int = TARGET_SR, keep: bool = True) -> np.ndarray:
        """Samples of `path` (confined by the caller) at `sampling_rate`; AudioError as `load_audio`."""
        key = file_key(path)
        slot = (key, sampling_rate)
        while True:
            with self._lock:
                known = self._verdicts.get(key)
                if known is not None and known.error is not None:
                    raise known.error
                if slot in self._samples:
                    self._samples.move_to_end(slot)
                    return self._samples[slot]
                waiting = self._inflight.get(slot)
                if waiting is None:
                    self._inflight[slot] = threading.Event()
                    break
            waiting.wait()  # another copy of the prompt is decoding this file; then look again
        try:
            return self._decode(key, slot, keep)
        finally:
            with self._lock:
                self._inflight.pop(slot).set()

    def check(self, path: str | os.PathLike) -> Verdict:
        """The verdict for `path`'s current version, decoding it (without keeping samples) if unknown."""
        key = file_key(path)
        known = self.verdict(key)
        if known is None:
            try:
                self._decode(key, (key, TARGET_SR), keep=False)
            except AudioError:
                pass
            known = self.verdict(key)
        return known

    def _decode(self, key: FileKey, slot: tuple[FileKey, int], keep: bool) -> np.ndarray:
        with self._lock:
            self.decodes += 1
        try:
            mono, sr = decode_audio(key.path)
            flags = tuple(quality_flags(mono, sr))
            samples = resample(mono, sr, slot[1], name=key.path)
        except AudioError as e:
            self._remember(key, Verdict(error=e))
            raise
        self._remember(key, Verdict(seconds=mono.size / float(sr), flags=flags))
        if keep:
            self._store(slot, samples)
        return samples

    def _remember(self, key: FileKey, verdict: Verdict) -> None:
        with self._lock:
            self._verdicts[key] = verdict
            self._verdicts.move_to_end(key)
            while len(self._verdicts) > _VERDICTS:
                self._verdicts.popitem(last=False)

    def _store(self, slot: tuple[FileKey, int], samples: np.ndarray) -> None:
        with self._lock:
            if samples.nbytes > self.capacity_bytes or slot in self._samples:
                return
            samples.setflags(write=False)  # shared by every copy of the prompt: nobody may change it
            self._samples[slot] = samples
            self._bytes += samples.nbytes
            while self._bytes > self.capacity_bytes:
                _, old = self._samples.popitem(last=False)
                self._bytes -= old.nbytes

    def take_decodes(self) -> int:
        """Decodes since the last call (the per-step count)."""
        with self._lock:
            n, self.decodes = self.decodes, 0
            return n


def _capacity_from_env() -> int:
    return int(float(os.environ.get(CACHE_MB_ENV, DEFAULT_CACHE_MB)) * 2**20)


#: this process's cache (agent-loop workers, the trainer's dataset)
CACHE = DecodeCache(_capacity_from_env())


def take_decode_count(_actor: object = None) -> int:
    """Decodes this process made since the last call; `_actor` lets Ray's `__ray_call__` run it in a worker."""
    return CACHE.take_decodes()
