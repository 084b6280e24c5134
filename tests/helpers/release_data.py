"""ALR-style release folders, prepared parquet and ``AudioRLHFDataset`` instances for the data tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf
import verl
from omegaconf import OmegaConf
from verl.utils.dataset.rl_dataset import get_dataset_class

from verl_audio.data.alr import prepare_alr
from verl_audio.data.rl_dataset import AudioRLHFDataset

VERL_DATA_YAML = Path(verl.__file__).parent / "trainer" / "config" / "data" / "legacy_data.yaml"
SR = 24000
SECONDS = {"0001": 1.0, "0002": 2.0, "0003": 4.0}


def tone(seconds: float, sr: int = SR) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * 300 * np.arange(int(seconds * sr)) / sr)).astype(np.float32)


def write_release(tmp_path: Path) -> Path:
    """A three-problem release folder (dev split); 0003 has a long question text and the longest audio."""
    root = tmp_path / "src"
    meta = []
    for i, (rid, seconds) in enumerate(SECONDS.items()):
        folder = root / "dev" / rid
        folder.mkdir(parents=True)
        sf.write(folder / "question.wav", tone(seconds), SR)
        sf.write(folder / f"answer_{i % 2}.wav", tone(1.0), SR)
        words = " ".join(["premise"] * (200 if rid == "0003" else 5))
        meta.append({"id": rid, "question_file_name": f"{rid}/question.wav", "answer_file_name":
                     f"{rid}/answer_{i % 2}.wav", "annotation_question": f"Is it {words} entailed?",
                     "annotation_answer": "Answer: entailed.", "label": i % 2})
    (root / "dev" / "metadata.jsonl").write_text("".join(json.dumps(m) + "\n" for m in meta))
    return root


def prepare_dev(release: Path, out: Path, modality: str) -> Path:
    (report,) = prepare_alr(release, out, modality, "text", splits=["dev"], progress=False, log=lambda m: None)
    assert report.written == len(SECONDS)
    return report.parquet


def data_config(tmp_path: Path, **overrides):
    config = OmegaConf.load(VERL_DATA_YAML)
    config.merge_with(
        {
            "custom_cls": {"path": "pkg://verl_audio.data.rl_dataset", "name": "AudioRLHFDataset"},
            "cache_dir": str(tmp_path / "cache"),
            "filter_overlong_prompts": True,
            "max_prompt_length": 4096,
            **overrides,
        }
    )
    return config


def make_dataset(parquet: Path, tokenizer, config, processor=None):
    cls = get_dataset_class(config)
    assert cls is AudioRLHFDataset
    return cls(data_files=[str(parquet)], tokenizer=tokenizer, config=config, processor=processor)
