"""How a LoRA run's adapters reach each rollout (``verl_audio.trainer.lora_setup``), and what it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from verl_audio.trainer.lora_setup import configure


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from verl_audio.models.families import family_named

    root = tmp_path_factory.mktemp("lora_setup")
    return {name: family_named(name).build_tiny(root / name, vocab="small") for name in ("qwen2_5_omni", "qwen2_audio")}


def _config(model: Path, *, rank: int = 8, rollout: str = "vllm", speech: bool = False, strategy: str = "fsdp2",
            encoder_targets: str | None = None):
    return OmegaConf.create({"actor_rollout_ref": {
        "model": {"path": str(model), "lora_rank": rank, "lora_alpha": 16, "lora": {},
                  "audio_encoder_lora_targets": encoder_targets},
        "actor": {"strategy": strategy},
        "rollout": {"name": rollout, "engine_kwargs": {"speech": {"enable": speech}}}}})


@pytest.mark.parametrize("family,rollout,speech,mode", [
    ("qwen2_5_omni", "vllm", False, "adapters"),  # vLLM's Omni thinker takes LoRA
    ("qwen2_5_omni", "hf", False, "adapters"),
    ("qwen2_5_omni", "hf", True, "adapters"),  # the hf speech stage shares the rollout's (adapted) thinker
    ("qwen2_5_omni", "vllm", True, "merged"),  # the speech server beside vLLM loads full weights
    ("qwen2_audio", "vllm", False, "merged"),  # vLLM's Qwen2-Audio class has no LoRA
    ("qwen2_audio", "hf", False, "adapters"),
])
def test_sync_mode(models: dict[str, Path], family: str, rollout: str, speech: bool, mode: str,
                   caplog: pytest.LogCaptureFixture) -> None:
    config = _config(models[family], rollout=rollout, speech=speech)
    with caplog.at_level("WARNING"):
        assert configure(config) == mode
    assert bool(config.actor_rollout_ref.model.lora.get("merge", False)) == (mode == "merged")
    said = "merged weights are synced" if mode == "merged" else "adapters synced"
    assert "LoRA r=8" in caplog.text and said in caplog.text


@pytest.mark.parametrize("rollout,mode", [("vllm", "merged"), ("hf", "adapters")])
def test_audio_encoder_adapters_merge_for_vllm(models: dict[str, Path], rollout: str, mode: str,
                                               caplog: pytest.LogCaptureFixture) -> None:
    """vLLM applies LoRA to the language model only: adapters in the audio encoder reach it merged."""
    config = _config(models["qwen2_5_omni"], rollout=rollout, encoder_targets="proj")
    with caplog.at_level("WARNING"):
        assert configure(config) == mode
    assert bool(config.actor_rollout_ref.model.lora.get("merge", False)) == (mode == "merged")
    assert ("audio_encoder_lora_targets" in caplog.text) == (mode == "merged")


def test_without_lora_and_refusals(models: dict[str, Path]) -> None:
    config = _config(models["qwen2_5_omni"], rank=0)
    assert configure(config) is None and "merge" not in config.actor_rollout_ref.model.lora
    with pytest.raises(ValueError, match="fsdp2"):
        configure(_config(models["qwen2_5_omni"], strategy="fsdp"))
