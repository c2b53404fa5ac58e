"""The reconciliation from Amazon's order report against the simulator (HTTP) and a real Redis: every
order the pipeline is behind on is fetched and sent once, orders of marketplaces the channel does not
sell in are not, and a second run finds nothing behind."""

from __future__ import annotations

from typing import Any

import pytest

from ordersync.dev.testing import RecordingRuntime
from ordersync.producers.download_report import reconcile_from_report, report_window
from ordersync.producers.download_send import emit_if_new
from ordersync.schemas.events import OrderDownloaded
from ordersync.schemas.topics import ORDERS_DOWNLOADED
from ordersync.simulator.runner import RunningSimulator
from ordersync.simulator.testing import tiny_scenario

pytestmark = pytest.mark.stage

#: Reports made at once and not behind: the test is about what the reconciliation does with them.
PROMPT_REPORTS = {"queue_delay_s": [0, 0], "duration_s": [0, 0], "lag_s": [0, 0]}


async def _always_mine() -> bool:
    return True


def downloaded(runtime: RecordingRuntime) -> list[OrderDownloaded]:
    return runtime.payloads(ORDERS_DOWNLOADED.name)


async def test_the_report_brings_what_the_pipeline_missed_once(make_runtime: Any) -> None:
    scenario = tiny_scenario(
        orders={"count": 8, "history_s": 6 * 3600},
        seller={"marketplaces": ["ATVPDKIKX0DER", "A2EUQ1WTGCTBG2"]},
        reports=PROMPT_REPORTS,
    )
    with RunningSimulator(scenario) as sim:
        sim.state.advance_clock(2 * 3600)  # every order older than the report's lag
        runtime = await make_runtime("order-download", scenario, sim, report_poll_s=0.01)
        channel = runtime.channels.channels[0].model_copy(update={"marketplaces": ("ATVPDKIKX0DER",)})
        truth = sim.state.truth_orders()
        ours = [o for o in truth if o["marketplace_id"] == "ATVPDKIKX0DER"]
        assert len(ours) < len(truth), "the scenario has orders in the other marketplace too"
        # The poll sent some of this channel's orders already.
        client = runtime.amazon(channel)
        for order in ours[:2]:
            assert await emit_if_new(
                runtime, channel, await client.get_order(order["amazon_order_id"]), "poll"
            )

        result = await reconcile_from_report(runtime, channel, None, _always_mine, runtime.clock.now())
        assert result.status == "DONE"
        assert result.orders == len(truth)  # Amazon's report is regional
        assert result.behind == len(truth) - 2
        assert result.other_marketplaces == len(truth) - len(ours)
        assert result.sent == len(ours) - 2
        sent = downloaded(runtime)
        assert sorted(d.order.amazon_order_id for d in sent) == sorted(o["amazon_order_id"] for o in ours)
        assert [d.found_by for d in sent[2:]] == ["reconciliation"] * (len(ours) - 2)

        again = await reconcile_from_report(runtime, channel, result.end, _always_mine, runtime.clock.now())
        assert again.behind == 0
        assert len(downloaded(runtime)) == len(ours)
        start, _ = report_window(result.end, runtime.clock.now(), runtime.settings.download)
        assert again.start == start
