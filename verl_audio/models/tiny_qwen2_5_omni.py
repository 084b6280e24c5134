"""A tiny random-weight Qwen2.5-Omni checkpoint and processor, built offline in seconds.

Built by ``python -m verl_audio.models.tiny --family qwen2_5_omni`` (the default family) and by the tests.

The checkpoint is always a full ``qwen2_5_omni`` config (thinker + tiny talker + tiny token2wav configs).
By default ``enable_audio_output`` is false and only thinker weights (``thinker.*``) are written; with
``--talker`` it is true and the talker and token2wav weights are written too. Both
``Qwen2_5OmniForConditionalGeneration`` and ``Qwen2_5OmniThinkerForConditionalGeneration`` load either
layout (the thinker class reads ``thinker_config`` and strips the ``thinker.`` prefix). ``spk_dict.pt``
(speakers "Chelsie" and "Ethan") is always written, because the full class's ``from_pretrained`` and
``generate`` require it. The audio encoder keeps the real geometry (128 mel bins, 100 frames/s, two
stride-2 stages: 25 placeholders per second); only widths and depths shrink.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import (
    GenerationConfig,
    Qwen2_5OmniConfig,
    Qwen2_5OmniForConditionalGeneration,
    Qwen2VLImageProcessorPil,
    WhisperFeatureExtractor,
)

from verl_audio.models.audio_features import disable_audio_truncation, whole_audio_feature_extractor
from verl_audio.models.chat_template import CHAT_TEMPLATE
from verl_audio.models.tiny_tokenizer import EOS_TOKEN, PAD_TOKEN, QWEN_MODEL_VOCAB, Vocab, build_tokenizer

HIDDEN = 64  # thinker (and talker) width
HEAD_DIM = 16  # 4 heads of 16 (the default)
#: thinker/talker head dims the builder offers, with the mrope_section covering head_dim / 2 rotary pairs;
#: vLLM's CPU attention rejects head dim 16, so checkpoints served by vLLM use 32 (2 heads)
MROPE_SECTIONS = {16: [2, 3, 3], 32: [4, 6, 6]}
SPEAKERS = ("Chelsie", "Ethan")
# ids the real checkpoint uses past its tokenizer; the small vocab reserves rows after its tokenizer
QWEN_TTS_TEXT_IDS = {
    "tts_text_pad_token_id": 151859,
    "tts_text_start_token_id": 151860,
    "tts_text_end_token_id": 151861,
}
QWEN_SPEAKER_BOS = {"Chelsie": 151870, "Ethan": 151872}


def _rope(head_dim: int, theta: float = 1_000_000.0) -> dict[str, Any]:
    return {"rope_type": "default", "rope_theta": theta, "mrope_section": list(MROPE_SECTIONS[head_dim])}


def _special_ids(tokenizer: Any, model_vocab: int) -> dict[str, Any]:
    """Token ids the configs need, read from the tokenizer (plus reserved rows for the talker)."""
    ids = {
        name: tokenizer.convert_tokens_to_ids(tok)
        for name, tok in {
            "audio": "<|AUDIO|>",
            "image": "<|IMAGE|>",
            "video": "<|VIDEO|>",
            "audio_bos": "<|audio_bos|>",
            "audio_eos": "<|audio_eos|>",
            "vision_bos": "<|vision_bos|>",
            "vision_eos": "<|vision_eos|>",
            "eos": EOS_TOKEN,
            "pad": PAD_TOKEN,
        }.items()
    }
    ids["user"] = tokenizer("user", add_special_tokens=False)["input_ids"][0]
    if model_vocab == QWEN_MODEL_VOCAB:
        ids["tts"], ids["speaker_bos"] = dict(QWEN_TTS_TEXT_IDS), dict(QWEN_SPEAKER_BOS)
    else:  # rows past the tokenizer, like the real checkpoint's
        free = iter(range(len(tokenizer), model_vocab))
        ids["tts"] = {name: next(free) for name in QWEN_TTS_TEXT_IDS}
        ids["speaker_bos"] = {name: next(free) for name in SPEAKERS}
    return ids


def tiny_config(tokenizer: Any, model_vocab: int, *, talker: bool, head_dim: int = HEAD_DIM) -> Qwen2_5OmniConfig:
    """The tiny ``qwen2_5_omni`` config for ``tokenizer`` (``enable_audio_output`` = ``talker``)."""
    if head_dim not in MROPE_SECTIONS:
        raise ValueError(f"head_dim must be one of {sorted(MROPE_SECTIONS)}, got {head_dim}")
    ids = _special_ids(tokenizer, model_vocab)
    media = {
        "audio_token_index": ids["audio"],
        "image_token_index": ids["image"],
        "video_token_index": ids["video"],
        "audio_start_token_id": ids["audio_bos"],
        "audio_end_token_id": ids["audio_eos"],
    }
    text = dict(
        vocab_size=model_vocab,
        hidden_size=HIDDEN,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=HIDDEN // head_dim,
        num_key_value_heads=2,
        head_dim=head_dim,
        max_position_embeddings=32768,
        rope_parameters=_rope(head_dim),
        tie_word_embeddings=False,
        eos_token_id=ids["eos"],
        pad_token_id=ids["pad"],
    )
    audio = dict(
        num_mel_bins=128,
        encoder_layers=2,
        encoder_attention_heads=2,
        encoder_ffn_dim=64,
        d_model=32,
        output_dim=HIDDEN,
        n_window=100,
        max_source_positions=1500,
    )
    vision = dict(
        depth=1,
        hidden_size=32,
        intermediate_size=64,
        num_heads=2,
        out_hidden_size=HIDDEN,
        fullatt_block_indexes=[0],
        window_size=112,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
    )
    # get_rope_index reads vision_start_token_id, which the thinker config class does not declare
    thinker = dict(
        text_config=text,
        audio_config=audio,
        vision_config=vision,
        user_token_id=ids["user"],
        vision_start_token_id=ids["vision_bos"],
        vision_end_token_id=ids["vision_eos"],
        **media,
    )
    talker_cfg = dict(
        vocab_size=8448,
        embedding_size=HIDDEN,
        hidden_size=HIDDEN,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=HIDDEN // head_dim,
        num_key_value_heads=2,
        head_dim=head_dim,
        max_position_embeddings=32768,
        rope_parameters=_rope(head_dim),
        vision_start_token_id=ids["vision_bos"],
        vision_end_token_id=ids["vision_eos"],
        pad_token_id=8292,
        **ids["tts"],
        **media,
    )
    token2wav = dict(
        # ECAPA: enc_channels[-1] must equal the sum of enc_channels[1:-1] (they are concatenated)
        dit_config=dict(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            head_dim=16,
            ff_mult=2,
            emb_dim=16,
            mel_dim=80,
            num_embeds=8448,
            enc_emb_dim=16,
            enc_dim=16,
            enc_channels=[32, 32, 32, 32, 96],
            enc_attention_channels=16,
            enc_se_channels=16,
            look_ahead_layers=[1],
            look_backward_layers=[0],
            dropout=0.0,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        ),
        bigvgan_config=dict(
            mel_dim=80, upsample_initial_channel=64, resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3, 5]]
        ),
    )
    return Qwen2_5OmniConfig(
        thinker_config=thinker, talker_config=talker_cfg, token2wav_config=token2wav, enable_audio_output=talker
    )


def _speakers(config: Qwen2_5OmniConfig, bos: dict[str, int]) -> dict[str, dict[str, Any]]:
    """Random speaker conditioning in the shapes token2wav expects (cond: enc_emb_dim, ref_mel: mel_dim)."""
    dit = config.token2wav_config.dit_config
    return {
        name: {
            "cond": torch.randn(1, dit.enc_emb_dim),
            "ref_mel": torch.randn(1, 32, dit.mel_dim),
            "bos_token": bos[name],
        }
        for name in SPEAKERS
    }


def _write_processor(out: Path, tokenizer: Any) -> None:
    """Tokenizer, chat template, feature extractor + image processor, and video processor configs.

    The whole-audio defaults are persisted (extractor ``chunk_length`` = MAX_AUDIO_SECONDS, audio
    truncation off in tokenizer_config.json), so the checkpoint keeps whole clips without our helpers.
    """
    disable_audio_truncation(tokenizer)
    tokenizer.save_pretrained(out)
    (out / "chat_template.jinja").write_text(CHAT_TEMPLATE, encoding="utf-8")
    fe: WhisperFeatureExtractor = whole_audio_feature_extractor()
    image = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=28 * 28 * 1280)
    pre = {
        **image.to_dict(),
        **fe.to_dict(),
        "image_processor_type": "Qwen2VLImageProcessor",
        "feature_extractor_type": "WhisperFeatureExtractor",
        "processor_class": "Qwen2_5OmniProcessor",
    }
    pre.pop("mel_filters", None)  # recomputed at load
    (out / "preprocessor_config.json").write_text(json.dumps(pre, indent=2, sort_keys=True) + "\n")
    video = {
        "video_processor_type": "Qwen2VLVideoProcessor",
        "processor_class": "Qwen2_5OmniProcessor",
        "patch_size": 14,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "size": {"shortest_edge": 128 * 28 * 28, "longest_edge": 768 * 28 * 28},
        "image_mean": list(image.image_mean),
        "image_std": list(image.image_std),
    }
    (out / "video_preprocessor_config.json").write_text(json.dumps(video, indent=2, sort_keys=True) + "\n")


def build_tiny_omni(
    out_dir: str | Path, *, talker: bool = False, vocab: Vocab = "small", seed: int = 0, head_dim: int = HEAD_DIM,
    edit_config: Callable[[Qwen2_5OmniConfig], None] | None = None,
) -> Path:
    """Write a random tiny Qwen2.5-Omni checkpoint + processor to ``out_dir`` and return its path.

    ``edit_config`` may change the config (e.g. widths and depths) before the weights are made.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(vocab)
    model_vocab = QWEN_MODEL_VOCAB if vocab == "qwen" else int(math.ceil((len(tokenizer) + 16) / 64) * 64)
    config = tiny_config(tokenizer, model_vocab, talker=talker, head_dim=head_dim)
    if edit_config is not None:
        edit_config(config)
    torch.manual_seed(seed)
    model = Qwen2_5OmniForConditionalGeneration(config).eval()
    ids = _special_ids(tokenizer, model_vocab)
    eos = [ids["eos"], ids["pad"]]  # <|im_end|> ends a turn; <|endoftext|> ends a document
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=ids["pad"])
    model.save_pretrained(out, safe_serialization=True)
    torch.save(_speakers(config, ids["speaker_bos"]), out / "spk_dict.pt")
    _write_processor(out, tokenizer)
    return out
