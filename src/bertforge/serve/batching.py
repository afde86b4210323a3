"""Micro-batching: requests that arrive together share one forward pass.

Every model call runs on one worker thread (the event loop keeps accepting and parsing
requests meanwhile). With micro-batching on, a request joins a queue; the batching loop takes
the oldest waiting request, gathers the waiting requests of the same kind (same endpoint and
parameters, e.g. the same pooling) up to `max_batch_items` inputs, waits at most `max_wait_ms`
after the oldest one arrived for more to come, then runs them as one call and hands each
request its slice of the results. Under load the queue fills while the model is busy, so
batches form without any waiting; when idle, a lone request waits at most `max_wait_ms`.

With micro-batching off, each request is one model call on the same worker thread, in
arrival order: the baseline of the on/off benchmark.

A call that fails for a merged batch is retried request by request, so that a request the
engine rejects fails alone. Closing stops taking new requests and finishes the queued ones.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

from bertforge.serve.metrics import Registry

Runner = Callable[[str, tuple, list[Any]], list[Any]]
"""(endpoint, params, items) -> one result per item; runs on the worker thread."""


class ShuttingDown(Exception):
    """The batcher is closed: the server is shutting down."""


@dataclass
class _Pending:
    endpoint: str
    params: tuple
    items: list[Any]
    future: asyncio.Future
    arrived: float = field(default_factory=time.monotonic)

    @property
    def key(self) -> Hashable:
        return (self.endpoint, self.params)


class MicroBatcher:
    def __init__(self, run: Runner, *, enabled: bool = True, max_batch_items: int = 32, max_wait_ms: float = 5.0,
                 metrics: Registry | None = None):
        if max_batch_items <= 0 or max_wait_ms < 0:
            raise ValueError("max_batch_items must be positive and max_wait_ms >= 0")
        self.run_batch = run
        self.enabled = enabled
        self.max_batch_items = max_batch_items
        self.max_wait = max_wait_ms / 1000.0
        self.metrics = metrics or Registry()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bertforge-model")
        self.pending: deque[_Pending] = deque()
        self.wakeup: asyncio.Event | None = None
        self.loop_task: asyncio.Task | None = None
        self.closing = False
        self.lock: asyncio.Lock | None = None

    async def start(self) -> None:
        self.wakeup = asyncio.Event()
        self.lock = asyncio.Lock()
        if self.enabled:
            self.loop_task = asyncio.create_task(self._loop(), name="bertforge-batcher")

    async def call(self, endpoint: str, params: tuple, items: list[Any]) -> list[Any]:
        """The results of `items` (in order), computed in a micro-batch or alone."""
        if self.closing:
            raise ShuttingDown()
        if not self.enabled:
            assert self.lock is not None
            self.metrics.queued.inc(amount=1)
            try:
                async with self.lock:  # arrival order, one call at a time
                    return await self._execute(endpoint, params, [items])
            finally:
                self.metrics.queued.inc(amount=-1)
        assert self.wakeup is not None
        future = asyncio.get_running_loop().create_future()
        self.pending.append(_Pending(endpoint, params, items, future))
        self.metrics.queued.set(len(self.pending))
        self.wakeup.set()
        return await future

    async def _execute(self, endpoint: str, params: tuple, groups: list[list[Any]]) -> list[Any]:
        """One model call over the concatenated groups; returns the concatenated results."""
        items = [item for group in groups for item in group]
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        results = await loop.run_in_executor(self.executor, self.run_batch, endpoint, params, items)
        self.metrics.inference.observe(time.perf_counter() - started, endpoint)
        self.metrics.batches.inc(endpoint)
        self.metrics.batch_items.observe(len(items), endpoint)
        self.metrics.batch_requests.observe(len(groups), endpoint)
        self.metrics.items.inc(endpoint, amount=len(items))
        if len(results) != len(items):
            raise RuntimeError(f"{endpoint}: {len(results)} results for {len(items)} inputs")
        return results

    def _take_batch(self) -> list[_Pending]:
        """The oldest request and the waiting requests of its kind that fit beside it."""
        first = self.pending.popleft()
        batch, count = [first], len(first.items)
        kept: deque[_Pending] = deque()
        while self.pending:
            candidate = self.pending.popleft()
            if candidate.key == first.key and count + len(candidate.items) <= self.max_batch_items:
                batch.append(candidate)
                count += len(candidate.items)
            else:
                kept.append(candidate)
        self.pending = kept
        return batch

    def _ready(self) -> bool:
        """Whether the oldest request should go now: full, or waited long enough, or closing."""
        first = self.pending[0]
        if self.closing or time.monotonic() - first.arrived >= self.max_wait:
            return True
        count = sum(len(p.items) for p in self.pending if p.key == first.key)
        return count >= self.max_batch_items

    async def _loop(self) -> None:
        assert self.wakeup is not None
        while True:
            if not self.pending:
                if self.closing:
                    return
                self.wakeup.clear()
                await self.wakeup.wait()
                continue
            if not self._ready():
                remaining = self.max_wait - (time.monotonic() - self.pending[0].arrived)
                self.wakeup.clear()
                try:
                    await asyncio.wait_for(self.wakeup.wait(), max(remaining, 0.0))
                except asyncio.TimeoutError:
                    pass
                continue
            batch = self._take_batch()
            self.metrics.queued.set(len(self.pending))
            await self._run(batch)

    async def _run(self, batch: list[_Pending]) -> None:
        first = batch[0]
        try:
            results = await self._execute(first.endpoint, first.params, [p.items for p in batch])
        except Exception as error:  # noqa: BLE001 - handed to the requests, never lost
            if len(batch) == 1:
                _settle(first.future, error=error)
                return
            for pending in batch:  # one request's bad input must not fail its neighbours
                await self._run([pending])
            return
        offset = 0
        for pending in batch:
            _settle(pending.future, result=results[offset:offset + len(pending.items)])
            offset += len(pending.items)

    async def close(self) -> None:
        """Stop taking requests; finish the queued ones; stop the worker thread."""
        self.closing = True
        if self.wakeup is not None:
            self.wakeup.set()
        if self.loop_task is not None:
            await self.loop_task
        self.executor.shutdown(wait=True)


def _settle(future: asyncio.Future, result: Any = None, error: BaseException | None = None) -> None:
    if future.done():  # the client went away and the request was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
