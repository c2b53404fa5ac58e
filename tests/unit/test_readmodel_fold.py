"""The fold as a pure function of an order's facts: every permutation of the same events gives the same
row, and the status rules (ignore refused once imported, later success supersedes, held is Pending)."""

from __future__ import annotations

import base64
import itertools
from decimal import Decimal
from typing import Any

import pytest

from ordersync.schemas.codec import encode
from ordersync.schemas.envelope import Envelope
from ordersync.schemas.events import EventDeadLettered, PackageScheduled, PackageSchedulingFailed, PackedSize
from ordersync.schemas.topics import PACKAGES_SCHEDULED, SHIPMENTS_REQUESTED, order_key
from ordersync.state.readmodel import Fact, derive, facts_of
from tests.factories import IGNORED, OK, RETRIED, SELLER, RecordedRun, recorded_run

pytestmark = pytest.mark.unit


def _facts(events: list[tuple[str, Any]], order_id: str) -> list[Fact]:
    return [
        fact
        for topic, envelope in events
        for target, fact in facts_of(topic, envelope)
        if target.amazon_order_id == order_id and target.seller_id == SELLER
    ]


@pytest.mark.parametrize("order_id", [OK, RETRIED, IGNORED])
def test_every_order_of_the_facts_gives_the_same_row(order_id: str) -> None:
    facts = _facts(recorded_run(), order_id)
    reference = derive(SELLER, order_id, facts)
    for permutation in itertools.islice(itertools.permutations(facts), 200):
        derived = derive(SELLER, order_id, permutation)
        assert derived.row == reference.row
        assert derived.history == reference.history


def test_ignore_after_the_import_is_refused() -> None:
    run = RecordedRun()
    run.order_flow(OK)
    run.imported(OK, "SO00000001")
    run.command("ignore", OK)
    row = derive(SELLER, OK, _facts(run.events, OK)).row
    assert row.status == "Success"


def test_unignore_lifts_the_ignore() -> None:
    run = RecordedRun()
    run.order_flow(IGNORED, sku="GONE-1")
    run.import_failed(IGNORED, "GONE-1")
    run.command("ignore", IGNORED)
    assert derive(SELLER, IGNORED, _facts(run.events, IGNORED)).row.status == "Ignored"
    run.command("unignore", IGNORED)
    row = derive(SELLER, IGNORED, _facts(run.events, IGNORED)).row
    assert (row.status, row.error_code) == ("Failed", "unknown_stock_code")


def test_repeated_import_failures_count_as_attempts_and_one_open_error() -> None:
    run = RecordedRun()
    run.order_flow(RETRIED, sku="UNMAPPED-7")
    run.import_failed(RETRIED, "UNMAPPED-7")
    run.command("retry-import", RETRIED)
    run.import_failed(RETRIED, "UNMAPPED-7")
    derived = derive(SELLER, RETRIED, _facts(run.events, RETRIED))
    assert (derived.row.status, derived.row.attempts) == ("Failed", 2)
    assert [e["active"] for e in derived.errors] == [False, True]
    assert derived.failed_stages == ("import",)


def test_a_dead_lettered_shipment_request_fails_the_write_back_and_adds_no_line() -> None:
    """Of an order never downloaded: the request's items are the shipment's, not the order's lines."""
    request = RecordedRun().shipped(OK, "SO00000001")
    run = RecordedRun()
    original = encode(Envelope.wrap(request, seller_id=SELLER, correlation_id="run"))
    run.add(
        f"{SHIPMENTS_REQUESTED.name}.dlq",
        EventDeadLettered(
            source_topic=SHIPMENTS_REQUESTED.name,
            source_partition=0,
            source_offset=7,
            source_key=order_key(SELLER, OK),
            original_value_b64=base64.b64encode(original).decode(),
            stage="shipment-write-back",
            error_type="Permanent",
            error="carrier refused",
            dead_lettered_at=run.clock,
        ),
    )
    derived = derive(SELLER, OK, _facts(run.events, OK))
    assert (derived.row.status, derived.row.writeback_status) == ("Failed", "failed")
    assert derived.failed_stages == ("write-back",)
    assert derived.lines == []


def test_a_redelivered_shipment_request_leaves_a_confirmed_package_confirmed() -> None:
    """invoice-issued stopped between emit and commit: its request is published again, later."""
    run = RecordedRun()
    run.order_flow(OK)
    run.imported(OK, "SO00000001")
    request = run.shipped(OK, "SO00000001")
    run.confirmed(request)
    run.add(SHIPMENTS_REQUESTED.name, request)  # the redelivery, after the confirmation
    facts = _facts(run.events, OK)
    for permutation in itertools.islice(itertools.permutations(facts), 200):
        derived = derive(SELLER, OK, permutation)
        assert (derived.row.status, derived.row.writeback_status) == ("Success", "confirmed")


def _package_outcome(run: RecordedRun, order_id: str, error_code: str | None) -> None:
    common: dict[str, Any] = {"channel": "acme-us", "amazon_order_id": order_id}
    if error_code is None:
        run.add(
            PACKAGES_SCHEDULED.name,
            PackageScheduled(
                **common,
                scheduled_package_id="PKG-1",
                slot_id="slot-1",
                slot_start=run.clock,
                slot_end=None,
                handover="PICKUP",
                status="ReadyForPickup",
                invoice_number="INV-9",
                tracking_id=None,
                size=PackedSize(
                    length_cm=Decimal(20), width_cm=Decimal(15), height_cm=Decimal(10), weight_g=Decimal(500)
                ),
                size_from="packer",
                attempts=1,
                scheduled_at=run.clock,
            ),
        )
    else:
        run.add(
            PACKAGES_SCHEDULED.name,
            PackageSchedulingFailed(
                **common, error_code=error_code, error_message="slot gone", attempts=3, failed_at=run.clock
            ),
        )


def test_an_easy_ship_refusal_fails_the_order_until_its_package_is_scheduled() -> None:
    run = RecordedRun()
    run.order_flow(OK)
    run.imported(OK, "SO00000001")
    _package_outcome(run, OK, "NoHandoverSlot")
    refused = derive(SELLER, OK, _facts(run.events, OK))
    assert (refused.row.status, refused.row.error_code) == ("Failed", "NoHandoverSlot")
    assert refused.history[-1]["summary"] == "Easy Ship package not scheduled: NoHandoverSlot slot gone"
    _package_outcome(run, OK, None)
    scheduled = derive(SELLER, OK, _facts(run.events, OK))
    assert scheduled.row.status != "Failed"
    assert scheduled.history[-1]["summary"].startswith("Easy Ship package PKG-1 scheduled for pickup from ")
    assert scheduled.history[-1]["summary"].endswith(", invoice INV-9")
