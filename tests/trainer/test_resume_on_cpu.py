"""Resume: a tiny GRPO run killed with SIGKILL after a checkpoint continues from it when rerun.

The same recipe command runs twice. The first run is killed (its whole process group, Ray included)
as soon as a checkpoint is recorded; the second must start at the step after that checkpoint (verl's
`resume_mode=auto`: weights, optimizer, dataloader position) and `metrics.jsonl` must hold every step
exactly once: the lines before the checkpoint kept, those the killed run wrote after it dropped (and a
last line cut short by the kill, appended here, dropped too).
About 3 minutes on 2 cores (two trainer start-ups), hence `slow`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.paths import RECIPE, REPO
from helpers.recipes import EXPERIMENT, run_recipe, training_lines

pytestmark = pytest.mark.slow

STEPS = 4
OVERRIDES = (f"trainer.total_training_steps={STEPS}", "trainer.save_freq=1", f"trainer.test_freq={STEPS}",
             "verl_audio.export=false")


def checkpointed_and_logged(outputs: Path) -> int | None:
    """The step of the newest checkpoint once its metrics line is written too (verl logs after saving)."""
    tracker = outputs / EXPERIMENT / "checkpoints" / "latest_checkpointed_iteration.txt"
    metrics = outputs / EXPERIMENT / "metrics.jsonl"
    if not (tracker.exists() and tracker.read_text().strip() and metrics.exists()):
        return None
    step = int(tracker.read_text().strip())
    return step if step in training_lines(metrics) else None


def run_until_checkpoint(outputs: Path, timeout: float = 600) -> int:
    """Start the recipe in its own process group; SIGKILL the group once a checkpointed step is logged.

    Ray's own processes start their own sessions and are not in the group; they exit by themselves
    once the driver and its local cluster are gone.
    """
    env = {**os.environ, "PRESET": "tiny", "OUTPUTS": str(outputs), "EXPERIMENT": EXPERIMENT,
           "PYTHON": sys.executable}
    log = open(outputs / "first_run.log", "w")
    proc = subprocess.Popen(["bash", str(RECIPE), *OVERRIDES], cwd=REPO, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while (step := checkpointed_and_logged(outputs)) is None:
            assert proc.poll() is None, f"run ended (rc {proc.returncode}) before a checkpoint; see {log.name}"
            assert time.monotonic() < deadline, "no checkpoint within the timeout"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()
    return step


def test_sigkill_after_checkpoint_then_rerun_continues(tmp_path: Path) -> None:
    killed_at = run_until_checkpoint(tmp_path)
    assert 1 <= killed_at < STEPS
    metrics = tmp_path / EXPERIMENT / "metrics.jsonl"
    before = training_lines(metrics)
    assert killed_at in before
    with open(metrics, "ab") as handle:  # as a kill in the middle of verl's logger writing a line leaves it
        handle.write(b'{"step": 99, "data": {"training/glo')

    result = run_recipe(tmp_path, *OVERRIDES)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-6000:]
    assert f"Setting global step to {killed_at}" in out  # verl loaded the checkpoint
    assert f"starts at step {killed_at}" in out  # and the history was trimmed there

    lines = [json.loads(line) for line in metrics.read_text().splitlines()]
    training = [rec["step"] for rec in lines if "training/global_step" in rec["data"]]
    assert training == list(range(1, STEPS + 1)), training  # every step once, in order
    after = training_lines(metrics)
    for step in range(1, killed_at + 1):  # the killed run's lines up to its checkpoint survive untouched
        assert after[step] == before[step]
    tracker = tmp_path / EXPERIMENT / "checkpoints" / "latest_checkpointed_iteration.txt"
    assert tracker.read_text().strip() == str(STEPS)
    # the data loader continued: the resumed run's first step saw the batch after the checkpoint's
    # (verl restores data.pt); each epoch of the 4-row train split is 2 steps
    assert (tmp_path / EXPERIMENT / "checkpoints" / f"global_step_{killed_at}" / "data.pt").exists()
