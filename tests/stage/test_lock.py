"""The one Redis lock on a real Redis: one holder at a time, takeover after expiry, a restarted worker
resumes its lease, and a worker whose lock expired can neither release nor renew its successor's."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis

from ordersync.pipeline.lock import Lock

pytestmark = pytest.mark.stage


async def test_one_holder_at_a_time_and_takeover_after_expiry(
    redis_client: aioredis.Redis, redis_key_prefix: str
) -> None:
    key = f"{redis_key_prefix}:lease:download:shop"
    first = Lock(redis_client, key, "host-a/order-download", ttl_s=0.3)
    second = Lock(redis_client, key, "host-b/order-download", ttl_s=0.3)
    assert await first.hold()
    assert not await second.hold()
    assert await first.hold(), "renewed"
    assert await first.holder() == "host-a/order-download"
    await asyncio.sleep(0.45)  # first stopped renewing (crashed)
    assert await second.hold(), "a standby takes over once the lease expired"
    assert not await first.hold()
    await second.release()
    assert await first.holder() is None
    assert await first.hold(), "released: free at once"


async def test_a_worker_restarted_under_the_same_name_takes_its_lease_back(
    redis_client: aioredis.Redis, redis_key_prefix: str
) -> None:
    key = f"{redis_key_prefix}:lease:inventory:shop"
    before_crash = Lock(redis_client, key, "host-a/inventory", ttl_s=60)
    assert await before_crash.hold()
    after_restart = Lock(redis_client, key, "host-a/inventory", ttl_s=60)
    assert await after_restart.hold()
    assert not await Lock(redis_client, key, "host-b/inventory", ttl_s=60).hold()


def test_a_lock_needs_a_time_to_live(redis_client: aioredis.Redis) -> None:
    with pytest.raises(ValueError, match="positive"):
        Lock(redis_client, "k", "me", ttl_s=0)


async def test_an_expired_worker_cannot_release_or_renew_the_lock_another_now_holds(
    redis_client: aioredis.Redis, redis_key_prefix: str
) -> None:
    key = f"{redis_key_prefix}:wb-lock:{{A1SELLER}}"
    slow = Lock(redis_client, key, "worker-a", ttl_s=0.2)
    assert await slow.hold()
    await asyncio.sleep(0.3)  # the worker's step outlived its lock: it expired
    successor = Lock(redis_client, key, "worker-b", ttl_s=60)
    assert await successor.hold(), "an expired lock is free"
    assert not await slow.release(), "not its lock any more: not deleted"
    assert not await slow.renew(), "not its lock any more: not renewed"
    assert await redis_client.get(key) == "worker-b"
    assert await redis_client.pttl(key) > 50_000
    assert not await Lock(redis_client, key, "worker-c", ttl_s=60).hold()
    assert await successor.renew()
    assert await successor.release()
    assert await redis_client.get(key) is None


async def test_a_feed_step_that_outlived_its_lock_leaves_the_next_holder_alone(
    redis_client: aioredis.Redis, redis_key_prefix: str
) -> None:
    key = f"{redis_key_prefix}:inv-lock:{{A1SELLER}}"
    async with Lock(redis_client, key, "worker-a", ttl_s=0.2) as held:
        assert held
        time.sleep(0.3)  # noqa: ASYNC251 - the worker froze (its renewals too): the lock lapsed
        assert await Lock(redis_client, key, "worker-b", ttl_s=60).hold()
        await asyncio.sleep(0.1)  # worker-a runs again: its renewal finds the lock taken
    # Leaving the step released worker-a's lock by compare-and-delete: worker-b's stays.
    assert await redis_client.get(key) == "worker-b"


async def test_a_feed_step_lock_is_exclusive_and_released_after_the_step(
    redis_client: aioredis.Redis, redis_key_prefix: str
) -> None:
    key = f"{redis_key_prefix}:inv-lock:{{A1SELLER}}"
    async with Lock(redis_client, key, "worker-a", ttl_s=60) as held:
        assert held
        async with Lock(redis_client, key, "worker-b", ttl_s=60) as other:
            assert not other, "one worker per seller"
        assert await redis_client.get(key) == "worker-a", "the loser's exit leaves the holder's lock"
    assert await redis_client.get(key) is None


async def test_a_feed_step_keeps_its_lock_for_as_long_as_it_runs(
    redis_client: aioredis.Redis, redis_key_prefix: str
) -> None:
    key = f"{redis_key_prefix}:wb-lock:{{A1SELLER}}"
    async with Lock(redis_client, key, "worker-a", ttl_s=0.2) as held:
        assert held
        await asyncio.sleep(0.7)  # a step several times the lock's time to live (a feed waiting its turn)
        assert not await Lock(redis_client, key, "worker-b", ttl_s=60).hold(), "renewed while it ran"
        assert await redis_client.get(key) == "worker-a"
    assert await redis_client.get(key) is None
