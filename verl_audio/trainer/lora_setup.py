"""Before training: how a LoRA run's adapters reach the rollout (``model.lora_rank`` > 0, verl's keys).

``configure(config)`` (called by ``verl_audio.trainer.main.prepare`` after the speech setup) leaves
non-LoRA runs alone. For LoRA it refuses FSDP1 (``actor.strategy=fsdp``: peft's adapter export finds no
tensor under it), and chooses the sync:

* ``hf`` rollout: the adapters, every step (the server injects LoRA layers and copies them in);
* ``vllm`` rollout: the adapters, through vLLM's LoRA support, where the family has it (``vllm_lora``) and
  no speech server needs the thinker's weights; otherwise merged weights (verl's ``model.lora.merge=True``),
  set here and said in the log: vLLM's Qwen2-Audio class has no LoRA, vLLM applies LoRA to the language model
  only (adapters in the audio encoder, ``model.audio_encoder_lora_targets``), MoE + LoRA needs vLLM's Triton
  experts (absent from its CPU build; untested on GPU here), and the speech server beside vLLM loads full
  weights into its own thinker.

The adapters' place (``exclude_modules``, default: the family's encoders) is set by ``AudioModelConfig``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, open_dict

from verl_audio.models.families import AudioFamily, family_of_config, family_of_path
from verl_audio.speech.config import speech_enabled

logger = logging.getLogger(__name__)


def lora_rank(model: Any) -> int:
    """The adapter rank a model config asks for (verl reads ``lora_rank``, or ``lora.rank``), 0 without LoRA."""
    return max(int(model.get("lora_rank", 0) or 0), int((model.get("lora") or {}).get("rank", 0) or 0))


def _family(path: str) -> AudioFamily:
    local = Path(path).expanduser()
    if local.is_dir():
        family = family_of_path(local)
        if family is not None:
            return family
    from transformers import AutoConfig

    return family_of_config(AutoConfig.from_pretrained(path))


def merge_reason(family: AudioFamily, rollout: str, speech: bool, encoder_adapters: bool = False) -> str | None:
    """Why the rollout cannot take adapters and needs merged weights, or None when it can."""
    if rollout != "vllm":
        return None
    if not family.vllm_lora:
        return f"vLLM has no LoRA path for {family.name} ({family.vllm_lora_note})"
    if encoder_adapters:
        return "the audio encoder has adapters (model.audio_encoder_lora_targets) and vLLM applies LoRA to the " \
               "language model only"
    if speech:
        return "the speech server beside vLLM loads full weights into its own thinker"
    return None


def configure(config: DictConfig) -> str | None:
    """Apply the module doc to ``config`` in place; returns how adapters are synced (None without LoRA)."""
    model = config.actor_rollout_ref.model
    rank = lora_rank(model)
    if rank <= 0 and not model.get("lora_adapter_path"):
        return None
    strategy = config.actor_rollout_ref.actor.strategy
    if strategy != "fsdp2":
        raise ValueError(f"LoRA needs actor_rollout_ref.actor.strategy=fsdp2, got {strategy!r}: under fsdp each LoRA "
                         "layer is its own FSDP unit and peft's adapter export finds no tensor")
    family = _family(str(model.path))
    rollout = config.actor_rollout_ref.rollout
    merge = bool((model.get("lora") or {}).get("merge", False))
    reason = merge_reason(family, rollout.name, speech_enabled(rollout.get("engine_kwargs")),
                          encoder_adapters=model.get("audio_encoder_lora_targets") is not None)
    if reason is not None and not merge:
        with open_dict(config):
            if model.get("lora") is None:
                model.lora = {}
            model.lora.merge = True
        logger.warning("verl-audio: LoRA r=%d: %s, so merged weights are synced each step (model.lora.merge=true)",
                       rank, reason)
        return "merged"
    mode = "merged" if merge else "adapters"
    logger.warning("verl-audio: LoRA r=%d on %s: %s synced to the %s rollout each step", rank, family.name, mode,
                   rollout.name)
    return mode
