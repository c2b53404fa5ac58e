"""Amazon answers 503 to every SP-API request for an hour of simulated time while the whole pipeline
runs (every stage its own process, orders still arriving): nothing is dead-lettered or failed, no order
is lost, none imported or confirmed twice, no request throttled, and the pipeline catches up by itself
once Amazon is back. The records that outlived the in-line retries waited on the redrive tiers."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from ordersync.dev.demo import OutcomeWatcher, local_pipeline, wait_until_accounted
from ordersync.kafka.reader import read_topic
from ordersync.schemas.events import OrderImported, ShipmentConfirmed
from ordersync.schemas.topics import (
    CATALOGUE,
    ORDERS_DOWNLOADED,
    ORDERS_IMPORTED,
    REDRIVE_TIERS,
    SHIPMENTS_CONFIRMED,
    SHIPMENTS_FAILED,
)
from ordersync.simulator.scenario import Scenario
from tests.topics import read_all, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

TIME_SCALE = 60
OUTAGE_SIM_S = 3600
ORDERS_PER_SELLER = 30


def _scenario() -> Scenario:
    orders: dict[str, Any] = {
        "count": ORDERS_PER_SELLER,
        "history_s": 1800,
        # Orders keep arriving before, during and after the outage.
        "arrival_window_s": 2 * OUTAGE_SIM_S,
        "items_per_order": [1, 2],
        "pending_share": 0.0,
        "afn_share": 0.0,
        "cancel_share": 0.0,
        "unknown_sku_share": 0.0,
    }

    def seller(seller_id: str, region: str, marketplace: str, token: str) -> dict[str, Any]:
        return {
            "seller_id": seller_id,
            "region": region,
            "marketplaces": [marketplace],
            "applications": [
                {
                    "client_id": "amzn1.application-oa2-client.chaos",
                    "client_secret": "c",
                    "refresh_token": token,
                }
            ],
            "catalogue_size": 8,
            "orders": orders,
        }

    return Scenario.model_validate(
        {
            "name": "amazon-outage",
            "seed": 17,
            "time_scale": TIME_SCALE,
            "sellers": [
                seller("A1OUTAGEUS", "na", "ATVPDKIKX0DER", "Atzr|outage-us"),  # Orders v0
                seller("A2OUTAGEDE", "eu", "A1PA6795UKMFR9", "Atzr|outage-de"),  # Orders 2026-01-01
            ],
        }
    )


def test_an_hour_of_503s_loses_nothing_and_heals_by_itself(tmp_path: Path) -> None:
    scenario = _scenario()
    # Confirm mode: each package is its own confirmShipment, so the outage meets them one by one.
    env = {"ORDERSYNC_WRITEBACK__MODE": "confirm"}
    with local_pipeline(scenario=scenario, run_dir=tmp_path / "run", extra_env=env) as pipeline:
        assert pipeline.simulator is not None
        sim = pipeline.simulator.state
        bootstrap = pipeline.env["ORDERSYNC_KAFKA__BOOTSTRAP"]
        watcher = OutcomeWatcher(pipeline.settings())
        watcher.start()
        try:
            # Amazon goes down while the first orders are on their way through the stages.
            wait_for(
                lambda: watcher.snapshot().count(ORDERS_DOWNLOADED.name) >= 5,
                180,
                what="the first orders are downloaded",
            )
            before = watcher.snapshot()
            on_amazon, _, calls_before = pipeline.truth()
            in_flight = len(on_amazon) - before.count(SHIPMENTS_CONFIRMED.name)
            sim.set_faults({"http_503": 1.0})
            time.sleep(OUTAGE_SIM_S / TIME_SCALE)
            sim.set_faults({})
            _, _, calls_after = pipeline.truth()
            back = time.monotonic()
            accounting = wait_until_accounted(pipeline, watcher, timeout_s=600)
            recovered_s = time.monotonic() - back
            outcomes = watcher.snapshot()
        finally:
            watcher.stop()
        truth, throttled, _ = pipeline.truth()
        imported = Counter(
            p.sales_order.amazon_order_id
            for p in read_all(bootstrap, ORDERS_IMPORTED)
            if isinstance(p, OrderImported)
        )
        confirmed = Counter(
            (p.amazon_order_id, p.package_reference_id)
            for p in read_all(bootstrap, SHIPMENTS_CONFIRMED)
            if isinstance(p, ShipmentConfirmed)
        )
        failed = read_all(bootstrap, SHIPMENTS_FAILED)
        dead = {
            spec.name: sum(1 for _ in read_topic(bootstrap, spec.name, skip_missing=True))
            for spec in CATALOGUE
            if spec.name.endswith(".dlq")
        }
        parked = sum(1 for spec in REDRIVE_TIERS for _ in read_topic(bootstrap, spec.name, skip_missing=True))

    print(
        f"\n503 for {OUTAGE_SIM_S} simulated s: {len(truth)} orders, {in_flight} in flight when it began,"
        f" {calls_after - calls_before} requests answered 503, {parked} records parked on the redrive"
        f" tiers; every order accounted {recovered_s:.0f} s (wall) after Amazon came back;"
        f" {len(truth) - outcomes.count(SHIPMENTS_CONFIRMED.name)} lost, {throttled} throttled"
    )
    assert accounting.unaccounted == []
    assert accounting.categories == {"confirmed on Amazon": len(truth)}
    assert len(truth) == 2 * ORDERS_PER_SELLER
    assert throttled == 0
    assert failed == []
    assert dead == dict.fromkeys(dead, 0)
    assert parked > 0, "the outage did not reach the redrive tiers: the test proves nothing"
    assert calls_after > calls_before
    # Nothing twice: one sales order per order, one confirmation per package, one shipment on Amazon.
    assert set(imported) == {o["amazon_order_id"] for o in truth}
    assert max(imported.values()) == 1
    assert max(confirmed.values()) == 1
    for order in truth:
        assert len(order["shipments"]) == 1, order["amazon_order_id"]
