"""Easy Ship documents: each scheduled package's shipping label and tax invoice asked of Amazon, downloaded,
stored, and announced.

Runs in the shipment-write-back stage, beside packing (:mod:`ordersync.consumers.packing`): its agent
``easy-ship-documents`` parks packages, its task ``easy-ship documents`` sends feeds and downloads.

- Input: ``packages.scheduled``, ``PackageScheduled`` only (a package Amazon would not schedule has no
  documents).
- Output: ``packages.documents``: ``PackageDocumentsReady`` (where the PDF is stored: ``s3://...`` or
  ``file://...``, its size and SHA-256; the PDF never travels in Kafka) or ``PackageDocumentsFailed``
  (Amazon's code and message, or ordersync's reason); the order status field ``easy_ship_documents``
  Pending/Ready/Failed.
- Amazon operations and quotas (per seller, through the rate limiter):
  1. createFeedDocument, the upload and createFeed of ``POST_EASYSHIP_DOCUMENTS`` on the limiter's
     ``packing`` lane: createFeed's 30 an hour are shared with shipments and stock, and a packer waits for
     the label, so these feeds go with the shipments'. At most one feed per ``documents.flush_interval_s``
     with every package parked (up to ``documents.max_messages``); getFeed and getFeedDocument for its
     processing report, whose ``ReportReferenceId`` names each order's documents.
  2. Per reference, createRestrictedDataToken (1 a second, burst 10) and getReportDocument (0.0167 a
     second, burst 15): the documents are the restricted report type GET_EASYSHIP_DOCUMENTS. A reference
     several orders share is downloaded once. When the limiter has no token now, the rest wait for the
     next tick.
- Failures: a message Amazon refuses (no scheduled package, a warranty without serial numbers) is final,
  with Amazon's message. A feed that ends FATAL, stalls or cannot be sent puts its packages back with
  backoff (``writeback.max_attempts``; transient faults until ``redrive.deadline_s``). A download Amazon
  refuses, or that is not a PDF, is final; one Amazon or the store could not serve is tried again with
  backoff, on the same terms.
- Idempotent: a package with a documents outcome, or parked, is not parked again (a replay of
  ``packages.scheduled`` is a no-op). Asking Amazon again is harmless (it makes the same documents), and
  a document is stored under a key made of its order and reference, so storing it again overwrites it
  with the same bytes; a crash between publishing and forgetting a download publishes the same event
  again.
- Redis found without its state: :func:`rebuild_pending` puts each outcome back from
  ``packages.documents`` and parks again each scheduled package with none.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, cast

from redis.asyncio.client import Pipeline

from ordersync.amazon.feeds import (
    EASYSHIP_DOCUMENTS_FEED,
    XML_CONTENT_TYPE,
    EasyShipDocumentsMessage,
    ProcessingResult,
    easyship_document_references,
    easyship_documents_feed,
    results_text,
)
from ordersync.channels import Channel
from ordersync.clock import epoch_seconds
from ordersync.documents import DocumentStore, document_key, document_store, is_pdf
from ordersync.errors import Permanent, Retryable, Throttled
from ordersync.pipeline.feeds import (
    FeedEngine,
    FeedFailure,
    FeedLimits,
    FeedType,
    Parked,
    RetryPolicy,
    error_text,
    seller_key,
)
from ordersync.pipeline.runtime import StageRuntime
from ordersync.schemas.envelope import Envelope, Event
from ordersync.schemas.events import PackageDocumentsFailed, PackageDocumentsReady, PackageScheduled
from ordersync.schemas.topics import PACKAGES_DOCUMENTS, PACKAGES_SCHEDULED, order_key
from ordersync.settings import EasyShipDocumentType, Settings
from ordersync.state import keys

log = logging.getLogger(__name__)

#: The rate limiter's lane of these feeds: the shipments' (``ratelimit.lane_reserves``).
LANE = "packing"
#: The order status field and the package state's field of the documents' outcome.
STATUS_FIELD = "easy_ship_documents"
SETTLED = frozenset({"Ready", "Failed"})
#: Reasons ordersync gives (no Amazon code).
NO_REFERENCE = "NoReportReference"


class NotAPdf(Permanent):
    """Amazon's document for a reference is not a PDF: stored nowhere, the packages' documents failed."""


@dataclass
class PendingDocuments(Parked):
    """One scheduled package whose documents are to be asked for (the same JSON pending and in flight)."""

    order_id: str
    channel: str
    scheduled_package_id: str | None
    document_types: tuple[EasyShipDocumentType, ...]
    correlation_id: str | None = None
    marketplace_id: str | None = None

    @property
    def field(self) -> str:
        return self.order_id

    def record(self) -> dict[str, Any]:
        return {**asdict(self), "document_types": list(self.document_types)}

    def dumps(self) -> str:
        return json.dumps(self.record())

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> PendingDocuments:
        return cls(**{**value, "document_types": tuple(value["document_types"])})


@dataclass
class Download:
    """Documents Amazon made for one order, not yet downloaded: field ``<reference>|<order>`` of the
    seller's ``esdoc-fetch`` hash."""

    reference: str
    feed_id: str
    package: PendingDocuments
    attempts: int = 0
    not_before: float = 0.0
    first_failed_at: float = 0.0
    last_error: str = ""

    @property
    def field(self) -> str:
        return f"{self.reference}|{self.package.order_id}"

    def dumps(self) -> str:
        return json.dumps({**asdict(self), "package": self.package.record()})

    @classmethod
    def loads(cls, raw: str) -> Download:
        value = json.loads(raw)
        return cls(**{**value, "package": PendingDocuments.from_json(value["package"])})


def fetch_key(runtime: StageRuntime, seller: str) -> str:
    return seller_key(runtime, "esdoc-fetch", seller)


def references_by_message(content: bytes, orders: Mapping[int, str]) -> dict[int, str]:
    """Each message's ReportReferenceId from a POST_EASYSHIP_DOCUMENTS processing report (``orders``:
    MessageID -> its order): by MessageID, else by the order named beside it; one reference naming
    neither is the whole feed's (one document for every accepted message)."""
    found = easyship_document_references(content)
    by_message: dict[int, str] = {}
    message_of = {order: message_id for message_id, order in orders.items()}
    whole = [ref.report_reference_id for ref in found if ref.message_id is None and not ref.amazon_order_id]
    for ref in found:
        if ref.message_id is not None and ref.message_id in orders:
            by_message[ref.message_id] = ref.report_reference_id
        elif ref.amazon_order_id in message_of:
            by_message[message_of[ref.amazon_order_id]] = ref.report_reference_id
    if len(whole) == 1:
        for message_id in orders:
            by_message.setdefault(message_id, whole[0])
    return by_message


def _state_key(runtime: StageRuntime, seller: str, order_id: str) -> str:
    return runtime.store.key_of(keys.EASY_SHIP_PACKAGE, seller, order_id)


def _queue_outcome(runtime: StageRuntime, pipe: Pipeline, seller: str, order_id: str, status: str) -> None:
    """The documents' status on the package state and the order status (their lives kept as they are)."""
    runtime.store.queue_hash(pipe, _state_key(runtime, seller, order_id), {STATUS_FIELD: status})
    runtime.store.queue_order_status(pipe, seller, order_id, **{STATUS_FIELD: status})


async def _emit(
    runtime: StageRuntime,
    seller: str,
    package: PendingDocuments,
    event: PackageDocumentsReady | PackageDocumentsFailed,
) -> None:
    await runtime.emit(
        PACKAGES_DOCUMENTS,
        order_key(seller, package.order_id),
        Envelope.wrap(
            event,
            seller_id=seller,
            marketplace_id=package.marketplace_id,
            correlation_id=package.correlation_id or package.order_id,
        ),
    )


async def publish_failed(
    runtime: StageRuntime, seller: str, package: PendingDocuments, feed_id: str | None, error: str
) -> None:
    """Publish that the package has no documents (``error``: ``code: message``), then record it."""
    code, _, message = error.partition(": ")
    failed = PackageDocumentsFailed(
        channel=package.channel,
        amazon_order_id=package.order_id,
        document_types=package.document_types,
        feed_id=feed_id,
        error_code=code or "Failed",
        error_message=message or code or "Failed",
        failed_at=runtime.clock.now(),
    )
    await _emit(runtime, seller, package, failed)
    async with runtime.store.redis.pipeline(transaction=False) as pipe:
        _queue_outcome(runtime, pipe, seller, package.order_id, "Failed")
        await pipe.execute()


def failure_reason(failure: FeedFailure) -> str:
    """``code: message`` of an item given up after its last attempt, by why its feed failed."""
    return failure.reason("documents feed")


class EasyShipDocumentsFeed(FeedType[PendingDocuments]):
    feed_type = EASYSHIP_DOCUMENTS_FEED
    content_type = XML_CONTENT_TYPE
    family = "esdoc"
    noun = "Easy Ship documents feed"
    task = "easy-ship documents"
    lists_fields = True

    def limits(self, settings: Settings) -> FeedLimits:
        writeback = settings.writeback
        return FeedLimits(
            lane=LANE,
            max_messages=settings.documents.max_messages,
            timeout_s=writeback.feed_timeout_s,
            max_attempts=writeback.max_attempts,
            retry_backoff_s=writeback.retry_backoff_s,
            flush_interval_s=settings.documents.flush_interval_s,
        )

    def loads(self, field: str, raw: str) -> PendingDocuments:
        return PendingDocuments.from_json(json.loads(raw))

    def from_record(self, value: Any) -> PendingDocuments:
        return PendingDocuments.from_json(value)

    def build(self, channel: Channel, batch: Mapping[int, PendingDocuments]) -> bytes:
        return easyship_documents_feed(
            channel.seller_id,
            [
                EasyShipDocumentsMessage(message_id, entry.order_id, entry.document_types)
                for message_id, entry in batch.items()
            ],
        )

    def order_id(self, entry: PendingDocuments) -> str:
        return entry.order_id

    def report_details(self, content: bytes, batch: Mapping[int, PendingDocuments]) -> Mapping[int, Any]:
        return references_by_message(content, {m: e.order_id for m, e in batch.items()})

    async def apply(
        self,
        runtime: StageRuntime,
        channel: Channel,
        entry: PendingDocuments,
        errors: list[ProcessingResult],
        *,
        feed_id: str,
        pipe: Pipeline,
        detail: Any = None,
    ) -> None:
        seller = channel.seller_id
        if errors:
            await publish_failed(runtime, seller, entry, feed_id, results_text(errors) or "Refused")
        elif not isinstance(detail, str) or not detail:
            reason = f"{NO_REFERENCE}: feed {feed_id}'s processing report names no ReportReferenceId for it"
            await publish_failed(runtime, seller, entry, feed_id, reason)
        else:
            download = Download(reference=detail, feed_id=feed_id, package=entry)
            pipe.hset(fetch_key(runtime, seller), download.field, download.dumps())

    async def give_up(
        self, runtime: StageRuntime, channel: Channel, entry: PendingDocuments, failure: FeedFailure
    ) -> None:
        await publish_failed(runtime, channel.seller_id, entry, failure.feed_id, failure_reason(failure))


FEEDS = FeedEngine(EasyShipDocumentsFeed())


# --- parking -------------------------------------------------------------------------------------------


async def handle(runtime: StageRuntime, envelope: Envelope[Event]) -> None:
    """One record of ``packages.scheduled``: a scheduled package is parked for its seller's next
    documents feed, once."""
    payload = envelope.payload
    if not isinstance(payload, PackageScheduled):
        return  # not scheduled: no documents
    seller, order_id = envelope.seller_id, payload.amazon_order_id
    if payload.channel not in runtime.channels.names():
        return  # another deployment's channel on a shared cluster
    channel = runtime.channels.by_name(payload.channel)
    if channel.seller_id != seller:
        return
    store = runtime.store
    if await store.redis.hget(_state_key(runtime, seller, order_id), STATUS_FIELD) is not None:
        return  # parked, in a feed, downloading or settled: a replay
    entry = PendingDocuments(
        order_id=order_id,
        channel=channel.name,
        scheduled_package_id=payload.scheduled_package_id,
        document_types=runtime.settings.documents.types,
        correlation_id=envelope.correlation_id,
        marketplace_id=envelope.marketplace_id,
    )
    async with store.redis.pipeline(transaction=True) as pipe:
        FEEDS.queue_enqueue(runtime, pipe, seller, entry)
        _queue_outcome(runtime, pipe, seller, order_id, "Pending")
        await pipe.execute()


# --- downloading -----------------------------------------------------------------------------------------


async def downloads(runtime: StageRuntime, seller: str) -> list[Download]:
    raw = cast(dict[str, str], await runtime.store.redis.hgetall(fetch_key(runtime, seller)))
    return [Download.loads(value) for _, value in sorted(raw.items())]


async def fetch_documents(runtime: StageRuntime, channel: Channel) -> int:
    """Download the documents Amazon made for the seller's packages, store them and publish where they
    are; returns the documents stored. Runs under the seller's documents lock."""
    async with FEEDS.lock(runtime, channel.seller_id) as held:
        if not held:
            return 0
        waiting = [d for d in await downloads(runtime, channel.seller_id) if d.not_before <= _now(runtime)]
        if not waiting:
            return 0
        by_reference: dict[str, list[Download]] = {}
        for download in waiting:
            by_reference.setdefault(download.reference, []).append(download)
        async with document_store(runtime.settings) as store:
            stored = 0
            for reference, group in by_reference.items():
                try:
                    stored += await _fetch_one(runtime, channel, store, reference, group)
                except Throttled as exc:
                    log.info("%s: Easy Ship documents wait for quota: %s", channel.name, exc)
                    break
            return stored


def _now(runtime: StageRuntime) -> float:
    return epoch_seconds(runtime.clock)


async def _fetch_one(
    runtime: StageRuntime, channel: Channel, store: DocumentStore, reference: str, group: list[Download]
) -> int:
    seller = channel.seller_id
    client = runtime.amazon(channel)
    try:
        content = await client.get_report_document(reference, restricted=True)
        if not is_pdf(content):
            raise NotAPdf(f"document {reference} is not a PDF ({len(content)} bytes)")
        key = document_key(runtime.settings.documents, seller, group[0].package.order_id, reference)
        document = await store.put(key, content)
    except Permanent as exc:
        for download in group:
            await publish_failed(runtime, seller, download.package, download.feed_id, error_text(exc))
        await runtime.store.redis.hdel(fetch_key(runtime, seller), *(d.field for d in group))
        return 0
    except (Retryable, OSError) as exc:
        await _retry_later(runtime, channel, group, exc)
        return 0
    for download in group:
        package = download.package
        ready = PackageDocumentsReady(
            channel=package.channel,
            amazon_order_id=package.order_id,
            scheduled_package_id=package.scheduled_package_id,
            document_types=package.document_types,
            feed_id=download.feed_id,
            report_reference_id=reference,
            location=document.location,
            size_bytes=document.size_bytes,
            sha256=document.sha256,
            stored_at=runtime.clock.now(),
        )
        await _emit(runtime, seller, package, ready)
    async with runtime.store.redis.pipeline(transaction=True) as pipe:
        pipe.hdel(fetch_key(runtime, seller), *(d.field for d in group))
        for download in group:
            _queue_outcome(runtime, pipe, seller, download.package.order_id, "Ready")
        await pipe.execute()
    log.info("%s: Easy Ship documents %s stored for %d orders", channel.name, reference, len(group))
    return 1


async def _retry_later(
    runtime: StageRuntime, channel: Channel, group: list[Download], error: Exception
) -> None:
    """A download Amazon or the store could not serve now: again with backoff, until the attempts and
    the redrive deadline are spent."""
    seller, now = channel.seller_id, _now(runtime)
    settings = runtime.settings.writeback
    policy = RetryPolicy.of(runtime, settings.max_attempts, settings.retry_backoff_s)
    log.warning("%s: Easy Ship documents %s not downloaded: %s", channel.name, group[0].reference, error)
    keep: list[Download] = []
    for download in group:
        download.attempts += 1
        download.first_failed_at = download.first_failed_at or now
        download.last_error = error_text(error)
        # Amazon or the store unavailable: transient, so kept at least until the redrive deadline.
        if policy.gives_up(
            attempts=download.attempts, first_failed_at=download.first_failed_at, now=now, transient=True
        ):
            await publish_failed(runtime, seller, download.package, download.feed_id, download.last_error)
            await runtime.store.redis.hdel(fetch_key(runtime, seller), download.field)
            continue
        download.not_before = policy.not_before(attempts=download.attempts, now=now) or now
        keep.append(download)
    if keep:
        await runtime.store.redis.hset(fetch_key(runtime, seller), mapping={d.field: d.dumps() for d in keep})


# --- the task --------------------------------------------------------------------------------------------


async def tick(runtime: StageRuntime) -> None:
    """Every active channel: settle its documents feed in flight, send the next when due, download what
    Amazon made."""
    await runtime.confirm_state()  # Redis lost the parked packages: they come back first
    for channel in runtime.channels.channels:
        if not channel.active:
            continue
        try:
            await FEEDS.run(runtime, channel)
            await fetch_documents(runtime, channel)
        except (Permanent, Retryable, Throttled) as exc:
            log.warning("%s: Easy Ship documents step failed, next tick retries: %s", channel.name, exc)


async def rebuild_pending(runtime: StageRuntime) -> tuple[int, int]:
    """The documents' outcomes again from ``packages.documents`` (so a replayed package stays a no-op),
    then each scheduled package with none parked again (:func:`handle`). Returns (settled, parked)."""
    sellers = {channel.name: channel.seller_id for channel in runtime.channels.channels}
    settled: set[tuple[str, str]] = set()
    for envelope in await runtime.read_events(PACKAGES_DOCUMENTS):
        payload = envelope.payload
        if not isinstance(payload, PackageDocumentsReady | PackageDocumentsFailed):
            continue
        if sellers.get(payload.channel) != envelope.seller_id:
            continue  # another deployment's channel on a shared cluster
        status = "Ready" if isinstance(payload, PackageDocumentsReady) else "Failed"
        async with runtime.store.redis.pipeline(transaction=False) as pipe:
            _queue_outcome(runtime, pipe, envelope.seller_id, payload.amazon_order_id, status)
            await pipe.execute()
        settled.add((envelope.seller_id, payload.amazon_order_id))
    parked = 0
    for envelope in await runtime.read_events(PACKAGES_SCHEDULED):
        payload = envelope.payload
        if (
            not isinstance(payload, PackageScheduled)
            or (envelope.seller_id, payload.amazon_order_id) in settled
        ):
            continue
        await handle(runtime, envelope)
        parked += 1
    log.warning(
        "Easy Ship documents rebuilt from the topics: %d settled, %d parked again", len(settled), parked
    )
    return len(settled), parked
