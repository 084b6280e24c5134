"""The answer rule: 1 when the final answer block names the ground-truth label, else 0."""

from __future__ import annotations

from verl_audio.contract import ParsedResponse, label_to_word, parse_response


def answer_reward(response: str | ParsedResponse, ground_truth: int | str) -> float:
    """1.0 when the response's parsed label equals the ground truth (0/1 or a label word), else 0.0.

    The label comes only from the single, final `<answer>` block; an ambiguous or missing answer earns 0.
    A ground truth that is not a label raises ValueError: that is a data error, not a wrong answer.
    """
    parsed = response if isinstance(response, ParsedResponse) else parse_response(response)
    truth = label_to_word(ground_truth)
    return 1.0 if parsed.label == truth else 0.0
