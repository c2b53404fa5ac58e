"""Ship-by deadlines in the write-back, against the simulator (which counts a seller's confirmation after
the order's LatestShipDate as a late shipment, as Amazon's Late Shipment Rate does) and a real Redis.

In feed mode a package whose deadline the next feed would miss goes by confirmShipment at once; one
parked while a slow feed holds the seller's next one back goes directly when its deadline comes near;
and one inside a feed that is still queued near its deadline is read on Amazon and confirmed directly,
the feed's later result for it ignored. Turned off (``writeback.ship_by_direct``), the same run
confirms those orders late: the rule is what keeps them on time."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from ordersync.consumers import fulfillment_feed
from ordersync.consumers.shipment_write_back import feed_tick, handle
from ordersync.dev.testing import RecordingRuntime
from ordersync.schemas.envelope import Envelope
from ordersync.schemas.events import ShipmentConfirmed, ShipmentItem, ShipmentRequested
from ordersync.schemas.topics import SHIPMENTS_CONFIRMED, SHIPMENTS_FAILED
from ordersync.settings import WriteBackSettings
from ordersync.simulator.runner import RunningSimulator
from ordersync.simulator.scenario import Scenario
from ordersync.simulator.testing import TEST_SELLER, tiny_scenario
from tests.factories import one_line_sales_order

pytestmark = pytest.mark.stage

HOUR = 3600.0
#: A feed waits this long in Amazon's queue: the seller's first feed is still queued 100 minutes on.
QUEUE_DELAY_S = 6000


def _scenario() -> Scenario:
    feeds = {"queue_delay_s": [QUEUE_DELAY_S, QUEUE_DELAY_S], "duration_s": [10, 10], "stall_share": 0.0}
    return tiny_scenario(orders={"count": 0}, feeds=feeds)


def _settings(*, direct: bool) -> WriteBackSettings:
    return WriteBackSettings(
        mode="feed",
        retry_backoff_s=0.01,
        feed_flush_interval_s=HOUR,
        feed_expected_s=900,
        ship_by_margin_s=1800,
        feed_timeout_s=3 * HOUR,  # a queued feed is waited for, not cancelled, in this test
        ship_by_direct=direct,
    )


async def _ship(runtime: RecordingRuntime, sim: RunningSimulator, ship_within_s: float) -> str:
    """An order due ``ship_within_s`` from now, imported (its sales order saved), then shipped by the
    back-office: its shipment request handed to the stage. Returns the order id."""
    truth = sim.state.add_order({"ship_within_s": ship_within_s})
    order_id, (line,) = truth["amazon_order_id"], truth["items"]
    channel = runtime.channels.channels[0]
    sales = one_line_sales_order(
        channel.seller_id,
        order_id,
        channel=channel.name,
        order_item_id=line["order_item_id"],
        quantity=line["quantity_ordered"],
    )
    latest = datetime.fromisoformat(truth["latest_ship_date"])
    await runtime.store.save_sales_order(sales.model_copy(update={"latest_ship_date": latest}))
    request = ShipmentRequested(
        channel=channel.name,
        amazon_order_id=order_id,
        package_reference_id="1",
        carrier_code="UPS",
        tracking_number=f"1Z{order_id[-7:]}",
        ship_date=datetime.fromtimestamp(sim.state.now(), UTC),
        items=(ShipmentItem(order_item_id=line["order_item_id"], quantity=line["quantity_ordered"]),),
    )
    await handle(
        runtime,
        Envelope.wrap(
            request, seller_id=channel.seller_id, marketplace_id=truth["marketplace_id"], correlation_id="c"
        ),
    )
    return order_id


async def _run_for(runtime: RecordingRuntime, sim: RunningSimulator, seconds: float) -> None:
    """The stage's feed task over ``seconds`` of Amazon's time, a tick every 5 minutes."""
    for _ in range(int(seconds // 300)):
        sim.state.advance_clock(300)
        await feed_tick(runtime)


@pytest.mark.parametrize("direct", [True, False])
async def test_no_order_a_feed_would_confirm_late_is_confirmed_late(make_runtime: Any, direct: bool) -> None:
    scenario = _scenario()
    with RunningSimulator(scenario) as sim:
        runtime = await make_runtime("shipment-write-back", scenario, sim)
        runtime.settings = runtime.settings.model_copy(update={"writeback": _settings(direct=direct)})
        # t0: two orders parked for the seller's first feed, one due in an hour, one in two days.
        due_in_an_hour = await _ship(runtime, sim, 1 * HOUR)
        relaxed = await _ship(runtime, sim, 48 * HOUR)
        assert await fulfillment_feed.pending_count(runtime, TEST_SELLER) == 2
        await feed_tick(runtime)  # the first feed goes; Amazon keeps it queued 100 minutes
        (first_feed,) = sim.state.truth_feeds(TEST_SELLER, "POST_ORDER_FULFILLMENT_DATA")
        # The next feed may go an hour from now at the earliest, and takes about 15 minutes: an order
        # due in 75 minutes cannot wait for it; one due in two hours can, for now.
        urgent = await _ship(runtime, sim, 1.25 * HOUR)
        due_in_two_hours = await _ship(runtime, sim, 2 * HOUR)
        parked = await fulfillment_feed.pending_count(runtime, TEST_SELLER)
        assert parked == (1 if direct else 2)

        await _run_for(runtime, sim, 2.5 * HOUR)  # the first feed is processed 100 minutes in
        await _run_for(runtime, sim, 2 * HOUR)  # and the second, sent after it, too

        confirmed: list[ShipmentConfirmed] = runtime.payloads(SHIPMENTS_CONFIRMED.name)
        truth = {o: sim.state.truth_order(o) for o in (due_in_an_hour, relaxed, urgent, due_in_two_hours)}
        late_by_amazon = sim.state.counters_json()["shipments"][TEST_SELLER]

    assert runtime.payloads(SHIPMENTS_FAILED.name) == []
    # Each order confirmed on Amazon exactly once, with one outcome each.
    assert sorted(c.amazon_order_id for c in confirmed) == sorted(truth)
    for order in truth.values():
        assert order["status"] == "Shipped"
        assert len(order["shipments"]) == 1
    late = {order_id for order_id, order in truth.items() if order["shipments"][0]["late"]}
    method = {c.amazon_order_id: c.method for c in confirmed}
    if not direct:
        # Waiting for the feeds, three of the four ship late.
        assert late == {due_in_an_hour, urgent, due_in_two_hours}
        assert late_by_amazon == {"confirmed": 4, "late": 3}
        assert set(method.values()) == {"feed"}
        return
    assert late == set()
    assert late_by_amazon == {"confirmed": 4, "late": 0}
    # Only the relaxed order waited for a feed; the others each went their own way, and say why.
    assert method == {
        relaxed: "feed",
        due_in_an_hour: "confirmShipment",  # taken out of the queued first feed near its deadline
        urgent: "confirmShipment",  # at once: the next feed would have been too late
        due_in_two_hours: "confirmShipment",  # parked, then sent as the slow feed held the next back
    }
    notes = {c.amazon_order_id: c.note or "" for c in confirmed}
    assert first_feed["feedId"] in notes[due_in_an_hour]
    assert "at once" in notes[urgent]
    assert "the next feed could not" in notes[due_in_two_hours]
    # The queued feed still carried the order confirmed directly: Amazon's answer for it was ignored.
    feeds = sim.state.truth_feeds(TEST_SELLER, "POST_ORDER_FULFILLMENT_DATA")
    assert len(feeds[0]["messages"]) == 2
    state = await runtime.store.shipment_state(TEST_SELLER, due_in_an_hour, "1")
    assert state["status"] == "Success"
    assert state["ship_by"] == truth[due_in_an_hour]["latest_ship_date"].replace("Z", "+00:00")
