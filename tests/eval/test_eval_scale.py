"""Eval at real scale: failed generations retried on resume (tiny model, ``hf`` backend), ``--dtype`` and
``--device``, vLLM's context and clips per prompt from the data, and ``--audio-root`` from any cwd."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from verl_audio.data.tones import TONE_QUESTION, generate_tones
from verl_audio.eval import cli
from verl_audio.eval.cli import parser, run
from verl_audio.eval.generation import (
    HFBackend,
    Prompt,
    PromptError,
    PromptShape,
    Response,
    Sampling,
    make_backend,
    needed_limits,
    prompt_token_ids,
    resolve_device_dtype,
)
from verl_audio.eval.items import load_items


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from verl_audio.models.tiny import build_tiny_omni

    return build_tiny_omni(tmp_path_factory.mktemp("tiny") / "omni", vocab="small")


@pytest.fixture(scope="module")
def backend(tiny: Path) -> HFBackend:
    return HFBackend(str(tiny))


def _tone_items(folder: Path, n: int) -> Path:
    """``n`` tone questions in the MMAU layout, each question text numbered (the prompt names the item)."""
    clips = generate_tones(folder / "clips", n, seed=3)
    items = [{"id": f"t{i}", "audio_id": f"./clips/{Path(c['path']).name}", "question": f"Q{i}. {TONE_QUESTION}",
              "choices": ["high", "low"], "answer": c["label"], "task": "sound", "difficulty": "easy",
              "sub-category": "pitch"} for i, c in enumerate(clips)]
    data = folder / "tones.json"
    data.write_text(json.dumps(items))
    return data


class Flaky:
    """The real ``hf`` backend, except that prompts naming an item in ``once`` raise the first time they are
    generated (an out-of-memory stand-in) and those in ``never`` always raise ``PromptError``."""

    name = "hf"

    def __init__(self, real: HFBackend, once: set[str] = frozenset(), never: set[str] = frozenset()) -> None:
        self.real, self.once, self.never = real, set(once), set(never)
        self.processor, self.dtype = real.processor, real.dtype
        self.calls: list[list[str]] = []  # the items of each call

    def generate(self, prompts: list[Prompt], sampling: Sampling) -> list[list[Response]]:
        names = [p.text.split("<audio>")[1].split(".")[0] for p in prompts]  # "Q3"
        self.calls.append(names)
        if any(name in self.never for name in names):
            raise PromptError("too long (injected)")
        failing = [name for name in names if name in self.once]
        if failing:
            self.once -= set(failing)
            raise RuntimeError("CUDA out of memory (injected)")
        return self.real.generate(prompts, sampling)


def test_failed_generations_are_retried_on_resume(tiny: Path, backend: HFBackend, tmp_path: Path) -> None:
    data = _tone_items(tmp_path, 6)
    out = tmp_path / "eval"
    args = parser().parse_args(["--model", str(tiny), "--data", str(data), "--out", str(out), "--task", "mmau",
                                "--max-new-tokens", "3", "--batch-size", "8", "--quiet"])
    first = Flaky(backend, once={"Q1", "Q4"}, never={"Q2"})
    results = run(args, first)
    # one batch call that fails, then each of the six alone: Q1, Q4 fail (once), Q2 fails (final)
    assert len(first.calls) == 7 and first.calls[0] == [f"Q{i}" for i in range(6)]
    failed = {f["key"]: f for f in results["failed"]}
    assert failed["mmau:t1"]["retry"] and failed["mmau:t4"]["retry"] and results["to_retry"] == 2
    assert failed["mmau:t2"]["reason"].startswith("cannot be asked:") and not failed["mmau:t2"]["retry"]
    assert "rerunning the same command generates them again" in (out / "results.md").read_text()
    before = {r["key"]: r for r in map(json.loads, (out / "predictions.jsonl").read_text().splitlines())}

    again = Flaky(backend)
    results = run(args, again)
    assert again.calls == [["Q1", "Q4"]]  # exactly the failed generations, once, and nothing else
    reasons = {f["key"]: f["reason"] for f in results["failed"]}  # a random model: its answers may not parse
    assert results["to_retry"] == 0 and not any(r.startswith("generation failed") for r in reasons.values())
    lines = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert sorted(r["key"] for r in lines) == sorted(before)  # each item once
    after = {r["key"]: r for r in lines}
    for key in ("mmau:t0", "mmau:t2", "mmau:t3", "mmau:t5"):
        assert after[key] == before[key]  # finished (and final) items kept as they were
    assert after["mmau:t1"]["samples"] and not after["mmau:t1"]["retry"]
    official = json.loads((out / "official_input.json").read_text())
    assert [o["id"] for o in official] == [f"t{i}" for i in range(6)] and official[2]["model_output"] == ""

    third = Flaky(backend)
    run(args, third)
    assert third.calls == []


def test_device_and_dtype_defaults_and_flags() -> None:
    assert resolve_device_dtype("cpu", None) == ("cpu", "float32")
    assert resolve_device_dtype("cuda", None) == ("cuda", "bfloat16")
    assert resolve_device_dtype("cuda:1", "float16") == ("cuda:1", "float16")
    assert resolve_device_dtype(None, "float32")[1] == "float32"
    with pytest.raises(ValueError, match="--dtype"):
        resolve_device_dtype("cpu", "int8")
    args = parser().parse_args(["--model", "m", "--data", "d", "--out", "o"])
    assert args.dtype is None and args.max_model_len is None and args.device is None
    with pytest.raises(SystemExit):
        parser().parse_args(["--model", "m", "--data", "d", "--out", "o", "--dtype", "int8"])


def test_hf_backend_takes_device_and_dtype(tiny: Path) -> None:
    import torch

    made = make_backend("hf", str(tiny), device="cpu", dtype="bfloat16", seed=0)
    params = list(made.generator.model.parameters())
    assert {p.dtype for p in params} == {torch.bfloat16} and {p.device.type for p in params} == {"cpu"}
    assert made.dtype == "bfloat16"


def test_run_hands_device_dtype_and_data_limits_to_the_backend(tiny: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    data = _tone_items(tmp_path, 3)
    seen: dict = {}

    class Answers:
        name, processor, dtype = "vllm", None, None

        def generate(self, prompts: list[Prompt], sampling: Sampling) -> list[list[Response]]:
            return [[Response("high", [])] for _ in prompts]

    def fake_make_backend(name: str, model: str, **kwargs):
        seen.update(kwargs, name=name)
        return Answers()

    monkeypatch.setattr(cli, "make_backend", fake_make_backend)
    argv = ["--model", str(tiny), "--data", str(data), "--task", "mmau", "--backend", "vllm", "--quiet",
            "--device", "cpu", "--dtype", "bfloat16", "--max-new-tokens", "7"]
    run(parser().parse_args([*argv, "--out", str(tmp_path / "a")]))
    assert seen["device"] == "cpu" and seen["dtype"] == "bfloat16" and seen["max_model_len"] is None
    assert seen["max_new_tokens"] == 7 and len(seen["shapes"]) == 3
    lengths = {len(sf.read(p)[0]) for p in (tmp_path / "clips").iterdir()}
    assert {s.clip_samples[0] for s in seen["shapes"]} <= lengths  # the clips are 16 kHz: lengths as read
    run(parser().parse_args([*argv, "--out", str(tmp_path / "b"), "--max-model-len", "4096"]))
    assert seen["max_model_len"] == 4096
    assert json.loads((tmp_path / "b" / "run.json").read_text())["dtype"] == "bfloat16"


def test_needed_limits_are_the_longest_prompt_and_most_clips(tiny: Path, tmp_path: Path) -> None:
    """Exactly the processor's token count of the longest prompt (audio tokens included) + max_new_tokens, on
    the tiny Omni and on the tiny Qwen2-Audio, whose clips longer than 30 s enter as several windows (which
    count as clips)."""
    from verl_audio.models.families import family_named
    from verl_audio.models.tiny_qwen2_audio import build_tiny_qwen2_audio

    rng = np.random.default_rng(0)
    shapes = [PromptShape("<audio>short?", (8000,)), PromptShape("<audio>a longer question, clip 65 s?", (1040000,)),
              PromptShape("<audio>one <audio>two", (16000, 24000)), PromptShape("no audio at all", ())]
    for name, path in (("qwen2_5_omni", tiny), ("qwen2_audio", build_tiny_qwen2_audio(tmp_path / "q2a"))):
        family = family_named(name)
        processor = family.load_processor(str(path))
        real = [len(prompt_token_ids(processor, Prompt(s.text, [rng.standard_normal(n).astype(np.float32) * 0.1
                                                                 for n in s.clip_samples]))) for s in shapes]
        length, clips = needed_limits(processor, family, shapes, 100)
        assert length == max(real) + 100
        assert clips == (3 if family.window_seconds else 2)  # 65 s: three 30 s windows; else the two-clip prompt
        assert needed_limits(processor, family, shapes[:1], 5) == (real[0] + 5, 1)


def test_vllm_backend_sizes_itself_from_the_data(tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``VLLMBackend`` without starting vLLM (its ``LLM`` replaced): the limits it would start with, and
    ``--device`` for another platform than the installed vLLM's refused."""
    vllm = pytest.importorskip("vllm", reason="vLLM is not installed")
    from transformers import AutoConfig
    from vllm.platforms import current_platform

    from verl_audio.eval.generation import VLLMBackend

    started: dict = {}

    class FakeLLM:
        def __init__(self, **kwargs) -> None:
            started.clear()
            started.update(kwargs)
            self.llm_engine = SimpleNamespace(model_config=SimpleNamespace(hf_config=AutoConfig.from_pretrained(tiny)))

        def collective_rpc(self, *args, **kwargs) -> None:
            pass

    monkeypatch.setattr(vllm, "LLM", FakeLLM)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # restored afterwards
    shapes = [PromptShape("<audio>q?", (16000,)), PromptShape("<audio>q? <audio>", (16000, 32000))]
    made = VLLMBackend(str(tiny), shapes=shapes, max_new_tokens=50)
    need = needed_limits(made.processor, made.family, shapes, 50)
    assert started["max_model_len"] == need[0] and started["limit_mm_per_prompt"]["audio"] == need[1] == 2
    VLLMBackend(str(tiny), shapes=shapes, max_model_len=999, max_clips=5, dtype="bfloat16")
    assert started["max_model_len"] == 999 and started["limit_mm_per_prompt"]["audio"] == 5
    assert started["dtype"] == "bfloat16"
    VLLMBackend(str(tiny))  # nothing to size from: the model's context
    context = AutoConfig.from_pretrained(tiny).thinker_config.text_config.max_position_embeddings
    assert started["max_model_len"] == context

    other = "cuda" if current_platform.is_cpu() else "cpu"
    with pytest.raises(ValueError, match=f"--device {other}"):
        VLLMBackend(str(tiny), device=other)
    if not current_platform.is_cpu():
        VLLMBackend(str(tiny), device="cuda:1")
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"


def test_audio_root_resolves_relative_paths_from_any_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """README's MMAU command: the annotation file in one folder, the audio under ``--audio-root``, run from a
    third folder (``--audio-root`` given relative to it, too)."""
    root = tmp_path / "MMAU"
    (root / "test-mini-audios").mkdir(parents=True)
    sf.write(root / "test-mini-audios" / "a.wav", np.full(1600, 0.1, dtype=np.float32), 16000)
    (tmp_path / "outside.wav").write_bytes((root / "test-mini-audios" / "a.wav").read_bytes())
    items = [{"id": "a", "audio_id": "./test-mini-audios/a.wav", "question": "Q?", "choices": ["x", "y"],
              "answer": "x", "task": "sound", "difficulty": "easy"},
             {"id": "b", "audio_id": "../outside.wav", "question": "Q?", "choices": ["x", "y"], "answer": "x",
              "task": "sound", "difficulty": "easy"}]
    (tmp_path / "annotations").mkdir()
    data = tmp_path / "annotations" / "mmau-test-mini.json"
    data.write_text(json.dumps(items))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    good, escape = load_items([data], "mmau", "../MMAU")
    assert good.error is None and good.audios == [str((root / "test-mini-audios" / "a.wav").resolve())]
    assert escape.error.startswith("bad audio path:")
    # without --audio-root: the annotation file's folder (no audio there)
    (alone, _) = load_items([data], "mmau")
    assert alone.error is None and alone.audios == [str(tmp_path / "annotations" / "test-mini-audios" / "a.wav")]

    class Answers:
        name, processor, dtype = "scripted", None, "float32"

        def generate(self, prompts: list[Prompt], sampling: Sampling) -> list[list[Response]]:
            assert all(len(p.audios[0]) == 1600 for p in prompts)  # the clip was read
            return [[Response("x", [])] for _ in prompts]

    results = run(parser().parse_args(["--model", "m", "--data", str(data), "--out", "out", "--task", "mmau",
                                       "--audio-root", "../MMAU", "--quiet"]), Answers())
    assert results["table"]["task: sound"]["n"] == 2 and results["table"]["all"]["accuracy"] == 0.5
    assert [f["key"] for f in results["failed"]] == ["mmau:b"]
