"""GRPO of the tiny Qwen2-Audio and Qwen3-Omni thinker through the recipe (``MODEL_FAMILY``), each rollout backend.

Two steps of ``recipes/soundmind_alr.sh`` (PRESET=tiny) per family and backend, through real Ray, FSDP2 over
gloo and the `hf` or `vllm` rollout: finite metrics, actor/rollout log-prob parity in fp32 after the weights
the actor pushed (``training/rollout_probs_diff_max`` <= 1e-3), the frozen encoder cached (no encoder pass in
the reference or the update), and an export its family's full class reloads. One run per family is in the
default suite, on `hf` (the cheaper backend on CPU; the Qwen3-Omni thinker's experts arrive split per expert);
the `vllm` run of each is ``slow`` (Qwen2-Audio's renamed weights reaching vLLM are also checked by
``tests/rollout/test_vllm_families.py`` in the default suite).
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
RUNS = [
    pytest.param(("qwen2_audio", "hf"), id="qwen2_audio-hf"),
    pytest.param(("qwen3_omni", "hf"), id="qwen3_omni-hf"),
    pytest.param(("qwen2_audio", "vllm"), marks=[pytest.mark.slow, _needs_vllm], id="qwen2_audio-vllm"),
    pytest.param(("qwen3_omni", "vllm"), marks=[pytest.mark.slow, _needs_vllm], id="qwen3_omni-vllm"),
]


@pytest.fixture(scope="module", params=RUNS)
def run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    family, rollout = request.param
    outputs = tmp_path_factory.mktemp(f"{family}_{rollout}")
    # entropy bonus: the random tiny model never earns a rule reward; the bonus gives the update a gradient,
    # so step 2 samples from weights the actor pushed
    result = run_recipe(outputs, "trainer.total_training_steps=2", "trainer.test_freq=2",
                        "actor_rollout_ref.actor.entropy_coeff=0.01", "actor_rollout_ref.actor.calculate_entropy=true",
                        rollout=rollout, env={"MODEL_FAMILY": family})
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-6000:]
    return family, outputs / EXPERIMENT


def test_two_steps_with_parity_and_cached_encoder(run: tuple[str, Path]) -> None:
    family, folder = run
    steps = training_lines(folder / "metrics.jsonl")
    assert sorted(steps) == [1, 2]
    for step, data in steps.items():
        bad = {k: v for k, v in data.items() if isinstance(v, float) and not math.isfinite(v)}
        assert not bad, f"step {step}: non-finite metrics {bad}"
        assert data["training/rollout_probs_diff_max"] <= PROBS_DIFF_MAX, (step, data["training/rollout_probs_diff_max"])
        assert data["audio_encoder/passes/ref"] == 0 and data["audio_encoder/passes/update"] == 0
        assert data["audio_encoder/cache_hits/step"] > 0
    assert steps[2]["actor/grad_norm"] > 0


def test_export_reloads_as_the_family(run: tuple[str, Path]) -> None:
    import transformers

    from verl_audio.models.families import family_named, family_of_path

    family, folder = run
    export = folder / "hf_export"
    assert family_of_path(export) is family_named(family)
    cls = getattr(transformers, family_named(family).full_class)
    model, info = cls.from_pretrained(export, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
