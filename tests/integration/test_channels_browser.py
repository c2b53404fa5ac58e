"""Adding a channel with Amazon in a real browser (Debian's chromium, Playwright), against the running
pipeline: an admin starts the website authorization on the Channels page, consents on the simulator's
Seller Central page as the second seller, comes back to the dashboard, and the channel is saved (its
refresh token in the secret store, its marketplaces discovered); the stages, never restarted, download
its orders, which show in the grid, and import them once the admin uploaded the channel's listings.
Then the admin edits a setting of the channel (its sales-order prefix) and the orders imported from
then on carry it."""

from __future__ import annotations

import asyncio
import re
import secrets
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from ordersync.dashboard import RunningDashboard
from ordersync.dev.demo import local_pipeline
from ordersync.ops.users import UserStore
from ordersync.settings import DEFAULT_PREFIX, DashboardSettings, Settings
from ordersync.simulator.testing import TEST_APPLICATION, TEST_SELLER, tiny_scenario
from ordersync.state.channel_registry import read_records
from ordersync.state.listings import ListingRow, listings_csv
from tests.integration.test_dashboard_browser import CHROMIUM, _require_browser

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

SECOND = "A2SECONDSELLER"
NEW_CHANNEL = "second-us"
ADMIN, ADMIN_PASSWORD = "ada", "admin-password-channels"


def _orders(base: str, cookies: dict[str, str], channel: str) -> list[dict[str, Any]]:
    found = httpx.get(
        base + "/api/orders", params={"channel": channel, "limit": "200"}, cookies=cookies, timeout=10
    )
    found.raise_for_status()
    rows: list[dict[str, Any]] = found.json()["rows"]
    return rows


async def _until(condition: Any, timeout_s: float, what: str, seen: Any = None) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await asyncio.to_thread(condition):
        if asyncio.get_running_loop().time() > deadline:
            found = await asyncio.to_thread(seen) if seen is not None else None
            raise AssertionError(f"timed out waiting until {what}; seen: {found}")
        await asyncio.sleep(1)


def test_a_channel_added_with_amazon_in_the_browser_brings_its_orders_without_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _require_browser()
    second = {
        "seller_id": SECOND,
        "region": "na",
        "marketplaces": ["ATVPDKIKX0DER", "A2EUQ1WTGCTBG2"],
        "applications": [{**TEST_APPLICATION, "refresh_token": "Atzr|second-seller"}],
        "catalogue_size": 3,
        # Orders keep arriving (two hours of Amazon's time, two minutes here): some after the edit.
        "orders": {"count": 30, "history_s": 600, "arrival_window_s": 10800, "pending_share": 0.0},
    }
    scenario = tiny_scenario(
        orders={"count": 2, "history_s": 3600}, extra_sellers=[second], time_scale=60, start=None
    )
    with local_pipeline(
        scenario=scenario,
        run_dir=tmp_path / "run",
        stages=("order-download", "item-fetch", "import", "status-projection"),
        backoffice=False,
        file_sellers=(TEST_SELLER,),
        extra_env={"ORDERSYNC_STAGE__CHANNEL_REFRESH_S": "1"},
    ) as pipeline:
        assert pipeline.simulator is not None
        for name, value in pipeline.env.items():
            monkeypatch.setenv(name, value)
        sim = pipeline.simulator.base_url
        monkeypatch.setenv("ORDERSYNC_AMAZON__AUTHORIZATION__APPLICATION_ID", "amzn1.sp.solution.test")
        monkeypatch.setenv("ORDERSYNC_AMAZON__AUTHORIZATION__CLIENT_ID", TEST_APPLICATION["client_id"])
        monkeypatch.setenv(
            "ORDERSYNC_AMAZON__AUTHORIZATION__CLIENT_SECRET", TEST_APPLICATION["client_secret"]
        )
        monkeypatch.setenv("ORDERSYNC_AMAZON__AUTHORIZATION__SELLER_CENTRAL_URL", sim)
        monkeypatch.setenv("ORDERSYNC_AMAZON__AUTHORIZATION__STATE_SECRET", secrets.token_urlsafe(32))
        base_settings = Settings()
        settings = base_settings.model_copy(update={"dashboard": DashboardSettings()})
        prefix = settings.redis.key_prefix
        assert prefix == DEFAULT_PREFIX

        async def add_admin() -> None:
            async with aioredis.Redis.from_url(settings.redis.url) as client:
                await UserStore(client, prefix).add(ADMIN, "admin", ADMIN_PASSWORD, "test")

        asyncio.run(add_admin())
        with RunningDashboard(settings) as dashboard:
            # What the back-office knows of the new seller's products: its listings file, uploaded on the
            # Listings page once the channel exists.
            products = pipeline.simulator.state.catalogue(SECOND)
            listings = tmp_path / "second-listings.csv"
            listings.write_text(
                listings_csv([ListingRow(f"STK-{p.sku}", p.sku, p.asin, p.ean) for p in products])
            )
            asyncio.run(_in_the_browser(dashboard.base_url, sim, settings, tmp_path, listings))


async def _result_says(page: Any, word: str) -> None:
    """The page's action result says ``word`` (within 30 s); else what it says."""
    for _ in range(300):
        said = await page.locator("#action-result").inner_text()
        if word in said.lower():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the page said {said!r}, not {word!r}")


async def _accept(dialog: Any) -> None:
    await dialog.accept()


async def _in_the_browser(base: str, sim: str, settings: Settings, tmp_path: Path, listings: Path) -> None:
    from playwright.async_api import async_playwright  # noqa: PLC0415 - checked by the caller

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM)
        page = await browser.new_page(viewport={"width": 1366, "height": 768})
        await page.goto(base + "/login?next=/channels")
        await page.fill("#username", ADMIN)
        await page.fill("#password", ADMIN_PASSWORD)
        await page.click("#sign-in")
        await page.wait_for_url("**/channels")
        assert await page.locator(f"tr[data-channel='{NEW_CHANNEL}']").count() == 0

        # Authorize with Amazon: the simulator's Seller Central asks the seller's consent.
        await page.fill("#authorize-form input[name=name]", NEW_CHANNEL)
        await page.select_option("#authorize-form select[name=region]", "na")
        await page.click("#authorize-form button[type=submit]")
        await page.wait_for_url(re.compile(re.escape(sim) + r"/apps/authorize/consent.*"))
        await page.select_option("#selling_partner_id", SECOND)
        await page.click("#confirm")
        await page.wait_for_url("**/channels?authorized=*", timeout=30_000)
        assert NEW_CHANNEL in await page.locator("#authorized-notice").inner_text()
        row = page.locator(f"tr[data-channel='{NEW_CHANNEL}']")
        assert await row.locator("td").nth(1).inner_text() == SECOND
        # Both marketplaces the seller takes part in were discovered.
        assert await row.locator("td").nth(3).inner_text() == "ATVPDKIKX0DER, A2EUQ1WTGCTBG2"
        await page.screenshot(path=str(tmp_path / "channels-authorized.png"))

        # The record names its secrets in the store; none is on Kafka.
        record = read_records(settings)[NEW_CHANNEL]
        assert record.channel is not None
        assert record.channel.stored_secrets() == ["client_id", "client_secret", "refresh_token"]

        # No stage was restarted: the new seller's orders come down (and wait for the channel's
        # listings to be imported: Unknown stock code until then).
        cookies = {c["name"]: c["value"] for c in await page.context.cookies()}
        await _until(
            lambda: len(_orders(base, cookies, NEW_CHANNEL)) >= 3,
            timeout_s=120,
            what="the added channel's orders show in the grid",
        )
        page.on("dialog", _accept)
        await page.goto(base + f"/listings?channel={NEW_CHANNEL}")
        await page.set_input_files("#listings-file", str(listings))
        await page.click("#listings-upload")
        await _result_says(page, "loaded")
        await _until(
            lambda: any(o.get("sales_order_code") for o in _orders(base, cookies, NEW_CHANNEL)),
            timeout_s=120,
            what="an order of the added channel imported",
            seen=lambda: [
                (o["status"], o["download_status"], o["import_status"], o["error_message"])
                for o in _orders(base, cookies, NEW_CHANNEL)
            ],
        )
        before = {o["amazon_order_id"] for o in _orders(base, cookies, NEW_CHANNEL)}

        # Edit a setting: the sales-order prefix. Orders imported from then on carry it.
        await page.goto(base + "/channels")
        editor = page.locator(f"details.channel-editor[data-channel='{NEW_CHANNEL}']")
        await editor.locator("summary").click()
        text = editor.locator("textarea[name=yaml]")
        definition = await text.input_value()
        await text.fill(definition.rstrip() + "\nsales_order_prefix: WEB\n")
        await editor.locator("button[type=submit]").click()
        await _result_says(page, "done")  # (then the page reloads)
        edited = read_records(settings)[NEW_CHANNEL].channel
        assert edited is not None
        assert edited.sales_order_prefix == "WEB"
        await _until(
            lambda: any(
                str(o.get("sales_order_code") or "").startswith("WEB")
                for o in _orders(base, cookies, NEW_CHANNEL)
                if o["amazon_order_id"] not in before
            ),
            timeout_s=150,
            what="an order imported with the edited prefix",
        )
        imported = [o for o in _orders(base, cookies, NEW_CHANNEL) if o.get("sales_order_code")]
        assert any(not str(o["sales_order_code"]).startswith("WEB") for o in imported)
        await page.goto(base + "/audit")
        audit = await page.locator("main").inner_text()
        assert "channel.authorize" in audit
        assert "channel.save" in audit
        await browser.close()
