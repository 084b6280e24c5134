"""Evaluation inputs -> ``EvalItem``s: ALR parquet rows and MMAU / MMAR multiple-choice annotations.

* ``alr``: the parquet ``examples/data_preprocess/alr.py`` writes (any mode; each row carries its
  ``input_modality`` / ``output_modality`` in ``extra_info``). The prompt is the row's own, audio the
  row's ``audios``.
* ``mmau`` / ``mmar``: a json list or jsonl of multiple-choice items in the MMAU / MMAR layout: ``id``, an
  audio path (``audio_id`` in MMAU, ``audio_path`` in MMAR, or ``audio``), ``question``, ``choices``,
  ``answer``. The prompt is built from ``prompt_template``. Each item keeps its original annotation (``raw``,
  for the benchmark's own scorer) and the fields the benchmark's tables group by (``GROUPINGS``): MMAU's
  ``task``, ``difficulty``, ``sub-category``; MMAR's ``modality``, ``category``, ``sub-category``. An item
  without one of them is left out of that grouping's rows (as the official scorers treat ``sub-category``).
  Empty choices (four MMAR items end with ``""``) are left out of the prompt and of parsing; they add no
  word to the match rule, so the official scorers ignore them too.

Relative audio paths are resolved against ``--audio-root`` when it is given, else against the annotation
file's folder; either way that folder is the boundary no audio path may leave.

A bad row or item does not stop the run and is not dropped: it becomes an item with ``error`` set (a
missing field, an answer that is not one of the choices, an audio path outside ``--audio-root``, a
duplicate id, ...), which the report counts under ``n failed`` with its reason. Audio files themselves are
read at generation time, where an unreadable clip becomes the same kind of error.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from verl_audio.modality import ModalityError, row_modality

logger = logging.getLogger(__name__)

TASKS = ("alr", "mmau", "mmar")
CHOICE_TASKS = ("mmau", "mmar")
#: the fields each benchmark's official scorer groups its accuracies by, in its print order
GROUPINGS: dict[str, tuple[str, ...]] = {
    "mmau": ("task", "difficulty", "sub-category"),
    "mmar": ("modality", "category", "sub-category"),
}
#: the values the official scorers print first, in their order (others follow in the order first seen)
GROUP_ORDER: dict[str, tuple[str, ...]] = {
    "task": ("sound", "music", "speech"),
    "difficulty": ("easy", "hard", "medium"),
    "modality": ("sound", "music", "speech", "mix-sound-music", "mix-sound-speech", "mix-music-speech",
                 "mix-sound-music-speech"),
    "category": ("Signal Layer", "Perception Layer", "Semantic Layer", "Cultural Layer"),
}
AUDIO_TAG = "<audio>"
#: the default multiple-choice prompt: the question, the choices one per line, and what to answer with
DEFAULT_PROMPT_TEMPLATE = "<audio>{question}\nChoices:\n{choices}\nAnswer with the text of one choice."
_AUDIO_KEYS = ("audio_id", "audio_path", "audio")


@dataclass
class EvalItem:
    """One question to ask: ``prompt`` is user-turn text with one ``<audio>`` per clip in ``audios``."""

    key: str  # unique within a run: what resume matches on
    id: str
    task: str  # alr | mmau
    group: str  # table row: mode (alr), or the first grouping's value (mmau: task, mmar: modality)
    source: str  # file:line (or file:row) it came from
    prompt: str = ""
    audios: list[str] = field(default_factory=list)
    ground_truth: str = ""
    choices: list[str] = field(default_factory=list)
    extra_info: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    groups: dict[str, str] = field(default_factory=dict)  # multiple choice: grouping field -> value
    raw: Any = None  # multiple choice: the annotation item as read (what official_input.json repeats)

    @property
    def output_modality(self) -> str:
        return row_modality(self.extra_info).output


class PathOutsideRoot(ValueError):
    """An audio path that leaves the declared audio root."""


def resolve_audio(ref: str, root: Path, base: Path | None = None) -> str:
    """The real path of ``ref`` (relative paths against ``base``, default ``root``), refusing any outside ``root``.

    Checked lexically and after following symlinks, so no file outside ``root`` is ever opened.
    """
    from verl_audio.data.alr_sources import PathEscapeError, resolve_inside

    try:
        return str(resolve_inside(root, base or root, ref))
    except PathEscapeError as err:
        raise PathOutsideRoot(f"{err} (--audio-root {root})") from None


def format_choices(choices: Sequence[str]) -> dict[str, str]:
    """Template fields: ``choices`` (one per line, ``- `` prefixed) and ``choices_inline`` ("a, b or c")."""
    inline = choices[0] if len(choices) == 1 else f"{', '.join(choices[:-1])} or {choices[-1]}"
    return {"choices": "\n".join(f"- {c}" for c in choices), "choices_inline": inline}


def _str(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _group_value(value: Any) -> str | None:
    """A grouping field's value as a row name: strings as they are, a list's items joined, None when absent."""
    if isinstance(value, list):
        value = ", ".join(str(v) for v in value)
    return None if value is None or str(value) == "" else str(value)


def mmau_item(raw: Any, source: str, base: Path, root: Path, template: str, task: str = "mmau") -> EvalItem:
    """One MMAU / MMAR annotation -> EvalItem (``error`` set when it cannot be asked or scored)."""
    if not isinstance(raw, dict):
        return EvalItem(key=f"{task}:{source}", id=source, task=task, group="?", source=source, raw=raw,
                        error=f"bad item: not an object ({type(raw).__name__})")
    rid = raw.get("id")
    rid = str(rid).strip() if isinstance(rid, (str, int)) and not isinstance(rid, bool) and str(rid).strip() else None
    groups = {name: v for name in GROUPINGS[task] if (v := _group_value(raw.get(name))) is not None}
    group = next(iter(groups.values()), "uncategorized")
    item = EvalItem(key=f"{task}:{rid or source}", id=rid or source, task=task, group=group, source=source,
                    groups=groups, raw=raw)
    choices = raw.get("choices")
    answer = _str(raw.get("answer"))
    question = _str(raw.get("question"))
    audio = next((raw[k] for k in _AUDIO_KEYS if _str(raw.get(k))), None)
    asked = [c.strip() for c in choices if _str(c)] if isinstance(choices, list) else []
    if rid is None:
        item.error = "bad item: missing id"
    elif question is None:
        item.error = "bad item: missing question"
    elif (not isinstance(choices, list) or len(asked) < 2
          or not all(isinstance(c, str) for c in choices)):
        item.error = "bad item: choices must be a list of strings, at least two of them non-empty"
    elif answer is None:
        item.error = "bad item: missing answer"
    elif audio is None:
        item.error = f"bad item: no audio path ({' / '.join(_AUDIO_KEYS)})"
    if item.error:
        return item
    item.choices = asked  # empty choices are not asked; they add no word to the match rule either
    item.ground_truth = answer
    if answer not in item.choices:
        item.error = f"bad item: answer {answer!r} is not one of the choices"
        return item
    try:
        item.audios = [resolve_audio(audio.strip(), root, base)]
    except PathOutsideRoot as err:
        item.error = f"bad audio path: {err}"
        return item
    item.prompt = template.format(question=question, **format_choices(item.choices))
    if item.prompt.count(AUDIO_TAG) != 1:
        item.error = f"prompt template must hold exactly one {AUDIO_TAG}"
    return item


def load_mmau(path: Path, root: Path | None, template: str, task: str = "mmau") -> list[EvalItem]:
    """Items of a json (list) or jsonl file; a line that is not JSON becomes a failed item.

    Relative audio paths ("./test-mini-audios/x.wav") are resolved against ``root`` (``--audio-root``), else
    against the annotation file's folder; that folder is also the boundary.
    """
    root = (root or path.parent).absolute()
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        data = json.loads(text)
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a JSON list of items, got {type(data).__name__}")
        return [mmau_item(raw, f"{path.name}:{i}", root, root, template, task) for i, raw in enumerate(data)]
    items = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        source = f"{path.name}:{lineno}"
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as err:
            items.append(EvalItem(key=f"{task}:{source}", id=source, task=task, group="?", source=source,
                                  raw=line, error=f"bad item: not JSON ({err.msg})"))
            continue
        items.append(mmau_item(raw, source, root, root, template, task))
    return items


def _plain(value: Any) -> Any:
    """numpy / pyarrow values of a parquet row -> plain Python (lists, dicts, str, numbers)."""
    if hasattr(value, "tolist"):
        return _plain(value.tolist())
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def alr_item(row: dict[str, Any], source: str, root: Path | None) -> EvalItem:
    """One parquet row -> EvalItem; the mode comes from the row's own extra_info."""
    info = row.get("extra_info") or {}
    rid = str(info.get("id") or source)
    try:
        mode, error = row_modality(info).label, None
    except ModalityError as err:
        mode, error = "unknown_mode", f"bad row: {err}"
    item = EvalItem(key=f"{mode}:{rid}", id=rid, task="alr", group=mode, source=source, extra_info=info, error=error)
    prompt = row.get("prompt") or []
    users = [m.get("content") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
    truth = (row.get("reward_model") or {}).get("ground_truth")
    audios = [str(a) for a in (row.get("audios") or [])]
    if item.error:
        return item
    if len(users) != 1 or not isinstance(users[0], str):
        item.error = "bad row: prompt must hold one user message with text content"
    elif truth is None or str(truth).strip() == "":
        item.error = "bad row: no reward_model.ground_truth"
    elif users[0].count(AUDIO_TAG) != len(audios):
        item.error = f"bad row: {users[0].count(AUDIO_TAG)} {AUDIO_TAG} tags for {len(audios)} audio paths"
    if item.error:
        return item
    item.prompt, item.ground_truth = users[0], str(truth)
    try:
        item.audios = [resolve_audio(a, root) if root is not None else a for a in audios]
    except PathOutsideRoot as err:
        item.error = f"bad audio path: {err}"
    return item


def load_alr(path: Path, root: Path | None) -> list[EvalItem]:
    """Items of an ALR parquet file (``examples/data_preprocess/alr.py``)."""
    import pyarrow.parquet as pq

    rows = pq.read_table(path).to_pylist()
    return [alr_item(_plain(row), f"{path.name}:{i}", root.absolute() if root else None) for i, row in enumerate(rows)]


def _check_layout(items: list[EvalItem], task: str) -> None:
    """Warn when the items carry the other benchmark's first grouping and not this one's (--task mmau on MMAR)."""
    raws = [i.raw for i in items if isinstance(i.raw, dict)]
    for other in CHOICE_TASKS:
        mine, theirs = GROUPINGS[task][0], GROUPINGS[other][0]
        if other != task and raws and not any(mine in r for r in raws) and all(theirs in r for r in raws):
            logger.warning("the items have %r and no %r: they look like %s items; --task %s groups them as %s "
                           "does", theirs, mine, other.upper(), other, other.upper())


def load_items(paths: Sequence[str | Path], task: str, audio_root: str | Path | None = None,
               prompt_template: str = DEFAULT_PROMPT_TEMPLATE, limit: int | None = None) -> list[EvalItem]:
    """Every item of ``paths`` in order (``limit``: the first N of each file); a repeated key fails the repeat."""
    if task not in TASKS:
        raise ValueError(f"--task must be one of {TASKS}, got {task!r}")
    root = Path(audio_root) if audio_root else None
    items: list[EvalItem] = []
    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise FileNotFoundError(f"--data {path}: no such file")
        loaded = load_alr(path, root) if task == "alr" else load_mmau(path, root, prompt_template, task)
        items.extend(loaded[:limit] if limit is not None else loaded)
    if task in CHOICE_TASKS:
        _check_layout(items, task)
    seen: set[str] = set()
    for item in items:
        if item.key in seen:
            # kept (and failed) rather than dropped, so rows in = rows reported
            item.key = f"{item.key}#{item.source}"
            item.error = item.error or f"duplicate id {item.id!r} in mode/task {item.group}"
        seen.add(item.key)
    return items
