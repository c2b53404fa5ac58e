"""Synchronize now on the Tasks page (starlette's TestClient, a real Redis, no broker): each task's
schedule and next run, a Run now button enabled by role, what POST /api/tasks/run refuses before
anything is sent, a Kafka that does not answer, and the audit entry of each. The request reaching the
stage through Kafka is tests/integration/test_synchronize_now.py's."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from starlette.testclient import TestClient

from ordersync.clock import ManualClock
from ordersync.dashboard import create_app
from ordersync.ops.audit import AuditFilter, AuditLog
from ordersync.ops.users import UserStore
from ordersync.pipeline.schedule import Wakeups
from ordersync.settings import Settings
from tests.factories import CHANNEL, dashboard_settings, write_channels_file
from tests.stage.test_dashboard_accounts import RecordingSink, sign_in

pytestmark = pytest.mark.stage

NO_BROKER = "127.0.0.1:1"
NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
VIEWER, OPERATOR = ("vera", "viewer-password-1"), ("otto", "operator-password-2")


@pytest.fixture
def settings(redis_url: str, redis_key_prefix: str, tmp_path: Path) -> Settings:
    return dashboard_settings(
        redis_url,
        redis_key_prefix,
        write_channels_file(tmp_path / "channels.yaml"),
        kafka_bootstrap=NO_BROKER,
    )


async def test_the_tasks_page_shows_schedules_and_runs_a_task_now_for_operators_only(
    settings: Settings, redis_client: aioredis.Redis, redis_key_prefix: str
) -> None:
    clock = ManualClock(NOW)
    users = UserStore(redis_client, redis_key_prefix, clock=clock)
    await users.add(VIEWER[0], "viewer", VIEWER[1], "test")
    await users.add(OPERATOR[0], "operator", OPERATOR[1], "test")
    wakeups = Wakeups(redis_client, redis_key_prefix, clock)
    await wakeups.pause("download", CHANNEL, 0)  # as the stage records it: every 0 s, next run now
    await redis_client.hset(
        f"{redis_key_prefix}:task:download:{CHANNEL}",
        mapping={"every_s": "3600", "last_run": "2026-11-25T08:59:00.000000Z"},
    )
    await wakeups.request("download", CHANNEL, by="dana", at=NOW)
    sink = RecordingSink()

    with TestClient(create_app(settings, clock, audit_sink=sink)) as client:
        sign_in(client, *VIEWER)
        page = client.get("/tasks").text
        row = re.search(r'<tr data-task="download".*?</tr>', page, re.S)
        assert row is not None
        assert "1h" in row.group(0)  # every
        assert "asked 2026-11-25 09:00" in row.group(0)
        assert "by dana" in row.group(0)
        button = re.search(r'<button type="button" class="task-run"[^>]*>', row.group(0))
        assert button is not None
        assert "disabled" in button.group(0)
        viewer_csrf = re.search(r'<meta name="csrf-token" content="([^"]+)">', page)
        assert viewer_csrf is not None
        refused = client.post(
            "/api/tasks/run",
            json={"task": "download", "channel": CHANNEL},
            headers={"X-CSRF-Token": viewer_csrf.group(1)},
        )
        assert refused.status_code == 403

    with TestClient(create_app(settings, clock, audit_sink=sink)) as client:
        csrf = sign_in(client, *OPERATOR)
        page = client.get("/tasks").text
        button = re.search(r'<button type="button" class="task-run"[^>]*>', page)
        assert button is not None
        assert "disabled" not in button.group(0)

        def run(body: dict[str, str]) -> tuple[int, str]:
            answer = client.post("/api/tasks/run", json=body, headers={"X-CSRF-Token": csrf})
            return answer.status_code, answer.json().get("error", "")

        assert run({"task": "reindex", "channel": CHANNEL})[0] == 404
        assert run({"task": "download", "channel": "nowhere"})[0] == 404
        assert run({"channel": CHANNEL})[0] == 422
        assert client.post("/api/tasks/run", json={"task": "download", "channel": CHANNEL}).status_code == 403
        started = time.monotonic()
        status, error = run({"task": "download", "channel": CHANNEL})
        assert status == 503
        assert "Kafka did not take the request" in error
        assert time.monotonic() - started < 20  # bounded: the operator is not left waiting a minute

    trail = AuditLog(redis_client, redis_key_prefix)
    page_of = await trail.page(AuditFilter(action="task.run"), limit=50)
    outcomes = sorted((entry.actor, entry.outcome) for _, entry in page_of.entries)
    # Refused: an unknown task, an unknown channel, no task, no CSRF token (the operator's); the viewer's.
    assert outcomes == [("otto", "failed")] + [("otto", "refused")] * 4 + [("vera", "refused")]
