"""The whole pipeline under a fault, judged from the simulator's truth and the topics: a scenario of two
sellers (Orders v0 and 2026-01-01) whose orders keep arriving, and the verdict every fault must pass."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ordersync.dev.demo import Accounting, LocalPipeline, OutcomeWatcher, wait_until_accounted
from ordersync.kafka.reader import read_topic
from ordersync.schemas.events import OrderImported, ShipmentConfirmed
from ordersync.schemas.topics import (
    CATALOGUE,
    ORDERS_IMPORTED,
    REDRIVE_TIERS,
    SHIPMENTS_CONFIRMED,
    SHIPMENTS_FAILED,
)
from ordersync.simulator.scenario import Scenario
from tests.topics import read_all

TIME_SCALE = 60
ORDERS_PER_SELLER = 30
T = TypeVar("T")


def scenario(name: str, seed: int, arrival_window_s: float) -> Scenario:
    """Two sellers of ``ORDERS_PER_SELLER`` orders each, arriving over ``arrival_window_s`` simulated
    seconds (60 to a wall second)."""
    orders: dict[str, Any] = {
        "count": ORDERS_PER_SELLER,
        "history_s": 1800,
        "arrival_window_s": arrival_window_s,
        "items_per_order": [1, 2],
        "pending_share": 0.0,
        "afn_share": 0.0,
        "cancel_share": 0.0,
        "unknown_sku_share": 0.0,
    }

    def seller(seller_id: str, region: str, marketplace: str, token: str) -> dict[str, Any]:
        application = {
            "client_id": f"amzn1.application-oa2-client.{name}",
            "client_secret": "c",
            "refresh_token": token,
        }
        return {
            "seller_id": seller_id,
            "region": region,
            "marketplaces": [marketplace],
            "applications": [application],
            "catalogue_size": 8,
            "orders": orders,
        }

    return Scenario.model_validate(
        {
            "name": name,
            "seed": seed,
            "time_scale": TIME_SCALE,
            "sellers": [
                seller("A1CHAOSUS", "na", "ATVPDKIKX0DER", f"Atzr|{name}-us"),  # Orders v0
                seller("A2CHAOSDE", "eu", "A1PA6795UKMFR9", f"Atzr|{name}-de"),  # Orders 2026-01-01
            ],
        }
    )


@dataclass(frozen=True)
class Verdict:
    orders: int
    lost: list[str]
    imported_twice: list[str]
    #: Packages with more than one ShipmentConfirmed: at-least-once (a stage killed between publishing
    #: and noting it, then "already confirmed" by Amazon's answer); reported, not a double confirmation.
    confirmed_twice: list[tuple[str, str]]
    shipped_twice_on_amazon: list[str]
    failed: int
    dead_letters: dict[str, int]
    parked: int
    throttled: int

    def summary(self) -> str:
        return (
            f"{self.orders} orders, {len(self.lost)} lost, {len(self.imported_twice)} imported twice,"
            f" {len(self.shipped_twice_on_amazon)} confirmed twice on Amazon"
            f" ({len(self.confirmed_twice)} confirmation events repeated),"
            f" {self.failed} failed, {sum(self.dead_letters.values())} dead letters, {self.parked} parked,"
            f" {self.throttled} throttled"
        )

    def assert_nothing_lost_nothing_twice(self) -> None:
        assert self.lost == []
        assert self.imported_twice == []
        assert self.shipped_twice_on_amazon == []
        assert self.failed == 0
        assert self.dead_letters == {}
        assert self.throttled == 0


def judge(pipeline: LocalPipeline, accounting: Accounting) -> Verdict:
    """What happened to every order the simulator holds, read from its truth and from the topics."""
    bootstrap = pipeline.env["ORDERSYNC_KAFKA__BOOTSTRAP"]
    truth, throttled, _ = pipeline.truth()
    # A sales order published again (a stage killed between publishing it and noting it) is the same
    # sales order with the same code; a duplicate is a second code for one Amazon order.
    codes = {
        (p.sales_order.amazon_order_id, p.sales_order.code)
        for p in read_all(bootstrap, ORDERS_IMPORTED)
        if isinstance(p, OrderImported)
    }
    imported = Counter(order_id for order_id, _ in codes)
    confirmed = Counter(
        (p.amazon_order_id, p.package_reference_id)
        for p in read_all(bootstrap, SHIPMENTS_CONFIRMED)
        if isinstance(p, ShipmentConfirmed)
    )
    dead = {
        spec.name: sum(1 for _ in read_topic(bootstrap, spec.name, skip_missing=True))
        for spec in CATALOGUE
        if spec.name.endswith(".dlq")
    }
    confirmed_on_amazon = accounting.categories.get("confirmed on Amazon", 0)
    return Verdict(
        orders=len(truth),
        lost=sorted(accounting.unaccounted)
        + (
            [f"not every order confirmed: {dict(accounting.categories)}"]
            if confirmed_on_amazon != len(truth)
            else []
        ),
        imported_twice=sorted(o for o, n in imported.items() if n > 1),
        confirmed_twice=sorted(p for p, n in confirmed.items() if n > 1),
        shipped_twice_on_amazon=sorted(o["amazon_order_id"] for o in truth if len(o["shipments"]) > 1),
        failed=len(read_all(bootstrap, SHIPMENTS_FAILED)),
        dead_letters={name: n for name, n in dead.items() if n},
        parked=sum(1 for spec in REDRIVE_TIERS for _ in read_topic(bootstrap, spec.name, skip_missing=True)),
        throttled=throttled,
    )


def under_fault(pipeline: LocalPipeline, fault: Callable[[OutcomeWatcher], T]) -> tuple[T, Verdict, float]:
    """Run ``fault`` (it may watch the outcomes) while the pipeline works, then wait until every order is
    accounted for: what ``fault`` returned, the verdict, and the wall seconds from the fault's end."""
    watcher = OutcomeWatcher(pipeline.settings())
    watcher.start()
    try:
        figures = fault(watcher)
        started = time.monotonic()
        accounting = wait_until_accounted(pipeline, watcher, timeout_s=600)
        recovered_s = time.monotonic() - started
    finally:
        watcher.stop()
    return figures, judge(pipeline, accounting), recovered_s


def in_flight(pipeline: LocalPipeline, watcher: OutcomeWatcher) -> int:
    """Orders on Amazon not confirmed yet."""
    return len(pipeline.truth()[0]) - watcher.snapshot().count(SHIPMENTS_CONFIRMED.name)
