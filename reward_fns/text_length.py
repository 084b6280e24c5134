"""The text-length rule: reasoning words relative to the reference reasoning, `min(1, L / L_ref)`."""

from __future__ import annotations

from reward_fns.protocol import reference_amount
from verl_audio.contract import ParsedResponse, parse_response


def reasoning_words(response: str | ParsedResponse) -> int:
    """Whitespace-separated words inside the only `<think>` block (0 when there is not exactly one)."""
    parsed = response if isinstance(response, ParsedResponse) else parse_response(response)
    return len(parsed.reasoning.split()) if parsed.reasoning else 0


def text_length_reward(response: str | ParsedResponse, ref_text_words: object) -> float | None:
    """`min(1, words / ref_text_words)`; None (not applicable) when the reference is missing or not positive."""
    ref = reference_amount(ref_text_words)
    if ref is None:
        return None
    return min(1.0, reasoning_words(response) / ref)
