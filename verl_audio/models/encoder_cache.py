"""Audio-encoder outputs cached by clip content, so a frozen encoder runs once per clip.

verl's actor runs the thinker forward on every copy of a prompt in old log-prob, reference and update:
``3n + 1`` encoder passes per clip per GRPO step (n rollouts), all with the same output while the audio
encoder is frozen. ``install`` replaces a thinker's ``get_audio_features`` (the one place its forward
runs ``audio_tower``) with ``CachedAudioFeatures``: each clip of a micro-batch is named by a hash of its
valid mel frames plus the encoder's identity (a hash of its weights as this process holds them and the
compute precision); clips found in the process's LRU are not encoded again, the distinct missing ones
are encoded together in one ``audio_tower`` call, and the outputs are kept in host memory.

* The thinker's actor and reference engines in one worker process share the LRU; their entries
  coincide when their encoders have the same weights and precision (the reference is the actor's frozen
  starting point), so a clip is encoded once per worker for both.
* An encoder with trainable parameters bypasses the cache (its output changes with every update), and
  so does a cache of size 0: then every clip of every forward is encoded, as transformers does.
* FSDP: the encoder layers are FSDP units, whose forward all-gathers their weights on every rank of the
  group. So whether the encoder runs is agreed across ranks (one all-reduce per micro-batch); a rank
  whose clips are all cached while another rank encodes runs the encoder on a short silent input and
  discards it, keeping the collectives in step.
* Numerics: the encoder's output for a clip does not depend on the other clips of its call once the call
  holds a clip of at least one full encoder window (``2 * n_window`` mel frames, 2 s; every ALR question),
  so cached and recomputed embeddings are bit-identical; shorter clips are padded to the longest window
  of their call, which moves their output by rounding (~1e-7 in fp32) between calls of different makeup.

Per process counters (``STATS``) record clips encoded, cache hits and encoder seconds; the engine
reports them with each batch (``audio_encoder/*`` metrics).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch

from verl_audio.content_cache import LRUCache

#: metric names the engine adds to each batch's output (summed over ranks and phases by the trainer)
METRIC_PASSES = "audio_encoder/passes"
METRIC_HITS = "audio_encoder/cache_hits"
METRIC_SECONDS = "audio_encoder/seconds"
METRIC_KEYS = (METRIC_PASSES, METRIC_HITS, METRIC_SECONDS)


@dataclass
class EncoderStats:
    """Counters of one process: clips run through the audio encoder, clips served from the cache, seconds."""

    passes: int = 0
    hits: int = 0
    seconds: float = 0.0

    def snapshot(self) -> tuple[int, int, float]:
        return self.passes, self.hits, self.seconds

    def since(self, snapshot: tuple[int, int, float]) -> dict[str, float]:
        """The counts accumulated after ``snapshot`` as ``{metric name: value}``."""
        passes, hits, seconds = snapshot
        return {METRIC_PASSES: self.passes - passes, METRIC_HITS: self.hits - hits,
                METRIC_SECONDS: self.seconds - seconds}


STATS = EncoderStats()
_CACHE: LRUCache[torch.Tensor] | None = None
_CACHE_LOCK = threading.Lock()


def shared_cache(capacity: int) -> LRUCache[torch.Tensor] | None:
    """The process's encoder-output LRU, holding at least ``capacity`` clips; None when ``capacity`` is 0."""
    global _CACHE
    if capacity <= 0:
        return None
    with _CACHE_LOCK:
        if _CACHE is None:
            _CACHE = LRUCache(capacity)
        _CACHE.capacity = max(_CACHE.capacity, capacity)
        return _CACHE


def tensor_digest(tensors: Iterable[torch.Tensor]) -> str:
    """A hash of the dtypes, shapes and bytes of ``tensors`` (any dtype, any device)."""
    digest = hashlib.blake2b(digest_size=16)
    for tensor in tensors:
        tensor = tensor.detach()
        if hasattr(tensor, "to_local"):  # a DTensor shard under FSDP2: this rank's part
            tensor = tensor.to_local()
        digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(tensor.contiguous().reshape(-1).view(torch.uint8).cpu().numpy())
    return digest.hexdigest()


def encoder_trainable(tower: torch.nn.Module) -> bool:
    return any(p.requires_grad for p in tower.parameters())


class CachedAudioFeatures:
    """Drop-in for ``Qwen2_5OmniThinkerForConditionalGeneration.get_audio_features`` (see module doc).

    ``original`` is the thinker's bound method; ``identity`` returns the encoder's identity (weights and
    precision) to which the autocast state of the call is added.
    """

    def __init__(self, thinker: torch.nn.Module, original: Callable[..., Any],
                 cache: LRUCache[torch.Tensor] | None, identity: Callable[[], str],
                 stats: EncoderStats = STATS) -> None:
        self.thinker, self.original, self.cache, self.identity, self.stats = thinker, original, cache, identity, stats

    def __call__(self, input_features: torch.Tensor, feature_attention_mask: torch.Tensor | None = None,
                 audio_feature_lengths: torch.Tensor | None = None, **kwargs: Any) -> Any:
        kwargs.pop("return_dict", None)  # always a ModelOutput, as the thinker's forward asks for
        tower = self.thinker.audio_tower
        if self.cache is None or feature_attention_mask is None or encoder_trainable(tower):
            self.stats.passes += len(input_features)
            return self._timed(input_features, feature_attention_mask, audio_feature_lengths, **kwargs)
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        frames = feature_attention_mask.sum(-1).tolist()
        prefix = f"{self.identity()}|{_autocast_state(input_features.device.type)}|"
        keys = [prefix + tensor_digest([input_features[i][:, feature_attention_mask[i].bool()]])
                for i in range(len(frames))]
        found: dict[str, torch.Tensor] = {}
        missing: dict[str, int] = {}  # distinct clips to encode -> their first row
        for i, key in enumerate(keys):
            if key in found or key in missing:
                continue
            value = self.cache.get(key)
            if value is None:
                missing[key] = i
            else:
                found[key] = value
        self.stats.hits += len(keys) - len(missing)
        # agreed before any rank encodes: a rank waiting in this all-reduce must not meet an all-gather
        anyone_encodes = _any_rank(bool(missing), input_features.device)
        if missing:
            rows = list(missing.values())
            width = max(frames[i] for i in rows)
            out = self._timed(input_features[rows][..., :width], feature_attention_mask[rows][:, :width],
                              **kwargs).last_hidden_state
            _, out_lens = tower._get_feat_extract_output_lengths(feature_attention_mask[rows].sum(-1))
            for key, chunk in zip(missing, torch.split(out, out_lens.tolist()), strict=True):
                found[key] = chunk.detach().to("cpu", copy=True)
                self.cache.put(key, found[key])
            self.stats.passes += len(rows)
        elif anyone_encodes:
            self._keep_collectives_in_step(input_features, **kwargs)
        device = input_features.device
        embeds = torch.cat([found[key].to(device) for key in keys])
        return BaseModelOutputWithPooling(last_hidden_state=embeds)

    def _timed(self, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        out = self.original(*args, return_dict=True, **kwargs)
        if out.last_hidden_state.device.type != "cpu":
            torch.accelerator.synchronize()
        self.stats.seconds += time.perf_counter() - start
        return out

    def _keep_collectives_in_step(self, input_features: torch.Tensor, **kwargs: Any) -> None:
        """Run the encoder on one silent window, output discarded (another rank is encoding)."""
        config = self.thinker.audio_tower.config
        width = 2 * config.n_window
        silent = torch.zeros((1, input_features.shape[1], width), dtype=input_features.dtype,
                             device=input_features.device)
        self.original(silent, torch.ones((1, width), dtype=torch.long, device=input_features.device),
                      return_dict=True, **kwargs)


def _autocast_state(device_type: str) -> str:
    if torch.is_autocast_enabled(device_type):
        return f"autocast:{torch.get_autocast_dtype(device_type)}"
    return "no-autocast"


def _any_rank(flag: bool, device: torch.device) -> bool:
    """Whether ``flag`` holds on any rank of the default process group (``flag`` alone without one)."""
    if not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return flag
    if torch.distributed.get_world_size() == 1:
        return flag
    value = torch.tensor([int(flag)], device=device)
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return bool(value.item())


def install(thinker: torch.nn.Module, capacity: int, identity: Callable[[], str]) -> CachedAudioFeatures:
    """Route ``thinker``'s audio-encoder calls through the process's cache of ``capacity`` clips (0: none).

    Counting is installed either way, so ``STATS`` also counts passes of an uncached thinker.
    """
    original = type(thinker).get_audio_features.__get__(thinker)
    wrapper = CachedAudioFeatures(thinker, original, shared_cache(capacity), identity)
    thinker.get_audio_features = wrapper
    return wrapper
