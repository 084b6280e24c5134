"""GRPO with speech out: the tiny preset with OUTPUT_MODALITY=audio through real Ray + FSDP2.

The rollout speaks every response with the tiny Omni's talker and token2wav; the rewards read the waveform
(``audio_length`` from its VAD), the trainer logs ``speech/*`` and ``timing_s/speech`` and validation writes
wav + txt samples. The `hf` run is in the default suite (a few minutes on 2 cores); the same run with the
`vllm` rollout (speech servers beside vLLM) and a run on one parquet mixing audio->text, text->audio and
audio->audio rows are marked slow.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.paths import RECIPE, REPO

TIMEOUT_S = 1500
VLLM = importlib.util.find_spec("vllm") is not None



def run_recipe(outputs: Path, experiment: str, env_extra: dict[str, str], *overrides: str) -> Path:
    env = {**os.environ, "PRESET": "tiny", "OUTPUTS": str(outputs), "EXPERIMENT": experiment,
           "PYTHON": sys.executable, "RAY_DEDUP_LOGS": "0", **env_extra}  # fmt: skip
    result = subprocess.run(["bash", str(RECIPE), *overrides], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=TIMEOUT_S)  # fmt: skip
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-6000:]
    return outputs / experiment


def training_lines(metrics: Path) -> dict[int, dict]:
    lines = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    return {rec["step"]: rec["data"] for rec in lines if "training/global_step" in rec["data"]}


#: the vllm run starts vLLM's engine and a speech server per replica beside two FSDP workers: slow
ROLLOUTS = ["hf", pytest.param("vllm", marks=[pytest.mark.slow, pytest.mark.skipif(
    not VLLM, reason="vLLM is not installed (scripts/setup_env.sh with VLLM=none)")])]


@pytest.fixture(scope="module", params=ROLLOUTS)
def speech_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_recipe(tmp_path_factory.mktemp("speech_e2e"), "speech", {"OUTPUT_MODALITY": "audio",
                      "ROLLOUT": request.param}, "trainer.total_training_steps=2", "trainer.test_freq=2",
                      "trainer.save_freq=2", "verl_audio.export=false")  # fmt: skip


def test_two_steps_speak_and_score_the_speech(speech_run: Path) -> None:
    steps = training_lines(speech_run / "metrics.jsonl")
    assert sorted(steps) == [1, 2]
    for step, data in steps.items():
        assert math.isfinite(data["reward/audio_length/mean"]), step
        assert data["reward/audio_length/applicable"] == 1.0  # every row asked for speech
        assert data["speech/seconds/mean"] > 0
        assert 0 <= data["speech/voiced_seconds/mean"] <= data["speech/seconds/mean"]
        # speech is made inside generation, by each of the 2 replicas' servers (summed over them)
        assert 0 < data["timing_s/speech"] <= 2 * data["timing_s/gen"]
    samples = speech_run / "samples" / "step_2"
    wavs = sorted(samples.glob("audio_to_audio_*.wav"))
    assert wavs and len(wavs) == len(list(samples.glob("audio_to_audio_*.txt")))
    import soundfile as sf

    info = sf.info(str(wavs[0]))
    assert info.samplerate == 24000 and info.frames > 0


@pytest.fixture(scope="module")
def mixed_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import pandas as pd

    root = tmp_path_factory.mktemp("mixed_data")
    frames = {"train": [], "dev": []}
    for mode_in, mode_out in (("audio", "text"), ("text", "audio"), ("audio", "audio")):
        out = root / f"{mode_in}_{mode_out}"
        subprocess.run([sys.executable, "examples/data_preprocess/alr.py", "--src", "verl_audio/data/demo_sample",
                        "--out", str(out), "--input-modality", mode_in, "--output-modality", mode_out,
                        "--splits", "train,dev"], cwd=REPO, check=True, capture_output=True)  # fmt: skip
        for split in frames:
            frames[split].append(pd.read_parquet(out / f"{split}.parquet"))
    for split, parts in frames.items():
        pd.concat(parts, ignore_index=True).to_parquet(root / f"{split}.parquet")
    return root


@pytest.mark.slow
def test_a_mixed_parquet_trains_each_row_scored_by_its_mode(mixed_data: Path, tmp_path: Path) -> None:
    run = run_recipe(tmp_path, "mixed", {"OUTPUT_MODALITY": "audio"},
                     f"data.train_files={mixed_data / 'train.parquet'}", f"data.val_files={mixed_data / 'dev.parquet'}",
                     "data.train_batch_size=6", "actor_rollout_ref.actor.ppo_mini_batch_size=6", "data.shuffle=false",
                     "trainer.total_training_steps=1", "trainer.test_freq=1", "trainer.save_freq=-1",
                     "verl_audio.export=false")  # fmt: skip
    (data,) = training_lines(run / "metrics.jsonl").values()
    # unshuffled: 4 audio->text rows then 2 text->audio rows; audio_length applies to the speaking third only
    assert 0 < data["reward/audio_length/applicable"] < 1
    assert data["reward/text_length/applicable"] == 1.0
    assert data["speech/seconds/mean"] > 0
    samples = run / "samples" / "step_1"
    modes = {p.stem.rsplit("_", 1)[0] for p in samples.glob("*.txt")}
    assert modes == {"audio_to_text", "text_to_audio", "audio_to_audio"}
    assert not list(samples.glob("audio_to_text_*.wav")) and list(samples.glob("text_to_audio_*.wav"))
