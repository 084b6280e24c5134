"""``python -m verl_audio.models.tiny``: a tiny random checkpoint of any model family, built offline in seconds.

    python -m verl_audio.models.tiny --out DIR [--family qwen2_5_omni|qwen2_audio|qwen3_omni] [--talker]
        [--vocab small|qwen] [--seed N] [--head-dim 16|32]

Builders: ``tiny_qwen2_5_omni.build_tiny_omni`` (also importable from here), ``tiny_qwen2_audio``,
``tiny_qwen3_omni``; each family's ``AudioFamily.build_tiny`` calls its own.
"""

from __future__ import annotations

import argparse
import time

from verl_audio.models.families import FAMILIES, family_named
from verl_audio.models.tiny_qwen2_5_omni import HEAD_DIM, MROPE_SECTIONS, build_tiny_omni

__all__ = ["build_tiny_omni", "main"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A tiny random checkpoint of a model family, built offline.")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--family", choices=sorted(FAMILIES), default="qwen2_5_omni", help="model family")
    parser.add_argument("--talker", action="store_true", help="also write the talker's weights (Omni families)")
    parser.add_argument("--vocab", choices=("small", "qwen"), default="small")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--head-dim", type=int, choices=sorted(MROPE_SECTIONS), default=HEAD_DIM,
                        help="Qwen2.5-Omni: attention head dim of thinker and talker (32 for checkpoints served by "
                             "vLLM on CPU; the other families' tiny models have 32)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    options = {"vocab": args.vocab, "seed": args.seed, "talker": args.talker}
    if args.family == "qwen2_5_omni":
        options["head_dim"] = args.head_dim
    elif args.family == "qwen2_audio" and args.talker:
        parser.error("--talker: Qwen2-Audio has no talker")
    path = family_named(args.family).build_tiny(args.out, **options)
    print(f"wrote a tiny {args.family} checkpoint to {path} in {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    main()
