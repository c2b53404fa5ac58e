"""Each stage worker's heartbeat in Redis: written every ``stage.heartbeat_s`` by every worker, read by
the alerts ("stage not reporting") and the dashboard (infrastructure health). Wall-clock times: whether
a process is alive is a matter of real time, whatever Amazon's clock says."""

from __future__ import annotations

from datetime import datetime
from typing import cast

import redis.asyncio as aioredis

from ordersync.state import keys


async def record_heartbeat(redis: aioredis.Redis, prefix: str, worker: str, now: datetime) -> None:
    """``worker`` (``<stage>|<worker name>``) is alive at ``now``."""
    await redis.hset(keys.HEARTBEATS.key(prefix), worker, now.isoformat())


async def heartbeats(
    redis: aioredis.Redis, prefix: str, *, forget_before: datetime | None = None
) -> dict[str, datetime]:
    """Each stage worker's last heartbeat; workers silent since before ``forget_before`` (scaled down,
    renamed) are forgotten, which resolves their alert."""
    key = keys.HEARTBEATS.key(prefix)
    raw = cast(dict[str, str], await redis.hgetall(key))
    beats: dict[str, datetime] = {}
    gone: list[str] = []
    for worker, at in raw.items():
        try:
            beat = datetime.fromisoformat(at)
        except ValueError:
            gone.append(worker)
            continue
        if forget_before is not None and beat < forget_before:
            gone.append(worker)
        else:
            beats[worker] = beat
    if gone:
        await redis.hdel(key, *gone)
    return beats
