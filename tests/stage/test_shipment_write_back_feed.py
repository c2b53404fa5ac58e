"""Shipment write-back by feed, against the simulator and a real Redis: one POST_ORDER_FULFILLMENT_DATA
per seller with every pending shipment, its report mapped back to each order; auto mode; a stalled
feed; the channel's "don't upload order status"; cancelled orders never confirmed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from ordersync.consumers import cancellation, fulfillment_feed
from ordersync.consumers.shipment_write_back import handle
from ordersync.schemas.envelope import Envelope
from ordersync.schemas.events import (
    OrderCancellationRequested,
    OrderCancellationResult,
    ShipmentConfirmed,
    ShipmentFailed,
    ShipmentItem,
    ShipmentRequested,
)
from ordersync.schemas.topics import ORDERS_CANCELLATION_RESULTS, SHIPMENTS_CONFIRMED, SHIPMENTS_FAILED
from ordersync.settings import WriteBackSettings
from ordersync.simulator.runner import RunningSimulator
from ordersync.simulator.scenario import Scenario
from ordersync.simulator.testing import TEST_SELLER, tiny_scenario

pytestmark = pytest.mark.stage

FEEDS = {"queue_delay_s": [0, 0], "duration_s": [10, 10], "stall_share": 0.0}


def _scenario(count: int = 30, **feeds: Any) -> Scenario:
    return tiny_scenario(orders={"count": count}, feeds={**FEEDS, **feeds})


def _request(
    order: dict[str, Any], *, extra_quantity: int = 0, order_id: str | None = None
) -> Envelope[ShipmentRequested]:
    items = tuple(
        ShipmentItem(order_item_id=item["order_item_id"], quantity=item["quantity_ordered"] + extra_quantity)
        for item in order["items"]
    )
    request = ShipmentRequested(
        channel="a1testseller",
        amazon_order_id=order_id or order["amazon_order_id"],
        package_reference_id="1",
        carrier_code="UPS",
        shipping_method="Ground",
        tracking_number=f"1Z{order['amazon_order_id'].replace('-', '')}",
        ship_date=datetime(2026, 1, 5, 10, tzinfo=UTC),
        items=items,
    )
    return Envelope.wrap(
        request,
        seller_id=TEST_SELLER,
        marketplace_id=order["marketplace_id"],
        correlation_id=request.amazon_order_id,
    )


def _with_mode(runtime: Any, mode: str, **channel: Any) -> Any:
    first = runtime.channels.channels[0]
    runtime.channels = runtime.channels.model_copy(
        update={"channels": (first.model_copy(update={"writeback_mode": mode, **channel}),)}
    )
    return runtime.channels.channels[0]


async def test_one_feed_confirms_every_pending_shipment_and_reports_failures_per_order(
    make_runtime: Any,
) -> None:
    scenario = _scenario()
    with RunningSimulator(scenario) as sim:
        runtime = await make_runtime("shipment-write-back", scenario, sim)
        channel = _with_mode(runtime, "feed")
        assert channel.name == "a1testseller"
        orders = sim.state.truth_orders(TEST_SELLER, status="Unshipped")
        assert len(orders) >= 24
        good, cancelled, over, unknown_base = orders[:20], orders[20], orders[21], orders[22]
        sim.state.set_order_status(cancelled["amazon_order_id"], "Canceled")
        unknown_id = "999-9999999-9999999"
        envelopes = [
            *(_request(o) for o in good),
            _request(cancelled),
            _request(over, extra_quantity=1),
            _request(unknown_base, order_id=unknown_id),
        ]
        for envelope in envelopes:
            await handle(runtime, envelope)
        assert runtime.emitted == []  # parked for the next feed, nothing sent yet
        assert await fulfillment_feed.pending_count(runtime, TEST_SELLER) == len(envelopes)

        feed_id = await fulfillment_feed.run_feeds(runtime, channel)
        assert feed_id is not None
        assert await fulfillment_feed.run_feeds(runtime, channel) is None  # one feed in flight at a time
        for envelope in envelopes:  # redelivered while in flight: not queued again
            await handle(runtime, envelope)
        assert await fulfillment_feed.pending_count(runtime, TEST_SELLER) == 0
        assert not await fulfillment_feed.check_inflight(runtime, channel)  # still queued on Amazon
        sim.state.advance_clock(60)
        assert await fulfillment_feed.check_inflight(runtime, channel)

        feeds = sim.state.truth_feeds(TEST_SELLER, "POST_ORDER_FULFILLMENT_DATA")
        assert [f["feedId"] for f in feeds] == [feed_id]
        assert len(feeds[0]["messages"]) == len(envelopes)

        confirmed: list[ShipmentConfirmed] = runtime.payloads(SHIPMENTS_CONFIRMED.name)
        failed: list[ShipmentFailed] = runtime.payloads(SHIPMENTS_FAILED.name)
        assert sorted(c.amazon_order_id for c in confirmed) == sorted(o["amazon_order_id"] for o in good)
        assert {c.method for c in confirmed} == {"feed"}
        by_order = {f.amazon_order_id: f for f in failed}
        assert set(by_order) == {cancelled["amazon_order_id"], over["amazon_order_id"], unknown_id}
        for f in failed:
            assert f.error_message
            assert f.error_code
            assert f.attempts == 1
        for order in good:
            assert sim.state.truth_order(order["amazon_order_id"])["status"] == "Shipped"
            state = await runtime.store.shipment_state(TEST_SELLER, order["amazon_order_id"], "1")
            assert state["status"] == "Success"
            assert state["feed_id"] == feed_id
            assert state["tracking"].startswith("1Z")
        state = await runtime.store.shipment_state(TEST_SELLER, over["amazon_order_id"], "1")
        assert state["status"] == "Failed"
        assert state["last_error"]
        assert sim.state.truth_order(over["amazon_order_id"])["status"] == "Unshipped"

        # Redelivered requests: their results stand, nothing is sent again.
        emitted = len(runtime.emitted)
        for envelope in envelopes:
            await handle(runtime, envelope)
        assert len(runtime.emitted) == emitted
        assert await fulfillment_feed.pending_count(runtime, TEST_SELLER) == 0
        counters = sim.state.counters_json()["sellers"][TEST_SELLER]
        assert counters["createFeed"]["calls"] == 1
        assert all(c.get("throttled", 0) == 0 for c in counters.values())


async def test_auto_confirms_a_small_backlog_and_feeds_a_large_one(make_runtime: Any) -> None:
    scenario = _scenario(count=12)
    with RunningSimulator(scenario) as sim:
        runtime = await make_runtime("shipment-write-back", scenario, sim)
        runtime.settings = runtime.settings.model_copy(
            update={"writeback": WriteBackSettings(auto_feed_threshold=3, auto_window_s=3600)}
        )
        channel = _with_mode(runtime, "auto")
        orders = sim.state.truth_orders(TEST_SELLER, status="Unshipped")[:8]
        for order in orders:
            await handle(runtime, _request(order))
        direct: list[ShipmentConfirmed] = runtime.payloads(SHIPMENTS_CONFIRMED.name)
        assert [c.method for c in direct] == ["confirmShipment"] * 3
        assert await fulfillment_feed.pending_count(runtime, TEST_SELLER) == 5
        assert await fulfillment_feed.run_feeds(runtime, channel)
        sim.state.advance_clock(60)
        assert await fulfillment_feed.check_inflight(runtime, channel)
        confirmed: list[ShipmentConfirmed] = runtime.payloads(SHIPMENTS_CONFIRMED.name)
        assert sorted(c.amazon_order_id for c in confirmed) == sorted(o["amazon_order_id"] for o in orders)
        assert [c.method for c in confirmed].count("feed") == 5
        assert runtime.payloads(SHIPMENTS_FAILED.name) == []


async def test_a_stalled_feed_is_cancelled_and_its_shipments_sent_again(make_runtime: Any) -> None:
    scenario = _scenario(count=6, stall_share=1.0, stall_s=[7200, 7200])
    with RunningSimulator(scenario) as sim:
        runtime = await make_runtime("shipment-write-back", scenario, sim)
        runtime.settings = runtime.settings.model_copy(
            update={"writeback": WriteBackSettings(feed_timeout_s=0.001, retry_backoff_s=0)}
        )
        channel = _with_mode(runtime, "feed")
        orders = sim.state.truth_orders(TEST_SELLER, status="Unshipped")[:4]
        for order in orders:
            await handle(runtime, _request(order))
        first = await fulfillment_feed.submit_pending(runtime, channel)
        assert first is not None
        # Not done within the timeout (Amazon's clock moves past it): still IN_QUEUE, so it is
        # cancelled and nothing was applied.
        sim.state.advance_clock(1)
        assert await fulfillment_feed.check_inflight(runtime, channel)
        assert sim.state.truth_feed(first)["processingStatus"] == "CANCELLED"
        assert runtime.emitted == []
        state = await runtime.store.shipment_state(TEST_SELLER, orders[0]["amazon_order_id"], "1")
        assert state["outcome"] == "refused"  # cancelled: known not applied, no re-read needed
        assert state["attempts"] == "1"
        assert await fulfillment_feed.pending_count(runtime, TEST_SELLER) == len(orders)


async def test_an_unknown_outcome_rereads_the_order_before_sending_again(make_runtime: Any) -> None:
    scenario = _scenario(count=6)
    with RunningSimulator(scenario) as sim:
        runtime = await make_runtime("shipment-write-back", scenario, sim)
        channel = _with_mode(runtime, "feed")
        orders = sim.state.truth_orders(TEST_SELLER, status="Unshipped")[:3]
        for order in orders:
            envelope = _request(order)
            pending = fulfillment_feed.PendingShipment(
                envelope, order["marketplace_id"], attempts=1, outcome_unknown=True
            )
            await fulfillment_feed.enqueue(runtime, pending)
        # The first order did ship (an earlier feed of unknown outcome landed).
        sim.state.set_order_status(orders[0]["amazon_order_id"], "Shipped")
        feed_id = await fulfillment_feed.submit_pending(runtime, channel)
        assert feed_id is not None
        sim.state.advance_clock(60)
        assert await fulfillment_feed.check_inflight(runtime, channel)
        confirmed: list[ShipmentConfirmed] = runtime.payloads(SHIPMENTS_CONFIRMED.name)
        methods = {c.amazon_order_id: c.method for c in confirmed}
        assert methods == {
            orders[0]["amazon_order_id"]: "already-confirmed",
            orders[1]["amazon_order_id"]: "feed",
            orders[2]["amazon_order_id"]: "feed",
        }
        assert len(sim.state.truth_feeds(TEST_SELLER)[0]["messages"]) == 2


async def test_dont_upload_order_status_sends_nothing(make_runtime: Any) -> None:
    scenario = _scenario(count=4)
    with RunningSimulator(scenario) as sim:
        runtime = await make_runtime("shipment-write-back", scenario, sim)
        _with_mode(runtime, "confirm", upload_order_status=False)
        order = sim.state.truth_orders(TEST_SELLER, status="Unshipped")[0]
        await handle(runtime, _request(order))
        assert runtime.emitted == []
        state = await runtime.store.shipment_state(TEST_SELLER, order["amazon_order_id"], "1")
        assert state["status"] == "NotUploaded"
        assert sim.state.truth_order(order["amazon_order_id"])["status"] == "Unshipped"
        assert "confirmShipment" not in sim.state.counters_json()["sellers"].get(TEST_SELLER, {})


@pytest.mark.parametrize("mode", ["confirm", "feed"])
async def test_an_order_cancelled_before_confirmation_is_never_confirmed(
    make_runtime: Any, mode: str
) -> None:
    scenario = _scenario(count=4)
    with RunningSimulator(scenario) as sim:
        runtime = await make_runtime("shipment-write-back", scenario, sim)
        channel = _with_mode(runtime, mode)
        order = sim.state.truth_orders(TEST_SELLER, status="Unshipped")[0]
        order_id = order["amazon_order_id"]
        if mode == "feed":
            await handle(runtime, _request(order))
        await runtime.store.set_order_status(TEST_SELLER, order_id, amazon_status="Canceled")
        if mode == "confirm":
            await handle(runtime, _request(order))
        else:
            assert await fulfillment_feed.run_feeds(runtime, channel) is None  # nothing left to send
        failed: list[ShipmentFailed] = runtime.payloads(SHIPMENTS_FAILED.name)
        assert [f.amazon_order_id for f in failed] == [order_id]
        assert "cancelled" in failed[0].error_message
        assert runtime.payloads(SHIPMENTS_CONFIRMED.name) == []
        assert sim.state.truth_feeds(TEST_SELLER) == []


async def test_back_office_cancellations_go_in_one_acknowledgement_feed(make_runtime: Any) -> None:
    scenario = _scenario(count=8)
    with RunningSimulator(scenario) as sim:
        runtime = await make_runtime("shipment-write-back", scenario, sim)
        channel = _with_mode(runtime, "confirm", cancellation_reason="NoInventory")
        orders = sim.state.truth_orders(TEST_SELLER, status="Unshipped")[:3]
        shipped = orders[2]
        await handle(runtime, _request(shipped))  # confirmed first: it cannot be cancelled any more
        for order in orders:
            request = OrderCancellationRequested(
                channel=channel.name,
                amazon_order_id=order["amazon_order_id"],
                requested_at=datetime(2026, 1, 5, 11, tzinfo=UTC),
            )
            envelope = Envelope.wrap(request, seller_id=TEST_SELLER, correlation_id=order["amazon_order_id"])
            await cancellation.handle(runtime, envelope)
        feed_id = await cancellation.run_feeds(runtime, channel)
        assert feed_id is not None
        sim.state.advance_clock(60)
        assert await cancellation.check_inflight(runtime, channel)
        feed = sim.state.truth_feed(feed_id)
        assert feed["feedType"] == "POST_ORDER_ACKNOWLEDGEMENT_DATA"
        assert "<StatusCode>Failure</StatusCode>" in feed["input"]
        results: list[OrderCancellationResult] = runtime.payloads(ORDERS_CANCELLATION_RESULTS.name)
        outcome = {r.amazon_order_id: r.cancelled for r in results}
        assert outcome == {
            orders[0]["amazon_order_id"]: True,
            orders[1]["amazon_order_id"]: True,
            shipped["amazon_order_id"]: False,
        }
        assert {r.reason for r in results} == {"NoInventory"}
        refused = next(r for r in results if not r.cancelled)
        assert refused.error_message
        # Refused by ordersync, never sent: no Failure follows a shipment.
        assert (refused.error_code, refused.feed_id) == ("OrderShipped", None)
        assert shipped["amazon_order_id"] not in feed["input"]
        for order in orders[:2]:
            assert sim.state.truth_order(order["amazon_order_id"])["status"] == "Canceled"
            status = await runtime.store.order_status(TEST_SELLER, order["amazon_order_id"])
            assert status["seller_cancellation"] == "Success"
        assert sim.state.truth_order(shipped["amazon_order_id"])["status"] == "Shipped"
