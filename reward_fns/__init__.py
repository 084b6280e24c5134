"""Rule rewards for the ALR output contract: one rule per module, mixed by `reward_fns.alr.compute_score`."""

from reward_fns.answer import answer_reward
from reward_fns.audio_length import audio_length_reward, voiced_seconds
from reward_fns.compose import compute_score, compute_score_batch, mix_score, settings_from_kwargs
from reward_fns.format import format_reward
from reward_fns.presets import COMPONENTS, PRESETS, RewardMix, resolve_mix
from reward_fns.speech_consistency import consistency_from_transcript, speech_consistency_reward, transcribe
from reward_fns.text_length import reasoning_words, text_length_reward

__all__ = [
    "COMPONENTS",
    "PRESETS",
    "RewardMix",
    "answer_reward",
    "audio_length_reward",
    "compute_score",
    "compute_score_batch",
    "consistency_from_transcript",
    "format_reward",
    "mix_score",
    "reasoning_words",
    "resolve_mix",
    "settings_from_kwargs",
    "speech_consistency_reward",
    "text_length_reward",
    "transcribe",
    "voiced_seconds",
]
