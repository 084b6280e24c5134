"""LoRA on each family's language model: where adapters go, the `hf` rollout applying verl's adapter sync,
verl's engine training adapters only (FSDP2 on gloo), and the export that merges them.

The engine run is verl's ``TrainingWorker`` with the audio engine and ``lora_rank=8`` (``helpers/engine_run``):
one PPO step, then the base weights are compared bit for bit, the reference forward (adapter off, as verl asks
for it) with a plain transformers forward, and the export (merged, float32) and the adapter alone (peft's
format) with the engine's own log-probs after the step.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from verl_audio.models import lora
from verl_audio.models.families import FAMILIES, family_named

FAMILY_NAMES = list(FAMILIES)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lora_models")
    return {name: family_named(name).build_tiny(root / name, vocab="small") for name in FAMILY_NAMES}


#: audio-encoder modules every family's encoder has (Whisper-style layers): adapters there on request
ENCODER_TARGETS = r"layers\.0\.fc1"


def _peft_model(family: Any, path: Path, seed: int = 0, head: bool = False, encoder: str | None = None) -> Any:
    """The family's trainable model with LoRA on its language model (r 4, random A and B), and on ``lm_head``, and
    on the audio encoder's ``encoder`` modules (``model.audio_encoder_lora_targets``)."""
    from peft import LoraConfig, get_peft_model

    model = family.load_trainable(path, dtype=torch.float32).eval()
    targets = lora.default_targets(family) + ("|lm_head" if head else "")
    if encoder is not None:
        targets = lora.with_audio_encoder_targets(family, targets, encoder)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=targets,
                        exclude_modules=lora.encoder_exclusion(family, encoder))
    peft_model = get_peft_model(model, config).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.2)
    return peft_model


def _adapter_sync(peft_model: Any) -> list[tuple[str, torch.Tensor]]:
    """The adapter as verl sends it (``get_peft_model_state_dict``: ``base_model.model.<module>.lora_A.weight``)."""
    from peft import get_peft_model_state_dict

    return [(name, tensor.clone()) for name, tensor in get_peft_model_state_dict(peft_model).items()]


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_adapters_stay_on_the_language_model(name: str, tiny_models: dict[str, Path]) -> None:
    family = family_named(name)
    peft_model = _peft_model(family, tiny_models[name])
    adapted = [n.removeprefix(lora.PEFT_PREFIX) for n, m in peft_model.named_modules() if hasattr(m, "lora_A")]
    assert lora.modules_in_encoders(family, adapted) == []
    layers = family.text_config(peft_model.config).num_hidden_layers
    for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):  # every attention projection of every decoder layer
        assert sum(m.endswith(f"self_attn.{proj}") for m in adapted) == layers, (proj, adapted)
    assert not any(m.endswith("lm_head") for m in adapted)


@pytest.mark.parametrize("head", [False, True], ids=["decoder", "with-lm_head"])
@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_hf_rollout_applies_verl_adapter_sync(name: str, head: bool, tiny_models: dict[str, Path]) -> None:
    """``AudioGenerator.load_adapter`` (first sync injects, later ones copy) = peft's forward, and a LoRA base sync
    (``.base_layer`` names) loads into the injected model. With ``lm_head`` adapted, peft's adapter state also
    carries its base weight, which the generator loads as a base weight."""
    from verl_audio.rollout.hf.engine import AudioGenerator

    family, path = family_named(name), tiny_models[name]
    generator = AudioGenerator(str(path))
    ids = torch.tensor([[5, 9, 17, 33, 40, 41]])

    def logits(model: Any) -> torch.Tensor:
        with torch.no_grad():
            return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits

    base_logits = logits(generator.model)
    reference = _peft_model(family, path, seed=0, head=head)
    # verl's base sync before the first adapter (a rollout started on dummy weights): wrapped projections are
    # named .base_layer, which the plain model has not; then again into the injected model, which has
    base_sync = [(n.removeprefix(lora.PEFT_PREFIX), t.clone()) for n, t in reference.named_parameters()
                 if not lora.is_adapter_tensor(n)]
    assert any(".base_layer." in n for n, _ in base_sync)
    assert len(generator.load_weights(base_sync)) == len(generator.params)
    for seed in (0, 1):  # the first adapter sync injects, the second copies into the injected layers
        reference = _peft_model(family, path, seed=seed, head=head)
        peft_config = reference.peft_config["default"].to_dict()
        sync = _adapter_sync(reference)
        assert any(not lora.is_adapter_tensor(n) for n, _ in sync) == head  # lm_head.base_layer.weight
        modules = generator.load_adapter(sync, peft_config)
        assert modules == generator.adapter_modules and len(modules) > 0
        assert ("lm_head" in modules) == head
        assert torch.allclose(logits(generator.model), logits(reference), atol=1e-5, rtol=0)
    assert (logits(generator.model) - base_logits).abs().max() > 1e-2  # the adapter changes the output
    assert len(generator.load_weights(base_sync)) == len(base_sync)
    assert torch.allclose(logits(generator.model), logits(reference), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="covers"):
        generator.load_adapter(_adapter_sync(reference)[:2], peft_config)


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_audio_encoder_adapters_on_request(name: str, tiny_models: dict[str, Path]) -> None:
    """``audio_encoder_lora_targets``: exactly the chosen audio-encoder modules get adapters, beside the language
    model's, none in another encoder or projector; the `hf` rollout injects and applies them as peft does."""
    from verl_audio.rollout.hf.engine import AudioGenerator

    family, path = family_named(name), tiny_models[name]
    reference = _peft_model(family, path, encoder=ENCODER_TARGETS)
    adapted = [n.removeprefix(lora.PEFT_PREFIX) for n, m in reference.named_modules() if hasattr(m, "lora_A")]
    in_encoder = lora.modules_in_audio_encoder(family, adapted)
    assert in_encoder == [f"{family.audio_encoder}.layers.0.fc1"]
    assert lora.modules_in_encoders(family, adapted, keep_audio_encoder=True) == []
    assert len(adapted) > 1  # the language model's projections too

    generator = AudioGenerator(str(path))
    loaded = generator.load_adapter(_adapter_sync(reference), reference.peft_config["default"].to_dict())
    assert loaded == sorted(adapted)
    layer = reference.base_model.model.get_submodule(in_encoder[0])
    x = torch.randn(3, layer.in_features, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, got = layer(x), generator.model.get_submodule(in_encoder[0])(x)
        assert (expected - layer.base_layer(x)).abs().max() > 1e-3  # the adapter changes the encoder layer
    assert torch.allclose(got, expected, atol=1e-6, rtol=0)


def test_merge_equals_peft_merge(tiny_models: dict[str, Path]) -> None:
    family = family_named("qwen2_5_omni")
    peft_model = _peft_model(family, tiny_models["qwen2_5_omni"])
    state = {f"{lora.PEFT_PREFIX}{n.removeprefix(lora.PEFT_PREFIX)}": t for n, t in peft_model.state_dict().items()}
    merged = lora.merge_checkpoint_state(state, r=4, alpha=8)
    reference = peft_model.merge_and_unload().state_dict()
    assert set(merged) == set(reference)
    for name, tensor in reference.items():
        assert torch.allclose(merged[name], tensor, atol=1e-6, rtol=0), name


#: (target_modules, audio_encoder_lora_targets): the default targets (the decoder's projections); those plus the
#: output projection, which FSDP2 shards as a unit of its own (verl_audio.patches.patch_fsdp2_lora_layer_class);
#: the default targets plus the audio encoder's last projection and one of its layers' MLP
LORA_TARGETS = {"all-linear": ("all-linear", None),
                "with-lm_head": (lora.default_targets(family_named("qwen2_5_omni")) + "|lm_head", None),
                "with-audio-encoder": ("all-linear", r"proj|layers\.0\.fc1")}


@pytest.fixture(scope="module", params=list(LORA_TARGETS))
def lora_engine_run(request: pytest.FixtureRequest,
                    tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Any]]:
    """One PPO step of a LoRA engine (FSDP2, world size 1) on the tiny Qwen2.5-Omni, and its checkpoint."""
    from helpers.engine_run import run_torchrun

    from verl_audio.models.tiny import build_tiny_omni

    root = tmp_path_factory.mktemp("lora_engine")
    base = build_tiny_omni(root / "base", talker=True)
    targets, encoder_targets = LORA_TARGETS[request.param]
    extra = ["--train", "--lora-rank", "8", "--save", str(root / "actor"), "--lora-targets", targets]
    extra += ["--lora-encoder-targets", encoder_targets] if encoder_targets else []
    (result,) = run_torchrun(base, root / "results", extra=extra)
    adapted_head = any(name.startswith(f"{lora.PEFT_PREFIX}lm_head.") for name in result["adapter_tensors"])
    assert adapted_head == (request.param == "with-lm_head")
    result["encoder_targets"] = encoder_targets
    return base, root / "actor", result


def test_engine_trains_adapters_only(lora_engine_run: tuple[Path, Path, dict[str, Any]]) -> None:
    _, ckpt, result = lora_engine_run
    assert result["max_abs_diff"] < 1e-5  # B starts at zero: the adapted model is the base
    assert result["base_changed"] == [] and result["base_tensors"] > 0  # base weights bit-identical after the step
    adapters = [n for n in result["adapter_tensors"] if lora.is_adapter_tensor(n)]
    assert result["adapter_changed"] == adapters and len(adapters) > 0  # every adapter tensor trained
    # peft sends an adapted lm_head's base weight with the adapters (save_embedding_layers="auto"); it is frozen
    assert set(result["adapter_tensors"]) - set(adapters) <= {f"{lora.PEFT_PREFIX}lm_head.base_layer.weight"}
    in_encoder = lora.modules_in_audio_encoder(family_named("qwen2_5_omni"), lora.adapted_modules(adapters))
    if result["encoder_targets"] is None:
        assert in_encoder == []
    else:  # exactly the chosen encoder modules, run uncached so that their adapters learn
        assert in_encoder == ["audio_tower.layers.0.fc1", "audio_tower.proj"]
        assert result["train_encoder"]["passes"] > 0 and result["train_encoder"]["hits"] == 0
    assert result["loss_after"] < result["loss_before"]
    assert result["ref_max_abs_diff"] < 1e-5  # the reference is the base: adapter off, no second model
    meta = json.loads((ckpt / "lora_train_meta.json").read_text())
    assert meta["r"] == 8 and meta["lora_alpha"] == 16


def _thinker_logps(thinker: Any, base: Path) -> list[list[float]]:
    from helpers.engine_run import build_audio_batch, reference_logprobs

    batch = build_audio_batch(base, thinker, n=4)
    return [reference_logprobs(thinker, batch, i).tolist() for i in range(4)]


def _max_diff(a: list[list[float]], b: list[list[float]]) -> float:
    return max(float((torch.tensor(x) - torch.tensor(y)).abs().max()) for x, y in zip(a, b, strict=True))


def test_export_merges_adapters(lora_engine_run: tuple[Path, Path, dict[str, Any]], tmp_path: Path) -> None:
    """fp32 merged export = the stock class = base + adapter (peft) = the engine after its step (<= 1e-5)."""
    from peft import PeftModel
    from safetensors.torch import load_file, save_file
    from transformers import Qwen2_5OmniForConditionalGeneration

    from verl_audio.models.export import export_model, load_checkpoint_state, verify_export

    base, ckpt, result = lora_engine_run
    summary = export_model(ckpt, base, tmp_path / "out", dtype=torch.float32, adapter_out=tmp_path / "adapter")
    assert summary["lora_modules_merged"] == len(lora.adapted_modules(result["adapter_tensors"]))
    verify_export(tmp_path / "out")
    merged = Qwen2_5OmniForConditionalGeneration.from_pretrained(tmp_path / "out", dtype=torch.float32).eval()
    exported = _thinker_logps(merged.thinker, base)
    assert _max_diff(exported, result["trained_logp"]) <= 1e-5

    stock = Qwen2_5OmniForConditionalGeneration.from_pretrained(base, dtype=torch.float32).eval()
    with_adapter = PeftModel.from_pretrained(stock, tmp_path / "adapter").eval()
    assert _max_diff(_thinker_logps(with_adapter.base_model.model.thinker, base), exported) <= 1e-5

    # a checkpoint with the adapters alone (checkpoint.save_lora_only) merges onto the base's weights
    lora_only = tmp_path / "lora_only"
    (lora_only / "huggingface").mkdir(parents=True)
    state = load_checkpoint_state(ckpt)
    save_file({n: t.contiguous() for n, t in state.items() if lora.is_adapter_tensor(n)},
              lora_only / "huggingface" / "model.safetensors")
    (lora_only / "lora_train_meta.json").write_bytes((ckpt / "lora_train_meta.json").read_bytes())
    export_model(lora_only, base, tmp_path / "out2", dtype=torch.float32)
    first, second = load_file(tmp_path / "out" / "model.safetensors"), load_file(tmp_path / "out2" / "model.safetensors")
    assert set(first) == set(second)
    assert max(float((first[n] - second[n]).abs().max()) for n in first) == 0.0
