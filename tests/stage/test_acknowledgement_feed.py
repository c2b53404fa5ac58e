"""Order acknowledgements and seller cancellations against the simulator and a real Redis: imported orders
acknowledged in one POST_ORDER_ACKNOWLEDGEMENT_DATA per seller with their sales-order codes (Amazon then
shows them as the seller's order id, on both Orders APIs), replays sending nothing again; a channel that
does not acknowledge sends nothing; a cancellation of an order with a shipped package is refused before
anything goes to Amazon."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from ordersync.consumers import acknowledgement, cancellation, fulfillment_feed
from ordersync.consumers.shipment_write_back import handle as write_back
from ordersync.schemas.envelope import Envelope
from ordersync.schemas.events import (
    OrderAcknowledgementResult,
    OrderCancellationRequested,
    OrderCancellationResult,
    OrderImported,
    OrderUpdated,
    SalesOrder,
    SalesOrderLine,
    ShipmentItem,
    ShipmentRequested,
)
from ordersync.schemas.topics import ORDERS_ACKNOWLEDGEMENT_RESULTS, ORDERS_CANCELLATION_RESULTS
from ordersync.simulator.runner import RunningSimulator
from ordersync.simulator.scenario import Scenario
from ordersync.simulator.testing import TEST_SELLER, tiny_scenario, validate_against_model

pytestmark = pytest.mark.stage

FEEDS = {"queue_delay_s": [0, 0], "duration_s": [10, 10], "stall_share": 0.0}
CHANNEL = "a1testseller"


def _scenario(count: int = 12) -> Scenario:
    return tiny_scenario(orders={"count": count}, feeds=FEEDS)


def _channel(runtime: Any, **settings: Any) -> Any:
    first = runtime.channels.channels[0]
    runtime.channels = runtime.channels.model_copy(update={"channels": (first.model_copy(update=settings),)})
    return runtime.channels.channels[0]


def _code(order: dict[str, Any]) -> str:
    return "SO" + order["amazon_order_id"][-8:]


def _imported(order: dict[str, Any], *, fulfillment_channel: str = "MFN") -> Envelope[OrderImported]:
    """The import stage's OrderImported of a simulated order, its sales-order code from the order id."""
    lines = tuple(
        SalesOrderLine(
            order_item_id=item["order_item_id"],
            seller_sku=item["sku"],
            asin=item["asin"],
            stock_code=f"STK-{item['sku']}",
            quantity=item["quantity_ordered"],
            unit_price=Decimal(item["unit_price"]),
            tax=Decimal(0),
            line_total=Decimal(item["unit_price"]) * item["quantity_ordered"],
        )
        for item in order["items"]
    )
    sales_order = SalesOrder(
        code=_code(order),
        channel=CHANNEL,
        seller_id=TEST_SELLER,
        marketplace_id=order["marketplace_id"],
        amazon_order_id=order["amazon_order_id"],
        order_status="Unshipped",
        fulfillment_channel=fulfillment_channel,  # type: ignore[arg-type]
        purchase_date=datetime.fromisoformat(order["created"].replace("Z", "+00:00")),
        currency=order["currency"],
        customer_name=None,
        customer_email=None,
        shipping_address=None,
        ship_service_level="Std",
        lines=lines,
        total=sum((line.line_total for line in lines), Decimal(0)),
    )
    return Envelope.wrap(
        OrderImported(sales_order=sales_order),
        seller_id=TEST_SELLER,
        marketplace_id=order["marketplace_id"],
        correlation_id=order["amazon_order_id"],
    )


def _shipment(order: dict[str, Any]) -> Envelope[ShipmentRequested]:
    request = ShipmentRequested(
        channel=CHANNEL,
        amazon_order_id=order["amazon_order_id"],
        package_reference_id="1",
        carrier_code="UPS",
        tracking_number=f"1Z{order['amazon_order_id'].replace('-', '')}",
        ship_date=datetime(2026, 1, 5, 10, tzinfo=UTC),
        items=tuple(
            ShipmentItem(order_item_id=item["order_item_id"], quantity=item["quantity_ordered"])
            for item in order["items"]
        ),
    )
    return Envelope.wrap(
        request, seller_id=TEST_SELLER, marketplace_id=order["marketplace_id"], correlation_id="ship"
    )


def _cancellation(order: dict[str, Any]) -> Envelope[OrderCancellationRequested]:
    request = OrderCancellationRequested(
        channel=CHANNEL,
        amazon_order_id=order["amazon_order_id"],
        requested_at=datetime(2026, 1, 5, 11, tzinfo=UTC),
    )
    return Envelope.wrap(request, seller_id=TEST_SELLER, correlation_id=order["amazon_order_id"])


async def test_imported_orders_are_acknowledged_with_their_sales_order_codes(make_runtime: Any) -> None:
    scenario = _scenario()
    with RunningSimulator(scenario) as sim:
        runtime = await make_runtime("shipment-write-back", scenario, sim)
        channel = _channel(runtime, acknowledge_orders=True)
        orders = sim.state.truth_orders(TEST_SELLER, status="Unshipped")
        good, cancelled_on_amazon, cancelled_known = orders[:6], orders[6], orders[7]
        envelopes = [_imported(o) for o in (*good, cancelled_on_amazon, cancelled_known)]
        # Cancelled on Amazon after the import, which ordersync has not seen yet: Amazon refuses it.
        sim.state.set_order_status(cancelled_on_amazon["amazon_order_id"], "Canceled")
        for envelope in envelopes:
            await acknowledgement.handle(runtime, envelope)
        assert runtime.emitted == []  # parked for the seller's next acknowledgement feed
        assert await acknowledgement.pending_count(runtime, TEST_SELLER) == 8
        # Cancelled, as ordersync knows by now: not sent, its result says why.
        known_id = cancelled_known["amazon_order_id"]
        await runtime.store.set_order_status(TEST_SELLER, known_id, amazon_status="Canceled")

        feed_id = await acknowledgement.run_feeds(runtime, channel)
        assert feed_id is not None
        assert await acknowledgement.run_feeds(runtime, channel) is None  # one in flight, and not due
        for envelope in envelopes:  # redelivered while in flight: not parked again
            await acknowledgement.handle(runtime, envelope)
        assert await acknowledgement.pending_count(runtime, TEST_SELLER) == 0
        feed = sim.state.truth_feed(feed_id)
        assert feed["feedType"] == "POST_ORDER_ACKNOWLEDGEMENT_DATA"
        assert "<StatusCode>Success</StatusCode>" in feed["input"]
        assert f"<MerchantOrderID>{_code(good[0])}</MerchantOrderID>" in feed["input"]
        assert known_id not in feed["input"]
        sim.state.advance_clock(60)
        assert await acknowledgement.check_inflight(runtime, channel)

        results: list[OrderAcknowledgementResult] = runtime.payloads(ORDERS_ACKNOWLEDGEMENT_RESULTS.name)
        by_order = {r.amazon_order_id: r for r in results}
        assert len(results) == len(by_order) == 8
        for order in good:
            result = by_order[order["amazon_order_id"]]
            assert (result.acknowledged, result.feed_id, result.merchant_order_id) == (
                True,
                feed_id,
                _code(order),
            )
            assert sim.state.truth_order(order["amazon_order_id"])["merchant_order_id"] == _code(order)
            status = await runtime.store.order_status(TEST_SELLER, order["amazon_order_id"])
            assert status["acknowledgement"] == "Success"
        refused = by_order[cancelled_on_amazon["amazon_order_id"]]
        assert not refused.acknowledged
        assert refused.feed_id == feed_id
        assert "canceled" in (refused.error_message or "")
        not_sent = by_order[known_id]
        assert (not_sent.acknowledged, not_sent.feed_id, not_sent.error_code) == (
            False,
            None,
            "OrderCanceled",
        )
        assert sim.state.truth_order(known_id)["merchant_order_id"] is None

        # Amazon shows the seller's order number: v0's SellerOrderId, 2026-01-01's SELLER_ORDER_ID alias.
        client = runtime.amazon(channel)
        order_id = good[0]["amazon_order_id"]
        v0 = (await client.call("getOrder", "GET", f"/orders/v0/orders/{order_id}")).json()
        validate_against_model("orders-v0", "GetOrderResponse", v0)
        assert v0["payload"]["SellerOrderId"] == _code(good[0])
        response = (await client.call("getOrder", "GET", f"/orders/2026-01-01/orders/{order_id}")).json()
        validate_against_model("orders-2026-01-01", "GetOrderResponse", response)
        aliases = response["order"]["orderAliases"]
        assert aliases == [{"aliasId": _code(good[0]), "aliasType": "SELLER_ORDER_ID"}]

        # Replayed imports and later updates: an order acknowledged once is never sent again.
        emitted = len(runtime.emitted)
        for envelope in envelopes:
            await acknowledgement.handle(runtime, envelope)
        update = OrderUpdated(
            channel=CHANNEL,
            sales_order_code=_code(good[0]),
            amazon_order_id=order_id,
            order_status="Shipped",
            lines=(),
            changed_at=datetime(2026, 1, 6, tzinfo=UTC),
        )
        await acknowledgement.handle(
            runtime, Envelope.wrap(update, seller_id=TEST_SELLER, correlation_id="u")
        )
        assert len(runtime.emitted) == emitted
        assert await acknowledgement.pending_count(runtime, TEST_SELLER) == 0
        sim.state.advance_clock(3 * 3600)
        assert await acknowledgement.run_feeds(runtime, channel) is None
        counters = sim.state.counters_json()["sellers"][TEST_SELLER]
        assert counters["createFeed"]["calls"] == 1
        assert all(c.get("throttled", 0) == 0 for c in counters.values())


@pytest.mark.parametrize(
    "settings", [{}, {"acknowledge_orders": True, "upload_order_status": False}], ids=["off", "no-upload"]
)
async def test_a_channel_that_does_not_acknowledge_sends_nothing(
    make_runtime: Any, settings: dict[str, Any]
) -> None:
    scenario = _scenario(count=4)
    with RunningSimulator(scenario) as sim:
        runtime = await make_runtime("shipment-write-back", scenario, sim)
        channel = _channel(runtime, **settings)
        orders = sim.state.truth_orders(TEST_SELLER, status="Unshipped")
        for order in orders:
            await acknowledgement.handle(runtime, _imported(order))
        assert await acknowledgement.pending_count(runtime, TEST_SELLER) == 0
        await acknowledgement.tick(runtime)
        assert await acknowledgement.run_feeds(runtime, channel) is None
        assert runtime.emitted == []
        assert sim.state.truth_feeds(TEST_SELLER) == []
        status = await runtime.store.order_status(TEST_SELLER, orders[0]["amazon_order_id"])
        assert "acknowledgement" not in status


async def test_orders_amazon_fulfils_are_not_acknowledged(make_runtime: Any) -> None:
    scenario = _scenario(count=4)
    with RunningSimulator(scenario) as sim:
        runtime = await make_runtime("shipment-write-back", scenario, sim)
        _channel(runtime, acknowledge_orders=True)
        order = sim.state.truth_orders(TEST_SELLER, status="Unshipped")[0]
        await acknowledgement.handle(runtime, _imported(order, fulfillment_channel="AFN"))
        assert await acknowledgement.pending_count(runtime, TEST_SELLER) == 0
        assert runtime.emitted == []


async def test_a_cancellation_never_follows_a_shipment(make_runtime: Any) -> None:
    """A Failure is never sent for an order with a package confirmed, or being confirmed (requested
    before or after the cancellation): the result says why, and only the others reach Amazon."""
    scenario = _scenario(count=8)
    with RunningSimulator(scenario) as sim:
        runtime = await make_runtime("shipment-write-back", scenario, sim)
        _channel(runtime, writeback_mode="confirm")
        shipped, in_a_feed, late, free = sim.state.truth_orders(TEST_SELLER, status="Unshipped")[:4]
        await write_back(runtime, _shipment(shipped))  # confirmShipment: Shipped on Amazon
        assert sim.state.truth_order(shipped["amazon_order_id"])["status"] == "Shipped"
        channel = _channel(runtime, writeback_mode="feed")
        await write_back(runtime, _shipment(in_a_feed))  # parked for the next fulfillment feed
        for order in (shipped, in_a_feed, late, free):
            await cancellation.handle(runtime, _cancellation(order))
        results: list[OrderCancellationResult] = runtime.payloads(ORDERS_CANCELLATION_RESULTS.name)
        assert {r.amazon_order_id: r.error_code for r in results} == {
            shipped["amazon_order_id"]: "OrderShipped",
            in_a_feed["amazon_order_id"]: "OrderShipped",
        }
        assert all(not r.cancelled and r.feed_id is None and r.error_message for r in results)
        # A package of the third is requested after its cancellation was parked: checked again before
        # the feed goes.
        await write_back(runtime, _shipment(late))
        feed_id = await cancellation.run_feeds(runtime, channel)
        assert feed_id is not None
        sent = sim.state.truth_feed(feed_id)["input"]
        assert free["amazon_order_id"] in sent
        assert "<StatusCode>Failure</StatusCode>" in sent
        for order in (shipped, in_a_feed, late):
            assert order["amazon_order_id"] not in sent
        sim.state.advance_clock(60)
        assert await cancellation.check_inflight(runtime, channel)
        outcome = {
            r.amazon_order_id: (r.cancelled, r.error_code)
            for r in runtime.payloads(ORDERS_CANCELLATION_RESULTS.name)
        }
        assert outcome == {
            shipped["amazon_order_id"]: (False, "OrderShipped"),
            in_a_feed["amazon_order_id"]: (False, "OrderShipped"),
            late["amazon_order_id"]: (False, "OrderShipped"),
            free["amazon_order_id"]: (True, None),
        }
        for order in (in_a_feed, late):
            status = await runtime.store.order_status(TEST_SELLER, order["amazon_order_id"])
            assert status["seller_cancellation"] == "Failed"
        # The shipments still go: nothing was cancelled under them.
        assert await fulfillment_feed.pending_count(runtime, TEST_SELLER) == 2
        assert await fulfillment_feed.run_feeds(runtime, channel)
        sim.state.advance_clock(60)
        assert await fulfillment_feed.check_inflight(runtime, channel)
        for order in (in_a_feed, late):
            assert sim.state.truth_order(order["amazon_order_id"])["status"] == "Shipped"
        assert sim.state.truth_order(free["amazon_order_id"])["status"] == "Canceled"


async def test_orders_parked_before_the_channel_stopped_acknowledging_are_not_sent(make_runtime: Any) -> None:
    scenario = _scenario(count=4)
    with RunningSimulator(scenario) as sim:
        runtime = await make_runtime("shipment-write-back", scenario, sim)
        _channel(runtime, acknowledge_orders=True)
        order = sim.state.truth_orders(TEST_SELLER, status="Unshipped")[0]
        await acknowledgement.handle(runtime, _imported(order))
        assert await acknowledgement.pending_count(runtime, TEST_SELLER) == 1
        channel = _channel(runtime, acknowledge_orders=False)
        assert await acknowledgement.run_feeds(runtime, channel) is None
        assert await acknowledgement.pending_count(runtime, TEST_SELLER) == 0
        assert runtime.emitted == []
        assert sim.state.truth_feeds(TEST_SELLER) == []
        status = await runtime.store.order_status(TEST_SELLER, order["amazon_order_id"])
        assert status["acknowledgement"] == "NotUploaded"
