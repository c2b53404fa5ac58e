"""A small load generator for the rate limiter: several asyncio tasks in one process take tokens from one
bucket as fast as it grants them, and report the Redis ``TIME`` of every grant.

Run in several processes at once (the integration tests use ``multiprocessing`` with spawn) it shows
that grants across processes stay within the bucket and use nearly all of it. It lives in the package,
not the tests, so that a spawned process can import it by name.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ordersync.errors import QuotaTimeout
from ordersync.ratelimit.limiter import RedisRateLimiter
from ordersync.ratelimit.plans import PlanBook
from ordersync.redis_client import make_redis
from ordersync.settings import RedisSettings


class _Waitable(Protocol):
    def wait(self, timeout: float | None = None) -> Any: ...


class _ResultSink(Protocol):
    def put(self, obj: Any, block: bool = True, timeout: float | None = None) -> None: ...


@dataclass(frozen=True)
class HammerPlan:
    """One bucket to hammer: ``operation`` with ``(rate, burst)`` for ``seller_id``, under ``key_prefix``."""

    redis_url: str
    key_prefix: str
    seller_id: str
    operation: str
    rate: float
    burst: int
    send_deadline_s: float = 2.0
    application_id: str = "ordersync"
    time_scale: float = 1.0
    lane: str = "default"


async def hammer_async(plan: HammerPlan, *, duration_s: float, tasks: int = 1) -> list[int]:
    """Take tokens with ``tasks`` concurrent tasks for ``duration_s``; the Redis TIME (µs) of each grant."""
    client = make_redis(RedisSettings(url=plan.redis_url))
    limiter = RedisRateLimiter(
        client,
        plans=PlanBook({plan.operation: (plan.rate, plan.burst)}, time_scale=plan.time_scale),
        application_id=plan.application_id,
        key_prefix=plan.key_prefix,
        send_deadline_s=plan.send_deadline_s,
    )
    granted_at: list[int] = []
    stop_at = time.monotonic() + duration_s

    async def take_until_stop() -> None:
        while (remaining := stop_at - time.monotonic()) > 0:
            try:
                grant = await limiter.acquire(
                    plan.operation, plan.seller_id, lane=plan.lane, timeout=remaining
                )
            except QuotaTimeout:
                return
            granted_at.append(grant.decided_at_us)

    try:
        await asyncio.gather(*(take_until_stop() for _ in range(tasks)))
    finally:
        await limiter.aclose()
    return granted_at


def _skew_local_clocks(offset_s: float) -> None:
    """Shift this process's wall and monotonic clocks: decisions must not depend on either."""
    wall: Callable[[], float] = time.time
    monotonic: Callable[[], float] = time.monotonic
    time.time = lambda: wall() + offset_s
    time.monotonic = lambda: monotonic() + offset_s


def hammer_process(
    plan: HammerPlan,
    results: _ResultSink,
    *,
    duration_s: float,
    tasks: int = 1,
    clock_skew_s: float = 0.0,
    start: _Waitable | None = None,
) -> None:
    """Entry point of one hammering process: puts its list of grant times on ``results``.

    ``clock_skew_s`` shifts the process's own clocks by that much (a host whose clock is off);
    ``start`` (a multiprocessing barrier or event) lines the processes up before they begin.
    """
    if clock_skew_s:
        _skew_local_clocks(clock_skew_s)
    if start is not None:
        start.wait()
    results.put(asyncio.run(hammer_async(plan, duration_s=duration_s, tasks=tasks)))
