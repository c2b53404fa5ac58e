"""One faust app per stage process, configured for at-least-once processing on any Kafka.

Every stage is its own consumer group (``ordersync-<stage>``), reads and writes raw bytes (the shared
codec in :mod:`ordersync.schemas.codec` does the encoding, so faust and plain Kafka clients write the
same bytes), and uses short group timeouts so that a restarted or killed worker is replaced in seconds.
No faust Tables: state that must be right (cursors, dedupe marks, sales-order codes, order status)
lives in Redis (:mod:`ordersync.state.store`). A faust Table is local to the worker that owns a partition and
is rebuilt from its changelog topic after a rebalance, so it cannot be shared between stages, read by
the CLI or the dashboard, or updated atomically together with a check (a dedupe mark, a code sequence);
and its recovery depends on broker behaviour that the embedded development broker does not get right
(see :mod:`ordersync.dev.devinfra`).
"""

from __future__ import annotations

import ssl
from typing import Any

import faust
import faust.transport.drivers.aiokafka as faust_aiokafka

from ordersync.logs import logging_config
from ordersync.schemas.topics import TopicSpec
from ordersync.settings import KafkaSettings, Settings

_fetch_wait_ms: int | None = None


def _patch_fetch_wait(fetch_max_wait_ms: int) -> None:
    """faust hard-codes ``fetch_max_wait_ms=1500`` for its consumer; every hop then waits up to 1.5 s on
    brokers that answer a waiting fetch only at its deadline. Use the configured value instead."""
    global _fetch_wait_ms  # noqa: PLW0603 - one process-wide patch, applied once
    if _fetch_wait_ms is None:
        original = faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer

        def create_worker_consumer(self: Any, transport: Any) -> Any:
            consumer = original(self, transport)
            consumer._fetch_max_wait_ms = _fetch_wait_ms
            return consumer

        faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer = (  # type: ignore[method-assign]
            create_worker_consumer
        )
    _fetch_wait_ms = fetch_max_wait_ms


def broker_credentials(kafka: KafkaSettings) -> Any:
    """faust credentials for SASL/TLS from the settings (None for PLAINTEXT)."""
    context = None
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=str(kafka.ssl_cafile) if kafka.ssl_cafile else None)
        if kafka.ssl_certfile is not None:  # mutual TLS
            context.load_cert_chain(
                str(kafka.ssl_certfile),
                str(kafka.ssl_keyfile) if kafka.ssl_keyfile else None,
                kafka.ssl_key_password.get_secret_value() if kafka.ssl_key_password else None,
            )
    if kafka.security_protocol.startswith("SASL"):
        mechanism = kafka.sasl_mechanism or "PLAIN"
        password = kafka.sasl_password.get_secret_value() if kafka.sasl_password else ""
        return faust.SASLCredentials(
            username=kafka.sasl_username or "",
            password=password,
            mechanism=mechanism,
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def make_app(stage: str, settings: Settings) -> faust.App:
    kafka = settings.kafka
    _patch_fetch_wait(kafka.fetch_max_wait_ms)
    return faust.App(
        f"ordersync-{stage}",
        broker=[f"kafka://{host.strip()}" for host in kafka.bootstrap.split(",")],
        broker_credentials=broker_credentials(kafka),
        processing_guarantee="at_least_once",
        broker_session_timeout=kafka.session_timeout_s,
        broker_rebalance_timeout=kafka.rebalance_timeout_s,
        broker_heartbeat_interval=kafka.heartbeat_interval_s,
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=settings.stage.partitions,
        topic_replication_factor=settings.stage.replication_factor,
        # Topics come from the catalogue (`ordersync topics create`); faust must not invent its own.
        topic_allow_declare=False,
        topic_disable_leader=True,
        web_enabled=False,
        # The worker would install its own colour log handlers: keep ordersync's (JSON, masking).
        logging_config=logging_config(settings.log_level, json_lines=settings.log_json),
        producer_acks=-1,
        stream_wait_empty=False,
        store="memory://",
        # A redrive tier's agent holds a parked record until it is due (up to the last tier's delay):
        # faust's "slow processing" and "commit livelock" warnings would report that as a fault. Real
        # stalls are reported by the stage itself (/readyz, the once-a-minute outage log).
        stream_processing_timeout=_longest_wait_s(settings),
        broker_commit_livelock_soft_timeout=_longest_wait_s(settings),
    )


def _longest_wait_s(settings: Settings) -> float:
    return max(settings.redrive.delays_s) / settings.amazon.time_scale + 600.0


def faust_topic(app: faust.App, spec: TopicSpec) -> faust.TopicT:
    return app.topic(
        spec.name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        internal=False,
    )
