"""A tiny random Qwen3-Omni-MoE checkpoint (a full ``qwen3_omni_moe`` config) and its processor, offline.

vLLM serves full configs only, so ``config.json`` is always the full config with tiny thinker, talker and code2wav
parts; by default only the thinker's weights are written (``enable_audio_output`` false), as the thinker is what
verl-audio trains. Thinker text: hidden 128, 2 layers, 4 heads (2 kv), head dim 32, interleaved multimodal RoPE
[6, 5, 5], a mixture of 4 experts (top 2, intermediate 64) in every layer. Audio encoder: the real geometry (128
mel bins, three stride-2 convolutions, 13 tokens per 100 frames), d_model 64, 2 layers; a one-block vision encoder
(the class requires it). The token ids are read from the tokenizer into every config, including the fields vLLM
reads that the transformers config classes do not declare (``audio_end_token_id``, the vision ``image_size`` and
``apply_vit_abs_pos_embed``, ``vision_start_token_id`` for ``get_rope_index``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from verl_audio.models.tiny_tokenizer import QWEN_MODEL_VOCAB, Vocab, build_tokenizer

HIDDEN, HEAD_DIM = 128, 32
MROPE_SECTION = [6, 5, 5]  # head_dim / 2 rotary pairs
ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True), ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True), ("<|box_start|>", True), ("<|box_end|>", True), ("<|quad_start|>", True),
    ("<|quad_end|>", True), ("<|vision_start|>", True), ("<|vision_end|>", True), ("<|vision_pad|>", True),
    ("<|image_pad|>", True), ("<|video_pad|>", True), ("<tool_call>", False), ("</tool_call>", False),
    ("<|fim_prefix|>", False), ("<|fim_middle|>", False), ("<|fim_suffix|>", False), ("<|fim_pad|>", False),
    ("<|repo_name|>", False), ("<|file_sep|>", False), ("<tool_response>", False), ("</tool_response>", False),
    ("<think>", False), ("</think>", False), ("<|audio_start|>", True), ("<|audio_end|>", True),
    ("<tts_pad>", True), ("<tts_text_bos>", True), ("<tts_text_eod>", True), ("<tts_text_bos_single>", True),
    ("<|audio_pad|>", True),
)
#: the tokenizer attributes ``Qwen3OmniMoeProcessor`` reads
NAMED_TOKENS = {"image_token": "<|image_pad|>", "audio_token": "<|audio_pad|>", "video_token": "<|video_pad|>",
                "vision_bos_token": "<|vision_start|>", "vision_eos_token": "<|vision_end|>",
                "audio_bos_token": "<|audio_start|>", "audio_eos_token": "<|audio_end|>"}
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'audio' or 'audio' in item or 'audio_url' in item -%}"
    "{{- '<|audio_start|><|audio_pad|><|audio_end|>' -}}"
    "{%- elif item['type'] == 'image' or 'image' in item -%}{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif item['type'] == 'video' or 'video' in item -%}{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- elif item['type'] == 'text' -%}{{- item['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def _config(tokenizer: Any, rows: int, talker: bool) -> dict[str, Any]:
    ids = {name: tokenizer.convert_tokens_to_ids(tok) for name, tok in {
        "audio": "<|audio_pad|>", "image": "<|image_pad|>", "video": "<|video_pad|>", "audio_start": "<|audio_start|>",
        "audio_end": "<|audio_end|>", "vision_start": "<|vision_start|>", "vision_end": "<|vision_end|>",
        "eos": "<|im_end|>", "pad": "<|endoftext|>", "im_start": "<|im_start|>", "tts_pad": "<tts_pad>",
        "tts_bos": "<tts_text_bos>", "tts_eos": "<tts_text_eod>"}.items()}
    words = {w: tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in ("system", "user", "assistant")}
    rope = {"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": list(MROPE_SECTION),
            "interleaved": True, "mrope_interleaved": True}
    text = dict(vocab_size=rows, hidden_size=HIDDEN, intermediate_size=256, num_hidden_layers=2,
                num_attention_heads=HIDDEN // HEAD_DIM, num_key_value_heads=2, head_dim=HEAD_DIM,
                max_position_embeddings=32768, rope_parameters=rope, num_experts=4, num_experts_per_tok=2,
                moe_intermediate_size=64, decoder_sparse_step=1, mlp_only_layers=[], norm_topk_prob=True,
                output_router_logits=False, tie_word_embeddings=False, eos_token_id=ids["eos"],
                pad_token_id=ids["pad"], bos_token_id=None)
    audio = dict(num_mel_bins=128, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=128, d_model=64,
                 max_source_positions=1500, n_window=50, n_window_infer=800, conv_chunksize=500,
                 downsample_hidden_size=32, output_dim=HIDDEN)
    vision = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, in_channels=3, patch_size=16,
                  spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=HIDDEN, num_position_embeddings=64,
                  deepstack_visual_indexes=[0], image_size=128, apply_vit_abs_pos_embed=True)
    thinker = dict(text_config=text, audio_config=audio, vision_config=vision, audio_token_id=ids["audio"],
                   image_token_id=ids["image"], video_token_id=ids["video"], audio_start_token_id=ids["audio_start"],
                   audio_end_token_id=ids["audio_end"], vision_start_token_id=ids["vision_start"],
                   vision_end_token_id=ids["vision_end"], user_token_id=words["user"], position_id_per_seconds=13,
                   seconds_per_chunk=2, tie_word_embeddings=False)
    talker_text = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=2, head_dim=32, num_experts=4, num_experts_per_tok=2,
                       moe_intermediate_size=32, shared_expert_intermediate_size=64, rope_parameters=dict(rope),
                       max_position_embeddings=32768, tie_word_embeddings=False)
    code_predictor = dict(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                          num_attention_heads=2, num_key_value_heads=2, head_dim=32, num_code_groups=4)
    talker_config = dict(text_config=talker_text, code_predictor_config=code_predictor, num_code_groups=4,
                         thinker_hidden_size=HIDDEN, accept_hidden_layer=1, codec_eos_token_id=200,
                         codec_nothink_id=201, codec_think_bos_id=202, codec_think_eos_id=203, codec_pad_id=204,
                         codec_bos_id=205, audio_token_id=ids["audio"], image_token_id=ids["image"],
                         video_token_id=ids["video"], vision_start_token_id=ids["vision_start"],
                         audio_start_token_id=ids["audio_start"], position_id_per_seconds=13,
                         speaker_id={"ethan": 206}, spatial_merge_size=2)
    code2wav = dict(codebook_size=64, hidden_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                    intermediate_size=128, num_quantizers=4, decoder_dim=64, upsample_rates=[2, 2],
                    upsampling_ratios=[2], sliding_window=8, max_position_embeddings=512)
    return dict(thinker_config=thinker, talker_config=talker_config, code2wav_config=code2wav,
                enable_audio_output=talker, im_start_token_id=ids["im_start"], im_end_token_id=ids["eos"],
                tts_pad_token_id=ids["tts_pad"], tts_bos_token_id=ids["tts_bos"], tts_eos_token_id=ids["tts_eos"],
                system_token_id=words["system"], user_token_id=words["user"], assistant_token_id=words["assistant"])


def build_tiny_qwen3_omni(out_dir: str | Path, *, vocab: Vocab = "small", seed: int = 0, talker: bool = False) -> Path:
    """Write a random tiny Qwen3-Omni-MoE checkpoint + processor to ``out_dir`` and return its path."""
    from transformers import (
        GenerationConfig,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
        Qwen3OmniMoeConfig,
        Qwen3OmniMoeForConditionalGeneration,
        Qwen3OmniMoeProcessor,
        WhisperFeatureExtractor,
    )

    from verl_audio.models.audio_features import disable_audio_truncation

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(vocab, ADDED_TOKENS, NAMED_TOKENS)
    rows = QWEN_MODEL_VOCAB if vocab == "qwen" else int(math.ceil((len(tokenizer) + 16) / 64) * 64)
    config = Qwen3OmniMoeConfig(**_config(tokenizer, rows, talker))
    torch.manual_seed(seed)
    model = Qwen3OmniMoeForConditionalGeneration(config).eval()
    eos, pad = tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")
    model.generation_config = GenerationConfig(eos_token_id=[eos, pad], pad_token_id=pad)
    model.save_pretrained(out)
    disable_audio_truncation(tokenizer)
    extractor = WhisperFeatureExtractor(feature_size=128, sampling_rate=16000, hop_length=160, chunk_length=30,
                                        n_fft=400, padding_value=0.0, return_attention_mask=True)
    image = Qwen2VLImageProcessor(patch_size=16, merge_size=2, temporal_patch_size=2, min_pixels=32 * 32 * 4,
                                  max_pixels=32 * 32 * 256)
    video = Qwen2VLVideoProcessor(patch_size=16, merge_size=2, temporal_patch_size=2)
    Qwen3OmniMoeProcessor(image_processor=image, video_processor=video, feature_extractor=extractor,
                          tokenizer=tokenizer, chat_template=CHAT_TEMPLATE).save_pretrained(out)
    return out
