"""The audio-encoder cache on a real (tiny, random) Qwen2.5-Omni thinker, in process: a cached forward
equals an uncached one bit for bit in fp32, each distinct clip is encoded once, an unfrozen encoder
bypasses the cache, and the LRU stays within its size."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch

from verl_audio.content_cache import LRUCache
from verl_audio.models.encoder_cache import CachedAudioFeatures, EncoderStats, install, tensor_digest
from verl_audio.models.families import QWEN2_5_OMNI
from verl_audio.models.tiny import build_tiny_omni

#: seconds; the first two are over one encoder window (2 s), the third is under it
CLIP_SECONDS = (2.4, 3.1, 0.7)


@pytest.fixture(scope="module")
def omni(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_omni(tmp_path_factory.mktemp("omni"))


@pytest.fixture()
def thinker(omni: Path):
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    model = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(omni, dtype=torch.float32).eval()
    model.audio_tower.requires_grad_(False)
    return model


def _clips(seconds: tuple[float, ...] = CLIP_SECONDS, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(int(16000 * s))).astype(np.float32) for s in seconds]


@functools.cache
def _processor(omni: Path):
    from verl_audio.models.audio_features import load_omni_processor

    return load_omni_processor(omni)


def _batch(omni: Path, clips: list[np.ndarray], order: list[int]) -> dict[str, torch.Tensor]:
    """One processor call over prompts whose audio is ``clips[i]`` for i in ``order`` (repeats = GRPO copies)."""
    processor = _processor(omni)
    messages = [{"role": "user", "content": [{"type": "audio", "audio": "clip"}, {"type": "text", "text": "Heard?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return dict(processor(text=[text] * len(order), audio=[clips[i] for i in order], return_tensors="pt",
                          padding=True))


def _logits(thinker, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return thinker(**batch).logits


def _cached(thinker, capacity: int = 8, identity: str = "w") -> tuple[CachedAudioFeatures, EncoderStats]:
    stats = EncoderStats()
    original = type(thinker).get_audio_features.__get__(thinker)
    wrapper = CachedAudioFeatures(QWEN2_5_OMNI, thinker, original, LRUCache(capacity), lambda: identity, stats=stats)
    thinker.get_audio_features = wrapper
    return wrapper, stats


def test_cached_forward_is_bit_identical_and_encodes_each_clip_once(omni: Path, thinker) -> None:
    clips = _clips()
    batch = _batch(omni, clips, order=[0, 0, 1, 1, 2, 2, 0, 1])  # n copies of each prompt, as verl sends them
    reference = _logits(thinker, batch)

    wrapper, stats = _cached(thinker)
    first = _logits(thinker, batch)
    assert (stats.passes, stats.hits) == (3, 5)  # three distinct clips encoded, the copies served
    second = _logits(thinker, batch)
    assert (stats.passes, stats.hits) == (3, 13)  # nothing encoded again
    assert torch.equal(first, reference) and torch.equal(second, reference)
    assert len(wrapper.cache) == 3

    # another batch holding the same clips (other copies, other order) is served from the cache too
    other = _batch(omni, clips, order=[1, 0, 2])
    assert torch.equal(_logits(thinker, other), _logits_uncached(thinker, other))
    assert stats.passes == 3


def _logits_uncached(thinker, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    saved = thinker.__dict__.pop("get_audio_features")
    try:
        return _logits(thinker, batch)
    finally:
        thinker.get_audio_features = saved


def test_an_unfrozen_encoder_bypasses_the_cache(omni: Path, thinker) -> None:
    thinker.audio_tower.requires_grad_(True)
    batch = _batch(omni, _clips(), order=[0, 0, 1])
    wrapper, stats = _cached(thinker)
    reference = _logits_uncached(thinker, batch)
    for calls in (1, 2):
        assert torch.equal(_logits(thinker, batch), reference)
        assert (stats.passes, stats.hits) == (3 * calls, 0)  # every copy encoded, every time
    assert len(wrapper.cache) == 0


def test_the_cache_holds_at_most_its_size(omni: Path, thinker) -> None:
    clips = _clips()
    wrapper, stats = _cached(thinker, capacity=1)
    batch = _batch(omni, clips, order=[0, 1])
    reference = _logits_uncached(thinker, batch)
    assert torch.equal(_logits(thinker, batch), reference)
    assert len(wrapper.cache) == 1 and stats.passes == 2
    assert torch.equal(_logits(thinker, batch), reference)  # clip 0 was evicted by clip 1: encoded again
    assert len(wrapper.cache) == 1 and stats.passes == 3


def test_entries_belong_to_one_encoder_identity(omni: Path, thinker) -> None:
    """Another identity (other weights or precision) never reads this one's outputs."""
    batch = _batch(omni, _clips(), order=[0])
    identity = {"value": "a"}
    stats = EncoderStats()
    original = type(thinker).get_audio_features.__get__(thinker)
    thinker.get_audio_features = CachedAudioFeatures(QWEN2_5_OMNI, thinker, original, LRUCache(8), lambda: identity["value"],
                                                     stats=stats)
    _logits(thinker, batch)
    identity["value"] = "b"
    _logits(thinker, batch)
    assert stats.passes == 2
    identity["value"] = "a"
    _logits(thinker, batch)
    assert stats.passes == 2


def test_weight_digest_sees_any_change(thinker) -> None:
    before = tensor_digest(thinker.audio_tower.parameters())
    assert tensor_digest(thinker.audio_tower.parameters()) == before
    with torch.no_grad():
        next(thinker.audio_tower.parameters()).view(-1)[0] += 1e-6
    assert tensor_digest(thinker.audio_tower.parameters()) != before


def test_install_with_size_zero_encodes_every_clip(omni: Path, thinker) -> None:
    from verl_audio.models import encoder_cache

    batch = _batch(omni, _clips(), order=[0, 0])
    reference = _logits(thinker, batch)
    wrapper = install(QWEN2_5_OMNI, thinker, 0, lambda: "w")
    assert wrapper.cache is None
    before = encoder_cache.STATS.snapshot()
    assert torch.equal(_logits(thinker, batch), reference)
    assert encoder_cache.STATS.since(before)[encoder_cache.METRIC_PASSES] == 2
