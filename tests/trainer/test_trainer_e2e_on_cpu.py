"""GRPO of the tiny Omni through verl's real PPO trainer on CPU: Ray, FSDP2 over gloo, each rollout backend.

Runs `recipes/soundmind_alr.sh` (PRESET=tiny) in a subprocess for 2 steps, once with ROLLOUT=hf and once
with ROLLOUT=vllm (vLLM's CPU build; skipped when vLLM is not installed), and checks what each run leaves
in its output folder: finite metrics with the reward components, actor/rollout log-prob parity in fp32,
a checkpoint, an export that transformers loads and that carries the trained weights, the reward curve
and the tensorboard log; and what the user reads: a log of a few hundred lines that ends with the run's
summary, the config in a file. About 1.5 minutes per backend on 2 cores (vLLM's engine start adds ~1 minute).
Both backends are in the default run: the `vllm` one is the mission's generation engine and ``PRESET=paper``'s
default, and a config only its server builds once broke it unnoticed.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from helpers.recipes import EXPERIMENT, run_recipe, training_lines

#: fp32 actor vs fp32 rollout: the probabilities of the sampled tokens agree to rounding
PROBS_DIFF_MAX = 1e-3
#: the ALR components that apply to text answers, logged per step by AudioPPOTrainer
COMPONENTS = ("score", "format", "answer", "text_length", "acc")


def _vllm_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


BACKENDS = ["hf", pytest.param("vllm", marks=pytest.mark.skipif(not _vllm_installed(), reason="vLLM not installed"))]
#: a newcomer's run reads well: the config dump goes to config.yaml, so the whole log stays short
MAX_LOG_LINES = 400


@pytest.fixture(scope="module", params=BACKENDS)
def run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    outputs = tmp_path_factory.mktemp(f"trainer_e2e_{request.param}")
    # entropy bonus: the random tiny model never earns a rule reward, so GRPO advantages are all zero;
    # the bonus gives the update a gradient, so step 2 samples from weights the actor pushed
    result = run_recipe(outputs, "trainer.total_training_steps=2", "trainer.test_freq=2",
                        "actor_rollout_ref.actor.entropy_coeff=0.01", "actor_rollout_ref.actor.calculate_entropy=true",
                        rollout=request.param)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-6000:]
    log = result.stdout + result.stderr
    assert "CPU mode, because no accelerator is visible" in log
    assert len(log.splitlines()) <= MAX_LOG_LINES, len(log.splitlines())
    assert "must be `None` or an integer within the vocabulary" not in log and "LOAD REPORT" not in log
    summary = result.stdout.rstrip().splitlines()
    start = max(i for i, line in enumerate(summary) if line.startswith("verl-audio: run e2e finished"))
    tail = "\n".join(summary[start:])  # the summary is the last thing the run prints
    assert "steps       2 logged of 2" in tail and "reward      mean" in tail and "examples/hear_tones" in tail
    assert (outputs / EXPERIMENT / "summary.txt").read_text().strip() == tail.strip()
    assert (outputs / EXPERIMENT / "config.yaml").is_file()
    return outputs / EXPERIMENT


def test_metrics_are_finite_with_reward_components_and_parity(run: Path) -> None:
    steps = training_lines(run / "metrics.jsonl")
    assert sorted(steps) == [1, 2]
    for step, data in steps.items():
        numbers = {k: v for k, v in data.items() if isinstance(v, (int, float))}
        bad = {k: v for k, v in numbers.items() if not math.isfinite(v)}
        assert not bad, f"step {step}: non-finite metrics {bad}"
        for name in COMPONENTS:
            assert f"reward/{name}/mean" in data, f"step {step}: reward/{name}/mean missing"
            assert 0.0 <= data[f"reward/{name}/applicable"] <= 1.0
        assert data["training/rollout_probs_diff_max"] <= PROBS_DIFF_MAX
        assert data["training/global_step"] == step
        assert data["actor/grad_norm"] > 0
        for phase in ("gen", "old_log_prob", "ref", "update_actor", "reward"):
            assert data[f"timing_s/{phase}"] >= 0
    assert "val-core/alr/acc/mean@1" in steps[2]  # validated at the last step


def test_checkpoint_export_and_plots(run: Path) -> None:
    from transformers import Qwen2_5OmniForConditionalGeneration

    ckpts = run / "checkpoints"
    assert (ckpts / "latest_checkpointed_iteration.txt").read_text().strip() == "2"
    actor = ckpts / "global_step_2" / "actor"
    assert {p.name for p in actor.glob("model_world_size_2_rank_*.pt")} == {
        "model_world_size_2_rank_0.pt", "model_world_size_2_rank_1.pt"}
    assert list(actor.glob("optim_world_size_2_rank_*.pt"))

    exported = Qwen2_5OmniForConditionalGeneration.from_pretrained(run / "hf_export", dtype=torch.float32)
    base = Qwen2_5OmniForConditionalGeneration.from_pretrained(run / "tiny_omni", dtype=torch.float32)
    trained, original = exported.state_dict(), base.state_dict()
    assert trained.keys() == original.keys()
    # the decoder moved (entropy bonus), the frozen audio encoder and the talker did not
    assert not torch.equal(trained["thinker.lm_head.weight"], original["thinker.lm_head.weight"])
    for name in original:
        if name.startswith(("thinker.audio_tower.", "talker.", "token2wav.")):
            assert torch.allclose(trained[name], original[name].to(trained[name].dtype), atol=1e-2), name

    assert (run / "reward_curve.png").stat().st_size > 0
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
