"""The `hf` backend's pure parts: sampling params, top-k/top-p, log-probs, the feature cache, its options."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from verl_audio.content_cache import LRUCache, audio_key
from verl_audio.rollout.hf.config import HFRolloutOptions
from verl_audio.rollout.sampling import (
    BatchSampler,
    SamplingSpec,
    filter_top_k_top_p,
    parse_sampling_params,
    sample_step,
)

LENGTHS = {"prompt_length": 100, "response_length": 50, "max_model_len": 160}


def test_max_tokens_follow_vllm_defaults_and_limits() -> None:
    assert parse_sampling_params({}, 30, **LENGTHS).max_tokens == 50  # response_length
    assert parse_sampling_params({}, 120, **LENGTHS).max_tokens == 30  # prompt + response budget
    assert parse_sampling_params({}, 155, **LENGTHS).max_tokens == 1  # budget spent: vLLM still allows one
    assert parse_sampling_params({}, 100, **{**LENGTHS, "max_model_len": 120}).max_tokens == 20  # context left
    assert parse_sampling_params({"max_tokens": 7}, 30, **LENGTHS).max_tokens == 7
    assert parse_sampling_params({"max_new_tokens": 500}, 30, **LENGTHS).max_tokens == 130  # clamped to context
    with pytest.raises(ValueError, match="no room"):
        parse_sampling_params({}, 160, **LENGTHS)


def test_sampling_params_are_read_and_checked() -> None:
    spec = parse_sampling_params(
        {"temperature": 0, "top_k": -1, "top_p": 1.0, "repetition_penalty": 1.0, "logprobs": False}, 10, **LENGTHS
    )
    assert spec.greedy and spec.top_k == 0 and not spec.logprobs
    spec = parse_sampling_params({"stop_token_ids": [3, 4], "skip_special_tokens": True}, 10, **LENGTHS)
    assert spec.stop_token_ids == (3, 4)
    for bad, match in [({"top_p": 0}, "top_p"), ({"temperature": -1}, "temperature"), ({"n": 4}, "unsupported")]:
        with pytest.raises(ValueError, match=match):
            parse_sampling_params(bad, 10, **LENGTHS)


def test_top_k_top_p_keep_the_right_tokens() -> None:
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.5, 0.3, 0.15, 0.05]])
    logits = probs.log()[:, [2, 0, 3, 1]]  # shuffled: tokens 1, 3, 0, 2 have probs 0.5, 0.3, 0.15, 0.05
    kept = filter_top_k_top_p(logits, torch.tensor([2, 0]), torch.tensor([1.0, 0.7])).isfinite()
    assert kept[0].tolist() == [False, True, False, True]  # top-2
    assert kept[1].tolist() == [False, True, False, True]  # 0.5 + 0.3 covers 0.7
    tiny_p = filter_top_k_top_p(logits[:1], torch.tensor([0]), torch.tensor([0.01])).isfinite()
    assert tiny_p.tolist() == [[False, True, False, False]]  # the most likely token always stays


def test_sample_step_log_probs_are_tempered_and_unfiltered() -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, 11)
    specs = [
        SamplingSpec(max_tokens=1, temperature=0.0),
        SamplingSpec(1, 0.5, top_k=1),
        SamplingSpec(1, 2.0, top_p=0.5),
    ]
    tokens, logps = sample_step(logits, BatchSampler.from_specs(specs, torch.device("cpu")))
    assert tokens[0] == logits[0].argmax() and tokens[1] == logits[1].argmax()
    temps = torch.tensor([1.0, 0.5, 2.0])[:, None]
    expected = (logits / temps).log_softmax(-1).gather(-1, tokens[:, None]).squeeze(-1)
    torch.testing.assert_close(logps, expected)


def test_repetition_penalty_steers_greedy_away_from_seen_tokens() -> None:
    logits = torch.tensor([[2.0, 1.9, 0.0]])
    sampler = BatchSampler.from_specs([SamplingSpec(1, 0.0, repetition_penalty=1.5)], torch.device("cpu"))
    seen = torch.tensor([[True, False, False]])
    tokens, logps = sample_step(logits, sampler, seen=seen)
    assert tokens.tolist() == [1]
    torch.testing.assert_close(logps, logits.log_softmax(-1)[:, 1])  # log-probs ignore the penalty


def test_banned_ids_are_never_chosen_and_log_probs_stay_unmasked() -> None:
    torch.manual_seed(0)
    logits = torch.randn(4, 12)
    logits[:, 5] += 30.0  # the model all but insists on id 5, then on id 7
    logits[:, 7] += 20.0
    specs = [
        SamplingSpec(1, 0.0),
        SamplingSpec(1, 1.0),
        SamplingSpec(1, 0.7, top_k=2, top_p=0.9),
        SamplingSpec(1, 1.0, repetition_penalty=1.3),
    ]
    sampler = BatchSampler.from_specs(specs, torch.device("cpu"), banned=[7, 5, 5])
    assert sampler.banned.tolist() == [5, 7] and sampler.select(torch.tensor([1])).banned.tolist() == [5, 7]
    assert BatchSampler.from_specs(specs, torch.device("cpu")).banned is None
    gen = torch.Generator().manual_seed(0)
    seen = torch.zeros(4, 12, dtype=torch.bool)
    temps = torch.tensor([1.0, 1.0, 0.7, 1.0])[:, None]
    unmasked = (logits / temps).log_softmax(-1)
    for _ in range(200):
        tokens, logps = sample_step(logits, sampler, gen, seen)
        assert not set(tokens.tolist()) & {5, 7}
        # the log-probs of the full tempered distribution, as the actor recomputes them: very unlikely tokens
        torch.testing.assert_close(logps, unmasked.gather(-1, tokens[:, None]).squeeze(-1))
        assert float(logps.max()) < -15
    masked = logits.clone()
    masked[:, [5, 7]] = float("-inf")
    assert tokens[0] == masked[0].argmax()  # greedy takes the best allowed token


def test_concurrent_askers_share_one_computation() -> None:
    cache: LRUCache[int] = LRUCache(2)
    calls = []

    def compute() -> int:
        calls.append(1)
        time.sleep(0.2)
        return 42

    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get_or_compute("k", compute))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [42] * 4 and len(calls) == 1
    assert cache.stats() == {"hits": 3, "misses": 1, "size": 1, "capacity": 2}
    cache.get_or_compute("a", lambda: 1)
    cache.get_or_compute("b", lambda: 2)
    assert cache.get("k") is None and len(cache) == 2  # least recently used went first

    def fail() -> int:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        cache.get_or_compute("x", fail)
    assert cache.get_or_compute("x", lambda: 7) == 7  # a failure is not cached


def test_audio_key_depends_on_content_only() -> None:
    import numpy as np

    a = np.arange(10, dtype=np.float32)
    assert audio_key(a) == audio_key(a.copy())
    assert audio_key(a) != audio_key(a[::-1].copy())
    assert audio_key(a) != audio_key(a.astype(np.float64))


def test_options_have_defaults_and_reject_unknown_keys() -> None:
    assert HFRolloutOptions.from_engine_kwargs({}) == HFRolloutOptions()
    assert HFRolloutOptions.from_engine_kwargs({"hf": {"max_batch_size": 4}}).max_batch_size == 4
    with pytest.raises(ValueError, match="unknown rollout.engine_kwargs.hf keys"):
        HFRolloutOptions.from_engine_kwargs({"hf": {"max_batch": 4}})
    with pytest.raises(ValueError, match="device"):
        HFRolloutOptions(device="tpu")
