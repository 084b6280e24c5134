"""The multiple-choice reward: the evaluation's scorer, the format / end-of-turn / shaping components, presets."""

from __future__ import annotations

import itertools
import json

import pytest

from reward_fns.choice import CHOICE_COMPONENTS, CHOICE_PRESETS, answer_tag_reward, answer_words_reward, compute_score
from verl_audio.eval.scoring import score_choice, string_match

BANDS = ["very low", "low", "high", "very high"]


def info(ended: bool | None = True, **extra) -> dict:
    base = {"choices": BANDS, "groups": ["task=sound", "difficulty=easy"], "input_modality": "audio",
            "output_modality": "text"}
    return {**base, **({"response_ended": ended} if ended is not None else {}), **extra}


def score(response: str, truth: str, preset: str = "r1_aqa", ended: bool | None = True, **kwargs) -> dict:
    return compute_score("audio_mcq", response, truth, info(ended), preset=preset, **kwargs)


@pytest.mark.parametrize("response, truth, correct", [
    (" low", "low", 1.0), (" low", "very low", 0.0), ("very low", "low", 0.0), ("very low", "very low", 1.0),
    (" low very", "very low", 1.0), ("It is very high.", "very high", 1.0), ("very high", "high", 0.0),
    (" high", "very high", 0.0), (" low high", "low", 0.0), ("xx low yy", "low", 1.0), ("", "low", 0.0),
    ("<answer>very low</answer>", "very low", 1.0), ("<think>high?</think><answer>low</answer>", "low", 1.0),
])  # fmt: skip
def test_answer_is_the_evaluation_scorer_low_is_not_very_low(response: str, truth: str, correct: float) -> None:
    result = score(response, truth)
    assert result["answer"] == correct == float(score_choice(response, truth, BANDS).correct)
    assert result["acc"] == correct


def test_answer_words_is_one_exactly_when_the_scorer_credits_the_answer() -> None:
    words = ["very", "low", "high", "xx", "<answer>", "</answer>"]
    for n in range(4):
        for combo in itertools.product(words, repeat=n):
            text = " ".join(combo)
            for truth in BANDS:
                credit = answer_words_reward(text, truth, BANDS)
                assert (credit == 1.0) == string_match(truth, text, BANDS), (text, truth)
    assert answer_words_reward(" low", "very low", BANDS) == 0.5  # one of the two words, no wrong word
    assert answer_words_reward("very", "very high", BANDS) == 0.5
    assert answer_words_reward("very", "low", BANDS) == 0.0  # "very" is a word only wrong choices have


def test_ended_and_acc_a_response_cut_at_the_budget_is_no_finished_answer() -> None:
    assert score(" low", "low", ended=True)["ended"] == 1.0
    cut = score(" low", "low", ended=False)
    assert cut["ended"] == 0.0 and cut["answer"] == 1.0 and cut["acc"] == 0.0
    unknown = score(" low", "low", ended=None)  # outside the trainer nobody says: scored on the text
    assert unknown["ended"] is None and unknown["acc"] == 1.0


def test_presets_compose_the_components() -> None:
    tagged, bare = "<answer>low</answer>", "low"
    assert score(tagged, "low", "r1_aqa")["score"] == 2.0  # R1-AQA: accuracy 1 + format 1
    assert score(bare, "low", "r1_aqa")["score"] == 1.0
    assert score("<answer>high</answer>", "low", "r1_aqa")["score"] == 1.0  # format holds, answer wrong
    assert score(tagged, "low", "audiomcq")["score"] == 2.5  # AudioMCQ: 2.0 accuracy + 0.5 format
    assert score(bare, "low", "audiomcq")["score"] == 2.0
    contract = "<think>it is low</think><answer>low</answer>"
    assert score(contract, "low", "soundmind")["score"] == 3.0 and score(contract, "low")["format"] == 1.0
    assert score(tagged, "low", "soundmind")["score"] == 0.0  # answer gated on the contract's format
    assert score(tagged, "low", "answer_only")["score"] == 1.0
    # tones: a share per right word, and half as much again for ending the turn, whatever was said
    assert score(" low", "low", "tones", ended=True)["score"] == 1.5
    assert score(" low", "low", "tones", ended=False)["score"] == 1.0
    assert score(" low", "very low", "tones", ended=True)["score"] == 1.0
    assert score("very", "very low", "tones", ended=False)["score"] == 0.5
    assert score(" high", "very low", "tones", ended=True)["score"] == 0.5
    assert score("", "very low", "tones", ended=True)["score"] == 0.5
    assert score(" low low", "low", "tones", ended=False)["score"] == 1.0  # less than " low" and the end
    assert score("very low", "very low", "tones", ended=True)["score"] == 1.5
    # weights replace the preset's for the components named
    assert score(tagged, "low", "r1_aqa", weights={"answer_tag": 0.0})["score"] == 1.0
    assert score(" low", "low", "r1_aqa", weights={"ended": 0.5})["score"] == 1.5


def test_answer_tag_is_one_whole_answer_block() -> None:
    assert answer_tag_reward(" <answer>low</answer>\n") == 1.0
    for text in ("<answer>a</answer><answer>b</answer>", "x <answer>low</answer>", "<answer>low", "low"):
        assert answer_tag_reward(text) == 0.0


def test_result_keys_groups_mode_and_pred() -> None:
    result = score(" very high", "very high")
    assert set(result) == {"score", *CHOICE_COMPONENTS, "acc", "pred", "mode", "groups"}
    assert result["pred"] == "very high" and result["mode"] == "audio_to_text"
    assert json.loads(result["groups"]) == ["task=sound", "difficulty=easy"]
    assert result["text_length"] is None  # no reference reasoning
    assert score("nothing", "low")["pred"] == ""
    assert set(CHOICE_PRESETS) == {"r1_aqa", "audiomcq", "soundmind", "answer_only", "tones"}


def test_bad_rows_and_settings_raise() -> None:
    with pytest.raises(ValueError, match="not one of the choices"):
        score("low", "medium")
    with pytest.raises(ValueError, match="choices"):
        compute_score("x", "low", "low", {})
    with pytest.raises(TypeError, match="unknown reward_kwargs"):
        score("low", "low", presett="tones")
    with pytest.raises(ValueError, match="unknown reward preset"):
        score("low", "low", "nope")
    with pytest.raises(ValueError, match="unknown reward components"):
        score("low", "low", weights={"speed": 1.0})


def test_verl_loads_the_choice_reward_with_its_kwargs() -> None:
    from omegaconf import OmegaConf
    from verl.trainer.ppo.reward import get_custom_reward_fn

    config = OmegaConf.create({"reward": {"custom_reward_function": {
        "path": "pkg://reward_fns.choice", "name": "compute_score", "reward_kwargs": {"preset": "audiomcq"}}}})
    fn = get_custom_reward_fn(config)
    assert fn("audio_mcq", "<answer>low</answer>", "low", info())["score"] == 2.5
