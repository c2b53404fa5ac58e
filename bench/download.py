"""Order download and item fetch under a backlog: how much of Amazon's quota they use, and how long an
order takes from becoming visible on Amazon to its `orders.imported` event.

Prints figures; asserts nothing. Runs the real stages (separate processes) on the embedded broker and
Redis against the simulator, time-scaled:

    .venv/bin/python bench/download.py [--orders 3000] [--time-scale 200] [--seconds 90]

Quota use is reported twice: over the whole run (Amazon's burst included: ordersync's buckets start
empty, so the burst Amazon would have allowed at the start is given up on purpose), and over the
steady state after the first tenth of the run, while a backlog remains. Both are shares of the plan
Amazon applies to the seller.

The margin's evidence: ``--plan-share 0.9`` gives both sellers plans 10 % below Amazon's documented ones
(rate and burst, as a dynamic usage plan can be) without telling ordersync, and ``--margins 0,0.05,0.1``
runs once per ``ratelimit.plan_margin``; ``--arrival-s`` spreads the orders over that many simulated
seconds instead of a backlog and ``--poll-s`` downloads them in clumps, so buckets refill between
clumps (where a lower burst shows).

``bench/download.py orders-2026 [...]`` runs ``bench/orders_2026.py``: one seller on Orders 2026-01-01
at 1,000 / 10,000 / 50,000 orders a day, with ORDER_CHANGE notifications and without.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from ordersync.amazon.models import default_plans
from ordersync.dev.demo import LocalPipeline
from ordersync.simulator.scenario import Scenario

OPERATIONS = ("getOrders", "searchOrders", "getOrderItems")


def scenario(orders: int, time_scale: float, plan_share: float = 1.0, arrival_s: float = 0) -> Scenario:
    plans = default_plans()
    usage_plans = {
        operation: {
            "rate": plans[operation][0] * plan_share,
            "burst": max(1, int(plans[operation][1] * plan_share)),
        }
        for operation in OPERATIONS
        if plan_share != 1.0
    }
    profile: dict[str, Any] = {
        "count": orders,
        "history_s": 0 if arrival_s else 2 * 86400,
        "arrival_window_s": arrival_s,
        "pending_share": 0.0,
        "afn_share": 0.0,
        "cancel_share": 0.0,
    }
    sellers = [
        {
            "seller_id": seller_id,
            "region": region,
            "marketplaces": [marketplace],
            "applications": [
                {"client_id": "amzn1.bench", "client_secret": "s", "refresh_token": f"Atzr|{seller_id}"}
            ],
            "catalogue_size": 40,
            "orders": profile,
            "usage_plans": usage_plans,
        }
        for seller_id, region, marketplace in (
            ("A1BENCHV0", "na", "ATVPDKIKX0DER"),  # channel 1: Orders v0 (getOrders + getOrderItems)
            ("A2BENCH2026", "eu", "A1PA6795UKMFR9"),  # channel 2: 2026-01-01 (searchOrders, items embedded)
        )
    ]
    return Scenario.model_validate({"name": "bench", "seed": 5, "time_scale": time_scale, "sellers": sellers})


def counters(pipeline: LocalPipeline) -> dict[str, int]:
    assert pipeline.simulator is not None
    body = httpx.get(f"{pipeline.simulator.base_url}/_sim/counters", timeout=30).json()
    calls: dict[str, int] = {}
    for row in body["operations"]:
        calls[row["operation"]] = (
            calls.get(row["operation"], 0) + row.get("calls", 0) - row.get("throttled", 0)
        )
    return calls


def run(args: argparse.Namespace, margin: float) -> None:
    """One run of the stages with ``margin`` as every operation's plan margin; prints its figures."""
    bench = scenario(args.orders, args.time_scale, args.plan_share, args.arrival_s)
    with tempfile.TemporaryDirectory(prefix="ordersync-bench-") as run_dir:
        pipeline = LocalPipeline(
            scenario=bench,
            run_dir=Path(run_dir),
            stages=("order-download", "item-fetch", "import"),
            backoffice=False,
            plans_known=False,  # ordersync starts from the documented plans, as with a real account
            extra_env={
                "ORDERSYNC_RATELIMIT__PLAN_MARGIN": str(margin),
                "ORDERSYNC_DOWNLOAD__POLL_INTERVAL_S": str(args.poll_s),
            },
        )
        try:
            pipeline.start()
            assert pipeline.simulator is not None
            clock = httpx.get(f"{pipeline.simulator.base_url}/_sim/clock", timeout=10).json()
            real0, sim0 = time.time(), clock["now_epoch"]
            started = time.monotonic()
            time.sleep(args.seconds / 10)
            warm = counters(pipeline)
            warm_at = time.monotonic()
            time.sleep(args.seconds * 9 / 10)
            final = counters(pipeline)
            elapsed = time.monotonic() - started
            steady = time.monotonic() - warm_at
            truth, throttled, _ = pipeline.truth()
            imported = pipeline.imported_at(truth)
        finally:
            pipeline.stop()

    arrivals = f"arriving over {args.arrival_s:.0f} sim s" if args.arrival_s else "backlog"
    print(
        f"\nplan margin {margin:g}, Amazon's plans {args.plan_share:g} of the documented ones: "
        f"{2 * args.orders} orders ({arrivals}), time scale {args.time_scale}x, "
        f"{elapsed:.0f} s run, 429s: {throttled}"
    )
    print(f"{'operation':<16}{'calls':>8}{'allowed':>10}{'use':>8}{'steady use':>12}")
    sellers = bench.sellers
    for operation in OPERATIONS:
        override = sellers[0].usage_plans.get(operation)
        rate, burst = (override.rate, override.burst) if override else default_plans()[operation]
        rate *= args.time_scale
        calls = final.get(operation, 0)
        steady_calls = calls - warm.get(operation, 0)
        allowed = burst + rate * elapsed
        print(
            f"{operation:<16}{calls:>8}{allowed:>10.0f}{calls / allowed:>8.2f}"
            f"{steady_calls / (rate * steady):>12.2f}"
        )
    lags = []
    for order in truth:
        at = imported.get(order["amazon_order_id"])
        if at is not None:
            visible = datetime.fromisoformat(order["visible_at"].replace("Z", "+00:00")).timestamp()
            visible_real = real0 + (visible - sim0) / args.time_scale if visible > sim0 else real0
            lags.append(at - visible_real)
    if len(lags) >= 2:
        cuts = statistics.quantiles(lags, n=20)
        print(
            f"visible -> orders.imported: {len(lags)} orders, p50 {statistics.median(lags):.1f} s, "
            f"p95 {cuts[18]:.1f} s (real seconds)"
        )


def main() -> int:
    if sys.argv[1:2] == ["orders-2026"]:
        # Orders within Amazon's 2026 budget (notifications, the budgeted sweep, the report): its own
        # bench beside this one.
        import orders_2026  # noqa: PLC0415 - this folder is the script's, first on sys.path

        sys.argv = [f"{sys.argv[0]} orders-2026", *sys.argv[2:]]
        return orders_2026.main()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=3000, help="backlog per seller")
    parser.add_argument(
        "--time-scale", type=float, default=20.0, help="low enough that the quota, not the CPU, is the limit"
    )
    parser.add_argument("--seconds", type=float, default=90.0, help="how long to run")
    parser.add_argument(
        "--plan-share",
        type=float,
        default=1.0,
        help="Amazon's plans for the sellers, a share of the documented",
    )
    parser.add_argument("--margins", default="0", help="comma-separated plan margins, one run each")
    parser.add_argument(
        "--arrival-s", type=float, default=0.0, help="orders arrive over this many sim seconds"
    )
    parser.add_argument(
        "--poll-s", type=float, default=1.0, help="download poll interval (real s): orders come in clumps"
    )
    args = parser.parse_args()
    for margin in (float(m) for m in args.margins.split(",")):
        run(args, margin)
    return 0


if __name__ == "__main__":
    sys.exit(main())
