"""Amazon answers 503 to every SP-API request for an hour of simulated time while the whole pipeline
runs (every stage its own process, orders still arriving): nothing is dead-lettered or failed, no order
is lost, none imported or confirmed twice, no request throttled, and the pipeline catches up by itself
once Amazon is back. The records that outlived the in-line retries waited on the redrive tiers."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ordersync.dev.demo import OutcomeWatcher, local_pipeline
from ordersync.schemas.topics import ORDERS_DOWNLOADED
from tests.chaos.pipeline import ORDERS_PER_SELLER, TIME_SCALE, in_flight, under_fault
from tests.chaos.pipeline import scenario as pipeline_scenario
from tests.topics import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

OUTAGE_SIM_S = 3600


def test_an_hour_of_503s_loses_nothing_and_heals_by_itself(tmp_path: Path) -> None:
    scenario = pipeline_scenario("amazon-outage", 17, arrival_window_s=2 * OUTAGE_SIM_S)
    # Confirm mode: each package is its own confirmShipment, so the outage meets them one by one.
    env = {"ORDERSYNC_WRITEBACK__MODE": "confirm"}
    with local_pipeline(scenario=scenario, run_dir=tmp_path / "run", extra_env=env) as pipeline:
        assert pipeline.simulator is not None
        sim = pipeline.simulator.state

        def amazon_down_for_an_hour(watcher: OutcomeWatcher) -> tuple[int, int]:
            # Amazon goes down while the first orders are on their way through the stages.
            wait_for(
                lambda: watcher.snapshot().count(ORDERS_DOWNLOADED.name) >= 5,
                180,
                what="the first orders are downloaded",
            )
            orders_in_flight = in_flight(pipeline, watcher)
            calls_before = pipeline.truth()[2]
            sim.set_faults({"http_503": 1.0})
            time.sleep(OUTAGE_SIM_S / TIME_SCALE)
            sim.set_faults({})
            return orders_in_flight, pipeline.truth()[2] - calls_before

        (orders_in_flight, refused), verdict, recovered_s = under_fault(pipeline, amazon_down_for_an_hour)

    print(
        f"\n503 for {OUTAGE_SIM_S} simulated s: {orders_in_flight} orders in flight when it began,"
        f" {refused} requests answered 503; every order accounted {recovered_s:.0f} s"
        f" (wall) after Amazon came back; {verdict.summary()}"
    )
    verdict.assert_nothing_lost_nothing_twice()
    assert verdict.orders == 2 * ORDERS_PER_SELLER
    assert verdict.parked > 0, "the outage did not reach the redrive tiers: the test proves nothing"
    assert refused > 0
