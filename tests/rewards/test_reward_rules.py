"""The text rules (parser, answer, format, text length), the presets and the composed ALR score."""

from __future__ import annotations

import json
import math

import pytest

from reward_fns import (
    COMPONENTS,
    PRESETS,
    answer_reward,
    compute_score,
    format_reward,
    reasoning_words,
    resolve_mix,
    settings_from_kwargs,
    text_length_reward,
)
from verl_audio.contract import (
    ENTAILED,
    INSTRUCTION,
    NOT_ENTAILED,
    label_to_word,
    normalize_label,
    parse_response,
    with_instruction,
)

KEYS = {"score", *COMPONENTS, "acc", "pred", "mode"}


def contract(reasoning: str, answer: str) -> str:
    return f"<think>{reasoning}</think>\n<answer>{answer}</answer>"


# --- parser and answer rule -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spelling, word",
    [
        ("entailed", ENTAILED),
        ("Entailed.", ENTAILED),
        (" **ENTAILED** ", ENTAILED),
        ("not-entailed", NOT_ENTAILED),
        ("not entailed", NOT_ENTAILED),
        ("Not-Entailed", NOT_ENTAILED),
        ("NOT_ENTAILED", NOT_ENTAILED),
        ("not\u2013entailed", NOT_ENTAILED),
        ("'not  entailed'", NOT_ENTAILED),
        ("notentailed", NOT_ENTAILED),
    ],
)
def test_label_spellings_are_accepted(spelling: str, word: str) -> None:
    assert parse_response(contract("r", spelling)).label == word
    truth = 1 if word == ENTAILED else 0
    assert answer_reward(contract("r", spelling), truth) == 1.0
    assert answer_reward(contract("r", spelling), 1 - truth) == 0.0


@pytest.mark.parametrize(
    "response",
    [
        contract("r", "entailed or not-entailed"),  # both labels
        contract("r", "The conclusion is entailed"),  # text beyond the label
        contract("r", "entailment"),
        contract("r", ""),
        "<think>r</think><answer>entailed</answer><answer>entailed</answer>",  # several answer blocks
        "<think>r</think><answer>entailed</answer> actually not-entailed",  # text after the answer
        "<think>r</think><answer><answer>entailed</answer></answer>",  # nested
        "<think>r</think><answer>entailed",  # unclosed
        "<think>r</think></answer>entailed<answer>",  # reversed
        "entailed",  # no contract at all
        "<think>Answer: entailed</think>",  # a label in the reasoning only
    ],
)
def test_ambiguous_or_missing_answers_earn_nothing(response: str) -> None:
    assert parse_response(response).label is None
    assert answer_reward(response, 1) == 0.0 and answer_reward(response, 0) == 0.0


def test_answer_is_never_read_from_the_reasoning() -> None:
    response = contract("So the conclusion is not entailed.\n\nAnswer: not-entailed.", "entailed")
    assert answer_reward(response, 1) == 1.0
    assert answer_reward(response, "entailed") == 1.0
    assert answer_reward(response, 0) == 0.0


def test_ground_truth_forms_and_errors() -> None:
    response = contract("r", "not-entailed")
    for truth in (0, "0", "not-entailed", "Not Entailed"):
        assert answer_reward(response, truth) == 1.0
    with pytest.raises(ValueError, match="not an ALR label"):
        answer_reward(response, "maybe")


def test_the_instruction_examples_parse_to_both_labels() -> None:
    # the answers the instruction shows the policy must be exactly what the parser accepts
    examples, start = [], 0
    while (start := INSTRUCTION.find("<answer>", start)) != -1:
        end = INSTRUCTION.find("</answer>", start) + len("</answer>")
        examples.append(parse_response(f"<think>r</think>{INSTRUCTION[start:end]}").label)
        start = end
    assert sorted(label for label in examples if label) == [ENTAILED, NOT_ENTAILED]
    assert with_instruction("Question? ") == f"Question?\n\n{INSTRUCTION}"


def test_label_to_word_keeps_its_behaviour() -> None:
    assert label_to_word(1) == ENTAILED and label_to_word("0") == NOT_ENTAILED
    assert normalize_label("x" * 100 + "entailed") is None


# --- format rule ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "response",
    [
        "<think>r</think><answer>entailed</answer>",
        "  \n<think>\nr\n</think>\n\n<answer> whatever </answer>\n\t ",
        "<think></think><answer></answer>",
    ],
)
def test_format_holds(response: str) -> None:
    assert format_reward(response) == 1.0


@pytest.mark.parametrize(
    "response",
    [
        "",
        "Sure! <think>r</think><answer>entailed</answer>",  # text before
        "<think>r</think> so <answer>entailed</answer>",  # text between
        "<think>r</think><answer>entailed</answer>.",  # text after
        "<answer>entailed</answer><think>r</think>",  # wrong order
        "<think>a</think><think>b</think><answer>entailed</answer>",  # two think blocks
        "<think>a<think>b</think></think><answer>entailed</answer>",  # nested
        "<think>r<answer>entailed</answer></think>",  # answer inside the reasoning
        "<think>r</think>",
        "<answer>entailed</answer>",
        "<THINK>r</THINK><ANSWER>entailed</ANSWER>",  # the contract's tags are lower case
    ],
)
def test_format_fails(response: str) -> None:
    assert format_reward(response) == 0.0


# --- text length ------------------------------------------------------------------------------------


def test_text_length_is_capped_ratio_of_reasoning_words() -> None:
    response = contract("one two  three\nfour", "entailed")
    assert reasoning_words(response) == 4
    assert text_length_reward(response, 8) == 0.5
    assert text_length_reward(response, 2) == 1.0
    assert text_length_reward("<think>a b</think><think>c</think>", 4) == 0.0  # no single reasoning block


@pytest.mark.parametrize("ref", [None, 0, -3, float("nan"), float("inf")])
def test_text_length_not_applicable_without_reference(ref: object) -> None:
    assert text_length_reward(contract("a b", "entailed"), ref) is None


def test_text_length_rejects_a_non_numeric_reference() -> None:
    with pytest.raises(ValueError, match="not a number"):
        text_length_reward(contract("a", "entailed"), "many")


# --- presets and the composed score -----------------------------------------------------------------


def test_preset_table() -> None:
    soundmind = PRESETS["soundmind"]
    assert dict(soundmind.weights) == {
        "format": 1.0,
        "answer": 2.0,
        "text_length": 1.0,
        "audio_length": 0.75,
        "speech_consistency": 0.0,
    }
    assert soundmind.gate_answer_on_format
    assert {k for k, w in PRESETS["answer_only"].weights.items() if w} == {"answer"}
    assert PRESETS["no_length"].weight("text_length") == PRESETS["no_length"].weight("audio_length") == 0.0
    assert PRESETS["no_format"].weight("format") == 0.0 and not PRESETS["no_format"].gate_answer_on_format
    assert dict(PRESETS["no_gate"].weights) == dict(soundmind.weights)
    assert not PRESETS["no_gate"].gate_answer_on_format


def test_explicit_weights_and_gate_override_the_preset() -> None:
    mix = resolve_mix("soundmind", {"answer": 5.0, "speech_consistency": 0.5}, gate_answer_on_format=False)
    assert mix.weight("answer") == 5.0 and mix.weight("format") == 1.0 and mix.weight("speech_consistency") == 0.5
    assert not mix.gate_answer_on_format


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"preset": "paper"}, ValueError),
        ({"weights": {"lenght": 1.0}}, ValueError),
        ({"weights": {"answer": float("nan")}}, ValueError),
        ({"weights": {"answer": "2"}}, ValueError),
        ({"gate_answer_on_format": "false"}, ValueError),
        ({"presett": "soundmind"}, TypeError),
    ],
)
def test_bad_settings_fail_loudly(kwargs: dict, error: type[Exception]) -> None:
    with pytest.raises(error):
        settings_from_kwargs(kwargs)


def test_verl_router_kwargs_are_accepted() -> None:
    result = compute_score("alr", contract("r", "entailed"), 1, reward_router_address=None, reward_model_tokenizer=None)
    assert result["answer"] == 1.0


TEXT_INFO = {"ref_text_words": 4, "output_modality": "text"}


def test_soundmind_score_and_keys() -> None:
    good = compute_score("alr", contract("a b c d", "entailed"), 1, TEXT_INFO)
    assert set(good) == KEYS
    assert good == {
        "score": 1.0 + 2.0 + 1.0,
        "format": 1.0,
        "answer": 1.0,
        "text_length": 1.0,
        "audio_length": None,  # text output: not applicable, and not counted
        "speech_consistency": None,
        "acc": 1.0,
        "pred": "entailed",
        "mode": None,  # TEXT_INFO has no input_modality
    }
    wrong = compute_score("alr", contract("a b", "not entailed"), 1, TEXT_INFO)
    assert wrong["score"] == 1.0 + 0.5 and wrong["pred"] == "not-entailed" and wrong["acc"] == 0.0


def test_gate_withholds_a_correct_answer_without_the_format() -> None:
    response = "Thinking a b c d <answer>entailed</answer>"  # right label, no think block
    gated = compute_score("alr", response, 1, TEXT_INFO)
    assert gated["answer"] == 1.0 and gated["format"] == 0.0 and gated["score"] == 0.0
    assert compute_score("alr", response, 1, TEXT_INFO, preset="no_gate")["score"] == 2.0
    assert compute_score("alr", response, 1, TEXT_INFO, preset="no_format")["score"] == 2.0
    assert compute_score("alr", response, 1, TEXT_INFO, preset="answer_only")["score"] == 1.0


@pytest.mark.parametrize(
    "preset, expected",
    [("soundmind", 4.0), ("answer_only", 1.0), ("no_length", 3.0), ("no_format", 3.0), ("no_gate", 4.0)],
)
def test_each_preset_on_a_perfect_text_response(preset: str, expected: float) -> None:
    assert compute_score("alr", contract("a b c d", "entailed"), 1, TEXT_INFO, preset=preset)["score"] == expected


def test_missing_reference_is_skipped_not_zero() -> None:
    result = compute_score("alr", contract("a", "entailed"), 1, {"output_modality": "text"})
    assert result["text_length"] is None and result["score"] == 3.0
    assert compute_score("alr", contract("a", "entailed"), 1)["score"] == 3.0  # no extra_info at all


def test_unknown_output_modality_is_an_error() -> None:
    with pytest.raises(ValueError, match="output_modality"):
        compute_score("alr", contract("a", "entailed"), 1, {"output_modality": "video"})


def test_bytes_and_none_responses_are_scored() -> None:
    assert compute_score("alr", contract("a", "entailed").encode(), 1)["answer"] == 1.0
    assert compute_score("alr", b"\xff\xfe<think>", 1)["score"] == 0.0
    assert compute_score("alr", None, 1)["pred"] == ""


# --- the ALR dev set --------------------------------------------------------------------------------


def test_reference_reasoning_with_the_label_word_gets_the_full_answer_reward(shared_alr) -> None:
    rows = [json.loads(line) for line in (shared_alr / "dev.jsonl").read_text().splitlines() if line.strip()]
    assert len(rows) == 606
    contradicting = 0
    for row in rows:
        word = label_to_word(row["label"])
        other = NOT_ENTAILED if word == ENTAILED else ENTAILED
        info = {"ref_text_words": len(row["answer"].split()), "output_modality": "text"}
        right = compute_score("alr", contract(row["answer"], word), word, info)
        got = (right["answer"], right["format"], right["text_length"], right["score"])
        assert got == (1.0, 1.0, 1.0, 4.0), row["id"]
        assert compute_score("alr", contract(row["answer"], other), word, info)["answer"] == 0.0, row["id"]
        contradicting += row["label"] == 1 and row["answer"].rstrip().endswith("not-entailed.")
    assert contradicting == 33  # reasoning ends "not-entailed" while the label is 1: still scored on the tag


def test_results_are_floats_or_none() -> None:
    result = compute_score("alr", contract("a", "entailed"), 1, TEXT_INFO)
    for name in COMPONENTS:
        assert result[name] is None or (isinstance(result[name], float) and 0.0 <= result[name] <= 1.0)
    assert isinstance(result["score"], float) and math.isfinite(result["score"])
