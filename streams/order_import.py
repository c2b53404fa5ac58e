"""Import: turns an enriched Amazon order into the back-office's sales order.

- Input: ``amazon.orders.enriched``.
- Output: ``orders.imported`` (the sales order, once per Amazon order, ever; later versions of it as
  ``OrderUpdated`` or ``OrderCancelled``) or ``orders.import-failed`` (a reason code and a sentence a
  person understands); undecodable records go to ``amazon.orders.enriched.dlq``.
- Also consumes ``ops.commands`` (ignore, unignore, retry-import; its own consumer group, as every
  stage is its own faust app) and ``channel.listings`` (the back-office's compacted listings, into Redis).
- Amazon operations and quotas: none (SKU mapping reads the channel listings in Redis; Retry Import
  re-runs from the last enriched order kept in Redis).
- State in Redis: the sales-order code per Amazon order (prefix + a sequence that is never reused),
  the imported sales order (for the invoice stage), the per-order status, the last enriched order per
  order, and the ignore marks. All of it comes back from the topics when Redis is found without it
  (``orders.imported``, ``channel.listings``, ``ops.commands``, ``amazon.orders.enriched``).
- Channel settings honoured: active, sync level ("stock only" imports nothing), fulfilment channels,
  import statuses, product identification and SKU crop rules, default order shipping method, ignore
  Amazon tax, tax included in prices, sales-order code prefix. (The default shipping service,
  cancellation reason and "don't upload order status" are for the write-back stages.)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

import faust

from ordersync.channels import Channel
from ordersync.ops.commands import outcome_detail
from ordersync.pipeline.runtime import StageRuntime
from ordersync.schemas.envelope import Envelope, Event
from ordersync.schemas.events import (
    AmazonOrder,
    AmazonOrderItem,
    GiftLine,
    ImportFailureReason,
    ListingChanged,
    Money,
    OperatorCommandIssued,
    OrderCancelled,
    OrderEnriched,
    OrderImported,
    OrderImportFailed,
    OrderLineState,
    OrderUpdated,
    SalesOrder,
    SalesOrderLine,
)
from ordersync.schemas.topics import (
    CHANNEL_LISTINGS,
    OPS_COMMANDS,
    ORDERS_ENRICHED,
    ORDERS_IMPORT_FAILED,
    ORDERS_IMPORTED,
    order_key,
)
from ordersync.state import keys
from ordersync.state.keys import ORDER_STATE_TTL_S
from ordersync.state.listings import apply_listings, item_key, row_of, stock_code_index
from ordersync.state.store import StoredOrder

log = logging.getLogger(__name__)
STAGE = "import"
MARKETPLACE_FACILITATOR = "MarketplaceFacilitator"
NOT_IMPORTED_STATUSES = frozenset({"Canceled", "Unfulfillable"})
UPDATE_MARK = keys.IMPORTED.name
#: The status note of a later version of a closed order (its working state gone with its life).
CLOSED_NOTE = "closed: imported long ago; its working state ended after delivery (order_state settings)"
#: Redis keys of this stage: the last enriched order per order (for Retry Import) and the ignore mark.
LAST_ENRICHED = keys.LAST_ENRICHED
IGNORED = keys.IGNORED


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


def _key(item: AmazonOrderItem, channel: Channel | None) -> str | None:
    if channel is None:
        return item.seller_sku
    return item_key(item, channel)


def _gets_addresses(channel: Channel | None) -> bool:
    """Whether Amazon sends this channel's orders a shipping address once they are payable: always on
    v0 (city, region, postal code, country without personal data); on 2026-01-01 only with the
    recipient, which ordersync asks for only where personal data is allowed."""
    return channel is None or channel.orders_api == "v0" or channel.fetch_pii


def check_importable(
    order: AmazonOrder, stock_codes: dict[str, str], channel: Channel | None = None
) -> ImportRefused | None:
    """Why this order cannot become a sales order yet, or None when it can.

    ``stock_codes`` is keyed by what the channel identifies products by (``listings.item_key``; the
    seller SKU when no channel is given)."""
    if order.order_status in ("Pending", "PendingAvailability"):
        return ImportRefused("pending_no_prices", "Pending: no prices yet (payment not authorised)")
    items = order.items or ()
    if not items:
        return ImportRefused("no_items", "Amazon returned no items for this order")
    if any(item.item_price is None for item in items if item.quantity_ordered > 0):
        return ImportRefused("pending_no_prices", "Pending: no prices yet (payment not authorised)")
    if order.fulfillment_channel == "MFN" and order.shipping_address is None and _gets_addresses(channel):
        return ImportRefused("no_shipping_address", "No shipping address yet")
    for item in items:
        key = _key(item, channel)
        if not key or key not in stock_codes:
            looked_up = ""
            if channel is not None and key and key not in (item.seller_sku, item.asin):
                looked_up = f", looked up as {key}"
            return ImportRefused(
                "unknown_stock_code",
                f"Unknown stock code for seller SKU {item.seller_sku or '(none)'} (ASIN {item.asin}"
                f"{looked_up})",
            )
    return None


def build_sales_order(
    order: AmazonOrder, channel: Channel, stock_codes: dict[str, str], code: str
) -> SalesOrder:
    """The sales order for an importable order (``check_importable`` returned None).

    Marketplace-facilitator tax is Amazon's to collect and remit, so it is not booked as the seller's;
    with the channel's "ignore Amazon tax" no tax is booked at all. With "tax included in prices" the
    prices are gross: the tax is shown but not added to the totals.
    """
    lines: list[SalesOrderLine] = []
    gift_lines: list[GiftLine] = []
    shipping = shipping_tax = promotion = Decimal(0)
    for item in order.items or ():
        quantity = item.quantity_ordered
        line_price = _amount(item.item_price)
        no_tax = channel.ignore_amazon_tax or item.tax_collection_model == MARKETPLACE_FACILITATOR
        tax = Decimal(0) if no_tax else _amount(item.item_tax)
        unit_price = (line_price / quantity).quantize(Decimal("0.01")) if quantity else Decimal(0)
        lines.append(
            SalesOrderLine(
                order_item_id=item.order_item_id,
                seller_sku=item.seller_sku,
                asin=item.asin,
                stock_code=stock_codes[_key(item, channel) or ""],
                quantity=quantity,
                unit_price=unit_price,
                tax=tax,
                line_total=line_price if channel.prices_include_tax else line_price + tax,
                is_gift=item.is_gift,
            )
        )
        if item.gift_wrap_price is not None or item.gift_message:
            wrap_tax = Decimal(0) if no_tax else _amount(item.gift_wrap_tax)
            gift_lines.append(
                GiftLine(
                    order_item_id=item.order_item_id,
                    gift_wrap_charge=_amount(item.gift_wrap_price),
                    gift_wrap_tax=wrap_tax,
                    gift_message=item.gift_message,
                )
            )
        shipping += _amount(item.shipping_price) - _amount(item.shipping_discount)
        shipping_tax += Decimal(0) if no_tax else _amount(item.shipping_tax)
        promotion += _amount(item.promotion_discount)
    added_shipping_tax = Decimal(0) if channel.prices_include_tax else shipping_tax
    gift_wrap = sum(
        (
            g.gift_wrap_charge + (Decimal(0) if channel.prices_include_tax else g.gift_wrap_tax)
            for g in gift_lines
        ),
        Decimal(0),
    )
    total = (
        sum((line.line_total for line in lines), Decimal(0))
        + shipping
        + added_shipping_tax
        + gift_wrap
        - promotion
    )
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
        # The channel's default shipping method when set, else Amazon's ship service level.
        shipping_method=channel.default_shipping_method or order.ship_service_level,
        prices_include_tax=channel.prices_include_tax,
        gift_lines=tuple(gift_lines),
        # Sealed as downloaded, for the order (seller and Amazon order id): the import reads none of it.
        personal=order.personal,
        programs=order_programs(order),
        associated_orders=order.associated_orders,
        latest_ship_date=order.latest_ship_date,
    )


def order_programs(order: AmazonOrder) -> tuple[str, ...]:
    """The order's programmes and its items', once each, in the order first seen."""
    seen = [*order.programs, *(p for item in order.items or () for p in item.programs)]
    return tuple(dict.fromkeys(seen))


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
    runtime: StageRuntime,
    correlation_id: str,
    sales_order: SalesOrder,
    order: AmazonOrder,
    stored: StoredOrder,
) -> None:
    """One sales order per Amazon order, ever: later versions become updates or a cancellation."""
    store = runtime.store
    seller, order_id = order.seller_id, order.amazon_order_id
    if not stored.is_new_version(order.last_update_date):
        return
    known = stored.status.get("amazon_state")
    change = order_change(sales_order, order, known)
    if change is not None:
        await runtime.emit(
            ORDERS_IMPORTED,
            order_key(seller, order_id),
            Envelope.wrap(
                change,
                seller_id=seller,
                marketplace_id=order.marketplace_id,
                correlation_id=correlation_id,
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
    await store.mark_version_and_status(
        UPDATE_MARK,
        seller,
        order_id,
        order.last_update_date,
        ttl_s=store.ttl_of(sales_order),
        amazon_status=order.order_status,
        amazon_state=state,
    )


async def handle_closed(runtime: StageRuntime, order: AmazonOrder, stored: StoredOrder) -> None:
    """A version of an order imported long ago whose working state ended with its life (its import mark
    is there, its sales order is not: ``ordersync.state.lifetime``): never a second sales order; nothing
    goes to the back-office, the order's status says why."""
    if not stored.is_new_version(order.last_update_date):
        return
    await runtime.store.mark_version_and_status(
        UPDATE_MARK,
        order.seller_id,
        order.amazon_order_id,
        order.last_update_date,
        amazon_status=order.order_status,
        note=CLOSED_NOTE,
    )


def _order_key(runtime: StageRuntime, family: keys.KeyFamily, seller_id: str, order_id: str) -> str:
    return runtime.store.key_of(family, seller_id, order_id)


def not_imported_because(channel: Channel, order: AmazonOrder) -> str | None:
    """Why the channel's settings keep this (not yet imported) order out, or None."""
    if not channel.active:
        return "the channel is disabled"
    if channel.sync_level == "stock only":
        return "the channel syncs stock only"
    if order.fulfillment_channel not in channel.fulfillment_channels:
        return f"fulfilled by {order.fulfillment_channel}; the channel imports " + ", ".join(
            channel.fulfillment_channels
        )
    if order.order_status in NOT_IMPORTED_STATUSES or order.order_status not in channel.import_statuses:
        return f"{order.order_status} on Amazon; the channel imports " + ", ".join(channel.import_statuses)
    return None


def _item_keys(order: AmazonOrder, channel: Channel) -> list[str]:
    """The values the order's items are looked up by in the channel's listings."""
    return sorted({k for k in (item_key(item, channel) for item in order.items or ()) if k})


async def _stored(runtime: StageRuntime, enriched: OrderEnriched) -> StoredOrder:
    """What this stage reads about the order before deciding, in one round trip; extra: the last
    enriched version kept, the ignore mark and the sales-order code; looked up: its items' stock codes."""
    order = enriched.order
    seller, order_id = order.seller_id, order.amazon_order_id
    channel = runtime.channels.by_name(enriched.channel)
    return await runtime.store.stored_order(
        seller,
        order_id,
        mark=UPDATE_MARK,
        extra=(
            _order_key(runtime, LAST_ENRICHED, seller, order_id),
            _order_key(runtime, IGNORED, seller, order_id),
            runtime.store.key_of(keys.SALES_ORDER_CODE, seller, order_id),
        ),
        lookup=(stock_code_index(runtime.store, channel), _item_keys(order, channel)),
    )


async def handle(runtime: StageRuntime, envelope: Envelope[Event]) -> None:
    enriched = envelope.payload_as(OrderEnriched)
    order = enriched.order
    stored = await _stored(runtime, enriched)
    # Kept for Retry Import and Un-ignore (no Amazon call) when the order is not imported (written with its
    # status then); an imported order's later versions are updates, which never wait for an operator.
    last = stored.extra[0]
    keep = (
        stored.sales_order is None
        and stored.mark is None
        and (
            last is None
            or OrderEnriched.model_validate_json(last).order.last_update_date <= order.last_update_date
        )
    )
    await import_order(runtime, enriched, envelope.correlation_id, stored, keep_enriched=keep)


async def _not_imported(
    runtime: StageRuntime, enriched: OrderEnriched, keep_enriched: bool, **status: str
) -> None:
    """Why the order is not imported (its status), with the enriched version kept for Retry Import and
    Un-ignore when ``keep_enriched``, in one round trip."""
    order = enriched.order
    store = runtime.store
    async with store.redis.pipeline(transaction=False) as pipe:
        store.queue_order_status(pipe, order.seller_id, order.amazon_order_id, **status)
        if keep_enriched:
            last_key = _order_key(runtime, LAST_ENRICHED, order.seller_id, order.amazon_order_id)
            pipe.set(last_key, enriched.model_dump_json(), ex=ORDER_STATE_TTL_S)
        await pipe.execute()


async def import_order(
    runtime: StageRuntime,
    enriched: OrderEnriched,
    correlation_id: str,
    stored: StoredOrder | None = None,
    *,
    keep_enriched: bool = False,
) -> None:
    """Import one enriched order: a new sales order, a change of one, a refusal, or nothing. ``stored``:
    what Redis holds about it, when the caller read it already; ``keep_enriched``: keep this version for
    Retry Import and Un-ignore if the order is not imported."""
    order = enriched.order
    store = runtime.store
    if stored is None:
        stored = await _stored(runtime, enriched)
    channel = runtime.channels.by_name(enriched.channel)
    key = order_key(order.seller_id, order.amazon_order_id)
    existing = stored.sales_order
    if existing is not None:
        if "imported_at" not in stored.status:
            # Stored, but the stage stopped before OrderImported was published: publish it now.
            await publish_import(runtime, existing, order, correlation_id)
            return
        await handle_change(runtime, correlation_id, existing, order, stored)
        return
    if stored.mark is not None:
        await handle_closed(runtime, order, stored)
        return
    if stored.extra[1] is not None:
        await _not_imported(
            runtime, enriched, keep_enriched, stage="ignored", reason="ignored by an operator"
        )
        return
    why_not = not_imported_because(channel, order)
    if why_not is not None:
        await _not_imported(runtime, enriched, keep_enriched, stage="not-imported", reason=why_not)
        return
    stock_codes = stored.looked_up
    refused = check_importable(order, stock_codes, channel)
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
                correlation_id=correlation_id,
            ),
        )
        await _not_imported(
            runtime,
            enriched,
            keep_enriched,
            stage="import-failed",
            reason_code=refused.reason_code,
            reason=refused.reason,
        )
        return
    code, _ = await store.sales_order_code(
        order.seller_id,
        order.amazon_order_id,
        channel.sales_order_prefix,
        sequence_kept=runtime.rebuilds_state,
        known=stored.extra[2],
        read=False,
    )
    sales_order = build_sales_order(order, channel, stock_codes, code)
    # Stored before it is published: the back-office may invoice the moment it reads OrderImported, and
    # invoice-issued finds the order's lines here. A stop in between publishes it on redelivery (above).
    await store.save_sales_order(sales_order)
    await publish_import(runtime, sales_order, order, correlation_id)


async def publish_import(
    runtime: StageRuntime, sales_order: SalesOrder, order: AmazonOrder, correlation_id: str
) -> None:
    """Publish a stored sales order as OrderImported, then mark the order imported (the mark says the
    event went out: nothing marks it before Kafka acknowledged it)."""
    store = runtime.store
    await runtime.emit(
        ORDERS_IMPORTED,
        order_key(order.seller_id, order.amazon_order_id),
        Envelope.wrap(
            OrderImported(sales_order=sales_order),
            seller_id=order.seller_id,
            marketplace_id=order.marketplace_id,
            correlation_id=correlation_id,
        ),
    )
    code = sales_order.code
    await store.mark_version_and_status(
        UPDATE_MARK,
        order.seller_id,
        order.amazon_order_id,
        order.last_update_date,
        forget=(_order_key(runtime, LAST_ENRICHED, order.seller_id, order.amazon_order_id),),
        ttl_s=store.ttl_of(sales_order),
        stage="imported",
        sales_order_code=code,
        reason_code="",
        reason="",
        imported_at=runtime.clock.now().isoformat(),
    )


async def operator_command(runtime: StageRuntime, envelope: Envelope[Event]) -> None:
    """Ignore, Un-ignore and Retry Import (other commands belong to other stages).

    Ignore keeps an order out until un-ignored, whatever later versions arrive; an order already
    imported stays imported (its updates still flow). Un-ignore and Retry Import re-run the import from
    the last enriched order kept in Redis, without calling Amazon."""
    command = envelope.payload_as(OperatorCommandIssued)
    if command.command not in ("ignore", "unignore", "retry-import"):
        return
    channel = runtime.channels.by_name(command.channel)
    store = runtime.store
    seller = channel.seller_id
    done = 0
    exceptions: dict[str, str] = {}
    for order_id in command.amazon_order_ids:
        ignore_key = _order_key(runtime, IGNORED, seller, order_id)
        if command.command == "ignore":
            if await store.was_imported(seller, order_id):
                await store.set_order_status(seller, order_id, note="ignore refused: already imported")
                exceptions[order_id] = "refused: already imported"
                continue
            await store.redis.set(ignore_key, command.operator or "operator", ex=ORDER_STATE_TTL_S)
            await store.set_order_status(
                seller, order_id, stage="ignored", reason="ignored by an operator", reason_code=""
            )
            done += 1
            continue
        if command.command == "unignore":
            await store.redis.delete(ignore_key)
            await store.set_order_status(seller, order_id, stage="unignored", reason="")
        raw = await store.redis.get(_order_key(runtime, LAST_ENRICHED, seller, order_id))
        if raw is None and await store.was_imported(seller, order_id):
            done += 1  # imported already (its enriched version was forgotten then): nothing to redo
            continue
        if raw is None:
            if command.command == "retry-import":
                await store.set_order_status(
                    seller, order_id, note="retry-import: no downloaded data yet; retry the download"
                )
            exceptions[order_id] = "not imported: no downloaded data yet; retry the download"
            continue
        await import_order(runtime, OrderEnriched.model_validate_json(raw), envelope.correlation_id)
        outcome = import_outcome(await store.order_status(seller, order_id))
        if outcome is None:
            done += 1
        else:
            exceptions[order_id] = outcome
    verb = {"ignore": "ignored", "unignore": "un-ignored and imported", "retry-import": "imported"}
    headline = f"{done} of {len(command.amazon_order_ids)} orders {verb[command.command]}"
    await store.record_task(
        command.command,
        channel.name,
        ok=not exceptions,
        detail=outcome_detail(headline, exceptions),
        operator=command.operator or "",
    )


def import_outcome(status: Mapping[str, str]) -> str | None:
    """Why an order an operator asked to import is not imported (its status after the attempt), or
    None when it is."""
    stage = status.get("stage", "")
    if stage == "imported" or status.get("imported_at"):
        return None
    reason = ": ".join(part for part in (status.get("reason_code"), status.get("reason")) if part)
    return f"{stage or 'not imported'}: {reason}" if reason else stage or "not imported"


async def listing_changed(runtime: StageRuntime, envelope: Envelope[Event]) -> None:
    """A listing from the back-office's compacted topic, into the channel's listings in Redis."""
    changed = envelope.payload_as(ListingChanged)
    runtime.channels.by_name(changed.channel)  # an unknown channel is a configuration error: DLQ
    row = row_of(changed)
    if row is None:
        await apply_listings(runtime.store, changed.channel, (), removed=(changed.merchant_sku,))
    else:
        await apply_listings(runtime.store, changed.channel, (row,))


async def rebuild_listings(runtime: StageRuntime) -> int:
    """Every channel's listings again from ``channel.listings`` (compacted: the latest row per SKU), for a
    Redis that lost them; the listings CLI writes there too, so the topic holds them all. Returns the
    rows read. Invalid records and unknown channels are skipped here (the listings agent dead-letters
    them)."""
    known = {channel.name for channel in runtime.channels.channels}
    read = 0
    # Per partition in offset order: the latest version of a SKU applies last.
    for envelope in await runtime.read_events(CHANNEL_LISTINGS):
        changed = envelope.payload_as(ListingChanged)
        if changed.channel not in known:
            continue
        row = row_of(changed)
        if row is None:
            await apply_listings(runtime.store, changed.channel, (), removed=(changed.merchant_sku,))
        else:
            await apply_listings(runtime.store, changed.channel, (row,))
        read += 1
    log.warning("listings rebuilt from %s: %d rows", CHANNEL_LISTINGS.name, read)
    return read


async def rebuild_sales_orders(runtime: StageRuntime) -> int:
    """Every sales order again from ``orders.imported``, with its code, for a Redis that lost them: an
    Amazon order imported before is never imported as a second sales order, and no code is given
    twice (each prefix's sequence resumes above the highest code on the topic, with a margin for codes
    given but not yet published when Redis was lost; every channel's sequence exists afterwards, so one
    found missing later means Redis lost it). Returns the orders."""
    restored = 0
    highest = {channel.sales_order_prefix: 0 for channel in runtime.channels.channels}
    for envelope in await runtime.read_events(ORDERS_IMPORTED):
        if isinstance(envelope.payload, OrderImported):
            sales_order = envelope.payload.sales_order
            await runtime.store.restore_sales_order(sales_order, envelope.occurred_at.isoformat())
            restored += 1
            prefix, digits = sales_order.code[:-8], sales_order.code[-8:]
            if digits.isdigit():
                highest[prefix] = max(highest.get(prefix, 0), int(digits))
    await runtime.store.resume_sequences(highest)
    log.warning("sales orders rebuilt from %s: %d", ORDERS_IMPORTED.name, restored)
    return restored


def ignored_after(
    commands: Iterable[OperatorCommandIssued], sellers: dict[str, str]
) -> dict[str, str | None]:
    """What the Ignore and Un-ignore commands left, per ``seller_id:amazon_order_id``: the operator who
    ignored the order, or None (un-ignored since). ``commands`` in the order they were issued; ``sellers``
    maps each known channel to its seller (commands of other channels are not this stage's)."""
    ignored: dict[str, str | None] = {}
    for command in commands:
        seller = sellers.get(command.channel)
        if seller is None or command.command not in ("ignore", "unignore"):
            continue
        for order_id in command.amazon_order_ids:
            operator = (command.operator or "operator") if command.command == "ignore" else None
            ignored[order_key(seller, order_id)] = operator
    return ignored


async def rebuild_operator_state(runtime: StageRuntime) -> tuple[int, int]:
    """What Retry Import, Ignore and Un-ignore need, again from Kafka for a Redis that lost it: the
    orders an operator still has ignored (``ops.commands``, replayed in order; an order imported since
    stays imported, as the command itself decides) and the newest enriched version of each order not
    imported (``amazon.orders.enriched``). Run after the sales orders are back. Returns (ignored,
    enriched)."""
    store = runtime.store
    sellers = {channel.name: channel.seller_id for channel in runtime.channels.channels}
    commands = [e.payload_as(OperatorCommandIssued) for e in await runtime.read_events(OPS_COMMANDS)]
    ignored = 0
    for key, operator in ignored_after(commands, sellers).items():
        seller, order_id = key.split(":", 1)
        ignore_key = _order_key(runtime, IGNORED, seller, order_id)
        if operator is None or await store.was_imported(seller, order_id):
            await store.redis.delete(ignore_key)
            continue
        await store.redis.set(ignore_key, operator, ex=ORDER_STATE_TTL_S)
        ignored += 1
    newest: dict[str, OrderEnriched] = {}
    for envelope in await runtime.read_events(ORDERS_ENRICHED):
        enriched = envelope.payload_as(OrderEnriched)
        key = order_key(enriched.order.seller_id, enriched.order.amazon_order_id)
        kept = newest.get(key)
        if kept is None or kept.order.last_update_date <= enriched.order.last_update_date:
            newest[key] = enriched
    restored = 0
    for enriched in newest.values():
        order = enriched.order
        if await store.was_imported(order.seller_id, order.amazon_order_id):
            continue  # imported: its enriched version is no longer needed (see handle)
        last_key = _order_key(runtime, LAST_ENRICHED, order.seller_id, order.amazon_order_id)
        # Kept unless Redis holds one already (written since by this stage: as new or newer).
        await store.redis.set(last_key, enriched.model_dump_json(), ex=ORDER_STATE_TTL_S, nx=True)
        restored += 1
    log.warning(
        "operator state rebuilt from %s and %s: %d orders ignored, %d enriched orders kept",
        OPS_COMMANDS.name,
        ORDERS_ENRICHED.name,
        ignored,
        restored,
    )
    return ignored, restored


def register(app: faust.App, runtime: StageRuntime) -> None:
    runtime.topic(ORDERS_IMPORTED)
    runtime.topic(ORDERS_IMPORT_FAILED)

    async def rebuild() -> None:
        await rebuild_sales_orders(runtime)
        await rebuild_listings(runtime)
        await rebuild_operator_state(runtime)

    # The SKU mappings live in Redis but are Kafka's: a Redis that lost them gets them back first.
    runtime.on_redis_reset(rebuild)

    @app.task  # type: ignore[untyped-decorator]
    async def watch_redis() -> None:
        await runtime.watch_generation()

    @app.agent(runtime.topic(OPS_COMMANDS), name="import-commands")
    async def import_commands(stream: faust.StreamT[bytes]) -> None:
        await runtime.consume(OPS_COMMANDS, stream, lambda env: operator_command(runtime, env))

    @app.agent(runtime.topic(CHANNEL_LISTINGS), name="import-listings")
    async def import_listings(stream: faust.StreamT[bytes]) -> None:
        await runtime.consume(CHANNEL_LISTINGS, stream, lambda env: listing_changed(runtime, env))

    @app.agent(runtime.topic(ORDERS_ENRICHED), name="import")
    async def import_orders(stream: faust.StreamT[bytes]) -> None:
        await runtime.consume(ORDERS_ENRICHED, stream, lambda env: handle(runtime, env))
