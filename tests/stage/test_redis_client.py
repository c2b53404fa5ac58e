"""The Redis client every process uses keeps a task's cancellation (redis-py's own send path loses it
on Python 3.11, and a stage told to stop would run on)."""

from __future__ import annotations

import asyncio

import pytest

from ordersync.redis_client import redis_client
from ordersync.settings import RedisSettings

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
