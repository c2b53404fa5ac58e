"""The distributed rate limiter every Amazon call passes: GCRA in Redis, clocked by Redis ``TIME``.

Usage::

    limiter = build_rate_limiter(settings, channels.active())
    grant = await limiter.acquire("createFeed", seller_id, lane="inventory", feed_type="JSON_LISTINGS_FEED")
    if grant.expired():
        ...  # too late to send within the headroom: drop it, ask again
    response = await send(...)
    if response.status_code == 429:
        await limiter.on_throttled("createFeed", seller_id)
    elif (limit := response.headers.get("x-amzn-RateLimit-Limit")) is not None:
        await limiter.observe_rate_limit("createFeed", seller_id, float(limit))
"""

from __future__ import annotations

from ordersync.ratelimit.limiter import (
    DEFAULT_LANE_RESERVES,
    DEFAULT_SUB_LIMITS,
    BucketKeys,
    BucketStatus,
    Grant,
    InMemoryRateLimiter,
    RateLimiter,
    RedisRateLimiter,
    Reservation,
    build_rate_limiter,
    effective_burst,
    gcra_script_text,
    limiter_options,
)
from ordersync.ratelimit.plans import PlanBook, UnknownOperationError

__all__ = [
    "DEFAULT_LANE_RESERVES",
    "DEFAULT_SUB_LIMITS",
    "BucketKeys",
    "BucketStatus",
    "Grant",
    "InMemoryRateLimiter",
    "PlanBook",
    "RateLimiter",
    "RedisRateLimiter",
    "Reservation",
    "UnknownOperationError",
    "build_rate_limiter",
    "effective_burst",
    "gcra_script_text",
    "limiter_options",
]
