"""AudioRLHFDataset on parquet from the ALR preparation, with verl's own data config."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import verl
from omegaconf import OmegaConf
from verl.utils.dataset.rl_dataset import get_dataset_class

from verl_audio.data.alr import prepare_alr
from verl_audio.data.audio import AudioError
from verl_audio.data.rl_dataset import AudioRLHFDataset, to_array

VERL_DATA_YAML = Path(verl.__file__).parent / "trainer" / "config" / "data" / "legacy_data.yaml"
SR = 24000
SECONDS = {"0001": 1.0, "0002": 2.0, "0003": 4.0}


def _tone(seconds: float, sr: int = SR) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * 300 * np.arange(int(seconds * sr)) / sr)).astype(np.float32)


@pytest.fixture()
def release(tmp_path) -> Path:
    """A three-problem release folder (dev split); 0003 has a long question text and the longest audio."""
    root = tmp_path / "src"
    meta = []
    for i, (rid, seconds) in enumerate(SECONDS.items()):
        folder = root / "dev" / rid
        folder.mkdir(parents=True)
        sf.write(folder / "question.wav", _tone(seconds), SR)
        sf.write(folder / f"answer_{i % 2}.wav", _tone(1.0), SR)
        words = " ".join(["premise"] * (200 if rid == "0003" else 5))
        meta.append({"id": rid, "question_file_name": f"{rid}/question.wav", "answer_file_name":
                     f"{rid}/answer_{i % 2}.wav", "annotation_question": f"Is it {words} entailed?",
                     "annotation_answer": "Answer: entailed.", "label": i % 2})
    (root / "dev" / "metadata.jsonl").write_text("".join(json.dumps(m) + "\n" for m in meta))
    return root


def _prepare(release: Path, out: Path, modality: str) -> Path:
    (report,) = prepare_alr(release, out, modality, "text", splits=["dev"], progress=False, log=lambda m: None)
    assert report.written == len(SECONDS)
    return report.parquet


@pytest.fixture(scope="module")
def tokenizer():
    """A word-level tokenizer with a ChatML template, built offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>"]
    words = "user assistant system is it premise entailed not-entailed ? . : , < > / audio think answer".split()
    vocab = {tok: i for i, tok in enumerate(specials + words)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="<|im_end|>",
                                  pad_token="<|im_end|>", additional_special_tokens=specials[1:])
    tok.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    return tok


@pytest.fixture(scope="module")
def omni(tmp_path_factory):
    """The tiny Qwen2.5-Omni's real processor (about a second to build)."""
    from verl_audio.models.audio_features import load_omni_processor
    from verl_audio.models.tiny import build_tiny_omni

    model_dir = tmp_path_factory.mktemp("tiny")
    build_tiny_omni(model_dir, talker=False, vocab="small")
    return load_omni_processor(model_dir)


def recording(processor):
    """``processor`` (the same parts) with a record of the audio each call receives."""

    class Recording(type(processor)):
        def __call__(self, *args, **kwargs):
            self.audio_seen.extend(kwargs.get("audio") or [])
            return super().__call__(*args, **kwargs)

    out = Recording.from_processor(processor)
    out.audio_seen = []
    return out


def _config(tmp_path: Path, **overrides):
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


def _dataset(parquet: Path, tokenizer, config, processor=None):
    cls = get_dataset_class(config)
    assert cls is AudioRLHFDataset
    return cls(data_files=[str(parquet)], tokenizer=tokenizer, config=config, processor=processor)


def test_text_rows_with_a_plain_tokenizer(release, tmp_path, tokenizer, caplog):
    parquet = _prepare(release, tmp_path / "out", "text")
    ds = _dataset(parquet, tokenizer, _config(tmp_path))
    assert len(ds) == 3 and ds.dropped_overlong == []
    item = ds[1]
    assert item["raw_prompt"][0]["role"] == "user" and isinstance(item["raw_prompt"][0]["content"], str)
    assert item["index"] == 1 and item["extra_info"]["id"] == "0002"
    assert item["reward_model"]["ground_truth"] == "entailed"

    # 0003's question is ~200 words longer: dropped, and reported with its id and length
    with caplog.at_level(logging.WARNING, logger="verl_audio.data.rl_dataset"):
        ds = _dataset(parquet, tokenizer, _config(tmp_path, max_prompt_length=100))
    assert [r["extra_info"]["id"] for r in ds.dataframe] == ["0001", "0002"]
    ((rid, length),) = ds.dropped_overlong
    assert rid == "0003" and length > 200
    assert f"id=0003 tokens={length} > 100" in caplog.text and "dropped 1 of 3" in caplog.text


def test_audio_rows_load_16k_arrays(release, tmp_path, omni):
    parquet = _prepare(release, tmp_path / "out", "audio")
    processor = recording(omni)
    ds = _dataset(parquet, omni.tokenizer, _config(tmp_path), processor)
    assert len(ds) == 3
    # the filter measured the prompts with the decoded audio, whole
    assert sorted(len(a) for a in processor.audio_seen) == [16000 * s for s in (1, 2, 4)]

    item = ds[2]
    (audio_item,) = [c for c in item["raw_prompt"][0]["content"] if c["type"] == "audio"]
    assert audio_item["audio"].endswith("0003/question.wav")
    images, videos, audios = asyncio.run(  # the agent loop's config names the parquet, which records the root
        AudioRLHFDataset.process_multi_modal_info(item["raw_prompt"], image_patch_size=14,
                                                  config=_config(tmp_path, train_files=[str(parquet)]))
    )
    assert images is None and videos is None
    (audio,) = audios
    assert audio.dtype == np.float32 and audio.shape == (4 * 16000,)

    # the prompts measure the whole clips at 25 placeholders per second: 1 s, 2 s and 4 s apart by 25 and 50
    lengths = dict(_dataset(parquet, omni.tokenizer, _config(tmp_path, max_prompt_length=1), omni).dropped_overlong)
    assert lengths["0002"] - lengths["0001"] == 25 and lengths["0003"] - lengths["0002"] == 50
    limit = lengths["0002"] + 25  # between the 2 s and the 4 s question
    short = _dataset(parquet, omni.tokenizer, _config(tmp_path, max_prompt_length=limit), omni)
    assert [rid for rid, _ in short.dropped_overlong] == ["0003"] and len(short) == 2


def test_audio_rows_without_a_processor_are_refused(release, tmp_path, tokenizer):
    parquet = _prepare(release, tmp_path / "out", "audio")
    with pytest.raises(ValueError, match="3 of 3 rows .* carry audio .* no processor"):
        _dataset(parquet, tokenizer, _config(tmp_path, filter_overlong_prompts=False))


def test_bad_audio_under_error_raises_instead_of_dropping(release, tmp_path, omni, monkeypatch):
    monkeypatch.setenv("VERL_AUDIO_ON_BAD_AUDIO", "error")
    parquet = _prepare(release, tmp_path / "out", "audio")
    broken = release / "dev" / "0002" / "question.wav"
    broken.write_bytes(broken.read_bytes()[:100])  # corrupted after preparation
    with pytest.raises(AudioError, match="truncated") as info:
        _dataset(parquet, omni.tokenizer, _config(tmp_path), omni)
    assert info.value.path == str(broken.resolve())
    # drawing the row raises the same way, and so does the agent loop's path
    ds = _dataset(parquet, omni.tokenizer, _config(tmp_path, filter_overlong_prompts=False), omni)
    with pytest.raises(AudioError, match="0002/question.wav"):
        ds[1]
    raw = ds.dataframe[1]
    messages = ds._build_messages(raw, key=ds.prompt_key)
    config = _config(tmp_path, audio_root=str(release))
    with pytest.raises(AudioError, match="0002/question.wav"):
        asyncio.run(AudioRLHFDataset.process_multi_modal_info(messages, 14, config))


def test_other_measuring_errors_name_the_row(release, tmp_path, omni):
    parquet = _prepare(release, tmp_path / "out", "audio")

    class Failing(type(omni)):
        def __call__(self, *args, **kwargs):
            raise KeyError("boom")

    with pytest.raises(RuntimeError, match="row id=0001.*boom"):
        _dataset(parquet, omni.tokenizer, _config(tmp_path), Failing.from_processor(omni))


def test_to_array_accepts_the_usual_references(tmp_path):
    path = tmp_path / "a.wav"
    sf.write(path, _tone(1.0, 8000), 8000)
    for ref in (str(path), path, {"path": str(path)}, {"array": _tone(1.0, 8000), "sampling_rate": 8000}):
        out = to_array(ref)
        assert out.dtype == np.float32 and out.shape == (16000,)
    assert to_array(torch.zeros(320) + 0.1).shape == (320,)  # bare arrays are taken as 16 kHz
    with pytest.raises(AudioError, match="without 'sampling_rate'"):
        to_array({"array": np.zeros(10, np.float32)})
    with pytest.raises(TypeError, match="needs 'path' or 'array'"):
        to_array({"bytes": b""})
    with pytest.raises(TypeError, match="unsupported audio reference"):
        to_array(42)
    with pytest.raises(AudioError, match="missing"):
        to_array(str(tmp_path / "nope.wav"))


def test_with_the_omni_processor(release, tmp_path, omni):
    processor = omni
    parquet = _prepare(release, tmp_path / "out", "both")
    ds = _dataset(parquet, processor.tokenizer, _config(tmp_path), processor)
    assert len(ds) == 3
    item = ds[2]
    _, _, audios = asyncio.run(AudioRLHFDataset.process_multi_modal_info(
        item["raw_prompt"], 14, _config(tmp_path, audio_root=str(release))))
    assert audios[0].shape == (4 * 16000,)
    text = processor.apply_chat_template(item["raw_prompt"], add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], audio=audios, sampling_rate=16000, return_tensors="pt")
    n_audio = int((inputs["input_ids"][0] == processor.tokenizer.convert_tokens_to_ids("<|AUDIO|>")).sum())
    assert 95 <= n_audio <= 105  # the whole 4 s at 25 placeholders per second
    # an ALR-length question (past the 30 s feature-extractor default) is measured whole
    long_path = tmp_path / "long.wav"
    sf.write(long_path, _tone(35.0), SR)
    inputs = processor(text=["<|AUDIO|>"], audio=[to_array(str(long_path))], sampling_rate=16000, return_tensors="pt")
    n_long = int((inputs["input_ids"][0] == processor.tokenizer.convert_tokens_to_ids("<|AUDIO|>")).sum())
    assert 870 <= n_long <= 880
    short = _dataset(parquet, processor.tokenizer, _config(tmp_path, max_prompt_length=n_audio), processor)
    assert "0003" in [rid for rid, _ in short.dropped_overlong]
