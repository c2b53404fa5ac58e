"""What the status read model answers with, and what the grid asks it: rows, details, filters."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

OverallStatus = Literal["Pending", "Success", "Failed", "Ignored"]
SortKey = Literal["purchase_date", "updated_at", "amazon_order_id", "status", "ship_by"]
FailedStage = Literal["import", "write-back", "download"]
#: Orders awaiting shipment whose latest ship date is near (within the lead time) or already past.
Deadline = Literal["at-risk", "overdue"]
#: What the grid shows beside an order's ship-by date.
ShipByState = Literal["at-risk", "overdue", "late"]
#: Orders by where their Easy Ship package is: ``awaiting-pickup``, packed and scheduled, still with the
#: seller (not picked up, shipped, delivered or cancelled).
EasyShipState = Literal["awaiting-pickup"]

OVERALL_STATUSES: tuple[OverallStatus, ...] = ("Failed", "Pending", "Success", "Ignored")
FAILED_STAGES: tuple[FailedStage, ...] = ("download", "import", "write-back")
DEADLINES: tuple[Deadline, ...] = ("at-risk", "overdue")
EASY_SHIP_STATES: tuple[EasyShipState, ...] = ("awaiting-pickup",)


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
    #: Awaiting shipment and the latest ship date near (``at-risk``: within the model's lead time) or
    #: past (``overdue``), as of the model's clock.
    deadline: Deadline | None = None
    easy_ship: EasyShipState | None = None


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
    #: Amazon's latest ship date: a shipment confirmed after it counts as late (rows stored before it
    #: existed read as None, like orders without one).
    ship_by: datetime | None = None
    #: Merchant-fulfilled, has a ship-by date, not cancelled or ignored, no package confirmed yet.
    awaiting_shipment: bool = False
    #: The order's first shipment confirmation sent by ordersync (confirmShipment or feed).
    confirmed_at: datetime | None = None
    #: That confirmation came after ``ship_by``: a late shipment for Amazon's Late Shipment Rate.
    confirmed_late: bool = False
    #: Its Easy Ship package is scheduled and not yet picked up, shipped, delivered or cancelled.
    awaiting_pickup: bool = False

    def ship_by_state(self, now: datetime, lead_s: float) -> ShipByState | None:
        """``late`` when confirmed late; ``overdue`` / ``at-risk`` while awaiting shipment with the
        ship-by date past / within ``lead_s`` seconds of ``now``; None otherwise."""
        if self.confirmed_late:
            return "late"
        if not self.awaiting_shipment or self.ship_by is None:
            return None
        if self.ship_by < now:
            return "overdue"
        return "at-risk" if (self.ship_by - now).total_seconds() <= lead_s else None


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
    #: The Easy Ship package: outcome (scheduled / failed), Amazon's package id, slot, handover, status,
    #: size and who gave it, invoice, tracking, the refusal; its stored documents (types, location,
    #: size, stored_at) and the documents' open refusal. None for an order not packed for Easy Ship.
    easy_ship: dict[str, Any] | None = None


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


class ShipmentTimeliness(_Frozen):
    """One seller's shipments as ordersync sees them: orders it confirmed and how many of those late
    (Amazon's Late Shipment Rate must stay under 4 %), and orders awaiting shipment near or past their
    ship-by date."""

    channel: str
    seller_id: str
    confirmed: int
    late: int
    at_risk: int = 0
    overdue: int = 0
    #: Earliest ship-by first: some of the overdue and at-risk orders' ids.
    due_order_ids: tuple[str, ...] = ()

    @property
    def late_rate(self) -> float | None:
        """late / confirmed; None before any confirmation."""
        return self.late / self.confirmed if self.confirmed else None


class DlqSize(_Frozen):
    topic: str
    records: int
    last_at: datetime | None
