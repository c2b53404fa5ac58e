"""The Redis client every process uses keeps a task's cancellation (redis-py's own send path loses it
on Python 3.11, and a stage told to stop would run on); a stage runtime closes the Redis clients it
made."""

from __future__ import annotations

import asyncio

import pytest

from ordersync.dev.testing import RecordingRuntime, channels_of
from ordersync.kafka.faust_app import make_app
from ordersync.ratelimit import build_rate_limiter
from ordersync.redis_client import redis_client
from ordersync.settings import RedisSettings, Settings
from ordersync.simulator.testing import TEST_SELLER, tiny_scenario

pytestmark = pytest.mark.stage


async def test_a_task_busy_with_redis_stops_when_cancelled_every_time(redis_url: str) -> None:
    client = redis_client(RedisSettings(url=redis_url, socket_timeout_s=5))
    runs_on = 0
    try:
        for attempt in range(150):
            stop = asyncio.Event()

            async def busy(stop: asyncio.Event = stop) -> None:
                while not stop.is_set():
                    await client.eval("return 1", 0)
                    async with client.pipeline(transaction=True) as pipe:
                        pipe.get("a")
                        pipe.get("b")
                        await pipe.execute()

            task = asyncio.create_task(busy())
            await asyncio.sleep(0.0005 * (attempt % 9))  # cancel at every point of a command
            task.cancel()
            await asyncio.sleep(0.05)
            if not task.done():
                stop.set()
            try:
                await task
            except asyncio.CancelledError:
                continue
            runs_on += 1
        assert runs_on == 0, f"{runs_on} of 150 cancelled tasks ran on"
        # The connections are still in order after all those interrupted commands.
        await client.set("a", "1")
        assert await client.get("a") == "1"
    finally:
        await client.aclose()


async def test_a_runtime_closes_the_rate_limiter_it_made_but_not_one_it_was_given(
    redis_url: str, redis_key_prefix: str
) -> None:
    settings = Settings(redis=RedisSettings(url=redis_url, key_prefix=redis_key_prefix))
    channels = channels_of(tiny_scenario())
    observer = redis_client(RedisSettings(url=redis_url))

    async def connections(settled_at: int | None = None) -> int:
        # The server sees a closed connection go a moment later: wait (briefly) for the count expected.
        for _ in range(50):
            count = len(await observer.client_list())
            if count == settled_at:
                break
            await asyncio.sleep(0.05)
        return count

    try:
        before = await connections()
        made = RecordingRuntime("order-download", settings, make_app("order-download", settings), channels)
        await made.start()
        limiter = made.limiter_or_none
        assert limiter is not None
        await limiter.acquire("getOrder", TEST_SELLER)  # its own Redis connections in use
        assert await connections() > before
        await made.close()
        assert await connections(settled_at=before) == before

        given = build_rate_limiter(settings, channels.channels)
        try:
            runtime = RecordingRuntime(
                "order-download", settings, make_app("order-download", settings), channels, limiter=given
            )
            await runtime.start()
            await runtime.close()
            await given.acquire("getOrder", TEST_SELLER)  # still usable: the runtime left it alone
        finally:
            await given.aclose()
    finally:
        await observer.aclose()
