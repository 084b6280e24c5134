"""Sampling for the `hf` rollout backend: verl's sampling params -> one spec per request, and one step.

verl's agent loop sends ``temperature``, ``top_p``, ``top_k``, ``repetition_penalty`` and ``logprobs``
(plus ``max_tokens`` / ``stop_token_ids`` from some loops); ``rollout.n`` never arrives (the batch is
repeated before generation). ``max_tokens`` defaults the way verl's vLLM server derives it.

Log-probs are ``log_softmax(logits / temperature)`` of the chosen token in float32, taken before the
repetition penalty and top-k/top-p filtering: that is the distribution verl's actor evaluates when it
recomputes log-probs at ``rollout.temperature``, so ``training/rollout_probs_diff_*`` measures only
numerics. (vLLM's default ``processed_logprobs`` are taken after filtering.) Greedy requests
(temperature 0) report ``log_softmax(logits)``.

Some ids are never chosen (``BatchSampler.banned``, greedy included): the multimodal placeholders
(``<|AUDIO|>``, ``<|IMAGE|>``, ...), which the thinker's forward fills with encoder outputs, so a response
holding one breaks the actor's forward. They are removed like top-k/top-p removes tokens, after the
log-probs are taken: the reported log-probs stay those of the full tempered distribution, which is what
the actor recomputes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

#: keys that shape generation here
SUPPORTED_KEYS = frozenset(
    {
        "temperature",
        "top_p",
        "top_k",
        "repetition_penalty",
        "logprobs",
        "max_tokens",
        "max_new_tokens",
        "stop_token_ids",
        "ignore_eos",
    }
)
#: vLLM keys about detokenized text, meaningless for token-in-token-out generation
TEXT_ONLY_KEYS = frozenset(
    {"skip_special_tokens", "spaces_between_special_tokens", "detokenize", "include_stop_str_in_output"}
)


@dataclass(frozen=True)
class SamplingSpec:
    """How one request is sampled."""

    max_tokens: int
    temperature: float = 1.0  # 0 means greedy
    top_k: int = 0  # 0 means off
    top_p: float = 1.0  # 1 means off
    repetition_penalty: float = 1.0
    logprobs: bool = False  # return per-token log-probs
    ignore_eos: bool = False
    stop_token_ids: tuple[int, ...] = field(default_factory=tuple)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def default_max_tokens(prompt_len: int, *, prompt_length: int, response_length: int, max_model_len: int) -> int:
    """vLLM server's budget: min(response_length, prompt_length + response_length - prompt), clamped to context."""
    room = max_model_len - prompt_len
    if room < 1:
        raise ValueError(
            f"prompt of {prompt_len} tokens leaves no room to generate within max_model_len={max_model_len}"
        )
    return max(1, min(response_length, prompt_length + response_length - prompt_len, room))


def parse_sampling_params(
    params: dict[str, Any],
    prompt_len: int,
    *,
    prompt_length: int,
    response_length: int,
    max_model_len: int,
    ignore_eos: bool = False,
) -> SamplingSpec:
    """One request's ``sampling_params`` -> ``SamplingSpec``; unknown keys raise (nothing is dropped quietly)."""
    unknown = set(params) - SUPPORTED_KEYS - TEXT_ONLY_KEYS
    if unknown:
        raise ValueError(f"unsupported sampling params {sorted(unknown)}; supported: {sorted(SUPPORTED_KEYS)}")
    room = max_model_len - prompt_len
    limit = params.get("max_tokens", params.get("max_new_tokens"))
    if limit is None:
        max_tokens = default_max_tokens(
            prompt_len, prompt_length=prompt_length, response_length=response_length, max_model_len=max_model_len
        )
    else:
        if room < 1:
            raise ValueError(f"prompt of {prompt_len} tokens leaves no room within max_model_len={max_model_len}")
        max_tokens = max(1, min(int(limit), room))
    temperature = float(params.get("temperature", 1.0))
    top_k = int(params.get("top_k", -1))
    top_p = float(params.get("top_p", 1.0))
    penalty = float(params.get("repetition_penalty", 1.0))
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if penalty <= 0:
        raise ValueError(f"repetition_penalty must be > 0, got {penalty}")
    return SamplingSpec(
        max_tokens=max_tokens,
        temperature=temperature,
        top_k=max(top_k, 0),  # verl and vLLM use -1 for "off"
        top_p=top_p,
        repetition_penalty=penalty,
        logprobs=bool(params.get("logprobs", False)),
        ignore_eos=bool(params.get("ignore_eos", ignore_eos)),
        stop_token_ids=tuple(int(t) for t in (params.get("stop_token_ids") or ())),
    )


@dataclass
class BatchSampler:
    """Per-row sampling settings of a batch, as tensors on the logits' device."""

    temperature: torch.Tensor  # (B,) float32; 0 for greedy rows
    top_k: torch.Tensor  # (B,) long; 0 for off
    top_p: torch.Tensor  # (B,) float32
    penalty: torch.Tensor | None  # (B,) float32, or None when no row penalizes repetition
    banned: torch.Tensor | None = None  # (K,) long: ids no row may choose, or None

    @classmethod
    def from_specs(
        cls, specs: list[SamplingSpec], device: torch.device, banned: Iterable[int] = ()
    ) -> BatchSampler:
        pen = [s.repetition_penalty for s in specs]
        banned_ids = sorted({int(t) for t in banned})
        return cls(
            temperature=torch.tensor([s.temperature for s in specs], dtype=torch.float32, device=device),
            top_k=torch.tensor([s.top_k for s in specs], dtype=torch.long, device=device),
            top_p=torch.tensor([s.top_p for s in specs], dtype=torch.float32, device=device),
            penalty=None if all(p == 1.0 for p in pen) else torch.tensor(pen, dtype=torch.float32, device=device),
            banned=torch.tensor(banned_ids, dtype=torch.long, device=device) if banned_ids else None,
        )

    def select(self, rows: torch.Tensor) -> BatchSampler:
        """The settings of ``rows`` only (finished rows leave the batch)."""
        return BatchSampler(
            self.temperature[rows],
            self.top_k[rows],
            self.top_p[rows],
            None if self.penalty is None else self.penalty[rows],
            self.banned,
        )


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: torch.Tensor) -> torch.Tensor:
    """HF/vLLM repetition penalty: seen tokens' positive logits are divided, negative ones multiplied."""
    pen = penalty[:, None]
    scaled = torch.where(logits > 0, logits / pen, logits * pen)
    return torch.where(seen, scaled, logits)


def filter_top_k_top_p(logits: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Set logits outside each row's top-k and top-p nucleus to -inf (the most likely token always stays)."""
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    ranks = torch.arange(logits.shape[-1], device=logits.device)[None, :]
    k = torch.where(top_k > 0, top_k, logits.shape[-1])[:, None]
    drop = ranks >= k
    probs = sorted_logits.masked_fill(drop, float("-inf")).softmax(dim=-1)
    before = probs.cumsum(dim=-1) - probs  # mass strictly above each token
    drop |= before > top_p[:, None]
    drop[:, 0] = False
    return logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))


def sample_step(
    logits: torch.Tensor,
    sampler: BatchSampler,
    generator: torch.Generator | None = None,
    seen: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Choose one token per row; return (tokens (B,), log-probs (B,)) — see the module doc for log-probs."""
    logits = logits.float()
    greedy = sampler.temperature == 0
    temp = torch.where(greedy, torch.ones_like(sampler.temperature), sampler.temperature)[:, None]
    scaled = logits / temp
    logprobs = scaled.log_softmax(dim=-1)  # before banning: the distribution the actor recomputes
    if sampler.banned is not None:
        scaled = scaled.index_fill(-1, sampler.banned, float("-inf"))
    if sampler.penalty is not None and seen is not None:
        scaled = apply_repetition_penalty(scaled, seen, sampler.penalty)
    choice = scaled.argmax(dim=-1)
    if not bool(greedy.all()):
        filtered = filter_top_k_top_p(scaled, sampler.top_k, sampler.top_p)
        drawn = torch.multinomial(filtered.softmax(dim=-1), 1, generator=generator).squeeze(-1)
        choice = torch.where(greedy, choice, drawn)
    return choice, logprobs.gather(-1, choice[:, None]).squeeze(-1)
