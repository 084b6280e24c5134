"""Scoring time of adversarial responses, and how it grows with length (linear: ~10x for 10x the text).

    python benchmarks/reward_parsing.py

The inputs are the adversarial cases of `tests/rewards/test_reward_fuzz.py` (1 MB of words, 100 KB of tags,
deep nesting, ...). Prints the best of 5 timings per case, and the ratio of parse times for a 1 MB
and a 100 KB response of unbalanced tags (a quadratic scan would show ~100x).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_reward_fuzz import INFOS, _adversarial  # noqa: E402

from reward_fns import compute_score  # noqa: E402
from verl_audio.contract import parse_response  # noqa: E402


def best_of(fn: Callable[[], object], rounds: int = 5) -> float:
    """The fastest of `rounds` calls, in seconds."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    for name, text in _adversarial().items():
        seconds = best_of(lambda text=text: compute_score("alr", text, 1, INFOS[1]))
        print(f"{name:<30} {len(text):>9,} chars  {seconds * 1e3:8.2f} ms")
    small, large = "<think>x</answer>" * 6_000, "<think>x</answer>" * 60_000
    ratio = best_of(lambda: parse_response(large)) / best_of(lambda: parse_response(small))
    print(f"parse time, 1 MB / 100 KB of unbalanced tags: {ratio:.1f}x (linear: ~10x)")


if __name__ == "__main__":
    main()
