"""The whole pipeline (every stage its own process, orders still arriving) under faults that hit its
processes and its state: each judged from the simulator's truth and the topics, with nothing done by a
person. Figures are printed (run with ``-s``)."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest
import redis

from ordersync.dev.demo import OutcomeWatcher, local_pipeline
from ordersync.pipeline.stages import STAGES
from ordersync.schemas.topics import SHIPMENTS_CONFIRMED
from tests.chaos.pipeline import ORDERS_PER_SELLER, in_flight, under_fault
from tests.chaos.pipeline import scenario as pipeline_scenario
from tests.chaos.servers import AofRedis
from tests.topics import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

ARRIVALS_SIM_S = 3600


def test_every_stage_sigkilled_at_random_moments_loses_nothing(tmp_path: Path) -> None:
    scenario = pipeline_scenario("stage-kills", 23, arrival_window_s=ARRIVALS_SIM_S)
    chance = random.Random(23)
    kills: list[str] = []
    with local_pipeline(scenario=scenario, run_dir=tmp_path / "run") as pipeline:

        def kill_every_stage_twice(_: OutcomeWatcher) -> None:
            # While orders arrive: every stage SIGKILLed twice, in a random order, a few seconds apart,
            # and started again as an orchestrator would.
            victims = [*STAGES, *STAGES]
            chance.shuffle(victims)
            for stage in victims:
                time.sleep(chance.uniform(1.0, 5.0))
                pipeline.restart(stage)
                kills.append(stage)

        _, verdict, settled_s = under_fault(pipeline, kill_every_stage_twice)
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

        def empty_redis(watcher: OutcomeWatcher) -> int:
            wait_for(
                lambda: watcher.snapshot().count(SHIPMENTS_CONFIRMED.name) >= 10,
                180,
                what="the first shipments are confirmed",
            )
            orders_in_flight = in_flight(pipeline, watcher)
            # A restart without persistence: every key gone, every connection dropped.
            server = redis.Redis.from_url(pipeline.env["ORDERSYNC_REDIS__URL"])
            server.flushall()
            server.client_kill_filter(_type="normal", skipme=True)
            server.close()
            return orders_in_flight

        orders_in_flight, verdict, settled_s = under_fault(pipeline, empty_redis)
    print(
        f"\nRedis restarted empty with {orders_in_flight} orders in flight: every order accounted"
        f" {settled_s:.0f} s (wall) later; {verdict.summary()}"
    )
    verdict.assert_nothing_lost_nothing_twice()
    assert verdict.orders == 2 * ORDERS_PER_SELLER


def _first_confirmations(watcher: OutcomeWatcher) -> None:
    wait_for(
        lambda: watcher.snapshot().count(SHIPMENTS_CONFIRMED.name) >= 10,
        180,
        what="the first shipments are confirmed",
    )


def test_redis_killed_and_restarted_from_its_aof_under_the_pipeline_loses_nothing(
    tmp_path: Path, redis_with_aof: AofRedis
) -> None:
    """SIGKILL loses what Redis had not written to its append-only file (up to a second, with
    appendfsync everysec): a Redis behind, which the stages must notice as well as an empty one."""
    scenario = pipeline_scenario("redis-aof", 37, arrival_window_s=ARRIVALS_SIM_S)
    with local_pipeline(
        scenario=scenario, run_dir=tmp_path / "run", redis_url=redis_with_aof.url
    ) as pipeline:

        def kill_redis(watcher: OutcomeWatcher) -> int:
            _first_confirmations(watcher)
            orders_in_flight = in_flight(pipeline, watcher)
            redis_with_aof.kill()
            time.sleep(5.0)
            redis_with_aof.start()
            return orders_in_flight

        orders_in_flight, verdict, settled_s = under_fault(pipeline, kill_redis)
    print(
        f"\nRedis SIGKILLed for 5 s and restarted from its AOF with {orders_in_flight} orders in flight:"
        f" every order accounted {settled_s:.0f} s (wall) later; {verdict.summary()}"
    )
    verdict.assert_nothing_lost_nothing_twice()


def test_the_broker_frozen_for_30_seconds_under_the_pipeline_loses_nothing(tmp_path: Path) -> None:
    scenario = pipeline_scenario("broker-frozen", 41, arrival_window_s=ARRIVALS_SIM_S)
    with local_pipeline(scenario=scenario, run_dir=tmp_path / "run") as pipeline:
        assert pipeline.broker is not None
        pid = pipeline.broker.pid
        assert pid is not None

        def freeze_the_broker(watcher: OutcomeWatcher) -> int:
            _first_confirmations(watcher)
            orders_in_flight = in_flight(pipeline, watcher)
            os.kill(pid, signal.SIGSTOP)  # connections hang; nothing is refused
            try:
                time.sleep(30.0)
                assert pipeline.dead_processes() == [], "a stage died while the broker hung"
            finally:
                os.kill(pid, signal.SIGCONT)
            return orders_in_flight

        orders_in_flight, verdict, settled_s = under_fault(pipeline, freeze_the_broker)
    print(
        f"\nbroker frozen 30 s with {orders_in_flight} orders in flight: every order accounted"
        f" {settled_s:.0f} s (wall) later; {verdict.summary()}"
    )
    verdict.assert_nothing_lost_nothing_twice()
