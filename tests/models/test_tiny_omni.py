"""The offline tiny Qwen2.5-Omni: build, load with every class, forward/generate with audio, talker audio."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import (
    AutoConfig,
    AutoTokenizer,
    Qwen2_5OmniForConditionalGeneration,
    Qwen2_5OmniThinkerConfig,
    Qwen2_5OmniThinkerForConditionalGeneration,
)

from verl_audio.contract import ANSWER_CLOSE, ANSWER_OPEN, ENTAILED, NOT_ENTAILED, THINK_CLOSE, THINK_OPEN
from verl_audio.models.audio_features import audio_processor_kwargs, load_omni_processor
from verl_audio.models.tiny import build_tiny_omni, main
from verl_audio.models.tiny_tokenizer import QWEN_FIRST_ADDED_ID, QWEN_MODEL_VOCAB, QWEN_OMNI_ADDED_TOKENS

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _timed_build(out: Path, **kwargs: object) -> Path:
    start = time.perf_counter()
    path = build_tiny_omni(out, **kwargs)  # type: ignore[arg-type]
    print(f"built {out.name} {kwargs} in {time.perf_counter() - start:.2f}s")
    return path


@pytest.fixture(scope="module")
def thinker_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _timed_build(tmp_path_factory.mktemp("tiny") / "thinker")


@pytest.fixture(scope="module")
def talker_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _timed_build(tmp_path_factory.mktemp("tiny") / "talker", talker=True)


def _prompt(processor, seconds: float, seed: int = 0) -> tuple[str, np.ndarray]:
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": [{"type": "audio", "audio": "q.wav"}, {"type": "text", "text": "Entailed?"}]},
    ]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    audio = (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * 16000))).astype(np.float32)
    return text, audio


def _assert_loads_exactly(model: torch.nn.Module, path: Path, prefix: str = "") -> None:
    """Every parameter/buffer the model saves comes from the file, unchanged (no missing, no random init)."""
    saved = load_file(path / "model.safetensors")
    state = model.state_dict()
    assert set(state) == {k[len(prefix) :] for k in saved if k.startswith(prefix)}
    assert all(torch.equal(state[k], saved[prefix + k]) for k in state)


def test_thinker_checkpoint_layout(thinker_dir: Path) -> None:
    files = {p.name for p in thinker_dir.iterdir()}
    assert {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "spk_dict.pt",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        "preprocessor_config.json",
        "video_preprocessor_config.json",
    } <= files
    config = AutoConfig.from_pretrained(thinker_dir)
    assert config.model_type == "qwen2_5_omni" and config.enable_audio_output is False
    assert all(k.startswith("thinker.") for k in load_file(thinker_dir / "model.safetensors"))
    tokenizer = AutoTokenizer.from_pretrained(thinker_dir)
    text = config.thinker_config.text_config
    assert text.hidden_size == 64 and text.num_hidden_layers == 2
    assert sum(text.rope_parameters["mrope_section"]) * 2 == text.hidden_size // text.num_attention_heads
    assert tokenizer.pad_token_id == text.pad_token_id == tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert tokenizer.eos_token == "<|im_end|>" and text.eos_token_id == tokenizer.eos_token_id
    generation = json.loads((thinker_dir / "generation_config.json").read_text())
    assert generation["eos_token_id"][0] == tokenizer.eos_token_id
    assert generation["pad_token_id"] == tokenizer.pad_token_id
    assert config.thinker_config.audio_token_id == tokenizer.convert_tokens_to_ids(tokenizer.audio_token)


def test_small_vocab_tokenizer(thinker_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(thinker_dir)
    assert 300 <= len(tokenizer) <= 600
    assert len(tokenizer) < AutoConfig.from_pretrained(thinker_dir).thinker_config.text_config.vocab_size
    for tag in (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE):
        assert len(tokenizer(tag, add_special_tokens=False)["input_ids"]) == 1
    for word in (ENTAILED, NOT_ENTAILED, "high", "low"):
        assert len(tokenizer(" " + word, add_special_tokens=False)["input_ids"]) <= 2
    answer = f"{THINK_OPEN}The speaker agrees.{THINK_CLOSE}\n{ANSWER_OPEN}{NOT_ENTAILED}{ANSWER_CLOSE}"
    ids = tokenizer("<|im_start|>assistant\n<|audio_bos|><|AUDIO|><|audio_eos|>" + answer + "<|im_end|>")["input_ids"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "assistant\n" + answer
    assert tokenizer.audio_token == "<|AUDIO|>" and tokenizer.vision_bos_token == "<|vision_bos|>"


def test_qwen_vocab_uses_real_ids(tmp_path: Path) -> None:
    path = _timed_build(tmp_path / "qwen", vocab="qwen")
    tokenizer = AutoTokenizer.from_pretrained(path)
    config = AutoConfig.from_pretrained(path).thinker_config
    real = Qwen2_5OmniThinkerConfig()  # transformers' defaults are the released checkpoint's ids
    assert len(tokenizer) == QWEN_FIRST_ADDED_ID + len(QWEN_OMNI_ADDED_TOKENS)
    assert config.text_config.vocab_size == QWEN_MODEL_VOCAB == 151936
    for name in ("audio_token_id", "image_token_id", "video_token_id", "audio_start_token_id", "audio_end_token_id"):
        assert getattr(config, name) == getattr(real, name)
    assert tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>"]) == [
        151643,
        151644,
        151645,
        151646,
    ]
    assert tokenizer.decode([151644, 151646, 151645], skip_special_tokens=True) == ""


def test_both_classes_load_thinker_checkpoint(thinker_dir: Path) -> None:
    full = Qwen2_5OmniForConditionalGeneration.from_pretrained(thinker_dir)
    assert not full.has_talker and set(full.speaker_map) == {"Chelsie", "Ethan"}
    _assert_loads_exactly(full, thinker_dir)
    thinker = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(thinker_dir)
    _assert_loads_exactly(thinker, thinker_dir, prefix="thinker.")


def test_thinker_forward_and_generate_with_audio(thinker_dir: Path) -> None:
    processor = load_omni_processor(thinker_dir)
    model = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(thinker_dir).eval()
    (text_a, audio_a), (text_b, audio_b) = _prompt(processor, 4.0), _prompt(processor, 2.5, seed=1)
    audios = [audio_a, audio_b]
    inputs = processor(
        text=[text_a, text_b], audio=audios, padding=True, return_tensors="pt", **audio_processor_kwargs(audios)
    )
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape == (*inputs["input_ids"].shape, model.config.text_config.vocab_size)
    assert torch.isfinite(logits).all()
    out = model.generate(**inputs, max_new_tokens=6, do_sample=True)
    assert out.shape[0] == 2 and 1 <= out.shape[1] - inputs["input_ids"].shape[1] <= 6
    assert all(isinstance(t, str) for t in processor.batch_decode(out, skip_special_tokens=True))


def test_full_class_text_generate_and_no_audio_without_talker(thinker_dir: Path) -> None:
    processor = load_omni_processor(thinker_dir)
    model = Qwen2_5OmniForConditionalGeneration.from_pretrained(thinker_dir).eval()
    text, audio = _prompt(processor, 2.0)
    inputs = processor(text=text, audio=[audio], return_tensors="pt", **audio_processor_kwargs([audio]))
    # transformers 5.19 builds no talker when audio output is off, and its generate() reads the talker's pad
    # token even for text: text comes from the thinker (what verl-audio's rollouts and eval call)
    assert not model.has_talker and getattr(model, "talker", None) is None
    out = model.thinker.generate(**inputs, max_new_tokens=4)
    assert out.shape[1] > inputs["input_ids"].shape[1]
    with pytest.raises(ValueError, match="talker"):
        model.generate(**inputs, thinker_max_new_tokens=4, return_audio=True)


def test_talker_checkpoint_generates_waveform(talker_dir: Path) -> None:
    config = AutoConfig.from_pretrained(talker_dir)
    assert config.model_type == "qwen2_5_omni" and config.enable_audio_output is True
    model = Qwen2_5OmniForConditionalGeneration.from_pretrained(talker_dir).eval()
    assert model.has_talker
    _assert_loads_exactly(model, talker_dir)
    processor = load_omni_processor(talker_dir)
    text, audio = _prompt(processor, 2.0)
    inputs = processor(text=text, audio=[audio], return_tensors="pt", **audio_processor_kwargs([audio]))
    torch.manual_seed(0)
    sequences, wav = model.generate(
        **inputs, thinker_max_new_tokens=4, talker_max_new_tokens=12, return_audio=True, speaker="Ethan"
    )
    assert sequences.shape[1] > inputs["input_ids"].shape[1]
    assert wav.ndim == 1 and wav.numel() >= 240 and torch.isfinite(wav).all()
    # the thinker class also loads a talker checkpoint (talker/token2wav weights are reported as unused)
    thinker = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(talker_dir)
    _assert_loads_exactly(thinker, talker_dir, prefix="thinker.")


def test_chat_template_renders_qwen_turns(thinker_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(thinker_dir)
    messages = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": [{"type": "text", "text": "Q "}, {"type": "audio", "audio": "a.wav"}]},
        {"role": "assistant", "content": "A"},
    ]
    rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert rendered == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ <|audio_bos|><|AUDIO|><|audio_eos|>"
        "<|im_end|>\n<|im_start|>assistant\nA<|im_end|>\n<|im_start|>assistant\n"
    )
    plain = tokenizer.apply_chat_template(messages[:1], add_generation_prompt=False, tokenize=False)
    assert plain == "<|im_start|>system\nS<|im_end|>\n"
    with pytest.raises(Exception, match="unsupported content item"):
        tokenizer.apply_chat_template([{"role": "user", "content": [{"type": "pdf"}]}], tokenize=False)


def test_cli_writes_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["--out", str(tmp_path / "cli"), "--seed", "3"])
    assert "wrote" in capsys.readouterr().out
    assert (tmp_path / "cli" / "model.safetensors").is_file()


def test_seed_makes_weights_reproducible(tmp_path: Path) -> None:
    a, b, c = (build_tiny_omni(tmp_path / n, seed=s) for n, s in (("a", 1), ("b", 1), ("c", 2)))
    wa, wb, wc = (load_file(p / "model.safetensors") for p in (a, b, c))
    key = "thinker.model.embed_tokens.weight"
    assert torch.equal(wa[key], wb[key]) and not torch.equal(wa[key], wc[key])
    assert (a / "tokenizer.json").read_bytes() == (c / "tokenizer.json").read_bytes()  # the BPE is deterministic


def test_auto_processor_loads_with_torchvision(thinker_dir: Path) -> None:
    pytest.importorskip("torchvision")
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(thinker_dir)
    text, audio = _prompt(processor, 3.0)
    inputs = processor(text=text, audio=[audio], return_tensors="pt", **audio_processor_kwargs([audio]))
    assert int((inputs["input_ids"] == processor.tokenizer.convert_tokens_to_ids("<|AUDIO|>")).sum()) == 75
