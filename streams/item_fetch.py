"""Item fetch: gives every downloaded order its items.

- Input: ``amazon.orders.downloaded``.
- Output: ``amazon.orders.enriched``; undecodable or unprocessable records go to
  ``amazon.orders.downloaded.dlq`` with the reason.
- Amazon operations and quotas (per seller, through the rate limiter): ``getOrderItems`` (v0; 0.5/s,
  burst 30), one call per page of items; with the channel's ``fetch_pii``, ``getOrderAddress`` (0.5/s,
  burst 30) through ``createRestrictedDataToken`` (1/s, burst 10) for merchant-fulfilled orders.
  Orders of 2026-01-01 channels carry their items already and spend nothing.
- Pending orders (no prices yet) are held: recorded as awaiting payment, no call spent; they flow on
  when Amazon moves them to Unshipped, which changes their LastUpdateDate and so downloads them again.
- Items are fetched again only when the order changed (dedupe mark per LastUpdateDate); Redis found
  without the marks (restarted empty), they come back from ``amazon.orders.enriched`` before the next
  record, so a redelivered order does not spend a ``getOrderItems`` call again.
- Buyers' personal data (the address getOrderAddress adds) leaves the stage sealed, with whatever the
  downloaded order had sealed already (:mod:`ordersync.privacy`).
"""

from __future__ import annotations

import logging
from functools import partial

import faust

from ordersync.channels import Channel
from ordersync.errors import ConfigurationError, Permanent, PersonalDataExpired, Retryable
from ordersync.pipeline.runtime import StageRuntime
from ordersync.privacy.orders import open_order, without_personal
from ordersync.schemas.envelope import Envelope, Event
from ordersync.schemas.events import Address, AmazonOrder, AmazonOrderItem, OrderDownloaded, OrderEnriched
from ordersync.schemas.topics import ORDERS_DOWNLOADED, ORDERS_ENRICHED, order_key
from ordersync.state.store import newest_versions

log = logging.getLogger(__name__)
STAGE = "item-fetch"
DEDUPE_MARK = "enriched"
AWAITING_PAYMENT = frozenset({"Pending", "PendingAvailability"})


def hold_reason(order: AmazonOrder) -> str | None:
    """Why an order does not go on yet, or None."""
    if order.order_status in AWAITING_PAYMENT:
        return "awaiting payment: Amazon gives no prices or address until payment is authorised"
    return None


def enrich(
    downloaded: OrderDownloaded, items: tuple[AmazonOrderItem, ...] | None, address: Address | None = None
) -> OrderEnriched:
    """The order with its items (the fetched ones, or those the API embedded) and, when fetched
    through a restricted data token, its full shipping address."""
    update: dict[str, object] = {}
    if items is not None:
        update["items"] = items
    if address is not None:
        update["shipping_address"] = address
    order = downloaded.order.model_copy(update=update) if update else downloaded.order
    return OrderEnriched(channel=downloaded.channel, order=order)


def needs_address(channel: Channel, order: AmazonOrder) -> bool:
    """v0 lists no name, street or phone: fetch them (getOrderAddress with a restricted data token)
    when the channel is allowed personal data and the seller ships the order."""
    return channel.fetch_pii and order.api_version == "v0" and order.fulfillment_channel == "MFN"


async def opened(runtime: StageRuntime, order: AmazonOrder) -> AmazonOrder:
    """The order with its sealed personal data in the clear, or without it once its key is gone."""
    try:
        return await open_order(order, await runtime.key_ring())
    except PersonalDataExpired:
        return without_personal(order)


async def handle(runtime: StageRuntime, envelope: Envelope[Event]) -> None:
    downloaded = envelope.payload_as(OrderDownloaded)
    order = downloaded.order
    store = runtime.store
    if not await store.is_new_version(
        DEDUPE_MARK, order.seller_id, order.amazon_order_id, order.last_update_date
    ):
        return
    reason = hold_reason(order)
    if reason is not None:
        await store.set_order_status(order.seller_id, order.amazon_order_id, stage="held", held_reason=reason)
        return
    try:
        channel = runtime.channels.by_name(downloaded.channel)
    except ConfigurationError:
        channel = runtime.channels.by_seller(order.seller_id)
    items = None
    if order.items is None:
        client = runtime.amazon(channel)
        try:
            items = await runtime.retrying(
                f"items of {order.amazon_order_id}", partial(client.get_order_items, order.amazon_order_id)
            )
        except (Permanent, Retryable) as exc:
            await store.record_task(
                "item-fetch", channel.name, ok=False, detail=f"{order.amazon_order_id}: {exc}"
            )
            raise
    address = None
    if needs_address(channel, order):
        client = runtime.amazon(channel)
        address = await runtime.retrying(
            f"address of {order.amazon_order_id}", partial(client.get_order_address, order.amazon_order_id)
        )
    if address is not None and downloaded.order.personal is not None:
        # New personal data beside sealed data: all of it is sealed again together.
        downloaded = downloaded.model_copy(update={"order": await opened(runtime, downloaded.order)})
    enriched = enrich(downloaded, items, address)
    enriched = enriched.model_copy(update={"order": await runtime.sealed(channel, enriched.order)})
    if items is not None:
        await store.record_task(
            "item-fetch", channel.name, ok=True, detail=f"items of {order.amazon_order_id}"
        )
    await runtime.emit(
        ORDERS_ENRICHED,
        order_key(order.seller_id, order.amazon_order_id),
        Envelope.wrap(
            enriched,
            seller_id=order.seller_id,
            marketplace_id=order.marketplace_id,
            correlation_id=envelope.correlation_id,
        ),
    )
    await store.record_version(DEDUPE_MARK, order.seller_id, order.amazon_order_id, order.last_update_date)


async def rebuild_marks(runtime: StageRuntime) -> int:
    """The dedupe marks again from ``amazon.orders.enriched`` (per order its newest version), for a Redis
    that lost them. Returns the orders restored."""
    enriched = await runtime.read_events(ORDERS_ENRICHED)
    versions = newest_versions(e.payload_as(OrderEnriched).order for e in enriched)
    await runtime.store.restore_versions(DEDUPE_MARK, versions)
    log.warning("item-fetch marks rebuilt from %s: %d orders", ORDERS_ENRICHED.name, len(versions))
    return len(versions)


def register(app: faust.App, runtime: StageRuntime) -> None:
    runtime.topic(ORDERS_ENRICHED)
    runtime.on_redis_reset(partial(rebuild_marks, runtime))

    @app.task  # type: ignore[untyped-decorator]
    async def watch_redis() -> None:
        await runtime.watch_generation()

    @app.agent(runtime.topic(ORDERS_DOWNLOADED), name="item-fetch")
    async def fetch_items(stream: faust.StreamT[bytes]) -> None:
        await runtime.consume(ORDERS_DOWNLOADED, stream, lambda env: handle(runtime, env))
