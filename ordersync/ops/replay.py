"""Replay: send a topic's records (or its dead letters) through the pipeline again, safely.

Every stage is idempotent, so re-publishing a record makes the consuming stage process it again with
the same effect at most once. Two tools:

- :func:`replay_topic` re-publishes the records of a catalogue topic, selected by offset, record time
  and field filters, to the same topic (or another catalogue topic that accepts their event types),
  keeping key, value bytes, headers and, on the same topic, the partition.
- :func:`replay_dead_letters` sends each dead letter's original bytes and key back to its source topic
  after the cause was fixed, and records the letter's position in Redis so it is not sent twice by
  accident (``again=True`` sends it anyway).

Reading goes through the bounded topic reader (:mod:`ordersync.kafka.reader`), which never asks the
broker for offsets by time or for the end of a partition: each partition is read from an explicit offset,
record timestamps are compared here, and the end is the high watermark the consumer's own fetch reports,
captured once, so records appended while replaying (our own re-published ones included) are never read
back.
"""

from __future__ import annotations

import fnmatch
import json
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, cast

import redis.asyncio as aioredis
from kafka import KafkaProducer
from kafka.errors import KafkaError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ordersync.errors import InvalidEvent, Permanent
from ordersync.kafka.admin import kafka_client_config
from ordersync.kafka.reader import ProgressHook, Record, TopicMissing, TopicReader
from ordersync.schemas.codec import decode
from ordersync.schemas.events import EventDeadLettered
from ordersync.schemas.topics import CATALOGUE, TopicSpec, by_name
from ordersync.settings import KafkaSettings, Settings
from ordersync.state import keys
from ordersync.state.store import Store

#: Envelope fields a filter key names directly; any other key is looked for in the payload.
ENVELOPE_FIELDS = (
    "event_id",
    "event_type",
    "schema_version",
    "occurred_at",
    "seller_id",
    "marketplace_id",
    "correlation_id",
)
#: Fields of a dead letter itself (EventDeadLettered); other filter keys match the original event.
DEAD_LETTER_FIELDS = tuple(
    name for name in EventDeadLettered.model_fields if name not in ("original_value_b64",)
)
#: Records a few minutes past --until are still read: producers' clocks differ, so record timestamps
#: within a partition are not strictly ordered.
UNTIL_GRACE_MS = 5 * 60 * 1000
#: A dead letter claimed by a replay that never confirmed it (crashed) may be taken over after this.
STALE_CLAIM_S = 600.0
#: How many keys a dry run or a summary shows.
SAMPLE_KEYS = 5


class ReplayRejected(Permanent):
    """The replay was refused as asked (unknown topic, bad filter or time, a target that does not accept
    the events); nothing was sent."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --- filters ---------------------------------------------------------------------------------------


class FieldFilter(_Frozen):
    """``key=value``: an envelope field (seller_id, event_type, marketplace_id, correlation_id...), a
    payload field anywhere in the payload (channel, amazon_order_id, seller_sku: any item's), or a
    dotted path from the envelope (``payload.order.order_status``). ``*`` in the value is a wildcard."""

    key: str
    value: str

    def matches(self, document: Mapping[str, Any]) -> bool:
        return any(self.matches_value(found) for found in field_values(document, self.key))

    def matches_value(self, found: Any) -> bool:
        text = scalar_text(found)
        if text is None:
            return False
        if "*" in self.value:
            return fnmatch.fnmatchcase(text, self.value)
        return text == self.value

    def __str__(self) -> str:
        return f"{self.key}={self.value}"


_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def parse_filter(text: str) -> FieldFilter:
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ReplayRejected(f"filter {text!r}: expected key=value, e.g. seller_id=A2ACME")
    if not _KEY.match(key):
        raise ReplayRejected(f"filter {text!r}: {key!r} is not a field name (letters, digits, _ and .)")
    return FieldFilter(key=key, value=value)


def parse_filters(texts: Iterable[str]) -> tuple[FieldFilter, ...]:
    return tuple(parse_filter(text) for text in texts)


def scalar_text(value: Any) -> str | None:
    """A JSON scalar as an operator types it: strings as they are, true/false, numbers, null."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return json.dumps(value)
    return None


def _descend(value: Any, part: str) -> Iterator[Any]:
    if isinstance(value, Mapping):
        if part in value:
            yield value[part]
    elif isinstance(value, list):
        for element in value:
            yield from _descend(element, part)


def _anywhere(value: Any, key: str) -> Iterator[Any]:
    if isinstance(value, Mapping):
        for name, inner in value.items():
            if name == key:
                yield from (inner if isinstance(inner, list) else [inner])
            yield from _anywhere(inner, key)
    elif isinstance(value, list):
        for element in value:
            yield from _anywhere(element, key)


def field_values(document: Mapping[str, Any], key: str) -> list[Any]:
    """Every value ``key`` names in an event document (an envelope as JSON)."""
    if "." in key:
        found: list[Any] = [document]
        for part in key.split("."):
            found = [inner for value in found for inner in _descend(value, part)]
        return [v for value in found for v in (value if isinstance(value, list) else [value])]
    if key in ENVELOPE_FIELDS:
        return [document[key]] if key in document else []
    return list(_anywhere(document.get("payload"), key))


def matches_all(filters: Sequence[FieldFilter], document: Mapping[str, Any] | None) -> bool:
    if not filters:
        return True
    return document is not None and all(f.matches(document) for f in filters)


def event_document(value: bytes | None) -> dict[str, Any] | None:
    """A record value as JSON, when it is a JSON object (an envelope); None otherwise."""
    if value is None:
        return None
    try:
        data = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def event_type_of(document: Mapping[str, Any] | None) -> str:
    event_type = document.get("event_type") if document else None
    return event_type if isinstance(event_type, str) else "(not an event)"


# --- time bounds ------------------------------------------------------------------------------------

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_time(text: str, *, now: datetime | None = None) -> datetime:
    """ISO 8601 (without a zone: UTC), ``now``, or an age: ``90m``, ``2h``, ``3d`` (that long ago)."""
    now = now or datetime.now(UTC)
    raw = text.strip()
    if raw.lower() == "now":
        return now
    relative = _RELATIVE.match(raw.lower())
    if relative:
        return now - timedelta(seconds=float(relative.group(1)) * _UNITS[relative.group(2)])
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ReplayRejected(
            f"time {text!r}: expected ISO 8601 (2026-11-24T10:00:00Z), 'now' or an age such as 2h or 3d"
        ) from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class TimeBounds(_Frozen):
    """Record timestamps (milliseconds) kept: ``since <= ts < until``."""

    since_ms: int | None = None
    until_ms: int | None = None

    @classmethod
    def of(cls, since: datetime | None, until: datetime | None) -> TimeBounds:
        if since is not None and until is not None and until <= since:
            raise ReplayRejected(f"--until ({until.isoformat()}) is not after --since ({since.isoformat()})")
        return cls(
            since_ms=int(since.timestamp() * 1000) if since else None,
            until_ms=int(until.timestamp() * 1000) if until else None,
        )

    def contains(self, timestamp_ms: int) -> bool:
        if self.since_ms is not None and timestamp_ms < self.since_ms:
            return False
        return self.until_ms is None or timestamp_ms < self.until_ms

    def past_end(self, timestamp_ms: int) -> bool:
        """Far enough past --until that this partition need not be read further."""
        return self.until_ms is not None and timestamp_ms >= self.until_ms + UNTIL_GRACE_MS


# --- reading from explicit offsets ------------------------------------------------------------------


class PartitionRange(_Frozen):
    partition: int
    start: int
    end: int  # the high watermark captured from the first fetch (exclusive)


def read_records(
    kafka: KafkaSettings,
    topic: str | Sequence[str],
    *,
    partitions: Sequence[int] | None = None,
    from_offset: int = 0,
    bounds: TimeBounds | None = None,
    progress: ProgressHook | None = None,
    ranges: list[PartitionRange] | None = None,
) -> Iterator[Record]:
    """Every record of ``topic`` (or of several, with one consumer) from ``from_offset`` up to each
    partition's high watermark as first fetched (or past ``bounds.until``) and within ``bounds``, in
    offset order per partition (:class:`ordersync.kafka.reader.TopicReader`). ``partitions`` narrows a
    single topic; ``ranges`` collects what was read of each."""
    time_bounds = bounds or TimeBounds()
    try:
        reader = TopicReader(
            kafka,
            topic,
            partitions=partitions,
            from_offset=from_offset,
            stop_at=lambda record: time_bounds.past_end(record.timestamp_ms),
            client_id="ordersync-replay",
        )
    except TopicMissing as exc:
        raise ReplayRejected(str(exc)) from None
    with reader:
        for record in reader.records(progress):
            if time_bounds.contains(record.timestamp_ms):
                yield record
        if ranges is not None:
            ranges.extend(
                PartitionRange(partition=r.partition, start=r.start, end=r.end) for r in reader.ranges()
            )


# --- re-publishing --------------------------------------------------------------------------------


class Publisher:
    """A producer that keeps order per partition and confirms every send (acks=all)."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self._producer = KafkaProducer(
            acks="all",
            max_in_flight_requests_per_connection=1,  # a retried batch never overtakes the next
            linger_ms=20,
            **kafka_client_config(kafka, client_id="ordersync-replay"),
        )
        self._partitions: dict[str, int] = {}

    def partition_count(self, topic: str) -> int:
        count = self._partitions.get(topic)
        if count is None:
            count = self._partitions[topic] = len(self._producer.partitions_for(topic))
        return count

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]] = (),
        partition: int | None = None,
    ) -> Any:
        if partition is not None and partition >= self.partition_count(topic):
            partition = None  # the target has fewer partitions: let the key choose, as for any record
        return self._producer.send(
            topic, key=key, value=value, headers=list(headers) or None, partition=partition
        )

    def flush(self) -> None:
        self._producer.flush()

    def close(self) -> None:
        self._producer.close()


def check_target(source: TopicSpec, target: TopicSpec, filters: Sequence[FieldFilter]) -> tuple[str, ...]:
    """The event types that will be sent from ``source`` to ``target``; refuses a target that does not
    accept them (another key, another event type)."""
    types = tuple(event.event_type() for event in source.events)
    wanted = {f.value for f in filters if f.key == "event_type" and "*" not in f.value}
    if wanted:
        unknown = sorted(wanted - set(types))
        if unknown:
            raise ReplayRejected(
                f"{source.name} carries no {', '.join(unknown)} (it carries {', '.join(types)})"
            )
        types = tuple(t for t in types if t in wanted)
    if source.events == (EventDeadLettered,):
        raise ReplayRejected(
            f"{source.name} holds dead letters: send them back with `ordersync dlq replay {source.name}`"
        )
    if target.name == source.name:
        return types
    if target.key != source.key:
        raise ReplayRejected(
            f"{target.name} is keyed by {target.key}, {source.name} by {source.key}: records would land "
            "on the wrong partitions"
        )
    refused = [t for t in types if target.accepts(t) is None]
    if refused:
        accepted = ", ".join(e.event_type() for e in target.events)
        hint = "" if wanted else "; narrow with --filter event_type=..."
        raise ReplayRejected(
            f"{target.name} does not accept {', '.join(refused)} (it accepts {accepted}){hint}"
        )
    return types


class ReplayRequest(_Frozen):
    topic: str
    to: str | None = None
    from_offset: int | None = Field(None, ge=0)
    since: datetime | None = None
    until: datetime | None = None
    partition: int | None = Field(None, ge=0)
    filters: tuple[FieldFilter, ...] = ()
    dry_run: bool = False


class ReplaySummary(_Frozen):
    source: str
    target: str
    dry_run: bool
    read: int
    matched: int
    sent: int
    by_event_type: dict[str, int]
    skipped_not_accepted: int
    sample_keys: tuple[str, ...]
    ranges: tuple[PartitionRange, ...]
    failed: int = 0
    first_error: str | None = None


def plan(request: ReplayRequest) -> tuple[TopicSpec, TopicSpec, TimeBounds]:
    """Check the request against the catalogue; raises ReplayRejected with what is wrong."""
    if request.from_offset is None and request.since is None:
        raise ReplayRejected("say where to start: --from-offset N (0: the beginning) or --since TIME")
    try:
        source = by_name(request.topic)
    except KeyError:
        raise ReplayRejected(_not_in_catalogue(request.topic)) from None
    try:
        target = by_name(request.to) if request.to else source
    except KeyError:
        raise ReplayRejected(_not_in_catalogue(request.to or "")) from None
    check_target(source, target, request.filters)
    return source, target, TimeBounds.of(request.since, request.until)


def _not_in_catalogue(name: str) -> str:
    return f"{name!r} is not a catalogue topic; topics: {', '.join(spec.name for spec in CATALOGUE)}"


def replay_topic(
    settings: Settings, request: ReplayRequest, *, progress: ProgressHook | None = None
) -> ReplaySummary:
    """Re-publish the selected records of a topic; a dry run only counts them."""
    source, target, bounds = plan(request)
    ranges: list[PartitionRange] = []
    by_type: Counter[str] = Counter()
    sample: list[str] = []
    read = matched = not_accepted = 0
    pending: list[tuple[Record, Any]] = []
    publisher = None if request.dry_run else Publisher(settings.kafka)
    failed = 0
    first_error: str | None = None
    sent = 0
    try:
        records = read_records(
            settings.kafka,
            source.name,
            partitions=None if request.partition is None else [request.partition],
            from_offset=request.from_offset or 0,
            bounds=bounds,
            progress=progress,
            ranges=ranges,
        )
        for record in records:
            read += 1
            document = event_document(record.value)
            if not matches_all(request.filters, document):
                continue
            event_type = event_type_of(document)
            if target.name != source.name and target.accepts(event_type) is None:
                not_accepted += 1  # not an event the target takes (e.g. a malformed record)
                continue
            matched += 1
            by_type[event_type] += 1
            if len(sample) < SAMPLE_KEYS:
                sample.append(record.key.decode(errors="replace") if record.key else "(no key)")
            if publisher is not None:
                partition = record.partition if target.name == source.name else None
                future = publisher.send(target.name, record.key, record.value, record.headers, partition)
                pending.append((record, future))
                if len(pending) >= 1000:
                    ok, errors = _settle(pending)
                    sent, failed = sent + ok, failed + len(errors)
                    first_error = first_error or (errors[0] if errors else None)
                    pending = []
        if publisher is not None:
            publisher.flush()
            ok, errors = _settle(pending)
            sent, failed = sent + ok, failed + len(errors)
            first_error = first_error or (errors[0] if errors else None)
    finally:
        if publisher is not None:
            publisher.close()
    return ReplaySummary(
        source=source.name,
        target=target.name,
        dry_run=request.dry_run,
        read=read,
        matched=matched,
        sent=sent,
        by_event_type=dict(by_type),
        skipped_not_accepted=not_accepted,
        sample_keys=tuple(sample),
        ranges=tuple(ranges),
        failed=failed,
        first_error=first_error,
    )


def _settle(pending: list[tuple[Record, Any]]) -> tuple[int, list[str]]:
    ok = 0
    errors: list[str] = []
    for record, future in pending:
        try:
            future.get(timeout=60)
            ok += 1
        except KafkaError as exc:
            errors.append(f"{record.topic}[{record.partition}]@{record.offset}: {exc}")
    return ok, errors


# --- dead letters ---------------------------------------------------------------------------------


def dead_letter_topics() -> tuple[TopicSpec, ...]:
    return tuple(spec.dlq for spec in CATALOGUE if spec.dlq is not None)


def stage_names() -> tuple[str, ...]:
    from ordersync.pipeline.stages import STAGES  # noqa: PLC0415 - faust loads only when a stage is named

    return tuple(STAGES)


class DeadLetterSelection(_Frozen):
    """Which DLQs to read, and which stage's letters to keep (None: every letter)."""

    topics: tuple[str, ...]
    stage: str | None = None


def select_dead_letters(name: str) -> DeadLetterSelection:
    """``name``: a stage (its letters, from every DLQ: each letter records the stage that wrote it),
    a DLQ topic, or a topic with a DLQ companion."""
    dlqs = dead_letter_topics()
    if name in stage_names():
        return DeadLetterSelection(topics=tuple(spec.name for spec in dlqs), stage=name)
    try:
        spec = by_name(name)
    except KeyError:
        spec = None
    if spec is not None and spec in dlqs:
        return DeadLetterSelection(topics=(spec.name,))
    if spec is not None and spec.dlq is not None:
        return DeadLetterSelection(topics=(spec.dlq.name,))
    raise ReplayRejected(
        f"{name!r} is neither a stage ({', '.join(stage_names())}) nor a topic with dead letters "
        f"({', '.join(spec.name for spec in dlqs)})"
    )


class DeadLetter(_Frozen):
    """One record of a DLQ, decoded when it is a valid EventDeadLettered."""

    dlq_topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: str | None
    letter: EventDeadLettered | None
    problem: str | None = None

    @property
    def position(self) -> str:
        return f"{self.partition}:{self.offset}"

    def original_text(self) -> str | None:
        """The original value as text, when it is UTF-8 (JSON usually)."""
        if self.letter is None:
            return None
        try:
            return self.letter.original_value().decode()
        except UnicodeDecodeError:
            return None

    def matches(self, filters: Sequence[FieldFilter]) -> bool:
        """A filter on a dead letter's own field (stage, error_type, source_key...) matches the letter;
        any other matches the original event (amazon_order_id, event_type...)."""
        if not filters:
            return True
        own = self.letter.model_dump(mode="json") if self.letter else {}
        original = event_document(self.letter.original_value()) if self.letter else None
        for f in filters:
            if f.key in DEAD_LETTER_FIELDS:
                if not f.matches_value(own.get(f.key)):
                    return False
            elif original is None or not f.matches(original):
                return False
        return True


def read_dead_letters(
    kafka: KafkaSettings,
    selection: DeadLetterSelection,
    *,
    filters: Sequence[FieldFilter] = (),
    progress: ProgressHook | None = None,
) -> Iterator[DeadLetter]:
    specs = {topic: by_name(topic) for topic in selection.topics}
    for record in read_records(kafka, selection.topics, progress=progress):
        topic, spec = record.topic, specs[record.topic]
        key = record.key.decode(errors="replace") if record.key else None
        try:
            letter: EventDeadLettered | None = decode(record.value, spec).payload_as(EventDeadLettered)
            problem = None
        except (InvalidEvent, TypeError, ValidationError) as exc:
            letter, problem = None, str(exc)
        if selection.stage is not None and (letter is None or letter.stage != selection.stage):
            continue
        dead = DeadLetter(
            dlq_topic=topic,
            partition=record.partition,
            offset=record.offset,
            timestamp_ms=record.timestamp_ms,
            key=key,
            letter=letter,
            problem=problem,
        )
        if dead.matches(filters):
            yield dead


class DeadLetterQueueSummary(_Frozen):
    topic: str
    letters: int
    replayed: int | None  # None: Redis not reachable
    oldest: datetime | None
    newest: datetime | None
    by_error_type: dict[str, int]
    by_stage: dict[str, int]


def summarize(topic: str, letters: Sequence[DeadLetter], replayed: set[str] | None) -> DeadLetterQueueSummary:
    times = [
        letter.letter.dead_lettered_at
        if letter.letter
        else datetime.fromtimestamp(letter.timestamp_ms / 1000, UTC)
        for letter in letters
    ]
    return DeadLetterQueueSummary(
        topic=topic,
        letters=len(letters),
        replayed=None if replayed is None else sum(1 for d in letters if d.position in replayed),
        oldest=min(times) if times else None,
        newest=max(times) if times else None,
        by_error_type=dict(Counter(d.letter.error_type if d.letter else "(unreadable)" for d in letters)),
        by_stage=dict(Counter(d.letter.stage if d.letter else "(unreadable)" for d in letters)),
    )


class ReplayLedger:
    """Which dead letters were sent back, in Redis: one hash per DLQ, field ``partition:offset``.

    A letter is claimed (HSETNX) before it is sent and marked replayed once Kafka acknowledged it, so two
    operators replaying at once never send the same letter twice; a claim left by a crashed run is taken
    over after ``STALE_CLAIM_S``."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.redis: aioredis.Redis = store.redis
        self.run = uuid.uuid4().hex[:12]

    def key(self, dlq_topic: str) -> str:
        return self.store.key_of(keys.DLQ_REPLAYED, dlq_topic)

    async def replayed(self, dlq_topic: str) -> dict[str, dict[str, Any]]:
        raw = cast(dict[str, str], await self.redis.hgetall(self.key(dlq_topic)))
        return {position: json.loads(value) for position, value in raw.items()}

    async def claim(self, dead: DeadLetter, *, again: bool) -> bool:
        key = self.key(dead.dlq_topic)
        entry = json.dumps({"state": "sending", "run": self.run, "at": time.time()})
        if again or await self.redis.hsetnx(key, dead.position, entry):
            if again:
                await self.redis.hset(key, dead.position, entry)
            return True
        current = cast(str | None, await self.redis.hget(key, dead.position))
        state = json.loads(current) if current else {}
        if state.get("state") == "sending" and time.time() - float(state.get("at", 0)) > STALE_CLAIM_S:
            await self.redis.hset(key, dead.position, entry)
            return True
        return False

    async def confirm(self, dead: DeadLetter, operator: str | None) -> None:
        entry = {
            "state": "replayed",
            "run": self.run,
            "at": datetime.now(UTC).isoformat(),
            "operator": operator,
            "to": dead.letter.source_topic if dead.letter else None,
        }
        await self.redis.hset(self.key(dead.dlq_topic), dead.position, json.dumps(entry))

    async def release(self, dead: DeadLetter) -> None:
        await self.redis.hdel(self.key(dead.dlq_topic), dead.position)


SkipReason = Literal["already replayed", "being replayed", "unreadable", "source not in catalogue"]


class DeadLetterReplaySummary(_Frozen):
    dry_run: bool
    selected: int
    #: Letters to send after the skips (what a dry run would send).
    to_send: int
    #: Letters sent and acknowledged (0 in a dry run).
    sent: int
    by_source: dict[str, int]
    by_event_type: dict[str, int]
    skipped: dict[str, int]
    sample_keys: tuple[str, ...]
    failed: int = 0
    first_error: str | None = None


def source_of(dead: DeadLetter) -> TopicSpec | None:
    """The topic a letter goes back to: its source, when that is the catalogue topic whose DLQ holds it."""
    if dead.letter is None:
        return None
    try:
        source = by_name(dead.letter.source_topic)
    except KeyError:
        return None
    return source if source.dlq is not None and source.dlq.name == dead.dlq_topic else None


async def replay_dead_letters(
    settings: Settings,
    letters: Iterable[DeadLetter],
    ledger: ReplayLedger,
    *,
    dry_run: bool = False,
    again: bool = False,
    operator: str | None = None,
) -> DeadLetterReplaySummary:
    """Send each letter's original bytes and key back to its source topic and partition, once."""
    publisher = None if dry_run else Publisher(settings.kafka)
    replayed: dict[str, dict[str, dict[str, Any]]] = {}
    skipped: Counter[str] = Counter()
    by_source: Counter[str] = Counter()
    by_type: Counter[str] = Counter()
    sample: list[str] = []
    selected = to_send = sent = failed = 0
    first_error: str | None = None
    try:
        for dead in letters:
            selected += 1
            source = source_of(dead)
            if dead.letter is None or source is None:
                skipped["unreadable" if dead.letter is None else "source not in catalogue"] += 1
                continue
            if dead.dlq_topic not in replayed:
                replayed[dead.dlq_topic] = await ledger.replayed(dead.dlq_topic)
            earlier = replayed[dead.dlq_topic].get(dead.position)
            if earlier is not None and not again and earlier.get("state") == "replayed":
                skipped["already replayed"] += 1
                continue
            original = dead.letter.original_value()
            event_type = event_type_of(event_document(original))
            key = dead.letter.source_key
            if publisher is not None:
                if not await ledger.claim(dead, again=again):
                    skipped["being replayed"] += 1
                    continue
                try:
                    publisher.send(
                        source.name,
                        key.encode() if key is not None else None,
                        original,
                        partition=dead.letter.source_partition,
                    ).get(timeout=60)
                except KafkaError as exc:
                    await ledger.release(dead)
                    failed += 1
                    first_error = first_error or f"{dead.dlq_topic}@{dead.position}: {exc}"
                    continue
                await ledger.confirm(dead, operator)
                sent += 1
            to_send += 1
            by_source[source.name] += 1
            by_type[event_type] += 1
            if len(sample) < SAMPLE_KEYS:
                sample.append(key or "(no key)")
    finally:
        if publisher is not None:
            publisher.close()
    return DeadLetterReplaySummary(
        dry_run=dry_run,
        selected=selected,
        to_send=to_send,
        sent=sent,
        by_source=dict(by_source),
        by_event_type=dict(by_type),
        skipped=dict(skipped),
        sample_keys=tuple(sample),
        failed=failed,
        first_error=first_error,
    )
