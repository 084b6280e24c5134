"""Any response string is scored without raising and agrees with a regex oracle; adversarial inputs are
scored correctly (their timing, linear in the input, is measured by `benchmarks/reward_parsing.py`)."""

from __future__ import annotations

import math
import random
import re

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from reward_fns import COMPONENTS, PRESETS, compute_score
from verl_audio.contract import normalize_label

TAGS = ("<think>", "</think>", "<answer>", "</answer>")
PIECES = [
    *TAGS,
    "entailed",
    "not-entailed",
    "Not Entailed",
    "NOT_ENTAILED",
    "Answer: not entailed.",
    " ",
    "\n",
    "\t",
    "\u3000",
    "<",
    ">",
    "/",
    "<think",
    "answer>",
    "</",
    "**",
    ".",
    "\x00",
]
INFOS = [
    None,
    {"output_modality": "text", "ref_text_words": 5},
    {"output_modality": "text", "ref_text_words": None},
]

fragments = st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=6)), max_size=24).map("".join)
binary_junk = st.binary(max_size=300).map(lambda b: b.decode("utf-8", errors="replace"))
blank = st.sampled_from(["", " ", "\n", "\n\n", " \t\r\n"])
well_formed = st.builds(
    lambda a, r, b, label, c: f"{a}<think>{r}</think>{b}<answer>{label}</answer>{c}",
    blank,
    st.text(alphabet=st.characters(blacklist_characters="<"), max_size=40),
    blank,
    st.one_of(st.sampled_from(["entailed", "not entailed", "Not-Entailed", " entailed. "]), st.text(max_size=12)),
    blank,
)
answer_only = st.builds(lambda r, label: f"{r}<answer>{label}</answer>", fragments, st.sampled_from(PIECES[4:8]))
responses = st.one_of(fragments, binary_junk, well_formed, answer_only, st.text(max_size=200))


def oracle_format(text: str) -> bool:
    """The format rule written as a regex: fine as an oracle on small inputs, not for scoring."""
    if any(text.count(tag) != 1 for tag in TAGS):
        return False
    return re.fullmatch(r"\s*<think>.*</think>\s*<answer>.*</answer>\s*", text, re.S) is not None


def oracle_label(text: str) -> str | None:
    if text.count("<answer>") != 1 or text.count("</answer>") != 1:
        return None
    match = re.search(r"<answer>(.*)</answer>\s*\Z", text, re.S)
    return normalize_label(match.group(1)) if match else None


@settings(
    max_examples=10_000,
    deadline=None,  # speed is measured by benchmarks/reward_parsing.py, not asserted on shared cores
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    text=responses,
    truth=st.sampled_from([0, 1, "0", "1", "entailed", "not-entailed"]),
    info=st.sampled_from(INFOS),
    preset=st.sampled_from(["soundmind", "answer_only", "no_length", "no_format", "no_gate"]),
)
def test_any_response_is_scored_consistently(text: str, truth: object, info: dict | None, preset: str) -> None:
    result = compute_score("alr", text, truth, info, preset=preset)
    event(f"format={result['format']} answer={result['answer']}")  # coverage, see --hypothesis-show-statistics
    assert set(result) == {"score", *COMPONENTS, "acc", "pred", "mode"}
    assert isinstance(result["score"], float) and math.isfinite(result["score"])
    assert 0.0 <= result["score"] <= 4.0
    assert result["format"] == float(oracle_format(text))
    assert result["pred"] == (oracle_label(text) or "")
    truth_word = "entailed" if truth in (1, "1", "entailed") else "not-entailed"
    assert result["answer"] == result["acc"] == float(result["pred"] == truth_word)
    mix = PRESETS[preset]
    if result["answer"] == 1.0 and result["format"] == 1.0:
        assert result["score"] >= mix.weight("answer") + mix.weight("format")
    if preset == "soundmind" and result["format"] == 0.0:
        assert result["score"] <= 1.0  # only the text length can pay without the format
    assert result["audio_length"] is None and result["speech_consistency"] is None
    assert (result["text_length"] is None) == (info is None or info.get("ref_text_words") is None)


def _adversarial() -> dict[str, str]:
    rng = random.Random(0)
    junk = bytes(rng.getrandbits(8) for _ in range(100_000)).decode("utf-8", errors="replace")
    return {
        "empty": "",
        "1MB plain": "word " * 200_000,
        "100KB binary junk": junk,
        "100KB of <think>": "<think>" * 14_000,
        "thousands of answer blocks": "<answer>entailed</answer>" * 4_000,
        "deeply nested": "<think>" * 5_000 + "x" + "</think>" * 5_000 + "<answer>entailed</answer>",
        "unbalanced": "<think>" * 3_000 + "</answer>" * 3_000,
        "angle brackets": "<" * 100_000,
        "almost tags": "<thin</answe<answer</think" * 4_000,
        "valid with 100KB reasoning": "<think>" + "because " * 12_000 + "</think><answer>entailed</answer>",
        "whitespace then answer": " " * 100_000 + "<answer>entailed</answer>",
    }


@pytest.mark.parametrize("name", list(_adversarial()))
def test_adversarial_inputs_are_scored(name: str) -> None:
    text = _adversarial()[name]
    result = compute_score("alr", text, 1, INFOS[1])
    assert set(result) >= {"score", "pred"}
    if name == "valid with 100KB reasoning":
        assert result["score"] == 4.0
    if name in ("thousands of answer blocks", "deeply nested", "whitespace then answer"):
        assert result["format"] == 0.0
