"""An Amazon outage, end to end, in Debian's chromium (Playwright): the real order-download and
status-projection stages (their own processes, on the embedded broker and Redis) against the simulator;
the simulator then answers 503 to every SP-API call. The account's Orders API turns Red, the alert loop
delivers the alert to a webhook receiver (HTTP on loopback) within a minute, the dashboard's Notifications
page and status key show it, an operator signed in there acknowledges it (the page, the API and the Audit
page say so), and once Amazon answers again the alert resolves and the receiver is told."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from ordersync.dashboard import RunningDashboard
from ordersync.dev.demo import LocalPipeline, local_pipeline
from ordersync.ops.users import UserStore
from ordersync.settings import DEFAULT_PREFIX
from ordersync.simulator.testing import TEST_SELLER, tiny_scenario
from ordersync.state import keys
from tests.factories import dashboard_settings
from tests.integration.test_dashboard_browser import CHROMIUM, _require_browser
from tests.stage.test_alerts import Receiver

pytestmark = [pytest.mark.integration, pytest.mark.timeout(360)]

OPERATOR = "olga-on-call"
OPERATOR_PASSWORD = "operator-password-alerts"
#: How often the status-projection stage evaluates the alert rules (wall seconds).
INTERVAL_S = 5
#: The issue's bound: the alert is delivered within a minute of the outage.
WITHIN_S = 60.0


async def _until(check: Callable[[], Any], *, timeout_s: float, what: str, every_s: float = 0.2) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        await asyncio.sleep(every_s)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hook = Receiver()
    yield hook
    hook.close()


@pytest.fixture
def pipeline(tmp_path: Path, receiver: Receiver) -> Iterator[LocalPipeline]:
    """order-download and status-projection, their own processes, against the simulator (its clock now,
    a minute of Amazon's a second); alerts evaluated every few seconds, delivered to ``receiver``."""
    scenario = tiny_scenario(orders={"count": 3, "history_s": 3600}, time_scale=60, start=None)
    env = {
        "ORDERSYNC_ALERTS__INTERVAL_S": str(INTERVAL_S),
        "ORDERSYNC_ALERTS__WEBHOOK_URLS": json.dumps([receiver.url]),
    }
    with local_pipeline(
        scenario=scenario,
        run_dir=tmp_path / "run",
        stages=("order-download", "status-projection"),
        backoffice=False,
        extra_env=env,
    ) as running:
        yield running


@pytest.fixture
def alerts_dashboard(pipeline: LocalPipeline) -> Iterator[RunningDashboard]:
    """The dashboard on the pipeline's Redis and broker."""
    settings = dashboard_settings(
        pipeline.env["ORDERSYNC_REDIS__URL"],
        pipeline.env.get("ORDERSYNC_REDIS__KEY_PREFIX", DEFAULT_PREFIX),
        Path(pipeline.env["ORDERSYNC_CHANNELS_FILE"]),
        kafka_bootstrap=pipeline.env["ORDERSYNC_KAFKA__BOOTSTRAP"],
    )
    with RunningDashboard(settings) as running:
        yield running


async def _set_faults(pipeline: LocalPipeline, faults: dict[str, float]) -> None:
    """The simulator's fault shares, through its control API (``PUT /_sim/faults``)."""
    assert pipeline.simulator is not None
    async with httpx.AsyncClient() as http:
        answer = await http.put(pipeline.simulator.base_url + "/_sim/faults", json=faults)
    assert answer.status_code == 200, answer.text


async def test_an_outage_reaches_the_webhook_within_a_minute_and_is_acknowledged_in_the_browser(
    pipeline: LocalPipeline, alerts_dashboard: RunningDashboard, receiver: Receiver
) -> None:
    _require_browser()
    from playwright.async_api import async_playwright  # noqa: PLC0415 - checked just above

    channel = pipeline.channel_names()[0]
    fingerprint = f"api-status:{channel}:orders"
    prefix = pipeline.env.get("ORDERSYNC_REDIS__KEY_PREFIX", DEFAULT_PREFIX)
    base = alerts_dashboard.base_url
    account = f"#status-key tr[data-account='{channel}|{TEST_SELLER}'] td[data-api=orders]"

    def deliveries(*, resolved: bool) -> list[dict[str, Any]]:
        return [
            body
            for body in list(receiver.bodies)
            if body["alert"]["fingerprint"] == fingerprint and body["alert"]["resolved"] is resolved
        ]

    redis = aioredis.Redis.from_url(pipeline.env["ORDERSYNC_REDIS__URL"], decode_responses=True)
    await UserStore(redis, prefix).add(OPERATOR, "operator", OPERATOR_PASSWORD, "test")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            context = await browser.new_context()
            page = await context.new_page()
            page.set_default_timeout(15_000)
            script_errors: list[str] = []
            page.on("pageerror", lambda error: script_errors.append(str(error)))

            # The operator signs in and opens the Notifications page.
            await page.goto(base + "/login?next=/notifications")
            await page.fill("#username", OPERATOR)
            await page.fill("#password", OPERATOR_PASSWORD)
            await page.click("#sign-in")
            await page.wait_for_url("**/notifications")
            assert await page.get_attribute("#signed-in", "data-role") == "operator"
            orders_badge = page.locator(account + " .badge")

            async def shown_colour() -> str:
                await page.reload()
                return await orders_badge.inner_text() if await orders_badge.count() else ""

            # Amazon answers: the download's calls make the account Green, the alert loop runs,
            # and nothing about this account has been delivered.
            async def green() -> bool:
                return await shown_colour() == "Green"

            await _until(
                green,
                timeout_s=90,
                every_s=1,
                what="the status key to show the Orders API Green",
            )
            await _until(
                lambda: redis.exists(keys.ALERTS_LOCK.key(prefix)),
                timeout_s=60,
                what="the status-projection stage evaluating the alert rules",
            )
            assert deliveries(resolved=False) == []
            assert await page.locator(f"tr[data-fingerprint='{fingerprint}']").count() == 0

            # The outage: Amazon answers 503 to every SP-API call from now on.
            await _set_faults(pipeline, {"http_503": 1.0})
            outage = time.monotonic()

            (delivered, *_) = await _until(
                lambda: deliveries(resolved=False),
                timeout_s=WITHIN_S + 30,
                every_s=0.1,
                what="the alert delivered",
            )
            to_webhook_s = time.monotonic() - outage
            text = delivered["text"]
            assert text.startswith(
                f"[ordersync] ERROR api-status: {channel} ({TEST_SELLER}) Orders API is Red:"
            ), text
            assert "503" in text
            assert delivered["alert"]["severity"] == "error"

            # The page: the alert firing, the status key Red.
            row = page.locator(f"#alerts tr[data-fingerprint='{fingerprint}']")

            async def row_shown() -> bool:
                await page.reload()
                return await row.count() == 1

            await _until(row_shown, timeout_s=30, every_s=0.5, what="the alert on the page")
            to_page_s = time.monotonic() - outage
            assert await row.get_attribute("data-state") == "firing"
            assert "Orders API is Red" in await row.inner_text()
            assert await orders_badge.inner_text() == "Red"
            assert "503" in await page.locator(account + " .reason").inner_text()
            kinds = await page.locator("#notifications tr[data-kind=alert]").all_inner_texts()
            assert any("Orders API is Red" in k for k in kinds)
            print(
                f"\noutage -> webhook: {to_webhook_s:.1f} s; outage -> page: {to_page_s:.1f} s "
                f"(alert interval {INTERVAL_S} s)"
            )
            assert to_webhook_s < WITHIN_S

            # The operator acknowledges it on the page (signed in: no name asked, no prompt).
            await row.locator("button[data-alert-action=acknowledge]").click()
            await page.wait_for_selector(
                f"#alerts tr[data-fingerprint='{fingerprint}'][data-state=acknowledged]"
            )
            assert f"acknowledged by {OPERATOR}" in await row.inner_text()
            assert await row.locator("button[data-alert-action=acknowledge]").is_disabled()
            api = await page.request.get(base + "/api/alerts")
            assert api.status == 200
            (record,) = [a for a in (await api.json())["active"] if a["alert"]["fingerprint"] == fingerprint]
            assert (record["state"], record["acted_by"]) == ("acknowledged", OPERATOR)

            # The Audit page has it, under the operator's name.
            await page.click("#tab-audit")
            await page.wait_for_url("**/audit")
            audited = page.locator(f"#audit tr[data-actor='{OPERATOR}'][data-action='alert.acknowledge']")
            assert await audited.count() == 1
            assert await audited.get_attribute("data-outcome") == "sent"
            assert fingerprint in await audited.inner_text()

            # Acknowledged: still firing while the outage lasts, never delivered again.
            await asyncio.sleep(2 * INTERVAL_S + 1)
            assert len(deliveries(resolved=False)) == 1

            # Amazon answers again: the alert resolves, the receiver is told, the page says so.
            await _set_faults(pipeline, {})
            recovered = time.monotonic()

            (announced, *_) = await _until(
                lambda: deliveries(resolved=True), timeout_s=180, every_s=0.2, what="the alert resolved"
            )
            print(f"recovery -> resolved on the webhook: {time.monotonic() - recovered:.1f} s")
            assert announced["text"].startswith("[ordersync] RESOLVED api-status")
            await page.goto(base + "/notifications")
            assert await page.locator(f"#alerts tr[data-fingerprint='{fingerprint}']").count() == 0
            assert "Orders API is Red" in (await page.locator("#alerts-resolved").text_content() or "")
            assert await orders_badge.inner_text() != "Red"
            assert script_errors == []
        finally:
            await browser.close()
            await redis.aclose()
