"""No order is ever lost, none is imported twice: 20,000 orders over a simulated week, 2 sellers with
3 marketplaces each (one on Orders v0, one on Orders 2026-01-01, whose searchOrders pages must repeat
the first page's filters, as the simulator enforces), late visibility (10 % of changes, up to 48
hours), Pending for up to 3 days, 20 % fulfilled by Amazon, cancellations after import, and the
download and item-fetch workers killed with SIGKILL and restarted several times mid-run."""

from __future__ import annotations

import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis

from ordersync.dev.demo import LocalPipeline, channels_for, local_pipeline
from ordersync.simulator.scenario import Scenario
from tests.e2e.outcomes import imported_events, pipeline_statuses

pytestmark = pytest.mark.e2e

WEEK_S = 7 * 86400
TIME_SCALE = 3000  # a simulated week in about 200 real seconds
ORDERS_PER_SELLER = 10_000


def _scenario() -> Scenario:
    orders: dict[str, Any] = {
        "count": ORDERS_PER_SELLER,
        "history_s": 0,
        "arrival_window_s": WEEK_S,
        "items_per_order": [1, 3],
        "pending_share": 0.05,
        "pending_duration_s": [600, 3 * 86400],
        "afn_share": 0.2,
        "afn_ship_delay_s": [3600, 2 * 86400],
        "cancel_share": 0.03,
        "cancel_after_s": [4 * 3600, 2 * 86400],
        "unknown_sku_share": 0.0,
    }

    def seller(seller_id: str, region: str, marketplaces: list[str]) -> dict[str, Any]:
        return {
            "seller_id": seller_id,
            "region": region,
            "marketplaces": marketplaces,
            "applications": [
                {
                    "client_id": "amzn1.application-oa2-client.week",
                    "client_secret": "s",
                    "refresh_token": f"Atzr|{seller_id}",
                }
            ],
            "catalogue_size": 50,
            "orders": orders,
        }

    return Scenario.model_validate(
        {
            "name": "week",
            "seed": 2026,
            "time_scale": TIME_SCALE,
            "pii_requires_rdt": True,
            "visibility_lag": {"p_late": 0.10, "max_late_s": 48 * 3600},
            "sellers": [
                seller("A1WEEKSELLERNA", "na", ["ATVPDKIKX0DER", "A2EUQ1WTGCTBG2", "A1AM78C64UM0Y8"]),
                seller("A2WEEKSELLEREU", "eu", ["A1PA6795UKMFR9", "A13V1IB3VIYZZH", "APJ6JRA9NG5V4"]),
            ],
        }
    )


#: The order-download tasks whose health records a single query's page count (the reconciliation's
#: is the sum over several days' queries).
SINGLE_QUERY_TASKS = ("download", "catch-up-48h", "catch-up-fba")


def _pages_per_scan(pipeline: LocalPipeline, channel: str) -> dict[str, int]:
    """How many pages each single-query download task of ``channel`` read in its last successful run,
    when that run read them in one pass (no restart after a refused page token): a run that read 3
    pages walked two follow-up pages."""
    client = redis.Redis.from_url(pipeline.env["ORDERSYNC_REDIS__URL"], decode_responses=True)
    try:
        results = {
            task: client.hget(f"os:task:{task}:{channel}", "last_result") for task in SINGLE_QUERY_TASKS
        }
    finally:
        client.close()
    pages = {
        task: re.match(r"(\d+) pages", result or "")
        for task, result in results.items()
        if "restarted" not in (result or "")
    }
    return {task: int(match.group(1)) for task, match in pages.items() if match}


# The test keeps its own deadline (the simulated week, the settling time, then 10 minutes at most).
@pytest.mark.timeout(1500)
def test_twenty_thousand_orders_over_a_week_survive_crashes(tmp_path: Path) -> None:
    scenario = _scenario()
    arrivals_s = WEEK_S / TIME_SCALE
    settle_s = 3 * 86400 / TIME_SCALE + 30  # the longest Pending period and lag, then some
    extra_env = {
        "ORDERSYNC_DOWNLOAD__POLL_INTERVAL_S": "1",
        "ORDERSYNC_DOWNLOAD__CATCH_UP_INTERVAL_S": "10",
        "ORDERSYNC_DOWNLOAD__FBA_CATCH_UP_INTERVAL_S": "30",
        "ORDERSYNC_DOWNLOAD__RECONCILIATION_INTERVAL_S": "30",
    }
    (search_channel,) = [c for c in channels_for(scenario)["channels"] if c["orders_api"] == "2026-01-01"]
    most_pages: Counter[str] = Counter()  # the most pages one scan of the 2026-01-01 channel read, per task

    def watch_pages(pipeline: LocalPipeline) -> None:
        for task, pages in _pages_per_scan(pipeline, search_channel["name"]).items():
            most_pages[task] = max(most_pages[task], pages)

    with local_pipeline(
        scenario=scenario,
        run_dir=tmp_path / "run",
        stages=("order-download", "item-fetch", "import"),
        extra_env=extra_env,
        backoffice=False,
    ) as pipeline:
        started = time.monotonic()
        for fraction in (0.2, 0.45, 0.7, 0.9):
            while time.monotonic() - started < arrivals_s * fraction:
                time.sleep(1)
                assert not pipeline.dead_processes(), pipeline.dead_processes()
                watch_pages(pipeline)
            pipeline.restart("order-download")
            pipeline.restart("item-fetch")
        # Wait for the week to end, for every late change to show, and for the pipeline to agree.
        deadline = started + arrivals_s + settle_s + 600
        while True:
            time.sleep(5)
            watch_pages(pipeline)
            truth, throttled, _ = pipeline.truth()
            statuses = pipeline_statuses(pipeline, truth)
            behind = [o["amazon_order_id"] for o in truth if statuses[o["amazon_order_id"]] != o["status"]]
            settled = time.monotonic() > started + arrivals_s + settle_s
            if (settled and not behind) or time.monotonic() > deadline:
                break
        imported, cancelled = imported_events(pipeline.env["ORDERSYNC_KAFKA__BOOTSTRAP"])

    assert len(truth) == 2 * ORDERS_PER_SELLER
    assert behind == [], f"{len(behind)} orders not at their final status, e.g. {behind[:5]}"
    assert throttled == 0
    # The 2026-01-01 channel read windows of several pages in one pass, each follow-up page accepted
    # by the simulator, which refuses a paginationToken without the first page's filters.
    assert max(most_pages.values(), default=0) >= 3, dict(most_pages)
    assert max(imported.values()) == 1, "an order was imported twice"
    by_status = Counter(o["status"] for o in truth)
    for order in truth:
        order_id = order["amazon_order_id"]
        if order["status"] in ("Unshipped", "PartiallyShipped", "Shipped"):
            assert imported[order_id] == 1, f"{order_id} ({order['status']}) was never imported"
        if order["status"] == "Canceled" and order_id in imported:
            assert order_id in cancelled, f"{order_id} was cancelled after import but not reported"
    assert by_status["Canceled"] > 0
    assert cancelled, "some orders were cancelled after their import"
