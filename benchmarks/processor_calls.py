"""The processor work verl's agent loop does per prompt, with and without the feature cache.

    python benchmarks/processor_calls.py [--seconds 100] [--n 8] [--prompts 4]

verl's agent loop calls the processor twice per rollout request (prompt tokens, then the multimodal
inputs) and handles each of the ``rollout.n`` copies of a prompt on its own: 2n calls per prompt on the
same clip. This times those calls on a tiny Omni's processor for ``--prompts`` distinct clips of
``--seconds`` each, once with the stock Whisper extractor and once with ``CachingWhisperFeatureExtractor``
(what ``load_omni_processor`` gives), checks that both give identical features and prints the figures.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import WhisperFeatureExtractor

from verl_audio.models.audio_features import SAMPLING_RATE, load_omni_processor
from verl_audio.models.tiny import build_tiny_omni


def agent_loop_calls(processor, clips: list[np.ndarray], n: int) -> tuple[float, list[torch.Tensor]]:
    """Seconds for 2n processor calls per clip (the agent loop's pattern) and the features of each clip."""
    features = []
    start = time.perf_counter()
    for audio in clips:
        messages = [{"role": "user", "content": [{"type": "audio", "audio": audio}, {"type": "text", "text": "?"}]}]
        text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        for _ in range(2 * n):
            out = processor(text=[text], audio=[audio], sampling_rate=SAMPLING_RATE, return_tensors="pt")
        features.append(out["input_features"])
    return time.perf_counter() - start, features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=100.0, help="clip length (ALR questions: 40-110 s)")
    parser.add_argument("--n", type=int, default=8, help="rollout.n")
    parser.add_argument("--prompts", type=int, default=4, help="distinct clips")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    clips = [(rng.standard_normal(int(args.seconds * SAMPLING_RATE)) * 0.1).astype(np.float32)
             for _ in range(args.prompts)]
    with tempfile.TemporaryDirectory() as tmp:
        cached = load_omni_processor(build_tiny_omni(Path(tmp) / "tiny"))
        plain = load_omni_processor(Path(tmp) / "tiny")
        plain.feature_extractor = WhisperFeatureExtractor.from_dict(cached.feature_extractor.to_dict())
        plain_s, plain_feats = agent_loop_calls(plain, clips, args.n)
        cached_s, cached_feats = agent_loop_calls(cached, clips, args.n)
    if not all(torch.equal(a, b) for a, b in zip(plain_feats, cached_feats, strict=True)):
        raise SystemExit("cached features differ from the stock extractor's")
    calls = 2 * args.n * args.prompts
    print(f"{args.prompts} clips of {args.seconds:g} s, rollout.n={args.n}: {calls} processor calls")
    print(f"stock extractor:   {plain_s:.2f} s ({1000 * plain_s / calls:.1f} ms per call)")
    print(f"caching extractor: {cached_s:.2f} s ({1000 * cached_s / calls:.1f} ms per call)")
    print(f"speed-up: {plain_s / cached_s:.1f}x, features identical")


if __name__ == "__main__":
    main()
