"""Reward throughput on one core: composed text reward (responses/s) and VAD speed (x real time).

    python benchmarks/reward_throughput.py [--alr-dir ../shared/alr] [--seconds 3]

Text responses are the ALR dev reference reasonings wrapped in the output contract when dev.jsonl is
present (~840 words each), else synthetic ones of 800 words. VAD runs on the mini answer recordings when
present, else on generated speech-like audio at 24 kHz (the rate Qwen2.5-Omni speaks at).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from reward_fns import compute_score, voiced_seconds
from reward_fns.protocol import resample
from verl_audio.contract import label_to_word

DEFAULT_ALR = Path(__file__).resolve().parents[1].parent / "shared" / "alr"


def text_cases(alr_dir: Path, n: int = 606) -> list[tuple[str, str, dict]]:
    """(response, ground truth, extra_info) triples of ALR length."""
    dev = alr_dir / "dev.jsonl"
    if dev.is_file():
        rows = [json.loads(line) for line in dev.read_text().splitlines() if line.strip()]
        pairs = [(row["answer"], label_to_word(row["label"])) for row in rows]
    else:
        rng = random.Random(0)
        vocab = "the premise conclusion therefore because entailed major minor if not so thus".split()
        pairs = [
            (" ".join(rng.choice(vocab) for _ in range(800)), rng.choice(["entailed", "not-entailed"]))
            for _ in range(n)
        ]
    cases = []
    for text, word in pairs:
        info = {"output_modality": "text", "ref_text_words": len(text.split())}
        cases.append((f"<think>{text}</think>\n<answer>{word}</answer>", word, info))
    return cases


def rate(fn: Callable[[], object], items: int, seconds: float) -> float:
    """Best of several timed rounds, in items per second."""
    rounds, deadline = [], time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(rounds) < 3:
        start = time.perf_counter()
        fn()
        rounds.append(items / (time.perf_counter() - start))
    return max(rounds)


def speech_like(seconds: float, sr: int) -> np.ndarray:
    """Voiced harmonic bursts (140 Hz glide, 4 Hz syllable envelope) separated by pauses."""
    t = np.arange(int(seconds * sr)) / sr
    phase = 2 * np.pi * np.cumsum(140 + 20 * np.sin(2 * np.pi * 0.5 * t)) / sr
    wave = sum(np.sin(k * phase) / k for k in range(1, 20))
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 4 * t)) * (np.sin(2 * np.pi * 0.2 * t) > -0.5)
    return (0.3 * wave * envelope / np.abs(wave).max()).astype(np.float32)


def audio_sets(alr_dir: Path) -> list[tuple[str, list[tuple[np.ndarray, int]]]]:
    """The mini answer recordings when present, and always generated speech-like audio at 24 kHz."""
    sets = []
    wavs = sorted((alr_dir / "mini").glob("dev/*/answer_*.wav"))
    if wavs:
        import soundfile as sf

        sets.append(("mini answer recordings", [sf.read(w, dtype="float32") for w in wavs]))
    sets.append(("generated speech-like audio", [(speech_like(60.0, 24000), 24000)]))
    return sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alr-dir", type=Path, default=DEFAULT_ALR)
    parser.add_argument("--seconds", type=float, default=3.0, help="timing budget per measurement")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core

    cases = text_cases(args.alr_dir)
    words = statistics.mean(c[2]["ref_text_words"] for c in cases)
    chars = statistics.mean(len(c[0]) for c in cases)
    print(f"text responses: {len(cases)}, mean {words:.0f} words, {chars:.0f} chars")
    for preset in ("soundmind", "answer_only"):

        def score_all(p: str = preset) -> None:
            for response, truth, info in cases:
                compute_score("alr", response, truth, info, preset=p)

        per_s = rate(score_all, len(cases), args.seconds)
        print(f"compute_score ({preset}): {per_s:,.0f} responses/s on one core (target >= 10,000)")

    adversarial = {
        "100 KB of <think>": "<think>" * 14_000,
        "4,000 answer blocks": "<answer>entailed</answer>" * 4_000,
        "100 KB of <": "<" * 100_000,
        "100 KB binary junk": bytes(random.Random(0).getrandbits(8) for _ in range(100_000)).decode("latin-1"),
        "valid, 100 KB reasoning": "<think>" + "because " * 12_000 + "</think><answer>entailed</answer>",
    }
    for name, text in adversarial.items():
        times = []
        for _ in range(20):
            start = time.perf_counter()
            compute_score("alr", text, 1, {"ref_text_words": 800})
            times.append(time.perf_counter() - start)
        median, worst = statistics.median(times) * 1e3, max(times) * 1e3
        print(f"adversarial input, {name}: median {median:.2f} ms, max {worst:.2f} ms per call (limit 5 ms)")
    for source, audios in audio_sets(args.alr_dir):
        total = sum(a.size / sr for a, sr in audios)
        at_16k = [(resample(a, sr, 16000), 16000) for a, sr in audios]
        for label, batch in (("incl. resampling to 16 kHz", audios), ("VAD alone, 16 kHz input", at_16k)):
            speed = rate(lambda b=batch: [voiced_seconds(a, sr) for a, sr in b], 1, args.seconds) * total
            print(f"VAD on {source} ({total:.0f} s, {label}): {speed:,.0f} x real time (target >= 200)")

if __name__ == "__main__":
    main()
