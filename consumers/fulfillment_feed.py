"""Shipment write-back by feed: every pending shipment of a seller in one POST_ORDER_FULFILLMENT_DATA.

Why: createFeed allows 30 feeds an hour per seller, shared by every feed of every application. One
order per feed (Increff) packs 29 orders an hour; one feed with every pending shipment (up to 10,000
messages) confirms thousands with the same quota, and the inventory lane keeps its reserved token.

How, per seller (one worker at a time, under a Redis lock):

1. ``handle`` (feed mode, or auto mode with a large backlog) parks the request in the seller's
   pending hash in Redis (``wb-pending``), field ``order|package``; a replay overwrites the same field.
2. :func:`submit_pending` (every flush interval) moves up to ``feed_max_messages`` of them into the
   seller's in-flight record (``wb-inflight``: MessageID -> request) and submits the feed on the
   limiter's ``packing`` lane. A request whose earlier outcome is unknown (a timed-out createFeed, a
   stalled feed) re-reads its order on Amazon first: a shipped order is not sent again.
3. :func:`check_inflight` polls getFeed (its own bucket). DONE: the processing report's per-message
   results map back to their orders: no error -> ``shipments.confirmed`` (method ``feed``); an error ->
   ``shipments.failed`` with Amazon's message for that order (a refusal is not retried). FATAL or a
   feed-level error: the whole batch goes back to pending, one attempt spent. Not done after
   ``feed_timeout_s`` (stalled): cancelFeed if still queued (nothing applied), else the outcome is
   unknown and every order is re-read before it is sent again.

Attempts, last attempt, last error, status Pending/Success/Failed per package are kept in the same
shipment state as confirm mode (``Store.update_shipment_state``), plus the feed id.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from ordersync.amazon.feeds import (
    XML_CONTENT_TYPE,
    FeedsClient,
    FulfillmentMessage,
    ProcessingResult,
    order_fulfillment_feed,
    parse_processing_report,
)
from ordersync.channels import Channel
from ordersync.clock import epoch_seconds
from ordersync.errors import AmazonApiError, AmazonRejected, Permanent, QuotaUnavailable, Retryable, Throttled
from ordersync.runtime import StageRuntime
from ordersync.schemas.codec import decode, encode
from ordersync.schemas.envelope import Envelope, Event
from ordersync.schemas.events import ConfirmationMethod, ShipmentRequested
from ordersync.schemas.topics import SHIPMENTS_REQUESTED

if TYPE_CHECKING:
    from ordersync.consumers.shipment_write_back import PackageWriteBack

log = logging.getLogger(__name__)
FEED_TYPE = "POST_ORDER_FULFILLMENT_DATA"
PACKING_LANE = "packing"
#: A worker that dies holding a seller's lock blocks that seller's feed steps this long at most.
LOCK_TTL_S = 600.0
#: Amazon statuses after which a shipment must not be sent (again).
SHIPPED_STATUSES = frozenset({"Shipped"})
CANCELLED_STATUSES = frozenset({"Canceled"})


@dataclass
class PendingShipment:
    """One package waiting for (or inside) a feed."""

    envelope: Envelope[Event]
    marketplace: str | None
    attempts: int = 0
    outcome_unknown: bool = False
    not_before: float = 0.0
    last_error: str = ""

    @property
    def request(self) -> ShipmentRequested:
        return self.envelope.payload_as(ShipmentRequested)

    @property
    def field(self) -> str:
        return pending_field(self.request)

    def dumps(self) -> str:
        return json.dumps(
            {
                "envelope": encode(self.envelope).decode(),
                "marketplace": self.marketplace,
                "attempts": self.attempts,
                "outcome_unknown": self.outcome_unknown,
                "not_before": self.not_before,
                "last_error": self.last_error,
            }
        )

    @classmethod
    def loads(cls, raw: str) -> PendingShipment:
        data: dict[str, Any] = json.loads(raw)
        return cls(
            envelope=decode(data["envelope"].encode(), SHIPMENTS_REQUESTED),
            marketplace=data.get("marketplace"),
            attempts=int(data.get("attempts", 0)),
            outcome_unknown=bool(data.get("outcome_unknown", False)),
            not_before=float(data.get("not_before", 0.0)),
            last_error=str(data.get("last_error", "")),
        )


def pending_field(request: ShipmentRequested) -> str:
    return f"{request.amazon_order_id}|{request.package_reference_id}"


def _keys(runtime: StageRuntime, seller: str) -> tuple[str, str, str]:
    store = runtime.store
    tag = f"{{{seller}}}"
    return store.key("wb-pending", tag), store.key("wb-inflight", tag), store.key("wb-lock", tag)


def scaled(runtime: StageRuntime, seconds: float) -> float:
    """Amazon-time seconds as wall seconds (the simulator may run faster than real time)."""
    return seconds / runtime.settings.amazon.time_scale


async def enqueue(runtime: StageRuntime, pending: PendingShipment) -> None:
    pending_key, _, _ = _keys(runtime, pending.envelope.seller_id)
    await runtime.store.redis.hset(pending_key, pending.field, pending.dumps())


async def is_queued(runtime: StageRuntime, seller: str, field: str) -> bool:
    """Is this package waiting for a feed, or inside the one in flight?"""
    pending_key, inflight_key, _ = _keys(runtime, seller)
    if await runtime.store.redis.hexists(pending_key, field):
        return True
    fields = cast(str | None, await runtime.store.redis.hget(inflight_key, "fields"))
    return fields is not None and field in json.loads(fields)


async def pending_count(runtime: StageRuntime, seller: str) -> int:
    pending_key, _, _ = _keys(runtime, seller)
    return int(await runtime.store.redis.hlen(pending_key))


async def _pending(runtime: StageRuntime, seller: str) -> list[PendingShipment]:
    pending_key, _, _ = _keys(runtime, seller)
    raw = cast(dict[str, str], await runtime.store.redis.hgetall(pending_key))
    return [PendingShipment.loads(value) for _, value in sorted(raw.items())]


async def _inflight(runtime: StageRuntime, seller: str) -> dict[str, str]:
    _, inflight_key, _ = _keys(runtime, seller)
    return cast(dict[str, str], await runtime.store.redis.hgetall(inflight_key))


def _inflight_batch(record: dict[str, str]) -> dict[int, PendingShipment]:
    return {int(k): PendingShipment.loads(v) for k, v in json.loads(record.get("batch", "{}")).items()}


async def _requeue(runtime: StageRuntime, seller: str, batch: list[PendingShipment]) -> None:
    """Put a batch back to pending and clear the in-flight record, atomically."""
    pending_key, inflight_key, _ = _keys(runtime, seller)
    async with runtime.store.redis.pipeline(transaction=True) as pipe:
        for entry in batch:
            pipe.hset(pending_key, entry.field, entry.dumps())
        pipe.delete(inflight_key)
        await pipe.execute()


class SellerLock:
    """One worker per seller runs the feed steps (SET NX with expiry; released by its owner)."""

    def __init__(self, runtime: StageRuntime, seller: str, ttl_s: float, name: str = "wb-lock") -> None:
        self.runtime = runtime
        self.key = runtime.store.key(name, f"{{{seller}}}")
        self.token = f"{id(self)}-{time.monotonic()}"
        self.ttl_ms = max(1000, int(ttl_s * 1000))

    async def __aenter__(self) -> bool:
        return bool(await self.runtime.store.redis.set(self.key, self.token, nx=True, px=self.ttl_ms))

    async def __aexit__(self, *exc: object) -> None:
        if await self.runtime.store.redis.get(self.key) == self.token:
            await self.runtime.store.redis.delete(self.key)


def _message(message_id: int, request: ShipmentRequested, channel: Channel) -> FulfillmentMessage:
    return FulfillmentMessage(
        message_id=message_id,
        amazon_order_id=request.amazon_order_id,
        fulfillment_date=request.ship_date,
        carrier_code=request.carrier_code,
        carrier_name=request.carrier_name or channel.default_carrier,
        shipping_method=request.shipping_method,
        tracking_number=request.tracking_number,
        items=tuple((item.order_item_id, item.quantity) for item in request.items),
    )


def _package(runtime: StageRuntime, entry: PendingShipment) -> PackageWriteBack:
    from ordersync.consumers.shipment_write_back import PackageWriteBack  # noqa: PLC0415 - a cycle

    return PackageWriteBack(runtime, entry.envelope, entry.request, entry.marketplace)


async def _publish_confirmed(
    runtime: StageRuntime, entry: PendingShipment, method: ConfirmationMethod
) -> None:
    await _package(runtime, entry).publish_confirmed(method, max(1, entry.attempts))


async def _publish_failed(runtime: StageRuntime, entry: PendingShipment, error: Exception) -> None:
    await _package(runtime, entry).publish_failed(error, entry.attempts)


async def _settled_on_amazon(runtime: StageRuntime, channel: Channel, entry: PendingShipment) -> bool:
    """An unknown earlier outcome: read the order on Amazon. True when a result was published
    (shipped: confirmed; cancelled: failed), False when it must be sent (again)."""
    order = await runtime.retrying(
        f"getOrder {entry.request.amazon_order_id}",
        lambda: runtime.amazon(channel).get_order(entry.request.amazon_order_id),
    )
    if order.order_status in SHIPPED_STATUSES:
        await _publish_confirmed(runtime, entry, "already-confirmed")
        return True
    if order.order_status in CANCELLED_STATUSES:
        await _publish_failed(
            runtime, entry, Permanent(f"order {entry.request.amazon_order_id} is cancelled on Amazon")
        )
        return True
    return False


async def submit_pending(runtime: StageRuntime, channel: Channel) -> str | None:
    """Send one feed with the seller's pending shipments (none while one is in flight); returns its id."""
    seller = channel.seller_id
    async with SellerLock(runtime, seller, scaled(runtime, LOCK_TTL_S)) as held:
        if not held:
            return None
        return await _submit_locked(runtime, channel)


async def _gather(runtime: StageRuntime, channel: Channel) -> dict[int, PendingShipment]:
    """The next feed's messages by MessageID; cancelled orders, and shipments of unknown outcome found
    shipped when re-read on Amazon, are settled on the way and never sent."""
    seller = channel.seller_id
    limit = runtime.settings.writeback.feed_max_messages
    now = epoch_seconds(runtime.clock)
    pending_key, _, _ = _keys(runtime, seller)
    batch: dict[int, PendingShipment] = {}
    for entry in await _pending(runtime, seller):
        if len(batch) >= limit:
            break
        if entry.not_before > now:
            continue
        status = await runtime.store.order_status(seller, entry.request.amazon_order_id)
        settled = False
        if status.get("amazon_status") == "Canceled":
            cancelled = Permanent(
                f"order {entry.request.amazon_order_id} is cancelled on Amazon;"
                " a cancelled order is never confirmed"
            )
            await _publish_failed(runtime, entry, cancelled)
            settled = True
        elif entry.outcome_unknown:
            settled = await _settled_on_amazon(runtime, channel, entry)
        if settled:
            await runtime.store.redis.hdel(pending_key, entry.field)
            continue
        batch[len(batch) + 1] = entry
    return batch


async def _submit_locked(runtime: StageRuntime, channel: Channel) -> str | None:
    seller = channel.seller_id
    if await _inflight(runtime, seller):
        return None
    batch = await _gather(runtime, channel)
    if not batch:
        return None
    pending_key, inflight_key, _ = _keys(runtime, seller)
    started = runtime.clock.now().isoformat()
    for entry in batch.values():
        entry.attempts += 1
    async with runtime.store.redis.pipeline(transaction=True) as pipe:
        pipe.hset(
            inflight_key,
            mapping={
                "batch": json.dumps({str(k): v.dumps() for k, v in batch.items()}),
                "fields": json.dumps([entry.field for entry in batch.values()]),
                "started": str(epoch_seconds(runtime.clock)),
            },
        )
        pipe.hdel(pending_key, *(entry.field for entry in batch.values()))
        await pipe.execute()
    for entry in batch.values():
        await _package(runtime, entry).record_state(
            status="Pending", attempts=entry.attempts, last_attempt=started, method="feed"
        )
    content = order_fulfillment_feed(seller, (_message(i, e.request, channel) for i, e in batch.items()))
    feeds = FeedsClient(runtime.amazon(channel))
    try:
        feed_id = await feeds.submit(FEED_TYPE, content, XML_CONTENT_TYPE, lane=PACKING_LANE)
    except (Throttled, QuotaUnavailable) as exc:
        # Nothing created: not an attempt.
        log.warning("%s: fulfillment feed not sent now: %s", seller, exc)
        for entry in batch.values():
            entry.attempts -= 1
        await _requeue(runtime, seller, list(batch.values()))
        return None
    except (Retryable, Permanent) as exc:
        unknown = isinstance(exc, Retryable)
        await _attempt_failed(runtime, channel, list(batch.values()), exc, outcome_unknown=unknown)
        return None
    await runtime.store.redis.hset(inflight_key, "feed_id", feed_id)
    for entry in batch.values():
        await _package(runtime, entry).record_state(feed_id=feed_id)
    log.info("%s: fulfillment feed %s with %d shipments", seller, feed_id, len(batch))
    return feed_id


def _error_text(error: Exception) -> str:
    if isinstance(error, AmazonApiError):
        return f"{error.code}: {error.amazon_message or error}"
    return f"{type(error).__name__}: {error}"


async def _attempt_failed(
    runtime: StageRuntime,
    channel: Channel,
    batch: list[PendingShipment],
    error: Exception,
    *,
    outcome_unknown: bool,
) -> None:
    """A whole feed failed: each package back to pending with backoff, or failed at the last attempt."""
    settings = runtime.settings.writeback
    back: list[PendingShipment] = []
    for entry in batch:
        entry.outcome_unknown = entry.outcome_unknown or outcome_unknown
        entry.last_error = _error_text(error)
        await _package(runtime, entry).record_state(
            last_error=entry.last_error, outcome="unknown" if entry.outcome_unknown else "refused"
        )
        if entry.attempts >= settings.max_attempts:
            if entry.outcome_unknown and await _settled_on_amazon(runtime, channel, entry):
                continue
            await _publish_failed(runtime, entry, error)
            continue
        entry.not_before = epoch_seconds(runtime.clock) + scaled(
            runtime, settings.retry_backoff_s * 2 ** max(0, entry.attempts - 1)
        )
        back.append(entry)
    await _requeue(runtime, channel.seller_id, back)


class FeedProblem(Permanent):
    """A fulfillment feed ended FATAL or its report refused the whole document."""


def message_refused(feed_id: str, results: list[ProcessingResult]) -> AmazonRejected:
    """Amazon refused one message of a feed (the report's Results for its MessageID)."""
    code = results[0].code or "FeedMessageError"
    message = "; ".join(r.description for r in results if r.description) or code
    return AmazonRejected(f"{FEED_TYPE} {feed_id}", None, code, message)


async def check_inflight(runtime: StageRuntime, channel: Channel) -> bool:
    """One look at the seller's feed in flight: True when it is settled (or there is none)."""
    seller = channel.seller_id
    async with SellerLock(runtime, seller, scaled(runtime, LOCK_TTL_S)) as held:
        if not held:
            return False
        return await _check_locked(runtime, channel)


async def _check_locked(runtime: StageRuntime, channel: Channel) -> bool:
    seller = channel.seller_id
    record = await _inflight(runtime, seller)
    if not record:
        return True
    batch = _inflight_batch(record)
    feed_id = record.get("feed_id")
    if not feed_id:
        # Crashed between taking the batch and learning the feed id: it may have been created.
        await _attempt_failed(
            runtime,
            channel,
            list(batch.values()),
            Retryable("the fulfillment feed's outcome is unknown (interrupted submission)"),
            outcome_unknown=True,
        )
        return True
    feeds = FeedsClient(runtime.amazon(channel))
    feed = await runtime.retrying(f"getFeed {feed_id}", lambda: feeds.get_feed(feed_id))
    if not feed.done:
        started = float(record.get("started", "0"))
        if epoch_seconds(runtime.clock) - started < scaled(
            runtime, runtime.settings.writeback.feed_timeout_s
        ):
            return False
        return await _stalled(
            runtime, channel, feeds=feeds, feed_id=feed_id, status=feed.processing_status, batch=batch
        )
    if feed.processing_status != "DONE" or not feed.result_feed_document_id:
        await _attempt_failed(
            runtime,
            channel,
            list(batch.values()),
            FeedProblem(f"feed {feed_id} ended {feed.processing_status}"),
            outcome_unknown=False,
        )
        return True
    document_id = feed.result_feed_document_id
    content = await runtime.retrying(
        f"getFeedDocument {document_id}", lambda: feeds.get_feed_document(document_id)
    )
    await _apply_report(runtime, channel, feed_id, batch, content)
    return True


async def _stalled(
    runtime: StageRuntime,
    channel: Channel,
    *,
    feeds: FeedsClient,
    feed_id: str,
    status: str,
    batch: dict[int, PendingShipment],
) -> bool:
    cancelled = False
    if status == "IN_QUEUE":
        try:
            await feeds.cancel_feed(feed_id)
            cancelled = True
        except (Retryable, Permanent, Throttled) as exc:
            log.warning("%s: could not cancel stalled feed %s: %s", channel.seller_id, feed_id, exc)
    await _attempt_failed(
        runtime,
        channel,
        list(batch.values()),
        Retryable(f"feed {feed_id} stalled {status}" + (" (cancelled)" if cancelled else "")),
        outcome_unknown=not cancelled,
    )
    return True


async def _apply_report(
    runtime: StageRuntime,
    channel: Channel,
    feed_id: str,
    batch: dict[int, PendingShipment],
    content: bytes,
) -> None:
    try:
        report = parse_processing_report(content)
    except ValueError as exc:
        await _attempt_failed(
            runtime, channel, list(batch.values()), FeedProblem(str(exc)), outcome_unknown=True
        )
        return
    by_message = report.errors_by_message()
    whole = by_message.pop(None, [])
    by_order: dict[str, list[ProcessingResult]] = {}
    for result in whole:
        if result.amazon_order_id:
            by_order.setdefault(result.amazon_order_id, []).append(result)
    if whole and not by_order:
        await _attempt_failed(
            runtime,
            channel,
            list(batch.values()),
            FeedProblem("; ".join(f"{r.code}: {r.description}" for r in whole)),
            outcome_unknown=False,
        )
        return
    for message_id, entry in sorted(batch.items()):
        errors = by_message.get(message_id) or by_order.get(entry.request.amazon_order_id) or []
        if not errors:
            await _publish_confirmed(runtime, entry, "feed")
            continue
        refused = message_refused(feed_id, errors)
        if entry.outcome_unknown and await _settled_on_amazon(runtime, channel, entry):
            continue  # an earlier feed of unknown outcome did confirm it
        await _package(runtime, entry).record_state(last_error=_error_text(refused), outcome="refused")
        await _publish_failed(runtime, entry, refused)
    _, inflight_key, _ = _keys(runtime, channel.seller_id)
    await runtime.store.redis.delete(inflight_key)
    log.info(
        "%s: feed %s: %d confirmed, %d refused",
        channel.seller_id,
        feed_id,
        len(batch) - report.with_error,
        report.with_error,
    )


async def run_feeds(runtime: StageRuntime, channel: Channel) -> str | None:
    """One tick for a seller: settle the feed in flight, then, at most once per flush interval, send
    the next when any shipment is pending. Returns the id of a feed sent."""
    seller = channel.seller_id
    if not await check_inflight(runtime, channel) or not await pending_count(runtime, seller):
        return None
    key = runtime.store.key("wb-last-feed", f"{{{seller}}}")
    last = await runtime.store.redis.get(key)
    interval_s = scaled(runtime, runtime.settings.writeback.feed_flush_interval_s)
    if last is not None and epoch_seconds(runtime.clock) - float(last) < interval_s:
        return None
    feed_id = await submit_pending(runtime, channel)
    if feed_id is not None:
        await runtime.store.redis.set(key, str(epoch_seconds(runtime.clock)), ex=max(1, int(interval_s) + 1))
    return feed_id
