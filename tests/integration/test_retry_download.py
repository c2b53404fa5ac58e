"""`ordersync orders retry-download`: an ops.commands event that makes the order-download stage fetch the
orders again from scratch, so they flow through item fetch once more (the dashboard's Retry Download)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ordersync.dev.demo import local_pipeline
from ordersync.schemas.events import OrderDownloaded, OrderEnriched
from ordersync.schemas.topics import ORDERS_DOWNLOADED, ORDERS_ENRICHED
from ordersync.simulator.testing import tiny_scenario
from tests.topics import read_all, wait_for

pytestmark = pytest.mark.integration


def test_retry_download_fetches_the_order_again_through_the_pipeline(tmp_path: Path) -> None:
    scenario = tiny_scenario(orders={"count": 5, "history_s": 3600}, time_scale=60, start=None)
    with local_pipeline(
        scenario=scenario, run_dir=tmp_path / "run", stages=("order-download", "item-fetch"), backoffice=False
    ) as pipeline:
        bootstrap = pipeline.env["ORDERSYNC_KAFKA__BOOTSTRAP"]
        wait_for(lambda: len(read_all(bootstrap, ORDERS_ENRICHED)) == 5)
        target = read_all(bootstrap, ORDERS_ENRICHED)[0].order.amazon_order_id
        channel = pipeline.channel_names()[0]
        output = pipeline.cli("orders", "retry-download", "--channel", channel, target)
        assert "sent as event" in output

        def retried() -> list[OrderDownloaded]:
            return [
                d
                for d in read_all(bootstrap, ORDERS_DOWNLOADED)
                if d.found_by == "retry" and d.order.amazon_order_id == target
            ]

        wait_for(lambda: len(retried()) == 1)
        wait_for(
            lambda: (
                sum(
                    1
                    for e in read_all(bootstrap, ORDERS_ENRICHED)
                    if isinstance(e, OrderEnriched) and e.order.amazon_order_id == target
                )
                == 2
            )
        )
        rejected = pipeline.cli_result("orders", "retry-download", "--channel", channel, "not-an-order-id")
        assert rejected.returncode == 2  # bad input (ordersync.cli.common.ExitCode)
        assert "amazon_order_ids" in rejected.stderr
