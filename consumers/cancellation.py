"""Seller cancellations from the back-office, sent to Amazon in POST_ORDER_ACKNOWLEDGEMENT_DATA feeds.

- Input: ``orders.cancellation-requested`` (``OrderCancellationRequested``; DLQ for invalid records).
- Output: ``orders.cancellation-results`` (``OrderCancellationResult`` per order: cancelled or not, with
  Amazon's message), and the order status ``seller_cancellation`` Success/Failed in Redis.
- Amazon operations and quotas (per seller, through the rate limiter): ``createFeed`` on the ``packing``
  lane, like the fulfillment feeds: every pending cancellation of a seller goes in one feed
  (OrderAcknowledgement, StatusCode Failure, each item with the CancelReason: the request's, else the
  channel's ``cancellation_reason``, else ``GeneralAdjustment``); then getFeed and the report, each
  MessageID mapped back to its order. A feed that ends FATAL or stalls puts its orders back (up to
  ``writeback.max_attempts``); a stalled one still queued is cancelled first.
- The channel's "don't upload order status" holds these too: nothing is sent.
"""

from __future__ import annotations

import json
import logging
from typing import Any, cast

from ordersync.amazon.feeds import (
    XML_CONTENT_TYPE,
    AcknowledgementMessage,
    FeedsClient,
    order_acknowledgement_feed,
    parse_processing_report,
)
from ordersync.channels import Channel
from ordersync.clock import epoch_seconds
from ordersync.consumers import fulfillment_feed
from ordersync.consumers.fulfillment_feed import PACKING_LANE, SellerLock, scaled
from ordersync.errors import Permanent, QuotaUnavailable, Retryable, Throttled
from ordersync.runtime import StageRuntime
from ordersync.schemas.envelope import Envelope, Event
from ordersync.schemas.events import OrderCancellationRequested, OrderCancellationResult
from ordersync.schemas.topics import ORDERS_CANCELLATION_RESULTS, order_key

log = logging.getLogger(__name__)
FEED_TYPE = "POST_ORDER_ACKNOWLEDGEMENT_DATA"
DEFAULT_REASON = "GeneralAdjustment"
MAX_MESSAGES = 10_000


def _key(runtime: StageRuntime, name: str, seller: str) -> str:
    return runtime.store.key(name, f"{{{seller}}}")


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
    reason = request.reason or channel.cancellation_reason or DEFAULT_REASON
    sales_order = await runtime.store.sales_order(seller, request.amazon_order_id)
    items = [line.order_item_id for line in sales_order.lines] if sales_order else []
    entry = {
        "order_id": request.amazon_order_id,
        "channel": channel.name,
        "reason": reason,
        "items": items,
        "correlation_id": envelope.correlation_id,
        "marketplace_id": envelope.marketplace_id,
        "attempts": 0,
    }
    await runtime.store.redis.hset(
        _key(runtime, "cancel-pending", seller), request.amazon_order_id, json.dumps(entry)
    )
    await runtime.store.set_order_status(seller, request.amazon_order_id, seller_cancellation="Pending")


async def pending_count(runtime: StageRuntime, seller: str) -> int:
    return int(await runtime.store.redis.hlen(_key(runtime, "cancel-pending", seller)))


async def _publish(
    runtime: StageRuntime, seller: str, entry: dict[str, Any], *, feed_id: str | None, error: str | None
) -> None:
    code, _, message = (error or "").partition(": ")
    result = OrderCancellationResult(
        channel=entry["channel"],
        amazon_order_id=entry["order_id"],
        cancelled=error is None,
        reason=entry["reason"],
        feed_id=feed_id,
        error_code=code or None,
        error_message=message or code or None,
    )
    await runtime.emit(
        ORDERS_CANCELLATION_RESULTS,
        order_key(seller, entry["order_id"]),
        Envelope.wrap(
            result,
            seller_id=seller,
            marketplace_id=entry.get("marketplace_id"),
            correlation_id=entry.get("correlation_id") or entry["order_id"],
        ),
    )
    fields: dict[str, str | int] = {"seller_cancellation": "Success" if error is None else "Failed"}
    if error is not None:
        fields["seller_cancellation_error"] = error
    else:
        fields["amazon_status"] = "Canceled"
    await runtime.store.set_order_status(seller, entry["order_id"], **fields)


async def submit_pending(runtime: StageRuntime, channel: Channel) -> str | None:
    """One acknowledgement feed with every pending cancellation of the seller; returns its id."""
    seller = channel.seller_id
    ttl = scaled(runtime, fulfillment_feed.LOCK_TTL_S)
    async with SellerLock(runtime, seller, ttl, name="cancel-lock") as held:
        if not held:
            return None
        inflight_key = _key(runtime, "cancel-inflight", seller)
        pending_key = _key(runtime, "cancel-pending", seller)
        if await runtime.store.redis.exists(inflight_key):
            return None
        raw = cast(dict[str, str], await runtime.store.redis.hgetall(pending_key))
        entries = [json.loads(v) for _, v in sorted(raw.items())][:MAX_MESSAGES]
        if not entries:
            return None
        batch = {i: e for i, e in enumerate(entries, start=1)}
        for entry in batch.values():
            entry["attempts"] = int(entry.get("attempts", 0)) + 1
        async with runtime.store.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                inflight_key,
                mapping={"batch": json.dumps(batch), "started": str(epoch_seconds(runtime.clock))},
            )
            pipe.hdel(pending_key, *(e["order_id"] for e in batch.values()))
            await pipe.execute()
        content = order_acknowledgement_feed(
            seller,
            (
                AcknowledgementMessage(
                    i, e["order_id"], "Failure", tuple((item, e["reason"]) for item in e["items"])
                )
                for i, e in batch.items()
            ),
        )
        try:
            feed_id = await FeedsClient(runtime.amazon(channel)).submit(
                FEED_TYPE, content, XML_CONTENT_TYPE, lane=PACKING_LANE
            )
        except (Throttled, QuotaUnavailable, Retryable, Permanent) as exc:
            log.warning("%s: cancellation feed not sent: %s", seller, exc)
            await _requeue(runtime, seller, batch, f"{type(exc).__name__}: {exc}")
            return None
        await runtime.store.redis.hset(inflight_key, "feed_id", feed_id)
        return feed_id


async def _requeue(runtime: StageRuntime, seller: str, batch: dict[int, dict[str, Any]], error: str) -> None:
    pending_key = _key(runtime, "cancel-pending", seller)
    for entry in batch.values():
        if entry["attempts"] >= runtime.settings.writeback.max_attempts:
            await _publish(runtime, seller, entry, feed_id=None, error=error)
        else:
            await runtime.store.redis.hset(pending_key, entry["order_id"], json.dumps(entry))
    await runtime.store.redis.delete(_key(runtime, "cancel-inflight", seller))


async def check_inflight(runtime: StageRuntime, channel: Channel) -> bool:
    """One look at the seller's cancellation feed in flight: True when settled (or there is none)."""
    seller = channel.seller_id
    ttl = scaled(runtime, fulfillment_feed.LOCK_TTL_S)
    async with SellerLock(runtime, seller, ttl, name="cancel-lock") as held:
        if not held:
            return False
        return await _check_locked(runtime, channel)


async def _check_locked(runtime: StageRuntime, channel: Channel) -> bool:
    seller = channel.seller_id
    timeout = scaled(runtime, runtime.settings.writeback.feed_timeout_s)
    record = cast(dict[str, str], await runtime.store.redis.hgetall(_key(runtime, "cancel-inflight", seller)))
    if not record:
        return True
    batch = {int(k): v for k, v in json.loads(record["batch"]).items()}
    feed_id = record.get("feed_id")
    if not feed_id:
        await _requeue(runtime, seller, batch, "Interrupted: the cancellation feed was not confirmed sent")
        return True
    feeds = FeedsClient(runtime.amazon(channel))
    feed = await runtime.retrying(f"getFeed {feed_id}", lambda: feeds.get_feed(feed_id))
    if not feed.done:
        if epoch_seconds(runtime.clock) - float(record.get("started", "0")) < timeout:
            return False
        if feed.processing_status == "IN_QUEUE":
            try:
                await feeds.cancel_feed(feed_id)
            except (Retryable, Permanent, Throttled) as exc:
                log.warning("%s: could not cancel stalled feed %s: %s", seller, feed_id, exc)
        # Acknowledging a cancellation twice is harmless (Amazon: already cancelled).
        await _requeue(runtime, seller, batch, f"FeedStalled: feed {feed_id} {feed.processing_status}")
        return True
    document_id = feed.result_feed_document_id
    if feed.processing_status != "DONE" or not document_id:
        await _requeue(runtime, seller, batch, f"FeedFailed: feed {feed_id} ended {feed.processing_status}")
        return True
    content = await runtime.retrying(
        f"getFeedDocument {document_id}", lambda: feeds.get_feed_document(document_id)
    )
    errors = parse_processing_report(content).errors_by_message()
    for message_id, entry in sorted(batch.items()):
        problems = errors.get(message_id)
        error = f"{problems[0].code}: {'; '.join(p.description for p in problems)}" if problems else None
        await _publish(runtime, seller, entry, feed_id=feed_id, error=error)
    await runtime.store.redis.delete(_key(runtime, "cancel-inflight", seller))
    return True


async def run_feeds(runtime: StageRuntime, channel: Channel) -> str | None:
    """Settle the cancellation feed in flight, then send the next when any is pending."""
    if not await check_inflight(runtime, channel) or not await pending_count(runtime, channel.seller_id):
        return None
    return await submit_pending(runtime, channel)
