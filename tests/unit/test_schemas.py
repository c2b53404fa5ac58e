from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from ordersync.errors import InvalidEvent
from ordersync.schemas import codec
from ordersync.schemas.envelope import Envelope
from ordersync.schemas.events import InventoryLevelChanged, InvoiceIssued, ListingChanged, OrderDownloaded
from ordersync.schemas.topics import CATALOGUE, INVOICES_ISSUED, ORDERS_DOWNLOADED, by_name
from tests.factories import order

pytestmark = pytest.mark.unit


def test_catalogue_names_are_unique_and_every_external_topic_has_a_dlq() -> None:
    names = [spec.name for spec in CATALOGUE]
    assert len(names) == len(set(names))
    for spec in CATALOGUE:
        if spec.external:
            assert spec.dlq is not None
            assert spec.dlq.name == f"{spec.name}.dlq"
            assert by_name(spec.dlq.name) is spec.dlq
    for required in (
        "amazon.orders.downloaded",
        "amazon.orders.enriched",
        "orders.imported",
        "orders.import-failed",
        "invoices.issued",
        "shipments.requested",
        "shipments.confirmed",
        "shipments.failed",
        "inventory.levels",
        "ops.commands",
    ):
        assert required in names


def test_roundtrip_keeps_every_field() -> None:
    event = OrderDownloaded(channel="acme-us", order=order())
    envelope = Envelope.wrap(event, seller_id="A1ACME", correlation_id="A1ACME:111-1111111-1111111")
    raw = codec.encode(envelope)
    back = codec.decode(raw, ORDERS_DOWNLOADED)
    assert back == envelope
    assert back.payload_as(OrderDownloaded).order.items == order().items
    assert json.loads(raw)["event_type"] == "OrderDownloaded"


def test_events_are_frozen() -> None:
    event = OrderDownloaded(channel="acme-us", order=order())
    with pytest.raises(ValueError, match="frozen"):
        event.channel = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "not JSON"),
        (b"[]", "expected a JSON object"),
        (b'{"event_type": "Nope", "schema_version": 1}', "is not one of"),
        (b'{"event_type": "InvoiceIssued", "schema_version": 99, "payload": {}}', "newer than this build"),
        (b'{"event_type": "InvoiceIssued", "schema_version": 0}', "positive integer"),
        (None, "tombstone"),
    ],
)
def test_bad_input_is_an_invalid_event_with_a_reason(raw: bytes | None, message: str) -> None:
    with pytest.raises(InvalidEvent, match=message):
        codec.decode(raw, INVOICES_ISSUED)


def _invoice_json(quantity: int) -> bytes:
    return json.dumps(
        {
            "event_id": "6a8f6c0e-8f0e-4a55-9a43-1f5c2b9a0c11",
            "event_type": "InvoiceIssued",
            "schema_version": 1,
            "occurred_at": "2026-11-24T10:00:00Z",
            "seller_id": "A1ACME",
            "correlation_id": "x",
            "payload": {
                "invoice_number": "INV-1",
                "amazon_order_id": "111-1111111-1111111",
                "packages": [
                    {
                        "carrier_code": "UPS",
                        "tracking_number": "1Z999",
                        "ship_date": "2026-11-24T10:00:00Z",
                        "lines": [{"order_item_id": "1", "quantity": quantity}],
                    }
                ],
            },
        }
    ).encode()


def test_negative_quantity_is_rejected_with_its_location() -> None:
    assert codec.decode(_invoice_json(1), INVOICES_ISSUED).payload_as(InvoiceIssued).invoice_number == "INV-1"
    with pytest.raises(InvalidEvent, match=r"packages\.0\.lines\.0\.quantity"):
        codec.decode(_invoice_json(-3), INVOICES_ISSUED)


def test_upcaster_brings_an_old_version_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(InvoiceIssued, "schema_version", 2)
    monkeypatch.setattr(codec, "_UPCASTERS", {})

    @codec.upcaster("InvoiceIssued", 1)
    def rename(payload: dict[str, object]) -> dict[str, object]:
        return {**payload, "invoice_number": f"v1-{payload['invoice_number']}"}

    decoded = codec.decode(_invoice_json(1), INVOICES_ISSUED)
    assert decoded.schema_version == 2
    assert decoded.payload_as(InvoiceIssued).invoice_number == "v1-INV-1"


def test_a_seller_sku_longer_than_amazons_40_characters_is_refused_at_the_door() -> None:
    level = {
        "channel": "acme-us",
        "seller_sku": "S" * 40,
        "quantity": 1,
        "observed_at": "2026-01-01T00:00:00Z",
    }
    assert InventoryLevelChanged.model_validate(level).seller_sku == "S" * 40
    with pytest.raises(ValidationError, match="at most 40 characters"):
        InventoryLevelChanged.model_validate({**level, "seller_sku": "S" * 1_000_000})
    with pytest.raises(ValidationError, match="at most 40 characters"):
        ListingChanged(channel="acme-us", merchant_sku="M" * 41, client_sku_id="STK-1")


def test_an_order_downloaded_before_personal_data_was_sealed_still_reads() -> None:
    """Version 1 (no ``personal``, no delivery promise), as topics written before version 2 hold it."""
    current = Envelope.wrap(
        OrderDownloaded(channel="acme-us", order=order()), seller_id="A1ACME", correlation_id="c"
    )
    data = json.loads(codec.encode(current))
    data["schema_version"] = 1
    for field in (
        "personal",
        "earliest_delivery_date",
        "latest_delivery_date",
        "programs",
        "associated_orders",
    ):
        del data["payload"]["order"][field]
    decoded = codec.decode(json.dumps(data).encode(), ORDERS_DOWNLOADED)
    assert decoded.schema_version == 3
    assert decoded.payload_as(OrderDownloaded).order == order()
    data["schema_version"] = 2
    assert (
        codec.decode(json.dumps(data).encode(), ORDERS_DOWNLOADED).payload_as(OrderDownloaded).order
        == order()
    )
    # A build that knows only version 3 says to upgrade, instead of calling the record malformed.
    data["schema_version"] = 4
    with pytest.raises(InvalidEvent, match="newer than this build knows"):
        codec.decode(json.dumps(data).encode(), ORDERS_DOWNLOADED)
