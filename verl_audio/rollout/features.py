"""Audio of a request -> log-mel features per clip, cached by the clip's content.

verl repeats each prompt ``rollout.n`` times before generation and sends every copy separately, so
the same clip arrives n times. Features are keyed by a hash of the clip's samples and kept in a small
LRU: the extractor runs once per distinct clip. Features come from ``extract_audio_features``, the
project's one definition of a clip's features, which verl's processor calls use as well: the frames, the
``<|AUDIO|>`` count and every feature value equal what the actor recomputes. A prompt whose placeholder
count differs raises instead of feeding the model misaligned audio.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
import torch

from verl_audio.data.rl_dataset import to_array
from verl_audio.models.audio_features import (
    audio_placeholder_count,
    check_audio_placeholders,
    extract_audio_features,
)

V = TypeVar("V")


class _InFlight:
    """A value being computed by one thread that other threads wait for."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None


class LRUCache(Generic[V]):
    """A thread-safe bounded mapping that forgets the least recently used entry; counts hits and misses."""

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError(f"cache capacity must be >= 0, got {capacity}")
        self.capacity = capacity
        self.hits = 0
        self.misses = 0
        self._data: OrderedDict[str, V] = OrderedDict()
        self._inflight: dict[str, _InFlight] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> V | None:
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                self.hits += 1
                return self._data[key]
            self.misses += 1
            return None

    def put(self, key: str, value: V) -> None:
        with self._lock:
            self._store(key, value)

    def _store(self, key: str, value: V) -> None:
        if self.capacity == 0:
            return
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.capacity:
            self._data.popitem(last=False)

    def get_or_compute(self, key: str, compute: Callable[[], V]) -> V:
        """The cached value, or ``compute()`` run once however many threads ask for ``key`` at the same time.

        verl sends the n copies of a prompt together, so without this every copy would miss at once.
        A miss is counted per computation; threads that wait for it count as hits.
        """
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                self.hits += 1
                return self._data[key]
            flight = self._inflight.get(key)
            owner = flight is None
            if owner:
                flight = self._inflight[key] = _InFlight()
                self.misses += 1
            else:
                self.hits += 1
        if not owner:
            flight.done.wait()
            if flight.error is not None:
                raise flight.error
            return flight.value
        try:
            flight.value = compute()
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with self._lock:
                del self._inflight[key]
                if flight.error is None:
                    self._store(key, flight.value)
            flight.done.set()
        return flight.value

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)

    def stats(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "size": len(self._data), "capacity": self.capacity}


def audio_key(samples: np.ndarray) -> str:
    """Content key of a clip: a hash of its dtype, shape and sample bytes."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{samples.dtype}{samples.shape}".encode())
    digest.update(np.ascontiguousarray(samples).tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class ClipFeatures:
    """One clip's log-mel features, unpadded: ``features`` is (mel bins, frames) float32 on CPU."""

    key: str
    features: torch.Tensor

    @property
    def frames(self) -> int:
        return int(self.features.shape[-1])

    @property
    def tokens(self) -> int:
        """``<|AUDIO|>`` placeholders (audio-encoder outputs) of this clip."""
        return audio_placeholder_count(self.frames)


class AudioFeaturizer:
    """Computes (or recalls) each clip's features with the checkpoint's Whisper feature extractor."""

    def __init__(self, feature_extractor: Any, audio_token_id: int, cache_size: int = 128) -> None:
        self.feature_extractor = feature_extractor
        self.audio_token_id = audio_token_id
        self.sampling_rate = int(feature_extractor.sampling_rate)
        self.cache: LRUCache[ClipFeatures] = LRUCache(cache_size)

    def _compute(self, samples: np.ndarray, key: str) -> ClipFeatures:
        out = extract_audio_features(self.feature_extractor, [samples], sampling_rate=self.sampling_rate)
        frames = int(out["feature_attention_mask"][0].sum())
        return ClipFeatures(key=key, features=out["input_features"][0, :, :frames].float().contiguous())

    def clip(self, audio: Any) -> ClipFeatures:
        """Features of one clip (an array at the extractor's rate, a path, or a datasets-style dict)."""
        samples = to_array(audio, self.sampling_rate)
        key = audio_key(samples)
        return self.cache.get_or_compute(key, lambda: self._compute(samples, key))

    def prepare(
        self, prompt_ids: Sequence[int], audio_data: Sequence[Any] | None, sampling_rate: int | None = None
    ) -> list[ClipFeatures]:
        """The clips of one request, checked against the prompt's ``<|AUDIO|>`` count."""
        if sampling_rate is not None and int(sampling_rate) != self.sampling_rate:
            raise ValueError(
                f"audio sampling_rate {sampling_rate} differs from the feature extractor's {self.sampling_rate}: "
                "resample the audio before generation"
            )
        clips = [self.clip(audio) for audio in (audio_data or [])]
        ids = torch.as_tensor(list(prompt_ids), dtype=torch.long)
        mask = torch.zeros(len(clips), max((c.frames for c in clips), default=0), dtype=torch.long)
        for row, c in enumerate(clips):
            mask[row, : c.frames] = 1
        check_audio_placeholders(ids, mask, self.audio_token_id)
        return clips
