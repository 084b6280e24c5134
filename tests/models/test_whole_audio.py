"""Whole-length audio: long clips keep every placeholder, no clip is padded past the longest clip of its call,
counts match the encoder, and a clip's features do not depend on how far it is padded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import Qwen2_5OmniThinkerForConditionalGeneration

from verl_audio.models.audio_features import (
    AUDIO_TOKENS_PER_SECOND,
    MAX_AUDIO_SECONDS,
    WholeAudioOmniProcessor,
    audio_frames,
    audio_processor_kwargs,
    audio_tokens_for_samples,
    check_audio_placeholders,
    expected_audio_tokens,
    extract_audio_features,
    load_omni_processor,
    padded_audio_length,
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
    for kwargs in (audio_processor_kwargs([clip]), audio_processor_kwargs(), {}, {"sampling_rate": SR}):
        out = processor(text=PROMPT, audio=[clip], return_tensors="pt", **kwargs)
        (count,) = _n_audio(processor, out["input_ids"])
        assert count >= 0.95 * AUDIO_TOKENS_PER_SECOND * 90
        assert count == 2250 == audio_tokens_for_samples(len(clip))
        assert int(out["feature_attention_mask"].sum()) == 9000
        assert out["input_features"].shape == (1, 128, 9000)  # unpadded, whatever the kwargs


def test_10s_clip_is_not_padded(processor) -> None:
    clip = _clip(10)
    for kwargs in ({"sampling_rate": SR}, audio_processor_kwargs([clip])):  # verl's call, the explicit kwargs
        out = processor(text=PROMPT, audio=[clip], return_tensors="pt", **kwargs)
        assert _n_audio(processor, out["input_ids"]) == [250]
        assert out["input_features"].shape == (1, 128, 1000) and out["input_features"].dtype == torch.float32
        assert out["feature_attention_mask"].shape == (1, 1000) and int(out["feature_attention_mask"].sum()) == 1000


def test_caller_audio_kwargs_cannot_cut_or_pad(processor) -> None:
    """Whatever a caller asks of the audio, the clip stays whole and unpadded; flat text kwargs still work."""
    clip = _clip(3.3)
    frames = audio_frames(len(clip))
    reference = processor(text=PROMPT, audio=[clip], return_tensors="pt")
    asks = [
        {"audio_kwargs": {"max_length": SR, "truncation": True}},  # would cut to 1 s
        {"audio_kwargs": {"max_length": 60 * SR, "pad_to_multiple_of": 4000}},  # would pad to 60 s
        {"max_length": 4096, "truncation": False, "return_attention_mask": True},  # flat: the text's
        {"audio_kwargs": {"truncation": True}, "text_kwargs": {"padding": "longest"}},
    ]
    for kwargs in asks:
        out = processor(text=PROMPT, audio=[clip], return_tensors="pt", sampling_rate=SR, **kwargs)
        assert out["input_features"].shape == (1, 128, frames), kwargs
        assert torch.equal(out["input_features"], reference["input_features"]), kwargs
        assert torch.equal(out["input_ids"], reference["input_ids"]), kwargs
    with pytest.raises(ValueError, match="max_length"):  # the same key twice stays an error
        processor(text=PROMPT, audio=[clip], max_length=10, text_kwargs={"max_length": 10})


def test_clip_longer_than_window_is_kept_with_defaults(processor) -> None:
    seconds = MAX_AUDIO_SECONDS + 10
    out = processor(text=PROMPT, audio=[_clip(seconds)], return_tensors="pt")
    assert _n_audio(processor, out["input_ids"]) == [AUDIO_TOKENS_PER_SECOND * seconds]
    assert out["input_features"].shape == (1, 128, 100 * seconds)


def test_frames_round_up_and_features_do_not_depend_on_padding(ckpt: Path, processor) -> None:
    """ceil(n / 160) frames; padded to (ceil + 2) hops, a clip's features equal those of the 120 s window."""
    stock = load_omni_processor(ckpt, prepare=False)  # the checkpoint's defaults: pad to 120 s, no cut
    fe = processor.feature_extractor
    for n in (160, 161, 48_123, 10 * SR - 1, 10 * SR, 10 * SR + 1):
        assert audio_frames(n) == -(-n // 160) and padded_audio_length(n) == max(audio_frames(n) + 2, 16) * 160
        clip = _clip(1 + n / SR)[:n]
        ours = extract_audio_features(fe, [clip])
        window = stock(text=PROMPT, audio=[clip], return_tensors="pt", sampling_rate=SR)
        assert window["input_features"].shape[-1] == MAX_AUDIO_SECONDS * 100
        assert int(window["feature_attention_mask"].sum()) == audio_frames(n) == ours["input_features"].shape[-1]
        assert torch.equal(ours["input_features"], window["input_features"][..., : audio_frames(n)])
        assert _n_audio(processor, window["input_ids"]) == [audio_tokens_for_samples(n)]
    with pytest.raises(ValueError, match="empty"):
        audio_frames(0)


def test_checkpoint_keeps_whole_clips_without_helpers(ckpt: Path) -> None:
    raw = load_omni_processor(ckpt, prepare=False)  # only what the checkpoint files say
    assert raw.feature_extractor.chunk_length == MAX_AUDIO_SECONDS
    out = raw(text=PROMPT, audio=[_clip(90)], return_tensors="pt")
    assert _n_audio(raw, out["input_ids"]) == [2250]


def test_prepare_fixes_a_stock_processor(ckpt: Path) -> None:
    stock = _stock_processor(ckpt)
    processor = prepare_omni_processor(stock)
    assert isinstance(processor, WholeAudioOmniProcessor) and processor.tokenizer is stock.tokenizer
    assert prepare_omni_processor(processor) is processor
    assert processor.feature_extractor.n_samples == MAX_AUDIO_SECONDS * SR
    out = processor(text=PROMPT, audio=[_clip(90)], return_tensors="pt")
    assert _n_audio(processor, out["input_ids"]) == [2250]
    assert out["input_features"].shape == (1, 128, 9000)
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
    assert out["input_features"].shape == (2, 128, 9000)  # padded to the longest clip only
    default = processor(text=[PROMPT, PROMPT], audio=clips, padding=True, return_tensors="pt")
    assert torch.equal(default["input_features"], out["input_features"])
    # each clip's features are its own, however long the other clip of the call is
    alone = extract_audio_features(processor.feature_extractor, [clips[1]])["input_features"]
    assert torch.equal(out["input_features"][1:, :, :1000], alone)
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
    # the longest clip plus two hops of zeros: ceil(n / 160) frames, as the padded window gives
    assert kwargs["audio_kwargs"]["max_length"] == 2 * SR + 2 * 160 and kwargs["audio_kwargs"]["truncation"] is False
    assert "max_length" not in kwargs and "truncation" not in kwargs  # would reach the tokenizer too
    assert "max_length" not in audio_processor_kwargs()["audio_kwargs"]  # the static form, for verl's configs
    with pytest.raises(ValueError, match="empty"):
        audio_processor_kwargs([np.zeros(0, np.float32)])
    from verl.utils.tokenizer import build_multimodal_processor_inputs

    clip = _clip(40)
    out = build_multimodal_processor_inputs(
        processor, text=[PROMPT], audio=[clip], mm_processor_kwargs=audio_processor_kwargs()
    )
    assert _n_audio(processor, out["input_ids"]) == [1000]
    assert out["input_features"].shape == (1, 128, 4000)


def test_saved_prepared_processor_keeps_settings(processor, tmp_path: Path) -> None:
    processor.save_pretrained(tmp_path / "saved")
    # saved as the stock class, so that stock transformers loads it
    for name in ("processor_config.json", "tokenizer_config.json"):
        assert json.loads((tmp_path / "saved" / name).read_text())["processor_class"] == "Qwen2_5OmniProcessor"
    reloaded = load_omni_processor(tmp_path / "saved", prepare=False)
    assert type(reloaded).__module__.startswith("transformers.")
    assert reloaded.feature_extractor.chunk_length == MAX_AUDIO_SECONDS
    out = reloaded(text=PROMPT, audio=[_clip(MAX_AUDIO_SECONDS + 5)], return_tensors="pt")
    assert _n_audio(reloaded, out["input_ids"]) == [AUDIO_TOKENS_PER_SECOND * (MAX_AUDIO_SECONDS + 5)]
