"""The rate limiter against real Redis: tasks and processes sharing one bucket, lanes, outages."""

from __future__ import annotations

import asyncio
import json
import math
import multiprocessing
import os
import random
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from typer.testing import CliRunner

from ordersync.cli.quota import quota_app
from ordersync.dev.devinfra import EmbeddedRedis
from ordersync.errors import QuotaTimeout, QuotaUnavailable
from ordersync.ratelimit import (
    BucketKeys,
    PlanBook,
    RateLimiter,
    RedisRateLimiter,
    Reservation,
    build_rate_limiter,
    limiter_options,
)
from ordersync.ratelimit.gcra import GcraStore, waiter_member
from ordersync.ratelimit.loadtest import HammerPlan, hammer_async, hammer_process
from ordersync.settings import RedisSettings, Settings, get_settings

pytestmark = pytest.mark.integration

SELLER = "A1SELLER"
APP = "ordersync"
OP = "hammer"
RATE = 10.0
BURST = 5
#: 0.1 s of send deadline at 10/s is one token of headroom.
DEADLINE_S = 0.1
B_EFF = 4
INTERVAL_US = 1_000_000 / RATE
HAMMER_S = 3.0


CloseAfter = Callable[[RedisRateLimiter], None]


@pytest.fixture
async def close_after() -> AsyncIterator[CloseAfter]:
    """``close_after(limiter)``: close the limiter's own connections when the test ends (the test closes
    the Redis client it gave the limiter itself)."""
    limiters: list[RedisRateLimiter] = []
    yield limiters.append
    for limiter in limiters:
        await limiter.close_connections()


def limiter_on(
    client: aioredis.Redis, prefix: str, *, plans: dict[str, tuple[float, int]] | None = None
) -> RedisRateLimiter:
    return RedisRateLimiter(
        client,
        plans=PlanBook(plans or {OP: (RATE, BURST)}),
        application_id=APP,
        key_prefix=prefix,
        send_deadline_s=DEADLINE_S,
    )


async def redis_time_us(client: aioredis.Redis) -> int:
    seconds, micros = await client.time()
    return int(seconds) * 1_000_000 + int(micros)


async def start_full(client: aioredis.Redis, prefix: str, seller_id: str = SELLER) -> None:
    """Date the pair's state a minute back, so its (new) buckets are full rather than empty."""
    epoch_key = BucketKeys.of(prefix, seller_id, APP, OP).epoch
    await client.set(epoch_key, await redis_time_us(client) - 60_000_000)


async def take_now(limiter: RedisRateLimiter, *, lane: str = "default", op: str = OP) -> bool:
    try:
        await limiter.acquire(op, SELLER, lane=lane, timeout=0)
    except QuotaTimeout:
        return False
    return True


def assert_within_bucket(granted_at: Sequence[int]) -> None:
    """GCRA conformance: any n grants within a span L need n <= b_eff + L / T."""
    times = sorted(granted_at)
    for first in range(len(times)):
        for last in range(first, len(times)):
            span_us = times[last] - times[first]
            count = last - first + 1
            assert count <= B_EFF + span_us / INTERVAL_US + 1e-6, (
                f"{count} grants within {span_us / 1e6:.3f} s exceed b_eff {B_EFF} + rate {RATE}/s"
            )


def assert_uses_the_bucket(granted_at: Sequence[int]) -> None:
    """At least 90 % of what a bucket that starts full allows over the span of the grants."""
    times = sorted(granted_at)
    span_us = times[-1] - times[0]
    assert span_us >= 0.8 * HAMMER_S * 1_000_000, "the hammering ran for the whole window"
    allowed = B_EFF + span_us / INTERVAL_US
    assert len(times) >= 0.9 * allowed, f"{len(times)} grants, {allowed:.1f} allowed"


def test_the_redis_limiter_satisfies_the_protocol() -> None:
    client = aioredis.Redis()
    assert isinstance(limiter_on(client, "unused"), RateLimiter)


async def test_four_tasks_stay_within_the_bucket_and_use_it(
    redis_url: str, redis_client: aioredis.Redis, redis_key_prefix: str
) -> None:
    await start_full(redis_client, redis_key_prefix)
    plan = HammerPlan(redis_url, redis_key_prefix, SELLER, OP, RATE, BURST, DEADLINE_S, APP)
    granted_at = await hammer_async(plan, duration_s=HAMMER_S, tasks=4)
    assert_within_bucket(granted_at)
    assert_uses_the_bucket(granted_at)


def run_hammer_processes(
    groups: Sequence[tuple[HammerPlan, Sequence[float]]], *, duration_s: float, tasks: int = 1
) -> list[list[list[int]]]:
    """One process per clock skew of each group, all started together; each group's grant times."""
    context = multiprocessing.get_context("spawn")
    started = [
        (index, context.Queue(), plan, skew) for index, (plan, skews) in enumerate(groups) for skew in skews
    ]
    start = context.Barrier(len(started))
    processes = [
        context.Process(
            target=hammer_process,
            args=(plan, results),
            kwargs={"duration_s": duration_s, "tasks": tasks, "clock_skew_s": skew, "start": start},
        )
        for _, results, plan, skew in started
    ]
    for process in processes:
        process.start()
    try:
        outcome: list[list[list[int]]] = [[] for _ in groups]
        for index, results, _, _ in started:
            outcome[index].append(results.get(True, duration_s + 90))
    finally:
        for process in processes:
            process.join(15)
            if process.is_alive():
                process.kill()
    assert all(process.exitcode == 0 for process in processes)
    return outcome


def assert_within(
    granted_at: Sequence[int], *, b_eff: int, interval_us: float, start_us: int | None = None
) -> None:
    """GCRA conformance: any n grants within a span L need n <= b_eff + L / T; with ``start_us`` (an empty
    bucket then), also n <= (t - start) / T for the n grants up to t."""
    times = sorted(granted_at)
    for first in range(len(times)):
        for last in range(first, len(times)):
            count = last - first + 1
            span_us = times[last] - times[first]
            assert count <= b_eff + span_us / interval_us + 1e-6, (
                f"{count} grants within {span_us / 1e6:.3f} s exceed b_eff {b_eff} + rate"
            )
    if start_us is not None:
        for count, at in enumerate(times, start=1):
            assert count <= (at - start_us) / interval_us + 1e-6, f"{count} grants by {at - start_us} us"


async def test_eight_processes_hammer_one_bucket_exactly_even_with_clocks_minutes_apart(
    redis_url: str, redis_client: aioredis.Redis, redis_key_prefix: str
) -> None:
    """rate 10/s, burst 5, 20 s: grants never exceed burst + rate * elapsed (in any window, in fact the
    stricter b_eff + rate * elapsed) and reach at least 97 % of it. Two buckets are hammered at once by 8
    processes each: one by processes with true clocks, one by processes whose clocks are minutes apart."""
    skewed_seller = "B2SKEWED"
    await start_full(redis_client, redis_key_prefix)
    await start_full(redis_client, redis_key_prefix, skewed_seller)
    plan = HammerPlan(redis_url, redis_key_prefix, SELLER, OP, RATE, BURST, DEADLINE_S, APP)
    skewed = HammerPlan(redis_url, redis_key_prefix, skewed_seller, OP, RATE, BURST, DEADLINE_S, APP)
    true_clocks = [0.0] * 8
    skews = [-420.0, -300.0, -120.0, -7.5, 0.0, 60.0, 180.0, 600.0]
    duration_s = 20.0
    outcome = await asyncio.to_thread(
        run_hammer_processes, [(plan, true_clocks), (skewed, skews)], duration_s=duration_s
    )
    for per_process in outcome:
        assert all(grants for grants in per_process), "every process got tokens"
        granted_at = sorted(at for grants in per_process for at in grants)
        assert_within(granted_at, b_eff=B_EFF, interval_us=INTERVAL_US)
        elapsed_s = (granted_at[-1] - granted_at[0]) / 1e6
        assert elapsed_s >= duration_s - 1.5, "the hammering ran for the whole 20 s"
        allowed = BURST + RATE * elapsed_s
        assert len(granted_at) <= allowed
        assert len(granted_at) >= 0.97 * allowed, f"{len(granted_at)} grants of {allowed:.1f} allowed"


def amazon_rejections(arrivals_us: Sequence[float], *, rate: float, burst: int, start_us: int) -> int:
    """Replays arrivals through Amazon's token bucket (``burst`` tokens, refilled at ``rate``), empty at
    ``start_us``: how many would get a 429."""
    tokens = 0.0
    last = float(start_us)
    rejected = 0
    for at in sorted(arrivals_us):
        tokens = min(float(burst), tokens + (at - last) * rate / 1e6)
        last = at
        if tokens >= 1 - 1e-9:
            tokens -= 1
        else:
            rejected += 1
    return rejected


async def test_a_long_run_at_scaled_rates_uses_the_rate_and_never_over_grants(
    redis_url: str, redis_client: aioredis.Redis, redis_key_prefix: str
) -> None:
    """createFeed's plan (30 an hour, burst 15) 1200 times faster: 20 s are almost 7 hours of Amazon time.
    The bucket starts empty; 4 processes of 2 tasks take all they can. The granted rate is >= 99 % of the
    rate, and replaying the grants through Amazon's bucket with any delay up to the send deadline (the
    worst being early grants late and later ones on time) gets no 429."""
    scale = 1200.0
    amazon_rate, burst = 0.0083, 15
    send_deadline_s = 0.5
    rate = amazon_rate * scale
    interval_us = 1e6 / rate
    plan = HammerPlan(
        redis_url, redis_key_prefix, SELLER, "createFeed", amazon_rate, burst, send_deadline_s, APP, scale
    )
    outcome = await asyncio.to_thread(run_hammer_processes, [(plan, [0.0] * 4)], duration_s=20.0, tasks=2)
    granted_at = sorted(at for grants in outcome[0] for at in grants)
    epoch_us = int(await redis_client.get(BucketKeys.of(redis_key_prefix, SELLER, APP, "createFeed").epoch))
    b_eff = burst - math.ceil(rate * send_deadline_s)
    assert_within(granted_at, b_eff=b_eff, interval_us=interval_us, start_us=epoch_us)
    possible = (granted_at[-1] - epoch_us) / interval_us
    assert len(granted_at) >= 0.99 * possible, f"{len(granted_at)} grants of {possible:.1f} possible"

    deadline_us = send_deadline_s * 1e6
    chance = random.Random(7)
    delays: dict[str, Callable[[int, int], float]] = {
        "none": lambda index, at: 0.0,
        "all at the deadline": lambda index, at: deadline_us,
        "random": lambda index, at: chance.uniform(0, deadline_us),
        "late then on time": lambda index, at: (
            deadline_us if (at - epoch_us) % 4_000_000 < 2_000_000 else 0.0
        ),
        "alternating": lambda index, at: deadline_us * (index % 2),
    }
    for name, delay in delays.items():
        arrivals = [at + delay(index, at) for index, at in enumerate(granted_at)]
        assert amazon_rejections(arrivals, rate=rate, burst=burst, start_us=epoch_us) == 0, name


async def test_waiters_are_served_in_arrival_order(
    redis_client: aioredis.Redis,
    redis_key_prefix: str,
    close_after: CloseAfter,
) -> None:
    limiter = limiter_on(redis_client, redis_key_prefix)
    close_after(limiter)
    await start_full(redis_client, redis_key_prefix)
    while await take_now(limiter):
        pass
    order: list[int] = []

    async def wait_for_token(number: int) -> None:
        await limiter.acquire(OP, SELLER, timeout=10)
        order.append(number)

    waiters = []
    for number in range(5):
        waiters.append(asyncio.create_task(wait_for_token(number)))
        await asyncio.sleep(0.005)  # arrive in order, well within one interval
    await asyncio.gather(*waiters)
    assert order == list(range(5))


async def test_packing_cannot_take_the_last_tokens_but_inventory_can(
    redis_client: aioredis.Redis,
    redis_key_prefix: str,
    close_after: CloseAfter,
) -> None:
    # 1/s keeps refilling negligible while the test runs; 0.5 s of deadline is one token of headroom.
    limiter = RedisRateLimiter(
        redis_client,
        plans=PlanBook({OP: (1.0, 5)}),
        application_id=APP,
        key_prefix=redis_key_prefix,
        send_deadline_s=0.5,
        lane_reserves={"default": 0, "packing": 2, "inventory": 0},
    )
    close_after(limiter)
    await start_full(redis_client, redis_key_prefix)
    assert await take_now(limiter, lane="packing")
    assert await take_now(limiter, lane="packing")
    assert not await take_now(limiter, lane="packing")
    assert await take_now(limiter, lane="inventory")
    assert await take_now(limiter, lane="inventory")
    assert not await take_now(limiter, lane="inventory")


async def test_throttle_and_observed_rate_show_in_status(
    redis_client: aioredis.Redis,
    redis_key_prefix: str,
    close_after: CloseAfter,
) -> None:
    limiter = limiter_on(redis_client, redis_key_prefix)
    close_after(limiter)
    await start_full(redis_client, redis_key_prefix)
    assert await take_now(limiter)
    [status] = await limiter.status(SELLER)
    assert (status.seller_id, status.operation, status.rate, status.effective_burst) == (SELLER, OP, RATE, 4)
    assert B_EFF - 1 <= status.tokens_left <= B_EFF
    assert status.waiters == 0

    await limiter.observe_rate_limit(OP, SELLER, 4.0)
    await limiter.observe_rate_limit(OP, SELLER, 8.0)  # above what was adopted: only lower automatically
    [status] = await limiter.status()
    assert (status.rate, status.adopted_rate) == (4.0, 4.0)

    await limiter.on_throttled(OP, SELLER)
    [status] = await limiter.status(SELLER)
    assert status.tokens_left == 0
    assert not await take_now(limiter)
    assert await limiter.status("SOMEONEELSE") == []


async def test_redis_down_fails_closed_and_a_restarted_redis_starts_empty(
    redis_key_prefix: str, close_after: CloseAfter
) -> None:
    # This test stops and restarts Redis, so it runs its own rather than the session's.
    server = EmbeddedRedis().start()
    port = server.port
    client = aioredis.Redis(
        host=server.host,
        port=port,
        socket_timeout=1.0,
        socket_connect_timeout=1.0,
        retry=Retry(NoBackoff(), 1),
    )
    limiter = limiter_on(client, redis_key_prefix)
    close_after(limiter)
    restarted: EmbeddedRedis | None = None
    try:
        await start_full(client, redis_key_prefix)
        assert await take_now(limiter)

        server.stop()
        with pytest.raises(QuotaUnavailable):
            await limiter.acquire(OP, SELLER, timeout=5)
        with pytest.raises(QuotaUnavailable):
            await limiter.status()

        restarted = EmbeddedRedis(port=port).start()
        # Redis lost every bucket: it must not trust a burst it knows nothing about.
        with pytest.raises(QuotaTimeout):
            await limiter.acquire(OP, SELLER, timeout=0)
        grant = await limiter.acquire(OP, SELLER, timeout=5)
        assert grant.operation == OP
    finally:
        await client.aclose()
        server.stop()
        if restarted is not None:
            restarted.stop()


async def test_build_rate_limiter_from_settings(redis_url: str, redis_key_prefix: str) -> None:
    settings = Settings(
        redis=RedisSettings(
            url=redis_url,
            key_prefix=redis_key_prefix,
            username=os.environ.get("ORDERSYNC_REDIS__USERNAME"),
            password=os.environ.get("ORDERSYNC_REDIS__PASSWORD"),
        )
    )
    limiter = build_rate_limiter(settings, [])
    try:
        assert limiter.key_prefix == redis_key_prefix
        assert limiter.plans.plan("getOrderItems", SELLER) == (0.5, 30)
        with pytest.raises(QuotaTimeout):  # a first-ever bucket starts empty
            await limiter.acquire("getOrderItems", SELLER, timeout=0)
    finally:
        async for key in limiter.redis.scan_iter(match=f"{redis_key_prefix}*"):
            await limiter.redis.delete(key)
        await limiter.aclose()


@pytest.mark.parametrize("general", [True, False], ids=["reservation-and-sub-bucket", "plain-fast-path"])
async def test_the_python_mirror_decides_exactly_as_the_lua_script(
    redis_client: aioredis.Redis,
    redis_key_prefix: str,
    general: bool,
    close_after: CloseAfter,
) -> None:
    """Replays every script call on :class:`GcraStore` at the Redis TIME the script reported: the
    in-memory limiter of the unit tests must make the very same decisions, lanes, the reservation window
    (2 s here, so the run crosses several) and a sub-bucket included. Without a reservation and a
    sub-bucket, most grants take the script's fast path, which must decide exactly as the general one."""
    limiter = RedisRateLimiter(
        redis_client,
        plans=PlanBook({OP: (RATE, BURST)}),
        application_id=APP,
        key_prefix=redis_key_prefix,
        send_deadline_s=DEADLINE_S,
        reservations=[Reservation(OP, "inventory", tokens=2, interval_s=2.0, lead_s=0.5)] if general else [],
        sub_limits={OP: {"SUB": (6.0, 4)}} if general else {},
    )
    close_after(limiter)
    mirror = GcraStore()
    pair = f"{SELLER}:{APP}"
    plan = limiter._plan_args(OP, SELLER)
    reservation = limiter._reservation_args(OP)
    subs = limiter._subs(OP, SELLER, "SUB") if general else ()
    grace_us = int(limiter.waiter_grace_s * 1_000_000)
    lanes = ("packing", "packing", "inventory", "inventory", "default")
    members = {
        waiter_member(limiter.reserve_of(lane), reserved=lane == "inventory", lane=lane, token=f"w{n}"): lane
        for n, lane in enumerate(lanes)
    }
    members["2|w9"] = "old-format"
    scores: dict[str, int | None] = dict.fromkeys(members)
    chance = random.Random(20240601)
    outcomes: list[tuple[bool, bool]] = []
    for _ in range(200):
        await asyncio.sleep(chance.uniform(0, 0.04))
        member = chance.choice(sorted(scores))
        roll = chance.random()
        if roll < 0.03:
            retry_us, now_us = await limiter._run("throttled", OP, SELLER, plan)
            assert int(retry_us) == mirror.throttled(pair, OP, plan, int(now_us))
            continue
        if roll < 0.06:
            observed = repr(chance.choice((2.0, 5.0, 12.0)))
            adopted, now_us = await limiter._run("adopt", OP, SELLER, plan, observed)
            assert bool(adopted) == mirror.adopt(pair, OP, plan, int(now_us), observed)
            continue
        if roll < 0.12:
            await limiter._leave(OP, SELLER, plan, member)
            mirror.leave(pair, OP, member)
            scores[member] = None
            continue
        enqueue = chance.random() < 0.9
        with_sub = subs if chance.random() < 0.3 else ()
        reserve = int(member.split("|", 1)[0])
        reply = await limiter._acquire_once(
            OP,
            SELLER,
            plan,
            reserve=reserve,
            member=member,
            previous_score=scores[member],
            enqueue=enqueue,
            reservation=reservation,
            subs=with_sub,
        )
        expected = mirror.acquire(
            pair,
            OP,
            plan,
            reply.now_us,
            reserve=reserve,
            member=member,
            previous_score=scores[member],
            enqueue=enqueue,
            grace_us=grace_us,
            reservation=reservation,
            subs=with_sub,
        )
        assert reply == expected
        peeked = await limiter._peek(OP, SELLER)
        assert peeked == mirror.peek(pair, OP, plan, peeked.now_us, reservation=reservation)
        if reply.granted:
            scores[member] = None
        elif enqueue:
            scores[member] = reply.waiter_score or scores[member]
        outcomes.append((reply.granted, reply.queued_before > 0))
    # The scenario must have covered grants, waits and waits behind others.
    assert sum(granted for granted, _ in outcomes) >= 10
    assert sum(not granted for granted, _ in outcomes) >= 10
    assert sum(behind for _, behind in outcomes) >= 5
    if general:
        [sub_status] = [status for status in await limiter.status(SELLER) if status.operation == f"{OP}:SUB"]
        assert sub_status.effective_burst == 3


async def test_lanes_on_redis_packing_backlog_and_the_hourly_inventory_feed(
    redis_client: aioredis.Redis,
    redis_key_prefix: str,
    close_after: CloseAfter,
) -> None:
    """createFeed 2400 times faster: about 20 feeds a second, the hour is 1.5 s, the reservation opens
    0.25 s before it. A backlog of shipments (3 tasks) cannot delay the inventory run's feed at each
    flush; with inventory idle, the shipments get the whole rate."""
    scale = 2400.0
    settings = Settings()
    limiter = RedisRateLimiter(
        redis_client,
        plans=PlanBook(time_scale=scale),
        application_id=APP,
        key_prefix=redis_key_prefix,
        send_deadline_s=0.1,
        **limiter_options(settings),
    )
    close_after(limiter)
    rate = 0.0083 * scale
    window_s = 3600 / scale
    await start_full(redis_client, redis_key_prefix)
    stop = asyncio.Event()
    packed: list[int] = []

    async def ship() -> None:
        while not stop.is_set():
            grant = await limiter.acquire("createFeed", SELLER, lane="packing", timeout=5)
            packed.append(grant.decided_at_us)

    async def wait_for_flush_time() -> None:
        # The next multiple of the (scaled) hour on Redis's clock.
        now_s = await redis_time_us(redis_client) / 1e6
        await asyncio.sleep(window_s - now_s % window_s + 0.001)

    shippers = [asyncio.create_task(ship()) for _ in range(3)]
    try:
        inventory_waits = []
        for _ in range(4):
            await wait_for_flush_time()
            grant = await limiter.acquire(
                "createFeed", SELLER, lane="inventory", timeout=5, feed_type="JSON_LISTINGS_FEED"
            )
            inventory_waits.append(grant.waited_s)
        # Inventory idle for a while: the shipments alone.
        idle_from = await redis_time_us(redis_client)
        await asyncio.sleep(3.0)
        idle_to = await redis_time_us(redis_client)
    finally:
        stop.set()
        await asyncio.gather(*shippers, return_exceptions=True)
    assert all(wait < 2 / rate for wait in inventory_waits), inventory_waits
    shipped_while_idle = sum(idle_from <= at <= idle_to for at in packed)
    expected = rate * (idle_to - idle_from) / 1e6
    assert shipped_while_idle >= 0.97 * expected - 1, f"{shipped_while_idle} of {expected:.1f}"
    statuses = {status.operation: status for status in await limiter.status(SELLER)}
    assert statuses["createFeed:JSON_LISTINGS_FEED"].effective_burst >= 1


async def test_redis_killed_and_restarted_mid_run(redis_key_prefix: str, close_after: CloseAfter) -> None:
    """Two tasks take tokens all along; Redis is killed for a second and comes back empty. Nothing is
    granted while it is down, the limiter says so (healthy, the redis_up gauge), and the grants after it
    comes back start from an empty bucket and follow the rate."""
    server = EmbeddedRedis().start()
    port = server.port
    client = aioredis.Redis(
        host=server.host,
        port=port,
        socket_timeout=0.5,
        socket_connect_timeout=0.5,
        retry=Retry(NoBackoff(), 1),
    )
    limiter = limiter_on(client, redis_key_prefix)
    close_after(limiter)
    restarted: EmbeddedRedis | None = None
    granted: list[tuple[float, int]] = []  # (local monotonic time, Redis TIME) of each grant
    unavailable: list[float] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def take() -> None:
        while not stop.is_set():
            try:
                grant = await limiter.acquire(OP, SELLER, timeout=1)
            except QuotaUnavailable:
                unavailable.append(loop.time())
                await asyncio.sleep(0.05)
                continue
            except QuotaTimeout:
                continue
            granted.append((loop.time(), grant.decided_at_us))

    try:
        await start_full(client, redis_key_prefix)
        takers = [asyncio.create_task(take()) for _ in range(2)]
        await asyncio.sleep(1.5)
        await asyncio.to_thread(server.stop)
        down_at = loop.time()
        await asyncio.sleep(1.0)
        assert not limiter.healthy
        assert REGISTRY.get_sample_value("ordersync_quota_redis_up") == 0
        up_at = loop.time()
        restarted = await asyncio.to_thread(EmbeddedRedis(port=port).start)
        await asyncio.sleep(2.0)
        stop.set()
        await asyncio.gather(*takers)
        assert limiter.healthy
        assert REGISTRY.get_sample_value("ordersync_quota_redis_up") == 1
        assert unavailable, "the outage was noticed"
        assert not [at for at, _ in granted if down_at < at < up_at], "nothing granted while Redis was down"
        after = sorted(decided for at, decided in granted if at >= up_at)
        assert len(after) >= 10, "grants resumed by themselves"
        epoch_us = int(await client.get(BucketKeys.of(redis_key_prefix, SELLER, APP, OP).epoch))
        assert_within(after, b_eff=B_EFF, interval_us=INTERVAL_US, start_us=epoch_us)
    finally:
        stop.set()
        await client.aclose()
        server.stop()
        if restarted is not None:
            restarted.stop()


async def test_a_failover_to_a_replica_quarantines_the_buckets(
    redis_key_prefix: str, close_after: CloseAfter
) -> None:
    """A replica that is promoted holds the buckets as replicated, maybe without the last grants, and with
    its own clock: the first decision on it notices another server and treats every bucket as empty."""
    primary = EmbeddedRedis().start()
    replica = EmbeddedRedis().start()
    to_primary = aioredis.Redis(host=primary.host, port=primary.port)
    to_replica = aioredis.Redis(host=replica.host, port=replica.port)
    try:
        await to_replica.replicaof(primary.host, primary.port)
        for _ in range(100):
            if (await to_replica.info("replication")).get("master_link_status") == "up":
                break
            await asyncio.sleep(0.05)
        before = limiter_on(to_primary, redis_key_prefix)
        close_after(before)
        await start_full(to_primary, redis_key_prefix)
        assert await take_now(before)
        assert await to_primary.execute_command("WAIT", 1, 1000) == 1
        await to_replica.replicaof("NO", "ONE")  # the failover

        after = limiter_on(to_replica, redis_key_prefix)
        close_after(after)
        assert not await take_now(after), "a new server: the bucket counts as empty"
        [status] = await after.status(SELLER)
        assert status.tokens_left == 0
        # Emptied with the full burst: the next token comes (burst - b_eff + 1) intervals later.
        await asyncio.sleep(2 * INTERVAL_US / 1e6 + 0.05)
        assert await take_now(after)
        # Without quarantine, the replicated bucket would have been trusted.
        trusting = RedisRateLimiter(
            to_replica,
            plans=PlanBook({"other": (RATE, BURST)}),
            application_id=APP,
            key_prefix=redis_key_prefix + "-b",
            send_deadline_s=DEADLINE_S,
            quarantine_on_failover=False,
        )
        close_after(trusting)
        await start_full(to_replica, redis_key_prefix + "-b")
        assert await take_now(trusting, op="other")
    finally:
        await to_primary.aclose()
        await to_replica.aclose()
        primary.stop()
        replica.stop()


class _RedisWithAof(EmbeddedRedis):
    """A redis-server that keeps an append-only file in ``data_dir``, so a restart reloads its data."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        super().__init__(port)
        self.data_dir = data_dir

    def _command(self, port: int, work_dir: Path) -> list[str]:
        command = super()._command(port, work_dir)
        command[command.index("--appendonly") + 1] = "yes"
        command[command.index("--dir") + 1] = str(self.data_dir)  # (the work dir is emptied at each start)
        return command


async def test_a_restart_that_reloads_old_data_quarantines_the_buckets(
    redis_key_prefix: str,
    tmp_path: Path,
    close_after: CloseAfter,
) -> None:
    """Redis restarted from its AOF holds the buckets as they were written, maybe without the last grants:
    the first decision after it notices another server (the cached server identity is neither in the AOF
    nor trusted past a restart) and treats every bucket as empty."""
    server = _RedisWithAof(tmp_path).start()
    port = server.port
    client = aioredis.Redis(host=server.host, port=port, retry=Retry(NoBackoff(), 1))
    limiter = limiter_on(client, redis_key_prefix)
    close_after(limiter)
    restarted: EmbeddedRedis | None = None
    try:
        await start_full(client, redis_key_prefix)
        assert await take_now(limiter)
        assert await take_now(limiter), "the same server: decisions go on from the full bucket"
        server.stop()
        restarted = _RedisWithAof(tmp_path, port).start()
        assert await client.get(BucketKeys.of(redis_key_prefix, SELLER, APP, OP).epoch), "data reloaded"
        assert not await take_now(limiter), "a restarted server: the reloaded bucket counts as empty"
    finally:
        await client.aclose()
        server.stop()
        if restarted is not None:
            restarted.stop()


async def test_a_grant_no_replica_acknowledged_is_not_used(
    redis_client: aioredis.Redis,
    redis_key_prefix: str,
    close_after: CloseAfter,
) -> None:
    # A slow bucket (one token in 100 s): a loaded machine cannot refill the burned token before the
    # status is read.
    limiter = RedisRateLimiter(
        redis_client,
        plans=PlanBook({OP: (0.01, BURST)}),
        application_id=APP,
        key_prefix=redis_key_prefix,
        send_deadline_s=DEADLINE_S,
        wait_replicas=1,
        wait_timeout_ms=20,
    )
    close_after(limiter)
    await redis_client.set(
        BucketKeys.of(redis_key_prefix, SELLER, APP, OP).epoch,
        await redis_time_us(redis_client) - 3600_000_000,
    )
    with pytest.raises(QuotaUnavailable, match="replicas acknowledged"):
        await limiter.acquire(OP, SELLER, timeout=0)
    [status] = await limiter.status(SELLER)
    assert status.tokens_left < status.effective_burst, "the token is burned, which is safe"


async def test_quota_status_command_shows_a_table_per_seller_and_operation(
    *,
    redis_url: str,
    redis_client: aioredis.Redis,
    redis_key_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    close_after: CloseAfter,
) -> None:
    limiter = RedisRateLimiter(
        redis_client, plans=PlanBook(), application_id=APP, key_prefix=redis_key_prefix, send_deadline_s=2.0
    )
    close_after(limiter)
    epoch_key = BucketKeys.of(redis_key_prefix, SELLER, APP, "createFeed").epoch
    await redis_client.set(epoch_key, await redis_time_us(redis_client) - 3600_000_000)  # all buckets full
    await limiter.acquire("createFeed", SELLER, lane="packing", timeout=0, feed_type="JSON_LISTINGS_FEED")
    await limiter.acquire("getOrderItems", SELLER, timeout=0)
    await limiter.observe_rate_limit("getOrderItems", SELLER, 0.25)
    monkeypatch.setenv("ORDERSYNC_REDIS__URL", redis_url)
    monkeypatch.setenv("ORDERSYNC_REDIS__KEY_PREFIX", redis_key_prefix)
    monkeypatch.setenv("ORDERSYNC_CHANNELS_FILE", str(tmp_path / "none.yaml"))
    monkeypatch.setenv("COLUMNS", "200")
    get_settings.cache_clear()
    runner = CliRunner()

    result = await asyncio.to_thread(runner.invoke, quota_app, ["status"])
    assert result.exit_code == 0, result.output
    for text in (SELLER, "createFeed", "createFeed:JSON_LISTINGS_FEED", "getOrderItems", "0.25", "15 (14)"):
        assert text in result.output

    result = await asyncio.to_thread(runner.invoke, quota_app, ["status", "--json", "--seller", SELLER])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert {row["operation"] for row in rows} == {
        "createFeed",
        "createFeed:JSON_LISTINGS_FEED",
        "getOrderItems",
    }

    monkeypatch.setenv("ORDERSYNC_REDIS__URL", "redis://127.0.0.1:1/0")
    get_settings.cache_clear()
    result = await asyncio.to_thread(runner.invoke, quota_app, ["status"])
    assert result.exit_code == 4  # Redis unreachable (ordersync.cli.common.ExitCode)
    assert "cannot be reached" in result.output
