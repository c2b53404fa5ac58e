"""The inventory stage against the simulator and a real Redis: the latest quantity per SKU, one
JSON_LISTINGS_FEED per seller per interval on the inventory lane, unchanged values never sent again,
per-SKU errors from the report kept."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ordersync.consumers import inventory
from ordersync.schemas.envelope import Envelope
from ordersync.schemas.events import InventoryLevelChanged
from ordersync.simulator.runner import RunningSimulator
from ordersync.simulator.testing import TEST_SELLER, tiny_scenario

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
