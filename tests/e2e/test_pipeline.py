"""All five stages as separate processes, on the embedded broker and a real Redis, against the
simulator: every order Amazon holds is confirmed on Amazon, once, with the back-office's tracking; orders
in Ship+ or Easy Ship, and those whose label the seller bought through Amazon, ship without ordersync
confirming them (Amazon's 400 for a Ship+ confirmation is never met)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ordersync.dev.demo import OutcomeWatcher, local_pipeline, wait_until_accounted
from ordersync.schemas.events import ShipmentConfirmed
from ordersync.schemas.topics import ORDERS_IMPORTED, SHIPMENTS_CONFIRMED
from ordersync.simulator.scenario import Scenario
from tests.topics import read_all

pytestmark = pytest.mark.e2e


def _scenario() -> Scenario:
    orders: dict[str, Any] = {
        "count": 30,
        "history_s": 3600,
        "arrival_window_s": 300,
        "items_per_order": [1, 3],
        "quantity": [1, 2],
        "pending_share": 0.0,
        "afn_share": 0.0,
        "cancel_share": 0.0,
        "unknown_sku_share": 0.0,
        "ship_plus_share": 0.15,
        "easy_ship_share": 0.15,
    }

    def seller(seller_id: str, region: str, marketplace: str, token: str) -> dict[str, Any]:
        return {
            "seller_id": seller_id,
            "region": region,
            "marketplaces": [marketplace],
            "applications": [
                {
                    "client_id": "amzn1.application-oa2-client.e2e",
                    "client_secret": "e2e",
                    "refresh_token": token,
                }
            ],
            "catalogue_size": 8,
            "orders": orders,
        }

    return Scenario.model_validate(
        {
            "name": "e2e",
            "seed": 11,
            "time_scale": 60,
            "sellers": [
                # The first channel uses Orders v0 (getOrders + getOrderItems), the second 2026-01-01.
                seller("A1E2ESELLERUS", "na", "ATVPDKIKX0DER", "Atzr|e2e-us"),
                seller("A2E2ESELLERDE", "eu", "A1PA6795UKMFR9", "Atzr|e2e-de"),
            ],
        }
    )


def test_every_simulator_order_is_confirmed_on_amazon(tmp_path: Path) -> None:
    scenario = _scenario()
    # The back-office ships a share of ordinary orders with labels bought through Amazon too.
    with local_pipeline(scenario=scenario, run_dir=tmp_path / "run", label_share=0.15) as pipeline:
        watcher = OutcomeWatcher(pipeline.settings())
        watcher.start()
        try:
            accounting = wait_until_accounted(pipeline, watcher, timeout_s=240)
            outcomes = watcher.snapshot()
        finally:
            watcher.stop()
        truth, throttled, calls = pipeline.truth()
        assert pipeline.simulator is not None
        refusals = pipeline.simulator.state.counters_json()["refusals"]
        confirmed = read_all(pipeline.env["ORDERSYNC_KAFKA__BOOTSTRAP"], SHIPMENTS_CONFIRMED)

    assert len(truth) == 60
    assert accounting.unaccounted == []
    by_seller = accounting.categories["confirmed on Amazon"]
    by_amazon = accounting.categories["shipped by an Amazon label or Easy Ship"]
    assert (by_seller + by_amazon, by_amazon >= 9) == (60, True)
    assert throttled == 0, "the rate limiter let a request through that Amazon throttled"
    assert refusals == {}, "a confirmation Amazon refuses by programme was sent"
    assert outcomes.count(ORDERS_IMPORTED.name) == 60
    assert outcomes.count(SHIPMENTS_CONFIRMED.name) == 60
    method = {c.amazon_order_id: c.method for c in confirmed if isinstance(c, ShipmentConfirmed)}
    for order in truth:
        assert order["status"] == "Shipped"
        # One package per order, carrying every item in full: nothing confirmed twice.
        (package,) = order["shipments"]
        shipped = {i["order_item_id"]: i["quantity"] for i in package["items"]}
        assert shipped == {i["order_item_id"]: i["quantity_ordered"] for i in order["items"]}
        assert package["tracking_number"]
        # Each programme shipped its own way, and ordersync's outcome says how.
        how = (package["by"], method[order["amazon_order_id"]])
        if order["programs"] == ["FBM_SHIP_PLUS"]:
            assert how == ("label", "amazon-label")
        elif order["programs"] == ["AMAZON_EASY_SHIP"]:
            assert how == ("easy-ship", "easy-ship")
        elif package["by"] == "label":  # the seller bought this one's label through Amazon
            assert how == ("label", "amazon-label")
        else:
            assert how in (("seller", "confirmShipment"), ("seller", "feed"))
    assert calls > 0
