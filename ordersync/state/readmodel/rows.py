"""What the status read model answers with, and what the grid asks it: rows, details, filters."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

OverallStatus = Literal["Pending", "Success", "Failed", "Ignored"]
SortKey = Literal["purchase_date", "updated_at", "amazon_order_id", "status"]
FailedStage = Literal["import", "write-back", "download"]

OVERALL_STATUSES: tuple[OverallStatus, ...] = ("Failed", "Pending", "Success", "Ignored")
FAILED_STAGES: tuple[FailedStage, ...] = ("download", "import", "write-back")


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
