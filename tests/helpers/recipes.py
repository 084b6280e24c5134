"""Running the recipe as a user does (a subprocess of ``recipes/soundmind_alr.sh``) and reading what it wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from helpers.paths import RECIPE, REPO

EXPERIMENT = "e2e"
TIMEOUT_S = 900


def run_recipe(outputs: Path, *overrides: str, timeout: float = TIMEOUT_S, rollout: str = "hf",
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the tiny preset with extra overrides (``env``: more recipe variables); the output folder is
    ``outputs/e2e``."""
    env = {**os.environ, "PRESET": "tiny", "OUTPUTS": str(outputs), "EXPERIMENT": EXPERIMENT,
           "PYTHON": sys.executable, "RAY_DEDUP_LOGS": "0", "ROLLOUT": rollout, **(env or {})}
    return subprocess.run(["bash", str(RECIPE), *overrides], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def training_lines(metrics: Path) -> dict[int, dict]:
    lines = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    return {rec["step"]: rec["data"] for rec in lines if "training/global_step" in rec["data"]}
