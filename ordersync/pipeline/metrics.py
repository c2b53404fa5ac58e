"""A stage's Prometheus metrics: what the runtime counts and ``/metrics`` serves
(:mod:`ordersync.pipeline.probes`). The rate limiter's own ``ordersync_quota_*`` metrics live with it."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECORDS_PROCESSED = Counter(
    "ordersync_records_processed",
    "Records a stage handled to completion (emitted its outputs, or decided there was nothing to do).",
    ["stage", "topic"],
)


RECORD_ERRORS = Counter(
    "ordersync_record_errors",
    "Records a stage could not process: kind invalid (not decodable), permanent, retryable (retries"
    " exhausted) are dead-lettered; crash is an unexpected exception that stopped the agent.",
    ["stage", "topic", "kind"],
)


DEAD_LETTERS = Counter(
    "ordersync_dead_letters",
    "Records this stage wrote to the topic's dead-letter companion (its DLQ growth since start).",
    ["stage", "topic"],
)


PROCESSING_SECONDS = Histogram(
    "ordersync_processing_seconds",
    "Time to handle one record, decoding to the last emit, dead-lettered ones included.",
    ["stage", "topic"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)


CONSUMER_LAG = Gauge(
    "ordersync_consumer_lag",
    "Records behind on an assigned partition: fetch high-watermark minus the next offset to process.",
    ["stage", "topic", "partition"],
)


ASSIGNED_PARTITIONS = Gauge(
    "ordersync_consumer_assigned_partitions",
    "Partitions assigned to this stage process.",
    ["stage"],
)


STAGE_READY = Gauge("ordersync_stage_ready", "1 while /readyz answers 200, else 0.", ["stage"])


AMAZON_REQUESTS = Counter(
    "ordersync_amazon_requests",
    "SP-API requests sent, by API (orders, feeds, listings) and outcome (ok, throttled, error, auth,"
    " unavailable).",
    ["operation", "api", "outcome"],
)
