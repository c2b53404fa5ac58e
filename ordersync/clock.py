"""The one clock every stage reads Amazon's "now" from.

Windows, catch-up schedules, reconciliation days and the dates recorded beside an order are all
reckoned in Amazon's time. In production that is the host's UTC clock (kept by NTP); tests and the
demo hand a stage the simulator's clock instead, so nothing depends on the day a test runs.
Durations that are not instants on Amazon's calendar (token lifetimes, back-off, rate-limit grants)
use ``time.monotonic`` and do not belong here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """Tells the current instant, timezone-aware, in UTC."""

    def now(self) -> datetime: ...


class SystemClock:
    """The host's clock: what a stage uses in production."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class EpochClock:
    """A clock read from a function returning epoch seconds, e.g. the simulator's ``SimClock.now``."""

    def __init__(self, epoch: Callable[[], float]) -> None:
        self._epoch = epoch

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._epoch(), UTC)


class ManualClock:
    """A clock that moves only when told: for unit tests of time-dependent logic."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("ManualClock needs a timezone-aware start")
        self._now = start.astimezone(UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> datetime:
        with self._lock:
            self._now += timedelta(seconds=seconds)
            return self._now


SYSTEM_CLOCK: Clock = SystemClock()


def epoch_seconds(clock: Clock) -> float:
    """The clock's instant as epoch seconds, for intervals kept as numbers in Redis."""
    return clock.now().timestamp()
