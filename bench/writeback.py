"""Benchmark of the shipment write-back, the order acknowledgements, the inventory feeds and Easy Ship
packing (scheduling and documents) under Amazon's createFeed budget.

Invoices (shipment requests) arrive at random within one simulated hour, each order imported some time
before its invoice (its ``OrderImported``, acknowledged with its sales-order code: the channel has
``acknowledge_orders``), with stock changes for many SKUs, against the simulator (its clock driven by
this script) and a real Redis. The stage code runs unchanged: ``shipment_write_back.handle`` per
request and its feed tick (auto mode: confirmShipment while the backlog is small, one
POST_ORDER_FULFILLMENT_DATA per seller when it is large), ``acknowledgement.handle`` per import and its
tick (one POST_ORDER_ACKNOWLEDGEMENT_DATA per flush interval on the ``acknowledgement`` lane), and the
inventory stage's ``handle``, its urgent round (``send_urgent`` every ``inventory.fast_interval_s``:
patchListingsItem for levels at or under ``inventory.fast_threshold``) and its tick. Stock levels of
zero (``--zeros``, each a SKU's last level within the hour) are mixed in with the ordinary changes (all
above zero, so they wait for the feed). The rate limiter runs on the simulator's clock (a wait advances
it), so every decision is exact against the simulated Amazon's buckets.

Beside them, an Easy Ship seller in India (``--packages``, each order packed at random within the hour):
``packing.handle`` per packed package (listHandoverSlots, createScheduledPackage) and the documents step
(``packing_documents.handle`` per scheduled package, its tick: one POST_EASYSHIP_DOCUMENTS feed per
``documents.flush_interval_s`` on the ``packing`` lane of that seller's createFeed quota, shared with
anything else it sends by feed, then one getReportDocument per package), the PDFs stored in a temporary
directory.

Prints shipments confirmed per simulated hour (one order per feed, as some connectors send them: 29),
orders acknowledged per simulated hour, feeds submitted per type, createFeed calls per hour (the most in
any hour, and in each clock hour), 429s received, and the p50/p95 latency (simulated seconds) from
invoice issued to ``shipments.confirmed`` and from import to acknowledged; for the zeros, how many
reached Amazon (the simulator's listing at 0, by patchListingsItem) within a simulated minute of their
publication, the p50 and max of that latency, and patchListingsItem calls (none but for zeros); for
Easy Ship, packages scheduled and documents ready per simulated hour, the p50/p95 latency from packed to
documents ready, and the Easy Ship seller's feeds, createFeed calls per hour and 429s.
``simulate`` is also what the scale test (``tests/stage/test_writeback_scale.py``) runs and checks.

    .venv/bin/python bench/writeback.py [--invoices 12000] [--skus 20000] [--zeros 200] [--packages 120]
        [--no-acknowledge]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from ordersync.clock import EpochClock
from ordersync.consumers import acknowledgement, inventory, packing, packing_documents, shipment_write_back
from ordersync.dev.testing import RecordingRuntime, channels_of
from ordersync.errors import QuotaTimeout
from ordersync.kafka.faust_app import make_app
from ordersync.ratelimit import InMemoryRateLimiter, PlanBook
from ordersync.ratelimit.limiter import Grant, limiter_options
from ordersync.schemas.envelope import Envelope
from ordersync.schemas.events import (
    InventoryLevelChanged,
    OrderImported,
    PackageDocumentsReady,
    PackagePacked,
    PackageScheduled,
    PackedSize,
    SalesOrder,
    SalesOrderLine,
    ShipmentItem,
    ShipmentRequested,
)
from ordersync.schemas.topics import (
    ORDERS_ACKNOWLEDGEMENT_RESULTS,
    PACKAGES_DOCUMENTS,
    PACKAGES_SCHEDULED,
    SHIPMENTS_CONFIRMED,
    SHIPMENTS_FAILED,
)
from ordersync.settings import (
    AmazonSettings,
    DocumentSettings,
    InventorySettings,
    RateLimitSettings,
    RedisSettings,
    Settings,
    WriteBackSettings,
)
from ordersync.simulator.runner import RunningSimulator
from ordersync.simulator.testing import TEST_APPLICATION, TEST_SELLER, tiny_scenario

UNKNOWN_ORDER_PREFIX = "999-"
#: The Easy Ship seller, in India (Amazon's Easy Ship marketplace).
EASY_SHIP_SELLER = "A2BENCHSELLERIN"
INDIA = "A21TJRUUN4KGV"


def _easy_ship_seller(packages: int) -> dict[str, Any]:
    """The Easy Ship seller of the scenario: ``packages`` seller-fulfilled orders, all in Easy Ship."""
    return {
        "seller_id": EASY_SHIP_SELLER,
        "region": "eu",
        "marketplaces": [INDIA],
        "applications": [{**TEST_APPLICATION, "refresh_token": "Atzr|bench-easy-ship"}],
        "catalogue_size": 50,
        "orders": {
            "count": packages,
            "history_s": 3600,
            "arrival_window_s": 0,
            "items_per_order": [1, 2],
            "pending_share": 0.0,
            "afn_share": 0.0,
            "cancel_share": 0.0,
            "easy_ship_share": 1.0,
        },
    }


class _OwnTaskLanes(InMemoryRateLimiter):
    """The stage sends its order acknowledgements from a task of their own, so a feed of theirs waiting
    for its createFeed token (behind the shipments) holds nothing else up. This loop runs the ticks one
    after the other on the simulator's clock, where such a wait would stop the clock for everything: on
    that lane a token that is not there now is asked for again when the limiter says it may be there
    (``acknowledgement_due``), the feed in flight settled meanwhile."""

    acknowledgement_due = 0.0

    async def acquire(
        self,
        operation: str,
        seller_id: str,
        *,
        lane: str = "default",
        timeout: float | None = None,  # noqa: ASYNC109
        feed_type: str | None = None,
    ) -> Grant:
        if lane != acknowledgement.LANE:
            return await super().acquire(
                operation, seller_id, lane=lane, timeout=timeout, feed_type=feed_type
            )
        try:
            return await super().acquire(operation, seller_id, lane=lane, timeout=0, feed_type=feed_type)
        except QuotaTimeout as exc:
            self.acknowledgement_due = self._clock() + exc.retry_after_s
            raise


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
    imported: int = 0  # orders imported (each to be acknowledged)
    acknowledged: dict[str, str] = field(default_factory=dict)  # order -> MerchantOrderID on Amazon
    not_acknowledged: dict[str, str] = field(default_factory=dict)  # order -> why
    expected_ack_refusals: set[str] = field(default_factory=set)  # cancelled on Amazon before
    ack_latencies_s: list[float] = field(default_factory=list)
    create_feed_by_hour: list[int] = field(default_factory=list)  # calls in each hour from the start
    zeros_published: dict[str, float] = field(default_factory=dict)  # SKU -> level's time (zero)
    zeros_reached: dict[str, float] = field(default_factory=dict)  # SKU -> Amazon's listing at 0
    patch_calls: int = 0  # patchListingsItem calls Amazon counted
    patches_not_zero: int = 0  # ... of them carrying a quantity above zero
    shipments_s: float = 0.0  # simulated time until the last shipment result
    acknowledgements_s: float = 0.0  # ... and until the last acknowledgement result
    packed: int = 0  # Easy Ship packages packed within the hour
    scheduled: dict[str, str] = field(default_factory=dict)  # order -> slot
    not_scheduled: dict[str, str] = field(default_factory=dict)  # order -> why
    documents_ready: dict[str, str] = field(default_factory=dict)  # order -> where stored
    documents_failed: dict[str, str] = field(default_factory=dict)  # order -> why
    documents_latencies_s: list[float] = field(default_factory=list)  # packed -> documents ready
    scheduled_s: float = 0.0  # simulated time until the last package's scheduling outcome
    documents_s: float = 0.0  # ... and until the last documents outcome
    easy_ship_feeds_by_type: dict[str, int] = field(default_factory=dict)
    easy_ship_create_feed_by_hour: list[int] = field(default_factory=list)
    easy_ship_max_create_feed_per_hour: int = 0
    easy_ship_throttled: int = 0

    @property
    def confirmed_per_hour(self) -> float:
        span = max(self.shipments_s or self.simulated_s, 1.0)
        return len(self.confirmed) * 3600.0 / span

    @property
    def acknowledged_per_hour(self) -> float:
        return len(self.acknowledged) * 3600.0 / max(self.acknowledgements_s, 1.0)

    @property
    def scheduled_per_hour(self) -> float:
        return len(self.scheduled) * 3600.0 / max(self.scheduled_s, 1.0)

    @property
    def documents_per_hour(self) -> float:
        return len(self.documents_ready) * 3600.0 / max(self.documents_s, 1.0)

    @property
    def zero_latencies_s(self) -> list[float]:
        """Per zero that reached Amazon: simulated seconds from its publication to Amazon's listing at 0."""
        return [at - self.zeros_published[sku] for sku, at in self.zeros_reached.items()]

    @property
    def zeros_within_a_minute(self) -> int:
        return sum(1 for latency in self.zero_latencies_s if latency <= 60.0)

    def percentile(self, share: float, latencies: list[float] | None = None) -> float:
        values = self.latencies_s if latencies is None else latencies
        if not values:
            return 0.0
        ordered = sorted(values)
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


def _imported(order: dict[str, Any], channel: str, code: str) -> OrderImported:
    """The import stage's sales order of a simulated order (what the acknowledgement reads of it)."""
    lines = tuple(
        SalesOrderLine(
            order_item_id=item["order_item_id"],
            seller_sku=item["sku"],
            asin=item["asin"],
            stock_code=item["sku"],
            quantity=item["quantity_ordered"],
            unit_price=Decimal(item["unit_price"]),
            tax=Decimal(0),
            line_total=Decimal(item["unit_price"]) * item["quantity_ordered"],
        )
        for item in order["items"]
    )
    sales_order = SalesOrder(
        code=code,
        channel=channel,
        seller_id=TEST_SELLER,
        marketplace_id=order["marketplace_id"],
        amazon_order_id=order["amazon_order_id"],
        order_status="Unshipped",
        fulfillment_channel="MFN",
        purchase_date=datetime.fromisoformat(order["created"].replace("Z", "+00:00")),
        currency=order["currency"],
        customer_name=None,
        customer_email=None,
        shipping_address=None,
        ship_service_level="Std",
        lines=lines,
        total=sum((line.line_total for line in lines), Decimal(0)),
    )
    return OrderImported(sales_order=sales_order)


def _packed(order: dict[str, Any], channel: str, rng: random.Random, at: float) -> PackagePacked:
    """The packer's report of a simulated Easy Ship order's one package (every item), for the earliest
    slot."""
    units = sum(item["quantity_ordered"] for item in order["items"])
    return PackagePacked(
        channel=channel,
        amazon_order_id=order["amazon_order_id"],
        items=tuple(
            ShipmentItem(order_item_id=item["order_item_id"], quantity=item["quantity_ordered"])
            for item in order["items"]
        ),
        size=PackedSize(
            length_cm=Decimal(30),
            width_cm=Decimal(20),
            height_cm=Decimal(8 + 6 * units),
            weight_g=Decimal(150 + 500 * units + rng.randrange(100)),
        ),
        packed_at=datetime.fromtimestamp(at, UTC),
    )


def _create_feed_counts(
    feeds: list[dict[str, Any]], start: float, simulated_s: float
) -> tuple[int, list[int]]:
    """The most createFeed calls in any hour (from each call), and the calls in each hour from ``start``."""
    created = sorted(
        datetime.fromisoformat(f["createdTime"].replace("Z", "+00:00")).timestamp() for f in feeds
    )
    most = max((sum(1 for c in created if t <= c < t + 3600) for t in created), default=0)
    hours = math.ceil(max(simulated_s, 1.0) / 3600)
    return most, [
        sum(1 for c in created if start + h * 3600 <= c < start + (h + 1) * 3600) for h in range(hours)
    ]


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
    acknowledge: bool = True,
    zeros: int = 200,
    packages: int = 120,
) -> Figures:
    """Run the scenario; every shipment (and, with ``acknowledge``, every import) and every Easy Ship
    package has a result (or ``max_simulated_s`` passed)."""
    rng = random.Random(seed)
    scenario = tiny_scenario(
        orders={"count": invoices, "history_s": 3600, "items_per_order": [1, 2]},
        seller={"catalogue_size": skus},
        extra_sellers=[_easy_ship_seller(packages)] if packages else [],
        feeds={"stall_share": 0.02},
        # Slots for every package of the hour: the bench measures Amazon's quotas, not slot capacity.
        easy_ship={"marketplaces": [INDIA], "slot_capacity": max(packages, 1)},
    )
    wall_started = time.monotonic()
    with RunningSimulator(scenario) as sim, tempfile.TemporaryDirectory(prefix="bench-documents-") as pdfs:
        state = sim.state
        channels = channels_of(scenario)
        settings = Settings(
            redis=RedisSettings(url=redis_url, key_prefix=key_prefix),
            amazon=AmazonSettings(endpoint=sim.base_url, lwa_endpoint=sim.lwa_url),
            writeback=WriteBackSettings(mode="auto", feed_timeout_s=1800, retry_backoff_s=30),
            inventory=InventorySettings(),
            ratelimit=RateLimitSettings(inventory_flush_interval_s=inventory_interval_s),
            documents=DocumentSettings(directory=pdfs),
        )

        # The inventory stage's own loop (set once the stock changes are drawn): it runs in a process of
        # its own, so while another stage's call waits here for a token its levels are still read and its
        # urgent round still runs on time, each simulated tick of the wait.
        stock_lanes: list[Callable[[], Awaitable[None]]] = []

        async def sim_sleep(seconds: float) -> None:
            remaining = max(seconds, 0.001)
            while remaining > 0:
                step = min(remaining, tick_s)
                state.advance_clock(step)
                remaining -= step
                for stock_lane in stock_lanes:
                    await stock_lane()
            await asyncio.sleep(0)

        limiter = _OwnTaskLanes(
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
        # Each patchListingsItem as Amazon took it: the listing's quantity and time right after (a feed
        # processed later may overwrite it, so the listing is read at the call, not at the end).
        patched: list[tuple[str, int | None, float | None]] = []
        patch_listing = state.feeds.patch_listing

        def recording_patch(
            seller_id: str, sku: str, product_type: str, patches: list[dict[str, Any]], at: float
        ) -> tuple[str, list[dict[str, Any]]]:
            answer = patch_listing(seller_id, sku, product_type, patches, at)
            listing = state.feeds.seller_listings(seller_id).get(sku)
            if answer[0] == "ACCEPTED" and listing is not None:
                patched.append((sku, listing.quantity, listing.updated_at))
            return answer

        state.feeds.patch_listing = recording_patch  # type: ignore[method-assign]
        await runtime.start()
        try:
            channel = channels.channels[0].model_copy(update={"acknowledge_orders": acknowledge})
            easy_ship_channels = tuple(c for c in channels.channels if c.seller_id == EASY_SHIP_SELLER)
            runtime.channels = channels.model_copy(update={"channels": (channel, *easy_ship_channels)})
            start = state.now()
            orders = state.truth_orders(TEST_SELLER, status="Unshipped")[:invoices]
            figures = Figures(invoices=len(orders), simulated_s=0.0, wall_s=0.0)
            # Per-message failures Amazon reports: cancelled on Amazon, unknown order, over-quantity.
            plan: list[tuple[float, ShipmentRequested]] = []
            # Each order imported before its invoice; acknowledged (when the channel does) from then on.
            # (Their times drawn apart, so the shipments are the same with acknowledgements or without.)
            imports: list[tuple[float, OrderImported]] = []
            import_rng = random.Random(seed + 1)
            for number, order in enumerate(orders, 1):
                at = start + rng.uniform(0, hour_s)
                if acknowledge:
                    code = f"SO{number:08d}"
                    imports.append((import_rng.uniform(start, at), _imported(order, channel.name, code)))
                draw = rng.random()
                if draw < failure_share:
                    state.set_order_status(order["amazon_order_id"], "Canceled")
                    figures.expected_failures[order["amazon_order_id"]] = "cancelled"
                    if acknowledge:
                        figures.expected_ack_refusals.add(order["amazon_order_id"])
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
            imports.sort(key=lambda p: p[0])
            # Easy Ship: each order packed at random within the hour (its own draws).
            packing_rng = random.Random(seed + 3)
            packed_plan = sorted(
                (
                    (at := start + packing_rng.uniform(0, hour_s), _packed(order, c.name, packing_rng, at))
                    for c in easy_ship_channels
                    for order in state.truth_orders(EASY_SHIP_SELLER, status="Unshipped")[:packages]
                ),
                key=lambda p: p[0],
            )
            figures.packed = len(packed_plan)
            packed_at = {packed.amazon_order_id: at for at, packed in packed_plan}
            next_packed = 0
            documents_handled = 0  # emitted records read by the documents step
            figures.imported = len(imports)
            arrival = {request.amazon_order_id: at for at, request in plan}
            imported_at = {event.sales_order.amazon_order_id: at for at, event in imports}
            # Stock: every SKU changes once within the hour, a tenth of them twice.
            catalogue = [f"SKU-{n:05d}" for n in range(1, skus + 1)]
            # Above zero: these wait for the feed.
            changes = [(start + rng.uniform(0, hour_s), sku, rng.randrange(1, 500)) for sku in catalogue]
            changes += [
                (start + rng.uniform(0, hour_s), sku, rng.randrange(1, 500))
                for sku in rng.sample(catalogue, skus // 10)
            ]
            # Zeros (their own draws, so the rest of the scenario is the same with any number): the SKU's
            # last level within the hour, so its listing must stay at 0; its later changes are dropped.
            zero_rng = random.Random(seed + 2)
            sold_out = {
                sku: start + zero_rng.uniform(0, hour_s)
                for sku in zero_rng.sample(catalogue, min(zeros, len(catalogue)))
            }
            changes = [c for c in changes if c[1] not in sold_out or c[0] < sold_out[c[1]]]
            changes += [(at, sku, 0) for sku, at in sold_out.items()]
            changes.sort()
            next_change = 0
            next_urgent = start
            in_stock_lane = False

            async def stock_lane() -> None:
                """The levels published by now observed; the urgent round when it is due."""
                nonlocal next_change, next_urgent, in_stock_lane
                if in_stock_lane:  # a patchListingsItem of its own waiting for its token
                    return
                in_stock_lane = True
                try:
                    now = state.now()
                    while next_change < len(changes) and changes[next_change][0] <= now:
                        at, sku, quantity = changes[next_change]
                        next_change += 1
                        latest[sku] = (at, quantity)
                        if quantity == 0:
                            figures.zeros_published[sku] = at
                        observed = datetime.fromtimestamp(at, UTC) + timedelta(microseconds=next_change)
                        level = InventoryLevelChanged(
                            channel=channel.name, seller_sku=sku, quantity=quantity, observed_at=observed
                        )
                        await inventory.handle(
                            runtime, Envelope.wrap(level, seller_id=TEST_SELLER, correlation_id=sku)
                        )
                    if now >= next_urgent:
                        await inventory.send_urgent(runtime, channel)
                        next_urgent = now + settings.inventory.fast_interval_s
                finally:
                    in_stock_lane = False

            stock_lanes.append(stock_lane)
            latest: dict[str, tuple[float, int]] = {}
            next_request = next_import = 0
            while True:
                now = state.now()
                while next_import < len(imports) and imports[next_import][0] <= now:
                    imported = imports[next_import][1]
                    next_import += 1
                    await acknowledgement.handle(
                        runtime,
                        Envelope.wrap(
                            imported,
                            seller_id=TEST_SELLER,
                            marketplace_id=channel.marketplaces[0],
                            correlation_id=imported.sales_order.amazon_order_id,
                        ),
                    )
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
                while next_packed < len(packed_plan) and packed_plan[next_packed][0] <= now:
                    packed = packed_plan[next_packed][1]
                    next_packed += 1
                    await packing.handle(
                        runtime,
                        Envelope.wrap(
                            packed,
                            seller_id=EASY_SHIP_SELLER,
                            marketplace_id=INDIA,
                            correlation_id=packed.amazon_order_id,
                        ),
                    )
                # The documents step's agent reads packages.scheduled as the packing step publishes it.
                while documents_handled < len(runtime.emitted):
                    emitted = runtime.emitted[documents_handled]
                    documents_handled += 1
                    if emitted.topic == PACKAGES_SCHEDULED.name:
                        await packing_documents.handle(runtime, emitted.envelope)
                await stock_lane()
                await shipment_write_back.feed_tick(runtime)
                await packing_documents.tick(runtime)
                if now >= limiter.acknowledgement_due:
                    await acknowledgement.tick(runtime)
                else:
                    await acknowledgement.check_inflight(runtime, channel)
                await stock_lane()  # the clock may have moved while the others waited
                await inventory.tick(runtime, channel)
                results = sum(1 for emitted in runtime.emitted if emitted.topic in _RESULT_TOPICS)
                acknowledgements = sum(
                    1 for emitted in runtime.emitted if emitted.topic == ORDERS_ACKNOWLEDGEMENT_RESULTS.name
                )
                arrived = next_request == len(plan) and next_change == len(changes)
                arrived = arrived and next_import == len(imports) and acknowledgements >= len(imports)
                scheduling = [e for e in runtime.emitted if e.topic == PACKAGES_SCHEDULED.name]
                documents = sum(1 for emitted in runtime.emitted if emitted.topic == PACKAGES_DOCUMENTS.name)
                scheduled_now = sum(1 for e in scheduling if isinstance(e.envelope.payload, PackageScheduled))
                arrived = arrived and next_packed == len(packed_plan) and len(scheduling) >= len(packed_plan)
                arrived = arrived and documents >= scheduled_now
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
                since_start = emitted.at.timestamp() - start
                if emitted.topic == ORDERS_ACKNOWLEDGEMENT_RESULTS.name:
                    figures.acknowledgements_s = max(figures.acknowledgements_s, since_start)
                elif emitted.topic in _RESULT_TOPICS:
                    figures.shipments_s = max(figures.shipments_s, since_start)
                elif emitted.topic == PACKAGES_SCHEDULED.name:
                    figures.scheduled_s = max(figures.scheduled_s, since_start)
                    if isinstance(payload, PackageScheduled):
                        figures.scheduled[payload.amazon_order_id] = payload.slot_id
                    else:
                        figures.not_scheduled[payload.amazon_order_id] = payload.error_code
                elif emitted.topic == PACKAGES_DOCUMENTS.name:
                    figures.documents_s = max(figures.documents_s, since_start)
                    if isinstance(payload, PackageDocumentsReady):
                        figures.documents_ready[payload.amazon_order_id] = payload.location
                        figures.documents_latencies_s.append(
                            emitted.at.timestamp() - packed_at[payload.amazon_order_id]
                        )
                    else:
                        figures.documents_failed[payload.amazon_order_id] = payload.error_code
                if emitted.topic == SHIPMENTS_CONFIRMED.name:
                    figures.confirmed[payload.amazon_order_id] = payload.method
                    figures.latencies_s.append(emitted.at.timestamp() - arrival[payload.amazon_order_id])
                elif emitted.topic == SHIPMENTS_FAILED.name:
                    figures.failed[payload.amazon_order_id] = payload.error_message
                    shipment = await runtime.store.shipment_state(
                        TEST_SELLER, payload.amazon_order_id, payload.package_reference_id
                    )
                    figures.failed_by[payload.amazon_order_id] = shipment.get("method", "confirmShipment")
                elif emitted.topic == ORDERS_ACKNOWLEDGEMENT_RESULTS.name:
                    order_id = payload.amazon_order_id
                    if payload.acknowledged:
                        figures.acknowledged[order_id] = state.truth_order(order_id)["merchant_order_id"]
                        figures.ack_latencies_s.append(emitted.at.timestamp() - imported_at[order_id])
                    else:
                        figures.not_acknowledged[order_id] = f"{payload.error_code}: {payload.error_message}"
            feeds = state.truth_feeds(TEST_SELLER)
            for feed in feeds:
                figures.feeds_by_type[feed["feedType"]] = figures.feeds_by_type.get(feed["feedType"], 0) + 1
            figures.max_create_feed_per_hour, figures.create_feed_by_hour = _create_feed_counts(
                feeds, start, figures.simulated_s
            )
            easy_ship_feeds = state.truth_feeds(EASY_SHIP_SELLER) if packages else []
            for feed in easy_ship_feeds:
                kind = feed["feedType"]
                figures.easy_ship_feeds_by_type[kind] = figures.easy_ship_feeds_by_type.get(kind, 0) + 1
            figures.easy_ship_max_create_feed_per_hour, figures.easy_ship_create_feed_by_hour = (
                _create_feed_counts(easy_ship_feeds, start, figures.simulated_s)
            )
            easy_ship_counters = state.counters_json()["sellers"].get(EASY_SHIP_SELLER, {})
            figures.easy_ship_throttled = sum(int(c.get("throttled", 0)) for c in easy_ship_counters.values())
            figures.inventory_feeds = [
                datetime.fromisoformat(f["createdTime"].replace("Z", "+00:00")).timestamp()
                for f in feeds
                if f["feedType"] == "JSON_LISTINGS_FEED"
            ]
            figures.inventory_intervals = math.ceil(hour_s / inventory_interval_s)  # with stock changes
            counters = state.counters_json()["sellers"].get(TEST_SELLER, {})
            figures.throttled = sum(int(c.get("throttled", 0)) for c in counters.values())
            figures.patch_calls = int(counters.get("patchListingsItem", {}).get("calls", 0))
            figures.patches_not_zero = sum(1 for _, quantity, _ in patched if quantity != 0)
            for sku, quantity, patched_at in patched:
                published = figures.zeros_published.get(sku)
                if (
                    quantity == 0
                    and patched_at is not None
                    and published is not None
                    and patched_at >= published
                ):
                    figures.zeros_reached.setdefault(sku, patched_at)
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


def _tally(reasons: dict[str, str]) -> dict[str, int]:
    """How many of each reason."""
    counts: dict[str, int] = {}
    for reason in reasons.values():
        counts[reason] = counts.get(reason, 0) + 1
    return counts


_RESULT_TOPICS = frozenset({SHIPMENTS_CONFIRMED.name, SHIPMENTS_FAILED.name})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--invoices", type=int, default=12_000)
    parser.add_argument("--skus", type=int, default=20_000)
    parser.add_argument("--zeros", type=int, default=200, help="SKUs whose stock drops to zero")
    parser.add_argument(
        "--packages", type=int, default=120, help="Easy Ship packages packed within the hour (0: none)"
    )
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument(
        "--no-acknowledge", action="store_true", help="without order acknowledgements (the lane idle)"
    )
    args = parser.parse_args()
    from ordersync.dev.devinfra import EmbeddedRedis  # noqa: PLC0415 - only when no Redis is given

    with ExitStack() as stack:
        import os  # noqa: PLC0415

        url = os.environ.get("ORDERSYNC_REDIS__URL") or stack.enter_context(EmbeddedRedis()).url
        figures = asyncio.run(
            simulate(
                url,
                f"bench-{uuid.uuid4().hex[:8]}",
                invoices=args.invoices,
                skus=args.skus,
                seed=args.seed,
                acknowledge=not args.no_acknowledge,
                zeros=args.zeros,
                packages=args.packages,
            )
        )
    print(report(figures))


def report(figures: Figures) -> str:
    by_method: dict[str, int] = {}
    for method in figures.confirmed.values():
        by_method[method] = by_method.get(method, 0) + 1
    p50, p95 = figures.percentile(0.5) / 60, figures.percentile(0.95) / 60
    ack_p50 = figures.percentile(0.5, figures.ack_latencies_s) / 60
    ack_p95 = figures.percentile(0.95, figures.ack_latencies_s) / 60
    zero_latencies = figures.zero_latencies_s
    zero_p50 = figures.percentile(0.5, zero_latencies)
    docs_p50 = figures.percentile(0.5, figures.documents_latencies_s) / 60
    docs_p95 = figures.percentile(0.95, figures.documents_latencies_s) / 60
    rows = [
        ("invoices issued within one simulated hour", f"{figures.invoices}"),
        ("simulated time until every result", f"{figures.simulated_s / 60:.1f} min"),
        ("... until the last shipment's", f"{figures.shipments_s / 60:.1f} min"),
        ("shipments confirmed", f"{len(figures.confirmed)} {by_method}"),
        (
            "shipments failed (refused by Amazon)",
            f"{len(figures.failed)} (injected {len(figures.expected_failures)})",
        ),
        ("confirmed per simulated hour", f"{figures.confirmed_per_hour:.0f} (one order per feed: 29)"),
        ("latency invoice -> confirmed, p50 / p95", f"{p50:.1f} / {p95:.1f} min"),
        (
            "orders imported / acknowledged / not",
            f"{figures.imported} / {len(figures.acknowledged)} / {len(figures.not_acknowledged)}"
            f" (cancelled on Amazon: {len(figures.expected_ack_refusals)})",
        ),
        ("acknowledged per simulated hour", f"{figures.acknowledged_per_hour:.0f}"),
        ("latency import -> acknowledged, p50 / p95", f"{ack_p50:.1f} / {ack_p95:.1f} min"),
        ("feeds submitted", f"{figures.feeds_by_type}"),
        ("most createFeed calls in any hour", f"{figures.max_create_feed_per_hour} (Amazon: 30/h, burst 15)"),
        ("createFeed calls in each hour", f"{figures.create_feed_by_hour}"),
        ("429s received", f"{figures.throttled}"),
        (
            "inventory feeds / flush intervals",
            f"{len(figures.inventory_feeds)} / {figures.inventory_intervals}",
        ),
        ("SKUs not at their latest quantity", f"{figures.listings_wrong}"),
        (
            "zeros sent within a minute / published",
            f"{figures.zeros_within_a_minute} / {len(figures.zeros_published)}"
            f" (reached Amazon at all: {len(figures.zeros_reached)})",
        ),
        (
            "zero published -> on Amazon, p50 / max",
            f"{zero_p50:.0f} / {max(zero_latencies, default=0.0):.0f} s (simulated)",
        ),
        (
            "patchListingsItem calls / quantity > 0",
            f"{figures.patch_calls} / {figures.patches_not_zero}",
        ),
        ("Easy Ship packages packed within the hour", f"{figures.packed}"),
        (
            "packages scheduled / not",
            f"{len(figures.scheduled)} / {len(figures.not_scheduled)} {_tally(figures.not_scheduled)}",
        ),
        ("scheduled per simulated hour", f"{figures.scheduled_per_hour:.0f}"),
        (
            "documents ready / failed",
            f"{len(figures.documents_ready)} / {len(figures.documents_failed)}"
            f" {_tally(figures.documents_failed)}",
        ),
        (
            "documents ready per simulated hour",
            f"{figures.documents_per_hour:.0f} (until the last: {figures.documents_s / 60:.1f} min)",
        ),
        ("latency packed -> documents ready, p50 / p95", f"{docs_p50:.1f} / {docs_p95:.1f} min"),
        ("Easy Ship seller's feeds submitted", f"{figures.easy_ship_feeds_by_type}"),
        (
            "... its createFeed calls, most in any hour",
            f"{figures.easy_ship_max_create_feed_per_hour}"
            f" (each hour: {figures.easy_ship_create_feed_by_hour})",
        ),
        ("... its 429s received", f"{figures.easy_ship_throttled}"),
        ("wall time", f"{figures.wall_s:.1f} s"),
    ]
    return "\n".join(f"{name:<44} {value}" for name, value in rows)


if __name__ == "__main__":
    main()
