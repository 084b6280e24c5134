"""examples/hear_tones/eval.py: which clips it scores, how it counts, and a run on a random tiny Omni."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.examples import load_example
from helpers.paths import EXAMPLE, REPO
from verl_audio.data.tones import generate_tones

evaluation = load_example("eval")


def test_only_labelled_wavs_are_scored(tmp_path: Path) -> None:
    generate_tones(tmp_path, 3, seed=0)
    (tmp_path / "notes.txt").write_text("not audio")
    (tmp_path / "medium_0001.wav").write_bytes(b"")
    (tmp_path / "highish.wav").write_bytes(b"")
    clips = evaluation.labelled_clips(tmp_path)
    assert [p.name.split("_")[0] for p, _ in clips] == [label for _, label in clips]
    assert len(clips) == 3
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no high_"):
        evaluation.labelled_clips(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="not a folder"):
        evaluation.labelled_clips(tmp_path / "missing")


def test_report_counts_per_class_and_ends_with_the_accuracy() -> None:
    result = evaluation.ClipResult
    results = [
        result(Path("high_0000.wav"), "high", "<answer>high</answer>", "high"),
        result(Path("high_0001.wav"), "high", "<answer>low</answer>", "low"),
        result(Path("low_0002.wav"), "low", "<answer>low</answer>", "low"),
        result(Path("low_0003.wav"), "low", "noise", None),
    ]
    lines = evaluation.report(results, show=1)
    assert lines[0] == "high_0000.wav: '<answer>high</answer>' -> high"
    assert "high: 1/2 = 0.5000" in lines and "low: 1/2 = 0.5000" in lines
    assert "predictions: high 1, low 2, no answer 1" in lines
    assert lines[-1] == "accuracy: 0.5000"


def test_eval_runs_on_a_random_tiny_omni(tmp_path: Path) -> None:
    from verl_audio.models.tiny import build_tiny_omni

    model = build_tiny_omni(tmp_path / "tiny")
    generate_tones(tmp_path / "clips", 4, seed=1)
    result = subprocess.run([sys.executable, str(EXAMPLE / "eval.py"), "--model", str(model), "--audio-dir",
                             str(tmp_path / "clips"), "--show", "4"], capture_output=True, text=True, cwd=REPO,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    match = re.fullmatch(r"accuracy: (\d\.\d{4})", lines[-1])
    assert match and 0.0 <= float(match.group(1)) <= 1.0
    assert sum(line.startswith(("high_", "low_")) for line in lines) == 4
    assert any(re.fullmatch(r"high: \d/2 = \d\.\d{4}", line) for line in lines)
    # the accuracy is the share of shown responses whose parsed answer is the clip's label
    shown = [line for line in lines if line.startswith(("high_", "low_"))]
    correct = sum(line.endswith(f"-> {line.split('_')[0]}") for line in shown)
    assert float(match.group(1)) == pytest.approx(correct / 4)
