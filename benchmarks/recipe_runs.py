"""Shared by the benchmarks: one run of the tiny preset of ``recipes/soundmind_alr.sh`` and its step metrics."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: overrides that keep a benchmark run to training alone (no checkpoints, validation, export or plot)
TRAINING_ONLY = ["trainer.save_freq=-1", "trainer.test_freq=-1", "verl_audio.export=false", "verl_audio.plot=false",
                 "trainer.resume_mode=disable"]


def later_steps(out: Path, name: str, overrides: list[str], **env: str) -> list[dict]:
    """Run PRESET=tiny as experiment ``name`` under ``out``; the metrics of each step after the first
    (step 1 includes warm-up), or of step 1 alone for a one-step run. ``env`` adds environment variables."""
    from verl_audio.trainer.metrics_log import training_steps

    run_env = {**os.environ, "PRESET": "tiny", "OUTPUTS": str(out), "EXPERIMENT": name, "PYTHON": sys.executable,
               **env}
    result = subprocess.run(["bash", str(REPO / "recipes/soundmind_alr.sh"), *overrides, *TRAINING_ONLY], cwd=REPO,
                            env=run_env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{name} run failed (rc {result.returncode}):\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    steps = training_steps(out / name / "metrics.jsonl")
    return [data for step, data in steps.items() if step > 1] or list(steps.values())
