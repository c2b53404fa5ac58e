"""The fold: an order's row and detail from its facts, a pure function of the set of facts.

The facts are applied oldest first (by ``occurred_at``, then event id) to an :class:`OrderState`, each
by the reducer of its event type; :func:`derive` then reads the row and the detail off the state.

Statuses (the dashboard grid's): **Ignored** when an operator ignored the order (before it was imported);
**Failed** when its latest import attempt failed, a package or a cancellation could not be written back
to Amazon, its Easy Ship package could not be scheduled or its documents were not made, or one of its
records was dead-lettered and nothing later on that track succeeded;
**Success** when imported without such a failure; **Pending** otherwise (downloaded, held as Pending).
A later success supersedes an earlier failure of the same track (Retry Import that works: Success).

Cancelled on Amazon: an order Amazon shows Canceled (or whose cancellation it accepted) that reached the
write-back track (invoiced, a package requested, or a write-back failure) and has no package confirmed
ends there: its write-back failures are settled (no longer active, so it leaves Failed and the "confirm
by hand" export) and its write-back status is ``cancelled-on-amazon``, a final outcome.

Operator commands: each command an order received is listed with its outcome as the facts after it tell:
``sent`` until the stage that owns it reports, then ``done`` or ``failed`` with the reason (the next
outcome of the command's track: Retry Import's import, Retry Download's download, Retry Write-back's
write-back; Ignore is refused for an order imported before it; a command dead-lettered on
``ops.commands`` failed with the dead letter's error).

Deadlines: the row carries Amazon's latest ship date (``ship_by``), whether the order still awaits
shipment (merchant-fulfilled, not cancelled or ignored, no package confirmed by any method), and whether
ordersync's first confirmation of it (confirmShipment or feed: the methods whose time ordersync knows)
came after ``ship_by`` (``confirmed_late``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from ordersync.schemas.topics import INVOICES_ISSUED, OPS_COMMANDS
from ordersync.state.readmodel.facts import (
    DLQ_TRACK,
    AcknowledgementResultFact,
    CancellationRequestedFact,
    CancellationResultFact,
    CancelledFact,
    CommandFact,
    DeadLetterFact,
    DownloadedFact,
    EasyShipDocumentsFact,
    EasyShipFact,
    EnrichedFact,
    Fact,
    ImportedFact,
    ImportFailedFact,
    InvoicedFact,
    ItemFact,
    LineStateFact,
    OrderSnapshotFact,
    SalesLineFact,
    ShipmentConfirmedFact,
    ShipmentFailedFact,
    ShipmentRequestedFact,
    UpdatedFact,
    iso,
    parse_iso,
)
from ordersync.state.readmodel.rows import FAILED_STAGES, FailedStage, OrderRow, OverallStatus

#: What a successful import-track event makes of the import status.
IMPORT_OK = {"OrderImported": "imported", "OrderUpdated": "updated", "OrderCancelled": "cancelled"}
_EPOCH = iso(datetime(1970, 1, 1, tzinfo=UTC))
#: The write-back status of an order cancelled on Amazon whose write-back failed or never happened.
CANCELLED_ON_AMAZON = "cancelled-on-amazon"
#: Which operator commands an outcome of each kind settles.
_IMPORT_COMMANDS = frozenset({"retry-import", "unignore"})
_DOWNLOAD_COMMANDS = frozenset({"retry-download"})
_WRITEBACK_COMMANDS = frozenset({"retry-writeback"})
#: Confirmation methods by which ordersync itself told Amazon, at ``confirmed_at``; the others
#: (amazon-label, easy-ship, already-confirmed) shipped through Amazon at a time ordersync does not know.
CONFIRMED_BY_ORDERSYNC = frozenset({"confirmShipment", "feed"})
#: Amazon statuses of an order that no longer awaits a shipment from the seller.
_NOT_AWAITING_STATUSES = frozenset({"Shipped", "Canceled"})
#: Easy Ship package statuses of a package still with the seller, waiting for its handover (Amazon's
#: PackageStatus); any other (PickedUp, DroppedOff, Delivered, LabelCanceled...) is past it.
_AWAITING_HANDOVER_STATUSES = frozenset(
    {"PendingSchedule", "PendingPickUp", "PendingDropOff", "ReadyForPickup"}
)
#: The track of an Easy Ship package's documents: a refusal fails the order until documents are stored.
DOCUMENTS_TRACK = "easy-ship-documents"


@dataclass
class Derived:
    """An order's row (with the stages it is failed in, for the indexes) and its detail."""

    row: OrderRow
    failed_stages: tuple[FailedStage, ...]
    lines: list[dict[str, Any]] = field(default_factory=list)
    shipments: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    #: The Easy Ship package (slot, status, size, invoice, tracking, documents), None when not packed.
    easy_ship: dict[str, Any] | None = None
    #: The operator commands the order received, oldest first: event id, command, operator, at, outcome
    #: (sent, done, failed), reason, settled_at.
    commands: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class OrderState:
    """What the facts applied so far say about the order."""

    channel: str = ""
    marketplace_id: str | None = None
    #: The Amazon change (last_update_date, or changed_at) the status and fulfilment channel are from.
    snapshot_version: str = ""
    amazon_status: str | None = None
    fulfillment_channel: str | None = None
    purchase_date: str | None = None
    #: Amazon's latest ship date (:func:`iso`) and the Amazon change it is from.
    ship_by: str | None = None
    ship_by_version: str = ""
    #: The sales order's fulfilment channel, for orders whose Amazon listing was not folded.
    sales_fulfillment_channel: str | None = None
    #: The earliest ``confirmed_at`` of a package confirmed by ordersync (:data:`CONFIRMED_BY_ORDERSYNC`).
    first_own_confirmation: str | None = None
    sales_order_code: str | None = None
    download_status: str | None = None
    #: (label, at) of the latest import-track outcome.
    import_outcome: tuple[str, str] | None = None
    import_failures: int = 0
    #: (command, at) of the latest ignore / unignore.
    ignore_command: tuple[str, str] | None = None
    first_import_ok_at: str | None = None
    invoices: list[str] = field(default_factory=list)
    items: dict[str, ItemFact] = field(default_factory=dict)
    items_version: str = ""
    sales_lines: dict[str, SalesLineFact] = field(default_factory=dict)
    line_states: dict[str, LineStateFact] = field(default_factory=dict)
    #: package_reference_id -> the package as the detail shows it.
    packages: dict[str, dict[str, Any]] = field(default_factory=dict)
    shipping_method: str | None = None
    #: "requested", "accepted" or "refused".
    cancellation: str | None = None
    #: The Easy Ship package as its latest scheduling outcome left it; None before any.
    easy_ship: dict[str, Any] | None = None
    #: The Easy Ship documents stored, by Amazon's report reference.
    documents: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: track -> the latest outcome of that track outside packages: (at, error or None when it succeeded).
    #: A track is one thing that can fail and be retried: a later success or failure supersedes it.
    stage_last: dict[str, tuple[str, dict[str, Any] | None]] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    #: The operator commands the order received, oldest first, each with its outcome so far.
    commands: list[dict[str, Any]] = field(default_factory=list)

    def settle(self, kinds: frozenset[str], at: str, failure: str | None) -> None:
        """The commands of ``kinds`` sent before ``at`` and still open are done (or failed, why)."""
        for command in self.commands:
            if command["command"] in kinds and command["outcome"] == "sent" and command["at"] <= at:
                command.update(outcome="failed" if failure else "done", reason=failure, settled_at=at)

    def outcome(self, track: str, at: str, error: dict[str, Any] | None) -> None:
        self.stage_last[track] = (at, error)

    def fail(self, track: str, at: str, error: dict[str, Any]) -> None:
        self.errors.append(error)
        self.outcome(track, at, error)

    def seen(self, fact: Fact, channel: str | None, marketplace_id: str | None = None) -> None:
        """What every fact says: its history entry, the channel, the marketplace."""
        self.history.append(
            {"at": fact.at, "topic": fact.topic, "event_type": fact.event_type, "summary": fact.summary}
        )
        if channel:
            self.channel = channel
        self.marketplace_id = marketplace_id or fact.marketplace_id or self.marketplace_id

    def amazon_change(self, version: str, status: str | None, fulfillment: str | None = None) -> None:
        """Amazon's status as of its latest change seen."""
        if version >= self.snapshot_version:
            self.snapshot_version = version
            self.amazon_status = status or self.amazon_status
            self.fulfillment_channel = fulfillment or self.fulfillment_channel

    def sales_order(self, code: str | None) -> None:
        if code:
            self.sales_order_code = code

    def package(self, reference: str) -> dict[str, Any]:
        return self.packages.setdefault(reference, {"package_reference_id": reference})

    def import_ok(self, kind: str, at: str) -> None:
        self.import_outcome = (IMPORT_OK[kind], at)
        self.first_import_ok_at = self.first_import_ok_at or at
        self.outcome("import", at, None)
        self.settle(_IMPORT_COMMANDS, at, None)


# --- one reducer per event type --------------------------------------------------------------------------


def _snapshot(state: OrderState, fact: Fact, data: OrderSnapshotFact) -> None:
    state.seen(fact, data.channel, data.marketplace_id)
    state.amazon_change(data.last_update_date, data.order_status, data.fulfillment_channel)
    # Amazon's own listing of the order is the reference for its purchase date.
    state.purchase_date = data.purchase_date or state.purchase_date
    # Its latest change says the ship date (Amazon may move it, e.g. for a buyer's change of address).
    if data.latest_ship_date and data.last_update_date >= state.ship_by_version:
        state.ship_by_version = data.last_update_date
        state.ship_by = data.latest_ship_date


def _downloaded(state: OrderState, fact: Fact, data: DownloadedFact) -> None:
    _snapshot(state, fact, data)
    state.download_status = state.download_status or "downloaded"
    state.settle(_DOWNLOAD_COMMANDS, fact.at, None)


def _use_items(state: OrderState, version: str, items: Iterable[ItemFact]) -> None:
    if version >= state.items_version:
        state.items_version = version
        state.items = {item.order_item_id: item for item in items}


def _enriched(state: OrderState, fact: Fact, data: EnrichedFact) -> None:
    _snapshot(state, fact, data)
    state.download_status = "enriched"
    state.outcome("download", fact.at, None)
    state.settle(_DOWNLOAD_COMMANDS, fact.at, None)
    _use_items(state, data.last_update_date, data.items)


def _imported(state: OrderState, fact: Fact, data: ImportedFact) -> None:
    state.seen(fact, data.channel, data.marketplace_id)
    # The sales order's copy of the purchase date fills a gap only.
    if data.purchase_date and state.purchase_date is None:
        state.purchase_date = data.purchase_date
    # ... and so does its copy of the ship date.
    if data.latest_ship_date and state.ship_by is None:
        state.ship_by = data.latest_ship_date
    state.sales_fulfillment_channel = data.fulfillment_channel or state.sales_fulfillment_channel
    state.sales_order(data.sales_order_code)
    state.import_ok(fact.event_type, fact.at)
    state.sales_lines = {line.order_item_id: line for line in data.lines}
    state.shipping_method = data.shipping_method


def _updated(state: OrderState, fact: Fact, data: UpdatedFact) -> None:
    state.seen(fact, data.channel)
    state.amazon_change(data.changed_at, data.order_status)
    state.sales_order(data.sales_order_code)
    state.import_ok(fact.event_type, fact.at)
    state.line_states = {line.order_item_id: line for line in data.lines}


def _cancelled(state: OrderState, fact: Fact, data: CancelledFact) -> None:
    state.seen(fact, data.channel)
    state.sales_order(data.sales_order_code)
    state.import_ok(fact.event_type, fact.at)
    state.amazon_status = "Canceled"


def _import_failed(state: OrderState, fact: Fact, data: ImportFailedFact) -> None:
    state.seen(fact, data.channel)
    if data.reason_code == "pending_no_prices":
        state.import_outcome = ("held", fact.at)
        state.outcome("import", fact.at, None)
        state.settle(_IMPORT_COMMANDS, fact.at, f"held: {data.reason}")
        return
    state.settle(_IMPORT_COMMANDS, fact.at, f"{data.reason_code}: {data.reason}")
    state.import_failures += 1
    state.import_outcome = ("failed", fact.at)
    error = {"stage": "import", "code": data.reason_code, "message": data.reason, "at": fact.at}
    state.fail("import", fact.at, error)


def _invoiced(state: OrderState, fact: Fact, data: InvoicedFact) -> None:
    state.seen(fact, None)
    state.sales_order(data.sales_order_code)
    state.invoices.append(data.invoice_number)
    state.outcome("invoice", fact.at, None)


def _given(**values: Any) -> dict[str, Any]:
    """The values given (a package keeps what an earlier event said where a later one says nothing)."""
    return {name: value for name, value in values.items() if value is not None}


def _shipment_requested(state: OrderState, fact: Fact, data: ShipmentRequestedFact) -> None:
    state.seen(fact, data.channel)
    package = state.package(data.package_reference_id)
    package.update(
        _given(
            carrier_code=data.carrier_code,
            carrier_name=data.carrier_name,
            items=[{"order_item_id": i.order_item_id, "quantity": i.quantity} for i in data.items],
            ship_date=data.ship_date,
            shipping_method=data.shipping_method,
            source=data.source,
            tracking_number=data.tracking_number,
        )
    )
    # Confirmed is final: a request read again (a redelivery after a crash between emit and commit)
    # cannot turn a package Amazon shows as shipped back into pending, in whichever order facts fold.
    if package.get("status") != "confirmed":
        package["status"] = "pending"
    package["requested_at"] = fact.at
    state.outcome("invoice", fact.at, None)
    state.outcome("shipment-request", fact.at, None)


def _shipment_confirmed(state: OrderState, fact: Fact, data: ShipmentConfirmedFact) -> None:
    state.seen(fact, data.channel)
    state.package(data.package_reference_id).update(
        status="confirmed",
        method=data.method,
        attempts=data.attempts,
        carrier_code=data.carrier_code,
        tracking_number=data.tracking_number,
        quantity=data.quantity,
        confirmed_at=data.confirmed_at,
        error_code=None,
        error_message=None,
    )
    if data.method in CONFIRMED_BY_ORDERSYNC and (
        state.first_own_confirmation is None or data.confirmed_at < state.first_own_confirmation
    ):
        state.first_own_confirmation = data.confirmed_at
    state.outcome("invoice", fact.at, None)
    state.outcome("shipment-request", fact.at, None)
    state.settle(_WRITEBACK_COMMANDS, fact.at, None)


def _shipment_failed(state: OrderState, fact: Fact, data: ShipmentFailedFact) -> None:
    state.seen(fact, data.channel)
    package = state.package(data.package_reference_id)
    package.update(
        _given(
            attempts=data.attempts,
            carrier_code=data.carrier_code,
            error_code=data.error_code,
            error_message=data.error_message,
            quantity=data.quantity,
            ship_date=data.ship_date,
            shipping_method=data.shipping_method,
            tracking_number=data.tracking_number,
        )
    )
    package.update(status="failed", failed_at=fact.at)
    state.errors.append(
        {
            "stage": "write-back",
            "code": data.error_code,
            "message": data.error_message,
            "at": fact.at,
            "package_reference_id": data.package_reference_id,
            "attempts": data.attempts,
        }
    )
    state.settle(_WRITEBACK_COMMANDS, fact.at, f"{data.error_code}: {data.error_message}")


def _cancellation_requested(state: OrderState, fact: Fact, data: CancellationRequestedFact) -> None:
    state.seen(fact, data.channel)
    state.cancellation = "requested"


def _cancellation_result(state: OrderState, fact: Fact, data: CancellationResultFact) -> None:
    state.seen(fact, data.channel)
    state.cancellation = "accepted" if data.cancelled else "refused"
    if data.cancelled:
        state.outcome("cancellation", fact.at, None)
        state.settle(_WRITEBACK_COMMANDS, fact.at, None)
        return
    error = {
        "stage": "write-back",
        "code": data.error_code or "CancellationRefused",
        "message": data.error_message or data.reason,
        "at": fact.at,
    }
    state.fail("cancellation", fact.at, error)
    state.settle(_WRITEBACK_COMMANDS, fact.at, f"{error['code']}: {error['message']}")


def _acknowledgement_result(state: OrderState, fact: Fact, data: AcknowledgementResultFact) -> None:
    # Shown in the history; a refusal (an order cancelled meanwhile) is no failure of the order. An
    # acknowledgement sent settles what a dead-lettered orders.imported record had left open.
    state.seen(fact, data.channel)
    if data.acknowledged:
        state.outcome("acknowledgement", fact.at, None)


def _easy_ship(state: OrderState, fact: Fact, data: EasyShipFact) -> None:
    # Scheduled settles a refusal or a dead-lettered packages.packed record before it; a refusal is the
    # order's failure until a package is scheduled.
    state.seen(fact, data.channel)
    if data.error_code is None:
        size = {"length_cm": data.length_cm, "width_cm": data.width_cm, "height_cm": data.height_cm}
        size["weight_g"] = data.weight_g
        state.easy_ship = {
            "outcome": "scheduled",
            "scheduled_package_id": data.scheduled_package_id,
            "slot_start": data.slot_start,
            "slot_end": data.slot_end,
            "handover": data.handover,
            "status": data.status,
            "invoice_number": data.invoice_number,
            "tracking_id": data.tracking_id,
            "size": size if all(size.values()) else None,
            "size_from": data.size_from,
            "scheduled_at": fact.at,
            "error_code": None,
            "error_message": None,
            "failed_at": None,
        }
        state.outcome("easy-ship", fact.at, None)
        state.settle(_WRITEBACK_COMMANDS, fact.at, None)
        return
    # A refusal keeps what an earlier scheduling said of the package, for the record.
    package = state.easy_ship if state.easy_ship is not None else {}
    package.update(
        outcome="failed", error_code=data.error_code, error_message=data.error_message, failed_at=fact.at
    )
    state.easy_ship = package
    error = {"stage": "write-back", "code": data.error_code, "message": data.error_message, "at": fact.at}
    state.fail("easy-ship", fact.at, error)
    state.settle(_WRITEBACK_COMMANDS, fact.at, f"{data.error_code}: {data.error_message}")


def _easy_ship_documents(state: OrderState, fact: Fact, data: EasyShipDocumentsFact) -> None:
    # Stored documents settle an earlier refusal; a refusal fails the order until documents are stored
    # (without its label the package cannot be handed over).
    state.seen(fact, data.channel)
    types = [t for t in data.document_types.split(",") if t]
    if data.error_code is None and data.location and data.report_reference_id:
        state.documents[data.report_reference_id] = {
            "report_reference_id": data.report_reference_id,
            "document_types": types,
            "location": data.location,
            "size_bytes": data.size_bytes,
            "sha256": data.sha256,
            "stored_at": data.stored_at,
            "feed_id": data.feed_id,
            "scheduled_package_id": data.scheduled_package_id,
        }
        state.outcome(DOCUMENTS_TRACK, fact.at, None)
        return
    error = {
        "stage": "write-back",
        "code": data.error_code or "DocumentsNotStored",
        "message": data.error_message or "the documents event named no stored PDF",
        "at": fact.at,
        "document_types": types,
        "feed_id": data.feed_id,
    }
    state.fail(DOCUMENTS_TRACK, fact.at, error)


def _command(state: OrderState, fact: Fact, data: CommandFact) -> None:
    state.seen(fact, data.channel)
    entry: dict[str, Any] = {
        "event_id": fact.event_id,
        "command": data.command,
        "operator": data.operator,
        "at": fact.at,
        "outcome": "sent",
        "reason": None,
        "settled_at": None,
    }
    state.commands.append(entry)
    if data.command in ("ignore", "unignore"):
        state.ignore_command = (data.command, fact.at)
    if data.command == "ignore":
        # The import stage refuses to ignore an order imported before (as _ignored reads it).
        refused = "refused: already imported" if state.first_import_ok_at is not None else None
        entry.update(outcome="failed" if refused else "done", reason=refused, settled_at=fact.at)
    elif data.command == "unignore" and state.first_import_ok_at is not None:
        entry.update(outcome="done", settled_at=fact.at)


def _command_dead_lettered(state: OrderState, fact: Fact, data: DeadLetterFact) -> None:
    """An operator command the stage could not carry out: failed, with the dead letter's error (the
    order itself is not failed by it)."""
    reason = f"dead-lettered by {data.processing_stage}: {data.error_type}: {data.error}"
    for command in state.commands:
        if command["event_id"] == data.command_id:
            command.update(outcome="failed", reason=reason, settled_at=fact.at)


def _dead_letter(state: OrderState, fact: Fact, data: DeadLetterFact) -> None:
    state.seen(fact, data.channel)
    if data.source_topic == OPS_COMMANDS.name:
        _command_dead_lettered(state, fact, data)
        return
    # What the dead-lettered record said about the order (its items...) still describes it.
    original = data.original
    purchase_date = getattr(original, "purchase_date", None)
    if purchase_date and state.purchase_date is None:
        state.purchase_date = purchase_date
    latest_ship_date = getattr(original, "latest_ship_date", None)
    if latest_ship_date and state.ship_by is None:
        state.ship_by = latest_ship_date
    if isinstance(original, EnrichedFact) and original.items:
        _use_items(state, original.last_update_date, original.items)
    if data.original_type == "OrderEnriched":
        state.download_status = "enriched"  # the items were fetched; the import refused them
    error = {
        "stage": data.stage,
        "code": data.error_type,
        "message": data.error,
        "at": fact.at,
        "source_topic": data.source_topic,
        "source_offset": data.source_offset,
        "source_partition": data.source_partition,
        "dead_lettered_by": data.processing_stage,
    }
    state.fail(DLQ_TRACK.get(data.source_topic, data.stage), fact.at, error)
    reason = f"dead-lettered by {data.processing_stage}: {data.error_type}: {data.error}"
    if data.stage == "import":
        state.import_outcome = ("failed", fact.at)
        state.import_failures += 1
        state.settle(_IMPORT_COMMANDS, fact.at, reason)
    elif data.stage == "download":
        state.download_status = "failed"
        state.settle(_DOWNLOAD_COMMANDS, fact.at, reason)
    else:
        state.settle(_WRITEBACK_COMMANDS, fact.at, reason)


_REDUCERS: dict[type, Callable[[OrderState, Fact, Any], None]] = {
    DownloadedFact: _downloaded,
    EnrichedFact: _enriched,
    ImportedFact: _imported,
    UpdatedFact: _updated,
    CancelledFact: _cancelled,
    ImportFailedFact: _import_failed,
    InvoicedFact: _invoiced,
    ShipmentRequestedFact: _shipment_requested,
    ShipmentConfirmedFact: _shipment_confirmed,
    ShipmentFailedFact: _shipment_failed,
    CancellationRequestedFact: _cancellation_requested,
    CancellationResultFact: _cancellation_result,
    AcknowledgementResultFact: _acknowledgement_result,
    EasyShipFact: _easy_ship,
    EasyShipDocumentsFact: _easy_ship_documents,
    CommandFact: _command,
    DeadLetterFact: _dead_letter,
}


def fold(facts: Iterable[Fact]) -> OrderState:
    """The state of an order after its facts, applied oldest first."""
    state = OrderState()
    for fact in sorted(facts, key=lambda f: (f.at, f.event_id)):
        _REDUCERS[type(fact.data)](state, fact, fact.data)
    return state


# --- the state -> the row and the detail -----------------------------------------------------------------


def derive(seller_id: str, amazon_order_id: str, facts: Iterable[Fact]) -> Derived:
    """The order's row and detail from its facts: a pure function of the set of facts."""
    state = fold(facts)
    cancelled = _cancelled_on_amazon(state)
    active = _active_errors(state, settle_write_back=cancelled)
    failed_stages = tuple(s for s in FAILED_STAGES if any(e["stage"] == s for e in active))
    ignored = _ignored(state)
    import_status = state.import_outcome[0] if state.import_outcome else None
    status: OverallStatus
    if ignored:
        status = "Ignored"
        # An ignored order is nobody's work item: it leaves the failed-stage lists.
        failed_stages = ()
    elif active:
        status = "Failed"
    elif import_status in IMPORT_OK.values():
        status = "Success"
    else:
        status = "Pending"
    lines = _lines(state)
    latest_error = active[-1] if active else None
    ship_by = parse_iso(state.ship_by)
    confirmed_at = parse_iso(state.first_own_confirmation)
    row = OrderRow(
        channel=state.channel,
        seller_id=seller_id,
        amazon_order_id=amazon_order_id,
        marketplace_id=state.marketplace_id,
        purchase_date=parse_iso(state.purchase_date),
        updated_at=cast(datetime, parse_iso(state.history[-1]["at"] if state.history else _EPOCH)),
        status=status,
        download_status=state.download_status,
        import_status="ignored" if ignored and import_status is None else import_status,
        invoice_status=_invoice_status(state),
        writeback_status=CANCELLED_ON_AMAZON if cancelled else _writeback_status(state, failed_stages),
        amazon_status=state.amazon_status,
        fulfillment_channel=state.fulfillment_channel,
        sales_order_code=state.sales_order_code,
        error_code=latest_error["code"] if latest_error else None,
        error_message=latest_error["message"] if latest_error else None,
        attempts=_attempts(state, latest_error),
        skus=tuple(sorted({line["seller_sku"] for line in lines if line["seller_sku"]})),
        ship_by=ship_by,
        awaiting_shipment=_awaiting_shipment(state, ignored),
        confirmed_at=confirmed_at,
        confirmed_late=ship_by is not None and confirmed_at is not None and confirmed_at > ship_by,
        awaiting_pickup=_awaiting_pickup(state, ignored),
    )
    return Derived(
        row=row,
        failed_stages=failed_stages,
        lines=lines,
        shipments=_shipments(state),
        errors=state.errors,
        history=state.history,
        easy_ship=_easy_ship_detail(state),
        commands=state.commands,
    )


def _cancelled_on_amazon(state: OrderState) -> bool:
    """Amazon cancelled the order after it reached the write-back track (invoiced, a package requested
    or a write-back failure) and no package of it was confirmed: its write-back is over, for good."""
    if state.amazon_status != "Canceled" and state.cancellation != "accepted":
        return False
    if any(p.get("status") == "confirmed" for p in state.packages.values()):
        return False
    return bool(state.invoices or state.packages or any(e["stage"] == "write-back" for e in state.errors))


def _active_errors(state: OrderState, *, settle_write_back: bool = False) -> list[dict[str, Any]]:
    """The errors still open, oldest first: each track's latest outcome when it failed, and each failed
    package's latest failure; every error is marked ``active`` or not. With ``settle_write_back`` (the
    order was cancelled on Amazon) no write-back failure is open any more: each is marked ``settled``."""
    active = [error for _, error in state.stage_last.values() if error is not None]
    active += [
        next(
            e
            for e in reversed(state.errors)
            if e.get("package_reference_id") == package["package_reference_id"]
        )
        for package in state.packages.values()
        if package.get("status") == "failed"
    ]
    if settle_write_back:
        for error in active:
            if error["stage"] == "write-back":
                error["settled"] = "cancelled on Amazon"
        active = [e for e in active if e["stage"] != "write-back"]
    active.sort(key=lambda e: e["at"])
    active_ids = {id(e) for e in active}
    for error in state.errors:
        error["active"] = id(error) in active_ids
    return active


def _awaiting_shipment(state: OrderState, ignored: bool) -> bool:
    """Amazon waits for the seller to ship it: a ship-by date, merchant-fulfilled, not cancelled or
    ignored, and no package confirmed yet (by whichever method)."""
    fulfillment = state.fulfillment_channel or state.sales_fulfillment_channel
    return (
        state.ship_by is not None
        and fulfillment != "AFN"
        and not ignored
        and state.amazon_status not in _NOT_AWAITING_STATUSES
        and state.cancellation != "accepted"
        and not any(p.get("status") == "confirmed" for p in state.packages.values())
    )


def _awaiting_pickup(state: OrderState, ignored: bool) -> bool:
    """Its Easy Ship package is scheduled and still with the seller: Amazon's status (as scheduled)
    before the handover, the order neither shipped nor cancelled nor ignored, no package confirmed."""
    package = state.easy_ship
    return (
        package is not None
        and package["outcome"] == "scheduled"
        and (package["status"] is None or package["status"] in _AWAITING_HANDOVER_STATUSES)
        and not ignored
        and state.amazon_status not in _NOT_AWAITING_STATUSES
        and state.cancellation != "accepted"
        and not any(p.get("status") == "confirmed" for p in state.packages.values())
    )


def _easy_ship_detail(state: OrderState) -> dict[str, Any] | None:
    """The Easy Ship package with its documents (oldest stored first) and the documents' open refusal;
    None for an order never packed for Easy Ship."""
    documents_outcome = state.stage_last.get(DOCUMENTS_TRACK)
    if state.easy_ship is None and documents_outcome is None:
        return None
    detail: dict[str, Any] = dict(state.easy_ship or {"outcome": None})
    detail["documents"] = sorted(
        state.documents.values(), key=lambda d: (d["stored_at"] or "", d["report_reference_id"])
    )
    open_refusal = documents_outcome[1] if documents_outcome else None
    detail["documents_error"] = dict(open_refusal) if open_refusal else None
    return detail


def _ignored(state: OrderState) -> bool:
    """Ignored by an operator, unless the order was imported before the ignore."""
    if state.ignore_command is None:
        return False
    command, at = state.ignore_command
    imported_before = state.first_import_ok_at is not None and state.first_import_ok_at < at
    return command == "ignore" and not imported_before


def _writeback_status(state: OrderState, failed_stages: tuple[FailedStage, ...]) -> str | None:
    package_states = [p.get("status") for p in state.packages.values()]
    if "write-back" in failed_stages:
        return "failed"
    if "pending" in package_states:
        return "pending"
    if package_states:
        return "confirmed"
    if state.cancellation is not None:
        return "cancelled" if state.cancellation == "accepted" else "cancel-pending"
    return None


def _invoice_status(state: OrderState) -> str | None:
    if any(e["active"] and e.get("source_topic") == INVOICES_ISSUED.name for e in state.errors):
        return "failed"
    return "invoiced" if state.invoices else None


def _attempts(state: OrderState, latest_error: dict[str, Any] | None) -> int:
    if latest_error is not None and latest_error["stage"] == "import":
        return state.import_failures
    if latest_error is not None and "attempts" in latest_error:
        return int(latest_error["attempts"])
    return max((int(p.get("attempts") or 0) for p in state.packages.values()), default=0)


def _lines(state: OrderState) -> list[dict[str, Any]]:
    """Amazon's items joined with the sales order's lines and the latest line states."""
    lines: list[dict[str, Any]] = []
    for item_id in dict.fromkeys([*state.items, *state.sales_lines]):
        item = state.items.get(item_id)
        sales = state.sales_lines.get(item_id)
        line_state = state.line_states.get(item_id)
        if line_state is not None:
            ordered: int | None = line_state.quantity_ordered
            shipped: int | None = line_state.quantity_shipped
        else:
            ordered = item.quantity_ordered if item else (sales.quantity if sales else None)
            shipped = item.quantity_shipped if item else 0
        lines.append(
            {
                "order_item_id": item_id,
                "seller_sku": (item.seller_sku if item else None) or (sales.seller_sku if sales else None),
                "asin": (item.asin if item else None) or (sales.asin if sales else None),
                "title": item.title if item else None,
                "stock_code": sales.stock_code if sales else None,
                "quantity_ordered": ordered,
                "quantity_shipped": shipped,
                "item_price": item.item_price if item else None,
                "currency": item.currency if item else None,
                "unit_price": sales.unit_price if sales else None,
                "tax": sales.tax if sales else None,
                "line_total": sales.line_total if sales else None,
            }
        )
    return lines


def _shipments(state: OrderState) -> list[dict[str, Any]]:
    """The packages, by reference (numeric order), with the sales order's shipping method by default."""
    shipments: list[dict[str, Any]] = []
    for ref in sorted(state.packages, key=lambda r: (len(r), r)):
        package = dict(state.packages[ref])
        package.setdefault("shipping_method", state.shipping_method)
        if package.get("shipping_method") is None:
            package["shipping_method"] = state.shipping_method
        shipments.append(package)
    return shipments
