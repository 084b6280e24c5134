"""verl's reward for audio multiple-choice questions (MMAU / MMAR / AVQA rows of examples/data_preprocess/audio_mcq.py).

Point verl at it with ``reward.custom_reward_function.path=pkg://reward_fns.choice`` and ``name=compute_score``
(``recipes/audio_mcq.sh`` does), the mix with ``reward_kwargs.preset`` (and ``weights`` / ``gate_answer_on_format``
as for the ALR reward). Components, each 0.0..1.0, or None where it does not apply:

* ``answer``: the evaluation's scorer (``verl_audio.eval.scoring.score_choice``, the benchmarks' string match
  on the only ``<answer>`` block, else on the whole response): every word of the right choice and none that
  only a wrong choice has ("low" is not credited for "very low", nor "very low" for "low").
* ``answer_tag``: the response, stripped, is exactly one ``<answer>…</answer>`` block (AudioMCQ's format rule).
* ``format``: the project's output contract, ``<think>…</think><answer>…</answer>`` (the ALR format rule).
* ``ended``: the response ended by itself (its last token is an end-of-sequence id) rather than being cut at the
  response budget; read from ``extra_info["response_ended"]``, which verl-audio's agent loop sets for every
  response. None when absent (a reward called outside the trainer).
* ``answer_words``: shaping for policies that start from nothing: the share of the right choice's words in the
  response, 0 when it holds a word only a wrong choice has (1.0 exactly when ``answer`` is 1.0).
* ``text_length``: the ALR length rule against ``extra_info["ref_text_words"]`` (None without a reference).

Also returned: ``score`` (the mix), ``acc`` (verl's headline validation metric: ``answer`` of a response that
ended; a response cut at the budget is no finished answer, since a longer budget would read on), ``pred`` (the
one choice the rule accepts, or ''), ``mode`` (the row's ``<input>_to_<output>``: validation's per-mode table)
and ``groups`` (the row's ``"field=value"`` groups as a JSON list: validation's per-group table,
``verl_audio.trainer.val_groups``).

Presets (``CHOICE_PRESETS``):

| preset | answer | answer_tag | format | text_length | ended | answer_words | gates |
|---|---|---|---|---|---|---|---|
| ``r1_aqa`` (default) | 1.0 | 1.0 | | | | | none (R1-AQA: accuracy + format, ``src/utils/rewards.py``) |
| ``audiomcq`` | 2.0 | 0.5 | | | | | none (AudioMCQ's ms-swift run: ``--reward_weights 2.0 0.5``) |
| ``soundmind`` | 2.0 | | 1.0 | 1.0 | | | answer needs format (the ALR paper's mix) |
| ``answer_only`` | 1.0 | | | | | | none |
| ``tones`` | | | | | 0.5 | 1.0 | none (the tone example's shaping) |

R1-AQA and AudioMCQ match the extracted answer exactly (R1-AQA case-sensitive, AudioMCQ case-insensitive);
here ``answer`` is the benchmarks' word match, so training rewards what MMAU / MMAR score. R1-AQA's format
regex (``re.fullmatch(r"<answer>.*?</answer>", text, re.DOTALL)``) differs from ``answer_tag`` only at the
edges: it rejects whitespace around the block and accepts several blocks in a row.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from types import MappingProxyType
from typing import Any

from reward_fns.compose import mix_score
from reward_fns.format import format_reward
from reward_fns.presets import RewardMix, resolve_mix
from reward_fns.protocol import REF_TEXT_WORDS, mode_of
from reward_fns.text_length import text_length_reward
from verl_audio.contract import ANSWER_CLOSE, ANSWER_OPEN, parse_response
from verl_audio.eval.scoring import score_choice

CHOICE_COMPONENTS = ("answer", "answer_tag", "format", "ended", "answer_words", "text_length")
#: extra_info key the agent loop sets: whether the response ended with an end-of-sequence id
RESPONSE_ENDED = "response_ended"

CHOICE_PRESETS: Mapping[str, RewardMix] = MappingProxyType(
    {
        "r1_aqa": RewardMix({"answer": 1.0, "answer_tag": 1.0}, components=CHOICE_COMPONENTS),
        "audiomcq": RewardMix({"answer": 2.0, "answer_tag": 0.5}, components=CHOICE_COMPONENTS),
        "soundmind": RewardMix({"answer": 2.0, "format": 1.0, "text_length": 1.0}, gate_answer_on_format=True,
                               components=CHOICE_COMPONENTS),
        "answer_only": RewardMix({"answer": 1.0}, components=CHOICE_COMPONENTS),
        # examples/hear_tones_mcq: each right word earns its share, so "very" and "low" are found one at a time,
        # and ending the turn earns half as much whatever was said: gated on a right answer, the end was unlearnt
        # while the policy filled its budget with answer words (" high high"), which scored the same
        "tones": RewardMix({"answer_words": 1.0, "ended": 0.5}, components=CHOICE_COMPONENTS),
    }
)
DEFAULT_PRESET = "r1_aqa"

_VERL_EXTRAS = frozenset({"reward_router_address", "reward_model_tokenizer"})
_KEYS = frozenset({"preset", "weights", "gate_answer_on_format"})
_WORD = re.compile(r"\b\w+\b")  # the benchmarks' tokenizer (verl_audio.eval.scoring.string_match's)


@lru_cache(maxsize=64)
def _mix(preset: str, weights: tuple[tuple[str, float], ...], gate: bool | None) -> RewardMix:
    return resolve_mix(preset, dict(weights), gate, presets=CHOICE_PRESETS)


def mix_from_kwargs(kwargs: Mapping[str, Any]) -> RewardMix:
    """The mix ``reward_kwargs`` ask for (``preset``, ``weights``, ``gate_answer_on_format``); an unknown key
    raises TypeError, so a misspelt setting fails the run instead of being ignored."""
    given = {k: v for k, v in kwargs.items() if k not in _VERL_EXTRAS}
    unknown = set(given) - _KEYS
    if unknown:
        raise TypeError(f"unknown reward_kwargs {sorted(unknown)}; known: {sorted(_KEYS)}")
    weights = given.get("weights") or {}
    if not isinstance(weights, Mapping):
        raise ValueError(f"weights must be a mapping of component -> weight, got {weights!r}")
    return _mix(str(given.get("preset", DEFAULT_PRESET)), tuple(sorted((str(k), v) for k, v in weights.items())),
                given.get("gate_answer_on_format"))


def answer_tag_reward(response: str) -> float:
    """1.0 when the stripped response is exactly one ``<answer>…</answer>`` block, else 0.0."""
    text = response.strip()
    one = text.count(ANSWER_OPEN) == 1 and text.count(ANSWER_CLOSE) == 1
    return 1.0 if one and text.startswith(ANSWER_OPEN) and text.endswith(ANSWER_CLOSE) else 0.0


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def answer_words_reward(text: str, answer: str, choices: Sequence[str]) -> float:
    """Share of ``answer``'s words in ``text``; 0.0 when ``text`` holds a word only a wrong choice has."""
    wanted, said = _words(answer), _words(text)
    wrong: set[str] = set()
    for choice in choices:
        words = _words(choice)
        if words != wanted:
            wrong |= words - wanted
    if not wanted or not said.isdisjoint(wrong):
        return 0.0
    return len(wanted & said) / len(wanted)


def ended_value(extra_info: Mapping[str, Any]) -> float | None:
    """1.0 / 0.0 for a response that ended / was cut at the budget; None when the rollout did not say."""
    value = extra_info.get(RESPONSE_ENDED)
    return None if value is None else float(bool(value))


def _choices(extra_info: Mapping[str, Any], truth: str) -> list[str]:
    raw = extra_info.get("choices")
    choices = [str(c) for c in raw] if raw is not None and not isinstance(raw, str) else []
    if len(choices) < 2:
        raise ValueError(f"extra_info['choices'] must list the row's choices, got {raw!r} "
                         "(prepare the rows with examples/data_preprocess/audio_mcq.py)")
    if truth not in choices:  # a data error, not a wrong answer: scoring it would train on a broken label
        raise ValueError(f"ground truth {truth!r} is not one of the choices {choices!r}")
    return choices


def components(response: str, ground_truth: Any, extra_info: Mapping[str, Any]) -> dict[str, Any]:
    """Every component of one response (module doc), plus ``pred``."""
    truth = str(ground_truth).strip()
    choices = _choices(extra_info, truth)
    scored = score_choice(response, truth, choices)
    parsed = parse_response(response)
    text = response if parsed.answer_text is None else parsed.answer_text  # what score_choice read
    return {
        "answer": float(scored.correct),
        "answer_tag": answer_tag_reward(response),
        "format": format_reward(parsed),
        "ended": ended_value(extra_info),
        "answer_words": answer_words_reward(text, truth, choices),
        "text_length": text_length_reward(parsed, extra_info.get(REF_TEXT_WORDS)),
        "pred": scored.parsed or "",
    }


def _groups(extra_info: Mapping[str, Any]) -> str:
    groups = extra_info.get("groups")
    return json.dumps([str(g) for g in groups] if groups is not None and not isinstance(groups, str) else [])


def compute_score(
    data_source: Any,
    solution_str: Any,
    ground_truth: Any,
    extra_info: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """verl's custom-reward contract for one response: ``score``, every component, ``acc``, ``pred``, ``mode``,
    ``groups`` (module doc). ``data_source`` is not used. A row whose ground truth is not among its choices
    raises ValueError."""
    if not isinstance(solution_str, str):
        raise TypeError(f"solution_str must be the decoded response text, got {type(solution_str).__name__}")
    mix = mix_from_kwargs(kwargs)
    info = extra_info or {}
    parts = components(solution_str, ground_truth, info)
    result: dict[str, Any] = {"score": mix_score(parts, mix)}
    result.update((name, parts[name]) for name in CHOICE_COMPONENTS)
    result["acc"] = parts["answer"] if parts["ended"] != 0.0 else 0.0
    result["pred"] = parts["pred"]
    result["mode"] = mode_of(info)
    result["groups"] = _groups(info)
    return result
