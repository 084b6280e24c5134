"""Each kind of bad audio, in preparation, in the dataset and in evaluation: it loads correctly or it is
reported with its path and reason, and nothing outside the audio root is ever opened.

Kinds: empty, zero bytes, truncated header, not audio, mp3 named .wav, NaN, clipping float, stereo 48 kHz,
8 kHz, silence, 180 s, an HLS playlist naming a file outside, a symlink outside, an absolute path outside
(and, in the dataset, a `../` path outside). rows in = rows used + rows reported, everywhere.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from helpers.release_data import data_config, make_dataset
from verl_audio.data.alr import PrepError, prepare_alr
from verl_audio.data.alr_rows import SCHEMA
from verl_audio.data.audio import AudioError
from verl_audio.data.confine import AUDIO_ROOT_KEY, OutsideRootError, load_confined_audio
from verl_audio.data.rl_dataset import BadAudioRows

SR = 16000
OUTSIDE_OPENED: list[str] = []
_WATCH: list[str] = []


def _audit(event: str, args: tuple) -> None:
    if event == "open" and _WATCH and isinstance(args[0], str) and any(args[0].startswith(w) for w in _WATCH):
        OUTSIDE_OPENED.append(args[0])


sys.addaudithook(_audit)


def tone(seconds: float, sr: int = SR, amp: float = 0.3) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * 440 * np.arange(int(seconds * sr)) / sr)).astype(np.float32)


#: kind -> what happens: "ok" (loads, no flag), "flag:<kind>" (loads, flagged), or a reason regex (bad)
EXPECTED = {
    "empty": r"zero samples",
    "zero_bytes": r"empty file \(0 bytes\)",
    "truncated_header": r"cannot decode|unreadable header",
    "not_audio": r"not audio: a text file",
    "mp3_named_wav": "ok",
    "nan": r"samples are NaN or infinite",
    "clipping_float": "flag:clipping",
    "stereo_48k": "ok",
    "rate_8k": "ok",
    "silence": "flag:silent",
    "long_180s": "flag:too long",
    "playlist_outside": r"not audio: an M3U/HLS playlist; references in it are never followed",
    "symlink_outside": r"resolves through a symlink to .*outside",
    "absolute_outside": r"points outside",
}


def _write_kind(kind: str, path: Path, secret: Path) -> str:
    """Write the file of `kind` at `path`; return the reference the metadata gives for it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    good = tone(1.0)
    if kind == "empty":
        sf.write(path, np.zeros(0, np.float32), SR)
    elif kind == "zero_bytes":
        path.write_bytes(b"")
    elif kind == "truncated_header":
        sf.write(path, good, SR)
        path.write_bytes(path.read_bytes()[:20])
    elif kind == "not_audio":
        path.write_text("this is a text file, not audio\n" * 20)
    elif kind == "mp3_named_wav":
        sf.write(path, good, SR, format="MP3")
    elif kind == "nan":
        bad = good.copy()
        bad[[3, 300]] = np.nan
        sf.write(path, bad, SR, subtype="FLOAT")
    elif kind == "clipping_float":
        sf.write(path, good * 100.0, SR, subtype="FLOAT")  # peak 30.0
    elif kind == "stereo_48k":
        sf.write(path, np.stack([tone(1.0, 48000), tone(1.0, 48000)], axis=1), 48000)
    elif kind == "rate_8k":
        sf.write(path, tone(1.0, 8000), 8000)
    elif kind == "silence":
        sf.write(path, np.zeros(SR, np.float32), SR)
    elif kind == "long_180s":
        sf.write(path, tone(180.0, 8000), 8000)
    elif kind == "playlist_outside":
        path.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10.0,\n{secret}\n#EXT-X-ENDLIST\n")
    elif kind == "symlink_outside":
        path.symlink_to(secret)
    elif kind == "absolute_outside":
        return str(secret)
    return f"{path.parent.name}/{path.name}"


@pytest.fixture()
def release(tmp_path: Path) -> tuple[Path, Path]:
    """A dev split with one row per kind (ids = kinds), and a valid wav outside it that must never be opened."""
    src, outside = tmp_path / "src", tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.wav"
    sf.write(secret, tone(3.0), SR)
    meta = []
    for i, kind in enumerate(EXPECTED):
        ref = _write_kind(kind, src / "dev" / kind / "question.wav", secret)
        meta.append({"id": kind, "question_file_name": ref, "annotation_question": "Is it entailed?",
                     "annotation_answer": "Answer: entailed.", "label": i % 2})
    (src / "dev" / "metadata.jsonl").write_text("".join(json.dumps(m) + "\n" for m in meta))
    _WATCH[:] = [str(outside), str(outside.resolve())]
    OUTSIDE_OPENED.clear()
    yield src, secret
    _WATCH.clear()


def _bad(expected: str) -> bool:
    return expected != "ok" and not expected.startswith("flag:")


def test_preparation_writes_or_reports_each_kind(release, tmp_path):
    src, _ = release
    (report,) = prepare_alr(src, tmp_path / "out", splits=["dev"], progress=False, log=lambda m: None)
    rejected = {r["id"]: r for r in map(json.loads, report.rejected_path.read_text().splitlines())}
    warnings = {w["id"]: w for w in map(json.loads, report.warnings_path.read_text().splitlines())}
    written = {r["extra_info"]["id"]: r for r in pq.read_table(report.parquet).to_pylist()}
    assert report.rows_in == len(EXPECTED) == report.written + report.rejected
    for kind, expected in EXPECTED.items():
        if _bad(expected):
            assert kind in rejected and kind not in written, kind
            assert rejected[kind]["path"] and kind in rejected[kind]["path"] or "secret" in rejected[kind]["path"]
            assert __import__("re").search(expected, rejected[kind]["reason"]), (kind, rejected[kind])
        else:
            assert kind in written, (kind, rejected.get(kind))
            assert abs(written[kind]["extra_info"]["question_audio_seconds"] - (180.0 if kind == "long_180s" else 1.0)) < 0.05
            flagged = warnings.get(kind)
            assert (flagged["kind"] if flagged else "ok") == expected.removeprefix("flag:"), (kind, flagged)
    # one bucket per kind of fault in the summary, not one per path
    assert report.reasons["outside root"] == 2 and report.reasons["not audio"] == 2
    assert report.flagged == {"clipping": 1, "silent": 1, "too long": 1}
    assert pq.read_schema(report.parquet).metadata[AUDIO_ROOT_KEY].decode() == str(src.resolve())
    assert OUTSIDE_OPENED == []


def test_strict_preparation_reports_every_bad_row_at_once(release, tmp_path):
    src, _ = release
    with pytest.raises(PrepError) as info:
        prepare_alr(src, tmp_path / "out", splits=["dev"], strict=True, progress=False, log=lambda m: None)
    bad = [k for k, e in EXPECTED.items() if e != "ok"]  # flagged clips are rejected under --strict
    assert f"{len(bad)} of {len(EXPECTED)} rows rejected" in str(info.value)
    for kind in bad:
        assert f"id {kind!r}" in str(info.value)
    assert not (tmp_path / "out" / "dev.parquet").exists()
    assert len((tmp_path / "out" / "dev.rejected.jsonl").read_text().splitlines()) == len(bad)


def _parquet_of_every_kind(src: Path, secret: Path, out: Path) -> Path:
    """Rows pointing at every kind as if the files had changed after preparation (plus a `../` escape)."""
    refs = {kind: str(src / "dev" / kind / "question.wav") for kind in EXPECTED}
    refs["absolute_outside"] = str(secret)
    refs["dotdot_outside"] = str(src / "dev" / ".." / ".." / "outside" / "secret.wav")
    rows = []
    for i, (kind, path) in enumerate(refs.items()):
        rows.append({"data_source": "alr", "prompt": [{"role": "user", "content": "<audio> Is it entailed?"}],
                     "audios": [path], "ability": "x", "reward_model": {"style": "rule", "ground_truth": "entailed"},
                     "extra_info": {"id": kind, "index": i}})
    out.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows, schema=SCHEMA).replace_schema_metadata({AUDIO_ROOT_KEY: str(src.resolve())})
    pq.write_table(table, out / "dev.parquet")
    return out / "dev.parquet"


DATASET_BAD = {**{k: e for k, e in EXPECTED.items() if _bad(e)}, "dotdot_outside": r"points outside"}


def test_dataset_uses_or_reports_each_kind(release, tmp_path, omni, monkeypatch):
    src, secret = release
    monkeypatch.setenv("VERL_AUDIO_REPORT_DIR", str(tmp_path / "run"))
    parquet = _parquet_of_every_kind(src, secret, tmp_path / "data")
    config = data_config(tmp_path, max_prompt_length=10000)
    ds = make_dataset(parquet, omni.tokenizer, config, omni)
    reported = {r["id"]: r for r in ds.bad_rows}
    assert set(reported) == set(DATASET_BAD)
    for kind, pattern in DATASET_BAD.items():
        assert __import__("re").search(pattern, reported[kind]["reason"]), (kind, reported[kind])
        assert reported[kind]["path"]
    assert len(ds) == len(EXPECTED) + 1  # bad rows stay in place (a resumed loader's position holds)
    lines = [json.loads(x) for x in (tmp_path / "run" / "bad_audio.jsonl").read_text().splitlines()]
    assert {x["id"] for x in lines} == set(DATASET_BAD) and all(x["phase"] == "dataset" for x in lines)
    warned = {json.loads(x)["id"]: json.loads(x)["kind"] for x in (tmp_path / "run" / "audio_warnings.jsonl").read_text().splitlines()}
    assert warned == {"clipping_float": "clipping", "silence": "silent", "long_180s": "too long"}

    # drawing rows for validation: a bad row is left out (None); for training it is replaced
    ds.on_skip = "drop"
    drawn = [ds[i] for i in range(len(ds))]
    used = [row["extra_info"]["id"] for row in drawn if row is not None]
    assert sorted(used) == sorted(k for k in EXPECTED if k not in DATASET_BAD)
    assert len(ds) == len(used) + len(DATASET_BAD)  # rows in = rows used + rows reported
    assert ds.report.take_skipped() == len(DATASET_BAD)
    for row in drawn:
        if row is not None:  # the prompt points at the confined real path that was checked
            (part,) = [c for c in row["raw_prompt"][0]["content"] if c["type"] == "audio"]
            assert Path(part["audio"]).is_relative_to(src.resolve())
    ds.on_skip = "replace"
    first_bad = list(reported.values())[0]["index"]
    assert ds[first_bad]["extra_info"]["id"] not in DATASET_BAD
    assert OUTSIDE_OPENED == []


def test_dataset_flags_rejected_on_request_and_error_lists_every_row(release, tmp_path, omni, monkeypatch):
    src, secret = release
    parquet = _parquet_of_every_kind(src, secret, tmp_path / "data")
    config = data_config(tmp_path, max_prompt_length=10000)
    monkeypatch.setenv("VERL_AUDIO_REJECT_FLAGGED", "1")
    ds = make_dataset(parquet, omni.tokenizer, config, omni)
    assert {r["id"] for r in ds.bad_rows} == set(DATASET_BAD) | {"clipping_float", "silence", "long_180s"}
    monkeypatch.setenv("VERL_AUDIO_REJECT_FLAGGED", "0")
    monkeypatch.setenv("VERL_AUDIO_ON_BAD_AUDIO", "error")
    with pytest.raises(BadAudioRows) as info:
        make_dataset(parquet, omni.tokenizer, config, omni)
    assert {r["id"] for r in info.value.rows} == set(DATASET_BAD)
    assert all(f"id={kind}" in str(info.value) for kind in DATASET_BAD)
    assert OUTSIDE_OPENED == []


def test_eval_helper_loads_or_reports_each_kind(release):
    src, secret = release
    for kind, expected in EXPECTED.items():
        path = secret if kind == "absolute_outside" else src / "dev" / kind / "question.wav"
        if _bad(expected):
            with pytest.raises(AudioError, match=expected) as info:
                load_confined_audio(path, [src])
            assert info.value.path and info.value.reason
            if "outside" in kind and kind != "playlist_outside":
                assert isinstance(info.value, OutsideRootError)
        else:
            x = load_confined_audio(path, [src])
            assert x.dtype == np.float32 and x.ndim == 1
            assert abs(len(x) / SR - (180.0 if kind == "long_180s" else 1.0)) < 0.05
    assert OUTSIDE_OPENED == []
