"""Audio-encoder outputs cached by clip content, so a frozen encoder runs once per clip.

verl's actor runs the model forward on every copy of a prompt in old log-prob, reference and update:
``3n + 1`` encoder passes per clip per GRPO step (n rollouts), all with the same output while the audio
encoder is frozen. ``install`` replaces the one place the forward runs the audio encoder: an Omni thinker's
``get_audio_features`` (``CachedAudioFeatures``), or for Qwen2-Audio, whose items are fixed 30 s windows, the
audio tower's ``forward`` (``CachedTowerRows``). Each clip (window) of a micro-batch is named by a hash of its
features plus the encoder's identity (a hash of its weights as this process holds them and the compute
precision); clips found in the process's LRU are not encoded again, the distinct missing ones are encoded
together in one call, and the outputs are kept in host memory.

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
    """Drop-in for a thinker's ``get_audio_features`` (Qwen2.5-Omni, Qwen3-Omni; see module doc).

    ``original`` is the model's bound method; ``identity`` returns the encoder's identity (weights and precision)
    to which the autocast state of the call is added. ``family`` splits the concatenated outputs per clip.
    """

    def __init__(self, family: Any, model: torch.nn.Module, original: Callable[..., Any],
                 cache: LRUCache[torch.Tensor] | None, identity: Callable[[], str], stats: EncoderStats = STATS) -> None:
        self.family, self.model, self.original, self.cache, self.identity = family, model, original, cache, identity
        self.stats = stats

    @property
    def tower(self) -> torch.nn.Module:
        return self.family.module(self.model, self.family.audio_encoder)

    def __call__(self, input_features: torch.Tensor, feature_attention_mask: torch.Tensor | None = None,
                 audio_feature_lengths: torch.Tensor | None = None, **kwargs: Any) -> Any:
        kwargs.pop("return_dict", None)  # always a ModelOutput, as the thinker's forward asks for
        if self.cache is None or feature_attention_mask is None or encoder_trainable(self.tower):
            self.stats.passes += len(input_features)
            return self._timed(input_features, feature_attention_mask, audio_feature_lengths, **kwargs)
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        frames = feature_attention_mask.sum(-1).tolist()
        prefix = f"{self.identity()}|{_autocast_state(input_features.device.type)}|"
        keys = [prefix + tensor_digest([input_features[i][:, feature_attention_mask[i].bool()]])
                for i in range(len(frames))]
        found, missing = _lookup(self.cache, keys)
        self.stats.hits += len(keys) - len(missing)
        # agreed before any rank encodes: a rank waiting in this all-reduce must not meet an all-gather
        anyone_encodes = _any_rank(bool(missing), input_features.device)
        if missing:
            rows = list(missing.values())
            width = max(frames[i] for i in rows)
            out = self._timed(input_features[rows][..., :width], feature_attention_mask[rows][:, :width],
                              **kwargs).last_hidden_state
            counts = [self.family.item_tokens(int(frames[i])) for i in rows]
            for key, chunk in zip(missing, torch.split(out, counts), strict=True):
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
        _synchronize(out.last_hidden_state)
        self.stats.seconds += time.perf_counter() - start
        return out

    def _keep_collectives_in_step(self, input_features: torch.Tensor, **kwargs: Any) -> None:
        """Run the encoder on one silent window, output discarded (another rank is encoding)."""
        width = 2 * self.tower.config.n_window
        silent = torch.zeros((1, input_features.shape[1], width), dtype=input_features.dtype,
                             device=input_features.device)
        self.original(silent, torch.ones((1, width), dtype=torch.long, device=input_features.device),
                      return_dict=True, **kwargs)


class CachedTowerRows:
    """Drop-in for the ``forward`` of an audio tower that takes fixed-size items (Qwen2-Audio: 3,000 frames each)
    and returns one row of hidden states per item; rows are cached by the item's features and attention mask."""

    def __init__(self, tower: torch.nn.Module, original: Callable[..., Any], cache: LRUCache[torch.Tensor] | None,
                 identity: Callable[[], str], stats: EncoderStats = STATS) -> None:
        self.tower, self.original, self.cache, self.identity, self.stats = tower, original, cache, identity, stats

    def __call__(self, input_features: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any) -> Any:
        if self.cache is None or encoder_trainable(self.tower):
            self.stats.passes += len(input_features)
            return self._timed(input_features, attention_mask, **kwargs)
        from transformers.modeling_outputs import BaseModelOutput

        prefix = f"{self.identity()}|{_autocast_state(input_features.device.type)}|"
        keys = [prefix + tensor_digest([input_features[i]] + ([attention_mask[i]] if attention_mask is not None
                                                               else [])) for i in range(len(input_features))]
        found, missing = _lookup(self.cache, keys)
        self.stats.hits += len(keys) - len(missing)
        anyone_encodes = _any_rank(bool(missing), input_features.device)
        if missing:
            rows = list(missing.values())
            mask = attention_mask[rows] if attention_mask is not None else None
            out = self._timed(input_features[rows], mask, **kwargs).last_hidden_state
            for key, row in zip(missing, out, strict=True):
                found[key] = row.detach().to("cpu", copy=True)
                self.cache.put(key, found[key])
            self.stats.passes += len(rows)
        elif anyone_encodes:  # another rank encodes: run one item too, so the all-gathers stay in step
            self.original(input_features[:1], attention_mask[:1] if attention_mask is not None else None, **kwargs)
        return BaseModelOutput(last_hidden_state=torch.stack([found[k].to(input_features.device) for k in keys]))

    def _timed(self, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        out = self.original(*args, **kwargs)
        _synchronize(out.last_hidden_state)
        self.stats.seconds += time.perf_counter() - start
        return out


def _lookup(cache: LRUCache[torch.Tensor], keys: list[str]) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """(cached outputs by key, distinct missing keys -> their first row)."""
    found: dict[str, torch.Tensor] = {}
    missing: dict[str, int] = {}
    for i, key in enumerate(keys):
        if key in found or key in missing:
            continue
        value = cache.get(key)
        if value is None:
            missing[key] = i
        else:
            found[key] = value
    return found, missing


def _synchronize(tensor: torch.Tensor) -> None:
    if tensor.device.type != "cpu":
        torch.accelerator.synchronize()


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


def install(family: Any, model: torch.nn.Module, capacity: int, identity: Callable[[], str]) -> Any:
    """Route ``model``'s audio-encoder calls through the process's cache of ``capacity`` clips (0: none).

    Counting is installed either way, so ``STATS`` also counts passes of an uncached encoder. A model with
    ``get_audio_features`` (the Omni thinkers) has that method replaced; otherwise (Qwen2-Audio) its audio
    tower's ``forward``.
    """
    cache = shared_cache(capacity)
    if hasattr(type(model), "get_audio_features"):
        original = type(model).get_audio_features.__get__(model)
        wrapper: Any = CachedAudioFeatures(family, model, original, cache, identity)
        model.get_audio_features = wrapper
        return wrapper
    tower = family.module(model, family.audio_encoder)
    wrapper = CachedTowerRows(tower, type(tower).forward.__get__(tower), cache, identity)
    tower.forward = wrapper
    return wrapper
