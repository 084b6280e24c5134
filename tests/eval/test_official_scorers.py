"""Our MMAU / MMAR tables against the benchmarks' own scorers, run unchanged on ``official_input.json``.

The real annotation files (MMAU test-mini, 1000 items; MMAR, 1000 items) and the official scripts come from
the benchmarks' repositories: ``MMAU_REPO`` / ``MMAR_REPO`` name a checkout or a git directory (default: the
fetched copies under /work/.mirror); without them the tests skip. Nothing of those repositories is kept here.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from verl_audio.eval.cli import OFFICIAL_INPUT, OFFICIAL_KEYS, parser, run
from verl_audio.eval.generation import Prompt, Response, Sampling

MIRROR = Path("/work/.mirror")
BENCHMARKS = {
    # task: (env var, default location, annotation file, scorer, {printed section: our grouping})
    "mmau": ("MMAU_REPO", MIRROR / "Sakshi113+MMAU" / "repo", "mmau-test-mini.json", "evaluation.py",
             {"Task-wise": "task", "Difficulty-wise": "difficulty", "Sub-category-wise": "sub-category"}),
    "mmar": ("MMAR_REPO", MIRROR / "ddlBoJack+MMAR" / "repo", "MMAR-meta.jsonl", "code/evaluation.py",
             {"Modality-wise": "modality", "Category-wise": "category", "Sub-category-wise": "sub-category"}),
}
BASE_SAMPLES = 1600  # stand-in clip i has BASE_SAMPLES + i samples: the scripted backend knows the item by it


def repo_file(task: str, name: str) -> bytes:
    """``name`` from the benchmark's repository: a checkout folder or a git directory; skips when absent."""
    env, default, *_ = BENCHMARKS[task]
    where = Path(os.environ.get(env) or default)
    if (where / name).is_file():
        return (where / name).read_bytes()
    if where.is_dir():
        done = subprocess.run(["git", f"--git-dir={where}", "show", f"HEAD:{name}"], capture_output=True)
        if done.returncode == 0:
            return done.stdout
    pytest.skip(f"{task.upper()} repository with {name} not found at {where} (set {env} to a checkout or git dir)")


def _decide(item: dict) -> str:
    """What the scripted model does for an item: a stable function of its id."""
    kinds = ["right", "right_in_answer_block", "wrong", "empty", "unparsable", "raises", "two_choices", "right"]
    return kinds[int(hashlib.sha256(str(item["id"]).encode()).hexdigest(), 16) % len(kinds)]


class ScriptedBackend:
    """Stands in for a model: the answer to each item is decided per item (``_decide``), so the outputs are a
    known mix of right, wrong, empty, unparsable and failed generations. It implements the ``Backend``
    protocol; the item is recognised by its stand-in clip's length."""

    name = "scripted"
    processor = None
    dtype = "float32"

    def __init__(self, items: list[dict]) -> None:
        self.items = items
        self.calls = 0

    def _answer(self, prompt: Prompt) -> str:
        item = self.items[len(prompt.audios[0]) - BASE_SAMPLES]
        answer = item["answer"].strip()
        others = [c for c in item["choices"] if c.strip() and c.strip() != answer]
        kind = _decide(item)
        if kind == "raises":
            raise RuntimeError("CUDA out of memory (scripted)")
        return {
            "right": f"The answer is {answer}.",
            "right_in_answer_block": f"<think>Not {others[0]}.</think>\n<answer>{answer}</answer>",
            "wrong": others[0],
            "empty": "",
            "unparsable": "I cannot tell.",
            "two_choices": f"{answer} or {others[0]}",
        }[kind]

    def generate(self, prompts: list[Prompt], sampling: Sampling) -> list[list[Response]]:
        self.calls += 1
        return [[Response(self._answer(p), [])] for p in prompts]


def _load(task: str, text: bytes) -> list[dict]:
    if task == "mmau":
        return json.loads(text)
    return [json.loads(line) for line in text.decode().splitlines() if line.strip()]


def official_rows(stdout: str, sections: dict[str, str]) -> dict[str, tuple[str, int]]:
    """``{"<grouping>: <value>" | "all": (percent as printed, items)}`` from the official script's output;
    groups it prints with 0 items are left out."""
    rows, grouping = {}, None
    for line in stdout.splitlines():
        head = re.fullmatch(r"(\S+) Accuracy:", line.strip())
        if head:
            grouping = sections[head.group(1)]
            continue
        total = re.fullmatch(r"Total Accuracy: ([\d.]+)% over (\d+) samples", line.strip())
        if total:
            rows["all"] = (total.group(1), int(total.group(2)))
            continue
        row = re.fullmatch(r"(.*) : ([\d.]+)% over (\d+) samples", line)
        if row and grouping and int(row.group(3)):
            rows[f"{grouping}: {row.group(1)}"] = (row.group(2), int(row.group(3)))
    return rows


@pytest.mark.parametrize("task", ["mmau", "mmar"])
def test_our_table_is_the_official_scorers(task: str, tmp_path: Path) -> None:
    """Our eval on the real annotation file with stand-in audio (short generated clips at the paths the items
    name; a few left missing) and a scripted backend in place of a model (``ScriptedBackend``: right, wrong,
    empty, unparsable and failed answers by item); then the benchmark's own scorer, unchanged, on our
    ``official_input.json``: every group it prints has the accuracy and item count of ours, and we have no
    group it lacks."""
    _, _, data_name, scorer_name, sections = BENCHMARKS[task]
    text = repo_file(task, data_name)
    scorer = tmp_path / "official" / Path(scorer_name).name
    scorer.parent.mkdir()
    scorer.write_bytes(repo_file(task, scorer_name))
    data = tmp_path / "annotations" / data_name
    data.parent.mkdir()
    data.write_bytes(text)
    items = _load(task, text)

    audio_root = tmp_path / "audio"  # not the annotation file's folder: --audio-root is where paths resolve
    paths = [item.get("audio_id") or item["audio_path"] for item in items]
    assert len(set(paths)) == len(paths)
    missing = set(range(0, len(items), 97))
    for i, rel in enumerate(paths):
        if i in missing:
            continue
        path = audio_root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, np.full(BASE_SAMPLES + i, 0.01, dtype=np.float32), 16000, subtype="FLOAT")

    backend = ScriptedBackend(items)
    out = tmp_path / "eval"
    args = parser().parse_args(["--model", "scripted", "--data", str(data), "--out", str(out), "--task", task,
                                "--audio-root", str(audio_root), "--batch-size", "50", "--quiet"])
    results = run(args, backend)
    table = results["table"]

    # the known mix happened: right and wrong answers, failures of each kind
    reasons = [f["reason"] for f in results["failed"]]
    assert 0 < table["all"]["accuracy"] < 1
    assert sum(r.startswith("unreadable audio") for r in reasons) == len(missing)
    assert sum(r.startswith("generation failed") for r in reasons) == results["to_retry"] > 0
    assert sum(r.startswith("unparsed") for r in reasons) > 0

    # official_input.json: the items as given, in order, every field, plus the answer under both keys
    official = json.loads((out / OFFICIAL_INPUT).read_text())
    assert [{k: v for k, v in o.items() if k not in OFFICIAL_KEYS} for o in official] == items
    assert [list(o)[: len(i)] for o, i in zip(official, items)] == [list(i) for i in items]
    assert all(o["model_output"] == o["answer_prediction"] for o in official)
    failed_keys = {f["key"] for f in results["failed"] if not f["reason"].startswith("unparsed")}
    assert sum(o["model_output"] == "" for o in official) >= len(failed_keys)

    done = subprocess.run([sys.executable, scorer.name, "--input", str(out / OFFICIAL_INPUT)],
                          cwd=scorer.parent, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    theirs = official_rows(done.stdout, sections)
    ours = {group: (f"{100 * row['accuracy']:.2f}", row["n"]) for group, row in table.items()}
    assert theirs["all"][1] == len(items)
    assert ours == theirs
    assert len(theirs) > 10  # every grouping printed rows
