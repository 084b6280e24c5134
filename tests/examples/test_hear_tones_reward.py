"""The tone-task reward (`reward_fns.tones`): which answers count, the components, and verl's loading of it."""

from __future__ import annotations

import random

import pytest
from omegaconf import OmegaConf

from reward_fns.tones import compute_score, parse_tone_answer


def score(text: str, truth: str = "high", **kwargs) -> dict:
    return compute_score("hear_tones", text, truth, {}, **kwargs)


@pytest.mark.parametrize(
    ("text", "tagged"),
    [(" high", False), ("high", False), ("HIGH\n", False), ("<answer>high</answer>", True),
     ("  <answer> High </answer>\n", True)],
)
def test_the_label_alone_or_in_one_block_scores_one(text: str, tagged: bool) -> None:
    result = score(text)
    assert result == {"score": 1.0, "acc": 1.0, "answer": 1.0, "format": 1.0, "pred": "high"}
    assert parse_tone_answer(text).tagged is tagged


def test_the_other_label_is_answered_but_wrong() -> None:
    for text in (" low", "<answer>low</answer>"):
        assert score(text, "high") == {"score": 0.0, "acc": 0.0, "answer": 0.0, "format": 1.0, "pred": "low"}


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "h",  # the first piece of 'high' in the small vocabulary
        " higher",
        " high low",
        " high.",
        "It is high",
        "high <answer>high</answer>",  # text outside the block
        "<answer>high</answer> and more",
        "<answer>high</answer><answer>high</answer>",
        "<answer>high",
        "high</answer>",
        "<answer><answer>high</answer>",
        "<answer>high low</answer>",
        "</answer>high<answer>",
    ],
)
def test_anything_else_is_no_answer(text: str) -> None:
    result = score(text)
    assert result == {"score": 0.0, "acc": 0.0, "answer": 0.0, "format": 0.0, "pred": ""}
    assert parse_tone_answer(text).label is None


def test_random_token_strings_score_one_only_when_they_are_the_label() -> None:
    rng = random.Random(0)
    pieces = ["<answer>", "</answer>", " high", " low", "h", "igh", "l", "ow", " ", "x", "\n", "."]
    for _ in range(5000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 5)))
        for truth in ("high", "low"):
            result = score(text, truth)
            assert result["score"] in (0.0, 1.0) and result["score"] == result["acc"]
            bare = text.strip().lower()
            tagged = bare.removeprefix("<answer>").removesuffix("</answer>").strip()
            expected = bare == truth or (
                bare.startswith("<answer>") and bare.endswith("</answer>") and tagged == truth and "<" not in tagged
            )
            assert result["score"] == float(expected), text


def test_adversarial_inputs_are_scored() -> None:
    texts = ("<answer>" * 200_000, "<answer>" + "high " * 200_000 + "</answer>", " " * 400_000 + "high")
    assert [score(text)["score"] for text in texts] == [0.0, 0.0, 1.0]  # the last is a bare, padded answer


def test_bad_inputs_are_errors_not_wrong_answers() -> None:
    with pytest.raises(ValueError, match="ground truth"):
        score("high", "medium")
    with pytest.raises(TypeError, match="decoded response text"):
        compute_score("hear_tones", None, "high")


def test_verl_loads_it() -> None:
    from verl.trainer.ppo.reward import get_custom_reward_fn

    config = OmegaConf.create({"reward": {"custom_reward_function": {
        "path": "pkg://reward_fns.tones", "name": "compute_score", "reward_kwargs": {}}}})
    fn = get_custom_reward_fn(config)
    assert fn(data_source="hear_tones", solution_str=" low", ground_truth="low", extra_info={})["score"] == 1.0
    assert fn(data_source="hear_tones", solution_str=" low", ground_truth="high", extra_info={})["score"] == 0.0
