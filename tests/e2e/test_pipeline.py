"""All five stages as separate processes, on the embedded broker and a real Redis, against the
simulator: every order Amazon holds is confirmed on Amazon, once, with the back-office's tracking."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ordersync.dev.demo import OutcomeWatcher, local_pipeline, wait_until_accounted
from ordersync.schemas.topics import ORDERS_IMPORTED, SHIPMENTS_CONFIRMED
from ordersync.simulator.scenario import Scenario

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
    with local_pipeline(scenario=scenario, run_dir=tmp_path / "run") as pipeline:
        watcher = OutcomeWatcher(pipeline.settings())
        watcher.start()
        try:
            accounting = wait_until_accounted(pipeline, watcher, timeout_s=240)
            outcomes = watcher.snapshot()
        finally:
            watcher.stop()
        truth, throttled, calls = pipeline.truth()

    assert len(truth) == 60
    assert accounting.unaccounted == []
    assert accounting.categories == {"confirmed on Amazon": 60}
    assert throttled == 0, "the rate limiter let a request through that Amazon throttled"
    assert outcomes.count(ORDERS_IMPORTED.name) == 60
    assert outcomes.count(SHIPMENTS_CONFIRMED.name) == 60
    for order in truth:
        assert order["status"] == "Shipped"
        # One package per order, carrying every item in full: nothing confirmed twice.
        (package,) = order["shipments"]
        shipped = {i["order_item_id"]: i["quantity"] for i in package["items"]}
        assert shipped == {i["order_item_id"]: i["quantity_ordered"] for i in order["items"]}
        assert package["tracking_number"]
    assert calls > 0
