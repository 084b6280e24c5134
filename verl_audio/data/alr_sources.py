"""Where ALR rows come from: the release folder layouts, the annotation jsonl files, or the Hub.

Each split is read from the first of these that exists under SRC:
  1. `<split>/metadata.jsonl` (the public release; audio paths relative to `<split>/`)
  2. `metadata.jsonl` rows whose `split` field names the split (audio paths relative to SRC)
  3. `<split>.jsonl` annotation rows (`user_content`, `answer`, `label`, `id`); audio, where present,
     at `<split>/<id>/question.wav` and `<split>/<id>/answer_<label>.wav`
  4. `<split>/<id>/annotation.json` with `question.wav` and `answer_<label>.wav` beside it
Rows are yielded raw (JSON that fails to parse included); validating them is the caller's job.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

HUB_ID = "SoundMind-RL/SoundMindDataset"
_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class SourceRow:
    """One input row of a split, before validation."""

    split: str
    ordinal: int  # position among the split's input rows
    origin: str  # "file:line" or "file", for messages
    data: dict | None  # parsed fields; None when the row could not be parsed
    base: Path  # folder that relative audio paths are relative to
    error: str | None = None  # why `data` is None
    question_ref: str | None = None
    # answer audio path; "{label}" in it is filled in once the label is validated
    answer_ref: str | None = None


@dataclass
class SplitSource:
    """The rows of one split and a description of where they were read from."""

    split: str
    description: str
    rows: list[SourceRow] = field(default_factory=list)


class PathEscapeError(ValueError):
    """An audio path in the metadata that points outside SRC."""


def is_hub_id(src: str) -> bool:
    """True for an `owner/name` string that is not an existing local path."""
    return bool(_HUB_ID_RE.match(src)) and not os.path.exists(src)


def download_release(repo_id: str, splits: list[str], need_audio: bool, local_dir: str | None = None) -> Path:
    """Fetch the requested splits of the release from the Hub; a clear error when that is not possible."""
    from huggingface_hub import snapshot_download

    if need_audio:
        patterns = [f"{s}/**" for s in splits]
    else:  # text only: the annotations, not the gigabytes of audio
        patterns = [f"{s}/metadata.jsonl" for s in splits] + [f"{s}/*/annotation.json" for s in splits]
    patterns += ["metadata.jsonl"] + [f"{s}.jsonl" for s in splits]
    try:
        path = snapshot_download(repo_id=repo_id, repo_type="dataset", allow_patterns=patterns, local_dir=local_dir)
    except Exception as e:  # offline, gated, renamed, ...: all end the run with the cause attached
        raise RuntimeError(
            f"{repo_id!r} is not a local folder, and downloading it as a Hugging Face Hub dataset failed "
            f"({type(e).__name__}: {e}). Without network access, fetch the release elsewhere and pass "
            "its folder with --src."
        ) from e
    return Path(path)


def read_split(src: Path, split: str) -> SplitSource | None:
    """The rows of `split` under `src`, or None when no layout provides that split."""
    split_meta = src / split / "metadata.jsonl"
    if split_meta.is_file():
        return SplitSource(split, str(split_meta), list(_read_metadata(split_meta, split)))
    root_meta = src / "metadata.jsonl"
    if root_meta.is_file():
        rows = [r for r in _read_metadata(root_meta, None) if r.split == split]
        if rows:
            for i, row in enumerate(rows):
                row.ordinal = i
            return SplitSource(split, f"{root_meta} (split={split})", rows)
    annotations = src / f"{split}.jsonl"
    if annotations.is_file():
        return SplitSource(split, str(annotations), list(_read_annotation_jsonl(annotations, src, split)))
    folder = src / split
    if folder.is_dir():
        files = sorted(folder.glob("*/annotation.json"))
        if files:
            return SplitSource(split, f"{folder}/*/annotation.json", list(_read_annotation_files(files, split)))
    return None


def resolve_inside(root: Path, base: Path, ref: str) -> Path:
    """The real path of audio reference `ref` (relative to `base`), refusing any that leaves `root`.

    Checked lexically first (`../`, absolute paths elsewhere), then after following symlinks, so a
    path outside SRC is never opened.
    """
    root_abs, root_real = root.absolute(), root.resolve()
    ref_path = Path(ref)
    candidate = Path(os.path.normpath(ref_path if ref_path.is_absolute() else base.absolute() / ref_path))
    if not (candidate.is_relative_to(root_abs) or candidate.is_relative_to(root_real)):
        raise PathEscapeError(f"audio path {ref!r} points outside the source folder {root_abs}")
    real = candidate.resolve()
    if not real.is_relative_to(root_real):
        raise PathEscapeError(f"audio path {ref!r} resolves through a symlink to {real}, outside {root_real}")
    return real


def _jsonl_lines(path: Path):
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                yield lineno, line


def _parse(line: str) -> tuple[dict | None, str | None]:
    try:
        data = json.loads(line)
    except json.JSONDecodeError as e:
        return None, f"invalid JSON: {e}"
    if not isinstance(data, dict):
        return None, f"expected a JSON object, got {type(data).__name__}"
    return data, None


def _read_metadata(path: Path, split: str | None):
    ordinal = 0
    for lineno, line in _jsonl_lines(path):
        data, error = _parse(line)
        row_split = split
        if split is None:  # the root metadata.jsonl: each row says which split it belongs to
            row_split = data.get("split") if data else None
            if not isinstance(row_split, str) or not row_split:
                raise ValueError(
                    f"{path}:{lineno}: row has no 'split' field; a metadata.jsonl at the top of SRC must "
                    "name each row's split (or put one metadata.jsonl in each split folder)"
                )
        yield SourceRow(
            split=row_split,
            ordinal=ordinal,
            origin=f"{path}:{lineno}",
            data=data,
            error=error,
            base=path.parent,
            question_ref=_str_or_none(data, "question_file_name"),
            answer_ref=_str_or_none(data, "answer_file_name"),
        )
        ordinal += 1


def _read_annotation_jsonl(path: Path, src: Path, split: str):
    for ordinal, (lineno, line) in enumerate(_jsonl_lines(path)):
        data, error = _parse(line)
        sample = f"{split}/{data.get('id')}" if data and data.get("id") not in (None, "") else None
        yield SourceRow(
            split=split,
            ordinal=ordinal,
            origin=f"{path}:{lineno}",
            data=data,
            error=error,
            base=src,
            question_ref=f"{sample}/question.wav" if sample else None,
            answer_ref=f"{sample}/answer_{{label}}.wav" if sample else None,
        )


def _read_annotation_files(files: list[Path], split: str):
    for ordinal, path in enumerate(files):
        try:
            data, error = _parse(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as e:
            data, error = None, f"unreadable: {e}"
        if data is not None and data.get("id") in (None, ""):
            data = {**data, "id": path.parent.name}  # the folder name is the id
        yield SourceRow(
            split=split,
            ordinal=ordinal,
            origin=str(path),
            data=data,
            error=error,
            base=path.parent,
            question_ref="question.wav",
            answer_ref="answer_{label}.wav",
        )


def _str_or_none(data: dict | None, key: str) -> str | None:
    value = data.get(key) if data else None
    return value if isinstance(value, str) and value else None
