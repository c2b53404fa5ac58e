"""confirmShipment mode against the simulator: an answer lost on the way back (the confirmation did
reach Amazon) is settled by reading the order, never by confirming twice."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from ordersync.consumers.shipment_write_back import handle
from ordersync.schemas.envelope import Envelope
from ordersync.schemas.events import ShipmentConfirmed, ShipmentItem, ShipmentRequested
from ordersync.schemas.topics import SHIPMENTS_CONFIRMED
from ordersync.settings import WriteBackSettings
from ordersync.simulator.runner import RunningSimulator
from ordersync.simulator.testing import tiny_scenario

pytestmark = pytest.mark.stage


async def test_a_dropped_answer_is_settled_by_reading_the_order(make_runtime: Any) -> None:
    scenario = tiny_scenario(orders={"count": 1, "afn_share": 0.0})
    with RunningSimulator(scenario) as sim:
        runtime = await make_runtime("shipment-write-back", scenario, sim)
        runtime.settings = runtime.settings.model_copy(
            update={"writeback": WriteBackSettings(mode="confirm", retry_backoff_s=0.01)}
        )
        (truth,) = sim.state.truth_orders()
        channel = runtime.channels.channels[0]
        request = ShipmentRequested(
            channel=channel.name,
            amazon_order_id=truth["amazon_order_id"],
            package_reference_id="1",
            carrier_code="UPS",
            tracking_number="1Z999",
            ship_date=datetime.now(UTC),
            items=tuple(
                ShipmentItem(order_item_id=i["order_item_id"], quantity=i["quantity_ordered"])
                for i in truth["items"]
            ),
        )
        # confirmShipment runs on Amazon, then the connection drops before the answer.
        sim.state.force_fault({"fault": "drop", "operation": "confirmShipment"})
        await handle(
            runtime,
            Envelope.wrap(
                request,
                seller_id=channel.seller_id,
                marketplace_id=truth["marketplace_id"],
                correlation_id="c",
            ),
        )
        (confirmed,) = runtime.payloads(SHIPMENTS_CONFIRMED.name)
        assert isinstance(confirmed, ShipmentConfirmed)
        assert confirmed.method == "already-confirmed"
        after = sim.state.truth_order(truth["amazon_order_id"])
        assert after["status"] == "Shipped"
        assert len(after["shipments"]) == 1
        calls = sim.state.counters_json()["sellers"][channel.seller_id]
        assert calls["confirmShipment"]["calls"] == 1, "sent once: the re-read settled it"
        assert calls["getOrder"]["calls"] == 1
