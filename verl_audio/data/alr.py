"""ALR (audio logical reasoning) -> verl RLHF parquet: one validated row per problem, or a reported rejection.

For each split, `OUT/<split>.parquet` holds the rows verl's RLHFDataset reads (its metadata records
the audio root, SRC, for `verl_audio.data.confine`), `OUT/<split>.rejected.jsonl` one line per bad input
row (id, path, kind, reason; rows in = written + rejected) and `OUT/<split>.warnings.jsonl` one line per
written row whose question audio is flagged (clipping, silent, over-long). Every bad row of a split is
found in one pass; `strict` rejects flagged rows too and then fails, naming every rejected row.
The ground truth comes from `label` only: some reference reasonings end with the opposite word.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from verl_audio.contract import ENTAILED, NOT_ENTAILED
from verl_audio.data.alr_rows import SCHEMA, RowError, build_row, reasoning_label
from verl_audio.data.alr_sources import SourceRow, download_release, is_hub_id, read_split
from verl_audio.data.confine import AUDIO_ROOT_KEY
from verl_audio.modality import check_modalities

SPLITS = ("train", "dev", "test")
InputModality = Literal["audio", "text", "both"]
OutputModality = Literal["text", "audio"]


class PrepError(RuntimeError):
    """The run cannot go on (no split found, or a bad row under --strict)."""


@dataclass
class SplitReport:
    """What one split's preparation read, wrote and rejected."""

    split: str
    source: str
    rows_in: int = 0
    written: int = 0
    rejected: int = 0
    labels: Counter = field(default_factory=Counter)  # label word -> written rows
    contradictions: int = 0  # written rows whose reasoning ends with the other label word
    unparsed: int = 0  # written rows whose reasoning's last line names no label word
    reasons: Counter = field(default_factory=Counter)  # rejection reason kind -> rows
    flagged: Counter = field(default_factory=Counter)  # quality flag kind -> written rows carrying it
    parquet: Path | None = None
    rejected_path: Path | None = None
    warnings_path: Path | None = None
    seconds: float = 0.0


def prepare_alr(
    src: str | os.PathLike,
    out: str | os.PathLike,
    input_modality: InputModality = "audio",
    output_modality: OutputModality = "text",
    splits: tuple[str, ...] | list[str] = SPLITS,
    strict: bool = False,
    progress: bool = True,
    download_dir: str | None = None,
    log: Callable[[str], None] = print,
) -> list[SplitReport]:
    """Prepare the listed splits of ALR from `src` (a local folder or the Hub id) into `out`."""
    check_modalities(input_modality, output_modality)
    splits = list(splits)
    src_s = os.fspath(src)
    if is_hub_id(src_s):
        need_audio = input_modality != "text" or output_modality == "audio"
        root = download_release(src_s, splits, need_audio=need_audio, local_dir=download_dir)
    else:
        root = Path(src_s).absolute()
        if not root.is_dir():
            raise PrepError(f"source folder not found: {root}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    reports = []
    for split in splits:
        try:
            source = read_split(root, split)
        except (ValueError, OSError) as e:  # a layout that cannot be read at all (not one bad row)
            raise PrepError(f"cannot read split {split!r} from {root}: {e}") from e
        if source is None:
            log(
                f"split {split!r}: not found in {root} (looked for {split}/metadata.jsonl, metadata.jsonl rows "
                f"with split={split}, {split}.jsonl, {split}/*/annotation.json); skipped"
            )
            continue
        reports.append(_prepare_split(source, root, out, input_modality, output_modality, strict, progress))
    if not reports:
        raise PrepError(f"none of the splits {splits} was found in {root}")
    return reports


def _prepare_split(source, root: Path, out: Path, input_modality, output_modality, strict, progress) -> SplitReport:
    start = time.perf_counter()
    report = SplitReport(split=source.split, source=source.description, rows_in=len(source.rows))
    rows, rejected, warnings, seen = [], [], [], {}
    for src_row in tqdm(source.rows, desc=f"alr {source.split}", unit="row", disable=not progress):
        flags: list[dict] = []
        try:
            row = build_row(src_row, root, input_modality, output_modality, flags=flags)
            rid = row["extra_info"]["id"]
            if rid in seen:
                raise RowError(f"duplicate id {rid!r} (first at {seen[rid]})", kind="duplicate id")
            if strict and flags:  # under --strict a flagged clip is a bad row
                raise RowError("; ".join(f["reason"] for f in flags), flags[0]["path"], flags[0]["kind"])
            seen[rid] = src_row.origin
        except RowError as e:
            rejected.append(_rejection(src_row, e))
            report.reasons[e.kind] += 1
            continue
        rows.append(row)
        for flag in flags:
            warnings.append({"id": rid, "split": src_row.split, "index": src_row.ordinal, "source": src_row.origin,
                             **flag})
            report.flagged[flag["kind"]] += 1
        word = row["reward_model"]["ground_truth"]
        report.labels[word] += 1
        said = reasoning_label(row["extra_info"]["ref_text"])
        if said is None:
            report.unparsed += 1
        elif said != word:
            report.contradictions += 1

    report.written, report.rejected = len(rows), len(rejected)
    assert report.rows_in == report.written + report.rejected, (report.rows_in, report.written, report.rejected)
    report.parquet = out / f"{source.split}.parquet"
    report.rejected_path = out / f"{source.split}.rejected.jsonl"
    report.warnings_path = out / f"{source.split}.warnings.jsonl"
    for path, records in ((report.rejected_path, rejected), (report.warnings_path, warnings)):
        lines = "".join(json.dumps(r) + "\n" for r in records)
        _atomic_write(path, lambda tmp, lines=lines: Path(tmp).write_text(lines, encoding="utf-8"))
    if strict and rejected:  # every bad row is listed, and no parquet is written
        listed = "".join(f"\n  {r['source']}: id {r['id']!r}: {r['path'] or ''}: {r['reason']}" for r in rejected[:50])
        raise PrepError(f"split {source.split!r}: {len(rejected)} of {report.rows_in} rows rejected under --strict "
                        f"(all in {report.rejected_path}):{listed}")
    schema = SCHEMA.with_metadata({AUDIO_ROOT_KEY: str(root.resolve()).encode("utf-8")})
    _atomic_write(report.parquet, lambda tmp: pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp))
    report.seconds = time.perf_counter() - start
    return report


def format_report(reports: list[SplitReport]) -> str:
    """Human-readable summary: counts, label balance, reasoning/label contradictions, outputs."""
    lines = []
    for r in reports:
        n = max(r.written, 1)
        lines.append(f"[{r.split}] from {r.source}")
        lines.append(f"  rows in {r.rows_in} = written {r.written} + rejected {r.rejected}  ({r.seconds:.1f} s)")
        if r.reasons:
            lines.append("  rejected: " + ", ".join(f"{k} {v}" for k, v in r.reasons.most_common()))
        if r.flagged:
            lines.append("  written but flagged: " + ", ".join(f"{k} {v}" for k, v in r.flagged.most_common())
                         + f" (see {r.warnings_path})")
        ent, nent = r.labels[ENTAILED], r.labels[NOT_ENTAILED]
        lines.append(
            f"  labels: {ENTAILED} {ent} ({100 * ent / n:.1f}%), {NOT_ENTAILED} {nent} ({100 * nent / n:.1f}%)"
        )
        lines.append(
            f"  reference reasonings whose last line contradicts the label: {r.contradictions} "
            f"({100 * r.contradictions / n:.1f}%); naming no label: {r.unparsed}"
        )
        lines.append(f"  wrote {r.parquet}, {r.rejected_path} and {r.warnings_path}")
    return "\n".join(lines)


def _raw_id(src_row: SourceRow) -> str | None:
    rid = src_row.data.get("id") if src_row.data else None
    return None if rid is None else str(rid)


def _rejection(src_row: SourceRow, error: RowError) -> dict:
    return {
        "id": _raw_id(src_row),
        "split": src_row.split,
        "index": src_row.ordinal,
        "source": src_row.origin,
        "path": error.path,
        "kind": error.kind,
        "reason": error.reason,
    }


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(str(tmp))
    os.replace(tmp, path)
