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
    #: Part of an order id or of a seller SKU, in any case (:meth:`ReadModel.orders` says how it is found).
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
    #: The operator commands the order received, oldest first, with their outcome: event_id, command,
    #: operator, at, outcome ("sent", "done", "failed"), reason, settled_at.
    commands: tuple[dict[str, Any], ...] = ()


CommandState = Literal["sent", "done", "failed"]


class CommandOrder(_Frozen):
    """One order of an operator command, and what became of it."""

    seller_id: str
    amazon_order_id: str
    outcome: CommandState
    reason: str | None = None
    settled_at: datetime | None = None


class CommandOutcome(_Frozen):
    """An operator command as the read model has folded it: each order's outcome, from the facts that
    followed the command (never from what was sent). ``orders`` is empty while the projection has not
    folded the command yet."""

    event_id: str
    command: str | None = None
    channel: str | None = None
    operator: str | None = None
    at: datetime | None = None
    orders: tuple[CommandOrder, ...] = ()

    def count(self, outcome: CommandState) -> int:
        return sum(1 for o in self.orders if o.outcome == outcome)

    @property
    def state(self) -> CommandState:
        """``sent`` while any order is open (or none was folded yet), else ``failed`` when any failed."""
        if not self.orders or self.count("sent"):
            return "sent"
        return "failed" if self.count("failed") else "done"

    def reasons(self) -> list[str]:
        """The distinct failure reasons, most frequent first."""
        seen: dict[str, int] = {}
        for order in self.orders:
            if order.outcome == "failed" and order.reason:
                seen[order.reason] = seen.get(order.reason, 0) + 1
        return sorted(seen, key=lambda r: -seen[r])

    def summary(self) -> str:
        """``retry-import: 0 of 8 orders imported again, 8 failed again (reason)``: counted from the
        outcomes folded, never from what was sent."""
        name = self.command or "command"
        if not self.orders:
            return f"{name}: sent, not yet seen by the pipeline"
        total = len(self.orders)
        done, failed, open_ = self.count("done"), self.count("failed"), self.count("sent")
        verb = _DONE_WORDS.get(name, "done")
        again = " again" if name.startswith("retry-") else ""
        parts = [f"{done} of {total} order{'' if total == 1 else 's'} {verb}"]
        if failed:
            reasons = self.reasons()
            why = f" ({'; '.join(reasons[:3])}{'; ...' if len(reasons) > 3 else ''})" if reasons else ""
            parts.append(f"{failed} failed{again}{why}")
        if open_:
            parts.append(f"{open_} awaiting an outcome")
        return f"{name}: " + ", ".join(parts)


_DONE_WORDS = {
    "retry-import": "imported again",
    "retry-download": "downloaded again",
    "retry-writeback": "written back again",
    "ignore": "ignored",
    "unignore": "un-ignored",
}


class StatusCounts(_Frozen):
    """Orders per overall status: in all (the grid's and the status key's numbers, ``ordersync
    status``'s total), per account, and those of no known account (rows without a channel yet, e.g.
    known only from a dead letter). The accounts and the unattributed add up to the total."""

    total: dict[OverallStatus, int]
    accounts: tuple[tuple[str, str, dict[OverallStatus, int]], ...] = ()
    unattributed: dict[OverallStatus, int] = {}


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
    #: A periodic task's schedule (:mod:`ordersync.pipeline.schedule`): every how many seconds (on the
    #: stage's clock) and its next run.
    every_s: float | None = None
    next_run: datetime | None = None
    #: The last "Synchronize now" asked of it, and by whom.
    run_requested_at: datetime | None = None
    run_requested_by: str | None = None


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
