"""The simulator's clock and Amazon's timestamp format.

Simulated time runs ``time_scale`` times faster than real time from a fixed start, so a demo can
live through hours of Amazon's day (order arrivals, Pending periods, token-bucket refill) in
minutes. Everything in the simulator reads this clock; only LWA token lifetimes use real time,
because the client that caches them cannot see the simulated clock.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime


def epoch_to_iso(epoch: float) -> str:
    """Amazon's format: ISO 8601 in UTC, whole seconds, with a ``Z``."""
    return datetime.fromtimestamp(math.floor(epoch), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def epoch_to_iso_ms(epoch: float) -> str:
    """ISO 8601 in UTC with milliseconds and a ``Z``: how Amazon's notifications write their times."""
    millis = math.floor(epoch * 1000)
    seconds, rest = divmod(millis, 1000)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{rest:03d}Z"


def parse_iso(value: str) -> float:
    """An ISO 8601 date-time (``Z``, offsets and fractions accepted; no offset means UTC) as epoch
    seconds. A date without a time is refused, as Amazon refuses it."""
    text = value.strip()
    if "T" not in text and " " not in text:
        raise ValueError(f"not an ISO 8601 date-time: {value!r}")
    try:
        parsed = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError as exc:
        raise ValueError(f"not an ISO 8601 date-time: {value!r}") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


class SimClock:
    """Simulated time = start + real elapsed time x ``time_scale``, plus any manual jumps.

    ``time_scale`` 0 freezes the clock (only :meth:`advance` moves it), which unit tests use.
    ``monotonic`` is injectable so tests can drive real time too.
    """

    def __init__(
        self,
        time_scale: float = 1.0,
        start: datetime | float | None = None,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if time_scale < 0 or not math.isfinite(time_scale):
            raise ValueError("time_scale must be a finite number >= 0")
        if start is None:
            start_epoch = float(math.floor(time.time()))
        elif isinstance(start, datetime):
            start_epoch = (start if start.tzinfo else start.replace(tzinfo=UTC)).timestamp()
        else:
            start_epoch = float(start)
        self.time_scale = time_scale
        self.start = float(math.floor(start_epoch))
        self._monotonic = monotonic
        self._origin = monotonic()
        self._jumped = 0.0
        self._lock = threading.Lock()

    def now(self) -> float:
        """Simulated epoch seconds (float)."""
        with self._lock:
            elapsed = self._monotonic() - self._origin
            return self.start + elapsed * self.time_scale + self._jumped

    def advance(self, seconds: float) -> float:
        """Jump simulated time forward (never back: the order history is append-only)."""
        if seconds < 0 or not math.isfinite(seconds):
            raise ValueError("the clock only moves forward")
        with self._lock:
            self._jumped += seconds
        return self.now()

    def now_iso(self) -> str:
        return epoch_to_iso(self.now())

    def real_seconds(self, sim_seconds: float) -> float:
        """How long ``sim_seconds`` of simulated time take in real time (inf when frozen)."""
        return math.inf if self.time_scale == 0 else sim_seconds / self.time_scale
