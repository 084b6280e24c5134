"""verl's reward for the tone task (`hear_tones`): does the final `<answer>` block name the tone that was played?

Point verl at it with `reward.custom_reward_function.path=pkg://reward_fns.tones` and `name=compute_score`.

    score = 1.0                       the response's only <answer> block is its last text and holds the label
          = shaping (at most 0.3)     otherwise, when `shaping` is on (the default):
              + 0.1  exactly one `<answer>`
              + 0.1  exactly one `</answer>`, after it
              + 0.1  the ground-truth word occurs as a word, and the other label word does not

Why the shaping: a policy that starts from random weights samples almost uniformly over the ~500 ids of
the tiny vocabulary, so the exact 4-5 tokens of `<answer>high</answer><|im_end|>` essentially never occur
and a 0/1 reward gives GRPO no group with a non-zero advantage. Each credit above is hit by a few of a
step's rollouts at random. The third depends on the audio, so the policy starts listening before it has
the format. The credits add up to less than the correct answer's 1.0 (a well-formed but wrong answer gets
0.2), so the best policy is unchanged; `shaping=False` (reward_kwargs) gives the plain 0/1 reward.

The parser mirrors the output-contract parser (`verl_audio.contract.parse_response`): tags are found with
`str.count` / `str.find` (linear, no backtracking); the label is read only from the single answer block, and
only when nothing but whitespace follows it. Text before the block is allowed (as reasoning is for ALR).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from verl_audio.contract import ANSWER_CLOSE, ANSWER_OPEN
from verl_audio.data.tones import TONE_LABELS

OPEN_CREDIT = 0.1  # the response has an `<answer>`
HEARD_CREDIT = 0.2  # ... right after it, the ground-truth label word
CLOSE_CREDIT = 0.1  # ... then `</answer>` (after either label word)


@dataclass(frozen=True, slots=True)
class ToneAnswer:
    """What a response says about the tone."""

    label: str | None  # 'high' / 'low' from the single, final answer block; None when absent or ambiguous
    well_formed: bool  # the whole response is one answer block holding a label (whitespace around only)
    one_open: bool  # exactly one `<answer>`
    closed_after: bool  # exactly one `<answer>` and one `</answer>`, in that order


def parse_tone_answer(text: str) -> ToneAnswer:
    """Parse a response; never raises for a str and runs in linear time."""
    one_open = text.count(ANSWER_OPEN) == 1
    closed_after = one_open and text.count(ANSWER_CLOSE) == 1 and text.find(ANSWER_CLOSE) > text.find(ANSWER_OPEN)
    if not closed_after:
        return ToneAnswer(None, False, one_open, False)
    start = text.find(ANSWER_OPEN)
    end = text.find(ANSWER_CLOSE)
    content = text[start + len(ANSWER_OPEN) : end].strip().lower()
    final = text[end + len(ANSWER_CLOSE) :].strip() == ""
    label = content if final and content in TONE_LABELS else None
    well_formed = label is not None and text[:start].strip() == ""
    return ToneAnswer(label, well_formed, one_open, closed_after)


def label_mentions(text: str) -> int:
    """How often the label words occur in ``text`` (as substrings, case-insensitive)."""
    lowered = text.lower()
    return sum(lowered.count(word) for word in TONE_LABELS)


def shaping_credit(text: str, ground_truth: str) -> float:
    """Partial credit for the pieces of ``<answer>LABEL</answer>`` that ``text`` has in place (module doc)."""
    stripped = text.strip()
    opens = stripped.startswith(ANSWER_OPEN) and text.count(ANSWER_OPEN) == 1
    closes = stripped.endswith(ANSWER_CLOSE) and text.count(ANSWER_CLOSE) == 1
    heard = label_mentions(text) == 1 and ground_truth in text.lower()
    return OPEN_CREDIT * opens + CLOSE_CREDIT * closes + HEARD_CREDIT * heard


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
    shaping: bool = True,
    **kwargs: Any,
) -> dict[str, Any]:
    """verl's custom-reward contract for one response: `score`, `acc`, `answer`, `format`, `pred`.

    `acc` and `answer` are 1.0 for the correct final answer (the score without shaping); `format` is 1.0
    when the whole response is one answer block holding a label; `pred` is the parsed label or ''.
    `data_source` and `extra_info` are not used. A ground truth other than high/low raises ValueError.
    """
    if not isinstance(solution_str, str):
        raise TypeError(f"solution_str must be the decoded response text, got {type(solution_str).__name__}")
    truth = _truth(ground_truth)
    parsed = parse_tone_answer(solution_str)
    correct = parsed.label == truth
    if correct:
        score = 1.0
    else:
        score = shaping_credit(solution_str, truth) if shaping else 0.0
    return {
        "score": float(score),
        "acc": float(correct),
        "answer": float(correct),
        "format": float(parsed.well_formed),
        "pred": parsed.label or "",
    }
