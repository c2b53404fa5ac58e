"""Amazon's order report ``GET_FLAT_FILE_ALL_ORDERS_DATA_BY_LAST_UPDATE_GENERAL``, read for reconciliation.

The document (Reports API 2021-06-30; fetched with :meth:`SpApiClient.get_report_document
<ordersync.amazon.client.SpApiClient.get_report_document>`) is tab-separated text with a header line:
one line per item, so an order with several items spans several lines (selling-partner-api-models#544),
and no order-item id. Amazon documents its columns (docs "Order Tracking reports attributes":
amazon-order-id, merchant-order-id, purchase-date, last-updated-date, order-status, fulfillment-channel,
sales-channel, order-channel, ship-service-level, product-name, sku, asin, item-status, quantity,
currency, item-price, ... ship-city, ship-state, ship-postal-code, ship-country, promotion-ids,
is-business-order, purchase-order-number, price-designation) but files vary by account and age (older
ones carry ``url``, others ``number-of-items`` or ``cpf``): columns are found by their header name, in
any order, and the ones not read here are ignored. Dates are ISO 8601 with an offset
(``2017-06-17T08:04:21+00:00`` in public samples; Amazon's docs give no format).

Only what reconciliation needs is kept: the order's id, dates, statuses and channel, and each line's
SKU, ASIN, quantity and item status, plus the ship country. The report also holds the buyer's ship
city, state and postal code; they are personal data ordersync has no use for here, so they are never
read into a :class:`ReportOrderLine`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from ordersync.errors import Permanent

ALL_ORDERS_REPORT = "GET_FLAT_FILE_ALL_ORDERS_DATA_BY_LAST_UPDATE_GENERAL"

#: Columns without which a document cannot be reconciled.
REQUIRED_COLUMNS: tuple[str, ...] = (
    "amazon-order-id",
    "purchase-date",
    "last-updated-date",
    "order-status",
    "fulfillment-channel",
    "sku",
    "quantity",
)
#: Columns read when present (their field is None without them).
OPTIONAL_COLUMNS: tuple[str, ...] = (
    "merchant-order-id",
    "sales-channel",
    "asin",
    "item-status",
    "ship-country",
)
#: The report writes the fulfillment channel out; ordersync's events say AFN / MFN, as the Orders API does.
FULFILLMENT_CHANNELS = {"amazon": "AFN", "merchant": "MFN", "afn": "AFN", "mfn": "MFN"}


class ReportFormatError(Permanent):
    """The document is not an order report ordersync can read: a required column is missing, or a
    line does not fit the header. Asking again for the same document cannot help."""


@dataclass(frozen=True)
class ReportOrderLine:
    """One line of the order report: an order's data (the same on each of its lines) and one item's."""

    amazon_order_id: str
    merchant_order_id: str | None
    purchase_date: datetime
    last_updated: datetime
    #: The report's own words (e.g. Pending, Shipping, Shipped, Cancelled), not the Orders API's.
    order_status: str
    #: AFN or MFN (the report's Amazon / Merchant); another value is kept as written.
    fulfillment_channel: str
    sales_channel: str | None
    sku: str
    asin: str | None
    quantity: int
    item_status: str | None
    ship_country: str | None

    @classmethod
    def example(cls, **changes: Any) -> ReportOrderLine:
        """A plausible line, with ``changes`` applied: for tests and documentation."""
        when = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
        line = cls(
            amazon_order_id="111-0000000-0000001",
            merchant_order_id=None,
            purchase_date=when,
            last_updated=when,
            order_status="Shipped",
            fulfillment_channel="MFN",
            sales_channel="Amazon.com",
            sku="SKU-1",
            asin="B000000001",
            quantity=1,
            item_status="Shipped",
            ship_country="US",
        )
        return replace(line, **changes)


def _date(value: str, column: str, number: int) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ReportFormatError(f"line {number}: {column} {value[:40]!r} is not an ISO 8601 date") from None
    # Amazon writes an offset; a date without one is read as UTC, the offset it writes.
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _quantity(value: str, number: int) -> int:
    text = value.strip()
    if not text:
        return 0
    try:
        quantity = int(text)
    except ValueError:
        raise ReportFormatError(f"line {number}: quantity {text[:20]!r} is not a whole number") from None
    if quantity < 0:
        raise ReportFormatError(f"line {number}: quantity {quantity} is negative")
    return quantity


def _header(line: str) -> dict[str, int]:
    """Column name -> position (the first one of a name that appears twice)."""
    positions: dict[str, int] = {}
    for index, name in enumerate(line.split("\t")):
        positions.setdefault(name.strip().lower(), index)
    missing = [name for name in REQUIRED_COLUMNS if name not in positions]
    if missing:
        raise ReportFormatError(
            f"not an order report ({ALL_ORDERS_REPORT}): the header lacks {', '.join(missing)}"
        )
    return positions


def parse_all_orders_report(text: str) -> list[ReportOrderLine]:
    """Every line of a ``GET_FLAT_FILE_ALL_ORDERS_DATA_BY_LAST_UPDATE_GENERAL`` document (its text,
    decoded), in the document's order; :class:`ReportFormatError` for a document without the required
    columns or with a line that does not fit its header. Blank lines are skipped; a line shorter than
    the header has its last columns empty (trailing empty values may be left out)."""
    rows = text.lstrip("\ufeff").split("\n")
    header_at = next((i for i, row in enumerate(rows) if row.strip()), None)
    if header_at is None:
        raise ReportFormatError(f"not an order report ({ALL_ORDERS_REPORT}): the document is empty")
    columns = _header(rows[header_at].rstrip("\r"))
    width = max(columns.values()) + 1
    lines: list[ReportOrderLine] = []
    for number, raw in enumerate(rows[header_at + 1 :], start=header_at + 2):
        row = raw.rstrip("\r")
        if not row.strip():
            continue
        values = row.split("\t")
        if len(values) > width:
            raise ReportFormatError(f"line {number}: {len(values)} values for a header of {width} columns")

        def value(name: str, values: list[str] = values) -> str:
            index = columns.get(name)
            return values[index].strip() if index is not None and index < len(values) else ""

        def optional(name: str) -> str | None:
            return value(name) or None

        order_id = value("amazon-order-id")
        if not order_id:
            raise ReportFormatError(f"line {number}: no amazon-order-id")
        channel = value("fulfillment-channel")
        lines.append(
            ReportOrderLine(
                amazon_order_id=order_id,
                merchant_order_id=optional("merchant-order-id"),
                purchase_date=_date(value("purchase-date"), "purchase-date", number),
                last_updated=_date(value("last-updated-date"), "last-updated-date", number),
                order_status=value("order-status"),
                fulfillment_channel=FULFILLMENT_CHANNELS.get(channel.lower(), channel),
                sales_channel=optional("sales-channel"),
                sku=value("sku"),
                asin=optional("asin"),
                quantity=_quantity(value("quantity"), number),
                item_status=optional("item-status"),
                ship_country=optional("ship-country"),
            )
        )
    return lines


def latest_versions(lines: Iterable[ReportOrderLine]) -> dict[str, ReportOrderLine]:
    """One line per order: the first of its lines with its newest last-updated-date (an order's lines
    normally share it; the item fields are that line's)."""
    latest: dict[str, ReportOrderLine] = {}
    for line in lines:
        known = latest.get(line.amazon_order_id)
        if known is None or line.last_updated > known.last_updated:
            latest[line.amazon_order_id] = line
    return latest
