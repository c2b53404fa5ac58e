"""Leases on a real Redis: one holder at a time, takeover after expiry, a restarted worker resumes."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from ordersync.lease import Lease

pytestmark = pytest.mark.stage


async def test_one_holder_at_a_time_and_takeover_after_expiry(
    redis_client: aioredis.Redis, redis_key_prefix: str
) -> None:
    key = f"{redis_key_prefix}:lease:download:shop"
    first = Lease(redis_client, key, "host-a/order-download", ttl_s=0.3)
    second = Lease(redis_client, key, "host-b/order-download", ttl_s=0.3)
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
    before_crash = Lease(redis_client, key, "host-a/inventory", ttl_s=60)
    assert await before_crash.hold()
    after_restart = Lease(redis_client, key, "host-a/inventory", ttl_s=60)
    assert await after_restart.hold()
    assert not await Lease(redis_client, key, "host-b/inventory", ttl_s=60).hold()


def test_a_lease_needs_a_time_to_live(redis_client: aioredis.Redis) -> None:
    with pytest.raises(ValueError, match="positive"):
        Lease(redis_client, "k", "me", ttl_s=0)
