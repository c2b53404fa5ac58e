"""The SP-API client against the simulator over real HTTP: every fault and validation error the
simulator can produce, classified (throttled / retryable / permanent with Amazon's code and
message); the Feeds client end to end; restricted data tokens."""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from ordersync.amazon.client import OrdersQuery, SpApiClient, amazon_time, ordersync_version
from ordersync.amazon.feeds import (
    JSON_CONTENT_TYPE,
    XML_CONTENT_TYPE,
    Availability,
    FeedsClient,
    FulfillmentMessage,
    listings_quantity_feed,
    order_fulfillment_feed,
    parse_processing_report,
)
from ordersync.channels import Channel, LwaCredentials, SecretRef
from ordersync.errors import AmazonRejected, AmazonThrottled, AmazonUnavailable, PipelineError
from ordersync.ratelimit import InMemoryRateLimiter
from ordersync.ratelimit.plans import PlanBook
from ordersync.settings import AmazonSettings
from ordersync.simulator import RunningSimulator, SimulatorState
from ordersync.simulator.clock import parse_iso
from ordersync.simulator.testing import (
    TEST_APPLICATION,
    TEST_CLIENT_ID,
    TEST_CLIENT_SECRET,
    TEST_REFRESH_TOKEN,
    TEST_SELLER,
    tiny_scenario,
)

pytestmark = pytest.mark.stage

US = "ATVPDKIKX0DER"
OTHER_SELLER = "A2OTHERSELLER"
#: The client gives up after this long; the simulator's timeouts hold the connection longer.
CLIENT_TIMEOUT_S = 0.5


@pytest.fixture
def sim() -> Iterator[RunningSimulator]:
    other = {
        "seller_id": OTHER_SELLER,
        "marketplaces": [US],
        "applications": [
            {"client_id": TEST_CLIENT_ID, "client_secret": TEST_CLIENT_SECRET, "refresh_token": "Atzr|other"}
        ],
        "orders": {"count": 5, "pending_share": 0, "afn_share": 0, "cancel_share": 0},
    }
    scenario = tiny_scenario(
        orders={"count": 5},
        extra_sellers=[other],
        faults={"timeout_s": 2.0, "slow_s": 0.1},
        feeds={"queue_delay_s": [5, 5], "duration_s": [30, 30], "stall_share": 0},
    )
    with RunningSimulator(SimulatorState(scenario)) as running:
        yield running


def make_channel(
    refresh_token: str = TEST_REFRESH_TOKEN, seller_id: str = TEST_SELLER, **extra: Any
) -> Channel:
    return Channel(
        name=f"test-{seller_id.lower()}",
        seller_id=seller_id,
        region="na",
        marketplaces=(US,),
        orders_api="v0",
        credentials=LwaCredentials(
            client_id=SecretRef(value=SecretStr(TEST_CLIENT_ID)),
            client_secret=SecretRef(value=SecretStr(TEST_CLIENT_SECRET)),
            refresh_token=SecretRef(value=SecretStr(refresh_token)),
        ),
        **extra,
    )


@dataclass
class Harness:
    sim: RunningSimulator
    http: httpx.AsyncClient
    limiter: InMemoryRateLimiter

    def client(self, channel: Channel | None = None) -> SpApiClient:
        amazon = AmazonSettings(endpoint=self.sim.base_url, lwa_endpoint=self.sim.lwa_url)
        return SpApiClient(
            channel=channel or make_channel(), amazon=amazon, limiter=self.limiter, http=self.http
        )

    async def control(self, method: str, path: str, body: Any = None) -> Any:
        response = await self.http.request(method, self.sim.base_url + path, json=body)
        assert response.status_code < 300, response.text
        return response.json() if response.content else None


@pytest.fixture
async def harness(sim: RunningSimulator) -> AsyncIterator[Harness]:
    # Amazon's own plans, run 100,000 times faster: the client's limiter never makes a test wait,
    # and rates learned from x-amzn-RateLimit-Limit are scaled the same way.
    limiter = InMemoryRateLimiter(plans=PlanBook(time_scale=100_000))
    async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT_S) as http:
        yield Harness(sim, http, limiter)


async def expect(
    kind: type[PipelineError], call: Awaitable[Any], status: int | None = None, code: str | None = None
) -> PipelineError:
    with pytest.raises(kind) as caught:
        await call
    error = caught.value
    if status is not None:
        assert getattr(error, "status", None) == status, error
    if code is not None:
        assert getattr(error, "code", None) == code, error
    return error


def ago(sim: RunningSimulator, seconds: float) -> str:
    return amazon_time(datetime.fromtimestamp(sim.state.now() - seconds, UTC))


async def test_every_fault_is_classified(harness: Harness) -> None:
    client = harness.client()
    order_id = harness.sim.state.add_order({})["amazon_order_id"]

    def get() -> Awaitable[Any]:
        return client.get_order(order_id)

    async def force(fault: str, operation: str | None = "getOrder") -> None:
        await harness.control("POST", "/_sim/faults/next", {"fault": fault, "operation": operation})

    await force("429")
    throttled = await expect(AmazonThrottled, get(), 429, "QuotaExceeded")
    assert throttled.kind == "throttled"
    assert "quota" in throttled.amazon_message  # type: ignore[attr-defined]
    await force("500")
    error = await expect(AmazonUnavailable, get(), 500, "InternalFailure")
    assert error.kind == "retryable"
    await force("503")
    await expect(AmazonUnavailable, get(), 503, "ServiceUnavailable")
    await force("timeout")
    timeout = await expect(AmazonUnavailable, get(), None, "ReadTimeout")
    assert timeout.kind == "retryable"
    await force("drop")
    dropped = await expect(AmazonUnavailable, get())
    assert dropped.status is None  # type: ignore[attr-defined]
    await force("slow")
    assert (await get()).amazon_order_id == order_id  # slow, within the client's timeout

    # A real 429 from an emptied bucket: Amazon's plan for this seller lowered while running.
    await harness.control("PUT", "/_sim/usage-plans", {"operation": "getOrder", "rate": 0.001, "burst": 1})
    await get()
    await expect(AmazonThrottled, get(), 429, "QuotaExceeded")
    assert client.last_rate_limits["getOrder"] == "0.001"
    await harness.control("PUT", "/_sim/usage-plans", {"operation": "getOrder"})

    # Fault rates (not forced): every 500 is retryable.
    await harness.control("PUT", "/_sim/faults", {"http_500": 1.0})
    await expect(AmazonUnavailable, get(), 500)
    await harness.control("PUT", "/_sim/faults", {})
    await get()


async def test_auth_failures_are_permanent_and_a_revoked_token_is_renewed(harness: Harness) -> None:
    refused = harness.client(make_channel(refresh_token="Atzr|unknown"))
    error = await expect(AmazonRejected, refused.get_order("111-0000000-0000000"), 400, "invalid_grant")
    assert error.kind == "permanent"
    wrong_secret = make_channel().model_copy(
        update={
            "credentials": make_channel().credentials.model_copy(
                update={"client_secret": SecretRef(value=SecretStr("wrong"))}
            )
        }
    )
    await expect(
        AmazonRejected, harness.client(wrong_secret).get_order("111-0000000-0000000"), 401, "invalid_client"
    )
    client = harness.client()
    order_id = harness.sim.state.add_order({})["amazon_order_id"]
    await client.get_order(order_id)
    await harness.control("POST", "/_sim/tokens/revoke")
    await expect(AmazonRejected, client.get_order(order_id), 403, "Unauthorized")
    assert (await client.get_order(order_id)).amazon_order_id == order_id  # new LWA token after the 403


async def test_every_orders_validation_error_is_permanent_with_amazons_code(harness: Harness) -> None:
    sim = harness.sim
    client = harness.client()
    other = harness.client(make_channel(refresh_token="Atzr|other", seller_id=OTHER_SELLER))

    async def get_orders(c: SpApiClient = client, **params: str) -> httpx.Response:
        return await c.call("getOrders", "GET", "/orders/v0/orders", params=params)

    async def search(**params: str) -> httpx.Response:
        return await client.call("searchOrders", "GET", "/orders/2026-01-01/orders", params=params)

    week = ago(sim, 7 * 86400)
    first = (await get_orders(MarketplaceIds=US, CreatedAfter=week, MaxResultsPerPage="1")).json()
    v0_token = first["payload"]["NextToken"]
    page = (await search(createdAfter=week, maxResultsPerPage="1")).json()
    search_token = page["pagination"]["nextToken"]
    cases: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        (
            "mutually exclusive filters",
            lambda: get_orders(MarketplaceIds=US, CreatedAfter=week, LastUpdatedAfter=week),
        ),
        ("no After filter", lambda: get_orders(MarketplaceIds=US)),
        (
            "Before later than 2 minutes ago",
            lambda: get_orders(MarketplaceIds=US, LastUpdatedAfter=week, LastUpdatedBefore=ago(sim, 60)),
        ),
        (
            "After later than Before",
            lambda: get_orders(MarketplaceIds=US, CreatedAfter=ago(sim, 3600), CreatedBefore=week),
        ),
        ("not a date", lambda: get_orders(MarketplaceIds=US, CreatedAfter="yesterday")),
        ("missing MarketplaceIds", lambda: get_orders(CreatedAfter=week)),
        ("foreign marketplace", lambda: get_orders(MarketplaceIds="A1PA6795UKMFR9", CreatedAfter=week)),
        ("unknown status", lambda: get_orders(MarketplaceIds=US, CreatedAfter=week, OrderStatuses="Lost")),
        (
            "bad fulfillment channel",
            lambda: get_orders(MarketplaceIds=US, CreatedAfter=week, FulfillmentChannels="XYZ"),
        ),
        ("page size", lambda: get_orders(MarketplaceIds=US, CreatedAfter=week, MaxResultsPerPage="0")),
        ("malformed NextToken", lambda: get_orders(MarketplaceIds=US, NextToken="not-a-token")),
        ("another seller's NextToken", lambda: get_orders(other, MarketplaceIds=US, NextToken=v0_token)),
        ("a searchOrders token in getOrders", lambda: get_orders(MarketplaceIds=US, NextToken=search_token)),
        ("search: unknown includedData", lambda: search(createdAfter=week, includedData="EVERYTHING")),
        ("search: unknown status", lambda: search(createdAfter=week, fulfillmentStatuses="LOST")),
        ("search: bad fulfilledBy", lambda: search(createdAfter=week, fulfilledBy="ME")),
        ("search: both windows", lambda: search(createdAfter=week, lastUpdatedAfter=week)),
        ("search: a paginationToken without its filters", lambda: search(paginationToken=search_token)),
        (
            "search: a paginationToken with other filters",
            lambda: search(createdAfter=ago(sim, 3 * 86400), paginationToken=search_token),
        ),
        ("getOrder: not 3-7-7", lambda: client.call("getOrder", "GET", "/orders/v0/orders/12345")),
        (
            "getOrderItems: bad NextToken",
            lambda: client.call(
                "getOrderItems",
                "GET",
                f"/orders/v0/orders/{first['payload']['Orders'][0]['AmazonOrderId']}/orderItems",
                params={"NextToken": "bad"},
            ),
        ),
        (
            "createRestrictedDataToken: no resources",
            lambda: client.call(
                "createRestrictedDataToken",
                "POST",
                "/tokens/2021-03-01/restrictedDataToken",
                json_body={"restrictedResources": []},
            ),
        ),
    ]
    for name, make in cases:
        error = await expect(AmazonRejected, make(), 400)
        assert error.code in ("InvalidInput", "Invalid Input"), (name, error)  # type: ignore[attr-defined]
        assert error.amazon_message, name  # type: ignore[attr-defined]
    await expect(AmazonRejected, client.get_order("111-0000000-0000000"), 404, "NotFound")
    await expect(AmazonRejected, client.get_order_items("111-0000000-0000000"), 404, "NotFound")
    # Pagination tokens of 2026-01-01 expire after 24 hours; v0's do not.
    sim.state.advance_clock(86400 + 1)
    expired = await expect(
        AmazonRejected, search(createdAfter=week, paginationToken=search_token), 400, "InvalidInput"
    )
    assert "expired" in str(expired) or expired.amazon_message  # type: ignore[attr-defined]
    assert (await get_orders(MarketplaceIds=US, NextToken=v0_token)).status_code == 200


async def test_2026_paging_repeats_the_query_and_lists_every_order_once() -> None:
    """searchOrders wants the first request's filters again with every paginationToken (the
    simulator refuses anything else, as the model says): the client's pages of a 2026-01-01 channel
    cover a window of several pages, every order exactly once; v0 paging still works."""
    scenario = tiny_scenario(
        orders={"count": 260, "pending_share": 0.2, "afn_share": 0.3, "cancel_share": 0.1}
    )
    with RunningSimulator(SimulatorState(scenario)) as sim:
        limiter = InMemoryRateLimiter(plans=PlanBook(time_scale=100_000))
        async with httpx.AsyncClient(timeout=5.0) as http:
            harness = Harness(sim, http, limiter)
            now = sim.state.now()
            since = datetime.fromtimestamp(now - 2 * 86400, UTC)
            listed = {
                o["amazon_order_id"]
                for o in sim.state.truth_orders()
                if parse_iso(o["last_updated"]) <= now - 120
            }
            assert len(listed) > 200
            for api in ("2026-01-01", "v0"):
                client = harness.client(make_channel().model_copy(update={"orders_api": api}))
                pages = [page async for page in client.iter_orders(since)]
                ids = [order.amazon_order_id for page in pages for order in page.orders]
                assert len(pages) >= 3, api
                assert len(ids) == len(set(ids)), f"{api}: an order was listed twice"
                assert set(ids) == listed, api
            # Pages of a created window, each asked with the same query and the previous token.
            client = harness.client(make_channel().model_copy(update={"orders_api": "2026-01-01"}))
            query = OrdersQuery(created_after=since, created_before=datetime.fromtimestamp(now - 600, UTC))
            page = await client.list_orders_page(query)
            created = list(page.orders)
            while page.next_token:
                page = await client.list_orders_page(query, next_token=page.next_token)
                created.extend(page.orders)
            created_ids = [o.amazon_order_id for o in created]
            assert len(created_ids) == len(set(created_ids)) > 200
            with pytest.raises(ValueError, match="updated_after or created_after"):
                await client.list_orders_page(next_token="a token without its query")
            searches = sim.state.counters.get(TEST_SELLER, "searchOrders")
            assert searches.statuses.get(400, 0) == 0
            assert searches.calls >= 6


async def test_confirm_shipment_errors_are_permanent(harness: Harness) -> None:
    client = harness.client()
    state = harness.sim.state
    order = state.add_order({"items": [{"quantity": 1}]})
    oid, item = order["amazon_order_id"], order["items"][0]["order_item_id"]

    def confirm(package: dict[str, Any], order_id: str = oid) -> Awaitable[httpx.Response]:
        base = {
            "packageReferenceId": "1",
            "carrierCode": "UPS",
            "trackingNumber": "1Z1",
            "shipDate": "2026-01-05T08:00:00Z",
            "orderItems": [{"orderItemId": item, "quantity": 1}],
        }
        return client.call(
            "confirmShipment",
            "POST",
            f"/orders/v0/orders/{order_id}/shipmentConfirmation",
            json_body={"marketplaceId": US, "packageDetail": {**base, **package}},
        )

    await expect(AmazonRejected, confirm({"shipDate": "05/01/2026"}), 400, "Invalid Input")
    await expect(AmazonRejected, confirm({"packageReferenceId": "abc"}), 400, "InvalidInput")
    await expect(AmazonRejected, confirm({"carrierCode": "Other"}), 400, "InvalidInput")
    await expect(
        AmazonRejected, confirm({"orderItems": [{"orderItemId": item, "quantity": 2}]}), 400, "InvalidInput"
    )
    await expect(
        AmazonRejected, confirm({"orderItems": [{"orderItemId": "nope", "quantity": 1}]}), 400, "InvalidInput"
    )
    await expect(AmazonRejected, confirm({}, "111-0000000-0000000"), 404, "NotFound")
    assert (await confirm({})).status_code == 204
    assert (await confirm({})).status_code == 204  # the same package again: no change
    await expect(AmazonRejected, confirm({"packageReferenceId": "2"}), 400, "PackageToUpdateNotFound")
    await harness.control("POST", "/_sim/buckets/reset")  # the simulated clock is frozen: refill by hand
    pending = state.add_order({"pending_s": 3600})["amazon_order_id"]
    await expect(AmazonRejected, confirm({}, pending), 400, "InvalidInput")
    canceled = state.add_order({})["amazon_order_id"]
    state.set_order_status(canceled, "Canceled")
    await expect(AmazonRejected, confirm({}, canceled), 400, "InvalidInput")


async def test_feeds_client_end_to_end_with_gzip_reports(harness: Harness) -> None:
    client = harness.client()
    feeds = FeedsClient(client)
    state = harness.sim.state
    order = state.add_order({"items": [{"quantity": 2}]})
    content = order_fulfillment_feed(
        TEST_SELLER,
        [
            FulfillmentMessage(
                1, order["amazon_order_id"], datetime(2026, 1, 5, tzinfo=UTC), "UPS", None, "Ground", "1Z9"
            ),
            FulfillmentMessage(
                2, "111-0000000-0000000", datetime(2026, 1, 5, tzinfo=UTC), None, "Local Courier"
            ),
        ],
    )
    feed_id = await feeds.submit("POST_ORDER_FULFILLMENT_DATA", content, XML_CONTENT_TYPE)
    feed = await feeds.get_feed(feed_id)
    assert (feed.processing_status, feed.done) == ("IN_QUEUE", False)
    state.advance_clock(40)
    feed = await feeds.get_feed(feed_id)
    assert feed.processing_status == "DONE"
    assert feed.result_feed_document_id is not None
    info = await feeds.get_feed_document_info(feed.result_feed_document_id)
    assert info.compression_algorithm == "GZIP"
    report = parse_processing_report(await feeds.get_feed_document(feed.result_feed_document_id))
    assert (report.processed, report.successful, report.with_error) == (2, 1, 1)
    (problem,) = report.results
    assert (problem.message_id, problem.amazon_order_id) == (2, "111-0000000-0000000")
    assert state.truth_order(order["amazon_order_id"])["status"] == "Shipped"

    sku = state.catalogue(TEST_SELLER)[0].sku
    listings_id = await feeds.submit(
        "JSON_LISTINGS_FEED",
        listings_quantity_feed(
            TEST_SELLER, [(1, sku, Availability(12)), (2, "NO-SUCH-SKU", Availability(1))]
        ),
        JSON_CONTENT_TYPE,
    )
    queued_id = await feeds.submit(
        "JSON_LISTINGS_FEED",
        listings_quantity_feed(TEST_SELLER, [(1, sku, Availability(3))]),
        JSON_CONTENT_TYPE,
    )
    await feeds.cancel_feed(queued_id)
    state.advance_clock(40)
    done = await feeds.get_feed(listings_id)
    assert done.processing_status == "DONE"
    assert done.result_feed_document_id
    listings_report = parse_processing_report(await feeds.get_feed_document(done.result_feed_document_id))
    assert (listings_report.processed, listings_report.successful, listings_report.with_error) == (2, 1, 1)
    assert listings_report.results[0].sku == "NO-SUCH-SKU"
    assert state.listing_quantity(TEST_SELLER, sku) == 12
    truth = (
        await harness.http.get(harness.sim.base_url + "/_sim/feeds", params={"seller_id": TEST_SELLER})
    ).json()
    assert [f["processingStatus"] for f in truth["feeds"]] == ["DONE", "DONE", "CANCELLED"]
    listings = (await harness.http.get(harness.sim.base_url + "/_sim/listings")).json()
    assert listings[TEST_SELLER][sku]["quantity"] == 12

    seen = [
        f.feed_id
        async for f in feeds.iter_feeds(["JSON_LISTINGS_FEED", "POST_ORDER_FULFILLMENT_DATA"], page_size=1)
    ]
    assert sorted(seen) == sorted([feed_id, listings_id, queued_id])
    retired = await feeds.submit("POST_INVENTORY_AVAILABILITY_DATA", b"<AmazonEnvelope/>", XML_CONTENT_TYPE)
    state.advance_clock(40)
    assert (await feeds.get_feed(retired)).processing_status == "FATAL"


async def test_every_feeds_error_is_classified(harness: Harness) -> None:
    feeds = FeedsClient(harness.client())
    state = harness.sim.state
    upload = await feeds.create_feed_document(XML_CONTENT_TYPE)
    await expect(
        AmazonRejected, feeds.upload(upload.url, b"<x/>", "application/json"), 403, "SignatureDoesNotMatch"
    )
    await harness.control("POST", "/_sim/faults/next", {"fault": "500", "operation": "uploadFeedDocument"})
    await expect(AmazonUnavailable, feeds.upload(upload.url, b"<x/>", XML_CONTENT_TYPE), 500, "InternalError")
    await harness.control("POST", "/_sim/faults/next", {"fault": "drop", "operation": "uploadFeedDocument"})
    await expect(AmazonUnavailable, feeds.upload(upload.url, b"<x/>", XML_CONTENT_TYPE))
    await feeds.upload(upload.url, b"<x/>", XML_CONTENT_TYPE)
    await expect(
        AmazonRejected, feeds.create_feed("POST_NO_SUCH_FEED", upload.feed_document_id), 400, "InvalidInput"
    )
    await expect(
        AmazonRejected,
        feeds.create_feed("POST_ORDER_FULFILLMENT_DATA", "amzn1.tortuga.4.na.x"),
        400,
        "InvalidInput",
    )
    await expect(
        AmazonRejected,
        feeds.create_feed("POST_ORDER_FULFILLMENT_DATA", upload.feed_document_id, ["A1PA6795UKMFR9"]),
        400,
        "InvalidInput",
    )
    await expect(AmazonRejected, feeds.get_feed("123"), 404, "NotFound")
    await expect(AmazonRejected, feeds.cancel_feed("123"), 404, "NotFound")
    no_type = feeds.client.call("createFeedDocument", "POST", "/feeds/2021-06-30/documents", json_body={})
    await expect(AmazonRejected, no_type, 400, "InvalidInput")
    await expect(AmazonRejected, feeds.get_feed("not-a-number"), 400, "InvalidInput")
    await expect(AmazonRejected, feeds.get_feeds_page(()), 400, "InvalidInput")
    await expect(AmazonRejected, feeds.get_feeds_page(next_token="garbage"), 400, "InvalidInput")
    await expect(AmazonRejected, feeds.get_feed_document_info("amzn1.tortuga.4.na.nope"), 404, "NotFound")
    feed_id = await feeds.create_feed("POST_ORDER_FULFILLMENT_DATA", upload.feed_document_id)
    state.advance_clock(10)
    await expect(AmazonRejected, feeds.cancel_feed(feed_id), 400, "InvalidInput")  # IN_PROGRESS
    state.advance_clock(40)
    feed = await feeds.get_feed(feed_id)
    assert feed.processing_status == "FATAL"  # not an AmazonEnvelope
    assert feed.result_feed_document_id is not None
    info = await feeds.get_feed_document_info(feed.result_feed_document_id)
    state.advance_clock(301)  # the download URL expires after 5 minutes
    await expect(AmazonRejected, feeds.download(info), 403, "AccessDenied")
    report = parse_processing_report(await feeds.get_feed_document(feed.result_feed_document_id))
    assert report.results[0].severity == "Error"
    # The expired upload URL.
    late = await feeds.create_feed_document(XML_CONTENT_TYPE)
    state.advance_clock(301)
    await expect(AmazonRejected, feeds.upload(late.url, b"<x/>", XML_CONTENT_TYPE), 403, "AccessDenied")
    # Feeds calls share the fault machinery: a 503 on getFeed is retryable, a 429 throttled.
    await harness.control("POST", "/_sim/faults/next", {"fault": "503", "operation": "getFeed"})
    await expect(AmazonUnavailable, feeds.get_feed(feed_id), 503)
    await harness.control("POST", "/_sim/faults/next", {"fault": "429", "operation": "createFeed"})
    await expect(
        AmazonThrottled, feeds.create_feed("POST_ORDER_FULFILLMENT_DATA", upload.feed_document_id), 429
    )


async def test_order_address_with_and_without_restricted_data_token(harness: Harness) -> None:
    order = harness.sim.state.add_order({})
    oid = order["amazon_order_id"]
    plain = await harness.client().get_order_address(oid)
    assert plain is not None
    assert plain.city
    assert (plain.name, plain.line1) == (None, None)
    pii_client = harness.client(make_channel(fetch_pii=True))
    full = await pii_client.get_order_address(oid)
    assert full is not None
    assert full.name
    assert full.line1
    assert full.phone
    # The RDT is cached per resource; it is refused for any other resource.
    rdt = await pii_client.restricted_data_token(
        "GET", f"/orders/v0/orders/{oid}/address", ("shippingAddress",)
    )
    assert rdt == await pii_client.restricted_data_token(
        "GET", f"/orders/v0/orders/{oid}/address", ("shippingAddress",)
    )
    await expect(
        AmazonRejected,
        pii_client.call("getOrder", "GET", f"/orders/v0/orders/{oid}", access_token=rdt),
        403,
        "Unauthorized",
    )
    await pii_client.get_order(oid)  # the LWA token was not thrown away for the RDT's 403
    bad = pii_client.call(
        "createRestrictedDataToken",
        "POST",
        "/tokens/2021-03-01/restrictedDataToken",
        json_body={"restrictedResources": [{"method": "GET", "path": "/x", "dataElements": ["everything"]}]},
    )
    await expect(AmazonRejected, bad, 400, "InvalidInput")
    pending = harness.sim.state.add_order({"pending_s": 3600})["amazon_order_id"]
    assert await pii_client.get_order_address(pending) is None


async def test_client_sends_amazons_user_agent_to_sp_api_and_lwa(harness: Harness) -> None:
    """Amazon asks every integrator for ``AppName/AppVersion (Language=...; Platform=...)`` (docs
    "Include a User-Agent header in all requests"); the simulator records what it received."""
    form = r"^{app}/[^ ]+ \(Language=Python/\d+\.\d+\.\d+; Platform=[^)]+\)$"
    client = harness.client()
    order_id = harness.sim.state.add_order({})["amazon_order_id"]
    await client.get_order(order_id)
    await FeedsClient(client).create_feed_document(XML_CONTENT_TYPE)
    agents = await harness.control("GET", "/_sim/user-agents")
    for operation in ("lwaToken", "getOrder", "createFeedDocument"):
        assert re.match(form.format(app="ordersync"), agents[operation]), (operation, agents[operation])
    assert agents["getOrder"].startswith(f"ordersync/{ordersync_version()} (")
    # The application name is a setting (ORDERSYNC_AMAZON__USER_AGENT_APP).
    amazon = AmazonSettings(
        endpoint=harness.sim.base_url, lwa_endpoint=harness.sim.lwa_url, user_agent_app="Shop Sync"
    )
    other = SpApiClient(
        channel=make_channel("Atzr|other", OTHER_SELLER),
        amazon=amazon,
        limiter=harness.limiter,
        http=harness.http,
    )
    await other.get_order(harness.sim.state.truth_orders(OTHER_SELLER)[0]["amazon_order_id"])
    agents = harness.sim.state.user_agents_json()
    assert re.match(form.format(app="Shop Sync"), agents["lwaToken"]), agents
    assert re.match(form.format(app="Shop Sync"), agents["getOrder"]), agents


async def test_2026_channel_gets_buyer_and_recipient_by_role_without_an_rdt(harness: Harness) -> None:
    order_id = harness.sim.state.add_order({})["amazon_order_id"]
    client = harness.client(make_channel(fetch_pii=True).model_copy(update={"orders_api": "2026-01-01"}))
    order = await client.get_order(order_id)
    assert order.buyer_name
    assert order.buyer_email
    assert order.shipping_address is not None
    assert order.shipping_address.name
    assert order.shipping_address.line1
    assert order.shipping_address.postal_code
    assert "createRestrictedDataToken" not in harness.sim.state.counters_json()["sellers"][TEST_SELLER]


async def test_a_channel_without_fetch_pii_never_asks_for_personal_data() -> None:
    """The seller's application holds none of Amazon's restricted roles, and the simulator refuses
    (403) BUYER or RECIPIENT asked without the role: a channel without ``fetch_pii`` reads its orders on
    both API versions, with no RDT and no personal field."""
    scenario = tiny_scenario(
        seller={"applications": [{**TEST_APPLICATION, "pii_roles": []}]},
        pii_without_role="forbidden",
        pii_requires_rdt=True,
    )
    limiter = InMemoryRateLimiter(plans=PlanBook(time_scale=100_000))
    with RunningSimulator(SimulatorState(scenario)) as sim:
        async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT_S) as http:
            amazon = AmazonSettings(endpoint=sim.base_url, lwa_endpoint=sim.lwa_url)
            since = OrdersQuery(updated_after=datetime.fromtimestamp(sim.state.now() - 2 * 86400, UTC))
            for api in ("v0", "2026-01-01"):
                channel = make_channel().model_copy(update={"orders_api": api})
                client = SpApiClient(channel=channel, amazon=amazon, limiter=limiter, http=http)
                page = await client.list_orders_page(since)
                assert page.orders, api
                shipped_by_seller = [o for o in page.orders if o.fulfillment_channel == "MFN"]
                fetched = await client.get_order(shipped_by_seller[0].amazon_order_id)
                for order in (*page.orders, fetched):
                    assert (order.buyer_name, order.buyer_email) == (None, None), (api, order)
                    address = order.shipping_address
                    if address is not None:
                        assert (address.name, address.line1, address.phone) == (None, None, None), api
                if api == "v0":
                    assert await client.get_order_address(fetched.amazon_order_id) is not None
        counted = sim.state.counters_json()["sellers"][TEST_SELLER]
    assert "createRestrictedDataToken" not in counted


async def test_feed_reports_read_with_and_without_content_encoding(harness: Harness) -> None:
    """A GZIP report downloads as gzip bytes (the client gunzips them), or, with
    enableContentEncodingUrlHeader, with ``Content-Encoding: gzip`` (httpx gunzips them)."""
    feeds = FeedsClient(harness.client())
    sku = harness.sim.state.catalogue(TEST_SELLER)[0].sku
    feed_id = await feeds.submit(
        "JSON_LISTINGS_FEED",
        listings_quantity_feed(TEST_SELLER, [(1, sku, Availability(3))]),
        JSON_CONTENT_TYPE,
    )
    harness.sim.state.advance_clock(60)
    feed = await feeds.get_feed(feed_id)
    assert feed.processing_status == "DONE"
    assert feed.result_feed_document_id is not None
    document_id = feed.result_feed_document_id
    plain = await feeds.get_feed_document(document_id)
    encoded = await feeds.get_feed_document(document_id, content_encoding_header=True)
    assert plain == encoded
    report = parse_processing_report(plain)
    assert (report.processed, report.successful) == (1, 1)
    info = await feeds.get_feed_document_info(document_id, content_encoding_header=True)
    assert info.compression_algorithm == "GZIP"
    raw = await harness.http.get(info.url)
    assert raw.headers["content-encoding"] == "gzip"
    assert json.loads(raw.content)["header"]["feedId"] == feed_id  # httpx decoded it
    unflagged = await feeds.get_feed_document_info(document_id)
    async with harness.http.stream("GET", unflagged.url) as streamed:
        assert "content-encoding" not in streamed.headers
        assert (await streamed.aread())[:2] == b"\x1f\x8b"
    assert harness.sim.state.listing_quantity(TEST_SELLER, sku) == 3


def test_gzip_helper_round_trip() -> None:
    # The report parser reads what the simulator writes, compressed or not.
    raw = json.dumps(
        {"header": {}, "issues": [], "summary": {"messagesProcessed": 1, "messagesAccepted": 1}}
    ).encode()
    assert parse_processing_report(gzip.decompress(gzip.compress(raw))).successful == 1
