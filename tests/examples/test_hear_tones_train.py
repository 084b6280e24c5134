"""examples/hear_tones/train.sh end to end, shortened to 2 GRPO steps: the script, its overrides and its outputs.

The full run (60 steps, about 15 minutes on 2 cores) is what README reports; this keeps the command that
produces it working: data, tiny model, verl's trainer on CPU with the `hf` rollout and the tone reward,
checkpoint, export and the eval report. About 1.5 minutes on 2 idle cores, more in CI: marked slow (the
tiny preset's own end-to-end tests cover the trainer in the default run).
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from helpers.paths import REPO

TRAIN = REPO / "examples" / "hear_tones" / "train.sh"

pytestmark = pytest.mark.slow


def train(outputs: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OUTPUTS": str(outputs), "PYTHON": sys.executable, "STEPS": "2", "BATCH": "8", "N": "2",
           "RAY_DEDUP_LOGS": "0"}
    result = subprocess.run(["bash", str(TRAIN), "trainer.test_freq=2"], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-6000:]
    return result


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    outputs = tmp_path_factory.mktemp("hear_tones")
    return outputs / "hear_tones", train(outputs).stdout


def test_two_steps_log_finite_tone_rewards(run: tuple[Path, str]) -> None:
    folder, _ = run
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps = {rec["step"]: rec["data"] for rec in records if "training/global_step" in rec["data"]}
    assert sorted(steps) == [1, 2]
    for data in steps.values():
        for key in ("reward/score/mean", "reward/acc/mean", "reward/format/mean"):
            assert 0.0 <= data[key] <= 1.0, key
        assert data["response_length/max"] <= 1  # the one-word answer budget
        assert all(math.isfinite(v) for v in data.values() if isinstance(v, float))
    assert any("val-core/hear_tones/acc/mean@1" in rec["data"] for rec in records)  # validation ran
    assert (folder / "reward_curve.png").stat().st_size > 0


def test_the_run_trains_on_the_prepared_clips_and_keeps_test_clips_out(run: tuple[Path, str]) -> None:
    folder, _ = run
    train = pd.read_parquet(folder / "data" / "train.parquet")
    assert len(train) == 1024 and all(Path(list(a)[0]).parent.name == "train" for a in train["audios"])
    assert len(list((folder / "data" / "test").glob("*.wav"))) == 200


def test_export_is_scored_and_the_report_ends_with_the_accuracy(run: tuple[Path, str]) -> None:
    folder, stdout = run
    assert (folder / "hf_export" / "config.json").is_file()
    assert list((folder / "checkpoints").glob("global_step_2"))
    lines = (folder / "eval.txt").read_text().strip().splitlines()
    match = re.fullmatch(r"accuracy: (\d\.\d{4})", lines[-1])
    assert match
    high, low = (re.search(rf"^{label}: (\d+)/100 = ", "\n".join(lines), re.M) for label in ("high", "low"))
    assert high and low and float(match.group(1)) == pytest.approx((int(high.group(1)) + int(low.group(1))) / 200)
    assert re.search(r"hear_tones: hear_tones done in \d+ s", stdout)


def test_rerunning_a_finished_run_trains_nothing_more(run: tuple[Path, str]) -> None:
    """verl's fit would run (and save) step total+1 after loading the last checkpoint; ours stops."""
    folder, _ = run
    metrics_before = (folder / "metrics.jsonl").read_text()
    result = train(folder.parent)
    assert "training is complete, nothing to run" in result.stdout + result.stderr
    assert sorted(p.name for p in (folder / "checkpoints").glob("global_step_*")) == ["global_step_2"]
    assert (folder / "metrics.jsonl").read_text() == metrics_before
    assert re.fullmatch(r"accuracy: \d\.\d{4}", (folder / "eval.txt").read_text().strip().splitlines()[-1])
