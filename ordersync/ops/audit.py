"""The audit trail: who did what, when, to what, and how it ended, for every action and account change made
in the dashboard or with the CLI, and every sign-in and sign-out.

Kafka is the record: each entry is an :class:`~ordersync.schemas.events.AuditRecorded` event on
``ops.audit``. Redis keeps the newest ``dashboard.audit_kept`` of them (a capped stream) for the audit
page and ``ordersync audit list``.

An entry is written to Redis first, in one transaction with a copy in the *unsent* hash (an outbox), and
only then sent to Kafka, off the request's path: the dashboard's sender (:class:`AuditSender`) drains the
outbox right away and again every few seconds while Kafka does not answer, deleting each entry once Kafka
has acknowledged it; the CLI sends its own at once. So an entry made while Kafka is down is neither lost
nor blocking the person: it waits in Redis (the audit page says how many), an error is logged, and it
reaches ``ops.audit`` when Kafka is back (at least once: a copy sent twice has the same event id). Were
Redis down too, the entry is logged whole at ERROR level (it holds no secret), the last copy left.

Entries never hold a password, a token or a buyer's personal data: only user names, order ids, dead
letter ids, alert fingerprints and the outcome's words.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
import uuid
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, cast

import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.exceptions import RedisError

from ordersync.schemas.codec import encode
from ordersync.schemas.envelope import Envelope
from ordersync.schemas.events import AuditOutcome, AuditRecorded, DashboardRole
from ordersync.schemas.topics import OPS_AUDIT
from ordersync.settings import Settings
from ordersync.state import keys

log = logging.getLogger(__name__)

#: The actions the trail records (the audit page offers them as a filter).
ACTIONS: tuple[str, ...] = (
    "sign-in",
    "sign-out",
    "order.ignore",
    "order.unignore",
    "order.retry-download",
    "order.retry-import",
    "order.retry-writeback",
    "dead-letter.replay",
    "dead-letter.resolve",
    "alert.acknowledge",
    "alert.snooze",
    "user.add",
    "user.role",
    "user.disable",
    "user.enable",
    "user.password",
)
OUTCOMES: tuple[AuditOutcome, ...] = ("sent", "refused", "failed")
#: Targets kept per entry (an action on more names the rest in the detail as a count).
MAX_TARGETS = 1000
#: Entries read from Redis per round trip while filtering.
_BATCH = 500
#: How long the dashboard's sender waits before trying Kafka again, doubling up to the maximum.
RETRY_S = 5.0
MAX_RETRY_S = 60.0
#: Even with nothing new, the sender looks at the outbox this often (entries the CLI could not send).
POLL_S = 30.0
#: Bounded Kafka waits for the audit producer: a broker that is down costs the sender this, never a person.
KAFKA_TIMEOUT_MS = 3_000


def new_entry(
    *,
    actor: str,
    action: str,
    outcome: AuditOutcome,
    via: str,
    at: datetime,
    role: DashboardRole | None = None,
    targets: Iterable[str] = (),
    reason: str = "",
    detail: str = "",
    client: str | None = None,
) -> AuditRecorded:
    """An entry, its texts cut to what the event takes."""
    listed = [str(t)[:300] for t in targets]
    if len(listed) > MAX_TARGETS:
        detail = f"{detail}; {len(listed) - MAX_TARGETS} more targets not listed".lstrip("; ")
        listed = listed[:MAX_TARGETS]
    return AuditRecorded(
        entry_id=_entry_id(),
        at=at,
        actor=actor[:80] or "(unknown)",
        role=role,
        via=cast(Any, via),
        action=action,
        targets=tuple(listed),
        outcome=outcome,
        reason=reason[:2000],
        detail=detail[:2000],
        client=client[:64] if client else None,
    )


def _entry_id() -> str:
    """32 hex digits: the host's nanoseconds, then random ones, so ids sort in the order entries were
    made (the outbox is sent in that order)."""
    return f"{time.time_ns():016x}{secrets.token_hex(8)}"


def envelope_of(entry: AuditRecorded) -> Envelope[AuditRecorded]:
    """The ``ops.audit`` record of ``entry``: its event id is the entry's, so a copy sent twice is one
    event to whoever counts by id."""
    return Envelope.wrap(
        entry,
        seller_id="ops",
        correlation_id=entry.entry_id,
        occurred_at=entry.at,
        event_id=uuid.UUID(hex=entry.entry_id),
    )


@dataclass(frozen=True)
class AuditFilter:
    """Which entries to list: each given criterion must hold. ``action``: an action, or its family
    (``order`` matches ``order.ignore``...). ``until`` is exclusive."""

    actor: str | None = None
    action: str | None = None
    outcome: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def matches(self, entry: AuditRecorded) -> bool:
        if self.actor and entry.actor != self.actor:
            return False
        if self.action and entry.action != self.action and entry.action.split(".")[0] != self.action:
            return False
        if self.outcome and entry.outcome != self.outcome:
            return False
        if self.since is not None and entry.at < self.since:
            return False
        return self.until is None or entry.at < self.until


@dataclass(frozen=True)
class AuditPage:
    """Entries newest first, each with its Redis stream id (the cursor); ``older``: the cursor of the
    next page (None: no older entry matches)."""

    entries: tuple[tuple[str, AuditRecorded], ...]
    older: str | None


class AuditLog:
    """The trail's Redis side: the capped stream the pages read and the outbox of entries Kafka has not
    acknowledged yet."""

    def __init__(self, redis: aioredis.Redis, prefix: str, *, kept: int = 20_000) -> None:
        self.redis = redis
        self.kept = kept
        self.stream_key = keys.AUDIT.key(prefix)
        self.unsent_key = keys.AUDIT_UNSENT.key(prefix)

    async def record(self, entry: AuditRecorded) -> bool:
        """Keep ``entry`` in the stream and the outbox (one transaction). False when Redis did not take
        it: the entry is then logged whole (ERROR), never dropped silently."""
        data = entry.model_dump_json()
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.xadd(self.stream_key, {"entry": data}, maxlen=self.kept, approximate=True)
                pipe.hset(self.unsent_key, entry.entry_id, data)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            log.error("audit: Redis did not take the entry (%s); the entry: %s", type(exc).__name__, data)
            return False
        return True

    async def page(self, chosen: AuditFilter, *, older_than: str | None = None, limit: int = 50) -> AuditPage:
        """The newest ``limit`` entries ``chosen`` selects, older than the cursor ``older_than``."""
        found: list[tuple[str, AuditRecorded]] = []
        upper = "+" if older_than is None else f"({older_than}"
        more = False
        while not more:
            batch = cast(
                list[tuple[str, dict[str, str]]],
                await self.redis.xrevrange(self.stream_key, max=upper, min="-", count=_BATCH),
            )
            for stream_id, fields in batch:
                entry = _parsed(fields.get("entry"))
                if entry is None or not chosen.matches(entry):
                    continue
                if len(found) == limit:
                    more = True
                    break
                found.append((stream_id, entry))
            if len(batch) < _BATCH:
                break
            upper = f"({batch[-1][0]}"
        return AuditPage(entries=tuple(found), older=found[-1][0] if more and found else None)

    async def unsent(self) -> list[AuditRecorded]:
        """The outbox, oldest first."""
        raw = cast(dict[str, str], await self.redis.hgetall(self.unsent_key))
        entries = [e for e in (_parsed(value) for value in raw.values()) if e is not None]
        return sorted(entries, key=lambda e: (e.at, e.entry_id))

    async def unsent_count(self) -> int:
        return int(await self.redis.hlen(self.unsent_key))

    async def sent(self, entries: Sequence[AuditRecorded]) -> None:
        """Kafka acknowledged ``entries``: out of the outbox."""
        if entries:
            await self.redis.hdel(self.unsent_key, *(e.entry_id for e in entries))


def _parsed(raw: str | None) -> AuditRecorded | None:
    if not raw:
        return None
    try:
        return AuditRecorded.model_validate_json(raw)
    except ValidationError:
        return None


# --- to Kafka ----------------------------------------------------------------------------------------------


class AuditSink(Protocol):
    """Where the outbox goes: :class:`KafkaAuditSink` (tests hand the dashboard a recording one)."""

    def send(self, entries: Sequence[AuditRecorded]) -> None:
        """Send ``entries`` and wait until each is acknowledged (blocking); raise when one is not."""

    def close(self) -> None: ...


class KafkaAuditSink:
    """``ops.audit`` through one kafka-python producer (``acks=all``), made on the first send and made
    again after a failure, with bounded waits."""

    def __init__(self, settings: Settings, *, timeout_ms: int = KAFKA_TIMEOUT_MS) -> None:
        self.settings = settings
        self.timeout_ms = timeout_ms
        self._producer: Any = None

    def _made(self) -> Any:
        if self._producer is None:
            from kafka import KafkaProducer  # noqa: PLC0415 - only a send needs the client

            from ordersync.kafka.admin import kafka_client_config  # noqa: PLC0415

            self._producer = KafkaProducer(
                acks="all",
                bootstrap_timeout_ms=self.timeout_ms,
                request_timeout_ms=self.timeout_ms,
                max_block_ms=self.timeout_ms,
                reconnect_backoff_max_ms=1_000,
                **kafka_client_config(self.settings.kafka, client_id="ordersync-audit"),
            )
        return self._producer

    def send(self, entries: Sequence[AuditRecorded]) -> None:
        try:
            producer = self._made()
            pending = [
                producer.send(OPS_AUDIT.name, key=e.actor.encode(), value=encode(envelope_of(e)))
                for e in entries
            ]
            for sent in pending:
                sent.get(timeout=self.timeout_ms / 1000 + 5)
        except Exception:
            self.close()
            raise

    def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                producer.close(timeout=1)


async def flush(log_: AuditLog, sink: AuditSink, executor: ThreadPoolExecutor | None = None) -> int:
    """Send the outbox to ``sink`` (in ``executor``'s thread, or a new one) and empty it of what was
    acknowledged; returns how many. Raises what the sink raised (the entries stay in the outbox)."""
    entries = await log_.unsent()
    if not entries:
        return 0
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(executor, sink.send, entries)
    await log_.sent(entries)
    return len(entries)


class AuditSender:
    """The dashboard's background sender: drains the outbox when woken (a new entry), every
    :data:`POLL_S` otherwise, and after a failure again in :data:`RETRY_S` doubling to
    :data:`MAX_RETRY_S`, logging an error each time entries stay unsent."""

    def __init__(self, log_: AuditLog, sink: AuditSink) -> None:
        self.log = log_
        self.sink = sink
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-sender")
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="audit-sender")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        # A send under way finishes first (the producer's waits are bounded): nothing of it outlives the
        # dashboard. Then the producer closes.
        self._executor.submit(self.sink.close)
        await asyncio.to_thread(self._executor.shutdown, wait=True)

    async def _run(self) -> None:
        failures = 0
        while True:
            delay = POLL_S
            try:
                sent = await flush(self.log, self.sink, self._executor)
            except (RedisError, OSError) as exc:
                log.error("audit: the outbox could not be read from Redis (%s)", type(exc).__name__)
                delay = RETRY_S
            except Exception as exc:  # the sink's failure: Kafka unreachable, refused, timed out
                waiting = await _count_or_none(self.log)
                delay = min(RETRY_S * 2**failures, MAX_RETRY_S)
                failures += 1
                log.error(
                    "audit: Kafka did not take %s audit entries (%s: %s); they are kept in Redis and sent"
                    " again in %.0f s",
                    waiting if waiting is not None else "the",
                    type(exc).__name__,
                    exc,
                    delay,
                )
            else:
                failures = 0
                if sent:
                    log.debug("audit: %d entries sent to %s", sent, OPS_AUDIT.name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
            self._wake.clear()


async def _count_or_none(log_: AuditLog) -> int | None:
    try:
        return await log_.unsent_count()
    except (RedisError, OSError):
        return None
