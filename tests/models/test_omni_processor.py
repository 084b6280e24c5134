"""verl's processor loading and its agent-loop prompt paths, with the tiny Qwen2.5-Omni checkpoint."""

from __future__ import annotations

import asyncio
import json
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import verl  # noqa: F401  (loads the verl_audio plugin, which installs the processor patch)
from omegaconf import OmegaConf

from verl_audio.models.audio_features import (
    AUDIO_TOKENS_PER_SECOND,
    MAX_AUDIO_SECONDS,
    SAMPLING_RATE,
    WholeAudioOmniProcessor,
    audio_frames,
    load_omni_processor,
)
from verl_audio.models.families import QWEN2_5_OMNI, family_of_path
from verl_audio.models.tiny import build_tiny_omni
from verl_audio.patches import ORIGINAL_ATTR, audio_aware_hf_processor, patch_audio_hf_processor

PROMPT_LENGTH, RESPONSE_LENGTH = 3000, 16


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_omni(tmp_path_factory.mktemp("omni") / "tiny")


@pytest.fixture(scope="module")
def processor(tiny: Path):
    from verl.utils import hf_processor

    return hf_processor(str(tiny), trust_remote_code=False)


@pytest.fixture(scope="module")
def tokenizer(tiny: Path):
    from verl.utils import hf_tokenizer

    return hf_tokenizer(str(tiny))


def _clip(seconds: float, seed: int = 0) -> np.ndarray:
    return (np.random.RandomState(seed).randn(int(seconds * SAMPLING_RATE)) * 0.1).astype(np.float32)


def _messages(audio: np.ndarray, question: str = "Is it true?") -> list[dict]:
    return [{"role": "user", "content": [{"type": "audio", "audio": audio}, {"type": "text", "text": question}]}]


def test_hf_processor_everywhere_verl_imports_it_returns_omni(tiny: Path) -> None:
    """Fresh interpreter: the plugin alone makes every by-name import of hf_processor serve Omni."""
    code = textwrap.dedent(f"""
        import verl
        from verl.utils import hf_processor as a
        from verl.utils.tokenizer import hf_processor as b
        from verl.utils.tokenizer.tokenizer import hf_processor as c
        from verl.workers.config.model import hf_processor as d
        from verl.model_merger.base_model_merger import hf_processor as e
        assert a is b is c is d is e and hasattr(a, {ORIGINAL_ATTR!r}), "hf_processor not patched everywhere"
        p = d({str(tiny)!r}, trust_remote_code=False)
        from transformers import Qwen2_5OmniProcessor
        print(isinstance(p, Qwen2_5OmniProcessor), type(p).__name__, callable(p.get_rope_index),
              callable(p.get_rope_index_kwargs))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["True", "WholeAudioOmniProcessor", "True", "True"]  # its own name at run time


def test_hf_model_config_carries_the_processor(tiny: Path) -> None:
    """verl's HFModelConfig (what the agent loop and the actor build) holds the Omni processor."""
    from verl.workers.config import HFModelConfig

    config = HFModelConfig(path=str(tiny), override_config={"attn_implementation": "sdpa"})
    assert isinstance(config.processor, WholeAudioOmniProcessor)
    assert config.processor.config.model_type == "qwen2_5_omni"
    assert config.processor.feature_extractor.chunk_length >= 110  # ALR clips are never cut


def test_non_omni_paths_go_to_verl_unchanged(tmp_path: Path) -> None:
    calls = []

    def original(name_or_path, **kwargs):
        calls.append((name_or_path, kwargs))
        return None

    wrapped = audio_aware_hf_processor(original)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    assert wrapped(str(tmp_path), trust_remote_code=True) is None
    assert wrapped("Qwen/Qwen2.5-Omni-3B") is None  # hub ids are verl's business
    assert calls == [(str(tmp_path), {"trust_remote_code": True}), ("Qwen/Qwen2.5-Omni-3B", {})]


def test_patch_is_idempotent() -> None:
    from verl.utils import hf_processor

    assert patch_audio_hf_processor() is True  # already applied by the plugin at import verl
    from verl.utils import hf_processor as again

    assert again is hf_processor


def test_family_of_omni_checkpoints(tmp_path: Path, tiny: Path) -> None:
    assert family_of_path(tiny) is QWEN2_5_OMNI
    thinker = tmp_path / "thinker"
    thinker.mkdir()
    (thinker / "config.json").write_text(json.dumps({"model_type": "qwen2_5_omni_thinker"}))
    assert family_of_path(thinker) is QWEN2_5_OMNI
    assert family_of_path(tmp_path / "missing") is None
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    assert family_of_path(tmp_path) is None


@pytest.mark.parametrize("family", ["qwen2_5_omni", "qwen2_audio", "qwen3_omni"])
def test_audio_checkpoint_errors_are_raised_not_swallowed(tmp_path: Path, family: str) -> None:
    """A directory whose processor config names a family's processor but lacks files raises (verl would return
    None, and audio prompts would become text prompts)."""
    from verl.utils import hf_processor

    from verl_audio.models.families import family_named

    processor_class = family_named(family).processor_class
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"processor_class": processor_class}))
    with pytest.raises((OSError, ValueError)):  # a missing config.json / an image processor it cannot build
        hf_processor(str(tmp_path))


def test_processor_survives_pickling(processor) -> None:
    """Ray ships configs holding the processor between processes (cloudpickle for Ray, pickle alike)."""
    import cloudpickle

    for clone in (pickle.loads(pickle.dumps(processor)), cloudpickle.loads(cloudpickle.dumps(processor))):
        assert isinstance(clone, WholeAudioOmniProcessor)
        ids = torch.tensor([[7, 8, 9]])
        pos, _ = clone.get_rope_index(
            input_ids=ids, attention_mask=torch.ones_like(ids), image_grid_thw=None, video_grid_thw=None
        )
        assert pos.shape == (3, 1, 3)
        out = clone(text=["<|audio_bos|><|AUDIO|><|audio_eos|>"], audio=[_clip(2.0)], sampling_rate=SAMPLING_RATE)
        assert out["input_features"].shape == (1, 128, 200)  # still the whole-audio processor


def _agent_loop_round_trip(processor, tokenizer, messages: list[dict], response_ids: list[int]):
    """verl's SingleTurnAgentLoop.run (with a stub server) then AgentLoopWorker._agent_loop_postprocess."""
    from verl.experimental.agent_loop.agent_loop import AgentLoopWorker, DictConfigWrap
    from verl.experimental.agent_loop.single_turn_agent_loop import SingleTurnAgentLoop
    from verl.utils.dataset.rl_dataset import RLHFDataset
    from verl.workers.rollout.replica import TokenOutput

    lengths = {"prompt_length": PROMPT_LENGTH, "response_length": RESPONSE_LENGTH}
    config = OmegaConf.create({"actor_rollout_ref": {"rollout": lengths}, "data": {}})

    class StubServer:
        async def generate(self, **kwargs):
            self.request = kwargs
            return TokenOutput(token_ids=response_ids, log_probs=[-0.5] * len(response_ids))

    server = StubServer()

    async def run():
        agent = SingleTurnAgentLoop(
            trainer_config=DictConfigWrap(config), server_manager=server, tokenizer=tokenizer, processor=processor,
            dataset_cls=RLHFDataset, data_config=DictConfigWrap(OmegaConf.create({})), hf_model_type="qwen2_5_omni",
        )
        output = await agent.run({"temperature": 1.0}, raw_prompt=messages)
        worker = AgentLoopWorker.__new__(AgentLoopWorker)  # only the attributes postprocess reads
        worker.processor, worker.tokenizer, worker.mm_processor_kwargs = processor, tokenizer, {}
        worker.rollout_config = OmegaConf.create(lengths)
        worker.reward_loop_worker_handles, worker.distillation_enabled = None, False
        return output, await worker._agent_loop_postprocess(output, validate=False, raw_prompt=messages)

    output, internal = asyncio.run(run())
    return server.request, output, internal


@pytest.mark.parametrize("seconds", [3.0, 110.0])
def test_agent_loop_prompt_and_features_equal_a_direct_processor_call(processor, tokenizer, seconds: float) -> None:
    """Prompt ids (continuous-token builder) and actor features (decode + re-run) match one direct call."""
    audio = _clip(seconds)
    messages = _messages(audio)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    request, output, internal = _agent_loop_round_trip(processor, tokenizer, messages, [11, 12, 13, im_end])

    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    direct = processor(text=[text], audio=[audio], sampling_rate=SAMPLING_RATE, return_tensors="pt")
    audio_id = tokenizer.convert_tokens_to_ids("<|AUDIO|>")
    assert request["prompt_ids"] == direct["input_ids"][0].tolist() == output.prompt_ids
    # the whole clip is kept: one placeholder per 40 ms of audio, nothing cut
    assert output.prompt_ids.count(audio_id) == int(seconds * AUDIO_TOKENS_PER_SECOND)
    assert request["audio_data"][0] is audio and request["mm_processor_kwargs"] == {"sampling_rate": SAMPLING_RATE}

    # _compute_multi_modal_inputs decodes prompt + response with special tokens stripped (<|AUDIO|> is
    # special, so nothing is expanded twice) and re-runs the processor on the raw audio
    mm = internal.multi_modal_inputs
    assert sorted(mm) == ["feature_attention_mask", "input_features"]
    assert mm["input_features"].shape == (1, 128, int(seconds * 100))  # the clip, not a 120 s window
    assert torch.equal(mm["input_features"], direct["input_features"])
    assert torch.equal(mm["feature_attention_mask"], direct["feature_attention_mask"])
    assert int(mm["feature_attention_mask"].sum()) == int(seconds * 100)
    assert internal.position_ids.shape == (1, 4, PROMPT_LENGTH + RESPONSE_LENGTH)
    assert internal.position_ids.dtype == torch.long


def _rollout_clips(processor, prompt_ids: list[int], audios: list[np.ndarray]):
    """The rollout server's features for a request (``AudioFeaturizer.prepare``, which checks the placeholders)."""
    from verl_audio.rollout.features import AudioFeaturizer

    featurizer = AudioFeaturizer(QWEN2_5_OMNI, processor.feature_extractor, processor.config.thinker_config.audio_token_id)
    return featurizer.prepare(prompt_ids, audios, SAMPLING_RATE)


def _random_lengths(seed: int, short: int, long: int) -> list[int]:
    """Clip lengths in samples (rarely whole hops of 160): ``short`` of 0.01-15 s, ``long`` of 40-110 s."""
    rng = np.random.default_rng(seed)
    return [int(n) for n in rng.integers(160, 15 * SAMPLING_RATE, short)] + [
        int(n) for n in rng.integers(40 * SAMPLING_RATE, 110 * SAMPLING_RATE, long)
    ]


@pytest.mark.parametrize("samples", [48_123, *_random_lengths(3, 2, 1)])
def test_agent_loop_features_equal_the_rollout_features(processor, tokenizer, samples: int) -> None:
    """The prompt verl sends, the features the actor gets and the rollout's features agree, unpadded."""
    audio = _clip(samples / SAMPLING_RATE + 1, seed=samples)[:samples]
    messages = _messages(audio)
    request, output, internal = _agent_loop_round_trip(processor, tokenizer, messages, [11, 12])
    (clip,) = _rollout_clips(processor, request["prompt_ids"], request["audio_data"])
    frames = audio_frames(samples)  # ceil(n / 160)
    audio_id = tokenizer.convert_tokens_to_ids("<|AUDIO|>")
    assert output.prompt_ids.count(audio_id) == clip.tokens and clip.frames == frames
    mm = internal.multi_modal_inputs
    assert mm["input_features"].shape == (1, 128, frames) and mm["feature_attention_mask"].shape == (1, frames)
    assert int(mm["feature_attention_mask"].sum()) == frames
    assert torch.equal(mm["input_features"][0], clip.features)


def test_verl_processor_calls_equal_the_rollout_features_for_many_lengths(processor, tokenizer, tiny: Path) -> None:
    """verl's processor call (as ``_compute_multi_modal_inputs`` makes it), the rollout's features and the
    checkpoint's own 120 s window give the same ids, frames and features for any clip length."""
    from verl.utils.tokenizer import build_multimodal_processor_inputs

    window = load_omni_processor(tiny, prepare=False)  # stock class, pads every clip to 120 s
    lengths = _random_lengths(7, 57, 3)
    for i, samples in enumerate(lengths):
        audio = _clip(samples / SAMPLING_RATE + 1, seed=i)[:samples]
        text = processor.apply_chat_template(_messages(audio), tokenize=False, add_generation_prompt=True)
        verl_call = build_multimodal_processor_inputs(
            processor, text=[text], audio=[audio], mm_processor_kwargs={"sampling_rate": SAMPLING_RATE}
        )
        ids = verl_call["input_ids"][0].tolist()
        (clip,) = _rollout_clips(processor, ids, [audio])
        frames = audio_frames(samples)
        assert verl_call["input_features"].shape == (1, 128, frames), samples  # not padded past the clip
        mask = verl_call["feature_attention_mask"]
        assert mask.shape == (1, frames) and bool(mask.all())
        assert torch.equal(verl_call["input_features"][0], clip.features), samples
        padded = window(text=[text], audio=[audio], sampling_rate=SAMPLING_RATE, return_tensors="pt")
        assert padded["input_features"].shape[-1] == MAX_AUDIO_SECONDS * 100
        assert padded["input_ids"][0].tolist() == ids, samples
        assert torch.equal(padded["input_features"][..., :frames], verl_call["input_features"]), samples
        assert int(padded["feature_attention_mask"].sum()) == frames

    # several clips in one call: padded to the longest only, each clip's features its own
    audios = [_clip(n / SAMPLING_RATE + 1, seed=n)[:n] for n in lengths[:3]]
    content = [{"type": "audio", "audio": a} for a in audios] + [{"type": "text", "text": "Same?"}]
    messages = [{"role": "user", "content": content}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    out = build_multimodal_processor_inputs(
        processor, text=[text], audio=audios, mm_processor_kwargs={"sampling_rate": SAMPLING_RATE}
    )
    clips = _rollout_clips(processor, out["input_ids"][0].tolist(), audios)
    assert out["input_features"].shape == (3, 128, max(c.frames for c in clips))
    for row, clip in enumerate(clips):
        assert int(out["feature_attention_mask"][row].sum()) == clip.frames
        assert torch.equal(out["input_features"][row, :, : clip.frames], clip.features)


def test_continuous_token_builder_is_the_vl_fallback_and_needs_image_processor(processor, tokenizer) -> None:
    from verl.utils.tokenizer.continuous_token import VLContinuousTokenBuilder
    from verl.utils.tokenizer.continuous_token_wiring import create_continuous_token_builder

    builder = create_continuous_token_builder(tokenizer, hf_model_type="qwen2_5_omni", processor=processor)
    assert type(builder) is VLContinuousTokenBuilder  # chosen because processor.image_processor exists
    assert processor.image_processor is not None
