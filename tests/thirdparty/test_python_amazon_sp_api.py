"""python-amazon-sp-api (the field's most used Python SP-API client), unchanged, against the
simulator over HTTPS: Orders v0 and 2026-01-01, Tokens (RDT), Feeds, and its retry and paging helpers.

Every SP-API response the library receives is validated against Amazon's models by the ``sim``
fixture (conftest.py, harness.py); the tests below check what the library makes of them.
"""

from __future__ import annotations

import json
from io import BytesIO
from typing import Any
from urllib.parse import parse_qsl

import jsonschema
import pytest
from lxml import etree
from sp_api.api import Feeds, Orders, Tokens
from sp_api.base import ApiResponse, SellingApiBadRequestException, SellingApiRequestThrottledException
from sp_api.util import load_all_pages, throttle_retry

from ordersync.amazon.models import model_text
from ordersync.simulator.clock import epoch_to_iso
from ordersync.simulator.testing import TEST_SELLER
from tests.thirdparty.harness import US, Exchange, HttpsSimulator

pytestmark = pytest.mark.thirdparty

XML = "text/xml; charset=UTF-8"
JSON = "application/json; charset=UTF-8"
FINISHED = ("DONE", "FATAL", "CANCELLED")


def days_ago(sim: HttpsSimulator, days: float) -> str:
    return epoch_to_iso(sim.state.now() - days * 86400)


def visible_order_ids(sim: HttpsSimulator) -> set[str]:
    """Orders getOrders can return now: updated at least two minutes ago."""
    cutoff = epoch_to_iso(sim.state.now() - 120)
    return {o["amazon_order_id"] for o in sim.state.truth_orders() if o["last_updated"] <= cutoff}


def unshipped_order(sim: HttpsSimulator) -> dict[str, Any]:
    return sim.state.truth_orders(status="Unshipped")[0]


# --- Orders v0 --------------------------------------------------------------------------------------------


def test_get_orders_over_all_pages_then_get_order_and_get_order_items(
    sim: HttpsSimulator, client_kwargs: dict[str, Any]
) -> None:
    orders = Orders(**client_kwargs)

    @load_all_pages(throttle_by_seconds=0)
    def all_orders(**kwargs: Any) -> ApiResponse:
        return orders.get_orders(**kwargs)

    pages = list(all_orders(MarketplaceIds=[US], LastUpdatedAfter=days_ago(sim, 3), MaxResultsPerPage=10))
    seen = [o["AmazonOrderId"] for page in pages for o in page.payload["Orders"]]
    assert len(pages) == 5  # 45 orders, 10 a page
    assert len(seen) == len(set(seen))
    assert set(seen) == visible_order_ids(sim)
    assert pages[0].rate_limit == "0.0167"
    # load_all_pages resends the first request's filters with each NextToken; v0 allows that.
    follow_ups = [dict(parse_qsl(e.query)) for _, e in sim.sp_api_exchanges("getOrders")[1:]]
    assert len(follow_ups) == 4
    assert all("NextToken" in q and "LastUpdatedAfter" in q for q in follow_ups)

    order_id = seen[0]
    order = orders.get_order(order_id)
    assert order.payload["AmazonOrderId"] == order_id
    assert order.payload["OrderStatus"] == "Unshipped"
    items = orders.get_order_items(order_id)
    truth = sim.state.truth_order(order_id)
    assert items.payload["AmazonOrderId"] == order_id
    assert [i["OrderItemId"] for i in items.payload["OrderItems"]] == [
        i["order_item_id"] for i in truth["items"]
    ]
    assert [i["QuantityOrdered"] for i in items.payload["OrderItems"]] == [
        i["quantity_ordered"] for i in truth["items"]
    ]


def test_get_order_with_the_librarys_restricted_data_token_shortcut(
    sim: HttpsSimulator, client_kwargs: dict[str, Any]
) -> None:
    order_id = unshipped_order(sim)["amazon_order_id"]
    plain = Orders(**client_kwargs).get_order(order_id)
    assert "AddressLine1" not in plain.payload["ShippingAddress"]
    assert "BuyerInfo" not in plain.payload

    # The documented shortcut: createRestrictedDataToken for this path and these data elements, then
    # getOrder with the RDT as the access token.
    restricted = Orders(**client_kwargs).get_order(
        order_id, RestrictedResources=["buyerInfo", "shippingAddress"]
    )
    assert restricted.payload["AmazonOrderId"] == order_id
    assert restricted.payload["ShippingAddress"]["AddressLine1"]
    assert "BuyerInfo" in restricted.payload
    tokens = sim.sp_api_exchanges("createRestrictedDataToken")
    assert [e.status for _, e in tokens] == [200]


def test_restricted_data_token_then_get_order_address(
    sim: HttpsSimulator, client_kwargs: dict[str, Any]
) -> None:
    order_id = unshipped_order(sim)["amazon_order_id"]
    path = f"/orders/v0/orders/{order_id}/address"
    created = Tokens(**client_kwargs).create_restricted_data_token(
        restrictedResources=[{"method": "GET", "path": path}]
    )
    rdt = created.payload["restrictedDataToken"]
    assert created.payload["expiresIn"] > 0
    # The documented way to use an RDT: give it to the client as restricted_data_token.
    address = Orders(**client_kwargs, restricted_data_token=rdt).get_order_address(order_id)
    assert address.payload["AmazonOrderId"] == order_id
    assert address.payload["ShippingAddress"]["AddressLine1"]
    assert address.payload["ShippingAddress"]["Name"]


def test_confirm_shipment(sim: HttpsSimulator, client_kwargs: dict[str, Any]) -> None:
    order = unshipped_order(sim)
    response = Orders(**client_kwargs).confirm_shipment(
        order["amazon_order_id"],
        marketplaceId=order["marketplace_id"],
        packageDetail={
            "packageReferenceId": "1",
            "carrierCode": "UPS",
            "trackingNumber": "1Z999AA10123456784",
            "shipDate": days_ago(sim, 0.01),
            "orderItems": [
                {"orderItemId": i["order_item_id"], "quantity": i["quantity_ordered"]} for i in order["items"]
            ],
        },
    )
    assert response.payload == {"status_code": 204}  # the library's stand-in for an empty 204
    truth = sim.state.truth_order(order["amazon_order_id"])
    assert truth["status"] == "Shipped"
    assert [s["tracking_number"] for s in truth["shipments"]] == ["1Z999AA10123456784"]


# --- throttling ---------------------------------------------------------------------------------------


def test_a_burst_past_get_orders_burst_is_throttling_to_throttle_retry(
    sim: HttpsSimulator, client_kwargs: dict[str, Any]
) -> None:
    """getOrders: burst 20, one token per 60 s. The clock is frozen, so the 21st call is refused
    for certain and nothing refills until the test moves the clock."""
    orders = Orders(**client_kwargs)
    query = {"MarketplaceIds": [US], "LastUpdatedAfter": days_ago(sim, 3), "MaxResultsPerPage": 1}
    for _ in range(20):
        assert len(orders.get_orders(**query).payload["Orders"]) == 1
    with pytest.raises(SellingApiRequestThrottledException) as refused:
        orders.get_orders(**query)
    assert refused.value.amzn_code == "QuotaExceeded"

    def throttled() -> int:
        return sim.state.counters.get(TEST_SELLER, "getOrders").throttled

    @throttle_retry(tries=3, delay=0)
    def get_orders() -> ApiResponse:
        return orders.get_orders(**query)

    before = throttled()
    with pytest.raises(SellingApiRequestThrottledException):
        get_orders()
    assert throttled() == before + 3  # the decorator saw throttling and tried three times

    sim.advance_clock(61)  # one token back
    assert len(get_orders().payload["Orders"]) == 1


# --- Orders 2026-01-01 -----------------------------------------------------------------------------------


def test_search_orders_over_all_pages(sim: HttpsSimulator, client_kwargs: dict[str, Any]) -> None:
    # python-amazon-sp-api 2.1.x has a client for Orders 2026-01-01 (Orders(version="2026-01-01"),
    # search_orders), so no raw requests are needed. Its load_all_pages resends every filter with each
    # paginationToken, which is what Amazon requires of searchOrders follow-up pages.
    orders = Orders(version="2026-01-01", **client_kwargs)

    @load_all_pages(next_token_param="paginationToken", throttle_by_seconds=0)
    def search(**kwargs: Any) -> ApiResponse:
        return orders.search_orders(**kwargs)

    pages = list(
        search(
            marketplaceIds=[US],
            lastUpdatedAfter=days_ago(sim, 3),
            maxResultsPerPage=10,
            includedData=["FULFILLMENT"],
        )
    )
    seen = [o["orderId"] for page in pages for o in page.payload["orders"]]
    assert len(pages) == 5
    assert len(seen) == len(set(seen))
    assert set(seen) == visible_order_ids(sim)
    assert {o["fulfillment"]["fulfillmentStatus"] for page in pages for o in page.payload["orders"]} == {
        "UNSHIPPED"
    }
    follow_ups = [dict(parse_qsl(e.query)) for _, e in sim.sp_api_exchanges("searchOrders")[1:]]
    assert len(follow_ups) == 4
    assert all("paginationToken" in q and "lastUpdatedAfter" in q for q in follow_ups)


# --- Feeds ----------------------------------------------------------------------------------------------


def fulfilment_feed(order: dict[str, Any]) -> bytes:
    items = "".join(
        f"<Item><AmazonOrderItemCode>{i['order_item_id']}</AmazonOrderItemCode>"
        f"<Quantity>{i['quantity_ordered']}</Quantity></Item>"
        for i in order["items"]
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?><AmazonEnvelope><Header>'
        f"<DocumentVersion>1.01</DocumentVersion><MerchantIdentifier>{TEST_SELLER}</MerchantIdentifier>"
        "</Header><MessageType>OrderFulfillment</MessageType><Message><MessageID>1</MessageID>"
        f"<OrderFulfillment><AmazonOrderID>{order['amazon_order_id']}</AmazonOrderID>"
        "<FulfillmentDate>2026-01-05T08:00:00Z</FulfillmentDate><FulfillmentData>"
        "<CarrierCode>UPS</CarrierCode><ShippingMethod>Ground</ShippingMethod>"
        "<ShipperTrackingNumber>1Z999</ShipperTrackingNumber>"
        f"</FulfillmentData>{items}</OrderFulfillment></Message></AmazonEnvelope>"
    ).encode()


def listings_feed(sku: str, quantity: int) -> bytes:
    message = {
        "messageId": 1,
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
    return json.dumps({"header": {"sellerId": TEST_SELLER, "version": "2.0"}, "messages": [message]}).encode()


def submit(feeds: Any, feed_type: str, content: bytes, content_type: str) -> str:
    """The library's submit_feed: createFeedDocument, the upload to its URL, createFeed."""
    document, created = feeds.submit_feed(feed_type, BytesIO(content), content_type, marketplaceIds=[US])
    assert document.payload["feedDocumentId"]
    return str(created.payload["feedId"])


def poll_until_finished(sim: HttpsSimulator, feeds: Any, feed_id: str) -> dict[str, Any]:
    """getFeed until the feed is DONE, FATAL or CANCELLED; the simulated clock (frozen) moves a second
    between polls through the control API."""
    for _ in range(30):
        feed: dict[str, Any] = feeds.get_feed(feed_id).payload
        if feed["processingStatus"] in FINISHED:
            return feed
        sim.advance_clock(1)
    raise AssertionError(f"feed {feed_id} still {feed['processingStatus']}")


def test_submit_feed_order_fulfilment_xml_then_poll_and_read_the_report(
    sim: HttpsSimulator, client_kwargs: dict[str, Any]
) -> None:
    order = unshipped_order(sim)
    feeds = Feeds(**client_kwargs)
    feed_id = submit(feeds, "POST_ORDER_FULFILLMENT_DATA", fulfilment_feed(order), XML)
    feed = poll_until_finished(sim, feeds, feed_id)
    assert feed["processingStatus"] == "DONE"
    assert feed["feedType"] == "POST_ORDER_FULFILLMENT_DATA"

    # get_feed_document: getFeedDocument, the download, and the GZIP inflation, all the library's.
    report = etree.fromstring(feeds.get_feed_document(feed["resultFeedDocumentId"]).encode())
    assert report.findtext(".//MessageType") == "ProcessingReport"
    assert report.findtext(".//ProcessingSummary/MessagesProcessed") == "1"
    assert report.findtext(".//ProcessingSummary/MessagesSuccessful") == "1"
    assert sim.state.truth_order(order["amazon_order_id"])["status"] == "Shipped"
    uploads = [e for e in sim.exchanges if e.method == "PUT" and e.path.startswith("/_sim/s3/")]
    assert [e.status for e in uploads] == [200]
    documents = [e.json() for _, e in sim.sp_api_exchanges("getFeedDocument")]
    assert [d.get("compressionAlgorithm") for d in documents] == ["GZIP"]


def test_submit_feed_json_listings_then_poll_and_read_the_report(
    sim: HttpsSimulator, client_kwargs: dict[str, Any]
) -> None:
    sku = sim.state.catalogue(TEST_SELLER)[0].sku
    feeds = Feeds(**client_kwargs)
    feed_id = submit(feeds, "JSON_LISTINGS_FEED", listings_feed(sku, 7), JSON)
    feed = poll_until_finished(sim, feeds, feed_id)
    assert feed["processingStatus"] == "DONE"

    report = json.loads(feeds.get_feed_document(feed["resultFeedDocumentId"]))
    schema = json.loads(model_text("listings-feed-processing-report-schema-v2.json"))
    jsonschema.Draft7Validator(schema).validate(report)
    assert report["header"]["feedId"] == feed_id
    assert report["summary"]["messagesAccepted"] == 1, report
    assert sim.state.listing_quantity(TEST_SELLER, sku) == 7


def test_get_feeds_over_pages_and_cancel_feed(sim: HttpsSimulator, client_kwargs: dict[str, Any]) -> None:
    sku = sim.state.catalogue(TEST_SELLER)[0].sku
    feeds = Feeds(**client_kwargs)
    created = [
        submit(feeds, "POST_ORDER_FULFILLMENT_DATA", fulfilment_feed(unshipped_order(sim)), XML),
        submit(feeds, "JSON_LISTINGS_FEED", listings_feed(sku, 1), JSON),
        submit(feeds, "JSON_LISTINGS_FEED", listings_feed(sku, 2), JSON),
    ]
    # The clock is frozen: all three are IN_QUEUE. Cancel the last one.
    cancelled = feeds.cancel_feed(created[2])
    assert cancelled.payload == {"status_code": 200}  # the library's stand-in for an empty 200

    # getFeeds wants nextToken alone on follow-up pages: the library's next_token_only.
    @load_all_pages(next_token_param="nextToken", next_token_only=True, throttle_by_seconds=0)
    def all_feeds(**kwargs: Any) -> ApiResponse:
        return feeds.get_feeds(**kwargs)

    pages = list(all_feeds(feedTypes="POST_ORDER_FULFILLMENT_DATA,JSON_LISTINGS_FEED", pageSize=2))
    statuses = {f["feedId"]: f["processingStatus"] for page in pages for f in page.payload["feeds"]}
    assert len(pages) == 2
    assert statuses == {created[0]: "IN_QUEUE", created[1]: "IN_QUEUE", created[2]: "CANCELLED"}
    assert feeds.get_feed(created[2]).payload["processingStatus"] == "CANCELLED"

    # Only IN_QUEUE feeds can be cancelled: Amazon's 400 reaches the caller as the library's exception.
    assert poll_until_finished(sim, feeds, created[0])["processingStatus"] == "DONE"
    with pytest.raises(SellingApiBadRequestException):
        feeds.cancel_feed(created[0])


# --- the tier's own guard --------------------------------------------------------------------------------


def test_the_library_responses_are_recorded_and_judged_by_the_models(
    sim: HttpsSimulator, client_kwargs: dict[str, Any]
) -> None:
    Orders(**client_kwargs).get_orders(MarketplaceIds=[US], CreatedAfter=days_ago(sim, 1))
    with pytest.raises(SellingApiBadRequestException):
        Orders(**client_kwargs).get_order("not-an-order-id")
    assert sim.assert_conforms() == 2
    assert [e.status for _, e in sim.sp_api_exchanges()] == [200, 400]

    # A body the model does not allow is caught (then taken out again, for the fixture's own check).
    good = sim.sp_api_exchanges("getOrders")[0][1]
    bad = Exchange(good.method, good.path, good.query, 200, good.headers, b'{"payload": {"Orders": 1}}')
    sim.exchanges.append(bad)
    with pytest.raises(AssertionError, match="getOrders"):
        sim.assert_conforms()
    sim.exchanges.remove(bad)
