"""Shared fixtures: the optional reference data in ../shared, a tiny Omni processor, a release folder, a tiny
Whisper. Helpers (paths, recipe runs, datasets, Ray nodes) are in ``tests/helpers``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_alr() -> Path:
    """../shared/alr, or skip: users' clones do not carry it."""
    path = SHARED / "alr"
    if not (path / "dev.jsonl").is_file():
        pytest.skip(f"reference data not present at {path}")
    return path


@pytest.fixture()
def release(tmp_path: Path) -> Path:
    """A three-problem release folder (dev split); 0003 has a long question text and the longest audio."""
    from helpers.release_data import write_release

    return write_release(tmp_path)


@pytest.fixture(scope="module")
def omni(tmp_path_factory):
    """The tiny Qwen2.5-Omni's real processor (about a second to build)."""
    from verl_audio.models.audio_features import load_omni_processor
    from verl_audio.models.tiny import build_tiny_omni

    model_dir = tmp_path_factory.mktemp("tiny")
    build_tiny_omni(model_dir, talker=False, vocab="small")
    return load_omni_processor(model_dir)


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A randomly initialised Whisper with a byte-level tokenizer, built and saved offline."""
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperTokenizer,
    )

    path = tmp_path_factory.mktemp("tiny_whisper")
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    others = [b for b in range(256) if b not in printable]  # GPT-2 byte-to-unicode table
    byte_chars = [chr(b) for b in printable] + [chr(256 + i) for i in range(len(others))]
    (path / "vocab.json").write_text(json.dumps({c: i for i, c in enumerate(byte_chars)}))
    (path / "merges.txt").write_text("#version: 0.2\n")
    eot = "<|endoftext|>"
    tokenizer = WhisperTokenizer(
        str(path / "vocab.json"), str(path / "merges.txt"), unk_token=eot, bos_token=eot, eos_token=eot, pad_token=eot
    )
    specials = ["<|startoftranscript|>", "<|en|>", "<|translate|>", "<|transcribe|>", "<|notimestamps|>"]
    tokenizer.add_special_tokens({"additional_special_tokens": specials})
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in [eot, *specials]}
    config = WhisperConfig(
        vocab_size=len(tokenizer),
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_target_positions=64,
        decoder_start_token_id=ids["<|startoftranscript|>"],
        eos_token_id=ids[eot],
        pad_token_id=ids[eot],
        bos_token_id=ids[eot],
        begin_suppress_tokens=None,
        suppress_tokens=None,
    )
    model = WhisperForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        decoder_start_token_id=ids["<|startoftranscript|>"],
        eos_token_id=ids[eot],
        pad_token_id=ids[eot],
        max_length=24,
        no_timestamps_token_id=ids["<|notimestamps|>"],
        lang_to_id={"<|en|>": ids["<|en|>"]},
        task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
        is_multilingual=True,
    )
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(path)
    return str(path)
