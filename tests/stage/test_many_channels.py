"""A thousand sellers (issue #19): order download and inventory run every channel's round on a Redis
pool of eight connections, at most ``max_concurrent_channels`` rounds at once, with no error; and a
pool kept busy past its wait fails as Redis unavailable (an outage the stage waits out), not as a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.exceptions

from ordersync.amazon.normalize import parse_time
from ordersync.clock import EpochClock
from ordersync.consumers import inventory
from ordersync.dev.testing import RecordingRuntime, channels_of
from ordersync.errors import is_outage
from ordersync.kafka.faust_app import make_app
from ordersync.producers import order_download
from ordersync.redis_client import redis_client
from ordersync.schemas.topics import DOWNLOAD_CURSORS, ORDERS_DOWNLOADED
from ordersync.settings import AmazonSettings, RedisSettings, Settings
from ordersync.simulator.runner import RunningSimulator
from ordersync.simulator.testing import many_sellers

pytestmark = pytest.mark.stage

CHANNELS = 1000
POOL = 8
TURNS = 16


@pytest.fixture
async def many(redis_url: str, redis_key_prefix: str) -> AsyncIterator[Any]:
    """``many(stage)``: a started runtime with the real rate limiter, every Redis client of it on a pool
    of ``POOL`` connections, for a simulator of ``CHANNELS`` sellers; and that simulator."""
    scenario = many_sellers(CHANNELS)
    sim = RunningSimulator(scenario)
    sim.start()
    sim.state.advance_clock(300)  # Amazon lists changes up to two minutes old: the orders are visible
    made: list[RecordingRuntime] = []

    async def make(stage: str) -> RecordingRuntime:
        settings = Settings(
            redis=RedisSettings(url=redis_url, key_prefix=redis_key_prefix, max_connections=POOL),
            # Amazon's plans 10,000 times faster: no first token waits long (the buckets start empty).
            amazon=AmazonSettings(endpoint=sim.base_url, lwa_endpoint=sim.lwa_url, time_scale=10_000),
            # The round of a thousand channels takes 20-60 s on a shared CI machine (the simulator runs
            # in this process too): the interval it must fit in is two minutes.
            download={"max_concurrent_channels": TURNS, "poll_interval_s": 300},  # type: ignore[arg-type]
            inventory={"max_concurrent_channels": TURNS},  # type: ignore[arg-type]
        )
        runtime = RecordingRuntime(
            stage, settings, make_app(stage, settings), channels_of(scenario), clock=EpochClock(sim.state.now)
        )
        await runtime.start()
        made.append(runtime)
        return runtime

    try:
        yield make, sim
    finally:
        for runtime in made:
            await runtime.close()
        sim.stop()


class Overlap:
    """How many calls of a wrapped coroutine function run at once, and the most that ever did."""

    def __init__(self, wrapped: Callable[..., Awaitable[Any]]) -> None:
        self.wrapped, self.now, self.most, self.calls = wrapped, 0, 0, 0

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.now += 1
        self.calls += 1
        self.most = max(self.most, self.now)
        try:
            return await self.wrapped(*args, **kwargs)
        finally:
            self.now -= 1


async def until(
    done: Callable[[], Awaitable[bool]], timeout_s: float, progress: Callable[[], object] = str
) -> float:
    """Seconds until ``done()`` holds (polled); fails the test after ``timeout_s``, saying ``progress()``."""
    started = time.monotonic()
    while not await done():
        assert time.monotonic() - started < timeout_s, f"not done within {timeout_s} s: {progress()}"
        await asyncio.sleep(0.2)
    return time.monotonic() - started


@pytest.mark.timeout(600)
async def test_a_thousand_channels_each_polled_within_one_interval_on_eight_connections(
    many: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    make, sim = many
    runtime = await make("order-download")
    # Two parts of every round, each done holding the round's turn.
    plans, emits = Overlap(order_download.plan_round), Overlap(order_download.emit_if_new)
    monkeypatch.setattr(order_download, "plan_round", plans)
    monkeypatch.setattr(order_download, "emit_if_new", emits)
    names = {channel.name for channel in runtime.channels.active()}
    assert len(names) == CHANNELS

    def polled() -> set[str]:
        return {saved.channel for saved in runtime.payloads(DOWNLOAD_CURSORS.name)}

    async def all_polled() -> bool:
        return polled() >= names

    polling = asyncio.create_task(order_download.poll_channels(runtime))
    try:
        took = await until(
            all_polled,
            timeout_s=runtime.settings.download.poll_interval_s,
            progress=lambda: f"{len(polled())} channels polled, stalls {runtime.stalls}",
        )
        # Each channel's round recorded (its task health) before the poller is stopped.
        await until(lambda: _all_recorded(runtime, "download", names), timeout_s=30)
    finally:
        polling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await polling
    print(f"\n{CHANNELS} channels polled in {took:.1f} s; at once: {plans.most} plans, {emits.most} emits")
    # Every channel polled (at least once: the plans allow another poll soon at this time scale), every
    # order downloaded once, at most TURNS rounds working at once, and nothing stalled (a pool wait that
    # ran out would have been reported as Redis unavailable) or failed.
    assert plans.calls >= CHANNELS
    assert 1 < plans.most <= TURNS
    assert 1 < emits.most <= TURNS
    downloaded = sorted(event.order.amazon_order_id for event in runtime.payloads(ORDERS_DOWNLOADED.name))
    # Amazon lists what became visible up to two minutes ago (an order can become visible late).
    bound = datetime.fromtimestamp(sim.state.now(), UTC) - timedelta(minutes=2)
    listed = [o["amazon_order_id"] for o in sim.state.truth_orders() if parse_time(o["visible_at"]) <= bound]
    assert len(listed) > 0.95 * CHANNELS
    assert downloaded == sorted(listed)
    assert runtime.stalls == {}
    assert await _errors(runtime, "download", names) == {}
    # The stage's own client and the rate limiter's never held more than their pool.
    for client in (runtime.store.redis, runtime.limiter_or_none.redis):  # type: ignore[union-attr]
        pool: Any = client.connection_pool
        assert pool.max_connections == POOL
        assert len(pool._in_use_connections) + len(pool._available_connections) <= POOL


@pytest.mark.timeout(300)
async def test_a_thousand_inventory_channels_each_run_their_rounds_on_eight_connections(
    many: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    make, _ = many
    runtime = await make("inventory")
    feeds, urgent = Overlap(inventory.feed_step), Overlap(inventory.urgent_step)
    monkeypatch.setattr(inventory, "feed_step", feeds)
    monkeypatch.setattr(inventory, "urgent_step", urgent)
    names = {channel.name for channel in runtime.channels.active()}
    running = asyncio.create_task(inventory.channel_rounds(runtime))
    try:
        # Each channel's first feed round records its outcome (nothing pending: no feed sent).
        took = await until(lambda: _all_recorded(runtime, "inventory", names), timeout_s=60)
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    print(f"\n{CHANNELS} inventory channels' feed rounds in {took:.1f} s, {feeds.most} at once")
    assert feeds.calls >= CHANNELS
    assert urgent.calls >= CHANNELS
    assert feeds.most == TURNS
    assert urgent.most == TURNS
    assert runtime.stalls == {}
    assert await _errors(runtime, "inventory", names) == {}


async def test_a_pool_busy_past_its_wait_fails_as_redis_unavailable(redis_url: str) -> None:
    client = redis_client(RedisSettings(url=redis_url, max_connections=1, pool_timeout_s=0.2))
    try:
        async with client.pipeline(transaction=True) as held:
            await held.watch("a-key")  # a WATCH keeps the pool's one connection until reset
            waited = time.monotonic()
            with pytest.raises(redis.exceptions.ConnectionError) as failed:
                await client.get("another-key")
            assert 0.2 <= time.monotonic() - waited < 2
            assert is_outage(failed.value)
            # Within its wait, a command gets the connection once it is free instead of failing.
            later = asyncio.create_task(client.set("another-key", "1"))
            await asyncio.sleep(0.05)
            assert not later.done()
            await held.reset()
            assert await later
    finally:
        await client.aclose()


async def _all_recorded(runtime: RecordingRuntime, task: str, names: set[str]) -> bool:
    return all([await runtime.store.task(task, name) for name in names])


async def _errors(runtime: RecordingRuntime, task: str, names: set[str]) -> dict[str, str]:
    health = {name: await runtime.store.task(task, name) for name in names}
    return {name: fields["last_error"] for name, fields in health.items() if "last_error" in fields}
