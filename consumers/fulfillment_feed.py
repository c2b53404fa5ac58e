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
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from redis.asyncio.client import Pipeline

from ordersync.amazon.feeds import (
    XML_CONTENT_TYPE,
    FulfillmentMessage,
    ProcessingResult,
    order_fulfillment_feed,
)
from ordersync.channels import Channel
from ordersync.consumers.shipment_package import PackageWriteBack
from ordersync.errors import AmazonRejected, Permanent
from ordersync.pipeline.feeds import (
    FeedEngine,
    FeedFailure,
    FeedLimits,
    FeedType,
    Parked,
    error_text,
)
from ordersync.pipeline.runtime import StageRuntime
from ordersync.schemas.codec import decode, encode
from ordersync.schemas.envelope import Envelope, Event
from ordersync.schemas.events import ShipmentRequested
from ordersync.schemas.topics import SHIPMENTS_REQUESTED
from ordersync.settings import Settings

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
        )


def pending_field(request: ShipmentRequested) -> str:
    return f"{request.amazon_order_id}|{request.package_reference_id}"


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
    ) -> None:
        package = _package(runtime, entry)
        if not errors:
            await package.publish_confirmed("feed", max(1, entry.attempts))
            return
        refused = message_refused(feed_id, errors)
        await package.record_state(last_error=error_text(refused), outcome="refused")
        await package.publish_failed(refused, entry.attempts)

    async def settle(self, runtime: StageRuntime, channel: Channel, entry: PendingShipment) -> bool:
        status = await runtime.store.order_status(channel.seller_id, entry.request.amazon_order_id)
        if status.get("amazon_status") != "Canceled":
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
        await _package(runtime, entry).publish_failed(failure.error, entry.attempts)

    async def taken(
        self, runtime: StageRuntime, batch: Mapping[int, PendingShipment], started: datetime
    ) -> None:
        for entry in batch.values():
            await _package(runtime, entry).record_state(
                status="Pending", attempts=entry.attempts, last_attempt=started.isoformat(), method="feed"
            )

    async def submitted(
        self, runtime: StageRuntime, batch: Mapping[int, PendingShipment], feed_id: str
    ) -> None:
        for entry in batch.values():
            await _package(runtime, entry).record_state(feed_id=feed_id)

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
