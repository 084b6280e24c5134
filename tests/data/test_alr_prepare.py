"""ALR preparation: rows for verl's RLHFDataset, ground truth from `label`, every bad row reported."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from helpers.paths import REPO
from verl_audio.contract import INSTRUCTION, with_instruction
from verl_audio.data import alr_rows as alr_mod
from verl_audio.data.alr import PrepError, prepare_alr, reasoning_label
from verl_audio.data.alr_sources import PathEscapeError, resolve_inside

CLI = REPO / "examples" / "data_preprocess" / "alr.py"
SR = 24000
QUESTION = "Major premise is \"All cats purr\". Minor premise is \"Tom is a cat\". Conclusion is \"Tom purrs\"."


def _tone(seconds: float, freq: float = 300.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _sample(i: int, label: int, final: str | None = None) -> dict:
    final = final or ("entailed" if label else "not-entailed")
    return {
        "id": f"{i:04d}",
        "label": label,
        "question": f"{QUESTION} (problem {i})",
        "reasoning": f"Let me think about problem {i}.\nSo it follows.\n\nAnswer: {final}.",
        "q_seconds": 1.0 + 0.25 * i,
        "a_seconds": 2.0 + 0.5 * i,
    }


SAMPLES = [_sample(1, 0), _sample(2, 1), _sample(3, 1, final="not-entailed"), _sample(4, 0)]


def make_release(root: Path, layout: str, samples=SAMPLES, split: str = "dev") -> Path:
    """A small ALR folder in one of the supported layouts, with tone audio."""
    root.mkdir(parents=True, exist_ok=True)
    meta = []
    for s in samples:
        folder = root / split / s["id"]
        folder.mkdir(parents=True, exist_ok=True)
        sf.write(folder / "question.wav", _tone(s["q_seconds"]), SR)
        sf.write(folder / f"answer_{s['label']}.wav", _tone(s["a_seconds"], 500.0), SR)
        prefix = "" if layout == "split_metadata" else f"{split}/"
        meta.append(
            {
                "id": s["id"],
                "split": split,
                "question_file_name": f"{prefix}{s['id']}/question.wav",
                "answer_file_name": f"{prefix}{s['id']}/answer_{s['label']}.wav",
                "annotation_question": s["question"],
                "annotation_answer": s["reasoning"],
                "label": s["label"],
            }
        )
        if layout == "annotation":
            ann = {"user_content": s["question"], "answer": s["reasoning"], "label": str(s["label"]), "id": s["id"]}
            (folder / "annotation.json").write_text(json.dumps(ann))
    if layout == "split_metadata":
        _write_jsonl(root / split / "metadata.jsonl", meta)
    elif layout == "root_metadata":
        _write_jsonl(root / "metadata.jsonl", meta)
    elif layout == "jsonl":
        rows = [{"user_content": m["annotation_question"], "answer": m["annotation_answer"], "label": m["label"],
                 "id": m["id"]} for m in meta]
        _write_jsonl(root / f"{split}.jsonl", rows)
    return root


def _write_jsonl(path: Path, rows: list) -> None:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def _rows(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def _rejected(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("layout", ["split_metadata", "root_metadata", "jsonl", "annotation"])
def test_every_layout_gives_the_same_rows(tmp_path, layout):
    src = make_release(tmp_path / "src", layout)
    (report,) = prepare_alr(src, tmp_path / "out", "audio", "text", splits=["dev"], progress=False, log=lambda m: None)
    assert (report.rows_in, report.written, report.rejected) == (4, 4, 0)
    rows = _rows(report.parquet)
    for row, s in zip(rows, SAMPLES, strict=False):
        extra = row["extra_info"]
        assert row["data_source"] == "alr" and row["ability"] == "logical-reasoning"
        assert row["reward_model"] == {"style": "rule", "ground_truth": "entailed" if s["label"] else "not-entailed"}
        assert row["prompt"] == [{"role": "user", "content": with_instruction("<audio>")}]
        q = (src / "dev" / s["id"] / "question.wav").resolve()
        assert row["audios"] == [str(q)] and os.path.isabs(row["audios"][0])
        assert extra["id"] == s["id"] and extra["split"] == "dev" and extra["label"] == s["label"]
        assert extra["question_audio_seconds"] == pytest.approx(s["q_seconds"])
        assert extra["ref_audio_seconds"] == pytest.approx(s["a_seconds"])
        assert extra["ref_text_words"] == len(s["reasoning"].split())
        assert extra["ref_text"] == s["reasoning"] and extra["question_text"] == s["question"]
        assert (extra["input_modality"], extra["output_modality"]) == ("audio", "text")
    assert [r["extra_info"]["index"] for r in rows] == [0, 1, 2, 3]
    # sample 3 (label 1) ends its reasoning with "not-entailed": counted, and the label still wins
    assert report.contradictions == 1 and report.unparsed == 0
    assert rows[2]["reward_model"]["ground_truth"] == "entailed"
    assert dict(report.labels) == {"entailed": 2, "not-entailed": 2}
    assert report.rejected_path.read_text() == ""


def test_modalities(tmp_path):
    src = make_release(tmp_path / "src", "split_metadata")
    quiet = dict(splits=["dev"], progress=False, log=lambda m: None)
    (text,) = prepare_alr(src, tmp_path / "t", "text", "text", **quiet)
    row = _rows(text.parquet)[0]
    assert row["prompt"][0]["content"] == with_instruction(SAMPLES[0]["question"]) and row["audios"] == []
    assert row["extra_info"]["question_audio_seconds"] == pytest.approx(1.25)  # read from the header
    (both,) = prepare_alr(src, tmp_path / "b", "both", "audio", **quiet)
    row = _rows(both.parquet)[0]
    content = row["prompt"][0]["content"]
    assert content.startswith("<audio>\n" + SAMPLES[0]["question"]) and content.endswith(INSTRUCTION)
    assert len(row["audios"]) == 1 and row["extra_info"]["answer_audio"].endswith("answer_0.wav")
    # the rows load with the `datasets` library verl uses, types intact
    ds = datasets.load_dataset("parquet", data_files=str(both.parquet))["train"]
    assert ds[0]["audios"] == row["audios"] and isinstance(ds[0]["extra_info"]["ref_audio_seconds"], float)


def test_text_only_without_audio_files(tmp_path):
    src = make_release(tmp_path / "src", "jsonl")
    shutil.rmtree(src / "dev")  # annotations alone
    (report,) = prepare_alr(src, tmp_path / "out", "text", "text", splits=["dev"], progress=False, log=lambda m: None)
    assert report.written == 4
    extra = _rows(report.parquet)[0]["extra_info"]
    assert extra["question_audio_seconds"] is None and extra["ref_audio_seconds"] is None
    # audio output needs the answer audio: every row is rejected, saying so
    (report,) = prepare_alr(src, tmp_path / "o2", "text", "audio", splits=["dev"], progress=False, log=lambda m: None)
    assert (report.written, report.rejected) == (0, 4)
    assert all("missing" in r["reason"] for r in _rejected(report.rejected_path))
    assert pq.read_table(report.parquet).num_rows == 0  # still a valid (empty) parquet


def test_bad_rows_are_rejected_with_reasons(tmp_path, monkeypatch):
    src = make_release(tmp_path / "src", "split_metadata", samples=[_sample(i, i % 2) for i in range(1, 4)])
    outside = tmp_path / "outside.wav"
    sf.write(outside, _tone(1.0), SR)
    (src / "dev" / "0002" / "link.wav").symlink_to(outside)
    (src / "dev" / "0003" / "question.wav").write_bytes(b"")
    meta_path = src / "dev" / "metadata.jsonl"
    meta = [json.loads(line) for line in meta_path.read_text().splitlines()]
    good = meta[0]
    bad = [
        "{not json",
        {**good, "id": "b1", "label": 2},
        {**good, "id": "b2", "label": "yes"},
        {**good, "id": "b3", "annotation_answer": ""},
        {**good, "id": "b4", "question_file_name": "../../outside.wav"},
        {**good, "id": "b5", "question_file_name": str(outside)},
        {**good, "id": "b6", "question_file_name": "0002/link.wav"},
        {**good, "id": "b7", "answer_file_name": "0001/answer_1.wav", "label": 0},
        {**good, "id": "b8", "question_file_name": "0001/nope.wav"},
        {k: v for k, v in good.items() if k != "question_file_name"} | {"id": "b9"},
        {**good},  # duplicate id 0001
        {**good, "id": "b10", "annotation_question": "hear <audio> this"},
    ]
    _write_jsonl(meta_path, meta + bad)
    opened = []
    real_decode, real_duration = alr_mod.decode_audio, alr_mod.audio_duration
    monkeypatch.setattr(alr_mod, "decode_audio", lambda p: (opened.append(Path(p)), real_decode(p))[1])
    monkeypatch.setattr(alr_mod, "audio_duration", lambda p: (opened.append(Path(p)), real_duration(p))[1])

    (report,) = prepare_alr(src, tmp_path / "out", "both", "text", splits=["dev"], progress=False, log=lambda m: None)
    assert report.rows_in == 3 + len(bad) == report.written + report.rejected
    assert [r["extra_info"]["id"] for r in _rows(report.parquet)] == ["0001", "0002"]
    rejected = {r["id"]: r for r in _rejected(report.rejected_path)}
    expect = {
        None: "invalid JSON",
        "0003": "empty file (0 bytes)",
        "b1": "label must be 0 or 1, got 2",
        "b2": "label must be 0 or 1, got 'yes'",
        "b3": "missing text field",
        "b4": "points outside the source folder",
        "b5": "points outside the source folder",
        "b6": "resolves through a symlink",
        "b7": "answer file answer_1.wav disagrees with label 0",
        "b8": "missing: no such file",
        "b9": "field 'question_file_name' missing",
        "0001": "duplicate id '0001'",
        "b10": "placeholder <audio>",
    }
    assert set(rejected) == set(expect)
    for rid, fragment in expect.items():
        assert fragment in rejected[rid]["reason"], (rid, rejected[rid])
        assert rejected[rid]["source"].startswith(str(meta_path))
    assert rejected["0003"]["path"].endswith("0003/question.wav")
    assert all(p.resolve().is_relative_to(src.resolve()) for p in opened)  # nothing outside SRC was opened
    assert outside.resolve() not in [p.resolve() for p in opened]


def test_resolve_inside(tmp_path):
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    assert resolve_inside(root, root / "a", "x.wav") == (root / "a" / "x.wav").resolve()
    assert resolve_inside(root, root / "a", "../b/x.wav") == (root / "b" / "x.wav").resolve()
    assert resolve_inside(root, root, str(root / "a" / "x.wav")) == (root / "a" / "x.wav").resolve()
    for ref in ("../../x.wav", "/etc/passwd", "a/../../../x.wav", str(tmp_path / "x.wav")):
        with pytest.raises(PathEscapeError):
            resolve_inside(root, root / "a", ref)


def test_missing_splits_are_reported_and_none_found_is_an_error(tmp_path):
    src = make_release(tmp_path / "src", "split_metadata")
    messages = []
    reports = prepare_alr(src, tmp_path / "out", splits=["train", "dev"], progress=False, log=messages.append)
    assert [r.split for r in reports] == ["dev"]
    assert len(messages) == 1 and "split 'train': not found" in messages[0]
    with pytest.raises(PrepError, match="none of the splits"):
        prepare_alr(src, tmp_path / "out", splits=["test"], progress=False, log=lambda m: None)
    with pytest.raises(PrepError, match="source folder not found"):
        prepare_alr(tmp_path / "nowhere", tmp_path / "out", progress=False)


def test_reasoning_label():
    assert reasoning_label("...\n\nAnswer: not entailed.") == "not-entailed"
    assert reasoning_label("so entailed?\nAnswer: Not-Entailed\n\n") == "not-entailed"
    assert reasoning_label("Answer: entailed.") == "entailed"
    assert reasoning_label("not entailed, hmm\nThe conclusion is entailed.") == "entailed"
    assert reasoning_label("No verdict here") is None and reasoning_label("") is None


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CLI), "--no-progress", *args], capture_output=True, text=True, cwd=REPO)


def test_cli_strict_fails_naming_the_file(tmp_path):
    src = make_release(tmp_path / "src", "split_metadata")
    broken = src / "dev" / "0002" / "question.wav"
    broken.write_bytes(broken.read_bytes()[:30])
    ok = _cli("--src", str(src), "--out", str(tmp_path / "out"), "--splits", "dev")
    assert ok.returncode == 0, ok.stderr
    assert "rows in 4 = written 3 + rejected 1" in ok.stdout and "contradicts the label: 1" in ok.stdout
    strict = _cli("--src", str(src), "--out", str(tmp_path / "out2"), "--splits", "dev", "--strict")
    assert strict.returncode != 0
    assert str(broken.resolve()) in strict.stderr and "0002" in strict.stderr
    assert "cannot decode" in strict.stderr or "header" in strict.stderr
    assert not (tmp_path / "out2" / "dev.parquet").exists()


# ---- the reference data (skipped when ../shared is absent) ----


def _decoded_seconds(path: str) -> float:
    data, sr = sf.read(path)
    return len(data) / sr


def test_mini_release(shared_alr, tmp_path):
    mini = shared_alr / "mini"
    (report,) = prepare_alr(mini, tmp_path, "audio", "text", splits=["dev"], progress=False, log=lambda m: None)
    assert (report.rows_in, report.written, report.rejected) == (6, 6, 0)
    meta = {m["id"]: m for m in map(json.loads, (mini / "metadata.jsonl").read_text().splitlines())}
    rows = {r["extra_info"]["id"]: r for r in _rows(report.parquet)}
    assert set(rows) == set(meta)
    for rid, row in rows.items():
        m, extra = meta[rid], row["extra_info"]
        assert row["reward_model"]["ground_truth"] == ("entailed" if m["label"] == 1 else "not-entailed")
        assert extra["label"] == m["label"]
        assert row["audios"] == [str((mini / m["question_file_name"]).resolve())]
        assert abs(extra["ref_audio_seconds"] - _decoded_seconds(str(mini / m["answer_file_name"]))) < 0.05
        assert extra["question_audio_seconds"] == pytest.approx(_decoded_seconds(row["audios"][0]), abs=1e-6)
    # 0021: label 1, reasoning ends "not-entailed" -> ground truth is the label's
    assert rows["0021"]["reward_model"]["ground_truth"] == "entailed"
    assert reasoning_label(rows["0021"]["extra_info"]["ref_text"]) == "not-entailed"
    assert report.contradictions == 1


def test_mini_copy_with_broken_audio(shared_alr, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(shared_alr / "mini", src)
    q = lambda rid: src / "dev" / rid / "question.wav"  # noqa: E731
    q("0001").write_bytes(q("0001").read_bytes()[:30])  # truncated header
    q("0003").write_bytes(b"")  # zero bytes
    q("0015").write_text("not audio at all\n" * 100)  # a text file
    data, sr = sf.read(q("0020"), dtype="float32")
    data[1000] = np.nan
    sf.write(q("0020"), data, sr, subtype="FLOAT")  # NaN samples
    meta_path = src / "metadata.jsonl"
    meta = [json.loads(line) for line in meta_path.read_text().splitlines()]
    sf.write(tmp_path / "elsewhere.wav", data[:sr] * 0, sr)
    for m in meta:
        if m["id"] == "0021":
            m["question_file_name"] = "../elsewhere.wav"  # escapes SRC
    _write_jsonl(meta_path, meta)

    out = tmp_path / "out"
    result = _cli("--src", str(src), "--out", str(out), "--splits", "dev")
    assert result.returncode == 0, result.stderr
    assert "rows in 6 = written 1 + rejected 5" in result.stdout
    assert [r["extra_info"]["id"] for r in _rows(out / "dev.parquet")] == ["0033"]
    rejected = {r["id"]: r for r in _rejected(out / "dev.rejected.jsonl")}
    assert set(rejected) == {"0001", "0003", "0015", "0020", "0021"}
    assert "empty file" in rejected["0003"]["reason"]
    assert "not audio" in rejected["0015"]["reason"]
    assert "NaN" in rejected["0020"]["reason"]
    assert "outside the source folder" in rejected["0021"]["reason"]
    for rid in ("0001", "0003", "0015", "0020"):
        assert rejected[rid]["path"] == str(q(rid).resolve()) and rejected[rid]["reason"]

    strict = _cli("--src", str(src), "--out", str(tmp_path / "strict"), "--splits", "dev", "--strict")
    assert strict.returncode != 0
    assert str(q("0001").resolve()) in strict.stderr and "metadata.jsonl:1" in strict.stderr


def test_dev_jsonl_text_only(shared_alr, tmp_path):
    result = _cli("--src", str(shared_alr), "--out", str(tmp_path), "--input-modality", "text",
                  "--output-modality", "text")
    assert result.returncode == 0, result.stderr
    assert "split 'train': not found" in result.stdout and "split 'test': not found" in result.stdout
    assert "rows in 606 = written 606 + rejected 0" in result.stdout
    source = [json.loads(line) for line in (shared_alr / "dev.jsonl").read_text().splitlines()]
    rows = _rows(tmp_path / "dev.parquet")
    assert len(rows) == len(source) == 606
    for row, s in zip(rows, source, strict=False):
        assert row["extra_info"]["id"] == str(s["id"]) and row["extra_info"]["label"] == s["label"]
        assert row["reward_model"]["ground_truth"] == ("entailed" if s["label"] == 1 else "not-entailed")
        assert row["prompt"][0]["content"] == with_instruction(s["user_content"]) and row["audios"] == []
    assert sum(r["extra_info"]["label"] for r in rows) == 264


def test_hub_id_downloads_then_prepares(tmp_path, monkeypatch):
    import huggingface_hub

    src = make_release(tmp_path / "snapshot", "split_metadata")
    calls = []

    def fake_snapshot_download(**kwargs):
        calls.append(kwargs)
        return str(src)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    (report,) = prepare_alr("SoundMind-RL/SoundMindDataset", tmp_path / "out", "text", "text", splits=["dev"],
                            progress=False, log=lambda m: None)
    assert report.written == 4
    (call,) = calls
    assert call["repo_id"] == "SoundMind-RL/SoundMindDataset" and call["repo_type"] == "dataset"
    assert "dev/metadata.jsonl" in call["allow_patterns"] and "dev/**" not in call["allow_patterns"]

    def offline(**kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(RuntimeError, match="is not a local folder, and downloading .* failed .*--src"):
        prepare_alr("SoundMind-RL/SoundMindDataset", tmp_path / "out", splits=["dev"], progress=False)
