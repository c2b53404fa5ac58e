"""Golden tests: Amazon's own example responses (the models' sandbox and examples) parse into
ordersync's order model."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from ordersync.amazon.models import default_plans, load_model
from ordersync.amazon.normalize import item_from_2026, item_from_v0, order_from_2026, order_from_v0

pytestmark = pytest.mark.unit


def _sandbox_responses(api: str, operation: str, status: str = "200") -> list[dict[str, Any]]:
    for methods in load_model(api)["paths"].values():
        for op in methods.values():
            if isinstance(op, dict) and op.get("operationId") == operation:
                sandbox = op["responses"][status].get("x-amzn-api-sandbox", {})
                return [case["response"] for case in sandbox.get("static", [])]
    raise AssertionError(f"{operation} not in {api}")


def test_every_v0_get_orders_sandbox_example_parses() -> None:
    responses = _sandbox_responses("orders-v0", "getOrders")
    assert responses
    parsed = 0
    for response in responses:
        for raw in response["payload"]["Orders"]:
            order = order_from_v0(raw, "A1SELLER")
            assert order.amazon_order_id == raw["AmazonOrderId"]
            assert order.order_status == raw["OrderStatus"]
            assert order.items is None  # v0 lists orders without items
            parsed += 1
    assert parsed > 0


def test_v0_get_order_items_sandbox_example_parses_with_prices() -> None:
    (response,) = _sandbox_responses("orders-v0", "getOrderItems")
    raws = response["payload"]["OrderItems"]
    items = [item_from_v0(raw) for raw in raws]
    assert [i.order_item_id for i in items] == [r["OrderItemId"] for r in raws]
    for item, raw in zip(items, raws, strict=True):
        assert item.quantity_ordered == raw["QuantityOrdered"]
        if "ItemPrice" in raw:
            assert item.item_price is not None
            assert item.item_price.amount == Decimal(raw["ItemPrice"]["Amount"])


def test_2026_search_orders_example_parses_with_embedded_items() -> None:
    model = load_model("orders-2026-01-01")
    example = model["paths"]["/orders/2026-01-01/orders"]["get"]["responses"]["200"]["examples"][
        "application/json"
    ]
    for raw in example["orders"]:
        order = order_from_2026(raw, "A1SELLER")
        assert order.amazon_order_id == raw["orderId"]
        assert order.items is not None
        assert len(order.items) == len(raw["orderItems"])
        first = order.items[0]
        unit = Decimal(raw["orderItems"][0]["product"]["price"]["unitPrice"]["amount"])
        assert first.item_price is not None
        assert first.item_price.amount == unit * raw["orderItems"][0]["quantityOrdered"]
        assert order.shipping_address is not None


def test_default_plans_come_from_the_models() -> None:
    plans = default_plans()
    assert plans["getOrders"] == (0.0167, 20)
    assert plans["searchOrders"] == (0.0056, 20)
    assert plans["getOrderItems"] == (0.5, 30)
    assert plans["confirmShipment"] == (2.0, 10)
    assert plans["createFeed"] == (0.0083, 15)


def test_gift_wrap_and_message_are_read_from_both_api_versions() -> None:
    v0 = item_from_v0(
        {
            "ASIN": "B0",
            "OrderItemId": "1",
            "QuantityOrdered": 1,
            "IsGift": "true",
            "BuyerInfo": {
                "GiftWrapPrice": {"CurrencyCode": "USD", "Amount": "3.99"},
                "GiftMessageText": "Hi",
            },
        }
    )
    assert v0.is_gift
    assert v0.gift_wrap_price is not None
    assert v0.gift_wrap_price.amount == Decimal("3.99")
    assert v0.gift_message == "Hi"
    raw = {
        "orderItemId": "1",
        "quantityOrdered": 1,
        "product": {"asin": "B0"},
        "proceeds": {
            "breakdowns": [{"type": "GIFT_WRAP", "subtotal": {"amount": "2.50", "currencyCode": "EUR"}}]
        },
        "fulfillment": {"packing": {"giftOption": {"giftMessage": "Alles Gute", "giftWrapLevel": "Classic"}}},
    }
    v2026 = item_from_2026(raw)
    assert v2026.is_gift
    assert v2026.gift_wrap_price is not None
    assert v2026.gift_wrap_price.amount == Decimal("2.50")
    assert v2026.gift_message == "Alles Gute"
    del raw["fulfillment"]
    assert not item_from_2026(raw).is_gift


def test_the_delivery_promise_is_read_from_both_api_versions() -> None:
    v0 = order_from_v0(
        {
            "AmazonOrderId": "111-0000000-0000001",
            "PurchaseDate": "2026-12-01T10:00:00Z",
            "LastUpdateDate": "2026-12-01T10:00:00Z",
            "OrderStatus": "Unshipped",
            "MarketplaceId": "ATVPDKIKX0DER",
            "EarliestDeliveryDate": "2026-12-04T08:00:00Z",
            "LatestDeliveryDate": "2026-12-06T20:00:00Z",
        },
        "A1SELLER",
    )
    assert v0.earliest_delivery_date is not None
    assert (v0.earliest_delivery_date.day, v0.latest_delivery_date and v0.latest_delivery_date.day) == (4, 6)
    model = load_model("orders-2026-01-01")
    example = model["paths"]["/orders/2026-01-01/orders"]["get"]["responses"]["200"]["examples"][
        "application/json"
    ]
    raw = dict(example["orders"][0])
    window = {"earliestDateTime": "2026-12-04T08:00:00Z", "latestDateTime": "2026-12-06T20:00:00Z"}
    raw["fulfillment"] = {**raw["fulfillment"], "deliverByWindow": window}
    current = order_from_2026(raw, "A1SELLER")
    assert current.earliest_delivery_date == v0.earliest_delivery_date
    assert current.latest_delivery_date == v0.latest_delivery_date


def test_programmes_and_associated_orders_are_read_from_both_api_versions() -> None:
    v0 = order_from_v0(
        {
            "AmazonOrderId": "111-0000000-0000002",
            "PurchaseDate": "2026-12-01T10:00:00Z",
            "LastUpdateDate": "2026-12-01T10:00:00Z",
            "OrderStatus": "Unshipped",
            "MarketplaceId": "A21TJRUUN4KGV",
            "IsPrime": True,
            "IsBusinessOrder": "true",
            "EasyShipShipmentStatus": "PendingPickUp",
            "OrderType": "Preorder",
            "IsReplacementOrder": "true",
            "ReplacedOrderId": "111-0000000-0000001",
        },
        "A1SELLER",
    )
    assert v0.programs == ("PRIME", "AMAZON_BUSINESS", "AMAZON_EASY_SHIP", "PREORDER")
    assert [(a.amazon_order_id, a.association_type) for a in v0.associated_orders] == [
        ("111-0000000-0000001", "REPLACEMENT_ORIGINAL_ID")
    ]
    (raw_item,) = _sandbox_responses("orders-v0", "getOrderItems")[0]["payload"]["OrderItems"][:1]
    item = item_from_v0({**raw_item, "AmazonPrograms": {"Programs": ["FBM_SHIP_PLUS"]}})
    assert item.programs == ("FBM_SHIP_PLUS",)
    assert v0.model_copy(update={"items": (item,)}).in_program("FBM_SHIP_PLUS")
    assert not v0.in_program("FBM_SHIP_PLUS")
    model = load_model("orders-2026-01-01")
    example = model["paths"]["/orders/2026-01-01/orders"]["get"]["responses"]["200"]["examples"][
        "application/json"
    ]
    raw = {
        **example["orders"][0],
        "programs": ["FBM_SHIP_PLUS", "PRIME"],
        "associatedOrders": [{"orderId": "111-0000000-0000001", "associationType": "EXCHANGE_ORIGINAL_ID"}],
    }
    current = order_from_2026(raw, "A1SELLER")
    assert current.programs == ("FBM_SHIP_PLUS", "PRIME")
    assert current.associated_orders[0].association_type == "EXCHANGE_ORIGINAL_ID"
