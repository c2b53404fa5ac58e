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

Beside them, a second seller, in India (``EASY_SHIP_SELLER``), whose one createFeed quota (Amazon counts
it per seller: 30 an hour, burst 15) is shared by everything it sends by feed, within the same hour:
its Easy Ship packages (``--packages``, each packed at random within the hour: ``packing.handle``,
listHandoverSlots and createScheduledPackage; then the documents step, ``packing_documents.handle`` per
scheduled package and its tick: one POST_EASYSHIP_DOCUMENTS feed per ``documents.flush_interval_s`` on
the ``packing`` lane, then one getReportDocument per package, the PDFs stored in a temporary
directory); its other seller-fulfilled orders (``--easy-ship-invoices``, not in Easy Ship, each
invoiced at random within the hour through ``shipment_write_back.handle``, its channel in feed mode so
they go by POST_ORDER_FULFILLMENT_DATA on the same ``packing`` lane); every order's import, acknowledged
(``acknowledgement`` lane); and stock changes for its SKUs (``--easy-ship-skus``, each once within the
hour, a tenth twice, all above zero) through the inventory stage (``inventory`` lane, one
JSON_LISTINGS_FEED per flush interval). Its work runs as the stages run it, each task a loop of its own
(the agents, the write-back feed task, the documents task, the acknowledgement task, the inventory
rounds) on the simulated clock: a loop waiting for a token parks until its time while the others go on,
and the main seller's work never waits for it (its figures are those it has alone: the same with any
size of the Easy Ship seller's, or none); its feeds draw Amazon's processing times from a stream of
their own for the same reason.

Prints shipments confirmed per simulated hour (one order per feed, as some connectors send them: 29),
orders acknowledged per simulated hour, feeds submitted per type, createFeed calls per hour (the most in
any hour, and in each clock hour), 429s received, and the p50/p95 latency (simulated seconds) from
invoice issued to ``shipments.confirmed`` and from import to acknowledged; for the zeros, how many
reached Amazon (the simulator's listing at 0, by patchListingsItem) within a simulated minute of their
publication, the p50 and max of that latency, and patchListingsItem calls (none but for zeros). For the
Easy Ship seller: shipments confirmed per simulated hour and their p50/p95 latency, orders acknowledged,
stock changes, stock feeds and SKUs not at their latest quantity, packages scheduled and documents ready
per simulated hour, the p50/p95 latency from packed to documents ready, its feeds per type, its
createFeed calls in the busiest hour (within its plan per hour) and in each hour, and its 429s (none).
``simulate`` is also what the scale test (``tests/stage/test_writeback_scale.py``) runs and checks.

    .venv/bin/python bench/writeback.py [--invoices 12000] [--skus 20000] [--zeros 200] [--packages 120]
        [--easy-ship-invoices 300] [--easy-ship-skus 1000] [--no-acknowledge]
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
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
from functools import partial
from typing import Any

from ordersync.channels import Channel
from ordersync.clock import EpochClock
from ordersync.consumers import acknowledgement, inventory, packing, packing_documents, shipment_write_back
from ordersync.dev.testing import RecordingRuntime, channels_of
from ordersync.errors import QuotaTimeout
from ordersync.kafka.faust_app import make_app
from ordersync.pipeline.runtime import StageRuntime
from ordersync.ratelimit import InMemoryRateLimiter, PlanBook
from ordersync.ratelimit.limiter import Grant, limiter_options
from ordersync.schemas.envelope import Envelope, Event
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
from ordersync.simulator.orders import EASY_SHIP
from ordersync.simulator.runner import RunningSimulator
from ordersync.simulator.testing import TEST_APPLICATION, TEST_SELLER, tiny_scenario

UNKNOWN_ORDER_PREFIX = "999-"
#: The Easy Ship seller, in India (Amazon's Easy Ship marketplace).
EASY_SHIP_SELLER = "A2BENCHSELLERIN"
INDIA = "A21TJRUUN4KGV"


def _easy_ship_seller(packages: int, invoices: int, skus: int) -> dict[str, Any]:
    """The Easy Ship seller of the scenario: ``packages`` seller-fulfilled orders in Easy Ship, and with
    ``invoices`` about as many others not in it (the programme is drawn per order, so a fifth more are
    generated and the bench takes as many of each as it needs); a catalogue of ``skus`` SKUs."""
    orders = packages + invoices
    count = math.ceil(orders * 1.2) + 10 if invoices else packages
    return {
        "seller_id": EASY_SHIP_SELLER,
        "region": "eu",
        "marketplaces": [INDIA],
        "applications": [{**TEST_APPLICATION, "refresh_token": "Atzr|bench-easy-ship"}],
        "catalogue_size": max(skus, 50),
        "orders": {
            "count": count,
            "history_s": 3600,
            "arrival_window_s": 0,
            "items_per_order": [1, 2],
            "pending_share": 0.0,
            "afn_share": 0.0,
            "cancel_share": 0.0,
            "easy_ship_share": packages / orders if orders else 1.0,
        },
    }


class _SellerLoops:
    """The Easy Ship seller's stage work as tasks of their own on the simulated clock, as the stages run
    it (the write-back's agents, its feed task, the documents task, the acknowledgement task, the
    inventory rounds): a loop that waits (a rate-limiter token, its next round) parks until the simulated
    clock reaches its time, and the others go on. Only the main loop moves the clock: after each step it
    hands the turn to each loop due, one at a time (a loop runs until it waits again), so every run is
    the same, and a wait of the Easy Ship seller never holds up the main seller's work, whose figures
    are those it has alone. A loop resumes at the first step of the main loop at or after its time (at
    most ``tick_s`` late)."""

    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now
        self._parked: dict[int, tuple[float, asyncio.Future[None]]] = {}  # loop -> (its time, resume)
        self._turn: asyncio.Future[None] | None = None  # done when the loop running waits or ends
        self._running: contextvars.ContextVar[int | None] = contextvars.ContextVar("loop", default=None)
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, body: Callable[[], Awaitable[None]]) -> None:
        """A loop of its own, its first turn at the next :meth:`run_due`."""
        number = len(self._tasks)
        resume: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._parked[number] = (self._now(), resume)

        async def run() -> None:
            self._running.set(number)
            await resume
            try:
                await body()
            except BaseException as exc:
                if self._turn is not None and not self._turn.done():
                    self._turn.set_exception(exc)
                raise
            if self._turn is not None and not self._turn.done():
                self._turn.set_result(None)

        self._tasks.append(asyncio.create_task(run()))

    def running(self) -> bool:
        """Is the caller one of these loops?"""
        return self._running.get() is not None

    async def sleep(self, seconds: float) -> None:
        """In a loop: give the turn back until the clock has moved on ``seconds``."""
        number = self._running.get()
        assert number is not None
        resume: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._parked[number] = (self._now() + max(seconds, 0.0), resume)
        if self._turn is not None and not self._turn.done():
            self._turn.set_result(None)
        await resume

    async def run_due(self) -> None:
        """From the main loop: each loop whose time has come runs its turn (the earliest first)."""
        while due := sorted((at, n) for n, (at, _) in self._parked.items() if at <= self._now()):
            _, number = due[0]
            _, resume = self._parked.pop(number)
            self._turn = asyncio.get_running_loop().create_future()
            resume.set_result(None)
            await self._turn

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class _OwnTaskLanes(InMemoryRateLimiter):
    """The stage sends its order acknowledgements from a task of their own, so a feed of theirs waiting
    for its createFeed token (behind the shipments) holds nothing else up. This loop runs the ticks one
    after the other on the simulator's clock, where such a wait would stop the clock for everything: on
    that lane a token that is not there now is asked for again when the limiter says it may be there
    (``acknowledgement_due``), the feed in flight settled meanwhile. The Easy Ship seller's loops
    (:class:`_SellerLoops`) are tasks of their own here too: their waits are the stage's."""

    acknowledgement_due = 0.0
    seller_loops: _SellerLoops | None = None

    async def acquire(
        self,
        operation: str,
        seller_id: str,
        *,
        lane: str = "default",
        timeout: float | None = None,  # noqa: ASYNC109
        feed_type: str | None = None,
    ) -> Grant:
        if lane != acknowledgement.LANE or (self.seller_loops is not None and self.seller_loops.running()):
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
    easy_ship_create_feed_plan: tuple[float, int] = (0.0, 0)  # Amazon's createFeed rate (/s), burst
    # The Easy Ship seller's other work, beside its packages (feed mode: fulfilment feeds).
    easy_ship_invoices: int = 0  # its orders not in Easy Ship, invoiced within the hour
    easy_ship_confirmed: dict[str, str] = field(default_factory=dict)  # order -> method
    easy_ship_failed: dict[str, str] = field(default_factory=dict)  # order -> Amazon's message
    easy_ship_latencies_s: list[float] = field(default_factory=list)  # invoice -> confirmed
    easy_ship_shipments_s: float = 0.0  # simulated time until its last shipment result
    easy_ship_imported: int = 0
    easy_ship_acknowledged: int = 0
    easy_ship_not_acknowledged: int = 0
    easy_ship_stock_changes: int = 0  # levels published for its SKUs within the hour
    easy_ship_skus: int = 0
    easy_ship_inventory_feeds: list[float] = field(default_factory=list)  # created, simulated epoch
    easy_ship_listings_wrong: int = 0
    easy_ship_sku_errors: int = 0

    @property
    def confirmed_per_hour(self) -> float:
        span = max(self.shipments_s or self.simulated_s, 1.0)
        return len(self.confirmed) * 3600.0 / span

    @property
    def acknowledged_per_hour(self) -> float:
        return len(self.acknowledged) * 3600.0 / max(self.acknowledgements_s, 1.0)

    @property
    def easy_ship_confirmed_per_hour(self) -> float:
        return len(self.easy_ship_confirmed) * 3600.0 / max(self.easy_ship_shipments_s, 1.0)

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


def _request(
    order: dict[str, Any], *, order_id: str | None = None, extra: int = 0, channel: str = TEST_SELLER.lower()
) -> ShipmentRequested:
    return ShipmentRequested(
        channel=channel,
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


def _imported(order: dict[str, Any], channel: str, code: str, seller_id: str = TEST_SELLER) -> OrderImported:
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
        seller_id=seller_id,
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
    easy_ship_invoices: int = 300,
    easy_ship_skus: int = 1000,
) -> Figures:
    """Run the scenario; every shipment (and, with ``acknowledge``, every import) of both sellers, every
    Easy Ship package and every stock change has a result (or ``max_simulated_s`` passed)."""
    rng = random.Random(seed)
    with_easy_ship = bool(packages or easy_ship_invoices or easy_ship_skus)
    easy_ship_seller = _easy_ship_seller(packages, easy_ship_invoices, easy_ship_skus)
    scenario = tiny_scenario(
        orders={"count": invoices, "history_s": 3600, "items_per_order": [1, 2]},
        seller={"catalogue_size": skus},
        extra_sellers=[easy_ship_seller] if with_easy_ship else [],
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
        # The Easy Ship seller's loops: they wait without moving the clock; they run after each step.
        seller_loops = _SellerLoops(state.now)

        async def sim_sleep(seconds: float) -> None:
            if seller_loops.running():
                await seller_loops.sleep(max(seconds, 0.001))
                return
            remaining = max(seconds, 0.001)
            while remaining > 0:
                step = min(remaining, tick_s)
                state.advance_clock(step)
                remaining -= step
                for stock_lane in stock_lanes:
                    await stock_lane()
                await seller_loops.run_due()
            await asyncio.sleep(0)

        plans = PlanBook.from_channels(channels.channels, time_scale=1)
        limiter = _OwnTaskLanes(
            plans=plans,
            clock=state.now,
            sleep=sim_sleep,
            **limiter_options(settings),
        )
        limiter.seller_loops = seller_loops
        stage = "shipment-write-back"
        # The stage's Kafka producer records; each envelope's ``at`` is the simulator's clock.
        runtime = RecordingRuntime(
            stage, settings, make_app(stage, settings), channels, limiter=limiter, clock=EpochClock(state.now)
        )
        # The Easy Ship seller's (the same stages, Redis and limiter; its own record of what it emits).
        easy_ship_runtime = RecordingRuntime(
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
            if answer[0] == "ACCEPTED" and listing is not None and seller_id == TEST_SELLER:
                patched.append((sku, listing.quantity, listing.updated_at))
            return answer

        state.feeds.patch_listing = recording_patch  # type: ignore[method-assign]
        # Amazon's processing times are drawn per feed from one stream of the simulator: the Easy Ship
        # seller's feeds draw from a stream of their own, so its load changes none of the main seller's.
        create_feed = state.feeds.create_feed
        easy_ship_draws = random.Random(f"{scenario.seed}/feeds/{EASY_SHIP_SELLER}")

        def own_draws(seller_id: str, *args: Any, **kwargs: Any) -> Any:
            if seller_id != EASY_SHIP_SELLER:
                return create_feed(seller_id, *args, **kwargs)
            shared, state.feeds._rng = state.feeds._rng, easy_ship_draws
            try:
                return create_feed(seller_id, *args, **kwargs)
            finally:
                state.feeds._rng = shared

        state.feeds.create_feed = own_draws  # type: ignore[method-assign]
        await runtime.start()
        await easy_ship_runtime.start()
        try:
            channel = channels.channels[0].model_copy(update={"acknowledge_orders": acknowledge})
            runtime.channels = channels.model_copy(update={"channels": (channel,)})
            # Feed mode: its shipments go by POST_ORDER_FULFILLMENT_DATA, whatever the backlog.
            easy_ship_channels = tuple(
                c.model_copy(update={"acknowledge_orders": acknowledge, "writeback_mode": "feed"})
                for c in channels.channels
                if c.seller_id == EASY_SHIP_SELLER
            )
            easy_ship_runtime.channels = channels.model_copy(update={"channels": easy_ship_channels})
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
            easy_ship_orders = state.truth_orders(EASY_SHIP_SELLER, status="Unshipped")
            in_easy_ship = [o for o in easy_ship_orders if EASY_SHIP in o.get("programs", ())]
            packed_plan = sorted(
                (
                    (at := start + packing_rng.uniform(0, hour_s), _packed(order, c.name, packing_rng, at))
                    for c in easy_ship_channels
                    for order in in_easy_ship[:packages]
                ),
                key=lambda p: p[0],
            )
            figures.packed = len(packed_plan)
            packed_at = {packed.amazon_order_id: at for at, packed in packed_plan}
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

            # The Easy Ship seller's other work (its own draws): its orders not in Easy Ship invoiced at
            # random within the hour, each order imported before its invoice or its packing (acknowledged:
            # its channel acknowledges too), and every SKU of its catalogue changing once, a tenth twice.
            easy_ship_rng = random.Random(seed + 4)
            easy_ship_channel = easy_ship_channels[0] if easy_ship_channels else None
            easy_ship_plan: list[tuple[float, ShipmentRequested]] = []
            easy_ship_imports: list[tuple[float, OrderImported]] = []
            easy_ship_changes: list[tuple[float, str, int]] = []
            if easy_ship_channel is not None:
                not_easy_ship = [o for o in easy_ship_orders if EASY_SHIP not in o.get("programs", ())]
                for order in not_easy_ship[:easy_ship_invoices]:
                    at = start + easy_ship_rng.uniform(0, hour_s)
                    easy_ship_plan.append((at, _request(order, channel=easy_ship_channel.name)))
                by_id = {order["amazon_order_id"]: order for order in easy_ship_orders}
                events = [(at, r.amazon_order_id) for at, r in easy_ship_plan]
                events += [(at, packed.amazon_order_id) for at, packed in packed_plan]
                for number, (at, order_id) in enumerate(events if acknowledge else [], 1):
                    code = f"SOIN{number:06d}"
                    imported = _imported(by_id[order_id], easy_ship_channel.name, code, EASY_SHIP_SELLER)
                    easy_ship_imports.append((easy_ship_rng.uniform(start, at), imported))
                easy_ship_catalogue = [f"SKU-{n:05d}" for n in range(1, easy_ship_skus + 1)]
                easy_ship_changes = [
                    (start + easy_ship_rng.uniform(0, hour_s), sku, easy_ship_rng.randrange(1, 500))
                    for sku in easy_ship_catalogue
                ]
                easy_ship_changes += [
                    (start + easy_ship_rng.uniform(0, hour_s), sku, easy_ship_rng.randrange(1, 500))
                    for sku in easy_ship_rng.sample(easy_ship_catalogue, easy_ship_skus // 10)
                ]
            easy_ship_plan.sort(key=lambda p: p[0])
            easy_ship_imports.sort(key=lambda p: p[0])
            easy_ship_changes.sort()
            figures.easy_ship_invoices = len(easy_ship_plan)
            figures.easy_ship_imported = len(easy_ship_imports)
            figures.easy_ship_stock_changes = len(easy_ship_changes)
            figures.easy_ship_skus = easy_ship_skus if easy_ship_channel is not None else 0
            easy_ship_arrival = {request.amazon_order_id: at for at, request in easy_ship_plan}
            easy_ship_latest: dict[str, int] = {}
            # How far each of its agents has read (records published by now), and its stock all sent.
            read = dict.fromkeys(("imports", "shipments", "packed", "scheduled", "levels"), 0)
            stock_settled = not easy_ship_changes

            def wrap(event: Event, order_id: str) -> Envelope[Event]:
                return Envelope.wrap(
                    event, seller_id=EASY_SHIP_SELLER, marketplace_id=INDIA, correlation_id=order_id
                )

            async def easy_ship_agents(esc: Channel) -> None:
                """The stages' agents, each record as it is published: imports (acknowledgements),
                shipment requests, packed packages, scheduled packages (the documents step), levels."""
                es = easy_ship_runtime
                while True:
                    now = state.now()
                    while (
                        read["imports"] < len(easy_ship_imports)
                        and easy_ship_imports[read["imports"]][0] <= now
                    ):
                        imported = easy_ship_imports[read["imports"]][1]
                        read["imports"] += 1
                        await acknowledgement.handle(es, wrap(imported, imported.sales_order.amazon_order_id))
                    while (
                        read["shipments"] < len(easy_ship_plan)
                        and easy_ship_plan[read["shipments"]][0] <= now
                    ):
                        request = easy_ship_plan[read["shipments"]][1]
                        read["shipments"] += 1
                        await shipment_write_back.handle(es, wrap(request, request.source or ""))
                    while read["packed"] < len(packed_plan) and packed_plan[read["packed"]][0] <= now:
                        packed = packed_plan[read["packed"]][1]
                        read["packed"] += 1
                        await packing.handle(es, wrap(packed, packed.amazon_order_id))
                    while read["scheduled"] < len(es.emitted):
                        emitted = es.emitted[read["scheduled"]]
                        read["scheduled"] += 1
                        if emitted.topic == PACKAGES_SCHEDULED.name:
                            await packing_documents.handle(es, emitted.envelope)
                    while (
                        read["levels"] < len(easy_ship_changes)
                        and easy_ship_changes[read["levels"]][0] <= now
                    ):
                        at, sku, quantity = easy_ship_changes[read["levels"]]
                        read["levels"] += 1
                        easy_ship_latest[sku] = quantity
                        observed = datetime.fromtimestamp(at, UTC) + timedelta(microseconds=read["levels"])
                        level = InventoryLevelChanged(
                            channel=esc.name, seller_sku=sku, quantity=quantity, observed_at=observed
                        )
                        await inventory.handle(
                            es, Envelope.wrap(level, seller_id=EASY_SHIP_SELLER, correlation_id=sku)
                        )
                    await seller_loops.sleep(tick_s)

            async def easy_ship_inventory(esc: Channel) -> None:
                """The inventory stage's feed rounds for the Easy Ship seller's channel."""
                nonlocal stock_settled
                while True:
                    await inventory.tick(easy_ship_runtime, esc)
                    stock_settled = (
                        read["levels"] == len(easy_ship_changes)
                        and not await inventory.pending(easy_ship_runtime, EASY_SHIP_SELLER)
                        and await inventory.check_inflight(easy_ship_runtime, esc)
                    )
                    await seller_loops.sleep(tick_s)

            def every_tick(step: Callable[[StageRuntime], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
                """A task of the stage that runs ``step`` every tick (the feeds, the documents, the
                acknowledgements), for the Easy Ship seller."""

                async def loop() -> None:
                    while True:
                        await step(easy_ship_runtime)
                        await seller_loops.sleep(tick_s)

                return loop

            def easy_ship_done() -> bool:
                """Every record of the Easy Ship seller published and each with its outcome."""
                topics = [emitted.topic for emitted in easy_ship_runtime.emitted]
                scheduled = [
                    e.envelope.payload
                    for e in easy_ship_runtime.emitted
                    if e.topic == PACKAGES_SCHEDULED.name
                ]
                return (
                    read["imports"] == len(easy_ship_imports)
                    and read["shipments"] == len(easy_ship_plan)
                    and read["packed"] == len(packed_plan)
                    and stock_settled
                    and sum(1 for t in topics if t in _RESULT_TOPICS) >= len(easy_ship_plan)
                    and topics.count(ORDERS_ACKNOWLEDGEMENT_RESULTS.name) >= len(easy_ship_imports)
                    and len(scheduled) >= len(packed_plan)
                    and topics.count(PACKAGES_DOCUMENTS.name)
                    >= sum(1 for payload in scheduled if isinstance(payload, PackageScheduled))
                )

            if easy_ship_channel is not None:
                esc = easy_ship_channel
                seller_loops.start(partial(easy_ship_agents, esc))
                seller_loops.start(every_tick(shipment_write_back.feed_tick))
                seller_loops.start(every_tick(packing_documents.tick))
                if acknowledge:
                    seller_loops.start(every_tick(acknowledgement.tick))
                seller_loops.start(partial(easy_ship_inventory, esc))
                await seller_loops.run_due()
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
                await stock_lane()
                await shipment_write_back.feed_tick(runtime)
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
                arrived = arrived and easy_ship_done()
                inventory_done = not await inventory.pending(
                    runtime, TEST_SELLER
                ) and await inventory.check_inflight(runtime, channel)
                if arrived and results >= len(plan) and inventory_done:
                    break
                if now - start > max_simulated_s:
                    break
                state.advance_clock(tick_s)
                await seller_loops.run_due()
            figures.simulated_s = state.now() - start
            for emitted in runtime.emitted:
                payload = emitted.envelope.payload
                since_start = emitted.at.timestamp() - start
                if emitted.topic == ORDERS_ACKNOWLEDGEMENT_RESULTS.name:
                    figures.acknowledgements_s = max(figures.acknowledgements_s, since_start)
                elif emitted.topic in _RESULT_TOPICS:
                    figures.shipments_s = max(figures.shipments_s, since_start)
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
            for emitted in easy_ship_runtime.emitted:
                payload = emitted.envelope.payload
                since_start = emitted.at.timestamp() - start
                if emitted.topic == PACKAGES_SCHEDULED.name:
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
                elif emitted.topic == SHIPMENTS_CONFIRMED.name:
                    figures.easy_ship_shipments_s = max(figures.easy_ship_shipments_s, since_start)
                    order_id = payload.amazon_order_id
                    if order_id in easy_ship_arrival:  # (not the packages: Amazon's carrier ships them)
                        figures.easy_ship_confirmed[order_id] = payload.method
                        figures.easy_ship_latencies_s.append(
                            emitted.at.timestamp() - easy_ship_arrival[order_id]
                        )
                elif emitted.topic == SHIPMENTS_FAILED.name:
                    figures.easy_ship_shipments_s = max(figures.easy_ship_shipments_s, since_start)
                    figures.easy_ship_failed[payload.amazon_order_id] = payload.error_message
                elif emitted.topic == ORDERS_ACKNOWLEDGEMENT_RESULTS.name:
                    if payload.acknowledged:
                        figures.easy_ship_acknowledged += 1
                    else:
                        figures.easy_ship_not_acknowledged += 1
            feeds = state.truth_feeds(TEST_SELLER)
            for feed in feeds:
                figures.feeds_by_type[feed["feedType"]] = figures.feeds_by_type.get(feed["feedType"], 0) + 1
            figures.max_create_feed_per_hour, figures.create_feed_by_hour = _create_feed_counts(
                feeds, start, figures.simulated_s
            )
            easy_ship_feeds = state.truth_feeds(EASY_SHIP_SELLER) if with_easy_ship else []
            for feed in easy_ship_feeds:
                kind = feed["feedType"]
                figures.easy_ship_feeds_by_type[kind] = figures.easy_ship_feeds_by_type.get(kind, 0) + 1
            figures.easy_ship_max_create_feed_per_hour, figures.easy_ship_create_feed_by_hour = (
                _create_feed_counts(easy_ship_feeds, start, figures.simulated_s)
            )
            easy_ship_counters = state.counters_json()["sellers"].get(EASY_SHIP_SELLER, {})
            figures.easy_ship_throttled = sum(int(c.get("throttled", 0)) for c in easy_ship_counters.values())
            figures.easy_ship_create_feed_plan = plans.amazon_plan("createFeed", EASY_SHIP_SELLER)
            figures.easy_ship_inventory_feeds = [
                datetime.fromisoformat(f["createdTime"].replace("Z", "+00:00")).timestamp()
                for f in easy_ship_feeds
                if f["feedType"] == "JSON_LISTINGS_FEED"
            ]
            easy_ship_listings = state.truth_listings(EASY_SHIP_SELLER).get(EASY_SHIP_SELLER, {})
            figures.easy_ship_listings_wrong = sum(
                1
                for sku, quantity in easy_ship_latest.items()
                if (easy_ship_listings.get(sku) or {}).get("quantity") != quantity
            )
            figures.easy_ship_sku_errors = len(
                await inventory.sku_errors(easy_ship_runtime, EASY_SHIP_SELLER)
            )
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
            await seller_loops.close()
            await easy_ship_runtime.close()
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
    parser.add_argument(
        "--easy-ship-invoices",
        type=int,
        default=300,
        help="the Easy Ship seller's orders not in Easy Ship invoiced within the hour (feed mode)",
    )
    parser.add_argument(
        "--easy-ship-skus", type=int, default=1000, help="the Easy Ship seller's SKUs whose stock changes"
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
                easy_ship_invoices=args.easy_ship_invoices,
                easy_ship_skus=args.easy_ship_skus,
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
    es_p50 = figures.percentile(0.5, figures.easy_ship_latencies_s) / 60
    es_p95 = figures.percentile(0.95, figures.easy_ship_latencies_s) / 60
    es_methods = _tally(figures.easy_ship_confirmed)
    rate, burst = figures.easy_ship_create_feed_plan
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
        ("Easy Ship seller: invoices (not Easy Ship)", f"{figures.easy_ship_invoices} (feed mode)"),
        (
            "... shipments confirmed / failed",
            f"{len(figures.easy_ship_confirmed)} {es_methods} / {len(figures.easy_ship_failed)}",
        ),
        (
            "... confirmed per simulated hour",
            f"{figures.easy_ship_confirmed_per_hour:.0f}"
            f" (until the last: {figures.easy_ship_shipments_s / 60:.1f} min)",
        ),
        ("... latency invoice -> confirmed, p50 / p95", f"{es_p50:.1f} / {es_p95:.1f} min"),
        (
            "... orders imported / acknowledged / not",
            f"{figures.easy_ship_imported} / {figures.easy_ship_acknowledged}"
            f" / {figures.easy_ship_not_acknowledged}",
        ),
        (
            "... stock changes / SKUs / not at latest",
            f"{figures.easy_ship_stock_changes} / {figures.easy_ship_skus}"
            f" / {figures.easy_ship_listings_wrong} (SKU errors: {figures.easy_ship_sku_errors})",
        ),
        (
            "... stock feeds / flush intervals",
            f"{len(figures.easy_ship_inventory_feeds)} / {figures.inventory_intervals}",
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
            f"{figures.easy_ship_max_create_feed_per_hour} (its plan: {rate * 3600:.0f}/h, burst {burst};"
            f" each hour: {figures.easy_ship_create_feed_by_hour})",
        ),
        ("... its 429s received", f"{figures.easy_ship_throttled}"),
        ("wall time", f"{figures.wall_s:.1f} s"),
    ]
    return "\n".join(f"{name:<44} {value}" for name, value in rows)


if __name__ == "__main__":
    main()
