"""The output contract: what a response must look like, shared by data preparation and rewards.

The prompt instruction, the label words, the label normalisation and the response parser live here and
nowhere else, so the text a policy is asked to produce and the text the rewards parse cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"

ENTAILED = "entailed"
NOT_ENTAILED = "not-entailed"
LABEL_WORDS: tuple[str, str] = (NOT_ENTAILED, ENTAILED)  # index = ALR integer label

INSTRUCTION = (
    "Reason step by step inside <think> </think>, then give the final answer inside "
    "<answer> </answer>: either <answer>entailed</answer> or <answer>not-entailed</answer>."
)


def label_to_word(label: int | str) -> str:
    """ALR's integer label (1 = entailed, 0 = not-entailed; int or digit string) -> label word."""
    text = str(label).strip()
    if text in ("0", "1"):
        return LABEL_WORDS[int(text)]
    word = normalize_label(text)
    if word is None:
        raise ValueError(f"not an ALR label: {label!r} (expected 0, 1, 'entailed' or 'not-entailed')")
    return word


# the longest spelling normalize_label accepts is far shorter; longer text is never a bare label
_MAX_LABEL_CHARS = 64
_DASHES = str.maketrans({c: " " for c in "-_\u2010\u2011\u2012\u2013\u2014\u2212"})


def normalize_label(text: str) -> str | None:
    """Map a spelling of a label ('Not Entailed', 'not_entailed', 'entailed.') to its word, else None."""
    if len(text) > _MAX_LABEL_CHARS:
        return None
    t = " ".join(text.strip().strip(".!\"'`*").lower().translate(_DASHES).split())
    if t == "entailed":
        return ENTAILED
    if t in ("not entailed", "non entailed", "notentailed", "nonentailed"):
        return NOT_ENTAILED
    return None


def with_instruction(question: str) -> str:
    """The user turn: the question followed by the output-contract instruction."""
    return f"{question.rstrip()}\n\n{INSTRUCTION}"


@dataclass(frozen=True, slots=True)
class ParsedResponse:
    """What a response says under the contract; None where the contract is not met."""

    reasoning: str | None  # inside the only <think> block, or None when there is not exactly one
    answer_text: str | None  # inside the only <answer> block, or None when there is not exactly one
    label: str | None  # the label word of the final answer block, or None when absent or ambiguous
    well_formed: bool  # exactly <think>…</think> then <answer>…</answer>, only whitespace around


def _single_block(text: str, open_tag: str, close_tag: str) -> tuple[int, int] | None:
    """(start, end) of the content of the only open…close pair, or None if not exactly one in order."""
    # str.count/str.find are linear and never backtrack, whatever the input
    if text.count(open_tag) != 1 or text.count(close_tag) != 1:
        return None
    start = text.find(open_tag) + len(open_tag)
    end = text.find(close_tag)
    return (start, end) if end >= start else None


def parse_response(text: str) -> ParsedResponse:
    """Parse a response; never raises for a str and runs in linear time.

    The label is read only from the answer block, never from the reasoning, and only when that block is
    the only one, is the last thing in the response, and holds nothing but one spelling of a label.
    """
    think = _single_block(text, THINK_OPEN, THINK_CLOSE)
    answer = _single_block(text, ANSWER_OPEN, ANSWER_CLOSE)
    reasoning = text[think[0] : think[1]] if think else None
    answer_text = text[answer[0] : answer[1]] if answer else None
    final = answer is not None and _is_blank(text, answer[1] + len(ANSWER_CLOSE), len(text))
    label = normalize_label(answer_text) if final and answer_text is not None else None
    well_formed = (
        think is not None
        and answer is not None
        and final
        and _is_blank(text, 0, think[0] - len(THINK_OPEN))
        and _is_blank(text, think[1] + len(THINK_CLOSE), answer[0] - len(ANSWER_OPEN))
    )
    return ParsedResponse(reasoning, answer_text, label, well_formed)


def _is_blank(text: str, start: int, end: int) -> bool:
    """True when text[start:end] is empty or whitespace (False when end < start: tags out of order)."""
    return end >= start and (end == start or text[start:end].isspace())
