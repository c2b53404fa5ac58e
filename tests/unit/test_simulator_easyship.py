"""The simulator's Easy Ship API 2022-03-23 and POST_EASYSHIP_DOCUMENTS feed, through SimulatorState
(no HTTP): slots, validation, scheduling races, bulk partial success, the package's life on the clock,
and the documents feed's PDFs."""

from __future__ import annotations

import io
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from lxml import etree
from pypdf import PdfReader

from ordersync.simulator.easyship_documents import CODE_NOT_SCHEDULED
from ordersync.simulator.state import OPERATIONS, SimResponse, SimulatorState
from ordersync.simulator.testing import TEST_SELLER, access_token, tiny_scenario, validate_response

pytestmark = pytest.mark.unit

INDIA = "A21TJRUUN4KGV"
XML = "text/xml; charset=UTF-8"
PACKAGE = "/easyShip/2022-03-23/package"
DIMENSIONS = {"length": 20, "width": 15, "height": 10, "unit": "cm"}
WEIGHT = {"value": 500, "unit": "g"}
FAST_FEEDS = {"queue_delay_s": [10, 10], "duration_s": [60, 60], "stall_share": 0, "compress_reports": False}


def make_state(easy_ship: dict[str, Any] | None = None) -> tuple[SimulatorState, str]:
    scenario = tiny_scenario(
        seller={"region": "eu", "marketplaces": [INDIA]},
        orders={"count": 6, "easy_ship_share": 1.0},
        easy_ship=easy_ship or {},
        feeds=FAST_FEEDS,
    )
    state = SimulatorState(scenario)
    return state, access_token(state)


def call(
    state: SimulatorState, token: str, operation: str, path: str = PACKAGE, **kwargs: Any
) -> SimResponse:
    """One request, checked against the model's response for its status."""
    response = state.call(operation, access_token=token, path=path, base_url="http://sim", **kwargs)
    op = OPERATIONS[operation]
    validate_response(op.api, op.operation_id, response.status, response.body, response.headers)
    return response


def easy_ship_order(state: SimulatorState) -> str:
    return str(
        state.add_order({"marketplace_id": INDIA, "programs": ["AMAZON_EASY_SHIP"]})["amazon_order_id"]
    )


def list_slots(
    state: SimulatorState, token: str, order_id: str, dimensions: Any = None, weight: Any = None
) -> SimResponse:
    body = {
        "marketplaceId": INDIA,
        "amazonOrderId": order_id,
        "packageDimensions": DIMENSIONS if dimensions is None else dimensions,
        "packageWeight": WEIGHT if weight is None else weight,
    }
    return call(state, token, "listHandoverSlots", "/easyShip/2022-03-23/timeSlot", body=body)


def schedule(state: SimulatorState, token: str, order_id: str, slot_id: str, **details: Any) -> SimResponse:
    body = {
        "marketplaceId": INDIA,
        "amazonOrderId": order_id,
        "packageDetails": {"packageTimeSlot": {"slotId": slot_id}, **details},
    }
    return call(state, token, "createScheduledPackage", body=body)


def error_code(response: SimResponse) -> str:
    return str(response.body["errors"][0]["code"])


def test_india_easy_ship_orders_carry_the_programme_in_both_order_apis() -> None:
    state, token = make_state()
    order = next(o for o in state.book.orders.values() if o.current.status == "Unshipped")
    assert order.marketplace.marketplace_id == INDIA
    v0 = call(
        state,
        token,
        "getOrder",
        f"/orders/v0/orders/{order.order_id}",
        path_params={"orderId": order.order_id},
    )
    assert v0.body["payload"]["EasyShipShipmentStatus"] == "PendingPickUp"
    new = call(
        state,
        token,
        "getOrder@2026-01-01",
        f"/orders/2026-01-01/orders/{order.order_id}",
        path_params={"orderId": order.order_id},
    )
    assert "AMAZON_EASY_SHIP" in new.body["order"]["programs"]


def test_list_handover_slots_offers_future_slots_of_the_marketplace() -> None:
    state, token = make_state()
    order_id = easy_ship_order(state)
    response = list_slots(state, token, order_id)
    assert response.status == 200
    slots = response.body["timeSlots"]
    # 09:00 now, 1 h cut-off: today's 10:00 slot is gone, 14:00 and the next days' are offered.
    assert [s["startTime"] for s in slots][:3] == [
        "2026-01-05T14:00:00Z",
        "2026-01-06T10:00:00Z",
        "2026-01-06T14:00:00Z",
    ]
    assert all(s["handoverMethod"] == "PICKUP" for s in slots)


@pytest.mark.parametrize("any_case", [True, False])
def test_the_units_of_amazons_guide_are_a_scenario_switch(any_case: bool) -> None:
    # The model spells "cm" and "g"; Amazon's use case guide sends "Cm" and "G".
    state, token = make_state({"units_any_case": any_case})
    guide = list_slots(
        state, token, easy_ship_order(state), {**DIMENSIONS, "unit": "Cm"}, {"value": 500, "unit": "G"}
    )
    assert guide.status == (200 if any_case else 400), guide.body
    assert list_slots(state, token, easy_ship_order(state)).status == 200


@pytest.mark.parametrize(
    ("dimensions", "weight", "mentioned"),
    [
        ({**DIMENSIONS, "length": 0}, WEIGHT, "packageDimensions.length"),
        ({**DIMENSIONS, "width": -3}, WEIGHT, "packageDimensions.width"),
        ({**DIMENSIONS, "unit": "in"}, WEIGHT, "packageDimensions.unit"),
        (DIMENSIONS, {"value": 5, "unit": "g"}, "packageWeight.value must be at least 11"),
        (DIMENSIONS, {"value": 500, "unit": "kg"}, "packageWeight.unit"),
        ({"length": 20, "width": 15, "unit": "cm"}, WEIGHT, "packageDimensions.height"),
    ],
)
def test_list_handover_slots_refuses_sizes_the_model_forbids(
    dimensions: dict[str, Any], weight: dict[str, Any], mentioned: str
) -> None:
    state, token = make_state()
    response = list_slots(state, token, easy_ship_order(state), dimensions, weight)
    assert response.status == 400
    assert error_code(response) == "InvalidInput"
    assert mentioned in response.body["errors"][0]["details"]


def test_a_package_over_the_limits_gets_no_slot() -> None:
    state, token = make_state({"max_side_cm": 50, "max_weight_g": 10_000})
    order_id = easy_ship_order(state)
    too_long = list_slots(state, token, order_id, {**DIMENSIONS, "length": 51})
    too_heavy = list_slots(state, token, order_id, weight={"value": 10_001, "unit": "g"})
    for response in (too_long, too_heavy):
        assert (response.status, error_code(response)) == (404, "TimeSlotNotAvailable")
    assert "length 51.0 cm" in too_long.body["errors"][0]["details"]
    assert "weight 10001.0 g" in too_heavy.body["errors"][0]["details"]


def test_only_unshipped_easy_ship_orders_of_a_supported_marketplace_can_be_scheduled() -> None:
    state, token = make_state()
    plain = str(state.add_order({"marketplace_id": INDIA})["amazon_order_id"])
    refused = list_slots(state, token, plain)
    assert (refused.status, error_code(refused)) == (400, "InvalidInput")
    assert "not an Amazon Easy Ship order" in refused.body["errors"][0]["details"]
    shipped = easy_ship_order(state)
    state.set_order_status(shipped, "Canceled")
    slot_id = state.easyship.slots(INDIA, state.now())[0].slot_id
    canceled = schedule(state, token, shipped, slot_id)
    assert (canceled.status, error_code(canceled)) == (404, "InvalidOrderState")
    unknown = schedule(state, token, "999-0000000-0000000", slot_id)
    assert (unknown.status, error_code(unknown)) == (404, "ResourceNotFound")
    body = {"marketplaceId": "ATVPDKIKX0DER", "amazonOrderId": easy_ship_order(state)}
    region = call(state, token, "createScheduledPackage", body={**body, "packageDetails": {}})
    assert (region.status, error_code(region)) == (404, "RegionNotSupported")


def test_a_slot_taken_between_listing_and_scheduling_must_be_chosen_again() -> None:
    state, token = make_state({"slot_capacity": 1})
    first, second = easy_ship_order(state), easy_ship_order(state)
    offered = list_slots(state, token, second).body["timeSlots"]
    slot_id = offered[0]["slotId"]
    assert schedule(state, token, first, slot_id).status == 200  # someone else takes the last place
    gone = schedule(state, token, second, slot_id)
    assert (gone.status, error_code(gone)) == (400, "RetryableAfterGettingNewSlots")
    again = list_slots(state, token, second).body["timeSlots"]
    assert slot_id not in [s["slotId"] for s in again]
    assert schedule(state, token, second, again[0]["slotId"]).status == 200


def test_scheduling_twice_an_unknown_slot_or_a_started_one_is_refused() -> None:
    state, token = make_state()
    order_id = easy_ship_order(state)
    slot = list_slots(state, token, order_id).body["timeSlots"][0]
    bogus = schedule(state, token, order_id, "ES-A21TJRUUN4KGV-20260105-03")
    assert (bogus.status, error_code(bogus)) == (400, "InvalidTimeSlotId")
    state.advance_clock(5 * 3600)  # 14:00: the slot started
    late = schedule(state, token, order_id, slot["slotId"])
    assert (late.status, error_code(late)) == (400, "ScheduleWindowExpired")
    later_slot = state.easyship.slots(INDIA, state.now())[0].slot_id
    assert schedule(state, token, order_id, later_slot).status == 200
    twice = schedule(state, token, order_id, later_slot)
    assert (twice.status, error_code(twice)) == (400, "ScheduledPackageAlreadyExists")


def test_bulk_scheduling_reports_each_order_partial_success() -> None:
    state, token = make_state()
    good = easy_ship_order(state)
    plain = str(state.add_order({"marketplace_id": INDIA})["amazon_order_id"])
    body = {
        "marketplaceId": INDIA,
        "labelFormat": "PDF",
        "orderScheduleDetailsList": [
            {"amazonOrderId": good},
            {"amazonOrderId": plain},
            {"amazonOrderId": "999-0000000-0000000"},
        ],
    }
    response = call(
        state, token, "createScheduledPackageBulk", "/easyShip/2022-03-23/packages/bulk", body=body
    )
    assert response.status == 200
    assert [p["scheduledPackageId"]["amazonOrderId"] for p in response.body["scheduledPackages"]] == [good]
    # Without a preferred slot Amazon picks the earliest one.
    earliest = state.easyship.slots(INDIA, state.now())[0]
    assert response.body["scheduledPackages"][0]["packageTimeSlot"]["slotId"] == earliest.slot_id
    rejected = {r["amazonOrderId"]: r["error"]["code"] for r in response.body["rejectedOrders"]}
    assert rejected == {plain: "InvalidInput", "999-0000000-0000000": "ResourceNotFound"}
    wrong_format = call(
        state,
        token,
        "createScheduledPackageBulk",
        "/easyShip/2022-03-23/packages/bulk",
        body={**body, "labelFormat": "PNG"},
    )
    assert wrong_format.status == 400


def test_the_package_is_picked_up_then_delivered_on_the_clock_and_the_order_ships() -> None:
    state, token = make_state({"pickup_after_s": 1800, "delivery_after_s": 86400})
    order_id = easy_ship_order(state)
    list_slots(state, token, order_id, {**DIMENSIONS, "length": 33})
    slot = state.easyship.slots(INDIA, state.now())[0]  # 14:00 today, five hours on
    created = schedule(state, token, order_id, slot.slot_id)
    assert created.body["packageStatus"] == "ReadyForPickup"
    assert created.body["packageDimensions"]["length"] == 33  # the size listed for the order

    def package() -> dict[str, Any]:
        query = {"amazonOrderId": order_id, "marketplaceId": INDIA}
        return dict(call(state, token, "getScheduledPackage", query=query).body)

    def v0_status() -> str:
        path = f"/orders/v0/orders/{order_id}"
        body = call(state, token, "getOrder", path, path_params={"orderId": order_id}).body
        return f"{body['payload']['OrderStatus']}/{body['payload']['EasyShipShipmentStatus']}"

    state.advance_clock(slot.start + 1799 - state.now())
    assert package()["packageStatus"] == "ReadyForPickup"
    assert v0_status() == "Unshipped/PendingPickUp"
    state.advance_clock(1)
    assert package()["packageStatus"] == "PickedUp"
    assert v0_status() == "Shipped/PickedUp"
    truth = state.truth_order(order_id)
    assert truth["status"] == "Shipped"
    state.advance_clock(86400)
    assert package()["packageStatus"] == "Delivered"
    assert v0_status() == "Shipped/Delivered"


def test_an_order_canceled_before_pick_up_voids_the_label() -> None:
    state, token = make_state({"handover_method": "DROPOFF"})
    order_id = easy_ship_order(state)
    slot = state.easyship.slots(INDIA, state.now())[0]
    assert (
        schedule(state, token, order_id, slot.slot_id).body["packageTimeSlot"]["handoverMethod"] == "DROPOFF"
    )
    assert state.book.orders[order_id].easy_ship_status == "PendingDropOff"
    state.set_order_status(order_id, "Canceled")
    state.advance_clock(slot.start + 3600 - state.now())
    assert state.easyship.packages[order_id].status == "LabelCanceled"
    assert state.truth_order(order_id)["status"] == "Canceled"
    assert state.book.orders[order_id].easy_ship_status == "LabelCanceled"


def test_a_package_can_be_rescheduled_until_it_is_picked_up() -> None:
    state, token = make_state()
    order_id = easy_ship_order(state)
    slots = state.easyship.slots(INDIA, state.now())
    schedule(state, token, order_id, slots[0].slot_id)

    def update(slot_id: str) -> SimResponse:
        entry = {"scheduledPackageId": {"amazonOrderId": order_id}, "packageTimeSlot": {"slotId": slot_id}}
        body = {"marketplaceId": INDIA, "updatePackageDetailsList": [entry]}
        return call(state, token, "updateScheduledPackages", body=body)

    moved = update(slots[1].slot_id)
    assert moved.status == 200
    assert moved.body["packages"][0]["packageTimeSlot"]["slotId"] == slots[1].slot_id
    assert state.easyship.booked == {slots[0].slot_id: 0, slots[1].slot_id: 1}
    state.advance_clock(slots[0].start + 3600 - state.now())
    assert state.easyship.packages[order_id].status == "ReadyForPickup"  # the old slot's pick-up is void
    state.advance_clock(slots[1].start + 3600 - state.now())
    too_late = update(state.easyship.slots(INDIA, state.now())[0].slot_id)
    assert (too_late.status, error_code(too_late)) == (400, "OrderNotEligibleForRescheduling")


def test_get_scheduled_package_of_an_unscheduled_order_is_not_found() -> None:
    state, token = make_state()
    response = call(
        state,
        token,
        "getScheduledPackage",
        query={"amazonOrderId": easy_ship_order(state), "marketplaceId": INDIA},
    )
    assert (response.status, error_code(response)) == (404, "ResourceNotFound")
    missing = call(state, token, "getScheduledPackage", query={"amazonOrderId": easy_ship_order(state)})
    assert missing.status == 400


# --- POST_EASYSHIP_DOCUMENTS --------------------------------------------------------------------------


def documents_feed(order_ids: list[str], types: tuple[str, ...] = ("ShippingLabel", "Invoice")) -> bytes:
    messages = "".join(
        f"<Message><MessageID>{n}</MessageID><EasyShipDocument><AmazonOrderID>{order_id}</AmazonOrderID>"
        + "".join(f"<DocumentType>{t}</DocumentType>" for t in types)
        + "</EasyShipDocument></Message>"
        for n, order_id in enumerate(order_ids, start=1)
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        "<AmazonEnvelope><Header><DocumentVersion>1.01</DocumentVersion>"
        f"<MerchantIdentifier>{TEST_SELLER}</MerchantIdentifier></Header>"
        f"<MessageType>EasyShipDocument</MessageType>{messages}</AmazonEnvelope>"
    ).encode()


def submit_documents_feed(state: SimulatorState, token: str, content: bytes) -> dict[str, Any]:
    """Submit the feed, let it finish; the getFeed answer."""
    doc = call(state, token, "createFeedDocument", "/feeds/2021-06-30/documents", body={"contentType": XML})
    split = urlsplit(doc.body["url"])
    upload = state.upload_document(doc.body["feedDocumentId"], dict(parse_qsl(split.query)), XML, content)
    assert upload.status == 200
    spec = {
        "feedType": "POST_EASYSHIP_DOCUMENTS",
        "marketplaceIds": [INDIA],
        "inputFeedDocumentId": doc.body["feedDocumentId"],
    }
    feed_id = call(state, token, "createFeed", "/feeds/2021-06-30/feeds", body=spec).body["feedId"]
    state.advance_clock(70)
    path = f"/feeds/2021-06-30/feeds/{feed_id}"
    return dict(call(state, token, "getFeed", path, path_params={"feedId": feed_id}).body)


def download(state: SimulatorState, token: str, document_id: str) -> tuple[bytes, str]:
    path = f"/feeds/2021-06-30/documents/{document_id}"
    answer = call(state, token, "getFeedDocument", path, path_params={"feedDocumentId": document_id})
    assert answer.status == 200, answer.body
    split = urlsplit(answer.body["url"])
    response, content_type = state.download_document(
        split.path.rsplit("/", 1)[1], dict(parse_qsl(split.query))
    )
    assert response.status == 200
    return bytes(response.body), content_type


def download_documents(state: SimulatorState, token: str, reference: str) -> tuple[bytes, str]:
    """An Easy Ship reference's PDF: getReportDocument with a Restricted Data Token naming it."""
    path = f"/reports/2021-06-30/documents/{reference}"
    rdt = call(
        state,
        token,
        "createRestrictedDataToken",
        "/tokens/2021-03-01/restrictedDataToken",
        body={"restrictedResources": [{"method": "GET", "path": path}]},
    ).body["restrictedDataToken"]
    answer = call(state, rdt, "getReportDocument", path, path_params={"reportDocumentId": reference})
    assert answer.status == 200, answer.body
    split = urlsplit(answer.body["url"])
    response, content_type = state.download_document(
        split.path.rsplit("/", 1)[1], dict(parse_qsl(split.query))
    )
    return bytes(response.body), content_type


def test_the_documents_feed_gives_a_pdf_per_scheduled_package_and_an_error_for_others() -> None:
    state, token = make_state()
    scheduled, unscheduled = easy_ship_order(state), easy_ship_order(state)
    schedule(state, token, scheduled, state.easyship.slots(INDIA, state.now())[0].slot_id)
    feed = submit_documents_feed(state, token, documents_feed([scheduled, unscheduled]))
    assert feed["processingStatus"] == "DONE"
    report_xml, _ = download(state, token, feed["resultFeedDocumentId"])
    report = etree.fromstring(report_xml)
    assert report.findtext(".//MessagesProcessed") == "2"
    assert report.findtext(".//MessagesSuccessful") == "1"
    error = report.find(".//Result")
    assert error is not None
    assert error.findtext("ResultMessageCode") == CODE_NOT_SCHEDULED
    assert error.findtext("AdditionalInfo/AmazonOrderID") == unscheduled
    results = report.findall(".//EasyShipDocumentResult")
    assert [r.findtext("AmazonOrderID") for r in results] == [scheduled]
    reference = results[0].findtext("ReportReferenceId")
    assert reference
    # A restricted report document (GET_EASYSHIP_DOCUMENTS): not a feed document; getReportDocument
    # opens it only with a Restricted Data Token naming it.
    feeds_path = f"/feeds/2021-06-30/documents/{reference}"
    as_feed = call(state, token, "getFeedDocument", feeds_path, path_params={"feedDocumentId": reference})
    assert as_feed.status == 404
    path = f"/reports/2021-06-30/documents/{reference}"
    assert (
        call(state, token, "getReportDocument", path, path_params={"reportDocumentId": reference}).status
        == 403
    )
    pdf, content_type = download_documents(state, token, reference)
    assert content_type == "application/pdf"
    assert pdf.startswith(b"%PDF-")
    reader = PdfReader(io.BytesIO(pdf))
    assert len(reader.pages) == 2  # ShippingLabel, Invoice
    texts = [page.extract_text() for page in reader.pages]
    assert all(scheduled in text for text in texts)
    assert "Shipping Label" in texts[0]
    assert "Invoice Number" in texts[1]


def test_a_warranty_needs_serial_numbers_given_when_scheduling() -> None:
    state, token = make_state()
    plain, serial = easy_ship_order(state), easy_ship_order(state)
    slot_id = state.easyship.slots(INDIA, state.now())[0].slot_id
    schedule(state, token, plain, slot_id)
    item_id = state.truth_order(serial)["items"][0]["order_item_id"]
    items = [{"orderItemId": item_id, "orderItemSerialNumbers": ["SN-0001"]}]
    assert schedule(state, token, serial, slot_id, packageItems=items).status == 200
    feed = submit_documents_feed(state, token, documents_feed([plain, serial], ("Warranty",)))
    report = etree.fromstring(download(state, token, feed["resultFeedDocumentId"])[0])
    assert [r.findtext("AmazonOrderID") for r in report.findall(".//EasyShipDocumentResult")] == [serial]
    reference = report.findtext(".//EasyShipDocumentResult/ReportReferenceId")
    assert reference is not None
    text = PdfReader(io.BytesIO(download_documents(state, token, reference)[0])).pages[0].extract_text()
    assert serial in text
    assert "SN-0001" in text


def test_the_documents_feed_can_be_made_to_end_fatal() -> None:
    state, token = make_state({"documents_fatal": True})
    order_id = easy_ship_order(state)
    schedule(state, token, order_id, state.easyship.slots(INDIA, state.now())[0].slot_id)
    feed = submit_documents_feed(state, token, documents_feed([order_id]))
    assert feed["processingStatus"] == "FATAL"
    report = etree.fromstring(download(state, token, feed["resultFeedDocumentId"])[0])
    assert report.find(".//EasyShipDocumentResult") is None


def test_an_ill_formed_documents_feed_ends_fatal() -> None:
    state, token = make_state()
    feed = submit_documents_feed(state, token, b"<AmazonEnvelope><Header>")
    assert feed["processingStatus"] == "FATAL"
