"""The model families on their tiny random checkpoints: lookup, whole audio, the `hf` generator's parity.

For each family (Qwen2.5-Omni, Qwen2-Audio, the Qwen3-Omni thinker): the tiny builder's checkpoint is found by
its ``config.json``; a 100 s clip reaches the prompt whole (2,500 placeholders at 25/s, in four 30 s windows for
Qwen2-Audio; 1,300 at 13 per 100 frames for Qwen3-Omni), its features do not depend on the other clips of the
call, and the encoder gives one output per placeholder; the `hf` rollout's generator (left-padded batch,
audio scattered into the prompt, the family's positions, KV-cached decode) gives the log-probs of a plain
transformers forward of each sequence alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from verl_audio.models.families import FAMILIES, UnknownFamily, family_named, family_of_config, family_of_path
from verl_audio.rollout.features import AudioFeaturizer
from verl_audio.rollout.hf.engine import AudioGenerator, GenRequest
from verl_audio.rollout.sampling import SamplingSpec

SR = 16_000
#: placeholders of a 100 s clip and of a 5 s clip plus one sample (ceil frames), per family
EXPECTED = {"qwen2_5_omni": (2500, 125), "qwen2_audio": (2500, 125), "qwen3_omni": (1300, 66)}


def _clip(seconds: float, seed: int, extra: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(SR * seconds) + extra)).astype(np.float32)


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def tiny(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    family = family_named(request.param)
    options = {"head_dim": 32} if family.name == "qwen2_5_omni" else {}
    path = family.build_tiny(tmp_path_factory.mktemp(family.name) / "tiny", vocab="small", **options)
    return family, path, family.load_processor(path)


def _prompt(processor, clips: list[np.ndarray], question: str = "Is it entailed?") -> dict:
    content = [{"type": "audio", "audio": f"c{i}"} for i in range(len(clips))] + [{"type": "text", "text": question}]
    text = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                         tokenize=False)
    return processor(text=[text], audio=clips, return_tensors="pt", sampling_rate=SR)


def test_lookup_by_config(tiny: tuple, tmp_path: Path) -> None:
    family, path, _ = tiny
    assert family_of_path(path) is family
    from transformers import AutoConfig

    assert family_of_config(AutoConfig.from_pretrained(path)) is family
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert family_of_path(tmp_path) is None
    with pytest.raises(UnknownFamily, match="none of verl-audio's families"):
        family_of_config(type("C", (), {"model_type": "llama"})())
    config = json.loads((path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "architectures": ["LlamaForCausalLM"]}))
    with pytest.raises(UnknownFamily, match="architectures"):
        family_of_path(tmp_path)


def test_a_100_s_clip_enters_whole(tiny: tuple) -> None:
    family, path, processor = tiny
    long, short = _clip(100, 0), _clip(5, 1, extra=1)
    out = _prompt(processor, [long, short])
    audio_id = processor.tokenizer.convert_tokens_to_ids(processor.audio_token)
    placeholders = int((out["input_ids"] == audio_id).sum())
    assert (family.clip_tokens(len(long)), family.clip_tokens(len(short))) == EXPECTED[family.name]
    assert placeholders == sum(EXPECTED[family.name])
    items = len(family.windows(long)) + len(family.windows(short))
    assert out["input_features"].shape[0] == items == (5 if family.name == "qwen2_audio" else 2)
    # a clip's features do not depend on the other clips of the call
    alone = _prompt(processor, [short])
    frames = int(alone["feature_attention_mask"][0].sum())
    assert int(out["feature_attention_mask"][-1].sum()) == frames
    assert torch.equal(out["input_features"][-1][:, :frames], alone["input_features"][0][:, :frames])
    # the featurizer (the rollout's) gives the same items and counts as the processor
    featurizer = AudioFeaturizer(family, processor.feature_extractor, family.audio_token_id(processor.config))
    clips = featurizer.prepare(out["input_ids"][0].tolist(), [long, short])
    assert [c.frames for c in clips] == out["feature_attention_mask"].sum(-1).tolist()
    assert sum(c.tokens for c in clips) == placeholders


def test_encoder_gives_one_output_per_placeholder(tiny: tuple) -> None:
    family, path, processor = tiny
    model = family.load_trainable(path, dtype=torch.float32).eval()
    out = _prompt(processor, [_clip(40, 2), _clip(3, 3)])
    with torch.no_grad():
        items = family.encode(model, out["input_features"], out["feature_attention_mask"])
    audio_id = processor.tokenizer.convert_tokens_to_ids(processor.audio_token)
    assert sum(int(e.shape[0]) for e in items) == int((out["input_ids"] == audio_id).sum())


def test_hf_generator_log_probs_equal_a_plain_forward(tiny: tuple) -> None:
    family, path, processor = tiny
    gen = AudioGenerator(str(path), dtype=torch.float32)
    featurizer = AudioFeaturizer(family, processor.feature_extractor, gen.audio_token_id)
    model = family.load_trainable(path, dtype=torch.float32).eval()
    prompts = [_prompt(processor, [_clip(s, i)], q) for i, (s, q) in enumerate(((35, "Is it entailed?"), (2, "Why")))]
    requests = [GenRequest(p["input_ids"][0].tolist(), featurizer.prepare(p["input_ids"][0].tolist(), [_clip(s, i)]),
                           SamplingSpec(max_tokens=6, temperature=1.0))
                for i, (p, s) in enumerate(zip(prompts, (35, 2), strict=True))]
    results = gen.generate(requests)
    for prompt, result in zip(prompts, results, strict=True):
        ids = torch.cat([prompt["input_ids"][0], torch.tensor(result.token_ids)])[None]
        inputs = {k: v for k, v in prompt.items() if k in ("input_features", "feature_attention_mask")}
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), **inputs).logits[0].float()
        n = len(result.token_ids)
        ref = logits[-n - 1 : -1].log_softmax(-1).gather(-1, torch.tensor(result.token_ids)[:, None])[:, 0]
        assert torch.allclose(torch.tensor(result.log_probs), ref, atol=1e-4), (result.log_probs, ref.tolist())
    assert not (set(gen.banned_ids) & {t for r in results for t in r.token_ids})


def test_fsdp_engine_parity_training_and_a_100_s_clip(tiny: tuple, tmp_path: Path) -> None:
    """verl's FSDP2 engine (world size 2, gloo) with the family's trainable model: a batch whose first row hears a
    100 s clip (its ids carry the family's count of placeholders), log-probs equal a plain transformers forward
    of each sequence, and a PPO step lowers the loss with the audio encoder untouched (frozen)."""
    from helpers.engine_run import run_torchrun

    family, path, _ = tiny
    results = run_torchrun(path, tmp_path / "out", world_size=2, extra=["--train", "--first-clip-seconds", "100"])
    assert results[0]["audio_tokens"][0] == EXPECTED[family.name][0]  # rank 0 ran rows 0-1
    for result in results:
        assert result["max_abs_diff"] < 1e-4, result["per_sample"]
        assert result["loss_after"] < result["loss_before"]
        assert result["audio_changed"] == [] and result["projector_changed"] == [] and result["text_changed"]


def test_qwen2_audio_projector_trains_on_cached_encoder_outputs(tmp_path: Path) -> None:
    """``model.freeze_audio_projector=False`` with the encoder frozen: a PPO step changes Qwen2-Audio's projector
    and leaves the audio tower bit-identical, whose outputs still come from the cache."""
    from helpers.engine_run import run_torchrun

    path = family_named("qwen2_audio").build_tiny(tmp_path / "tiny", vocab="small")
    (result,) = run_torchrun(path, tmp_path / "out", world_size=1, extra=["--train", "--train-projector"])
    assert result["loss_after"] < result["loss_before"]
    assert result["audio_changed"] == [] and result["text_changed"]
    assert sorted(result["projector_changed"]) == ["model.multi_modal_projector.linear.bias",
                                                   "model.multi_modal_projector.linear.weight"], result
    assert result["train_encoder"] == {"passes": 0.0, "hits": 4.0}  # the tower's rows all came from the cache
