"""Synchronize now through the real path: `ordersync tasks run download` publishes on ops.task-requests,
the order-download stage (its own process, on the embedded broker) wakes the channel's download at once
instead of after its ten-minute pause, and the task's row says who asked and when it runs next; then the
same through the dashboard's Run now."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import pytest
import redis
from starlette.testclient import TestClient

from ordersync.dashboard import create_app
from ordersync.dev.demo import local_pipeline
from ordersync.settings import DEFAULT_PREFIX
from ordersync.simulator.testing import tiny_scenario
from ordersync.state import keys
from tests.factories import OPERATOR_TOKEN, dashboard_settings
from tests.topics import wait_for

pytestmark = pytest.mark.integration

PAUSE_S = 600
TIME_SCALE = 60  # the simulator's; the schedule is recorded on its clock


def test_a_download_asked_for_now_runs_long_before_its_schedule(tmp_path: Path) -> None:
    scenario = tiny_scenario(orders={"count": 3, "history_s": 3600}, time_scale=TIME_SCALE, start=None)
    env = {
        "ORDERSYNC_DOWNLOAD__POLL_INTERVAL_S": str(PAUSE_S),
        # The plan's interval is on Amazon's clock: no cap below the pause asked for.
        "ORDERSYNC_DOWNLOAD__MAX_POLL_INTERVAL_S": str(10 * PAUSE_S * TIME_SCALE),
    }
    with local_pipeline(
        scenario=scenario,
        run_dir=tmp_path / "run",
        stages=("order-download",),
        backoffice=False,
        extra_env=env,
    ) as pipeline:
        channel = pipeline.channel_names()[0]
        client = redis.Redis.from_url(pipeline.env["ORDERSYNC_REDIS__URL"], decode_responses=True)
        prefix = pipeline.env.get("ORDERSYNC_REDIS__KEY_PREFIX", DEFAULT_PREFIX)
        task_key = keys.TASK.key(prefix, "download", channel)

        def row() -> dict[str, str]:
            return client.hgetall(task_key)  # type: ignore[return-value]

        wait_for(lambda: "next_run" in row() and "last_run" in row(), what="the first download round")
        first = row()
        assert float(first["every_s"]) == PAUSE_S * TIME_SCALE
        assert datetime.fromisoformat(first["next_run"]) > datetime.fromisoformat(first["last_run"])

        asked = time.monotonic()
        output = pipeline.cli("tasks", "run", "download", "--channel", channel, "--operator", "dana")
        assert "run asked of order-download" in output
        wait_for(lambda: row()["last_run"] != first["last_run"], timeout_s=60, what="a second download round")
        assert time.monotonic() - asked < PAUSE_S / 5
        again = row()
        assert again["run_requested_by"] == "dana"
        assert again["next_run"] > first["next_run"]  # the schedule starts again from the early run
        listed = pipeline.cli("tasks", "list", "--channel", channel)
        assert "download" in listed

        # The same from the Tasks page's Run now (the operator token, as an API client sends it).
        page_settings = dashboard_settings(
            pipeline.env["ORDERSYNC_REDIS__URL"],
            prefix,
            Path(pipeline.env["ORDERSYNC_CHANNELS_FILE"]),
            kafka_bootstrap=pipeline.env["ORDERSYNC_KAFKA__BOOTSTRAP"],
        )
        with TestClient(create_app(page_settings)) as page:
            answer = page.post(
                "/api/tasks/run",
                json={"task": "download", "channel": channel, "operator": "lee"},
                headers={"X-Operator-Token": OPERATOR_TOKEN},
            )
        assert answer.status_code == 200, answer.text
        assert answer.json()["stage"] == "order-download"
        wait_for(lambda: row()["last_run"] != again["last_run"], timeout_s=60, what="a third download round")
        assert row()["run_requested_by"] == "lee"
        client.close()
