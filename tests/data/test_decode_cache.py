"""The per-process decode cache: copies of a prompt decode once, a changed file is decoded again, a known
bad file is not reopened, and the dataset's length cache notices a file that changed after a first build."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from helpers.release_data import SECONDS, data_config, make_dataset, prepare_dev
from verl_audio.data.audio import AudioError
from verl_audio.data.decode_cache import DecodeCache


def tone(seconds: float, sr: int = 16000) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * 300 * np.arange(int(seconds * sr)) / sr)).astype(np.float32)


def test_copies_decode_once_and_a_changed_file_again(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    sf.write(path, tone(2.0), 16000)
    cache = DecodeCache(64 * 2**20)
    barrier = threading.Barrier(8)
    out = []

    def copy() -> None:
        barrier.wait()  # all rollout copies of the prompt ask at the same time
        out.append(cache.load(path))

    threads = [threading.Thread(target=copy) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cache.take_decodes() == 1 and len(out) == 8 and all(o is out[0] for o in out)
    assert cache.load(path) is out[0] and cache.take_decodes() == 0  # a later step: no decode
    sf.write(path, tone(3.0), 16000)  # replaced: new size and mtime
    assert cache.load(path).shape == (48000,) and cache.take_decodes() == 1

    path.write_bytes(path.read_bytes()[:1000])  # truncated: bad, and remembered for this version
    for _ in range(3):
        with pytest.raises(AudioError, match="truncated"):
            cache.load(path)
    assert cache.take_decodes() == 1
    sf.write(path, tone(1.0), 16000)  # repaired: tried afresh
    assert cache.load(path).shape == (16000,)


def test_capacity_is_in_bytes(tmp_path: Path) -> None:
    cache = DecodeCache(3 * 16000 * 4)  # room for 3 s of samples
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.wav")
        sf.write(paths[-1], tone(1.5), 16000)
    for p in paths:
        cache.load(p)
    assert cache.take_decodes() == 3
    cache.load(paths[0])  # evicted by the third
    cache.load(paths[2])  # still there
    assert cache.take_decodes() == 1


def test_length_cache_notices_a_file_changed_after_a_first_build(release, tmp_path, omni, monkeypatch):
    parquet = prepare_dev(release, tmp_path / "out", "audio")
    config = data_config(tmp_path)
    assert make_dataset(parquet, omni.tokenizer, config, omni).bad_rows == []
    q = release / "dev" / "0002" / "question.wav"
    q.write_bytes(q.read_bytes()[:2000])  # truncated after one good construction (same cache_dir)
    ds = make_dataset(parquet, omni.tokenizer, config, omni)
    assert [(r["id"], r["kind"]) for r in ds.bad_rows] == [("0002", "truncated")]
    sf.write(q, tone(0.5, 24000), 24000)  # valid audio, but not what was prepared (2 s)
    stat = os.stat(q)
    os.utime(q, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    ds = make_dataset(parquet, omni.tokenizer, config, omni)
    ((row,),) = [ds.bad_rows]
    assert row["kind"] == "duration mismatch" and "decodes to 0.50 s but the parquet records 2.00 s" in row["reason"]
    assert SECONDS["0002"] == 2.0
