"""Answer single requests that arrive together with one vectorised call (opportunistic micro-batching).

A worker's endpoints are async but the scoring is CPU work that holds the event loop, so while one request is
scored the next ones wait in the loop's queue. `Coalescer` lets them join: each request queues its item and
awaits a future; one flush scores everything queued with the family's batch function (the same function a
batch endpoint calls) and hands each request its own answer. Most of a single order's cost is per call, not
per row (online-store queries, the commit of the velocity push, LightGBM's call overhead), so under load a
flush of 8 orders costs about as much as 2 single ones, while an idle service answers as before:

- `IN_FLIGHT` counts the single-item prediction requests a worker has accepted and not yet answered (the API
  key middleware enters and leaves it); a flush runs as soon as every one of them has queued its item, so a
  lone request is scored at once, with no added wait;
- while some are still on their way (parsed, validated) the flush waits for them, at most `linger_s`, and
  runs early at `max_items`.

Orders scored together are pushed into the velocity features together before their lookup, so each sees the
others (as in one /score_risk_batch call): their relative order is arbitrary anyway when they arrive at once.
BentoML's own adaptive batching batches between services (a dependency service receives lists), which would
add an inter-process hop to every call; here the batch stays inside the worker that received the requests.
If the batch call raises, every request of the batch gets the error: scoring them again one by one could push
the same orders into the velocity features twice. (Bad input never gets here: requests are validated first.)
"""

from __future__ import annotations

import asyncio
from contextlib import contextmanager
from typing import Callable, Generic, Iterator, Sequence, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class InFlight:
    """Requests per key (family) that a worker has accepted and not answered yet."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    @contextmanager
    def track(self, key: str) -> Iterator[None]:
        self.counts[key] = self.counts.get(key, 0) + 1
        try:
            yield
        finally:
            self.counts[key] -= 1

    def count(self, key: str) -> int:
        return self.counts.get(key, 0)


# one event loop per worker process: plain counters, no lock
IN_FLIGHT = InFlight()


class Coalescer(Generic[Item, Result]):
    """Queue items from concurrent coroutines; answer them with `run(items) -> results` (same order)."""

    def __init__(self, run: Callable[[Sequence[Item]], Sequence[Result]], max_items: int = 32,
                 linger_s: float = 0.002, key: str = "", in_flight: InFlight | None = None) -> None:
        if max_items < 1:
            raise ValueError("max_items must be at least 1")
        self.run = run
        self.max_items = max_items
        self.linger_s = linger_s
        self.key = key
        self.in_flight = in_flight if in_flight is not None else IN_FLIGHT
        self._queue: list[tuple[Item, asyncio.Future]] = []
        self._handle: asyncio.Handle | None = None
        self._deadline = 0.0
        self.flushes = 0
        self.items = 0

    async def submit(self, item: Item) -> Result:
        """The result for `item`, computed together with whatever else is queued."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        self._queue.append((item, future))
        if len(self._queue) >= self.max_items:
            self._flush()
        elif self._handle is None:
            # not inline: requests read in the same loop iteration have not reached the middleware yet
            self._deadline = loop.time() + self.linger_s
            self._handle = loop.call_soon(self._flush_when_complete)
        return await future

    def _flush_when_complete(self) -> None:
        """Flush once every accepted request has queued (or at the deadline); otherwise look again on the next
        loop iteration, after the other requests' tasks have run a step."""
        self._handle = None
        loop = asyncio.get_running_loop()
        if len(self._queue) < self.in_flight.count(self.key) and loop.time() < self._deadline:
            self._handle = loop.call_soon(self._flush_when_complete)
            return
        self._flush()

    def _flush(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        batch, self._queue = self._queue, []
        if not batch:
            return
        self.flushes += 1
        self.items += len(batch)
        items = [item for item, _ in batch]
        try:
            results = list(self.run(items))
            if len(results) != len(items):
                raise RuntimeError(f"coalesced call returned {len(results)} results for {len(items)} items")
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results):
            if not future.done():
                future.set_result(result)
