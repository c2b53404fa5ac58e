"""Issue #21 points 4-6 in the fold and the dashboard's rules, as pure functions: an order cancelled on
Amazon after its write-back failed (or never happened) ends as cancelled-on-amazon, not Failed, and
leaves the "confirm by hand" export; each operator command's outcome is read from the facts after it
(a dead-lettered command failed, with its reason); task results count outcomes; the actions' state
rules; a reversed date range is refused; dates are the reader's time zone's."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from ordersync.dashboard.actions import ActionRejected, action_refusal, allowed_actions, check_orders
from ordersync.dashboard.app import _format_time, time_zone
from ordersync.dashboard.query import BadQuery, parse_filter
from ordersync.schemas.codec import encode
from ordersync.schemas.envelope import Envelope
from ordersync.schemas.events import (
    EventDeadLettered,
    OperatorCommandIssued,
    OrderCancelled,
    ShipmentFailed,
)
from ordersync.schemas.topics import OPS_COMMANDS, ORDERS_IMPORTED, SHIPMENTS_FAILED
from ordersync.state.readmodel import (
    CommandOrder,
    CommandOutcome,
    Derived,
    Fact,
    derive,
    facts_of,
    order_csv_rows,
)
from ordersync.state.readmodel.fold import CANCELLED_ON_AMAZON
from ordersync.state.readmodel.rows import OrderDetail
from tests.factories import CHANNEL, IGNORED, OK, RETRIED, SELLER, T0, RecordedRun

pytestmark = pytest.mark.unit


def _facts(events: list[tuple[str, Any]], order_id: str) -> list[Fact]:
    return [
        fact
        for topic, envelope in events
        for target, fact in facts_of(topic, envelope)
        if target.amazon_order_id == order_id and target.seller_id == SELLER
    ]


def _derive(run: RecordedRun, order_id: str) -> Derived:
    return derive(SELLER, order_id, _facts(run.events, order_id))


def _detail(derived: Derived) -> OrderDetail:
    return OrderDetail(
        row=derived.row,
        lines=tuple(derived.lines),
        shipments=tuple(derived.shipments),
        errors=tuple(derived.errors),
        history=tuple(derived.history),
        commands=tuple(derived.commands),
    )


def _cancel(run: RecordedRun, order_id: str) -> None:
    run.add(
        ORDERS_IMPORTED.name,
        OrderCancelled(
            channel=CHANNEL,
            sales_order_code="SO00000001",
            amazon_order_id=order_id,
            reason="buyer cancelled",
            buyer_requested=True,
            cancelled_at=run.clock,
        ),
    )


def _write_back_failed(run: RecordedRun, order_id: str) -> None:
    run.add(
        SHIPMENTS_FAILED.name,
        ShipmentFailed(
            channel=CHANNEL,
            amazon_order_id=order_id,
            package_reference_id="1",
            carrier_code="UPS",
            shipping_method="Ground",
            tracking_number="1Z0000001",
            ship_date=T0,
            attempts=5,
            error_code="InvalidInput",
            error_message="The order was cancelled",
            quantity=2,
        ),
    )


def _invoiced(run: RecordedRun, order_id: str) -> RecordedRun:
    run.order_flow(order_id)
    run.imported(order_id, "SO00000001")
    run.shipped(order_id, "SO00000001")
    return run


# --- cancelled on Amazon ----------------------------------------------------------------------------


def test_cancelled_after_invoicing_with_a_failed_write_back_is_final_not_failed() -> None:
    run = _invoiced(RecordedRun(), OK)
    _write_back_failed(run, OK)
    assert _derive(run, OK).row.status == "Failed"  # before the cancellation: confirm it by hand
    _cancel(run, OK)
    derived = _derive(run, OK)
    assert (derived.row.status, derived.row.writeback_status) == ("Success", CANCELLED_ON_AMAZON)
    assert derived.failed_stages == ()
    assert not derived.row.awaiting_shipment
    assert [e.get("settled") for e in derived.errors] == ["cancelled on Amazon"]
    # Out of the "confirm by hand" export: no row names a failed stage or an error.
    [row] = order_csv_rows(_detail(derived))
    assert row[6] == ""
    assert "InvalidInput" not in row


def test_cancelled_after_invoicing_whose_write_back_never_happened_is_final() -> None:
    run = _invoiced(RecordedRun(), OK)  # a package requested, never confirmed or refused
    _cancel(run, OK)
    derived = _derive(run, OK)
    assert (derived.row.status, derived.row.writeback_status) == ("Success", CANCELLED_ON_AMAZON)


def test_cancelled_before_any_write_back_and_shipped_orders_are_unchanged() -> None:
    run = RecordedRun()
    run.order_flow(OK)
    run.imported(OK, "SO00000001")
    _cancel(run, OK)
    assert _derive(run, OK).row.writeback_status is None
    shipped = RecordedRun()
    shipped.order_flow(RETRIED)
    shipped.imported(RETRIED, "SO00000001")
    shipped.confirmed(shipped.shipped(RETRIED, "SO00000001"))
    _cancel(shipped, RETRIED)
    assert _derive(shipped, RETRIED).row.writeback_status == "confirmed"


# --- command outcomes -------------------------------------------------------------------------------


def test_retry_import_that_fails_again_is_failed_with_the_reason() -> None:
    run = RecordedRun()
    run.order_flow(RETRIED, sku="UNMAPPED-7")
    run.import_failed(RETRIED, "UNMAPPED-7")
    run.command("retry-import", RETRIED)
    [command] = _derive(run, RETRIED).commands
    assert (command["command"], command["outcome"]) == ("retry-import", "sent")
    run.import_failed(RETRIED, "UNMAPPED-7")
    [command] = _derive(run, RETRIED).commands
    assert command["outcome"] == "failed"
    assert "unknown_stock_code" in command["reason"]
    run.command("retry-import", RETRIED)
    run.imported(RETRIED, "SO00000002", sku="UNMAPPED-7")
    first, second = _derive(run, RETRIED).commands
    assert (first["outcome"], second["outcome"]) == ("failed", "done")


def test_ignore_of_an_imported_order_is_a_failed_command() -> None:
    run = RecordedRun()
    run.order_flow(OK)
    run.imported(OK, "SO00000001")
    run.command("ignore", OK)
    [command] = _derive(run, OK).commands
    assert (command["outcome"], command["reason"]) == ("failed", "refused: already imported")
    other = RecordedRun()
    other.order_flow(IGNORED, sku="GONE-1")
    other.import_failed(IGNORED, "GONE-1")
    other.command("ignore", IGNORED)
    assert [c["outcome"] for c in _derive(other, IGNORED).commands] == ["done"]


def test_a_dead_lettered_command_failed_with_its_reason_and_the_order_is_not_failed_by_it() -> None:
    run = RecordedRun()
    run.order_flow(OK, enrich=False)
    command = OperatorCommandIssued(command="retry-download", channel=CHANNEL, amazon_order_ids=(OK,))
    envelope = Envelope.wrap(
        command, seller_id=SELLER, correlation_id="c", occurred_at=run.clock + timedelta(seconds=1)
    )
    run.events.append((OPS_COMMANDS.name, envelope))
    run.add(
        f"{OPS_COMMANDS.name}.dlq",
        EventDeadLettered(
            source_topic=OPS_COMMANDS.name,
            source_partition=0,
            source_offset=3,
            source_key=CHANNEL,
            original_value_b64=base64.b64encode(encode(envelope)).decode(),
            stage="order-download",
            error_type="AuthError",
            error="the refresh token was refused",
            dead_lettered_at=run.clock,
        ),
    )
    derived = _derive(run, OK)
    [outcome] = derived.commands
    assert outcome["event_id"] == str(envelope.event_id)
    assert outcome["outcome"] == "failed"
    assert "the refresh token was refused" in outcome["reason"]
    assert derived.row.status == "Pending"


def test_task_results_count_outcomes_not_what_was_sent() -> None:
    failed = CommandOutcome(
        event_id="e",
        command="retry-import",
        orders=tuple(
            CommandOrder(
                seller_id=SELLER,
                amazon_order_id=f"111-0000000-000000{n}",
                outcome="failed",
                reason="unknown_stock_code: X",
            )
            for n in range(8)
        ),
    )
    assert failed.state == "failed"
    assert (
        failed.summary()
        == "retry-import: 0 of 8 orders imported again, 8 failed again (unknown_stock_code: X)"
    )
    mixed = failed.model_copy(
        update={
            "orders": (
                *failed.orders[:2],
                *(o.model_copy(update={"outcome": "done", "reason": None}) for o in failed.orders[2:7]),
                failed.orders[7].model_copy(update={"outcome": "sent"}),
            )
        }
    )
    assert mixed.state == "sent"
    assert mixed.summary().startswith("retry-import: 5 of 8 orders imported again, 2 failed again")
    assert mixed.summary().endswith("1 awaiting an outcome")
    assert CommandOutcome(event_id="x").summary() == "command: sent, not yet seen by the pipeline"


# --- the actions' rules -----------------------------------------------------------------------------


def test_each_action_only_where_the_state_allows_it() -> None:
    run = RecordedRun()
    run.order_flow(RETRIED, sku="UNMAPPED-7")
    run.import_failed(RETRIED, "UNMAPPED-7")
    import_failed = _derive(run, RETRIED).row
    assert allowed_actions(import_failed) == ("ignore", "retry-download", "retry-import")
    write_back = _invoiced(RecordedRun(), OK)
    _write_back_failed(write_back, OK)
    row = _derive(write_back, OK).row
    assert allowed_actions(row) == ("retry-writeback",)
    assert "already imported" in (action_refusal("ignore", row) or "")
    _cancel(write_back, OK)
    cancelled = _derive(write_back, OK).row
    assert "cancelled on Amazon" in (action_refusal("retry-writeback", cancelled) or "")
    run.command("ignore", RETRIED)
    ignored = _derive(run, RETRIED).row
    assert allowed_actions(ignored) == ("unignore",)
    assert action_refusal("retry-import", ignored) == "ignored: un-ignore it first"


def test_check_orders_refuses_foreign_orders_422_and_wrong_states_409() -> None:
    run = RecordedRun()
    run.order_flow(OK)
    run.imported(OK, "SO00000001")
    row = _derive(run, OK).row
    rows = {(SELLER, OK): row}
    check_orders("retry-download", {CHANNEL: ()}, {CHANNEL: SELLER}, rows)  # nothing to check
    with pytest.raises(ActionRejected) as conflict:
        check_orders("retry-import", {CHANNEL: (OK,)}, {CHANNEL: SELLER}, rows)
    assert conflict.value.conflict
    assert "its import did not fail" in conflict.value.problems[0]
    with pytest.raises(ActionRejected) as unknown:
        check_orders("retry-import", {CHANNEL: (OK, RETRIED)}, {CHANNEL: SELLER}, rows)
    assert not unknown.value.conflict
    assert any(RETRIED in p and "not an order of" in p for p in unknown.value.problems)
    with pytest.raises(ActionRejected) as other_account:
        check_orders("ignore", {"other": (OK,)}, {"other": "A-OTHER"}, rows)
    assert "not an order of other" in other_account.value.problems[0]


# --- dates and time zones ---------------------------------------------------------------------------


def test_a_reversed_date_range_is_refused() -> None:
    with pytest.raises(BadQuery, match="reversed"):
        parse_filter({"since": "2026-11-20", "until": "2026-11-10"})
    one_day, _ = parse_filter({"since": "2026-11-20", "until": "2026-11-20"})
    assert one_day.until is not None
    assert one_day.since is not None
    assert one_day.until - one_day.since == timedelta(days=1)


def test_dates_and_times_are_the_readers_time_zone() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    f, _ = parse_filter({"since": "2026-11-20"}, berlin)
    assert f.since == datetime(2026, 11, 19, 23, 0, tzinfo=UTC)
    assert _format_time(datetime(2026, 11, 19, 23, 0, tzinfo=UTC), berlin) == "2026-11-20 00:00:00 CET"
    assert _format_time(datetime(2026, 11, 19, 23, 0, tzinfo=UTC)) == "2026-11-19 23:00:00 UTC"
    assert time_zone("Europe/Berlin") == berlin
    assert time_zone("Not/AZone") is None
    assert time_zone("../../etc/passwd") is None
