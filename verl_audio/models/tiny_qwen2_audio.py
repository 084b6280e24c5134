"""A tiny random Qwen2-Audio checkpoint (``Qwen2AudioForConditionalGeneration``) and its processor, offline.

Text: Qwen2, hidden 128, 2 layers, 4 heads (2 kv), head dim 32 (vLLM's CPU attention needs 32+). Audio: the
real geometry (128 mel bins, conv strides 1 and 2, avg-pool 2, ``max_source_positions`` 1500: exactly 3,000
frames = 30 s per item, 25 tokens per second), d_model 64, 2 layers. The processor is the stock
``Qwen2AudioProcessor`` with a 30 s Whisper extractor and its stock chat template.

transformers 5.19's ``save_pretrained`` writes the language model as ``language_model.model.model.*``, a layout
vLLM cannot load (it has no name mapper for this model); the file is rewritten to the released checkpoints'
layout (``language_model.model.*``, ``language_model.lm_head.*``, ``audio_tower.*``, ``multi_modal_projector.*``),
which transformers loads too.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from verl_audio.models.tiny_tokenizer import QWEN_MODEL_VOCAB, Vocab, build_tokenizer

HIDDEN, HEAD_DIM = 128, 32
ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True),
    ("<|AUDIO|>", True), ("<|audio_bos|>", True), ("<|audio_eos|>", True),
)
NAMED_TOKENS = {"audio_token": "<|AUDIO|>", "audio_bos_token": "<|audio_bos|>", "audio_eos_token": "<|audio_eos|>"}


def released_name(name: str) -> str:
    """A tensor name as transformers 5.19 saves it -> the released checkpoints' name (what vLLM loads)."""
    for old, new in (("language_model.model.model.", "language_model.model."),
                     ("model.language_model.", "language_model.model."),
                     ("model.audio_tower.", "audio_tower."), ("model.multi_modal_projector.", "multi_modal_projector.")):
        if name.startswith(old):
            return new + name[len(old):]
    return "language_model.lm_head.weight" if name == "lm_head.weight" else name


def build_tiny_qwen2_audio(out_dir: str | Path, *, vocab: Vocab = "small", seed: int = 0) -> Path:
    """Write a random tiny Qwen2-Audio checkpoint + processor to ``out_dir`` and return its path."""
    from transformers import (
        GenerationConfig,
        Qwen2AudioConfig,
        Qwen2AudioForConditionalGeneration,
        Qwen2AudioProcessor,
        WhisperFeatureExtractor,
    )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(vocab, ADDED_TOKENS, NAMED_TOKENS)
    rows = QWEN_MODEL_VOCAB if vocab == "qwen" else int(math.ceil((len(tokenizer) + 16) / 64) * 64)
    ids = {name: tokenizer.convert_tokens_to_ids(tok) for name, tok in
           (("audio", "<|AUDIO|>"), ("eos", "<|im_end|>"), ("pad", "<|endoftext|>"))}
    config = Qwen2AudioConfig(
        audio_token_index=ids["audio"],
        text_config=dict(model_type="qwen2", vocab_size=rows, hidden_size=HIDDEN, intermediate_size=256,
                         num_hidden_layers=2, num_attention_heads=HIDDEN // HEAD_DIM, num_key_value_heads=2,
                         head_dim=HEAD_DIM, max_position_embeddings=32768,
                         rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
                         tie_word_embeddings=False, eos_token_id=ids["eos"], pad_token_id=ids["pad"], bos_token_id=None),
        audio_config=dict(model_type="qwen2_audio_encoder", num_mel_bins=128, encoder_layers=2,
                          encoder_attention_heads=2, encoder_ffn_dim=128, d_model=64, max_source_positions=1500),
    )
    torch.manual_seed(seed)
    model = Qwen2AudioForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(eos_token_id=[ids["eos"], ids["pad"]], pad_token_id=ids["pad"])
    model.save_pretrained(out)
    weights = out / "model.safetensors"
    save_file({released_name(k): v for k, v in load_file(str(weights)).items()}, str(weights), metadata={"format": "pt"})
    extractor = WhisperFeatureExtractor(feature_size=128, sampling_rate=16000, hop_length=160, chunk_length=30,
                                        n_fft=400, padding_value=0.0, return_attention_mask=True)
    Qwen2AudioProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(out)
    return out
