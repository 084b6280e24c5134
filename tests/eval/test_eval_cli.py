"""``python -m verl_audio.eval`` on a tiny random Omni: every ALR mode of the demo sample, resume, samples,
bad input, and the tone task in the MMAU layout against ``examples/hear_tones/eval.py``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers.examples import load_example
from helpers.paths import DEMO_SAMPLE
from verl_audio.data.tones import TONE_QUESTION, generate_tones
from verl_audio.eval.cli import main, parser, run
from verl_audio.eval.generation import HFBackend

MODES = [("audio", "text"), ("text", "text"), ("text", "audio"), ("audio", "audio")]
TONE_TEMPLATE = "<audio>{question} Answer with one word: {choices_inline}."


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from verl_audio.models.tiny import build_tiny_omni

    return build_tiny_omni(tmp_path_factory.mktemp("tiny") / "omni", vocab="small")


@pytest.fixture(scope="module")
def backend(tiny: Path) -> HFBackend:
    return HFBackend(str(tiny))


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The demo sample's dev split prepared in each of the four modes."""
    from verl_audio.data.alr import prepare_alr

    out = tmp_path_factory.mktemp("demo")
    files = {}
    for source, target in MODES:
        folder = out / f"{source}_{target}"
        prepare_alr(DEMO_SAMPLE, folder, source, target, splits=("dev",), progress=False, log=lambda _: None)
        files[f"{source}_to_{target}"] = folder / "dev.parquet"
    return files


def _args(tiny: Path, out: Path, data: list[Path], *extra: str):
    argv = ["--model", str(tiny), "--out", str(out), "--quiet", "--max-new-tokens", "4"]
    for d in data:
        argv += ["--data", str(d)]
    return parser().parse_args([*argv, *extra])


def _lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]


def test_every_mode_then_resume(tiny: Path, backend: HFBackend, demo: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "eval"
    args = _args(tiny, out, list(demo.values()), "--asr-model", "unused-without-speech")
    results = run(args, backend)
    table = results["table"]
    assert list(table) == ["audio_to_text", "text_to_text", "text_to_audio", "audio_to_audio", "all"]
    for mode in demo:
        row = table[mode]
        assert row["n"] == 2 and row["n_scored"] + row["n_failed"] == 2
        assert 0.0 <= row["accuracy"] <= 1.0
    lines = _lines(out)
    assert len(lines) == 8 and {line["group"] for line in lines} == set(demo)
    for line in lines:
        (sample,) = line["samples"]
        assert set(sample) >= {"response", "parsed", "correct", "reasoning_words", "speech_seconds", "transcript", "wer"}
        # this checkpoint has no talker: spoken rows are scored on their text and say why they have no WER
        if line["group"].endswith("_to_audio"):
            assert sample["speech_error"].startswith("no speech:") and "no talker" in sample["speech_error"]
        else:
            assert sample["speech_error"] is None
    assert table["all"]["speech_errors"] == {next(iter(table["all"]["speech_errors"])): 4}
    md = (out / "results.md").read_text()
    assert "| audio→text |" in md and "| text→audio |" in md and "n failed" in md

    # rerun: nothing generated again (no backend given: one would have to be loaded to generate)
    again = run(args, None)
    assert again["table"] == table and len(_lines(out)) == 8

    # a line lost (e.g. a run killed mid-write) is generated again, greedily identical
    kept = [line for line in lines if line["key"] != "text_to_text:0005"]
    (out / "predictions.jsonl").write_text("".join(json.dumps(x) + "\n" for x in kept) + '{"key": "trunc')
    run(args, backend)
    redone = {x["key"]: x for x in _lines(out)}
    assert len(redone) == 8
    before = next(x for x in lines if x["key"] == "text_to_text:0005")
    assert redone["text_to_text:0005"]["samples"] == before["samples"]

    # other settings into the same folder are refused rather than mixed
    with pytest.raises(ValueError, match="other settings"):
        run(_args(tiny, out, list(demo.values()), "--max-new-tokens", "5"), backend)


def test_samples_give_pass_and_majority(tiny: Path, backend: HFBackend, demo: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "eval"
    results = run(_args(tiny, out, [demo["audio_to_text"]], "--n", "3", "--temperature", "1.0"), backend)
    row = results["table"]["audio_to_text"]
    assert {"pass@3", "maj@3"} <= set(row)
    assert row["maj@3"] <= row["pass@3"] and row["accuracy"] <= row["pass@3"]
    for line in _lines(out):
        assert len(line["samples"]) == 3
        assert line["pass"] == any(s["correct"] for s in line["samples"])


def test_bad_input_is_counted_and_listed(tiny: Path, backend: HFBackend, demo: dict[str, Path], tmp_path: Path) -> None:
    rows = pq.read_table(demo["audio_to_text"]).to_pylist()
    root = tmp_path / "data"
    root.mkdir()
    shutil.copy(rows[0]["audios"][0], root / "q0.wav")
    shutil.copy(rows[0]["audios"][0], tmp_path / "elsewhere.wav")
    (root / "link.wav").symlink_to(tmp_path / "elsewhere.wav")  # inside the root, pointing out of it

    def row(rid: str, audio: Path) -> dict:
        return dict(rows[0], audios=[str(audio)], extra_info=dict(rows[0]["extra_info"], id=rid))

    data = root / "dev.parquet"
    bad_rows = [row("ok", root / "q0.wav"), row("gone", root / "gone.wav"), row("outside", tmp_path / "elsewhere.wav"),
                row("ok", root / "q0.wav")]
    pq.write_table(pa.Table.from_pylist(bad_rows), data)
    results = run(_args(tiny, tmp_path / "alr", [data], "--audio-root", str(root)), backend)
    assert results["table"]["all"]["n"] == 4
    assert results["table"]["all"]["n_scored"] + results["table"]["all"]["n_failed"] == 4
    reasons = {f["key"]: f["reason"] for f in results["failed"]}
    assert reasons["audio_to_text:gone"].startswith("unreadable audio:") and "gone.wav" in reasons["audio_to_text:gone"]
    assert reasons["audio_to_text:outside"].startswith("bad audio path:")
    assert reasons["audio_to_text:ok#dev.parquet:3"].startswith("duplicate id")
    assert not reasons.get("audio_to_text:ok", "").startswith(("unreadable", "bad", "duplicate"))

    items = [
        {"id": "ok", "audio_path": "q0.wav", "question": "Q?", "choices": ["a", "b"], "answer": "a"},
        {"id": "no-answer", "audio_path": "q0.wav", "question": "Q?", "choices": ["a", "b"], "answer": "c"},
        {"id": "escape", "audio_path": "../elsewhere.wav", "question": "Q?", "choices": ["a", "b"], "answer": "a"},
        {"id": "link", "audio_path": "link.wav", "question": "Q?", "choices": ["a", "b"], "answer": "a"},
    ]
    mmau = root / "items.jsonl"
    mmau.write_text("".join(json.dumps(i) + "\n" for i in items) + "not json\n")
    results = run(_args(tiny, tmp_path / "mmau", [mmau], "--task", "mmau"), backend)
    reasons = {f["key"]: f["reason"] for f in results["failed"]}
    assert results["table"]["all"]["n"] == 5
    assert "is not one of the choices" in reasons["mmau:no-answer"]
    assert reasons["mmau:escape"].startswith("bad audio path:")
    assert reasons["mmau:link"].startswith("bad audio path:")
    assert reasons["mmau:items.jsonl:5"].startswith("bad item: not JSON")
    assert not reasons.get("mmau:ok", "").startswith("bad")


@pytest.mark.slow
def test_vllm_backend_answers_as_the_hf_backend(demo: dict[str, Path], tmp_path: Path) -> None:
    """``--backend vllm`` (offline vLLM, vLLM's CPU build here) on the demo rows, text and audio in: the same
    greedy responses as ``--backend hf`` on the same checkpoint. vLLM's engine start takes minutes on 2 cores;
    the default run covers vLLM through the rollout (tests/rollout/test_vllm_rollout.py)."""
    pytest.importorskip("vllm", reason="vLLM is not installed (scripts/setup_env.sh with VLLM=none)")
    from verl_audio.models.tiny import build_tiny_omni

    model = build_tiny_omni(tmp_path / "omni32", head_dim=32)  # vLLM's CPU attention needs head dim >= 32
    data = [demo["text_to_text"], demo["audio_to_text"]]
    for name in ("hf", "vllm"):
        argv = ["--model", str(model), "--out", str(tmp_path / name), "--quiet", "--max-new-tokens", "6",
                "--backend", name]
        for d in data:
            argv += ["--data", str(d)]
        assert main(argv) == 0
    hf, vllm = _lines(tmp_path / "hf"), _lines(tmp_path / "vllm")
    assert len(hf) == len(vllm) == 4
    def responses(lines: list[dict]) -> list[tuple]:
        return [(r["key"], r["group"], [sample["response"] for sample in r["samples"]]) for r in lines]

    assert responses(hf) == responses(vllm)
    assert any(r[2][0] for r in responses(hf))  # the responses are not empty


def _answering_model(tiny: Path, clips: list[dict], out: Path) -> Path:
    """The tiny model with an output layer that only says `` high`` or `` low``: the two rows are +/- the
    direction along which the clips' final hidden states differ most (centred), every other row is zero. Which
    word a clip gets is still the random network's doing; only the answer vocabulary is narrowed to two."""
    import torch
    from safetensors.torch import load_file, save_file

    from verl_audio.data.decode import to_array
    from verl_audio.eval.generation import Prompt, prompt_token_ids
    from verl_audio.rollout.hf.engine import GenRequest
    from verl_audio.rollout.sampling import SamplingSpec

    backend = HFBackend(str(tiny))
    gen, text = backend.generator, TONE_TEMPLATE.format(question=TONE_QUESTION, choices_inline="high or low")
    requests = []
    for clip in clips:
        prompt = Prompt(text, [to_array(clip["path"])])
        ids = prompt_token_ids(backend.processor, prompt)
        requests.append(GenRequest(ids, backend.featurizer.prepare(ids, prompt.audios), SamplingSpec(max_tokens=1)))
    with torch.inference_mode():
        mask, embeds, positions, _ = gen._prefill_inputs(requests)
        hidden = gen.model.model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions).last_hidden_state
    h = hidden[:, -1].float()
    mean = h.mean(0)
    direction = torch.linalg.svd(h - mean, full_matrices=False).Vh[0]
    direction -= (mean @ direction) / (mean @ mean) * mean  # split the clips around their mean state

    shutil.copytree(tiny, out)
    tokenizer = backend.processor.tokenizer
    weights = load_file(out / "model.safetensors")
    head = torch.zeros_like(weights["thinker.lm_head.weight"])
    head[tokenizer.convert_tokens_to_ids("Ġhigh")] = 50 * direction
    head[tokenizer.convert_tokens_to_ids("Ġlow")] = -50 * direction
    weights["thinker.lm_head.weight"] = head
    save_file(weights, out / "model.safetensors", metadata={"format": "pt"})
    return out


def test_tone_task_in_mmau_layout_matches_the_example_eval(tiny: Path, tmp_path: Path) -> None:
    clips = generate_tones(tmp_path / "clips", 16, seed=2)
    model = _answering_model(tiny, clips, tmp_path / "model")
    items = [{"id": Path(c["path"]).stem, "audio_path": Path(c["path"]).name, "question": TONE_QUESTION,
              "choices": ["high", "low"], "answer": c["label"], "category": "tone"} for c in clips]
    data = tmp_path / "clips" / "tones.json"
    data.write_text(json.dumps(items))
    out = tmp_path / "eval"
    assert main(["--model", str(model), "--data", str(data), "--out", str(out), "--task", "mmau", "--quiet",
                 "--prompt-template", TONE_TEMPLATE, "--max-new-tokens", "1", "--batch-size", "16"]) == 0
    ours = {line["id"]: line for line in _lines(out)}
    table = json.loads((out / "results.json").read_text())["table"]

    example = load_example("eval")
    theirs = example.evaluate(model, tmp_path / "clips", max_new_tokens=1, batch_size=16)
    accuracy = float(example.report(theirs)[-1].split()[-1])
    assert {r.path.stem: r.pred for r in theirs} == {k: v["samples"][0]["parsed"] for k, v in ours.items()}
    assert list(table) == ["all"]  # the items carry none of MMAU's groupings (task, difficulty, sub-category)
    assert table["all"]["accuracy"] == pytest.approx(accuracy, abs=5e-5)
    preds = {r.pred for r in theirs}
    assert preds == {"high", "low"}  # both answers occur: the equality is not that of two constant outputs


@pytest.mark.slow  # the tiny talker + token2wav take about a minute per spoken answer on 2 cores
def test_spoken_answers_get_a_transcript_and_wer(demo: dict[str, Path], tmp_path: Path, tiny_whisper: str) -> None:
    from verl_audio.models.tiny import build_tiny_omni

    model = build_tiny_omni(tmp_path / "talker", vocab="small", talker=True)
    out = tmp_path / "eval"
    results = run(_args(model, out, [demo["text_to_audio"]], "--limit", "1", "--max-speech-tokens", "8",
                        "--asr-model", tiny_whisper, "--device", "cpu"), None)
    (line,) = _lines(out)
    (sample,) = line["samples"]
    assert sample["speech_error"] is None and sample["speech_seconds"] > 0
    assert isinstance(sample["transcript"], str) and sample["wer_words"] is not None
    assert results["table"]["text_to_audio"]["n_spoken"] == 1
    assert results["table"]["text_to_audio"]["wer"] is not None
