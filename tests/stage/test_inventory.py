"""The inventory stage against the simulator and a real Redis: the latest quantity per SKU, one
JSON_LISTINGS_FEED per seller per interval on the inventory lane, unchanged values never sent again,
per-SKU errors from the report kept."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ordersync.consumers import inventory
from ordersync.schemas.envelope import Envelope
from ordersync.schemas.events import InventoryLevelChanged, OrderImported
from ordersync.simulator.runner import RunningSimulator
from ordersync.simulator.testing import TEST_SELLER, tiny_scenario
from tests.factories import one_line_sales_order

pytestmark = pytest.mark.stage

T0 = datetime(2026, 1, 5, 9, tzinfo=UTC)


def _level(sku: str, quantity: int, seconds: int = 0) -> Envelope[InventoryLevelChanged]:
    return Envelope.wrap(
        InventoryLevelChanged(
            channel="a1testseller",
            seller_sku=sku,
            quantity=quantity,
            observed_at=T0 + timedelta(seconds=seconds),
        ),
        seller_id=TEST_SELLER,
        correlation_id=sku,
    )


async def test_latest_quantities_sent_in_one_feed_unchanged_skipped_errors_kept(make_runtime: Any) -> None:
    scenario = tiny_scenario(
        seller={"catalogue_size": 20}, feeds={"queue_delay_s": [0, 0], "duration_s": [5, 5], "stall_share": 0}
    )
    with RunningSimulator(scenario) as sim:
        runtime = await make_runtime("inventory", scenario, sim)
        channel = runtime.channels.channels[0]
        for n in range(1, 11):
            await inventory.handle(runtime, _level(f"SKU-{n:05d}", n))
        await inventory.handle(runtime, _level("SKU-00001", 100, seconds=60))  # newer: wins
        await inventory.handle(runtime, _level("SKU-00001", 7, seconds=30))  # older: ignored
        await inventory.handle(runtime, _level("NOT-LISTED", 5))
        assert len(await inventory.pending(runtime, TEST_SELLER)) == 11

        feed_id = await inventory.tick(runtime, channel)
        assert feed_id is not None
        assert await inventory.tick(runtime, channel) is None  # in flight, and the interval has not passed
        sim.state.advance_clock(60)
        assert await inventory.check_inflight(runtime, channel)

        listings = sim.state.truth_listings(TEST_SELLER)[TEST_SELLER]
        assert listings["SKU-00001"]["quantity"] == 100
        assert all(listings[f"SKU-{n:05d}"]["quantity"] == n for n in range(2, 11))
        errors = await inventory.sku_errors(runtime, TEST_SELLER)
        assert set(errors) == {"NOT-LISTED"}
        assert errors["NOT-LISTED"]["feed_id"] == feed_id
        assert errors["NOT-LISTED"]["message"]
        assert (await inventory.sent(runtime, TEST_SELLER))["SKU-00002"] == 2
        health = await runtime.store.task("inventory", channel.name)
        assert "10 accepted, 1 refused" in health["last_error"]

        # Unchanged values are not pending again; only the changed one goes in the next feed.
        await inventory.handle(runtime, _level("SKU-00002", 2, seconds=120))
        await inventory.handle(runtime, _level("SKU-00003", 33, seconds=120))
        assert await inventory.pending(runtime, TEST_SELLER) == {"SKU-00003": 33}
        second = await inventory.flush(runtime, channel)
        assert second is not None
        sim.state.advance_clock(60)
        assert await inventory.check_inflight(runtime, channel)
        feeds = sim.state.truth_feeds(TEST_SELLER, "JSON_LISTINGS_FEED")
        assert [len(f["messages"]) for f in feeds] == [11, 1]
        assert sim.state.truth_listings(TEST_SELLER)[TEST_SELLER]["SKU-00003"]["quantity"] == 33
        assert await inventory.flush(runtime, channel) is None  # nothing changed: no feed
        counters = sim.state.counters_json()["sellers"][TEST_SELLER]
        assert counters["createFeed"]["calls"] == 2
        assert all(c.get("throttled", 0) == 0 for c in counters.values())


def _with(runtime: Any, **channel_settings: Any) -> None:
    """The runtime's only channel with ``channel_settings``."""
    channel = runtime.channels.channels[0].model_copy(update=channel_settings)
    runtime.channels = runtime.channels.model_copy(update={"channels": (channel,)})


def _listing(sim: RunningSimulator, sku: str) -> dict[str, Any]:
    listing: dict[str, Any] = sim.state.truth_listings(TEST_SELLER)[TEST_SELLER][sku]
    (entry,) = listing["fulfillment_availability"]
    return entry  # type: ignore[no-any-return]


async def _feed_round(runtime: Any, sim: RunningSimulator) -> None:
    channel = runtime.channels.channels[0]
    assert await inventory.flush(runtime, channel) is not None
    sim.state.advance_clock(60)
    assert await inventory.check_inflight(runtime, channel)


def _stock(sku: str, quantity: int, seconds: int, **more: Any) -> Envelope[InventoryLevelChanged]:
    level = _level(sku, quantity, seconds)
    return Envelope.wrap(
        level.payload.model_copy(update=more), seller_id=TEST_SELLER, correlation_id=level.correlation_id
    )


async def test_a_quantity_update_keeps_the_sellers_handling_time_and_restock_date(make_runtime: Any) -> None:
    scenario = tiny_scenario(feeds={"queue_delay_s": [0, 0], "duration_s": [5, 5], "stall_share": 0})
    with RunningSimulator(scenario) as sim:
        runtime = await make_runtime("inventory", scenario, sim)
        sku = "SKU-00001"
        restock = datetime(2027, 1, 15, tzinfo=UTC).date()
        await inventory.handle(
            runtime, _stock(sku, 12, 0, lead_time_to_ship_max_days=3, restock_date=restock)
        )
        await _feed_round(runtime, sim)
        assert _listing(sim, sku) == {
            "fulfillment_channel_code": "DEFAULT",
            "quantity": 12,
            "lead_time_to_ship_max_days": 3,
            "restock_date": "2027-01-15",
        }
        # The next level carries the quantity only: Amazon keeps the handling time (a merge, not a
        # replace, which would have dropped it back to Amazon's default).
        await inventory.handle(runtime, _stock(sku, 9, 60))
        await _feed_round(runtime, sim)
        entry = _listing(sim, sku)
        assert (entry["quantity"], entry["lead_time_to_ship_max_days"], entry["restock_date"]) == (
            9,
            3,
            "2027-01-15",
        )
        # The same handling time sent again is no change: nothing pending.
        await inventory.handle(runtime, _stock(sku, 9, 120))
        assert await inventory.pending(runtime, TEST_SELLER) == {}


async def test_a_sku_running_out_reaches_amazon_at_once_and_a_feed_in_flight_cannot_undo_it(
    make_runtime: Any,
) -> None:
    scenario = tiny_scenario(feeds={"queue_delay_s": [0, 0], "duration_s": [5, 5], "stall_share": 0})
    with RunningSimulator(scenario) as sim:
        runtime = await make_runtime("inventory", scenario, sim)
        channel = runtime.channels.channels[0]
        await inventory.handle(runtime, _level("SKU-00001", 5))
        await inventory.handle(runtime, _level("SKU-00002", 8))
        assert await inventory.flush(runtime, channel) is not None  # in flight with 5 and 8
        # SKU-00001 sells out while the feed is on its way: it goes by patchListingsItem, not the feed.
        await inventory.handle(runtime, _level("SKU-00001", 0, seconds=30))
        await inventory.handle(runtime, _level("SKU-00003", 40, seconds=30))  # no hurry: the next feed
        assert await inventory.urgent(runtime, TEST_SELLER) == {"SKU-00001": 0}
        assert await inventory.send_urgent(runtime, channel) == 1
        assert _listing(sim, "SKU-00001")["quantity"] == 0
        assert await inventory.urgent(runtime, TEST_SELLER) == {}
        # The feed in flight lands with the older 5: the zero is urgent again and goes once more.
        sim.state.advance_clock(60)
        assert await inventory.check_inflight(runtime, channel)
        assert _listing(sim, "SKU-00001")["quantity"] == 5
        assert await inventory.urgent(runtime, TEST_SELLER) == {"SKU-00001": 0}
        assert await inventory.send_urgent(runtime, channel) == 1
        assert _listing(sim, "SKU-00001")["quantity"] == 0
        assert await inventory.pending(runtime, TEST_SELLER) == {"SKU-00003": 40}
        calls = sim.state.counters_json()["sellers"][TEST_SELLER]
        assert (calls["patchListingsItem"]["calls"], calls["createFeed"]["calls"]) == (2, 1)


async def test_the_channels_buffer_is_held_back_and_amazons_own_skus_get_no_merchant_quantity(
    make_runtime: Any,
) -> None:
    scenario = tiny_scenario()
    with RunningSimulator(scenario) as sim:
        runtime = await make_runtime("inventory", scenario, sim)
        _with(runtime, stock_buffer_units=2, stock_buffer_share=0.1)
        await inventory.handle(runtime, _level("SKU-00001", 10))  # 10 less 10 % is 9, less 2 is 7
        await inventory.handle(runtime, _level("SKU-00002", 2))  # 1 less 2: 0, and urgent
        assert await inventory.pending(runtime, TEST_SELLER) == {"SKU-00001": 7, "SKU-00002": 0}
        assert await inventory.urgent(runtime, TEST_SELLER) == {"SKU-00002": 0}
        # An order Amazon fulfils names SKU-00002: it is Amazon's, nothing of it is sent any more.
        channel = runtime.channels.channels[0]
        sales = one_line_sales_order(
            TEST_SELLER, "111-0000000-0000009", channel=channel.name, order_item_id="1", quantity=1
        )
        fba = sales.model_copy(
            update={
                "fulfillment_channel": "AFN",
                "lines": tuple(line.model_copy(update={"seller_sku": "SKU-00002"}) for line in sales.lines),
            }
        )
        imported = Envelope.wrap(OrderImported(sales_order=fba), seller_id=TEST_SELLER, correlation_id="c")
        await inventory.note_fulfilled_by_amazon(runtime, imported)
        assert await inventory.pending(runtime, TEST_SELLER) == {"SKU-00001": 7}
        assert await inventory.urgent(runtime, TEST_SELLER) == {}
        await inventory.handle(runtime, _level("SKU-00002", 30, seconds=60))
        assert "SKU-00002" not in await inventory.pending(runtime, TEST_SELLER)
        errors = await inventory.sku_errors(runtime, TEST_SELLER)
        assert errors["SKU-00002"]["code"] == "FulfilledByAmazon"
