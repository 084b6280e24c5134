"""Speech start-up and bookkeeping: the data decides, thinker-only checkpoints fail, endpoints, metrics, samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf
from verl import DataProto

from verl_audio.models.tiny import build_tiny_omni
from verl_audio.models.tiny_tokenizer import build_tokenizer
from verl_audio.rollout.speech_endpoints import endpoint_names
from verl_audio.speech.talker import MissingSpeechWeights
from verl_audio.trainer.speech_setup import AGENT_LOOPS_YAML, configure, output_modalities
from verl_audio.trainer.speech_tap import SpeechTap, speech_metrics

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def parquet(path: Path, modalities: list[str | None]) -> Path:
    rows = [{"extra_info": {"id": str(i), "input_modality": "audio", **({"output_modality": m} if m else {})}}
            for i, m in enumerate(modalities)]  # fmt: skip
    pd.DataFrame(rows).to_parquet(path)
    return path


def trainer_config(model: Path, train: Path, val: Path, speech: dict | None = None) -> OmegaConf:
    return OmegaConf.create({
        "data": {"train_files": str(train), "val_files": [str(val)]},
        "actor_rollout_ref": {"model": {"path": str(model)}, "rollout": {
            "engine_kwargs": {"speech": speech} if speech is not None else {},
            "agent": {"default_agent_loop": "single_turn_agent", "agent_loop_config_path": None}}},
    })  # fmt: skip


def test_the_data_turns_speech_on_and_selects_the_speaking_agent_loop(tmp_path: Path) -> None:
    model = build_tiny_omni(tmp_path / "tiny", talker=True)
    train = parquet(tmp_path / "train.parquet", ["text", "audio", None])
    val = parquet(tmp_path / "dev.parquet", ["text"])
    assert output_modalities([str(train), str(val)]) == {"text": 3, "audio": 1}
    config = trainer_config(model, train, val)
    assert configure(config) is True
    rollout = config.actor_rollout_ref.rollout
    assert rollout.engine_kwargs.speech.enable is True
    assert rollout.agent.default_agent_loop == "speech_single_turn_agent"
    assert Path(rollout.agent.agent_loop_config_path) == AGENT_LOOPS_YAML and AGENT_LOOPS_YAML.exists()

    text_only = trainer_config(model, val, val)
    assert configure(text_only) is False
    # text only: no speech, but verl-audio's loop still runs (it marks whether each response ended)
    assert text_only.actor_rollout_ref.rollout.agent.default_agent_loop == "speech_single_turn_agent"
    with pytest.raises(ValueError, match="1 rows ask for output_modality 'audio'"):
        configure(trainer_config(model, train, val, {"enable": False}))


def test_thinker_only_checkpoint_fails_at_start_and_bad_values_name_the_row(tmp_path: Path) -> None:
    thinker_only = build_tiny_omni(tmp_path / "thinker_only", talker=False)
    train = parquet(tmp_path / "train.parquet", ["audio"])
    with pytest.raises(MissingSpeechWeights, match=r"no talker\.\* weights, no token2wav\.\* weights"):
        configure(trainer_config(thinker_only, train, train))
    bad = parquet(tmp_path / "bad.parquet", ["text", "speech"])
    with pytest.raises(ValueError, match=r"bad\.parquet row 1: .*'speech'"):
        output_modalities([str(bad)])


def test_endpoints_prefer_standalone_speech_servers() -> None:
    names = ["hf_server_1_0", "hf_server_0_0", "hf_server_reward_0_0", "agent_loop_worker_0_ab"]
    assert endpoint_names(names) == ["hf_server_0_0", "hf_server_1_0"]
    assert endpoint_names(names + ["speech_server_0"]) == ["speech_server_0"]
    assert endpoint_names(["agent_loop_worker_0_ab"]) == []


def test_metrics_and_validation_samples(tmp_path: Path) -> None:
    rate = 24000
    t = np.arange(rate) / rate
    tone = (0.5 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    audios = [{"array": tone, "sampling_rate": rate}, None, {"array": np.zeros(rate // 2, np.float32),
                                                            "sampling_rate": rate}]  # fmt: skip
    metrics, seconds = speech_metrics(audios, [0.5, None, 0.25])
    assert metrics["speech/seconds/mean"] == pytest.approx(0.75)
    assert metrics["speech/responses"] == 2.0
    assert 0 <= metrics["speech/voiced_seconds/mean"] <= 0.5  # silence has no voiced frames
    assert seconds == pytest.approx(0.75)

    tokenizer = build_tokenizer("small")
    ids = tokenizer("the premise holds", add_special_tokens=False)["input_ids"]
    responses = torch.tensor([ids + [tokenizer.pad_token_id]] * 3)
    mask = torch.cat([torch.ones(3, 2, dtype=torch.long), (responses != tokenizer.pad_token_id).long()], dim=1)
    output = DataProto.from_dict(tensors={"responses": responses, "attention_mask": mask},
                                 non_tensors={"response_audio": np.array(audios, dtype=object),
                                              "speech_compute_s": np.array([0.5, None, 0.25], dtype=object)})  # fmt: skip
    infos = [{"id": "a", "input_modality": "audio", "output_modality": "audio"},
             {"id": "b", "input_modality": "audio", "output_modality": "text"},
             {"id": "c", "input_modality": "text", "output_modality": "audio"}]  # fmt: skip
    batch = DataProto.from_dict(non_tensors={"extra_info": np.array(infos, dtype=object)},
                                meta_info={"validate": True, "global_steps": 7})  # fmt: skip
    tap = SpeechTap(tokenizer, str(tmp_path), samples_per_mode=1)
    out = tap.after_generation(batch, output)
    assert "response_audio" not in out.non_tensor_batch and "speech_compute_s" not in out.non_tensor_batch
    folder = tmp_path / "samples" / "step_7"
    assert sorted(p.name for p in folder.iterdir()) == [
        "audio_to_audio_0.txt", "audio_to_audio_0.wav", "audio_to_text_0.txt", "text_to_audio_0.txt",
        "text_to_audio_0.wav"]  # fmt: skip
    assert "the premise holds" in (folder / "audio_to_text_0.txt").read_text()
    import soundfile as sf

    wave, sr = sf.read(folder / "audio_to_audio_0.wav")
    assert sr == rate and wave.size == rate
