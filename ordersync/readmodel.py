"""The status read model: every outcome topic folded into Redis, for the dashboard and the CLI.

The fold is a pure function of the set of events seen for an order. :meth:`ReadModel.apply` adds the
event as one compact *fact* to the order's fact hash (keyed by ``event_id``), re-derives the order's row
from all its facts ordered by the envelope's ``occurred_at`` (never the clock), and writes the row and
the index entries that changed in one check-and-set script (the order's facts only grow, so their count
is their version). Hence applying an event twice, or the same events in another order (replay,
partitions read at different speeds, several workers), gives the same model, and
``ordersync status-model rebuild`` (:mod:`ordersync.opscli`) can rebuild it from the topics.

Statuses (KCC's grid): **Ignored** when an operator ignored the order (before it was imported);
**Failed** when its latest import attempt failed, a package or a cancellation could not be written back
to Amazon, or one of its records was dead-lettered and nothing later on that track succeeded;
**Success** when imported without such a failure; **Pending** otherwise (downloaded, held as Pending).
A later success supersedes an earlier failure of the same track (Retry Import that works: Success).

Keys, under ``{prefix}:{rm}:g<generation>:`` (one hash tag, so the multi-key commands also work on a
Redis Cluster slot; :meth:`ReadModel.reset` moves to a new, empty generation in one command):
``facts:<order>`` (hash event_id -> fact), ``row:<order>`` (the derived row, JSON), sorted sets per
sort key (``z:purchase_date``, ``z:updated_at``, ``z:status``, ``z:id``: every order with score 0, so
its member order is the order-id order and ``ZRANGEBYLEX`` finds prefixes), sets per status, seller,
channel, marketplace, SKU and failed stage, DLQ record sets per topic. An order member is
``amazon_order_id|seller_id``. Grid queries intersect the sets with the sort key's sorted set into a
short-lived key (``ZINTERSTORE`` with weight 0 for the filters) and page with ``ZRANGE ... LIMIT``.
"""

from __future__ import annotations

import asyncio
import csv
import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal, TextIO, cast

import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict

from ordersync.clock import SYSTEM_CLOCK, Clock
from ordersync.errors import InvalidEvent
from ordersync.schemas.codec import decode
from ordersync.schemas.envelope import Envelope, Event
from ordersync.schemas.events import (
    EventDeadLettered,
    InvoiceIssued,
    Money,
    OperatorCommandIssued,
    OrderCancellationRequested,
    OrderCancellationResult,
    OrderCancelled,
    OrderDownloaded,
    OrderEnriched,
    OrderImported,
    OrderImportFailed,
    OrderUpdated,
    ShipmentConfirmed,
    ShipmentFailed,
    ShipmentRequested,
)
from ordersync.schemas.topics import (
    CATALOGUE,
    INVOICES_ISSUED,
    OPS_COMMANDS,
    ORDERS_CANCELLATION_REQUESTED,
    ORDERS_CANCELLATION_RESULTS,
    ORDERS_DOWNLOADED,
    ORDERS_ENRICHED,
    ORDERS_IMPORT_FAILED,
    ORDERS_IMPORTED,
    SHIPMENTS_CONFIRMED,
    SHIPMENTS_FAILED,
    SHIPMENTS_REQUESTED,
    TopicSpec,
    by_name,
)

log = logging.getLogger(__name__)

OverallStatus = Literal["Pending", "Success", "Failed", "Ignored"]
SortKey = Literal["purchase_date", "updated_at", "amazon_order_id", "status"]
FailedStage = Literal["import", "write-back", "download"]

OVERALL_STATUSES: tuple[OverallStatus, ...] = ("Failed", "Pending", "Success", "Ignored")
FAILED_STAGES: tuple[FailedStage, ...] = ("download", "import", "write-back")

#: Every topic the projection folds: the order outcome topics, operator commands, every dead-letter topic.
FOLDED_TOPICS: tuple[TopicSpec, ...] = (
    ORDERS_DOWNLOADED,
    ORDERS_ENRICHED,
    ORDERS_IMPORTED,
    ORDERS_IMPORT_FAILED,
    INVOICES_ISSUED,
    SHIPMENTS_REQUESTED,
    SHIPMENTS_CONFIRMED,
    SHIPMENTS_FAILED,
    ORDERS_CANCELLATION_REQUESTED,
    ORDERS_CANCELLATION_RESULTS,
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
}

#: The track a dead letter of each source topic fails: a later success on that track supersedes it.
DLQ_TRACK: dict[str, str] = {
    ORDERS_DOWNLOADED.name: "download",
    ORDERS_ENRICHED.name: "import",
    INVOICES_ISSUED.name: "invoice",
    SHIPMENTS_REQUESTED.name: "shipment-request",
    ORDERS_CANCELLATION_REQUESTED.name: "cancellation",
}

#: A status sorts by this rank, then by purchase date (the score is rank * _RANK_SPAN + epoch seconds).
_STATUS_RANK: dict[str, int] = {"Failed": 0, "Pending": 1, "Success": 2, "Ignored": 3}
_RANK_SPAN = 10_000_000_000
#: DLQ growth is a live alert: records dead-lettered longer ago than this (a rebuild) notify nobody.
DLQ_NOTIFY_WITHIN = timedelta(hours=24)
_TEMP_TTL_S = 300
_ITERATION_TTL_S = 3600
_WATCH_RETRIES = 50
#: Orders one model folds at once (each holds a Redis connection while it does).
_FOLD_CONCURRENCY = 32


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class OrderFilter(_Frozen):
    """What the grid shows; every field optional, all given ones must hold."""

    status: OverallStatus | None = None
    #: On the purchase date, inclusive.
    since: datetime | None = None
    #: On the purchase date, exclusive.
    until: datetime | None = None
    seller_id: str | None = None
    channel: str | None = None
    marketplace_id: str | None = None
    #: An order id (exact or prefix) or a seller SKU (exact).
    text: str | None = None
    failed_stage: FailedStage | None = None


class OrderRow(_Frozen):
    """One grid row."""

    channel: str
    seller_id: str
    amazon_order_id: str
    marketplace_id: str | None
    purchase_date: datetime | None
    updated_at: datetime
    status: OverallStatus
    download_status: str | None
    import_status: str | None
    invoice_status: str | None
    #: "confirmed", "failed", "pending", "cancelled", "cancel-pending" or None.
    writeback_status: str | None
    #: Amazon's OrderStatus.
    amazon_status: str | None
    fulfillment_channel: str | None
    sales_order_code: str | None
    error_code: str | None
    error_message: str | None
    attempts: int
    skus: tuple[str, ...]


class OrderDetail(_Frozen):
    row: OrderRow
    #: seller_sku, asin, title, stock_code, quantity ordered/shipped, prices.
    lines: tuple[dict[str, Any], ...]
    #: Package ref, carrier, method, tracking, ship date, items, status, attempts, error.
    shipments: tuple[dict[str, Any], ...]
    #: Raw errors with stage, code, message, at (superseded ones too, marked).
    errors: tuple[dict[str, Any], ...]
    #: (at, topic, event_type, summary), oldest first.
    history: tuple[dict[str, Any], ...]


class OrdersPage(_Frozen):
    rows: tuple[OrderRow, ...]
    total: int
    offset: int
    limit: int


class TaskRow(_Frozen):
    task: str
    scope: str
    last_run: datetime | None
    last_success: datetime | None
    last_result: str | None
    last_error: str | None
    last_error_at: datetime | None


class DlqSize(_Frozen):
    topic: str
    records: int
    last_at: datetime | None


# --- facts: one compact, JSON-able record per event of an order ----------------------------------------


def _iso(value: datetime) -> str:
    # Fixed width, UTC, microseconds: lexicographic order is time order.
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _money(value: Money | None) -> str | None:
    return None if value is None else str(value.amount)


def _dec(value: Decimal) -> str:
    return str(value)


@dataclass(frozen=True)
class _Target:
    """The order an event is about."""

    seller_id: str
    amazon_order_id: str

    @property
    def member(self) -> str:
        return f"{self.amazon_order_id}|{self.seller_id}"


def _fact(topic: str, envelope: Envelope[Event], data: dict[str, Any], summary: str) -> dict[str, Any]:
    return {
        "id": str(envelope.event_id),
        "at": _iso(envelope.occurred_at),
        "topic": topic,
        "type": envelope.event_type,
        "mkt": envelope.marketplace_id,
        "summary": summary,
        "d": data,
    }


def _order_snapshot(order: Any, channel: str) -> dict[str, Any]:
    return {
        "channel": channel,
        "mkt": order.marketplace_id,
        "status": order.order_status,
        "fc": order.fulfillment_channel,
        "pd": _iso(order.purchase_date),
        "lud": _iso(order.last_update_date),
        "ssl": order.ship_service_level,
    }


def facts_of(topic: str, envelope: Envelope[Event]) -> list[tuple[_Target, dict[str, Any]]]:  # noqa: PLR0911, PLR0912
    """The orders an event is about and the fact it adds to each (none for events about no order)."""
    payload = envelope.payload
    seller = envelope.seller_id
    if isinstance(payload, OrderDownloaded):
        order = payload.order
        data = {**_order_snapshot(order, payload.channel), "found_by": payload.found_by}
        summary = f"downloaded ({order.order_status}, found by {payload.found_by})"
        return [(_Target(order.seller_id, order.amazon_order_id), _fact(topic, envelope, data, summary))]
    if isinstance(payload, OrderEnriched):
        order = payload.order
        items = [
            {
                "order_item_id": item.order_item_id,
                "seller_sku": item.seller_sku,
                "asin": item.asin,
                "title": item.title,
                "quantity_ordered": item.quantity_ordered,
                "quantity_shipped": item.quantity_shipped,
                "item_price": _money(item.item_price),
                "currency": item.item_price.currency if item.item_price else None,
            }
            for item in order.items or ()
        ]
        data = {**_order_snapshot(order, payload.channel), "items": items}
        summary = f"items fetched: {len(items)} line(s) ({order.order_status})"
        return [(_Target(order.seller_id, order.amazon_order_id), _fact(topic, envelope, data, summary))]
    if isinstance(payload, OrderImported):
        so = payload.sales_order
        data = {
            "channel": so.channel,
            "code": so.code,
            "status": so.order_status,
            "fc": so.fulfillment_channel,
            "pd": _iso(so.purchase_date),
            "mkt": so.marketplace_id,
            "shipping_method": so.shipping_method,
            "currency": so.currency,
            "total": _dec(so.total),
            "lines": [
                {
                    "order_item_id": line.order_item_id,
                    "seller_sku": line.seller_sku,
                    "asin": line.asin,
                    "stock_code": line.stock_code,
                    "quantity": line.quantity,
                    "unit_price": _dec(line.unit_price),
                    "tax": _dec(line.tax),
                    "line_total": _dec(line.line_total),
                }
                for line in so.lines
            ],
        }
        summary = f"imported as sales order {so.code}"
        return [(_Target(so.seller_id, so.amazon_order_id), _fact(topic, envelope, data, summary))]
    if isinstance(payload, OrderUpdated):
        data = {
            "channel": payload.channel,
            "code": payload.sales_order_code,
            "status": payload.order_status,
            "changed_at": _iso(payload.changed_at),
            "lines": [line.model_dump() for line in payload.lines],
        }
        summary = f"sales order {payload.sales_order_code} updated ({payload.order_status})"
        return [(_Target(seller, payload.amazon_order_id), _fact(topic, envelope, data, summary))]
    if isinstance(payload, OrderCancelled):
        data = {
            "channel": payload.channel,
            "code": payload.sales_order_code,
            "reason": payload.reason,
            "buyer_requested": payload.buyer_requested,
            "cancelled_at": _iso(payload.cancelled_at),
        }
        summary = f"sales order {payload.sales_order_code} cancelled: {payload.reason}"
        return [(_Target(seller, payload.amazon_order_id), _fact(topic, envelope, data, summary))]
    if isinstance(payload, OrderImportFailed):
        data = {"channel": payload.channel, "reason_code": payload.reason_code, "reason": payload.reason}
        summary = f"import refused ({payload.reason_code}): {payload.reason}"
        return [(_Target(seller, payload.amazon_order_id), _fact(topic, envelope, data, summary))]
    if isinstance(payload, InvoiceIssued):
        data = {
            "invoice": payload.invoice_number,
            "code": payload.sales_order_code,
            "packages": [package.model_dump(mode="json") for package in payload.packages],
        }
        summary = f"invoice {payload.invoice_number} issued ({len(payload.packages)} package(s))"
        return [(_Target(seller, payload.amazon_order_id), _fact(topic, envelope, data, summary))]
    if isinstance(payload, ShipmentRequested):
        data = {
            "channel": payload.channel,
            "package": payload.package_reference_id,
            "carrier_code": payload.carrier_code,
            "carrier_name": payload.carrier_name,
            "shipping_method": payload.shipping_method,
            "tracking_number": payload.tracking_number,
            "ship_date": _iso(payload.ship_date),
            "items": [item.model_dump() for item in payload.items],
            "source": payload.source,
        }
        summary = (
            f"package {payload.package_reference_id} requested: {payload.carrier_code} "
            f"{payload.tracking_number}"
        )
        return [(_Target(seller, payload.amazon_order_id), _fact(topic, envelope, data, summary))]
    if isinstance(payload, ShipmentConfirmed):
        data = {
            "channel": payload.channel,
            "package": payload.package_reference_id,
            "method": payload.method,
            "attempts": payload.attempts,
            "carrier_code": payload.carrier_code,
            "tracking_number": payload.tracking_number,
            "quantity": payload.quantity,
            "confirmed_at": _iso(payload.confirmed_at),
        }
        summary = (
            f"package {payload.package_reference_id} confirmed on Amazon ({payload.method}, "
            f"attempt {payload.attempts})"
        )
        return [(_Target(seller, payload.amazon_order_id), _fact(topic, envelope, data, summary))]
    if isinstance(payload, ShipmentFailed):
        data = {
            "channel": payload.channel,
            "package": payload.package_reference_id,
            "attempts": payload.attempts,
            "error_code": payload.error_code,
            "error_message": payload.error_message,
            "carrier_code": payload.carrier_code,
            "shipping_method": payload.shipping_method,
            "tracking_number": payload.tracking_number,
            "ship_date": _iso(payload.ship_date),
            "quantity": payload.quantity,
        }
        summary = (
            f"package {payload.package_reference_id} failed after {payload.attempts} attempt(s): "
            f"{payload.error_code} {payload.error_message}"
        )
        return [(_Target(seller, payload.amazon_order_id), _fact(topic, envelope, data, summary))]
    if isinstance(payload, OrderCancellationRequested):
        data = {"channel": payload.channel, "reason": payload.reason}
        summary = f"seller cancellation requested ({payload.reason or 'channel default reason'})"
        return [(_Target(seller, payload.amazon_order_id), _fact(topic, envelope, data, summary))]
    if isinstance(payload, OrderCancellationResult):
        data = {
            "channel": payload.channel,
            "cancelled": payload.cancelled,
            "reason": payload.reason,
            "feed_id": payload.feed_id,
            "error_code": payload.error_code,
            "error_message": payload.error_message,
        }
        summary = (
            "cancellation accepted by Amazon"
            if payload.cancelled
            else f"cancellation refused by Amazon: {payload.error_code or ''} "
            f"{payload.error_message or payload.reason}".strip()
        )
        return [(_Target(seller, payload.amazon_order_id), _fact(topic, envelope, data, summary))]
    if isinstance(payload, OperatorCommandIssued):
        data = {"channel": payload.channel, "command": payload.command, "operator": payload.operator}
        summary = f"{payload.command} by {payload.operator or 'an operator'}"
        fact = _fact(topic, envelope, data, summary)
        return [(_Target(seller, order_id), fact) for order_id in payload.amazon_order_ids]
    if isinstance(payload, EventDeadLettered):
        return _dead_letter_facts(topic, envelope, payload)
    return []


def _dead_letter_facts(
    topic: str, envelope: Envelope[Event], letter: EventDeadLettered
) -> list[tuple[_Target, dict[str, Any]]]:
    """A dead letter belongs to an order when its original record decodes to one, or else when its key
    is an order key of an order-keyed topic."""
    target: _Target | None = None
    original_type: str | None = None
    original_data: dict[str, Any] | None = None
    channel: str | None = None
    try:
        source = by_name(letter.source_topic)
    except KeyError:
        source = None
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
                original_data = about[0][1]["d"]
                channel = original_data.get("channel")
        if target is None and letter.source_key and letter.source_key.count(":") == 1:
            seller, order_id = letter.source_key.split(":", 1)
            if seller and _looks_like_order_id(order_id):
                target = _Target(seller, order_id)
    if target is None:
        return []
    stage = DLQ_FAILED_STAGE.get(letter.source_topic, "import")
    data = {
        "channel": channel,
        "original": original_data,
        "stage": stage,
        "source_topic": letter.source_topic,
        "source_partition": letter.source_partition,
        "source_offset": letter.source_offset,
        "processing_stage": letter.stage,
        "original_type": original_type,
        "error_type": letter.error_type,
        "error": letter.error,
    }
    summary = f"dead-lettered by {letter.stage} ({letter.source_topic}): {letter.error}"
    return [(target, _fact(topic, envelope, data, summary))]


def _looks_like_order_id(value: str) -> bool:
    parts = value.split("-")
    return [len(p) for p in parts] == [3, 7, 7] and all(p.isdigit() for p in parts)


# --- the fold: facts -> row and detail -----------------------------------------------------------------


@dataclass
class _Derived:
    row: OrderRow
    failed_stages: tuple[FailedStage, ...]
    lines: list[dict[str, Any]] = field(default_factory=list)
    shipments: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)


_IMPORT_OK = {"OrderImported": "imported", "OrderUpdated": "updated", "OrderCancelled": "cancelled"}


def derive(seller_id: str, amazon_order_id: str, facts: Iterable[dict[str, Any]]) -> _Derived:  # noqa: PLR0912, PLR0915
    """The order's row and detail from its facts: a pure function of the set of facts."""
    ordered = sorted(facts, key=lambda f: (f["at"], f["id"]))
    channel = ""
    marketplace: str | None = None
    snapshot_version = ""
    amazon_status: str | None = None
    fulfillment: str | None = None
    purchase: str | None = None
    code: str | None = None
    download_status: str | None = None
    import_outcome: tuple[str, str] | None = None  # (label, at)
    import_failures = 0
    ignore_command: dict[str, Any] | None = None
    first_import_ok_at: str | None = None
    invoices: list[str] = []
    items: dict[str, dict[str, Any]] = {}
    items_version = ""
    sales_lines: dict[str, dict[str, Any]] = {}
    line_states: dict[str, dict[str, Any]] = {}
    packages: dict[str, dict[str, Any]] = {}
    shipping_method: str | None = None
    cancellation: dict[str, Any] | None = None
    #: track -> the latest outcome of that track outside packages: (at, error or None when it succeeded).
    #: A track is one thing that can fail and be retried: a later success or failure supersedes it.
    stage_last: dict[str, tuple[str, dict[str, Any] | None]] = {}
    errors: list[dict[str, Any]] = []
    history: list[dict[str, Any]] = []

    def outcome(track: str, at: str, error: dict[str, Any] | None) -> None:
        stage_last[track] = (at, error)

    for fact in ordered:
        at, kind, data = fact["at"], fact["type"], fact["d"]
        history.append({"at": at, "topic": fact["topic"], "event_type": kind, "summary": fact["summary"]})
        if data.get("channel"):
            channel = data["channel"]
        marketplace = data.get("mkt") or fact.get("mkt") or marketplace
        version = data.get("lud") or data.get("changed_at")
        if version is not None and (version, at) >= (snapshot_version, ""):
            snapshot_version = version
            amazon_status = data.get("status") or amazon_status
            fulfillment = data.get("fc") or fulfillment
        # Amazon's own listing of the order is the reference; the sales order's copy fills a gap.
        if data.get("pd") and (data.get("lud") or purchase is None):
            purchase = data["pd"]
        if data.get("code"):
            code = data["code"]
        if kind == "OrderDownloaded":
            download_status = download_status or "downloaded"
        elif kind == "OrderEnriched":
            download_status = "enriched"
            outcome("download", at, None)
            if data["lud"] >= items_version:
                items_version = data["lud"]
                items = {item["order_item_id"]: item for item in data["items"]}
        elif kind in _IMPORT_OK:
            import_outcome = (_IMPORT_OK[kind], at)
            first_import_ok_at = first_import_ok_at or at
            outcome("import", at, None)
            if kind == "OrderImported":
                sales_lines = {line["order_item_id"]: line for line in data["lines"]}
                shipping_method = data.get("shipping_method")
            elif kind == "OrderUpdated":
                line_states = {line["order_item_id"]: line for line in data["lines"]}
            else:
                amazon_status = "Canceled"
        elif kind == "OrderImportFailed":
            if data["reason_code"] == "pending_no_prices":
                import_outcome = ("held", at)
                outcome("import", at, None)
            else:
                import_failures += 1
                import_outcome = ("failed", at)
                error = {"stage": "import", "code": data["reason_code"], "message": data["reason"], "at": at}
                errors.append(error)
                outcome("import", at, error)
        elif kind == "InvoiceIssued":
            invoices.append(data["invoice"])
            outcome("invoice", at, None)
        elif kind == "ShipmentRequested":
            package = packages.setdefault(data["package"], {"package_reference_id": data["package"]})
            package.update({k: v for k, v in data.items() if k not in ("channel", "package")})
            package["status"] = "pending"
            package["requested_at"] = at
            outcome("invoice", at, None)
            outcome("shipment-request", at, None)
        elif kind == "ShipmentConfirmed":
            package = packages.setdefault(data["package"], {"package_reference_id": data["package"]})
            package.update(
                status="confirmed",
                method=data["method"],
                attempts=data["attempts"],
                carrier_code=data["carrier_code"],
                tracking_number=data["tracking_number"],
                quantity=data["quantity"],
                confirmed_at=data["confirmed_at"],
                error_code=None,
                error_message=None,
            )
            outcome("invoice", at, None)
            outcome("shipment-request", at, None)
        elif kind == "ShipmentFailed":
            package = packages.setdefault(data["package"], {"package_reference_id": data["package"]})
            package.update({k: v for k, v in data.items() if k not in ("channel", "package")})
            package.update(status="failed", failed_at=at)
            errors.append(
                {
                    "stage": "write-back",
                    "code": data["error_code"],
                    "message": data["error_message"],
                    "at": at,
                    "package_reference_id": data["package"],
                    "attempts": data["attempts"],
                }
            )
        elif kind == "OrderCancellationRequested":
            cancellation = {"status": "requested", "at": at, "reason": data.get("reason")}
        elif kind == "OrderCancellationResult":
            cancellation = {**data, "status": "accepted" if data["cancelled"] else "refused", "at": at}
            if data["cancelled"]:
                outcome("cancellation", at, None)
            else:
                error = {
                    "stage": "write-back",
                    "code": data.get("error_code") or "CancellationRefused",
                    "message": data.get("error_message") or data["reason"],
                    "at": at,
                }
                errors.append(error)
                outcome("cancellation", at, error)
        elif kind == "OperatorCommandIssued":
            if data["command"] in ("ignore", "unignore"):
                ignore_command = {"command": data["command"], "at": at}
        elif kind == "EventDeadLettered":
            # What the dead-lettered record said about the order (its items...) still describes it.
            original = data.get("original") or {}
            if original.get("pd") and purchase is None:
                purchase = original["pd"]
            if original.get("items") and original.get("lud", "") >= items_version:
                items_version = original["lud"]
                items = {item["order_item_id"]: item for item in original["items"]}
            if data.get("original_type") == "OrderEnriched":
                download_status = "enriched"  # the items were fetched; the import refused them
            error = {
                "stage": data["stage"],
                "code": data["error_type"],
                "message": data["error"],
                "at": at,
                "source_topic": data["source_topic"],
                "source_offset": data["source_offset"],
                "source_partition": data["source_partition"],
                "dead_lettered_by": data["processing_stage"],
            }
            errors.append(error)
            outcome(DLQ_TRACK.get(data["source_topic"], data["stage"]), at, error)
            if data["stage"] == "import":
                import_outcome = ("failed", at)
                import_failures += 1
            elif data["stage"] == "download":
                download_status = "failed"

    active: list[dict[str, Any]] = [error for _, error in stage_last.values() if error is not None]
    active += [
        next(e for e in reversed(errors) if e.get("package_reference_id") == package["package_reference_id"])
        for package in packages.values()
        if package.get("status") == "failed"
    ]
    active.sort(key=lambda e: e["at"])
    active_ids = {id(e) for e in active}
    for error in errors:
        error["active"] = id(error) in active_ids
    failed_stages = tuple(s for s in FAILED_STAGES if any(e["stage"] == s for e in active))

    ignored = (
        ignore_command is not None
        and ignore_command["command"] == "ignore"
        and not (first_import_ok_at is not None and first_import_ok_at < ignore_command["at"])
    )
    import_status = import_outcome[0] if import_outcome else None
    if ignored:
        status: OverallStatus = "Ignored"
        # An ignored order is nobody's work item: it leaves the failed-stage lists.
        failed_stages = ()
    elif active:
        status = "Failed"
    elif import_status in _IMPORT_OK.values():
        status = "Success"
    else:
        status = "Pending"

    package_states = [p.get("status") for p in packages.values()]
    writeback_status: str | None
    if "write-back" in failed_stages:
        writeback_status = "failed"
    elif "pending" in package_states:
        writeback_status = "pending"
    elif package_states:
        writeback_status = "confirmed"
    elif cancellation is not None:
        writeback_status = "cancelled" if cancellation["status"] == "accepted" else "cancel-pending"
    else:
        writeback_status = None
    invoice_failed = any(e["active"] and e.get("source_topic") == INVOICES_ISSUED.name for e in errors)
    invoice_status = "failed" if invoice_failed else ("invoiced" if invoices else None)

    latest_error = active[-1] if active else None
    if latest_error is not None and latest_error["stage"] == "import":
        attempts = import_failures
    elif latest_error is not None and "attempts" in latest_error:
        attempts = int(latest_error["attempts"])
    else:
        attempts = max((int(p.get("attempts") or 0) for p in packages.values()), default=0)

    lines: list[dict[str, Any]] = []
    for item_id in dict.fromkeys([*items, *sales_lines]):
        item = items.get(item_id, {})
        sales = sales_lines.get(item_id, {})
        state = line_states.get(item_id, {})
        lines.append(
            {
                "order_item_id": item_id,
                "seller_sku": item.get("seller_sku") or sales.get("seller_sku"),
                "asin": item.get("asin") or sales.get("asin"),
                "title": item.get("title"),
                "stock_code": sales.get("stock_code"),
                "quantity_ordered": state.get("quantity_ordered", item.get("quantity_ordered"))
                if item or state
                else sales.get("quantity"),
                "quantity_shipped": state.get("quantity_shipped", item.get("quantity_shipped", 0)),
                "item_price": item.get("item_price"),
                "currency": item.get("currency"),
                "unit_price": sales.get("unit_price"),
                "tax": sales.get("tax"),
                "line_total": sales.get("line_total"),
            }
        )
    skus = tuple(sorted({line["seller_sku"] for line in lines if line["seller_sku"]}))
    shipments: list[dict[str, Any]] = []
    for ref in sorted(packages, key=lambda r: (len(r), r)):
        package = dict(packages[ref])
        package.setdefault("shipping_method", shipping_method)
        if package.get("shipping_method") is None:
            package["shipping_method"] = shipping_method
        shipments.append(package)

    updated = ordered[-1]["at"] if ordered else _iso(datetime(1970, 1, 1, tzinfo=UTC))
    row = OrderRow(
        channel=channel,
        seller_id=seller_id,
        amazon_order_id=amazon_order_id,
        marketplace_id=marketplace,
        purchase_date=_parse(purchase),
        updated_at=cast(datetime, _parse(updated)),
        status=status,
        download_status=download_status,
        import_status="ignored" if ignored and import_status is None else import_status,
        invoice_status=invoice_status,
        writeback_status=writeback_status,
        amazon_status=amazon_status,
        fulfillment_channel=fulfillment,
        sales_order_code=code,
        error_code=latest_error["code"] if latest_error else None,
        error_message=latest_error["message"] if latest_error else None,
        attempts=attempts,
        skus=skus,
    )
    return _Derived(
        row=row,
        failed_stages=failed_stages,
        lines=lines,
        shipments=shipments,
        errors=errors,
        history=history,
    )


# --- the model in Redis ----------------------------------------------------------------------------------


def _epoch(value: datetime | None) -> float:
    return value.timestamp() if value is not None else 0.0


def _member(seller_id: str, amazon_order_id: str) -> str:
    return f"{amazon_order_id}|{seller_id}"


def _split_member(member: str) -> tuple[str, str]:
    order_id, seller = member.split("|", 1)
    return seller, order_id


# The fold's two scripts. Every key is under the model's {rm} hash tag, so on a Redis Cluster they all
# share one slot; the order's keys are derived from the generation inside the script.
_READ_ORDER = """
local generation = redis.call('GET', KEYS[1]) or '0'
local root = ARGV[1] .. ':g' .. generation .. ':'
local facts = redis.call('HGETALL', root .. 'facts:' .. ARGV[2])
local reply = {generation, tostring(#facts / 2), redis.call('GET', root .. 'row:' .. ARGV[2]) or '',
               redis.call('HGET', root .. 'seller-channel', ARGV[3]) or ''}
for i = 1, #facts do reply[#reply + 1] = facts[i] end
return reply
"""

# ARGV: generation, facts key, facts count read, then commands as (argument count, command, args...).
_WRITE_ORDER = """
if (redis.call('GET', KEYS[1]) or '0') ~= ARGV[1] then return 0 end
if redis.call('HLEN', ARGV[2]) ~= tonumber(ARGV[3]) then return 0 end
local i = 4
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  redis.call(unpack(ARGV, i + 1, i + n))
  i = i + n + 1
end
return 1
"""

# A page of the orders of a sorted set (KEYS[1], by rank) that are members of every set KEYS[2..]:
# ARGV offset, limit, descending (1/0), chunk.
_WALK = """
local offset, limit, chunk = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[4])
local found, skipped, position = {}, 0, 0
while #found < limit do
  local batch
  if ARGV[3] == '1' then
    batch = redis.call('ZRANGE', KEYS[1], position, position + chunk - 1, 'REV')
  else
    batch = redis.call('ZRANGE', KEYS[1], position, position + chunk - 1)
  end
  if #batch == 0 then break end
  for _, member in ipairs(batch) do
    local matches = true
    for i = 2, #KEYS do
      if redis.call('SISMEMBER', KEYS[i], member) == 0 then matches = false break end
    end
    if matches then
      if skipped < offset then skipped = skipped + 1
      else
        found[#found + 1] = member
        if #found >= limit then break end
      end
    end
  end
  position = position + chunk
end
return found
"""
#: The walk is used while it should visit at most this many orders, or the filter's size if larger.
_WALK_MIN_VISITS = 5000
_WALK_CHUNK = 2000


class _Writes:
    """Redis commands for the write script, applied atomically when the order did not change."""

    def __init__(self) -> None:
        self.commands: list[tuple[str, ...]] = []

    def add(self, *command: str) -> None:
        self.commands.append(command)

    def args(self) -> list[str]:
        flat: list[str] = []
        for command in self.commands:
            flat += [str(len(command)), *command]
        return flat


class _Space:
    """The keys of one generation of the model (a reset starts a new, empty generation at once)."""

    def __init__(self, base: str, generation: str) -> None:
        self.root = f"{base}:g{generation}"

    def __call__(self, *parts: str) -> str:
        return ":".join((self.root, *parts))

    def sort(self, sort: SortKey) -> str:
        return self("z", "id" if sort == "amazon_order_id" else sort)

    def index_sets(self, row: OrderRow, failed_stages: Iterable[str]) -> set[str]:
        keys = {
            self("s", "status", row.status),
            self("s", "seller", row.seller_id),
            self("s", "channel", row.channel),
            self("s", "mkt", row.marketplace_id or ""),
        }
        keys.update(self("s", "sku", sku) for sku in row.skus)
        keys.update(self("s", "failed", stage) for stage in failed_stages)
        return keys


def _scores(row: OrderRow) -> dict[str, float]:
    purchase = _epoch(row.purchase_date)
    return {
        "purchase_date": purchase,
        "updated_at": _epoch(row.updated_at),
        "status": _STATUS_RANK[row.status] * _RANK_SPAN + purchase,
        "id": 0.0,
    }


def _stored_fact(fact: dict[str, Any]) -> str:
    """A fact as kept in Redis: its id is the hash field, and absent values are left out."""
    kept = {k: v for k, v in fact.items() if v is not None and k != "id"}
    kept["d"] = {k: v for k, v in fact["d"].items() if v is not None}
    return json.dumps(kept, separators=(",", ":"), sort_keys=True)


def _loaded_facts(raw: dict[str, str]) -> list[dict[str, Any]]:
    facts = []
    for event_id, value in raw.items():
        fact = json.loads(value)
        fact["id"] = event_id
        facts.append(fact)
    return facts


class ReadModel:
    """The read model of one key prefix (``settings.redis.key_prefix``).

    Its keys live under ``{prefix}:{rm}:g<generation>:``; :meth:`reset` moves to the next generation in
    one command (every fold in flight notices and retries there), then deletes the old one.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        prefix: str = "os",
        *,
        notify_dlq: bool = True,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        """``clock``: what "live" is measured against for dead-letter notifications."""
        self.redis = redis
        self.prefix = prefix
        self.clock = clock
        self.base = f"{prefix}:{{rm}}"
        #: Tell the health board when a dead-letter topic grows (the live projection does).
        self.notify_dlq = notify_dlq
        self._generation_key = f"{self.base}:generation"
        # Folds of one order in this process wait for each other rather than collide on WATCH.
        self._order_locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}
        self._concurrency = asyncio.Semaphore(_FOLD_CONCURRENCY)
        self._read_order = redis.register_script(_READ_ORDER)
        self._write_order = redis.register_script(_WRITE_ORDER)
        self._walk_script = redis.register_script(_WALK)

    async def _space(self, client: Any = None) -> _Space:
        generation = await (client or self.redis).get(self._generation_key)
        return _Space(self.base, str(generation or 0))

    # --- the fold -----------------------------------------------------------------------------------

    async def apply(self, topic: str, envelope: Envelope[Event]) -> None:
        """Fold one event (idempotent: the same event again changes nothing)."""
        await self.apply_many([(topic, envelope)])

    async def apply_many(self, events: Iterable[tuple[str, Envelope[Event]]]) -> None:
        """Fold several events, those of one order in one transaction (a rebuild's batches)."""
        by_order: dict[_Target, dict[str, str]] = {}
        for topic, envelope in events:
            if isinstance(envelope.payload, EventDeadLettered):
                await self._count_dead_letter(topic, envelope, envelope.payload)
            for target, fact in facts_of(topic, envelope):
                by_order.setdefault(target, {})[fact["id"]] = _stored_fact(fact)
        if len(by_order) == 1:
            ((target, facts),) = by_order.items()
            await self._apply_facts(target, facts)
            return
        await asyncio.gather(*(self._apply_facts(target, facts) for target, facts in by_order.items()))

    async def _apply_facts(self, target: _Target, new_facts: dict[str, str]) -> None:
        member = target.member
        lock, users = self._order_locks.setdefault(member, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock, self._concurrency:
                await self._fold_order(target, new_facts)
        finally:
            users[0] -= 1
            if not users[0]:
                del self._order_locks[member]

    async def _fold_order(self, target: _Target, new_facts: dict[str, str]) -> None:
        """Read the order's facts, derive its row, write both if nothing changed meanwhile.

        Two round trips, each one script. The check-and-set needs no version key: an order's facts only
        ever grow (an event id always maps to the same fact), so their count is their version."""
        member = target.member
        for _ in range(_WATCH_RETRIES):
            state = cast(
                list[str],
                await self._read_order(
                    keys=[self._generation_key], args=[self.base, member, target.seller_id]
                ),
            )
            # (The seller's channel, 4th, is not used: an order's row comes from its own facts only, or
            # the model would depend on the order records are folded in.)
            generation, facts_count, old_raw = state[:3]
            space = _Space(self.base, generation or "0")
            raw_facts = dict(zip(state[4::2], state[5::2], strict=True))
            added = {k: v for k, v in new_facts.items() if raw_facts.get(k) != v}
            raw_facts.update(added)
            derived = derive(target.seller_id, target.amazon_order_id, _loaded_facts(raw_facts))
            writes = _Writes()
            if added:
                writes.add("HSET", space("facts", member), *(x for pair in added.items() for x in pair))
            self._write_row(writes, space, member, derived, old_raw or None)
            if not writes.commands:
                return
            done = await self._write_order(
                keys=[self._generation_key],
                args=[generation or "0", space("facts", member), facts_count, *writes.args()],
            )
            if done:
                return
        raise RuntimeError(f"read model: order {member} kept changing under {_WATCH_RETRIES} attempts")

    def _write_row(
        self,
        writes: _Writes,
        space: _Space,
        member: str,
        derived: _Derived,
        old_raw: str | None,
    ) -> None:
        """Write the row and the index entries that changed (all of them for a new row)."""
        row = derived.row
        encoded = json.dumps(
            {"row": row.model_dump(mode="json"), "failed_stages": list(derived.failed_stages)},
            separators=(",", ":"),
        )
        if encoded == old_raw:
            return
        new_sets = space.index_sets(row, derived.failed_stages)
        new_scores = _scores(row)
        old_sets: set[str] = set()
        old_scores: dict[str, float] = {}
        old_row: OrderRow | None = None
        if old_raw:
            old = json.loads(old_raw)
            old_row = OrderRow.model_validate(old["row"])
            old_sets = space.index_sets(old_row, old["failed_stages"])
            old_scores = _scores(old_row)
        for key in sorted(old_sets - new_sets):
            writes.add("SREM", key, member)
        for key in sorted(new_sets - old_sets):
            writes.add("SADD", key, member)
        for name, score in new_scores.items():
            if old_scores.get(name) != score:
                writes.add("ZADD", space("z", name), repr(score), member)
        writes.add("SET", space("row", member), encoded)
        if row.channel and (old_row is None or old_row.channel != row.channel):
            writes.add("SADD", space("sellers"), f"{row.channel}|{row.seller_id}")
            writes.add("HSET", space("seller-channel"), row.seller_id, row.channel)

    async def _count_dead_letter(
        self, topic: str, envelope: Envelope[Event], letter: EventDeadLettered
    ) -> None:
        space = await self._space()
        pipe = self.redis.pipeline(transaction=True)
        pipe.sadd(space("dlq", topic), str(envelope.event_id))
        pipe.zadd(space("dlq-last"), {topic: envelope.occurred_at.timestamp()}, gt=True)
        added, _ = await pipe.execute()
        if not added or not self.notify_dlq:
            return
        if self.clock.now() - envelope.occurred_at > DLQ_NOTIFY_WITHIN:
            return
        try:
            from ordersync.health import HealthBoard  # noqa: PLC0415 - optional until H2's part lands
        except ImportError:  # pragma: no cover - health board not installed
            return
        hour = envelope.occurred_at.astimezone(UTC).strftime("%Y-%m-%dT%H")
        try:
            await HealthBoard(self.redis, self.prefix).notify(
                "dlq-growth",
                f"{topic} received dead letters (latest from {letter.stage}: {letter.error})"[:500],
                severity="warning",
                dedupe_key=f"dlq-growth:{topic}:{hour}",
                at=envelope.occurred_at,
            )
        except Exception:  # a notification must never stop the fold
            log.exception("could not notify DLQ growth of %s", topic)

    async def count_skipped(self, topic: str, partition: int, offset: int) -> None:
        """Record an undecodable record the projection skipped (counted once per position)."""
        space = await self._space()
        await self.redis.sadd(space("skipped", topic), f"{partition}:{offset}")

    async def skipped(self) -> dict[str, int]:
        """Records per topic the projection skipped because they are not valid events."""
        space = await self._space()
        pipe = self.redis.pipeline(transaction=False)
        for spec in FOLDED_TOPICS:
            pipe.scard(space("skipped", spec.name))
        results = await pipe.execute()
        return {spec.name: int(n) for spec, n in zip(FOLDED_TOPICS, results, strict=True) if n}

    # --- queries ------------------------------------------------------------------------------------

    async def _materialize(
        self,
        space: _Space,
        filter: OrderFilter,
        sort: SortKey,
        *,
        snapshot: bool = False,
        ttl_s: int = _TEMP_TTL_S,
    ) -> tuple[str, tuple[float, str] | None, list[str]]:
        """The sorted set holding the filter's orders scored by ``sort``; the score range still to apply
        (purchase-date bounds when sorting by purchase date) and the temporary keys to drop. With
        ``snapshot`` the result is always a copy, so paging through it is stable while orders change."""
        temps: list[str] = []

        def temp() -> str:
            name = space("tmp", uuid.uuid4().hex)
            temps.append(name)
            return name

        filters: list[str] = []
        if filter.status:
            filters.append(space("s", "status", filter.status))
        if filter.seller_id:
            filters.append(space("s", "seller", filter.seller_id))
        if filter.channel:
            filters.append(space("s", "channel", filter.channel))
        if filter.marketplace_id:
            filters.append(space("s", "mkt", filter.marketplace_id))
        if filter.failed_stage:
            filters.append(space("s", "failed", filter.failed_stage))
        pipe = self.redis.pipeline(transaction=False)
        text = (filter.text or "").strip()
        if text:
            by_id, by_text = temp(), temp()
            # Order ids are digits and dashes: "~" sorts after all of them, closing the prefix range.
            pipe.zrangestore(by_id, space("z", "id"), f"[{text}", f"[{text}~", bylex=True)
            pipe.zunionstore(by_text, {by_id: 0, space("s", "sku", text): 0})
            filters.append(by_text)
        score_range: tuple[float, str] | None = None
        low = _epoch(filter.since) if filter.since else float("-inf")
        high = f"({_epoch(filter.until)}" if filter.until else "+inf"
        if filter.since or filter.until:
            if sort == "purchase_date":
                score_range = (low, high)
            else:
                by_date = temp()
                pipe.zrangestore(by_date, space("z", "purchase_date"), low, high, byscore=True)
                filters.append(by_date)
        source = space.sort(sort)
        if filters or snapshot:
            result = temp()
            pipe.zinterstore(result, {source: 1, **dict.fromkeys(filters, 0)})
            source = result
        for name in temps:
            pipe.expire(name, ttl_s)
        if len(pipe):
            await pipe.execute()
        return source, score_range, temps

    async def orders(
        self,
        filter: OrderFilter,
        *,
        sort: SortKey = "purchase_date",
        descending: bool = True,
        offset: int = 0,
        limit: int = 50,
    ) -> OrdersPage:
        """One page of the grid, with the exact number of orders the filter matches."""
        offset, limit = max(0, offset), max(0, limit)
        space = await self._space()
        walked = await self._walk(space, filter, sort=sort, descending=descending, offset=offset, limit=limit)
        if walked is not None:
            members, total = walked
            rows = await self._rows(space, members)
            return OrdersPage(rows=tuple(rows), total=total, offset=offset, limit=limit)
        source, score_range, temps = await self._materialize(space, filter, sort)
        try:
            members, total = await self._page(source, score_range, descending, offset, limit)
        finally:
            if temps:
                await self.redis.delete(*temps)
        rows = await self._rows(space, members)
        return OrdersPage(rows=tuple(rows), total=total, offset=offset, limit=limit)

    async def _walk(
        self, space: _Space, filter: OrderFilter, *, sort: SortKey, descending: bool, offset: int, limit: int
    ) -> tuple[list[str], int] | None:
        """A page of a filter made of sets only, without building the intersection: count with
        ``SINTERCARD`` and walk the sort key's sorted set until the page is full. Chosen when the walk is
        expected to visit fewer orders than the intersection holds (a broad filter, the first pages);
        None when the intersection is cheaper."""
        if filter.text or filter.since or filter.until:
            return None
        sets: list[Any] = [
            space("s", kind, value)
            for kind, value in (
                ("status", filter.status),
                ("seller", filter.seller_id),
                ("channel", filter.channel),
                ("mkt", filter.marketplace_id),
                ("failed", filter.failed_stage),
            )
            if value
        ]
        if not sets:
            return None
        pipe = self.redis.pipeline(transaction=False)
        pipe.sintercard(len(sets), sets)
        pipe.zcard(space.sort(sort))
        total, everything = (int(n) for n in await pipe.execute())
        if not total or not limit or offset >= total:
            return [], total
        expected_visits = (offset + limit) * everything / total
        if expected_visits > max(total, _WALK_MIN_VISITS):
            return None
        chunk = min(_WALK_CHUNK, int(expected_visits) + 16)
        members = await self._walk_script(
            keys=[space.sort(sort), *sets], args=[offset, limit, 1 if descending else 0, chunk]
        )
        return cast(list[str], members), total

    async def _page(
        self,
        source: str,
        score_range: tuple[float, str] | None,
        descending: bool,
        offset: int,
        limit: int,
    ) -> tuple[list[str], int]:
        pipe = self.redis.pipeline(transaction=True)
        if score_range is None:
            pipe.zcard(source)
            if limit:
                pipe.zrange(source, offset, offset + limit - 1, desc=descending)
        else:
            low, high = score_range
            pipe.zcount(source, low, high)
            if limit:
                start, end = (high, low) if descending else (low, high)
                pipe.zrange(source, start, end, desc=descending, byscore=True, offset=offset, num=limit)
        results = await pipe.execute()
        total = int(results[0])
        members = cast(list[str], results[1]) if limit else []
        return members, total

    async def _rows(self, space: _Space, members: list[str]) -> list[OrderRow]:
        if not members:
            return []
        raws = cast(list[str | None], await self.redis.mget([space("row", m) for m in members]))
        return [OrderRow.model_validate(json.loads(raw)["row"]) for raw in raws if raw]

    async def order(self, seller_id: str, amazon_order_id: str) -> OrderDetail | None:
        """One order with its lines, packages, errors and history; None when never seen."""
        return await self._order(await self._space(), _member(seller_id, amazon_order_id))

    async def _order(self, space: _Space, member: str) -> OrderDetail | None:
        seller_id, amazon_order_id = _split_member(member)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hgetall(space("facts", member))
        pipe.get(space("row", member))
        raw_facts, raw_row = await pipe.execute()
        if not raw_facts or not raw_row:
            return None
        derived = derive(seller_id, amazon_order_id, _loaded_facts(raw_facts))
        row = OrderRow.model_validate(json.loads(raw_row)["row"])
        return OrderDetail(
            row=row,
            lines=tuple(derived.lines),
            shipments=tuple(derived.shipments),
            errors=tuple(derived.errors),
            history=tuple(derived.history),
        )

    async def find(self, amazon_order_id: str, channel: str | None = None) -> list[OrderDetail]:
        """Every order with this id (one per seller, normally one), optionally of one channel."""
        space = await self._space()
        members = cast(
            list[str],
            await self.redis.zrangebylex(
                space("z", "id"), f"[{amazon_order_id}|", f"[{amazon_order_id}|\x7f"
            ),
        )
        found: list[OrderDetail] = []
        for member in members:
            detail = await self._order(space, member)
            if detail is not None and (channel is None or detail.row.channel == channel):
                found.append(detail)
        return found

    async def iter_orders(self, filter: OrderFilter, *, batch: int = 500) -> AsyncIterator[OrderDetail]:
        """Every order the filter matches, oldest purchase first, with its detail."""
        space = await self._space()
        # A snapshot that outlives a slow reader (a CSV download paced by the client).
        source, score_range, temps = await self._materialize(
            space, filter, "purchase_date", snapshot=True, ttl_s=_ITERATION_TTL_S
        )
        try:
            offset = 0
            while True:
                await self.redis.expire(source, _ITERATION_TTL_S)
                members, _ = await self._page(source, score_range, False, offset, batch)
                for member in members:
                    detail = await self._order(space, member)
                    if detail is not None:
                        yield detail
                if len(members) < batch:
                    return
                offset += batch
        finally:
            if temps:
                await self.redis.delete(*temps)

    async def counts(self, channel: str | None = None) -> dict[OverallStatus, int]:
        """Orders per overall status (of one channel, or of all)."""
        space = await self._space()
        pipe = self.redis.pipeline(transaction=False)
        for status in OVERALL_STATUSES:
            if channel is None:
                pipe.scard(space("s", "status", status))
            else:
                pipe.sintercard(2, [space("s", "status", status), space("s", "channel", channel)])
        results = await pipe.execute()
        return {status: int(n) for status, n in zip(OVERALL_STATUSES, results, strict=True)}

    async def dlq_sizes(self) -> list[DlqSize]:
        """Dead letters per DLQ topic the projection has read (all of them, replayed or not)."""
        space = await self._space()
        topics = [spec.name for spec in CATALOGUE if spec.name.endswith(".dlq")]
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrange(space("dlq-last"), 0, -1, withscores=True)
        for topic in topics:
            pipe.scard(space("dlq", topic))
        results = await pipe.execute()
        last = dict(cast(list[tuple[str, float]], results[0]))
        sizes: list[DlqSize] = []
        for topic, count in zip(topics, results[1:], strict=True):
            at = last.get(topic)
            sizes.append(
                DlqSize(
                    topic=topic,
                    records=int(count),
                    last_at=datetime.fromtimestamp(at, UTC) if at is not None else None,
                )
            )
        return sizes

    async def tasks(self) -> list[TaskRow]:
        """Task health recorded by the stages (:meth:`ordersync.store.Store.record_task`)."""
        from ordersync.store import Store  # noqa: PLC0415 - avoids an import cycle through settings

        store = Store(self.redis, self.prefix)
        members = sorted(cast(set[str], await self.redis.smembers(store.key("tasks"))))
        rows: list[TaskRow] = []
        for member in members:
            task, scope = json.loads(member)
            fields = await store.task(task, scope)
            if not fields:
                continue
            rows.append(
                TaskRow(
                    task=task,
                    scope=scope,
                    last_run=_parse(fields.get("last_run")),
                    last_success=_parse(fields.get("last_success")),
                    last_result=fields.get("last_result"),
                    last_error=fields.get("last_error"),
                    last_error_at=_parse(fields.get("last_error_at")),
                )
            )
        return rows

    async def sellers(self) -> list[tuple[str, str]]:
        """(channel, seller_id) of every account the model has seen."""
        space = await self._space()
        members = cast(set[str], await self.redis.smembers(space("sellers")))
        return sorted(cast(tuple[str, str], tuple(m.split("|", 1))) for m in members)

    async def reset(self) -> None:
        """Drop the whole model (before a rebuild); task health and other state are not touched.

        The next generation starts empty at once; the old one's keys are deleted afterwards."""
        old = await self._space()
        await self.redis.incr(self._generation_key)
        batch: list[str] = []
        async for name in self.redis.scan_iter(match=f"{old.root}:*", count=1000):
            batch.append(name)
            if len(batch) >= 1000:
                await self.redis.unlink(*batch)
                batch = []
        if batch:
            await self.redis.unlink(*batch)


# --- CSV: what a person needs to check by hand in Seller Central -----------------------------------------

_CSV_HEADER = [
    "channel",
    "seller_id",
    "marketplace_id",
    "amazon_order_id",
    "purchase_date",
    "status",
    "failed_stage",
    "sales_order_code",
    "package_reference_id",
    "seller_skus",
    "quantities",
    "carrier",
    "shipping_method",
    "tracking_number",
    "ship_date",
    "attempts",
    "error_code",
    "error_message",
    "failed_at",
]


def failed_orders_csv_header() -> list[str]:
    return list(_CSV_HEADER)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return _iso(value)
    return str(value)


def order_csv_rows(detail: OrderDetail) -> list[list[str]]:
    """One row per failed package, one per other active failure, or one for an order with none."""
    row = detail.row
    sku_of = {line["order_item_id"]: line.get("seller_sku") or line.get("asin") for line in detail.lines}

    def base(stage: str) -> dict[str, str]:
        return {
            "channel": row.channel,
            "seller_id": row.seller_id,
            "marketplace_id": _text(row.marketplace_id),
            "amazon_order_id": row.amazon_order_id,
            "purchase_date": _text(row.purchase_date),
            "status": row.status,
            "failed_stage": stage,
            "sales_order_code": _text(row.sales_order_code),
        }

    out: list[dict[str, str]] = []
    packages = {p["package_reference_id"]: p for p in detail.shipments}
    for error in detail.errors:
        if not error.get("active"):
            continue
        record = base(error["stage"])
        record.update(
            error_code=_text(error.get("code")),
            error_message=_text(error.get("message")),
            failed_at=_text(error.get("at")),
            attempts=_text(error.get("attempts", row.attempts)),
        )
        package = packages.get(error.get("package_reference_id") or "")
        if package is not None:
            items = package.get("items") or []
            skus = [_text(sku_of.get(i["order_item_id"], i["order_item_id"])) for i in items]
            if items:
                quantities = "; ".join(f"{sku} x{i['quantity']}" for sku, i in zip(skus, items, strict=True))
            else:
                quantities = _text(package.get("quantity"))
                skus = list(row.skus)
            carrier = _text(package.get("carrier_code"))
            if package.get("carrier_name") and package.get("carrier_name") != carrier:
                carrier = f"{carrier} ({package['carrier_name']})"
            record.update(
                package_reference_id=_text(package["package_reference_id"]),
                seller_skus=" ".join(skus),
                quantities=quantities,
                carrier=carrier,
                shipping_method=_text(package.get("shipping_method")),
                tracking_number=_text(package.get("tracking_number")),
                ship_date=_text(package.get("ship_date")),
                attempts=_text(package.get("attempts")),
            )
        else:
            record.update(
                seller_skus=" ".join(row.skus),
                quantities="; ".join(
                    f"{line.get('seller_sku') or line.get('asin')} x{line.get('quantity_ordered')}"
                    for line in detail.lines
                ),
            )
        out.append(record)
    if not out:
        record = base("")
        record.update(
            seller_skus=" ".join(row.skus),
            quantities="; ".join(
                f"{line.get('seller_sku') or line.get('asin')} x{line.get('quantity_ordered')}"
                for line in detail.lines
            ),
            attempts=str(row.attempts),
            error_code=_text(row.error_code),
            error_message=_text(row.error_message),
        )
        out.append(record)
    return [[record.get(column, "") for column in _CSV_HEADER] for record in out]


async def write_orders_csv(model: ReadModel, filter: OrderFilter, out: TextIO) -> int:
    """The filter's orders as CSV (header first); returns the rows written (header excluded)."""
    writer = csv.writer(out)
    writer.writerow(failed_orders_csv_header())
    written = 0
    async for detail in model.iter_orders(filter):
        for record in order_csv_rows(detail):
            if filter.failed_stage and record[_CSV_HEADER.index("failed_stage")] not in (
                filter.failed_stage,
            ):
                continue
            writer.writerow(record)
            written += 1
    return written
