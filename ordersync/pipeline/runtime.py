"""What every stage process shares: settings, channels, Redis, the rate limiter, Amazon clients, and the
three things an agent does besides calling its pure function: emit, retry by error kind, dead-letter.

No record is acknowledged unprocessed. :meth:`StageRuntime.consume` acknowledges a record only after
:meth:`StageRuntime.process` settled it, and ``process`` settles every record in exactly one way:

- processed (the handler returned);
- kept and tried again in place while Redis, the broker or the rate limiter is down
  (:func:`~ordersync.errors.is_outage`), or while Amazon throttles; the stage reports itself stalled
  (``/readyz`` answers 503) until the record goes through;
- parked on a redrive tier (:mod:`ordersync.pipeline.redrive`) when a transient fault outlived the
  in-line retries, or when an earlier record of its order is parked: tried again later, with growing
  delays, until the redrive deadline;
- dead-lettered with the reason: invalid input, a permanent refusal, a transient fault still failing at
  the redrive deadline, or an unexpected exception (a bug) that failed again when retried.

A worker stopped while a record is in hand leaves it unacknowledged, so it is read again.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import logging
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from functools import partial
from typing import Any, TypeVar, cast

import faust
import httpx
from kafka import KafkaConsumer, TopicPartition
from redis import exceptions as redis_errors

from ordersync.amazon.client import SpApiClient
from ordersync.amazon.operations import ApiCall, ApiName
from ordersync.channels import Channel, ChannelsFile, load_channels
from ordersync.clock import SYSTEM_CLOCK, Clock
from ordersync.errors import (
    InvalidEvent,
    Permanent,
    Retryable,
    StateLost,
    Throttled,
    UnknownChannel,
    Unreachable,
    is_outage,
)
from ordersync.kafka.admin import kafka_client_config
from ordersync.kafka.faust_app import faust_topic
from ordersync.kafka.reader import Record, read_topic
from ordersync.logs import EveryInterval, bind_log_context, log_context, remember_secrets
from ordersync.pipeline.cancellation import raise_if_cancel_requested
from ordersync.pipeline.lanes import KeyedLanes
from ordersync.pipeline.lock import Lock
from ordersync.pipeline.metrics import (
    AMAZON_REQUESTS,
    DEAD_LETTERS,
    PROCESSING_SECONDS,
    RECORD_ERRORS,
    RECORDS_PROCESSED,
)
from ordersync.pipeline.probes import StageWebServer
from ordersync.pipeline.redrive import (
    DUE_POLL_S,
    SourceRecord,
    gave_up_reason,
    is_last_try,
    may_try,
    parked_record,
    waited_too_long,
    waiting_lines,
)
from ordersync.pipeline.schedule import Wakeups
from ordersync.privacy.keyring import KeyRing, open_key_ring
from ordersync.privacy.orders import Retention, personal_fields, seal_order, without_personal
from ordersync.ratelimit import RateLimiter, RedisRateLimiter, build_rate_limiter
from ordersync.ratelimit.limiter import plan_book
from ordersync.redis_client import redis_client
from ordersync.schemas.codec import decode, encode
from ordersync.schemas.envelope import Envelope, Event
from ordersync.schemas.events import AmazonOrder, EventDeadLettered, RecordParked
from ordersync.schemas.topics import CATALOGUE, REDRIVE_TIERS, TopicSpec, by_name
from ordersync.secret_store import SecretStore, open_channel_secrets, open_secret_store
from ordersync.settings import RedriveSettings, Settings
from ordersync.state import keys
from ordersync.state.channel_registry import ChannelRegistry
from ordersync.state.health import HealthBoard, HealthObserver
from ordersync.state.lifetime import OrderLifetime
from ordersync.state.store import Store

log = logging.getLogger(__name__)
T = TypeVar("T")
#: "Not read yet" (a generation marker may be None: gone).
_UNREAD = object()

#: Retryable faults are retried in line this many times (with backoff, about 10 s in all) before the
#: record is parked on the redrive tiers, which hold it without blocking its partition.
MAX_RETRYABLE_ATTEMPTS = 4
MAX_BACKOFF_S = 60.0
REDIS_PROBE_INTERVAL_S = 2.0
#: While Redis or the broker is down a record is tried again with backoff growing to this.
MAX_OUTAGE_BACKOFF_S = 30.0
#: An unexpected exception (a bug, a library's surprise) is tried this often before the record is
#: dead-lettered with it.
MAX_UNEXPECTED_ATTEMPTS = 3
#: Larger originals are dead-lettered by reference (topic, partition, offset): base64 would not fit in
#: the broker's 1 MB message.
MAX_DEAD_LETTER_COPY_BYTES = 512 * 1024
#: A rebuild of the waiting lines waits this long for the consumer group to assign partitions.
ASSIGNMENT_WAIT_S = 120.0
#: The largest event a stage publishes; the broker refuses messages over 1 MB.
MAX_EMIT_BYTES = 900 * 1024
#: A dead letter's reason is cut to this many characters.
MAX_REASON_CHARS = 2000
#: How long a redriven record waits for its stage's agent on the source topic to start (its handler).
HANDLER_WAIT_S = 120.0
#: True while the record in hand is on its last redrive try: a transient failure now is final.
_LAST_TRY: contextvars.ContextVar[bool] = contextvars.ContextVar("last_redrive_try", default=False)

#: Stages whose feeds are listings feeds: their feed calls count for the Listings API's health.
LISTINGS_FEED_STAGES = frozenset({"inventory"})


async def _set(event: asyncio.Event) -> None:
    await event.wait()


def _file_channels(settings: Settings, *, missing_is_empty: bool) -> ChannelsFile:
    """The channels file's channels. ``missing_is_empty``: no file is no channel (a stage that takes its
    channels from the registry needs none); a file that is there must be valid either way."""
    if missing_is_empty and not settings.channels_file.exists():
        log.info(
            "no channels file at %s: the channel registry alone names the channels", settings.channels_file
        )
        return ChannelsFile(channels=())
    return load_channels(settings.channels_file)


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
        follow_channels: bool = False,
    ):
        """``clock``: Amazon's "now" for every instant the stage reckons with (windows, schedules,
        recorded dates); the host's clock in production, the simulator's in tests. ``follow_channels``:
        the channels file merged with the channel registry, followed while the stage runs (a stage
        process); otherwise ``channels`` (or the file) as they are."""
        self.stage = stage
        self.clock = clock
        self.settings = settings
        self.app = app
        if channels is None:
            channels = _file_channels(settings, missing_is_empty=follow_channels)
        remember_secrets(settings, channels)
        self.registry = (
            ChannelRegistry(
                channels,
                settings=settings,
                redis=lambda: self.store.redis,
                open_secrets=self._open_secrets,
            )
            if follow_channels
            else ChannelRegistry(channels)
        )
        self.registry.on_change(self._channels_changed)
        self._topics: dict[str, faust.TopicT] = {}
        self._started = asyncio.Lock()
        self._store: Store | None = None
        self._limiter: RateLimiter | None = limiter
        #: The limiter this runtime made (and closes), when none was given.
        self._built_limiter: RedisRateLimiter | None = None
        self._http: httpx.AsyncClient | None = None
        self._amazon: dict[str, SpApiClient] = {}
        self._health: HealthBoard | None = None
        self._wakeups: Wakeups | None = None
        self._key_ring: KeyRing | None = None
        self._key_ring_stack = AsyncExitStack()
        self._key_ring_lock = asyncio.Lock()
        self._secret_store: SecretStore | None = None
        self._secret_store_lock = asyncio.Lock()
        #: Next offset to process per (topic, partition): the consumer lag's low end.
        self.next_offsets: dict[tuple[str, int], int] = {}
        #: The worker's loop reached this stage's code (readiness of stages without a consumer).
        self.loop_started = False
        #: A rebalance gave this process its partitions (possibly none, when the group has more members).
        self.assigned = False
        #: What cannot make progress now and why (a topic's record, a periodic task): ``/readyz`` is 503
        #: while any is here. Cleared when the same work goes through.
        self.stalls: dict[str, str] = {}
        self._outage_log = EveryInterval()
        #: What the stage rebuilds from Kafka when Redis lost its state (see :meth:`on_redis_reset`).
        self._rebuilders: list[Callable[[], Awaitable[object]]] = []
        #: Set while Redis holds the stage's state; records wait while a rebuild runs.
        self._state_ready = asyncio.Event()
        self._state_ready.set()
        self._generation: str | None = None
        #: The Redis server (its run_id) the generation was checked on, and the connections made by then.
        self._server: str | None = None
        self._connects = 0
        self._connects_checked = -1
        #: A rebuild started and did not finish (it failed): the next check runs it again.
        self._rebuild_owed = False
        #: Set once the consumer group gave this process its partitions (a rebuild of the waiting lines
        #: needs to know which redrive partitions are its own).
        self._assignment_known = asyncio.Event()
        #: One generation check at a time: a second caller waits for the first one's rebuild.
        self._generation_lock = asyncio.Lock()
        #: Each consumed topic's handler, for its records coming back from the redrive tiers.
        self._handlers: dict[str, Callable[[Envelope[Event]], Awaitable[None]]] = {}
        self._handler_added = asyncio.Condition()
        # (mode's signal stubs accept no bound coroutine method.)
        app.on_rebalance_complete.connect(cast(Any, self._on_rebalance_complete))
        app.on_partitions_revoked.connect(cast(Any, self._on_partitions_revoked))
        if settings.stage.web_port is not None:
            # A dependency of the app: started before its consumer, stopped with it.
            app.add_dependency(StageWebServer(self, settings.stage.web_host, settings.stage.web_port))

    # --- the channels, followed without a restart ------------------------------------------------

    @property
    def channels(self) -> ChannelsFile:
        """The channels now (the registry's snapshot): read it where it is needed, never keep it."""
        return self.registry.snapshot

    @channels.setter
    def channels(self, channels: ChannelsFile) -> None:
        self.registry.replace(channels)

    def _channels_changed(self, channels: ChannelsFile) -> None:
        # A client made for a channel's old definition (credentials, region) is made again at next use;
        # the limiter takes the new channels' usage plans.
        for name, client in list(self._amazon.items()):
            current = next((c for c in channels.channels if c.name == name), None)
            if current != client.channel:
                del self._amazon[name]
        if self._built_limiter is not None:
            self._built_limiter.plans = plan_book(self.settings, channels.channels)

    async def _open_secrets(self, channel: Channel) -> Channel:
        """``channel`` with its secret-store references opened (its secrets in memory only)."""
        if not channel.stored_secrets():
            return channel
        async with self._secret_store_lock:
            if self._secret_store is None:
                self._secret_store = await open_secret_store(self.settings, self._key_ring_stack)
        return await open_channel_secrets(channel, self._secret_store)

    async def follow_channels(self) -> None:
        """Follow the channel registry for as long as the stage runs (a stage process's task)."""
        await self.start()
        await self.registry.follow(self.settings.stage.channel_refresh_s, self.survive)

    async def each_active_channel(self, name: str, run: Callable[[Channel], Awaitable[None]]) -> None:
        """``run(channel)`` for every active channel, each on a task of its own, for as long as the stage
        runs, following the registry: started for a channel added or activated, stopped for one
        deactivated or removed, started again with the new definition for one changed. What a run
        raises ends this (as it would end the stage's task)."""
        if self.registry.follows and not self.registry.loaded.is_set():
            await self.start()
            while not await self.survive("channel registry", self.registry.refresh):
                if self.registry.loaded.is_set():
                    break
                await asyncio.sleep(self.settings.stage.channel_refresh_s)
        running: dict[str, tuple[Channel, asyncio.Future[None]]] = {}
        try:
            while True:
                change = self.registry.change()
                wanted = {channel.name: channel for channel in self.channels.active()}
                for channel_name, (channel, task) in list(running.items()):
                    if task.done():
                        task.result()  # a run that ended raises here (or ended: started again below)
                    if wanted.get(channel_name) != channel:
                        task.cancel()
                        await asyncio.gather(task, return_exceptions=True)
                        del running[channel_name]
                        log.info("%s %s: stopped (channel changed or deactivated)", name, channel_name)
                for channel_name, channel in wanted.items():
                    if channel_name not in running or running[channel_name][1].done():
                        task = asyncio.ensure_future(run(channel))
                        running[channel_name] = (channel, task)
                changed: asyncio.Future[None] = asyncio.ensure_future(_set(change))
                try:
                    await asyncio.wait(
                        [changed, *(task for _, task in running.values())],
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    changed.cancel()
        finally:
            for _, task in running.values():
                task.cancel()
            await asyncio.gather(*(task for _, task in running.values()), return_exceptions=True)

    async def _on_rebalance_complete(self, sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
        self.assigned = True
        self._assignment_known.set()

    async def _on_partitions_revoked(self, sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
        revoked: Any = args[0] if args else ()
        for tp in revoked:
            self.next_offsets.pop((tp.topic, tp.partition), None)

    def lease(self, job: str, scope: str) -> Lock:
        """The lease on ``job`` for ``scope`` (a channel): one replica of the stage does it at a time."""
        stage = self.settings.stage
        return Lock(
            self.store.redis, self.store.key_of(keys.LEASE, job, scope), self.owner, stage.lease_ttl_s
        )

    @property
    def owner(self) -> str:
        """This worker of the stage, as a lease or a claim names it: the same after a restart (the same
        worker id, or the same host), so a restarted worker takes its own claims again at once."""
        return f"{self.settings.stage.worker_id or socket.gethostname()}/{self.stage}"

    # --- Redis is fast state, rebuilt from Kafka --------------------------------------------------

    def on_redis_reset(self, rebuild: Callable[[], Awaitable[object]]) -> None:
        """``rebuild`` runs, before another record is processed, whenever this stage finds Redis without
        its state: at the first start on an empty Redis, and after Redis lost its data while the stage
        ran (:meth:`check_generation`). Records wait for the first check (:meth:`watch_generation`)."""
        self._rebuilders.append(rebuild)
        self._state_ready.clear()

    @property
    def rebuilds_state(self) -> bool:
        """Whether this stage rebuilds state from Kafka (so state it finds missing was lost)."""
        return bool(self._rebuilders)

    async def confirm_state(self) -> None:
        """Before a record is handled: Redis still holds this stage's state (its generation marker is
        the one this process knows), else it is rebuilt from Kafka first. One GET per record: between two
        periodic checks, a Redis restarted empty (redis-py reconnects without a word) would otherwise be
        read as "nothing known": an unknown SKU, a first sales order code."""
        if not self._rebuilders:
            return
        if self._state_ready.is_set() and await self._state_known():
            return
        # (Under its lock: waits for a rebuild another task runs, or runs one.)
        await self.check_generation()

    async def _server_id(self) -> str:
        """The Redis server's run_id (new at every restart); "" where INFO is not allowed (an ACL)."""
        try:
            info = await self.store.redis.info("server")
        except redis_errors.ResponseError:
            return ""
        return _text(info.get("run_id", ""))

    async def _on_redis_connect(self, connection: Any) -> None:
        await connection.on_connect()
        self._connects += 1

    async def _forget_generation(self) -> None:
        await self.store.redis.delete(self.store.key_of(keys.GENERATION, self.stage))

    async def _state_known(self, marker: object = _UNREAD) -> bool:
        """Whether Redis holds this stage's state: its generation marker (read here, or ``marker``, read
        just before by the caller with other keys) is this process's, on the server it knows."""
        if self._rebuild_owed:
            return False
        if marker is _UNREAD:
            marker = await self.store.redis.get(self.store.key_of(keys.GENERATION, self.stage))
        if marker is None or self._generation is None or _text(marker) != self._generation:
            return False
        if self._connects != self._connects_checked:
            # A connection made since the last look (this GET's own included): to the same server (the
            # pool grew, an idle one was closed), or to a restarted one, which may be behind.
            connects = self._connects
            if await self._server_id() != self._server:
                return False
            self._connects_checked = connects
        return True

    async def check_generation(self) -> bool:
        """Whether Redis lost its state since this process last looked (its generation marker is gone
        or another): then the registered rebuilds run, processing waiting meanwhile. True if they ran."""
        async with self._generation_lock:
            key = self.store.key_of(keys.GENERATION, self.stage)
            fresh = uuid.uuid4().hex
            connects = self._connects
            server = await self._server_id()
            # SET NX ... GET: the marker now, written only if there was none (one round trip, atomic).
            before = await self.store.redis.set(key, fresh, nx=True, get=True)
            current = fresh if before is None else _text(before)
            known, self._generation = self._generation, current
            known_server, self._server = self._server, server
            self._connects_checked = connects
            restarted = known_server not in (None, server)
            if before is not None and known in (None, current) and not restarted and not self._rebuild_owed:
                self._state_ready.set()
                return False  # Redis kept the state (a marker this process saw before, or a first look)
            # No marker (an empty Redis), a new one (another replica found the state gone first), or
            # a server restarted since the last look: from its disk, it may be behind what Kafka holds.
            if not self._rebuilders:
                self._state_ready.set()
                return False
            why = "restarted, possibly behind" if restarted and before is not None else "has no state"
            if self._rebuild_owed and before is not None and known in (None, current) and not restarted:
                why = "was not rebuilt yet (the last rebuild failed)"
            log.warning("Redis %s for this stage (generation %s): rebuilding it from Kafka", why, current)
            self._state_ready.clear()
            # Readiness says so while records wait; the task's health keeps when and why.
            self.stalls[REBUILD_TASK] = f"Redis {why}: rebuilding this stage's state from Kafka"
            started = time.monotonic()
            self._rebuild_owed = True
            try:
                for rebuild in self._rebuilders:
                    await self.through_outages(REBUILD_TASK, rebuild)
                self._rebuild_owed = False
            finally:
                self._state_ready.set()
                self.stalls.pop(REBUILD_TASK, None)
            took = f"Redis {why}: state rebuilt from Kafka in {time.monotonic() - started:.1f} s"
            await self.survive(
                REBUILD_TASK, partial(self.store.record_task, REBUILD_TASK, self.stage, ok=True, detail=took)
            )
            log.warning("rebuilt from Kafka; processing resumes (%s)", took)
            return True

    async def read_events(self, spec: TopicSpec) -> list[Envelope[Event]]:
        """Every valid event on ``spec`` up to its end, for a rebuild (:meth:`read_records`)."""
        return [envelope for _, envelope in await self.read_records(spec)]

    async def read_records(self, spec: TopicSpec) -> list[tuple[Record, Envelope[Event]]]:
        """Every valid record on ``spec`` up to its end, with its event, read off the event loop (the
        reader blocks); invalid records are skipped (the agent reading the topic dead-letters them)."""
        records = await asyncio.to_thread(
            lambda: list(read_topic(self.settings.kafka, spec.name, skip_missing=True))
        )
        found = []
        for record in records:
            try:
                found.append((record, decode(record.value, spec)))
            except InvalidEvent:
                continue
        return found

    async def send_again(self, spec: TopicSpec, record: Record) -> None:
        """Publish ``record`` (read off ``spec`` by a rebuild) again, its key and bytes unchanged, so this
        stage handles it once more: what Redis lost of work in progress is done from its source."""
        pending = await self.topic(spec).send(key=record.key, value=record.value)
        await pending

    async def state_ready(self) -> None:
        """Return once no rebuild from Kafka is running (what a record waits for before it is handled)."""
        await self._state_ready.wait()

    async def watch_generation(self) -> None:
        """Check the generation marker now, then every ``stage.generation_check_s``, for as long as the
        stage runs (a stage that registered a rebuild runs this as a task)."""
        await self.start()
        while True:
            await self.survive("Redis generation check", self.check_generation)
            await asyncio.sleep(self.settings.stage.generation_check_s)

    # --- lazily started resources (inside the worker's event loop) -------------------------------

    async def start(self) -> None:
        async with self._started:
            if self._store is not None:
                return
            redis = redis_client(self.settings.redis)
            # Every (re)connection is counted: after one, the next record checks the server is the one
            # this process's state was read from (a restart from disk can be behind).
            redis.connection_pool.connection_kwargs["redis_connect_func"] = self._on_redis_connect
            self._store = Store(
                redis,
                self.settings.redis.key_prefix,
                clock=self.clock,
                lifetime=OrderLifetime.of(self.settings.order_state),
            )
            if self._limiter is None:
                built = build_rate_limiter(self.settings, self.channels.channels)
                self._limiter = self._built_limiter = built
            self._http = httpx.AsyncClient(timeout=self.settings.amazon.request_timeout_s)
            self._health = HealthBoard(redis, self.settings.redis.key_prefix, self.settings.health)
            self._wakeups = Wakeups(
                redis, self.settings.redis.key_prefix, self.clock, self.settings.amazon.time_scale
            )
            self.loop_started = True

    async def close(self) -> None:
        await self._key_ring_stack.aclose()
        if self._http is not None:
            await self._http.aclose()
        if self._built_limiter is not None:
            # Its own Redis client and connections; a limiter given to the runtime is its giver's.
            await self._built_limiter.aclose()
            self._limiter = self._built_limiter = None
        if self._store is not None:
            await self._store.redis.aclose()

    async def key_ring(self) -> KeyRing:
        """The keys of buyers' personal data (S3 and the key-encryption key), opened on first use."""
        async with self._key_ring_lock:
            if self._key_ring is None:
                self._key_ring = await open_key_ring(
                    self.settings.privacy, self.settings.aws, self.clock, self._key_ring_stack
                )
            return self._key_ring

    async def sealed(self, channel: Channel, order: AmazonOrder) -> AmazonOrder:
        """``order`` as it may leave the Amazon client: its buyer's personal data sealed; for a channel
        without ``fetch_pii``, dropped (were Amazon to send any, it is not ordersync's to keep)."""
        if order.personal is not None or not personal_fields(order):
            return order
        if not channel.fetch_pii:
            return without_personal(order)
        return await seal_order(order, await self.key_ring(), Retention.of(channel))

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
    def wakeups(self) -> Wakeups:
        """The pauses of this worker's periodic tasks and the "Synchronize now" that ends them."""
        if self._wakeups is None:
            raise RuntimeError("StageRuntime.start() was not awaited")
        return self._wakeups

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
        """Send and wait until Kafka acknowledged it (callers save progress only after this).

        Refused (:class:`StateLost`, an outage: the record is tried again after the rebuild) when Redis
        lost this stage's state while the event was being decided: it may rest on what was missing."""
        if self._rebuilders and self._state_ready.is_set() and not await self._state_known():
            raise StateLost(f"Redis lost the state of stage {self.stage} while {spec.name} was decided")
        await self._send(spec, key, envelope)

    async def _send(self, spec: TopicSpec, key: str, envelope: Envelope[Any]) -> None:
        pending = await self.topic(spec).send(key=key.encode(), value=self.encode_for(spec, envelope))
        await pending

    @staticmethod
    def encode_for(spec: TopicSpec, envelope: Envelope[Any]) -> bytes:
        """The bytes of ``envelope`` on ``spec``: it must belong there (a bug otherwise) and fit in a
        broker message (:class:`Permanent` otherwise: the input that made it is dead-lettered)."""
        if spec.accepts(envelope.event_type) is None:
            raise ValueError(f"{envelope.event_type} does not belong on {spec.name}")
        value = encode(envelope)
        if len(value) > MAX_EMIT_BYTES:
            raise Permanent(
                f"{envelope.event_type} for {spec.name} is {len(value)} bytes,"
                f" over the {MAX_EMIT_BYTES}-byte limit"
            )
        return value

    def decode(self, spec: TopicSpec, value: bytes | None) -> Envelope[Event]:
        return decode(value, spec)

    async def dead_letter(
        self, spec: TopicSpec, source: SourceRecord, error: Exception, reason: str | None = None
    ) -> None:
        """Keep the record whole on the topic's dead-letter companion, with why and where it was."""
        if spec.dlq is None:
            raise RuntimeError(f"{spec.name} has no dead-letter topic in the catalogue") from error
        key, value = source.key, source.value
        by_reference = len(value) > MAX_DEAD_LETTER_COPY_BYTES
        record = EventDeadLettered(
            source_topic=spec.name,
            source_partition=source.partition,
            source_offset=source.offset,
            source_key=key[:1000] if key else key,
            original_value_b64="" if by_reference else base64.b64encode(value).decode(),
            original_size_bytes=len(value) if by_reference else None,
            stage=self.stage,
            error_type=type(error).__name__,
            error=(reason or str(error) or type(error).__name__)[:MAX_REASON_CHARS],
            dead_lettered_at=self.clock.now(),
        )
        seller = key.split(":", 1)[0] if key and ":" in key else "unknown"
        envelope = Envelope.wrap(
            record,
            seller_id=seller or "unknown",
            correlation_id=key or "unknown",
            event_id=dead_letter_id(self.stage, spec.name, source.partition, source.offset),
        )
        await self.emit(spec.dlq, key or "unknown", envelope)
        DEAD_LETTERS.labels(self.stage, spec.name).inc()
        log.warning(
            "dead-lettered %s[%d]@%d to %s: %s",
            spec.name,
            source.partition,
            source.offset,
            spec.dlq.name,
            reason or error,
        )

    async def retrying(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run ``attempt`` until it succeeds: throttling waits (never an attempt), transient faults back
        off and retry up to a bound, permanent errors propagate at once. An outage (the rate limiter
        failing closed, Redis or the broker down) is waited out as :meth:`through_outages` does, the
        stage reported stalled meanwhile: nothing was sent, so it is never an attempt."""
        return await self.through_outages(what, partial(self._retry_transients, what, attempt))

    async def _retry_transients(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        failures = 0
        while True:
            try:
                return await attempt()
            except Throttled as exc:
                await asyncio.sleep(exc.retry_after_s * (1 + random.random() * 0.1))
            except Retryable as exc:
                if is_outage(exc):
                    raise
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
        await self.state_ready()  # a rebuild from Kafka finishes first
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

    async def consume(
        self,
        spec: TopicSpec,
        stream: faust.StreamT[bytes],
        handle: Callable[[Envelope[Event]], Awaitable[None]],
    ) -> None:
        """An agent's loop over ``spec``: every record is settled by :meth:`process` before it is
        acknowledged; one in hand when the worker stops stays unacknowledged and is read again.
        Records of different keys are settled at once, ``stage.concurrency`` at most, those of one key
        one after another (:mod:`ordersync.pipeline.lanes`); the redrive tiers one at a time (a
        parked record waits there until it is due)."""
        await self.start()
        await self.serve(spec, handle)
        manual: Any = stream.noack()  # type: ignore[attr-defined]  # faust's StreamT omits noack
        width = 1 if spec in REDRIVE_TIERS else self.settings.stage.concurrency
        if width == 1:
            async for event in manual.events():
                await self.process(spec, event, handle)
                await manual.ack(event)
            return
        in_hand = _InHand(self.next_offsets)

        async def settle(event: faust.EventT[Any]) -> None:
            await self.process(spec, event, handle)
            await manual.ack(event)
            in_hand.done(event.message)

        async with KeyedLanes(width, settle) as lanes:
            async for event in manual.events():
                in_hand.taken(event.message)
                await lanes.put(event.message.key, event)

    async def serve(self, spec: TopicSpec, handle: Callable[[Envelope[Event]], Awaitable[None]]) -> None:
        """``handle`` is the handler of ``spec``'s records, those back from the redrive tiers included."""
        async with self._handler_added:
            self._handlers[spec.name] = handle
            self._handler_added.notify_all()

    async def _process(
        self, spec: TopicSpec, event: faust.EventT[Any], handle: Callable[[Envelope[Event]], Awaitable[None]]
    ) -> None:
        """Settle one record: processed, tried again in place while an outage lasts, or dead-lettered."""
        unexpected = 0
        what = f"{spec.name}[{event.message.partition}]"
        while True:
            try:
                await self.through_outages(
                    what, partial(self._attempt, spec, event, handle), recheck_state=True
                )
            except Throttled as exc:  # a handler's own wait: never a failure
                await asyncio.sleep(exc.retry_after_s * (1 + random.random() * 0.1))
                continue
            except Exception as exc:
                unexpected += 1
                if unexpected < MAX_UNEXPECTED_ATTEMPTS:
                    log.warning("unexpected %s, trying the record again: %s", type(exc).__name__, exc)
                    await asyncio.sleep(0.5 * unexpected)
                    continue
                log.exception("unexpected %s; dead-lettering the record", type(exc).__name__)
                RECORD_ERRORS.labels(self.stage, spec.name, "crash").inc()
                await self._dead_letter_in_any_case(spec, event, exc)
                self.resumed(what)
            return

    async def _dead_letter_in_any_case(
        self, spec: TopicSpec, event: faust.EventT[Any], error: Exception
    ) -> None:
        """Dead-letter ``event``, waiting out an outage of the broker as long as it lasts."""
        source = SourceRecord.of_message(event.message)
        await self.through_outages(f"{spec.name}.dlq", partial(self.dead_letter, spec, source, error))

    async def through_outages(
        self, what: str, step: Callable[[], Awaitable[T]], *, recheck_state: bool = False
    ) -> T:
        """``step``'s result, trying it again with backoff for as long as an outage lasts (``what`` is
        reported stalled meanwhile); anything else it raises propagates. ``recheck_state``: before each
        new try, check that Redis still holds the stage's state (it may be back, but empty), and rebuild
        it first if not, so a record half-done when Redis died is not done again from nothing."""
        outages = 0
        while True:
            try:
                result = await step()
            except Exception as exc:
                if not is_outage(exc):
                    raise
                outages += 1
                self.stalled(what, exc)
                await asyncio.sleep(min(MAX_OUTAGE_BACKOFF_S, 0.25 * 2**outages) * (0.5 + random.random()))
                if recheck_state and self._rebuilders:
                    if isinstance(exc, StateLost):
                        # Part of the state is gone though the marker is not (evicted, deleted by
                        # hand): the marker goes too, so the check rebuilds.
                        await self.survive("Redis generation check", self._forget_generation)
                    await self.survive("Redis generation check", self.check_generation)
                continue
            self.resumed(what)
            return result

    def stalled(self, what: str, error: BaseException) -> None:
        """``what`` cannot make progress because of ``error`` (an outage): readiness turns 503 and the
        log says so once a minute."""
        reason = f"{type(error).__name__}: {error}"[:300]
        self.stalls[what] = reason
        held = self._outage_log.due(what)
        if held is not None:
            more = f" ({held} more since)" if held else ""
            log.error("%s cannot make progress, trying again: %s%s", what, reason, more)

    def resumed(self, what: str) -> None:
        if self.stalls.pop(what, None) is not None:
            log.warning("%s makes progress again", what)
        self._outage_log.forget(what)

    async def survive(self, task: str, step: Callable[[], Awaitable[object]]) -> bool:
        """Run one step of a periodic task (a feed tick, a download round) so that nothing it raises
        stops the task: an outage marks ``task`` stalled until a step succeeds again; anything else is
        logged, once a minute at most. True when the step succeeded."""
        try:
            await step()
        except Exception as exc:
            raise_if_cancel_requested()
            if is_outage(exc):
                self.stalled(task, exc)
                return False
            held = self._outage_log.due(f"{task}!")
            if held is not None:
                log.error("%s failed (%s more since the last report): %s", task, held, exc, exc_info=exc)
            return False
        raise_if_cancel_requested()  # a library's wait may have swallowed a stop: the loop ends here
        self.resumed(task)
        return True

    async def _attempt(
        self, spec: TopicSpec, event: faust.EventT[Any], handle: Callable[[Envelope[Event]], Awaitable[None]]
    ) -> None:
        source = SourceRecord.of_message(event.message)
        line = await self._confirmed_line(spec, source.key)
        if line:
            if source.id not in line:  # (in it: read again after it was parked; nothing to do)
                waiting = f"waits behind {line[0]}, parked earlier for the same key"
                await self._park(spec, source, self._copy(source, None, waiting, behind=line[0]))
            return
        await self._settle(spec, source, handle)

    async def _settle(
        self,
        spec: TopicSpec,
        source: SourceRecord,
        handle: Callable[[Envelope[Event]], Awaitable[None]],
        parked: RecordParked | None = None,
    ) -> None:
        """Decode ``source`` and hand it to ``handle``: processed, parked (a transient fault), or
        dead-lettered (invalid, refused, or still failing at the redrive deadline). ``parked``: the
        redrive copy being tried, if this is a redrive."""
        try:
            envelope = self.decode(spec, source.value)
        except InvalidEvent as exc:
            RECORD_ERRORS.labels(self.stage, spec.name, "invalid").inc()
            await self.dead_letter(spec, source, exc)
            await self._leave_line(spec, source, parked)
            return
        bind_log_context(
            seller_id=envelope.seller_id,
            order_id=getattr(envelope.payload, "amazon_order_id", None),
            event_type=envelope.event_type,
            event_id=str(envelope.event_id),
        )
        last_try = _LAST_TRY.set(is_last_try(parked, self.clock.now()))
        try:
            await self._handle_knowing_channels(handle, envelope)
        except (Permanent, Retryable) as exc:
            if is_outage(exc):
                raise  # the rate limiter failing closed: nothing was sent, try again
            RECORD_ERRORS.labels(self.stage, spec.name, exc.kind).inc()
            if isinstance(exc, Retryable) and not self.last_try():
                await self._park_failure(spec, source, exc, parked)
                return
            reason = gave_up_reason(parked, exc, self.clock.now()) if parked is not None else None
            await self.dead_letter(spec, source, exc, reason)
            await self._leave_line(spec, source, parked)
            return
        finally:
            _LAST_TRY.reset(last_try)
        RECORDS_PROCESSED.labels(self.stage, spec.name).inc()
        await self._leave_line(spec, source, parked)

    async def _handle_knowing_channels(
        self, handle: Callable[[Envelope[Event]], Awaitable[None]], envelope: Envelope[Event]
    ) -> None:
        """``handle(envelope)``; a record naming a channel this stage does not know makes it read the
        registry at once (a channel just added) and, if that changed anything, try the record again."""
        try:
            await handle(envelope)
        except UnknownChannel:
            if not await self.registry.refresh(force=True):
                raise
            await handle(envelope)

    # --- the redrive tiers ------------------------------------------------------------------------

    @property
    def redrive_settings(self) -> RedriveSettings:
        """The redrive's delays and deadline in wall seconds: Amazon's seconds divided by
        ``amazon.time_scale`` (the simulator may run faster than real time), as the feed engine does."""
        settings, scale = self.settings.redrive, self.settings.amazon.time_scale
        if scale == 1:
            return settings
        return settings.model_copy(
            update={
                "delays_s": tuple(delay / scale for delay in settings.delays_s),
                "deadline_s": settings.deadline_s / scale,
            }
        )

    @staticmethod
    def last_try() -> bool:
        """Whether the record in hand is on its last redrive try: a handler that reports a transient
        failure in its own way (a failed shipment) does so now instead of raising it."""
        return _LAST_TRY.get()

    def register_redrive(self, app: faust.App) -> None:
        """An agent per redrive tier: it takes this stage's parked records and tries them when due; the
        orders' waiting lines are rebuilt from the tiers when Redis lost them."""
        for spec in REDRIVE_TIERS:
            self._redrive_agent(app, spec)
        self.on_redis_reset(self.rebuild_waiting_lines)

    async def rebuild_waiting_lines(self) -> int:
        """Each order's waiting line, from the parked copies this process has not settled yet: on each
        redrive partition assigned to it, those from the next offset its agent handles (the broker's
        committed offset where it handled none since the assignment). Returns the records put in lines."""
        try:
            await asyncio.wait_for(self._assignment_known.wait(), ASSIGNMENT_WAIT_S)
        except TimeoutError:
            raise Unreachable(
                f"no partitions assigned to this stage within {ASSIGNMENT_WAIT_S:.0f} s"
            ) from None
        consumer: Any = self.app.consumer
        tiers = {spec.name for spec in REDRIVE_TIERS}
        mine = [(tp.topic, tp.partition) for tp in consumer.assignment() if tp.topic in tiers]
        if not mine:
            return 0
        positions = await asyncio.to_thread(self._unsettled_positions, mine)
        records = await asyncio.to_thread(
            lambda: list(read_topic(self.settings.kafka, sorted(tiers), positions=positions))
        )
        unsettled = []
        for record in records:
            try:
                unsettled.append(decode(record.value, by_name(record.topic)).payload_as(RecordParked))
            except InvalidEvent:
                continue  # dead-lettered by the tier's agent
        order_keyed = {spec.name for spec in CATALOGUE if spec.key == "order"}
        lines = waiting_lines(self.stage, unsettled, order_keyed)
        ttl = int(self.redrive_settings.deadline_s + self.redrive_settings.delays_s[-1] + 86400)
        redis = self.store.redis
        for key, line in lines.items():
            line_key = self._line_key(key)
            for source in line:
                if await redis.lpos(line_key, source) is None:
                    await redis.rpush(line_key, source)
            await redis.expire(line_key, ttl)
        put = sum(len(line) for line in lines.values())
        if put:
            log.warning("%d parked records put back in %d orders' waiting lines", put, len(lines))
        return put

    def _unsettled_positions(self, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """Where each redrive partition's unsettled records start (blocking: the broker is asked for the
        committed offsets of those this process handled nothing of)."""
        positions = {tp: self.next_offsets[tp] for tp in partitions if tp in self.next_offsets}
        unknown = [
            TopicPartition(topic, partition)
            for topic, partition in partitions
            if (topic, partition) not in positions
        ]
        if unknown:
            consumer = KafkaConsumer(
                group_id=self.app.conf.id,
                enable_auto_commit=False,
                **kafka_client_config(self.settings.kafka, client_id=f"ordersync-{self.stage}-lines"),
            )
            try:
                for tp in unknown:
                    positions[(tp.topic, tp.partition)] = consumer.committed(tp) or 0
            finally:
                consumer.close()
        return positions

    def _redrive_agent(self, app: faust.App, spec: TopicSpec) -> None:
        async def redrive(stream: faust.StreamT[bytes]) -> None:
            await self.consume(spec, stream, self._redrive)

        app.agent(self.topic(spec), name=spec.name)(redrive)

    async def _redrive(self, envelope: Envelope[Event]) -> None:
        """Try one parked record when it is due, at the head of its order's waiting line."""
        parked = envelope.payload_as(RecordParked)
        if parked.stage != self.stage:
            return  # another stage's
        try:
            spec = by_name(parked.source_topic)
        except KeyError as exc:
            raise Permanent(f"parked record of a topic not in the catalogue: {parked.source_topic}") from exc
        handle = await self._handler_of(spec)
        # Polled: the clock may be the simulator's, which runs faster than the host's.
        while (remaining := (parked.due_at - self.clock.now()).total_seconds()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(min(remaining, DUE_POLL_S))
        await self.confirm_state()
        source = SourceRecord.of_parked(parked)
        # From here on the lines logged are about the original record.
        bind_log_context(
            topic=source.topic,
            partition=source.partition,
            offset=source.offset,
            key=source.key,
            redrive_try=parked.tries + 1,
        )
        line = await self._waiting_line(spec, source.key)
        if not may_try(line, source.id):
            if not waited_too_long(self.redrive_settings, parked, self.clock.now()):
                waiting = f"waits behind {line[0]}"
                await self._park(spec, source, self._copy(source, parked, waiting, behind=line[0]))
                return
            log.warning("%s waited past the redrive deadline behind %s; trying it now", source.id, line[0])
            await self.store.redis.lrem(self._line_key(source.key or ""), 0, line[0])
        await self._settle(spec, source, handle, parked)

    async def _handler_of(self, spec: TopicSpec) -> Callable[[Envelope[Event]], Awaitable[None]]:
        async with self._handler_added:
            try:
                await asyncio.wait_for(
                    self._handler_added.wait_for(lambda: spec.name in self._handlers), HANDLER_WAIT_S
                )
            except TimeoutError:
                raise Permanent(f"stage {self.stage} does not consume {spec.name} (any more)") from None
            return self._handlers[spec.name]

    async def _park_failure(
        self, spec: TopicSpec, source: SourceRecord, error: Exception, parked: RecordParked | None
    ) -> None:
        copy = self._copy(source, parked, error)
        await self._park(spec, source, copy)
        log.warning(
            "%s parked on redrive tier %d until %s (try %d): %s",
            source.id,
            copy.tier,
            copy.due_at.isoformat(),
            copy.tries + 1,
            error,
        )

    def _copy(
        self,
        source: SourceRecord,
        earlier: RecordParked | None,
        error: Exception | str,
        behind: str | None = None,
    ) -> RecordParked:
        return parked_record(
            self.stage,
            source,
            self.redrive_settings,
            now=self.clock.now(),
            earlier=earlier,
            error=error,
            behind=behind,
        )

    async def _park(self, spec: TopicSpec, source: SourceRecord, parked: RecordParked) -> None:
        """Put the redrive copy on its tier (Kafka first: the record), then the record in its order's
        waiting line."""
        envelope = Envelope.wrap(
            parked,
            seller_id=(source.key or "unknown").split(":", 1)[0] or "unknown",
            correlation_id=source.key or source.id,
        )
        await self.emit(REDRIVE_TIERS[parked.tier - 1], source.key or source.id, envelope)
        if spec.key != "order" or not source.key:
            return
        line_key = self._line_key(source.key)
        redis = self.store.redis
        if await redis.lpos(line_key, source.id) is None:
            await redis.rpush(line_key, source.id)
        ttl = self.redrive_settings.deadline_s + self.redrive_settings.delays_s[-1] + 86400
        await redis.expire(line_key, int(ttl))

    def _line_key(self, key: str) -> str:
        return self.store.key_of(keys.PARKED, self.stage, key)

    async def _confirmed_line(self, spec: TopicSpec, key: str | None) -> list[str]:
        """:meth:`confirm_state`, then :meth:`_waiting_line`: in one round trip when the state is
        known to be there (every record but those after a loss or a start)."""
        if not self._rebuilders or not self._state_ready.is_set() or self._rebuild_owed:
            await self.confirm_state()
            return await self._waiting_line(spec, key)
        lined = spec.key == "order" and bool(key)
        async with self.store.redis.pipeline(transaction=False) as pipe:
            pipe.get(self.store.key_of(keys.GENERATION, self.stage))
            if lined:
                pipe.lrange(self._line_key(cast(str, key)), 0, -1)
            replies = await pipe.execute()
        if not await self._state_known(replies[0]):
            await self.check_generation()  # a rebuild first: the line is read again after it
            return await self._waiting_line(spec, key)
        return cast(list[str], replies[1]) if lined else []

    async def _waiting_line(self, spec: TopicSpec, key: str | None) -> list[str]:
        """The records of ``key`` parked by this stage, oldest first (order-keyed topics only)."""
        if spec.key != "order" or not key:
            return []
        return cast(list[str], await self.store.redis.lrange(self._line_key(key), 0, -1))

    async def _leave_line(self, spec: TopicSpec, source: SourceRecord, parked: RecordParked | None) -> None:
        if parked is not None and spec.key == "order" and source.key:
            await self.store.redis.lrem(self._line_key(source.key), 0, source.id)


#: The task (health, stalls) of a stage rebuilding its state from Kafka.
REBUILD_TASK = "rebuild from Kafka"


#: The namespace of dead letters' event ids (:func:`dead_letter_id`).
_DEAD_LETTER_IDS = uuid.UUID("5c1f0a8e-4d3b-4a59-9d1e-0f7a6e2b9c41")


def dead_letter_id(stage: str, topic: str, partition: int, offset: int) -> uuid.UUID:
    """The event id of a stage's dead letter of one record: the same for every copy (a stage killed
    after dead-lettering a record, before its offset was committed, reads it and dead-letters it again),
    so the status model and its notifications count it once."""
    return uuid.uuid5(_DEAD_LETTER_IDS, f"{stage}|{topic}|{partition}|{offset}")


class _InHand:
    """The offsets of the records in keyed lanes, per partition, so that the position the lag is
    measured from (``next_offsets``) is the first record not settled yet, not the last one settled."""

    def __init__(self, next_offsets: dict[tuple[str, int], int]) -> None:
        self._next = next_offsets
        self._offsets: dict[tuple[str, int], set[int]] = {}
        self._after_done: dict[tuple[str, int], int] = {}

    def taken(self, message: Any) -> None:
        self._offsets.setdefault((message.topic, message.partition), set()).add(message.offset)

    def done(self, message: Any) -> None:
        tp = (message.topic, message.partition)
        offsets = self._offsets.get(tp, set())
        offsets.discard(message.offset)
        after = self._after_done[tp] = max(self._after_done.get(tp, 0), message.offset + 1)
        self._next[tp] = min(offsets) if offsets else after


def _text(value: object) -> str:
    """A Redis reply as text, whether the client decodes responses or not."""
    return value.decode() if isinstance(value, bytes) else str(value)
