"""The GCRA decision of ``gcra.lua``, in Python, over in-memory state.

:class:`GcraStore` mirrors the script operation by operation (same keys, same rounding, same replies) so
that :class:`~ordersync.ratelimit.limiter.InMemoryRateLimiter` makes exactly the decisions Redis would.
It exists for unit tests with a fake clock; production decisions are only ever made inside Redis, clocked
by Redis ``TIME``. Any change here must be made in ``gcra.lua`` too, and the other way round.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

MICROS = 1_000_000

#: A tolerance against float noise when sizing the headroom (10 * 0.1 is 1.0000000000000002).
_HEADROOM_EPSILON = 1e-9

#: When tokens are there but a waiter ahead has yet to collect its own, look again after this long.
_REPOLL_CAP_US = 50_000


@dataclass(frozen=True)
class BucketShape:
    """The numbers one decision runs on, derived from the plan and any adopted lower rate."""

    rate: float
    """Requests per second after time scaling."""
    interval_us: float
    """Microseconds per token (GCRA's emission interval T)."""
    effective_burst: int
    """Burst minus the send-deadline headroom, at least 1."""


def bucket_shape(amazon_rate: float, time_scale: float, burst: int, send_deadline_us: float) -> BucketShape:
    """``b_eff = burst - max(1, ceil(rate * send_deadline))``, never below 1.

    The headroom lets grants conforming to ``(rate, b_eff)`` reach Amazon conforming to ``(rate, burst)``
    even when each request takes up to the send deadline to get there.
    """
    rate = amazon_rate * time_scale
    headroom = max(1, math.ceil(rate * send_deadline_us / MICROS - _HEADROOM_EPSILON))
    return BucketShape(rate=rate, interval_us=MICROS / rate, effective_burst=max(1, burst - headroom))


def usable_reserve(reserve: int, effective_burst: int) -> int:
    """A reserve that would leave a lane no token at all would starve it; keep one usable."""
    return max(0, min(reserve, effective_burst - 1))


def waiter_reserve(member: str) -> int:
    """The reserve encoded in a waiter's queue member ``"<reserve>|<id>"``."""
    head, _, _ = member.partition("|")
    return int(head) if head.isdigit() else 0


@dataclass
class _Bucket:
    tat: float | None = None
    last_now: int | None = None
    adopted_rate: str | None = None
    adopted_for: str | None = None


@dataclass
class _Waiters:
    scores: dict[str, int] = field(default_factory=dict)
    expiry: dict[str, int] = field(default_factory=dict)

    def ordered(self) -> list[str]:
        # Redis orders equal scores by member, byte-wise.
        return sorted(self.scores, key=lambda member: (self.scores[member], member.encode()))

    def remove(self, member: str) -> bool:
        self.expiry.pop(member, None)
        return self.scores.pop(member, None) is not None


@dataclass(frozen=True)
class AcquireReply:
    """The script's acquire reply: ``{granted, retry_after_us, tokens_left_floor, score, now, before}``."""

    granted: bool
    retry_after_us: int
    tokens_left: int
    waiter_score: int
    now_us: int
    queued_before: int


@dataclass(frozen=True)
class PeekReply:
    tokens_left: float
    rate: float
    effective_burst: int
    waiters: int
    adopted_rate: float | None
    now_us: int


@dataclass(frozen=True)
class PlanArgs:
    """ARGV 2-5 of every script call."""

    plan_rate_text: str
    time_scale: float
    burst: int
    send_deadline_us: int

    @property
    def plan_rate(self) -> float:
        return float(self.plan_rate_text)


class GcraStore:
    """In-memory stand-in for the Redis keys of ``gcra.lua``: buckets, epochs and waiter queues.

    ``pair`` is ``"<seller>:<app>"`` (the hash tag); ``operation`` names the bucket within it.
    """

    def __init__(self) -> None:
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._epochs: dict[str, int] = {}
        self._waiters: dict[tuple[str, str], _Waiters] = {}

    def _load(
        self, pair: str, operation: str, plan: PlanArgs, redis_now: int, *, writes: bool
    ) -> tuple[_Bucket, int, float, BucketShape, float]:
        bucket = self._buckets.setdefault((pair, operation), _Bucket())
        now = redis_now
        if bucket.last_now is not None and bucket.last_now > now:
            now = bucket.last_now
        amazon_rate = plan.plan_rate
        if (
            bucket.adopted_rate is not None
            and bucket.adopted_for == plan.plan_rate_text
            and float(bucket.adopted_rate) < plan.plan_rate
        ):
            amazon_rate = float(bucket.adopted_rate)
        shape = bucket_shape(amazon_rate, plan.time_scale, plan.burst, plan.send_deadline_us)
        tat = bucket.tat
        if tat is None:
            epoch = self._epochs.get(pair)
            if epoch is None:
                epoch = now
                if writes:
                    self._epochs[pair] = epoch
            tat = epoch + shape.effective_burst * shape.interval_us
        return bucket, now, tat, shape, amazon_rate

    @staticmethod
    def _tokens_left(tat: float, now: int, shape: BucketShape) -> float:
        return shape.effective_burst - (max(tat, now) - now) / shape.interval_us

    @staticmethod
    def _save(bucket: _Bucket, tat: float, now: int) -> None:
        bucket.tat = math.ceil(tat)
        bucket.last_now = now

    def bucket_names(self) -> list[tuple[str, str]]:
        """(pair, operation) of every bucket that has state, as SCAN would find its key."""
        return sorted(name for name, bucket in self._buckets.items() if bucket.tat is not None)

    def leave(self, pair: str, operation: str, member: str) -> bool:
        return self._waiters.setdefault((pair, operation), _Waiters()).remove(member)

    def peek(self, pair: str, operation: str, plan: PlanArgs, redis_now: int) -> PeekReply:
        bucket, now, tat, shape, _ = self._load(pair, operation, plan, redis_now, writes=False)
        waiters = self._waiters.get((pair, operation), _Waiters())
        return PeekReply(
            tokens_left=round(max(0.0, self._tokens_left(tat, now, shape)), 3),
            rate=round(shape.rate, 6),
            effective_burst=shape.effective_burst,
            waiters=sum(1 for expires in waiters.expiry.values() if expires > now),
            adopted_rate=float(bucket.adopted_rate) if bucket.adopted_rate is not None else None,
            now_us=now,
        )

    def throttled(self, pair: str, operation: str, plan: PlanArgs, redis_now: int) -> int:
        """Empty the bucket with the full burst; returns the wait (µs) until the next grant."""
        bucket, now, tat, shape, _ = self._load(pair, operation, plan, redis_now, writes=True)
        new_tat = max(tat, now + plan.burst * shape.interval_us)
        self._save(bucket, new_tat, now)
        retry = max(
            0.0, max(new_tat, now) + shape.interval_us - now - shape.effective_burst * shape.interval_us
        )
        return math.ceil(retry)

    def adopt(self, pair: str, operation: str, plan: PlanArgs, redis_now: int, observed_text: str) -> bool:
        bucket, now, tat, shape, amazon_rate = self._load(pair, operation, plan, redis_now, writes=True)
        observed = float(observed_text)
        if observed <= 0 or observed >= amazon_rate:
            return False
        new_interval = MICROS / (observed * plan.time_scale)
        debt = max(tat, now) - now
        bucket.tat = math.ceil(now + debt * new_interval / shape.interval_us)
        bucket.last_now = now
        bucket.adopted_rate = observed_text
        bucket.adopted_for = plan.plan_rate_text
        return True

    def acquire(
        self,
        pair: str,
        operation: str,
        plan: PlanArgs,
        redis_now: int,
        *,
        reserve: int,
        member: str,
        previous_score: int | None,
        enqueue: bool,
        grace_us: int,
    ) -> AcquireReply:
        bucket, now, tat, shape, _ = self._load(pair, operation, plan, redis_now, writes=True)
        interval = shape.interval_us
        b_eff = shape.effective_burst
        own_reserve = usable_reserve(reserve, b_eff)
        waiters = self._waiters.setdefault((pair, operation), _Waiters())

        for gone in [m for m, expires in waiters.expiry.items() if expires <= now]:
            waiters.remove(gone)

        if member not in waiters.scores and previous_score is not None and enqueue:
            waiters.scores[member] = previous_score
        queue = waiters.ordered()
        ahead = queue[: queue.index(member)] if member in waiters.scores else queue

        debt = max(tat, now) - now

        def fits(after_debt: float, lane_reserve: int) -> bool:
            return after_debt + interval <= (b_eff - lane_reserve) * interval

        blocked_by = 0
        served_before = 0
        for other in ahead:
            other_reserve = usable_reserve(waiter_reserve(other), b_eff)
            if fits(debt, other_reserve):
                blocked_by += 1
                served_before += 1
            elif other_reserve <= own_reserve:
                served_before += 1

        if blocked_by == 0 and fits(debt, own_reserve):
            new_tat = max(tat, now) + interval
            self._save(bucket, new_tat, now)
            waiters.remove(member)
            left = math.floor(max(0.0, self._tokens_left(math.ceil(new_tat), now, shape)))
            return AcquireReply(True, 0, left, 0, now, 0)

        retry = debt + (served_before + 1) * interval - (b_eff - own_reserve) * interval
        if retry <= 0:
            retry = min(interval, _REPOLL_CAP_US)
        retry_us = math.ceil(retry)

        self._save(bucket, tat, now)
        score = 0
        if enqueue:
            score = waiters.scores.setdefault(member, now)
            waiters.expiry[member] = now + retry_us + grace_us
        left = math.floor(max(0.0, self._tokens_left(tat, now, shape)))
        return AcquireReply(False, retry_us, left, score, now, served_before)
