"""The (1, 4, L) position ids verl's agent loop builds for Omni prompts equal what the model computes.

verl side: ``AgentLoopWorker._agent_loop_postprocess`` (left-pads the prompt, right-pads the response,
then ``_compute_multi_modal_inputs`` + ``_compute_position_ids`` over prompt + response at once) with
the processor ``hf_processor`` returns. Model side: ``Qwen2_5OmniThinkerForConditionalGeneration`` of
the same checkpoint: its ``get_rope_index`` called as its ``forward`` calls it, the positions its
``forward`` actually hands the text model, and its logits.
"""

from __future__ import annotations

import asyncio
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import verl  # noqa: F401  (loads the verl_audio plugin, which installs the processor patch)
from omegaconf import OmegaConf
from PIL import Image

from verl_audio.models.audio_features import SAMPLING_RATE
from verl_audio.models.tiny import build_tiny_omni

PROMPT_LENGTH, RESPONSE_LENGTH = 160, 12
RESPONSE = [21, 22, 23, 24, 25]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_omni(tmp_path_factory.mktemp("omni") / "tiny")


@pytest.fixture(scope="module")
def processor(tiny: Path):
    from verl.utils import hf_processor

    return hf_processor(str(tiny))


@pytest.fixture(scope="module")
def tokenizer(tiny: Path):
    from verl.utils import hf_tokenizer

    return hf_tokenizer(str(tiny))


@pytest.fixture(scope="module")
def thinker(tiny: Path):
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    return Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(tiny, attn_implementation="sdpa").eval()


def _clip(seconds: float, seed: int) -> np.ndarray:
    return (np.random.RandomState(seed).randn(int(seconds * SAMPLING_RATE)) * 0.1).astype(np.float32)


def _case(name: str) -> tuple[list[dict], dict]:
    """Messages and verl's multi_modal_data for one prompt shape."""
    audio, audio2 = _clip(2.0, 0), _clip(1.3, 1)
    image = Image.fromarray(np.random.RandomState(2).randint(0, 255, (56, 84, 3), dtype=np.uint8))
    content = {
        "audio_only": [{"type": "audio", "audio": audio}],
        "text_only": [{"type": "text", "text": "Is it true that the meeting starts at nine?"}],
        "audio_text": [{"type": "audio", "audio": audio}, {"type": "text", "text": "Is it true?"}],
        "two_audios_text": [{"type": "audio", "audio": audio}, {"type": "text", "text": "and"},
                            {"type": "audio", "audio": audio2}, {"type": "text", "text": "Same speaker?"}],
        # with a vision grid transformers takes its TMRoPE branch, the one that reads audio_seqlens
        "image_audio_text": [{"type": "image", "image": image}, {"type": "audio", "audio": audio},
                             {"type": "text", "text": "Does the sound fit the picture?"}],
    }[name]
    data = {}
    audios = [c["audio"] for c in content if c["type"] == "audio"]
    images = [c["image"] for c in content if c["type"] == "image"]
    if audios:
        data["audios"] = audios
    if images:
        data["images"] = images
    return [{"role": "user", "content": content}], data


def _verl_postprocess(processor, tokenizer, messages: list[dict], data: dict):
    from verl.experimental.agent_loop.agent_loop import AgentLoopMetrics, AgentLoopOutput, AgentLoopWorker

    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    direct = processor(text=[text], audio=data.get("audios"), images=data.get("images"),
                       sampling_rate=SAMPLING_RATE, return_tensors="pt")
    output = AgentLoopOutput(prompt_ids=direct["input_ids"][0].tolist(), response_ids=RESPONSE,
                             response_mask=[1] * len(RESPONSE), multi_modal_data=data, metrics=AgentLoopMetrics())
    worker = AgentLoopWorker.__new__(AgentLoopWorker)  # only the attributes postprocess reads
    worker.processor, worker.tokenizer, worker.mm_processor_kwargs = processor, tokenizer, {}
    worker.rollout_config = OmegaConf.create({"prompt_length": PROMPT_LENGTH, "response_length": RESPONSE_LENGTH})
    worker.reward_loop_worker_handles, worker.distillation_enabled = None, False
    internal = asyncio.run(worker._agent_loop_postprocess(output, validate=False, raw_prompt=messages))
    return direct, internal


def _model_inputs(direct, internal) -> dict:
    """The actor-side forward inputs: verl's padded ids/mask + the processor's media tensors."""
    inputs = {"input_ids": internal.input_ids, "attention_mask": internal.attention_mask}
    for key in ("input_features", "feature_attention_mask", "pixel_values", "image_grid_thw"):
        if key in direct:
            inputs[key] = direct[key]
    return inputs


CASES = ["audio_only", "text_only", "audio_text", "two_audios_text", "image_audio_text"]


@pytest.mark.parametrize("case", CASES)
def test_verl_positions_equal_the_models(processor, tokenizer, thinker, case: str) -> None:
    messages, data = _case(case)
    direct, internal = _verl_postprocess(processor, tokenizer, messages, data)
    verl_pos = internal.position_ids[0]  # (4, L)
    ids, mask = internal.input_ids, internal.attention_mask
    n_prompt, total = direct["input_ids"].shape[1], PROMPT_LENGTH + RESPONSE_LENGTH
    assert verl_pos.shape == (4, total) and verl_pos.dtype == torch.long
    assert mask[0, PROMPT_LENGTH - n_prompt - 1] == 0 and mask[0, -1] == 0  # left and right padding present

    # 1) transformers' get_rope_index, called the way Qwen2_5OmniThinker.forward calls it
    fam = direct.get("feature_attention_mask")
    expected, _ = thinker.get_rope_index(ids, direct.get("image_grid_thw"), None, mask, False,
                                         None if fam is None else fam.sum(-1), None)
    assert torch.equal(verl_pos[1:], expected[:, 0])
    # the text row: 0.. over attended tokens (prompt then response), 1 on padding
    valid = mask[0].bool()
    assert torch.equal(verl_pos[0, valid], torch.arange(int(valid.sum())))
    assert torch.all(verl_pos[:, ~valid] == 1)
    if "images" not in data:  # audio and text take consecutive positions in all three rows
        assert torch.equal(verl_pos[1:, valid], verl_pos[0, valid].expand(3, -1))
    else:  # the image span has 2-D (h, w) positions, so the rows differ there
        assert not torch.equal(verl_pos[2, valid], verl_pos[3, valid])

    # 2) the positions the model's own forward hands its text model
    seen = {}
    hook = thinker.model.register_forward_pre_hook(lambda m, a, kw: seen.update(kw), with_kwargs=True)
    try:
        with torch.no_grad():
            reference = thinker(**_model_inputs(direct, internal)).logits
    finally:
        hook.remove()
    assert torch.equal(seen["position_ids"][:, 0], verl_pos[1:])

    # 3) the actor's forward with verl's (4, B, L) ids gives the model's own logits, padded ...
    with torch.no_grad():
        padded = thinker(**_model_inputs(direct, internal), position_ids=verl_pos[:, None]).logits
    torch.testing.assert_close(padded[0, valid], reference[0, valid], rtol=0, atol=1e-5)
    # ... and with padding removed, as verl's engine packs sequences (attended tokens only)
    packed_inputs = _model_inputs(direct, internal)
    packed_inputs["input_ids"] = ids[:, valid]
    packed_inputs["attention_mask"] = torch.ones_like(packed_inputs["input_ids"])
    with torch.no_grad():
        packed = thinker(**packed_inputs, position_ids=verl_pos[:, None, valid]).logits
    torch.testing.assert_close(packed[0], reference[0, valid], rtol=0, atol=1e-5)


def test_audio_lengths_reach_get_rope_index(processor) -> None:
    """get_rope_index_kwargs turns verl's multi_modal_inputs into the audio lengths the model uses."""
    clips = [_clip(2.0, 0), _clip(1.3, 1)]
    out = processor(text=["<|audio_bos|><|AUDIO|><|audio_eos|>" * 2], audio=clips, sampling_rate=SAMPLING_RATE,
                    return_tensors="pt")
    kwargs = processor.get_rope_index_kwargs(dict(out))
    assert kwargs["audio_seqlens"].tolist() == [200, 130]  # mel frames, 100 per second
    assert processor.get_rope_index_kwargs({}) == {}


def test_a_config_missing_rope_fields_is_refused_up_front() -> None:
    """A thinker config without vision_start_token_id would fail inside get_rope_index during a rollout."""
    from transformers import Qwen2_5OmniThinkerConfig

    from verl_audio.models.positions import OmniRopeIndex

    with pytest.raises(ValueError, match="vision_start_token_id"):
        OmniRopeIndex(Qwen2_5OmniThinkerConfig())
    with pytest.raises(ValueError, match="not a Qwen2.5-Omni config"):
        OmniRopeIndex(types.SimpleNamespace(model_type="qwen2"))
