"""The dashboard in a real headless browser (Debian's /usr/bin/chromium driven by Playwright), served by
uvicorn on a free port against the real Redis and the embedded broker: load, filter, search, open an
order, act on two orders (the event lands on ops.commands), export the filter as CSV.

Needs ``apt-get install chromium`` (``make browser``; CI does it). Without it the test fails, saying so.
"""

from __future__ import annotations

import csv
import io
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from ordersync.dashboard import RunningDashboard
from ordersync.schemas.events import OperatorCommandIssued
from ordersync.schemas.topics import OPS_COMMANDS
from ordersync.state.readmodel import OrderFilter, ReadModel, write_orders_csv
from tests.factories import (
    CHANNEL,
    OPERATOR_TOKEN,
    SELLER,
    Orders,
)
from tests.topics import read_all, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

CHROMIUM = Path("/usr/bin/chromium")
_INSTALL = "install it with `apt-get install -y chromium` as root, or `make browser`"


def _require_browser() -> None:
    # CI installs chromium (.ci/run): a missing browser is a broken machine, never a reason to skip.
    if not CHROMIUM.exists() or not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"the browser test needs Debian's chromium at {CHROMIUM}: {_INSTALL}", pytrace=False)
    try:
        import playwright  # noqa: F401, PLC0415
    except ImportError:
        pytest.fail(
            "the browser test needs Playwright for Python: `.venv/bin/pip install -e '.[dev]'`", pytrace=False
        )


@pytest.fixture
def dashboard_bootstrap(kafka_bootstrap: str, topics: tuple[str, ...]) -> str:
    """The embedded broker, its topics created: actions land on ops.commands."""
    return kafka_bootstrap


def _ignore_commands(bootstrap: str, operator: str) -> list[OperatorCommandIssued]:
    """This test's Ignore commands: the topic is the session's, other tests publish on it too."""
    return [
        event
        for event in read_all(bootstrap, OPS_COMMANDS)
        if isinstance(event, OperatorCommandIssued)
        and event.command == "ignore"
        and event.operator == f"dashboard:{operator}"
    ]


async def _confirm(dialog: Any) -> None:
    await dialog.accept()


async def _confirm_and_give_token(dialog: Any) -> None:
    # The confirmation first, then the prompt for the operator token.
    await dialog.accept(OPERATOR_TOKEN if dialog.type == "prompt" else "")


async def _grid_ids(page: Any) -> list[str]:
    ids: list[str] = await page.locator("#orders tbody tr[data-order]").evaluate_all(
        "rows => rows.map(r => r.dataset.order)"
    )
    return ids


async def test_load_filter_search_detail_act_and_export_in_chromium(
    *,
    dashboard: RunningDashboard,
    filled: Orders,
    kafka_bootstrap: str,
    redis_client: aioredis.Redis,
    redis_key_prefix: str,
    tmp_path: Path,
) -> None:
    _require_browser()
    from playwright.async_api import async_playwright  # noqa: PLC0415 - checked just above

    base = dashboard.base_url
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            context = await browser.new_context(accept_downloads=True)
            page = await context.new_page()
            page.set_default_timeout(15_000)
            script_errors: list[str] = []
            page.on("pageerror", lambda error: script_errors.append(str(error)))

            # Load: the grid's first page of 50 and the status key of both accounts.
            await page.goto(base + "/")
            assert len(await _grid_ids(page)) == 50
            assert f"of {filled.total} orders" in await page.inner_text("#grid-summary")
            key = await page.inner_text("#status-key")
            assert CHANNEL in key
            assert "other-ca" in key
            assert "Orders API" in key

            # Filter to Failed: the select applies itself.
            await page.select_option("select[name=status]", "Failed")
            await page.wait_for_url("**status=Failed**")
            assert set(await _grid_ids(page)) == filled.failed
            statuses = await page.locator("#orders tbody tr").evaluate_all(
                "rows => rows.map(r => r.dataset.status)"
            )
            assert set(statuses) == {"Failed"}

            # Search by order id, from the unfiltered grid.
            await page.goto(base + "/")
            await page.fill("input[name=q]", filled.writeback_failed)
            await page.press("input[name=q]", "Enter")
            await page.wait_for_url(f"**q={filled.writeback_failed}**")
            assert await _grid_ids(page) == [filled.writeback_failed]

            # The order's detail: shipment with carrier and tracking, the raw error, the history.
            await page.click(f"#orders a[href='/orders/{SELLER}/{filled.writeback_failed}']")
            await page.wait_for_url(f"**/orders/{SELLER}/{filled.writeback_failed}")
            assert filled.writeback_failed in await page.inner_text("h1")
            shipments = await page.inner_text("#order-shipments")
            assert filled.tracking_number in shipments
            assert "UPS" in shipments
            assert "The carrier code is not valid for this marketplace" in await page.inner_text(
                "#order-errors"
            )
            assert "ShipmentFailed" in await page.inner_text("#order-history")

            # Act: select two failed imports, Ignore. A wrong token in the field is refused...
            await page.goto(base + "/?status=Failed")
            chosen = set(filled.import_failed[:2])
            operator = f"browser-{uuid.uuid4().hex[:8]}"
            await page.fill("#operator-name", operator)
            for order_id in chosen:
                await page.check(f"input.row-select[value='{order_id}']")
            assert "2 selected" in await page.inner_text("#selection-count")
            page.on("dialog", _confirm)
            await page.fill("#operator-token", "not-the-token")
            await page.click("button[data-action=ignore]")
            await page.wait_for_selector("#action-result.error")
            assert "refused" in await page.inner_text("#action-result")
            assert not _ignore_commands(kafka_bootstrap, operator)

            # ... then, the field emptied, the page asks for the token and the command is sent.
            page.remove_listener("dialog", _confirm)
            page.on("dialog", _confirm_and_give_token)
            await page.fill("#operator-token", "")
            await page.click("button[data-action=ignore]")
            await page.wait_for_selector("#action-result.success")
            assert "Ignore sent for 2 orders" in await page.inner_text("#action-result")

            wait_for(lambda: _ignore_commands(kafka_bootstrap, operator), timeout_s=30)
            [command] = _ignore_commands(kafka_bootstrap, operator)
            assert set(command.amazon_order_ids) == chosen
            assert command.channel == CHANNEL

            # Export the current filter: the downloaded file is the CLI's export of the same filter.
            async with page.expect_download() as download_info:
                await page.click("#export-csv")
            download = await download_info.value
            saved = tmp_path / "export.csv"
            await download.save_as(saved)
            exported = saved.read_bytes().decode()  # as sent: CSV's own \r\n line ends
            rows = list(csv.DictReader(io.StringIO(exported)))
            assert {row["amazon_order_id"] for row in rows} == filled.failed
            expected = io.StringIO()
            await write_orders_csv(
                ReadModel(redis_client, redis_key_prefix, notify_dlq=False),
                OrderFilter(status="Failed"),
                expected,
            )
            assert exported == expected.getvalue()

            assert script_errors == []
        finally:
            await browser.close()
