"""The format rule: one `<think>…</think>` then one `<answer>…</answer>`, only whitespace around."""

from __future__ import annotations

from verl_audio.contract import ParsedResponse, parse_response


def format_reward(response: str | ParsedResponse) -> float:
    """1.0 when the response follows the output contract's layout, else 0.0 (any label text counts)."""
    parsed = response if isinstance(response, ParsedResponse) else parse_response(response)
    return 1.0 if parsed.well_formed else 0.0
