"""Prepare the tone task ("is the tone high or low?") for verl: wav clips plus parquet rows.

    python examples/hear_tones/prepare.py --out DIR [--train 1024] [--val 64] [--test 200] [--seed 0]
                                           [--silent-train]

Writes, under DIR:

* ``train/``, ``val/``, ``test/``: ``high_NNNN.wav`` / ``low_NNNN.wav`` clips (``verl_audio.data.tones``), each
  split from its own seed, so the splits are independent draws; ``test/`` is for ``eval.py`` only;
* ``train.parquet``, ``val.parquet``: rows for verl's ``RLHFDataset`` / ``AudioRLHFDataset``
  (``verl_audio.data.tones.tone_rows``: one ``<audio>`` prompt, ground truth ``high`` / ``low``).

``--silent-train`` is the ablation: the training rows point at ``train_silent/``, a copy of every training
clip with its samples set to zero (digital silence of the same length). The processor then gives every clip
the same constant log-mel features, the prompt keeps the same number of ``<|AUDIO|>`` tokens, and the only
thing left that differs between clips is their length, which the generator draws independently of the
label. Validation rows keep the real audio, so the run's validation accuracy measures what the policy
learned to hear.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from verl_audio.data.confine import record_audio_root
from verl_audio.data.tones import generate_tones, tone_rows

#: seed offsets of the splits: each split is generated from its own seed
SPLIT_SEEDS = {"train": 0, "val": 1, "test": 2}


def silence_copies(records: list[dict], out_dir: Path) -> list[dict]:
    """Write an all-zero copy of each record's clip (same samples, rate and format) to ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    silent = []
    for rec in records:
        info = sf.info(rec["path"])
        path = out_dir / Path(rec["path"]).name
        sf.write(path, np.zeros(info.frames, dtype=np.float32), info.samplerate, subtype=info.subtype)
        silent.append({**rec, "path": str(path)})
    return silent


def write_rows(records: list[dict], split: str, path: Path) -> int:
    """Write the verl rows of ``records`` to ``path`` (parquet); return the row count."""
    rows = tone_rows(records, split)
    pd.DataFrame(rows).to_parquet(path, index=False)
    record_audio_root(path, path.parent)  # the dataset opens no audio outside the output folder
    return len(rows)


def prepare(out: str | Path, *, train: int, val: int, test: int, seed: int = 0, silent_train: bool = False) -> dict:
    """Generate the splits and parquet files under ``out`` (module doc); return a summary per split."""
    out = Path(out).resolve()  # verl's Ray workers may run elsewhere: rows carry absolute paths
    sizes = {"train": train, "val": val, "test": test}
    for split, n in sizes.items():
        if n < 1:
            raise ValueError(f"--{split} must be at least 1, got {n}")
    records = {split: generate_tones(out / split, n, seed=seed + SPLIT_SEEDS[split]) for split, n in sizes.items()}
    if silent_train:
        records["train"] = silence_copies(records["train"], out / "train_silent")
    summary = {}
    for split in ("train", "val"):
        written = write_rows(records[split], split, out / f"{split}.parquet")
        high = sum(r["label"] == "high" for r in records[split])
        summary[split] = {"rows": written, "high": high, "low": written - high, "parquet": str(out / f"{split}.parquet")}
    summary["test"] = {"clips": test, "dir": str(out / "test")}
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--train", type=int, default=1024, help="training clips (default 1024)")
    parser.add_argument("--val", type=int, default=64, help="validation clips seen during training (default 64)")
    parser.add_argument("--test", type=int, default=200, help="held-out clips for eval.py (default 200)")
    parser.add_argument("--seed", type=int, default=0, help="base seed; the splits use seed, seed+1, seed+2")
    parser.add_argument("--silent-train", action="store_true",
                        help="ablation: training rows point at silent copies of the training clips")
    args = parser.parse_args(argv)
    try:
        summary = prepare(args.out, train=args.train, val=args.val, test=args.test, seed=args.seed,
                          silent_train=args.silent_train)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for split in ("train", "val"):
        s = summary[split]
        print(f"{split}: {s['rows']} rows ({s['high']} high, {s['low']} low) -> {s['parquet']}")
    print(f"test: {summary['test']['clips']} clips -> {summary['test']['dir']}")
    if args.silent_train:
        print("train audio: silent copies (ablation)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
