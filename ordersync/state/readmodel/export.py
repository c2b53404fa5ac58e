"""The CSV export of the status model: what a person needs to check an order by hand in Seller Central
(the CLI's ``ordersync export failed`` and the dashboard's export)."""

from __future__ import annotations

import csv
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
            writer.writerow([spreadsheet_safe(cell) for cell in record])
            written += 1
    return written
