"""How verl 0.9.1 loads, calls and aggregates the ALR reward (a drift check on the upstream paths we use)."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from helpers.paths import REPO
from reward_fns import compute_score

GOOD = "<think>a b c d</think>\n<answer>entailed</answer>"


def reward_config(path: str, **reward_kwargs: object):
    return OmegaConf.create(
        {"reward": {"custom_reward_function": {"path": path, "name": "compute_score", "reward_kwargs": reward_kwargs}}}
    )


@pytest.mark.parametrize("path", ["pkg://reward_fns.alr", str(REPO / "reward_fns" / "alr.py")])
def test_verl_loads_the_function_and_passes_reward_kwargs(path: str) -> None:
    from verl.trainer.ppo.reward import get_custom_reward_fn

    response = "no think block <answer>entailed</answer>"
    fn = get_custom_reward_fn(reward_config(path, preset="answer_only"))
    assert fn(data_source="alr", solution_str=response, ground_truth="entailed", extra_info={})["score"] == 1.0
    fn = get_custom_reward_fn(reward_config(path))  # no kwargs: the soundmind preset gates the answer
    assert fn(data_source="alr", solution_str=response, ground_truth="entailed", extra_info={})["score"] == 0.0


def test_documented_hydra_overrides_reach_reward_kwargs() -> None:
    import verl
    from hydra import compose, initialize_config_dir
    from verl.trainer.ppo.reward import get_custom_reward_fn

    overrides = [
        "reward.custom_reward_function.path=pkg://reward_fns.alr",
        "++reward.custom_reward_function.reward_kwargs.preset=no_format",
        "++reward.custom_reward_function.reward_kwargs.weights.speech_consistency=0.0",
    ]
    config_dir = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        config = compose("ppo_trainer", overrides=overrides)
    assert config.reward.custom_reward_function.name == "compute_score"
    fn = get_custom_reward_fn(config)
    result = fn(data_source="alr", solution_str="x <answer>entailed</answer>", ground_truth=1, extra_info={})
    assert result["score"] == 2.0  # no_format: answer weight 2, not gated


class _Tokenizer:
    """Decodes the ids of the one test response (what NaiveRewardManager asks of a tokenizer)."""

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return GOOD


def test_response_audio_reaches_extra_info_through_the_naive_reward_manager() -> None:
    """verl's half of the speech path: a rollout extra field named as ``SpeakingAgentLoop`` writes it reaches
    ``extra_info``. The rollout's half (speech made and scored in real GRPO steps) is
    ``tests/trainer/test_speech_e2e_on_cpu.py``; the waveform here is a voiced stand-in, since the tiny talker is silent."""
    from verl import DataProto
    from verl.experimental.reward_loop.reward_manager.naive import NaiveRewardManager

    from verl_audio.rollout.agent_loop import RESPONSE_AUDIO

    rate = 16000
    t = np.arange(3 * rate) / rate
    wave = (0.3 * np.sin(2 * np.pi * 140 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t))).astype(np.float32)
    info = {"output_modality": "audio", "ref_text_words": 4, "ref_audio_seconds": 6.0}
    # the rollout's per-response extra fields; verl merges them into extra_info before scoring
    rollout_fields = {RESPONSE_AUDIO: {"array": wave, "sampling_rate": rate}}
    data = DataProto.from_dict(
        tensors={
            "prompts": torch.ones(1, 2, dtype=torch.long),
            "responses": torch.ones(1, 3, dtype=torch.long),
            "attention_mask": torch.ones(1, 5, dtype=torch.long),
        },
        non_tensors={
            "data_source": np.array(["alr"], dtype=object),
            "reward_model": np.array([{"ground_truth": "entailed"}], dtype=object),
            "extra_info": np.array([info], dtype=object),
            "tool_extra_fields": np.array([rollout_fields], dtype=object),
        },
    )
    config = reward_config("pkg://reward_fns.alr")
    manager = NaiveRewardManager(config, _Tokenizer(), compute_score)
    out = manager.loop.run_until_complete(manager.run_single(data))
    extra = out["reward_extra_info"]
    assert 0.0 < extra["audio_length"] <= 1.0
    assert out["reward_score"] == pytest.approx(4.0 + 0.75 * extra["audio_length"])


def _results() -> tuple[list[str], list[str], list[dict]]:
    """Two prompts, two samples each: one text-output prompt, one without a reference length."""
    infos = [{"output_modality": "text", "ref_text_words": 4}] * 2 + [{"output_modality": "text"}] * 2
    responses = [GOOD, "no answer", GOOD, "<think>x</think><answer>not-entailed</answer>"]
    results = [compute_score("alr", r, 1, info) for r, info in zip(responses, infos, strict=True)]
    return ["alr"] * 4, ["u1", "u1", "u2", "u2"], results


def test_verl_validation_metrics_stay_finite_with_not_applicable_components() -> None:
    from verl.trainer.ppo.metric_utils import process_validation_metrics

    sources, uids, results = _results()
    # the reward loop builds one numpy array per key (verl/experimental/reward_loop/reward_loop.py)
    columns = {key: np.array([r[key] for r in results]) for key in results[0]}
    metrics = process_validation_metrics(sources, uids, {k: v.tolist() for k, v in columns.items()})["alr"]
    assert "pred" not in metrics  # strings are not averaged, only used for maj@N votes
    assert "maj@2/mean" in metrics["acc"]
    for name in ("score", "acc", "format", "text_length"):
        assert all(math.isfinite(v) for v in metrics[name].values()), name
    assert metrics["text_length"]["mean@2"] == pytest.approx(0.5)  # u1 only: u2 has no reference
    assert "audio_length" not in metrics  # never applicable here: no metric rather than a fake 0


def test_nan_would_poison_verl_means_which_is_why_none_is_used() -> None:
    # if this starts failing, verl has begun ignoring NaN and the None convention can be revisited
    from verl.trainer.ppo.metric_utils import process_validation_metrics

    metrics = process_validation_metrics(["alr"] * 2, ["u1", "u2"], {"x": [0.5, float("nan")]})["alr"]
    assert math.isnan(metrics["x"]["mean@1"])
    metrics = process_validation_metrics(["alr"] * 2, ["u1", "u2"], {"x": [0.5, None]})["alr"]
    assert metrics["x"]["mean@1"] == 0.5


def test_the_entry_file_loaded_by_path_is_the_package_function(monkeypatch: pytest.MonkeyPatch) -> None:
    from verl.utils.import_utils import load_extern_object

    monkeypatch.chdir(REPO)
    loaded = load_extern_object("reward_fns/alr.py", "compute_score")
    assert loaded is compute_score  # the file only re-exports: one implementation, one set of caches
    assert loaded("alr", GOOD, 1)["score"] == 3.0
