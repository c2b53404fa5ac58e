"""Invoice issued: turns the back-office's invoices into shipment requests, one per package.

- Input: ``invoices.issued`` (written by the back-office).
- Output: ``shipments.requested``; invalid invoices (bad JSON, wrong types, unknown item, quantity above
  what is left to ship) go to ``invoices.issued.dlq`` with the reason. An invoice whose order has no
  sales order yet (the back-office invoiced it a moment after the import, or import is retrying) waits
  ``invoice.sales_order_wait_s`` in line, then on the redrive tiers; it is dead-lettered as never
  imported only at the redrive deadline.
- Amazon operations and quotas: none.
- Redis lost (restarted empty, a failover that lagged): before another invoice, what earlier invoices
  asked for comes back from ``shipments.requested`` (:func:`rebuild_requests`).
- State in Redis: quantities already requested per order item (each invoice counted once), package
  reference ids per (invoice, package) so a replayed invoice asks for the very same packages.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial

import faust

from ordersync.errors import InvalidEvent, Permanent, Retryable
from ordersync.pipeline.runtime import StageRuntime
from ordersync.schemas.envelope import Envelope, Event
from ordersync.schemas.events import InvoiceIssued, SalesOrder, ShipmentItem, ShipmentRequested
from ordersync.schemas.topics import INVOICES_ISSUED, SHIPMENTS_REQUESTED, order_key
from ordersync.state.store import InvoiceContext

log = logging.getLogger(__name__)

#: What ``source`` says on the requests this stage makes: ``invoice <number>``.
INVOICE_SOURCE = "invoice "
STAGE = "invoice-issued"


def shipped_quantities(invoice: InvoiceIssued, order: SalesOrder) -> list[dict[str, int]]:
    """Quantity per order item for each package, checked against the order; raises InvalidEvent."""
    by_item = {line.order_item_id: line for line in order.lines}
    by_sku = {line.seller_sku: line for line in order.lines if line.seller_sku}
    packages: list[dict[str, int]] = []
    for number, package in enumerate(invoice.packages, start=1):
        quantities: dict[str, int] = {}
        for shipped in package.lines:
            line = by_item.get(shipped.order_item_id or "") or by_sku.get(shipped.seller_sku or "")
            if line is None:
                raise InvalidEvent(
                    f"invoice {invoice.invoice_number}, package {number}: order {invoice.amazon_order_id} "
                    f"has no item {shipped.order_item_id or shipped.seller_sku}"
                )
            quantities[line.order_item_id] = quantities.get(line.order_item_id, 0) + shipped.quantity
        packages.append(quantities)
    return packages


def check_quantities(
    invoice: InvoiceIssued, order: SalesOrder, packages: list[dict[str, int]], already: dict[str, int]
) -> None:
    """No item may be shipped more than ordered minus what earlier invoices already shipped."""
    ordered = {line.order_item_id: line.quantity for line in order.lines}
    total: dict[str, int] = {}
    for package in packages:
        for item, qty in package.items():
            total[item] = total.get(item, 0) + qty
    for item, qty in total.items():
        left = ordered[item] - already.get(item, 0)
        if qty > left:
            raise InvalidEvent(
                f"invoice {invoice.invoice_number}: item {item} of order {invoice.amazon_order_id} "
                f"ships {qty}, but only {left} of {ordered[item]} are left to ship"
            )


def shipment_requests(
    invoice: InvoiceIssued, order: SalesOrder, packages: list[dict[str, int]], reference_ids: list[str]
) -> list[ShipmentRequested]:
    requests = []
    for package, quantities, reference in zip(invoice.packages, packages, reference_ids, strict=True):
        requests.append(
            ShipmentRequested(
                channel=order.channel,
                amazon_order_id=order.amazon_order_id,
                package_reference_id=reference,
                carrier_code=package.carrier_code,
                carrier_name=package.carrier_name,
                shipping_method=package.shipping_method,
                tracking_number=package.tracking_number,
                ship_date=package.ship_date,
                items=tuple(ShipmentItem(order_item_id=i, quantity=q) for i, q in quantities.items()),
                source=f"{INVOICE_SOURCE}{invoice.invoice_number}",
                label_bought_on_amazon=package.label_bought_on_amazon,
            )
        )
    return requests


async def invoice_context(
    runtime: StageRuntime, seller: str, invoice: InvoiceIssued
) -> tuple[InvoiceContext, SalesOrder]:
    """What Redis holds for the invoice, its sales order there: waiting up to
    ``invoice.sales_order_wait_s`` for one not stored yet; then :class:`Retryable` (the invoice is
    parked and tried again later), or :class:`Permanent` (dead-lettered, replayable once imported) on
    its last redrive try."""
    limit = runtime.settings.invoice.sales_order_wait_s
    waited, delay = 0.0, 0.25
    while True:
        context = await runtime.store.invoice_context(seller, invoice.amazon_order_id, invoice.invoice_number)
        if context.sales_order is not None:
            return context, context.sales_order
        if context.closed:
            raise Permanent(
                f"invoice {invoice.invoice_number}: order {invoice.amazon_order_id} of seller {seller} is "
                "closed: it was imported long ago and its working state ended after delivery (order_state"
                " settings); its shipment is not written back"
            )
        if waited >= limit:
            if runtime.last_try():
                raise Permanent(
                    f"invoice {invoice.invoice_number}: order {invoice.amazon_order_id} of seller {seller} "
                    "was never imported (no sales order by the redrive deadline)"
                )
            raise Retryable(
                f"invoice {invoice.invoice_number}: order {invoice.amazon_order_id} of seller {seller} "
                f"is not imported yet (waited {limit:g} s for its sales order)"
            )
        step = min(delay, limit - waited)
        await asyncio.sleep(step)
        waited, delay = waited + step, min(delay * 2, 5.0)


async def handle(runtime: StageRuntime, envelope: Envelope[Event]) -> None:
    invoice = envelope.payload_as(InvoiceIssued)
    store = runtime.store
    seller = envelope.seller_id
    context, order = await invoice_context(runtime, seller, invoice)
    packages = shipped_quantities(invoice, order)
    first_time = not context.seen
    if first_time:
        check_quantities(invoice, order, packages, context.requested)
    ttl_s = store.lifetime.ttl_s(order, runtime.clock.now())
    references = await store.package_references(
        seller, invoice.amazon_order_id, invoice.invoice_number, range(len(packages)), ttl_s=ttl_s
    )
    for request in shipment_requests(invoice, order, packages, references):
        await runtime.emit(
            SHIPMENTS_REQUESTED,
            order_key(seller, order.amazon_order_id),
            Envelope.wrap(
                request,
                seller_id=seller,
                marketplace_id=order.marketplace_id,
                correlation_id=envelope.correlation_id,
            ),
        )
    totals: dict[str, int] | None = None
    if first_time:
        totals = {}
        for package in packages:
            for item, qty in package.items():
                totals[item] = totals.get(item, 0) + qty
    await store.invoice_done(
        seller,
        invoice.amazon_order_id,
        invoice.invoice_number,
        totals,
        ttl_s=ttl_s,
        invoice_number=invoice.invoice_number,
    )


async def rebuild_requests(runtime: StageRuntime) -> int:
    """What earlier invoices asked for, again from ``shipments.requested``, for a Redis that lost it: each
    invoice's package reference ids (a replayed invoice asks for the very same packages) and the
    quantities it requested per item (an invoice is counted once, and no item is asked for twice).
    Returns the invoices restored."""
    sellers = {channel.name: channel.seller_id for channel in runtime.channels.channels}
    invoices: dict[tuple[str, str, str], dict[str, ShipmentRequested]] = {}
    highest: dict[tuple[str, str], int] = {}
    for envelope in await runtime.read_events(SHIPMENTS_REQUESTED):
        request = envelope.payload_as(ShipmentRequested)
        if sellers.get(request.channel) != envelope.seller_id:
            continue  # another deployment's channel on a shared cluster
        order = (envelope.seller_id, request.amazon_order_id)
        highest[order] = max(highest.get(order, 0), int(request.package_reference_id))
        source = request.source or ""
        if not source.startswith(INVOICE_SOURCE):
            continue  # a warehouse's own request: its package id is taken, nothing else to restore
        packages = invoices.setdefault(
            (envelope.seller_id, request.amazon_order_id, source.removeprefix(INVOICE_SOURCE)), {}
        )
        packages.setdefault(request.package_reference_id, request)  # first asked, first in the invoice
    by_order: dict[tuple[str, str], tuple[list[str], dict[str, int]]] = {}
    for (seller, order_id, invoice), packages in invoices.items():
        await runtime.store.restore_package_references(seller, order_id, invoice, list(packages))
        seen, totals = by_order.setdefault((seller, order_id), ([], {}))
        seen.append(invoice)
        for request in packages.values():
            for item in request.items:
                totals[item.order_item_id] = totals.get(item.order_item_id, 0) + item.quantity
    for (seller, order_id), (seen, totals) in by_order.items():
        await runtime.store.restore_requested(seller, order_id, seen, totals)
    for (seller, order_id), number in highest.items():
        await runtime.store.resume_package_sequence(seller, order_id, number)
    log.warning("invoices rebuilt from %s: %d", SHIPMENTS_REQUESTED.name, len(invoices))
    return len(invoices)


def register(app: faust.App, runtime: StageRuntime) -> None:
    runtime.topic(SHIPMENTS_REQUESTED)
    # What invoices asked for lives in Redis but is Kafka's: a Redis that lost it gets it back first.
    runtime.on_redis_reset(partial(rebuild_requests, runtime))

    @app.task  # type: ignore[untyped-decorator]
    async def watch_redis() -> None:
        await runtime.watch_generation()

    runtime.topic(INVOICES_ISSUED.dlq)  # type: ignore[arg-type]

    @app.agent(runtime.topic(INVOICES_ISSUED), name="invoice-issued")
    async def issue_shipments(stream: faust.StreamT[bytes]) -> None:
        await runtime.consume(INVOICES_ISSUED, stream, lambda env: handle(runtime, env))
