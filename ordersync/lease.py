"""Leases: one worker at a time does a per-channel job, however many replicas run.

Polling a channel's orders or flushing its stock feed twice would not duplicate anything downstream (both
are deduplicated), but it would spend the channel's Amazon quota twice. So the worker that does such a
job holds a lease on it in Redis: a key holding the worker's token, expiring unless renewed. A replica
that finds the lease held by another stands by, and takes over once the holder stops renewing (crashed)
or released it (shut down).
"""

from __future__ import annotations

import logging
import os
import socket
import uuid

import redis.asyncio as aioredis

log = logging.getLogger(__name__)

# Take the lease if free, or renew it if ours; 1 when held by us afterwards.
_HOLD = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] or (not holder and redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# Release only our own lease.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def worker_identity() -> str:
    """Who holds a lease, for people reading Redis: host, process and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Lease:
    """Exclusive, expiring ownership of ``key`` by ``owner``."""

    def __init__(self, redis: aioredis.Redis, key: str, owner: str, ttl_s: float) -> None:
        if ttl_s <= 0:
            raise ValueError(f"a lease needs a positive time to live, not {ttl_s}")
        self.redis = redis
        self.key = key
        self.owner = owner
        self.ttl_ms = max(1, round(ttl_s * 1000))
        self.held = False

    async def hold(self) -> bool:
        """Take the lease if it is free, renew it if it is ours; False while another worker holds it."""
        held = bool(await self.redis.eval(_HOLD, 1, self.key, self.owner, self.ttl_ms))
        if held != self.held:
            log.info("%s %s (%s)", "holding" if held else "standing by for", self.key, self.owner)
        self.held = held
        return held

    async def release(self) -> None:
        """Give the lease up now (a clean shutdown), so a standby takes over at its next try."""
        if self.held:
            await self.redis.eval(_RELEASE, 1, self.key, self.owner)
            self.held = False

    async def holder(self) -> str | None:
        value = await self.redis.get(self.key)
        return value.decode() if isinstance(value, bytes) else value
