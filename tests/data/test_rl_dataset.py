"""AudioRLHFDataset on parquet from the ALR preparation, with verl's own data config."""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import pytest
import soundfile as sf
import torch

from helpers.release_data import SR, data_config, make_dataset, prepare_dev, tone
from verl_audio.data.audio import AudioError
from verl_audio.data.decode import to_array
from verl_audio.data.rl_dataset import AudioRLHFDataset


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


def recording(processor):
    """``processor`` (the same parts) with a record of the audio each call receives."""

    class Recording(type(processor)):
        def __call__(self, *args, **kwargs):
            self.audio_seen.extend(kwargs.get("audio") or [])
            return super().__call__(*args, **kwargs)

    out = Recording.from_processor(processor)
    out.audio_seen = []
    return out


def test_text_rows_with_a_plain_tokenizer(release, tmp_path, tokenizer, caplog):
    parquet = prepare_dev(release, tmp_path / "out", "text")
    ds = make_dataset(parquet, tokenizer, data_config(tmp_path))
    assert len(ds) == 3 and ds.dropped_overlong == []
    item = ds[1]
    assert item["raw_prompt"][0]["role"] == "user" and isinstance(item["raw_prompt"][0]["content"], str)
    assert item["index"] == 1 and item["extra_info"]["id"] == "0002"
    assert item["reward_model"]["ground_truth"] == "entailed"

    # 0003's question is ~200 words longer: dropped, and reported with its id and length
    with caplog.at_level(logging.WARNING, logger="verl_audio.data.rl_dataset"):
        ds = make_dataset(parquet, tokenizer, data_config(tmp_path, max_prompt_length=100))
    assert [r["extra_info"]["id"] for r in ds.dataframe] == ["0001", "0002"]
    ((rid, length),) = ds.dropped_overlong
    assert rid == "0003" and length > 200
    assert f"id=0003 tokens={length} > 100" in caplog.text and "dropped 1 of 3" in caplog.text


def test_audio_rows_load_16k_arrays(release, tmp_path, omni):
    parquet = prepare_dev(release, tmp_path / "out", "audio")
    processor = recording(omni)
    ds = make_dataset(parquet, omni.tokenizer, data_config(tmp_path), processor)
    assert len(ds) == 3
    # the filter measured the prompts with the decoded audio, whole
    assert sorted(len(a) for a in processor.audio_seen) == [16000 * s for s in (1, 2, 4)]

    item = ds[2]
    (audio_item,) = [c for c in item["raw_prompt"][0]["content"] if c["type"] == "audio"]
    assert audio_item["audio"].endswith("0003/question.wav")
    images, videos, audios = asyncio.run(  # the agent loop's config names the parquet, which records the root
        AudioRLHFDataset.process_multi_modal_info(item["raw_prompt"], image_patch_size=14,
                                                  config=data_config(tmp_path, train_files=[str(parquet)]))
    )
    assert images is None and videos is None
    (audio,) = audios
    assert audio.dtype == np.float32 and audio.shape == (4 * 16000,)

    # the prompts measure the whole clips at 25 placeholders per second: 1 s, 2 s and 4 s apart by 25 and 50
    lengths = dict(make_dataset(parquet, omni.tokenizer, data_config(tmp_path, max_prompt_length=1), omni).dropped_overlong)
    assert lengths["0002"] - lengths["0001"] == 25 and lengths["0003"] - lengths["0002"] == 50
    limit = lengths["0002"] + 25  # between the 2 s and the 4 s question
    short = make_dataset(parquet, omni.tokenizer, data_config(tmp_path, max_prompt_length=limit), omni)
    assert [rid for rid, _ in short.dropped_overlong] == ["0003"] and len(short) == 2


def test_audio_rows_without_a_processor_are_refused(release, tmp_path, tokenizer):
    parquet = prepare_dev(release, tmp_path / "out", "audio")
    with pytest.raises(ValueError, match="3 of 3 rows .* carry audio .* no processor"):
        make_dataset(parquet, tokenizer, data_config(tmp_path, filter_overlong_prompts=False))


def test_bad_audio_under_error_raises_instead_of_dropping(release, tmp_path, omni, monkeypatch):
    monkeypatch.setenv("VERL_AUDIO_ON_BAD_AUDIO", "error")
    parquet = prepare_dev(release, tmp_path / "out", "audio")
    broken = release / "dev" / "0002" / "question.wav"
    broken.write_bytes(broken.read_bytes()[:100])  # corrupted after preparation
    with pytest.raises(AudioError, match="truncated") as info:
        make_dataset(parquet, omni.tokenizer, data_config(tmp_path), omni)
    assert info.value.path == str(broken.resolve())
    # drawing the row raises the same way, and so does the agent loop's path
    ds = make_dataset(parquet, omni.tokenizer, data_config(tmp_path, filter_overlong_prompts=False), omni)
    with pytest.raises(AudioError, match="0002/question.wav"):
        ds[1]
    raw = ds.dataframe[1]
    messages = ds._build_messages(raw, key=ds.prompt_key)
    config = data_config(tmp_path, audio_root=str(release))
    with pytest.raises(AudioError, match="0002/question.wav"):
        asyncio.run(AudioRLHFDataset.process_multi_modal_info(messages, 14, config))


def test_other_measuring_errors_name_the_row(release, tmp_path, omni):
    parquet = prepare_dev(release, tmp_path / "out", "audio")

    class Failing(type(omni)):
        def __call__(self, *args, **kwargs):
            raise KeyError("boom")

    with pytest.raises(RuntimeError, match="row id=0001.*boom"):
        make_dataset(parquet, omni.tokenizer, data_config(tmp_path), Failing.from_processor(omni))


def test_to_array_accepts_the_usual_references(tmp_path):
    path = tmp_path / "a.wav"
    sf.write(path, tone(1.0, 8000), 8000)
    for ref in (str(path), path, {"path": str(path)}, {"array": tone(1.0, 8000), "sampling_rate": 8000}):
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
    parquet = prepare_dev(release, tmp_path / "out", "both")
    ds = make_dataset(parquet, processor.tokenizer, data_config(tmp_path), processor)
    assert len(ds) == 3
    item = ds[2]
    _, _, audios = asyncio.run(AudioRLHFDataset.process_multi_modal_info(
        item["raw_prompt"], 14, data_config(tmp_path, audio_root=str(release))))
    assert audios[0].shape == (4 * 16000,)
    text = processor.apply_chat_template(item["raw_prompt"], add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], audio=audios, sampling_rate=16000, return_tensors="pt")
    n_audio = int((inputs["input_ids"][0] == processor.tokenizer.convert_tokens_to_ids("<|AUDIO|>")).sum())
    assert 95 <= n_audio <= 105  # the whole 4 s at 25 placeholders per second
    # an ALR-length question (past the 30 s feature-extractor default) is measured whole
    long_path = tmp_path / "long.wav"
    sf.write(long_path, tone(35.0), SR)
    inputs = processor(text=["<|AUDIO|>"], audio=[to_array(str(long_path))], sampling_rate=16000, return_tensors="pt")
    n_long = int((inputs["input_ids"][0] == processor.tokenizer.convert_tokens_to_ids("<|AUDIO|>")).sum())
    assert 870 <= n_long <= 880
    short = make_dataset(parquet, processor.tokenizer, data_config(tmp_path, max_prompt_length=n_audio), processor)
    assert "0003" in [rid for rid, _ in short.dropped_overlong]
