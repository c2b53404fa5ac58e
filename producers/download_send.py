"""Sending an order version to ``amazon.orders.downloaded`` once, whoever finds it first: the poll and
its catch-ups, Amazon's ORDER_CHANGE notifications, the reconciliation from Amazon's order report, an
operator's retry. They share one dedupe mark per (seller, order, LastUpdateDate) and a claim while a
version is being sent, both in Redis; the marks are rebuilt from the topic when Redis lost them.
"""

from __future__ import annotations

import logging

from ordersync.channels import Channel
from ordersync.errors import Retryable
from ordersync.pipeline.runtime import StageRuntime
from ordersync.schemas.envelope import Envelope
from ordersync.schemas.events import AmazonOrder, FoundBy, OrderDownloaded
from ordersync.schemas.topics import ORDERS_DOWNLOADED, order_key
from ordersync.state.store import newest_versions

log = logging.getLogger(__name__)
#: The dedupe mark of a version sent to ``amazon.orders.downloaded``.
DEDUPE_MARK = "downloaded"

#: The task whose health says, per channel, when the last ORDER_CHANGE notification came (written by
#: order-notifications, read by the download's plan).
NOTIFICATIONS_TASK = "notifications"
#: Task health of each channel's ORDER_CHANGE subscription check (order-notifications); its field
#: ``subscribed`` ("yes" / "no") tells order-download whether notifications can flow at all.
SUBSCRIPTION_TASK = "notifications-subscription"


def downloaded_event(
    channel: Channel, order: AmazonOrder, found_by: FoundBy = "poll"
) -> Envelope[OrderDownloaded]:
    return Envelope.wrap(
        OrderDownloaded(channel=channel.name, order=order, found_by=found_by),
        seller_id=channel.seller_id,
        marketplace_id=order.marketplace_id,
        correlation_id=order_key(channel.seller_id, order.amazon_order_id),
    )


#: How long a sender's claim on an order version holds (send, Kafka's ack, the mark): a sender that
#: died lets another send the version after this.
CLAIM_TTL_S = 120.0


class VersionBeingSent(Retryable):
    """Another sender (the poll, or a notification's fetch) is sending this order version right now."""


async def emit_if_new(
    runtime: StageRuntime,
    channel: Channel,
    order: AmazonOrder,
    found_by: FoundBy,
    *,
    wait_for_other_sender: bool = False,
    sender: str | None = None,
) -> bool:
    """Send an order version the pipeline has not seen; True when this call sent it.

    A claim first (:meth:`Store.claim_version`), so the poll and a notification of the same version send
    it once. A version another sender claimed is left to it (``wait_for_other_sender``: raise
    :class:`VersionBeingSent`, so the caller tries again later and sends it if that sender died). The
    order's status and then the dedupe mark are written after Kafka's ack, the mark last: a crash before
    it sends the version again (harmless downstream), never leaves a version marked as sent with its
    status unwritten (one MULTI, with the claim's release)."""
    store = runtime.store
    seller_id, order_id, version = channel.seller_id, order.amazon_order_id, order.last_update_date
    # One owner per worker and sender (``sender``, else ``found_by``): tasks of one process that may
    # run at once (the poll, the report reconciliation) are two senders.
    owner = f"{runtime.owner}/{sender or found_by}"
    # Sealed before the claim: a key store that does not answer leaves no claim behind.
    sealed = await runtime.sealed(channel, order)
    claim = await store.claim_version(
        DEDUPE_MARK, seller_id, order_id, version, ttl_s=CLAIM_TTL_S, owner=owner
    )
    if claim == "sent":
        return False
    if claim == "claimed":
        if wait_for_other_sender:
            raise VersionBeingSent(f"{order_id} of {version.isoformat()} is being sent by another sender")
        return False
    await runtime.emit(
        ORDERS_DOWNLOADED,
        order_key(seller_id, order_id),
        downloaded_event(channel, sealed, found_by),
    )
    await store.record_sent(
        DEDUPE_MARK,
        seller_id,
        order_id,
        version,
        owner,
        channel=channel.name,
        marketplace_id=order.marketplace_id,
        amazon_status=order.order_status,
        fulfillment_channel=order.fulfillment_channel,
        downloaded_at=runtime.clock.now().isoformat(),
    )
    return True


async def rebuild_download_marks(runtime: StageRuntime) -> int:
    """Per order, the newest version on ``amazon.orders.downloaded`` as its dedupe mark (unless Redis
    holds a newer one): what every sender of that topic checks. Returns the orders restored."""
    downloaded = await runtime.read_events(ORDERS_DOWNLOADED)
    versions = newest_versions(e.payload_as(OrderDownloaded).order for e in downloaded)
    await runtime.store.restore_versions(DEDUPE_MARK, versions)
    log.warning("download marks rebuilt from %s: %d orders", ORDERS_DOWNLOADED.name, len(versions))
    return len(versions)
