"""Shipment write-back by feed: every pending shipment of a seller in one POST_ORDER_FULFILLMENT_DATA.

Why: createFeed allows 30 feeds an hour per seller, shared by every feed of every application. One
order per feed packs 29 orders an hour; one feed with every pending shipment (up to 10,000 messages)
confirms thousands with the same quota, and the inventory lane keeps its reserved token.

The batched-feed engine (:mod:`ordersync.pipeline.feeds`) runs the lifecycle; what is particular here:

- ``handle`` (feed mode, or auto mode with a large backlog) parks the request in the seller's pending
  hash (``wb-pending``), field ``order|package``; the in-flight record lists its fields, so a
  redelivered request is recognised while its feed is in flight (:func:`is_queued`).
- The feed goes on the limiter's ``packing`` lane, at most once per ``feed_flush_interval_s``.
- Before sending: an order known cancelled fails (a cancelled order is never confirmed); a package
  whose earlier outcome is unknown (a timed-out createFeed, a stalled feed) re-reads its order on
  Amazon: shipped -> ``shipments.confirmed`` (``already-confirmed``), cancelled -> failed, else sent.
- Each MessageID of the report: no error -> ``shipments.confirmed`` (method ``feed``); an error ->
  ``shipments.failed`` with Amazon's message for that order (a refusal is not retried). A feed that
  ended FATAL or stalled spends one of ``writeback.max_attempts`` attempts, with backoff
  (``retry_backoff_s``, at most the last redrive delay); after the last, ``shipments.failed``, except
  when Amazon was down or did not answer (a 5xx or timeout on createFeed, a feed stalled in its
  queue): such a package is sent again until the redrive deadline (``redrive.deadline_s``).

Attempts, last attempt, last error, status Pending/Success/Failed per package are kept in the same
shipment state as confirm mode (``Store.update_shipment_state``), plus the feed id.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import UTC, datetime
from typing import Any

from redis.asyncio.client import Pipeline

from ordersync.amazon.feeds import (
    XML_CONTENT_TYPE,
    FulfillmentMessage,
    ProcessingResult,
    order_fulfillment_feed,
)
from ordersync.channels import Channel
from ordersync.clock import epoch_seconds
from ordersync.consumers.shipment_package import PackageWriteBack
from ordersync.errors import AmazonRejected, Permanent, Retryable
from ordersync.pipeline.feeds import (
    FeedEngine,
    FeedFailure,
    FeedLimits,
    FeedType,
    Parked,
    error_text,
    flush_mark_key,
    inflight_key,
    pending_key,
    scaled,
)
from ordersync.pipeline.runtime import StageRuntime
from ordersync.schemas.codec import decode, encode
from ordersync.schemas.envelope import Envelope, Event
from ordersync.schemas.events import ShipmentRequested
from ordersync.schemas.topics import SHIPMENTS_REQUESTED
from ordersync.settings import Settings
from ordersync.state import keys

log = logging.getLogger(__name__)
FEED_TYPE = "POST_ORDER_FULFILLMENT_DATA"
PACKING_LANE = "packing"
#: Amazon statuses after which a shipment must not be sent (again).
SHIPPED_STATUSES = frozenset({"Shipped"})
CANCELLED_STATUSES = frozenset({"Canceled"})


@dataclass
class PendingShipment(Parked):
    """One package waiting for (or inside) a feed."""

    envelope: Envelope[Event]
    marketplace: str | None
    #: The order's latest ship date (epoch seconds), where known.
    ship_by: float | None = None
    #: Confirmed already, as read for its whole feed at once (:meth:`FulfillmentFeed.before_apply`);
    #: None: not read. Never stored.
    settled: bool | None = dataclass_field(default=None, compare=False)

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
                "first_failed_at": self.first_failed_at,
                "ship_by": self.ship_by,
            }
        )

    def record(self) -> str:
        return self.dumps()

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
            first_failed_at=float(data.get("first_failed_at", 0.0)),
            ship_by=float(data["ship_by"]) if data.get("ship_by") is not None else None,
        )


def pending_field(request: ShipmentRequested) -> str:
    return f"{request.amazon_order_id}|{request.package_reference_id}"


# --- ship-by deadlines -----------------------------------------------------------------------------


def feed_would_be_late(
    *, now: float, ship_by: float, next_feed_at: float, feed_expected_s: float, margin_s: float
) -> bool:
    """Would a package waiting for the next feed (sent at ``next_feed_at`` at the earliest, processed in
    about ``feed_expected_s``) be confirmed later than ``margin_s`` before its order's latest ship date?
    An order already past it is late whatever happens: the sooner the better."""
    return max(now, next_feed_at) + feed_expected_s + margin_s > ship_by


def near_deadline(*, now: float, ship_by: float, margin_s: float) -> bool:
    """A package inside a feed not done yet: is its order's latest ship date within ``margin_s``?"""
    return now + margin_s >= ship_by


async def next_feed_at(runtime: StageRuntime, seller: str) -> float:
    """When the seller's next fulfillment feed can go at the earliest (epoch seconds): after the flush
    interval since the last one, and after the feed in flight settles."""
    settings = runtime.settings.writeback
    at = epoch_seconds(runtime.clock)
    async with runtime.store.redis.pipeline(transaction=False) as pipe:
        pipe.get(flush_mark_key(runtime, FulfillmentFeed.family, seller))
        pipe.hget(inflight_key(runtime, FulfillmentFeed.family, seller), "started")
        last, started = await pipe.execute()
    if last is not None:
        at = max(at, float(last) + scaled(runtime, settings.feed_flush_interval_s))
    if started is not None:
        at = max(at, float(started) + scaled(runtime, settings.feed_expected_s))
    return at


async def misses_deadline_by_feed(runtime: StageRuntime, seller: str, ship_by: float | None) -> bool:
    """Does a package due by ``ship_by`` go by confirmShipment rather than wait for a feed?"""
    if ship_by is None or not runtime.settings.writeback.ship_by_direct:
        return False
    return _late_by_feed(runtime, ship_by, await next_feed_at(runtime, seller))


def _late_by_feed(runtime: StageRuntime, ship_by: float, next_feed: float) -> bool:
    """:func:`feed_would_be_late` with the settings' times, for a next feed known already."""
    settings = runtime.settings.writeback
    return feed_would_be_late(
        now=epoch_seconds(runtime.clock),
        ship_by=ship_by,
        next_feed_at=next_feed,
        feed_expected_s=scaled(runtime, settings.feed_expected_s),
        margin_s=scaled(runtime, settings.ship_by_margin_s),
    )


def deadline_note(ship_by: float, *, feed_id: str | None = None, parked: bool = False) -> str:
    """Why a package of feed or auto mode was confirmed by confirmShipment (its outcome's note)."""
    due = datetime.fromtimestamp(ship_by, UTC).isoformat()
    if feed_id is not None:
        return f"confirmed directly: feed {feed_id} was not done near its latest ship date ({due})"
    if parked:
        return f"confirmed directly: the next feed could not confirm it before its latest ship date ({due})"
    return f"confirmed at once: a feed would confirm it after its latest ship date ({due})"


async def _is_settled(runtime: StageRuntime, entry: PendingShipment) -> bool:
    """Confirmed already, not by this feed (directly, before its deadline)."""
    if entry.settled is not None:
        return entry.settled
    request = entry.request
    state = await runtime.store.shipment_state(
        entry.envelope.seller_id, request.amazon_order_id, request.package_reference_id
    )
    return state.get("status") == "Success"


def _queue_shipment_states(
    runtime: StageRuntime, pipe: Pipeline, entries: Iterable[PendingShipment], **fields: str | int
) -> None:
    """The same ``fields`` of each package's shipment state, queued on ``pipe``."""
    for entry in entries:
        request = entry.request
        runtime.store.queue_shipment_state(
            pipe, entry.envelope.seller_id, request.amazon_order_id, request.package_reference_id, **fields
        )


async def confirm_before_deadline(
    runtime: StageRuntime, entry: PendingShipment, *, in_feed: str | None = None, parked: bool = False
) -> bool:
    """One confirmShipment attempt for a package a feed would confirm too late; True when its result
    is published. A package inside a feed (``in_feed``) is read on Amazon first (the feed may have
    applied it) and, when refused, left to the feed; a parked one refused fails as in confirm mode."""
    assert entry.ship_by is not None
    package = _package(runtime, entry)
    method, error, attempts = await package.attempt(
        entry.attempts, entry.outcome_unknown or in_feed is not None, budget=1
    )
    if method is not None:
        await package.publish_confirmed(
            method, attempts, note=deadline_note(entry.ship_by, feed_id=in_feed, parked=parked)
        )
        return True
    if in_feed is None and error is not None and not isinstance(error, Retryable):
        await package.publish_failed(error, attempts)
        return True
    return False


async def rescue_parked(runtime: StageRuntime, channel: Channel) -> int:
    """Parked packages whose deadline the next feed would miss go by confirmShipment now, under the
    seller's feed lock (so no feed takes them meanwhile). One attempt each per tick; one that fails
    transiently stays parked, marked as of unknown outcome, so whatever sends it next reads its order
    on Amazon first. Returns how many were settled."""
    seller = channel.seller_id
    settings = runtime.settings.writeback
    if not settings.ship_by_direct:
        return 0
    settled = 0
    async with FEEDS.lock(runtime, seller) as held:
        if not held:
            return 0
        next_feed = await next_feed_at(runtime, seller)  # once: the same for every parked package
        now = epoch_seconds(runtime.clock)
        due = [
            entry
            for entry in await FEEDS.pending(runtime, seller)
            if entry.ship_by is not None
            and entry.not_before <= now
            and _late_by_feed(runtime, entry.ship_by, next_feed)
        ]
        redis, pending = runtime.store.redis, pending_key(runtime, FulfillmentFeed.family, seller)
        for entry in due:
            if await _is_settled(runtime, entry):
                await redis.hdel(pending, entry.field)
                continue
            # A crash after confirmShipment leaves it parked: the next sender must read Amazon first.
            entry.outcome_unknown = True
            await redis.hset(pending, entry.field, entry.dumps())
            if await confirm_before_deadline(runtime, entry, parked=True):
                await redis.hdel(pending, entry.field)
                settled += 1
    return settled


def message_refused(feed_id: str, results: list[ProcessingResult]) -> AmazonRejected:
    """Amazon refused one message of a feed (the report's Results for its MessageID)."""
    code = results[0].code or "FeedMessageError"
    message = "; ".join(r.description for r in results if r.description) or code
    return AmazonRejected(f"{FEED_TYPE} {feed_id}", None, code, message)


def _package(runtime: StageRuntime, entry: PendingShipment) -> PackageWriteBack:
    return PackageWriteBack(runtime, entry.envelope, entry.request, entry.marketplace)


class FulfillmentFeed(FeedType[PendingShipment]):
    feed_type = FEED_TYPE
    content_type = XML_CONTENT_TYPE
    family = "wb"
    noun = "fulfillment feed"
    lists_fields = True

    def limits(self, settings: Settings) -> FeedLimits:
        writeback = settings.writeback
        return FeedLimits(
            lane=PACKING_LANE,
            max_messages=writeback.feed_max_messages,
            timeout_s=writeback.feed_timeout_s,
            max_attempts=writeback.max_attempts,
            retry_backoff_s=writeback.retry_backoff_s,
            flush_interval_s=writeback.feed_flush_interval_s,
        )

    def loads(self, field: str, raw: str) -> PendingShipment:
        return PendingShipment.loads(raw)

    def from_record(self, value: Any) -> PendingShipment:
        return PendingShipment.loads(value)

    def build(self, channel: Channel, batch: Mapping[int, PendingShipment]) -> bytes:
        return order_fulfillment_feed(
            channel.seller_id,
            (
                FulfillmentMessage(
                    message_id=message_id,
                    amazon_order_id=entry.request.amazon_order_id,
                    fulfillment_date=entry.request.ship_date,
                    carrier_code=entry.request.carrier_code,
                    carrier_name=entry.request.carrier_name or channel.default_carrier,
                    shipping_method=entry.request.shipping_method,
                    tracking_number=entry.request.tracking_number,
                    items=tuple((item.order_item_id, item.quantity) for item in entry.request.items),
                )
                for message_id, entry in batch.items()
            ),
        )

    def order_id(self, entry: PendingShipment) -> str:
        return entry.request.amazon_order_id

    async def apply(
        self,
        runtime: StageRuntime,
        channel: Channel,
        entry: PendingShipment,
        errors: list[ProcessingResult],
        *,
        feed_id: str,
        pipe: Pipeline,
        detail: Any = None,
    ) -> None:
        if await _is_settled(runtime, entry):
            return  # confirmed directly before its deadline while this feed was not done
        package = _package(runtime, entry)
        if not errors:
            await package.publish_confirmed("feed", max(1, entry.attempts))
            return
        refused = message_refused(feed_id, errors)
        await package.record_state(last_error=error_text(refused), outcome="refused")
        await package.publish_failed(refused, entry.attempts)

    async def before_apply(
        self, runtime: StageRuntime, channel: Channel, batch: Mapping[int, PendingShipment]
    ) -> None:
        store, entries = runtime.store, list(batch.values())
        async with store.redis.pipeline(transaction=False) as pipe:
            for entry in entries:
                request = entry.request
                key = store.key_of(
                    keys.SHIPMENT,
                    entry.envelope.seller_id,
                    request.amazon_order_id,
                    request.package_reference_id,
                )
                pipe.hget(key, "status")
            statuses = await pipe.execute()
        for entry, status in zip(entries, statuses, strict=True):
            entry.settled = status == "Success"  # (the store's client decodes responses)

    async def settle(self, runtime: StageRuntime, channel: Channel, entry: PendingShipment) -> bool:
        request, store = entry.request, runtime.store
        # The package's state and its order's status in one round trip.
        async with store.redis.pipeline(transaction=False) as pipe:
            pipe.hget(
                store.key_of(
                    keys.SHIPMENT, channel.seller_id, request.amazon_order_id, request.package_reference_id
                ),
                "status",
            )
            pipe.hget(
                store.key_of(keys.ORDER_STATUS, channel.seller_id, request.amazon_order_id), "amazon_status"
            )
            state, amazon_status = await pipe.execute()
        if state == "Success":
            return True
        if amazon_status != "Canceled":
            return False
        cancelled = Permanent(
            f"order {entry.request.amazon_order_id} is cancelled on Amazon;"
            " a cancelled order is never confirmed"
        )
        await _package(runtime, entry).publish_failed(cancelled, entry.attempts)
        return True

    async def reread(self, runtime: StageRuntime, channel: Channel, entry: PendingShipment) -> bool:
        """Shipped on Amazon: confirmed; cancelled: failed; otherwise it must be sent (again)."""
        order_id = entry.request.amazon_order_id
        order = await runtime.retrying(
            f"getOrder {order_id}", lambda: runtime.amazon(channel).get_order(order_id)
        )
        if order.order_status in SHIPPED_STATUSES:
            await _package(runtime, entry).publish_confirmed("already-confirmed", max(1, entry.attempts))
            return True
        if order.order_status in CANCELLED_STATUSES:
            cancelled = Permanent(f"order {order_id} is cancelled on Amazon")
            await _package(runtime, entry).publish_failed(cancelled, entry.attempts)
            return True
        return False

    async def give_up(
        self, runtime: StageRuntime, channel: Channel, entry: PendingShipment, failure: FeedFailure
    ) -> None:
        if not await _is_settled(runtime, entry):
            await _package(runtime, entry).publish_failed(failure.error, entry.attempts)

    async def waiting(
        self,
        runtime: StageRuntime,
        channel: Channel,
        batch: Mapping[int, PendingShipment],
        *,
        feed_id: str,
        status: str,
    ) -> None:
        """Packages of a feed not done yet whose deadline is near: confirmed directly (after reading
        their order on Amazon); the feed's later result for them is then ignored."""
        settings = runtime.settings.writeback
        if not settings.ship_by_direct:
            return
        now, margin_s = epoch_seconds(runtime.clock), scaled(runtime, settings.ship_by_margin_s)
        for entry in batch.values():
            if entry.ship_by is None or not near_deadline(now=now, ship_by=entry.ship_by, margin_s=margin_s):
                continue
            if not await _is_settled(runtime, entry):
                log.warning(
                    "%s: feed %s still %s near the latest ship date of %s: confirming it directly",
                    channel.seller_id,
                    feed_id,
                    status,
                    entry.request.amazon_order_id,
                )
                await confirm_before_deadline(runtime, entry, in_feed=feed_id)

    async def taken(
        self, runtime: StageRuntime, batch: Mapping[int, PendingShipment], started: datetime
    ) -> None:
        async with runtime.store.redis.pipeline(transaction=False) as pipe:
            for entry in batch.values():
                _queue_shipment_states(
                    runtime,
                    pipe,
                    (entry,),
                    status="Pending",
                    attempts=entry.attempts,
                    last_attempt=started.isoformat(),
                    method="feed",
                )
            await pipe.execute()

    async def submitted(
        self, runtime: StageRuntime, batch: Mapping[int, PendingShipment], feed_id: str
    ) -> None:
        async with runtime.store.redis.pipeline(transaction=False) as pipe:
            _queue_shipment_states(runtime, pipe, batch.values(), feed_id=feed_id)
            await pipe.execute()

    async def attempt_failed(self, runtime: StageRuntime, entry: PendingShipment) -> None:
        await _package(runtime, entry).record_state(
            last_error=entry.last_error, outcome="unknown" if entry.outcome_unknown else "refused"
        )


FEEDS = FeedEngine(FulfillmentFeed())
#: One tick for a seller: settle the feed in flight, then, at most once per flush interval, send the
#: next when any shipment is pending. Returns the id of a feed sent.
run_feeds = FEEDS.run
submit_pending = FEEDS.submit
check_inflight = FEEDS.check
pending_count = FEEDS.pending_count
is_queued = FEEDS.is_queued


async def enqueue(runtime: StageRuntime, pending: PendingShipment) -> None:
    await FEEDS.enqueue(runtime, pending.envelope.seller_id, pending)


def queue_enqueue(runtime: StageRuntime, pipe: Pipeline, pending: PendingShipment) -> None:
    """:func:`enqueue` queued on ``pipe``."""
    FEEDS.queue_enqueue(runtime, pipe, pending.envelope.seller_id, pending)


def queue_pending_count(runtime: StageRuntime, pipe: Pipeline, seller: str) -> None:
    """The seller's shipments waiting for a feed (:func:`pending_count`), queued on ``pipe``."""
    FEEDS.queue_pending_count(runtime, pipe, seller)
