"""The one Redis lock: exclusive, expiring ownership of a key by an owner token.

Two uses, one implementation:

- a **lease** on a per-channel job (polling a channel's orders, flushing its stock): the worker
  :meth:`Lock.hold` s it every round (taken if free, renewed if its own), so a standby takes over
  once the holder stops renewing (crashed) or :meth:`Lock.release` d it (shut down). The owner is
  the worker's name, so a worker restarted under the same name takes its lease back at once;
- a seller's **feed lock** around one feed step (``async with Lock(...) as held``), with an owner
  token of its own (:func:`worker_identity`), renewed while the step runs.

Every step that depends on who holds the key is one Lua script, atomic in Redis: a worker whose
lock expired, and was taken by another meanwhile, can neither renew nor release the other's lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

# Take the lock if free, or renew it if ours; 1 when held by us afterwards.
_HOLD = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] or (not holder and redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# Renew only our own lock (never take a free one); 1 when renewed.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# Release only our own lock; 1 when released.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def worker_identity() -> str:
    """A unique owner token that tells people reading Redis who holds a lock: host, process and a
    random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Lock:
    """Exclusive, expiring ownership of ``key`` by ``owner`` for ``ttl_s`` seconds after each take
    or renewal."""

    def __init__(self, redis: aioredis.Redis, key: str, owner: str, ttl_s: float) -> None:
        if ttl_s <= 0:
            raise ValueError(f"a lock needs a positive time to live, not {ttl_s}")
        self.redis = redis
        self.key = key
        self.owner = owner
        self.ttl_ms = max(1, round(ttl_s * 1000))
        self.held = False
        self._keeper: asyncio.Task[None] | None = None

    async def _run(self, script: str, *args: int) -> bool:
        return bool(await self.redis.eval(script, 1, self.key, self.owner, *args))

    async def hold(self) -> bool:
        """Take the lock if it is free, renew it if it is ours; False while another owner holds it.
        A change (taken, lost) is logged: which replica does a job is worth knowing."""
        held = await self._run(_HOLD, self.ttl_ms)
        if held != self.held:
            log.info("%s %s (%s)", "holding" if held else "standing by for", self.key, self.owner)
        self.held = held
        return held

    async def renew(self) -> bool:
        """Extend the lock if it is still ours; False (and not held) once it expired or another
        owner took it."""
        self.held = await self._run(_RENEW, self.ttl_ms)
        return self.held

    async def release(self) -> bool:
        """Give the lock up now, if it is still ours (a standby takes over at its next try); True
        when it was released."""
        if not self.held:
            return False
        self.held = False
        return await self._run(_RELEASE)

    async def holder(self) -> str | None:
        value = await self.redis.get(self.key)
        return value.decode() if isinstance(value, bytes) else value

    async def __aenter__(self) -> bool:
        """``async with lock as held``: one step under the lock, when ``held``; released after (taken
        quietly: a feed step takes its seller's lock every few seconds). The lock is renewed every
        third of its time to live while the step runs, so a step that takes long (a feed waiting for
        its createFeed token, a slow upload) keeps it; only a worker that stopped (or froze) loses it."""
        self.held = await self._run(_HOLD, self.ttl_ms)
        if self.held:
            self._keeper = asyncio.create_task(self._keep(), name=f"renew {self.key}")
        return self.held

    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(self.ttl_ms / 3000)
            try:
                if not await self.renew():
                    log.warning("%s was lost while a step under it ran (%s)", self.key, self.owner)
                    return
            except (RedisError, OSError) as exc:  # Redis away a moment: the next renewal tries again
                log.warning("could not renew %s: %s", self.key, exc)

    async def __aexit__(self, *exc: object) -> None:
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        await self.release()
