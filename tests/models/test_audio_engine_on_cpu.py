"""The Qwen2.5-Omni thinker as verl's actor on CPU: engine selection, config checks, and verl's real
FSDP/FSDP2 engine under torchrun (world size 1 and 2, gloo) against a plain transformers forward."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("verl")

from helpers.engine_run import run_ray, run_torchrun
from verl_audio.models.audio_engine import (  # noqa: E402
    AudioFSDPEngine,
    AudioModelConfig,
    check_supported,
)
from verl_audio.models.omni_config import OMNI_MODEL_TYPES
from verl_audio.models.tiny import build_tiny_omni  # noqa: E402

PARITY_TOL = 1e-4  # fp32, mixed precision off
BF16_TOL = 0.1  # verl's bf16 autocast against the fp32 reference (seen: 0.024-0.028)
PROCESSOR_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "preprocessor_config.json",
                   "video_preprocessor_config.json")


@pytest.fixture(scope="module")
def omni_full(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A full ``qwen2_5_omni`` checkpoint: thinker, talker and token2wav weights."""
    return build_tiny_omni(tmp_path_factory.mktemp("omni_full"), talker=True)


@pytest.fixture(scope="module")
def omni_thinker_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``qwen2_5_omni`` checkpoint holding only ``thinker.*`` weights."""
    return build_tiny_omni(tmp_path_factory.mktemp("omni_thinker_weights"), talker=False)


@pytest.fixture(scope="module")
def omni_thinker_saved(omni_thinker_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``qwen2_5_omni_thinker`` checkpoint, as ``Qwen2_5OmniThinkerForConditionalGeneration`` saves it."""
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    out = tmp_path_factory.mktemp("omni_thinker_saved")
    Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(omni_thinker_weights).save_pretrained(out)
    for name in PROCESSOR_FILES:
        shutil.copy(omni_thinker_weights / name, out / name)
    return out


def _config(path: Path, **kwargs) -> AudioModelConfig:
    return AudioModelConfig(path=str(path), override_config={"attn_implementation": "sdpa"}, **kwargs)


# --- selection and start-up checks (in process) --------------------------------------------------


def test_model_config_routes_omni_checkpoints_to_the_thinker_engine(omni_full: Path, omni_thinker_saved: Path) -> None:
    from verl.workers.engine import EngineRegistry

    assert _config(omni_full).model_type == "qwen2_5_omni"
    assert _config(omni_thinker_saved).model_type == "qwen2_5_omni_thinker"
    assert _config(omni_full, model_type="value_model").model_type == "value_model"  # an explicit role stays
    for model_type in OMNI_MODEL_TYPES:
        for backend in ("fsdp", "fsdp2"):
            assert EngineRegistry.get_engine_cls(model_type, backend) is AudioFSDPEngine


def test_model_config_defaults_and_validation(omni_full: Path) -> None:
    config = _config(omni_full)
    assert config.freeze_audio_encoder is True and config.freeze_vision_encoder is True
    assert config.use_remove_padding is True and config.enable_gradient_checkpointing is True
    with pytest.raises(TypeError, match="freeze_audio_encoder"):
        _config(omni_full, freeze_audio_encoder="no")
    assert config.freeze_audio_projector is None
    with pytest.raises(TypeError, match="freeze_audio_projector"):
        _config(omni_full, freeze_audio_projector="no")
    # the Omni's projection is its encoder's last layer: nothing to train apart from the encoder
    with pytest.raises(ValueError, match="no audio projector"):
        _config(omni_full, freeze_audio_projector=False)


def test_model_config_audio_encoder_lora_targets(omni_full: Path) -> None:
    """Adapters on the audio encoder only on request, then also on the language model's projections, never on
    the vision encoder; the key needs LoRA and a regex."""
    assert _config(omni_full, lora_rank=8).exclude_modules.startswith("(?:audio_tower|visual)")
    config = _config(omni_full, lora_rank=8, audio_encoder_lora_targets=r"proj|layers\.0\.fc1")
    targets, excluded = re.compile(config.target_modules), re.compile(config.exclude_modules)
    for name in ("audio_tower.proj", "audio_tower.layers.0.fc1", "model.layers.1.self_attn.q_proj"):
        assert targets.fullmatch(name) and not excluded.fullmatch(name), name
    for name in ("audio_tower.layers.0.self_attn.q_proj", "audio_tower.layers.1.fc1", "lm_head"):
        assert not targets.fullmatch(name), name
    assert excluded.fullmatch("visual.blocks.0.attn.qkv")
    assert excluded.fullmatch("audio_tower.layers.1.fc1") and excluded.fullmatch("audio_tower.layers.0.fc2")
    # peft's list form of target_modules (names or name endings) stays out of the audio encoder
    listed = _config(omni_full, lora_rank=8, target_modules=["q_proj", "lm_head"], audio_encoder_lora_targets="proj")
    targets = re.compile(listed.target_modules)
    assert targets.fullmatch("model.layers.0.self_attn.q_proj") and targets.fullmatch("lm_head")
    assert targets.fullmatch("audio_tower.proj") and not targets.fullmatch("audio_tower.layers.0.self_attn.q_proj")
    with pytest.raises(ValueError, match="needs LoRA"):
        _config(omni_full, audio_encoder_lora_targets="proj")
    with pytest.raises(ValueError, match="no regex"):
        _config(omni_full, lora_rank=8, audio_encoder_lora_targets="proj(")
    with pytest.raises(TypeError, match="non-empty regex"):
        _config(omni_full, lora_rank=8, audio_encoder_lora_targets="")


def test_model_config_from_hydra_target(omni_full: Path) -> None:
    """How a trainer config selects it: ``actor_rollout_ref.model._target_`` (verl instantiates it)."""
    from omegaconf import OmegaConf
    from verl.utils.config import omega_conf_to_dataclass

    node = OmegaConf.create({"_target_": "verl_audio.models.audio_engine.AudioModelConfig", "path": str(omni_full),
                             "override_config": {"attn_implementation": "sdpa"}, "freeze_audio_encoder": False})
    config = omega_conf_to_dataclass(node)
    assert isinstance(config, AudioModelConfig)
    assert config.model_type == "qwen2_5_omni" and config.freeze_audio_encoder is False


def test_model_config_rejects_other_checkpoints(tmp_path: Path) -> None:
    from transformers import Qwen2Config

    Qwen2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, vocab_size=64,
                architectures=["Qwen2ForCausalLM"]).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="none of verl-audio.s families"):
        AudioModelConfig(path=str(tmp_path), load_tokenizer=False)


@pytest.mark.parametrize(
    ("model_changes", "engine_changes", "error", "match"),
    [
        ({}, {"ulysses_sequence_parallel_size": 2}, NotImplementedError, "ulysses"),
        ({"use_fused_kernels": True}, {}, NotImplementedError, "use_fused_kernels"),
        ({"use_liger": True}, {}, NotImplementedError, "use_liger"),
        ({"attn": "flex_attention"}, {}, ValueError, "use_remove_padding"),
        ({}, {"strategy": "fsdp2", "wrap_policy": {"transformer_layer_cls_to_wrap": [
            "Qwen2_5OmniAudioEncoder", "Qwen2_5OmniAudioEncoderLayer"]}}, ValueError, "wrap the parent first"),
        ({"lora_rank": 8, "freeze_audio_encoder": False}, {}, ValueError, "freeze_audio_encoder=False"),
        ({"lora_rank": 8, "freeze_audio_projector": False}, {}, ValueError, "freeze_audio_projector=False"),
    ],
)
def test_unsupported_settings_are_rejected_at_start(omni_full: Path, model_changes: dict, engine_changes: dict,
                                                    error: type, match: str) -> None:
    config = _config(omni_full)
    attn = model_changes.pop("attn", None)
    if attn is not None:
        config.hf_config.thinker_config.text_config._attn_implementation = attn
    model = SimpleNamespace(hf_config=config.hf_config,
                            get=lambda key, default=None: model_changes.get(key, getattr(config, key, default)))
    engine = SimpleNamespace(**{"ulysses_sequence_parallel_size": 1, "strategy": "fsdp2", "wrap_policy": {},
                                **engine_changes})
    with pytest.raises(error, match=match):
        check_supported(model, engine)


def test_remove_padding_off_accepts_any_attention(omni_full: Path) -> None:
    config = _config(omni_full, use_remove_padding=False)
    config.hf_config.thinker_config.text_config._attn_implementation = "flex_attention"
    check_supported(config, SimpleNamespace(ulysses_sequence_parallel_size=1, strategy="fsdp", wrap_policy={}))


# --- verl's engine under torchrun ----------------------------------------------------------------


def _check_run(results: list[dict], *, world_size: int, audio_trained: bool) -> None:
    assert len(results) == world_size
    for r in results:
        assert r["engine"] == "AudioFSDPEngine"
        assert r["max_abs_diff"] <= PARITY_TOL, r["per_sample"]
        assert r["loss_after"] < r["loss_before"], r
        assert r["text_changed"], "the text model did not train"
        assert bool(r["audio_changed"]) is audio_trained, r["audio_changed"]
    # data-parallel ranks agree on the loss and the (all-reduced) gradient norm
    assert len({round(r["loss_before"], 6) for r in results}) == 1
    assert len({round(r["grad_norm"], 5) for r in results}) == 1


def _check_checkpoint(ckpt: Path, *, world_size: int, fsdp_version: int) -> None:
    for kind in ("model", "optim", "extra_state"):
        for rank in range(world_size):
            assert (ckpt / f"{kind}_world_size_{world_size}_rank_{rank}.pt").is_file()
    fsdp_config = json.loads((ckpt / "fsdp_config.json").read_text())
    assert fsdp_config == {"FSDP_version": fsdp_version, "world_size": world_size}
    hf_config = json.loads((ckpt / "huggingface" / "config.json").read_text())
    assert hf_config["model_type"] == "qwen2_5_omni_thinker"
    assert hf_config["architectures"] == ["Qwen2_5OmniThinkerForConditionalGeneration"]
    state = torch.load(ckpt / f"model_world_size_{world_size}_rank_0.pt", weights_only=False)
    assert any(k.startswith("audio_tower.") for k in state) and "lm_head.weight" in state
    assert not any(k.startswith(("talker.", "token2wav.", "thinker.")) for k in state)


def test_fsdp2_world_size_1_parity_training_and_checkpoint(omni_full: Path, tmp_path: Path) -> None:
    results = run_torchrun(omni_full, tmp_path / "out", world_size=1,
                           extra=["--strategy", "fsdp2", "--train", "--save", str(tmp_path / "ckpt")])
    _check_run(results, world_size=1, audio_trained=False)
    assert results[0]["model_type"] == "qwen2_5_omni"
    _check_checkpoint(tmp_path / "ckpt", world_size=1, fsdp_version=2)


def test_fsdp2_world_size_2_parity_training_and_checkpoint(omni_full: Path, tmp_path: Path) -> None:
    results = run_torchrun(omni_full, tmp_path / "out", world_size=2,
                           extra=["--strategy", "fsdp2", "--train", "--save", str(tmp_path / "ckpt")])
    _check_run(results, world_size=2, audio_trained=False)
    _check_checkpoint(tmp_path / "ckpt", world_size=2, fsdp_version=2)


def test_fsdp1_world_size_1_without_padding_removal(omni_full: Path, tmp_path: Path) -> None:
    extra = ["--strategy", "fsdp", "--no-remove-padding", "--train", "--save", str(tmp_path / "ckpt")]
    results = run_torchrun(omni_full, tmp_path / "out", world_size=1, extra=extra)
    _check_run(results, world_size=1, audio_trained=False)
    _check_checkpoint(tmp_path / "ckpt", world_size=1, fsdp_version=1)


def test_fsdp1_world_size_2_unfrozen_encoder_with_checkpointing(omni_thinker_weights: Path, tmp_path: Path) -> None:
    results = run_torchrun(omni_thinker_weights, tmp_path / "out", world_size=2,
                           extra=["--strategy", "fsdp", "--no-freeze", "--grad-ckpt", "--train"])
    _check_run(results, world_size=2, audio_trained=True)


def test_fsdp2_default_mixed_precision_trains(omni_full: Path, tmp_path: Path) -> None:
    """bf16 compute, fp32 gradient reduction, two micro-batches: units that never run forward (vision) must
    not break FSDP2's post-backward (see ``materialize_unsharded_params``)."""
    extra = ["--strategy", "fsdp2", "--bf16", "--train"]
    results = run_torchrun(omni_full, tmp_path / "out", world_size=1, extra=extra)
    assert results[0]["max_abs_diff"] < BF16_TOL
    assert results[0]["loss_after"] < results[0]["loss_before"] and not results[0]["audio_changed"]


def test_thinker_checkpoint_with_plain_verl_config(omni_thinker_saved: Path, tmp_path: Path) -> None:
    """verl's own HFModelConfig (model_type from config.json), eager attention on packed sequences."""
    results = run_torchrun(omni_thinker_saved, tmp_path / "out", world_size=1,
                           extra=["--strategy", "fsdp2", "--plain-config", "--attn", "eager", "--grad-ckpt", "--train"])
    _check_run(results, world_size=1, audio_trained=False)
    assert results[0]["model_type"] == "qwen2_5_omni_thinker"


def test_ray_worker_group_infers_like_transformers(omni_full: Path, tmp_path: Path) -> None:
    """Two Ray TrainingWorkers (verl's RayWorkerGroup) on the CPU platform, Ray "GPU" = worker slots."""
    result = run_ray(omni_full, tmp_path / "out", workers=2)
    assert result["world_size"] == 2 and len(result["per_sample"]) == 4
    assert result["max_abs_diff"] <= PARITY_TOL, result["per_sample"]


def test_engine_refuses_before_building(omni_full: Path) -> None:
    from verl.workers.config import FSDPEngineConfig, FSDPOptimizerConfig

    engine_config = FSDPEngineConfig(strategy="fsdp2", ulysses_sequence_parallel_size=2)
    with pytest.raises(NotImplementedError, match="ulysses"):  # before any process group is needed
        AudioFSDPEngine(_config(omni_full), engine_config, FSDPOptimizerConfig(), None)


@pytest.mark.parametrize(("strategy", "world_size"), [("fsdp2", 2), ("fsdp", 1)])
def test_reference_engine(omni_full: Path, tmp_path: Path, strategy: str, world_size: int) -> None:
    """verl builds the reference forward-only, with host offload (unpinned on the CPU platform)."""
    extra = ["--strategy", strategy, "--ref"]
    results = run_torchrun(omni_full, tmp_path / "out", world_size=world_size, extra=extra)
    for r in results:
        assert r["max_abs_diff"] <= PARITY_TOL, r["per_sample"]


# --- the audio-encoder cache under verl's engine ---------------------------------------------------

#: clips encoded / served per call of ``engine_run.cache_check``, summed over ranks (rows: clips 0 0 1 1,
#: the same again, then 0 0 2 2, a training step and an inference on the first batch)
CACHED_COUNTS = {"first": (2, 2), "again": (0, 4), "new_clip": (1, 3), "train": (0, 4), "after_train": (0, 4)}


def _cache_runs(model: Path, out: Path, world_size: int) -> tuple[list[dict], list[dict]]:
    extra = ["--strategy", "fsdp2", "--cache-check"]
    cached = run_torchrun(model, out / "cached", world_size=world_size, extra=extra)
    uncached = run_torchrun(model, out / "uncached", world_size=world_size, extra=[*extra, "--audio-cache-size", "0"])
    return cached, uncached


def _check_cache_runs(cached: list[dict], uncached: list[dict]) -> None:
    for with_cache, without in zip(cached, uncached, strict=True):
        for call, (passes, hits) in CACHED_COUNTS.items():
            got = with_cache["calls"][call]
            assert (got["passes"], got["hits"]) == (passes, hits), (call, got)
            assert (without["calls"][call]["passes"], without["calls"][call]["hits"]) == (4, 0), call
            if "log_probs" in got:  # bit for bit, fp32: cached embeddings are the encoder's own outputs
                assert got["log_probs"] == without["calls"][call]["log_probs"], call
        assert with_cache["calls"]["train"]["grad_norm"] == without["calls"]["train"]["grad_norm"]


def test_audio_encoder_cache_fsdp2_world_size_2(omni_full: Path, tmp_path: Path) -> None:
    """Each rank encodes its own clips once; when only one rank has a new clip the other keeps FSDP's
    collectives in step (a hang or an error otherwise); log-probs and gradients equal the uncached run's."""
    _check_cache_runs(*_cache_runs(omni_full, tmp_path, world_size=2))


@pytest.mark.slow
def test_audio_encoder_cache_fsdp2_world_size_1(omni_full: Path, tmp_path: Path) -> None:
    _check_cache_runs(*_cache_runs(omni_full, tmp_path, world_size=1))


def test_audio_encoder_cache_size_is_validated(omni_full: Path) -> None:
    assert _config(omni_full).audio_encoder_cache_size == 64
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="audio_encoder_cache_size"):
            _config(omni_full, audio_encoder_cache_size=bad)
