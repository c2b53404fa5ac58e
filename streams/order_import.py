"""Import: turns an enriched Amazon order into the back-office's sales order.

- Input: ``amazon.orders.enriched``.
- Output: ``orders.imported`` (the sales order, once per Amazon order, ever; later versions of it as
  ``OrderUpdated`` or ``OrderCancelled``) or ``orders.import-failed`` (a reason code and a sentence a
  person understands); undecodable records go to ``amazon.orders.enriched.dlq``.
- Amazon operations and quotas: none (SKU mapping reads the channel listings in Redis).
- State in Redis: the sales-order code per Amazon order (prefix + a sequence that is never reused),
  the imported sales order (for the invoice stage), the per-order status.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import faust

from ordersync.channels import Channel
from ordersync.runtime import StageRuntime
from ordersync.schemas.envelope import Envelope, Event
from ordersync.schemas.events import (
    AmazonOrder,
    ImportFailureReason,
    Money,
    OrderCancelled,
    OrderEnriched,
    OrderImported,
    OrderImportFailed,
    OrderLineState,
    OrderUpdated,
    SalesOrder,
    SalesOrderLine,
)
from ordersync.schemas.topics import ORDERS_ENRICHED, ORDERS_IMPORT_FAILED, ORDERS_IMPORTED, order_key

log = logging.getLogger(__name__)
STAGE = "import"
MARKETPLACE_FACILITATOR = "MarketplaceFacilitator"
NOT_IMPORTED_STATUSES = frozenset({"Canceled", "Unfulfillable"})
UPDATE_MARK = "imported"


@dataclass(frozen=True)
class ImportRefused:
    reason_code: ImportFailureReason
    reason: str


def _amount(money: Money | None) -> Decimal:
    return money.amount if money is not None else Decimal(0)


def _currency(order: AmazonOrder) -> str | None:
    if order.order_total is not None:
        return order.order_total.currency
    for item in order.items or ():
        if item.item_price is not None:
            return item.item_price.currency
    return None


def check_importable(order: AmazonOrder, stock_codes: dict[str, str]) -> ImportRefused | None:
    """Why this order cannot become a sales order yet, or None when it can."""
    if order.order_status in ("Pending", "PendingAvailability"):
        return ImportRefused("pending_no_prices", "Pending: no prices yet (payment not authorised)")
    items = order.items or ()
    if not items:
        return ImportRefused("no_items", "Amazon returned no items for this order")
    if any(item.item_price is None for item in items if item.quantity_ordered > 0):
        return ImportRefused("pending_no_prices", "Pending: no prices yet (payment not authorised)")
    if order.fulfillment_channel == "MFN" and order.shipping_address is None:
        return ImportRefused("no_shipping_address", "No shipping address yet")
    for item in items:
        if not item.seller_sku or item.seller_sku not in stock_codes:
            return ImportRefused(
                "unknown_stock_code",
                f"Unknown stock code for seller SKU {item.seller_sku or '(none)'} (ASIN {item.asin})",
            )
    return None


def build_sales_order(
    order: AmazonOrder, channel: Channel, stock_codes: dict[str, str], code: str
) -> SalesOrder:
    """The sales order for an importable order (``check_importable`` returned None).

    Marketplace-facilitator tax is Amazon's to collect and remit, so it is not booked as the seller's.
    """
    lines: list[SalesOrderLine] = []
    shipping = shipping_tax = promotion = Decimal(0)
    for item in order.items or ():
        quantity = item.quantity_ordered
        line_price = _amount(item.item_price)
        facilitated = item.tax_collection_model == MARKETPLACE_FACILITATOR
        tax = Decimal(0) if facilitated else _amount(item.item_tax)
        unit_price = (line_price / quantity).quantize(Decimal("0.01")) if quantity else Decimal(0)
        lines.append(
            SalesOrderLine(
                order_item_id=item.order_item_id,
                seller_sku=item.seller_sku,
                asin=item.asin,
                stock_code=stock_codes[item.seller_sku or ""],
                quantity=quantity,
                unit_price=unit_price,
                tax=tax,
                line_total=line_price + tax,
            )
        )
        shipping += _amount(item.shipping_price) - _amount(item.shipping_discount)
        shipping_tax += Decimal(0) if facilitated else _amount(item.shipping_tax)
        promotion += _amount(item.promotion_discount)
    total = sum((line.line_total for line in lines), Decimal(0)) + shipping + shipping_tax - promotion
    address = order.shipping_address
    return SalesOrder(
        code=code,
        channel=channel.name,
        seller_id=order.seller_id,
        marketplace_id=order.marketplace_id,
        amazon_order_id=order.amazon_order_id,
        order_status=order.order_status,
        fulfillment_channel=order.fulfillment_channel,
        purchase_date=order.purchase_date,
        currency=_currency(order) or "USD",
        customer_name=order.buyer_name or (address.name if address else None),
        customer_email=order.buyer_email,
        shipping_address=address,
        ship_service_level=order.ship_service_level,
        lines=tuple(lines),
        shipping_charge=shipping,
        shipping_tax=shipping_tax,
        promotion_discount=promotion,
        total=total,
    )


def line_states(order: AmazonOrder) -> tuple[OrderLineState, ...]:
    return tuple(
        OrderLineState(
            order_item_id=item.order_item_id,
            quantity_ordered=item.quantity_ordered,
            quantity_shipped=item.quantity_shipped,
            buyer_requested_cancel=item.buyer_requested_cancel,
        )
        for item in order.items or ()
    )


def order_change(sales_order: SalesOrder, order: AmazonOrder, known_state: str | None) -> Event | None:
    """What a newer version of an imported order means for the back-office: a cancellation, an
    update (status, shipped quantities, a buyer's cancel request), or nothing new."""
    if order.order_status == "Canceled":
        buyer = any(item.buyer_requested_cancel for item in order.items or ())
        return OrderCancelled(
            channel=sales_order.channel,
            sales_order_code=sales_order.code,
            amazon_order_id=order.amazon_order_id,
            reason="cancelled at the buyer's request" if buyer else "cancelled on Amazon",
            buyer_requested=buyer,
            cancelled_at=order.last_update_date,
        )
    update = OrderUpdated(
        channel=sales_order.channel,
        sales_order_code=sales_order.code,
        amazon_order_id=order.amazon_order_id,
        order_status=order.order_status,
        lines=line_states(order),
        changed_at=order.last_update_date,
    )
    state = update.model_dump_json(include={"order_status", "lines"})
    return None if state == known_state else update


async def handle_change(
    runtime: StageRuntime, envelope: Envelope[Event], sales_order: SalesOrder, order: AmazonOrder
) -> None:
    """One sales order per Amazon order, ever: later versions become updates or a cancellation."""
    store = runtime.store
    seller, order_id = order.seller_id, order.amazon_order_id
    if not await store.is_new_version(UPDATE_MARK, seller, order_id, order.last_update_date):
        return
    known = (await store.order_status(seller, order_id)).get("amazon_state")
    change = order_change(sales_order, order, known)
    if change is not None:
        await runtime.emit(
            ORDERS_IMPORTED,
            order_key(seller, order_id),
            Envelope.wrap(
                change,
                seller_id=seller,
                marketplace_id=order.marketplace_id,
                correlation_id=envelope.correlation_id,
            ),
        )
    state = OrderUpdated(
        channel=sales_order.channel,
        sales_order_code=sales_order.code,
        amazon_order_id=order_id,
        order_status=order.order_status,
        lines=line_states(order),
        changed_at=order.last_update_date,
    ).model_dump_json(include={"order_status", "lines"})
    await store.set_order_status(seller, order_id, amazon_status=order.order_status, amazon_state=state)
    await store.record_version(UPDATE_MARK, seller, order_id, order.last_update_date)


async def handle(runtime: StageRuntime, envelope: Envelope[Event]) -> None:
    enriched = envelope.payload_as(OrderEnriched)
    order = enriched.order
    store = runtime.store
    channel = runtime.channels.by_name(enriched.channel)
    key = order_key(order.seller_id, order.amazon_order_id)
    existing = await store.sales_order(order.seller_id, order.amazon_order_id)
    if existing is not None:
        await handle_change(runtime, envelope, existing, order)
        return
    if order.order_status in NOT_IMPORTED_STATUSES or order.order_status not in channel.import_statuses:
        await store.set_order_status(
            order.seller_id,
            order.amazon_order_id,
            stage="not-imported",
            reason=f"{order.order_status} on Amazon; the channel imports "
            + ", ".join(channel.import_statuses),
        )
        return
    skus = sorted({item.seller_sku for item in order.items or () if item.seller_sku})
    stock_codes = await store.stock_codes(channel.name, skus)
    refused = check_importable(order, stock_codes)
    if refused is not None:
        failed = OrderImportFailed(
            channel=channel.name,
            amazon_order_id=order.amazon_order_id,
            reason_code=refused.reason_code,
            reason=refused.reason,
        )
        await runtime.emit(
            ORDERS_IMPORT_FAILED,
            key,
            Envelope.wrap(
                failed,
                seller_id=order.seller_id,
                marketplace_id=order.marketplace_id,
                correlation_id=envelope.correlation_id,
            ),
        )
        await store.set_order_status(
            order.seller_id,
            order.amazon_order_id,
            stage="import-failed",
            reason_code=refused.reason_code,
            reason=refused.reason,
        )
        return
    code, _ = await store.sales_order_code(order.seller_id, order.amazon_order_id, channel.sales_order_prefix)
    sales_order = build_sales_order(order, channel, stock_codes, code)
    await runtime.emit(
        ORDERS_IMPORTED,
        key,
        Envelope.wrap(
            OrderImported(sales_order=sales_order),
            seller_id=order.seller_id,
            marketplace_id=order.marketplace_id,
            correlation_id=envelope.correlation_id,
        ),
    )
    # Saved after Kafka acknowledged the event: a crash in between re-imports with the same code.
    await store.save_sales_order(sales_order)
    await store.record_version(UPDATE_MARK, order.seller_id, order.amazon_order_id, order.last_update_date)
    await store.set_order_status(
        order.seller_id,
        order.amazon_order_id,
        stage="imported",
        sales_order_code=code,
        reason_code="",
        reason="",
        imported_at=datetime.now(UTC).isoformat(),
    )


def register(app: faust.App, runtime: StageRuntime) -> None:
    runtime.topic(ORDERS_IMPORTED)
    runtime.topic(ORDERS_IMPORT_FAILED)

    @app.agent(runtime.topic(ORDERS_ENRICHED), name="import")
    async def import_orders(stream: faust.StreamT[bytes]) -> None:
        await runtime.start()
        async for event in stream.events():
            await runtime.process(ORDERS_ENRICHED, event, lambda env: handle(runtime, env))
