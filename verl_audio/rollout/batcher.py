"""Concurrent requests -> padded batches: a queue, a short collection window, a gate for abort/resume.

A background task takes the first waiting request, holds the batch open for ``window_s`` (or until
``max_batch`` requests wait) and runs the batch in a worker thread, so the event loop keeps accepting
requests meanwhile; whatever arrives during a batch forms the next one. The run function receives a
``threading.Event`` that ``abort`` sets: it should stop between steps and return partial results.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

logger = logging.getLogger(__name__)

Req = TypeVar("Req")
Res = TypeVar("Res")


@dataclass
class _Pending(Generic[Req]):
    request: Req
    request_id: str
    arrived: float
    future: asyncio.Future


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("hf rollout: batch loop stopped; the next request restarts it", exc_info=task.exception())


class RequestBatcher(Generic[Req, Res]):
    """Batches requests for ``run``; ``lock`` is held while a batch runs, ``ready`` must be set to start one."""

    def __init__(
        self,
        run: Callable[[list[Req], threading.Event], list[Res]],
        *,
        window_s: float,
        max_batch: int,
        lock: asyncio.Lock,
        ready: asyncio.Event,
    ) -> None:
        self.run, self.window_s, self.max_batch, self.lock, self.ready = run, window_s, max_batch, lock, ready
        self.stats: dict[str, Any] = {"batches": 0, "sequences": 0, "run_s": 0.0, "max_batch": 0}
        self._queue: list[_Pending[Req]] = []
        self._running: list[_Pending[Req]] = []
        self._has_work = asyncio.Event()
        self._full = asyncio.Event()
        self._gate = asyncio.Event()  # open unless aborted and not yet resumed
        self._gate.set()
        self._rejecting = False
        self._abort = threading.Event()
        self._task: asyncio.Task | None = None

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def submit(self, request: Req, request_id: str) -> Res | None:
        """The request's result once its batch ran; None when the gate rejects it (aborted, not resumed)."""
        while not self._gate.is_set():
            if self._rejecting:
                return None
            await self._gate.wait()
        loop = asyncio.get_running_loop()
        pending = _Pending(request, request_id, loop.time(), loop.create_future())
        self._queue.append(pending)
        self._has_work.set()
        if len(self._queue) >= self.max_batch:
            self._full.set()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._loop())
            self._task.add_done_callback(_log_failure)
        return await pending.future

    async def abort(self, aborted: Res, *, reject: bool = False) -> list[str]:
        """Close the gate, answer queued requests with ``aborted``, stop the running batch; return their ids."""
        self._gate.clear()
        self._rejecting = reject
        self._abort.set()
        queued, self._queue = self._queue, []
        ids = [p.request_id for p in self._running + queued]
        for p in queued:
            if not p.future.done():
                p.future.set_result(aborted)
        async with self.lock:  # the running batch has returned
            self._abort.clear()
        return ids

    def resume(self) -> None:
        """Admit requests again after ``abort``."""
        self._rejecting = False
        self._gate.set()

    async def _collect(self) -> None:
        """Wait for a request, then hold the batch open for the window or until max_batch wait."""
        while not self._queue:
            self._has_work.clear()
            await self._has_work.wait()
        loop = asyncio.get_running_loop()
        deadline = self._queue[0].arrived + self.window_s
        while self._queue and len(self._queue) < self.max_batch and loop.time() < deadline:
            self._full.clear()
            try:
                await asyncio.wait_for(self._full.wait(), deadline - loop.time())
            except TimeoutError:
                break

    async def _loop(self) -> None:
        while True:
            await self._collect()
            await self.ready.wait()
            async with self.lock:
                if not self.ready.is_set():
                    continue
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
                self._full.clear()
                batch = [p for p in batch if not p.future.done()]  # callers may have gone
                if batch:
                    self._running = batch
                    try:
                        await self._run(batch)
                    finally:
                        self._running = []

    async def _run(self, batch: list[_Pending[Req]]) -> None:
        start = time.perf_counter()
        try:
            results = await asyncio.to_thread(self.run, [p.request for p in batch], self._abort)
        except Exception as exc:  # every waiting caller gets the error; the loop keeps serving
            logger.exception("hf rollout: batch of %d failed", len(batch))
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        for p, result in zip(batch, results, strict=True):
            if not p.future.done():
                p.future.set_result(result)
        self.stats["batches"] += 1
        self.stats["sequences"] += len(batch)
        self.stats["run_s"] += time.perf_counter() - start
        self.stats["max_batch"] = max(self.stats["max_batch"], len(batch))
