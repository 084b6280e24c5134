"""Named reward mixes: component weights plus which components count only when another one holds.

A mix names its component set (``components``: the ALR rules' ``COMPONENTS`` by default; the multiple-choice
reward, ``reward_fns/choice.py``, passes its own) so that one composer (``mix_score``) serves every task.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

COMPONENTS = ("format", "answer", "text_length", "audio_length", "speech_consistency")


@dataclass(frozen=True)
class RewardMix:
    """How components combine: `score = Σ weight · value` over the components that apply."""

    weights: Mapping[str, float] = field(default_factory=dict)
    """weight per component name (absent means 0)"""
    gate_answer_on_format: bool = False
    """when True the answer adds nothing unless the format rule holds (the paper's gating)"""
    gates: Mapping[str, str] = field(default_factory=dict)
    """component -> the component that must be 1.0 for it to count (more gates beside the answer/format one)"""
    components: tuple[str, ...] = COMPONENTS
    """the component names this mix weighs (every result holds all of them)"""

    def __post_init__(self) -> None:
        unknown = (set(self.weights) | set(self.gates) | set(self.gates.values())) - set(self.components)
        if unknown:
            raise ValueError(f"unknown reward components {sorted(unknown)}; known: {self.components}")
        object.__setattr__(self, "gates", MappingProxyType(dict(self.gates)))
        for name, weight in self.weights.items():
            if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
                raise ValueError(f"weight of {name!r} must be a finite number, got {weight!r}")
        full = {name: float(self.weights.get(name, 0.0)) for name in self.components}
        object.__setattr__(self, "weights", MappingProxyType(full))

    def weight(self, name: str) -> float:
        """The weight of one component (0 when the mix leaves it out)."""
        return self.weights[name]


_SOUNDMIND = {"format": 1.0, "answer": 2.0, "text_length": 1.0, "audio_length": 0.75}

PRESETS: Mapping[str, RewardMix] = MappingProxyType(
    {
        # the paper's mix; audio_length only applies to speech outputs
        "soundmind": RewardMix(_SOUNDMIND, gate_answer_on_format=True),
        "answer_only": RewardMix({"answer": 1.0}),
        "no_length": RewardMix({"format": 1.0, "answer": 2.0}, gate_answer_on_format=True),
        # without the format reward its gate goes too, or format would still be rewarded through it
        "no_format": RewardMix({"answer": 2.0, "text_length": 1.0, "audio_length": 0.75}),
        "no_gate": RewardMix(_SOUNDMIND, gate_answer_on_format=False),
    }
)


def resolve_mix(
    preset: str = "soundmind",
    weights: Mapping[str, float] | None = None,
    gate_answer_on_format: bool | None = None,
    presets: Mapping[str, RewardMix] = PRESETS,
) -> RewardMix:
    """The named preset of ``presets``, with any weights given explicitly replacing the preset's for those
    components."""
    if preset not in presets:
        raise ValueError(f"unknown reward preset {preset!r}; known: {sorted(presets)}")
    mix = presets[preset]
    if weights:
        mix = replace(mix, weights={**mix.weights, **{str(k): v for k, v in dict(weights).items()}})
    if gate_answer_on_format is not None:
        if not isinstance(gate_answer_on_format, bool):
            raise ValueError(f"gate_answer_on_format must be true or false, got {gate_answer_on_format!r}")
        mix = replace(mix, gate_answer_on_format=gate_answer_on_format)
    return mix
