"""A training file truncated during a run: the run finishes its steps, the sample is in bad_audio.jsonl,
and a resume over the broken file does not crash.

The tiny recipe trains on a copy of the demo sample; a test reward truncates 3 of its 4 training
questions at its first call (inside step 1). Steps 2-3 draw rows whose audio is now bad: each is
reported and replaced by the next usable row. The same command then resumes to a 4th step. Two trainer
start-ups: a few minutes on 2 cores, hence `slow`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.paths import REPO
from helpers.recipes import EXPERIMENT, run_recipe, training_lines

pytestmark = pytest.mark.slow

REWARD = REPO / "tests" / "helpers" / "truncating_reward.py"


def test_truncated_training_audio_is_skipped_and_resume_works(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(REPO / "verl_audio" / "data" / "demo_sample", src)
    data = tmp_path / EXPERIMENT / "data"
    subprocess.run([sys.executable, str(REPO / "examples/data_preprocess/alr.py"), "--src", str(src), "--out",
                    str(data), "--splits", "train,dev", "--no-progress"], check=True, capture_output=True)
    questions = sorted(str(p.resolve()) for p in (src / "train").glob("*/question.wav"))
    assert len(questions) == 4
    broken = questions[1:]
    (tmp_path / "truncate.json").write_text(json.dumps(broken))
    overrides = (f"reward.custom_reward_function.path={REWARD}", "reward.custom_reward_function.name=compute_score",
                 f"+reward.custom_reward_function.reward_kwargs.truncate_list={tmp_path / 'truncate.json'}",
                 "trainer.save_freq=1", "verl_audio.export=false", "verl_audio.plot=false")

    first = run_recipe(tmp_path, "trainer.total_training_steps=3", "trainer.test_freq=3", *overrides)
    assert first.returncode == 0, first.stdout[-6000:] + first.stderr[-6000:]
    out = tmp_path / EXPERIMENT
    steps = training_lines(out / "metrics.jsonl")
    assert sorted(steps) == [1, 2, 3]
    assert steps[1]["bad_audio/skipped"] == 0
    assert steps[2]["bad_audio/skipped"] + steps[3]["bad_audio/skipped"] >= 1
    assert all(steps[s]["audio/clip_decodes"] >= 0 for s in steps)
    lines = [json.loads(x) for x in (out / "bad_audio.jsonl").read_text().splitlines()]
    assert lines and all(x["phase"] == "train" and x["step"] in (2, 3) for x in lines)
    assert {x["path"] for x in lines} <= set(broken)
    assert all("truncated" in x["reason"] and x["kind"] == "truncated" for x in lines)
    before = len(lines)

    second = run_recipe(tmp_path, "trainer.total_training_steps=4", "trainer.test_freq=4", *overrides)
    assert second.returncode == 0, second.stdout[-6000:] + second.stderr[-6000:]
    assert "Setting global step to 3" in second.stdout + second.stderr
    steps = training_lines(out / "metrics.jsonl")
    assert sorted(steps) == [1, 2, 3, 4]
    lines = [json.loads(x) for x in (out / "bad_audio.jsonl").read_text().splitlines()]
    # the rebuilt dataset found every broken file at once; a file version reported before is not repeated
    assert {x["path"] for x in lines} == set(broken)
    keys = [(x["id"], x["path"], x["size"], x["mtime_ns"]) for x in lines]
    assert len(keys) == len(set(keys)) and len(lines) >= before
