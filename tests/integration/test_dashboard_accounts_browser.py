"""Accounts in a real headless browser (Debian's /usr/bin/chromium driven by Playwright), the dashboard
served by uvicorn against the real Redis and the embedded broker: a viewer signs in and cannot act (the
buttons are disabled and say why; a POST forged from the page is refused), an operator signs in and acts
(the command lands on ops.commands under the operator's name), the action shows on the audit page and
reaches ops.audit, and signing out ends the session."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import redis.asyncio as aioredis

from ordersync.dashboard import RunningDashboard
from ordersync.ops.users import UserStore
from ordersync.schemas.events import AuditRecorded, OperatorCommandIssued
from ordersync.schemas.topics import OPS_AUDIT, OPS_COMMANDS
from ordersync.state.readmodel import ReadModel
from tests.factories import CHANNEL, Orders, fill_read_model
from tests.integration.test_dashboard_browser import CHROMIUM, _require_browser
from tests.topics import read_all, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

VIEWER_PASSWORD = "viewer-password-browser"
OPERATOR_PASSWORD = "operator-password-browser"


@pytest.fixture
def names() -> dict[str, str]:
    """This test's user names: the topics are the session's, other tests write on them too."""
    tag = uuid.uuid4().hex[:8]
    return {"viewer": f"vera-{tag}", "operator": f"otto-{tag}"}


@pytest.fixture
async def filled(redis_client: aioredis.Redis, redis_key_prefix: str, names: dict[str, str]) -> Orders:
    users = UserStore(redis_client, redis_key_prefix)
    await users.add(names["viewer"], "viewer", VIEWER_PASSWORD, "test")
    await users.add(names["operator"], "operator", OPERATOR_PASSWORD, "test")
    return await fill_read_model(ReadModel(redis_client, redis_key_prefix, notify_dlq=False))


@pytest.fixture
def dashboard_bootstrap(kafka_bootstrap: str, topics: tuple[str, ...]) -> str:
    """The embedded broker, its topics created: actions land on ops.commands."""
    return kafka_bootstrap


async def _sign_in(page: Any, base: str, name: str, password: str) -> None:
    await page.goto(base + "/login?next=/%3Fstatus%3DFailed")
    await page.fill("#username", name)
    await page.fill("#password", password)
    await page.click("#sign-in")
    await page.wait_for_url("**status=Failed**")


async def _confirm(dialog: Any) -> None:
    await dialog.accept()


_FORGED_POST = """async ([withCsrf, channel, order]) => {
  const headers = { "Content-Type": "application/json" };
  if (withCsrf) { headers["X-CSRF-Token"] = document.querySelector("meta[name='csrf-token']").content; }
  const response = await fetch("/api/actions", {
    method: "POST", credentials: "same-origin", headers: headers,
    body: JSON.stringify({ action: "ignore", orders: [{ channel: channel, amazon_order_id: order }] }),
  });
  return [response.status, (await response.json()).error];
}"""


async def test_a_viewer_cannot_act_an_operator_acts_and_the_audit_page_shows_it(
    *, dashboard: RunningDashboard, filled: Orders, kafka_bootstrap: str, names: dict[str, str]
) -> None:
    _require_browser()
    from playwright.async_api import async_playwright  # noqa: PLC0415 - checked just above

    base = dashboard.base_url
    viewer, operator = names["viewer"], names["operator"]
    chosen = set(filled.import_failed[:2])
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            script_errors: list[str] = []

            # Nobody signed in: the sign-in form, no grid.
            context = await browser.new_context()
            page = await context.new_page()
            page.set_default_timeout(15_000)
            page.on("pageerror", lambda error: script_errors.append(str(error)))
            answer = await page.goto(base + "/")
            assert answer is not None
            assert answer.status == 401
            assert await page.locator("#username").count() == 1

            # The viewer: signed in, reads the grid; every action button disabled, saying why.
            await _sign_in(page, base, viewer, VIEWER_PASSWORD)
            assert await page.get_attribute("#signed-in", "data-role") == "viewer"
            order_id = sorted(chosen)[0]
            await page.check(f"input.row-select[value='{order_id}']")
            ignore = page.locator("button[data-action=ignore]")
            assert await ignore.is_disabled()
            assert "Your role (viewer) may not act" in (await ignore.get_attribute("title") or "")
            assert await page.locator("#operator-token").count() == 0
            assert await page.locator("#operator-name").count() == 0
            # A POST forged from the page itself, with the session's CSRF token or without: refused.
            status, error = await page.evaluate(_FORGED_POST, [True, CHANNEL, order_id])
            assert (status, error) == (
                403,
                "your role (viewer) may not act on orders: an operator or an admin may",
            )
            status, error = await page.evaluate(_FORGED_POST, [False, CHANNEL, order_id])
            assert status == 403
            assert "CSRF" in error
            audit = await page.goto(base + "/audit")
            assert audit is not None
            assert audit.status == 403
            await context.close()

            # The operator: signs in, selects two failed imports and ignores them.
            context = await browser.new_context()
            page = await context.new_page()
            page.set_default_timeout(15_000)
            page.on("pageerror", lambda error: script_errors.append(str(error)))
            page.on("dialog", _confirm)
            await _sign_in(page, base, operator, OPERATOR_PASSWORD)
            assert await page.inner_text("#signed-in") == f"{operator} operator"
            for order_id in chosen:
                await page.check(f"input.row-select[value='{order_id}']")
            assert await page.locator("#operator-name").count() == 0
            await page.click("button[data-action=ignore]")
            await page.wait_for_selector("#action-result.success")
            assert "Ignore sent for 2 orders" in await page.inner_text("#action-result")

            def commands() -> list[OperatorCommandIssued]:
                return [
                    e
                    for e in read_all(kafka_bootstrap, OPS_COMMANDS)
                    if isinstance(e, OperatorCommandIssued) and e.operator == f"dashboard:{operator}"
                ]

            wait_for(commands, timeout_s=30, what="the Ignore command is on ops.commands")
            [command] = commands()
            assert (command.command, set(command.amazon_order_ids)) == ("ignore", chosen)

            # The audit page: the operator's action, and the viewer's refused attempts.
            await page.click("#tab-audit")
            await page.wait_for_url("**/audit")
            rows = page.locator("#audit tbody tr[data-entry]")
            actions = await rows.evaluate_all(
                "rows => rows.map(r => [r.dataset.actor, r.dataset.action, r.dataset.outcome])"
            )
            assert actions[0] == [operator, "order.ignore", "sent"]
            assert [viewer, "order.ignore", "refused"] in actions
            assert [viewer, "sign-in", "sent"] in actions
            sent_row = page.locator(f"#audit tr[data-actor='{operator}'][data-action='order.ignore']")
            shown = await sent_row.inner_text()
            assert all(f"{CHANNEL}/{o}" in shown for o in chosen)
            # Filter: the refused ones only (the select applies itself).
            await page.select_option("select[name=outcome]", "refused")
            await page.wait_for_url("**outcome=refused**")
            outcomes = await rows.evaluate_all("rows => rows.map(r => r.dataset.outcome)")
            assert outcomes
            assert set(outcomes) == {"refused"}

            # Kafka, the record, has the entry too.
            def audited() -> list[AuditRecorded]:
                return [
                    e
                    for e in read_all(kafka_bootstrap, OPS_AUDIT)
                    if isinstance(e, AuditRecorded) and e.actor == operator and e.action == "order.ignore"
                ]

            wait_for(audited, timeout_s=30, what="the audit entry is on ops.audit")
            [entry] = audited()
            assert (entry.outcome, entry.role, entry.via) == ("sent", "operator", "dashboard")

            # Signing out ends the session.
            await page.click("#logout-form button")
            await page.wait_for_url("**/login")
            again = await page.goto(base + "/")
            assert again is not None
            assert again.status == 401
            await context.close()

            assert script_errors == []
        finally:
            await browser.close()
