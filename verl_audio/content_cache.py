"""Bounded, thread-safe caches keyed by content: within one process, a clip still held is not worked on again.

verl repeats each prompt ``rollout.n`` times and its agent loop handles every copy on its own, so the same
audio reaches the processor, the rollout's featurizer and its encoder many times per step. Each process
(agent-loop worker, rollout server) has its own caches; nothing is shared between processes. ``LRUCache``
holds recent results; ``audio_key`` names a clip by its samples.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import numpy as np

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
