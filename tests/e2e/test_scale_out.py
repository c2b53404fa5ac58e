"""Two workers of every stage side by side, each pair one consumer group on the embedded broker: Kafka
shares the partitions between them, both do part of the work, and every order is imported once and
confirmed on Amazon once, none lost (the simulator's truth and the topics agree)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from ordersync.dev.demo import OutcomeWatcher, local_pipeline, wait_until_accounted
from ordersync.schemas.events import ShipmentConfirmed
from ordersync.schemas.topics import SHIPMENTS_CONFIRMED
from ordersync.simulator.scenario import Scenario
from tests.e2e.outcomes import imported_events
from tests.topics import read_all

pytestmark = pytest.mark.e2e

ORDERS_PER_SELLER = 120
#: Stages that consume the order flow through the stage runtime: each of the two workers must have handled
#: some of it (``ordersync_records_processed_total``).
CONSUMING = ("item-fetch", "import", "invoice-issued", "shipment-write-back")
#: ... and every stage with a consumer: each worker holds some of its group's partitions.
GROUPED = (*CONSUMING, "status-projection", "inventory")


def _scenario() -> Scenario:
    orders: dict[str, Any] = {
        "count": ORDERS_PER_SELLER,
        "history_s": 600,
        # Most orders arrive over a simulated hour (a real minute), after both workers of a stage have
        # joined its group, so the partitions are shared while orders flow.
        "arrival_window_s": 3600,
        "items_per_order": [1, 3],
        "pending_share": 0.0,
        "afn_share": 0.0,
        "cancel_share": 0.0,
        "unknown_sku_share": 0.0,
    }

    def seller(seller_id: str, region: str, marketplace: str) -> dict[str, Any]:
        return {
            "seller_id": seller_id,
            "region": region,
            "marketplaces": [marketplace],
            "applications": [
                {
                    "client_id": "amzn1.application-oa2-client.scale",
                    "client_secret": "s",
                    "refresh_token": f"Atzr|{seller_id}",
                }
            ],
            "catalogue_size": 12,
            "orders": orders,
        }

    return Scenario.model_validate(
        {
            "name": "scale-out",
            "seed": 23,
            "time_scale": 60,
            # Channel 1 on Orders v0, channel 2 on 2026-01-01 (channels_for alternates them).
            "sellers": [
                seller("A1SCALEOUTUS", "na", "ATVPDKIKX0DER"),
                seller("A2SCALEOUTDE", "eu", "A1PA6795UKMFR9"),
            ],
        }
    )


def _metric(port: int, name: str, stage: str) -> float:
    """A stage process's samples of metric ``name`` for ``stage``, summed over the other labels."""
    metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    pattern = re.compile(rf'^{name}\{{[^}}]*stage="{re.escape(stage)}"[^}}]*\}} (\S+)$', re.M)
    return sum(float(value) for value in pattern.findall(metrics))


@pytest.mark.timeout(420)
def test_two_workers_per_stage_share_the_work_and_lose_or_repeat_nothing(tmp_path: Path) -> None:
    scenario = _scenario()
    with local_pipeline(scenario=scenario, run_dir=tmp_path / "run", workers=2, web_ports=True) as pipeline:
        watcher = OutcomeWatcher(pipeline.settings())
        watcher.start()
        try:
            accounting = wait_until_accounted(pipeline, watcher, timeout_s=240)
        finally:
            watcher.stop()
        processed = {
            name: _metric(pipeline.web_ports[name], "ordersync_records_processed_total", stage)
            for stage in CONSUMING
            for name in pipeline.stage_processes(stage)
        }
        assigned = {
            name: _metric(pipeline.web_ports[name], "ordersync_consumer_assigned_partitions", stage)
            for stage in GROUPED
            for name in pipeline.stage_processes(stage)
        }
        truth, throttled, _ = pipeline.truth()
        bootstrap = pipeline.env["ORDERSYNC_KAFKA__BOOTSTRAP"]
        imported, _ = imported_events(bootstrap)
        confirmed = Counter(
            c.amazon_order_id
            for c in read_all(bootstrap, SHIPMENTS_CONFIRMED)
            if isinstance(c, ShipmentConfirmed)
        )
        dead = pipeline.dead_processes()

    assert dead == []
    assert sorted(pipeline.stage_processes("import")) == ["import", "import-2"]
    # Both workers of each consuming stage handled records: the group shared the partitions.
    idle = [name for name, count in processed.items() if count == 0]
    assert idle == [], f"workers that handled nothing: {idle} ({processed})"
    without = [name for name, count in assigned.items() if count == 0]
    assert without == [], f"workers without a partition: {without} ({assigned})"
    assert len(truth) == 2 * ORDERS_PER_SELLER
    assert accounting.unaccounted == []
    assert accounting.categories == {"confirmed on Amazon": 2 * ORDERS_PER_SELLER}
    assert throttled == 0
    order_ids = {order["amazon_order_id"] for order in truth}
    # From the topics: every order imported once and confirmed once, nothing else.
    assert set(imported) == order_ids
    assert max(imported.values()) == 1, [o for o, n in imported.items() if n > 1]
    assert set(confirmed) == order_ids
    assert max(confirmed.values()) == 1, [o for o, n in confirmed.items() if n > 1]
    # From Amazon: one package per order, every item in full (no confirmation sent twice).
    for order in truth:
        assert order["status"] == "Shipped"
        (package,) = order["shipments"]
        shipped = {i["order_item_id"]: i["quantity"] for i in package["items"]}
        assert shipped == {i["order_item_id"]: i["quantity_ordered"] for i in order["items"]}
