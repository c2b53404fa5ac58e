"""The client's Easy Ship and Catalog Items pieces without Amazon: request bodies as Amazon's models
describe them, and Amazon's answers read into ordersync's values."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from lxml import etree
from openapi_schema_validator import OAS30Validator

from ordersync.amazon.catalog import CatalogItem, Measured, item_from_json, item_to_json, parse_item
from ordersync.amazon.easyship import (
    HandoverSlot,
    PackageSize,
    package_details,
    parse_bulk,
    parse_package,
    parse_slots,
    slots_request,
)
from ordersync.amazon.feeds import (
    EasyShipDocumentReference,
    EasyShipDocumentsMessage,
    easyship_document_references,
    easyship_documents_feed,
)
from ordersync.amazon.models import load_model
from ordersync.amazon.operations import api_for_operation
from ordersync.cli.products import describe
from ordersync.consumers.packing_documents import references_by_message

pytestmark = pytest.mark.unit

ORDER_ID = "403-1234567-1234567"
INDIA = "A21TJRUUN4KGV"


def _validator(api: str, definition: str) -> OAS30Validator:
    """A validator of one of the model's definitions (Swagger 2.0 definitions are JSON schemas)."""
    model = load_model(api)
    schema: dict[str, Any] = {"$ref": f"#/definitions/{definition}", "definitions": model["definitions"]}
    return OAS30Validator(schema)


def test_a_slots_request_is_what_the_model_asks_for() -> None:
    size = PackageSize(Decimal("20.5"), Decimal(15), Decimal(10), Decimal(450))
    body = slots_request(INDIA, ORDER_ID, size)
    _validator("easyship", "ListHandoverSlotsRequest").validate(body)
    assert body["packageDimensions"] == {"length": 20.5, "width": 15.0, "height": 10.0, "unit": "cm"}
    assert body["packageWeight"] == {"value": 450.0, "unit": "g"}


def test_a_size_below_amazons_floors_is_named_before_any_call() -> None:
    assert PackageSize(Decimal(1), Decimal(1), Decimal(1), Decimal(11)).problems() == []
    problems = PackageSize(Decimal(0), Decimal(1), Decimal("0.001"), Decimal(10)).problems()
    assert problems == [
        "length 0 cm is below Amazon's minimum of 0.01 cm",
        "height 0.001 cm is below Amazon's minimum of 0.01 cm",
        "weight 10 g is below Amazon's minimum of 11 g",
    ]


def test_slots_come_earliest_first_and_a_package_is_scheduled_in_one() -> None:
    body = {
        "amazonOrderId": ORDER_ID,
        "timeSlots": [
            {"slotId": "late", "startTime": "2026-12-06T14:00:00Z", "endTime": "2026-12-06T16:00:00Z"},
            {
                "slotId": "early",
                "startTime": "2026-12-06T09:00:00Z",
                "endTime": "2026-12-06T11:00:00Z",
                "handoverMethod": "PICKUP",
            },
        ],
    }
    _validator("easyship", "ListHandoverSlotsResponse").validate(body)
    early, late = parse_slots(body)
    assert (early.slot_id, late.slot_id) == ("early", "late")
    assert early.start == datetime(2026, 12, 6, 9, tzinfo=UTC)
    assert early.handover_method == "PICKUP"
    request = {
        "amazonOrderId": ORDER_ID,
        "marketplaceId": INDIA,
        "packageDetails": package_details(early, ("111",), "BOX-1"),
    }
    _validator("easyship", "CreateScheduledPackageRequest").validate(request)
    assert request["packageDetails"] == {
        "packageTimeSlot": {"slotId": "early"},
        "packageItems": [{"orderItemId": "111"}],
        "packageIdentifier": "BOX-1",
    }


def _package(order_id: str = ORDER_ID) -> dict[str, Any]:
    return {
        "scheduledPackageId": {"amazonOrderId": order_id, "packageId": "PKG-1"},
        "packageDimensions": {"length": 20.5, "width": 15, "height": 10, "unit": "cm"},
        "packageWeight": {"value": 450, "unit": "g"},
        "packageTimeSlot": {"slotId": "early", "startTime": "2026-12-06T09:00:00Z"},
        "invoice": {"invoiceNumber": "INV-7", "invoiceDate": "2026-12-05T10:00:00Z"},
        "packageStatus": "ReadyForPickup",
        "trackingDetails": {"trackingId": "TRK-9"},
    }


def test_a_scheduled_package_reads_its_slot_status_invoice_and_tracking() -> None:
    raw = _package()
    _validator("easyship", "Package").validate(raw)
    package = parse_package(raw)
    assert package.amazon_order_id == ORDER_ID
    assert package.package_id == "PKG-1"
    assert package.slot == HandoverSlot("early", datetime(2026, 12, 6, 9, tzinfo=UTC))
    assert (package.status, package.invoice_number, package.tracking_id) == (
        "ReadyForPickup",
        "INV-7",
        "TRK-9",
    )
    assert package.invoice_date == datetime(2026, 12, 5, 10, tzinfo=UTC)
    with pytest.raises(ValueError, match="without its order id"):
        parse_package({"packageTimeSlot": {"slotId": "x"}})


def test_a_bulk_answer_separates_the_scheduled_from_the_refused() -> None:
    body = {
        "scheduledPackages": [_package()],
        "rejectedOrders": [
            {
                "amazonOrderId": "403-7654321-7654321",
                "error": {"code": "InvalidInput", "message": "slot full"},
            }
        ],
        "printableDocumentsUrl": "https://example.com/labels.zip",
    }
    _validator("easyship", "CreateScheduledPackagesResponse").validate(body)
    bulk = parse_bulk(body)
    assert [p.amazon_order_id for p in bulk.scheduled] == [ORDER_ID]
    assert [(r.amazon_order_id, r.code, r.message) for r in bulk.rejected] == [
        ("403-7654321-7654321", "InvalidInput", "slot full")
    ]
    assert bulk.documents_url == "https://example.com/labels.zip"


def test_a_catalog_item_reads_its_marketplaces_title_image_identifiers_and_sizes_in_cm_and_g() -> None:
    raw = {
        "asin": "B000000001",
        "summaries": [
            {"marketplaceId": "ATVPDKIKX0DER", "itemName": "US title"},
            {"marketplaceId": INDIA, "itemName": "Steel bottle 1 l", "brand": "Acme"},
        ],
        "images": [
            {
                "marketplaceId": INDIA,
                "images": [
                    {"variant": "PT01", "link": "https://img/pt01.jpg", "height": 2000, "width": 2000},
                    {"variant": "MAIN", "link": "https://img/small.jpg", "height": 75, "width": 75},
                    {"variant": "MAIN", "link": "https://img/main.jpg", "height": 1000, "width": 1000},
                ],
            }
        ],
        "dimensions": [
            {
                "marketplaceId": INDIA,
                "item": {
                    "length": {"unit": "inches", "value": 10},
                    "width": {"unit": "centimeters", "value": 8},
                    "height": {"unit": "millimeters", "value": 250},
                    "weight": {"unit": "pounds", "value": 1.5},
                },
                "package": {
                    "weight": {"unit": "kilograms", "value": 0.8},
                    "length": {"unit": "parsecs", "value": 1},
                },
            }
        ],
        "identifiers": [
            {
                "marketplaceId": INDIA,
                "identifiers": [{"identifierType": "EAN", "identifier": "4006381333931"}],
            }
        ],
    }
    _validator("catalog-items", "Item").validate(raw)
    item = parse_item(raw, INDIA)
    assert (item.title, item.brand) == ("Steel bottle 1 l", "Acme")
    assert item.image_url == "https://img/main.jpg"
    assert item.item == Measured(Decimal("25.40"), Decimal("8.00"), Decimal("25.00"), Decimal("680.39"))
    assert item.item.complete
    # An unknown unit is not guessed.
    assert item.package == Measured(weight_g=Decimal("800.00"))
    assert not item.package.complete
    assert item.identifiers == {"EAN": "4006381333931"}
    assert parse_item({"asin": "B000000001"}, INDIA).title is None


def test_easy_ship_counts_for_the_write_back_and_the_catalog_for_the_listings() -> None:
    assert api_for_operation("createScheduledPackage") == "feeds"
    assert api_for_operation("listHandoverSlots") == "feeds"
    assert api_for_operation("getCatalogItem") == "listings"
    assert api_for_operation("getOrders") == "orders"


def test_a_cached_product_reads_back_exactly_and_prints_for_a_person() -> None:
    item = CatalogItem(
        asin="B000000001",
        marketplace_id=INDIA,
        title="Steel bottle 1 l",
        image_url="https://img/main.jpg",
        item=Measured(Decimal("25.40"), Decimal("8.00"), Decimal("25.00"), Decimal("680.39")),
        package=Measured(weight_g=Decimal("800.00")),
        identifiers={"EAN": "4006381333931"},
    )
    assert item_from_json(item_to_json(item)) == item
    assert describe(item, cached=True) == [
        "B000000001 in A21TJRUUN4KGV (cached)",
        "  title:   Steel bottle 1 l",
        "  brand:   -",
        "  image:   https://img/main.jpg",
        "  item:    25.40 x 8.00 x 25.00 cm, 680.39 g",
        "  package: dimensions unknown, 800.00 g",
        "  ids:     EAN 4006381333931",
    ]


def test_a_documents_feed_names_each_order_and_its_documents_and_its_references_are_read_back() -> None:
    document = easyship_documents_feed(
        "A1ACME",
        [EasyShipDocumentsMessage(1, ORDER_ID), EasyShipDocumentsMessage(2, "403-1-2", ("Warranty",))],
    )
    root = etree.fromstring(document)
    assert root.findtext("MessageType") == "EasyShipDocument"
    first, second = root.findall("Message")
    assert first.findtext("EasyShipDocument/AmazonOrderID") == ORDER_ID
    assert [d.text for d in first.findall("EasyShipDocument/DocumentType")] == ["ShippingLabel", "Invoice"]
    assert [d.text for d in second.findall("EasyShipDocument/DocumentType")] == ["Warranty"]

    # Wherever the reference sits, in a namespace or not, with or without its message's id.
    report = (
        b'<AmazonEnvelope xmlns="urn:x"><Message><ProcessingReport><StatusCode>Complete</StatusCode>'
        b"<Result><MessageID>1</MessageID><AmazonOrderID>" + ORDER_ID.encode() + b"</AmazonOrderID>"
        b"<ReportReferenceId>REF-1</ReportReferenceId></Result>"
        b"<Other><ReportReferenceId>REF-2</ReportReferenceId></Other><Empty><ReportReferenceId/></Empty>"
        b"</ProcessingReport></Message></AmazonEnvelope>"
    )
    assert easyship_document_references(report) == (
        EasyShipDocumentReference(1, ORDER_ID, "REF-1"),
        EasyShipDocumentReference(None, None, "REF-2"),
    )
    with pytest.raises(ValueError, match="not an XML processing report"):
        easyship_document_references(b"{not xml")


def test_each_message_gets_its_report_reference_by_message_by_order_or_the_whole_feeds() -> None:
    def report(*results: str) -> bytes:
        return (
            "<AmazonEnvelope><Message><MessageID>1</MessageID><ProcessingReport>"
            + "".join(f"<EasyShipDocumentResult>{r}</EasyShipDocumentResult>" for r in results)
            + "</ProcessingReport></Message></AmazonEnvelope>"
        ).encode()

    orders = {1: "111-1", 2: "222-2", 3: "333-3"}
    by_message = report(
        "<MessageID>2</MessageID><ReportReferenceId>R2</ReportReferenceId>",
        "<AmazonOrderID>111-1</AmazonOrderID><ReportReferenceId>R1</ReportReferenceId>",
    )
    assert references_by_message(by_message, orders) == {2: "R2", 1: "R1"}
    # One reference naming neither message nor order: the feed's one document, for every message.
    assert references_by_message(report("<ReportReferenceId>ALL</ReportReferenceId>"), orders) == {
        1: "ALL",
        2: "ALL",
        3: "ALL",
    }
    # Two such references cannot be told apart: none is guessed.
    ambiguous = report("<ReportReferenceId>A</ReportReferenceId>", "<ReportReferenceId>B</ReportReferenceId>")
    assert references_by_message(ambiguous, orders) == {}
