"""The pieces behind a resumable metrics history, checked without Ray: the appending file logger,
the trim on resume, the reward-component means, the reward curve, and CPU-mode config."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import verl  # noqa: F401  (loads the plugin, which applies the file-logger patch)
from hydra import compose, initialize_config_dir
from verl.utils.tracking import Tracking

from helpers.paths import CONFIG_DIR
from verl_audio.trainer import cpu_mode, metrics_log
from verl_audio.trainer.plot import curves, plot_reward_curve
from verl_audio.trainer.ppo_trainer import reward_component_means


def _write(path: Path, steps: list[int]) -> None:
    path.write_text("".join(json.dumps({"step": s, "data": {"training/global_step": s, "x": s}}) + "\n" for s in steps))


def test_file_logger_appends_when_asked_and_truncates_otherwise(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "metrics.jsonl"
    _write(path, [1, 2])
    monkeypatch.setenv(metrics_log.PATH_ENV, str(path))
    monkeypatch.setenv(metrics_log.APPEND_ENV, "1")
    tracking = Tracking("p", "e", default_backend="file")
    tracking.log({"training/global_step": 3, "x": 3.0}, step=3)
    tracking.finish()
    assert [r["step"] for r in metrics_log.read_lines(path)] == [1, 2, 3]

    monkeypatch.delenv(metrics_log.APPEND_ENV)
    tracking = Tracking("p", "e", default_backend="file")  # verl's behaviour: a fresh file
    tracking.log({"x": 9.0}, step=9)
    tracking.finish()
    assert [r["step"] for r in metrics_log.read_lines(path)] == [9]


def test_trim_keeps_steps_up_to_the_resumed_one(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    _write(path, [0, 1, 2, 3, 4])
    assert metrics_log.trim_after(path, 2) == 2
    assert list(metrics_log.training_steps(path)) == [0, 1, 2]
    assert metrics_log.trim_after(path, 0) == 3  # a fresh run starts an empty history
    assert path.read_text() == ""
    assert metrics_log.trim_after(tmp_path / "absent.jsonl", 3) == 0


def test_trim_while_the_logger_holds_the_file_open(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    _write(path, [1, 2, 3])
    with open(path, "ab", buffering=0) as held:  # as verl's logger holds it between construction and resume
        metrics_log.trim_after(path, 1)
        held.write(b'{"step": 2, "data": {"training/global_step": 2}}\n')
    assert [r["step"] for r in metrics_log.read_lines(path)] == [1, 2]


def test_trim_drops_a_last_line_cut_short_by_a_kill(tmp_path: Path) -> None:
    """A run killed while verl's logger writes leaves half a line at the end; the resumed run drops it."""
    path = tmp_path / "metrics.jsonl"
    _write(path, [1, 2])
    with open(path, "ab") as handle:
        handle.write(b'{"step": 3, "data": {"training/glo')
    assert metrics_log.trim_after(path, 2) == 1
    assert [r["step"] for r in metrics_log.read_lines(path)] == [1, 2]
    assert path.read_bytes().endswith(b"\n")


def test_trim_refuses_a_bad_line_before_the_end(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "data": {}}\nnot json\n{"step": 2, "data": {}}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2"):
        metrics_log.trim_after(path, 2)


def test_malformed_line_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "data": {}}\nnot json\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2"):
        metrics_log.read_lines(path)


def test_reward_component_means_skip_not_applicable() -> None:
    batch = {"score": np.array([1.0, 3.0]), "audio_length": np.array([None, None], dtype=object),
             "text_length": np.array([0.5, None], dtype=object), "uid": np.array(["a", "b"])}
    assert reward_component_means(batch) == {
        "reward/score/mean": 2.0, "reward/score/applicable": 1.0,
        "reward/text_length/mean": 0.5, "reward/text_length/applicable": 0.5,
    }


def test_reward_curve_from_training_lines(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    lines = [{"step": 0, "data": {"val-core/alr/acc/mean@1": 0.0}}]
    lines += [{"step": s, "data": {"training/global_step": s, "critic/score/mean": s / 2, "reward/format/mean": 0.1 * s,
                                   "reward/format/applicable": 1.0}} for s in (1, 2)]
    path.write_text("".join(json.dumps(rec) + "\n" for rec in lines))
    assert curves(path) == {"score (verl)": ([1, 2], [0.5, 1.0]), "format": ([1, 2], [0.1, 0.2])}
    assert plot_reward_curve(path, tmp_path / "curve.png").stat().st_size > 0


def _config(*overrides: str):
    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        return compose("soundmind_alr", overrides=list(overrides))


def test_cpu_mode_sets_logical_gpu_slots_and_refuses_gpu_rollouts(monkeypatch) -> None:
    monkeypatch.delenv("VERL_PLATFORM", raising=False)
    config = _config("trainer.n_gpus_per_node=2", "verl_audio.device=cpu")
    assert cpu_mode.wants_cpu(config) == (True, "verl_audio.device=cpu")
    changes = cpu_mode.apply(config)
    assert config.trainer.device == "cpu"
    assert config.ray_kwargs.ray_init.num_gpus == 2
    assert config.ray_kwargs.ray_init.runtime_env.env_vars.VERL_PLATFORM == "cpu"
    assert config.actor_rollout_ref.model.override_config.attn_implementation == "sdpa"
    assert "trainer.device=cpu" in changes

    assert cpu_mode.wants_cpu(_config("verl_audio.device=gpu"))[0] is False
    with pytest.raises(ValueError, match="needs a GPU"):
        cpu_mode.apply(_config("actor_rollout_ref.rollout.name=sglang"))
    # vLLM's CPU build runs: no sleep mode, eager, its KV cache sized for the host
    vllm = _config("actor_rollout_ref.rollout.name=vllm", "verl_audio.vllm_cpu_kvcache_gb=2")
    cpu_mode.apply(vllm)
    rollout = vllm.actor_rollout_ref.rollout
    assert (rollout.enable_sleep_mode, rollout.free_cache_engine, rollout.enforce_eager) == (False, False, True)
    assert vllm.ray_kwargs.ray_init.runtime_env.env_vars.VLLM_CPU_KVCACHE_SPACE == "2"
    with pytest.raises(ValueError, match="verl_audio.device must be one of"):
        cpu_mode.wants_cpu(_config("verl_audio.device=tpu"))
