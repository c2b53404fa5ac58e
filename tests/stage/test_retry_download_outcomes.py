"""Retry Download names several orders; each has its own outcome: one Amazon refuses is reported with
Amazon's words and the others go on; one Amazon cannot answer now makes the command wait on the redrive
tiers, and its next try fetches only that order."""

from __future__ import annotations

from typing import Any

import pytest

from ordersync.errors import Retryable
from ordersync.producers.order_download import retry_download
from ordersync.schemas.envelope import Envelope
from ordersync.schemas.events import OperatorCommandIssued, OrderDownloaded
from ordersync.schemas.topics import ORDERS_DOWNLOADED
from ordersync.simulator.runner import RunningSimulator
from ordersync.simulator.testing import tiny_scenario

pytestmark = pytest.mark.stage

UNKNOWN = "999-0000000-0000000"


async def test_each_order_of_a_retry_download_has_its_own_outcome(make_runtime: Any) -> None:
    scenario = tiny_scenario(orders={"count": 2})
    with RunningSimulator(scenario) as sim:
        runtime = await make_runtime("order-download", scenario, sim)
        channel = runtime.channels.channels[0]
        slow, fine = (o["amazon_order_id"] for o in sim.state.truth_orders())
        command = Envelope.wrap(
            OperatorCommandIssued(
                command="retry-download",
                channel=channel.name,
                amazon_order_ids=(slow, fine, UNKNOWN),
                operator="ana",
            ),
            seller_id=channel.seller_id,
            correlation_id="retry-download:test",
        )
        # Amazon is down for the first order's every in-line try.
        sim.state.force_fault({"fault": "503", "operation": "getOrder", "count": 4})
        with pytest.raises(Retryable, match="Amazon could not answer for 1 order"):
            await retry_download(runtime, command)
        downloaded = [p.order.amazon_order_id for p in runtime.payloads(ORDERS_DOWNLOADED.name)]
        assert downloaded == [fine]
        task = await runtime.store.task("retry-download", channel.name)
        assert task["last_error"].startswith("1 of 3 orders downloaded again; ")
        assert f"{UNKNOWN} refused: getOrder: 404" in task["last_error"]
        assert f"{slow} waits for Amazon: getOrder: 503" in task["last_error"]

        # The redrive tries the command again: only the order still missing is fetched.
        calls_before = sim.state.counters_json()["sellers"][channel.seller_id]["getOrder"]["calls"]
        await retry_download(runtime, command)
        calls = sim.state.counters_json()["sellers"][channel.seller_id]["getOrder"]["calls"] - calls_before
        assert calls == 1
        downloaded = [p.order.amazon_order_id for p in runtime.payloads(ORDERS_DOWNLOADED.name)]
        assert downloaded == [fine, slow]
        assert all(
            isinstance(p, OrderDownloaded) and p.found_by == "retry"
            for p in runtime.payloads(ORDERS_DOWNLOADED.name)
        )
        task = await runtime.store.task("retry-download", channel.name)
        assert task["last_error"].startswith("2 of 3 orders downloaded again; ")
        assert "waits" not in task["last_error"]
