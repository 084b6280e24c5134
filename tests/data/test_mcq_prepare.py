"""Audio multiple-choice preparation: benchmark-layout annotations -> checked parquet rows, every bad row reported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from helpers.paths import REPO
from verl_audio.data.confine import recorded_audio_root
from verl_audio.data.mcq import McqPrepError, prepare_mcq, read_annotations
from verl_audio.eval.items import load_items

CLI = REPO / "examples" / "data_preprocess" / "audio_mcq.py"
SR = 16000


def _wav(path: Path, seconds: float = 0.5, freq: float = 440.0) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * SR)) / SR
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), SR)
    return str(path)


def _item(i: int, **extra) -> dict:
    return {"id": f"q{i}", "audio_id": f"./audios/{i}.wav", "question": "What is heard?",
            "choices": ["a dog barking", "a car horn", "rain", "a bell"], "answer": "rain",
            "task": "sound", "difficulty": "easy", "category": "Sound event", "sub-category": "nature", **extra}


@pytest.fixture()
def bench(tmp_path: Path) -> Path:
    """A benchmark folder: audios/0..3.wav and mmau.json with four good items."""
    root = tmp_path / "bench"
    for i in range(4):
        _wav(root / "audios" / f"{i}.wav", freq=300 + 100 * i)
    (root / "mmau.json").write_text(json.dumps([_item(i) for i in range(4)]))
    return root


def _rows(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def test_good_rows_carry_the_eval_prompt_answer_choices_and_groups(bench: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    report = prepare_mcq(bench / "mmau.json", out, "train", audio_root=bench)
    assert (report.rows_in, report.written, report.rejected) == (4, 4, 0)
    rows = _rows(out / "train.parquet")
    row = rows[0]
    assert row["reward_model"] == {"style": "rule", "ground_truth": "rain"}
    assert row["audios"] == [str((bench / "audios" / "0.wav").resolve())]
    info = row["extra_info"]
    assert info["choices"] == ["a dog barking", "a car horn", "rain", "a bell"] and info["answer_index"] == 2
    assert info["groups"] == ["task=sound", "difficulty=easy", "category=Sound event", "sub-category=nature"]
    assert info["input_modality"] == "audio" and info["output_modality"] == "text"
    assert info["question_audio_seconds"] == pytest.approx(0.5) and info["source"].endswith("mmau.json:0")
    # the training prompt is exactly what the evaluation CLI asks by default for the same item
    (item, *_) = load_items([bench / "mmau.json"], "mmau", audio_root=bench)
    assert row["prompt"] == [{"role": "user", "content": item.prompt}]
    assert item.prompt.startswith("<audio>What is heard?\nChoices:\n- a dog barking\n")
    assert recorded_audio_root(out / "train.parquet") == str(bench.resolve())
    assert (out / "train.rejected.jsonl").read_text() == ""


def test_jsonl_list_categories_and_avqa_index_answers(tmp_path: Path) -> None:
    _wav(tmp_path / "a.wav")
    items = [
        {"id": 1, "audio_path": "a.wav", "question": "Q?", "choices": ["x", "y"], "answer": "y",
         "modality": "sound-music", "category": ["Signal Layer", "Semantic Layer"]},
        # R1-AQA's AVQA layout: question_text, multi_choice, answer as an index
        {"id": 2, "audio_path": "a.wav", "question_text": "What happened?", "multi_choice": ["boat", "car", "sail"],
         "answer": 1, "dataset_name": "AVQA"},
    ]
    (tmp_path / "mmar.jsonl").write_text("\n".join(json.dumps(i) for i in items) + "\n")
    report = prepare_mcq(tmp_path / "mmar.jsonl", tmp_path / "out", "dev")
    assert report.written == 2
    first, second = _rows(tmp_path / "out" / "dev.parquet")
    assert first["extra_info"]["groups"] == ["category=Signal Layer", "category=Semantic Layer", "modality=sound-music"]
    assert report.groups["category=Signal Layer"] == 1
    assert second["reward_model"]["ground_truth"] == "car" and second["extra_info"]["groups"] == []
    assert second["extra_info"]["id"] == "2" and second["extra_info"]["source"].endswith("mmar.jsonl:2")


def test_every_kind_of_bad_row_is_reported_and_rows_in_equal_written_plus_rejected(bench: Path, tmp_path: Path) -> None:
    outside = _wav(tmp_path / "elsewhere" / "x.wav")
    (bench / "audios" / "link.wav").symlink_to(outside)
    (bench / "audios" / "text.wav").write_text("#EXTM3U\nhttp://example.com/a.wav\n")
    (bench / "audios" / "empty.wav").write_bytes(b"")
    good = _item(0)
    bad = {
        "no id": {k: v for k, v in good.items() if k != "id"},
        "no question": {**good, "id": "b1", "question": " "},
        "one choice": {**good, "id": "b2", "choices": ["rain"]},
        "repeated choice": {**good, "id": "b3", "choices": ["rain", "rain", "a bell"]},
        "answer not a choice": {**good, "id": "b4", "answer": "thunder"},
        "index out of range": {**good, "id": "b5", "answer": 7},
        "ambiguous": {**good, "id": "b6", "choices": ["a-b", "a b"], "answer": "a-b"},
        "placeholder": {**good, "id": "b7", "question": "Hear <audio> this?"},
        "duplicate id": {**good},
        "no audio": {k: v for k, v in {**good, "id": "b8"}.items() if k != "audio_id"},
        "escape": {**good, "id": "b9", "audio_id": "../elsewhere/x.wav"},
        "absolute": {**good, "id": "b10", "audio_id": outside},
        "symlink": {**good, "id": "b11", "audio_id": "./audios/link.wav"},
        "missing file": {**good, "id": "b12", "audio_id": "./audios/none.wav"},
        "not audio": {**good, "id": "b13", "audio_id": "./audios/text.wav"},
        "empty file": {**good, "id": "b14", "audio_id": "./audios/empty.wav"},
        "bad group": {**good, "id": "b15", "task": {"x": 1}},
    }
    lines = [json.dumps(good)] + [json.dumps(v) for v in bad.values()] + ["{not json", "[1, 2]"]
    (bench / "mixed.jsonl").write_text("\n".join(lines) + "\n")
    report = prepare_mcq(bench / "mixed.jsonl", tmp_path / "out", "train", audio_root=bench)
    assert report.rows_in == len(lines) == report.written + report.rejected
    assert report.written == 1
    rejected = [json.loads(x) for x in (tmp_path / "out" / "train.rejected.jsonl").read_text().splitlines()]
    assert len(rejected) == report.rejected == len(bad) + 2
    by_line = {int(r["source"].rsplit(":", 1)[1]): r for r in rejected}
    kinds = {name: by_line[lineno]["kind"] for lineno, name in enumerate(bad, start=2)}
    assert kinds["no id"] == "missing id" and kinds["no question"] == "missing question"
    assert kinds["one choice"] == kinds["repeated choice"] == "bad choices"
    assert kinds["answer not a choice"] == kinds["index out of range"] == "answer not a choice"
    assert kinds["ambiguous"] == "ambiguous choices" and kinds["placeholder"] == "placeholder"
    assert kinds["duplicate id"] == "duplicate id" and kinds["no audio"] == "no audio path"
    assert kinds["escape"] == kinds["absolute"] == kinds["symlink"] == "outside root"
    assert kinds["bad group"] == "bad grouping field"
    assert by_line[len(lines) - 1]["kind"] == "invalid JSON" and by_line[len(lines)]["kind"] == "not an object"
    assert "not audio" in by_line[list(bad).index("not audio") + 2]["reason"]
    for name in ("missing file", "empty file"):
        assert by_line[list(bad).index(name) + 2]["path"]
    assert all(r["split"] == "train" and r["reason"] for r in rejected)
    assert [r["extra_info"]["id"] for r in _rows(tmp_path / "out" / "train.parquet")] == ["q0"]


def test_confinement_never_opens_a_file_outside_the_root(bench: Path, tmp_path: Path, monkeypatch) -> None:
    secret = tmp_path / "secret.wav"
    _wav(secret)
    evil = [_item(0, audio_id=str(secret)), _item(1, audio_id="../../secret.wav")]
    (bench / "evil.json").write_text(json.dumps(evil))
    opened = []
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda p, *a, **k: (opened.append(str(p)), real_open(p, *a, **k))[1])
    report = prepare_mcq(bench / "evil.json", tmp_path / "out", "dev", audio_root=bench)
    assert report.written == 0 and report.reasons["outside root"] == 2
    assert str(secret) not in opened


def test_strict_fails_naming_every_rejected_row_and_writes_no_parquet(bench: Path, tmp_path: Path) -> None:
    items = [_item(0), _item(1, answer="snow"), _item(2, audio_id="./audios/none.wav")]
    (bench / "s.json").write_text(json.dumps(items))
    with pytest.raises(McqPrepError, match=r"2 of 3 items rejected") as err:
        prepare_mcq(bench / "s.json", tmp_path / "out", "train", strict=True)
    assert "s.json:1" in str(err.value) and "s.json:2" in str(err.value)
    assert not (tmp_path / "out" / "train.parquet").exists()


def test_a_whole_file_that_cannot_be_read_stops_the_run(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text('{"id": 1}')
    with pytest.raises(McqPrepError, match="expected a JSON list"):
        read_annotations(tmp_path / "a.json")
    with pytest.raises(McqPrepError, match="not found"):
        prepare_mcq(tmp_path / "none.json", tmp_path / "out", "train")


def test_cli_prints_the_count_identity_and_each_rejected_row(bench: Path, tmp_path: Path) -> None:
    (bench / "c.json").write_text(json.dumps([_item(0), _item(1, answer="snow")]))
    proc = subprocess.run([sys.executable, str(CLI), "--src", str(bench / "c.json"), "--audio-root", str(bench),
                           "--out", str(tmp_path / "out"), "--split", "dev"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "rows in 2 = written 1 + rejected 1" in proc.stdout
    assert "c.json:1: id 'q1': answer 'snow' is not one of the choices" in proc.stdout
    (bench / "none.json").write_text(json.dumps([_item(1, answer="snow")]))
    proc = subprocess.run([sys.executable, str(CLI), "--src", str(bench / "none.json"), "--out",
                           str(tmp_path / "out2"), "--split", "dev"], capture_output=True, text=True)
    assert proc.returncode == 1 and "no item was written" in proc.stderr


@pytest.mark.parametrize("choices", [4, 2])
def test_tone_questions_go_through_the_preparation(tmp_path: Path, choices: int) -> None:
    from collections import Counter

    from verl_audio.data.tones import MCQ_CHOICES, generate_tone_mcq, write_annotation

    bands = MCQ_CHOICES[choices]
    items = generate_tone_mcq(tmp_path, 9, seed=3, bands=bands)
    counts = Counter(i["answer"] for i in items)
    assert sorted(counts) == sorted(bands) and min(counts.values()) >= 9 // choices  # balanced
    assert all(sorted(i["choices"]) == sorted(bands) for i in items)
    assert len({tuple(i["choices"]) for i in items}) > 1  # shuffled per question
    for item in items:
        low, high = bands[item["answer"]]
        assert low <= item["freq"] <= high
    report = prepare_mcq(write_annotation(items, tmp_path / "t.json"), tmp_path / "out", "train")
    assert report.written == 9 and report.groups["task=sound"] == 9
