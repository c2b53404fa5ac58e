"""Ship-by deadlines in the fold, a pure function of an order's facts: the latest ship date carried into
the row, whether the order still awaits shipment, and whether ordersync's first confirmation of it came
after that date (a late shipment for Amazon's Late Shipment Rate); facts stored before the date was
kept still decode, and the grid's and the CLI's deadline parameters are checked."""

from __future__ import annotations

import itertools
import json
from datetime import datetime, timedelta
from typing import Any

import pytest
import typer

from ordersync.cli.orders import build_filter
from ordersync.dashboard.query import BadQuery, parse_filter
from ordersync.schemas.events import (
    OperatorCommandIssued,
    OrderCancelled,
    OrderDownloaded,
    OrderImported,
    ShipmentConfirmed,
)
from ordersync.schemas.topics import OPS_COMMANDS, ORDERS_DOWNLOADED, ORDERS_IMPORTED, SHIPMENTS_CONFIRMED
from ordersync.state.readmodel import Fact, derive, facts_of
from ordersync.state.readmodel.facts import DownloadedFact, decode_fact, encode_fact
from tests.factories import CHANNEL, SELLER, T0, RecordedRun, one_line_sales_order, order

pytestmark = pytest.mark.unit

ORDER_ID = "111-0000101-0000101"
SHIP_BY = T0 + timedelta(days=2)


def _facts(run: RecordedRun) -> list[Fact]:
    return [fact for topic, envelope in run.events for _, fact in facts_of(topic, envelope)]


def _downloaded(
    run: RecordedRun,
    ship_by: datetime | None = SHIP_BY,
    *,
    fulfillment: str = "MFN",
    updated: datetime = T0,
    status: str = "Unshipped",
) -> None:
    listed = order(
        amazon_order_id=ORDER_ID,
        seller_id=SELLER,
        latest_ship_date=ship_by,
        fulfillment_channel=fulfillment,
        last_update_date=updated,
        order_status=status,
        items=None,
    )
    run.add(ORDERS_DOWNLOADED.name, OrderDownloaded(channel=CHANNEL, order=listed))


def _confirmed(
    run: RecordedRun, at: datetime, *, method: str = "confirmShipment", package: str = "1"
) -> None:
    run.add(
        SHIPMENTS_CONFIRMED.name,
        ShipmentConfirmed(
            channel=CHANNEL,
            amazon_order_id=ORDER_ID,
            package_reference_id=package,
            method=method,  # type: ignore[arg-type]
            attempts=1,
            carrier_code="UPS",
            tracking_number=f"1Z{package}",
            quantity=1,
            confirmed_at=at,
        ),
    )


def _row(run: RecordedRun) -> Any:
    return derive(SELLER, ORDER_ID, _facts(run)).row


def test_the_latest_amazon_change_gives_the_ship_by_date_whatever_order_the_facts_fold_in() -> None:
    run = RecordedRun()
    _downloaded(run, SHIP_BY + timedelta(days=1), updated=T0 + timedelta(hours=5))
    _downloaded(run, SHIP_BY, updated=T0)  # an older listing read later (a replayed page)
    facts = _facts(run)
    for permutation in itertools.permutations(facts):
        row = derive(SELLER, ORDER_ID, permutation).row
        assert row.ship_by == SHIP_BY + timedelta(days=1)
        assert row.awaiting_shipment is True
        assert (row.confirmed_at, row.confirmed_late) == (None, False)


def test_the_sales_order_gives_the_ship_by_date_when_no_listing_was_folded() -> None:
    run = RecordedRun()
    sales_order = one_line_sales_order(
        SELLER, ORDER_ID, channel=CHANNEL, order_item_id="11111111111111", quantity=1
    ).model_copy(update={"latest_ship_date": SHIP_BY})
    run.add(ORDERS_IMPORTED.name, OrderImported(sales_order=sales_order))
    row = _row(run)
    assert row.ship_by == SHIP_BY
    assert row.awaiting_shipment is True


def test_a_confirmation_by_ordersync_after_the_ship_by_date_is_late() -> None:
    run = RecordedRun()
    _downloaded(run)
    _confirmed(run, SHIP_BY + timedelta(minutes=30))
    row = _row(run)
    assert row.awaiting_shipment is False
    assert row.confirmed_at == SHIP_BY + timedelta(minutes=30)
    assert row.confirmed_late is True
    assert row.ship_by_state(SHIP_BY + timedelta(days=5), 3600) == "late"


@pytest.mark.parametrize("method", ["confirmShipment", "feed"])
def test_a_confirmation_by_ordersync_on_time_is_not_late(method: str) -> None:
    run = RecordedRun()
    _downloaded(run)
    _confirmed(run, SHIP_BY - timedelta(hours=1), method=method)
    row = _row(run)
    assert (row.confirmed_at, row.confirmed_late, row.awaiting_shipment) == (
        SHIP_BY - timedelta(hours=1),
        False,
        False,
    )


def test_the_first_confirmation_decides_even_when_a_later_package_comes_after_the_date() -> None:
    run = RecordedRun()
    _downloaded(run)
    _confirmed(run, SHIP_BY + timedelta(days=1), package="2")
    _confirmed(run, SHIP_BY - timedelta(hours=2), package="1")
    row = _row(run)
    assert row.confirmed_at == SHIP_BY - timedelta(hours=2)
    assert row.confirmed_late is False


@pytest.mark.parametrize("method", ["amazon-label", "easy-ship", "already-confirmed"])
def test_shipments_ordersync_did_not_confirm_end_the_wait_but_are_never_late(method: str) -> None:
    # Their real confirmation time is Amazon's, unknown here: neither counted nor judged.
    run = RecordedRun()
    _downloaded(run)
    _confirmed(run, SHIP_BY + timedelta(days=3), method=method)
    row = _row(run)
    assert (row.awaiting_shipment, row.confirmed_at, row.confirmed_late) == (False, None, False)


def test_amazon_fulfilled_cancelled_ignored_and_undated_orders_do_not_await_shipment() -> None:
    afn = RecordedRun()
    _downloaded(afn, fulfillment="AFN")
    assert _row(afn).awaiting_shipment is False

    undated = RecordedRun()
    _downloaded(undated, None)
    assert (_row(undated).awaiting_shipment, _row(undated).ship_by) == (False, None)

    cancelled = RecordedRun()
    _downloaded(cancelled)
    cancelled.add(
        ORDERS_IMPORTED.name,
        OrderCancelled(
            channel=CHANNEL,
            amazon_order_id=ORDER_ID,
            sales_order_code="SO1",
            reason="buyer",
            buyer_requested=True,
            cancelled_at=T0,
        ),
    )
    assert _row(cancelled).awaiting_shipment is False

    shipped_elsewhere = RecordedRun()
    _downloaded(shipped_elsewhere, status="Shipped")
    assert _row(shipped_elsewhere).awaiting_shipment is False

    ignored = RecordedRun()
    _downloaded(ignored)
    ignored.add(
        OPS_COMMANDS.name,
        OperatorCommandIssued(
            command="ignore", channel=CHANNEL, amazon_order_ids=(ORDER_ID,), operator="ops"
        ),
    )
    assert _row(ignored).status == "Ignored"
    assert _row(ignored).awaiting_shipment is False


def test_the_ship_by_state_as_of_a_given_time() -> None:
    run = RecordedRun()
    _downloaded(run)
    row = _row(run)
    lead_s = 4 * 3600
    assert row.ship_by_state(SHIP_BY - timedelta(hours=5), lead_s) is None
    assert row.ship_by_state(SHIP_BY - timedelta(hours=4), lead_s) == "at-risk"
    assert row.ship_by_state(SHIP_BY, lead_s) == "at-risk"
    assert row.ship_by_state(SHIP_BY + timedelta(seconds=1), lead_s) == "overdue"


def test_facts_stored_before_the_ship_by_date_was_kept_decode_and_are_stored_unchanged() -> None:
    run = RecordedRun()
    _downloaded(run, None)
    (fact,) = _facts(run)
    stored = encode_fact(fact)
    assert '"lsd"' not in stored  # an order without a date is stored as before
    old = json.loads(stored)
    decoded = decode_fact(fact.event_id, json.dumps(old))
    assert isinstance(decoded.data, DownloadedFact)
    assert decoded.data.latest_ship_date is None

    dated = RecordedRun()
    _downloaded(dated)
    (fact,) = _facts(dated)
    stored = encode_fact(fact)
    assert json.loads(stored)["d"]["lsd"] == "2026-11-22T12:00:00.000000Z"
    assert decode_fact(fact.event_id, stored) == fact


def test_the_deadline_parameter_of_the_grid_and_of_the_cli() -> None:
    order_filter, raw = parse_filter({"deadline": "overdue", "status": "Success"})
    assert order_filter.deadline == "overdue"
    assert ("deadline", "overdue") in raw
    with pytest.raises(BadQuery, match="deadline"):
        parse_filter({"deadline": "soon"})
    common: dict[str, Any] = dict.fromkeys(
        ("status", "channel", "seller", "marketplace", "since", "until", "search", "failed_stage")
    )
    assert build_filter(**common, deadline="at-risk").deadline == "at-risk"
    with pytest.raises(typer.BadParameter):
        build_filter(**common, deadline="late")
