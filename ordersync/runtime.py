"""What every stage process shares: settings, channels, Redis, the rate limiter, Amazon clients, and the
three things an agent does besides calling its pure function: emit, retry by error kind, dead-letter.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import faust
import httpx

from ordersync.amazon.client import SpApiClient
from ordersync.channels import Channel, ChannelsFile, load_channels
from ordersync.errors import InvalidEvent, Permanent, QuotaUnavailable, Retryable, Throttled
from ordersync.faustapp import faust_topic
from ordersync.ratelimit import RateLimiter, build_rate_limiter
from ordersync.schemas.codec import decode, encode
from ordersync.schemas.envelope import Envelope, Event
from ordersync.schemas.events import EventDeadLettered
from ordersync.schemas.topics import TopicSpec
from ordersync.settings import Settings
from ordersync.store import Store, redis_client

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Retryable faults are retried this many times (with backoff) before the input is dead-lettered.
MAX_RETRYABLE_ATTEMPTS = 8
MAX_BACKOFF_S = 60.0
REDIS_PROBE_INTERVAL_S = 2.0


class StageRuntime:
    def __init__(
        self,
        stage: str,
        settings: Settings,
        app: faust.App,
        channels: ChannelsFile | None = None,
        limiter: RateLimiter | None = None,
    ):
        self.stage = stage
        self.settings = settings
        self.app = app
        self.channels = channels if channels is not None else load_channels(settings.channels_file)
        self._topics: dict[str, faust.TopicT] = {}
        self._started = asyncio.Lock()
        self._store: Store | None = None
        self._limiter: RateLimiter | None = limiter
        self._http: httpx.AsyncClient | None = None
        self._amazon: dict[str, SpApiClient] = {}

    # --- lazily started resources (inside the worker's event loop) -------------------------------

    async def start(self) -> None:
        async with self._started:
            if self._store is not None:
                return
            redis = redis_client(self.settings.redis)
            self._store = Store(redis, self.settings.redis.key_prefix)
            if self._limiter is None:
                self._limiter = build_rate_limiter(self.settings, self.channels.channels)
            self._http = httpx.AsyncClient(timeout=self.settings.amazon.request_timeout_s)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
        if self._store is not None:
            await self._store.redis.aclose()

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
                channel=channel, amazon=self.settings.amazon, limiter=self._limiter, http=self._http
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
            dead_lettered_at=datetime.now(UTC),
        )
        seller = key.split(":", 1)[0] if key and ":" in key else "unknown"
        envelope = Envelope.wrap(record, seller_id=seller or "unknown", correlation_id=key or "unknown")
        await self.emit(spec.dlq, key or "unknown", envelope)
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
        with the reason, and the stage keeps running."""
        try:
            envelope = self.decode(spec, event.value)
        except InvalidEvent as exc:
            await self.dead_letter(spec, event, exc)
            return
        try:
            await handle(envelope)
        except (Permanent, Retryable) as exc:
            await self.dead_letter(spec, event, exc)
