"""Prometheus metrics of the rate limiter, all named ``ordersync_quota_*``, labelled by operation (and
lane), not by seller, except tokens left, which means nothing summed over sellers (sellers are few: one per
channel). ``ordersync quota status`` shows every bucket in Redis."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

GRANTS = Counter(
    "ordersync_quota_grants",
    "Amazon request tokens granted by the rate limiter.",
    ["operation", "lane"],
)
WAITS = Counter(
    "ordersync_quota_waits",
    "Acquires that could not be granted at once and had to wait for a token.",
    ["operation"],
)
WAIT_SECONDS = Histogram(
    "ordersync_quota_wait_seconds",
    "Time from asking for a token to getting it.",
    ["operation"],
    buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600),
)
TIMEOUTS = Counter(
    "ordersync_quota_timeouts",
    "Acquires that gave up because no token came within their timeout.",
    ["operation"],
)
UNAVAILABLE = Counter(
    "ordersync_quota_unavailable",
    "Decisions refused because Redis could not be reached (fail closed: nothing granted).",
    ["operation"],
)
THROTTLED = Counter(
    "ordersync_quota_throttled",
    "HTTP 429 answers reported to the limiter; the target is about zero.",
    ["operation"],
)
RATE_ADOPTIONS = Counter(
    "ordersync_quota_rate_adoptions",
    "Times a lower rate reported by Amazon (x-amzn-RateLimit-Limit) replaced the configured one.",
    ["operation"],
)
TOKENS_LEFT = Gauge(
    "ordersync_quota_tokens_left",
    "Tokens left in a bucket at this process's last decision on it (whole tokens, after the headroom).",
    ["operation", "seller"],
)
WAITERS = Gauge(
    "ordersync_quota_waiters",
    "Acquires of this process waiting for a token, per lane (`ordersync quota status`: every process's).",
    ["operation", "lane"],
)
REDIS_UP = Gauge(
    "ordersync_quota_redis_up",
    "1 while the limiter's Redis answers, 0 while it cannot be reached (nothing is granted then).",
)
REDIS_UP.set(1)
UNREPLICATED = Counter(
    "ordersync_quota_unreplicated",
    "Grants not used because fewer replicas than required acknowledged them (Redis WAIT).",
    ["operation"],
)
