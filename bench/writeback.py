"""Benchmark of the shipment write-back and the inventory feeds under Amazon's createFeed budget.

Invoices (shipment requests) arrive at random within one simulated hour, with stock changes for many
SKUs, against the simulator (its clock driven by this script) and a real Redis. The stage code runs
unchanged: ``shipment_write_back.handle`` per request and its feed tick (auto mode: confirmShipment
while the backlog is small, one POST_ORDER_FULFILLMENT_DATA per seller when it is large), and the
inventory stage's ``handle`` and tick. The rate limiter runs on the simulator's clock (a wait
advances it), so every decision is exact against the simulated Amazon's buckets.

Prints shipments confirmed per simulated hour (one order per feed, as some connectors send them: 29), feeds
submitted per type, the most createFeed calls in any hour, 429s received, and the p50/p95 latency
(simulated seconds) from invoice issued to ``shipments.confirmed``. ``simulate`` is also what the
scale test (``tests/stage/test_writeback_scale.py``) runs and checks.

    .venv/bin/python bench/writeback.py [--invoices 12000] [--skus 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ordersync.clock import EpochClock
from ordersync.consumers import inventory, shipment_write_back
from ordersync.dev.testing import RecordingRuntime, channels_of
from ordersync.kafka.faust_app import make_app
from ordersync.ratelimit import InMemoryRateLimiter, PlanBook
from ordersync.ratelimit.limiter import limiter_options
from ordersync.schemas.envelope import Envelope
from ordersync.schemas.events import InventoryLevelChanged, ShipmentItem, ShipmentRequested
from ordersync.schemas.topics import SHIPMENTS_CONFIRMED, SHIPMENTS_FAILED
from ordersync.settings import (
    AmazonSettings,
    InventorySettings,
    RateLimitSettings,
    RedisSettings,
    Settings,
    WriteBackSettings,
)
from ordersync.simulator.runner import RunningSimulator
from ordersync.simulator.testing import TEST_SELLER, tiny_scenario

UNKNOWN_ORDER_PREFIX = "999-"


@dataclass
class Figures:
    invoices: int
    simulated_s: float
    wall_s: float
    confirmed: dict[str, str] = field(default_factory=dict)  # order -> method
    failed: dict[str, str] = field(default_factory=dict)  # order -> Amazon's message
    failed_by: dict[str, str] = field(default_factory=dict)  # order -> "feed" or "confirmShipment"
    expected_failures: dict[str, str] = field(default_factory=dict)  # order -> why
    feeds_by_type: dict[str, int] = field(default_factory=dict)
    max_create_feed_per_hour: int = 0
    throttled: int = 0
    latencies_s: list[float] = field(default_factory=list)
    inventory_feeds: list[float] = field(default_factory=list)  # created, simulated epoch
    inventory_intervals: int = 0
    listings_wrong: int = 0
    sku_errors: int = 0

    @property
    def confirmed_per_hour(self) -> float:
        span = max(self.simulated_s, 1.0)
        return len(self.confirmed) * 3600.0 / span

    def percentile(self, share: float) -> float:
        if not self.latencies_s:
            return 0.0
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def _request(order: dict[str, Any], *, order_id: str | None = None, extra: int = 0) -> ShipmentRequested:
    return ShipmentRequested(
        channel=TEST_SELLER.lower(),
        amazon_order_id=order_id or order["amazon_order_id"],
        package_reference_id="1",
        carrier_code="UPS",
        shipping_method="Ground",
        tracking_number=f"1Z{order['amazon_order_id'].replace('-', '')}",
        ship_date=datetime(2026, 1, 5, 10, tzinfo=UTC),
        items=tuple(
            ShipmentItem(order_item_id=i["order_item_id"], quantity=i["quantity_ordered"] + extra)
            for i in order["items"]
        ),
        source=f"INV-{order['amazon_order_id']}",
    )


async def simulate(  # noqa: PLR0912, PLR0915 - one scenario, read top to bottom
    redis_url: str,
    key_prefix: str,
    *,
    invoices: int = 5000,
    skus: int = 20_000,
    hour_s: float = 3600.0,
    inventory_interval_s: float = 900.0,
    tick_s: float = 10.0,
    failure_share: float = 0.01,
    seed: int = 5,
    max_simulated_s: float = 4 * 3600.0,
) -> Figures:
    """Run the scenario; every shipment has a result (or ``max_simulated_s`` passed)."""
    rng = random.Random(seed)
    scenario = tiny_scenario(
        orders={"count": invoices, "history_s": 3600, "items_per_order": [1, 2]},
        seller={"catalogue_size": skus},
        feeds={"stall_share": 0.02},
    )
    wall_started = time.monotonic()
    with RunningSimulator(scenario) as sim:
        state = sim.state
        channels = channels_of(scenario)
        settings = Settings(
            redis=RedisSettings(url=redis_url, key_prefix=key_prefix),
            amazon=AmazonSettings(endpoint=sim.base_url, lwa_endpoint=sim.lwa_url),
            writeback=WriteBackSettings(mode="auto", feed_timeout_s=1800, retry_backoff_s=30),
            inventory=InventorySettings(),
            ratelimit=RateLimitSettings(inventory_flush_interval_s=inventory_interval_s),
        )

        async def sim_sleep(seconds: float) -> None:
            state.advance_clock(max(seconds, 0.001))
            await asyncio.sleep(0)

        limiter = InMemoryRateLimiter(
            plans=PlanBook.from_channels(channels.channels, time_scale=1),
            clock=state.now,
            sleep=sim_sleep,
            **limiter_options(settings),
        )
        stage = "shipment-write-back"
        # The stage's Kafka producer records; each envelope's ``at`` is the simulator's clock.
        runtime = RecordingRuntime(
            stage, settings, make_app(stage, settings), channels, limiter=limiter, clock=EpochClock(state.now)
        )
        await runtime.start()
        try:
            channel = channels.channels[0]
            start = state.now()
            orders = state.truth_orders(TEST_SELLER, status="Unshipped")[:invoices]
            figures = Figures(invoices=len(orders), simulated_s=0.0, wall_s=0.0)
            # Per-message failures Amazon reports: cancelled on Amazon, unknown order, over-quantity.
            plan: list[tuple[float, ShipmentRequested]] = []
            for order in orders:
                at = start + rng.uniform(0, hour_s)
                draw = rng.random()
                if draw < failure_share:
                    state.set_order_status(order["amazon_order_id"], "Canceled")
                    figures.expected_failures[order["amazon_order_id"]] = "cancelled"
                    plan.append((at, _request(order)))
                elif draw < 2 * failure_share:
                    fake = f"{UNKNOWN_ORDER_PREFIX}{rng.randrange(10**7):07d}-{rng.randrange(10**7):07d}"
                    figures.expected_failures[fake] = "unknown order"
                    plan.append((at, _request(order, order_id=fake)))
                elif draw < 3 * failure_share:
                    figures.expected_failures[order["amazon_order_id"]] = "over quantity"
                    plan.append((at, _request(order, extra=1)))
                else:
                    plan.append((at, _request(order)))
            plan.sort(key=lambda p: p[0])
            arrival = {request.amazon_order_id: at for at, request in plan}
            # Stock: every SKU changes once within the hour, a tenth of them twice.
            catalogue = [f"SKU-{n:05d}" for n in range(1, skus + 1)]
            changes = [(start + rng.uniform(0, hour_s), sku, rng.randrange(0, 500)) for sku in catalogue]
            changes += [
                (start + rng.uniform(0, hour_s), sku, rng.randrange(0, 500))
                for sku in rng.sample(catalogue, skus // 10)
            ]
            changes.sort()
            latest: dict[str, tuple[float, int]] = {}
            next_request = next_change = 0
            while True:
                now = state.now()
                while next_request < len(plan) and plan[next_request][0] <= now:
                    request = plan[next_request][1]
                    next_request += 1
                    await shipment_write_back.handle(
                        runtime,
                        Envelope.wrap(
                            request,
                            seller_id=TEST_SELLER,
                            marketplace_id=channel.marketplaces[0],
                            correlation_id=request.source or request.amazon_order_id,
                        ),
                    )
                while next_change < len(changes) and changes[next_change][0] <= now:
                    at, sku, quantity = changes[next_change]
                    next_change += 1
                    latest[sku] = (at, quantity)
                    observed = datetime.fromtimestamp(at, UTC) + timedelta(microseconds=next_change)
                    level = InventoryLevelChanged(
                        channel=channel.name, seller_sku=sku, quantity=quantity, observed_at=observed
                    )
                    await inventory.handle(
                        runtime, Envelope.wrap(level, seller_id=TEST_SELLER, correlation_id=sku)
                    )
                await shipment_write_back.feed_tick(runtime)
                await inventory.tick(runtime, channel)
                results = sum(1 for emitted in runtime.emitted if emitted.topic in _RESULT_TOPICS)
                arrived = next_request == len(plan) and next_change == len(changes)
                inventory_done = not await inventory.pending(
                    runtime, TEST_SELLER
                ) and await inventory.check_inflight(runtime, channel)
                if arrived and results >= len(plan) and inventory_done:
                    break
                if now - start > max_simulated_s:
                    break
                state.advance_clock(tick_s)
            figures.simulated_s = state.now() - start
            for emitted in runtime.emitted:
                payload = emitted.envelope.payload
                if emitted.topic == SHIPMENTS_CONFIRMED.name:
                    figures.confirmed[payload.amazon_order_id] = payload.method
                    figures.latencies_s.append(emitted.at.timestamp() - arrival[payload.amazon_order_id])
                elif emitted.topic == SHIPMENTS_FAILED.name:
                    figures.failed[payload.amazon_order_id] = payload.error_message
                    shipment = await runtime.store.shipment_state(
                        TEST_SELLER, payload.amazon_order_id, payload.package_reference_id
                    )
                    figures.failed_by[payload.amazon_order_id] = shipment.get("method", "confirmShipment")
            feeds = state.truth_feeds(TEST_SELLER)
            for feed in feeds:
                figures.feeds_by_type[feed["feedType"]] = figures.feeds_by_type.get(feed["feedType"], 0) + 1
            created = sorted(
                datetime.fromisoformat(f["createdTime"].replace("Z", "+00:00")).timestamp() for f in feeds
            )
            figures.max_create_feed_per_hour = max(
                (sum(1 for c in created if t <= c < t + 3600) for t in created), default=0
            )
            figures.inventory_feeds = [
                datetime.fromisoformat(f["createdTime"].replace("Z", "+00:00")).timestamp()
                for f in feeds
                if f["feedType"] == "JSON_LISTINGS_FEED"
            ]
            figures.inventory_intervals = math.ceil(hour_s / inventory_interval_s)  # with stock changes
            counters = state.counters_json()["sellers"].get(TEST_SELLER, {})
            figures.throttled = sum(int(c.get("throttled", 0)) for c in counters.values())
            listings = state.truth_listings(TEST_SELLER).get(TEST_SELLER, {})
            figures.listings_wrong = sum(
                1
                for sku, (_, quantity) in latest.items()
                if (listings.get(sku) or {}).get("quantity") != quantity
            )
            figures.sku_errors = len(await inventory.sku_errors(runtime, TEST_SELLER))
        finally:
            await runtime.close()
    figures.wall_s = time.monotonic() - wall_started
    return figures


_RESULT_TOPICS = frozenset({SHIPMENTS_CONFIRMED.name, SHIPMENTS_FAILED.name})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--invoices", type=int, default=12_000)
    parser.add_argument("--skus", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    from ordersync.dev.devinfra import EmbeddedRedis  # noqa: PLC0415 - only when no Redis is given

    with ExitStack() as stack:
        import os  # noqa: PLC0415

        url = os.environ.get("ORDERSYNC_REDIS__URL") or stack.enter_context(EmbeddedRedis()).url
        figures = asyncio.run(
            simulate(
                url, f"bench-{uuid.uuid4().hex[:8]}", invoices=args.invoices, skus=args.skus, seed=args.seed
            )
        )
    print(report(figures))


def report(figures: Figures) -> str:
    by_method: dict[str, int] = {}
    for method in figures.confirmed.values():
        by_method[method] = by_method.get(method, 0) + 1
    p50, p95 = figures.percentile(0.5) / 60, figures.percentile(0.95) / 60
    rows = [
        ("invoices issued within one simulated hour", f"{figures.invoices}"),
        ("simulated time until every result", f"{figures.simulated_s / 60:.1f} min"),
        ("shipments confirmed", f"{len(figures.confirmed)} {by_method}"),
        (
            "shipments failed (refused by Amazon)",
            f"{len(figures.failed)} (injected {len(figures.expected_failures)})",
        ),
        ("confirmed per simulated hour", f"{figures.confirmed_per_hour:.0f} (one order per feed: 29)"),
        ("latency invoice -> confirmed, p50 / p95", f"{p50:.1f} / {p95:.1f} min"),
        ("feeds submitted", f"{figures.feeds_by_type}"),
        ("most createFeed calls in any hour", f"{figures.max_create_feed_per_hour} (Amazon: 30/h, burst 15)"),
        ("429s received", f"{figures.throttled}"),
        (
            "inventory feeds / flush intervals",
            f"{len(figures.inventory_feeds)} / {figures.inventory_intervals}",
        ),
        ("SKUs not at their latest quantity", f"{figures.listings_wrong}"),
        ("wall time", f"{figures.wall_s:.1f} s"),
    ]
    return "\n".join(f"{name:<42} {value}" for name, value in rows)


if __name__ == "__main__":
    main()
