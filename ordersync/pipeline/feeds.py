"""The batched-feed engine: one lifecycle for every feed ordersync sends in batches.

POST_ORDER_FULFILLMENT_DATA (shipments), POST_ORDER_ACKNOWLEDGEMENT_DATA (seller cancellations, and
order acknowledgements with the seller's order number) and JSON_LISTINGS_FEED (stock) reach Amazon the
same way, per seller, one worker at a time under the seller's lock
(:class:`~ordersync.pipeline.lock.Lock`). A :class:`FeedType` says what is particular
to its feed (its items, its document, what one message's result means, a few policies); a
:class:`FeedEngine` does the rest:

1. **Parking**: each item waits in the seller's pending hash, one field per item (a replay
   overwrites the same field).
2. :meth:`FeedEngine.submit`: up to ``max_messages`` ready items, numbered 1..n (their MessageIDs),
   move into the seller's in-flight record *before* anything is sent, so a crash mid-submission is
   known as such; then createFeedDocument, the upload and createFeed on the feed type's limiter lane
   (the limiter takes the feed type's own bucket too, where it has one).
3. :meth:`FeedEngine.check`: getFeed. DONE: each MessageID of the processing report maps back to its
   item (:func:`map_report`) and the feed type applies that message's result. FATAL or CANCELLED, a
   report that cannot be read, or one refusing the whole document: the batch was not applied. Not
   done after the timeout (:func:`stall_verdict`): cancelFeed while still IN_QUEUE (nothing was
   applied), else its outcome is unknown.
4. A batch not applied goes back to pending, one attempt spent (none when throttling, or a rate
   limiter without Redis, kept it from being sent), with backoff where the feed type has one, or is
   given up after the feed type's last attempt. An item whose earlier outcome is unknown is re-read
   on Amazon, where the feed type can, before it is sent again, refused or given up, so nothing is
   applied twice.

:meth:`FeedEngine.run` is one tick: settle the feed in flight, then send the next when items are
pending, at most once per flush interval where the feed type has one. Times are Amazon's
(``runtime.clock``) and scaled by the simulator's time scale.
"""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Generic, Literal, TypeVar, cast

from redis.asyncio.client import Pipeline
from redis.typing import EncodableT, FieldT

from ordersync.amazon.feeds import FeedsClient, ProcessingReport, ProcessingResult, parse_processing_report
from ordersync.channels import Channel
from ordersync.clock import epoch_seconds
from ordersync.errors import AmazonApiError, Permanent, QuotaUnavailable, Retryable, Throttled
from ordersync.pipeline.lock import Lock, worker_identity
from ordersync.pipeline.runtime import StageRuntime
from ordersync.settings import Settings
from ordersync.state import keys

log = logging.getLogger(__name__)

#: A worker that dies holding a seller's feed lock blocks that seller's feed steps this long at most.
LOCK_TTL_S = 600.0

# --- Redis keys: one function per family; every key of a seller in one hash-tag slot ----------------------
#
# ``family`` is the feed type's prefix: ``wb`` (fulfillment), ``cancel`` (cancellations), ``ack`` (order
# acknowledgements), ``inv`` (stock).


def seller_key(runtime: StageRuntime, name: str, seller: str) -> str:
    """``<prefix>:<name>:{<seller>}``."""
    return runtime.store.key_of(keys.seller_family(name), seller)


def pending_key(runtime: StageRuntime, family: str, seller: str) -> str:
    """Hash ``<family>-pending``: item field -> the parked item (:meth:`Parked.dumps`)."""
    return seller_key(runtime, f"{family}-pending", seller)


def inflight_key(runtime: StageRuntime, family: str, seller: str) -> str:
    """Hash ``<family>-inflight``: ``batch`` (JSON, MessageID -> :meth:`Parked.record`), ``started``
    (epoch seconds), ``feed_id`` once createFeed answered, and ``fields`` (JSON list) where the feed
    type lists them."""
    return seller_key(runtime, f"{family}-inflight", seller)


def lock_key(runtime: StageRuntime, family: str, seller: str) -> str:
    """String ``<family>-lock``: the owner token of the seller's feed lock."""
    return seller_key(runtime, f"{family}-lock", seller)


_FLUSH_MARKS = {
    "wb": "wb-last-feed",
    "ack": "ack-last-feed",
    "inv": "inv-last-flush",
    "esdoc": "esdoc-last-feed",
}


def flush_mark_key(runtime: StageRuntime, family: str, seller: str) -> str:
    """String ``wb-last-feed`` / ``ack-last-feed`` / ``inv-last-flush`` / ``esdoc-last-feed``: when the
    seller's last flush was (epoch seconds), expiring after the flush interval."""
    return seller_key(runtime, _FLUSH_MARKS[family], seller)


def scaled(runtime: StageRuntime, seconds: float) -> float:
    """Amazon-time seconds as wall seconds (the simulator may run faster than real time)."""
    return seconds / runtime.settings.amazon.time_scale


# --- what a feed type supplies -------------------------------------------------------------------------


@dataclass(kw_only=True)
class Parked(ABC):
    """One item waiting for (or inside) a feed. Subclasses hold what it is and say how it is stored;
    the engine keeps the attempt bookkeeping here (stored only where the subclass stores it)."""

    attempts: int = 0
    outcome_unknown: bool = False
    not_before: float = 0.0
    last_error: str = ""
    #: When its first attempt failed (epoch seconds; 0: none has): transient failures are retried
    #: past ``max_attempts`` until the redrive deadline from here.
    first_failed_at: float = 0.0

    @property
    @abstractmethod
    def field(self) -> str:
        """Its field in the pending hash (one item per field)."""

    @abstractmethod
    def dumps(self) -> str:
        """Its value in the pending hash."""

    @abstractmethod
    def record(self) -> Any:
        """Its value (JSON) in the in-flight record's batch."""


E = TypeVar("E", bound=Parked)


@dataclass(frozen=True)
class FeedLimits:
    """A feed type's numbers, from the settings."""

    lane: str
    max_messages: int
    timeout_s: float
    #: None: never given up (sent again until applied).
    max_attempts: int | None = None
    #: The first retry's delay, doubling with each attempt; None: sent again with the next feed.
    retry_backoff_s: float | None = None
    #: At most one feed per interval; None: the next as soon as the last one settled.
    flush_interval_s: float | None = None


FailureKind = Literal["not-sent", "interrupted", "stalled", "ended", "unreadable", "refused"]


class FeedProblem(Permanent):
    """A feed ended FATAL or CANCELLED, or its processing report refused (or garbled) the document."""


@dataclass(frozen=True)
class FeedFailure:
    """Why a batch was not applied (or may not have been: ``outcome_unknown``)."""

    kind: FailureKind
    error: Exception
    outcome_unknown: bool
    feed_id: str | None = None
    #: Amazon's processing status, where the feed has one.
    status: str | None = None

    @property
    def transient(self) -> bool:
        """Amazon was down or did not answer (a 5xx, a timeout, a feed stalled in its queue): tried
        again past ``max_attempts`` until the redrive deadline, like a parked record."""
        return self.kind in ("not-sent", "interrupted", "stalled") and (
            self.outcome_unknown or isinstance(self.error, Retryable)
        )

    @property
    def spent(self) -> bool:
        """Did it cost an attempt? Throttling, or a rate limiter without Redis, sent nothing."""
        return not isinstance(self.error, (Throttled, QuotaUnavailable))

    def reason(self, what: str) -> str:
        """``code: message`` of an item given up after this failure (``what``: its feed, as the reason
        names it)."""
        if self.kind == "not-sent":
            return f"{type(self.error).__name__}: {self.error}"
        if self.kind == "interrupted":
            return f"Interrupted: the {what} was not confirmed sent"
        if self.kind == "stalled":
            return f"FeedStalled: feed {self.feed_id} {self.status}"
        return f"FeedFailed: {self.error}"

    @property
    def summary(self) -> str:
        if self.kind == "not-sent":
            return f"feed not sent: {self.error}"
        if self.kind == "ended":
            return f"feed {self.feed_id} failed"
        return str(self.error)


class FeedType(ABC, Generic[E]):
    """What is particular to one feed type: its items, its document, one message's result, policies.

    Required: :meth:`limits`, :meth:`loads` and :meth:`from_record` (its items as stored),
    :meth:`build` (the document of a batch) and :meth:`apply` (one message's result). The other hooks
    do nothing unless overridden."""

    #: Amazon's feedType, and the document's content type.
    feed_type: ClassVar[str]
    content_type: ClassVar[str]
    #: The prefix of its Redis key families (see :func:`pending_key` and the others).
    family: ClassVar[str]
    #: What logs call one of its feeds.
    noun: ClassVar[str]
    #: Task health recorded under this name, per seller's channel, at each flush (None: none).
    task: ClassVar[str | None] = None
    #: cancelFeed a feed still IN_QUEUE at the timeout. Otherwise a stalled feed is left to Amazon
    #: and its batch goes back to pending all the same.
    cancel_stalled: ClassVar[bool] = True
    #: The pending hash holds the latest value per field, written by others meanwhile: a field taken
    #: into a feed leaves pending only while it still holds the value sent, and a batch that goes back
    #: never overwrites a newer value.
    latest_wins: ClassVar[bool] = False
    #: The in-flight record lists its items' fields (``fields``), for :meth:`FeedEngine.is_queued`.
    lists_fields: ClassVar[bool] = False
    #: Flush every interval, items pending or not (the interval counts from the flush, and an empty
    #: one is recorded as task health); otherwise the interval counts from the last feed sent.
    flush_on_schedule: ClassVar[bool] = False

    @abstractmethod
    def limits(self, settings: Settings) -> FeedLimits: ...

    @abstractmethod
    def loads(self, field: str, raw: str) -> E:
        """An item from its pending-hash field and value."""

    @abstractmethod
    def from_record(self, value: Any) -> E:
        """An item from its value in the in-flight batch."""

    @abstractmethod
    def build(self, channel: Channel, batch: Mapping[int, E]) -> bytes:
        """The feed document of a batch (MessageID -> item)."""

    @abstractmethod
    async def apply(
        self,
        runtime: StageRuntime,
        channel: Channel,
        entry: E,
        errors: list[ProcessingResult],
        *,
        feed_id: str,
        pipe: Pipeline,
        detail: Any = None,
    ) -> None:
        """One message's result: accepted (no ``errors``) or refused, and what the report says of it
        beyond its errors (``detail``, from :meth:`report_details`). Redis writes queued on ``pipe``
        happen in one transaction with the in-flight record's removal."""

    def report_details(self, content: bytes, batch: Mapping[int, E]) -> Mapping[int, Any]:
        """What the processing report says of each message beyond its errors, by MessageID (the
        Easy Ship documents' ReportReferenceId): handed to :meth:`apply` as ``detail``. A report this
        cannot read raises ValueError (the batch is then not applied). None by default."""
        return {}

    def order_id(self, entry: E) -> str | None:
        """The Amazon order a message is about: report results naming the order, not the message,
        map to it."""
        return None

    async def before_apply(self, runtime: StageRuntime, channel: Channel, batch: Mapping[int, E]) -> None:
        """The feed's report is about to be applied to ``batch``: read what :meth:`apply` needs for the
        whole batch at once (one round trip, not one per message)."""

    async def settle(self, runtime: StageRuntime, channel: Channel, entry: E) -> bool:
        """Before sending: True when the item is settled without Amazon (its result published) and
        leaves pending."""
        return False

    async def reread(self, runtime: StageRuntime, channel: Channel, entry: E) -> bool:
        """An item whose earlier outcome is unknown, read on Amazon: True when that earlier try did
        apply (its result published), so it is neither sent again, refused nor given up."""
        return False

    async def give_up(self, runtime: StageRuntime, channel: Channel, entry: E, failure: FeedFailure) -> None:
        """The last attempt failed (only with ``max_attempts``): publish the failure."""

    async def taken(self, runtime: StageRuntime, batch: Mapping[int, E], started: datetime) -> None:
        """The batch was taken into a feed (each item's attempts counted)."""

    async def submitted(self, runtime: StageRuntime, batch: Mapping[int, E], feed_id: str) -> None:
        """createFeed answered with ``feed_id``."""

    async def attempt_failed(self, runtime: StageRuntime, entry: E) -> None:
        """One attempt of the item failed (its ``last_error`` and ``outcome_unknown`` are set)."""

    async def waiting(
        self, runtime: StageRuntime, channel: Channel, batch: Mapping[int, E], *, feed_id: str, status: str
    ) -> None:
        """The feed in flight is not done yet (checked under the seller's lock). An item the feed type
        settles another way meanwhile must be recognised by :meth:`apply`, :meth:`settle` and
        :meth:`give_up` when the feed's outcome comes."""


# --- pure parts --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MappedReport:
    """A processing report mapped to a batch: each MessageID's errors (empty: accepted), or the errors
    that refused the whole document (then nothing is mapped)."""

    errors: Mapping[int, list[ProcessingResult]]
    whole: tuple[ProcessingResult, ...] = ()


def map_report(report: ProcessingReport, orders: Mapping[int, str | None]) -> MappedReport:
    """Each message's errors (``orders``: MessageID -> its order id, or None): by MessageID, else by
    the order a result names without naming the message. Errors that name neither refuse the whole
    document, unless some name an order."""
    by_message = report.errors_by_message()
    unnamed = by_message.pop(None, [])
    by_order: dict[str, list[ProcessingResult]] = {}
    for result in unnamed:
        if result.amazon_order_id:
            by_order.setdefault(result.amazon_order_id, []).append(result)
    if unnamed and not by_order:
        return MappedReport({}, whole=tuple(unnamed))
    return MappedReport(
        errors={
            message_id: by_message.get(message_id) or (by_order.get(order, []) if order else [])
            for message_id, order in orders.items()
        }
    )


StallVerdict = Literal["wait", "cancel", "unknown"]


def stall_verdict(status: str, *, age_s: float, timeout_s: float, cancel_stalled: bool) -> StallVerdict:
    """A feed not done yet, ``age_s`` after it was taken: wait until the timeout; then cancel it while
    still IN_QUEUE (where the feed type cancels), else its outcome is unknown (IN_PROGRESS: it may
    apply yet)."""
    if age_s < timeout_s:
        return "wait"
    if status == "IN_QUEUE" and cancel_stalled:
        return "cancel"
    return "unknown"


def error_text(error: Exception) -> str:
    """``code: message`` of an error, as kept in Redis."""
    if isinstance(error, AmazonApiError):
        return f"{error.code}: {error.amazon_message or error}"
    return f"{type(error).__name__}: {error}"


def retry_at(now: float, attempts: int, backoff_s: float, cap_s: float = float("inf")) -> float:
    """When an item that failed its ``attempts``-th attempt may go again: ``backoff_s`` doubling, at most
    ``cap_s``."""
    return now + min(cap_s, backoff_s * 2.0 ** min(max(0, attempts - 1), 60))


@dataclass(frozen=True)
class RetryPolicy:
    """How a feed item (or a download that follows a feed) that failed goes again: ``max_attempts`` (None:
    for ever), with ``backoff_s`` doubling up to ``cap_s`` (None: at once). A transient failure (Amazon
    or the store unavailable) is not given up before ``deadline_s`` after its first failure, whatever
    the count, so an outage longer than the attempts' backoff loses nothing. Wall seconds, already
    scaled to the simulator's time (:meth:`of`)."""

    max_attempts: int | None
    backoff_s: float | None
    deadline_s: float
    cap_s: float

    @classmethod
    def of(cls, runtime: StageRuntime, max_attempts: int | None, backoff_s: float | None) -> RetryPolicy:
        redrive = runtime.redrive_settings
        return cls(
            max_attempts=max_attempts,
            backoff_s=None if backoff_s is None else scaled(runtime, backoff_s),
            deadline_s=redrive.deadline_s,
            cap_s=redrive.delays_s[-1],
        )

    def gives_up(self, *, attempts: int, first_failed_at: float, now: float, transient: bool) -> bool:
        if self.max_attempts is None or attempts < self.max_attempts:
            return False
        return not (transient and now - first_failed_at < self.deadline_s)

    def not_before(self, *, attempts: int, now: float) -> float | None:
        """When the item may go again; None: at the next round."""
        if self.backoff_s is None:
            return None
        return retry_at(now, attempts, self.backoff_s, cap_s=self.cap_s)


# --- the engine ----------------------------------------------------------------------------------------

_NOT_SENT_NOW = (Throttled, QuotaUnavailable, Retryable, Permanent)

# Take fields out of pending only where they still hold the value sent (a newer one stays pending).
# ARGV: field1, value1, field2, value2, ...
_TAKE_UNCHANGED = """
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then redis.call('HDEL', KEYS[1], ARGV[i]) end
end
return 1
"""


class FeedEngine(Generic[E]):
    """The batched-feed lifecycle of one feed type."""

    def __init__(self, kind: FeedType[E]) -> None:
        self.kind = kind

    # --- parking ------------------------------------------------------------------------------------

    async def enqueue(self, runtime: StageRuntime, seller: str, entry: E) -> None:
        await runtime.store.redis.hset(
            pending_key(runtime, self.kind.family, seller), entry.field, entry.dumps()
        )

    def queue_enqueue(self, runtime: StageRuntime, pipe: Pipeline, seller: str, entry: E) -> None:
        """:meth:`enqueue` queued on ``pipe``, to go with the caller's other writes in one round trip."""
        pipe.hset(pending_key(runtime, self.kind.family, seller), entry.field, entry.dumps())

    async def pending_count(self, runtime: StageRuntime, seller: str) -> int:
        return int(await runtime.store.redis.hlen(pending_key(runtime, self.kind.family, seller)))

    def queue_pending_count(self, runtime: StageRuntime, pipe: Pipeline, seller: str) -> None:
        """:meth:`pending_count` queued on ``pipe`` (its answer comes with the pipeline's)."""
        pipe.hlen(pending_key(runtime, self.kind.family, seller))

    async def pending(self, runtime: StageRuntime, seller: str) -> list[E]:
        """The parked items, by field."""
        raw = cast(
            dict[str, str], await runtime.store.redis.hgetall(pending_key(runtime, self.kind.family, seller))
        )
        return [self.kind.loads(name, value) for name, value in sorted(raw.items())]

    async def is_queued(self, runtime: StageRuntime, seller: str, field: str) -> bool:
        """Is this item waiting for a feed, or inside the one in flight (where the feed type lists the
        in-flight fields)?"""
        redis = runtime.store.redis
        if await redis.hexists(pending_key(runtime, self.kind.family, seller), field):
            return True
        fields = cast(str | None, await redis.hget(inflight_key(runtime, self.kind.family, seller), "fields"))
        return fields is not None and field in json.loads(fields)

    # --- one tick ------------------------------------------------------------------------------------

    async def run(self, runtime: StageRuntime, channel: Channel) -> str | None:
        """Settle the seller's feed in flight; then send the next when it is due. Returns the id of a
        feed sent."""
        kind, seller, redis = self.kind, channel.seller_id, runtime.store.redis
        if not await self.check(runtime, channel):
            return None
        if not kind.flush_on_schedule and not await self.pending_count(runtime, seller):
            return None
        interval = kind.limits(runtime.settings).flush_interval_s
        if interval is None:
            return await self.submit(runtime, channel)
        key = flush_mark_key(runtime, kind.family, seller)
        interval_s = scaled(runtime, interval)
        last = await redis.get(key)
        if last is not None and epoch_seconds(runtime.clock) - float(last) < interval_s:
            return None
        if kind.flush_on_schedule:
            await redis.set(key, str(epoch_seconds(runtime.clock)), ex=max(1, int(interval_s) + 1))
        feed_id = await self.submit(runtime, channel)
        if feed_id is not None and not kind.flush_on_schedule:
            await redis.set(key, str(epoch_seconds(runtime.clock)), ex=max(1, int(interval_s) + 1))
        return feed_id

    def lock(self, runtime: StageRuntime, seller: str) -> Lock:
        """The seller's feed lock of this feed type: one worker at a time sends, settles or takes items."""
        ttl_s = max(1.0, scaled(runtime, LOCK_TTL_S))
        return Lock(
            runtime.store.redis, lock_key(runtime, self.kind.family, seller), worker_identity(), ttl_s
        )

    async def _record(
        self, runtime: StageRuntime, channel: Channel, *, ok: bool, detail: str, **extra: Any
    ) -> None:
        if self.kind.task is not None:
            await runtime.store.record_task(self.kind.task, channel.name, ok=ok, detail=detail, **extra)

    # --- sending ---------------------------------------------------------------------------------------

    async def submit(self, runtime: StageRuntime, channel: Channel) -> str | None:
        """Send one feed with the seller's pending items (none while one is in flight); returns its id."""
        async with self.lock(runtime, channel.seller_id) as held:
            if not held:
                return None
            return await self._submit_locked(runtime, channel)

    async def _gather(self, runtime: StageRuntime, channel: Channel, limit: int) -> dict[int, E]:
        """The next feed's items by MessageID; items settled on the way (:meth:`FeedType.settle`, or an
        unknown earlier outcome found applied) leave pending and are not sent."""
        kind, seller = self.kind, channel.seller_id
        now = epoch_seconds(runtime.clock)
        batch: dict[int, E] = {}
        for entry in await self.pending(runtime, seller):
            if len(batch) >= limit:
                break
            if entry.not_before > now:
                continue
            if await kind.settle(runtime, channel, entry) or (
                entry.outcome_unknown and await kind.reread(runtime, channel, entry)
            ):
                await runtime.store.redis.hdel(pending_key(runtime, kind.family, seller), entry.field)
                continue
            batch[len(batch) + 1] = entry
        return batch

    async def _submit_locked(self, runtime: StageRuntime, channel: Channel) -> str | None:
        kind, seller, redis = self.kind, channel.seller_id, runtime.store.redis
        limits = kind.limits(runtime.settings)
        inflight = inflight_key(runtime, kind.family, seller)
        if await redis.exists(inflight):
            return None
        batch = await self._gather(runtime, channel, limits.max_messages)
        if not batch:
            await self._record(runtime, channel, ok=True, detail="nothing changed")
            return None
        started = runtime.clock.now()
        for entry in batch.values():
            entry.attempts += 1
        record: dict[FieldT, EncodableT] = {
            "batch": json.dumps({str(k): v.record() for k, v in batch.items()}),
            "started": str(epoch_seconds(runtime.clock)),
        }
        if kind.lists_fields:
            record["fields"] = json.dumps([entry.field for entry in batch.values()])
        pending = pending_key(runtime, kind.family, seller)
        async with redis.pipeline(transaction=True) as pipe:
            pipe.hset(inflight, mapping=record)
            if kind.latest_wins:
                pipe.eval(
                    _TAKE_UNCHANGED, 1, pending, *(p for e in batch.values() for p in (e.field, e.dumps()))
                )
            else:
                pipe.hdel(pending, *(entry.field for entry in batch.values()))
            await pipe.execute()
        await kind.taken(runtime, batch, started)
        content = kind.build(channel, batch)
        feeds = FeedsClient(runtime.amazon(channel))
        try:
            feed_id = await feeds.submit(kind.feed_type, content, kind.content_type, lane=limits.lane)
        except _NOT_SENT_NOW as exc:
            failure = FeedFailure("not-sent", exc, outcome_unknown=isinstance(exc, Retryable))
            await self._not_applied(runtime, channel, batch, failure)
            return None
        await redis.hset(inflight, "feed_id", feed_id)
        await kind.submitted(runtime, batch, feed_id)
        log.info("%s: %s %s with %d messages", seller, kind.noun, feed_id, len(batch))
        return feed_id

    # --- settling ----------------------------------------------------------------------------------------

    async def check(self, runtime: StageRuntime, channel: Channel) -> bool:
        """One look at the seller's feed in flight: True when it is settled (or there is none)."""
        async with self.lock(runtime, channel.seller_id) as held:
            if not held:
                return False
            return await self._check_locked(runtime, channel)

    async def _check_locked(self, runtime: StageRuntime, channel: Channel) -> bool:
        kind = self.kind
        inflight = inflight_key(runtime, kind.family, channel.seller_id)
        record = cast(dict[str, str], await runtime.store.redis.hgetall(inflight))
        if not record:
            return True
        batch = {int(k): kind.from_record(v) for k, v in json.loads(record.get("batch", "{}")).items()}
        feed_id = record.get("feed_id")
        if not feed_id:
            # Interrupted between taking the batch and learning the feed id: it may have been created.
            unknown = Retryable(f"the {kind.noun}'s outcome is unknown (interrupted submission)")
            await self._not_applied(runtime, channel, batch, FeedFailure("interrupted", unknown, True))
            return True
        feeds = FeedsClient(runtime.amazon(channel))
        feed = await runtime.retrying(f"getFeed {feed_id}", lambda: feeds.get_feed(feed_id))
        status = feed.processing_status
        if not feed.done:
            verdict = stall_verdict(
                status,
                age_s=epoch_seconds(runtime.clock) - float(record.get("started", "0")),
                timeout_s=scaled(runtime, kind.limits(runtime.settings).timeout_s),
                cancel_stalled=kind.cancel_stalled,
            )
            if verdict == "wait":
                await kind.waiting(runtime, channel, batch, feed_id=feed_id, status=status)
                return False
            cancelled = False
            if verdict == "cancel":
                try:
                    await feeds.cancel_feed(feed_id)
                    cancelled = True
                except (Retryable, Permanent, Throttled) as exc:
                    log.warning("%s: could not cancel stalled feed %s: %s", channel.seller_id, feed_id, exc)
            stalled = Retryable(f"feed {feed_id} stalled {status}" + (" (cancelled)" if cancelled else ""))
            failure = FeedFailure("stalled", stalled, not cancelled, feed_id, status)
            await self._not_applied(runtime, channel, batch, failure)
            return True
        document_id = feed.result_feed_document_id
        if status != "DONE" or not document_id:
            error = FeedProblem(f"feed {feed_id} ended {status}")
            await self._not_applied(
                runtime, channel, batch, FeedFailure("ended", error, False, feed_id, status)
            )
            return True
        content = await runtime.retrying(
            f"getFeedDocument {document_id}", lambda: feeds.get_feed_document(document_id)
        )
        await self._apply_report(runtime, channel, feed_id, batch, content)
        return True

    async def _apply_report(
        self, runtime: StageRuntime, channel: Channel, feed_id: str, batch: dict[int, E], content: bytes
    ) -> None:
        kind = self.kind
        try:
            report = parse_processing_report(content)
        except ValueError as exc:
            failure = FeedFailure("unreadable", FeedProblem(str(exc)), True, feed_id, "DONE")
            await self._not_applied(runtime, channel, batch, failure)
            return
        mapped = map_report(report, {message_id: kind.order_id(e) for message_id, e in batch.items()})
        if mapped.whole:
            error = FeedProblem("; ".join(f"{r.code}: {r.description}" for r in mapped.whole))
            await self._not_applied(
                runtime, channel, batch, FeedFailure("refused", error, False, feed_id, "DONE")
            )
            return
        try:
            details = kind.report_details(content, batch)
        except ValueError as exc:
            failure = FeedFailure("unreadable", FeedProblem(str(exc)), True, feed_id, "DONE")
            await self._not_applied(runtime, channel, batch, failure)
            return
        refused = 0
        await kind.before_apply(runtime, channel, batch)
        async with runtime.store.redis.pipeline(transaction=True) as pipe:
            for message_id, entry in sorted(batch.items()):
                errors = mapped.errors.get(message_id, [])
                refused += bool(errors)
                if errors and entry.outcome_unknown and await kind.reread(runtime, channel, entry):
                    continue  # an earlier feed of unknown outcome did apply it
                await kind.apply(
                    runtime,
                    channel,
                    entry,
                    errors,
                    feed_id=feed_id,
                    pipe=pipe,
                    detail=details.get(message_id),
                )
            pipe.delete(inflight_key(runtime, kind.family, channel.seller_id))
            await pipe.execute()
        accepted = len(batch) - refused
        log.info(
            "%s: %s %s: %d accepted, %d refused", channel.seller_id, kind.noun, feed_id, accepted, refused
        )
        await self._record(
            runtime,
            channel,
            ok=refused == 0,
            detail=f"feed {feed_id}: {accepted} accepted, {refused} refused",
            feed_id=feed_id,
            accepted=accepted,
            refused=refused,
        )

    async def _not_applied(
        self, runtime: StageRuntime, channel: Channel, batch: Mapping[int, E], failure: FeedFailure
    ) -> None:
        """A batch Amazon did not apply, or may not have: each item back to pending (with backoff), or
        given up at its last attempt; one transaction puts them back and clears the in-flight record."""
        kind, seller = self.kind, channel.seller_id
        limits = kind.limits(runtime.settings)
        policy = RetryPolicy.of(runtime, limits.max_attempts, limits.retry_backoff_s)
        log.warning("%s: %s %s: %s", seller, kind.noun, failure.kind, failure.error)
        back: list[E] = []
        for entry in batch.values():
            if not failure.spent:
                entry.attempts -= 1
                back.append(entry)
                continue
            entry.outcome_unknown = entry.outcome_unknown or failure.outcome_unknown
            entry.last_error = error_text(failure.error)
            now = epoch_seconds(runtime.clock)
            entry.first_failed_at = entry.first_failed_at or now
            await kind.attempt_failed(runtime, entry)
            if policy.gives_up(
                attempts=entry.attempts,
                first_failed_at=entry.first_failed_at,
                now=now,
                transient=failure.transient,
            ):
                if not (entry.outcome_unknown and await kind.reread(runtime, channel, entry)):
                    await kind.give_up(runtime, channel, entry, failure)
                continue
            until = policy.not_before(attempts=entry.attempts, now=now)
            if until is not None:
                entry.not_before = until
            back.append(entry)
        await self._put_back(runtime, seller, back)
        await self._record(runtime, channel, ok=False, detail=failure.summary)

    async def _put_back(self, runtime: StageRuntime, seller: str, entries: Iterable[E]) -> None:
        pending = pending_key(runtime, self.kind.family, seller)
        async with runtime.store.redis.pipeline(transaction=True) as pipe:
            for entry in entries:
                if self.kind.latest_wins:
                    pipe.hsetnx(pending, entry.field, entry.dumps())
                else:
                    pipe.hset(pending, entry.field, entry.dumps())
            pipe.delete(inflight_key(runtime, self.kind.family, seller))
            await pipe.execute()
