"""The whole pipeline (every stage its own process, orders still arriving) under faults that hit its
processes and its state: each judged from the simulator's truth and the topics, with nothing done by a
person. Figures are printed (run with ``-s``)."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
import redis

from ordersync.dev.demo import OutcomeWatcher, local_pipeline, wait_until_accounted
from ordersync.pipeline.stages import STAGES
from ordersync.schemas.topics import SHIPMENTS_CONFIRMED
from tests.chaos.pipeline import ORDERS_PER_SELLER, judge
from tests.chaos.pipeline import scenario as pipeline_scenario
from tests.topics import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

ARRIVALS_SIM_S = 3600


def test_every_stage_sigkilled_at_random_moments_loses_nothing(tmp_path: Path) -> None:
    scenario = pipeline_scenario("stage-kills", 23, arrival_window_s=ARRIVALS_SIM_S)
    chance = random.Random(23)
    kills: list[str] = []
    with local_pipeline(scenario=scenario, run_dir=tmp_path / "run") as pipeline:
        watcher = OutcomeWatcher(pipeline.settings())
        watcher.start()
        try:
            # While orders arrive: every stage SIGKILLed twice, in a random order, a few seconds apart,
            # and started again as an orchestrator would.
            victims = [*STAGES, *STAGES]
            chance.shuffle(victims)
            for stage in victims:
                time.sleep(chance.uniform(1.0, 5.0))
                pipeline.restart(stage)
                kills.append(stage)
            started = time.monotonic()
            accounting = wait_until_accounted(pipeline, watcher, timeout_s=600)
            settled_s = time.monotonic() - started
        finally:
            watcher.stop()
        verdict = judge(pipeline, accounting)
    print(
        f"\nSIGKILL of every stage twice ({len(kills)} kills over the arrivals): every order accounted"
        f" {settled_s:.0f} s (wall) after the last kill; {verdict.summary()}"
    )
    assert sorted(set(kills)) == sorted(STAGES)
    verdict.assert_nothing_lost_nothing_twice()
    assert verdict.orders == 2 * ORDERS_PER_SELLER


def test_redis_restarted_empty_under_the_pipeline_loses_nothing(tmp_path: Path) -> None:
    scenario = pipeline_scenario("redis-empty", 29, arrival_window_s=ARRIVALS_SIM_S)
    with local_pipeline(scenario=scenario, run_dir=tmp_path / "run") as pipeline:
        watcher = OutcomeWatcher(pipeline.settings())
        watcher.start()
        try:
            wait_for(
                lambda: watcher.snapshot().count(SHIPMENTS_CONFIRMED.name) >= 10,
                180,
                what="the first shipments are confirmed",
            )
            in_flight = len(pipeline.truth()[0]) - watcher.snapshot().count(SHIPMENTS_CONFIRMED.name)
            # A restart without persistence: every key gone, every connection dropped.
            server = redis.Redis.from_url(pipeline.env["ORDERSYNC_REDIS__URL"])
            server.flushall()
            server.client_kill_filter(_type="normal", skipme=True)
            server.close()
            started = time.monotonic()
            accounting = wait_until_accounted(pipeline, watcher, timeout_s=600)
            settled_s = time.monotonic() - started
        finally:
            watcher.stop()
        verdict = judge(pipeline, accounting)
    print(
        f"\nRedis restarted empty with {in_flight} orders in flight: every order accounted {settled_s:.0f} s"
        f" (wall) later; {verdict.summary()}"
    )
    verdict.assert_nothing_lost_nothing_twice()
    assert verdict.orders == 2 * ORDERS_PER_SELLER
