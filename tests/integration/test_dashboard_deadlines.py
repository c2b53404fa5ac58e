"""Ship-by deadlines on the dashboard (starlette's TestClient, a real Redis, the app's clock injected): the
grid's "Ship by" column with its overdue / at-risk / late badges, the deadline filter in the form and in
the JSON API, and the late shipments per account in the status key and in ``/api/health``."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis.asyncio as aioredis
from starlette.testclient import TestClient

from ordersync.clock import ManualClock
from ordersync.dashboard import create_app
from ordersync.settings import Settings
from ordersync.state.readmodel import ReadModel
from tests.factories import CHANNEL, OTHER_SELLER, SELLER, dashboard_settings, write_channels_file
from tests.stage.test_readmodel_deadlines import (
    AT_RISK,
    LATE,
    LATER,
    NOW,
    OTHER_OVERDUE,
    OVERDUE,
    deadline_run,
)

pytestmark = pytest.mark.stage


@pytest.fixture
async def folded(redis_client: aioredis.Redis, redis_key_prefix: str) -> None:
    model = ReadModel(redis_client, redis_key_prefix, notify_dlq=False, notify_late=False)
    for topic, envelope in deadline_run():
        await model.apply(topic, envelope)


@pytest.fixture
def settings(redis_url: str, redis_key_prefix: str, tmp_path: Path) -> Settings:
    return dashboard_settings(redis_url, redis_key_prefix, write_channels_file(tmp_path / "channels.yaml"))


def _ids(answer: dict[str, object]) -> set[str]:
    rows = answer["rows"]
    assert isinstance(rows, list)
    return {row["amazon_order_id"] for row in rows}


@pytest.mark.usefixtures("folded")
def test_the_deadline_filter_and_the_ship_by_column(settings: Settings) -> None:
    clock = ManualClock(NOW)
    with TestClient(create_app(settings, clock=clock)) as client:
        assert _ids(client.get("/api/orders", params={"deadline": "overdue"}).json()) == {
            OVERDUE,
            OTHER_OVERDUE,
        }
        at_risk = client.get("/api/orders", params={"deadline": "at-risk"}).json()
        assert _ids(at_risk) == {AT_RISK}
        (row,) = at_risk["rows"]
        assert row["ship_by"] == "2026-11-21T13:00:00Z"
        assert row["awaiting_shipment"] is True
        assert _ids(
            client.get("/api/orders", params={"deadline": "overdue", "seller_id": OTHER_SELLER}).json()
        ) == {OTHER_OVERDUE}
        by_ship_by = client.get("/api/orders", params={"sort": "ship_by", "dir": "asc"}).json()
        assert by_ship_by["total"] == 8

        bad = client.get("/api/orders", params={"deadline": "tomorrow"})
        assert bad.status_code == 400
        assert "deadline" in bad.json()["error"]

        page = client.get("/", params={"deadline": "overdue"})
        assert page.status_code == 200
        assert '<option value="overdue" selected>overdue</option>' in page.text
        assert 'data-sort="ship_by"' in page.text
        assert f'data-order="{OVERDUE}"' in page.text
        assert '<span class="badge ship-by-overdue">overdue</span>' in page.text
        assert f'data-order="{AT_RISK}"' not in page.text

        grid = client.get("/", params={"limit": 100}).text
        assert '<span class="badge ship-by-at-risk">at-risk</span>' in grid
        assert '<span class="badge ship-by-late">late</span>' in grid
        assert LATE in grid

        # The app's clock moves: what was later is now at risk.
        clock.advance(7 * 3600)
        assert _ids(client.get("/api/orders", params={"deadline": "at-risk"}).json()) == {LATER}


@pytest.mark.usefixtures("folded")
def test_late_shipments_per_account_in_the_status_key_and_the_api(settings: Settings) -> None:
    with TestClient(create_app(settings, clock=ManualClock(NOW))) as client:
        shipments = {s["seller_id"]: s for s in client.get("/api/health").json()["shipments"]}
        mine = shipments[SELLER]
        assert (mine["channel"], mine["confirmed"], mine["late"], mine["late_rate"]) == (CHANNEL, 2, 1, 0.5)
        assert (mine["overdue"], mine["at_risk"]) == (1, 1)
        assert shipments[OTHER_SELLER]["late_rate"] is None

        page = client.get("/tasks").text
        assert 'data-late="1" data-confirmed="2"' in page
        assert "50.0 %" in page
        assert "1 late of 2 confirmed by ordersync" in page
        assert f"/?deadline=overdue&amp;seller_id={SELLER}" in page
