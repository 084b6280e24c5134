"""Score the evaluation CLI's answers on the tone questions as MMAU's official script does.

    python examples/hear_tones_mcq/score.py --eval EVAL_OUT [--official evaluation.py]

``EVAL_OUT`` is the ``--out`` folder of ``python -m verl_audio.eval --task mmau --data test.json``, which holds
``official_input.json`` (the annotation items, each with the answer text under ``model_output``; an item the
CLI could not answer has an empty one, so it counts as wrong). Prints the accuracy by the benchmarks' rule as
this repository implements it (``verl_audio.eval.scoring.string_match``), per answer, and, with
``--official`` (MMAU's ``evaluation.py``), that script's own report on the same file; ``accuracy: <fraction>``
is the last line (the official script's figure when it ran).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

from verl_audio.eval.scoring import string_match

OFFICIAL_INPUT = "official_input.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval", required=True, help="the evaluation CLI's --out folder")
    parser.add_argument("--official", default=None, help="MMAU's evaluation.py, run on the written file")
    args = parser.parse_args(argv)
    path = Path(args.eval) / OFFICIAL_INPUT
    items = json.loads(path.read_text(encoding="utf-8"))
    right, total = Counter(), Counter()
    for item in items:
        total[item["answer"]] += 1
        right[item["answer"]] += string_match(item["answer"], item["model_output"], item["choices"])
    for answer in sorted(total):
        print(f"{answer}: {right[answer]}/{total[answer]}")
    outputs = Counter(item["model_output"] for item in items)
    print("responses: " + ", ".join(f"{k[:40]!r}{'…' if len(k) > 40 else ''} {v}" for k, v in outputs.most_common(6)))
    accuracy = sum(right.values()) / len(items)
    print(f"string_match accuracy: {accuracy:.4f} ({sum(right.values())}/{len(items)}) on {path}")
    if args.official:
        proc = subprocess.run([sys.executable, args.official, "--input", str(path)], capture_output=True, text=True)
        print(proc.stdout.strip())
        if proc.returncode != 0:
            print(proc.stderr.strip()[-2000:], file=sys.stderr)
            return proc.returncode
        found = re.search(r"Total Accuracy: ([\d.]+)%", proc.stdout)
        if found:
            accuracy = float(found.group(1)) / 100
            print("official MMAU evaluation.py above")
    print(f"accuracy: {accuracy:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
