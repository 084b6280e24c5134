"""examples/hear_tones/prepare.py: the clips and parquet rows it writes, and how verl's dataset reads them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import verl
from omegaconf import OmegaConf

from helpers.examples import load_example
from helpers.paths import EXAMPLE, REPO
from verl_audio.data.tones import DATA_SOURCE, TONE_PROMPT

VERL_DATA_YAML = Path(verl.__file__).parent / "trainer" / "config" / "data" / "legacy_data.yaml"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tones")
    result = subprocess.run([sys.executable, str(EXAMPLE / "prepare.py"), "--out", str(out), "--train", "6",
                             "--val", "4", "--test", "5", "--seed", "3"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert "train: 6 rows (3 high, 3 low)" in result.stdout and "test: 5 clips" in result.stdout
    return out


def test_rows_match_their_clips(prepared: Path) -> None:
    for split, n in (("train", 6), ("val", 4)):
        df = pd.read_parquet(prepared / f"{split}.parquet")
        assert len(df) == n
        for i, row in df.iterrows():
            (audio,) = list(row["audios"])
            path = Path(audio)
            assert path.is_absolute() and path.parent == prepared / split and path.is_file()
            label = row["reward_model"]["ground_truth"]
            assert path.name.startswith(f"{label}_")  # the file name carries the same label
            assert row["data_source"] == DATA_SOURCE
            assert list(row["prompt"]) == [{"role": "user", "content": TONE_PROMPT}]
            assert row["extra_info"]["split"] == split and row["extra_info"]["index"] == i
            assert row["extra_info"]["question_audio_seconds"] == pytest.approx(sf.info(path).duration)
    assert len(list((prepared / "test").glob("*.wav"))) == 5
    assert not (prepared / "test.parquet").exists()  # the test clips are for eval.py only


def test_splits_are_independent_draws(prepared: Path) -> None:
    first = {split: sf.read(sorted((prepared / split).glob("*.wav"))[0])[0] for split in ("train", "val", "test")}
    assert not np.array_equal(first["train"][:1000], first["val"][:1000])
    assert not np.array_equal(first["val"][:1000], first["test"][:1000])


def test_the_ablation_trains_on_silence_of_the_same_length(tmp_path: Path) -> None:
    prepare = load_example("prepare")
    prepare.prepare(tmp_path, train=4, val=2, test=2, seed=5, silent_train=True)
    train = pd.read_parquet(tmp_path / "train.parquet")
    for audios in train["audios"]:
        silent = Path(list(audios)[0])
        real = tmp_path / "train" / silent.name
        assert silent.parent == tmp_path / "train_silent"
        data, rate = sf.read(silent)
        assert rate == sf.info(real).samplerate and len(data) == sf.info(real).frames  # same token count
        assert not data.any()
    val = pd.read_parquet(tmp_path / "val.parquet")
    for audios in val["audios"]:  # validation keeps the real audio
        assert Path(list(audios)[0]).parent == tmp_path / "val" and sf.read(list(audios)[0])[0].any()


def test_bad_sizes_are_refused(tmp_path: Path) -> None:
    prepare = load_example("prepare")
    with pytest.raises(ValueError, match="--test must be at least 1"):
        prepare.prepare(tmp_path, train=2, val=2, test=0)


def test_verl_dataset_builds_the_prompt_eval_uses(prepared: Path, tmp_path: Path) -> None:
    from verl.utils.dataset.rl_dataset import get_dataset_class

    from verl_audio.data.decode import to_array
    from verl_audio.models.audio_features import load_omni_processor
    from verl_audio.models.tiny import build_tiny_omni

    processor = load_omni_processor(build_tiny_omni(tmp_path / "tiny"))
    config = OmegaConf.load(VERL_DATA_YAML)
    config.merge_with({"custom_cls": {"path": "pkg://verl_audio.data.rl_dataset", "name": "AudioRLHFDataset"},
                       "cache_dir": str(tmp_path / "cache"), "max_prompt_length": 128})
    dataset = get_dataset_class(config)(data_files=[str(prepared / "train.parquet")], tokenizer=processor.tokenizer,
                                        config=config, processor=processor)
    assert len(dataset) == 6 and dataset.dropped_overlong == []
    evaluation = load_example("eval")
    for i in range(len(dataset)):
        item, row = dataset[i], dataset.dataframe[i]
        path = row["audios"][0]
        assert item["raw_prompt"] == evaluation.tone_messages(path)
        # the dataset's own length measurement (the agent loop's processor call) equals eval's prompt ids
        assert dataset._measure(row) == len(evaluation.prompt_ids(processor, to_array(path)))
