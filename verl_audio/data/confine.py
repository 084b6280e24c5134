"""Audio paths stay inside a declared root: the one check every reader of audio files goes through.

The root is `data.audio_root` when set, otherwise the folder recorded in each parquet's metadata by the
preparation (`AUDIO_ROOT_KEY`, written by `examples/data_preprocess/alr.py` and the tone example). A path
is accepted only if it lies inside a root both as written (after normalising `..`) and after following
every symlink, so an absolute path elsewhere, a `../` escape, `/proc/...` or a symlink out of the data
is refused before it is opened. Evaluation and reward code call `load_confined_audio`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from verl_audio.data.audio import TARGET_SR, AudioError

#: parquet schema metadata key holding the audio root recorded at preparation
AUDIO_ROOT_KEY = b"verl_audio.audio_root"


class OutsideRootError(AudioError):
    """An audio path that leaves every declared root; it was not opened."""

    def __init__(self, path: str | os.PathLike, reason: str, kind: str = "outside root"):
        super().__init__(path, reason, kind)


def confine(path: str | os.PathLike, roots: Sequence[str | os.PathLike]) -> Path:
    """The real path of `path` if it lies inside one of `roots` (relative paths are taken from the
    first root); OutsideRootError otherwise. Nothing is opened; only the path is resolved."""
    if not roots:
        raise OutsideRootError(path, "no audio root is declared (set data.audio_root, or prepare the data with "
                                     "a tool that records it), so no audio file may be opened", "no root")
    raw = os.fspath(path)
    candidate = Path(raw) if os.path.isabs(raw) else Path(roots[0]) / raw
    lexical = Path(os.path.normpath(candidate.absolute()))
    real = lexical.resolve()
    for root in roots:
        root_abs, root_real = Path(os.path.normpath(Path(root).absolute())), Path(root).resolve()
        if (lexical.is_relative_to(root_abs) or lexical.is_relative_to(root_real)) and real.is_relative_to(root_real):
            return real
    listed = ", ".join(str(r) for r in roots)
    if any(lexical.is_relative_to(Path(r).absolute()) or lexical.is_relative_to(Path(r).resolve()) for r in roots):
        raise OutsideRootError(raw, f"resolves through a symlink to {real}, outside the audio root ({listed})")
    raise OutsideRootError(raw, f"points outside the audio root ({listed})")


def recorded_audio_root(parquet: str | os.PathLike) -> str | None:
    """The audio root the preparation recorded in a parquet file's metadata, if any."""
    import pyarrow.parquet as pq

    meta = pq.read_schema(os.fspath(parquet)).metadata or {}
    value = meta.get(AUDIO_ROOT_KEY)
    return value.decode("utf-8") if value else None


def record_audio_root(parquet: str | os.PathLike, root: str | os.PathLike) -> None:
    """Record `root` in an existing parquet file's metadata (rewrites the file)."""
    import pyarrow.parquet as pq

    table = pq.read_table(os.fspath(parquet))
    meta = dict(table.schema.metadata or {})
    meta[AUDIO_ROOT_KEY] = str(Path(root).resolve()).encode("utf-8")
    pq.write_table(table.replace_schema_metadata(meta), os.fspath(parquet))


def audio_roots(declared: str | os.PathLike | None, parquet_files: Iterable[str | os.PathLike]) -> list[str]:
    """`[declared]` when given, otherwise the roots recorded in the parquet files (those that exist)."""
    if declared:
        return [str(Path(declared).expanduser().resolve())]
    return _recorded_roots(tuple(os.fspath(f) for f in parquet_files))


@lru_cache(maxsize=16)
def _recorded_roots(files: tuple[str, ...]) -> list[str]:
    roots = []
    for file in files:
        root = recorded_audio_root(file) if file.endswith(".parquet") and os.path.isfile(file) else None
        if root and root not in roots:
            roots.append(root)
    return roots


def load_confined_audio(path: str | os.PathLike, roots: Sequence[str | os.PathLike],
                        sampling_rate: int = TARGET_SR) -> np.ndarray:
    """`path` confined to `roots`, decoded whole to mono float32 at `sampling_rate` (AudioError on failure)."""
    from verl_audio.data.audio import load_audio

    return load_audio(confine(path, roots), sampling_rate)
