"""The simulator's Easy Ship API 2022-03-23 and POST_EASYSHIP_DOCUMENTS feed over real HTTP
(RunningSimulator, httpx): the routes, the model's answers, the clock, the truth API and the PDFs."""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from lxml import etree
from pypdf import PdfReader

from ordersync.simulator import RunningSimulator, SimulatorState
from ordersync.simulator.clock import parse_iso
from ordersync.simulator.testing import TEST_SELLER, tiny_scenario, validate_response

pytestmark = pytest.mark.stage

INDIA = "A21TJRUUN4KGV"
XML = "text/xml; charset=UTF-8"
DIMENSIONS = {"length": 20, "width": 15, "height": 10, "unit": "cm"}
WEIGHT = {"value": 500, "unit": "g"}


@pytest.fixture
def sim() -> Iterator[RunningSimulator]:
    scenario = tiny_scenario(
        seller={"region": "eu", "marketplaces": [INDIA]},
        orders={"count": 4},
        easy_ship={"slot_capacity": 1, "pickup_after_s": 600, "delivery_after_s": 3600},
        feeds={"queue_delay_s": [5, 5], "duration_s": [10, 10], "stall_share": 0, "compress_reports": True},
    )
    with RunningSimulator(SimulatorState(scenario)) as running:
        yield running


def checked(operation_id: str, response: httpx.Response) -> Any:
    validate_response("easyship", operation_id, response.status_code, response.json(), dict(response.headers))
    return response.json()


def new_order(sim_http: httpx.Client, *, easy_ship: bool = True) -> str:
    spec: dict[str, Any] = {"marketplace_id": INDIA, "programs": ["AMAZON_EASY_SHIP"] if easy_ship else []}
    response = sim_http.post("/_sim/orders", json=spec)
    assert response.status_code in (200, 201), response.text
    return str(response.json()["amazon_order_id"])


def list_slots(sim_http: httpx.Client, order_id: str, **size: Any) -> httpx.Response:
    body = {
        "marketplaceId": INDIA,
        "amazonOrderId": order_id,
        "packageDimensions": size.get("dimensions", DIMENSIONS),
        "packageWeight": size.get("weight", WEIGHT),
    }
    return sim_http.post("/easyShip/2022-03-23/timeSlot", json=body)


def schedule(sim_http: httpx.Client, order_id: str, slot_id: str) -> httpx.Response:
    body = {
        "marketplaceId": INDIA,
        "amazonOrderId": order_id,
        "packageDetails": {"packageTimeSlot": {"slotId": slot_id}},
    }
    return sim_http.post("/easyShip/2022-03-23/package", json=body)


def test_schedule_race_reschedule_and_pick_up_over_http(sim_http: httpx.Client) -> None:
    first, second = new_order(sim_http), new_order(sim_http)
    listed = list_slots(sim_http, second)
    assert listed.status_code == 200
    assert listed.headers["x-amzn-RateLimit-Limit"] == "1.0"
    slots = checked("listHandoverSlots", listed)["timeSlots"]
    taken = schedule(sim_http, first, slots[0]["slotId"])
    assert checked("createScheduledPackage", taken)["packageStatus"] == "ReadyForPickup"
    gone = schedule(sim_http, second, slots[0]["slotId"])
    assert gone.status_code == 400
    assert checked("createScheduledPackage", gone)["errors"][0]["code"] == "RetryableAfterGettingNewSlots"
    assert (
        checked("createScheduledPackage", schedule(sim_http, second, slots[1]["slotId"]))["packageTimeSlot"]
        == slots[1]
    )

    moved = sim_http.patch(
        "/easyShip/2022-03-23/package",
        json={
            "marketplaceId": INDIA,
            "updatePackageDetailsList": [
                {
                    "scheduledPackageId": {"amazonOrderId": first},
                    "packageTimeSlot": {"slotId": slots[2]["slotId"]},
                }
            ],
        },
    )
    assert moved.status_code == 200, moved.text
    assert (
        checked("updateScheduledPackages", moved)["packages"][0]["packageTimeSlot"]["slotId"]
        == slots[2]["slotId"]
    )

    truth = sim_http.get("/_sim/easyship/packages", params={"seller_id": TEST_SELLER}).json()
    assert {p["scheduledPackageId"]["amazonOrderId"] for p in truth["packages"]} == {first, second}

    now = float(sim_http.get("/_sim/clock").json()["now_epoch"])
    wait = parse_iso(slots[1]["startTime"]) + 600 - now  # picked up 600 s after the slot starts
    assert sim_http.post("/_sim/clock/advance", json={"seconds": wait}).status_code == 200
    package = sim_http.get(
        "/easyShip/2022-03-23/package", params={"amazonOrderId": second, "marketplaceId": INDIA}
    )
    assert checked("getScheduledPackage", package)["packageStatus"] == "PickedUp"
    assert sim_http.get(f"/_sim/orders/{second}").json()["status"] == "Shipped"
    assert sim_http.get(f"/_sim/orders/{first}").json()["status"] == "Unshipped"  # moved to a later slot


def test_bulk_over_http_reports_rejected_orders(sim_http: httpx.Client) -> None:
    good, plain = new_order(sim_http), new_order(sim_http, easy_ship=False)
    body = {
        "marketplaceId": INDIA,
        "labelFormat": "ZPL",
        "orderScheduleDetailsList": [{"amazonOrderId": good}, {"amazonOrderId": plain}],
    }
    response = sim_http.post("/easyShip/2022-03-23/packages/bulk", json=body)
    answer = validate_and_json(response)
    assert [p["scheduledPackageId"]["amazonOrderId"] for p in answer["scheduledPackages"]] == [good]
    assert [r["amazonOrderId"] for r in answer["rejectedOrders"]] == [plain]


def validate_and_json(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return checked("createScheduledPackageBulk", response)


def test_invalid_dimensions_are_a_permanent_400(sim_http: httpx.Client) -> None:
    response = list_slots(sim_http, new_order(sim_http), dimensions={**DIMENSIONS, "height": 0})
    assert response.status_code == 400
    error = checked("listHandoverSlots", response)["errors"][0]
    assert error["code"] == "InvalidInput"
    assert "packageDimensions.height" in error["details"]


def submit_feed(sim_http: httpx.Client, content: bytes) -> dict[str, Any]:
    doc = sim_http.post("/feeds/2021-06-30/documents", json={"contentType": XML}).json()
    assert httpx.put(doc["url"], content=content, headers={"content-type": XML}).status_code == 200
    spec = {
        "feedType": "POST_EASYSHIP_DOCUMENTS",
        "marketplaceIds": [INDIA],
        "inputFeedDocumentId": doc["feedDocumentId"],
    }
    feed_id = sim_http.post("/feeds/2021-06-30/feeds", json=spec).json()["feedId"]
    assert sim_http.post("/_sim/clock/advance", json={"seconds": 20}).status_code == 200
    return dict(sim_http.get(f"/feeds/2021-06-30/feeds/{feed_id}").json())


def fetch_document(sim_http: httpx.Client, document_id: str) -> bytes:
    answer = sim_http.get(f"/feeds/2021-06-30/documents/{document_id}").json()
    content = httpx.get(answer["url"]).content
    if answer.get("compressionAlgorithm") == "GZIP":
        content = gzip.decompress(content)
    return content


def test_documents_feed_over_http_gives_pdfs_with_the_order_id(sim_http: httpx.Client) -> None:
    order_id, unscheduled = new_order(sim_http), new_order(sim_http)
    slots = list_slots(sim_http, order_id).json()["timeSlots"]
    assert schedule(sim_http, order_id, slots[0]["slotId"]).status_code == 200
    messages = "".join(
        f"<Message><MessageID>{n}</MessageID><EasyShipDocument><AmazonOrderID>{o}</AmazonOrderID>"
        "<DocumentType>ShippingLabel</DocumentType><DocumentType>Invoice</DocumentType></EasyShipDocument></Message>"
        for n, o in enumerate((order_id, unscheduled), start=1)
    )
    content = (
        f"<AmazonEnvelope><Header><DocumentVersion>1.01</DocumentVersion><MerchantIdentifier>{TEST_SELLER}"
        f"</MerchantIdentifier></Header><MessageType>EasyShipDocument</MessageType>{messages}</AmazonEnvelope>"
    ).encode()
    feed = submit_feed(sim_http, content)
    assert feed["processingStatus"] == "DONE", feed
    report = etree.fromstring(fetch_document(sim_http, feed["resultFeedDocumentId"]))
    assert report.findtext(".//Result/AdditionalInfo/AmazonOrderID") == unscheduled
    reference = report.findtext(".//EasyShipDocumentResult/ReportReferenceId")
    assert reference
    # A GET_EASYSHIP_DOCUMENTS report document: not a feed document; getReportDocument needs an RDT.
    path = f"/reports/2021-06-30/documents/{reference}"
    assert sim_http.get(f"/feeds/2021-06-30/documents/{reference}").status_code == 404
    assert sim_http.get(path).status_code == 403
    rdt = sim_http.post(
        "/tokens/2021-03-01/restrictedDataToken",
        json={"restrictedResources": [{"method": "GET", "path": path}]},
    ).json()["restrictedDataToken"]
    answer = sim_http.get(path, headers={"x-amz-access-token": rdt})
    assert answer.status_code == 200, answer.text
    pdf = PdfReader(io.BytesIO(httpx.get(answer.json()["url"]).content))
    assert len(pdf.pages) == 2
    assert all(order_id in page.extract_text() for page in pdf.pages)
