"""Orders within Amazon's 2026 budget: one seller on Orders 2026-01-01 only, at 1,000, 10,000 and 50,000
orders a day, with Amazon's ORDER_CHANGE notifications (5 % lost, 1 % duplicated, 1 % up to 15 minutes
late) and without them.

Prints figures; asserts nothing. Runs the real stages (separate processes: order-download, item-fetch,
import, and order-notifications when notifications are on) on the embedded broker, Redis and moto's SQS
against the simulator, time-scaled, for a stretch of simulated time:

    .venv/bin/python bench/orders_2026.py [--sizes 1000,10000,50000] [--hours 2] [--seconds 300]

The default 24x keeps the notification stage within what it handles on a 2-core machine beside the
other stages, the broker, Redis and the simulator (about 30 notifications a real second) at 50,000 a
day; faster, the figures measure the machine, not the design.

Per run: p50 / p95 from "visible on Amazon" to "downloaded" and to "imported" in simulated seconds, the
orders not imported by the end, calls per operation against Amazon's budget for the run (rate x
simulated time, plus the burst), 429s, and which path found each order first (notification, poll,
catch-up, reconciliation). Orders placed in the last few simulated minutes may still be on their way
when the run ends: they count as not imported.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import redis

from ordersync.amazon.models import default_plans
from ordersync.dev.demo import LocalPipeline
from ordersync.kafka.reader import TopicReader
from ordersync.schemas.codec import decode
from ordersync.schemas.events import OrderDownloaded
from ordersync.schemas.topics import ORDERS_DOWNLOADED
from ordersync.simulator.scenario import Scenario

#: Amazon's operations, as the simulator counts them (its 2026-01-01 getOrder apart from v0's).
OPERATIONS = ("searchOrders", "getOrder@2026-01-01", "createReport", "getReport", "getReportDocument")
SELLER = "A1BENCH2026"


def scenario(orders_a_day: int, hours: float, time_scale: float, notifications: bool) -> Scenario:
    profile: dict[str, Any] = {
        "count": max(1, round(orders_a_day * hours / 24)),
        "history_s": 0,
        "arrival_window_s": hours * 3600,
        "pending_share": 0.0,
        "afn_share": 0.2,
        "cancel_share": 0.0,
    }
    seller = {
        "seller_id": SELLER,
        "region": "na",
        "marketplaces": ["ATVPDKIKX0DER"],
        "applications": [
            {"client_id": "amzn1.bench", "client_secret": "s", "refresh_token": f"Atzr|{SELLER}"}
        ],
        "catalogue_size": 40,
        "orders": profile,
    }
    knobs = {
        "enabled": notifications,
        "loss": 0.05,
        "duplicate": 0.01,
        "late": {"p_late": 0.01, "max_late_s": 900},
    }
    return Scenario.model_validate(
        {
            "name": "bench-2026",
            "seed": 11,
            "time_scale": time_scale,
            "sellers": [seller],
            "notifications": knobs,
        }
    )


def counters(pipeline: LocalPipeline) -> tuple[dict[str, int], int]:
    assert pipeline.simulator is not None
    body = httpx.get(f"{pipeline.simulator.base_url}/_sim/counters", timeout=30).json()
    calls: Counter[str] = Counter()
    throttled = 0
    for row in body["operations"]:
        calls[row["operation"]] += row.get("calls", 0) - row.get("throttled", 0)
        throttled += row.get("throttled", 0)
    return dict(calls), throttled


def pipeline_plan(pipeline: LocalPipeline) -> str:
    """The download's last plan for the seller's channel (its task health)."""
    client = redis.Redis.from_url(pipeline.env["ORDERSYNC_REDIS__URL"], decode_responses=True)
    try:
        return str(client.hget(f"os:task:download plan:{SELLER.lower()}", "last_result") or "no plan")
    finally:
        client.close()


def first_downloads(pipeline: LocalPipeline) -> dict[str, tuple[float, str]]:
    """Per order, when it was first downloaded (the record's time, real) and what found it."""
    found: dict[str, tuple[float, str]] = {}
    with TopicReader(pipeline.env["ORDERSYNC_KAFKA__BOOTSTRAP"], ORDERS_DOWNLOADED.name) as reader:
        for record in reader.records():
            if record.value is None:
                continue
            event = decode(record.value, ORDERS_DOWNLOADED).payload_as(OrderDownloaded)
            order_id = event.order.amazon_order_id
            at = record.timestamp_ms / 1000
            if order_id not in found or at < found[order_id][0]:
                found[order_id] = (at, event.found_by)
    return found


def _quantiles(lags: list[float]) -> str:
    if len(lags) < 2:
        return "n/a"
    cuts = statistics.quantiles(lags, n=100)
    return f"p50 {cuts[49]:.0f} s, p90 {cuts[89]:.0f} s, p95 {cuts[94]:.0f} s, p99 {cuts[98]:.0f} s"


def run(orders_a_day: int, notifications: bool, args: argparse.Namespace) -> None:
    time_scale = args.hours * 3600 / args.seconds
    bench = scenario(orders_a_day, args.hours, time_scale, notifications)
    stages = ("order-download", "item-fetch", "import") + (("order-notifications",) if notifications else ())
    with tempfile.TemporaryDirectory(prefix="ordersync-bench-") as run_dir:
        pipeline = LocalPipeline(
            scenario=bench,
            run_dir=Path(run_dir),
            stages=stages,
            backoffice=False,
            orders_api="2026-01-01",
            extra_env={"ORDERSYNC_NOTIFICATIONS__WAIT_TIME_S": "1"},
        )
        try:
            pipeline.start()
            simulator = pipeline.simulator
            assert simulator is not None
            real0, sim0, started = time.time(), simulator.state.now(), time.monotonic()
            time.sleep(args.seconds + args.grace)
            elapsed_sim = (time.monotonic() - started) * time_scale
            calls, throttled = counters(pipeline)
            plan = pipeline_plan(pipeline)
            truth, _, _ = pipeline.truth()
            downloaded = first_downloads(pipeline)
            imported = pipeline.imported_at(truth)
        finally:
            pipeline.stop()

    def sim_seconds(real: float) -> float:
        return sim0 + (real - real0) * time_scale

    to_download, to_import = [], []
    for order in truth:
        visible = datetime.fromisoformat(order["visible_at"].replace("Z", "+00:00")).timestamp()
        if order["amazon_order_id"] in downloaded:
            to_download.append(max(0.0, sim_seconds(downloaded[order["amazon_order_id"]][0]) - visible))
        if order["amazon_order_id"] in imported:
            to_import.append(max(0.0, sim_seconds(imported[order["amazon_order_id"]]) - visible))
    found_by = Counter(by for _, by in downloaded.values())
    mode = "notifications on (5 % lost)" if notifications else "notifications off"
    print(
        f"\n{orders_a_day:,} orders a day, {mode}: {len(truth)} orders over {args.hours:g} simulated h"
        f" ({time_scale:.0f}x), {throttled} 429s"
    )
    print(f"  visible -> downloaded: {_quantiles(to_download)}; visible -> imported: {_quantiles(to_import)}")
    print(f"  not imported by the end: {len(truth) - len(to_import)}; found first by: {dict(found_by)}")
    print(f"  the download's last plan: {plan}")
    plans = default_plans()
    for operation in OPERATIONS:
        rate, burst = plans[operation.split("@")[0]]
        allowed = burst + rate * elapsed_sim
        used = calls.get(operation, 0)
        share = used / allowed
        print(f"  {operation:<18}{used:>7} calls of {allowed:>8.0f} allowed ({share:.2f} of the budget)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,50000", help="orders a day, comma-separated")
    parser.add_argument("--hours", type=float, default=2.0, help="simulated hours of arrivals")
    parser.add_argument("--seconds", type=float, default=300.0, help="real seconds they take")
    parser.add_argument("--grace", type=float, default=30.0, help="real seconds after the last arrival")
    parser.add_argument("--modes", default="on,off", help="notifications: on, off or both")
    args = parser.parse_args()
    for size in (int(s) for s in args.sizes.split(",")):
        for mode in args.modes.split(","):
            run(size, mode == "on", args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
