"""The `hf` rollout server used in-process: batching, sampling, log-probs, audio features, weights, abort."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import Qwen2_5OmniThinkerForConditionalGeneration
from verl.workers.config import RolloutConfig
from verl.workers.config.rollout import CheckpointEngineConfig

from verl_audio.models.audio_features import load_omni_processor
from verl_audio.models.families import QWEN2_5_OMNI
from verl_audio.models.tiny import build_tiny_omni
from verl_audio.rollout.features import AudioFeaturizer
from verl_audio.rollout.hf.adapter import HFServerAdapter
from verl_audio.rollout.hf.engine import AudioGenerator, GenRequest
from verl_audio.rollout.hf.server import HFRolloutServer
from verl_audio.rollout.sampling import SamplingSpec

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SR = 16_000
RESPONSE_LENGTH = 24
GREEDY = {"temperature": 0, "top_p": 1.0, "top_k": -1, "logprobs": True}


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_omni(tmp_path_factory.mktemp("hf_rollout") / "tiny")


@pytest.fixture(scope="module")
def processor(ckpt: Path) -> Any:
    return load_omni_processor(ckpt)


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """One event loop for the module: the server's asyncio primitives bind to it."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def rollout_config(**overrides: Any) -> RolloutConfig:
    kwargs: dict[str, Any] = dict(
        name="hf",
        prompt_length=256,
        response_length=RESPONSE_LENGTH,
        dtype="float32",
        tensor_model_parallel_size=1,
        engine_kwargs={"hf": {"batch_window_ms": 50, "max_batch_size": 16}},
    )
    kwargs.update(overrides)
    return RolloutConfig(**kwargs)


@pytest.fixture(scope="module")
def server(ckpt: Path) -> HFRolloutServer:
    return HFRolloutServer(rollout_config(), {"path": str(ckpt)})


def make_prompt(processor: Any, text: str, seconds: float, seed: int) -> tuple[list[int], np.ndarray]:
    """Fully expanded prompt ids (one <|AUDIO|> per audio token) and the 16 kHz clip they were built from."""
    messages = [{"role": "user", "content": [{"type": "audio", "audio": "q.wav"}, {"type": "text", "text": text}]}]
    chat = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    audio = (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * SR))).astype(np.float32)
    ids = processor(text=chat, audio=[audio], return_tensors="pt", sampling_rate=SR)["input_ids"]  # as verl calls it
    return ids[0].tolist(), audio


@pytest.fixture(scope="module")
def prompts(processor: Any) -> list[tuple[list[int], np.ndarray]]:
    """Three prompts of different text and audio lengths."""
    return [
        make_prompt(processor, "Is it entailed?", 1.0, 0),
        make_prompt(processor, "Listen carefully and tell me a long story about the sound", 2.3, 1),
        make_prompt(processor, "x", 0.4, 2),
    ]


async def generate(server: HFRolloutServer, prompt: tuple[list[int], np.ndarray], **params: Any) -> Any:
    ids, audio = prompt
    return await server.generate(
        prompt_ids=ids,
        sampling_params=params,
        request_id="r",
        audio_data=[audio],
        mm_processor_kwargs={"sampling_rate": SR},
    )


async def gather(*coros: Any) -> list[Any]:
    """Concurrent requests (inside the module's loop: gather outside a running loop would pick another)."""
    return await asyncio.gather(*coros)


def forward_logits(
    model: torch.nn.Module, processor: Any, prompt: tuple[list[int], np.ndarray], response: list[int]
) -> torch.Tensor:
    """A plain thinker forward over prompt + response with the features the actor gets (a processor call);
    returns the logits that predicted each response token."""
    ids, audio = prompt
    text = ["<|audio_bos|><|AUDIO|><|audio_eos|>"]
    feats = processor(text=text, audio=[audio], return_tensors="pt", sampling_rate=SR)
    full = torch.tensor([ids + response])
    with torch.no_grad():
        out = model(
            input_ids=full,
            attention_mask=torch.ones_like(full),
            input_features=feats["input_features"],
            feature_attention_mask=feats["feature_attention_mask"],
        )
    return out.logits[0, len(ids) - 1 : -1].float()


def test_greedy_is_deterministic_and_batched_equals_unbatched(server: HFRolloutServer, prompts: list, loop) -> None:
    async def run() -> tuple[list, list, list]:
        single = [await generate(server, p, **GREEDY) for p in prompts]
        again = [await generate(server, p, **GREEDY) for p in prompts]
        batches_before = (await server.get_stats())["batches"]
        batched = await asyncio.gather(*[generate(server, p, **GREEDY) for p in prompts])
        assert (await server.get_stats())["batches"] == batches_before + 1  # one padded batch of three
        return single, again, batched

    single, again, batched = loop.run_until_complete(run())
    for one, two, many in zip(single, again, batched, strict=True):
        assert one.token_ids == two.token_ids
        assert one.token_ids == many.token_ids
        assert len(one.token_ids) == len(one.log_probs) > 0
        np.testing.assert_allclose(one.log_probs, many.log_probs, atol=1e-5)
        assert one.stop_reason == "completed"
    assert len({tuple(o.token_ids) for o in single}) > 1  # the prompts do lead to different responses


def test_log_probs_are_the_unfiltered_tempered_distribution(server: HFRolloutServer, processor, prompts, loop) -> None:
    temperature, top_k, top_p = 0.7, 20, 0.8
    outs = loop.run_until_complete(
        gather(
            *[generate(server, p, temperature=temperature, top_k=top_k, top_p=top_p, logprobs=True) for p in prompts]
        )
    )
    for prompt, out in zip(prompts, outs, strict=True):
        logits = forward_logits(server.engine.model, processor, prompt, out.token_ids)
        tempered = (logits / temperature).log_softmax(-1)
        chosen = torch.tensor(out.token_ids)
        expected = tempered.gather(-1, chosen[:, None]).squeeze(-1)
        assert (expected - torch.tensor(out.log_probs)).abs().max().item() <= 1e-4
        # every token was allowed by top-k and by the nucleus, which rank the ids the sampler may draw (placeholders
        # and ids past the tokenizer are banned after the log-probs are taken); this forward is unbatched and the
        # server's was batched, so a token counts as above the chosen one only beyond the tolerance above
        chosen_logp = tempered.gather(-1, chosen[:, None])
        allowed = torch.ones(tempered.shape[-1], dtype=torch.bool)
        allowed[sorted(server.engine.banned_ids)] = False
        above = (tempered > chosen_logp + 1e-4) & allowed
        assert int(above.sum(-1).max()) < top_k
        probs = (tempered.masked_fill(~allowed, float("-inf"))).softmax(-1)  # the distribution top-p cuts
        mass_above = (probs * above).sum(-1)
        assert float(mass_above.max()) <= top_p + 1e-6


def test_top_k_one_equals_greedy_and_temperature_matters(server: HFRolloutServer, prompts, loop) -> None:
    async def run() -> tuple[Any, Any, list]:
        greedy = await generate(server, prompts[1], **GREEDY)
        top1 = await generate(server, prompts[1], temperature=1.0, top_k=1, logprobs=True)
        hot = await asyncio.gather(*[generate(server, prompts[1], temperature=5.0) for _ in range(3)])
        return greedy, top1, hot

    greedy, top1, hot = loop.run_until_complete(run())
    assert top1.token_ids == greedy.token_ids
    # log-probs are of the tempered distribution, not of the one-token top-k distribution (which would be 0)
    assert max(top1.log_probs) < 0
    assert any(o.token_ids != greedy.token_ids for o in hot)
    assert all(o.log_probs is None for o in hot)  # not asked for


def test_placeholder_ids_are_never_sampled(ckpt: Path, processor, prompts) -> None:
    """A model that all but insists on <|AUDIO|> / <|IMAGE|> still never emits them, nor ids past the tokenizer;
    log-probs stay unmasked."""
    thinker = json.loads((ckpt / "config.json").read_text())["thinker_config"]
    keys = ("audio_token_index", "image_token_index", "video_token_index", "audio_start_token_id",
            "audio_end_token_id", "vision_start_token_id", "vision_end_token_id")
    placeholders = {thinker[k] for k in keys}
    gen = AudioGenerator(str(ckpt))
    vocab = gen.model.lm_head.out_features
    past_tokenizer = set(range(len(processor.tokenizer), vocab))
    assert past_tokenizer  # the small vocabulary reserves rows past its tokenizer
    assert placeholders == QWEN2_5_OMNI.placeholder_ids(gen.model.config, processor.tokenizer, vocab)
    assert gen.banned_ids == placeholders | past_tokenizer
    audio_id, image_id = thinker["audio_token_index"], thinker["image_token_index"]
    head = gen.model.lm_head
    biased = torch.nn.Linear(head.in_features, head.out_features, bias=True)
    biased.weight = head.weight
    with torch.no_grad():
        biased.bias.zero_()
        biased.bias[audio_id], biased.bias[image_id] = 40.0, 30.0
    gen.model.lm_head = biased

    featurizer = AudioFeaturizer(QWEN2_5_OMNI, processor.feature_extractor, gen.audio_token_id)
    requests = []
    for prompt in prompts:
        clips = featurizer.prepare(prompt[0], [prompt[1]])
        requests.append(GenRequest(prompt[0], clips, SamplingSpec(max_tokens=8, temperature=0, logprobs=True)))
        requests += [GenRequest(prompt[0], clips, SamplingSpec(8, 1.0, logprobs=True, ignore_eos=True))] * 3
    results = gen.generate(requests)
    for request, result in zip(requests, results, strict=True):
        prompt = next(p for p in prompts if p[0] == request.prompt_ids)
        logits = forward_logits(gen.model, processor, prompt, result.token_ids)
        assert int(logits[0].argmax()) == audio_id  # unbanned, the model would emit <|AUDIO|>
        assert not gen.banned_ids & set(result.token_ids)
        temperature = request.spec.temperature or 1.0
        expected = (logits / temperature).log_softmax(-1).gather(-1, torch.tensor(result.token_ids)[:, None])
        np.testing.assert_allclose(result.log_probs, expected.squeeze(-1).numpy(), atol=1e-4)
        assert max(result.log_probs) < -20  # the mass sits on the placeholders: the full distribution's log-probs


def test_token_budget_and_stop_tokens(server: HFRolloutServer, prompts, loop) -> None:
    async def run() -> dict[str, Any]:
        return {
            "default": await generate(server, prompts[0], **GREEDY),
            "five": await generate(server, prompts[0], max_tokens=5, **GREEDY),
            "one": await generate(server, prompts[0], max_new_tokens=1, **GREEDY),
        }

    out = loop.run_until_complete(run())
    full = out["default"].token_ids
    assert len(full) == RESPONSE_LENGTH and out["default"].extra_fields["finish_reason"] == "length"
    assert out["five"].token_ids == full[:5]
    assert out["one"].token_ids == full[:1]

    # stop at eos: make a token the greedy response produces an end-of-sequence token
    stop = full[3]
    first = full.index(stop)
    saved = server.engine.eos_ids
    server.engine.eos_ids = {stop}
    try:
        ended = loop.run_until_complete(generate(server, prompts[0], **GREEDY))
        ignored = loop.run_until_complete(generate(server, prompts[0], ignore_eos=True, **GREEDY))
    finally:
        server.engine.eos_ids = saved
    assert ended.token_ids == full[: first + 1]  # the eos token is part of the response, as with vLLM
    assert ended.extra_fields["finish_reason"] == "stop" and ended.stop_reason == "completed"
    assert ignored.token_ids == full
    by_request = loop.run_until_complete(generate(server, prompts[0], stop_token_ids=[stop], **GREEDY))
    assert by_request.token_ids == full[: first + 1]


def test_features_computed_once_for_n_copies(server: HFRolloutServer, processor, loop) -> None:
    prompt = make_prompt(processor, "A fresh clip", 1.7, 99)
    n = 4

    async def run() -> tuple[dict, dict, list]:
        before = await server.get_stats()
        outs = await asyncio.gather(*[generate(server, prompt, temperature=1.0, logprobs=True) for _ in range(n)])
        return before, await server.get_stats(), outs

    before, after, outs = loop.run_until_complete(run())
    feats_before, feats_after = before["feature_cache"], after["feature_cache"]
    assert feats_after["misses"] - feats_before["misses"] == 1
    assert feats_after["hits"] - feats_before["hits"] == n - 1
    # the audio encoder ran once as well: one miss, the other copies reuse its output within the batch
    assert after["embed_cache"]["misses"] - before["embed_cache"]["misses"] == 1
    assert len({tuple(o.token_ids) for o in outs}) > 1  # still n independent samples


def test_audio_placeholder_mismatch_is_a_clear_error(server: HFRolloutServer, prompts, loop) -> None:
    ids, audio = prompts[0]
    audio_id = server.engine.audio_token_id
    one_less = list(ids)
    one_less.remove(audio_id)
    with pytest.raises(ValueError, match="placeholders"):
        loop.run_until_complete(generate(server, (one_less, audio), **GREEDY))
    no_audio_ids = [t for t in ids if t != audio_id]
    with pytest.raises(ValueError, match="placeholders"):
        loop.run_until_complete(generate(server, (no_audio_ids, audio), **GREEDY))
    with pytest.raises(ValueError, match="placeholders"):  # placeholders but no audio
        loop.run_until_complete(server.generate(prompt_ids=ids, sampling_params=GREEDY, request_id="x"))
    with pytest.raises(ValueError, match="sampling_rate"):
        loop.run_until_complete(
            server.generate(ids, GREEDY, "x", audio_data=[audio], mm_processor_kwargs={"sampling_rate": 8000})
        )
    with pytest.raises(ValueError, match="unsupported sampling params"):
        loop.run_until_complete(generate(server, prompts[0], best_of=2, **GREEDY))
    # the server still serves afterwards
    assert loop.run_until_complete(generate(server, prompts[0], max_tokens=2, **GREEDY)).token_ids


class _LocalHandle:
    """Stands in for a Ray actor handle: ``handle.method.remote(...)`` awaits the server's coroutine."""

    def __init__(self, target: Any) -> None:
        self._target = target

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._target, name)
        return type("M", (), {"remote": staticmethod(lambda *a, **k: method(*a, **k))})()


class _ModelConfig:
    """What the adapter's base class accepts as an already-built model config."""


def test_weight_update_makes_generation_follow_new_weights(server, ckpt, tmp_path, prompts, loop, monkeypatch) -> None:
    other = build_tiny_omni(tmp_path / "other", seed=1)
    new_weights = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(other, dtype=torch.float32).state_dict()
    reference = AudioGenerator(other)
    old = loop.run_until_complete(generate(server, prompts[1], **GREEDY))

    config = rollout_config(checkpoint_engine=CheckpointEngineConfig(update_weights_bucket_megabytes=0))
    drained = []

    def weights() -> Iterator[tuple[str, torch.Tensor]]:
        for name, tensor in new_weights.items():
            drained.append(name)
            yield name, tensor

    # a rank that is not its replica's first drains the generator but sends nothing
    monkeypatch.setenv("RANK", "1")
    follower = HFServerAdapter(rollout_config(tensor_model_parallel_size=2), _ModelConfig(), None)
    assert (follower.replica_rank, follower.rollout_rank, follower.has_server) == (0, 1, False)
    loop.run_until_complete(follower.update_weights(weights(), global_steps=7))
    assert len(drained) == len(new_weights)
    assert loop.run_until_complete(generate(server, prompts[1], **GREEDY)).token_ids == old.token_ids

    monkeypatch.setenv("RANK", "0")
    leader = HFServerAdapter(config, _ModelConfig(), None)
    leader.server_handle = _LocalHandle(server)
    try:
        loop.run_until_complete(leader.update_weights(weights(), global_steps=7))
        new = loop.run_until_complete(generate(server, prompts[1], **GREEDY))
        assert new.extra_fields["global_steps"] == 7
        assert new.token_ids != old.token_ids
        # the updated server generates what a fresh model of the new checkpoint generates
        clips = server.featurizer.prepare(prompts[1][0], [prompts[1][1]])
        spec = SamplingSpec(max_tokens=RESPONSE_LENGTH, temperature=0)
        assert new.token_ids == reference.generate([GenRequest(prompts[1][0], clips, spec)])[0].token_ids
        assert len(server.engine.embed_cache) == 1  # encoder outputs of the old weights were dropped
    finally:  # put the original weights back for the other tests
        original = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(ckpt, dtype=torch.float32).state_dict()
        loop.run_until_complete(server.update_weights(list(original.items())))
        report = loop.run_until_complete(server.finish_weight_update(None))
        assert report["missing"] == []
    with pytest.raises(KeyError, match="matches no parameter"):
        loop.run_until_complete(server.update_weights([("model.no_such.weight", torch.zeros(1))]))


def test_abort_returns_partial_output_and_resume_admits_again(server: HFRolloutServer, prompts, loop) -> None:
    async def run() -> tuple[Any, dict, Any, Any]:
        long = asyncio.ensure_future(generate(server, prompts[0], max_tokens=20_000, ignore_eos=True, **GREEDY))
        await asyncio.sleep(0.5)
        report = await server.abort_all_requests(reject_request=True)
        partial = await long
        rejected = await generate(server, prompts[0], **GREEDY)
        await server.resume_generation()
        await server.sleep()  # CPU: nothing to free, keeps serving
        await server.wake_up()
        after = await generate(server, prompts[0], max_tokens=3, **GREEDY)
        return partial, report, rejected, after

    # a hang guard, not a speed check: abort must end the 20,000-token request
    partial, report, rejected, after = loop.run_until_complete(asyncio.wait_for(run(), timeout=300))
    assert partial.stop_reason == "aborted" and 0 < len(partial.token_ids) < 20_000
    assert len(partial.log_probs) == len(partial.token_ids)
    assert report == {"aborted_count": 1, "request_ids": ["r"]}
    assert rejected.stop_reason == "aborted" and rejected.token_ids == []
    assert after.stop_reason == "completed" and len(after.token_ids) == 3


def test_concurrent_requests_batch_up_to_max_batch_size(server: HFRolloutServer, prompts, loop) -> None:
    """24 concurrent greedy requests run in batches of at most 16 and answer as they do one at a time.
    (Tokens/s one at a time vs. batched: `benchmarks/rollout_backends.py`.)"""
    requests = [p for p in prompts for _ in range(8)]

    async def run() -> tuple[list, list]:
        alone = [await generate(server, p, max_tokens=8, ignore_eos=True, **GREEDY) for p in prompts]
        together = await asyncio.gather(*[generate(server, p, max_tokens=8, ignore_eos=True, **GREEDY)
                                          for p in requests])  # fmt: skip
        return alone, together

    alone, together = loop.run_until_complete(run())
    for i, out in enumerate(together):
        assert out.token_ids == alone[i // 8].token_ids, i  # batching does not change greedy answers
    stats = loop.run_until_complete(server.get_stats())
    assert stats["max_batch"] == 16  # 24 concurrent requests, capped by max_batch_size
