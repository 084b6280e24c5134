"""Whole-length audio: long clips keep every placeholder, short clips are not padded, counts match the encoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import Qwen2_5OmniThinkerForConditionalGeneration

from verl_audio.models.audio_features import (
    AUDIO_TOKENS_PER_SECOND,
    MAX_AUDIO_SECONDS,
    WHOLE_AUDIO_KWARGS,
    audio_processor_kwargs,
    audio_tokens_for_samples,
    check_audio_placeholders,
    expected_audio_tokens,
    load_omni_processor,
    prepare_omni_processor,
)
from verl_audio.models.tiny import build_tiny_omni

SR = 16_000
PROMPT = "<|im_start|>user\n<|audio_bos|><|AUDIO|><|audio_eos|>Entailed?<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_omni(tmp_path_factory.mktemp("whole") / "tiny")


@pytest.fixture(scope="module")
def processor(ckpt: Path):
    return load_omni_processor(ckpt)


@pytest.fixture(scope="module")
def thinker(ckpt: Path) -> Qwen2_5OmniThinkerForConditionalGeneration:
    return Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(ckpt).eval()


def _clip(seconds: float, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * SR))).astype(np.float32)


def _n_audio(processor, input_ids: torch.Tensor) -> list[int]:
    audio_id = processor.tokenizer.convert_tokens_to_ids(processor.tokenizer.audio_token)
    return (input_ids == audio_id).sum(-1).tolist()


def _stock_processor(ckpt: Path):
    """The processor as transformers ships it: 30 s window, audio truncation on."""
    processor = load_omni_processor(ckpt, prepare=False)
    fe = processor.feature_extractor
    fe.chunk_length, fe.n_samples, fe.nb_max_frames = 30, 30 * SR, 3000
    processor.tokenizer.init_kwargs.pop("truncation", None)
    return processor


def test_stock_processor_cuts_long_audio(ckpt: Path) -> None:
    stock = _stock_processor(ckpt)
    out = stock(text=PROMPT, audio=[_clip(90)], return_tensors="pt")
    assert _n_audio(stock, out["input_ids"]) == [750]  # cut to 30 s: the problem this module fixes
    short = stock(text=PROMPT, audio=[_clip(10)], return_tensors="pt")
    assert short["input_features"].shape[-1] == 3000  # and a 10 s clip is padded to 30 s


def test_90s_clip_keeps_every_placeholder(processor) -> None:
    clip = _clip(90)
    for kwargs in (audio_processor_kwargs([clip]), WHOLE_AUDIO_KWARGS, {}):
        out = processor(text=PROMPT, audio=[clip], return_tensors="pt", **kwargs)
        (count,) = _n_audio(processor, out["input_ids"])
        assert count >= 0.95 * AUDIO_TOKENS_PER_SECOND * 90
        assert count == 2250 == audio_tokens_for_samples(len(clip))
        assert int(out["feature_attention_mask"].sum()) == 9000
    exact = processor(text=PROMPT, audio=[clip], return_tensors="pt", **audio_processor_kwargs([clip]))
    assert exact["input_features"].shape == (1, 128, 9000)  # unpadded


def test_10s_clip_is_not_padded_to_30s(processor) -> None:
    clip = _clip(10)
    out = processor(text=PROMPT, audio=[clip], return_tensors="pt", **audio_processor_kwargs([clip]))
    assert _n_audio(processor, out["input_ids"]) == [250]
    assert out["input_features"].shape[-1] == 1000 and int(out["feature_attention_mask"].sum()) == 1000


def test_clip_longer_than_window_is_kept_with_defaults(processor) -> None:
    seconds = MAX_AUDIO_SECONDS + 10
    out = processor(text=PROMPT, audio=[_clip(seconds)], return_tensors="pt")
    assert _n_audio(processor, out["input_ids"]) == [AUDIO_TOKENS_PER_SECOND * seconds]


def test_checkpoint_keeps_whole_clips_without_helpers(ckpt: Path) -> None:
    raw = load_omni_processor(ckpt, prepare=False)  # only what the checkpoint files say
    assert raw.feature_extractor.chunk_length == MAX_AUDIO_SECONDS
    out = raw(text=PROMPT, audio=[_clip(90)], return_tensors="pt")
    assert _n_audio(raw, out["input_ids"]) == [2250]


def test_prepare_fixes_a_stock_processor(ckpt: Path) -> None:
    processor = prepare_omni_processor(_stock_processor(ckpt))
    assert processor.feature_extractor.n_samples == MAX_AUDIO_SECONDS * SR
    out = processor(text=PROMPT, audio=[_clip(90)], return_tensors="pt")
    assert _n_audio(processor, out["input_ids"]) == [2250]
    with pytest.raises(TypeError, match="WhisperFeatureExtractor"):
        prepare_omni_processor(processor.tokenizer)


def test_90s_forward_matches_audio_encoder(processor, thinker) -> None:
    clip = _clip(90)
    out = processor(text=PROMPT, audio=[clip], return_tensors="pt", **audio_processor_kwargs([clip]))
    n = check_audio_placeholders(out["input_ids"], out["feature_attention_mask"], thinker.config.audio_token_id)
    with torch.no_grad():
        encoded = thinker.get_audio_features(out["input_features"], out["feature_attention_mask"]).last_hidden_state
        logits = thinker(**out).logits
    assert encoded.shape[0] == n == 2250
    assert logits.shape[:2] == out["input_ids"].shape and torch.isfinite(logits).all()


def test_batch_of_two_lengths_in_one_forward(processor, thinker) -> None:
    clips = [_clip(90), _clip(10, seed=1)]
    out = processor(
        text=[PROMPT, PROMPT], audio=clips, padding=True, return_tensors="pt", **audio_processor_kwargs(clips)
    )
    assert _n_audio(processor, out["input_ids"]) == expected_audio_tokens(out["feature_attention_mask"]) == [2250, 250]
    assert out["input_features"].shape[-1] == 9000  # padded to the longest clip only
    with torch.no_grad():
        logits = thinker(**out).logits
    assert logits.shape[:2] == out["input_ids"].shape and torch.isfinite(logits).all()


def test_placeholder_mismatch_is_reported(processor, thinker) -> None:
    clip = _clip(10)
    out = processor(text=PROMPT, audio=[clip], return_tensors="pt", **audio_processor_kwargs([clip]))
    ids = out["input_ids"].clone()
    ids[ids == thinker.config.audio_token_id] = thinker.config.text_config.pad_token_id
    with pytest.raises(ValueError, match="placeholders"):
        check_audio_placeholders(ids, out["feature_attention_mask"], thinker.config.audio_token_id)


def test_kwargs_shape_suits_verl(processor) -> None:
    kwargs = audio_processor_kwargs([_clip(1.0), _clip(2.0)])
    assert kwargs["audio_kwargs"]["max_length"] == 2 * SR and kwargs["audio_kwargs"]["truncation"] is False
    assert "max_length" not in kwargs and "truncation" not in kwargs  # would reach the tokenizer too
    assert "max_length" not in WHOLE_AUDIO_KWARGS["audio_kwargs"]
    with pytest.raises(ValueError, match="empty"):
        audio_processor_kwargs([np.zeros(0, np.float32)])
    from verl.utils.tokenizer import build_multimodal_processor_inputs

    clip = _clip(40)
    out = build_multimodal_processor_inputs(
        processor, text=[PROMPT], audio=[clip], mm_processor_kwargs=WHOLE_AUDIO_KWARGS
    )
    assert _n_audio(processor, out["input_ids"]) == [1000]


def test_saved_prepared_processor_keeps_settings(processor, tmp_path: Path) -> None:
    processor.save_pretrained(tmp_path / "saved")
    reloaded = load_omni_processor(tmp_path / "saved", prepare=False)
    assert reloaded.feature_extractor.chunk_length == MAX_AUDIO_SECONDS
    out = reloaded(text=PROMPT, audio=[_clip(MAX_AUDIO_SECONDS + 5)], return_tensors="pt")
    assert _n_audio(reloaded, out["input_ids"]) == [AUDIO_TOKENS_PER_SECOND * (MAX_AUDIO_SECONDS + 5)]
