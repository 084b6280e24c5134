"""Audio multiple-choice annotations (MMAU / MMAR / AVQA layout) -> verl RLHF parquet, checked row by row.

One input file (a JSON list or JSON lines) holds items with an ``id``, an audio path (``audio_id`` in MMAU,
``audio_path`` in MMAR and R1-AQA's AVQA files, or ``audio``), a ``question`` (AVQA: ``question_text``), the
``choices`` (AVQA: ``multi_choice``), the ``answer`` (the text of one choice, or AVQA's 0-based index into
the choices) and any grouping fields (``task``, ``difficulty``, ``category``, ``sub-category``, ``modality``
by default; a value may be a list, as some MMAR categories are). ``prepare_mcq`` writes, for one split:

* ``OUT/<split>.parquet``: one row per good item for verl's ``RLHFDataset`` / ``AudioRLHFDataset``: the
  prompt the evaluation CLI asks by default (``verl_audio.eval.items.DEFAULT_PROMPT_TEMPLATE`` with
  ``format_choices``: the question, the choices one per line, "Answer with the text of one choice."), the clip
  in ``audios``, ``reward_model.ground_truth`` = the answer's text, and ``extra_info`` with ``id``, ``split``,
  ``index``, ``source`` (file:line), ``question``, ``choices``, ``answer``, ``answer_index``, ``groups``
  (``"field=value"`` strings, one per value of each grouping field), ``audio``, ``question_audio_seconds``,
  ``input_modality`` (audio) and ``output_modality`` (text). Its metadata records the audio root
  (``verl_audio.data.confine``), so training opens no audio outside it;
* ``OUT/<split>.rejected.jsonl``: one line per bad item (id, split, index, source, path, kind, reason);
* ``OUT/<split>.warnings.jsonl``: written items whose clip is flagged (clipping, silence, over-long).

Rows in = written + rejected, always (checked). A bad item is one that is not a JSON object, lacks a field,
has fewer than two distinct choices, an answer that is not one of them or that the benchmarks' matching rule
(``verl_audio.eval.scoring.string_match``) cannot tell from the other choices, media placeholders in its
text, a duplicate id, an audio path outside the audio root (as written or through a symlink; never opened),
or audio that does not decode (``verl_audio.data.audio``). ``strict`` also rejects flagged clips and then
fails naming every rejected item, writing no parquet.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from verl_audio.data.alr_rows import RowError
from verl_audio.data.alr_sources import PathEscapeError, resolve_inside
from verl_audio.data.audio import AudioError, decode_audio
from verl_audio.data.audio_quality import flag_kind, quality_flags
from verl_audio.data.confine import AUDIO_ROOT_KEY
from verl_audio.eval.items import AUDIO_TAG, DEFAULT_PROMPT_TEMPLATE, format_choices
from verl_audio.eval.scoring import string_match

DATA_SOURCE = "audio_mcq"
ABILITY = "audio-multiple-choice"
#: the grouping fields read by default (MMAU: task, difficulty, category, sub-category; MMAR: modality, ...)
GROUP_FIELDS: tuple[str, ...] = ("task", "difficulty", "category", "sub-category", "modality")
AUDIO_KEYS = ("audio_id", "audio_path", "audio")
QUESTION_KEYS = ("question", "question_text")
CHOICE_KEYS = ("choices", "multi_choice")
_PLACEHOLDERS = ("<audio>", "<image>", "<video>")  # verl splits prompt text on these

SCHEMA = pa.schema(
    [
        ("data_source", pa.string()),
        ("prompt", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
        ("audios", pa.list_(pa.string())),
        ("ability", pa.string()),
        ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.string())])),
        (
            "extra_info",
            pa.struct(
                [
                    ("id", pa.string()),
                    ("split", pa.string()),
                    ("index", pa.int64()),
                    ("source", pa.string()),
                    ("question", pa.string()),
                    ("choices", pa.list_(pa.string())),
                    ("answer", pa.string()),
                    ("answer_index", pa.int64()),
                    ("groups", pa.list_(pa.string())),
                    ("audio", pa.string()),
                    ("question_audio_seconds", pa.float64()),
                    ("input_modality", pa.string()),
                    ("output_modality", pa.string()),
                ]
            ),
        ),
    ]
)


class McqPrepError(RuntimeError):
    """The preparation cannot go on: an unreadable annotation file, or a bad item under ``strict``."""


@dataclass
class SourceItem:
    """One input item before checking: parsed ``data`` or the ``error`` that kept it from parsing."""

    ordinal: int  # position among the file's items
    origin: str  # "file:line" (JSON lines) or "file:index" (a JSON list), for messages
    data: dict | None
    error: str | None = None


@dataclass
class McqReport:
    """What one split's preparation read, wrote and rejected."""

    split: str
    source: str
    rows_in: int = 0
    written: int = 0
    rejected: int = 0
    reasons: Counter = field(default_factory=Counter)  # rejection kind -> items
    flagged: Counter = field(default_factory=Counter)  # quality flag kind -> written items carrying it
    answers: Counter = field(default_factory=Counter)  # answer text -> written items
    groups: Counter = field(default_factory=Counter)  # "field=value" -> written items
    parquet: Path | None = None
    rejected_path: Path | None = None
    warnings_path: Path | None = None
    seconds: float = 0.0


def read_annotations(path: str | os.PathLike) -> list[SourceItem]:
    """The items of a JSON list (``.json``) or a JSON-lines file; a line that does not parse is an item too."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise McqPrepError(f"cannot read {path}: {err}") from err
    if path.suffix == ".json" or text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise McqPrepError(f"{path}: not JSON ({err})") from err
        if not isinstance(data, list):
            raise McqPrepError(f"{path}: expected a JSON list of items, got {type(data).__name__}")
        return [SourceItem(i, f"{path}:{i}", raw if isinstance(raw, dict) else None,
                           None if isinstance(raw, dict) else f"not a JSON object ({type(raw).__name__})")
                for i, raw in enumerate(data)]
    items = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        origin, ordinal = f"{path}:{lineno}", len(items)
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as err:
            items.append(SourceItem(ordinal, origin, None, f"invalid JSON: {err.msg}"))
            continue
        ok = isinstance(raw, dict)
        items.append(SourceItem(ordinal, origin, raw if ok else None,
                                None if ok else f"not a JSON object ({type(raw).__name__})"))
    return items


def _text(data: dict, keys: Sequence[str], what: str) -> str:
    for key in keys:
        value = data.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
        if value is not None and not isinstance(value, str):
            raise RowError(f"field {key!r} must be a string, got {type(value).__name__}", kind=f"bad {what}")
    raise RowError(f"missing {what} ({' / '.join(repr(k) for k in keys)})", kind=f"missing {what}")


def _no_placeholder(text: str, what: str) -> None:
    for tag in _PLACEHOLDERS:
        if tag in text:
            raise RowError(f"{what} contains the placeholder {tag}, which would be read as media", kind="placeholder")


def _choices(data: dict) -> list[str]:
    raw = next((data[k] for k in CHOICE_KEYS if k in data), None)
    if not isinstance(raw, list) or not all(isinstance(c, str) and c.strip() for c in raw):
        raise RowError(f"choices ({' / '.join(CHOICE_KEYS)}) must be a list of non-empty strings, got {raw!r}"[:200],
                       kind="bad choices")
    choices = [c.strip() for c in raw]
    if len(set(choices)) < 2 or len(set(choices)) != len(choices):
        raise RowError(f"choices must be at least two distinct strings, got {choices!r}", kind="bad choices")
    for choice in choices:
        _no_placeholder(choice, "a choice")
    return choices


def _answer(data: dict, choices: list[str]) -> int:
    """Index of the answer among ``choices``: its text, or (AVQA) a 0-based index into them."""
    answer = data.get("answer")
    if isinstance(answer, int) and not isinstance(answer, bool):
        if 0 <= answer < len(choices):
            return answer
        raise RowError(f"answer index {answer} is outside the {len(choices)} choices", kind="answer not a choice")
    if not isinstance(answer, str) or not answer.strip():
        raise RowError(f"missing answer (the text of one choice), got {answer!r}", kind="missing answer")
    if answer.strip() not in choices:
        raise RowError(f"answer {answer.strip()!r} is not one of the choices {choices!r}", kind="answer not a choice")
    index = choices.index(answer.strip())
    others = [c for c in choices if c != choices[index]]
    if not string_match(choices[index], choices[index], choices) or any(
            string_match(c, choices[index], choices) for c in others):
        # e.g. "A-B" beside "a b": the benchmarks' word-set rule could never credit (or tell apart) this answer
        raise RowError(f"answer {choices[index]!r} cannot be told from the other choices by the benchmarks' "
                       f"word-matching rule ({choices!r})", kind="ambiguous choices")
    return index


def group_values(data: dict, fields: Sequence[str]) -> list[str]:
    """``"field=value"`` for every value of each grouping field present (a list gives one entry per element)."""
    groups: list[str] = []
    for name in fields:
        value = data.get(name)
        values = value if isinstance(value, list) else [value]
        for v in values:
            if isinstance(v, (dict, list)):
                raise RowError(f"grouping field {name!r} must hold strings or a list of them, got {value!r}",
                               kind="bad grouping field")
            if v is None or (isinstance(v, str) and not v.strip()):
                continue
            entry = f"{name}={str(v).strip()}"
            if entry not in groups:
                groups.append(entry)
    return groups


def build_mcq_row(item: SourceItem, *, root: Path, base: Path, split: str, data_source: str = DATA_SOURCE,
                  group_fields: Sequence[str] = GROUP_FIELDS, flags: list[dict] | None = None) -> dict:
    """One checked parquet row from ``item`` (module doc); ``RowError`` says why it cannot be one.

    Audio paths are relative to ``base`` (the annotation file's folder) and must lie inside ``root``.
    Quality flags of the clip are appended to ``flags`` (the row is still built)."""
    if item.data is None:
        raise RowError(item.error or "unparseable item", kind="not an object" if item.error and
                       item.error.startswith("not a JSON") else "invalid JSON")
    data = item.data
    rid = data.get("id")
    if not isinstance(rid, (str, int)) or isinstance(rid, bool) or str(rid).strip() == "":
        raise RowError(f"missing or invalid 'id': {rid!r}", kind="missing id")
    rid = str(rid).strip()
    question = _text(data, QUESTION_KEYS, "question")
    _no_placeholder(question, "the question")
    choices = _choices(data)
    answer_index = _answer(data, choices)
    groups = group_values(data, group_fields)
    ref = next((data[k] for k in AUDIO_KEYS if isinstance(data.get(k), str) and data[k].strip()), None)
    if ref is None:
        raise RowError(f"no audio path ({' / '.join(AUDIO_KEYS)})", kind="no audio path")
    try:
        path = resolve_inside(root, base, ref.strip())
    except PathEscapeError as err:
        raise RowError(str(err), ref, "outside root") from None
    try:
        samples, rate = decode_audio(path)  # model input: decoded whole once, as training will
    except AudioError as err:
        raise RowError(err.reason, err.path, err.kind) from None
    for flag in quality_flags(samples, rate):
        if flags is not None:
            flags.append({"path": str(path), "kind": flag_kind(flag), "reason": flag})
    prompt = DEFAULT_PROMPT_TEMPLATE.format(question=question, **format_choices(choices))
    if prompt.count(AUDIO_TAG) != 1:  # the template's own tag; the texts were checked for placeholders
        raise RowError(f"the prompt holds {prompt.count(AUDIO_TAG)} {AUDIO_TAG} tags, not one", kind="placeholder")
    return {
        "data_source": data_source,
        "prompt": [{"role": "user", "content": prompt}],
        "audios": [str(path)],
        "ability": ABILITY,
        "reward_model": {"style": "rule", "ground_truth": choices[answer_index]},
        "extra_info": {
            "id": rid,
            "split": split,
            "index": item.ordinal,
            "source": item.origin,
            "question": question,
            "choices": choices,
            "answer": choices[answer_index],
            "answer_index": answer_index,
            "groups": groups,
            "audio": str(path),
            "question_audio_seconds": samples.shape[0] / rate,
            "input_modality": "audio",
            "output_modality": "text",
        },
    }


def prepare_mcq(
    src: str | os.PathLike,
    out: str | os.PathLike,
    split: str,
    *,
    audio_root: str | os.PathLike | None = None,
    data_source: str = DATA_SOURCE,
    group_fields: Sequence[str] = GROUP_FIELDS,
    strict: bool = False,
) -> McqReport:
    """Prepare the annotation file ``src`` as ``OUT/<split>.parquet`` (module doc); ``audio_root`` defaults to
    the annotation file's folder."""
    start = time.perf_counter()
    src = Path(src)
    if not src.is_file():
        raise McqPrepError(f"annotation file not found: {src}")
    if not split or "/" in split or split.startswith("."):
        raise McqPrepError(f"--split must be a plain name (train, dev, ...), got {split!r}")
    base = src.parent.absolute()
    root = Path(audio_root).absolute() if audio_root is not None else base
    if not root.is_dir():
        raise McqPrepError(f"audio root is not a folder: {root}")
    items = read_annotations(src)
    report = McqReport(split=split, source=str(src), rows_in=len(items))
    rows, rejected, warnings, seen = [], [], [], {}
    for item in items:
        flags: list[dict] = []
        try:
            row = build_mcq_row(item, root=root, base=base, split=split, data_source=data_source,
                                group_fields=group_fields, flags=flags)
            rid = row["extra_info"]["id"]
            if rid in seen:
                raise RowError(f"duplicate id {rid!r} (first at {seen[rid]})", kind="duplicate id")
            if strict and flags:
                raise RowError("; ".join(f["reason"] for f in flags), flags[0]["path"], flags[0]["kind"])
            seen[rid] = item.origin
        except RowError as err:
            rid = item.data.get("id") if item.data else None
            rejected.append({"id": None if rid is None else str(rid), "split": split, "index": item.ordinal,
                             "source": item.origin, "path": err.path, "kind": err.kind, "reason": err.reason})
            report.reasons[err.kind] += 1
            continue
        rows.append(row)
        for flag in flags:
            warnings.append({"id": rid, "split": split, "index": item.ordinal, "source": item.origin, **flag})
            report.flagged[flag["kind"]] += 1
        report.answers[row["reward_model"]["ground_truth"]] += 1
        report.groups.update(row["extra_info"]["groups"])
    report.written, report.rejected = len(rows), len(rejected)
    if report.rows_in != report.written + report.rejected:  # every item is accounted for, always
        raise McqPrepError(f"rows in {report.rows_in} != written {report.written} + rejected {report.rejected}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report.parquet = out / f"{split}.parquet"
    report.rejected_path = out / f"{split}.rejected.jsonl"
    report.warnings_path = out / f"{split}.warnings.jsonl"
    for path, records in ((report.rejected_path, rejected), (report.warnings_path, warnings)):
        lines = "".join(json.dumps(r) + "\n" for r in records)
        _atomic_write(path, lambda tmp, lines=lines: Path(tmp).write_text(lines, encoding="utf-8"))
    if strict and rejected:
        listed = "".join(f"\n  {r['source']}: id {r['id']!r}: {r['path'] or ''}: {r['reason']}" for r in rejected[:50])
        raise McqPrepError(f"split {split!r}: {len(rejected)} of {report.rows_in} items rejected under --strict "
                           f"(all in {report.rejected_path}):{listed}")
    schema = SCHEMA.with_metadata({AUDIO_ROOT_KEY: str(root.resolve()).encode("utf-8")})
    _atomic_write(report.parquet, lambda tmp: pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp))
    report.seconds = time.perf_counter() - start
    return report


def format_mcq_report(report: McqReport, show_rejected: Sequence[dict] = ()) -> str:
    """Human-readable summary: rows in = written + rejected, why items were rejected, answers, groups, outputs."""
    r = report
    lines = [f"[{r.split}] from {r.source}",
             f"  rows in {r.rows_in} = written {r.written} + rejected {r.rejected}  ({r.seconds:.1f} s)"]
    if r.reasons:
        lines.append("  rejected: " + ", ".join(f"{k} {v}" for k, v in r.reasons.most_common()))
    for rec in show_rejected:
        lines.append(f"    {rec['source']}: id {rec['id']!r}: {rec['reason']}")
    if r.flagged:
        lines.append("  written but flagged: " + ", ".join(f"{k} {v}" for k, v in r.flagged.most_common())
                     + f" (see {r.warnings_path})")
    if r.answers:
        shown = r.answers.most_common(8)
        more = len(r.answers) - len(shown)
        lines.append("  answers: " + ", ".join(f"{k!r} {v}" for k, v in shown) + (f", … {more} more" if more else ""))
    if r.groups:
        lines.append("  groups: " + ", ".join(f"{k} {v}" for k, v in sorted(r.groups.items())[:20])
                     + (f", … {len(r.groups) - 20} more" if len(r.groups) > 20 else ""))
    lines.append(f"  wrote {r.parquet}, {r.rejected_path} and {r.warnings_path}")
    return "\n".join(lines)


def read_rejected(report: McqReport) -> list[dict[str, Any]]:
    """The rejected items ``prepare_mcq`` listed in ``<split>.rejected.jsonl``."""
    if report.rejected_path is None or not report.rejected_path.is_file():
        return []
    return [json.loads(line) for line in report.rejected_path.read_text(encoding="utf-8").splitlines() if line]


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(str(tmp))
    os.replace(tmp, path)
