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


def _is_letter(text: str) -> bool:
    # Lua's %a: one ASCII letter.
    return len(text) == 1 and text.isascii() and text.isalpha()


def waiter_member(reserve: int, *, reserved: bool, lane: str, token: str) -> str:
    """A waiter's queue member: ``"<reserve>|<r|n>|<lane>|<token>"`` (``r``: the lane holds a reservation)."""
    return f"{reserve}|{'r' if reserved else 'n'}|{lane}|{token}"


def waiter_flag(member: str) -> str:
    """``r`` for a waiter of a lane holding a reservation, else ``n``."""
    parts = member.split("|", 2)
    return parts[1] if len(parts) > 2 and parts[0].isdigit() and _is_letter(parts[1]) else "n"


def waiter_lane(member: str) -> str:
    parts = member.split("|", 3)
    return parts[2] if len(parts) > 3 and parts[0].isdigit() and _is_letter(parts[1]) else "default"


@dataclass
class _Bucket:
    tat: float | None = None
    last_now: int | None = None
    adopted_rate: str | None = None
    adopted_for: str | None = None
    applied_q: int | None = None
    res_window: int | None = None
    res_used: int | None = None


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
    reserved_outstanding: int = 0
    """Reserved tokens the reserved lane has yet to take in the current window."""
    waiters_by_lane: tuple[tuple[str, int], ...] = ()


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


@dataclass(frozen=True)
class ReservationArgs:
    """ARGV 12-14 of acquire (7-9 of peek): ``tokens`` per window of ``window_us``, opening ``lead_us``
    before each multiple of the window on the server's clock."""

    tokens: int = 0
    window_us: int = 0
    lead_us: int = 0


NO_RESERVATION = ReservationArgs()


@dataclass
class _Loaded:
    bucket: _Bucket
    name: str
    plan: PlanArgs
    amazon_rate: float
    shape: BucketShape
    tat: float = 0.0


class GcraStore:
    """In-memory stand-in for the Redis keys of ``gcra.lua``: buckets, epochs, waiter queues, and the
    server identity per pair (``run_id``; change it to simulate a failover).

    ``pair`` is ``"<seller>:<app>"`` (the hash tag); ``operation`` names the bucket within it (a sub-bucket
    is named ``"<operation>:<sub>"``).
    """

    def __init__(self, run_id: str = "in-memory") -> None:
        self.run_id = run_id
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._epochs: dict[str, int] = {}
        self._waiters: dict[tuple[str, str], _Waiters] = {}
        self._servers: dict[str, tuple[str | None, int | None]] = {}

    # --- the script's shared prologue ---------------------------------------------------------------

    def _quarantine(self, pair: str, server_now: int, *, enabled: bool, writes: bool) -> int | None:
        if not enabled:
            return None
        known, q_at = self._servers.get(pair, (None, None))
        if known != self.run_id:
            if known is not None:
                q_at = server_now
            if writes:
                self._servers[pair] = (self.run_id, q_at)
        return q_at

    def _load(self, pair: str, name: str, plan: PlanArgs) -> _Loaded:
        bucket = self._buckets.setdefault((pair, name), _Bucket())
        amazon_rate = plan.plan_rate
        if (
            bucket.adopted_rate is not None
            and bucket.adopted_for == plan.plan_rate_text
            and float(bucket.adopted_rate) < plan.plan_rate
        ):
            amazon_rate = float(bucket.adopted_rate)
        shape = bucket_shape(amazon_rate, plan.time_scale, plan.burst, plan.send_deadline_us)
        return _Loaded(bucket, name, plan, amazon_rate, shape)

    def _prologue(
        self,
        pair: str,
        plans: list[tuple[str, PlanArgs]],
        redis_now: int,
        *,
        quarantine: bool,
        writes: bool,
    ) -> tuple[list[_Loaded], int, int | None]:
        q_at = self._quarantine(pair, redis_now, enabled=quarantine, writes=writes)
        loaded = [self._load(pair, name, plan) for name, plan in plans]
        now = redis_now
        for item in loaded:
            if item.bucket.last_now is not None and item.bucket.last_now > now:
                now = item.bucket.last_now
        epoch: int | None = None
        for item in loaded:
            tat = item.bucket.tat
            if tat is None:
                if epoch is None:
                    epoch = self._epochs.get(pair)
                    if epoch is None:
                        epoch = now
                        if writes:
                            self._epochs.setdefault(pair, epoch)
                tat = epoch + item.shape.effective_burst * item.shape.interval_us
            if q_at is not None and (item.bucket.applied_q is None or item.bucket.applied_q < q_at):
                tat = max(tat, q_at + item.plan.burst * item.shape.interval_us)
            item.tat = tat
        return loaded, now, q_at

    @staticmethod
    def _tokens_left(item: _Loaded, tat: float, now: int) -> float:
        return item.shape.effective_burst - (max(tat, now) - now) / item.shape.interval_us

    @staticmethod
    def _save(item: _Loaded, tat: float, now: int, q_at: int | None) -> None:
        item.bucket.tat = math.ceil(tat)
        item.bucket.last_now = now
        if q_at is not None:
            item.bucket.applied_q = q_at

    @staticmethod
    def _reservation(main: _Loaded, now: int, args: ReservationArgs) -> tuple[int | None, int]:
        if args.tokens <= 0 or args.window_us <= 0:
            return None, 0
        window = math.floor((now + args.lead_us) / args.window_us)
        used = 0
        if main.bucket.res_window == window:
            used = main.bucket.res_used or 0
        return window, max(0, args.tokens - used)

    # --- operations -----------------------------------------------------------------------------------

    def bucket_names(self) -> list[tuple[str, str]]:
        """(pair, operation) of every bucket that has state, as SCAN would find its key."""
        return sorted(name for name, bucket in self._buckets.items() if bucket.tat is not None)

    def leave(self, pair: str, operation: str, member: str) -> bool:
        return self._waiters.setdefault((pair, operation), _Waiters()).remove(member)

    def peek(
        self,
        pair: str,
        operation: str,
        plan: PlanArgs,
        redis_now: int,
        *,
        quarantine: bool = True,
        reservation: ReservationArgs = NO_RESERVATION,
    ) -> PeekReply:
        [main], now, _ = self._prologue(
            pair, [(operation, plan)], redis_now, quarantine=quarantine, writes=False
        )
        _, outstanding = self._reservation(main, now, reservation)
        waiters = self._waiters.get((pair, operation), _Waiters())
        live = [member for member, expires in waiters.expiry.items() if expires > now]
        lanes: dict[str, int] = {}
        for member in live:
            lane = waiter_lane(member)
            lanes[lane] = lanes.get(lane, 0) + 1
        return PeekReply(
            tokens_left=round(max(0.0, self._tokens_left(main, main.tat, now)), 3),
            rate=round(main.shape.rate, 6),
            effective_burst=main.shape.effective_burst,
            waiters=len(live),
            adopted_rate=float(main.bucket.adopted_rate) if main.bucket.adopted_rate is not None else None,
            now_us=now,
            reserved_outstanding=outstanding,
            waiters_by_lane=tuple(sorted(lanes.items())),
        )

    def throttled(
        self, pair: str, operation: str, plan: PlanArgs, redis_now: int, *, quarantine: bool = True
    ) -> int:
        """Empty the bucket with the full burst; returns the wait (µs) until the next grant."""
        [main], now, q_at = self._prologue(
            pair, [(operation, plan)], redis_now, quarantine=quarantine, writes=True
        )
        interval = main.shape.interval_us
        new_tat = max(main.tat, now + plan.burst * interval)
        self._save(main, new_tat, now, q_at)
        retry = max(0.0, max(new_tat, now) + interval - now - main.shape.effective_burst * interval)
        return math.ceil(retry)

    def adopt(
        self,
        pair: str,
        operation: str,
        plan: PlanArgs,
        redis_now: int,
        observed_text: str,
        *,
        quarantine: bool = True,
    ) -> bool:
        [main], now, q_at = self._prologue(
            pair, [(operation, plan)], redis_now, quarantine=quarantine, writes=True
        )
        observed = float(observed_text)
        if observed <= 0 or observed >= main.amazon_rate:
            return False
        new_interval = MICROS / (observed * plan.time_scale)
        debt = max(main.tat, now) - now
        self._save(main, now + debt * new_interval / main.shape.interval_us, now, q_at)
        main.bucket.adopted_rate = observed_text
        main.bucket.adopted_for = plan.plan_rate_text
        return True

    def acquire(  # noqa: PLR0915 - mirrors the script's acquire, step by step
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
        quarantine: bool = True,
        reservation: ReservationArgs = NO_RESERVATION,
        subs: tuple[tuple[str, PlanArgs], ...] = (),
    ) -> AcquireReply:
        loaded, now, q_at = self._prologue(
            pair, [(operation, plan), *subs], redis_now, quarantine=quarantine, writes=True
        )
        main = loaded[0]
        interval = main.shape.interval_us
        b_eff = main.shape.effective_burst
        window, outstanding = self._reservation(main, now, reservation)

        def reserve_of(static: int, flag: str) -> int:
            if flag == "r" and outstanding > 0:
                return 0
            if flag == "r":
                return usable_reserve(static, b_eff)
            return usable_reserve(max(static, outstanding), b_eff)

        own_flag = waiter_flag(member)
        own_reserve = reserve_of(reserve, own_flag)
        waiters = self._waiters.setdefault((pair, operation), _Waiters())

        def save_all() -> None:
            for item in loaded:
                self._save(item, item.tat, now, q_at)

        for gone in [m for m, expires in waiters.expiry.items() if expires <= now]:
            waiters.remove(gone)

        sub_wait = 0.0
        for item in loaded[1:]:
            excess = (
                max(item.tat, now)
                - now
                + item.shape.interval_us
                - item.shape.effective_burst * item.shape.interval_us
                - item.shape.effective_burst
            )
            sub_wait = max(sub_wait, excess)
        if sub_wait > 0:
            existing = waiters.scores.get(member)
            waiters.remove(member)
            save_all()
            left = math.floor(max(0.0, self._tokens_left(main, main.tat, now)))
            score = existing if existing is not None else previous_score if previous_score is not None else 0
            return AcquireReply(False, math.ceil(sub_wait), left, score, now, 0)

        if member not in waiters.scores and previous_score is not None and enqueue:
            waiters.scores[member] = previous_score
        queue = waiters.ordered()
        ahead = queue[: queue.index(member)] if member in waiters.scores else queue

        debt = max(main.tat, now) - now

        def fits(after_debt: float, lane_reserve: int) -> bool:
            # Stored tats are rounded up to whole µs: allow that drift over a full bucket (b_eff µs).
            return after_debt + interval <= (b_eff - lane_reserve) * interval + b_eff

        served_before = 0
        after_ahead = debt
        for other in ahead:
            other_reserve = reserve_of(waiter_reserve(other), waiter_flag(other))
            if other_reserve <= own_reserve:
                served_before += 1
                if fits(after_ahead, other_reserve):
                    after_ahead += interval

        if fits(after_ahead, own_reserve):
            new_tat = max(main.tat, now) + interval
            self._save(main, new_tat, now, q_at)
            for item in loaded[1:]:
                self._save(item, max(item.tat, now) + item.shape.interval_us, now, q_at)
            if own_flag == "r" and outstanding > 0:
                main.bucket.res_window = window
                main.bucket.res_used = reservation.tokens - outstanding + 1
            waiters.remove(member)
            left = math.floor(max(0.0, self._tokens_left(main, math.ceil(new_tat), now)))
            return AcquireReply(True, 0, left, 0, now, 0)

        retry = debt + (served_before + 1) * interval - (b_eff - own_reserve) * interval
        if retry <= 0:
            retry = min(interval, _REPOLL_CAP_US)
        retry_us = math.ceil(retry)

        save_all()
        score = 0
        if enqueue:
            score = waiters.scores.setdefault(member, now)
            waiters.expiry[member] = now + retry_us + grace_us
        left = math.floor(max(0.0, self._tokens_left(main, main.tat, now)))
        return AcquireReply(False, retry_us, left, score, now, served_before)
