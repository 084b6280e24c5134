"""The composer: scores a response on every rule component and mixes them by a named preset.

Every result holds the same keys. A component that does not apply (no reference length, a text output
for an audio rule, an unweighted speech consistency) is None rather than NaN: verl drops None before
averaging validation metrics, while a NaN would turn the whole mean into NaN.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from reward_fns.answer import answer_reward
from reward_fns.audio_length import DEFAULT_AGGRESSIVENESS, audio_length_reward
from reward_fns.format import format_reward
from reward_fns.presets import COMPONENTS, RewardMix, resolve_mix
from reward_fns.protocol import REF_AUDIO_SECONDS, REF_TEXT_WORDS, mode_of, output_modality, response_audio
from reward_fns.speech_consistency import DEFAULT_ASR_MODEL, consistency_from_transcript, transcribe
from reward_fns.text_length import text_length_reward
from verl_audio.contract import parse_response

# passed by verl's reward managers when a reward model router is configured; these rules do not use them
_VERL_EXTRAS = frozenset({"reward_router_address", "reward_model_tokenizer"})


@dataclass(frozen=True)
class ScoringSettings:
    """Everything `reward_kwargs` may set, resolved once per distinct combination."""

    mix: RewardMix
    asr_model: str = DEFAULT_ASR_MODEL
    asr_language: str | None = "en"
    asr_device: str | None = None
    asr_batch_size: int = 8
    vad_aggressiveness: int = DEFAULT_AGGRESSIVENESS


# reward_kwargs: the mix is given by preset/weights/gate, the other settings by their field names
_MIX_KEYS = {"preset", "weights", "gate_answer_on_format"}
_SETTING_KEYS = frozenset(_MIX_KEYS | set(ScoringSettings.__dataclass_fields__) - {"mix"})


@lru_cache(maxsize=64)
def _settings(
    preset: str = "soundmind",
    weights: tuple[tuple[str, float], ...] | None = None,
    gate_answer_on_format: bool | None = None,
    **rest: Any,
) -> ScoringSettings:
    return ScoringSettings(resolve_mix(preset, dict(weights or ()), gate_answer_on_format), **rest)


def settings_from_kwargs(kwargs: Mapping[str, Any]) -> ScoringSettings:
    """Resolve reward_kwargs (`preset`, `weights`, `gate_answer_on_format`, `asr_*`, `vad_aggressiveness`).

    An unknown key raises TypeError, so a misspelt setting fails the run instead of being ignored.
    """
    given = {k: v for k, v in kwargs.items() if k not in _VERL_EXTRAS}
    unknown = set(given) - _SETTING_KEYS
    if unknown:
        raise TypeError(f"unknown reward_kwargs {sorted(unknown)}; known: {sorted(_SETTING_KEYS)}")
    weights = given.pop("weights", None)
    if weights is not None:
        if not isinstance(weights, Mapping):
            raise ValueError(f"weights must be a mapping of component -> weight, got {weights!r}")
        given["weights"] = tuple(sorted((str(k), v) for k, v in weights.items()))
    return _settings(**given)


def _as_text(solution_str: Any) -> str:
    if isinstance(solution_str, str):
        return solution_str
    if isinstance(solution_str, bytes | bytearray):
        return bytes(solution_str).decode("utf-8", errors="replace")
    if solution_str is None:
        return ""
    raise TypeError(f"solution_str must be str, got {type(solution_str).__name__}")


def _components(text: str, ground_truth: Any, extra_info: Mapping[str, Any], settings: ScoringSettings) -> dict:
    """Every component except speech consistency (filled by the caller, which may batch the ASR)."""
    parsed = parse_response(text)
    audio_length = None
    if output_modality(extra_info) == "audio":
        audio, rate = response_audio(extra_info)
        ref_seconds = extra_info.get(REF_AUDIO_SECONDS)
        audio_length = audio_length_reward(audio, rate, ref_seconds, settings.vad_aggressiveness)
    return {
        "answer": answer_reward(parsed, ground_truth),
        "format": format_reward(parsed),
        "text_length": text_length_reward(parsed, extra_info.get(REF_TEXT_WORDS)),
        "audio_length": audio_length,
        "speech_consistency": None,
        "pred": parsed.label or "",
        "mode": mode_of(extra_info),
    }


def mix_score(components: Mapping[str, Any], mix: RewardMix) -> float:
    """`Σ weight · value` over applicable (non-None) components of the mix; a gated answer needs format == 1,
    and a component of `mix.gates` needs its gate component == 1."""
    total = 0.0
    for name in mix.components:
        value, weight = components[name], mix.weights[name]
        if value is None or weight == 0.0:
            continue
        if name == "answer" and mix.gate_answer_on_format and components["format"] != 1.0:
            continue
        if name in mix.gates and components[mix.gates[name]] != 1.0:
            continue
        total += weight * float(value)
    return total


def _result(components: Mapping[str, Any], mix: RewardMix) -> dict[str, Any]:
    result: dict[str, Any] = {"score": mix_score(components, mix)}
    result.update((name, components[name]) for name in COMPONENTS)
    # `acc` is verl's name for the headline validation metric (val-core); `pred` feeds its maj@N votes
    result["acc"] = components["answer"]
    result["pred"] = components["pred"]
    # the row's mode (audio_to_text, ...; None without one): validation groups its per-mode table by it
    result["mode"] = components["mode"]
    return result


def compute_score_batch(
    data_sources: Sequence[Any],
    solution_strs: Sequence[Any],
    ground_truths: Sequence[Any],
    extra_infos: Sequence[Mapping[str, Any] | None] | None = None,
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """Batch form (verl's BatchRewardManager contract): one result per response, ASR batched across them."""
    settings = settings_from_kwargs(kwargs)
    n = len(solution_strs)
    infos = list(extra_infos) if extra_infos is not None else [None] * n
    if not len(data_sources) == len(ground_truths) == len(infos) == n:
        raise ValueError("data_sources, solution_strs, ground_truths and extra_infos differ in length")
    texts = [_as_text(s) for s in solution_strs]
    infos = [info or {} for info in infos]
    parts = [
        _components(text, truth, info, settings) for text, truth, info in zip(texts, ground_truths, infos, strict=True)
    ]

    if settings.mix.weight("speech_consistency") != 0.0:
        spoken = [i for i, info in enumerate(infos) if output_modality(info) == "audio"]
        transcripts = transcribe(
            [response_audio(infos[i]) for i in spoken],
            settings.asr_model,
            settings.asr_language,
            settings.asr_device,
            settings.asr_batch_size,
        )
        for i, transcript in zip(spoken, transcripts, strict=True):
            parts[i]["speech_consistency"] = consistency_from_transcript(texts[i], transcript)

    return [_result(components, settings.mix) for components in parts]


def compute_score(
    data_source: Any,
    solution_str: Any,
    ground_truth: Any,
    extra_info: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """verl's custom-reward contract: `score` plus each component by name, `acc`, the parsed `pred` and `mode`.

    `data_source` is not used: the function scores the ALR output contract whatever the source.
    Components are floats in [0, 1], or None where they do not apply; `pred` is the parsed label word
    ('entailed' / 'not-entailed') or '' when the response has no unambiguous answer; `mode` is the row's
    `<input>_to_<output>` modality pair (None when extra_info has no input_modality).
    """
    return compute_score_batch([data_source], [solution_str], [ground_truth], [extra_info], **kwargs)[0]
