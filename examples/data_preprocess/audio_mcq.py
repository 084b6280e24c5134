"""Prepare an audio multiple-choice annotation file (MMAU / MMAR / AVQA layout) as a verl RLHF parquet file.

    python examples/data_preprocess/audio_mcq.py --src FILE --out OUT --split NAME [--audio-root DIR]
        [--data-source NAME] [--group-fields task,difficulty,category,sub-category,modality] [--strict]

FILE is a JSON list or JSON lines of items (id, audio path, question, choices, answer, grouping fields).
Writes OUT/<split>.parquet, OUT/<split>.rejected.jsonl and OUT/<split>.warnings.jsonl and prints
rows in = written + rejected, each rejected item (file:line, id, reason), the answers and the groups.
The library code is verl_audio/data/mcq.py.
"""

from __future__ import annotations

import argparse
import sys

from verl_audio.data.mcq import DATA_SOURCE, GROUP_FIELDS, McqPrepError, format_mcq_report, prepare_mcq, read_rejected


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", required=True, help="annotation file: a JSON list or JSON lines")
    parser.add_argument("--out", required=True, help="output folder for <split>.parquet")
    parser.add_argument("--split", required=True, help="split name: the output is OUT/<split>.parquet")
    parser.add_argument("--audio-root", default=None,
                        help="folder every audio path must lie in (default: the annotation file's folder)")
    parser.add_argument("--data-source", default=DATA_SOURCE,
                        help=f"the rows' data_source, which names verl's val-core metrics (default {DATA_SOURCE})")
    parser.add_argument("--group-fields", default=",".join(GROUP_FIELDS),
                        help=f"comma-separated grouping fields kept for per-group metrics (default {','.join(GROUP_FIELDS)})")
    parser.add_argument("--strict", action="store_true",
                        help="reject flagged clips too, and fail naming every rejected item (no parquet is written)")
    parser.add_argument("--show-rejected", type=int, default=20, help="rejected items listed in the report (default 20)")
    args = parser.parse_args(argv)
    fields = tuple(f.strip() for f in args.group_fields.split(",") if f.strip())
    try:
        report = prepare_mcq(args.src, args.out, args.split, audio_root=args.audio_root,
                             data_source=args.data_source, group_fields=fields, strict=args.strict)
    except McqPrepError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(format_mcq_report(report, read_rejected(report)[: args.show_rejected]))
    if report.written == 0:
        print(f"error: no item was written; see {report.rejected_path} for why", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
