"""The Reports API 2021-06-30 of the simulator: reports that are made on the simulated clock, and the
order report ``GET_FLAT_FILE_ALL_ORDERS_DATA_BY_LAST_UPDATE_GENERAL`` behind a presigned document URL.

Flow, as Amazon documents it (reports_2021-06-30.json, docs "Order Reports"):

1. createReport answers 202 with a reportId; the report is IN_QUEUE, then IN_PROGRESS, then DONE
   (or CANCELLED when there is no data, FATAL when it cannot be made), over the scenario's delays
   (:class:`~ordersync.simulator.scenario.ReportProfile`; Amazon documents none).
2. getReport shows the status and, once DONE, the reportDocumentId; getReportDocument gives a
   presigned URL (valid 5 minutes, served under ``/_sim/s3/`` like feed documents) and
   ``compressionAlgorithm`` GZIP; the document is kept 30 days.

The order report holds every order of the seller whose last update lies in [dataStartTime,
dataEndTime], in every marketplace of the region whatever ``marketplaceIds`` says (the report is
regional, selling-partner-api-docs#1404), one line per item (selling-partner-api-models#544), each
order as of its latest version except the changes made in the report's lag before it was requested
(``lag_s``): such an order shows as of its previous version, or is absent if it did not exist before.
Its content is fixed when the report is requested, so later changes never leak into it.

Other report types Amazon knows are accepted and end FATAL (the simulator does not make them); a type
Amazon does not know is refused with 400, as the model's example refuses ``BAD_FEE_DISCOUNTS_REPORT``.
"""

from __future__ import annotations

import gzip
import itertools
import random
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from ordersync.simulator.clock import epoch_to_iso
from ordersync.simulator.feeds import Document
from ordersync.simulator.orders import Order, Snapshot, Version
from ordersync.simulator.render import money_amount
from ordersync.simulator.scenario import ReportProfile

ReportStatus = Literal["IN_QUEUE", "IN_PROGRESS", "DONE", "FATAL", "CANCELLED"]
REPORT_STATUSES: tuple[ReportStatus, ...] = ("CANCELLED", "DONE", "FATAL", "IN_PROGRESS", "IN_QUEUE")
FINAL_STATUSES: frozenset[str] = frozenset({"DONE", "FATAL", "CANCELLED"})

ALL_ORDERS_REPORT = "GET_FLAT_FILE_ALL_ORDERS_DATA_BY_LAST_UPDATE_GENERAL"
#: Report types the simulator makes.
MADE_REPORT_TYPES = frozenset({ALL_ORDERS_REPORT})
#: Report types Amazon knows (docs "Report Type Values", a selection) that the simulator does not make:
#: accepted, then FATAL.
OTHER_REPORT_TYPES = frozenset(
    {
        "GET_FLAT_FILE_ALL_ORDERS_DATA_BY_ORDER_DATE_GENERAL",
        "GET_XML_ALL_ORDERS_DATA_BY_LAST_UPDATE_GENERAL",
        "GET_XML_ALL_ORDERS_DATA_BY_ORDER_DATE_GENERAL",
        "GET_FLAT_FILE_ARCHIVED_ORDERS_DATA_BY_ORDER_DATE",
        "GET_FLAT_FILE_ACTIONABLE_ORDER_DATA_SHIPPING",
        "GET_FLAT_FILE_ORDER_REPORT_DATA_SHIPPING",
        "GET_FLAT_FILE_PENDING_ORDERS_DATA",
        "GET_FLAT_FILE_RETURNS_DATA_BY_RETURN_DATE",
        "GET_XML_RETURNS_DATA_BY_RETURN_DATE",
        "GET_XML_MFN_PRIME_RETURNS_REPORT",
        "GET_MERCHANT_LISTINGS_ALL_DATA",
        "GET_MERCHANT_LISTINGS_DATA",
        "GET_FLAT_FILE_OPEN_LISTINGS_DATA",
        "GET_AMAZON_FULFILLED_SHIPMENTS_DATA_GENERAL",
        "GET_AFN_INVENTORY_DATA",
        "GET_SELLER_FEEDBACK_DATA",
        "GET_V2_SETTLEMENT_REPORT_DATA_FLAT_FILE",
        "FEE_DISCOUNTS_REPORT",
    }
)
KNOWN_REPORT_TYPES = MADE_REPORT_TYPES | OTHER_REPORT_TYPES
#: The Easy Ship documents' PDFs (made by the POST_EASYSHIP_DOCUMENTS feed, not by createReport). A
#: restricted report type: getReportDocument needs a Restricted Data Token ("Easy Ship Reports").
EASYSHIP_DOCUMENTS_REPORT = "GET_EASYSHIP_DOCUMENTS"
RESTRICTED_REPORT_TYPES = frozenset({EASYSHIP_DOCUMENTS_REPORT})

#: The header of GET_FLAT_FILE_ALL_ORDERS_DATA_BY_LAST_UPDATE_GENERAL, in Amazon's order: the list of
#: Amazon's docs "Order Tracking reports attributes" (developer-docs.amazon.com/sp-api/docs/
#: order-tracking-reports-attributes). Older accounts' files also carry ``url`` after order-channel
#: (public samples, e.g. tzotopia's Fs2CsvSpec); the scenario's ``columns`` can add such variations.
ALL_ORDERS_COLUMNS: tuple[str, ...] = (
    "amazon-order-id",
    "merchant-order-id",
    "purchase-date",
    "last-updated-date",
    "order-status",
    "fulfillment-channel",
    "sales-channel",
    "order-channel",
    "ship-service-level",
    "product-name",
    "sku",
    "asin",
    "item-status",
    "quantity",
    "currency",
    "item-price",
    "item-tax",
    "shipping-price",
    "shipping-tax",
    "gift-wrap-price",
    "gift-wrap-tax",
    "item-promotion-discount",
    "ship-promotion-discount",
    "ship-city",
    "ship-state",
    "ship-postal-code",
    "ship-country",
    "promotion-ids",
    "is-business-order",
    "purchase-order-number",
    "price-designation",
)
#: Amazon documents no vocabulary for this report's statuses; these are values public samples of it
#: show (order-status Pending, Shipping, Shipped, Cancelled; item-status Unshipped, Shipped, Cancelled;
#: fulfillment-channel Amazon, Merchant). Which Orders API status becomes which is the simulator's
#: choice (Unshipped and PartiallyShipped as Shipping).
ORDER_STATUS_TEXT: dict[str, str] = {
    "PendingAvailability": "Pending",
    "Pending": "Pending",
    "Unshipped": "Shipping",
    "PartiallyShipped": "Shipping",
    "Shipped": "Shipped",
    "InvoiceUnconfirmed": "Shipped",
    "Canceled": "Cancelled",
}
FULFILLMENT_CHANNEL_TEXT = {"AFN": "Amazon", "MFN": "Merchant"}
CONTENT_TYPE = "text/tab-separated-values; charset=UTF-8"


def report_time(epoch: float) -> str:
    """The report's dates: ISO 8601 with a ``+00:00`` offset, as public samples of it show
    (``2017-06-17T08:04:21+00:00``); Amazon's docs give no format."""
    return datetime.fromtimestamp(int(epoch), UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


class DocumentStore(Protocol):
    """Where documents live and how their URLs are signed (the feed engine's store)."""

    documents: dict[str, Document]

    def presigned_path(
        self,
        doc: Document,
        method: Literal["PUT", "GET"],
        now: float,
        *,
        content_encoding: str | None = None,
    ) -> str: ...


@dataclass(eq=False)
class Report:
    """One requested report (compared by identity: its id is unique)."""

    report_id: str
    seller_id: str
    region: str
    report_type: str
    marketplace_ids: tuple[str, ...]
    options: dict[str, str]
    data_start: float
    data_end: float
    created: float
    queue_delay: float
    duration: float
    #: How far behind the report's data is: changes after ``created - lag`` are not in it.
    lag: float
    status: ReportStatus = "IN_QUEUE"
    started: float | None = None
    ended: float | None = None
    document_id: str | None = None
    #: The document's text, fixed at the request (None: a type the simulator does not make).
    content: str | None = None
    lines: int = 0
    #: Each order in the report with the last update it shows.
    orders: dict[str, float] = field(default_factory=dict)
    fatal_reason: str | None = None

    @property
    def cutoff(self) -> float:
        return self.created - self.lag

    def as_amazon(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "reportId": self.report_id,
            "reportType": self.report_type,
            "marketplaceIds": list(self.marketplace_ids),
            "dataStartTime": epoch_to_iso(self.data_start),
            "dataEndTime": epoch_to_iso(self.data_end),
            "createdTime": epoch_to_iso(self.created),
            "processingStatus": self.status,
        }
        if self.started is not None:
            body["processingStartTime"] = epoch_to_iso(self.started)
        if self.ended is not None:
            body["processingEndTime"] = epoch_to_iso(self.ended)
        if self.document_id is not None:
            body["reportDocumentId"] = self.document_id
        return body


def version_as_of(order: Order, cutoff: float) -> Version | None:
    """The order's newest version recorded by ``cutoff`` (None: the order did not exist yet)."""
    for version in reversed(order.versions):
        if version.at <= cutoff:
            return version
    return None


def _item_status(snapshot: Snapshot, index: int, quantity: int) -> str:
    if snapshot.status == "Canceled":
        return "Cancelled"
    return "Shipped" if snapshot.shipped[index] >= quantity else "Unshipped"


def _clean(value: str) -> str:
    """A value safe in a tab-separated line."""
    return value.replace("\t", " ").replace("\r", " ").replace("\n", " ")


def order_lines(order: Order, version: Version) -> list[dict[str, str]]:
    """The report's lines of one order as of ``version``: one per item."""
    snap = version.snapshot
    market = order.marketplace
    priced = snap.status not in ("Pending", "PendingAvailability")  # Amazon withholds prices then
    address = order.address
    lines: list[dict[str, str]] = []
    for index, item in enumerate(order.items):
        lines.append(
            {
                "amazon-order-id": order.order_id,
                "merchant-order-id": "",
                "purchase-date": report_time(order.created),
                "last-updated-date": report_time(version.at),
                "order-status": ORDER_STATUS_TEXT[snap.status],
                "fulfillment-channel": FULFILLMENT_CHANNEL_TEXT[order.channel],
                "sales-channel": market.sales_channel,
                "order-channel": "",
                "ship-service-level": order.ship_category,
                "product-name": item.title,
                "sku": item.sku,
                "asin": item.asin,
                "item-status": _item_status(snap, index, item.quantity),
                "quantity": str(item.quantity),
                "currency": market.currency,
                "item-price": (
                    money_amount(item.unit_price * item.quantity, market.decimals) if priced else ""
                ),
                "ship-city": address.city if address else "",
                "ship-state": address.state_or_region if address else "",
                "ship-postal-code": address.postal_code if address else "",
                "ship-country": address.country_code if address else "",
                "is-business-order": "false",
            }
        )
    return lines


def all_orders_document(
    orders: Iterable[Order],
    *,
    start: float,
    end: float,
    cutoff: float,
    oldest: float,
    columns: tuple[str, ...],
) -> tuple[str, int, dict[str, float]]:
    """The order report's text: (document, number of lines, order id -> last update shown). Orders
    are listed by last update, then id; an order placed before ``oldest`` is left out."""
    found: list[tuple[float, str, Order, Version]] = []
    for order in orders:
        if order.created < oldest:
            continue
        version = version_as_of(order, cutoff)
        if version is not None and start <= version.at <= end:
            found.append((version.at, order.order_id, order, version))
    found.sort(key=lambda entry: (entry[0], entry[1]))
    rows = ["\t".join(columns)]
    for _, _, order, version in found:
        for line in order_lines(order, version):
            rows.append("\t".join(_clean(line.get(column, "")) for column in columns))
    text = "\n".join(rows) + "\n"
    return text, len(rows) - 1, {order.order_id: float(version.at) for _, _, order, version in found}


class ReportEngine:
    """Every seller's reports and their documents (guarded by the state's lock)."""

    def __init__(self, profile: ReportProfile, seed: int, store: DocumentStore) -> None:
        self.profile = profile
        self.store = store
        self._rng = random.Random(f"{seed}/reports")
        self._ids = itertools.count(50001020000 + random.Random(f"{seed}/report-ids").randrange(1000) * 1000)
        self.reports: dict[str, Report] = {}
        #: Report document id -> its report.
        self.by_document: dict[str, Report] = {}
        self._unfinished: list[Report] = []

    def create(
        self,
        seller_id: str,
        region: str,
        report_type: str,
        *,
        marketplace_ids: tuple[str, ...],
        options: dict[str, str],
        window: tuple[float, float],
        now: float,
        orders: Iterable[Order],
    ) -> Report:
        profile = self.profile
        # Always three draws, so that one knob changes only what it governs.
        queue_delay, duration, lag = (
            low + (high - low) * self._rng.random()
            for low, high in (profile.queue_delay_s, profile.duration_s, profile.lag_s)
        )
        created = float(int(now))
        report = Report(
            report_id=str(next(self._ids)),
            seller_id=seller_id,
            region=region,
            report_type=report_type,
            marketplace_ids=marketplace_ids,
            options=options,
            data_start=window[0],
            data_end=window[1],
            created=created,
            queue_delay=queue_delay,
            duration=duration,
            lag=lag,
        )
        if report_type in MADE_REPORT_TYPES:
            report.content, report.lines, report.orders = all_orders_document(
                orders,
                start=window[0],
                end=window[1],
                cutoff=report.cutoff,
                oldest=created - profile.max_order_age_s,
                columns=profile.columns or ALL_ORDERS_COLUMNS,
            )
        self.reports[report.report_id] = report
        self._unfinished.append(report)
        return report

    def made_elsewhere(
        self, seller_id: str, region: str, report_type: str, document: Document, at: float
    ) -> Report:
        """A report document another operation made (POST_EASYSHIP_DOCUMENTS's PDFs, type
        GET_EASYSHIP_DOCUMENTS): DONE at once, fetched with getReportDocument by its document id."""
        report = Report(
            report_id=str(next(self._ids)),
            seller_id=seller_id,
            region=region,
            report_type=report_type,
            marketplace_ids=(),
            options={},
            data_start=at,
            data_end=at,
            created=at,
            queue_delay=0.0,
            duration=0.0,
            lag=0.0,
            status="DONE",
            started=at,
            ended=at,
            document_id=document.document_id,
        )
        self.reports[report.report_id] = report
        self.by_document[document.document_id] = report
        return report

    def cancel(self, report: Report, now: float) -> None:
        report.status = "CANCELLED"
        report.ended = float(int(now))
        if report in self._unfinished:
            self._unfinished.remove(report)

    def advance(self, now: float) -> None:
        """Every status change due by ``now``."""
        for report in list(self._unfinished):
            start_at = report.created + report.queue_delay
            if report.status == "IN_QUEUE" and start_at <= now:
                report.status = "IN_PROGRESS"
                report.started = float(int(start_at))
            end_at = start_at + report.duration
            if report.status == "IN_PROGRESS" and end_at <= now:
                self._finish(report, end_at)
                self._unfinished.remove(report)

    def _finish(self, report: Report, at: float) -> None:
        report.ended = float(int(at))
        if report.content is None:
            report.status = "FATAL"
            report.fatal_reason = f"The simulator does not make {report.report_type} reports."
            return
        if report.lines == 0 and self.profile.empty == "cancelled":
            report.status = "CANCELLED"  # "an automatic cancellation if there is no data to return"
            return
        # Shaped like the ids Amazon hands out (amzn1.spdoc.1..., selling-partner-api-models#2420).
        tail = f"T{secrets.token_hex(6).upper()}.{report.report_id}"
        document_id = f"amzn1.spdoc.1.4.{report.region}.{uuid.uuid4()}.{tail}"
        raw = report.content.encode()
        doc = Document(
            document_id,
            report.seller_id,
            CONTENT_TYPE,
            at,
            "report",
            gzip.compress(raw, mtime=0) if self.profile.compress else raw,
            "GZIP" if self.profile.compress else None,
            uploaded_at=at,
            expires_at=at + self.profile.document_kept_s,
        )
        self.store.documents[document_id] = doc
        self.by_document[document_id] = report
        report.document_id = document_id
        report.status = "DONE"

    def document(self, document_id: str) -> Document | None:
        return self.store.documents.get(document_id) if document_id in self.by_document else None

    # --- truth --------------------------------------------------------------------------------------

    def truth(self, report: Report, now: float, *, with_document: bool = False) -> dict[str, Any]:
        doc = self.document(report.document_id) if report.document_id else None
        body: dict[str, Any] = {
            **report.as_amazon(),
            "sellerId": report.seller_id,
            "reportOptions": report.options,
            "lag_s": report.lag,
            "cutoff": epoch_to_iso(report.cutoff),
            "lines": report.lines if report.content is not None else None,
            "orders": len(report.orders),
            "fatalReason": report.fatal_reason,
            "documentExpires": (
                epoch_to_iso(doc.expires_at) if doc is not None and doc.expires_at is not None else None
            ),
            "documentExpired": bool(doc is not None and doc.expires_at is not None and now >= doc.expires_at),
        }
        if with_document:
            body["orderVersions"] = {order_id: epoch_to_iso(at) for order_id, at in report.orders.items()}
            body["document"] = report.content
        return body
