"""Facts: what one event says about one order, typed, and how a fact is kept in Redis.

:func:`facts_of` turns an event into the orders it is about and one :class:`Fact` for each (none for an
event about no order). A fact's :attr:`Fact.data` is one of the ``*Fact`` classes below, by event type.

In Redis a fact is one field of the order's fact hash (its event id) holding compact JSON, unchanged
from the model's first version: the envelope's parts under ``at``, ``topic``, ``type``, ``mkt``,
``summary``, the data under ``d`` with the short names some fields declare (field metadata ``stored``:
``mkt``, ``lud``...; ``many`` marks a tuple of nested objects), absent values left out of ``d`` (kept
inside nested objects, except fields added later, metadata ``added``: left out everywhere, so what
was stored before they existed is still stored the same way). :func:`encode_fact` and
:func:`decode_fact` are the only code that knows that form, so the typed facts could be renamed
freely without touching what Redis holds.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from ordersync.errors import InvalidEvent
from ordersync.schemas.codec import decode
from ordersync.schemas.envelope import Envelope, Event
from ordersync.schemas.events import (
    AmazonOrder,
    EventDeadLettered,
    InvoiceIssued,
    Money,
    OperatorCommandIssued,
    OrderAcknowledgementResult,
    OrderCancellationRequested,
    OrderCancellationResult,
    OrderCancelled,
    OrderDownloaded,
    OrderEnriched,
    OrderImported,
    OrderImportFailed,
    OrderUpdated,
    Package,
    PackageDocumentsFailed,
    PackageDocumentsReady,
    PackageScheduled,
    PackageSchedulingFailed,
    ShipmentConfirmed,
    ShipmentFailed,
    ShipmentRequested,
)
from ordersync.schemas.topics import (
    CATALOGUE,
    INVOICES_ISSUED,
    OPS_COMMANDS,
    ORDER_FLOW,
    ORDERS_ACKNOWLEDGEMENT_RESULTS,
    ORDERS_CANCELLATION_REQUESTED,
    ORDERS_CANCELLATION_RESULTS,
    ORDERS_DOWNLOADED,
    ORDERS_ENRICHED,
    ORDERS_IMPORTED,
    PACKAGES_DOCUMENTS,
    PACKAGES_PACKED,
    PACKAGES_SCHEDULED,
    SHIPMENTS_REQUESTED,
    TopicSpec,
    by_name,
)
from ordersync.state.readmodel.rows import FailedStage

#: Every topic the projection folds: the order outcome topics, operator commands, every dead-letter topic.
FOLDED_TOPICS: tuple[TopicSpec, ...] = (
    *ORDER_FLOW,
    ORDERS_CANCELLATION_REQUESTED,
    ORDERS_CANCELLATION_RESULTS,
    ORDERS_ACKNOWLEDGEMENT_RESULTS,
    PACKAGES_SCHEDULED,
    PACKAGES_DOCUMENTS,
    OPS_COMMANDS,
    *(spec for spec in CATALOGUE if spec.name.endswith(".dlq")),
)

#: Which stage a dead-lettered record of each source topic failed in (what the operator retries).
DLQ_FAILED_STAGE: dict[str, FailedStage] = {
    ORDERS_DOWNLOADED.name: "download",
    ORDERS_ENRICHED.name: "import",
    INVOICES_ISSUED.name: "write-back",
    SHIPMENTS_REQUESTED.name: "write-back",
    ORDERS_CANCELLATION_REQUESTED.name: "write-back",
    ORDERS_IMPORTED.name: "write-back",  # (read there for the order acknowledgements)
    PACKAGES_PACKED.name: "write-back",  # Easy Ship packing runs in the write-back stage
}

#: The track a dead letter of each source topic fails: a later success on that track supersedes it.
DLQ_TRACK: dict[str, str] = {
    ORDERS_DOWNLOADED.name: "download",
    ORDERS_ENRICHED.name: "import",
    INVOICES_ISSUED.name: "invoice",
    SHIPMENTS_REQUESTED.name: "shipment-request",
    ORDERS_CANCELLATION_REQUESTED.name: "cancellation",
    ORDERS_IMPORTED.name: "acknowledgement",
    PACKAGES_PACKED.name: "easy-ship",
}


def iso(value: datetime) -> str:
    """Fixed width, UTC, microseconds: lexicographic order is time order."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _iso_or_none(value: datetime | None) -> str | None:
    return None if value is None else iso(value)


def _money(value: Money | None) -> str | None:
    return None if value is None else str(value.amount)


def _dec(value: Decimal) -> str:
    return str(value)


@dataclass(frozen=True, slots=True)
class Target:
    """The order an event is about."""

    seller_id: str
    amazon_order_id: str

    @property
    def member(self) -> str:
        return f"{self.amazon_order_id}|{self.seller_id}"


# --- the parts of facts ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ItemFact:
    """An Amazon order item."""

    order_item_id: str
    seller_sku: str | None
    asin: str | None
    title: str | None
    quantity_ordered: int | None
    quantity_shipped: int | None
    #: The line's price (Decimal text), None while Pending.
    item_price: str | None
    currency: str | None


@dataclass(frozen=True, slots=True)
class SalesLineFact:
    """A line of the imported sales order (amounts as Decimal text)."""

    order_item_id: str
    seller_sku: str | None
    asin: str | None
    stock_code: str | None
    quantity: int | None
    unit_price: str | None
    tax: str | None
    line_total: str | None


@dataclass(frozen=True, slots=True)
class LineStateFact:
    """An imported order's line as Amazon changed it."""

    order_item_id: str
    quantity_ordered: int
    quantity_shipped: int
    buyer_requested_cancel: bool


@dataclass(frozen=True, slots=True)
class ShippedLineFact:
    order_item_id: str | None
    seller_sku: str | None
    quantity: int


@dataclass(frozen=True, slots=True)
class PackageFact:
    """A package of an invoice (the ship date as the event's JSON gave it)."""

    carrier_code: str
    carrier_name: str | None
    shipping_method: str | None
    tracking_number: str
    ship_date: str
    lines: tuple[ShippedLineFact, ...] = field(metadata={"many": ShippedLineFact})


@dataclass(frozen=True, slots=True)
class ShipmentItemFact:
    order_item_id: str
    quantity: int


# --- facts, one class per event type ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OrderSnapshotFact:
    """An order as Amazon listed it (dates as :func:`iso` text)."""

    channel: str
    marketplace_id: str = field(metadata={"stored": "mkt"})
    order_status: str = field(metadata={"stored": "status"})
    fulfillment_channel: str = field(metadata={"stored": "fc"})
    purchase_date: str = field(metadata={"stored": "pd"})
    last_update_date: str = field(metadata={"stored": "lud"})
    ship_service_level: str | None = field(metadata={"stored": "ssl"})
    #: Amazon's latest ship date (:func:`iso`); None for facts stored before it was kept. Keyword-only
    #: so the subclasses' own fields may come after it without defaults.
    latest_ship_date: str | None = field(
        default=None, kw_only=True, metadata={"stored": "lsd", "added": True}
    )


@dataclass(frozen=True, slots=True)
class DownloadedFact(OrderSnapshotFact):
    found_by: str


@dataclass(frozen=True, slots=True)
class EnrichedFact(OrderSnapshotFact):
    items: tuple[ItemFact, ...] = field(metadata={"many": ItemFact})


@dataclass(frozen=True, slots=True)
class ImportedFact:
    channel: str
    sales_order_code: str = field(metadata={"stored": "code"})
    order_status: str = field(metadata={"stored": "status"})
    fulfillment_channel: str = field(metadata={"stored": "fc"})
    purchase_date: str = field(metadata={"stored": "pd"})
    marketplace_id: str = field(metadata={"stored": "mkt"})
    shipping_method: str | None
    currency: str
    total: str
    lines: tuple[SalesLineFact, ...] = field(metadata={"many": SalesLineFact})
    #: The sales order's copy of Amazon's latest ship date (:func:`iso`); None for facts stored before.
    latest_ship_date: str | None = field(default=None, metadata={"stored": "lsd", "added": True})


@dataclass(frozen=True, slots=True)
class UpdatedFact:
    channel: str
    sales_order_code: str = field(metadata={"stored": "code"})
    order_status: str = field(metadata={"stored": "status"})
    changed_at: str
    lines: tuple[LineStateFact, ...] = field(metadata={"many": LineStateFact})


@dataclass(frozen=True, slots=True)
class CancelledFact:
    channel: str
    sales_order_code: str = field(metadata={"stored": "code"})
    reason: str
    buyer_requested: bool
    cancelled_at: str


@dataclass(frozen=True, slots=True)
class ImportFailedFact:
    channel: str
    reason_code: str
    reason: str


@dataclass(frozen=True, slots=True)
class InvoicedFact:
    invoice_number: str = field(metadata={"stored": "invoice"})
    sales_order_code: str | None = field(metadata={"stored": "code"})
    packages: tuple[PackageFact, ...] = field(metadata={"many": PackageFact})


@dataclass(frozen=True, slots=True)
class ShipmentRequestedFact:
    channel: str
    package_reference_id: str = field(metadata={"stored": "package"})
    carrier_code: str
    carrier_name: str | None
    shipping_method: str | None
    tracking_number: str
    ship_date: str
    items: tuple[ShipmentItemFact, ...] = field(metadata={"many": ShipmentItemFact})
    source: str | None


@dataclass(frozen=True, slots=True)
class ShipmentConfirmedFact:
    channel: str
    package_reference_id: str = field(metadata={"stored": "package"})
    method: str
    attempts: int
    carrier_code: str
    tracking_number: str
    quantity: int
    confirmed_at: str


@dataclass(frozen=True, slots=True)
class ShipmentFailedFact:
    channel: str
    package_reference_id: str = field(metadata={"stored": "package"})
    attempts: int
    error_code: str
    error_message: str
    carrier_code: str
    shipping_method: str | None
    tracking_number: str
    ship_date: str
    quantity: int


@dataclass(frozen=True, slots=True)
class CancellationRequestedFact:
    channel: str
    reason: str | None


@dataclass(frozen=True, slots=True)
class CancellationResultFact:
    channel: str
    cancelled: bool
    reason: str
    feed_id: str | None
    error_code: str | None
    error_message: str | None


@dataclass(frozen=True, slots=True)
class AcknowledgementResultFact:
    channel: str
    merchant_order_id: str
    acknowledged: bool
    feed_id: str | None
    error_code: str | None
    error_message: str | None


@dataclass(frozen=True, slots=True)
class EasyShipFact:
    """An Easy Ship package scheduled for its handover (``error_code`` None), or refused. The fields
    after ``error_message`` came later: facts stored before them read as None."""

    channel: str
    slot_start: str | None
    handover: str | None
    scheduled_package_id: str | None
    invoice_number: str | None
    error_code: str | None
    error_message: str | None
    slot_end: str | None = field(default=None, kw_only=True, metadata={"added": True})
    #: Amazon's package status when it was scheduled (ReadyForPickup, PendingPickUp...).
    status: str | None = field(default=None, kw_only=True, metadata={"added": True})
    tracking_id: str | None = field(default=None, kw_only=True, metadata={"added": True})
    #: The package as scheduled, centimetres and grams (Decimal text).
    length_cm: str | None = field(default=None, kw_only=True, metadata={"added": True})
    width_cm: str | None = field(default=None, kw_only=True, metadata={"added": True})
    height_cm: str | None = field(default=None, kw_only=True, metadata={"added": True})
    weight_g: str | None = field(default=None, kw_only=True, metadata={"added": True})
    #: "packer" or "catalog": who gave the size.
    size_from: str | None = field(default=None, kw_only=True, metadata={"added": True})


@dataclass(frozen=True, slots=True)
class EasyShipDocumentsFact:
    """An Easy Ship package's documents stored (``error_code`` None: where, how large, when), or why
    Amazon made none."""

    channel: str
    scheduled_package_id: str | None
    #: The document types, comma-separated (ShippingLabel,Invoice).
    document_types: str
    feed_id: str | None
    report_reference_id: str | None
    #: ``s3://bucket/key`` or ``file:///path``: the only places the dashboard serves a PDF from.
    location: str | None
    size_bytes: int | None
    sha256: str | None
    stored_at: str | None
    error_code: str | None
    error_message: str | None


@dataclass(frozen=True, slots=True)
class CommandFact:
    channel: str
    command: str
    operator: str | None


@dataclass(frozen=True, slots=True)
class DeadLetterFact:
    """A record of the order that a stage dead-lettered; ``original`` is what that record said about the
    order, when it decodes."""

    channel: str | None
    original: FactData | None = field(metadata={"original": True})
    stage: FailedStage
    source_topic: str
    source_partition: int
    source_offset: int
    #: The stage that dead-lettered it.
    processing_stage: str
    original_type: str | None
    error_type: str
    error: str
    #: The event id of the operator command dead-lettered (a dead letter of ``ops.commands``).
    command_id: str | None = field(default=None, metadata={"stored": "cid", "added": True})


FactData = (
    DownloadedFact
    | EnrichedFact
    | ImportedFact
    | UpdatedFact
    | CancelledFact
    | ImportFailedFact
    | InvoicedFact
    | ShipmentRequestedFact
    | ShipmentConfirmedFact
    | ShipmentFailedFact
    | CancellationRequestedFact
    | CancellationResultFact
    | AcknowledgementResultFact
    | EasyShipFact
    | EasyShipDocumentsFact
    | CommandFact
    | DeadLetterFact
)

#: The data class of each event type's facts.
DATA_OF_EVENT: dict[str, type[FactData]] = {
    "OrderDownloaded": DownloadedFact,
    "OrderEnriched": EnrichedFact,
    "OrderImported": ImportedFact,
    "OrderUpdated": UpdatedFact,
    "OrderCancelled": CancelledFact,
    "OrderImportFailed": ImportFailedFact,
    "InvoiceIssued": InvoicedFact,
    "ShipmentRequested": ShipmentRequestedFact,
    "ShipmentConfirmed": ShipmentConfirmedFact,
    "ShipmentFailed": ShipmentFailedFact,
    "OrderCancellationRequested": CancellationRequestedFact,
    "OrderCancellationResult": CancellationResultFact,
    "OrderAcknowledgementResult": AcknowledgementResultFact,
    "PackageScheduled": EasyShipFact,
    "PackageSchedulingFailed": EasyShipFact,
    "PackageDocumentsReady": EasyShipDocumentsFact,
    "PackageDocumentsFailed": EasyShipDocumentsFact,
    "OperatorCommandIssued": CommandFact,
    "EventDeadLettered": DeadLetterFact,
}


@dataclass(frozen=True, slots=True)
class Fact:
    """One event as it concerns one order."""

    event_id: str
    #: The envelope's occurred_at (:func:`iso`): the fold's order, never the clock.
    at: str
    topic: str
    event_type: str
    #: The envelope's marketplace.
    marketplace_id: str | None
    summary: str
    data: FactData


# --- events -> facts -------------------------------------------------------------------------------------


def _fact(topic: str, envelope: Envelope[Event], data: FactData, summary: str) -> Fact:
    return Fact(
        event_id=str(envelope.event_id),
        at=iso(envelope.occurred_at),
        topic=topic,
        event_type=envelope.event_type,
        marketplace_id=envelope.marketplace_id,
        summary=summary,
        data=data,
    )


def _snapshot(order: AmazonOrder, channel: str) -> dict[str, Any]:
    return {
        "channel": channel,
        "marketplace_id": order.marketplace_id,
        "order_status": order.order_status,
        "fulfillment_channel": order.fulfillment_channel,
        "purchase_date": iso(order.purchase_date),
        "last_update_date": iso(order.last_update_date),
        "ship_service_level": order.ship_service_level,
        "latest_ship_date": _iso_or_none(order.latest_ship_date),
    }


def _order_data(payload: Event, seller: str) -> tuple[Target, FactData, str] | None:  # noqa: PLR0911
    """The facts of the events about an order and its sales order: (the order, data, summary)."""
    if isinstance(payload, OrderDownloaded):
        order = payload.order
        downloaded = DownloadedFact(**_snapshot(order, payload.channel), found_by=payload.found_by)
        summary = f"downloaded ({order.order_status}, found by {payload.found_by})"
        return Target(order.seller_id, order.amazon_order_id), downloaded, summary
    if isinstance(payload, OrderEnriched):
        order = payload.order
        items = tuple(
            ItemFact(
                order_item_id=item.order_item_id,
                seller_sku=item.seller_sku,
                asin=item.asin,
                title=item.title,
                quantity_ordered=item.quantity_ordered,
                quantity_shipped=item.quantity_shipped,
                item_price=_money(item.item_price),
                currency=item.item_price.currency if item.item_price else None,
            )
            for item in order.items or ()
        )
        enriched = EnrichedFact(**_snapshot(order, payload.channel), items=items)
        summary = f"items fetched: {len(items)} line(s) ({order.order_status})"
        return Target(order.seller_id, order.amazon_order_id), enriched, summary
    if isinstance(payload, OrderImported):
        so = payload.sales_order
        imported = ImportedFact(
            channel=so.channel,
            sales_order_code=so.code,
            order_status=so.order_status,
            fulfillment_channel=so.fulfillment_channel,
            purchase_date=iso(so.purchase_date),
            marketplace_id=so.marketplace_id,
            shipping_method=so.shipping_method,
            currency=so.currency,
            total=_dec(so.total),
            lines=tuple(
                SalesLineFact(
                    order_item_id=line.order_item_id,
                    seller_sku=line.seller_sku,
                    asin=line.asin,
                    stock_code=line.stock_code,
                    quantity=line.quantity,
                    unit_price=_dec(line.unit_price),
                    tax=_dec(line.tax),
                    line_total=_dec(line.line_total),
                )
                for line in so.lines
            ),
            latest_ship_date=_iso_or_none(so.latest_ship_date),
        )
        return Target(so.seller_id, so.amazon_order_id), imported, f"imported as sales order {so.code}"
    if isinstance(payload, OrderUpdated):
        updated = UpdatedFact(
            channel=payload.channel,
            sales_order_code=payload.sales_order_code,
            order_status=payload.order_status,
            changed_at=iso(payload.changed_at),
            lines=tuple(
                LineStateFact(
                    order_item_id=line.order_item_id,
                    quantity_ordered=line.quantity_ordered,
                    quantity_shipped=line.quantity_shipped,
                    buyer_requested_cancel=line.buyer_requested_cancel,
                )
                for line in payload.lines
            ),
        )
        summary = f"sales order {payload.sales_order_code} updated ({payload.order_status})"
        return Target(seller, payload.amazon_order_id), updated, summary
    if isinstance(payload, OrderCancelled):
        cancelled = CancelledFact(
            channel=payload.channel,
            sales_order_code=payload.sales_order_code,
            reason=payload.reason,
            buyer_requested=payload.buyer_requested,
            cancelled_at=iso(payload.cancelled_at),
        )
        summary = f"sales order {payload.sales_order_code} cancelled: {payload.reason}"
        return Target(seller, payload.amazon_order_id), cancelled, summary
    if isinstance(payload, OrderImportFailed):
        failed = ImportFailedFact(
            channel=payload.channel, reason_code=payload.reason_code, reason=payload.reason
        )
        summary = f"import refused ({payload.reason_code}): {payload.reason}"
        return Target(seller, payload.amazon_order_id), failed, summary
    return None


def _package(package: Package) -> PackageFact:
    return PackageFact(
        carrier_code=package.carrier_code,
        carrier_name=package.carrier_name,
        shipping_method=package.shipping_method,
        tracking_number=package.tracking_number,
        ship_date=package.model_dump(mode="json")["ship_date"],
        lines=tuple(
            ShippedLineFact(
                order_item_id=line.order_item_id, seller_sku=line.seller_sku, quantity=line.quantity
            )
            for line in package.lines
        ),
    )


def _shipment_data(payload: Event, seller: str) -> tuple[Target, FactData, str] | None:  # noqa: PLR0911
    """The facts of the invoice, shipment and cancellation events: (the order, data, summary)."""
    if isinstance(payload, InvoiceIssued):
        packages = tuple(_package(package) for package in payload.packages)
        invoiced = InvoicedFact(
            invoice_number=payload.invoice_number,
            sales_order_code=payload.sales_order_code,
            packages=packages,
        )
        summary = f"invoice {payload.invoice_number} issued ({len(payload.packages)} package(s))"
        return Target(seller, payload.amazon_order_id), invoiced, summary
    if isinstance(payload, ShipmentRequested):
        requested = ShipmentRequestedFact(
            channel=payload.channel,
            package_reference_id=payload.package_reference_id,
            carrier_code=payload.carrier_code,
            carrier_name=payload.carrier_name,
            shipping_method=payload.shipping_method,
            tracking_number=payload.tracking_number,
            ship_date=iso(payload.ship_date),
            items=tuple(
                ShipmentItemFact(order_item_id=item.order_item_id, quantity=item.quantity)
                for item in payload.items
            ),
            source=payload.source,
        )
        summary = (
            f"package {payload.package_reference_id} requested: {payload.carrier_code} "
            f"{payload.tracking_number}"
        )
        return Target(seller, payload.amazon_order_id), requested, summary
    if isinstance(payload, ShipmentConfirmed):
        confirmed = ShipmentConfirmedFact(
            channel=payload.channel,
            package_reference_id=payload.package_reference_id,
            method=payload.method,
            attempts=payload.attempts,
            carrier_code=payload.carrier_code,
            tracking_number=payload.tracking_number,
            quantity=payload.quantity,
            confirmed_at=iso(payload.confirmed_at),
        )
        summary = (
            f"package {payload.package_reference_id} confirmed on Amazon ({payload.method}, "
            f"attempt {payload.attempts})"
            if payload.note is None
            else f"package {payload.package_reference_id} not sent, by Amazon's rules ({payload.method}):"
            f" {payload.note}"
        )
        return Target(seller, payload.amazon_order_id), confirmed, summary
    if isinstance(payload, ShipmentFailed):
        failed = ShipmentFailedFact(
            channel=payload.channel,
            package_reference_id=payload.package_reference_id,
            attempts=payload.attempts,
            error_code=payload.error_code,
            error_message=payload.error_message,
            carrier_code=payload.carrier_code,
            shipping_method=payload.shipping_method,
            tracking_number=payload.tracking_number,
            ship_date=iso(payload.ship_date),
            quantity=payload.quantity,
        )
        summary = (
            f"package {payload.package_reference_id} failed after {payload.attempts} attempt(s): "
            f"{payload.error_code} {payload.error_message}"
        )
        return Target(seller, payload.amazon_order_id), failed, summary
    if isinstance(payload, OrderCancellationRequested):
        asked = CancellationRequestedFact(channel=payload.channel, reason=payload.reason)
        summary = f"seller cancellation requested ({payload.reason or 'channel default reason'})"
        return Target(seller, payload.amazon_order_id), asked, summary
    if isinstance(payload, OrderCancellationResult):
        result = CancellationResultFact(
            channel=payload.channel,
            cancelled=payload.cancelled,
            reason=payload.reason,
            feed_id=payload.feed_id,
            error_code=payload.error_code,
            error_message=payload.error_message,
        )
        refused_by = "Amazon" if payload.feed_id else "ordersync, not sent"
        summary = (
            "cancellation accepted by Amazon"
            if payload.cancelled
            else f"cancellation refused by {refused_by}: {payload.error_code or ''} "
            f"{payload.error_message or payload.reason}".strip()
        )
        return Target(seller, payload.amazon_order_id), result, summary
    if isinstance(payload, PackageScheduled):
        scheduled = EasyShipFact(
            channel=payload.channel,
            slot_start=iso(payload.slot_start) if payload.slot_start else None,
            handover=payload.handover,
            scheduled_package_id=payload.scheduled_package_id,
            invoice_number=payload.invoice_number,
            error_code=None,
            error_message=None,
            slot_end=_iso_or_none(payload.slot_end),
            status=payload.status,
            tracking_id=payload.tracking_id,
            length_cm=_dec(payload.size.length_cm),
            width_cm=_dec(payload.size.width_cm),
            height_cm=_dec(payload.size.height_cm),
            weight_g=_dec(payload.size.weight_g),
            size_from=payload.size_from,
        )
        when = f" from {iso(payload.slot_start)}" if payload.slot_start else ""
        summary = (
            f"Easy Ship package {payload.scheduled_package_id or ''} scheduled for"
            f" {(payload.handover or 'handover').lower()}{when}"
            + (f", invoice {payload.invoice_number}" if payload.invoice_number else "")
        )
        return Target(seller, payload.amazon_order_id), scheduled, summary
    if isinstance(payload, PackageSchedulingFailed):
        refused = EasyShipFact(
            channel=payload.channel,
            slot_start=None,
            handover=None,
            scheduled_package_id=None,
            invoice_number=None,
            error_code=payload.error_code,
            error_message=payload.error_message,
        )
        summary = f"Easy Ship package not scheduled: {payload.error_code} {payload.error_message}"
        return Target(seller, payload.amazon_order_id), refused, summary
    if isinstance(payload, OrderAcknowledgementResult):
        acknowledged = AcknowledgementResultFact(
            channel=payload.channel,
            merchant_order_id=payload.merchant_order_id,
            acknowledged=payload.acknowledged,
            feed_id=payload.feed_id,
            error_code=payload.error_code,
            error_message=payload.error_message,
        )
        summary = (
            f"acknowledged on Amazon as {payload.merchant_order_id} (feed {payload.feed_id})"
            if payload.acknowledged
            else f"not acknowledged on Amazon: {payload.error_code or ''} "
            f"{payload.error_message or ''}".strip()
        )
        return Target(seller, payload.amazon_order_id), acknowledged, summary
    return None


def _documents_data(payload: Event, seller: str) -> tuple[Target, FactData, str] | None:
    """The facts of an Easy Ship package's documents, stored or refused: (the order, data, summary)."""
    if isinstance(payload, PackageDocumentsReady):
        ready = EasyShipDocumentsFact(
            channel=payload.channel,
            scheduled_package_id=payload.scheduled_package_id,
            document_types=",".join(payload.document_types),
            feed_id=payload.feed_id,
            report_reference_id=payload.report_reference_id,
            location=payload.location,
            size_bytes=payload.size_bytes,
            sha256=payload.sha256,
            stored_at=iso(payload.stored_at),
            error_code=None,
            error_message=None,
        )
        summary = (
            f"Easy Ship documents stored ({', '.join(payload.document_types)}, reference"
            f" {payload.report_reference_id}, {payload.size_bytes} bytes)"
        )
        return Target(seller, payload.amazon_order_id), ready, summary
    if isinstance(payload, PackageDocumentsFailed):
        failed = EasyShipDocumentsFact(
            channel=payload.channel,
            scheduled_package_id=None,
            document_types=",".join(payload.document_types),
            feed_id=payload.feed_id,
            report_reference_id=None,
            location=None,
            size_bytes=None,
            sha256=None,
            stored_at=None,
            error_code=payload.error_code,
            error_message=payload.error_message,
        )
        summary = (
            f"Easy Ship documents not made ({', '.join(payload.document_types)}): {payload.error_code}"
            f" {payload.error_message}"
        )
        return Target(seller, payload.amazon_order_id), failed, summary
    return None


def facts_of(topic: str, envelope: Envelope[Event]) -> list[tuple[Target, Fact]]:
    """The orders an event is about and the fact it adds to each (none for events about no order)."""
    payload = envelope.payload
    if isinstance(payload, OperatorCommandIssued):
        command = CommandFact(channel=payload.channel, command=payload.command, operator=payload.operator)
        fact = _fact(topic, envelope, command, f"{payload.command} by {payload.operator or 'an operator'}")
        return [(Target(envelope.seller_id, order_id), fact) for order_id in payload.amazon_order_ids]
    if isinstance(payload, EventDeadLettered):
        return _dead_letter_facts(topic, envelope, payload)
    seller = envelope.seller_id
    about = (
        _order_data(payload, seller) or _shipment_data(payload, seller) or _documents_data(payload, seller)
    )
    if about is None:
        return []
    target, data, summary = about
    return [(target, _fact(topic, envelope, data, summary))]


def _dead_letter_facts(
    topic: str, envelope: Envelope[Event], letter: EventDeadLettered
) -> list[tuple[Target, Fact]]:
    """A dead letter belongs to an order when its original record decodes to one, or else when its key
    is an order key of an order-keyed topic."""
    target: Target | None = None
    original_type: str | None = None
    original_data: FactData | None = None
    channel: str | None = None
    try:
        source = by_name(letter.source_topic)
    except KeyError:
        source = None
    if source is not None and source.name == OPS_COMMANDS.name:
        return _command_dead_letter_facts(topic, envelope, letter)
    if source is not None and source.key == "order":
        try:
            original = decode(letter.original_value(), source)
        except InvalidEvent:
            original = None
        if original is not None:
            original_type = original.event_type
            about = facts_of(source.name, original)
            if about:
                target = about[0][0]
                original_data = about[0][1].data
                channel = getattr(original_data, "channel", None)
        if target is None and letter.source_key and letter.source_key.count(":") == 1:
            seller, order_id = letter.source_key.split(":", 1)
            if seller and _looks_like_order_id(order_id):
                target = Target(seller, order_id)
    if target is None:
        return []
    data = DeadLetterFact(
        channel=channel,
        original=original_data,
        stage=DLQ_FAILED_STAGE.get(letter.source_topic, "import"),
        source_topic=letter.source_topic,
        source_partition=letter.source_partition,
        source_offset=letter.source_offset,
        processing_stage=letter.stage,
        original_type=original_type,
        error_type=letter.error_type,
        error=letter.error,
    )
    summary = f"dead-lettered by {letter.stage} ({letter.source_topic}): {letter.error}"
    return [(target, _fact(topic, envelope, data, summary))]


def _command_dead_letter_facts(
    topic: str, envelope: Envelope[Event], letter: EventDeadLettered
) -> list[tuple[Target, Fact]]:
    """A dead-lettered operator command: one fact for each order it named, so each order's command
    shows as failed with the dead letter's error."""
    try:
        original = decode(letter.original_value(), OPS_COMMANDS)
    except InvalidEvent:
        return []
    command = original.payload
    if not isinstance(command, OperatorCommandIssued):
        return []
    data = DeadLetterFact(
        channel=command.channel,
        original=None,
        stage="import",  # (not read: a command's dead letter fails the command, not the order)
        source_topic=letter.source_topic,
        source_partition=letter.source_partition,
        source_offset=letter.source_offset,
        processing_stage=letter.stage,
        original_type=original.event_type,
        error_type=letter.error_type,
        error=letter.error,
        command_id=str(original.event_id),
    )
    summary = f"{command.command} command dead-lettered by {letter.stage}: {letter.error}"
    fact = _fact(topic, envelope, data, summary)
    return [(Target(original.seller_id, order_id), fact) for order_id in command.amazon_order_ids]


def _looks_like_order_id(value: str) -> bool:
    parts = value.split("-")
    return [len(p) for p in parts] == [3, 7, 7] and all(p.isdigit() for p in parts)


# --- facts in Redis --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Plan:
    """How a data class is stored: (attribute, stored name) of its plain fields; (attribute, stored
    name, class) of its tuples of nested objects; (attribute, stored name) of a dead letter's original;
    the stored names of fields added later (left out when absent)."""

    plain: tuple[tuple[str, str], ...]
    many: tuple[tuple[str, str, type], ...]
    original: tuple[tuple[str, str], ...]
    added: frozenset[str]


_PLANS: dict[type, _Plan] = {}


def _plan(cls: type) -> _Plan:
    plan = _PLANS.get(cls)
    if plan is None:
        stored = {f.name: f.metadata.get("stored", f.name) for f in fields(cls)}
        plan = _PLANS[cls] = _Plan(
            plain=tuple(
                (f.name, stored[f.name])
                for f in fields(cls)
                if "many" not in f.metadata and "original" not in f.metadata
            ),
            many=tuple(
                (f.name, stored[f.name], f.metadata["many"]) for f in fields(cls) if "many" in f.metadata
            ),
            original=tuple((f.name, stored[f.name]) for f in fields(cls) if "original" in f.metadata),
            added=frozenset(stored[f.name] for f in fields(cls) if f.metadata.get("added")),
        )
    return plan


def _to_json(value: Any) -> dict[str, Any]:
    """A data class as its stored JSON object (every value, None too)."""
    plan = _plan(type(value))
    out = {
        stored: getattr(value, name)
        for name, stored in plan.plain
        if stored not in plan.added or getattr(value, name) is not None
    }
    for name, stored, _ in plan.many:
        inner = getattr(value, name)
        out[stored] = None if inner is None else [_to_json(v) for v in inner]
    for name, stored in plan.original:
        inner = getattr(value, name)
        out[stored] = None if inner is None else _to_json(inner)
    return out


def _from_json(cls: type, raw: Mapping[str, Any]) -> Any:
    plan = _plan(cls)
    kwargs = {name: raw.get(stored) for name, stored in plan.plain}
    for name, stored, of in plan.many:
        inner = raw.get(stored)
        kwargs[name] = None if inner is None else tuple(_from_json(of, v) for v in inner)
    for name, stored in plan.original:
        inner = raw.get(stored)
        original_class = DATA_OF_EVENT.get(raw.get("original_type") or "")
        kwargs[name] = None if inner is None or original_class is None else _from_json(original_class, inner)
    return cls(**kwargs)


def encode_fact(fact: Fact) -> str:
    """A fact as kept in Redis: its id is the hash field, and ``d`` leaves absent values out."""
    kept: dict[str, Any] = {
        "at": fact.at,
        "topic": fact.topic,
        "type": fact.event_type,
        "summary": fact.summary,
        "d": {k: v for k, v in _to_json(fact.data).items() if v is not None},
    }
    if fact.marketplace_id is not None:
        kept["mkt"] = fact.marketplace_id
    return json.dumps(kept, separators=(",", ":"), sort_keys=True)


def decode_fact(event_id: str, value: str) -> Fact:
    raw = json.loads(value)
    return Fact(
        event_id=event_id,
        at=raw["at"],
        topic=raw["topic"],
        event_type=raw["type"],
        marketplace_id=raw.get("mkt"),
        summary=raw["summary"],
        data=_from_json(DATA_OF_EVENT[raw["type"]], raw["d"]),
    )
