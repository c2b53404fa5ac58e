"""The rate limiter against real Redis: tasks and processes sharing one bucket, lanes, outages."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import random
from collections.abc import Sequence

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from ordersync.devinfra import EmbeddedRedis
from ordersync.errors import QuotaTimeout, QuotaUnavailable
from ordersync.ratelimit import (
    BucketKeys,
    PlanBook,
    RateLimiter,
    RedisRateLimiter,
    build_rate_limiter,
)
from ordersync.ratelimit.gcra import GcraStore
from ordersync.ratelimit.loadtest import HammerPlan, hammer_async, hammer_process
from ordersync.settings import RedisSettings, Settings

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
HAMMER_S = 5.0


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


async def test_four_processes_with_skewed_clocks_stay_within_the_bucket_and_use_it(
    redis_url: str, redis_client: aioredis.Redis, redis_key_prefix: str
) -> None:
    await start_full(redis_client, redis_key_prefix)
    plan = HammerPlan(redis_url, redis_key_prefix, SELLER, OP, RATE, BURST, DEADLINE_S, APP)
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    start = context.Barrier(4)
    # Hosts whose clocks are minutes apart: only Redis TIME decides, so it must not matter.
    skews = (-300.0, 0.0, 7.5, 420.0)
    processes = [
        context.Process(
            target=hammer_process,
            args=(plan, results),
            kwargs={"duration_s": HAMMER_S, "clock_skew_s": skew, "start": start},
        )
        for skew in skews
    ]
    for process in processes:
        process.start()
    try:
        per_process: list[list[int]] = [await asyncio.to_thread(results.get, True, 60.0) for _ in processes]
    finally:
        for process in processes:
            await asyncio.to_thread(process.join, 10.0)
            if process.is_alive():
                process.kill()
    assert all(process.exitcode == 0 for process in processes)
    assert all(grants for grants in per_process), "every process got tokens"
    granted_at = [at for grants in per_process for at in grants]
    assert_within_bucket(granted_at)
    assert_uses_the_bucket(granted_at)


async def test_waiters_are_served_in_arrival_order(
    redis_client: aioredis.Redis, redis_key_prefix: str
) -> None:
    limiter = limiter_on(redis_client, redis_key_prefix)
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
    redis_client: aioredis.Redis, redis_key_prefix: str
) -> None:
    # 1/s keeps refilling negligible while the test runs; 0.5 s of deadline is one token of headroom.
    limiter = RedisRateLimiter(
        redis_client,
        plans=PlanBook({OP: (1.0, 5)}),
        application_id=APP,
        key_prefix=redis_key_prefix,
        send_deadline_s=0.5,
    )
    await start_full(redis_client, redis_key_prefix)
    assert await take_now(limiter, lane="packing")
    assert await take_now(limiter, lane="packing")
    assert not await take_now(limiter, lane="packing")
    assert await take_now(limiter, lane="inventory")
    assert await take_now(limiter, lane="inventory")
    assert not await take_now(limiter, lane="inventory")


async def test_throttle_and_observed_rate_show_in_status(
    redis_client: aioredis.Redis, redis_key_prefix: str
) -> None:
    limiter = limiter_on(redis_client, redis_key_prefix)
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


async def test_redis_down_fails_closed_and_a_restarted_redis_starts_empty(redis_key_prefix: str) -> None:
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


async def test_the_python_mirror_decides_exactly_as_the_lua_script(
    redis_client: aioredis.Redis, redis_key_prefix: str
) -> None:
    """Replays every script call on :class:`GcraStore` at the Redis TIME the script reported: the
    in-memory limiter of the unit tests must make the very same decisions."""
    limiter = limiter_on(redis_client, redis_key_prefix)
    mirror = GcraStore()
    pair = f"{SELLER}:{APP}"
    plan = limiter._plan_args(OP, SELLER)
    grace_us = int(limiter.waiter_grace_s * 1_000_000)
    scores: dict[str, int | None] = {f"{reserve}|w{n}": None for n, reserve in enumerate((0, 0, 2, 2, 0))}
    chance = random.Random(20240601)
    outcomes: list[tuple[bool, bool]] = []
    for _ in range(150):
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
        reply = await limiter._acquire_once(
            OP,
            SELLER,
            plan,
            reserve=int(member[0]),
            member=member,
            previous_score=scores[member],
            enqueue=enqueue,
        )
        expected = mirror.acquire(
            pair,
            OP,
            plan,
            reply.now_us,
            reserve=int(member[0]),
            member=member,
            previous_score=scores[member],
            enqueue=enqueue,
            grace_us=grace_us,
        )
        assert reply == expected
        peeked = await limiter._peek(OP, SELLER)
        assert peeked == mirror.peek(pair, OP, plan, peeked.now_us)
        if reply.granted:
            scores[member] = None
        elif enqueue:
            scores[member] = reply.waiter_score
        outcomes.append((reply.granted, reply.queued_before > 0))
    # The scenario must have covered grants, waits and waits behind others.
    assert sum(granted for granted, _ in outcomes) >= 10
    assert sum(not granted for granted, _ in outcomes) >= 10
    assert sum(behind for _, behind in outcomes) >= 5
