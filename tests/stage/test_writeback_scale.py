"""Scale: 5,000 invoices within one simulated hour (each order imported and acknowledged before it) and
stock changes for 20,000 SKUs, through the shipment write-back (auto mode), the order acknowledgements
and the inventory stage, against the simulator with the rate limiter on the simulator's clock
(``bench/writeback.py`` runs the same scenario and prints its figures)."""

from __future__ import annotations

import importlib.util
import itertools
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytestmark = pytest.mark.stage

BENCH = Path(__file__).resolve().parents[2] / "bench" / "writeback.py"
INTERVAL_S = 900.0
TICK_S = 10.0


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_writeback", BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


#: Easy Ship packages of the small Easy Ship seller beside the big one.
EASY_SHIP_PACKAGES = 20


async def test_5000_invoices_and_20000_skus_within_an_hour(redis_url: str, redis_key_prefix: str) -> None:
    bench: Any = _bench()
    figures = await bench.simulate(
        redis_url,
        redis_key_prefix,
        invoices=5000,
        skus=20_000,
        inventory_interval_s=INTERVAL_S,
        tick_s=TICK_S,
        # A small Easy Ship seller beside: its packages, shipments and stock share its createFeed quota.
        packages=EASY_SHIP_PACKAGES,
        easy_ship_invoices=40,
        easy_ship_skus=100,
    )
    # Every shipment has one result: confirmed, or refused by Amazon for exactly the injected reasons.
    assert len(figures.confirmed) + len(figures.failed) == figures.invoices == 5000
    assert not set(figures.confirmed) & set(figures.failed)
    assert set(figures.failed) == set(figures.expected_failures)
    assert len(figures.expected_failures) > 50
    assert list(figures.failed_by.values()).count("feed") > 100  # per-message failures of feeds
    for order_id, why in figures.expected_failures.items():
        message = figures.failed[order_id]
        if figures.failed_by[order_id] != "feed":
            assert message  # confirmShipment's own refusal (400)
            continue
        expected = {"cancelled": "canceled", "unknown order": "not found", "over quantity": "exceeds"}[why]
        assert expected in message, (order_id, why, message)
        if why != "unknown order":
            assert order_id in message  # Amazon's message names the order it was reported against
    # The backlog went by feeds; a few early ones by confirmShipment while it was small.
    methods = set(figures.confirmed.values())
    assert "feed" in methods
    assert list(figures.confirmed.values()).count("feed") > 4000
    # Every imported order acknowledged with its sales-order code (Amazon shows it), but those cancelled
    # on Amazon, which it refused; on their own lane, behind the shipments.
    assert figures.imported == 5000
    assert set(figures.not_acknowledged) == figures.expected_ack_refusals
    assert all("canceled" in why for why in figures.not_acknowledged.values())
    assert len(figures.acknowledged) == 5000 - len(figures.expected_ack_refusals)
    assert all(code and code.startswith("SO") for code in figures.acknowledged.values())
    assert 0 < figures.feeds_by_type["POST_ORDER_ACKNOWLEDGEMENT_DATA"] <= 8
    # Within Amazon's quota: createFeed 30 an hour (burst 15), never a 429.
    assert figures.throttled == 0
    assert figures.max_create_feed_per_hour <= 30
    assert figures.feeds_by_type["POST_ORDER_FULFILLMENT_DATA"] < 30
    # Inventory: one feed per flush interval while stock changed, none more often, all values current.
    sent = sorted(figures.inventory_feeds)
    assert len(sent) >= 3600 / INTERVAL_S
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    assert all(INTERVAL_S <= gap <= INTERVAL_S + 4 * TICK_S for gap in gaps), gaps
    assert figures.listings_wrong == 0
    assert figures.sku_errors == 0
    # Zeros: each on Amazon (its listing at 0, by patchListingsItem) within a simulated minute of its
    # publication, though the feeds compete for the same hour; patchListingsItem carried nothing else.
    assert len(figures.zeros_published) == 200
    assert figures.zeros_within_a_minute == len(figures.zeros_published)
    assert figures.patch_calls >= len(figures.zeros_published)
    assert figures.patches_not_zero == 0
    # The Easy Ship seller: every package scheduled and documented, its shipments confirmed, its
    # createFeed calls (shipments, stock, acknowledgements, documents) within its own 30 an hour.
    assert len(figures.scheduled) == figures.packed == EASY_SHIP_PACKAGES
    assert len(figures.documents_ready) == EASY_SHIP_PACKAGES
    assert figures.documents_failed == {}
    assert len(figures.easy_ship_confirmed) == figures.easy_ship_invoices == 40
    assert figures.easy_ship_throttled == 0
    assert 0 < figures.easy_ship_max_create_feed_per_hour <= 30
    assert figures.easy_ship_feeds_by_type["POST_EASYSHIP_DOCUMENTS"] >= 1
