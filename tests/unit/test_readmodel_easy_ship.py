"""The fold of an Easy Ship package and its documents (packages.scheduled, packages.documents): the
package as scheduled, its documents, the refusals as the order's failures until a later success, and the
grid's "packed, awaiting pickup" row flag."""

from __future__ import annotations

import hashlib
import itertools
import json
from datetime import timedelta
from decimal import Decimal

import pytest

from ordersync.schemas.events import (
    OrderCancellationResult,
    OrderUpdated,
    PackageDocumentsFailed,
    PackageDocumentsReady,
    PackageScheduled,
    PackageSchedulingFailed,
    PackedSize,
)
from ordersync.schemas.topics import (
    ORDERS_CANCELLATION_RESULTS,
    ORDERS_IMPORTED,
    PACKAGES_DOCUMENTS,
    PACKAGES_SCHEDULED,
)
from ordersync.state.readmodel import FOLDED_TOPICS, Fact, derive, facts_of
from ordersync.state.readmodel.facts import EasyShipFact, decode_fact, encode_fact
from tests.factories import CHANNEL, OK, SELLER, RecordedRun

pytestmark = pytest.mark.unit

PDF_BYTES = b"%PDF-1.4 label and invoice"


def _facts(run: RecordedRun, order_id: str = OK) -> list[Fact]:
    return [
        fact
        for topic, envelope in run.events
        for target, fact in facts_of(topic, envelope)
        if target.amazon_order_id == order_id and target.seller_id == SELLER
    ]


def _scheduled(run: RecordedRun, order_id: str = OK, *, status: str = "ReadyForPickup") -> None:
    run.add(
        PACKAGES_SCHEDULED.name,
        PackageScheduled(
            channel=CHANNEL,
            amazon_order_id=order_id,
            scheduled_package_id="PKG-1",
            slot_id="slot-1",
            slot_start=run.clock + timedelta(hours=2),
            slot_end=run.clock + timedelta(hours=4),
            handover="PICKUP",
            status=status,
            invoice_number="INV-9",
            tracking_id="TRK-77",
            size=PackedSize(
                length_cm=Decimal(20), width_cm=Decimal(15), height_cm=Decimal(10), weight_g=Decimal(500)
            ),
            size_from="catalog",
            attempts=1,
            scheduled_at=run.clock,
        ),
    )


def _refused(run: RecordedRun, order_id: str = OK) -> None:
    run.add(
        PACKAGES_SCHEDULED.name,
        PackageSchedulingFailed(
            channel=CHANNEL,
            amazon_order_id=order_id,
            error_code="NoHandoverSlot",
            error_message="slot gone",
            attempts=3,
            failed_at=run.clock,
        ),
    )


def _documents(run: RecordedRun, order_id: str = OK, reference: str = "REF-1") -> str:
    location = f"file:///documents/easyship/{SELLER}/{order_id}/{reference}.pdf"
    run.add(
        PACKAGES_DOCUMENTS.name,
        PackageDocumentsReady(
            channel=CHANNEL,
            amazon_order_id=order_id,
            scheduled_package_id="PKG-1",
            document_types=("ShippingLabel", "Invoice"),
            feed_id="FEED-1",
            report_reference_id=reference,
            location=location,
            size_bytes=len(PDF_BYTES),
            sha256=hashlib.sha256(PDF_BYTES).hexdigest(),
            stored_at=run.clock,
        ),
    )
    return location


def _documents_refused(run: RecordedRun, order_id: str = OK) -> None:
    run.add(
        PACKAGES_DOCUMENTS.name,
        PackageDocumentsFailed(
            channel=CHANNEL,
            amazon_order_id=order_id,
            document_types=("ShippingLabel",),
            feed_id="FEED-1",
            error_code="InvalidOrderState",
            error_message="the package is not scheduled",
            failed_at=run.clock,
        ),
    )


def _imported_run() -> RecordedRun:
    run = RecordedRun()
    run.order_flow(OK)
    run.imported(OK, "SO00000001")
    return run


def test_the_documents_topic_is_folded() -> None:
    assert PACKAGES_DOCUMENTS in FOLDED_TOPICS
    assert PACKAGES_SCHEDULED in FOLDED_TOPICS


def test_a_scheduled_package_with_its_documents_is_in_the_detail() -> None:
    run = _imported_run()
    _scheduled(run)
    location = _documents(run)
    derived = derive(SELLER, OK, _facts(run))
    ship = derived.easy_ship
    assert ship is not None
    assert ship["outcome"] == "scheduled"
    assert (ship["scheduled_package_id"], ship["handover"], ship["status"]) == (
        "PKG-1",
        "PICKUP",
        "ReadyForPickup",
    )
    assert (ship["invoice_number"], ship["tracking_id"], ship["size_from"]) == ("INV-9", "TRK-77", "catalog")
    assert ship["size"] == {"length_cm": "20", "width_cm": "15", "height_cm": "10", "weight_g": "500"}
    assert ship["slot_start"] < ship["slot_end"]
    (document,) = ship["documents"]
    assert document["location"] == location
    assert document["document_types"] == ["ShippingLabel", "Invoice"]
    assert document["size_bytes"] == len(PDF_BYTES)
    assert document["report_reference_id"] == "REF-1"
    assert document["stored_at"]
    assert ship["documents_error"] is None
    assert derived.row.status == "Success"
    assert derived.row.awaiting_pickup
    assert derived.history[-1]["summary"].startswith("Easy Ship documents stored (ShippingLabel, Invoice")


def test_the_fold_of_easy_ship_facts_is_order_insensitive() -> None:
    run = _imported_run()
    _refused(run)
    _scheduled(run)
    _documents_refused(run)
    _documents(run)
    _documents(run, reference="REF-2")
    facts = _facts(run)
    reference = derive(SELLER, OK, facts)
    for permutation in itertools.islice(itertools.permutations(facts), 300):
        derived = derive(SELLER, OK, permutation)
        assert derived.row == reference.row
        assert derived.easy_ship == reference.easy_ship
    assert reference.easy_ship is not None
    assert [d["report_reference_id"] for d in reference.easy_ship["documents"]] == ["REF-1", "REF-2"]


def test_a_scheduling_refusal_is_shown_and_fails_the_order() -> None:
    run = _imported_run()
    _refused(run)
    derived = derive(SELLER, OK, _facts(run))
    assert derived.easy_ship is not None
    assert derived.easy_ship["outcome"] == "failed"
    assert (derived.easy_ship["error_code"], derived.easy_ship["error_message"]) == (
        "NoHandoverSlot",
        "slot gone",
    )
    assert derived.easy_ship["documents"] == []
    assert derived.row.status == "Failed"
    assert not derived.row.awaiting_pickup


def test_a_documents_refusal_fails_the_order_until_documents_are_stored() -> None:
    run = _imported_run()
    _scheduled(run)
    _documents_refused(run)
    refused = derive(SELLER, OK, _facts(run))
    assert refused.easy_ship is not None
    error = refused.easy_ship["documents_error"]
    assert (error["code"], error["message"]) == ("InvalidOrderState", "the package is not scheduled")
    assert (refused.row.status, refused.row.error_code, refused.failed_stages) == (
        "Failed",
        "InvalidOrderState",
        ("write-back",),
    )
    assert refused.row.awaiting_pickup  # still scheduled: the refusal is about its papers
    _documents(run)
    stored = derive(SELLER, OK, _facts(run))
    assert stored.easy_ship is not None
    assert stored.easy_ship["documents_error"] is None
    assert stored.row.status == "Success"
    assert [e["active"] for e in stored.errors] == [False]


@pytest.mark.parametrize("status", ["PickedUp", "Delivered", "LabelCanceled"])
def test_a_package_past_its_handover_is_not_awaiting_pickup(status: str) -> None:
    run = _imported_run()
    _scheduled(run, status=status)
    assert not derive(SELLER, OK, _facts(run)).row.awaiting_pickup


def _shipped_on_amazon(run: RecordedRun, status: str) -> None:
    run.add(
        ORDERS_IMPORTED.name,
        OrderUpdated(
            channel=CHANNEL,
            amazon_order_id=OK,
            sales_order_code="SO00000001",
            order_status=status,
            changed_at=run.clock + timedelta(minutes=1),
            lines=(),
        ),
    )


@pytest.mark.parametrize("amazon_status", ["Shipped", "Canceled"])
def test_an_order_shipped_or_cancelled_on_amazon_is_not_awaiting_pickup(amazon_status: str) -> None:
    run = _imported_run()
    _scheduled(run)
    assert derive(SELLER, OK, _facts(run)).row.awaiting_pickup
    _shipped_on_amazon(run, amazon_status)
    assert not derive(SELLER, OK, _facts(run)).row.awaiting_pickup


def test_a_cancellation_accepted_ends_the_wait_for_pickup() -> None:
    run = _imported_run()
    _scheduled(run)
    run.add(
        ORDERS_CANCELLATION_RESULTS.name,
        OrderCancellationResult(channel=CHANNEL, amazon_order_id=OK, cancelled=True, reason="NoInventory"),
    )
    assert not derive(SELLER, OK, _facts(run)).row.awaiting_pickup


def test_an_order_without_easy_ship_has_no_package() -> None:
    derived = derive(SELLER, OK, _facts(_imported_run()))
    assert derived.easy_ship is None
    assert not derived.row.awaiting_pickup


def test_easy_ship_facts_survive_redis() -> None:
    run = _imported_run()
    _scheduled(run)
    _documents(run)
    _documents_refused(run)
    for fact in _facts(run)[-3:]:
        assert decode_fact(fact.event_id, encode_fact(fact)) == fact


def test_a_scheduled_fact_stored_before_the_later_fields_still_reads() -> None:
    """Stored by the first version: no slot end, status, tracking or size."""
    old = (
        '{"at":"2026-11-20T12:05:00.000000Z","d":{"channel":"acme-us","handover":"PICKUP",'
        '"invoice_number":"INV-9","scheduled_package_id":"PKG-1","slot_start":"2026-11-20T14:00:00.000000Z"},'
        '"summary":"Easy Ship package PKG-1 scheduled","topic":"packages.scheduled",'
        '"type":"PackageScheduled"}'
    )
    fact = decode_fact("00000000-0000-0000-0000-000000000001", old)
    assert isinstance(fact.data, EasyShipFact)
    assert (fact.data.status, fact.data.tracking_id, fact.data.length_cm) == (None, None, None)
    derived = derive(SELLER, OK, [fact])
    assert derived.easy_ship is not None
    assert derived.easy_ship["size"] is None
    assert derived.row.awaiting_pickup  # no status known: scheduled and nothing says it left
    # Written back unchanged: the fields added later are left out while absent.
    assert encode_fact(fact) == json.dumps(json.loads(old), separators=(",", ":"), sort_keys=True)
