"""verl's reward for the tone task (`hear_tones`): does the response name the tone that was played?

Point verl at it with `reward.custom_reward_function.path=pkg://reward_fns.tones` and `name=compute_score`.

    score = 1.0   the response is the label word alone (`high` / `low`, any case, whitespace around),
                  or one `<answer>` block holding it and nothing else (the project's output contract)
          = 0.0   otherwise: the other label, both, anything more, nothing

Why a one-word answer: the task trains a policy that starts from random weights, which samples almost
uniformly over the ~500 ids of the tiny vocabulary. One of two label tokens is sampled a few times per step
(64 prompts x 8 rollouts), so GRPO has groups with non-zero advantages from the first steps and the only
thing left to learn is which of the two words the audio calls for. The three tokens of
`<answer> high</answer>` almost never occur together at random; with partial credits for each piece the
format alone took ~50 steps on this machine and the tone was still at chance (measured: README). The block
form is still accepted, so a model that follows the contract is not marked wrong.

The parser is linear (`str.strip` / `str.count` / `str.find`, no regular expressions) and never raises for a str.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from verl_audio.contract import ANSWER_CLOSE, ANSWER_OPEN
from verl_audio.data.tones import TONE_LABELS


@dataclass(frozen=True, slots=True)
class ToneAnswer:
    """What a response says about the tone."""

    label: str | None  # 'high' / 'low' when the response is one of the two accepted forms, else None
    tagged: bool  # the label came from an `<answer>` block (False for a bare word or no answer)


def parse_tone_answer(text: str) -> ToneAnswer:
    """Parse a response (module doc for the accepted forms)."""
    content, tagged = text.strip(), False
    if content.startswith(ANSWER_OPEN) and content.endswith(ANSWER_CLOSE):
        inner = content[len(ANSWER_OPEN) : len(content) - len(ANSWER_CLOSE)]
        if ANSWER_OPEN in inner or ANSWER_CLOSE in inner:
            return ToneAnswer(None, False)
        content, tagged = inner.strip(), True
    word = content.lower()
    return ToneAnswer(word, tagged) if word in TONE_LABELS else ToneAnswer(None, False)


def _truth(ground_truth: Any) -> str:
    truth = str(ground_truth).strip().lower()
    if truth not in TONE_LABELS:
        # a data error, not a wrong answer: scoring it would train on a broken label
        raise ValueError(f"tone ground truth must be one of {TONE_LABELS}, got {ground_truth!r}")
    return truth


def compute_score(
    data_source: Any,
    solution_str: Any,
    ground_truth: Any,
    extra_info: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """verl's custom-reward contract for one response: `score`, `acc`, `answer`, `format`, `pred`.

    `score`, `acc` and `answer` are 1.0 for the correct label and 0.0 otherwise; `format` is 1.0 when the
    response names one label in an accepted form, right or wrong (so a run's curve separates "answers" from
    "answers correctly"); `pred` is the parsed label or ''. `data_source` and `extra_info` are not used.
    A ground truth other than high/low raises ValueError.
    """
    if not isinstance(solution_str, str):
        raise TypeError(f"solution_str must be the decoded response text, got {type(solution_str).__name__}")
    truth = _truth(ground_truth)
    parsed = parse_tone_answer(solution_str)
    correct = float(parsed.label == truth)
    return {
        "score": correct,
        "acc": correct,
        "answer": correct,
        "format": float(parsed.label is not None),
        "pred": parsed.label or "",
    }
