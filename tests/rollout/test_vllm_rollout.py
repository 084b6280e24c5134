"""verl's `vllm` rollout serving the tiny Omni on vLLM's CPU build, through Ray, by its registry name.

One server for the module (vLLM's engine takes tens of seconds to start on 2 cores): whole audio (the
audio tokens vLLM used, for 100 s and 5 s clips), rollout log-probs against a transformers forward, greedy
tokens equal to the `hf` backend's, a weight update through the registry's adapter (verl's
``ServerAdapter`` plus the speech copy: vLLM then follows the new weights, not the old, and so does the
speech server beside it), speech for a vLLM response, and the replica's control calls. Skips without vLLM
(``VLLM=none``).
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("vllm", reason="vLLM is not installed (scripts/setup_env.sh with VLLM=none)")

import ray  # noqa: E402
from transformers import Qwen2_5OmniThinkerForConditionalGeneration  # noqa: E402
from verl.workers.config import RolloutConfig  # noqa: E402
from verl.workers.rollout.base import get_rollout_class  # noqa: E402
from verl.workers.rollout.replica import RolloutReplicaRegistry  # noqa: E402

from verl_audio.models.audio_features import AUDIO_TOKENS_PER_SECOND, load_omni_processor  # noqa: E402
from verl_audio.models.tiny import build_tiny_omni  # noqa: E402
from verl_audio.rollout.hf.server import HFRolloutServer  # noqa: E402
from verl_audio.rollout.speech_endpoints import speech_actor_name  # noqa: E402
from verl_audio.rollout.vllm.adapter import OmniVLLMServerAdapter  # noqa: E402
from verl_audio.rollout.vllm.replica import OmniVLLMReplica
from verl_audio.rollout.vllm.server import collapse_runs  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SR = 16_000
GREEDY = {"temperature": 0, "top_p": 1.0, "top_k": -1, "logprobs": True}
SAMPLED = {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "logprobs": True}
RESPONSE = 8
#: speech on: the replica starts speech_server_0 beside vLLM (greedy talker, a few codec tokens)
SPEECH = {"enable": True, "talker_do_sample": False, "talker_max_new_tokens": 20, "device": "cpu"}


@ray.remote(num_gpus=1, num_cpus=0)
class _Worker:
    """Stands in for an actor worker: the replica asks where it runs and which (logical) GPU it holds."""


class _ModelConfig:
    """An already-built model config, as verl's adapter base class takes it."""


def _config(**overrides: Any) -> RolloutConfig:
    base = dict(
        name="vllm", prompt_length=4096, response_length=RESPONSE, dtype="float32", tensor_model_parallel_size=1,
        enable_sleep_mode=False, free_cache_engine=False, enforce_eager=True, logprobs_mode="raw_logprobs",
        max_model_len=4096, load_format="auto", engine_kwargs={"hf": {"batch_window_ms": 100}, "speech": SPEECH},
    )
    return RolloutConfig(**{**base, **overrides})


def _prompt(processor: Any, text: str, seconds: float, seed: int) -> tuple[list[int], np.ndarray]:
    """Fully expanded prompt ids (as verl's agent loop sends them) and the clip."""
    messages = [{"role": "user", "content": [{"type": "audio", "audio": "q.wav"}, {"type": "text", "text": text}]}]
    chat = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    audio = (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * SR))).astype(np.float32)
    ids = processor(text=chat, audio=[audio], return_tensors="pt", sampling_rate=SR)["input_ids"]
    return ids[0].tolist(), audio


def _token_log_probs(model: Any, processor: Any, prompt: tuple[list[int], np.ndarray], response: list[int],
                     temperature: float = 1.0) -> torch.Tensor:
    """log_softmax(logits / T) of each response token under a plain thinker forward (what verl's actor computes)."""
    ids, audio = prompt
    feats = processor(text=["<|audio_bos|><|AUDIO|><|audio_eos|>"], audio=[audio], return_tensors="pt", sampling_rate=SR)
    full = torch.tensor([ids + response])
    with torch.no_grad():
        logits = model(input_ids=full, attention_mask=torch.ones_like(full), input_features=feats["input_features"],
                       feature_attention_mask=feats["feature_attention_mask"]).logits[0, len(ids) - 1: -1].float()
    return (logits / temperature).log_softmax(-1)[torch.arange(len(response)), torch.tensor(response)]


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("vllm_rollout")
    return build_tiny_omni(root / "tiny", head_dim=32, talker=True), build_tiny_omni(root / "other", head_dim=32, seed=1)


@pytest.fixture(scope="module")
def processor(ckpts: tuple[Path, Path]) -> Any:
    return load_omni_processor(ckpts[0])


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def replica(ckpts: tuple[Path, Path], loop: asyncio.AbstractEventLoop) -> Iterator[OmniVLLMReplica]:
    """One vLLM server (Ray actor) on a fresh local Ray with one logical GPU slot."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=4, num_gpus=1, include_dashboard=False, namespace="vllm_rollout_test", log_to_driver=False,
             runtime_env={"env_vars": {"VLLM_CPU_KVCACHE_SPACE": "1"}})
    replica = RolloutReplicaRegistry.get("vllm")(replica_rank=0, config=_config(), model_config={"path": str(ckpts[0])},
                                                 gpus_per_node=1)
    loop.run_until_complete(replica.init_hybrid(types.SimpleNamespace(workers=[_Worker.remote()])))
    yield replica
    ray.shutdown()


async def _ask(server: Any, prompt: tuple[list[int], np.ndarray], request_id: str, params: dict) -> Any:
    return await server.generate.remote(prompt_ids=prompt[0], sampling_params=dict(params), request_id=request_id,
                                        audio_data=[prompt[1]], mm_processor_kwargs={"sampling_rate": SR})


async def _gather(*coros: Any) -> list[Any]:
    """Concurrent requests inside the module's loop (gather outside a running loop would pick another)."""
    return await asyncio.gather(*coros)


def test_collapse_runs_keeps_one_token_per_run() -> None:
    assert collapse_runs([1, 7, 7, 7, 2, 7, 3, 7, 7], 7) == [1, 7, 2, 7, 3, 7]
    assert collapse_runs([], 7) == []


def test_registry_name_gives_the_omni_replica(replica: OmniVLLMReplica) -> None:
    assert isinstance(replica, OmniVLLMReplica)
    assert replica.server_address.split(":")[0] == ray.util.get_node_ip_address()


def test_audio_reaches_vllm_whole_and_log_probs_match_the_actor(replica, ckpts, processor, loop) -> None:
    long, short = _prompt(processor, "Is it entailed?", 100.0, 0), _prompt(processor, "x", 5.0, 1)
    audio_id = processor.tokenizer.convert_tokens_to_ids(processor.audio_token)
    outs = loop.run_until_complete(_gather(
        _ask(replica.server_handle, long, "long", GREEDY), _ask(replica.server_handle, short, "short", SAMPLED)))
    model = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(ckpts[0], dtype=torch.float32).eval()
    for (ids, audio), out, temperature in zip((long, short), outs, (1.0, 1.0)):
        sent = sum(1 for t in ids if t == audio_id)
        # the ids vLLM itself ran with, read back from its output
        assert out.extra_fields["audio_tokens"] == sent == len(audio) // SR * AUDIO_TOKENS_PER_SECOND
        assert out.stop_reason == "completed" and len(out.token_ids) == len(out.log_probs) == RESPONSE
        ref = _token_log_probs(model, processor, (ids, audio), list(out.token_ids), temperature)
        assert torch.allclose(torch.tensor(out.log_probs), ref, atol=1e-4), (out.log_probs, ref.tolist())
    assert outs[0].extra_fields["audio_tokens"] >= 2375  # 100 s whole, not cut at 30 s


def test_greedy_tokens_equal_the_hf_backend(replica, ckpts, processor, loop) -> None:
    prompts = [_prompt(processor, "Is it entailed?", 3.0, 2), _prompt(processor, "Listen", 1.2, 3)]
    hf = HFRolloutServer(config=_config(name="hf", engine_kwargs={"hf": {"batch_window_ms": 100}}),
                         model_config={"path": str(ckpts[0])})
    for i, prompt in enumerate(prompts):
        from_vllm = loop.run_until_complete(_ask(replica.server_handle, prompt, f"g{i}", GREEDY))
        from_hf = loop.run_until_complete(hf.generate(prompt_ids=prompt[0], sampling_params=dict(GREEDY),
                                                      request_id=f"h{i}", audio_data=[prompt[1]],
                                                      mm_processor_kwargs={"sampling_rate": SR}))
        assert list(from_vllm.token_ids) == list(from_hf.token_ids)
        assert np.allclose(from_vllm.log_probs, from_hf.log_probs, atol=1e-4)


def test_weight_update_through_verls_adapter(replica, ckpts, processor, loop, monkeypatch) -> None:
    prompt = _prompt(processor, "x", 2.0, 4)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("RAY_LOCAL_WORLD_SIZE", "1")
    adapter = get_rollout_class("vllm", "async")(config=_config(), model_config=_ModelConfig(), device_mesh=None)
    assert isinstance(adapter, OmniVLLMServerAdapter) and adapter.speaks
    old = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(ckpts[0], dtype=torch.float32).eval()
    new = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(ckpts[1], dtype=torch.float32).eval()
    # the actor's names: the thinker's own, without the checkpoint's "thinker." prefix
    loop.run_until_complete(adapter.update_weights(iter(new.state_dict().items()), global_steps=3))
    out = loop.run_until_complete(_ask(replica.server_handle, prompt, "after", SAMPLED))
    assert out.extra_fields["global_steps"] == 3
    lp = torch.tensor(out.log_probs)
    to_new = (lp - _token_log_probs(new, processor, prompt, list(out.token_ids))).abs().max().item()
    to_old = (lp - _token_log_probs(old, processor, prompt, list(out.token_ids))).abs().max().item()
    assert to_new < 1e-4 < 0.01 < to_old, (to_new, to_old)
    # the speech server's own thinker took the same tensors: it speaks from the actor's weights
    speech = ray.get_actor(speech_actor_name(0))
    held = ray.get(speech.__ray_call__.remote(lambda server: server.stage.thinker.state_dict()))
    assert held.keys() == new.state_dict().keys()
    assert all(torch.equal(held[k], v) for k, v in new.state_dict().items())
    assert ray.get(speech.speak.remote(prompt_ids=prompt[0], response_ids=list(out.token_ids), audio_data=[prompt[1]],
                                       sampling_rate=SR))["global_steps"] == 3  # fmt: skip
    # and back: the same adapter restores the first weights exactly
    loop.run_until_complete(adapter.update_weights(iter(old.state_dict().items()), global_steps=4))
    again = loop.run_until_complete(_ask(replica.server_handle, prompt, "restored", SAMPLED))
    back = (torch.tensor(again.log_probs) - _token_log_probs(old, processor, prompt, list(again.token_ids))).abs()
    assert back.max().item() < 1e-4


def test_speech_beside_vllm_equals_the_stage_on_the_same_weights(replica, ckpts, processor, loop) -> None:
    """A vLLM response spoken by speech_server_0 equals the speech stage run in-process on the checkpoint."""
    from verl_audio.rollout.speech_server import StandaloneSpeechServer

    prompt = _prompt(processor, "Is it entailed?", 1.5, 6)
    out = loop.run_until_complete(_ask(replica.server_handle, prompt, "speak", GREEDY))
    speech = ray.get_actor(speech_actor_name(0))
    assert replica.speech_server is not None
    ray.get(speech.__ray_call__.remote(lambda server: server.stage.thinker.load_state_dict(
        Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(ckpts[0], dtype=torch.float32).state_dict())))
    request = dict(prompt_ids=prompt[0], response_ids=list(out.token_ids), audio_data=[prompt[1]], sampling_rate=SR)
    remote = ray.get(speech.speak.remote(**request))
    local = StandaloneSpeechServer(str(ckpts[0]), {"speech": SPEECH}, "float32")
    local._requests = ray.get(speech.__ray_call__.remote(lambda server: server._requests)) - 1  # same seed
    here = loop.run_until_complete(local.speak(**request))
    assert remote["sampling_rate"] == here["sampling_rate"] == 24000 and remote["codec_tokens"] > 0
    np.testing.assert_allclose(remote["array"], here["array"], atol=1e-6, rtol=0)


def test_requests_leave_no_per_request_record_behind(replica, processor, loop) -> None:
    """Text-only and audio requests alike: the server keeps no entry once a request returned."""
    ids, _ = _prompt(processor, "plain text", 1.0, 7)
    text_only = [t for t in ids if t != processor.tokenizer.convert_tokens_to_ids(processor.audio_token)]
    loop.run_until_complete(_gather(
        replica.server_handle.generate.remote(prompt_ids=text_only, sampling_params=dict(GREEDY), request_id="text"),
        _ask(replica.server_handle, _prompt(processor, "z", 1.0, 8), "with_audio", GREEDY)))
    held = ray.get(replica.server_handle.__ray_call__.remote(
        lambda server: (len(server.audio_tokens_used), len(server.audio_requests))))
    assert held == (0, 0)


@ray.remote(max_concurrency=64)
class _SlowSpeechServer:
    """Takes weight buckets slowly and counts how many are being loaded at once."""

    def __init__(self) -> None:
        self.active = self.peak = 0

    async def update_weights(self, bucket: list) -> int:
        self.active += 1
        self.peak = max(self.peak, self.active)
        await asyncio.sleep(0.2)
        self.active -= 1
        return len(bucket)

    def get_peak(self) -> int:
        return self.peak


def test_speech_weight_copies_in_flight_are_bounded(replica, loop) -> None:
    """However fast the actor streams, at most MAX_BUCKETS_IN_FLIGHT buckets wait for the speech server."""
    from verl_audio.rollout.vllm.adapter import MAX_BUCKETS_IN_FLIGHT

    adapter = object.__new__(OmniVLLMServerAdapter)  # only what _tee reads: bucket size and the speech handle
    adapter.bucket_bytes, adapter._speech = 1024, _SlowSpeechServer.remote()
    weights = [(f"w{i}", torch.zeros(512)) for i in range(12)]  # 2 KB each: one bucket per tensor
    loaded: list[int] = []

    async def drain() -> list[str]:
        return [name async for name, _ in adapter._tee(iter(weights), loaded)]

    assert loop.run_until_complete(drain()) == [n for n, _ in weights]
    assert sum(loaded) == 12 and len(loaded) == 12
    assert ray.get(adapter._speech.get_peak.remote()) <= MAX_BUCKETS_IN_FLIGHT == 2


def test_replica_control_calls(replica, processor, loop) -> None:
    for call in ("sleep", "wake_up", "clear_kv_cache", "abort_all_requests", "resume_generation"):
        loop.run_until_complete(getattr(replica, call)())
    out = loop.run_until_complete(_ask(replica.server_handle, _prompt(processor, "y", 1.0, 5), "ctl", GREEDY))
    assert out.stop_reason == "completed"


def test_vllm_cpu_build_is_recognised_by_verl_and_vllm() -> None:
    from importlib.metadata import version

    from vllm.platforms import current_platform

    from verl_audio import patches

    if not patches.only_vllm_cpu_installed():
        pytest.skip("the CUDA vLLM distribution is installed")
    assert version("vllm").endswith("+cpu")  # what verl's version gates read
    assert current_platform.is_cpu()  # vLLM's own detection still sees its CPU build
