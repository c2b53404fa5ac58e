"""Order acknowledgements: each imported order's sales-order code told to Amazon as its MerchantOrderID.

Why: sellers and their ERPs want Amazon to know their own order number (getOrder shows it as
``SellerOrderId``, Orders 2026-01-01 as the alias ``SELLER_ORDER_ID``); middleware that never
acknowledges has created duplicate orders (selling-partner-api-models#4160). Only the XML
POST_ORDER_ACKNOWLEDGEMENT_DATA with StatusCode Success carries it (the flat-file acknowledgement only
cancels); StatusCode Failure, the seller's cancellation, is :mod:`ordersync.consumers.cancellation`'s.

Run by the shipment-write-back stage (its agent ``order-acknowledgements`` and task
``acknowledgement feeds``), the stage that owns the seller's order feeds:

- Input: ``orders.imported``, ``OrderImported`` only (an order's first import; its updates and
  cancellations are not acknowledged); DLQ ``orders.imported.dlq``.
- Output: ``orders.acknowledgement-results`` (``OrderAcknowledgementResult`` per order: acknowledged
  with the feed id, or why not: Amazon's message, or, with no feed id, ordersync's reason for not
  sending it), and the order status field ``acknowledgement`` Pending/Success/Failed in Redis
  (NotUploaded: parked, then the channel stopped acknowledging; dropped unsent).
- Amazon operations and quotas (per seller, through the rate limiter): createFeedDocument, the upload
  and createFeed on the limiter's ``acknowledgement`` lane, at most one feed per
  ``writeback.acknowledge_flush_interval_s`` (20 minutes) with every pending order (up to 10,000);
  getFeed and getFeedDocument. createFeed's 30 an hour are shared: the lane's reserve (4 tokens left
  in the bucket, ``ratelimit.lane_reserves``) keeps it behind shipments (``packing``) and stock beyond
  its reserved feed, taking a token only when the bucket has slack, and the inventory reservation stays
  the inventory lane's. Its own task, so a feed waiting for its token never holds up the shipments'
  feeds.
- Only channels with ``acknowledge_orders`` (default off) and ``upload_order_status``, and
  seller-fulfilled orders (Amazon fulfils AFN ones: nothing to acknowledge). Otherwise nothing is
  parked, sent or published. An order cancelled meanwhile (Amazon status Canceled, or the seller's
  cancellation accepted) is not sent: its result says so.
- Idempotent: an order with a result, or parked, or inside the feed in flight, is not parked again
  (a replay of ``orders.imported`` is a no-op); an order acknowledged once is never sent again.
  Acknowledging twice only tells Amazon the same number again, so a feed whose outcome is unknown
  (interrupted, stalled) is simply sent again, no re-read. A feed that ended FATAL or stalled puts its
  orders back with backoff, up to ``writeback.max_attempts`` (transient faults until
  ``redrive.deadline_s``), then a result with the error.
- Redis found without its state: :func:`rebuild_pending` puts each order's outcome back from
  ``orders.acknowledgement-results`` and parks again each imported order of an acknowledging channel
  with none (``orders.imported`` is the back-office's contract: never published again).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from redis.asyncio.client import Pipeline

from ordersync.amazon.feeds import (
    XML_CONTENT_TYPE,
    AcknowledgementMessage,
    ProcessingResult,
    order_acknowledgement_feed,
    results_text,
)
from ordersync.channels import Channel
from ordersync.consumers.cancellation import FEED_TYPE, MAX_MESSAGES
from ordersync.errors import Permanent, Retryable, Throttled
from ordersync.pipeline.feeds import FeedEngine, FeedFailure, FeedLimits, FeedType, Parked
from ordersync.pipeline.runtime import StageRuntime
from ordersync.schemas.envelope import Envelope, Event
from ordersync.schemas.events import OrderAcknowledgementResult, OrderImported
from ordersync.schemas.topics import ORDERS_ACKNOWLEDGEMENT_RESULTS, ORDERS_IMPORTED, order_key
from ordersync.settings import Settings

log = logging.getLogger(__name__)

#: The rate limiter's lane of these feeds (``ratelimit.lane_reserves``).
LANE = "acknowledgement"
#: The result's error code of an order cancelled before it was acknowledged (not sent).
CANCELLED_CODE = "OrderCanceled"
#: Order status values of ``acknowledgement`` that are final: never sent (again).
SETTLED = frozenset({"Success", "Failed"})

Verdict = Literal["send", "off", "not-seller-fulfilled", "settled", "cancelled"]


def verdict(channel: Channel, fulfillment_channel: str, status: Mapping[str, str]) -> Verdict:
    """What becomes of an imported order's acknowledgement, from its channel, who fulfils it and its
    order status fields in Redis: sent, or why not."""
    if not (channel.acknowledge_orders and channel.upload_order_status):
        return "off"
    if fulfillment_channel != "MFN":
        return "not-seller-fulfilled"
    if status.get("acknowledgement") in SETTLED:
        return "settled"
    if status.get("amazon_status") == "Canceled" or status.get("seller_cancellation") == "Success":
        return "cancelled"
    return "send"


@dataclass
class PendingAcknowledgement(Parked):
    """One order to acknowledge, as kept in Redis (the same JSON pending and in flight)."""

    order_id: str
    channel: str
    merchant_order_id: str
    correlation_id: str | None = None
    marketplace_id: str | None = None

    @property
    def field(self) -> str:
        return self.order_id

    def record(self) -> dict[str, Any]:
        return {
            "order_id": self.order_id,
            "channel": self.channel,
            "merchant_order_id": self.merchant_order_id,
            "correlation_id": self.correlation_id,
            "marketplace_id": self.marketplace_id,
            "attempts": self.attempts,
            "outcome_unknown": self.outcome_unknown,
            "not_before": self.not_before,
            "last_error": self.last_error,
            "first_failed_at": self.first_failed_at,
        }

    def dumps(self) -> str:
        return json.dumps(self.record())


def messages(batch: Mapping[int, PendingAcknowledgement]) -> list[AcknowledgementMessage]:
    """The feed's messages: StatusCode Success with the sales-order code, the whole order (no items)."""
    return [
        AcknowledgementMessage(
            message_id, entry.order_id, "Success", merchant_order_id=entry.merchant_order_id
        )
        for message_id, entry in batch.items()
    ]


def failure_reason(failure: FeedFailure) -> str:
    """``code: message`` of an item given up after its last attempt, by why its feed failed."""
    return failure.reason("acknowledgement feed")


async def _publish(
    runtime: StageRuntime,
    seller: str,
    entry: PendingAcknowledgement,
    *,
    feed_id: str | None,
    error: str | None,
) -> None:
    code, _, message = (error or "").partition(": ")
    result = OrderAcknowledgementResult(
        channel=entry.channel,
        amazon_order_id=entry.order_id,
        merchant_order_id=entry.merchant_order_id,
        acknowledged=error is None,
        feed_id=feed_id,
        error_code=code or None,
        error_message=message or code or None,
    )
    await runtime.emit(
        ORDERS_ACKNOWLEDGEMENT_RESULTS,
        order_key(seller, entry.order_id),
        Envelope.wrap(
            result,
            seller_id=seller,
            marketplace_id=entry.marketplace_id,
            correlation_id=entry.correlation_id or entry.order_id,
        ),
    )
    fields: dict[str, str | int] = {"acknowledgement": "Success" if error is None else "Failed"}
    if error is not None:
        fields["acknowledgement_error"] = error
    await runtime.store.set_order_status(seller, entry.order_id, **fields)


def _cancelled(entry: PendingAcknowledgement) -> str:
    return f"{CANCELLED_CODE}: order {entry.order_id} was cancelled before it was acknowledged; not sent"


class OrderAcknowledgementFeed(FeedType[PendingAcknowledgement]):
    feed_type = FEED_TYPE
    content_type = XML_CONTENT_TYPE
    family = "ack"
    noun = "order acknowledgement feed"
    lists_fields = True

    def limits(self, settings: Settings) -> FeedLimits:
        writeback = settings.writeback
        return FeedLimits(
            lane=LANE,
            max_messages=MAX_MESSAGES,
            timeout_s=writeback.feed_timeout_s,
            max_attempts=writeback.max_attempts,
            retry_backoff_s=writeback.retry_backoff_s,
            flush_interval_s=writeback.acknowledge_flush_interval_s,
        )

    def loads(self, field: str, raw: str) -> PendingAcknowledgement:
        return PendingAcknowledgement(**json.loads(raw))

    def from_record(self, value: Any) -> PendingAcknowledgement:
        return PendingAcknowledgement(**value)

    def build(self, channel: Channel, batch: Mapping[int, PendingAcknowledgement]) -> bytes:
        return order_acknowledgement_feed(channel.seller_id, messages(batch))

    def order_id(self, entry: PendingAcknowledgement) -> str:
        return entry.order_id

    async def settle(self, runtime: StageRuntime, channel: Channel, entry: PendingAcknowledgement) -> bool:
        """Before sending: the channel stopped acknowledging (dropped, nothing published), the order was
        settled or cancelled meanwhile (a result saying so); else it goes."""
        seller = channel.seller_id
        status = await runtime.store.order_status(seller, entry.order_id)
        decided = verdict(channel, "MFN", status)  # (only seller-fulfilled orders are parked)
        if decided == "send":
            return False
        if decided == "cancelled":
            await _publish(runtime, seller, entry, feed_id=None, error=_cancelled(entry))
        elif decided == "off":
            await runtime.store.set_order_status(seller, entry.order_id, acknowledgement="NotUploaded")
        return True

    async def apply(
        self,
        runtime: StageRuntime,
        channel: Channel,
        entry: PendingAcknowledgement,
        errors: list[ProcessingResult],
        *,
        feed_id: str,
        pipe: Pipeline,
        detail: Any = None,
    ) -> None:
        error = results_text(errors)
        await _publish(runtime, channel.seller_id, entry, feed_id=feed_id, error=error)

    async def give_up(
        self, runtime: StageRuntime, channel: Channel, entry: PendingAcknowledgement, failure: FeedFailure
    ) -> None:
        await _publish(runtime, channel.seller_id, entry, feed_id=None, error=failure_reason(failure))


FEEDS = FeedEngine(OrderAcknowledgementFeed())
#: Settle the seller's acknowledgement feed in flight, then, at most once per flush interval, send the
#: next when any order is pending. Returns the id of a feed sent.
run_feeds = FEEDS.run
submit_pending = FEEDS.submit
check_inflight = FEEDS.check
pending_count = FEEDS.pending_count
is_queued = FEEDS.is_queued


async def handle(runtime: StageRuntime, envelope: Envelope[Event]) -> None:
    """One record of ``orders.imported``: a first import of an order of an acknowledging channel is
    parked for the seller's next acknowledgement feed."""
    payload = envelope.payload
    if not isinstance(payload, OrderImported):
        return  # updates and cancellations: the order was (or is being) acknowledged at its import
    sales_order = payload.sales_order
    seller, order_id = envelope.seller_id, sales_order.amazon_order_id
    if sales_order.channel not in runtime.channels.names():
        return  # another deployment's channel on a shared cluster
    channel = runtime.channels.by_name(sales_order.channel)
    if channel.seller_id != seller:
        return
    status = await runtime.store.order_status(seller, order_id)
    decided = verdict(channel, sales_order.fulfillment_channel, status)
    if decided in ("off", "not-seller-fulfilled", "settled"):
        return
    if status.get("acknowledgement") == "Pending" and await FEEDS.is_queued(runtime, seller, order_id):
        return  # replayed: it waits for (or is inside) a feed already
    entry = PendingAcknowledgement(
        order_id=order_id,
        channel=channel.name,
        merchant_order_id=sales_order.code,
        correlation_id=envelope.correlation_id,
        marketplace_id=envelope.marketplace_id or sales_order.marketplace_id,
    )
    if decided == "cancelled":
        await _publish(runtime, seller, entry, feed_id=None, error=_cancelled(entry))
        return
    await FEEDS.enqueue(runtime, seller, entry)
    await runtime.store.set_order_status(seller, order_id, acknowledgement="Pending")


async def tick(runtime: StageRuntime) -> None:
    """Every active channel: settle its acknowledgement feed in flight, send the next when due."""
    await runtime.confirm_state()  # Redis lost the parked orders: they come back first
    for channel in runtime.channels.channels:
        if not channel.active:
            continue
        try:
            await run_feeds(runtime, channel)
        except (Permanent, Retryable, Throttled) as exc:
            log.warning("%s: acknowledgement feed step failed, next tick retries: %s", channel.name, exc)


async def rebuild_pending(runtime: StageRuntime) -> tuple[int, int]:
    """The acknowledgements' outcomes again from ``orders.acknowledgement-results`` (so a replayed import
    stays a no-op), then each ``OrderImported`` of an acknowledging channel with no outcome parked again
    (:func:`handle`; never published again: the back-office consumes ``orders.imported``). Returns
    (settled, imports handled again)."""
    sellers = {channel.name: channel.seller_id for channel in runtime.channels.channels}
    settled: set[tuple[str, str]] = set()
    for envelope in await runtime.read_events(ORDERS_ACKNOWLEDGEMENT_RESULTS):
        result = envelope.payload_as(OrderAcknowledgementResult)
        if sellers.get(result.channel) != envelope.seller_id:
            continue  # another deployment's channel on a shared cluster
        await runtime.store.set_order_status(
            envelope.seller_id,
            result.amazon_order_id,
            acknowledgement="Success" if result.acknowledged else "Failed",
        )
        settled.add((envelope.seller_id, result.amazon_order_id))
    acknowledging = {
        c.name for c in runtime.channels.channels if c.acknowledge_orders and c.upload_order_status
    }
    again = 0
    if acknowledging:  # (orders.imported is long: read only when some channel acknowledges)
        for envelope in await runtime.read_events(ORDERS_IMPORTED):
            payload = envelope.payload
            if not isinstance(payload, OrderImported) or payload.sales_order.channel not in acknowledging:
                continue
            if (envelope.seller_id, payload.sales_order.amazon_order_id) in settled:
                continue
            await handle(runtime, envelope)
            again += 1
    log.warning(
        "order acknowledgements rebuilt from the topics: %d settled, %d imports handled again",
        len(settled),
        again,
    )
    return len(settled), again
