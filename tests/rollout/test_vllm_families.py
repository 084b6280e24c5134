"""verl's `vllm` rollout serving the tiny Qwen2-Audio and Qwen3-Omni thinker on vLLM's CPU build, through Ray.

Per family, one server started by its registry name: a 100 s clip and a 5 s one reach vLLM whole and once
(the audio tokens vLLM itself ran with: 2,500 + 125 in 30 s windows for Qwen2-Audio, 1,300 + 65 for Qwen3-Omni),
the rollout log-probs equal a transformers forward, and after a weight update through the registry's adapter
(the actor's in-memory names: Qwen2-Audio's renamed on the way, Qwen3-Omni's experts split per expert as verl
sends them and prepacked again on vLLM's CPU build) vLLM follows the new weights. Skips without vLLM.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("vllm", reason="vLLM is not installed (scripts/setup_env.sh with VLLM=none)")

import ray  # noqa: E402
from verl.workers.config import RolloutConfig  # noqa: E402
from verl.workers.engine.fsdp.utils import unfuse_moe_params  # noqa: E402
from verl.workers.rollout.base import get_rollout_class  # noqa: E402
from verl.workers.rollout.replica import RolloutReplicaRegistry  # noqa: E402

from verl_audio.models.families import family_named  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SR = 16_000
SAMPLED = {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "logprobs": True}
#: audio tokens of the 100 s and the 5 s clip
EXPECTED = {"qwen2_audio": (2500, 125), "qwen3_omni": (1300, 65)}


@ray.remote(num_gpus=1, num_cpus=0)
class _Worker:
    """Stands in for an actor worker: the replica asks where it runs and which (logical) GPU it holds."""


class _ModelConfig:
    """An already-built model config, as verl's adapter base class takes it."""


def _config() -> RolloutConfig:
    return RolloutConfig(name="vllm", prompt_length=4096, response_length=6, dtype="float32",
                         tensor_model_parallel_size=1, enable_sleep_mode=False, free_cache_engine=False,
                         enforce_eager=True, logprobs_mode="raw_logprobs", max_model_len=4096, load_format="auto")


@pytest.fixture(scope="module", params=["qwen2_audio", "qwen3_omni"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    family = family_named(request.param)
    root = tmp_path_factory.mktemp(family.name)
    model, other = family.build_tiny(root / "tiny", vocab="small"), family.build_tiny(root / "other", vocab="small",
                                                                                      seed=1)
    loop = asyncio.new_event_loop()
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=4, num_gpus=1, include_dashboard=False, namespace=f"vllm_{family.name}", log_to_driver=False,
             runtime_env={"env_vars": {"VLLM_CPU_KVCACHE_SPACE": "1"}})
    replica = RolloutReplicaRegistry.get("vllm")(replica_rank=0, config=_config(), model_config={"path": str(model)},
                                                 gpus_per_node=1)
    loop.run_until_complete(replica.init_hybrid(types.SimpleNamespace(workers=[_Worker.remote()])))
    try:
        yield family, model, other, replica, loop
    finally:
        ray.shutdown()
        loop.close()


def _prompt(processor: Any, clips: list[np.ndarray]) -> list[int]:
    content = [{"type": "audio", "audio": f"c{i}"} for i in range(len(clips))] + [{"type": "text", "text": "Is it?"}]
    text = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                         tokenize=False)
    return processor(text=[text], audio=clips, return_tensors="pt", sampling_rate=SR)


def _reference(model: Any, prompt: Any, response: list[int]) -> torch.Tensor:
    ids = torch.cat([prompt["input_ids"][0], torch.tensor(response)])[None]
    inputs = {k: v for k, v in prompt.items() if k in ("input_features", "feature_attention_mask")}
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), **inputs).logits[0].float()
    return logits[-len(response) - 1 : -1].log_softmax(-1).gather(-1, torch.tensor(response)[:, None])[:, 0]


def _ask(replica: Any, loop: Any, prompt: Any, clips: list[np.ndarray], request_id: str) -> Any:
    return loop.run_until_complete(replica.server_handle.generate.remote(
        prompt_ids=prompt["input_ids"][0].tolist(), sampling_params=dict(SAMPLED), request_id=request_id,
        audio_data=clips, mm_processor_kwargs={"sampling_rate": SR}))


def test_whole_audio_parity_and_weight_updates(served: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    family, model_dir, other_dir, replica, loop = served
    processor = family.load_processor(model_dir)
    rng = np.random.default_rng(0)
    clips = [(0.1 * rng.standard_normal(SR * s)).astype(np.float32) for s in (100, 5)]
    prompt = _prompt(processor, clips)
    out = _ask(replica, loop, prompt, clips, "whole")
    assert out.extra_fields["audio_tokens"] == sum(EXPECTED[family.name])  # the ids vLLM itself ran with
    model = family.load_trainable(model_dir, dtype=torch.float32).eval()
    ref = _reference(model, prompt, list(out.token_ids))
    assert torch.allclose(torch.tensor(out.log_probs), ref, atol=1e-4), (out.log_probs, ref.tolist())

    # the actor's weights, as verl streams them (in-memory names, experts split per expert), to vLLM
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("RAY_LOCAL_WORLD_SIZE", "1")
    adapter = get_rollout_class("vllm", "async")(config=_config(), model_config=_ModelConfig(), device_mesh=None)
    new = family.load_trainable(other_dir, dtype=torch.float32).eval()
    weights = unfuse_moe_params(iter(new.state_dict().items()), new.config.model_type)
    loop.run_until_complete(adapter.update_weights(weights, global_steps=1))
    short = _prompt(processor, clips[1:])
    after = _ask(replica, loop, short, clips[1:], "after")
    to_new = (torch.tensor(after.log_probs) - _reference(new, short, list(after.token_ids))).abs().max().item()
    to_old = (torch.tensor(after.log_probs) - _reference(model, short, list(after.token_ids))).abs().max().item()
    assert to_new < 1e-4 < 0.01 < to_old, (to_new, to_old)
    assert after.extra_fields["global_steps"] == 1
