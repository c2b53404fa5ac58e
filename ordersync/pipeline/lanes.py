"""Keyed lanes: a stage works on records of different keys at once, and on those of one key one after
another, in the order they were read.

A record's key (an order, a SKU, a channel) always maps to the same lane, and a lane takes one record at
a time, so what the stages promise per key (a later version after an earlier one, a record waiting behind
one of its order parked earlier) holds as with one record at a time; records of other keys run meanwhile,
so one waiting for Amazon's quota, a Kafka acknowledgement or Redis no longer holds up the others.
Offsets are committed only up to the first record not yet acknowledged (the Kafka consumer keeps acked
offsets per partition and commits the gap-free prefix), so a record still in a lane when the worker stops
is read again: none is acknowledged unprocessed.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Generic, TypeVar

T = TypeVar("T")


def lane_of(key: bytes | None, lanes: int) -> int:
    """The lane of ``key``: the same for the same key in every process (CRC-32, not Python's salted
    hash), so tests and logs can name it; records without a key share lane 0."""
    return zlib.crc32(key) % lanes if key else 0


class KeyedLanes(Generic[T]):
    """``lanes`` workers, each running ``work`` on its records one at a time.

    :meth:`put` waits while the record's lane holds ``depth`` records (back-pressure on the reader), and
    raises what a worker died of (``work`` is expected to settle every record itself; anything it
    raises is a bug that must stop the stage rather than be skipped). Leaving the ``async with`` block
    cancels the workers: records still queued were not worked on and are not acknowledged."""

    def __init__(self, lanes: int, work: Callable[[T], Awaitable[None]], *, depth: int = 8) -> None:
        if lanes < 1:
            raise ValueError(f"lanes must be at least 1, not {lanes}")
        self.lanes = lanes
        self._work = work
        self._queues: list[asyncio.Queue[T]] = [asyncio.Queue(maxsize=depth) for _ in range(lanes)]
        self._workers: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> KeyedLanes[T]:
        self._workers = [asyncio.create_task(self._run(queue)) for queue in self._queues]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)

    async def _run(self, queue: asyncio.Queue[T]) -> None:
        while True:
            item = await queue.get()
            try:
                await self._work(item)
            finally:
                queue.task_done()

    def _raise_if_a_worker_died(self) -> None:
        for worker in self._workers:
            if worker.done():
                cause = None if worker.cancelled() else worker.exception()
                raise RuntimeError("a keyed lane stopped") from cause

    async def put(self, key: bytes | None, item: T) -> None:
        """Queue ``item`` on its key's lane (waiting for room)."""
        self._raise_if_a_worker_died()
        queue = self._queues[lane_of(key, self.lanes)]
        put = asyncio.ensure_future(queue.put(item))
        # A lane that dies while the reader waits for room in it must not leave the reader waiting.
        while not put.done():
            await asyncio.wait([put, *self._workers], return_when=asyncio.FIRST_COMPLETED)
            if not put.done():
                try:
                    self._raise_if_a_worker_died()
                except BaseException:
                    put.cancel()
                    raise
        put.result()

    async def drain(self) -> None:
        """Wait until every record queued so far was worked on (tests; a graceful hand-over)."""
        self._raise_if_a_worker_died()
        for queue in self._queues:
            await queue.join()
