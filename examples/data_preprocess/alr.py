"""Prepare ALR (SoundMind's audio logical reasoning set) as verl RLHF parquet files.

    python examples/data_preprocess/alr.py --src /data/alr --out data/alr \
        --input-modality audio --output-modality text [--splits train,dev,test] [--strict]

SRC is a local folder in the release layout (or holding train/dev/test.jsonl), or the Hub id
SoundMind-RL/SoundMindDataset. Writes OUT/<split>.parquet, OUT/<split>.rejected.jsonl and OUT/<split>.warnings.jsonl.
"""

from __future__ import annotations

import argparse
import sys

from verl_audio.data.alr import PrepError, format_report, prepare_alr


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", required=True, help="release folder, annotation-jsonl folder, or Hub dataset id")
    parser.add_argument("--out", required=True, help="output folder for <split>.parquet")
    parser.add_argument("--input-modality", choices=("audio", "text", "both"), default="audio")
    parser.add_argument("--output-modality", choices=("text", "audio"), default="text")
    parser.add_argument("--splits", default="train,dev,test", help="comma-separated (default: train,dev,test)")
    parser.add_argument("--strict", action="store_true", help="reject flagged clips (clipping, silent, over-long) too, and fail when any row is rejected, naming every one (no parquet is written)")
    parser.add_argument("--download-dir", default=None, help="where a Hub download goes (default: HF cache)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    try:
        reports = prepare_alr(
            args.src,
            args.out,
            input_modality=args.input_modality,
            output_modality=args.output_modality,
            splits=splits,
            strict=args.strict,
            progress=not args.no_progress,
            download_dir=args.download_dir,
        )
    except (PrepError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(format_report(reports))
    if sum(r.written for r in reports) == 0:
        print("error: no row was written; see the rejected.jsonl files for why", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
