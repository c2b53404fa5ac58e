"""A simulated day of a seller with 10,000 orders a day on Orders 2026-01-01 alone, where searchOrders
allows about 20 calls an hour: with ORDER_CHANGE notifications (5 % lost, 1 % duplicated, 1 % up to 15
minutes late) most orders come by notification and the sweep stays under half its budget; with no
notifications at all the budgeted sweep alone still finds every order. Both: every order imported
once, no 429."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from ordersync.amazon.models import default_plans
from ordersync.dev.demo import LocalPipeline, local_pipeline
from ordersync.kafka.reader import TopicReader
from ordersync.schemas.codec import decode
from ordersync.schemas.events import OrderDownloaded
from ordersync.schemas.topics import ORDERS_DOWNLOADED
from ordersync.simulator.scenario import Scenario
from tests.e2e.outcomes import imported_events, pipeline_statuses

pytestmark = pytest.mark.e2e

DAY_S = 86400
#: With notifications a day takes 432 real seconds: about 30 notifications a real second, what the
#: notification stage handles on a 2-core machine beside the other stages, the broker, Redis and the
#: simulator (at real speed a 10,000-a-day seller sends one every 7 seconds). Without, the sweep alone
#: runs a day in 144 seconds.
TIME_SCALE = {True: 200, False: 600}
ORDERS_A_DAY = 10_000
#: The longest an order changes after the day: Pending, the FBA ship delay, a cancellation.
LAST_CHANGE_S = 6 * 3600
SELLER = "A1BUDGET2026NA"


def _scenario(notifications: bool) -> Scenario:
    orders: dict[str, Any] = {
        "count": ORDERS_A_DAY,
        "history_s": 0,
        "arrival_window_s": DAY_S,
        "items_per_order": [1, 3],
        "pending_share": 0.05,
        "pending_duration_s": [600, 2 * 3600],
        "afn_share": 0.2,
        "afn_ship_delay_s": [1800, LAST_CHANGE_S],
        "cancel_share": 0.02,
        "cancel_after_s": [1800, 4 * 3600],
        "unknown_sku_share": 0.0,
    }
    return Scenario.model_validate(
        {
            "name": "budget-2026",
            "seed": 5341,
            "time_scale": TIME_SCALE[notifications],
            "sellers": [
                {
                    "seller_id": SELLER,
                    "region": "na",
                    "marketplaces": ["ATVPDKIKX0DER"],
                    "applications": [
                        {
                            "client_id": "amzn1.application-oa2-client.budget",
                            "client_secret": "s",
                            "refresh_token": f"Atzr|{SELLER}",
                        }
                    ],
                    "catalogue_size": 50,
                    "orders": orders,
                }
            ],
            "notifications": {
                "enabled": notifications,
                "loss": 0.05,
                "duplicate": 0.01,
                "late": {"p_late": 0.01, "max_late_s": 900},
            },
        }
    )


def _first_found_by(bootstrap: str) -> dict[str, str]:
    """Per order, what sent its first downloaded version: notification, poll, catch-up, reconciliation."""
    found: dict[str, str] = {}
    with TopicReader(bootstrap, ORDERS_DOWNLOADED.name) as reader:
        for record in reader.records():
            event = decode(record.value, ORDERS_DOWNLOADED).payload_as(OrderDownloaded)
            found.setdefault(event.order.amazon_order_id, event.found_by)
    return found


def _calls(pipeline: LocalPipeline, operation: str) -> int:
    assert pipeline.simulator is not None
    counters = httpx.get(f"{pipeline.simulator.base_url}/_sim/counters", timeout=30).json()
    return sum(row.get("calls", 0) for row in counters["operations"] if row["operation"] == operation)


def _run_day(tmp_path: Path, *, notifications: bool) -> dict[str, Any]:
    """The day, then until every order is at its final status downloaded (or the deadline): what the
    simulator and the pipeline say."""
    stages = ("order-download", "item-fetch", "import") + (("order-notifications",) if notifications else ())
    with local_pipeline(
        scenario=_scenario(notifications),
        run_dir=tmp_path / "run",
        stages=stages,
        backoffice=False,
        orders_api="2026-01-01",
        # Short long polls: a stage stopping at the end does not wait out 20 s.
        extra_env={"ORDERSYNC_NOTIFICATIONS__WAIT_TIME_S": "1"},
    ) as pipeline:
        assert pipeline.simulator is not None
        started, amazon_started = time.monotonic(), pipeline.simulator.state.now()
        settled_after = started + (DAY_S + LAST_CHANGE_S) / TIME_SCALE[notifications] + 30
        deadline = settled_after + 600
        while True:
            time.sleep(5)
            assert not pipeline.dead_processes(), pipeline.dead_processes()
            if time.monotonic() < settled_after:
                continue
            truth, throttled, _ = pipeline.truth()
            statuses = pipeline_statuses(pipeline, truth)
            behind = [o["amazon_order_id"] for o in truth if statuses[o["amazon_order_id"]] != o["status"]]
            if not behind or time.monotonic() > deadline:
                break
        amazon_seconds = pipeline.simulator.state.now() - amazon_started
        bootstrap = pipeline.env["ORDERSYNC_KAFKA__BOOTSTRAP"]
        imported, _ = imported_events(bootstrap)
        return {
            "truth": truth,
            "throttled": throttled,
            "behind": behind,
            "imported": imported,
            "found_by": _first_found_by(bootstrap),
            "search_calls": _calls(pipeline, "searchOrders"),
            "amazon_seconds": amazon_seconds,
        }


def _assert_each_order_imported_once(day: dict[str, Any]) -> None:
    truth, imported = day["truth"], day["imported"]
    assert len(truth) == ORDERS_A_DAY
    assert day["throttled"] == 0
    assert day["behind"] == [], (
        f"{len(day['behind'])} orders not at their final status, e.g. {day['behind'][:5]}"
    )
    assert max(imported.values()) == 1, "an order was imported twice"
    for order in truth:
        if order["status"] in ("Unshipped", "PartiallyShipped", "Shipped"):
            assert imported[order["amazon_order_id"]] == 1, f"{order['amazon_order_id']} was never imported"


# Each day keeps its own deadline: the day and its changes, 30 s to settle, 10 minutes at most more.
@pytest.mark.timeout(1800)
def test_a_day_of_ten_thousand_orders_comes_by_notification_within_half_the_sweep_budget(
    tmp_path: Path,
) -> None:
    day = _run_day(tmp_path, notifications=True)
    _assert_each_order_imported_once(day)
    found_by = Counter(day["found_by"].values())
    assert found_by["notification"] > 0.8 * ORDERS_A_DAY, dict(found_by)
    assert found_by["poll"] > 0, "the 5 % of notifications lost were found by the sweep"
    rate, burst = default_plans()["searchOrders"]
    budget = burst + rate * day["amazon_seconds"]
    print(
        f"\nwith notifications: found first by {dict(found_by)};"
        f" {day['search_calls']} searchOrders of {budget:.0f} allowed"
    )
    assert day["search_calls"] < budget / 2, f"{day['search_calls']} searchOrders of {budget:.0f} allowed"


@pytest.mark.timeout(1200)
def test_a_day_of_ten_thousand_orders_without_notifications_loses_none(tmp_path: Path) -> None:
    day = _run_day(tmp_path, notifications=False)
    print(f"\nwithout notifications: found first by {dict(Counter(day['found_by'].values()))}")
    _assert_each_order_imported_once(day)
    assert set(day["found_by"].values()) <= {"poll", "catch-up", "reconciliation", "retry"}, Counter(
        day["found_by"].values()
    )
