"""The pipeline with the shipment write-back in feed mode: every order the seller confirms is confirmed
on Amazon through POST_ORDER_FULFILLMENT_DATA feeds (one per seller per flush), once, with zero 429s;
the Ship+ and Easy Ship orders of the scenario ship through Amazon and are never in a feed."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

from ordersync.dev.demo import OutcomeWatcher, local_pipeline, wait_until_accounted
from ordersync.schemas.topics import SHIPMENTS_CONFIRMED

pytestmark = pytest.mark.e2e


def _scenario() -> Any:
    # The same 2 x 30 orders as test_pipeline.py (Orders v0 and 2026-01-01 channels).
    path = Path(__file__).with_name("test_pipeline.py")
    spec = importlib.util.spec_from_file_location("e2e_pipeline_scenario", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module._scenario()


def test_feed_mode_confirms_every_order_in_batches(tmp_path: Path) -> None:
    scenario = _scenario()
    # A feed the simulator stalls (2 %) is cancelled after 10 simulated minutes and sent again.
    env = {"ORDERSYNC_WRITEBACK__MODE": "feed", "ORDERSYNC_WRITEBACK__FEED_TIMEOUT_S": "600"}
    with local_pipeline(scenario=scenario, run_dir=tmp_path / "run", extra_env=env) as pipeline:
        watcher = OutcomeWatcher(pipeline.settings())
        watcher.start()
        try:
            accounting = wait_until_accounted(pipeline, watcher, timeout_s=240)
            outcomes = watcher.snapshot()
        finally:
            watcher.stop()
        truth, throttled, _ = pipeline.truth()
        assert pipeline.simulator is not None
        feeds = pipeline.simulator.state.truth_feeds(feed_type="POST_ORDER_FULFILLMENT_DATA")
        refusals = pipeline.simulator.state.counters_json()["refusals"]

    assert accounting.unaccounted == []
    by_seller = accounting.categories["confirmed on Amazon"]
    by_amazon = sum(1 for order in truth if order["programs"])
    assert by_amazon > 0
    assert accounting.categories == {
        "confirmed on Amazon": 60 - by_amazon,
        "shipped by an Amazon label or Easy Ship": by_amazon,
    }
    assert refusals == {}, "a Ship+ or Easy Ship order went into a feed"
    assert throttled == 0
    assert outcomes.count(SHIPMENTS_CONFIRMED.name) == 60
    # Batched: fewer feeds than orders, and every message of every feed applied once.
    assert 2 <= len(feeds) < by_seller
    done = [f for f in feeds if f["processingStatus"] == "DONE"]
    assert sum(len(f["messages"]) for f in done) == by_seller
    assert {f["processingStatus"] for f in feeds} <= {"DONE", "CANCELLED"}
    for order in truth:
        assert order["status"] == "Shipped"
        (package,) = order["shipments"]
        assert package["tracking_number"]
