"""Seller cancellations from the back-office, sent to Amazon in POST_ORDER_ACKNOWLEDGEMENT_DATA feeds.

- Input: ``orders.cancellation-requested`` (``OrderCancellationRequested``; DLQ for invalid records).
- Output: ``orders.cancellation-results`` (``OrderCancellationResult`` per order: cancelled or not, with
  Amazon's message), and the order status ``seller_cancellation`` Success/Failed in Redis.
- Amazon operations and quotas (per seller, through the rate limiter): ``createFeed`` on the ``packing``
  lane, like the fulfillment feeds: every pending cancellation of a seller goes in one feed
  (OrderAcknowledgement, StatusCode Failure, each item with the CancelReason: the request's, else the
  channel's ``cancellation_reason``, else ``GeneralAdjustment``); then getFeed and the report, each
  MessageID mapped back to its order. A feed that ends FATAL or stalls puts its orders back (up to
  ``writeback.max_attempts``, or until ``redrive.deadline_s`` when Amazon was down or the feed
  stalled); a stalled one still queued is cancelled first. The lifecycle is the
  batched-feed engine's (:mod:`ordersync.pipeline.feeds`), the pending orders in ``cancel-pending``.
- The channel's "don't upload order status" holds these too: nothing is sent.
- Never a Failure after a shipment (Amazon: a seller cannot cancel what shipped, and a late Failure
  would cancel a package already on its way): an order Amazon shows shipped or partly shipped, or with
  a package this stage confirmed or is confirming (``shipments.requested`` not failed), is not sent;
  its result says why (``OrderShipped``, no feed id). Checked when the request arrives and again just
  before the feed goes.
- Redis found without its state (restarted empty), :func:`rebuild_pending` puts each order's outcome
  back from ``orders.cancellation-results`` and publishes again every request that has none.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from redis.asyncio.client import Pipeline

from ordersync.amazon.feeds import (
    XML_CONTENT_TYPE,
    AcknowledgementMessage,
    ProcessingResult,
    order_acknowledgement_feed,
    results_text,
)
from ordersync.channels import Channel
from ordersync.consumers.fulfillment_feed import PACKING_LANE
from ordersync.pipeline.feeds import FeedEngine, FeedFailure, FeedLimits, FeedType, Parked
from ordersync.pipeline.runtime import StageRuntime
from ordersync.schemas.envelope import Envelope, Event
from ordersync.schemas.events import OrderCancellationRequested, OrderCancellationResult
from ordersync.schemas.topics import (
    ORDERS_CANCELLATION_REQUESTED,
    ORDERS_CANCELLATION_RESULTS,
    order_key,
)
from ordersync.settings import Settings
from ordersync.state import keys

log = logging.getLogger(__name__)

FEED_TYPE = "POST_ORDER_ACKNOWLEDGEMENT_DATA"
DEFAULT_REASON = "GeneralAdjustment"
MAX_MESSAGES = 10_000
#: The result's error code of a cancellation not sent because a unit of the order shipped.
SHIPPED_CODE = "OrderShipped"
#: Why an order closed (imported long ago, its working state gone after delivery) is not cancelled.
CLOSED_REASON = "the order is closed: imported long ago and delivered (order_state settings)"
#: Amazon statuses of an order with a unit shipped.
SHIPPED_STATUSES = frozenset({"Shipped", "PartiallyShipped"})
#: Package write-back states of a shipment confirmed, or being confirmed (requested, not failed).
SHIPPING_STATES = frozenset({"Success", "Pending", "Retrying"})


@dataclass
class PendingCancellation(Parked):
    """One order to cancel, as kept in Redis (the same JSON pending and in flight)."""

    order_id: str
    channel: str
    reason: str
    items: list[str]
    correlation_id: str | None = None
    marketplace_id: str | None = None

    @property
    def field(self) -> str:
        return self.order_id

    def record(self) -> dict[str, Any]:
        return {
            "order_id": self.order_id,
            "channel": self.channel,
            "reason": self.reason,
            "items": self.items,
            "correlation_id": self.correlation_id,
            "marketplace_id": self.marketplace_id,
            "attempts": self.attempts,
            "first_failed_at": self.first_failed_at,
        }

    def dumps(self) -> str:
        return json.dumps(self.record())


async def shipped_reason(runtime: StageRuntime, seller: str, order_id: str) -> str | None:
    """Why the order must not be cancelled any more (a unit of it shipped, or a package of it is being
    confirmed on Amazon), or None."""
    status = await runtime.store.order_status(seller, order_id)
    amazon_status = status.get("amazon_status")
    if amazon_status in SHIPPED_STATUSES:
        return f"order {order_id} is {amazon_status} on Amazon; a shipped order is never cancelled"
    key = runtime.store.key_of(keys.WRITEBACK_PACKAGES, seller, order_id)
    for package in sorted(str(member) for member in await runtime.store.redis.smembers(key)):
        state = (await runtime.store.shipment_state(seller, order_id, package)).get("status")
        if state in SHIPPING_STATES:
            done = "was confirmed shipped" if state == "Success" else "is being confirmed shipped"
            return f"package {package} of order {order_id} {done}; a shipped order is never cancelled"
    return None


def failure_reason(failure: FeedFailure) -> str:
    """``code: message`` of an item given up after its last attempt, by why its feed failed."""
    return failure.reason("cancellation feed")


async def _publish(
    runtime: StageRuntime, seller: str, entry: PendingCancellation, *, feed_id: str | None, error: str | None
) -> None:
    code, _, message = (error or "").partition(": ")
    result = OrderCancellationResult(
        channel=entry.channel,
        amazon_order_id=entry.order_id,
        cancelled=error is None,
        reason=entry.reason,
        feed_id=feed_id,
        error_code=code or None,
        error_message=message or code or None,
    )
    await runtime.emit(
        ORDERS_CANCELLATION_RESULTS,
        order_key(seller, entry.order_id),
        Envelope.wrap(
            result,
            seller_id=seller,
            marketplace_id=entry.marketplace_id,
            correlation_id=entry.correlation_id or entry.order_id,
        ),
    )
    fields: dict[str, str | int] = {"seller_cancellation": "Success" if error is None else "Failed"}
    if error is not None:
        fields["seller_cancellation_error"] = error
    else:
        fields["amazon_status"] = "Canceled"
    await runtime.store.set_order_status(seller, entry.order_id, **fields)


class AcknowledgementFeed(FeedType[PendingCancellation]):
    feed_type = FEED_TYPE
    content_type = XML_CONTENT_TYPE
    family = "cancel"
    noun = "cancellation feed"

    def limits(self, settings: Settings) -> FeedLimits:
        writeback = settings.writeback
        return FeedLimits(
            lane=PACKING_LANE,
            max_messages=MAX_MESSAGES,
            timeout_s=writeback.feed_timeout_s,
            max_attempts=writeback.max_attempts,
        )

    def loads(self, field: str, raw: str) -> PendingCancellation:
        return PendingCancellation(**json.loads(raw))

    def from_record(self, value: Any) -> PendingCancellation:
        return PendingCancellation(**value)

    def build(self, channel: Channel, batch: Mapping[int, PendingCancellation]) -> bytes:
        return order_acknowledgement_feed(
            channel.seller_id,
            (
                AcknowledgementMessage(i, e.order_id, "Failure", tuple((item, e.reason) for item in e.items))
                for i, e in batch.items()
            ),
        )

    def order_id(self, entry: PendingCancellation) -> str:
        return entry.order_id

    async def settle(self, runtime: StageRuntime, channel: Channel, entry: PendingCancellation) -> bool:
        """A package of the order was requested or confirmed since the request came: not sent."""
        shipped = await shipped_reason(runtime, channel.seller_id, entry.order_id)
        if shipped is None:
            return False
        await _publish(runtime, channel.seller_id, entry, feed_id=None, error=f"{SHIPPED_CODE}: {shipped}")
        return True

    async def apply(
        self,
        runtime: StageRuntime,
        channel: Channel,
        entry: PendingCancellation,
        errors: list[ProcessingResult],
        *,
        feed_id: str,
        pipe: Pipeline,
        detail: Any = None,
    ) -> None:
        error = results_text(errors)
        await _publish(runtime, channel.seller_id, entry, feed_id=feed_id, error=error)

    async def give_up(
        self, runtime: StageRuntime, channel: Channel, entry: PendingCancellation, failure: FeedFailure
    ) -> None:
        await _publish(runtime, channel.seller_id, entry, feed_id=None, error=failure_reason(failure))


FEEDS = FeedEngine(AcknowledgementFeed())
#: Settle the cancellation feed in flight, then send the next when any is pending.
run_feeds = FEEDS.run
submit_pending = FEEDS.submit
check_inflight = FEEDS.check
pending_count = FEEDS.pending_count


async def handle(runtime: StageRuntime, envelope: Envelope[Event]) -> None:
    request = envelope.payload_as(OrderCancellationRequested)
    channel = runtime.channels.by_name(request.channel)
    seller = envelope.seller_id
    status = await runtime.store.order_status(seller, request.amazon_order_id)
    if status.get("seller_cancellation") in ("Success", "Failed"):
        return  # replayed: its result was published
    if not channel.upload_order_status:
        await runtime.store.set_order_status(
            seller, request.amazon_order_id, seller_cancellation="NotUploaded"
        )
        return
    sales_order = await runtime.store.sales_order(seller, request.amazon_order_id)
    entry = PendingCancellation(
        order_id=request.amazon_order_id,
        channel=channel.name,
        reason=request.reason or channel.cancellation_reason or DEFAULT_REASON,
        items=[line.order_item_id for line in sales_order.lines] if sales_order else [],
        correlation_id=envelope.correlation_id,
        marketplace_id=envelope.marketplace_id,
    )
    shipped = await shipped_reason(runtime, seller, request.amazon_order_id)
    if (
        shipped is None
        and sales_order is None
        and await runtime.store.was_imported(seller, request.amazon_order_id)
    ):
        shipped = CLOSED_REASON
    if shipped is not None:
        # Never a Failure after a shipment: the result says why, nothing goes to Amazon.
        await _publish(runtime, seller, entry, feed_id=None, error=f"{SHIPPED_CODE}: {shipped}")
        return
    await FEEDS.enqueue(runtime, seller, entry)
    await runtime.store.set_order_status(seller, request.amazon_order_id, seller_cancellation="Pending")


async def rebuild_pending(runtime: StageRuntime) -> tuple[int, int]:
    """The cancellations' outcomes again from ``orders.cancellation-results`` (so a request replayed
    later stays a no-op), and every request with no outcome yet (pending, in a feed, or not read) published
    again on ``orders.cancellation-requested``, its key and bytes unchanged. Returns (settled, sent
    again)."""
    sellers = {channel.name: channel.seller_id for channel in runtime.channels.channels}
    settled: set[tuple[str, str]] = set()
    for envelope in await runtime.read_events(ORDERS_CANCELLATION_RESULTS):
        result = envelope.payload_as(OrderCancellationResult)
        if sellers.get(result.channel) != envelope.seller_id:
            continue  # another deployment's channel on a shared cluster
        outcome = "Success" if result.cancelled else "Failed"
        await runtime.store.set_order_status(
            envelope.seller_id, result.amazon_order_id, seller_cancellation=outcome
        )
        settled.add((envelope.seller_id, result.amazon_order_id))
    again = 0
    for record, envelope in await runtime.read_records(ORDERS_CANCELLATION_REQUESTED):
        request = envelope.payload_as(OrderCancellationRequested)
        if sellers.get(request.channel) != envelope.seller_id:
            continue
        if (envelope.seller_id, request.amazon_order_id) in settled:
            continue
        await runtime.send_again(ORDERS_CANCELLATION_REQUESTED, record)
        again += 1
    log.warning(
        "seller cancellations rebuilt from the topics: %d settled, %d requests sent again",
        len(settled),
        again,
    )
    return len(settled), again
