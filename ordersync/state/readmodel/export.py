"""The CSV export of the status model: what a person needs to check an order by hand in Seller Central
(the CLI's ``ordersync export failed`` and the dashboard's export)."""

from __future__ import annotations

import csv
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, TextIO

from ordersync.state.readmodel.facts import iso
from ordersync.state.readmodel.rows import OrderDetail, OrderFilter

if TYPE_CHECKING:
    from ordersync.state.readmodel.model import ReadModel

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
        return iso(value)
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


#: A cell starting with one of these is a formula to a spreadsheet (OWASP, "CSV Injection").
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(cell: str) -> str:
    """``cell`` as a spreadsheet shows it but never runs it: SKUs, tracking numbers and Amazon's
    messages come from outside, so one starting like a formula gets a leading apostrophe (OWASP's rule)."""
    return "'" + cell if cell.startswith(_FORMULA_STARTS) else cell


#: The columns a permitted reader's export adds: the buyer's data as its sales order holds it, opened,
#: and whether it could be (open, expired, erased, none, not imported).
PERSONAL_CSV_HEADER = [
    "buyer_name",
    "buyer_email",
    "ship_to_name",
    "ship_to_line1",
    "ship_to_line2",
    "ship_to_line3",
    "ship_to_postal_code",
    "ship_to_phone",
    "personal_data",
]
_PERSONAL_SOURCES = (
    "buyer_name",
    "buyer_email",
    *(f"address.{name}" for name in ("name", "line1", "line2", "line3", "postal_code", "phone")),
)

#: Opens one order's personal data (seller id, order id) -> (state, fields by personal_fields' names).
PersonalOpener = Callable[[str, str], Awaitable[tuple[str, Mapping[str, str]]]]


async def write_orders_csv(
    model: ReadModel, filter: OrderFilter, out: TextIO, personal: PersonalOpener | None = None
) -> int:
    """The filter's orders as CSV (header first); returns the rows written (header excluded). With
    ``personal`` (only for a reader allowed it), each row also carries the buyer's data it opens."""
    writer = csv.writer(out)
    writer.writerow(failed_orders_csv_header() + (PERSONAL_CSV_HEADER if personal else []))
    written = 0
    async for detail in model.iter_orders(filter):
        extra: list[str] = []
        if personal is not None:
            state, fields = await personal(detail.row.seller_id, detail.row.amazon_order_id)
            extra = [fields.get(name, "") for name in _PERSONAL_SOURCES] + [state]
        for record in order_csv_rows(detail):
            if filter.failed_stage and record[_CSV_HEADER.index("failed_stage")] not in (
                filter.failed_stage,
            ):
                continue
            writer.writerow([spreadsheet_safe(cell) for cell in record + extra])
            written += 1
    return written
