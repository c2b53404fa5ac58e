"""Golden tests through the client: every ``x-amzn-api-sandbox`` static example (and ``examples``)
of the operations ordersync calls is served to :class:`SpApiClient` / :class:`FeedsClient` by a mock
transport; success examples must parse, error examples must raise classified with Amazon's code and
message. (tests/unit/test_normalize.py checks the normalizers on the list examples directly.)"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from ordersync.amazon.client import SpApiClient, amazon_error, user_agent
from ordersync.amazon.feeds import FeedsClient
from ordersync.amazon.models import load_model
from ordersync.channels import Channel, LwaCredentials, SecretRef
from ordersync.errors import AmazonRejected
from ordersync.ratelimit import InMemoryRateLimiter
from ordersync.ratelimit.plans import PlanBook
from ordersync.schemas.events import ShipmentItem, ShipmentRequested
from ordersync.settings import AmazonSettings

pytestmark = pytest.mark.unit

#: operationId -> (API, how the client calls it, what to check on success).
Call = Callable[[SpApiClient], Awaitable[Any]]
WHEN = datetime(2026, 1, 5, tzinfo=UTC)


def _shipment() -> ShipmentRequested:
    return ShipmentRequested(
        channel="golden",
        amazon_order_id="902-1106328-1059050",
        package_reference_id="1",
        carrier_code="FedEx",
        tracking_number="112345678",
        ship_date=WHEN,
        items=(ShipmentItem(order_item_id="79039765272157", quantity=1),),
    )


CALLS: dict[tuple[str, str], Call] = {
    ("orders-v0", "getOrders"): lambda c: c.list_orders_page(updated_after=WHEN),
    ("orders-v0", "getOrder"): lambda c: c.get_order("902-1845936-5435065"),
    ("orders-v0", "getOrderItems"): lambda c: c.get_order_items("902-1845936-5435065"),
    ("orders-v0", "getOrderAddress"): lambda c: c.get_order_address("902-1845936-5435065"),
    ("orders-v0", "confirmShipment"): lambda c: c.confirm_shipment(_shipment(), "ATVPDKIKX0DER"),
    ("orders-2026-01-01", "searchOrders"): lambda c: c.list_orders_page(updated_after=WHEN),
    ("orders-2026-01-01", "getOrder"): lambda c: c.get_order("171-9876543-2109876"),
    ("tokens", "createRestrictedDataToken"): lambda c: c.restricted_data_token("GET", "/orders/v0/orders"),
    ("feeds", "createFeedDocument"): lambda c: FeedsClient(c).create_feed_document("text/xml"),
    ("feeds", "createFeed"): lambda c: FeedsClient(c).create_feed("POST_ORDER_FULFILLMENT_DATA", "doc"),
    ("feeds", "getFeed"): lambda c: FeedsClient(c).get_feed("FeedId1"),
    ("feeds", "getFeeds"): lambda c: FeedsClient(c).get_feeds_page(["POST_PRODUCT_DATA"]),
    ("feeds", "cancelFeed"): lambda c: FeedsClient(c).cancel_feed("FeedId1"),
    ("feeds", "getFeedDocument"): lambda c: FeedsClient(c).get_feed_document_info("doc"),
}


def _examples() -> list[Any]:
    found: list[Any] = []
    for (api, operation_id), _ in CALLS.items():
        for methods in load_model(api)["paths"].values():
            for op in methods.values():
                if not isinstance(op, dict) or op.get("operationId") != operation_id:
                    continue
                for status, response in op["responses"].items():
                    bodies = [
                        case.get("response")
                        for case in (response.get("x-amzn-api-sandbox") or {}).get("static", [])
                    ]
                    bodies += list((response.get("examples") or {}).values())
                    for index, body in enumerate(bodies):
                        found.append(
                            pytest.param(
                                api,
                                operation_id,
                                int(status),
                                body,
                                id=f"{api}-{operation_id}-{status}-{index}",
                            )
                        )
    return found


def _client(api: str, body: Any, status: int, seen: list[httpx.Request]) -> SpApiClient:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/auth/o2/token":
            return httpx.Response(
                200, json={"access_token": "Atza|x", "token_type": "bearer", "expires_in": 3600}
            )
        seen.append(request)
        headers = {"x-amzn-RequestId": "req-1"}
        if "NextToken" in request.url.params and isinstance(body, dict) and "payload" in body:
            # The example's NextToken asks for a next page: answer it as the last, empty one.
            return httpx.Response(200, json={"payload": {"OrderItems": [], "Orders": []}}, headers=headers)
        if body is None:
            return httpx.Response(status, headers=headers)
        return httpx.Response(
            status, content=json.dumps(body).encode(), headers={**headers, "content-type": "application/json"}
        )

    channel = Channel(
        name="golden",
        seller_id="A1SELLER",
        marketplaces=("ATVPDKIKX0DER",),
        orders_api="v0" if api == "orders-v0" else "2026-01-01",
        credentials=LwaCredentials(
            client_id=SecretRef(value=SecretStr("id")),
            client_secret=SecretRef(value=SecretStr("secret")),
            refresh_token=SecretRef(value=SecretStr("Atzr|x")),
        ),
    )
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    limiter = InMemoryRateLimiter(plans=PlanBook(time_scale=100_000))
    amazon = AmazonSettings(endpoint="https://sp.example", lwa_endpoint="https://sp.example/auth/o2/token")
    return SpApiClient(channel=channel, amazon=amazon, limiter=limiter, http=http)


@pytest.mark.parametrize(("api", "operation_id", "status", "body"), _examples())
async def test_client_handles_amazons_example(api: str, operation_id: str, status: int, body: Any) -> None:
    seen: list[httpx.Request] = []
    client = _client(api, body, status, seen)
    call = CALLS[(api, operation_id)]
    if status >= 400:
        with pytest.raises(AmazonRejected) as caught:
            await call(client)
        first = body["errors"][0]
        # Amazon's message, and its details when the example has them.
        details = first.get("details")
        expected = (
            f"{first['message']} ({details})"
            if details and details not in first["message"]
            else first["message"]
        )
        assert (caught.value.status, caught.value.code, caught.value.amazon_message) == (
            status,
            first["code"],
            expected,
        )
        assert caught.value.request_id == "req-1"
        return
    result = await call(client)
    assert seen, "the client made the call"
    if operation_id in ("getOrders", "searchOrders"):
        raw = body["payload"]["Orders"] if "payload" in body else body["orders"]
        assert [o.amazon_order_id for o in result.orders] == [
            o.get("AmazonOrderId") or o.get("orderId") for o in raw
        ]
    elif operation_id == "getOrder":
        raw = body.get("payload") or body["order"]
        assert result.amazon_order_id == (raw.get("AmazonOrderId") or raw.get("orderId"))
    elif operation_id == "getOrderItems":
        assert [i.order_item_id for i in result] == [i["OrderItemId"] for i in body["payload"]["OrderItems"]]
    elif operation_id == "getOrderAddress":
        assert result is not None
        assert result.city == body["payload"]["ShippingAddress"]["City"]
        assert result.name == body["payload"]["ShippingAddress"].get("Name")
    elif operation_id == "createRestrictedDataToken":
        assert result == body["restrictedDataToken"]
    elif operation_id == "createFeedDocument":
        assert (result.feed_document_id, result.url) == (body["feedDocumentId"], body["url"])
    elif operation_id == "createFeed":
        assert result == body["feedId"]
    elif operation_id == "getFeed":
        assert (result.feed_id, result.processing_status) == (body["feedId"], body["processingStatus"])
    elif operation_id == "getFeeds":
        assert [f.feed_id for f in result.feeds] == [f["feedId"] for f in body["feeds"]]
        assert result.next_token == body.get("nextToken")
    elif operation_id == "getFeedDocument":
        assert result.feed_document_id == body["feedDocumentId"]
    else:
        assert result is None  # confirmShipment, cancelFeed
    await client.http.aclose()


async def test_every_request_to_amazon_carries_the_user_agent_and_rdts_only_where_needed() -> None:
    """Amazon asks for ``AppName/AppVersion (Language=...; Platform=...)`` on every request (docs
    "Include a User-Agent header in all requests"): LWA, SP-API and the feed document URLs. The RDT
    for getOrderAddress names no dataElements (tokens_2021-03-01.json: required only for getOrders,
    getOrder and getOrderItems); a 2026-01-01 channel asks for none."""
    seen: list[httpx.Request] = []
    order = "902-1845936-5435065"

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        path = request.url.path
        if path == "/auth/o2/token":
            return httpx.Response(200, json={"access_token": "Atza|x", "expires_in": 3600})
        if path.endswith("/restrictedDataToken"):
            return httpx.Response(200, json={"restrictedDataToken": "Atz.sprdt|x", "expiresIn": 3600})
        if path.endswith("/address"):
            return httpx.Response(200, json={"payload": {"AmazonOrderId": order}})
        if path.startswith("/orders/2026-01-01/"):
            return httpx.Response(404, json={"errors": [{"code": "NotFound", "message": "no"}]})
        if path == "/s3/doc":
            return httpx.Response(200, content=b"{}")
        return httpx.Response(200, json={"feedDocumentId": "doc", "url": "https://s3.example/s3/doc"})

    def channel(api: str) -> Channel:
        return Channel(
            name=f"ua-{api}",
            seller_id="A1SELLER",
            marketplaces=("ATVPDKIKX0DER",),
            orders_api=api,  # type: ignore[arg-type]
            fetch_pii=True,
            credentials=LwaCredentials(
                client_id=SecretRef(value=SecretStr("id")),
                client_secret=SecretRef(value=SecretStr("secret")),
                refresh_token=SecretRef(value=SecretStr("Atzr|x")),
            ),
        )

    amazon = AmazonSettings(
        endpoint="https://sp.example",
        lwa_endpoint="https://sp.example/auth/o2/token",
        user_agent_app="Shop/Sync",
    )
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        limiter = InMemoryRateLimiter(plans=PlanBook(time_scale=100_000))
        client = SpApiClient(channel=channel("v0"), amazon=amazon, limiter=limiter, http=http)
        assert await client.get_order_address(order) is None
        feeds = FeedsClient(client)
        document = await feeds.get_feed_document_info("doc")
        await feeds.download(document)
        await feeds.upload("https://s3.example/s3/doc", b"<x/>", "text/xml")
        v2026 = SpApiClient(channel=channel("2026-01-01"), amazon=amazon, limiter=limiter, http=http)
        with pytest.raises(AmazonRejected):
            await v2026.get_order("171-9876543-2109876")
    pattern = r"^Shop\\/Sync/[^ ]+ \(Language=Python/\d+\.\d+\.\d+; Platform=[^)]+\)$"
    assert len(seen) == 8
    for request in seen:
        assert re.match(pattern, request.headers["user-agent"]), (request.url, request.headers["user-agent"])
    rdt_requests = [r for r in seen if r.url.path.endswith("/restrictedDataToken")]
    assert [json.loads(r.content) for r in rdt_requests] == [
        {"restrictedResources": [{"method": "GET", "path": f"/orders/v0/orders/{order}/address"}]}
    ]
    address = next(r for r in seen if r.url.path.endswith("/address"))
    assert address.headers["x-amz-access-token"] == "Atz.sprdt|x"
    assert user_agent("My App", "1.0").startswith("My App/1.0 (Language=Python/")


def test_amazon_error_details_reach_the_operator() -> None:
    refused = {
        "errors": [
            {
                "code": "InvalidInput",
                "message": "The input you have submitted is not valid",
                "details": "The order was cancelled by the buyer",
            }
        ]
    }
    assert amazon_error(refused) == (
        "InvalidInput",
        "The input you have submitted is not valid (The order was cancelled by the buyer)",
    )
    several = {
        "errors": [
            {"code": "InvalidInput", "message": "bad marketplace"},
            {"code": "InvalidInput", "message": "bad date", "details": "CreatedAfter is in the future"},
        ]
    }
    assert amazon_error(several) == (
        "InvalidInput",
        "InvalidInput: bad marketplace; InvalidInput: bad date (CreatedAfter is in the future)",
    )
    assert amazon_error({}) == ("Unknown", "no error details")
    assert len(amazon_error({"errors": [{"code": "X", "message": "m" * 5000}]})[1]) == 1000
