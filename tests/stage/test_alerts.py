"""Alerts on a real Redis, delivered to a real webhook receiver (HTTP on loopback) and a real SMTP server
(aiosmtpd on loopback): an outage reaches people within one evaluation, is not repeated once
acknowledged, comes back after a snooze, and is announced resolved; a delivery that fails is tried
again; a silent stage and growing dead letters fire too."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiosmtpd.controller import Controller
from pydantic import SecretStr

from ordersync.channels import Channel, LwaCredentials, SecretRef
from ordersync.dev.devinfra import find_free_port
from ordersync.ops.alerts import AlertBook, evaluate_once, run_alerts
from ordersync.settings import AlertSettings, RedisSettings, Settings
from ordersync.state.health import HealthBoard
from ordersync.state.heartbeats import record_heartbeat

pytestmark = pytest.mark.stage

NOW = datetime(2026, 11, 25, 10, 30, tzinfo=UTC)
SECRET = SecretRef(value=SecretStr("x"))
CHANNEL = Channel(
    name="shop-in",
    seller_id="A3SELLER",
    region="eu",
    marketplaces=("A21TJRUUN4KGV",),
    credentials=LwaCredentials(client_id=SECRET, client_secret=SECRET, refresh_token=SECRET),
)


class Receiver:
    """A webhook receiver on loopback: records each JSON body; answers ``status``."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                receiver.bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/T000/B000/secret-token"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def texts(self) -> list[str]:
        return [body["text"] for body in self.bodies]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Mailbox:
    """aiosmtpd's handler: keeps each message's envelope and content."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], str]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's
        self.messages.append((list(envelope.rcpt_tos), envelope.content.decode("utf-8", "replace")))
        return "250 OK"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hook = Receiver()
    yield hook
    hook.close()


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=find_free_port())
    controller.start()
    box.port = controller.port  # type: ignore[attr-defined]
    yield box
    controller.stop()


@pytest.fixture
def settings(redis_url: str, redis_key_prefix: str, receiver: Receiver, mailbox: Mailbox) -> Settings:
    alerts = AlertSettings(
        webhook_urls=(SecretStr(receiver.url),),
        smtp_host="127.0.0.1",
        smtp_port=mailbox.port,  # type: ignore[attr-defined]
        smtp_starttls=False,
        email_to=("ops@example.com",),
        dashboard_url="https://ordersync.example.com",
        repeat_s=3600,
    )
    return Settings(redis=RedisSettings(url=redis_url, key_prefix=redis_key_prefix), alerts=alerts)


async def outage(board: HealthBoard, at: datetime) -> None:
    for minute in range(10, 0, -1):
        for _ in range(20):
            await board.record_call(
                "shop-in", "A3SELLER", "getOrders", "ok", at=at - timedelta(minutes=minute)
            )
    for _ in range(4):
        await board.record_call(
            "shop-in", "A3SELLER", "getOrders", "unavailable", at=at, detail="503 ServiceUnavailable"
        )


async def test_an_outage_reaches_the_webhook_and_the_mailbox_then_is_acknowledged_and_resolved(
    settings: Settings, redis_client: aioredis.Redis, receiver: Receiver, mailbox: Mailbox
) -> None:
    prefix = settings.redis.key_prefix
    board = HealthBoard(redis_client, prefix, settings.health)
    await outage(board, NOW)
    delivered, resolved = await evaluate_once(settings, redis_client, [CHANNEL], now=NOW)
    assert [r.alert.fingerprint for r in delivered] == ["api-status:shop-in:orders"]
    (text,) = receiver.texts()
    assert text.startswith(
        "[ordersync] ERROR api-status: shop-in (A3SELLER) Orders API is Red: the last 4 calls"
    )
    assert text.endswith("<https://ordersync.example.com/notifications>")
    assert receiver.bodies[0]["alert"]["severity"] == "error"
    ((to, mail),) = mailbox.messages
    assert to == ["ops@example.com"]
    assert "Subject: [ordersync] ERROR api-status" in mail
    assert any(n.kind == "alert" for n in await board.notifications())

    # Still firing a minute later: not delivered again before repeat_s; acknowledged, never again.
    later = NOW + timedelta(minutes=1)
    assert (await evaluate_once(settings, redis_client, [CHANNEL], now=later))[0] == []
    book = AlertBook(redis_client, prefix)
    await book.acknowledge("api-status:shop-in:orders", "dana", later)
    much_later = NOW + timedelta(hours=2)
    await board.record_call("shop-in", "A3SELLER", "getOrders", "unavailable", at=much_later, detail="503")
    await outage(board, much_later)
    assert (await evaluate_once(settings, redis_client, [CHANNEL], now=much_later))[0] == []
    (record,) = await book.active()
    assert (record.state, record.acted_by) == ("acknowledged", "dana")

    # Amazon answers again: resolved, announced once, kept in the history.
    recovered = much_later + timedelta(minutes=1)
    await board.record_call("shop-in", "A3SELLER", "getOrders", "ok", at=recovered)
    _, resolved = await evaluate_once(settings, redis_client, [CHANNEL], now=recovered)
    assert [r.alert.fingerprint for r in resolved] == ["api-status:shop-in:orders"]
    assert receiver.texts()[-1].startswith("[ordersync] RESOLVED api-status")
    assert await book.active() == []
    assert [r.alert.fingerprint for r in await book.history()] == ["api-status:shop-in:orders"]


async def test_a_snoozed_alert_comes_back_and_a_failed_delivery_is_tried_again(
    settings: Settings, redis_client: aioredis.Redis, receiver: Receiver
) -> None:
    prefix = settings.redis.key_prefix
    board = HealthBoard(redis_client, prefix, settings.health)
    receiver.status = 500  # the chat is down
    await outage(board, NOW)
    delivered, _ = await evaluate_once(settings, redis_client, [CHANNEL], now=NOW)
    assert delivered == []
    assert len(receiver.bodies) == 1
    receiver.status = 200
    at = NOW + timedelta(seconds=30)
    await outage(board, at)
    delivered, _ = await evaluate_once(settings, redis_client, [CHANNEL], now=at)
    assert len(delivered) == 1
    assert len(receiver.bodies) == 2  # tried again at the next evaluation

    book = AlertBook(redis_client, prefix)
    await book.snooze("api-status:shop-in:orders", at + timedelta(minutes=30), "lee", at)
    for minutes in (10, 29):
        when = at + timedelta(minutes=minutes)
        await outage(board, when)
        assert (await evaluate_once(settings, redis_client, [CHANNEL], now=when))[0] == []
    when = at + timedelta(minutes=31)
    await outage(board, when)
    delivered, _ = await evaluate_once(settings, redis_client, [CHANNEL], now=when)
    assert [r.state for r in delivered] == ["firing"]
    with pytest.raises(ValueError, match="future"):
        await book.snooze("api-status:shop-in:orders", when, "lee", when)
    with pytest.raises(KeyError):
        await book.acknowledge("api-status:nowhere:orders", "lee", when)


async def test_a_silent_stage_and_growing_dead_letters_fire(
    settings: Settings, redis_client: aioredis.Redis, receiver: Receiver
) -> None:
    prefix = settings.redis.key_prefix
    await record_heartbeat(redis_client, prefix, "import|host-1", NOW - timedelta(minutes=5))
    await record_heartbeat(redis_client, prefix, "inventory|host-1", NOW - timedelta(seconds=10))
    # The projection counts dead letters per DLQ topic in the read model; two more arrive.
    from ordersync.state.readmodel import ReadModel  # noqa: PLC0415 - only this test reads the model's keys

    model = ReadModel(redis_client, prefix, notify_dlq=False, notify_late=False)
    space = await model._space()
    first, _ = await evaluate_once(settings, redis_client, [CHANNEL], now=NOW)
    assert [r.alert.fingerprint for r in first] == ["stage-silent:import|host-1"]
    await redis_client.sadd(space("dlq", "orders.imported.dlq"), "a", "b")
    later = NOW + timedelta(seconds=30)
    delivered, _ = await evaluate_once(settings, redis_client, [CHANNEL], now=later)
    assert [r.alert.fingerprint for r in delivered] == ["dead-letters:orders.imported.dlq"]
    assert any("2 record(s) dead-lettered on orders.imported.dlq" in t for t in receiver.texts())


async def test_the_loop_delivers_an_outage_within_one_interval(
    settings: Settings, redis_client: aioredis.Redis, receiver: Receiver
) -> None:
    quick = settings.model_copy(update={"alerts": settings.alerts.model_copy(update={"interval_s": 0.2})})

    board = HealthBoard(redis_client, settings.redis.key_prefix, settings.health)
    loop = asyncio.create_task(run_alerts(quick, redis_client, [CHANNEL], "test"))
    try:
        await asyncio.sleep(0.5)
        assert receiver.bodies == []
        started = datetime.now(UTC)
        for _ in range(4):
            await board.record_call(
                "shop-in", "A3SELLER", "getOrders", "unavailable", detail="503 Unavailable"
            )
        for _ in range(50):
            if receiver.bodies:
                break
            await asyncio.sleep(0.1)
        assert receiver.texts()
        assert "Orders API is Red" in receiver.texts()[0]
        assert (datetime.now(UTC) - started).total_seconds() < 5
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)


async def test_the_cli_lists_acknowledges_and_snoozes_alerts(
    settings: Settings, redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner  # noqa: PLC0415 - only this test drives the CLI

    from ordersync.cli import app  # noqa: PLC0415
    from ordersync.settings import get_settings  # noqa: PLC0415

    monkeypatch.setenv("ORDERSYNC_REDIS__URL", settings.redis.url)
    monkeypatch.setenv("ORDERSYNC_REDIS__KEY_PREFIX", settings.redis.key_prefix)
    get_settings.cache_clear()
    board = HealthBoard(redis_client, settings.redis.key_prefix, settings.health)
    await outage(board, NOW)
    await evaluate_once(settings, redis_client, [CHANNEL], now=NOW)
    runner = CliRunner()
    try:
        listed = await asyncio.to_thread(runner.invoke, app, ["alerts", "list"])
        assert listed.exit_code == 0, listed.output
        assert "ERROR   api-status:shop-in:orders  (firing, since 2026-11-25 10:30 UTC)" in listed.output
        acked = await asyncio.to_thread(
            runner.invoke, app, ["alerts", "ack", "api-status:shop-in:orders", "--by", "dana"]
        )
        assert acked.exit_code == 0, acked.output
        assert "(acknowledged by dana" in acked.output
        snoozed = await asyncio.to_thread(
            runner.invoke,
            app,
            ["alerts", "snooze", "api-status:shop-in:orders", "--for", "4h", "--by", "lee"],
        )
        assert "snoozed until" in snoozed.output
        (record,) = await AlertBook(redis_client, settings.redis.key_prefix).active()
        assert (record.state, record.acted_by) == ("snoozed", "lee")
        unknown = await asyncio.to_thread(runner.invoke, app, ["alerts", "ack", "api-status:nowhere:orders"])
        assert unknown.exit_code == 3
        bad = await asyncio.to_thread(
            runner.invoke, app, ["alerts", "snooze", "api-status:shop-in:orders", "--for", "4x"]
        )
        assert bad.exit_code == 2
    finally:
        get_settings.cache_clear()


async def test_the_dashboard_shows_alerts_and_workers_and_an_operator_acknowledges_or_snoozes(
    settings: Settings, redis_client: aioredis.Redis, tmp_path: Any
) -> None:
    from starlette.testclient import TestClient  # noqa: PLC0415 - only this test serves the page

    from ordersync.dashboard import create_app  # noqa: PLC0415
    from tests.factories import OPERATOR_TOKEN, dashboard_settings, write_channels_file  # noqa: PLC0415

    prefix = settings.redis.key_prefix
    page_settings = dashboard_settings(
        settings.redis.url, prefix, write_channels_file(tmp_path / "channels.yaml")
    )
    board = HealthBoard(redis_client, prefix, settings.health)
    now = datetime.now(UTC)
    await outage(board, now)
    await record_heartbeat(redis_client, prefix, "import|host-1", now - timedelta(minutes=5))
    await record_heartbeat(redis_client, prefix, "inventory|host-1", now)
    await evaluate_once(settings, redis_client, [CHANNEL], now=now)
    fingerprint = "api-status:shop-in:orders"
    with TestClient(create_app(page_settings)) as client:
        page = client.get("/notifications").text
        assert f'data-fingerprint="{fingerprint}" data-state="firing"' in page
        assert 'data-stage="import" data-silent="yes"' in page
        assert 'data-stage="inventory" data-silent="no"' in page
        api = client.get("/api/alerts").json()
        assert {a["alert"]["fingerprint"] for a in api["active"]} == {
            fingerprint,
            "stage-silent:import|host-1",
        }

        body = {"fingerprint": fingerprint, "action": "acknowledge", "operator": "dana"}
        assert client.post("/api/alerts/actions", json=body).status_code == 403  # no operator token
        headers = {"X-Operator-Token": OPERATOR_TOKEN}
        acked = client.post("/api/alerts/actions", json=body, headers=headers)
        assert acked.status_code == 200, acked.text
        assert (acked.json()["state"], acked.json()["acted_by"]) == ("acknowledged", "dana")
        snooze = {**body, "action": "snooze", "snooze_s": 3600, "fingerprint": "stage-silent:import|host-1"}
        snoozed = client.post("/api/alerts/actions", json=snooze, headers=headers)
        assert snoozed.json()["state"] == "snoozed"
        assert (
            client.post("/api/alerts/actions", json={**snooze, "snooze_s": 5}, headers=headers).status_code
            == 422
        )
        gone = {**body, "fingerprint": "api-status:elsewhere:orders"}
        assert client.post("/api/alerts/actions", json=gone, headers=headers).status_code == 404
        assert 'data-state="acknowledged"' in client.get("/notifications").text
