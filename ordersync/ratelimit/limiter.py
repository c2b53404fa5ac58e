"""The distributed rate limiter every Amazon call passes through.

Each decision is one atomic Lua script in Redis (``gcra.lua``), clocked by Redis ``TIME``, so any number of
workers on any number of hosts share one token bucket per (seller, application, operation) and never send a
request Amazon would throttle. Workers only ever use *durations* from Redis (how long to wait), so their
own clocks do not matter.

Waiting: a request that cannot be granted joins a per-bucket queue and sleeps (``asyncio.sleep``, never in
Redis, never polling in a loop) for the time the script says its turn will come. The script serves waiters
first come, first served across processes; lanes with a reserve (``packing``) are held back so that lanes
without one (``inventory``) always find their tokens.

Failure: when Redis cannot be reached nothing is granted (:class:`~ordersync.errors.QuotaUnavailable`);
the next call works again once Redis is back, and a Redis that lost its state starts every bucket empty.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import random
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any, Protocol, cast, runtime_checkable

import redis.asyncio
import redis.exceptions
from prometheus_client import Counter, Gauge, Histogram
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from ordersync.channels import Channel
from ordersync.errors import ConfigurationError, QuotaTimeout, QuotaUnavailable
from ordersync.ratelimit import metrics
from ordersync.ratelimit.gcra import (
    MICROS,
    NO_RESERVATION,
    AcquireReply,
    GcraStore,
    PeekReply,
    PlanArgs,
    ReservationArgs,
    bucket_shape,
    waiter_member,
)
from ordersync.ratelimit.plans import PlanBook
from ordersync.redis_client import make_redis
from ordersync.settings import DEFAULT_PREFIX, Settings

log = logging.getLogger(__name__)

#: How many tokens each lane must leave in the bucket (beyond any reservation, below). Shipments
#: (``packing``) come first: they may take the last token. ``inventory`` beyond its reserved share leaves
#: one for them. The inventory run's guaranteed share is a :class:`Reservation`, not a static reserve, so
#: that it returns to the pool once used and never accumulates. Order acknowledgements
#: (``acknowledgement``) leave four: they wait behind both, and take a token only when the bucket has slack
#: (``bench/writeback.py``: with two, a busy hour's shipments waited longer).
DEFAULT_LANE_RESERVES: Mapping[str, int] = {"default": 0, "packing": 0, "inventory": 1, "acknowledgement": 4}


@dataclass(frozen=True)
class Reservation:
    """``tokens`` of ``operation``'s bucket reserved for ``lane`` in every window of ``interval_s``.

    Windows start ``lead_s`` before each multiple of ``interval_s`` on Redis's clock (so the tokens have
    built up by the hour when an hourly run starts at HH:00). Until the lane has taken its ``tokens`` in
    the current window, every other lane must leave that many in the bucket, and the lane itself takes them
    with no reserve, so it is never starved by a backlog of the others. Reserved tokens are never debited
    in advance: unused, they stay in the pool, and the long-run rate of the other lanes is unchanged; the
    next window starts a fresh reservation (unused ones do not add up).
    """

    operation: str
    lane: str
    tokens: int = 1
    interval_s: float = 3600.0
    lead_s: float = 600.0

    def __post_init__(self) -> None:
        if self.tokens < 0 or self.interval_s <= 0 or not 0 <= self.lead_s < self.interval_s:
            raise ConfigurationError(
                f"rate limiter: invalid reservation {self}: tokens >= 0, interval > 0, 0 <= lead < interval"
            )


#: The feed-type sub-limits the limiter knows by default: ``createFeed`` of a ``JSON_LISTINGS_FEED`` is
#: also limited to 5 per 5 minutes (Amazon's feed-type limit), checked atomically with ``createFeed``.
DEFAULT_SUB_LIMITS: Mapping[str, Mapping[str, tuple[float, int]]] = {
    "createFeed": {"JSON_LISTINGS_FEED": (5 / 300, 5)},
}

#: Redis errors that mean "cannot decide now", beyond connection errors: the server is loading, a replica,
#: short of replicas (min-replicas-to-write) or a cluster that is down. All fail closed.
_UNAVAILABLE_REPLIES = (
    "LOADING",
    "READONLY",
    "NOREPLICAS",
    "MASTERDOWN",
    "MISCONF",
    "CLUSTERDOWN",
    "TRYAGAIN",
)


@dataclass(frozen=True)
class Grant:
    """Permission to send one request now.

    ``deadline`` is on the limiter's monotonic clock (``time.monotonic`` for Redis; ``clock`` reads it):
    a request not sent by then must be dropped, because the headroom that keeps it within Amazon's
    bucket assumes it is sent within ``send_deadline_s`` of the decision. The token stays spent either
    way.
    """

    operation: str
    seller_id: str
    lane: str
    deadline: float
    tokens_left: int = 0
    #: Seconds the request was held back for its quota; 0 when the first ask was granted.
    waited_s: float = 0.0
    decided_at_us: int = 0
    """Redis ``TIME`` (µs) of the decision, for diagnostics and tests; never compare it with local time."""

    clock: Callable[[], float] = field(default=time.monotonic, compare=False, repr=False)

    def expired(self, now: float | None = None) -> bool:
        return (self.clock() if now is None else now) > self.deadline


@dataclass(frozen=True)
class BucketStatus:
    """One bucket as ``ordersync quota status`` shows it."""

    seller_id: str
    application_id: str
    operation: str
    rate: float
    """Enforced requests per second (after any adopted lower rate and the time scale)."""
    burst: int
    """The configured burst."""
    effective_burst: int
    """The burst the limiter grants up to: ``burst`` minus the send-deadline headroom."""
    tokens_left: float
    waiters: int
    adopted_rate: float | None
    """A lower rate Amazon reported (Amazon's units), in force while the configured plan is unchanged."""
    reserved_outstanding: int = 0
    """Tokens still reserved for a lane in the current reservation window (see :class:`Reservation`)."""
    waiters_by_lane: tuple[tuple[str, int], ...] = ()
    """Live waiters of every process, per lane."""


@runtime_checkable
class RateLimiter(Protocol):
    """What a stage needs from the limiter."""

    #: The usage plans it enforces.
    plans: PlanBook

    async def acquire(
        self,
        operation: str,
        seller_id: str,
        *,
        lane: str = "default",
        # The timeout is part of the decision (an exact wait beyond it fails at once), so it is a parameter.
        timeout: float | None = None,  # noqa: ASYNC109
        feed_type: str | None = None,
    ) -> Grant:
        """Wait for a token; :class:`QuotaTimeout` if none within ``timeout`` (None: the default).

        ``feed_type`` (createFeed): also take a token of that feed type's own bucket, atomically, where a
        sub-limit is configured for it."""
        ...

    async def observe_rate_limit(self, operation: str, seller_id: str, rate_per_s: float) -> None:
        """Amazon's ``x-amzn-RateLimit-Limit`` (its units): adopted only if lower than the plan."""
        ...

    async def on_throttled(self, operation: str, seller_id: str, *, feed_type: str | None = None) -> None:
        """Amazon answered 429: its bucket is empty, so empty ours (and the feed type's, if any)."""
        ...

    async def status(self, seller_id: str | None = None) -> list[BucketStatus]:
        """Tokens left per (seller, operation) bucket in use."""
        ...


@dataclass(frozen=True, slots=True)
class _MetricChildren:
    tokens_left: Gauge
    grants: Counter
    wait_seconds: Histogram


def _jitter(retry_s: float) -> float:
    # Spreads waiters that were told the same instant, without giving away much of the rate.
    return random.uniform(0.0, min(0.02 * retry_s, 0.05)) + random.uniform(0.0, 0.001)


class _GcraLimiter(ABC):
    """The waiting, timeout, lane and metrics logic shared by the Redis and in-memory limiters; each
    subclass provides the script's operations."""

    def __init__(
        self,
        *,
        plans: PlanBook,
        application_id: str,
        send_deadline_s: float,
        default_timeout_s: float,
        lane_reserves: Mapping[str, int] | None,
        waiter_grace_s: float,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[Any]],
        reservations: Iterable[Reservation] = (),
        sub_limits: Mapping[str, Mapping[str, tuple[float, int]]] | None = None,
        quarantine_on_failover: bool = True,
    ) -> None:
        if send_deadline_s <= 0:
            raise ConfigurationError(f"rate limiter: send_deadline_s must be positive, not {send_deadline_s}")
        if default_timeout_s < 0:
            raise ConfigurationError(
                f"rate limiter: default_timeout_s must not be negative: {default_timeout_s}"
            )
        reserves = dict(DEFAULT_LANE_RESERVES if lane_reserves is None else lane_reserves)
        if any(reserve < 0 for reserve in reserves.values()):
            raise ConfigurationError(f"rate limiter: lane reserves must not be negative: {reserves}")
        reserves.setdefault("default", 0)
        for lane in reserves:
            _check_lane(lane)
        _check_key_part(application_id, "application id")
        self.reservations: dict[str, Reservation] = {}
        for reservation in reservations:
            _check_lane(reservation.lane)
            reserves.setdefault(reservation.lane, 0)
            if reservation.operation in self.reservations:
                raise ConfigurationError(f"rate limiter: two reservations for {reservation.operation}")
            if reservation.tokens > 0:
                self.reservations[reservation.operation] = reservation
        self.sub_limits: dict[str, tuple[float, int]] = {}
        for operation, subs in (DEFAULT_SUB_LIMITS if sub_limits is None else sub_limits).items():
            for sub, (rate, burst) in subs.items():
                _check_key_part(sub, "feed type")
                if ":" in sub or rate <= 0 or burst < 1:
                    raise ConfigurationError(
                        f"rate limiter: invalid limit {sub} of {operation}: {rate}, {burst}"
                    )
                self.sub_limits[f"{operation}:{sub}"] = (float(rate), int(burst))
        self.quarantine_on_failover = quarantine_on_failover
        self._grace_us = math.ceil(waiter_grace_s * MICROS)
        self._plan_cache: dict[tuple[str, str], PlanArgs] = {}
        self._plan_cache_of: PlanBook | None = None
        self._reservation_cache: dict[str, ReservationArgs] = {}
        self._metric_children: dict[tuple[str, str, str], _MetricChildren] = {}
        # Waiter ids: a random prefix per limiter and a counter (unique across processes, cheaper than uuid4).
        self._waiter_ids = itertools.count()
        self._waiter_prefix = uuid.uuid4().hex[:12]
        self.healthy = True
        """False while Redis cannot be reached (nothing is granted); True again once it answers."""
        self.plans = plans
        self.application_id = application_id
        self.send_deadline_s = send_deadline_s
        self.default_timeout_s = default_timeout_s
        self.lane_reserves: Mapping[str, int] = reserves
        self.waiter_grace_s = waiter_grace_s
        self._clock = clock
        self._sleep = sleep

    # --- what a backend provides -------------------------------------------------------------------

    @abstractmethod
    async def _acquire_once(
        self,
        operation: str,
        seller_id: str,
        plan: PlanArgs,
        *,
        reserve: int,
        member: str,
        previous_score: int | None,
        enqueue: bool,
        reservation: ReservationArgs,
        subs: tuple[tuple[str, PlanArgs], ...],
    ) -> AcquireReply: ...

    @abstractmethod
    async def _leave(self, operation: str, seller_id: str, plan: PlanArgs, member: str) -> None: ...

    @abstractmethod
    async def _throttled(self, operation: str, seller_id: str, plan: PlanArgs) -> int: ...

    @abstractmethod
    async def _adopt(self, operation: str, seller_id: str, plan: PlanArgs, observed_text: str) -> bool: ...

    @abstractmethod
    async def status(self, seller_id: str | None = None) -> list[BucketStatus]: ...

    # --- shared logic ------------------------------------------------------------------------------

    def _plan_args(self, operation: str, seller_id: str) -> PlanArgs:
        if self._plan_cache_of is not self.plans:  # a new plan book (configuration) empties the caches
            self._plan_cache = {}
            self._reservation_cache = {}
            self._plan_cache_of = self.plans
        cached = self._plan_cache.get((operation, seller_id))
        if cached is None:
            cached = self._plan_cache[operation, seller_id] = self._make_plan_args(operation, seller_id)
        return cached

    def _make_plan_args(self, operation: str, seller_id: str) -> PlanArgs:
        _check_key_part(seller_id, "seller id")
        _check_key_part(operation, "operation")
        sub = self.sub_limits.get(operation)
        rate, burst = sub if sub is not None else self.plans.enforced_plan(operation, seller_id)
        return PlanArgs(
            # repr() round-trips a float exactly, so every worker writes and compares the same text.
            plan_rate_text=repr(float(rate)),
            time_scale=self.plans.time_scale,
            burst=burst,
            send_deadline_us=math.ceil(self.send_deadline_s * MICROS),
        )

    def bucket_names(self) -> list[str]:
        """Every bucket name this limiter knows: the operations and the ``<operation>:<feed type>``s."""
        return sorted({*self.plans.operations(), *self.sub_limits})

    def _reservation_args(self, operation: str) -> ReservationArgs:
        cached = self._reservation_cache.get(operation)
        if cached is not None and self._plan_cache_of is self.plans:
            return cached
        reservation = self.reservations.get(operation)
        if reservation is None:
            args = NO_RESERVATION
        else:
            scale = self.plans.time_scale
            args = ReservationArgs(
                tokens=reservation.tokens,
                window_us=max(1, math.ceil(reservation.interval_s / scale * MICROS)),
                lead_us=math.floor(reservation.lead_s / scale * MICROS),
            )
        self._reservation_cache[operation] = args
        return args

    def _metrics_of(self, operation: str, seller_id: str, lane: str) -> _MetricChildren:
        # prometheus_client's labels() costs more than a dictionary lookup: keep the children.
        key = (operation, seller_id, lane)
        children = self._metric_children.get(key)
        if children is None:
            children = self._metric_children[key] = _MetricChildren(
                tokens_left=metrics.TOKENS_LEFT.labels(operation, seller_id),
                grants=metrics.GRANTS.labels(operation, lane),
                wait_seconds=metrics.WAIT_SECONDS.labels(operation),
            )
        return children

    def _subs(
        self, operation: str, seller_id: str, feed_type: str | None
    ) -> tuple[tuple[str, PlanArgs], ...]:
        if feed_type is None:
            return ()
        name = f"{operation}:{feed_type}"
        if name not in self.sub_limits:
            return ()
        return ((name, self._plan_args(name, seller_id)),)

    def _set_healthy(self, healthy: bool) -> None:
        if healthy == self.healthy:
            return
        if healthy:
            log.info("rate limiter: Redis answers again; granting resumes")
        else:
            log.error("rate limiter: Redis cannot be reached; failing closed (nothing is granted)")
        self.healthy = healthy
        metrics.REDIS_UP.set(1 if healthy else 0)

    def reserve_of(self, lane: str) -> int:
        try:
            return self.lane_reserves[lane]
        except KeyError:
            known = ", ".join(sorted(self.lane_reserves))
            raise ConfigurationError(f"rate limiter: unknown lane {lane!r} (known: {known})") from None

    async def acquire(  # noqa: PLR0915 - one loop, read top to bottom
        self,
        operation: str,
        seller_id: str,
        *,
        lane: str = "default",
        # The timeout is part of the decision (an exact wait beyond it fails at once), so it is a parameter.
        timeout: float | None = None,  # noqa: ASYNC109
        feed_type: str | None = None,
    ) -> Grant:
        """Wait for a token of ``operation``'s bucket for ``seller_id``.

        ``timeout`` None uses ``default_timeout_s``; 0 makes a single attempt. Raises
        :class:`QuotaTimeout` when no token comes in time (at once when the wait is already known to be
        longer), :class:`QuotaUnavailable` when Redis cannot be reached. ``feed_type``: a createFeed of
        that type also needs a token of the type's own bucket where one is configured (e.g.
        ``JSON_LISTINGS_FEED``, 5 per 5 minutes); both are taken in one atomic decision, or neither.
        """
        plan = self._plan_args(operation, seller_id)
        reserve = self.reserve_of(lane)
        reservation = self._reservation_args(operation)
        reserved_lane = operation in self.reservations and self.reservations[operation].lane == lane
        subs = self._subs(operation, seller_id, feed_type)
        budget = self.default_timeout_s if timeout is None else max(0.0, timeout)
        started = self._clock()
        give_up_at = started + budget
        token = f"{self._waiter_prefix}{next(self._waiter_ids):x}"
        member = waiter_member(reserve, reserved=reserved_lane, lane=lane, token=token)
        score: int | None = None
        queued = False
        counted_wait = False
        children = self._metrics_of(operation, seller_id, lane)
        try:
            while True:
                asked_at = self._clock()
                enqueue = give_up_at > asked_at
                reply = await self._acquire_once(
                    operation,
                    seller_id,
                    plan,
                    reserve=reserve,
                    member=member,
                    previous_score=score,
                    enqueue=enqueue,
                    reservation=reservation,
                    subs=subs,
                )
                children.tokens_left.set(reply.tokens_left)
                if reply.granted:
                    queued = False
                    waited = self._clock() - started
                    children.grants.inc()
                    children.wait_seconds.observe(waited)
                    return Grant(
                        operation=operation,
                        seller_id=seller_id,
                        lane=lane,
                        deadline=asked_at + self.send_deadline_s,
                        tokens_left=reply.tokens_left,
                        # Held back for quota, or granted at the first ask (its round trip is no wait).
                        waited_s=waited if counted_wait else 0.0,
                        decided_at_us=reply.now_us,
                        clock=self._clock,
                    )
                if not counted_wait:
                    counted_wait = True
                    metrics.WAITS.labels(operation).inc()
                    metrics.WAITERS.labels(operation, lane).inc()
                if enqueue:
                    queued = True
                    score = reply.waiter_score or score
                retry_s = reply.retry_after_us / MICROS
                remaining = give_up_at - self._clock()
                # First in line, the wait is exact: no point sleeping through a timeout known to come.
                if remaining <= 0 or (reply.queued_before == 0 and retry_s > remaining):
                    metrics.TIMEOUTS.labels(operation).inc()
                    raise QuotaTimeout(
                        f"no {operation} token for seller {seller_id} within {budget:g} s "
                        f"(next in about {retry_s:.3f} s)",
                        retry_after_s=retry_s,
                    )
                # First in line the wait is exact; jitter only spreads those told about the same instant.
                jitter = _jitter(retry_s) if reply.queued_before else 0.0
                await self._sleep(min(retry_s + jitter, remaining))
        except QuotaUnavailable:
            metrics.UNAVAILABLE.labels(operation).inc()
            raise
        except BaseException:
            if queued:
                await self._leave_quietly(operation, seller_id, plan, member)
            raise
        finally:
            if counted_wait:
                metrics.WAITERS.labels(operation, lane).dec()

    async def _leave_quietly(self, operation: str, seller_id: str, plan: PlanArgs, member: str) -> None:
        # Best effort: a waiter left behind is dropped as stale once its promised wake-up plus grace passes.
        try:
            await self._leave(operation, seller_id, plan, member)
        except Exception:  # the caller's own error matters more than this cleanup
            log.debug("rate limiter: could not leave the %s queue of %s", operation, seller_id, exc_info=True)

    async def observe_rate_limit(self, operation: str, seller_id: str, rate_per_s: float) -> None:
        """Adopt Amazon's reported rate (its units, before time scaling) if it is below the plan.

        Only ever lowers: a higher figure is ignored, and raising a rate is done by configuration (a changed
        plan discards the adopted rate).
        """
        if not math.isfinite(rate_per_s) or rate_per_s <= 0:
            log.warning("rate limiter: ignoring rate %r reported for %s", rate_per_s, operation)
            return
        plan = self._plan_args(operation, seller_id)
        # The margin applies to what Amazon reports as to what its documentation says.
        rate_per_s *= 1 - self.plans.margin_of(operation)
        if rate_per_s >= plan.plan_rate:
            return  # the common case: Amazon confirms the plan; no Redis round trip
        if await self._adopt(operation, seller_id, plan, repr(float(rate_per_s))):
            metrics.RATE_ADOPTIONS.labels(operation).inc()
            log.info(
                "rate limiter: %s for seller %s lowered to %g/s as Amazon reports (plan %g/s)",
                operation,
                seller_id,
                rate_per_s,
                plan.plan_rate,
            )

    async def on_throttled(self, operation: str, seller_id: str, *, feed_type: str | None = None) -> None:
        """Record a 429: empty the bucket (``tat = max(tat, now + burst * T)``), and the feed type's own
        bucket too when ``feed_type`` has one (which of the two Amazon enforced is not said)."""
        plan = self._plan_args(operation, seller_id)
        metrics.THROTTLED.labels(operation).inc()
        for name, sub_plan in self._subs(operation, seller_id, feed_type):
            await self._throttled(name, seller_id, sub_plan)
        retry_us = await self._throttled(operation, seller_id, plan)
        log.warning(
            "rate limiter: Amazon throttled %s for seller %s; bucket emptied, next token in %.3f s",
            operation,
            seller_id,
            retry_us / MICROS,
        )

    def _status_of(self, seller_id: str, operation: str, peek: PeekReply) -> BucketStatus:
        burst = self._plan_args(operation, seller_id).burst
        metrics.TOKENS_LEFT.labels(operation, seller_id).set(peek.tokens_left)
        return BucketStatus(
            seller_id=seller_id,
            application_id=self.application_id,
            operation=operation,
            rate=peek.rate,
            burst=burst,
            effective_burst=peek.effective_burst,
            tokens_left=peek.tokens_left,
            waiters=peek.waiters,
            adopted_rate=peek.adopted_rate,
            reserved_outstanding=peek.reserved_outstanding,
            waiters_by_lane=peek.waiters_by_lane,
        )


def _check_lane(lane: str) -> None:
    if not lane or any(char in lane for char in "|{}") or any(char.isspace() for char in lane):
        raise ConfigurationError(f"rate limiter: invalid lane name {lane!r}")


def _check_key_part(value: str, what: str) -> None:
    # Braces would break the Redis Cluster hash tag; an empty part would merge unrelated buckets.
    if not value or any(char in value for char in "{}") or any(char.isspace() for char in value):
        raise ConfigurationError(f"rate limiter: invalid {what} {value!r}")


# --- Redis -------------------------------------------------------------------------------------------


@cache
def gcra_script_text() -> str:
    """The Lua script shipped as package data."""
    return resources.files("ordersync.ratelimit").joinpath("gcra.lua").read_text(encoding="utf-8")


@dataclass(frozen=True)
class BucketKeys:
    """The Redis keys of one bucket, in the script's KEYS order; one hash tag, so one cluster slot."""

    bucket: str
    epoch: str
    waiters: str
    waiter_expiry: str
    server: str
    server_mark: str

    @classmethod
    def of(cls, prefix: str, seller_id: str, application_id: str, operation: str) -> BucketKeys:
        tag = "{" + f"{seller_id}:{application_id}" + "}"
        return cls(
            bucket=f"{prefix}:rl:{tag}:{operation}",
            epoch=f"{prefix}:rl-epoch:{tag}",
            waiters=f"{prefix}:rlq:{tag}:{operation}",
            waiter_expiry=f"{prefix}:rlqx:{tag}:{operation}",
            server=f"{prefix}:rl-srv:{tag}",
            server_mark=f"{prefix}:rl-mark:{tag}",
        )

    def as_list(self) -> list[str]:
        return [self.bucket, self.epoch, self.waiters, self.waiter_expiry, self.server, self.server_mark]


class _DirectConnections:
    """Connections made exactly as the client's pool makes them (address, credentials, TLS), used
    without the pool: one per concurrent acquire, kept for the next. Their socket timeout applies to a
    whole exchange through one ``asyncio.timeout`` instead of a task per read and per write."""

    #: Idle connections kept; more concurrent acquires open more, closed when they come back.
    MAX_IDLE = 8

    def __init__(self, client: redis.asyncio.Redis) -> None:
        pool: Any = client.connection_pool  # (redis-py leaves connection_class untyped)
        kwargs = dict(pool.connection_kwargs)
        self._timeout_s: float | None = kwargs.get("socket_timeout")
        kwargs["socket_timeout"] = None
        self._make: Callable[[], Any] = lambda: pool.connection_class(**kwargs)
        self._idle: list[Any] = []

    async def call(self, packed: bytes) -> Any:
        connection = self._idle.pop() if self._idle else self._make()
        try:
            async with asyncio.timeout(self._timeout_s):
                await connection.send_packed_command(packed, check_health=False)
                reply = await connection.read_response(timeout=math.inf)
        except TimeoutError:
            await connection.disconnect(nowait=True)
            raise redis.exceptions.TimeoutError(f"no answer from Redis within {self._timeout_s} s") from None
        except redis.exceptions.ResponseError:
            self._idle.append(connection)  # (an error reply leaves the connection in order)
            raise
        except BaseException:
            # A reply may still be on its way (cancelled mid-read): the connection cannot be reused.
            await connection.disconnect(nowait=True)
            raise
        if len(self._idle) < self.MAX_IDLE:
            self._idle.append(connection)
        else:
            await connection.disconnect()
        return reply

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            await connection.disconnect()


@dataclass(frozen=True, slots=True)
class _PreparedAcquire:
    """An acquire command in Redis's protocol with its fixed parts encoded once: ``head`` (EVALSHA, sha,
    key count, keys, ARGV 1-7) and ``tail`` (ARGV 11 on); ARGV 8-10 (member, previous score, enqueue)
    change with every call."""

    plan: PlanArgs
    reservation: ReservationArgs
    subs: tuple[tuple[str, PlanArgs], ...]
    array_header: bytes
    head: bytes
    tail: bytes

    def pack(self, member: str, previous_score: int | None, *, enqueue: bool) -> bytes:
        return b"".join(
            (
                self.array_header,
                self.head,
                _bulk(member),
                _bulk("" if previous_score is None else previous_score),
                _ENQUEUE if enqueue else _DO_NOT_ENQUEUE,
                self.tail,
            )
        )


def _bulk(value: str | int) -> bytes:
    """One argument in Redis's protocol (a bulk string)."""
    data = (value if isinstance(value, str) else str(value)).encode()
    return b"$%d\r\n%b\r\n" % (len(data), data)


_ENQUEUE = _bulk(1)
_DO_NOT_ENQUEUE = _bulk(0)


def _unpack(packed: bytes) -> list[bytes]:
    """The arguments of a command in Redis's protocol."""
    _, _, rest = packed.partition(b"\r\n")
    arguments: list[bytes] = []
    while rest:
        length_text, _, rest = rest.partition(b"\r\n")
        length = int(length_text[1:])
        arguments.append(rest[:length])
        rest = rest[length + 2 :]
    return arguments


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _glob_escape(value: str) -> str:
    return "".join("\\" + char if char in "*?[]\\" else char for char in value)


def _is_unavailable(exc: redis.exceptions.RedisError) -> bool:
    if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        return True
    if isinstance(exc, redis.exceptions.ReadOnlyError):
        return True
    if isinstance(exc, redis.exceptions.ResponseError):
        first_word = str(exc).split(" ", 1)[0].upper()
        return first_word in _UNAVAILABLE_REPLIES
    return False


class RedisRateLimiter(_GcraLimiter):
    """The limiter, shared through Redis by every worker of every host.

    Keys (``{prefix}`` is ``key_prefix``; the hash tag keeps a seller-application pair in one slot):

    - ``{prefix}:rl:{<seller>:<app>}:<operation>``: the bucket (hash: tat, last_now, adopted_rate,
      adopted_for), kept without expiry, as losing it could only make the bucket start empty.
    - ``{prefix}:rl-epoch:{<seller>:<app>}``: when the pair's state began; a missing bucket is empty then.
    - ``{prefix}:rlq:{<seller>:<app>}:<operation>`` / ``rlqx``: the waiter queue and each waiter's expiry.
    - ``{prefix}:rl-srv:{<seller>:<app>}``: the run_id of the server that wrote the pair's state; another
      one (a promoted replica, a restart that reloaded old data) quarantines the pair: its buckets are
      treated as empty from then on.
    - ``{prefix}:rl-mark:{<seller>:<app>}``: the serving server's run_id, cached for 100 ms so that most
      decisions skip ``INFO``; written with replication off, so only the server that wrote it has it.
    - ``{prefix}:rl:{<seller>:<app>}:createFeed:JSON_LISTINGS_FEED``: a feed type's own bucket.

    ``wait_replicas`` > 0 sends ``WAIT`` after every decision on the same connection; a grant that fewer
    replicas acknowledged within ``wait_timeout_ms`` is not used (the token is burned, which is safe) and
    :class:`QuotaUnavailable` is raised.
    """

    def __init__(
        self,
        redis: redis.asyncio.Redis,
        *,
        plans: PlanBook,
        application_id: str,
        key_prefix: str = DEFAULT_PREFIX,
        send_deadline_s: float = 2.0,
        default_timeout_s: float = 600.0,
        lane_reserves: Mapping[str, int] | None = None,
        waiter_grace_s: float = 5.0,
        reservations: Iterable[Reservation] = (),
        sub_limits: Mapping[str, Mapping[str, tuple[float, int]]] | None = None,
        quarantine_on_failover: bool = True,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 50,
    ) -> None:
        super().__init__(
            plans=plans,
            application_id=application_id,
            send_deadline_s=send_deadline_s,
            default_timeout_s=default_timeout_s,
            lane_reserves=lane_reserves,
            waiter_grace_s=waiter_grace_s,
            clock=time.monotonic,
            sleep=asyncio.sleep,
            reservations=reservations,
            sub_limits=sub_limits,
            quarantine_on_failover=quarantine_on_failover,
        )
        if wait_replicas < 0 or wait_timeout_ms < 0:
            raise ConfigurationError("rate limiter: wait_replicas and wait_timeout_ms must not be negative")
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        _check_key_part(key_prefix, "key prefix")
        self.redis = redis
        self.key_prefix = key_prefix
        # register_script runs EVALSHA and loads the script on NOSCRIPT (a restarted or new Redis).
        self._script = redis.register_script(gcra_script_text())
        self._prepared: dict[tuple[str, str, int, int], _PreparedAcquire] = {}
        self._connections = _DirectConnections(redis)

    def keys(self, operation: str, seller_id: str) -> BucketKeys:
        return BucketKeys.of(self.key_prefix, seller_id, self.application_id, operation)

    async def _run(
        self,
        op: str,
        operation: str,
        seller_id: str,
        plan: PlanArgs,
        *rest: str | int,
        subs: Sequence[str] = (),
    ) -> list[Any]:
        keys = self.keys(operation, seller_id).as_list() + [self.keys(sub, seller_id).bucket for sub in subs]
        arguments = (len(keys), *keys, op, *self._plan_arguments(plan), *rest)
        return list(await self._evalsha(operation, arguments))

    def _plan_arguments(self, plan: PlanArgs) -> tuple[str | int, ...]:
        """ARGV 2-6 of every call."""
        quarantine = 1 if self.quarantine_on_failover else 0
        return (plan.plan_rate_text, repr(plan.time_scale), plan.burst, plan.send_deadline_us, quarantine)

    async def _evalsha(self, operation: str, arguments: Sequence[Any], *, grants: bool = False) -> Any:
        """EVALSHA of the script with ``arguments`` (key count, keys, ARGV); loads the script on NOSCRIPT
        (a new or restarted Redis). A decision that ``grants`` waits for ``wait_replicas`` when set."""
        try:
            if grants and self.wait_replicas > 0:
                return await self._evalsha_and_wait(operation, arguments)
            client: Any = self.redis  # (redis-py leaves execute_command untyped)
            try:
                reply = await client.execute_command("EVALSHA", self._script.sha, *arguments)
            except redis.exceptions.NoScriptError:
                await self.redis.script_load(self._script.script)
                reply = await client.execute_command("EVALSHA", self._script.sha, *arguments)
        except redis.exceptions.RedisError as exc:
            raise self._unavailable(exc) from exc
        self._set_healthy(True)
        return reply

    async def _evalsha_and_wait(self, operation: str, arguments: Sequence[Any]) -> Any:
        # WAIT covers the writes of its own connection, so it goes down the same one, in a pipeline
        # (which loads the script first where it is missing).
        pipe = self.redis.pipeline(transaction=False)
        cast(Any, pipe.scripts).add(self._script)  # (typed for the synchronous Script only)
        pipe.execute_command("EVALSHA", self._script.sha, *arguments)
        pipe.execute_command("WAIT", self.wait_replicas, self.wait_timeout_ms)
        reply, acknowledged = await pipe.execute()
        self._set_healthy(True)
        if int(reply.split()[0]) == 1 and int(acknowledged) < self.wait_replicas:  # (an acquire's reply)
            metrics.UNREPLICATED.labels(operation).inc()
            raise QuotaUnavailable(
                f"rate limiter: {acknowledged} of {self.wait_replicas} replicas acknowledged a "
                f"{operation} grant within {self.wait_timeout_ms} ms; not used (the token is burned)"
            )
        return reply

    def _unavailable(self, exc: redis.exceptions.RedisError) -> Exception:
        """What a failed decision raises: QuotaUnavailable (fail closed) when Redis cannot decide now, else
        the error itself (a bug)."""
        if not _is_unavailable(exc):
            return exc
        self._set_healthy(False)
        return QuotaUnavailable(
            f"rate limiter: Redis cannot decide ({type(exc).__name__}: {exc}); nothing is granted"
        )

    async def probe(self) -> bool:
        """Ping Redis and update :attr:`healthy` (and the ``ordersync_quota_redis_up`` gauge)."""
        try:
            await self.redis.ping()
        except redis.exceptions.RedisError as exc:
            if not _is_unavailable(exc):
                raise
            self._set_healthy(False)
            return False
        self._set_healthy(True)
        return True

    def _prepare_acquire(
        self,
        operation: str,
        seller_id: str,
        plan: PlanArgs,
        *,
        reserve: int,
        reservation: ReservationArgs,
        subs: tuple[tuple[str, PlanArgs], ...],
    ) -> _PreparedAcquire:
        """The acquire call's keys and fixed arguments, encoded once: encoding them on every decision cost
        more than the script itself."""
        # The script reads missing trailing arguments as "no reservation" and "no sub-buckets": fewer
        # arguments to send and convert on the common path.
        extra: list[str | int] = []
        if reservation.tokens or subs:
            extra = [reservation.tokens, reservation.window_us, reservation.lead_us]
        if subs:
            extra.append(len(subs))
            for _, sub_plan in subs:
                extra += [sub_plan.plan_rate_text, sub_plan.burst]
        keys = self.keys(operation, seller_id).as_list()
        keys += [self.keys(sub, seller_id).bucket for sub, _ in subs]
        head = (
            "EVALSHA",
            self._script.sha,
            len(keys),
            *keys,
            "acquire",
            *self._plan_arguments(plan),
            reserve,
        )
        tail = (self._grace_us, *extra)
        return _PreparedAcquire(
            plan=plan,
            reservation=reservation,
            subs=subs,
            array_header=f"*{len(head) + 3 + len(tail)}\r\n".encode(),
            head=b"".join(_bulk(arg) for arg in head),
            tail=b"".join(_bulk(arg) for arg in tail),
        )

    async def _acquire_once(
        self,
        operation: str,
        seller_id: str,
        plan: PlanArgs,
        *,
        reserve: int,
        member: str,
        previous_score: int | None,
        enqueue: bool,
        reservation: ReservationArgs = NO_RESERVATION,
        subs: tuple[tuple[str, PlanArgs], ...] = (),
    ) -> AcquireReply:
        cache_key = (operation, seller_id, reserve, len(subs))
        prepared = self._prepared.get(cache_key)
        if (
            prepared is None
            or prepared.plan is not plan
            or prepared.reservation is not reservation
            or prepared.subs != subs
        ):
            prepared = self._prepared[cache_key] = self._prepare_acquire(
                operation, seller_id, plan, reserve=reserve, reservation=reservation, subs=subs
            )
        packed = prepared.pack(member, previous_score, enqueue=enqueue)
        if self.wait_replicas > 0 or self.redis.single_connection_client:
            # The rare configurations take redis-py's ordinary path (a pipeline with WAIT; a client whose
            # one connection redis-py guards with its lock).
            reply = await self._evalsha(operation, _unpack(packed)[2:], grants=True)
        else:
            reply = await self._send_packed(packed)
        granted, retry_us, tokens, score, now_us, before = map(int, reply.split())
        return AcquireReply(granted == 1, retry_us, tokens, score, now_us, before)

    async def _send_packed(self, packed: bytes) -> Any:
        """Send a command already in Redis's protocol and read its reply: the acquire fast path.

        redis-py's ``execute_command`` encodes every argument and wraps each call in retries, pool locking,
        observability hooks and two timeout tasks, which together cost more than the script itself; an
        acquire goes out whole on one of the limiter's own connections instead (see
        :class:`_DirectConnections`). A connection that turns out dead is retried once on a new one (a
        decision it may have made is a token burned: safe); NOSCRIPT loads the script and asks again.
        """
        try:
            for attempt in range(3):
                try:
                    reply = await self._connections.call(packed)
                except redis.exceptions.NoScriptError:
                    await self.redis.script_load(self._script.script)
                    continue
                except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                    if attempt:
                        raise
                    continue
                self._set_healthy(True)
                return reply
            raise redis.exceptions.NoScriptError("gcra.lua could not be loaded")
        except redis.exceptions.RedisError as exc:
            raise self._unavailable(exc) from exc

    async def _leave(self, operation: str, seller_id: str, plan: PlanArgs, member: str) -> None:
        await self._run("leave", operation, seller_id, plan, member)

    async def _throttled(self, operation: str, seller_id: str, plan: PlanArgs) -> int:
        reply = await self._run("throttled", operation, seller_id, plan)
        return int(reply[0])

    async def _adopt(self, operation: str, seller_id: str, plan: PlanArgs, observed_text: str) -> bool:
        reply = await self._run("adopt", operation, seller_id, plan, observed_text)
        return bool(int(reply[0]))

    async def _peek(self, operation: str, seller_id: str) -> PeekReply:
        plan = self._plan_args(operation, seller_id)
        reservation = self._reservation_args(operation)
        reply = await self._run(
            "peek", operation, seller_id, plan, reservation.tokens, reservation.window_us, reservation.lead_us
        )
        tokens, rate, b_eff, waiters, adopted, now_us, outstanding, *lanes = reply
        adopted_text = _text(adopted)
        return PeekReply(
            tokens_left=float(_text(tokens)),
            rate=float(_text(rate)),
            effective_burst=int(b_eff),
            waiters=int(waiters),
            adopted_rate=float(adopted_text) if adopted_text else None,
            now_us=int(now_us),
            reserved_outstanding=int(outstanding),
            waiters_by_lane=tuple((_text(lanes[i]), int(lanes[i + 1])) for i in range(0, len(lanes), 2)),
        )

    async def status(self, seller_id: str | None = None) -> list[BucketStatus]:
        """Every bucket this application has used (for one seller, or all), with its tokens left now."""
        prefix = f"{self.key_prefix}:rl:"
        if seller_id is None:
            pattern = _glob_escape(prefix) + "*"
        else:
            _check_key_part(seller_id, "seller id")
            pattern = _glob_escape(f"{prefix}{{{seller_id}:{self.application_id}}}:") + "*"
        found: list[tuple[str, str]] = []
        try:
            async for raw_key in self.redis.scan_iter(match=pattern, count=500):
                parsed = self._parse_bucket_key(_text(raw_key), prefix)
                if parsed is not None:
                    found.append(parsed)
        except redis.exceptions.RedisError as exc:
            if _is_unavailable(exc):
                self._set_healthy(False)
                raise QuotaUnavailable(f"rate limiter: Redis cannot be read ({exc})") from exc
            raise
        statuses: list[BucketStatus] = []
        for seller, operation in sorted(set(found)):
            statuses.append(self._status_of(seller, operation, await self._peek(operation, seller)))
        return statuses

    def _parse_bucket_key(self, key: str, prefix: str) -> tuple[str, str] | None:
        """``{prefix}:rl:{seller:app}:operation`` -> (seller, operation) for this application's known
        operations; anything else (another application, a retired operation) is skipped."""
        rest = key[len(prefix) :]
        if not rest.startswith("{") or "}:" not in rest:
            return None
        tag, operation = rest[1:].split("}:", 1)
        seller, _, application = tag.partition(":")
        if application != self.application_id or operation not in self.bucket_names():
            return None
        return seller, operation

    async def close_connections(self) -> None:
        """Close the limiter's own connections (the acquire fast path's) but not the Redis client: for a
        caller that gave the limiter a client it closes itself."""
        await self._connections.aclose()

    async def aclose(self) -> None:
        """Close the limiter's connections and the Redis client (for a limiter made by
        :func:`build_rate_limiter`)."""
        await self.close_connections()
        await self.redis.aclose()


def plan_book(settings: Settings, channels: Iterable[Channel]) -> PlanBook:
    """The usage plans: the models' defaults and ``channels``' overrides, with the settings' margins."""
    return PlanBook.from_channels(
        channels,
        time_scale=settings.amazon.time_scale,
        margin=settings.ratelimit.plan_margin,
        margins=settings.ratelimit.plan_margins,
    )


def build_rate_limiter(settings: Settings, channels: Iterable[Channel]) -> RedisRateLimiter:
    """The limiter for a stage: Redis from ``settings.redis``, plans from the models and the channels'
    overrides, scaled by ``settings.amazon.time_scale``."""
    client = make_redis(
        settings.redis,
        # Few, quick retries: an outage must surface as QuotaUnavailable promptly, not after many seconds.
        retry=Retry(ExponentialWithJitterBackoff(cap=0.5, base=0.05), retries=2),
        health_check_interval=30,
    )
    return RedisRateLimiter(
        client,
        plans=plan_book(settings, channels),
        application_id=settings.amazon.application_id,
        key_prefix=settings.redis.key_prefix,
        send_deadline_s=settings.ratelimit.send_deadline_s,
        default_timeout_s=settings.ratelimit.acquire_timeout_s,
        wait_replicas=settings.ratelimit.wait_replicas,
        wait_timeout_ms=settings.ratelimit.wait_timeout_ms,
        **limiter_options(settings),
    )


def limiter_options(settings: Settings) -> dict[str, Any]:
    """The lanes, the inventory reservation, the feed-type limits and the failover handling from
    ``settings.ratelimit``, as keyword arguments of either limiter."""
    rl = settings.ratelimit
    reservations = []
    if rl.inventory_reserved_feeds > 0:
        reservations.append(
            Reservation(
                operation="createFeed",
                lane=rl.inventory_lane,
                tokens=rl.inventory_reserved_feeds,
                interval_s=rl.inventory_flush_interval_s,
                lead_s=min(rl.inventory_reservation_lead_s, rl.inventory_flush_interval_s / 2),
            )
        )
    sub_limits = (
        {"createFeed": {name: (limit.rate, limit.burst) for name, limit in rl.feed_type_limits.items()}}
        if rl.feed_type_limits_enabled
        else {}
    )
    return {
        "lane_reserves": dict(rl.lane_reserves),
        "reservations": reservations,
        "sub_limits": sub_limits,
        "quarantine_on_failover": rl.failover_quarantine,
    }


# --- in memory (unit tests) --------------------------------------------------------------------------


class InMemoryRateLimiter(_GcraLimiter):
    """The same decisions as :class:`RedisRateLimiter`, made by :class:`GcraStore` in this process, on an
    injectable clock (seconds) and sleep. For unit tests only: it limits nothing across processes."""

    def __init__(
        self,
        *,
        plans: PlanBook,
        application_id: str = "ordersync",
        send_deadline_s: float = 2.0,
        default_timeout_s: float = 600.0,
        lane_reserves: Mapping[str, int] | None = None,
        waiter_grace_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        reservations: Iterable[Reservation] = (),
        sub_limits: Mapping[str, Mapping[str, tuple[float, int]]] | None = None,
        quarantine_on_failover: bool = True,
        store: GcraStore | None = None,
    ) -> None:
        super().__init__(
            plans=plans,
            application_id=application_id,
            send_deadline_s=send_deadline_s,
            default_timeout_s=default_timeout_s,
            lane_reserves=lane_reserves,
            waiter_grace_s=waiter_grace_s,
            clock=clock,
            sleep=sleep,
            reservations=reservations,
            sub_limits=sub_limits,
            quarantine_on_failover=quarantine_on_failover,
        )
        self.store = GcraStore() if store is None else store

    def _now_us(self) -> int:
        return math.floor(self._clock() * MICROS)

    def _pair(self, seller_id: str) -> str:
        return f"{seller_id}:{self.application_id}"

    async def _acquire_once(
        self,
        operation: str,
        seller_id: str,
        plan: PlanArgs,
        *,
        reserve: int,
        member: str,
        previous_score: int | None,
        enqueue: bool,
        reservation: ReservationArgs = NO_RESERVATION,
        subs: tuple[tuple[str, PlanArgs], ...] = (),
    ) -> AcquireReply:
        return self.store.acquire(
            self._pair(seller_id),
            operation,
            plan,
            self._now_us(),
            reserve=reserve,
            member=member,
            previous_score=previous_score,
            enqueue=enqueue,
            grace_us=math.ceil(self.waiter_grace_s * MICROS),
            quarantine=self.quarantine_on_failover,
            reservation=reservation,
            subs=subs,
        )

    async def _leave(self, operation: str, seller_id: str, plan: PlanArgs, member: str) -> None:
        self.store.leave(self._pair(seller_id), operation, member)

    async def _throttled(self, operation: str, seller_id: str, plan: PlanArgs) -> int:
        return self.store.throttled(
            self._pair(seller_id), operation, plan, self._now_us(), quarantine=self.quarantine_on_failover
        )

    async def _adopt(self, operation: str, seller_id: str, plan: PlanArgs, observed_text: str) -> bool:
        return self.store.adopt(
            self._pair(seller_id),
            operation,
            plan,
            self._now_us(),
            observed_text,
            quarantine=self.quarantine_on_failover,
        )

    async def status(self, seller_id: str | None = None) -> list[BucketStatus]:
        statuses: list[BucketStatus] = []
        for pair, operation in self.store.bucket_names():
            seller = pair.rsplit(":", 1)[0]
            if seller_id is not None and seller != seller_id:
                continue
            plan = self._plan_args(operation, seller)
            peek = self.store.peek(
                pair,
                operation,
                plan,
                self._now_us(),
                quarantine=self.quarantine_on_failover,
                reservation=self._reservation_args(operation),
            )
            statuses.append(self._status_of(seller, operation, peek))
        return statuses


def effective_burst(rate: float, burst: int, send_deadline_s: float) -> int:
    """``burst`` minus the headroom for ``send_deadline_s`` of send delay at ``rate`` (already scaled)."""
    return bucket_shape(rate, 1.0, burst, send_deadline_s * MICROS).effective_burst


__all__: Sequence[str] = (
    "DEFAULT_LANE_RESERVES",
    "DEFAULT_SUB_LIMITS",
    "BucketKeys",
    "BucketStatus",
    "Grant",
    "InMemoryRateLimiter",
    "RateLimiter",
    "RedisRateLimiter",
    "Reservation",
    "build_rate_limiter",
    "effective_burst",
    "gcra_script_text",
    "limiter_options",
)
