"""The rate limiter's decisions, on the in-memory mirror of ``gcra.lua`` with a fake clock."""

from __future__ import annotations

import asyncio
import heapq
import math
from dataclasses import dataclass, field
from typing import Any

import pytest

from ordersync.channels import Channel, LwaCredentials, SecretRef, UsagePlan
from ordersync.errors import ConfigurationError, QuotaTimeout
from ordersync.ratelimit import (
    InMemoryRateLimiter,
    PlanBook,
    RateLimiter,
    Reservation,
    UnknownOperationError,
    effective_burst,
    limiter_options,
)
from ordersync.ratelimit.gcra import MICROS, GcraStore, PlanArgs, ReservationArgs, waiter_member
from ordersync.settings import FeedTypeLimit, RateLimitSettings, Settings

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
    lane_reserves: dict[str, int] | None = None,
    **options: Any,
) -> InMemoryRateLimiter:
    return InMemoryRateLimiter(
        plans=PlanBook(plans or {OP: (RATE, BURST)}, time_scale=time_scale),
        send_deadline_s=send_deadline_s,
        clock=clock,
        sleep=clock.sleep,
        lane_reserves=lane_reserves,
        **options,
    )


#: Static reserves as the notes describe them: packing must leave the last 2 tokens, inventory none.
STATIC_RESERVES = {"default": 0, "packing": 2, "inventory": 0}


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


async def test_a_grant_expires_on_its_limiters_clock_not_the_hosts() -> None:
    # A limiter on a simulated clock years away from the host's monotonic clock: the send deadline is
    # judged on the limiter's own clock, so a fresh grant is never taken for an expired one (or back).
    clock = FakeClock(start=2e9)
    limiter = make_limiter(clock)
    await fill(limiter, clock)
    grant = await limiter.acquire(OP, SELLER)
    assert not grant.expired()
    clock.now += DEADLINE_S + 0.001
    assert grant.expired()


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
    limiter = make_limiter(clock, lane_reserves=STATIC_RESERVES)
    await fill(limiter, clock)
    assert await take_now(limiter, lane="packing")
    assert await take_now(limiter, lane="packing")
    assert not await take_now(limiter, lane="packing"), "packing must leave the last 2 tokens"
    assert await take_now(limiter, lane="inventory")
    assert await take_now(limiter, lane="inventory")
    assert not await take_now(limiter, lane="inventory")


async def test_packing_uses_everything_but_the_reserve_when_inventory_is_idle() -> None:
    clock = FakeClock()
    # b_eff = 11
    limiter = make_limiter(clock, plans={OP: (1.0, 12)}, send_deadline_s=1.0, lane_reserves=STATIC_RESERVES)
    await fill(limiter, clock)
    taken = 0
    while await take_now(limiter, lane="packing"):
        taken += 1
    assert taken == 11 - 2


async def test_a_reserve_never_starves_a_lane_of_a_one_token_bucket() -> None:
    clock = FakeClock()
    limiter = make_limiter(clock, send_deadline_s=2.0, lane_reserves=STATIC_RESERVES)  # b_eff = 1 < reserve 2
    await fill(limiter, clock)
    assert await take_now(limiter, lane="packing")


async def test_unknown_lane_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="unknown lane"):
        await make_limiter(FakeClock()).acquire(OP, SELLER, lane="pakcing")


async def test_waiting_packing_does_not_block_inventory() -> None:
    clock = FakeClock(frozen=True)
    limiter = make_limiter(clock, lane_reserves=STATIC_RESERVES)
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


# --- the shared feed quota: lanes, the inventory reservation, feed-type sub-limits ---------------------

FEED = "createFeed"
#: createFeed scaled: 1 token/s, burst 6; 1 s of send deadline is one token of headroom, so b_eff = 5.
FEED_PLAN = (1.0, 6)
FEED_B_EFF = 5
WINDOW_S = 60.0
LEAD_S = 10.0


def feed_store_plan() -> PlanArgs:
    return PlanArgs(repr(FEED_PLAN[0]), 1.0, FEED_PLAN[1], MICROS)


def feed_reservation(tokens: int = 1) -> ReservationArgs:
    return ReservationArgs(tokens=tokens, window_us=int(WINDOW_S * MICROS), lead_us=int(LEAD_S * MICROS))


@dataclass
class Client:
    """One simulated worker: ``lane``, asking from ``arrive_at`` (s) on; ``backlog`` asks again at once
    after every grant, forever (a queue of shipments that never empties)."""

    name: str
    lane: str
    arrive_at: float
    backlog: bool = False
    granted_at: list[float] = field(default_factory=list)
    waited: list[float] = field(default_factory=list)


def simulate(clients: list[Client], *, until: float, reservation: ReservationArgs) -> GcraStore:
    """A discrete-event run of clients against the mirror of the script (Redis's exact decisions): each
    wakes at its time, asks, and either is granted or sleeps the wait the script returns."""
    store = GcraStore()
    plan = feed_store_plan()
    reserves = {"packing": 0, "inventory": 1}
    # Date the epoch a minute back: the bucket is full at t = 0.
    store.acquire(
        "s:a", FEED, plan, 0, reserve=0, member="0|n|x|init", previous_score=None, enqueue=False, grace_us=0
    )
    store._buckets[("s:a", FEED)].tat = 0
    store._buckets[("s:a", FEED)].last_now = 0
    base_us = 0
    events: list[tuple[int, int, int]] = []  # (time us, sequence, client index)
    for index, client in enumerate(clients):
        heapq.heappush(events, (int(client.arrive_at * MICROS), index, index))
    members = {index: f"r{index}-0" for index in range(len(clients))}
    asked = {index: int(client.arrive_at * MICROS) for index, client in enumerate(clients)}
    scores: dict[int, int | None] = dict.fromkeys(members)
    sequence = len(clients)
    while events:
        at, _, index = heapq.heappop(events)
        if at > until * MICROS:
            break
        client = clients[index]
        member = waiter_member(
            reserves[client.lane], reserved=client.lane == "inventory", lane=client.lane, token=members[index]
        )
        reply = store.acquire(
            "s:a",
            FEED,
            plan,
            base_us + at,
            reserve=reserves[client.lane],
            member=member,
            previous_score=scores[index],
            enqueue=True,
            grace_us=MICROS,
            reservation=reservation,
        )
        sequence += 1
        if reply.granted:
            client.granted_at.append(at / MICROS)
            client.waited.append((at - asked[index]) / MICROS)
            scores[index] = None
            members[index] = f"r{index}-{len(client.granted_at)}"
            if client.backlog:
                asked[index] = at
                heapq.heappush(events, (at, sequence, index))
        else:
            scores[index] = reply.waiter_score or scores[index]
            heapq.heappush(events, (at + reply.retry_after_us, sequence, index))
    return store


def test_a_packing_backlog_cannot_starve_the_inventory_reservation() -> None:
    packers = [Client(f"packing{n}", "packing", 0.0, backlog=True) for n in range(4)]
    # The hourly run (scaled: every WINDOW_S), one feed at each flush time.
    inventory = [Client(f"inventory{k}", "inventory", k * WINDOW_S) for k in range(1, 6)]
    duration = 6 * WINDOW_S - 1
    simulate([*packers, *inventory], until=duration, reservation=feed_reservation())
    for run in inventory:
        assert run.granted_at, f"{run.name} starved"
        # The reservation opened LEAD_S before the flush, so its token was waiting for it.
        assert run.waited == [0.0], f"{run.name} waited {run.waited}"
    packed = sum(len(client.granted_at) for client in packers)
    # Work-conserving: together they used the whole quota (a full bucket, then 1 per second).
    assert packed + len(inventory) >= FEED_B_EFF + duration * FEED_PLAN[0] - 2


def test_inventory_idle_gives_shipments_the_whole_quota() -> None:
    packers = [Client(f"packing{n}", "packing", 0.0, backlog=True) for n in range(3)]
    duration = 5 * WINDOW_S
    store = simulate(packers, until=duration, reservation=feed_reservation())
    packed = sum(len(client.granted_at) for client in packers)
    # All of the rate; of the starting burst, only the one reserved token is held back, once (unused
    # reservations never add up).
    assert packed >= FEED_B_EFF - 1 + duration * FEED_PLAN[0] - 1
    peek = store.peek("s:a", FEED, feed_store_plan(), int(duration * MICROS), reservation=feed_reservation())
    assert peek.tokens_left < 1 + 1e-9, "at most the reserved token sits unused"
    assert peek.reserved_outstanding == 1


def test_shipments_come_before_inventory_beyond_its_reserved_share() -> None:
    packers = [Client(f"packing{n}", "packing", 0.0, backlog=True) for n in range(3)]
    first = Client("inventory-reserved", "inventory", WINDOW_S)
    extra = Client("inventory-extra", "inventory", WINDOW_S + 1)
    simulate([*packers, first, extra], until=2 * WINDOW_S - LEAD_S - 1, reservation=feed_reservation())
    assert first.waited == [0.0]
    assert extra.granted_at == [], "beyond its share, inventory yields to the shipments backlog"


async def test_the_reservation_returns_to_the_pool_once_used_and_does_not_add_up() -> None:
    clock = FakeClock(start=0.0)
    limiter = make_limiter(
        clock,
        plans={FEED: FEED_PLAN},
        send_deadline_s=1.0,
        reservations=[Reservation(FEED, "inventory", tokens=1, interval_s=WINDOW_S, lead_s=LEAD_S)],
    )
    assert not await take_now(limiter, op=FEED)
    clock.advance(10 * WINDOW_S + WINDOW_S / 2)  # many idle windows: the bucket is full, b_eff = 5
    taken = 0
    while await take_now(limiter, lane="packing", op=FEED):
        taken += 1
    assert taken == FEED_B_EFF - 1, "packing leaves one reserved token, not one per idle window"
    [status] = await limiter.status(SELLER)
    assert status.reserved_outstanding == 1
    assert await take_now(limiter, lane="inventory", op=FEED), "the reserved token is there"
    assert not await take_now(limiter, lane="inventory", op=FEED), "beyond its share, inventory leaves 1"
    clock.advance(1.0)
    assert await take_now(limiter, lane="packing", op=FEED), "used: the reservation is back in the pool"
    [status] = await limiter.status(SELLER)
    assert status.reserved_outstanding == 0


def json_feed_limiter(clock: FakeClock, **options: Any) -> InMemoryRateLimiter:
    # createFeed's own plan (30 an hour, burst 15) and JSON_LISTINGS_FEED 5 per 5 minutes, at 2 s of
    # send deadline: b_eff 14 and 4.
    return make_limiter(clock, plans={FEED: (0.0083, 15)}, send_deadline_s=2.0, **options)


async def fill_feed(limiter: InMemoryRateLimiter, clock: FakeClock) -> None:
    assert not await take_now(limiter, op=FEED)
    clock.advance(100_000)


async def take_feed(limiter: InMemoryRateLimiter, feed_type: str | None) -> bool:
    try:
        await limiter.acquire(FEED, SELLER, lane="packing", timeout=0, feed_type=feed_type)
    except QuotaTimeout:
        return False
    return True


async def test_json_listings_feeds_also_need_a_token_of_their_own_bucket() -> None:
    clock = FakeClock()
    limiter = json_feed_limiter(clock)
    await fill_feed(limiter, clock)
    assert [await take_feed(limiter, "JSON_LISTINGS_FEED") for _ in range(5)] == [True] * 4 + [False]
    statuses = {status.operation: status for status in await limiter.status(SELLER)}
    assert statuses[FEED].tokens_left == pytest.approx(10, abs=0.01), "a refused feed debits neither bucket"
    assert statuses["createFeed:JSON_LISTINGS_FEED"].tokens_left == pytest.approx(0, abs=0.01)
    # Other feed types (and createFeed without a type) only need createFeed's token.
    assert await take_feed(limiter, "POST_ORDER_FULFILLMENT_DATA")
    assert await take_feed(limiter, None)
    # JSON_LISTINGS_FEED refills at one per minute, and waits are exact.
    with pytest.raises(QuotaTimeout) as caught:
        await limiter.acquire(FEED, SELLER, lane="packing", timeout=1, feed_type="JSON_LISTINGS_FEED")
    assert caught.value.retry_after_s == pytest.approx(60, abs=0.01)
    clock.advance(60)
    assert await take_feed(limiter, "JSON_LISTINGS_FEED")


async def test_a_429_on_a_json_listings_feed_empties_both_buckets() -> None:
    clock = FakeClock()
    limiter = json_feed_limiter(clock)
    await fill_feed(limiter, clock)
    assert await take_feed(limiter, "JSON_LISTINGS_FEED")
    await limiter.on_throttled(FEED, SELLER, feed_type="JSON_LISTINGS_FEED")
    assert all(status.tokens_left == 0 for status in await limiter.status(SELLER))


async def test_feed_type_limits_can_be_disabled() -> None:
    clock = FakeClock()
    limiter = json_feed_limiter(clock, sub_limits={})
    await fill_feed(limiter, clock)
    assert [await take_feed(limiter, "JSON_LISTINGS_FEED") for _ in range(15)] == [True] * 14 + [False]


# --- failover quarantine ---------------------------------------------------------------------------


async def test_a_new_redis_server_quarantines_every_bucket_of_the_pair() -> None:
    clock = FakeClock()
    limiter = make_limiter(clock, plans={OP: (RATE, BURST), "other": (1.0, 10)})
    await fill(limiter, clock)
    assert await take_now(limiter, op="other")  # the pair's epoch is old: a new bucket is full
    assert await take_now(limiter)
    limiter.store.run_id = "promoted-replica"  # the same data, another server: a failover
    assert not await take_now(limiter), "state may have lost grants: treat it as empty"
    assert not await take_now(limiter, op="other")
    assert all(status.tokens_left == 0 for status in await limiter.status(SELLER))
    # Emptied with the full burst (5) at the failover: the next token comes 2 intervals later.
    clock.advance(2 * T)
    assert await take_now(limiter)
    # Once per failover: later decisions on the same server are ordinary again.
    clock.advance(100)
    assert sum([await take_now(limiter) for _ in range(B_EFF + 1)]) == B_EFF


async def test_quarantine_can_be_disabled() -> None:
    clock = FakeClock()
    limiter = make_limiter(clock, quarantine_on_failover=False)
    await fill(limiter, clock)
    limiter.store.run_id = "promoted-replica"
    assert await take_now(limiter)


def test_settings_carry_lanes_reservation_and_feed_limits_to_the_limiter() -> None:
    settings = Settings(
        ratelimit=RateLimitSettings(
            lane_reserves={"packing": 0, "inventory": 2},
            inventory_reserved_feeds=2,
            inventory_flush_interval_s=1800,
            inventory_reservation_lead_s=300,
            feed_type_limits={"JSON_LISTINGS_FEED": FeedTypeLimit(rate=0.01, burst=3)},
        )
    )
    limiter = InMemoryRateLimiter(plans=PlanBook(), **limiter_options(settings))
    assert limiter.lane_reserves == {"packing": 0, "inventory": 2, "default": 0}
    assert limiter.reservations[FEED] == Reservation(FEED, "inventory", 2, 1800, 300)
    assert limiter.sub_limits == {"createFeed:JSON_LISTINGS_FEED": (0.01, 3)}
    off = Settings(ratelimit=RateLimitSettings(inventory_reserved_feeds=0, feed_type_limits_enabled=False))
    limiter = InMemoryRateLimiter(plans=PlanBook(), **limiter_options(off))
    assert limiter.reservations == {}
    assert limiter.sub_limits == {}


def test_default_settings_put_shipments_first_with_an_hourly_inventory_feed() -> None:
    limiter = InMemoryRateLimiter(plans=PlanBook(), **limiter_options(Settings()))
    assert limiter.reserve_of("packing") == 0
    assert limiter.reserve_of("inventory") >= 1
    assert limiter.reservations[FEED].tokens == 1
    assert limiter.reservations[FEED].interval_s == 3600
    assert "createFeed:JSON_LISTINGS_FEED" in limiter.sub_limits


def test_reservation_lead_must_be_shorter_than_the_interval() -> None:
    with pytest.raises(ConfigurationError):
        Reservation(FEED, "inventory", tokens=1, interval_s=60, lead_s=60)


async def _granted_rate(limiter: InMemoryRateLimiter, clock: FakeClock, op: str = OP, n: int = 500) -> float:
    """Tokens per second the limiter grants once its burst is spent (waiting, as a stage does)."""
    await fill(limiter, clock)
    while await take_now(limiter, op=op):
        pass
    start = clock.now
    for _ in range(n):
        await limiter.acquire(op, SELLER)
    return n / (clock.now - start)


async def test_a_plan_margin_leaves_that_share_of_the_rate_unused() -> None:
    plans = {OP: (10.0, 5), "getFeed": (10.0, 5)}
    clock = FakeClock()
    full = InMemoryRateLimiter(plans=PlanBook(plans), clock=clock, sleep=clock.sleep)
    book = PlanBook(plans, margin=0.1, margins={"getFeed": 0.5})
    margined = InMemoryRateLimiter(plans=book, clock=clock, sleep=clock.sleep)
    assert await _granted_rate(full, clock) == pytest.approx(10.0, rel=0.01)
    assert await _granted_rate(margined, clock) == pytest.approx(9.0, rel=0.01)
    assert await _granted_rate(margined, clock, op="getFeed") == pytest.approx(5.0, rel=0.01)
    assert book.plan("getFeed", SELLER) == (5.0, 5)
    with pytest.raises(ConfigurationError, match="a plan margin is a share"):
        PlanBook(plans, margin=1.0)


async def test_amazons_reported_rate_is_adopted_less_the_margin() -> None:
    clock = FakeClock()
    limiter = InMemoryRateLimiter(plans=PlanBook({OP: (10.0, 5)}, margin=0.1), clock=clock, sleep=clock.sleep)
    await limiter.observe_rate_limit(OP, SELLER, 9.5)  # 9.5 less 10 % is 8.55: below the enforced 9
    assert await _granted_rate(limiter, clock) == pytest.approx(8.55, rel=0.01)
