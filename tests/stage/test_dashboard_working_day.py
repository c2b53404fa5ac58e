"""Issue #21 points 4-6 through the dashboard app (starlette's TestClient) on a real Redis, no broker:
actions refused before anything is sent (an unreachable broker proves nothing was tried), command
outcomes read back and counted on Tasks, one count of orders per status everywhere (grid, status key,
``ordersync status``), case-insensitive partial search, a refused reversed date range, paging past the
end, the reader's time zone, and the buttons' states on the grid."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from starlette.testclient import TestClient

from ordersync.cli.status import status_report
from ordersync.dashboard import create_app
from ordersync.schemas.codec import encode
from ordersync.schemas.envelope import Envelope
from ordersync.schemas.events import EventDeadLettered, OperatorCommandIssued, OrderImportFailed
from ordersync.schemas.topics import OPS_COMMANDS, ORDERS_ENRICHED, ORDERS_IMPORT_FAILED, order_key
from ordersync.settings import Settings
from ordersync.state.readmodel import ReadModel
from tests.factories import (
    CHANNEL,
    OPERATOR_TOKEN,
    OTHER_CHANNEL,
    SELLER,
    T0,
    Orders,
    dashboard_settings,
    fill_read_model,
    write_channels_file,
)

pytestmark = pytest.mark.stage

#: Nothing listens there: an action that got past the checks would answer 503, not 409/422.
NO_BROKER = "127.0.0.1:1"
#: The grid's range dash (1\u201350 of 300).
DASH = "\u2013"


@pytest.fixture
def model(redis_client: aioredis.Redis, redis_key_prefix: str) -> ReadModel:
    return ReadModel(redis_client, redis_key_prefix, notify_dlq=False)


@pytest.fixture
async def filled(model: ReadModel) -> Orders:
    return await fill_read_model(model)


@pytest.fixture
def settings(redis_url: str, redis_key_prefix: str, tmp_path: Path) -> Settings:
    return dashboard_settings(
        redis_url,
        redis_key_prefix,
        write_channels_file(tmp_path / "channels.yaml"),
        kafka_bootstrap=NO_BROKER,
    )


def _act(client: TestClient, action: str, *orders: tuple[str, str]) -> tuple[int, dict[str, object]]:
    answer = client.post(
        "/api/actions",
        json={"action": action, "orders": [{"channel": c, "amazon_order_id": o} for c, o in orders]},
        headers={"X-Operator-Token": OPERATOR_TOKEN},
    )
    return answer.status_code, answer.json()


async def _command(model: ReadModel, command: str, order_ids: tuple[str, ...], at_s: int) -> Envelope:
    envelope = Envelope.wrap(
        OperatorCommandIssued(command=command, channel=CHANNEL, amazon_order_ids=order_ids, operator="ana"),  # type: ignore[arg-type]
        seller_id=SELLER,
        correlation_id="test",
        occurred_at=T0.replace(year=T0.year + 1).replace(second=at_s % 60),
    )
    await model.apply(OPS_COMMANDS.name, envelope)
    return envelope


def _rows(html: str) -> list[str]:
    return re.findall(r'<tr data-order="([^"]+)"', html)


async def test_actions_are_refused_by_account_and_state_before_anything_is_sent(
    filled: Orders, settings: Settings
) -> None:
    success, failed_import = filled.success[0], filled.import_failed[0]
    with TestClient(create_app(settings)) as client:
        status, body = _act(client, "retry-import", (CHANNEL, success))
        assert status == 409, body
        assert body["error"] == "the action was not sent"
        assert any(success in p and "its import did not fail" in str(p) for p in body["problems"])  # type: ignore[attr-defined]
        status, body = _act(
            client, "retry-writeback", (CHANNEL, failed_import), (CHANNEL, filled.writeback_failed)
        )
        assert status == 409
        assert len(body["problems"]) == 1  # type: ignore[arg-type]
        status, body = _act(client, "ignore", (CHANNEL, filled.writeback_failed))
        assert status == 409
        assert "already imported" in str(body["problems"])
        status, body = _act(client, "unignore", (CHANNEL, failed_import))
        assert status == 409
        # An order of the other account named under this channel, and an order never seen: 422.
        status, body = _act(client, "retry-download", (CHANNEL, filled.pending[0]))
        assert status == 422
        assert f"not an order of {CHANNEL}" in str(body["problems"])
        status, body = _act(
            client, "retry-import", (CHANNEL, "999-9999999-9999999"), (CHANNEL, failed_import)
        )
        assert status == 422
        # Allowed: it gets past the checks and only then fails on the missing broker.
        status, body = _act(client, "retry-import", (CHANNEL, failed_import))
        assert status == 503
        status, body = _act(client, "retry-download", (OTHER_CHANNEL, filled.pending[0]))
        assert status == 503


async def test_the_buttons_follow_the_orders_states(filled: Orders, settings: Settings) -> None:
    with TestClient(create_app(settings)) as client:
        grid = client.get("/", params={"limit": 200}).text
        allowed = dict(re.findall(r'<tr data-order="([^"]+)"[^>]*data-allowed="([^"]*)"', grid))
        assert allowed[filled.import_failed[0]].split() == ["ignore", "retry-download", "retry-import"]
        assert allowed[filled.writeback_failed].split() == ["retry-writeback"]
        assert allowed[filled.ignored].split() == ["unignore"]
        assert allowed[filled.success[0]] == ""
        page = client.get(f"/orders/{SELLER}/{filled.success[0]}").text
        buttons = dict(re.findall(r'data-action="([a-z-]+)" (disabled)?', page))
        assert set(buttons.values()) == {"disabled"}
        page = client.get(f"/orders/{SELLER}/{filled.writeback_failed}").text
        buttons = dict(re.findall(r'data-action="([a-z-]+)" (disabled)?', page))
        assert buttons["retry-writeback"] == ""
        assert buttons["retry-import"] == "disabled"


async def test_command_outcomes_are_read_back_and_counted_on_tasks(
    filled: Orders, settings: Settings, model: ReadModel
) -> None:
    ids = tuple(filled.import_failed)
    command = await _command(model, "retry-import", ids, 1)
    with TestClient(create_app(settings)) as client:
        sent = client.get(f"/api/commands/{command.event_id}").json()
        assert sent["state"] == "sent"
        assert sent["counts"] == {"sent": 3, "done": 0, "failed": 0}
        # The import stage reports: every one failed again.
        for order_id in ids:
            again = Envelope.wrap(
                OrderImportFailed(
                    channel=CHANNEL,
                    amazon_order_id=order_id,
                    reason_code="unknown_stock_code",
                    reason="still unknown",
                ),
                seller_id=SELLER,
                correlation_id="test",
                occurred_at=command.occurred_at.replace(second=(command.occurred_at.second + 5) % 60),
            )
            await model.apply(ORDERS_IMPORT_FAILED.name, again)
        outcome = client.get(f"/api/commands/{command.event_id}").json()
        assert outcome["state"] == "failed"
        assert outcome["counts"] == {"sent": 0, "done": 0, "failed": 3}
        expected = (
            "retry-import: 0 of 3 orders imported again, 3 failed again (unknown_stock_code: still unknown)"
        )
        assert outcome["summary"] == expected
        tasks = client.get("/tasks").text
        assert expected in tasks
        assert f'data-event="{command.event_id}" data-state="failed"' in tasks
        order_page = client.get(f"/orders/{SELLER}/{ids[0]}").text
        assert 'data-outcome="failed"' in order_page
        assert "still unknown" in order_page
        assert client.get("/api/commands/not%20an%20id").status_code == 400
        assert client.get("/api/commands/00000000-0000-0000-0000-000000000000").json()["state"] == "sent"


async def test_a_dead_lettered_command_shows_as_failed_not_sent(
    filled: Orders, settings: Settings, model: ReadModel
) -> None:
    order_id = filled.import_failed[1]
    command = await _command(model, "retry-download", (order_id,), 2)
    letter = EventDeadLettered(
        source_topic=OPS_COMMANDS.name,
        source_partition=0,
        source_offset=4,
        source_key=CHANNEL,
        original_value_b64=base64.b64encode(encode(command)).decode(),
        stage="order-download",
        error_type="AuthError",
        error="Amazon refused the refresh token",
        dead_lettered_at=command.occurred_at,
    )
    await model.apply(
        f"{OPS_COMMANDS.name}.dlq",
        Envelope.wrap(
            letter,
            seller_id=SELLER,
            correlation_id="t",
            occurred_at=command.occurred_at.replace(microsecond=5),
        ),
    )
    with TestClient(create_app(settings)) as client:
        outcome = client.get(f"/api/commands/{command.event_id}").json()
        assert outcome["state"] == "failed"
        assert "Amazon refused the refresh token" in outcome["orders"][0]["reason"]
        assert "Amazon refused the refresh token" in client.get(f"/orders/{SELLER}/{order_id}").text


async def test_one_count_of_failed_orders_everywhere(
    filled: Orders, settings: Settings, model: ReadModel
) -> None:
    # Two orders known only from a dead letter whose record does not decode: Failed, of no channel.
    for n in range(2):
        orphan = f"777-000000{n}-000000{n}"
        letter = EventDeadLettered(
            source_topic=ORDERS_ENRICHED.name,
            source_partition=0,
            source_offset=100 + n,
            source_key=order_key(SELLER, orphan),
            original_value_b64=base64.b64encode(b"not an event").decode(),
            stage="order-import",
            error_type="InvalidEvent",
            error="undecodable",
            dead_lettered_at=T0,
        )
        await model.apply(
            f"{ORDERS_ENRICHED.name}.dlq",
            Envelope.wrap(letter, seller_id=SELLER, correlation_id="t", occurred_at=T0),
        )
    failed = len(filled.failed) + 2
    report = await status_report(model, settings)
    assert report.total["Failed"] == failed
    assert sum(c["Failed"] for c in report.counts.values()) + report.unattributed["Failed"] == failed
    assert report.unattributed["Failed"] == 2
    with TestClient(create_app(settings)) as client:
        assert client.get("/api/orders", params={"status": "Failed"}).json()["total"] == failed
        page = client.get("/").text
        assert re.search(
            rf'id="status-counts">.*?data-status="Failed"[^>]*>Failed <b>{failed}</b>', page, re.S
        )
        total = page[page.index('id="status-key-total"') :]
        assert f"Failed {failed}</a>" in total[: total.index("</td>")]


async def test_search_is_case_insensitive_and_partial(filled: Orders, settings: Settings) -> None:
    with TestClient(create_app(settings)) as client:

        def found(text: str) -> set[str]:
            answer = client.get("/api/orders", params={"q": text, "limit": 500})
            assert answer.status_code == 200, answer.text
            return {row["amazon_order_id"] for row in answer.json()["rows"]}

        assert found(filled.bad_sku.lower()) == set(filled.import_failed)  # BAD-SKU-9
        assert found("sku-9") == set(filled.import_failed)
        assert found("gone") == {filled.ignored}  # GONE-1
        assert found(filled.writeback_failed) == {filled.writeback_failed}
        assert found("0000001-0000001") == {
            f"{p}-0000001-0000001" for p in ("111", "222", "333", "444", "555")
        }
        assert found("222-") == set(filled.import_failed)
        assert found("no-such") == set()
        assert found("*") == set()  # a glob character is a character


async def test_reversed_dates_paging_past_the_end_and_the_time_zone(
    filled: Orders, settings: Settings
) -> None:
    with TestClient(create_app(settings)) as client:
        reversed_range = client.get("/", params={"since": "2026-11-20", "until": "2026-11-01"})
        assert reversed_range.status_code == 400
        assert "the date range is reversed" in reversed_range.text
        assert _rows(reversed_range.text) == []
        assert 'value="2026-11-20"' in reversed_range.text  # the form keeps what was typed
        assert (
            client.get("/api/orders", params={"since": "2026-11-20", "until": "2026-11-01"}).status_code
            == 400
        )

        past = client.get("/", params={"offset": 100000, "limit": 50}).text
        pages = (filled.total - 1) // 50 + 1
        assert f"No orders on page 2001 of {pages}" in past
        assert f"100001{DASH}" not in past
        assert f"100000{DASH}" not in past
        assert _rows(past) == []
        last = client.get("/", params={"offset": (pages - 1) * 50, "limit": 50}).text
        assert f"{(pages - 1) * 50 + 1}{DASH}{filled.total} of {filled.total} orders" in last

        assert "(times UTC)" in client.get("/").text
        refused = client.post("/preferences/timezone", data={"tz": "Mars/Olympus", "next": "/"})
        assert refused.status_code == 400
        chosen = client.post(
            "/preferences/timezone",
            data={"tz": "Asia/Tokyo", "next": "/?status=Failed"},
            follow_redirects=False,
        )
        assert chosen.status_code == 303
        assert chosen.headers["location"] == "/?status=Failed"
        tokyo = client.get("/", params={"q": filled.writeback_failed}).text
        assert "(times Asia/Tokyo)" in tokyo
        purchased = filled.purchase[filled.writeback_failed]
        shown = (purchased.astimezone(__import__("zoneinfo").ZoneInfo("Asia/Tokyo"))).strftime(
            "%Y-%m-%d %H:%M"
        )
        assert shown in tokyo
        assert f"{shown}:00 JST" in tokyo
