"""Template entailment problems, espeak-ng voicing, the demo release CLI and the committed sample.

Labels are checked by an independent evaluator: the English text of each problem is parsed back
into logic and every small model is enumerated, so a template whose wording does not match its
label (or an 'invalid' form that is in fact valid) fails here.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from verl_audio.contract import label_to_word
from verl_audio.data import demo, synthetic, tts
from verl_audio.data.synthetic import (
    DEFINITIONS,
    FORMS,
    ORDER_RELATIONS,
    PLAIN_RELATIONS,
    PREAMBLE,
    PREDICATES,
    TASK,
    generate_problems,
)

needs_espeak = pytest.mark.skipif(not tts.espeak_available(), reason="espeak-ng is not installed")
SAMPLE = demo.DEMO_SAMPLE
SAMPLE_COMMAND = "python -m verl_audio.data.demo --out verl_audio/data/demo_sample --split train=4 --split dev=2 --seed 0"
MAX_SAMPLE_BYTES = 5_000_000


# ---------------------------------------------------------------- independent evaluator
def _categorical(stmts: list[str]) -> tuple[bool, bool]:
    """(valid, has a countermodel with every term non-empty) for 'All/No/Some A are (not) B'."""
    parsed = []
    for s in stmts:
        m = re.fullmatch(r"(All|No|Some) (\w+) are (not )?(\w+)", s)
        assert m, f"not a categorical statement: {s!r}"
        parsed.append((m[1], m[2], bool(m[3]), m[4]))
    terms = sorted({t for q, a, _, b in parsed for t in (a, b)})
    assert len(terms) == 3, terms
    kinds = list(itertools.product([False, True], repeat=3))  # membership of an individual in each term

    def holds(stmt, present):
        q, a, neg, b = stmt
        ia, ib = terms.index(a), terms.index(b)
        if q == "All":
            return all(k[ib] for k in present if k[ia])
        if q == "No":
            return not any(k[ib] for k in present if k[ia])
        return any(k[ib] != neg for k in present if k[ia])  # Some ... are / are not

    valid, counter_nonempty = True, False
    for mask in range(1, 2 ** len(kinds)):  # which kinds of individual exist: all monadic models
        present = [k for i, k in enumerate(kinds) if mask >> i & 1]
        if holds(parsed[0], present) and holds(parsed[1], present) and not holds(parsed[2], present):
            valid = False
            counter_nonempty |= all(any(k[i] for k in present) for i in range(3))
    return valid, counter_nonempty


def _literal(text: str, name: str) -> tuple[int, bool]:
    assert text.startswith(name + " "), text
    phrase = text[len(name) + 1 :]
    for atom, (pos, neg) in enumerate(PREDICATES):
        if phrase in (pos, neg):
            return atom, phrase == pos
    raise AssertionError(f"unknown predicate {phrase!r}")


def _conditional(major: str, minor: str, concl: str) -> bool:
    m = re.fullmatch(r"If (\w+) (.+), then \1 (.+)", major)
    assert m, major
    name = m[1]
    ante, cons = _literal(f"{name} {m[2]}", name), _literal(f"{name} {m[3]}", name)
    fact, claim = _literal(minor, name), _literal(concl, name)
    atoms = sorted({ante[0], cons[0], fact[0], claim[0]})
    for values in itertools.product([False, True], repeat=len(atoms)):
        v = dict(zip(atoms, values))
        lit = lambda x: v[x[0]] == x[1]  # noqa: E731
        if (not lit(ante) or lit(cons)) and lit(fact) and not lit(claim):
            return False
    return True


def _relation(stmts: list[str]) -> bool:
    rels = sorted(ORDER_RELATIONS + PLAIN_RELATIONS, key=len, reverse=True)
    parsed = []
    for s in stmts:
        r = next(r for r in rels if f" {r} " in s)
        a, b = s.split(f" {r} ")
        parsed.append((a, r, b))
    relation = {r for _, r, _ in parsed}
    assert len(relation) == 1
    ordered = relation.pop() in ORDER_RELATIONS
    names = sorted({x for a, _, b in parsed for x in (a, b)})
    pairs = list(itertools.product(range(len(names)), repeat=2))
    for mask in range(2 ** len(pairs)):
        R = {p for i, p in enumerate(pairs) if mask >> i & 1}
        if any((x, x) in R for x in range(len(names))):
            continue  # all relations used are irreflexive
        if ordered and any((x, z) not in R for (x, y) in R for (y2, z) in R if y == y2):
            continue  # strict orders are transitive
        if not ordered and any((y, x) not in R for (x, y) in R):
            continue  # the plain relations are symmetric; a countermodel must respect that too
        sat = [(names.index(a), names.index(b)) in R for a, _, b in parsed]
        if sat[0] and sat[1] and not sat[2]:
            return False
    return True


def _definition(major: str, minor: str, concl: str) -> bool:
    m = re.fullmatch(r"(.+) refers to a (\w+) that (.+) and (.+)", major)
    assert m, major
    term, genus, conds = m[1].lower(), m[2], (m[3], m[4])
    q = re.fullmatch(r"According to the above definition, which of the following (belongs|doesn't belong) to (.+)\?",
                     minor)
    assert q and q[2] == term, minor
    c = re.fullmatch(rf"The {genus} on \w+ Street (.+) and (.+)", concl)
    assert c, concl
    negation = {pos: neg for _, _, pairs in DEFINITIONS for pos, neg in pairs}
    meets = []
    for cond, fact in zip(conds, (c[1], c[2])):
        assert fact in (cond, negation[cond]), (cond, fact)
        meets.append(fact == cond)
    member = all(meets)  # a definition names exactly the things that meet all its conditions
    return member if q[1] == "belongs" else not member


def judge(major: str, minor: str, concl: str) -> int:
    """1 if the premises entail the conclusion, else 0, decided from the text alone."""
    if major.startswith("If "):
        return int(_conditional(major, minor, concl))
    if " refers to " in major:
        return int(_definition(major, minor, concl))
    if re.match(r"(All|No|Some) ", major):
        valid, counter_nonempty = _categorical([major, minor, concl])
        # An invalid syllogism must stay invalid even granting existential import.
        assert valid or counter_nonempty, (major, minor, concl)
        return int(valid)
    return int(_relation([major, minor, concl]))


def parse_question(text: str) -> tuple[str, str, str]:
    """The three quoted statements of an ALR-worded question (checks the wording around them)."""
    m = re.fullmatch(
        re.escape(PREAMBLE) + r'\n\nMajor premise is "(.+)"\.\nMinor premise is "(.+)"\.\nConclusion is "(.+)"\.\n\n'
        + re.escape(TASK), text)
    assert m, text
    return m[1], m[2], m[3]


# ---------------------------------------------------------------- templates
def test_evaluator_knows_the_classic_forms():
    assert judge("All poets are painters", "All sailors are poets", "All sailors are painters") == 1
    assert judge("All painters are poets", "All sailors are poets", "All sailors are painters") == 0
    assert judge("If Ana keeps bees, then Ana owns a boat", "Ana owns a boat", "Ana keeps bees") == 0
    assert judge("If Ana keeps bees, then Ana owns a boat", "Ana does not own a boat", "Ana does not keep bees") == 1
    assert judge("Ana has met Ben", "Ben has met Iris", "Ana has met Iris") == 0
    assert judge("Ana is taller than Ben", "Ben is taller than Iris", "Ana is taller than Iris") == 1


def test_every_label_matches_the_logic_of_its_text():
    problems = generate_problems(600, seed=7)
    seen = set()
    for p in problems:
        assert parse_question(p.question) == (p.major, p.minor, p.conclusion)
        assert judge(p.major, p.minor, p.conclusion) == p.label, p
        seen.add((p.form, p.mood, p.label))
    moods = {(p.form, p.mood) for p in problems}
    assert {m[0] for m in synthetic._CATEGORICAL} <= {mood for form, mood in moods if form == "categorical"}
    assert len(moods) == 8 + 2 + 2 + 4 + 2  # every mood of every form is drawn
    assert {(f, lab) for f, _, lab in seen} == {(f, lab) for f in FORMS for lab in (0, 1)}


def test_answer_is_reasoning_ending_in_the_label_word():
    for p in generate_problems(60, seed=1):
        assert p.answer.startswith(p.reasoning)
        assert p.answer.endswith(f"Answer: {label_to_word(p.label)}.")
        assert len(p.reasoning.split()) <= 40  # short enough to voice in a few seconds


def test_vocabulary_phrases_parse_unambiguously():
    phrases = [x for pair in PREDICATES for x in pair] + [x for _, _, cs in DEFINITIONS for c in cs for x in c]
    assert not any(" and " in x or " but " in x for x in phrases)
    assert len(set(synthetic.NAMES)) == len(synthetic.NAMES)


def test_generation_is_deterministic_in_the_seed():
    assert generate_problems(40, seed=3) == generate_problems(40, seed=3)
    assert generate_problems(40, seed=3) != generate_problems(40, seed=4)
    assert generate_problems(10, seed=3) == generate_problems(40, seed=3)[:10]


@pytest.mark.parametrize("n", [2, 10, 36, 200])
def test_labels_are_balanced_in_every_even_slice(n):
    problems = generate_problems(n, seed=11)
    assert len(problems) == n and len({p.question for p in problems}) == n
    assert sum(p.label for p in problems) == n // 2
    for i in range(0, n, 2):
        assert problems[i].label + problems[i + 1].label == 1


def test_each_block_has_every_form_with_both_labels():
    block = 2 * len(FORMS)
    problems = generate_problems(3 * block, seed=5)
    for start in range(0, len(problems), block):
        got = sorted((p.form, p.label) for p in problems[start : start + block])
        assert got == sorted((f, lab) for f in FORMS for lab in (0, 1))


def test_forms_can_be_restricted_and_bad_arguments_fail():
    assert {p.form for p in generate_problems(8, seed=0, forms=("definition",))} == {"definition"}
    with pytest.raises(ValueError, match="unknown"):
        generate_problems(4, forms=("syllogism",))
    with pytest.raises(ValueError):
        generate_problems(-1)
    assert generate_problems(0) == []


# ---------------------------------------------------------------- voicing
def test_cap_pauses_shortens_long_silences_only():
    sr = 16_000
    beep = 0.3 * np.sin(2 * np.pi * 440 * np.arange(sr // 2) / sr)
    audio = np.concatenate([np.zeros(sr), beep, np.zeros(sr), beep, np.zeros(sr // 10), beep]).astype(np.float32)
    out = tts.cap_pauses(audio, sr, 0.2)
    # The two 1 s silences (leading and inner) shrink to 0.2 s; the 0.1 s pause is kept.
    assert abs(len(out) / sr - (3 * 0.5 + 0.2 + 0.2 + 0.1)) < 0.03
    assert np.sum(np.abs(out) > 0.1) == np.sum(np.abs(audio) > 0.1)  # no speech removed


def test_missing_espeak_gives_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(tts.shutil, "which", lambda name: None)
    assert not tts.espeak_available()
    with pytest.raises(tts.TTSUnavailableError, match="apt-get install espeak-ng"):
        tts.voice_to_wav("hello", tmp_path / "x.wav")
    assert demo.main(["--out", str(tmp_path / "rel")]) == 1
    assert not (tmp_path / "rel" / "metadata.jsonl").exists()


@needs_espeak
def test_voice_to_wav_writes_16k_mono_pcm16(tmp_path):
    seconds = tts.voice_to_wav("Some weavers are fishers.", tmp_path / "a.wav")
    info = sf.info(tmp_path / "a.wav")
    assert (info.samplerate, info.channels, info.subtype) == (16_000, 1, "PCM_16")
    assert abs(info.duration - seconds) < 1e-3 and 0.5 < seconds < 4
    audio, _ = sf.read(tmp_path / "a.wav")
    assert np.sqrt(np.mean(audio**2)) > 0.01  # speech, not silence
    faster = tts.voice_to_wav("Some weavers are fishers.", tmp_path / "b.wav", speed=300)
    assert faster < seconds
    with pytest.raises(ValueError):
        tts.voice_to_wav("  ", tmp_path / "c.wav")
    with pytest.raises(RuntimeError, match="voice"):
        tts.voice_to_wav("hello", tmp_path / "d.wav", voice="nosuchvoice")


# ---------------------------------------------------------------- releases
def check_release(root: Path) -> list[dict]:
    """Assert that ``root`` is a well-formed release in the public layout; return its metadata rows."""
    rows = [json.loads(line) for line in (root / "metadata.jsonl").read_text().splitlines()]
    keys = ["id", "split", "question_file_name", "answer_file_name", "annotation_question",
            "annotation_answer", "label"]
    assert rows and all(list(r) == keys for r in rows)
    assert len({r["id"] for r in rows}) == len(rows)  # unique across splits
    for r in rows:
        assert r["label"] in (0, 1) and type(r["label"]) is int
        folder = f"{r['split']}/{r['id']}"
        assert r["question_file_name"] == f"{folder}/question.wav"
        assert r["answer_file_name"] == f"{folder}/answer_{r['label']}.wav"
        ann = json.loads((root / folder / "annotation.json").read_text())
        assert ann == {"user_content": r["annotation_question"], "answer": r["annotation_answer"],
                       "label": r["label"], "id": r["id"]}
        assert judge(*parse_question(r["annotation_question"])) == r["label"]
        assert r["annotation_answer"].endswith(f"Answer: {label_to_word(r['label'])}.")
        for name, (lo, hi) in ((r["question_file_name"], (5, 30)), (r["answer_file_name"], (1, 12))):
            info = sf.info(root / name)
            assert (info.samplerate, info.channels, info.subtype, info.format) == (16_000, 1, "PCM_16", "WAV")
            assert lo < info.duration < hi, (name, info.duration)
    expected = {"metadata.jsonl"} | {f"{r['split']}/{r['id']}/{f}" for r in rows
                                     for f in ("annotation.json", "question.wav", f"answer_{r['label']}.wav")}
    found = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} - {"README.md"}
    assert found == expected
    return rows


def test_committed_sample_is_well_formed():
    rows = check_release(SAMPLE)
    splits = {s: [r for r in rows if r["split"] == s] for s in ("train", "dev")}
    assert [len(splits["train"]), len(splits["dev"])] == [4, 2] and len(rows) == 6
    for split_rows in splits.values():
        assert sum(r["label"] for r in split_rows) * 2 == len(split_rows)
    total = sum(p.stat().st_size for p in SAMPLE.rglob("*") if p.is_file())
    assert total <= MAX_SAMPLE_BYTES, f"demo sample is {total} bytes"
    assert SAMPLE_COMMAND in (SAMPLE / "README.md").read_text()


def test_committed_sample_matches_the_generator():
    # If the templates change, regenerate the sample with the command in its README.md.
    rows = [json.loads(line) for line in (SAMPLE / "metadata.jsonl").read_text().splitlines()]
    problems = generate_problems(len(rows), seed=0)
    assert [r["annotation_question"] for r in rows] == [p.question for p in problems]
    assert [r["annotation_answer"] for r in rows] == [p.answer for p in problems]


def test_parse_splits():
    assert demo.parse_splits(None, 8) == [("dev", 8)]
    assert demo.parse_splits(["train=4", "dev"], 3) == [("train", 4), ("dev", 3)]
    for bad in (["train=x"], ["train", "train"], ["../x"], ["dev=0"]):
        with pytest.raises(ValueError):
            demo.parse_splits(bad, 2)


@needs_espeak
def test_demo_cli_writes_a_deterministic_release(tmp_path):
    args = ["--split", "train=2", "--split", "dev=2", "--seed", "3"]
    assert demo.main(["--out", str(tmp_path / "a"), *args]) == 0
    rows = check_release(tmp_path / "a")
    assert [r["id"] for r in rows] == ["0001", "0002", "0003", "0004"]
    assert [r["split"] for r in rows] == ["train", "train", "dev", "dev"]
    assert demo.main(["--out", str(tmp_path / "b"), *args]) == 0
    for path in (tmp_path / "a").rglob("*"):
        if path.is_file():
            assert path.read_bytes() == (tmp_path / "b" / path.relative_to(tmp_path / "a")).read_bytes()
