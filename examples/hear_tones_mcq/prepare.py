"""Write the tone multiple-choice task in MMAU's layout: annotation files plus clips, ready for audio_mcq.py.

    python examples/hear_tones_mcq/prepare.py --out DIR [--train 1024] [--val 64] [--test 200] [--seed 0]
                                               [--choices 4] [--silent-train]

Writes, under DIR, ``train.json``, ``dev.json`` and ``test.json`` (MMAU-style JSON lists: ``id``, ``audio_id``,
``question`` "How high is the tone?", the ``choices`` in shuffled order (``--choices 4``: very low / low / high /
very high; ``--choices 2``: low / high, the bands of ``examples/hear_tones``),
``answer``, ``task`` sound, ``difficulty``, ``category`` pitch, ``sub-category`` = the band) and the clips under
``train_audio/``, ``dev_audio/``, ``test_audio/`` (``verl_audio.data.tones.generate_tone_mcq``; each split from
its own seed, so the splits are independent draws). ``train.json`` and ``dev.json`` then go through
``examples/data_preprocess/audio_mcq.py`` (train.sh does it); ``test.json`` is read by ``python -m verl_audio.eval
--task mmau`` only.

``--silent-train`` is the ablation: the training clips are digital silence of the same lengths (so the same
number of ``<|AUDIO|>`` tokens); dev and test keep real audio.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from verl_audio.data.tones import MCQ_CHOICES, generate_tone_mcq, write_annotation

#: seed offsets of the splits: each split is generated from its own seed
SPLIT_SEEDS = {"train": 0, "dev": 1, "test": 2}


def prepare(out: str | Path, *, train: int, val: int, test: int, seed: int = 0,
            silent_train: bool = False, choices: int = 4) -> dict[str, dict]:
    """Write the three annotation files and their clips under ``out`` (module doc); a summary per split."""
    out = Path(out).resolve()
    sizes = {"train": train, "dev": val, "test": test}
    summary = {}
    for split, n in sizes.items():
        if n < 1:
            raise ValueError(f"--{'val' if split == 'dev' else split} must be at least 1, got {n}")
        items = generate_tone_mcq(out, n, seed=seed + SPLIT_SEEDS[split], audio_folder=f"{split}_audio",
                                  silent=silent_train and split == "train", bands=MCQ_CHOICES[choices])
        path = write_annotation(items, out / f"{split}.json")
        summary[split] = {"items": len(items), "answers": dict(Counter(i["answer"] for i in items)), "file": str(path)}
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--train", type=int, default=1024, help="training questions (default 1024)")
    parser.add_argument("--val", type=int, default=64, help="validation questions seen during training (default 64)")
    parser.add_argument("--test", type=int, default=200, help="held-out questions for the evaluation (default 200)")
    parser.add_argument("--seed", type=int, default=0, help="base seed; the splits use seed, seed+1, seed+2")
    parser.add_argument("--choices", type=int, choices=sorted(MCQ_CHOICES), default=4,
                        help="4: very low / low / high / very high; 2: low / high (default 4)")
    parser.add_argument("--silent-train", action="store_true", help="ablation: silent training clips")
    args = parser.parse_args(argv)
    try:
        summary = prepare(args.out, train=args.train, val=args.val, test=args.test, seed=args.seed,
                          silent_train=args.silent_train, choices=args.choices)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for split, s in summary.items():
        answers = ", ".join(f"{k} {v}" for k, v in sorted(s["answers"].items()))
        print(f"{split}: {s['items']} questions ({answers}) -> {s['file']}")
    if args.silent_train:
        print("train audio: silent clips (ablation)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
