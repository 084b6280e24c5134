"""GRPO with LoRA adapters through the recipe (``LORA_RANK=8``), on each rollout backend.

Two steps of ``recipes/soundmind_alr.sh`` (PRESET=tiny, Qwen2.5-Omni) through real Ray, FSDP2 over gloo and the
`hf` rollout (adapters injected into its model) or the `vllm` rollout (vLLM's LoRA support, adapters in memory):
the log-probs the rollout reports equal the actor's after the adapters it pushed
(``training/rollout_probs_diff_max`` <= 1e-3), the checkpoint holds the adapters, the export (merged) reloads as
the stock class, and a rerun with more steps resumes from the checkpoint (``slow``). The `hf` run is in the
default suite,
the `vllm` run (the vLLM engine starts in minutes on CPU), the Qwen2-Audio run on `vllm` (merged weights,
automatically: its vLLM class has no LoRA) and the runs with adapters in the audio encoder too
(``model.audio_encoder_lora_targets``; merged weights on `vllm`, which applies LoRA to the language model only) are
``slow``.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

from helpers.recipes import EXPERIMENT, run_recipe, training_lines

PROBS_DIFF_MAX = 1e-3
VLLM = importlib.util.find_spec("vllm") is not None
_needs_vllm = pytest.mark.skipif(not VLLM, reason="vLLM is not installed (scripts/setup_env.sh with VLLM=none)")
#: the Qwen2.5-Omni encoder's last projection: adapters in the audio encoder too
ENCODER_TARGETS = "actor_rollout_ref.model.audio_encoder_lora_targets=proj"
#: (family, rollout, the recipe's output folder, its log, the overrides it ran with)
RunResult = tuple[str, str, Path, str, tuple[str, ...]]
RUNS = [  # (family, rollout, adapters in the audio encoder too)
    pytest.param(("qwen2_5_omni", "hf", False), id="omni-hf"),
    pytest.param(("qwen2_5_omni", "vllm", False), marks=[pytest.mark.slow, _needs_vllm], id="omni-vllm"),
    pytest.param(("qwen2_audio", "vllm", False), marks=[pytest.mark.slow, _needs_vllm], id="qwen2_audio-vllm"),
    pytest.param(("qwen2_5_omni", "hf", True), marks=pytest.mark.slow, id="omni-encoder-hf"),
    pytest.param(("qwen2_5_omni", "vllm", True), marks=[pytest.mark.slow, _needs_vllm], id="omni-encoder-vllm"),
]
#: an entropy bonus: the random tiny model earns no rule reward, and the bonus gives the adapters a gradient
OVERRIDES = ("actor_rollout_ref.actor.entropy_coeff=0.01", "actor_rollout_ref.actor.calculate_entropy=true",
             "trainer.test_freq=2")


@pytest.fixture(scope="module", params=RUNS)
def run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    family, rollout, encoder = request.param
    outputs = tmp_path_factory.mktemp(f"lora_{family}_{rollout}{'_encoder' if encoder else ''}")
    overrides = (*OVERRIDES, ENCODER_TARGETS) if encoder else OVERRIDES
    result = run_recipe(outputs, "trainer.total_training_steps=2", *overrides, rollout=rollout,
                        env={"MODEL_FAMILY": family, "LORA_RANK": "8"})
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-6000:]
    return family, rollout, outputs, result.stdout + result.stderr, overrides


def test_adapters_reach_the_rollout(run: RunResult) -> None:
    family, rollout, outputs, log, overrides = run
    steps = training_lines(outputs / EXPERIMENT / "metrics.jsonl")
    assert sorted(steps) == [1, 2]
    for step, data in steps.items():
        bad = {k: v for k, v in data.items() if isinstance(v, float) and not math.isfinite(v)}
        assert not bad, f"step {step}: non-finite metrics {bad}"
        assert data["training/rollout_probs_diff_max"] <= PROBS_DIFF_MAX, (step, data["training/rollout_probs_diff_max"])
    assert steps[2]["actor/grad_norm"] > 0
    merged = rollout == "vllm" and (family == "qwen2_audio" or ENCODER_TARGETS in overrides)
    assert ("merged weights are synced each step" in log) == merged
    assert ("adapters synced to the" in log) == (not merged)
    assert "lora        rank 8, alpha 16" in log  # the run's summary


def test_checkpoint_and_export(run: RunResult) -> None:
    import json

    import transformers

    from verl_audio.models.export import verify_export
    from verl_audio.models.families import family_named

    family, rollout, outputs, _, overrides = run
    folder = outputs / EXPERIMENT
    actor = folder / "checkpoints" / "global_step_2" / "actor"
    assert json.loads((actor / "lora_train_meta.json").read_text())["r"] == 8
    verify_export(folder / "hf_export")  # no missing, unexpected or mismatched keys for the stock class
    model = getattr(transformers, family_named(family).full_class).from_pretrained(folder / "hf_export")
    assert not any("lora" in name for name, _ in model.named_parameters())
    from verl_audio.models import lora
    from verl_audio.models.export import load_checkpoint_state

    in_encoder = lora.modules_in_audio_encoder(family_named(family), lora.adapted_modules(load_checkpoint_state(actor)))
    assert in_encoder == (["audio_tower.proj"] if ENCODER_TARGETS in overrides else [])


@pytest.mark.slow  # a third recipe step (~2 min on CPU); resume without LoRA is in the default suite
def test_resume(run: RunResult) -> None:
    """One more step: the rerun resumes from step 2 (the adapters and their optimizer state)."""
    family, rollout, outputs, _, overrides = run
    folder = outputs / EXPERIMENT
    result = run_recipe(outputs, "trainer.total_training_steps=3", *overrides, rollout=rollout,
                        env={"MODEL_FAMILY": family, "LORA_RANK": "8"})
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-6000:]
    assert "Setting global step to 2" in result.stdout + result.stderr  # verl loaded the checkpoint
    steps = training_lines(folder / "metrics.jsonl")
    assert sorted(steps) == [1, 2, 3]
    assert steps[3]["training/rollout_probs_diff_max"] <= PROBS_DIFF_MAX
