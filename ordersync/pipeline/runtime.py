"""What every stage process shares: settings, channels, Redis, the rate limiter, Amazon clients, and the
three things an agent does besides calling its pure function: emit, retry by error kind, dead-letter.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import faust
import httpx

from ordersync.amazon.client import SpApiClient
from ordersync.amazon.operations import ApiCall, ApiName
from ordersync.channels import Channel, ChannelsFile, load_channels
from ordersync.clock import SYSTEM_CLOCK, Clock
from ordersync.errors import InvalidEvent, Permanent, QuotaUnavailable, Retryable, Throttled
from ordersync.kafka.faust_app import faust_topic
from ordersync.logs import bind_log_context, log_context
from ordersync.pipeline.lock import Lock
from ordersync.pipeline.metrics import (
    AMAZON_REQUESTS,
    DEAD_LETTERS,
    PROCESSING_SECONDS,
    RECORD_ERRORS,
    RECORDS_PROCESSED,
)
from ordersync.pipeline.probes import StageWebServer
from ordersync.ratelimit import RateLimiter, build_rate_limiter
from ordersync.redis_client import redis_client
from ordersync.schemas.codec import decode, encode
from ordersync.schemas.envelope import Envelope, Event
from ordersync.schemas.events import EventDeadLettered
from ordersync.schemas.topics import TopicSpec
from ordersync.settings import Settings
from ordersync.state import keys
from ordersync.state.health import HealthBoard, HealthObserver
from ordersync.state.store import Store

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Retryable faults are retried this many times (with backoff) before the input is dead-lettered.
MAX_RETRYABLE_ATTEMPTS = 8
MAX_BACKOFF_S = 60.0
REDIS_PROBE_INTERVAL_S = 2.0
#: Stages whose feeds are listings feeds: their feed calls count for the Listings API's health.
LISTINGS_FEED_STAGES = frozenset({"inventory"})


class _StageApiObserver:
    """Counts every SP-API request in Prometheus and records it on the API health board."""

    def __init__(self, board: HealthBoard) -> None:
        self._health = HealthObserver(board)

    async def on_call(self, channel: Channel, call: ApiCall) -> None:
        AMAZON_REQUESTS.labels(call.operation, call.api, call.outcome).inc()
        await self._health.on_call(channel, call)

    async def on_feed_fatal(self, channel: Channel, api: ApiName, feed_id: str, feed_type: str) -> None:
        await self._health.on_feed_fatal(channel, api, feed_id, feed_type)


class StageRuntime:
    def __init__(
        self,
        stage: str,
        settings: Settings,
        app: faust.App,
        channels: ChannelsFile | None = None,
        limiter: RateLimiter | None = None,
        *,
        clock: Clock = SYSTEM_CLOCK,
    ):
        """``clock``: Amazon's "now" for every instant the stage reckons with (windows, schedules,
        recorded dates); the host's clock in production, the simulator's in tests."""
        self.stage = stage
        self.clock = clock
        self.settings = settings
        self.app = app
        self.channels = channels if channels is not None else load_channels(settings.channels_file)
        self._topics: dict[str, faust.TopicT] = {}
        self._started = asyncio.Lock()
        self._store: Store | None = None
        self._limiter: RateLimiter | None = limiter
        self._http: httpx.AsyncClient | None = None
        self._amazon: dict[str, SpApiClient] = {}
        self._health: HealthBoard | None = None
        #: Next offset to process per (topic, partition): the consumer lag's low end.
        self.next_offsets: dict[tuple[str, int], int] = {}
        #: The worker's loop reached this stage's code (readiness of stages without a consumer).
        self.loop_started = False
        #: A rebalance gave this process its partitions (possibly none, when the group has more members).
        self.assigned = False
        # (mode's signal stubs accept no bound coroutine method.)
        app.on_rebalance_complete.connect(cast(Any, self._on_rebalance_complete))
        app.on_partitions_revoked.connect(cast(Any, self._on_partitions_revoked))
        if settings.stage.web_port is not None:
            # A dependency of the app: started before its consumer, stopped with it.
            app.add_dependency(StageWebServer(self, settings.stage.web_host, settings.stage.web_port))

    async def _on_rebalance_complete(self, sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
        self.assigned = True

    async def _on_partitions_revoked(self, sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
        revoked: Any = args[0] if args else ()
        for tp in revoked:
            self.next_offsets.pop((tp.topic, tp.partition), None)

    def lease(self, job: str, scope: str) -> Lock:
        """The lease on ``job`` for ``scope`` (a channel): one replica of the stage does it at a time."""
        stage = self.settings.stage
        owner = f"{stage.worker_id or socket.gethostname()}/{self.stage}"
        return Lock(self.store.redis, self.store.key_of(keys.LEASE, job, scope), owner, stage.lease_ttl_s)

    # --- lazily started resources (inside the worker's event loop) -------------------------------

    async def start(self) -> None:
        async with self._started:
            if self._store is not None:
                return
            redis = redis_client(self.settings.redis)
            self._store = Store(redis, self.settings.redis.key_prefix, clock=self.clock)
            if self._limiter is None:
                self._limiter = build_rate_limiter(self.settings, self.channels.channels)
            self._http = httpx.AsyncClient(timeout=self.settings.amazon.request_timeout_s)
            self._health = HealthBoard(redis, self.settings.redis.key_prefix, self.settings.health)
            self.loop_started = True

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
        if self._store is not None:
            await self._store.redis.aclose()

    @property
    def limiter_or_none(self) -> RateLimiter | None:
        return self._limiter

    @property
    def health(self) -> HealthBoard:
        """The API health board and notifications, on the runtime's Redis."""
        if self._health is None:
            raise RuntimeError("StageRuntime.start() was not awaited")
        return self._health

    @property
    def store(self) -> Store:
        if self._store is None:
            raise RuntimeError("StageRuntime.start() was not awaited")
        return self._store

    def amazon(self, channel: Channel) -> SpApiClient:
        client = self._amazon.get(channel.name)
        if client is None:
            if self._limiter is None or self._http is None:
                raise RuntimeError("StageRuntime.start() was not awaited")
            client = SpApiClient(
                channel=channel,
                amazon=self.settings.amazon,
                limiter=self._limiter,
                http=self._http,
                observer=_StageApiObserver(self.health),
                feeds_api="listings" if self.stage in LISTINGS_FEED_STAGES else "feeds",
            )
            self._amazon[channel.name] = client
        return client

    def topic(self, spec: TopicSpec) -> faust.TopicT:
        topic = self._topics.get(spec.name)
        if topic is None:
            topic = self._topics[spec.name] = faust_topic(self.app, spec)
        return topic

    # --- emit, decode, dead-letter ----------------------------------------------------------------

    async def emit(self, spec: TopicSpec, key: str, envelope: Envelope[Any]) -> None:
        """Send and wait until Kafka acknowledged it (callers save progress only after this)."""
        if spec.accepts(envelope.event_type) is None:
            raise ValueError(f"{envelope.event_type} does not belong on {spec.name}")
        pending = await self.topic(spec).send(key=key.encode(), value=encode(envelope))
        await pending

    def decode(self, spec: TopicSpec, value: bytes | None) -> Envelope[Event]:
        return decode(value, spec)

    async def dead_letter(self, spec: TopicSpec, event: faust.EventT[Any], error: Exception) -> None:
        """Keep the record whole on the topic's dead-letter companion, with why and where it was."""
        if spec.dlq is None:
            raise RuntimeError(f"{spec.name} has no dead-letter topic in the catalogue") from error
        message = event.message
        key = message.key.decode(errors="replace") if isinstance(message.key, bytes) else None
        value = message.value if isinstance(message.value, bytes) else b""
        record = EventDeadLettered(
            source_topic=spec.name,
            source_partition=message.partition,
            source_offset=message.offset,
            source_key=key,
            original_value_b64=base64.b64encode(value).decode(),
            stage=self.stage,
            error_type=type(error).__name__,
            error=str(error) or type(error).__name__,
            dead_lettered_at=self.clock.now(),
        )
        seller = key.split(":", 1)[0] if key and ":" in key else "unknown"
        envelope = Envelope.wrap(record, seller_id=seller or "unknown", correlation_id=key or "unknown")
        await self.emit(spec.dlq, key or "unknown", envelope)
        DEAD_LETTERS.labels(self.stage, spec.name).inc()
        log.warning(
            "dead-lettered %s[%d]@%d to %s: %s",
            spec.name,
            message.partition,
            message.offset,
            spec.dlq.name,
            error,
        )

    async def retrying(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run ``attempt`` until it succeeds: throttling waits (never an attempt), transient faults back
        off and retry up to a bound, permanent errors propagate at once."""
        failures = 0
        while True:
            try:
                return await attempt()
            except Throttled as exc:
                await asyncio.sleep(exc.retry_after_s * (1 + random.random() * 0.1))
            except QuotaUnavailable as exc:
                # Fail closed: nothing was sent. Wait for Redis as long as it takes.
                log.error("%s: rate limiter unavailable, nothing sent: %s", what, exc)
                await asyncio.sleep(REDIS_PROBE_INTERVAL_S)
            except Retryable as exc:
                failures += 1
                if failures >= MAX_RETRYABLE_ATTEMPTS:
                    raise
                delay = min(MAX_BACKOFF_S, 0.5 * 2**failures) * (0.5 + random.random())
                log.warning("%s: %s; retry %d in %.1fs", what, exc, failures, delay)
                await asyncio.sleep(delay)

    async def process(
        self, spec: TopicSpec, event: faust.EventT[Any], handle: Callable[[Envelope[Event]], Awaitable[None]]
    ) -> None:
        """Decode one record and hand it to the stage; whatever cannot be processed is dead-lettered
        with the reason, and the stage keeps running. Every line logged meanwhile names the record
        (topic, partition, offset, key, seller, order id)."""
        message = event.message
        key = message.key.decode(errors="replace") if isinstance(message.key, bytes) else None
        started = time.perf_counter()
        seller_id = order_id = None
        if key and ":" in key:
            seller_id, rest = key.split(":", 1)
            # Order-keyed topics: the key names the order even when the value cannot be read.
            order_id = rest if spec.key == "order" else None
        with log_context(
            stage=self.stage,
            topic=spec.name,
            partition=message.partition,
            offset=message.offset,
            key=key,
            seller_id=seller_id,
            order_id=order_id,
        ):
            try:
                await self._process(spec, event, handle)
            finally:
                PROCESSING_SECONDS.labels(self.stage, spec.name).observe(time.perf_counter() - started)
                self.next_offsets[(message.topic, message.partition)] = message.offset + 1

    async def _process(
        self, spec: TopicSpec, event: faust.EventT[Any], handle: Callable[[Envelope[Event]], Awaitable[None]]
    ) -> None:
        try:
            envelope = self.decode(spec, event.value)
        except InvalidEvent as exc:
            RECORD_ERRORS.labels(self.stage, spec.name, "invalid").inc()
            await self.dead_letter(spec, event, exc)
            return
        bind_log_context(
            seller_id=envelope.seller_id,
            order_id=getattr(envelope.payload, "amazon_order_id", None),
            event_type=envelope.event_type,
            event_id=str(envelope.event_id),
        )
        try:
            await handle(envelope)
        except (Permanent, Retryable) as exc:
            RECORD_ERRORS.labels(self.stage, spec.name, exc.kind).inc()
            await self.dead_letter(spec, event, exc)
            return
        except Exception:
            RECORD_ERRORS.labels(self.stage, spec.name, "crash").inc()
            raise
        RECORDS_PROCESSED.labels(self.stage, spec.name).inc()
