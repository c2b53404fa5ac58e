"""The rate limiter's decisions, on the in-memory mirror of ``gcra.lua`` with a fake clock."""

from __future__ import annotations

import asyncio
import math

import pytest

from ordersync.channels import Channel, LwaCredentials, SecretRef, UsagePlan
from ordersync.errors import ConfigurationError, QuotaTimeout
from ordersync.ratelimit import (
    InMemoryRateLimiter,
    PlanBook,
    RateLimiter,
    UnknownOperationError,
    effective_burst,
)
from ordersync.ratelimit.gcra import MICROS, GcraStore, PlanArgs

pytestmark = pytest.mark.unit

SELLER = "A1SELLER"
OP = "hammer"
RATE = 10.0
BURST = 5
#: 0.1 s of send deadline at 10/s is one token of headroom: b_eff = 4.
DEADLINE_S = 0.1
B_EFF = 4
T = 1 / RATE


class FakeClock:
    """Seconds that move only when someone sleeps, or, ``frozen``, only when the test advances them
    (a sleeper then stays asleep until cancelled)."""

    def __init__(self, start: float = 1000.0, *, frozen: bool = False) -> None:
        self.now = start
        self.frozen = frozen
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        if self.frozen:
            await asyncio.Event().wait()
        self.now += seconds
        await asyncio.sleep(0)

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_limiter(
    clock: FakeClock,
    *,
    plans: dict[str, tuple[float, int]] | None = None,
    send_deadline_s: float = DEADLINE_S,
    time_scale: float = 1.0,
) -> InMemoryRateLimiter:
    return InMemoryRateLimiter(
        plans=PlanBook(plans or {OP: (RATE, BURST)}, time_scale=time_scale),
        send_deadline_s=send_deadline_s,
        clock=clock,
        sleep=clock.sleep,
    )


async def take_now(limiter: InMemoryRateLimiter, *, lane: str = "default", op: str = OP) -> bool:
    """One attempt without waiting: was a token granted?"""
    try:
        await limiter.acquire(op, SELLER, lane=lane, timeout=0)
    except QuotaTimeout:
        return False
    return True


async def fill(limiter: InMemoryRateLimiter, clock: FakeClock) -> None:
    """Create the bucket (it starts empty) and let it refill completely."""
    assert not await take_now(limiter)
    clock.advance(10_000)


def test_in_memory_limiter_satisfies_the_protocol() -> None:
    assert isinstance(make_limiter(FakeClock()), RateLimiter)


@pytest.mark.parametrize(
    ("rate", "burst", "deadline_s", "expected"),
    [
        (10.0, 5, 0.1, 4),  # one token of headroom
        (10.0, 5, 2.0, 1),  # headroom 20 would leave nothing: never below 1
        (0.0083, 15, 2.0, 14),  # createFeed: h = 1 tolerates 120 s of jitter
        (0.5, 30, 2.0, 29),  # getOrderItems
        (5.0, 15, 2.0, 5),  # updateShipmentStatus: h = 10
    ],
)
def test_effective_burst_leaves_headroom_for_the_send_deadline(
    rate: float, burst: int, deadline_s: float, expected: int
) -> None:
    assert effective_burst(rate, burst, deadline_s) == expected


async def test_a_new_bucket_starts_empty_and_refills_at_the_rate() -> None:
    clock = FakeClock()
    limiter = make_limiter(clock)
    assert not await take_now(limiter), "a bucket with no state must start empty"
    clock.advance(T)
    assert await take_now(limiter)
    assert not await take_now(limiter)


async def test_burst_then_rate() -> None:
    clock = FakeClock()
    limiter = make_limiter(clock)
    await fill(limiter, clock)
    burst = [await take_now(limiter) for _ in range(B_EFF + 1)]
    assert burst == [True] * B_EFF + [False]

    # Waiting acquires from now on come one interval apart (plus a little jitter).
    start = clock.now
    grants = 0
    while clock.now - start < 5.0:
        grant = await limiter.acquire(OP, SELLER)
        grants += 1
        assert grant.deadline == pytest.approx(clock.now - 0 + DEADLINE_S, abs=1e-9)
    elapsed = clock.now - start
    assert grants <= elapsed * RATE + 1e-9
    assert grants >= 0.95 * elapsed * RATE
    assert all(s <= T * 1.03 + 0.002 for s in clock.slept), "sleeps are the script's wait plus small jitter"


def test_decisions_at_exact_times_follow_gcra() -> None:
    """Straight on the store: full bucket of b_eff, then exactly one grant per interval, no more."""
    store = GcraStore()
    plan = PlanArgs(repr(RATE), 1.0, BURST, int(DEADLINE_S * MICROS))
    interval = int(T * MICROS)

    def attempt(at: int) -> bool:
        reply = store.acquire(
            "s:a", OP, plan, at, reserve=0, member="0|x", previous_score=None, enqueue=False, grace_us=0
        )
        return reply.granted

    start = 10**15
    attempt(start - 10 * MICROS)  # creates the epoch 10 s earlier: full by `start`
    assert [attempt(start) for _ in range(B_EFF + 1)] == [True] * B_EFF + [False]
    granted = sum(attempt(start + step * interval // 4) for step in range(1, 4 * 20 + 1))
    assert granted == 20  # 2 s at 10/s, polled 4 times per interval


def test_a_backwards_clock_step_grants_nothing_extra() -> None:
    store = GcraStore()
    plan = PlanArgs(repr(RATE), 1.0, BURST, int(DEADLINE_S * MICROS))

    def attempt(at: int) -> bool:
        reply = store.acquire(
            "s:a", OP, plan, at, reserve=0, member="0|x", previous_score=None, enqueue=False, grace_us=0
        )
        return reply.granted

    now = 10**15
    attempt(now - 10 * MICROS)
    assert sum(attempt(now) for _ in range(10)) == B_EFF
    # The clock jumps back 5 s, then creeps forward: still nothing until an interval after `now`.
    assert not attempt(now - 5 * MICROS)
    assert not attempt(now - 5 * MICROS + int(T * MICROS))
    assert attempt(now + int(T * MICROS))


async def test_reserve_keeps_packing_off_the_last_tokens() -> None:
    clock = FakeClock()
    limiter = make_limiter(clock)  # lanes: packing reserves 2, inventory none
    await fill(limiter, clock)
    assert await take_now(limiter, lane="packing")
    assert await take_now(limiter, lane="packing")
    assert not await take_now(limiter, lane="packing"), "packing must leave the last 2 tokens"
    assert await take_now(limiter, lane="inventory")
    assert await take_now(limiter, lane="inventory")
    assert not await take_now(limiter, lane="inventory")


async def test_packing_uses_everything_but_the_reserve_when_inventory_is_idle() -> None:
    clock = FakeClock()
    limiter = make_limiter(clock, plans={OP: (1.0, 12)}, send_deadline_s=1.0)  # b_eff = 11
    await fill(limiter, clock)
    taken = 0
    while await take_now(limiter, lane="packing"):
        taken += 1
    assert taken == 11 - 2


async def test_a_reserve_never_starves_a_lane_of_a_one_token_bucket() -> None:
    clock = FakeClock()
    limiter = make_limiter(clock, send_deadline_s=2.0)  # b_eff = 1 < reserve 2
    await fill(limiter, clock)
    assert await take_now(limiter, lane="packing")


async def test_unknown_lane_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="unknown lane"):
        await make_limiter(FakeClock()).acquire(OP, SELLER, lane="pakcing")


async def test_waiting_packing_does_not_block_inventory() -> None:
    clock = FakeClock(frozen=True)
    limiter = make_limiter(clock)
    await fill(limiter, clock)
    assert await take_now(limiter, lane="inventory")
    assert await take_now(limiter, lane="inventory")
    # 2 tokens left: packing (reserve 2) must wait; it queues ...
    packing = asyncio.create_task(limiter.acquire(OP, SELLER, lane="packing", timeout=30))
    await asyncio.sleep(0)
    assert not packing.done()
    # ... but an inventory request behind it is served at once.
    assert await take_now(limiter, lane="inventory")
    packing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await packing


async def test_observe_rate_limit_only_lowers() -> None:
    clock = FakeClock()
    limiter = make_limiter(clock)
    await fill(limiter, clock)

    await limiter.observe_rate_limit(OP, SELLER, 20.0)  # higher than the plan: ignored
    [status] = await limiter.status(SELLER)
    assert status.rate == RATE
    assert status.adopted_rate is None

    await limiter.observe_rate_limit(OP, SELLER, 2.0)
    [status] = await limiter.status(SELLER)
    assert status.rate == 2.0
    assert status.adopted_rate == 2.0

    await limiter.observe_rate_limit(OP, SELLER, 5.0)  # still below the plan, but above what we adopted
    [status] = await limiter.status(SELLER)
    assert status.rate == 2.0

    # Spend the bucket; the next token now takes 1/2 s, not 1/10 s.
    while await take_now(limiter):
        pass
    clock.advance(0.3)
    assert not await take_now(limiter)
    clock.advance(0.2)
    assert await take_now(limiter)


async def test_adopted_rate_keeps_the_tokens_already_spent() -> None:
    clock = FakeClock()
    limiter = make_limiter(clock)
    await fill(limiter, clock)
    assert await take_now(limiter)
    assert await take_now(limiter)
    await limiter.observe_rate_limit(OP, SELLER, 1.0)
    [status] = await limiter.status(SELLER)
    assert status.tokens_left == pytest.approx(B_EFF - 2)


async def test_a_changed_plan_discards_the_adopted_rate() -> None:
    clock = FakeClock()
    limiter = make_limiter(clock)
    await fill(limiter, clock)
    await limiter.observe_rate_limit(OP, SELLER, 2.0)
    limiter.plans = PlanBook({OP: (12.0, BURST)})  # configuration raised the plan
    [status] = await limiter.status(SELLER)
    assert status.rate == 12.0
    assert status.adopted_rate == 2.0  # still recorded, but not in force


async def test_observed_rate_is_in_amazons_units_and_then_time_scaled() -> None:
    clock = FakeClock()
    limiter = make_limiter(clock, plans={OP: (0.5, 30)}, time_scale=10.0)
    await fill(limiter, clock)
    await limiter.observe_rate_limit(OP, SELLER, 0.25)
    [status] = await limiter.status(SELLER)
    assert status.rate == pytest.approx(2.5)


async def test_on_throttled_empties_the_bucket() -> None:
    clock = FakeClock()
    limiter = make_limiter(clock)
    await fill(limiter, clock)
    await limiter.on_throttled(OP, SELLER)
    [status] = await limiter.status(SELLER)
    assert status.tokens_left == 0
    assert not await take_now(limiter)
    # Emptied with the full burst (5), so the next grant needs burst - b_eff + 1 = 2 intervals.
    clock.advance(1.9 * T)
    assert not await take_now(limiter)
    clock.advance(0.1 * T)
    assert await take_now(limiter)


async def test_waiters_are_served_first_come_first_served() -> None:
    clock = FakeClock()
    limiter = make_limiter(clock)
    await fill(limiter, clock)
    while await take_now(limiter):
        pass
    order: list[str] = []

    async def wait_for_token(name: str) -> None:
        await limiter.acquire(OP, SELLER, timeout=10)
        order.append(name)

    first = asyncio.create_task(wait_for_token("first"))
    await asyncio.sleep(0)
    second = asyncio.create_task(wait_for_token("second"))
    await asyncio.gather(first, second)
    assert order == ["first", "second"]


def test_a_later_caller_cannot_take_the_token_a_waiter_ahead_can_use() -> None:
    store = GcraStore()
    plan = PlanArgs(repr(RATE), 1.0, BURST, int(DEADLINE_S * MICROS))
    now = 10**15
    interval = int(T * MICROS)

    def attempt(member: str, at: int, score: int | None = None) -> tuple[bool, int, int]:
        reply = store.acquire(
            "s:a", OP, plan, at, reserve=0, member=member, previous_score=score, enqueue=True, grace_us=MICROS
        )
        return reply.granted, reply.retry_after_us, reply.queued_before

    granted, retry, before = attempt("0|first", now)  # new bucket: empty, first waits one interval
    assert (granted, retry, before) == (False, interval, 0)
    granted, retry, before = attempt("0|second", now + 1)
    assert not granted
    assert before == 1
    assert retry >= 2 * interval - 1 - 1  # its turn comes after first's
    # A token is there, second polls before first comes back: second must not take it.
    assert not attempt("0|second", now + interval)[0]
    assert attempt("0|first", now + interval)[0]
    assert attempt("0|second", now + 2 * interval)[0]


def test_a_silent_waiter_is_dropped_after_its_grace() -> None:
    store = GcraStore()
    plan = PlanArgs(repr(RATE), 1.0, BURST, int(DEADLINE_S * MICROS))
    now = 10**15
    interval = int(T * MICROS)

    def arrives(member: str, at: int) -> bool:
        reply = store.acquire(
            "s:a", OP, plan, at, reserve=0, member=member, previous_score=None, enqueue=True, grace_us=MICROS
        )
        return reply.granted

    assert not arrives("0|crashed", now)  # queues, told to come back in one interval, never does
    assert arrives("0|alive", now + interval + MICROS + 1)  # its promised wake-up plus the grace passed


async def test_timeout_known_to_be_too_short_fails_at_once() -> None:
    clock = FakeClock()
    limiter = make_limiter(clock, plans={OP: (0.01, 2)})  # one token per 100 s
    await fill(limiter, clock)
    await limiter.acquire(OP, SELLER, timeout=0)
    started = clock.now
    with pytest.raises(QuotaTimeout) as caught:
        await limiter.acquire(OP, SELLER, timeout=5)
    assert clock.now == started, "no point sleeping through a wait longer than the timeout"
    assert caught.value.retry_after_s == pytest.approx(100, abs=0.01)


async def test_a_cancelled_waiter_leaves_the_queue() -> None:
    clock = FakeClock(frozen=True)
    limiter = make_limiter(clock)
    await fill(limiter, clock)
    while await take_now(limiter):
        pass
    waiter = asyncio.create_task(limiter.acquire(OP, SELLER, timeout=10))
    await asyncio.sleep(0)
    assert (await limiter.status(SELLER))[0].waiters == 1
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert (await limiter.status(SELLER))[0].waiters == 0


def test_plan_book_reads_amazons_models_by_default() -> None:
    book = PlanBook()
    assert book.plan("getOrderItems", SELLER) == (0.5, 30)
    assert book.plan("createFeed", SELLER) == (0.0083, 15)


def test_plan_book_applies_time_scale_to_rates_only() -> None:
    book = PlanBook(time_scale=60.0)
    rate, burst = book.plan("getOrders", SELLER)
    assert math.isclose(rate, 0.0167 * 60)
    assert burst == 20
    assert book.amazon_plan("getOrders", SELLER) == (0.0167, 20)


def test_plan_book_unknown_operation_is_a_clear_error() -> None:
    with pytest.raises(UnknownOperationError, match=r"getOrderItem'.*did you mean getOrderItems"):
        PlanBook().plan("getOrderItem", SELLER)


def _channel(name: str, seller_id: str, rate_limits: dict[str, UsagePlan]) -> Channel:
    secret = SecretRef(env="UNUSED")
    return Channel(
        name=name,
        seller_id=seller_id,
        marketplaces=("ATVPDKIKX0DER",),
        credentials=LwaCredentials(client_id=secret, client_secret=secret, refresh_token=secret),
        rate_limits=rate_limits,
    )


def test_plan_book_takes_per_seller_overrides_from_channels() -> None:
    raised = _channel("acme-us", "A2ACME", {"getOrders": UsagePlan(rate=0.0334, burst=40)})
    book = PlanBook.from_channels([raised, _channel("other", "B3OTHER", {})], time_scale=2.0)
    assert book.plan("getOrders", "A2ACME") == (0.0668, 40)
    assert book.plan("getOrders", "B3OTHER") == (0.0334, 20)


def test_plan_book_rejects_an_override_of_an_unknown_operation() -> None:
    typo = _channel("acme-us", "A2ACME", {"getOrder5": UsagePlan(rate=1, burst=1)})
    with pytest.raises(UnknownOperationError, match="channel acme-us"):
        PlanBook.from_channels([typo])
