"""The Trends page in Debian's chromium (Playwright), on the real Redis: uPlot (bundled, no CDN) draws
each chart into a canvas under the page's strict Content-Security-Policy, which reports no violation,
and the range switch redraws them. A screenshot goes to build/screenshots/ (not committed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from ordersync.dashboard import RunningDashboard
from ordersync.schemas.events import OrderImportFailed
from ordersync.schemas.topics import ORDERS_IMPORT_FAILED
from ordersync.state.health import HealthBoard
from ordersync.state.readmodel import ReadModel
from tests.factories import CHANNEL, SELLER, Orders, RecordedRun
from tests.integration.test_dashboard_browser import CHROMIUM, _require_browser

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"

#: Every CSP violation the page's document sees, kept where the test can read it (the init script is the
#: browser's, not the page's: the CSP does not apply to it).
_WATCH_CSP = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__cspViolations.push(e.violatedDirective + ' ' + (e.blockedURI || 'inline'));
});
"""

#: Each chart: a uPlot root holding a canvas of some size with pixels drawn on it.
_CHARTS = """() => Array.from(document.querySelectorAll('.trend-chart')).map((chart) => {
  const canvas = chart.querySelector('.uplot canvas');
  if (!canvas) {
    return {id: chart.id, uplot: !!chart.querySelector('.uplot'), width: 0, height: 0, inked: 0};
  }
  const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let inked = 0;
  for (let i = 3; i < pixels.length; i += 4) { if (pixels[i] !== 0) { inked++; } }
  return {id: chart.id, uplot: true, width: canvas.width, height: canvas.height, inked: inked};
})"""


@pytest.fixture
async def filled(redis_client: aioredis.Redis, redis_key_prefix: str) -> Orders:
    """Orders of the last day on the dashboard's own clock (the host's): downloaded, imported, invoiced
    and confirmed an hour or so later, one import failure; SP-API calls in the last hours."""
    model = ReadModel(redis_client, redis_key_prefix, notify_dlq=False, notify_late=False)
    now = datetime.now(UTC)
    run = RecordedRun()
    orders = Orders()
    for n, hours_ago in enumerate((22, 17, 12, 9, 6, 4, 2)):
        order_id = f"111-{n:07d}-{n:07d}"
        run.clock = now - timedelta(hours=hours_ago)
        run.order_flow(order_id)
        run.imported(order_id, f"SO{n:08d}")
        request = run.shipped(order_id, f"SO{n:08d}")
        run.clock += timedelta(minutes=20 + 15 * n)
        run.confirmed(request)
        orders.success.append(order_id)
    run.clock = now - timedelta(hours=5)
    failed = "222-0000001-0000001"
    run.order_flow(failed, sku="BAD-SKU-9")
    run.add(
        ORDERS_IMPORT_FAILED.name,
        OrderImportFailed(
            channel=CHANNEL, amazon_order_id=failed, reason_code="unknown_stock_code", reason="BAD-SKU-9"
        ),
    )
    orders.import_failed.append(failed)
    for topic, envelope in run.events:
        await model.apply(topic, envelope)
    board = HealthBoard(redis_client, redis_key_prefix)
    for hours_ago in range(12):
        for minute in range(0, 60, 20):
            at = now - timedelta(hours=hours_ago, minutes=minute)
            await board.record_call(CHANNEL, SELLER, "getOrders", "ok", at=at)
        await board.record_call(CHANNEL, SELLER, "confirmShipment", "ok", at=now - timedelta(hours=hours_ago))
    return orders


async def test_the_trends_page_draws_its_charts_with_uplot_under_the_csp(dashboard: RunningDashboard) -> None:
    _require_browser()
    from playwright.async_api import async_playwright  # noqa: PLC0415 - checked just above

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            page = await browser.new_page(viewport={"width": 1366, "height": 900})
            page.set_default_timeout(15_000)
            errors: list[str] = []
            console: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("console", lambda m: console.append(f"{m.type}: {m.text} @ {m.location.get('url')}"))
            await page.add_init_script(_WATCH_CSP)

            await page.goto(dashboard.base_url + "/trends")
            await page.wait_for_selector('#trends[data-charts="4"]')
            charts = await page.evaluate(_CHARTS)
            assert [c["id"] for c in charts] == ["chart-orders", "chart-failures", "chart-lag", "chart-quota"]
            for chart in charts:
                assert chart["uplot"], f"{chart['id']}: no uPlot root"
                assert chart["width"] > 300, chart
                assert chart["height"] > 100, chart
                assert chart["inked"] > 1000, f"{chart['id']}: the canvas is blank"
            # The tables hold the numbers the charts draw.
            downloaded = await page.inner_text('#trend-orders tfoot td[data-total="downloaded"]')
            assert downloaded == "8"
            await page.screenshot(path=str(SCREENSHOTS / "trends-1366.png"), full_page=True)

            # The range switch: the month, hour by hour (720 points), drawn the same way.
            await page.click('a[data-range="30d"]')
            await page.wait_for_url("**/trends?range=30d")
            await page.wait_for_selector('#trends[data-charts="4"][data-range="30d"]')
            month = await page.evaluate(_CHARTS)
            assert all(c["inked"] > 1000 for c in month), month

            violations = await page.evaluate("() => window.__cspViolations")
            assert violations == []
            assert [m for m in console if "Content Security Policy" in m or "Refused to" in m] == []
            # (A browser may ask for /favicon.ico, which the dashboard does not serve.)
            assert [m for m in console if m.startswith("error") and "favicon" not in m] == []
            assert errors == []
        finally:
            await browser.close()
