"""Settings of the `hf` rollout backend, read from ``actor_rollout_ref.rollout.engine_kwargs.hf``.

Everything else comes from verl's own rollout keys: ``prompt_length`` / ``response_length`` /
``max_model_len`` (token budget, as vLLM derives it), ``dtype`` (weights and activations; use
``float32`` on CPU for log-prob parity with an fp32 actor), ``free_cache_engine`` (sleep between
rollouts), ``ignore_eos``, ``seed`` and ``checkpoint_engine.update_weights_bucket_megabytes``
(size of each weight transfer to the server).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from verl.base_config import BaseConfig

from verl_audio.rollout.options import DEVICES

ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2")


@dataclass
class HFRolloutOptions(BaseConfig):
    """``rollout.engine_kwargs.hf``: how the `hf` backend batches, caches and places the model."""

    batch_window_ms: float = 20.0
    """How long the first waiting request holds a batch open for others to join (milliseconds)."""
    max_batch_size: int = 32
    """Most sequences generated together in one padded batch."""
    feature_cache_size: int = 128
    """Distinct clips whose log-mel features are kept (LRU); covers the n copies of each prompt."""
    embed_cache_size: int = 16
    """Distinct clips whose audio-encoder outputs are kept on the device (LRU; cleared when weights change)."""
    device: str = "auto"
    """Where the model runs: ``auto`` (cuda on verl's CUDA platform with a GPU, else cpu), ``cpu`` or ``cuda``."""
    attn_implementation: str = "sdpa"
    """Attention kernel of the server's model (``sdpa``, ``eager`` or ``flash_attention_2``)."""
    offload_on_sleep: bool = True
    """On CUDA, move the weights to CPU at ``sleep()`` (with ``free_cache_engine``) so training gets the memory."""
    cpu_threads: int = 0
    """torch intra-op threads of the server on CPU; 0 keeps the process default (Ray sets it from num_cpus)."""

    def __post_init__(self) -> None:
        if self.batch_window_ms < 0:
            raise ValueError(f"batch_window_ms must be >= 0, got {self.batch_window_ms}")
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        if self.feature_cache_size < 0 or self.embed_cache_size < 0:
            raise ValueError("cache sizes must be >= 0")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")
        if self.attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise ValueError(
                f"attn_implementation must be one of {ATTN_IMPLEMENTATIONS}, got {self.attn_implementation!r}"
            )
        if self.cpu_threads < 0:
            raise ValueError(f"cpu_threads must be >= 0, got {self.cpu_threads}")

    @classmethod
    def from_engine_kwargs(cls, engine_kwargs: Any) -> HFRolloutOptions:
        """Read ``engine_kwargs["hf"]`` (absent -> defaults); unknown keys raise."""
        raw = dict((engine_kwargs or {}).get("hf") or {})
        known = {f.name for f in fields(cls)} - {"_target_"}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown rollout.engine_kwargs.hf keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**raw)
