"""Settings of the speech stage, read from ``actor_rollout_ref.rollout.engine_kwargs.speech``.

One place for every rollout backend: the `hf` server reads it next to ``engine_kwargs.hf``, and a
speech server started beside another backend (vLLM) reads the same keys. ``enable`` is set by
``verl_audio.trainer.speech_setup.configure`` from the data (any row with ``output_modality: audio``) unless given.
The talker defaults are those of ``Qwen2_5OmniForConditionalGeneration.generate``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from verl.base_config import BaseConfig

SPEAKERS = ("Chelsie", "Ethan")
#: Qwen2.5-Omni's token2wav (BigVGAN) writes 24 kHz audio
SAMPLING_RATE = 24000


@dataclass
class SpeechOptions(BaseConfig):
    """``rollout.engine_kwargs.speech``: whether and how the rollout speaks its responses."""

    enable: bool | None = None
    """Load the talker and speak audio-output rows; None: decided from the data at start (``setup.configure``)."""
    speaker: str = "Chelsie"
    """Voice of the generated speech: ``Chelsie`` or ``Ethan`` (a key of the checkpoint's ``spk_dict.pt``)."""
    talker_do_sample: bool = True
    """Sample the talker's codec tokens (False: greedy, deterministic given the thinker states)."""
    talker_temperature: float = 0.9
    """Talker sampling temperature."""
    talker_top_k: int = 40
    """Talker top-k (0: off)."""
    talker_top_p: float = 0.8
    """Talker nucleus mass."""
    talker_repetition_penalty: float = 1.05
    """Talker repetition penalty (1.0: off)."""
    talker_max_new_tokens: int = 4096
    """Most codec tokens per response (about 50 per second of speech; 4096 ≈ 82 s)."""
    talker_eos_token_ids: list[int] = field(default_factory=lambda: [8292, 8294])
    """Codec ids that end the speech (the released talker's)."""
    token2wav_steps: int = 10
    """ODE steps of token2wav's diffusion (generate's default)."""
    max_batch_size: int = 16
    """Most responses spoken together in one talker batch."""
    batch_window_ms: float = 50.0
    """How long the first waiting response holds a speech batch open for others (milliseconds)."""
    seed: int = 0
    """Base seed; request ``i`` of a server draws talker samples and token2wav noise from ``seed + i``."""
    device: str = "auto"
    """Where a stand-alone speech server runs (``auto``, ``cpu``, ``cuda``); the `hf` server uses its own device."""

    def __post_init__(self) -> None:
        if self.speaker not in SPEAKERS:
            raise ValueError(f"engine_kwargs.speech.speaker must be one of {SPEAKERS}, got {self.speaker!r}")
        if self.talker_max_new_tokens < 1 or self.max_batch_size < 1 or self.token2wav_steps < 1:
            raise ValueError("talker_max_new_tokens, max_batch_size and token2wav_steps must be >= 1")
        if self.batch_window_ms < 0:
            raise ValueError(f"batch_window_ms must be >= 0, got {self.batch_window_ms}")
        if self.talker_do_sample and not (self.talker_temperature > 0 and 0 < self.talker_top_p <= 1):
            raise ValueError("talker sampling needs talker_temperature > 0 and 0 < talker_top_p <= 1")

    @classmethod
    def from_engine_kwargs(cls, engine_kwargs: Any) -> SpeechOptions:
        """Read ``engine_kwargs["speech"]`` (absent -> defaults); unknown keys raise."""
        raw = dict((engine_kwargs or {}).get("speech") or {})
        known = {f.name for f in fields(cls)} - {"_target_"}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown rollout.engine_kwargs.speech keys {sorted(unknown)}; known: {sorted(known)}")
        if "talker_eos_token_ids" in raw:
            raw["talker_eos_token_ids"] = [int(t) for t in raw["talker_eos_token_ids"]]
        return cls(**raw)

    def talker_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the talker's ``generate`` (as the full Omni model passes them)."""
        return {
            "max_new_tokens": self.talker_max_new_tokens,
            "do_sample": self.talker_do_sample,
            "top_k": self.talker_top_k,
            "top_p": self.talker_top_p,
            "temperature": self.talker_temperature,
            "eos_token_id": list(self.talker_eos_token_ids),
            "repetition_penalty": self.talker_repetition_penalty,
        }


def speech_enabled(engine_kwargs: Any) -> bool:
    """Whether ``rollout.engine_kwargs.speech.enable`` is on."""
    return bool(((engine_kwargs or {}).get("speech") or {}).get("enable"))
