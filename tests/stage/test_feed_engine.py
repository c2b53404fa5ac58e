"""The batched-feed engine's paths that the feed types' own tests do not walk, against the simulator
and a real Redis: an interrupted submission gives stock back without overwriting a newer quantity, and
a cancellation whose feeds keep stalling is given up after its last attempt with the stall as reason."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ordersync.consumers import cancellation, inventory
from ordersync.pipeline.feeds import inflight_key
from ordersync.schemas.envelope import Envelope
from ordersync.schemas.events import (
    InventoryLevelChanged,
    OrderCancellationRequested,
    OrderCancellationResult,
)
from ordersync.schemas.topics import ORDERS_CANCELLATION_RESULTS
from ordersync.settings import RedriveSettings, WriteBackSettings
from ordersync.simulator.runner import RunningSimulator
from ordersync.simulator.testing import TEST_SELLER, tiny_scenario

pytestmark = pytest.mark.stage

T0 = datetime(2026, 1, 5, 9, tzinfo=UTC)


def _level(sku: str, quantity: int, seconds: int = 0) -> Envelope[InventoryLevelChanged]:
    level = InventoryLevelChanged(
        channel="a1testseller", seller_sku=sku, quantity=quantity, observed_at=T0 + timedelta(seconds=seconds)
    )
    return Envelope.wrap(level, seller_id=TEST_SELLER, correlation_id=sku)


async def test_an_interrupted_stock_feed_gives_its_skus_back_and_a_newer_quantity_wins(
    make_runtime: Any,
) -> None:
    scenario = tiny_scenario(seller={"catalogue_size": 5}, feeds={"stall_share": 0})
    with RunningSimulator(scenario) as sim:
        runtime = await make_runtime("inventory", scenario, sim)
        channel = runtime.channels.channels[0]
        await inventory.handle(runtime, _level("SKU-00001", 5))
        await inventory.handle(runtime, _level("SKU-00002", 6))
        assert await inventory.flush(runtime, channel) is not None
        assert await inventory.pending(runtime, TEST_SELLER) == {}
        await inventory.handle(runtime, _level("SKU-00001", 9, seconds=60))  # newer, while in flight
        # The worker stopped before it learned the feed id: the feed's outcome is unknown.
        await runtime.store.redis.hdel(inflight_key(runtime, "inv", TEST_SELLER), "feed_id")
        assert await inventory.check_inflight(runtime, channel)
        assert await inventory.pending(runtime, TEST_SELLER) == {"SKU-00001": 9, "SKU-00002": 6}
        assert not await runtime.store.redis.exists(inflight_key(runtime, "inv", TEST_SELLER))
        health = await runtime.store.task("inventory", channel.name)
        assert "interrupted" in health["last_error"]


async def test_a_cancellation_whose_feeds_keep_stalling_is_given_up_at_the_redrive_deadline(
    make_runtime: Any,
) -> None:
    scenario = tiny_scenario(orders={"count": 4}, feeds={"stall_share": 1.0, "stall_s": [7200, 7200]})
    with RunningSimulator(scenario) as sim:
        runtime = await make_runtime("shipment-write-back", scenario, sim)
        runtime.settings = runtime.settings.model_copy(
            update={
                "writeback": WriteBackSettings(feed_timeout_s=0.001, max_attempts=2),
                "redrive": RedriveSettings(deadline_s=3600.0),
            }
        )
        channel = runtime.channels.channels[0]
        order_id = sim.state.truth_orders(TEST_SELLER, status="Unshipped")[0]["amazon_order_id"]
        request = OrderCancellationRequested(channel=channel.name, amazon_order_id=order_id, requested_at=T0)
        await cancellation.handle(
            runtime, Envelope.wrap(request, seller_id=TEST_SELLER, correlation_id=order_id)
        )

        async def stalls_once() -> None:
            feed_id = await cancellation.run_feeds(runtime, channel)
            assert feed_id is not None
            sim.state.advance_clock(1)
            assert await cancellation.check_inflight(runtime, channel)
            assert sim.state.truth_feed(feed_id)["processingStatus"] == "CANCELLED"  # stalled IN_QUEUE

        # A stalled feed is Amazon's trouble, not the cancellation's: past its 2 attempts it is sent
        # again until the redrive deadline, an hour after its first failure.
        for _ in range(3):
            await stalls_once()
        assert runtime.payloads(ORDERS_CANCELLATION_RESULTS.name) == []
        assert await cancellation.pending_count(runtime, TEST_SELLER) == 1
        sim.state.advance_clock(3600)
        await stalls_once()
        results: list[OrderCancellationResult] = runtime.payloads(ORDERS_CANCELLATION_RESULTS.name)
        assert [(r.amazon_order_id, r.cancelled, r.error_code) for r in results] == [
            (order_id, False, "FeedStalled")
        ]
        assert await cancellation.pending_count(runtime, TEST_SELLER) == 0
        status = await runtime.store.order_status(TEST_SELLER, order_id)
        assert status["seller_cancellation"] == "Failed"
