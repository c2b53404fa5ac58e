"""Amazon's programmes in the write-back, against the simulator (which refuses Ship+ confirmations with
Amazon's 400): Ship+ and Easy Ship orders and packages whose label was bought through Amazon are never
sent, and get a final outcome that says why; an ordinary package is confirmed as before, in either mode."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from ordersync.consumers import fulfillment_feed
from ordersync.consumers.shipment_write_back import handle
from ordersync.dev.testing import RecordingRuntime
from ordersync.schemas.envelope import Envelope
from ordersync.schemas.events import ShipmentConfirmed, ShipmentItem, ShipmentRequested
from ordersync.schemas.topics import SHIPMENTS_CONFIRMED, SHIPMENTS_FAILED
from ordersync.settings import WriteBackSettings
from ordersync.simulator.runner import RunningSimulator
from ordersync.simulator.testing import tiny_scenario
from tests.factories import one_line_sales_order

pytestmark = pytest.mark.stage


async def _write_back(
    runtime: RecordingRuntime, sim: RunningSimulator, programs: list[str], *, label: bool = False
) -> ShipmentRequested:
    """Place an order with ``programs``, store its sales order, and hand its shipment to the stage."""
    # The simulator models the seller-fulfilled programmes; Prime is ordersync's to carry.
    truth = sim.state.add_order({"programs": [p for p in programs if p != "PRIME"]})
    order_id, (line,) = truth["amazon_order_id"], truth["items"]
    channel = runtime.channels.channels[0]
    sales = one_line_sales_order(
        channel.seller_id,
        order_id,
        channel=channel.name,
        order_item_id=line["order_item_id"],
        quantity=line["quantity_ordered"],
    )
    await runtime.store.save_sales_order(sales.model_copy(update={"programs": tuple(programs)}))
    if label:  # the seller's shipping desk bought the label through Amazon first
        sim.state.ship_by_amazon(order_id, {"by": "label"})
    request = ShipmentRequested(
        channel=channel.name,
        amazon_order_id=order_id,
        package_reference_id="1",
        carrier_code="UPS",
        tracking_number=f"1Z{order_id[-7:]}",
        ship_date=datetime.now(UTC),
        items=(ShipmentItem(order_item_id=line["order_item_id"], quantity=line["quantity_ordered"]),),
        label_bought_on_amazon=label,
    )
    envelope = Envelope.wrap(
        request, seller_id=channel.seller_id, marketplace_id=truth["marketplace_id"], correlation_id="c"
    )
    await handle(runtime, envelope)
    return request


@pytest.mark.parametrize("mode", ["confirm", "feed"])
async def test_programme_orders_are_never_sent_and_say_why(make_runtime: Any, mode: str) -> None:
    scenario = tiny_scenario(orders={"count": 0})
    with RunningSimulator(scenario) as sim:
        runtime = await make_runtime("shipment-write-back", scenario, sim)
        runtime.settings = runtime.settings.model_copy(
            update={"writeback": WriteBackSettings(mode=mode, retry_backoff_s=0.01)}
        )
        ship_plus = await _write_back(runtime, sim, ["FBM_SHIP_PLUS"])
        easy_ship = await _write_back(runtime, sim, ["AMAZON_EASY_SHIP"])
        bought = await _write_back(runtime, sim, [], label=True)
        ordinary = await _write_back(runtime, sim, ["PRIME"])
        confirmed = {c.amazon_order_id: c for c in runtime.payloads(SHIPMENTS_CONFIRMED.name)}
        assert runtime.payloads(SHIPMENTS_FAILED.name) == []
        for request, method, reason in (
            (ship_plus, "amazon-label", "Ship+"),
            (easy_ship, "easy-ship", "Easy Ship"),
            (bought, "amazon-label", "Buy Shipping"),
        ):
            outcome = confirmed[request.amazon_order_id]
            assert isinstance(outcome, ShipmentConfirmed)
            assert (outcome.method, outcome.attempts) == (method, 0)
            assert reason in (outcome.note or "")
        seller = runtime.channels.channels[0].seller_id
        for request in (ship_plus, easy_ship, bought):
            state = await runtime.store.shipment_state(seller, request.amazon_order_id, "1")
            assert state["status"] == "Success"
        calls = sim.state.counters_json()
        assert calls["refusals"] == {}, "Amazon's programme rules were never broken"
        if mode == "confirm":
            assert confirmed[ordinary.amazon_order_id].method == "confirmShipment"
            assert calls["sellers"][seller]["confirmShipment"]["calls"] == 1
        else:  # only the ordinary package waits for the seller's next fulfilment feed
            assert ordinary.amazon_order_id not in confirmed
            assert await fulfillment_feed.pending_count(runtime, seller) == 1
        assert sim.state.truth_order(bought.amazon_order_id)["shipments"][0]["by"] == "label"
