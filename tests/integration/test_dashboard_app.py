"""The dashboard's Starlette app with starlette's TestClient on a real Redis, no broker (marker ``stage``):
the read model is filled through ReadModel.apply with the pipeline's own events; the grid's filters,
sort and paging, the pages, the detail, reading and acting with and without tokens, and the CSV export.

The orders filled in (:func:`tests.factories.fill_read_model`) and the settings
(:func:`tests.factories.dashboard_settings`) are shared with the actions and browser tests.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr
from starlette.testclient import TestClient

from ordersync.dashboard import create_app
from ordersync.settings import DashboardSettings, Settings
from ordersync.state.health import HealthBoard
from ordersync.state.readmodel import OrderFilter, ReadModel, failed_orders_csv_header, write_orders_csv
from ordersync.state.store import Store
from tests.factories import (
    CA,
    CHANNEL,
    OPERATOR_TOKEN,
    OTHER_CHANNEL,
    OTHER_SELLER,
    SELLER,
    T0,
    Orders,
    dashboard_settings,
    write_channels_file,
)

pytestmark = pytest.mark.stage

READ_TOKEN = "read-token-for-tests"


@pytest.fixture
def settings(redis_url: str, redis_key_prefix: str, tmp_path: Path) -> Settings:
    return dashboard_settings(redis_url, redis_key_prefix, write_channels_file(tmp_path / "channels.yaml"))


def _ids(answer: dict[str, Any]) -> list[str]:
    return [row["amazon_order_id"] for row in answer["rows"]]


def _csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


async def test_grid_filters_sort_and_paging(filled: Orders, settings: Settings) -> None:
    with TestClient(create_app(settings)) as client:
        everything = client.get("/api/orders", params={"limit": 500}).json()
        assert everything["total"] == filled.total
        assert len(everything["rows"]) == filled.total

        failed = client.get("/api/orders", params={"status": "Failed"}).json()
        assert set(_ids(failed)) == filled.failed
        assert {row["status"] for row in failed["rows"]} == {"Failed"}

        ignored = client.get("/api/orders", params={"status": "Ignored"}).json()
        assert _ids(ignored) == [filled.ignored]

        other = client.get("/api/orders", params={"channel": OTHER_CHANNEL}).json()
        assert set(_ids(other)) == set(filled.pending)
        assert {row["status"] for row in other["rows"]} == {"Pending"}
        assert set(_ids(client.get("/api/orders", params={"marketplace_id": CA}).json())) == set(
            filled.pending
        )
        assert client.get("/api/orders", params={"seller_id": OTHER_SELLER}).json()["total"] == 2

        by_sku = client.get("/api/orders", params={"q": filled.bad_sku}).json()
        assert set(_ids(by_sku)) == set(filled.import_failed)
        by_id = client.get("/api/orders", params={"q": filled.success[7]}).json()
        assert _ids(by_id) == [filled.success[7]]
        by_prefix = client.get("/api/orders", params={"q": "222-"}).json()
        assert set(_ids(by_prefix)) == set(filled.import_failed)

        writeback = client.get("/api/orders", params={"failed_stage": "write-back"}).json()
        assert _ids(writeback) == [filled.writeback_failed]

        # A date range is whole days, both ends included.
        day = (T0 - timedelta(days=10)).date()
        in_range = {oid for oid, at in filled.purchase.items() if day <= at.date() <= day + timedelta(days=1)}
        ranged = client.get(
            "/api/orders",
            params={"since": day.isoformat(), "until": (day + timedelta(days=1)).isoformat(), "limit": 500},
        ).json()
        assert set(_ids(ranged)) == in_range
        assert in_range

        ascending = client.get(
            "/api/orders", params={"sort": "amazon_order_id", "dir": "asc", "limit": 500}
        ).json()
        assert _ids(ascending) == sorted(filled.purchase)
        by_purchase = client.get("/api/orders", params={"sort": "purchase_date", "dir": "desc", "limit": 500})
        dates = [row["purchase_date"] for row in by_purchase.json()["rows"]]
        assert dates == sorted(dates, reverse=True)

        # Pages of 50: disjoint, together every order, in the same order as one big page.
        paged: list[str] = []
        for offset in range(0, filled.total, 50):
            page = client.get(
                "/api/orders", params={"sort": "amazon_order_id", "dir": "asc", "offset": offset, "limit": 50}
            ).json()
            assert page["offset"] == offset
            assert page["total"] == filled.total
            paged += _ids(page)
        assert paged == _ids(ascending)

        for params, named in (
            ({"status": "Broken"}, "status"),
            ({"limit": "501"}, "limit"),
            ({"since": "yesterday"}, "since"),
            ({"sort": "price"}, "sort"),
            ({"channel": "acme us; DROP"}, "channel"),
        ):
            refused = client.get("/api/orders", params=params)
            assert refused.status_code == 400, params
            assert refused.json()["error"].startswith(named)


async def test_pages_render_the_grid_detail_tasks_and_notifications(
    filled: Orders, settings: Settings, redis_client: aioredis.Redis, redis_key_prefix: str
) -> None:
    board = HealthBoard(redis_client, redis_key_prefix, settings.health)
    now = datetime.now(UTC)
    for _ in range(4):
        await board.record_call(CHANNEL, SELLER, "getOrders", "ok", at=now)
    await board.record_call(
        CHANNEL, SELLER, "createFeed", "auth", at=now, detail="LWA refused: invalid_grant"
    )
    await board.notify("dlq", "orders.imported.dlq grew by 3", severity="error", channel=CHANNEL)
    await Store(redis_client, redis_key_prefix).record_task(
        "catch-up-48h", CHANNEL, ok=True, detail="3 found"
    )

    with TestClient(create_app(settings)) as client:
        grid = client.get("/", params={"status": "Failed"})
        assert grid.status_code == 200
        for order_id in filled.failed:
            assert f'data-order="{order_id}"' in grid.text
        assert f'data-order="{filled.success[0]}"' not in grid.text
        assert 'id="status-key"' in grid.text
        assert "invalid_grant" in grid.text  # the reason, beside the colour
        assert "default-src 'self'" in grid.headers["content-security-policy"]

        health = client.get("/api/health").json()["health"]
        colours = {(h["channel"], h["api"]): h["colour"] for h in health}
        assert colours[(CHANNEL, "orders")] == "Green"
        assert colours[(CHANNEL, "feeds")] == "Red"
        assert colours[(OTHER_CHANNEL, "orders")] == "None"

        bad = client.get("/", params={"status": "Broken"})
        assert bad.status_code == 400
        assert "status: &#39;Broken&#39; is not one of" in bad.text

        detail = client.get(f"/orders/{SELLER}/{filled.writeback_failed}")
        assert detail.status_code == 200
        assert filled.tracking_number in detail.text
        assert "The carrier code is not valid for this marketplace" in detail.text
        assert "STK-SKU-3" in detail.text
        api_detail = client.get(f"/api/orders/{SELLER}/{filled.writeback_failed}").json()
        assert api_detail["shipments"][0]["tracking_number"] == filled.tracking_number
        assert client.get(f"/orders/{SELLER}/999-0000000-0000000").status_code == 404
        assert client.get(f"/api/orders/{SELLER}/999-0000000-0000000").status_code == 404
        assert client.get(f"/api/orders/{SELLER}/not-an-order").status_code == 400

        tasks = client.get("/tasks")
        assert "catch-up-48h" in tasks.text
        assert "3 found" in tasks.text
        assert client.get("/api/tasks").json()["tasks"][0]["task"] == "catch-up-48h"
        notifications = client.get("/notifications")
        assert "orders.imported.dlq grew by 3" in notifications.text
        kinds = [n["kind"] for n in client.get("/api/notifications").json()["notifications"]]
        assert "dlq" in kinds
        assert "auth" in kinds

        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").text == "ready"


async def test_actions_need_the_operator_token_and_valid_orders(filled: Orders, settings: Settings) -> None:
    body = {"action": "ignore", "orders": [{"channel": CHANNEL, "amazon_order_id": filled.import_failed[0]}]}
    with TestClient(create_app(settings)) as client:
        assert client.post("/api/actions", json=body).status_code == 403
        wrong = client.post("/api/actions", json=body, headers={"X-Operator-Token": "guess"})
        assert wrong.status_code == 403
        assert wrong.json()["error"] == "the operator token is not valid"
        # The read token (none here) or a cookie never stands in for the operator token.
        assert (
            client.post(
                "/api/actions", json=body, headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}
            ).status_code
            == 403
        )

        token = {"X-Operator-Token": OPERATOR_TOKEN}
        form = client.post(
            "/api/actions", content=b"action=ignore", headers={**token, "Content-Type": "text/plain"}
        )
        assert form.status_code == 415
        invalid = client.post(
            "/api/actions",
            json={
                "action": "delete",
                "orders": [{"channel": CHANNEL, "amazon_order_id": "12-34"}],
            },
            headers=token,
        )
        assert invalid.status_code == 422
        problems = " ".join(invalid.json()["problems"])
        assert "action" in problems
        assert "amazon_order_id" in problems
        unknown = client.post(
            "/api/actions",
            json={
                "action": "ignore",
                "orders": [{"channel": "nope", "amazon_order_id": filled.import_failed[0]}],
            },
            headers=token,
        )
        assert unknown.status_code == 422
        assert "unknown channel nope" in unknown.json()["problems"][0]
        assert (
            client.post("/api/actions", json={"action": "ignore", "orders": []}, headers=token).status_code
            == 422
        )

    disabled = settings.model_copy(update={"dashboard": DashboardSettings()})
    with TestClient(create_app(disabled)) as client:
        refused = client.post("/api/actions", json=body, headers={"X-Operator-Token": OPERATOR_TOKEN})
        assert refused.status_code == 403
        assert "actions are disabled" in refused.json()["error"]
        page = client.get("/")
        assert "Actions are disabled" in page.text


async def test_reading_needs_the_read_token_when_one_is_set(filled: Orders, settings: Settings) -> None:
    protected = settings.model_copy(
        update={
            "dashboard": DashboardSettings(
                operator_token=SecretStr(OPERATOR_TOKEN), read_token=SecretStr(READ_TOKEN)
            )
        }
    )
    with TestClient(create_app(protected)) as client:
        for path in ("/api/orders", "/api/health", "/api/tasks", "/api/notifications", "/export.csv"):
            missing = client.get(path)
            assert missing.status_code == 401, path
            assert missing.headers["www-authenticate"].startswith("Bearer")
            assert client.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 403, path
            assert client.get(path, headers={"Authorization": f"Bearer {READ_TOKEN}"}).status_code == 200, (
                path
            )
        # The operator token reads too.
        assert (
            client.get("/api/orders", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}).status_code
            == 200
        )

        page = client.get("/", params={"status": "Failed"})
        assert page.status_code == 401
        assert 'name="token"' in page.text
        assert filled.writeback_failed not in page.text
        assert client.post("/login", data={"token": "wrong", "next": "/"}).status_code == 403
        signed_in = client.post(
            "/login", data={"token": READ_TOKEN, "next": "/?status=Failed"}, follow_redirects=False
        )
        assert signed_in.status_code == 303
        assert signed_in.headers["location"] == "/?status=Failed"
        cookie = signed_in.cookies.get("ordersync_dashboard_read")
        assert cookie
        assert READ_TOKEN not in cookie
        assert "httponly" in signed_in.headers["set-cookie"].lower()
        assert client.get("/", params={"status": "Failed"}).status_code == 200  # the cookie, from now on
        # Redirects stay on this site.
        away = client.post(
            "/login", data={"token": READ_TOKEN, "next": "//evil.example/"}, follow_redirects=False
        )
        assert away.headers["location"] == "/"

        # Another site cannot sign the operator in (login CSRF) nor act; this site's own pages can.
        client.cookies.clear()
        for headers in (
            {"Origin": "https://evil.example"},
            {"Origin": "null"},
            {"Sec-Fetch-Site": "cross-site"},
        ):
            forged = client.post("/login", data={"token": READ_TOKEN, "next": "/"}, headers=headers)
            assert forged.status_code == 403, headers
            assert "ordersync_dashboard_read" not in forged.cookies
            assert client.post("/api/actions", json={}, headers=headers).status_code == 403
        own = client.post(
            "/login",
            data={"token": READ_TOKEN, "next": "/"},
            headers={"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"},
            follow_redirects=False,
        )
        assert own.status_code == 303

        # Orchestrators' probes need no token.
        client.cookies.clear()
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200
        assert client.get("/api/orders").status_code == 401


async def test_csv_export_streams_the_filtered_orders_as_the_cli_writes_them(
    filled: Orders, settings: Settings, redis_client: aioredis.Redis, redis_key_prefix: str
) -> None:
    model = ReadModel(redis_client, redis_key_prefix, notify_dlq=False)
    with TestClient(create_app(settings)) as client:
        failed = client.get("/export.csv", params={"status": "Failed"})
        assert failed.status_code == 200
        assert failed.headers["content-type"].startswith("text/csv")
        assert "attachment" in failed.headers["content-disposition"]
        expected = io.StringIO()
        await write_orders_csv(model, OrderFilter(status="Failed"), expected)
        assert failed.text == expected.getvalue()
        rows = _csv(failed.text)
        assert list(rows[0]) == failed_orders_csv_header()
        assert {row["amazon_order_id"] for row in rows} == filled.failed
        writeback = [row for row in rows if row["amazon_order_id"] == filled.writeback_failed]
        assert writeback[0]["tracking_number"] == filled.tracking_number
        assert writeback[0]["error_message"] == "The carrier code is not valid for this marketplace"

        # Every order: more than one chunk of the stream, still exactly the CLI's file.
        everything = client.get("/export.csv")
        expected = io.StringIO()
        await write_orders_csv(model, OrderFilter(), expected)
        assert everything.text == expected.getvalue()
        assert len(_csv(everything.text)) >= filled.total

        assert client.get("/export.csv", params={"until": "2026-13-01"}).status_code == 400
