"""Replay's pure parts: filters on envelopes and payloads, time bounds, the target check, which dead
letters a stage or topic name selects, and what a retry-writeback does with a package's state."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest

from ordersync.consumers.shipment_write_back import retry_verdict
from ordersync.ops.replay import (
    UNTIL_GRACE_MS,
    DeadLetter,
    ReplayRejected,
    ReplayRequest,
    TimeBounds,
    check_target,
    event_document,
    matches_all,
    parse_filter,
    parse_filters,
    parse_time,
    plan,
    select_dead_letters,
)
from ordersync.schemas.codec import encode
from ordersync.schemas.envelope import Envelope
from ordersync.schemas.events import EventDeadLettered, InvoiceIssued, OrderDownloaded, Package, ShippedLine
from ordersync.schemas.topics import (
    INVOICES_ISSUED,
    ORDERS_DOWNLOADED,
    ORDERS_ENRICHED,
    ORDERS_IMPORTED,
    SHIPMENTS_CONFIRMED,
    SHIPMENTS_REQUESTED,
    by_name,
)
from tests.factories import T0, item, order

pytestmark = pytest.mark.unit


def _downloaded(**order_fields: object) -> dict[str, object]:
    event = OrderDownloaded(channel="acme-us", order=order(**order_fields))
    document = event_document(
        encode(Envelope.wrap(event, seller_id="A1ACME", marketplace_id="ATVPDKIKX0DER", correlation_id="c-1"))
    )
    assert document is not None
    return document


def test_filter_syntax() -> None:
    assert parse_filter("seller_id=A1ACME").key == "seller_id"
    assert parse_filter("payload.order.order_status=Unshipped").value == "Unshipped"
    assert parse_filter("channel=").value == ""  # an explicit empty value is a value
    assert parse_filter("error=a=b").value == "a=b"  # only the first = separates
    for bad in ("seller_id", "=x", "bad key=1", "a..b=1"):
        with pytest.raises(ReplayRejected):
            parse_filter(bad)


def test_filters_match_envelope_fields_payload_fields_anywhere_and_dotted_paths() -> None:
    document = _downloaded(
        amazon_order_id="111-2222222-3333333",
        items=(item(seller_sku="SKU-A"), item(order_item_id="2", seller_sku="SKU-B", quantity_ordered=3)),
    )

    def keeps(*filters: str) -> bool:
        return matches_all(parse_filters(filters), document)

    assert keeps("seller_id=A1ACME", "event_type=OrderDownloaded", "marketplace_id=ATVPDKIKX0DER")
    assert keeps("correlation_id=c-1")
    assert keeps("channel=acme-us")  # a payload field
    assert keeps("amazon_order_id=111-2222222-3333333")  # nested in payload.order
    assert keeps("seller_sku=SKU-B")  # any item's
    assert keeps("quantity_ordered=3", "is_prime=false")  # numbers and booleans as typed
    assert keeps("payload.order.order_status=Unshipped")
    assert keeps("payload.order.items.seller_sku=SKU-A")
    assert keeps("amazon_order_id=111-*")  # wildcard
    assert not keeps("seller_id=OTHER")
    assert not keeps("seller_sku=SKU-C")
    assert not keeps("channel=acme-us", "seller_id=OTHER")  # all must match
    assert not keeps("order_status=Unshipped.x")
    # An envelope field is never looked up in the payload (and vice versa).
    assert not keeps("seller_id=A1ACME-not")
    assert not keeps("payload.seller_id=A1ACME")


def test_records_that_are_not_events_match_only_without_filters() -> None:
    assert event_document(b"{not json") is None
    assert event_document(b"[1, 2]") is None
    assert event_document(None) is None
    assert matches_all((), None)
    assert not matches_all(parse_filters(["seller_id=A1ACME"]), None)


def test_times_iso_relative_and_now() -> None:
    now = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    assert parse_time("2026-11-24T10:00:00Z", now=now) == datetime(2026, 11, 24, 10, tzinfo=UTC)
    assert parse_time("2026-11-24T10:00:00", now=now) == datetime(2026, 11, 24, 10, tzinfo=UTC)  # UTC
    assert parse_time("2026-11-24T11:00:00+01:00", now=now) == datetime(2026, 11, 24, 10, tzinfo=UTC)
    assert parse_time("2h", now=now) == now - timedelta(hours=2)
    assert parse_time("90m", now=now) == now - timedelta(minutes=90)
    assert parse_time("3d", now=now) == now - timedelta(days=3)
    assert parse_time("now", now=now) == now
    for bad in ("yesterday", "2h ago", "-2h", "2026-13-01"):
        with pytest.raises(ReplayRejected):
            parse_time(bad, now=now)


def test_time_bounds_keep_since_inclusive_until_exclusive() -> None:
    since = datetime(2026, 11, 24, 10, tzinfo=UTC)
    until = since + timedelta(hours=1)
    bounds = TimeBounds.of(since, until)
    ms = int(since.timestamp() * 1000)
    assert not bounds.contains(ms - 1)
    assert bounds.contains(ms)
    assert bounds.contains(ms + 3_600_000 - 1)
    assert not bounds.contains(ms + 3_600_000)
    # A record a little past --until may be followed by one inside (producers' clocks differ).
    assert not bounds.past_end(ms + 3_600_000)
    assert bounds.past_end(ms + 3_600_000 + UNTIL_GRACE_MS)
    open_ended = TimeBounds.of(since, None)
    assert open_ended.contains(ms + 10**12)
    assert not open_ended.past_end(ms + 10**12)
    with pytest.raises(ReplayRejected, match="not after"):
        TimeBounds.of(until, since)


def test_replay_needs_a_start_and_catalogue_topics() -> None:
    with pytest.raises(ReplayRejected, match="--from-offset"):
        plan(ReplayRequest(topic=SHIPMENTS_REQUESTED.name))
    with pytest.raises(ReplayRejected, match="not a catalogue topic"):
        plan(ReplayRequest(topic="no.such.topic", from_offset=0))
    with pytest.raises(ReplayRejected, match="not a catalogue topic"):
        plan(ReplayRequest(topic=SHIPMENTS_REQUESTED.name, to="elsewhere", from_offset=0))
    source, target, _ = plan(ReplayRequest(topic=SHIPMENTS_REQUESTED.name, from_offset=0))
    assert source is target is SHIPMENTS_REQUESTED


def test_a_target_must_accept_the_event_types() -> None:
    assert check_target(ORDERS_ENRICHED, ORDERS_ENRICHED, ()) == ("OrderEnriched",)
    with pytest.raises(ReplayRejected, match="does not accept OrderEnriched"):
        check_target(ORDERS_ENRICHED, ORDERS_DOWNLOADED, ())
    with pytest.raises(ReplayRejected, match="does not accept OrderImported, OrderUpdated"):
        check_target(ORDERS_IMPORTED, SHIPMENTS_CONFIRMED, ())
    with pytest.raises(ReplayRejected, match="carries no ShipmentConfirmed"):
        check_target(ORDERS_IMPORTED, ORDERS_IMPORTED, parse_filters(["event_type=ShipmentConfirmed"]))
    dlq = INVOICES_ISSUED.dlq
    assert dlq is not None
    with pytest.raises(ReplayRejected, match="dlq replay"):
        check_target(dlq, INVOICES_ISSUED, ())


def test_a_stage_or_topic_names_its_dead_letters() -> None:
    everything = select_dead_letters("invoice-issued")
    assert everything.stage == "invoice-issued"
    assert INVOICES_ISSUED.dlq is not None
    assert INVOICES_ISSUED.dlq.name in everything.topics
    assert all(by_name(t).events == (EventDeadLettered,) for t in everything.topics)
    assert select_dead_letters(INVOICES_ISSUED.name).topics == (INVOICES_ISSUED.dlq.name,)
    assert select_dead_letters(INVOICES_ISSUED.dlq.name).topics == (INVOICES_ISSUED.dlq.name,)
    for bad in ("no-such-stage", SHIPMENTS_CONFIRMED.name):  # shipments.confirmed has no DLQ
        with pytest.raises(ReplayRejected):
            select_dead_letters(bad)


def _letter(original: bytes, **fields: object) -> DeadLetter:
    letter = EventDeadLettered(
        source_topic=INVOICES_ISSUED.name,
        source_partition=1,
        source_offset=7,
        source_key="A1ACME:111-1111111-1111111",
        original_value_b64=base64.b64encode(original).decode(),
        stage="invoice-issued",
        error_type="InvalidEvent",
        error="order was never imported",
        dead_lettered_at=T0,
        **fields,  # type: ignore[arg-type]
    )
    assert INVOICES_ISSUED.dlq is not None
    return DeadLetter(
        dlq_topic=INVOICES_ISSUED.dlq.name, partition=0, offset=3, timestamp_ms=0, key=None, letter=letter
    )


def test_dead_letter_filters_match_the_letter_then_the_original_event() -> None:
    invoice = InvoiceIssued(
        invoice_number="INV-1",
        amazon_order_id="111-1111111-1111111",
        packages=(
            Package(
                carrier_code="UPS",
                tracking_number="1Z",
                ship_date=T0,
                lines=(ShippedLine(order_item_id="1", quantity=1),),
            ),
        ),
    )
    dead = _letter(encode(Envelope.wrap(invoice, seller_id="A1ACME", correlation_id="INV-1")))
    assert dead.position == "0:3"
    assert json.loads(dead.original_text() or "")["payload"]["invoice_number"] == "INV-1"

    def keeps(*filters: str) -> bool:
        return dead.matches(parse_filters(filters))

    assert keeps("stage=invoice-issued", "error_type=InvalidEvent", "source_partition=1")
    assert keeps("seller_id=A1ACME", "event_type=InvoiceIssued", "invoice_number=INV-1")
    assert keeps("error=*never imported*")
    assert not keeps("stage=import")
    assert not keeps("invoice_number=INV-2")
    garbage = _letter(b"\xff\xfe not text")
    assert garbage.original_text() is None
    assert garbage.matches(parse_filters(["stage=invoice-issued"]))
    assert not garbage.matches(parse_filters(["seller_id=A1ACME"]))


def test_retry_writeback_sends_failed_packages_once_per_command() -> None:
    assert retry_verdict({"status": "Failed"}, "cmd-1") == "retry"
    assert retry_verdict({"status": "Failed", "retried_by": "cmd-0"}, "cmd-1") == "retry"
    # The same command delivered again after its retry failed: not sent a third time.
    assert retry_verdict({"status": "Failed", "retried_by": "cmd-1"}, "cmd-1") == "skip"
    # The worker stopped in the middle of this command's retry: carry on.
    assert retry_verdict({"status": "Retrying", "retried_by": "cmd-1"}, "cmd-1") == "resume"
    assert retry_verdict({"status": "Pending", "retried_by": "cmd-1"}, "cmd-1") == "resume"
    for status in ("Success", "NotUploaded", "Pending", "Retrying"):
        assert retry_verdict({"status": status}, "cmd-1") == "skip"
    assert retry_verdict({}, "cmd-1") == "skip"
