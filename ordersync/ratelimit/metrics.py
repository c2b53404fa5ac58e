"""Prometheus metrics of the rate limiter, all named ``ordersync_quota_*``, labelled by operation only
(seller ids would multiply the series for no operational gain; ``ordersync quota status`` has them)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

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
