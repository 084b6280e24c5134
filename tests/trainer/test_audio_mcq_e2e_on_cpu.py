"""recipes/audio_mcq.sh as a user runs it: the tiny preset (tone questions written and prepared on the spot),
2 GRPO steps on the ``hf`` rollout through Ray + FSDP2 on CPU, validation per group, checkpoint and export; and
``DRY_RUN=1`` first. About 2 minutes on 2 cores; ``slow`` (CI runs the config check of every audio_mcq variant
in tests/trainer/test_recipe_configs.py instead)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.paths import REPO
from helpers.recipes import EXPERIMENT, training_lines

RECIPE = REPO / "recipes" / "audio_mcq.sh"
pytestmark = pytest.mark.slow


def _run(outputs: Path, *overrides: str, **env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PRESET": "tiny", "OUTPUTS": str(outputs), "EXPERIMENT": EXPERIMENT, "ROLLOUT": "hf",
           "PYTHON": sys.executable, "RAY_DEDUP_LOGS": "0", **env}
    return subprocess.run(["bash", str(RECIPE), *overrides], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    outputs = tmp_path_factory.mktemp("audio_mcq_e2e")
    dry = _run(outputs, DRY_RUN="1")
    assert dry.returncode == 0, dry.stdout[-4000:] + dry.stderr[-4000:]
    assert "rows in 8 = written 8 + rejected 0" in dry.stdout and "nothing started" in dry.stdout + dry.stderr
    result = _run(outputs, "trainer.total_training_steps=2", "trainer.test_freq=2",
                  "actor_rollout_ref.actor.entropy_coeff=0.01", "actor_rollout_ref.actor.calculate_entropy=true")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-6000:]
    return outputs / EXPERIMENT


def test_two_steps_with_choice_reward_components_and_group_validation(run: Path) -> None:
    steps = training_lines(run / "metrics.jsonl")
    assert sorted(steps) == [1, 2]
    for step, data in steps.items():
        assert all(math.isfinite(v) for v in data.values() if isinstance(v, (int, float))), step
        for name in ("score", "answer", "answer_tag", "ended", "answer_words", "acc"):
            assert f"reward/{name}/mean" in data, (step, name)
    last = steps[2]
    assert "val-core/audio_mcq/acc/mean@1" in last and "val-mode/audio_to_text/accuracy" in last
    for group in ("task=sound", "difficulty=easy", "difficulty=medium", "sub-category=very low"):
        assert f"val-group/{group}/accuracy" in last, group
    assert (run / "checkpoints" / "global_step_2").is_dir() and (run / "hf_export" / "config.json").is_file()
