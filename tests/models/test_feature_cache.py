"""CachingWhisperFeatureExtractor: the processor's features computed once per distinct call, never shared."""

from __future__ import annotations

import json
import pickle
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import WhisperFeatureExtractor

from verl_audio.models.audio_features import (
    _CACHES,
    CachingWhisperFeatureExtractor,
    extract_audio_features,
    load_omni_processor,
    whole_audio_feature_extractor,
)
from verl_audio.models.families import QWEN2_5_OMNI


def clip(seconds: float, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(int(seconds * 16_000)) * 0.1).astype(np.float32)


@pytest.fixture()
def extractor() -> CachingWhisperFeatureExtractor:
    return whole_audio_feature_extractor()


def stock(extractor: WhisperFeatureExtractor) -> WhisperFeatureExtractor:
    return WhisperFeatureExtractor.from_dict(extractor.to_dict())


def test_cached_features_equal_the_stock_extractor_bit_for_bit(extractor) -> None:
    plain = stock(extractor)
    assert type(plain) is WhisperFeatureExtractor
    for clips in ([clip(2.3, 0)], [clip(0.4, 1), clip(3.1, 2)], [clip(2.3, 0)]):
        for _ in range(2):  # the second call is answered by the cache
            got, want = extract_audio_features(extractor, clips), extract_audio_features(plain, clips)
            assert torch.equal(got["input_features"], want["input_features"])
            assert torch.equal(got["feature_attention_mask"], want["feature_attention_mask"])
    stats = _CACHES[extractor].stats()
    assert stats["misses"] == 2 and stats["hits"] == 4  # two distinct calls: the first one came back twice more


def test_options_and_content_are_part_of_the_key(extractor) -> None:
    a = clip(1.0, 3)
    short = extractor(a, sampling_rate=16_000, padding="max_length", max_length=16_000, return_tensors="pt")
    longer = extractor(a, sampling_rate=16_000, padding="max_length", max_length=32_000, return_tensors="pt")
    assert short["input_features"].shape[-1] == 100 and longer["input_features"].shape[-1] == 200
    b = a.copy()
    b[-1] += 0.5  # one sample differs
    other = extractor(b, sampling_rate=16_000, padding="max_length", max_length=16_000, return_tensors="pt")
    assert not torch.equal(other["input_features"], short["input_features"])


def test_callers_get_copies(extractor) -> None:
    a = clip(1.5, 4)
    first = extract_audio_features(extractor, [a])
    expected = first["input_features"].clone()
    first["input_features"].zero_()
    first["feature_attention_mask"][:] = 0
    again = extract_audio_features(extractor, [a])
    assert torch.equal(again["input_features"], expected) and int(again["feature_attention_mask"].sum()) == 150
    as_numpy = extractor(a, sampling_rate=16_000, return_attention_mask=True)
    as_numpy["input_features"][0][:] = 7.0
    assert not np.any(extractor(a, sampling_rate=16_000, return_attention_mask=True)["input_features"][0] == 7.0)


def test_concurrent_callers_compute_once(extractor) -> None:
    a = clip(4.0, 5)
    with ThreadPoolExecutor(8) as pool:
        outs = list(pool.map(lambda _: extract_audio_features(extractor, [a]), range(16)))
    assert all(torch.equal(o["input_features"], outs[0]["input_features"]) for o in outs)
    assert _CACHES[extractor].stats()["misses"] == 1


def test_dither_and_unkeyable_calls_are_not_cached(extractor) -> None:
    a = clip(1.0, 6)
    extractor(a, sampling_rate=16_000, device="cpu")
    extractor([float(x) for x in a[:1600]], sampling_rate=16_000)  # a list of floats: computed uncached
    noisy = CachingWhisperFeatureExtractor.from_dict({**extractor.to_dict(), "dither": 1.0})
    first = noisy(a, sampling_rate=16_000)["input_features"]
    second = noisy(a, sampling_rate=16_000)["input_features"]
    assert not np.array_equal(first, second) and noisy not in _CACHES
    assert _CACHES[extractor].stats()["size"] == 1


def test_the_processor_uses_it_and_saves_as_the_stock_extractor(tmp_path: Path) -> None:
    from verl_audio.models.tiny import build_tiny_omni

    processor = load_omni_processor(build_tiny_omni(tmp_path / "tiny"))
    assert isinstance(processor.feature_extractor, CachingWhisperFeatureExtractor)
    assert pickle.loads(pickle.dumps(processor)).feature_extractor.to_dict() == processor.feature_extractor.to_dict()
    processor.save_pretrained(tmp_path / "saved")
    saved = json.loads((tmp_path / "saved" / "processor_config.json").read_text())["feature_extractor"]
    assert saved["feature_extractor_type"] == "WhisperFeatureExtractor"
    assert type(WhisperFeatureExtractor.from_pretrained(tmp_path / "saved")) is WhisperFeatureExtractor


def test_the_rollout_featurizer_keeps_one_cache(extractor) -> None:
    """AudioFeaturizer has its own per-clip LRU: it must not fill the extractor's cache as well."""
    from verl_audio.rollout.features import AudioFeaturizer

    featurizer = AudioFeaturizer(QWEN2_5_OMNI, extractor, audio_token_id=7)
    assert type(featurizer.feature_extractor) is WhisperFeatureExtractor
    assert featurizer.feature_extractor.to_dict() == extractor.to_dict()
    featurizer.clip(clip(1.0, 7))
    featurizer.clip(clip(1.0, 7))
    assert featurizer.cache.stats()["misses"] == 1 and extractor not in _CACHES
