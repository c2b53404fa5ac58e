"""The simulator's Feeds API, order life additions and faults, through SimulatorState (no HTTP)."""

from __future__ import annotations

import gzip
import json
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import jsonschema
import pytest
from lxml import etree

from ordersync.amazon.models import model_text
from ordersync.simulator.feeds import (
    CODE_CANCELED_ORDER,
    CODE_ILL_FORMED,
    CODE_QUANTITY_ABOVE_UNSHIPPED,
    CODE_UNKNOWN_ORDER,
)
from ordersync.simulator.state import SimResponse, SimulatorState
from ordersync.simulator.testing import TEST_SELLER, access_token, tiny_scenario, validate_against_model

pytestmark = pytest.mark.unit

US = "ATVPDKIKX0DER"
XML = "text/xml; charset=UTF-8"
JSON = "application/json; charset=UTF-8"
#: Feeds that queue 10 s and process 60 s, never stall, with plain (uncompressed) reports.
FAST_FEEDS = {
    "queue_delay_s": [10, 10],
    "duration_s": [60, 60],
    "stall_share": 0,
    "compress_reports": False,
}


def make_state(**top: Any) -> tuple[SimulatorState, str]:
    top.setdefault("feeds", FAST_FEEDS)
    state = SimulatorState(tiny_scenario(**top))
    return state, access_token(state)


def call(state: SimulatorState, token: str, operation: str, path: str, **kwargs: Any) -> SimResponse:
    return state.call(operation, access_token=token, path=path, **kwargs)


def create_document(state: SimulatorState, token: str, content_type: str) -> dict[str, Any]:
    response = call(
        state,
        token,
        "createFeedDocument",
        "/feeds/2021-06-30/documents",
        body={"contentType": content_type},
        base_url="http://sim",
    )
    assert response.status == 201, response.body
    validate_against_model("feeds", "CreateFeedDocumentResponse", response.body)
    return dict(response.body)


def url_parts(url: str) -> tuple[str, dict[str, str]]:
    split = urlsplit(url)
    return split.path.rsplit("/", 1)[1], dict(parse_qsl(split.query))


def upload(state: SimulatorState, url: str, content: bytes, content_type: str) -> SimResponse:
    document_id, query = url_parts(url)
    return state.upload_document(document_id, query, content_type, content)


def submit(state: SimulatorState, token: str, feed_type: str, content: bytes, content_type: str = XML) -> str:
    doc = create_document(state, token, content_type)
    assert upload(state, doc["url"], content, content_type).status == 200
    response = call(
        state,
        token,
        "createFeed",
        "/feeds/2021-06-30/feeds",
        body={"feedType": feed_type, "marketplaceIds": [US], "inputFeedDocumentId": doc["feedDocumentId"]},
    )
    assert response.status == 202, response.body
    validate_against_model("feeds", "CreateFeedResponse", response.body)
    return str(response.body["feedId"])


def get_feed(state: SimulatorState, token: str, feed_id: str) -> dict[str, Any]:
    response = call(
        state, token, "getFeed", f"/feeds/2021-06-30/feeds/{feed_id}", path_params={"feedId": feed_id}
    )
    assert response.status == 200, response.body
    validate_against_model("feeds", "Feed", response.body)
    return dict(response.body)


def report(state: SimulatorState, token: str, feed: dict[str, Any]) -> bytes:
    document_id = feed["resultFeedDocumentId"]
    response = call(
        state,
        token,
        "getFeedDocument",
        f"/feeds/2021-06-30/documents/{document_id}",
        path_params={"feedDocumentId": document_id},
    )
    assert response.status == 200, response.body
    validate_against_model("feeds", "FeedDocument", response.body)
    doc_id, query = url_parts(response.body["url"])
    downloaded, _ = state.download_document(doc_id, query)
    assert downloaded.status == 200
    content = downloaded.body
    assert isinstance(content, bytes)
    if response.body.get("compressionAlgorithm") == "GZIP":
        content = gzip.decompress(content)
    return content


def unshipped_order(state: SimulatorState, quantity: int = 2, **extra: Any) -> dict[str, Any]:
    return state.add_order({"items": [{"quantity": quantity}], **extra})


def fulfilment_feed(messages: list[str], seller: str = TEST_SELLER) -> bytes:
    body = "".join(f"<Message><MessageID>{i}</MessageID>{m}</Message>" for i, m in enumerate(messages, 1))
    return (
        '<?xml version="1.0" encoding="UTF-8"?><AmazonEnvelope><Header>'
        "<DocumentVersion>1.01</DocumentVersion>"
        f"<MerchantIdentifier>{seller}</MerchantIdentifier></Header><MessageType>OrderFulfillment</MessageType>"
        f"{body}</AmazonEnvelope>"
    ).encode()


def fulfilment(order_id: str, items: dict[str, int] | None = None, carrier: str = "UPS") -> str:
    lines = "".join(
        f"<Item><AmazonOrderItemCode>{k}</AmazonOrderItemCode><Quantity>{v}</Quantity></Item>"
        for k, v in (items or {}).items()
    )
    return (
        f"<OrderFulfillment><AmazonOrderID>{order_id}</AmazonOrderID>"
        "<FulfillmentDate>2026-01-05T08:00:00Z</FulfillmentDate>"
        f"<FulfillmentData><CarrierCode>{carrier}</CarrierCode><ShippingMethod>Ground</ShippingMethod>"
        "<ShipperTrackingNumber>1Z999</ShipperTrackingNumber></FulfillmentData>"
        f"{lines}</OrderFulfillment>"
    )


def test_feed_moves_in_queue_in_progress_done_on_the_simulated_clock() -> None:
    state, token = make_state()
    order = unshipped_order(state)
    feed_id = submit(
        state, token, "POST_ORDER_FULFILLMENT_DATA", fulfilment_feed([fulfilment(order["amazon_order_id"])])
    )
    assert get_feed(state, token, feed_id)["processingStatus"] == "IN_QUEUE"
    state.advance_clock(10)
    started = get_feed(state, token, feed_id)
    assert started["processingStatus"] == "IN_PROGRESS"
    assert "processingStartTime" in started
    assert state.truth_order(order["amazon_order_id"])["status"] == "Unshipped"  # not yet applied
    state.advance_clock(60)
    done = get_feed(state, token, feed_id)
    assert done["processingStatus"] == "DONE"
    assert done["resultFeedDocumentId"]
    truth = state.truth_order(order["amazon_order_id"])
    assert truth["status"] == "Shipped"
    assert truth["shipments"][0]["carrier_code"] == "UPS"
    assert truth["shipments"][0]["tracking_number"] == "1Z999"
    # The change is stamped with the feed's end, not with when someone looked.
    assert truth["last_updated"] == done["processingEndTime"]


def test_fulfilment_feed_applies_good_messages_and_reports_each_failed_one() -> None:
    state, token = make_state()
    good = unshipped_order(state, quantity=3)
    partial = unshipped_order(state, quantity=3)
    canceled = unshipped_order(state)
    state.set_order_status(canceled["amazon_order_id"], "Canceled")
    too_many = unshipped_order(state, quantity=1)
    partial_item = partial["items"][0]["order_item_id"]
    content = fulfilment_feed(
        [
            fulfilment(good["amazon_order_id"]),
            fulfilment(partial["amazon_order_id"], {partial_item: 2}),
            fulfilment("111-0000000-0000000"),
            fulfilment(canceled["amazon_order_id"]),
            fulfilment(too_many["amazon_order_id"], {too_many["items"][0]["order_item_id"]: 5}),
            "<OrderFulfillment><AmazonOrderID>111-1111111-1111111</AmazonOrderID></OrderFulfillment>",
        ]
    )
    feed_id = submit(state, token, "POST_ORDER_FULFILLMENT_DATA", content)
    state.advance_clock(70)
    feed = get_feed(state, token, feed_id)
    assert feed["processingStatus"] == "DONE"
    assert state.truth_order(good["amazon_order_id"])["status"] == "Shipped"
    assert state.truth_order(partial["amazon_order_id"])["status"] == "PartiallyShipped"
    assert state.truth_order(too_many["amazon_order_id"])["status"] == "Unshipped"

    root = etree.fromstring(report(state, token, feed))
    assert root.findtext("MessageType") == "ProcessingReport"
    processing = root.find("Message/ProcessingReport")
    assert processing is not None
    assert processing.findtext("DocumentTransactionID") == feed_id
    assert processing.findtext("StatusCode") == "Complete"
    summary = {child.tag: int(child.text or 0) for child in processing.find("ProcessingSummary")}
    assert summary == {
        "MessagesProcessed": 6,
        "MessagesSuccessful": 2,
        "MessagesWithError": 4,
        "MessagesWithWarning": 0,
    }
    results = {
        int(r.findtext("MessageID") or 0): (
            r.findtext("ResultMessageCode"),
            r.findtext("AdditionalInfo/AmazonOrderID"),
        )
        for r in processing.findall("Result")
    }
    assert results[3] == (CODE_UNKNOWN_ORDER, "111-0000000-0000000")
    assert results[4] == (CODE_CANCELED_ORDER, canceled["amazon_order_id"])
    assert results[5] == (CODE_QUANTITY_ABOVE_UNSHIPPED, too_many["amazon_order_id"])
    assert results[6][0] != CODE_UNKNOWN_ORDER  # missing FulfillmentDate: invalid

    truth = state.truth_feed(feed_id)
    assert [m["ok"] for m in truth["messages"]] == [True, True, False, False, False, False]
    assert "AmazonEnvelope" in truth["input"]


def test_a_second_shipment_of_a_shipped_order_is_rejected_as_above_unshipped() -> None:
    state, token = make_state()
    order = unshipped_order(state)
    first = submit(
        state, token, "POST_ORDER_FULFILLMENT_DATA", fulfilment_feed([fulfilment(order["amazon_order_id"])])
    )
    again = submit(
        state, token, "POST_ORDER_FULFILLMENT_DATA", fulfilment_feed([fulfilment(order["amazon_order_id"])])
    )
    state.advance_clock(70)
    assert get_feed(state, token, first)["processingStatus"] == "DONE"
    # One queue per seller and family: the second waits for the first.
    assert get_feed(state, token, again)["processingStatus"] == "IN_PROGRESS"
    state.advance_clock(60)
    assert state.truth_feed(again)["messages"][0]["code"] == CODE_QUANTITY_ABOVE_UNSHIPPED


def test_ill_formed_xml_and_wrong_envelope_end_fatal_with_a_report() -> None:
    state, token = make_state()
    broken = submit(state, token, "POST_ORDER_FULFILLMENT_DATA", b"<AmazonEnvelope><Header>")
    foreign = submit(
        state,
        token,
        "POST_ORDER_FULFILLMENT_DATA",
        fulfilment_feed([fulfilment("1")], seller="A1OTHERSELLER"),
    )
    as_json = submit(state, token, "POST_ORDER_FULFILLMENT_DATA", b"{}", JSON)
    state.advance_clock(300)
    for feed_id in (broken, foreign, as_json):
        feed = get_feed(state, token, feed_id)
        assert feed["processingStatus"] == "FATAL"
        root = etree.fromstring(report(state, token, feed))
        assert root.find("Message/ProcessingReport/Result/ResultCode").text == "Error"  # type: ignore[union-attr]
    assert state.truth_feed(broken)["messages"][0]["code"] == CODE_ILL_FORMED


def test_retired_inventory_feed_is_accepted_then_fatal() -> None:
    state, token = make_state()
    feed_id = submit(state, token, "POST_INVENTORY_AVAILABILITY_DATA", b"<AmazonEnvelope/>")
    assert get_feed(state, token, feed_id)["processingStatus"] == "IN_QUEUE"
    state.advance_clock(70)
    feed = get_feed(state, token, feed_id)
    assert feed["processingStatus"] == "FATAL"
    assert b"no longer supported" in report(state, token, feed)


def listings_feed(messages: list[dict[str, Any]], seller: str = TEST_SELLER) -> bytes:
    return json.dumps({"header": {"sellerId": seller, "version": "2.0"}, "messages": messages}).encode()


def quantity_patch(message_id: int, sku: str, quantity: int) -> dict[str, Any]:
    return {
        "messageId": message_id,
        "sku": sku,
        "operationType": "PATCH",
        "productType": "PRODUCT",
        "patches": [
            {
                "op": "replace",
                "path": "/attributes/fulfillment_availability",
                "value": [{"fulfillment_channel_code": "DEFAULT", "quantity": quantity}],
            }
        ],
    }


def test_json_listings_feed_sets_quantities_and_reports_per_schema() -> None:
    state, token = make_state()
    skus = [p.sku for p in state.catalogue(TEST_SELLER)]
    content = listings_feed(
        [
            quantity_patch(1, skus[0], 7),
            quantity_patch(2, skus[1], 0),
            quantity_patch(3, "NOT-LISTED", 3),
            {"messageId": 4, "sku": skus[2], "operationType": "PATCH"},  # no patches: schema-invalid
        ]
    )
    feed_id = submit(state, token, "JSON_LISTINGS_FEED", content, JSON)
    state.advance_clock(70)
    feed = get_feed(state, token, feed_id)
    assert feed["processingStatus"] == "DONE"
    assert state.listing_quantity(TEST_SELLER, skus[0]) == 7
    assert state.listing_quantity(TEST_SELLER, skus[1]) == 0
    assert state.listing_quantity(TEST_SELLER, skus[2]) == 0  # unchanged
    listings = state.truth_listings(TEST_SELLER)[TEST_SELLER]
    assert listings[skus[0]]["feed_id"] == feed_id

    body = json.loads(report(state, token, feed))
    jsonschema.Draft7Validator(
        json.loads(model_text("listings-feed-processing-report-schema-v2.json"))
    ).validate(body)
    assert body["header"]["feedId"] == feed_id
    assert body["summary"]["messagesProcessed"] == 4
    assert body["summary"]["messagesAccepted"] == 2
    assert body["summary"]["messagesInvalid"] == 2
    assert sorted(i["messageId"] for i in body["issues"]) == [3, 4]


def test_listings_feed_that_breaks_the_schema_or_is_not_json_ends_fatal() -> None:
    state, token = make_state()
    no_header = submit(state, token, "JSON_LISTINGS_FEED", json.dumps({"messages": []}).encode(), JSON)
    not_json = submit(state, token, "JSON_LISTINGS_FEED", b"<xml/>", JSON)
    as_xml = submit(state, token, "JSON_LISTINGS_FEED", listings_feed([quantity_patch(1, "X", 1)]), XML)
    state.advance_clock(300)
    for feed_id in (no_header, not_json, as_xml):
        assert get_feed(state, token, feed_id)["processingStatus"] == "FATAL"


def listings_report(state: SimulatorState, token: str, feed_id: str) -> dict[str, Any]:
    feed = get_feed(state, token, feed_id)
    assert feed["processingStatus"] == "DONE", feed
    body = json.loads(report(state, token, feed))
    jsonschema.Draft7Validator(
        json.loads(model_text("listings-feed-processing-report-schema-v2.json"))
    ).validate(body)
    return dict(body)


def availability_patch(message_id: int, sku: str, op: str, *entries: dict[str, Any]) -> dict[str, Any]:
    return {
        "messageId": message_id,
        "sku": sku,
        "operationType": "PATCH",
        "productType": "PRODUCT",
        "patches": [{"op": op, "path": "/attributes/fulfillment_availability", "value": list(entries)}],
    }


def test_listings_feed_rejects_availability_amazons_product_type_rules_refuse() -> None:
    state, token = make_state()
    skus = [p.sku for p in state.catalogue(TEST_SELLER)]
    default = {"fulfillment_channel_code": "DEFAULT"}
    messages = [
        availability_patch(1, skus[0], "replace", {"quantity": 5}),  # no fulfillment_channel_code
        availability_patch(2, skus[1], "replace", {**default, "quantity": -1}),
        availability_patch(
            3, skus[2], "replace", {**default, "quantity": 4, "lead_time_to_ship_max_days": -2}
        ),
        availability_patch(4, skus[3], "replace", {**default, "quantity": "7"}),
        availability_patch(5, skus[4], "merge", {"quantity": -3}),  # both problems
        availability_patch(6, skus[5], "replace", {**default, "quantity": 1}, {**default, "quantity": 2}),
        {
            "messageId": 7,
            "sku": skus[6],
            "operationType": "PARTIAL_UPDATE",
            "productType": "PRODUCT",
            "attributes": {"fulfillment_availability": [{"fulfillment_channel_code": "", "quantity": 1}]},
        },
        availability_patch(
            8, skus[7], "replace", {**default, "quantity": 0, "lead_time_to_ship_max_days": 2}
        ),
    ]
    feed_id = submit(state, token, "JSON_LISTINGS_FEED", listings_feed(messages), JSON)
    state.advance_clock(70)
    body = listings_report(state, token, feed_id)
    issues: dict[int, list[dict[str, Any]]] = {}
    for issue in body["issues"]:
        issues.setdefault(issue["messageId"], []).append(issue)
        assert issue["severity"] == "ERROR"
        assert issue["attributeName"] == "fulfillment_availability"
        assert issue["sku"] == skus[issue["messageId"] - 1]
    codes = {message_id: sorted(i["code"] for i in found) for message_id, found in issues.items()}
    assert codes == {
        1: ["99022"],
        2: ["4000001"],
        3: ["4000001"],
        4: ["4000001"],
        5: ["4000001", "99022"],
        6: ["4000001"],
        7: ["99022"],
    }
    assert "fulfillment_channel_code" in issues[1][0]["message"]
    assert body["summary"] == {
        "errors": 8,
        "warnings": 0,
        "messagesProcessed": 8,
        "messagesAccepted": 1,
        "messagesInvalid": 7,
    }
    # Refused messages change nothing; the valid one applies.
    quantities = {sku: state.listing_quantity(TEST_SELLER, sku) for sku in skus[:8]}
    assert quantities == {**dict.fromkeys(skus[:7], 0), skus[7]: 0}
    assert state.truth_listings(TEST_SELLER)[TEST_SELLER][skus[7]]["fulfillment_availability"] == [
        {"fulfillment_channel_code": "DEFAULT", "quantity": 0, "lead_time_to_ship_max_days": 2}
    ]


def test_listings_feed_merge_changes_the_quantity_and_keeps_the_other_fields() -> None:
    # Since 2025-06-16 JSON_LISTINGS_FEED takes "op": "merge" (docs "Merge a listing").
    state, token = make_state()
    sku = state.catalogue(TEST_SELLER)[0].sku

    def apply(*patch: dict[str, Any]) -> dict[str, Any]:
        feed_id = submit(state, token, "JSON_LISTINGS_FEED", listings_feed(list(patch)), JSON)
        state.advance_clock(70)
        body = listings_report(state, token, feed_id)
        assert body["summary"]["messagesAccepted"] == len(patch), body
        entries = state.truth_listings(TEST_SELLER)[TEST_SELLER][sku]["fulfillment_availability"]
        return {e["fulfillment_channel_code"]: e for e in entries}

    default = {"fulfillment_channel_code": "DEFAULT"}
    set_up = apply(
        availability_patch(1, sku, "replace", {**default, "quantity": 3, "lead_time_to_ship_max_days": 5})
    )
    assert set_up["DEFAULT"] == {**default, "quantity": 3, "lead_time_to_ship_max_days": 5}
    merged = apply(availability_patch(1, sku, "merge", {**default, "quantity": 9}))
    assert merged["DEFAULT"] == {**default, "quantity": 9, "lead_time_to_ship_max_days": 5}
    assert state.listing_quantity(TEST_SELLER, sku) == 9
    lead_only = apply(availability_patch(1, sku, "merge", {**default, "lead_time_to_ship_max_days": 1}))
    assert lead_only["DEFAULT"]["quantity"] == 9
    replaced = apply(availability_patch(1, sku, "replace", {**default, "quantity": 4}))
    assert replaced["DEFAULT"] == {**default, "quantity": 4}  # replace resets the other fields
    assert state.listing_quantity(TEST_SELLER, sku) == 4


def test_feed_bodies_may_carry_fields_the_models_do_not_name() -> None:
    # CreateFeedDocumentSpecification and CreateFeedSpecification do not forbid other properties;
    # python-amazon-sp-api's submit_feed sends some ("path", ...).
    state, token = make_state()
    created = call(
        state,
        token,
        "createFeedDocument",
        "/feeds/2021-06-30/documents",
        body={"contentType": XML, "path": "/feeds/2021-06-30/documents", "marketplaceIds": [US]},
        base_url="http://sim",
    )
    assert created.status == 201, created.body
    doc = dict(created.body)
    assert upload(state, doc["url"], b"<AmazonEnvelope/>", XML).status == 200
    spec = {
        "feedType": "POST_ORDER_FULFILLMENT_DATA",
        "marketplaceIds": [US],
        "inputFeedDocumentId": doc["feedDocumentId"],
    }
    accepted = call(
        state,
        token,
        "createFeed",
        "/feeds/2021-06-30/feeds",
        body={**spec, "path": "/feeds/2021-06-30/feeds"},
    )
    assert accepted.status == 202, accepted.body
    # The fields the models name are still checked.
    for bad_document in ({"contentType": 5, "extra": 1}, {"extra": XML}, ["contentType"]):
        response = call(state, token, "createFeedDocument", "/feeds/2021-06-30/documents", body=bad_document)
        assert response.status == 400, bad_document
    for bad_feed in (
        {**spec, "marketplaceIds": US, "extra": 1},
        {**spec, "feedOptions": {"metadata:OrderId": 1}, "extra": 1},
        {**spec, "inputFeedDocumentId": 7, "extra": 1},
    ):
        assert call(state, token, "createFeed", "/feeds/2021-06-30/feeds", body=bad_feed).status == 400


def test_gzip_documents_download_as_gzip_and_with_content_encoding_when_asked() -> None:
    state, token = make_state(feeds={**FAST_FEEDS, "compress_reports": True})
    sku = state.catalogue(TEST_SELLER)[0].sku
    feed_id = submit(state, token, "JSON_LISTINGS_FEED", listings_feed([quantity_patch(1, sku, 2)]), JSON)
    state.advance_clock(70)
    document_id = get_feed(state, token, feed_id)["resultFeedDocumentId"]

    def document(**query: str) -> SimResponse:
        response = call(
            state,
            token,
            "getFeedDocument",
            f"/feeds/2021-06-30/documents/{document_id}",
            path_params={"feedDocumentId": document_id},
            query=query,
        )
        assert response.status == 200, response.body
        validate_against_model("feeds", "FeedDocument", response.body)
        assert response.body["compressionAlgorithm"] == "GZIP"
        return response

    for query in ({}, {"enableContentEncodingUrlHeader": "false"}):
        doc_id, params = url_parts(document(**query).body["url"])
        plain, _ = state.download_document(doc_id, params)
        assert plain.status == 200
        assert plain.body[:2] == b"\x1f\x8b"  # the bytes are gzip
        assert "Content-Encoding" not in plain.headers  # the default: identity
        assert json.loads(gzip.decompress(plain.body))["header"]["feedId"] == feed_id
    doc_id, params = url_parts(document(enableContentEncodingUrlHeader="true").body["url"])
    encoded, _ = state.download_document(doc_id, params)
    assert encoded.headers["Content-Encoding"] == "gzip"
    assert encoded.body[:2] == b"\x1f\x8b"
    # The encoding is part of what the URL was signed for.
    tampered, _ = state.download_document(
        doc_id, {k: v for k, v in params.items() if k != "response-content-encoding"}
    )
    assert tampered.status == 403


def test_order_and_listings_queues_run_in_parallel_and_cancel_only_in_queue() -> None:
    state, token = make_state()
    order = unshipped_order(state)
    orders_feed = submit(
        state, token, "POST_ORDER_FULFILLMENT_DATA", fulfilment_feed([fulfilment(order["amazon_order_id"])])
    )
    sku = state.catalogue(TEST_SELLER)[0].sku
    listings = submit(state, token, "JSON_LISTINGS_FEED", listings_feed([quantity_patch(1, sku, 4)]), JSON)
    queued = submit(state, token, "JSON_LISTINGS_FEED", listings_feed([quantity_patch(1, sku, 9)]), JSON)

    def cancel(feed_id: str) -> SimResponse:
        return call(
            state, token, "cancelFeed", f"/feeds/2021-06-30/feeds/{feed_id}", path_params={"feedId": feed_id}
        )

    state.advance_clock(10)
    assert get_feed(state, token, orders_feed)["processingStatus"] == "IN_PROGRESS"
    assert get_feed(state, token, listings)["processingStatus"] == "IN_PROGRESS"
    assert cancel(listings).status == 400  # in progress: too late
    response = cancel(queued)
    assert (response.status, response.body) == (200, None)
    state.advance_clock(600)
    assert get_feed(state, token, queued)["processingStatus"] == "CANCELLED"
    assert state.listing_quantity(TEST_SELLER, sku) == 4
    assert cancel(queued).status == 400


def test_acknowledgement_failure_is_the_sellers_cancellation() -> None:
    state, token = make_state()
    order = unshipped_order(state)
    shipped = unshipped_order(state)
    state.set_order_status(shipped["amazon_order_id"], "Shipped")
    messages = "".join(
        f"<Message><MessageID>{i}</MessageID><OrderAcknowledgement><AmazonOrderID>{oid}</AmazonOrderID>"
        "<StatusCode>Failure</StatusCode></OrderAcknowledgement></Message>"
        for i, oid in enumerate((order["amazon_order_id"], shipped["amazon_order_id"]), 1)
    )
    content = (
        f"<AmazonEnvelope><Header><DocumentVersion>1.01</DocumentVersion><MerchantIdentifier>{TEST_SELLER}"
        f"</MerchantIdentifier></Header><MessageType>OrderAcknowledgement</MessageType>{messages}</AmazonEnvelope>"
    ).encode()
    feed_id = submit(state, token, "POST_ORDER_ACKNOWLEDGEMENT_DATA", content)
    state.advance_clock(70)
    assert get_feed(state, token, feed_id)["processingStatus"] == "DONE"
    assert state.truth_order(order["amazon_order_id"])["status"] == "Canceled"
    assert state.truth_order(shipped["amazon_order_id"])["status"] == "Shipped"
    assert [m["ok"] for m in state.truth_feed(feed_id)["messages"]] == [True, False]
    items = call(
        state,
        token,
        "getOrderItems",
        f"/orders/v0/orders/{order['amazon_order_id']}/orderItems",
        path_params={"orderId": order["amazon_order_id"]},
    )
    assert items.body["payload"]["OrderItems"][0]["BuyerRequestedCancel"]["IsBuyerRequestedCancel"] == "false"


def test_get_feeds_filters_pages_and_validates() -> None:
    state, token = make_state()
    ids = [
        submit(state, token, "POST_ORDER_FULFILLMENT_DATA", fulfilment_feed([fulfilment("1")]))
        for _ in range(3)
    ]
    submit(state, token, "JSON_LISTINGS_FEED", listings_feed([quantity_patch(1, "X", 1)]), JSON)

    def get_feeds(**query: str) -> SimResponse:
        return call(state, token, "getFeeds", "/feeds/2021-06-30/feeds", query=query)

    first = get_feeds(feedTypes="POST_ORDER_FULFILLMENT_DATA", pageSize="2")
    assert first.status == 200
    validate_against_model("feeds", "GetFeedsResponse", first.body)
    second = get_feeds(nextToken=first.body["nextToken"])
    assert second.status == 200
    seen = [f["feedId"] for f in first.body["feeds"] + second.body["feeds"]]
    assert sorted(seen) == sorted(ids)
    assert "nextToken" not in second.body
    both = get_feeds(
        feedTypes="POST_ORDER_FULFILLMENT_DATA,JSON_LISTINGS_FEED", processingStatuses="IN_QUEUE"
    )
    assert len(both.body["feeds"]) == 4
    for bad in (
        {},
        {"feedTypes": "POST_ORDER_FULFILLMENT_DATA", "processingStatuses": "LOST"},
        {"feedTypes": "POST_ORDER_FULFILLMENT_DATA", "pageSize": "101"},
        {"nextToken": first.body["nextToken"], "pageSize": "2"},
        {"nextToken": "garbage"},
    ):
        response = get_feeds(**bad)
        assert response.status == 400, bad
        validate_against_model("feeds", "ErrorList", response.body)


def test_create_feed_validation_and_upload_url_rules() -> None:
    state, token = make_state()
    doc = create_document(state, token, XML)

    def create(body: Any) -> SimResponse:
        return call(state, token, "createFeed", "/feeds/2021-06-30/feeds", body=body)

    base = {
        "feedType": "POST_ORDER_FULFILLMENT_DATA",
        "marketplaceIds": [US],
        "inputFeedDocumentId": doc["feedDocumentId"],
    }
    for bad in (
        {**base, "feedType": "POST_NOT_A_FEED"},
        {**base, "marketplaceIds": []},
        {**base, "marketplaceIds": ["A1PA6795UKMFR9"]},
        {**base, "inputFeedDocumentId": "amzn1.tortuga.4.na.unknown"},
        {k: v for k, v in base.items() if k != "feedType"},
        "not json",
    ):
        assert create(bad).status == 400, bad
    # The upload URL is signed for its content type and expires after 5 minutes.
    assert upload(state, doc["url"], b"<x/>", "application/json").status == 403
    document_id, query = url_parts(doc["url"])
    assert state.upload_document(document_id, {**query, "X-Amz-Signature": "0"}, XML, b"<x/>").status == 403
    state.advance_clock(301)
    expired = upload(state, doc["url"], b"<x/>", XML)
    assert expired.status == 403
    assert b"expired" in expired.body
    # Never uploaded: the feed is accepted and ends FATAL.
    feed = create(base)
    assert feed.status == 202
    state.advance_clock(70)
    assert get_feed(state, token, feed.body["feedId"])["processingStatus"] == "FATAL"
    missing = call(state, token, "getFeed", "/feeds/2021-06-30/feeds/1", path_params={"feedId": "1"})
    assert missing.status == 404


def test_listings_feed_limit_separate_or_shared_with_create_feed() -> None:
    for mode, expected_listings_ok, create_feed_tokens_left in (("separate", 5, 15), ("shared", 5, 10)):
        state, token = make_state(feeds={**FAST_FEEDS, "listings_limit": mode})
        doc = create_document(state, token, JSON)
        body = {
            "feedType": "JSON_LISTINGS_FEED",
            "marketplaceIds": [US],
            "inputFeedDocumentId": doc["feedDocumentId"],
        }
        statuses = [
            call(state, token, "createFeed", "/feeds/2021-06-30/feeds", body=body).status for _ in range(6)
        ]
        assert statuses.count(202) == expected_listings_ok, mode
        assert statuses[-1] == 429
        order_body = {**body, "feedType": "POST_ORDER_FULFILLMENT_DATA"}
        ok = 0
        while call(state, token, "createFeed", "/feeds/2021-06-30/feeds", body=order_body).status == 202:
            ok += 1
        assert ok == create_feed_tokens_left, mode


def test_invoice_unconfirmed_and_pending_availability_states() -> None:
    state, token = make_state(
        seller={"orders": {"count": 0, "invoice_unconfirmed_share": 1.0, "invoice_confirm_s": [100, 100]}}
    )
    order = unshipped_order(state)
    feed_id = submit(
        state, token, "POST_ORDER_FULFILLMENT_DATA", fulfilment_feed([fulfilment(order["amazon_order_id"])])
    )
    state.advance_clock(70)
    assert get_feed(state, token, feed_id)["processingStatus"] == "DONE"
    oid = order["amazon_order_id"]
    assert state.truth_order(oid)["status"] == "InvoiceUnconfirmed"
    v0 = call(state, token, "getOrder", f"/orders/v0/orders/{oid}", path_params={"orderId": oid}).body
    validate_against_model("orders-v0", "GetOrderResponse", v0)
    assert v0["payload"]["OrderStatus"] == "InvoiceUnconfirmed"
    assert "ShippingAddress" in v0["payload"]
    new = call(
        state,
        token,
        "getOrder@2026-01-01",
        f"/orders/2026-01-01/orders/{oid}",
        path_params={"orderId": oid},
        query={"includedData": "FULFILLMENT"},
    ).body
    assert new["order"]["fulfillment"]["fulfillmentStatus"] == "SHIPPED"
    state.advance_clock(100)
    assert state.truth_order(oid)["status"] == "Shipped"

    pre = state.add_order({"preorder_release_s": 50, "pending_s": 20})
    pid = pre["amazon_order_id"]
    got = call(state, token, "getOrder", f"/orders/v0/orders/{pid}", path_params={"orderId": pid}).body
    validate_against_model("orders-v0", "GetOrderResponse", got)
    assert got["payload"]["OrderStatus"] == "PendingAvailability"
    assert got["payload"]["OrderType"] == "Preorder"
    assert "OrderTotal" not in got["payload"]
    state.advance_clock(50)
    assert state.truth_order(pid)["status"] == "Pending"
    state.advance_clock(20)
    assert state.truth_order(pid)["status"] == "Unshipped"


def test_generated_preorders_follow_their_timeline() -> None:
    state, _ = make_state(
        seller={"orders": {"count": 30, "preorder_share": 1.0, "history_s": 0, "arrival_window_s": 10}}
    )
    state.advance_clock(20)
    statuses = {o["status"] for o in state.truth_orders()}
    assert statuses == {"PendingAvailability"}
    state.advance_clock(10 * 86400)
    assert {o["status"] for o in state.truth_orders()} <= {"Unshipped", "Shipped"}


def test_forced_faults_and_dynamic_usage_plans() -> None:
    state, token = make_state()
    oid = unshipped_order(state)["amazon_order_id"]

    def get() -> SimResponse:
        return call(state, token, "getOrder", f"/orders/v0/orders/{oid}", path_params={"orderId": oid})

    state.force_fault({"fault": "drop", "operation": "getOrder"})
    state.force_fault({"fault": "timeout", "count": 1})
    state.force_fault({"fault": "slow", "operation": "getOrder"})
    assert get().drop
    timeout = get()
    assert (timeout.drop, timeout.delay_s) == (True, state.scenario.faults.timeout_s)
    slow = get()
    assert (slow.status, slow.drop, slow.delay_s) == (200, False, state.scenario.faults.slow_s)
    state.force_fault({"fault": "503"})
    assert get().status == 503
    state.force_fault({"fault": "429"})
    assert get().status == 429
    plain = get()
    assert (plain.status, plain.drop, plain.delay_s) == (200, False, 0.0)

    applied = state.set_usage_plan({"operation": "getOrder", "rate": 2, "burst": 2})
    assert applied["header"] == "2.0"
    assert [get().status for _ in range(3)] == [200, 200, 429]
    assert get().headers.get("x-amzn-RateLimit-Limit") is None  # 429 carries no rate header
    state.advance_clock(1)
    assert get().headers["x-amzn-RateLimit-Limit"] == "2.0"
