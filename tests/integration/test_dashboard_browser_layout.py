"""The orders grid for a working day, in Debian's chromium (Playwright), on the real Redis, no broker:
at 1366x768 at least 15 orders are visible above the fold and the order id stays visible when the grid
scrolls sideways; the keyboard (/ search, j/k, Enter); on a 390x844 phone the orders come first (the
filters folded, the status key below the grid). Screenshots of both go to build/screenshots/ (not
committed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ordersync.dashboard import RunningDashboard
from tests.factories import Orders
from tests.integration.test_dashboard_browser import CHROMIUM, _require_browser

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"


_VISIBLE_ROWS = """() => {
  const height = window.innerHeight;
  return Array.from(document.querySelectorAll('#orders tbody tr[data-order]'))
    .filter(r => { const b = r.getBoundingClientRect(); return b.top >= 0 && b.bottom <= height; }).length;
}"""

_ID_CELL = """() => {
  const b = document.querySelector('#orders tbody tr[data-order] td.order-id').getBoundingClientRect();
  const at = document.elementFromPoint(b.left + 4, b.top + b.height / 2);
  return {left: b.left, right: b.right, hit: !!(at && at.closest('td.order-id'))};
}"""


async def test_the_grid_at_1366x768_and_on_a_phone(dashboard: RunningDashboard, filled: Orders) -> None:
    _require_browser()
    from playwright.async_api import async_playwright  # noqa: PLC0415 - checked just above

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            page = await browser.new_page(viewport={"width": 1366, "height": 768})
            page.set_default_timeout(15_000)
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            await page.goto(dashboard.base_url + "/")
            await page.screenshot(path=str(SCREENSHOTS / "grid-1366x768.png"))
            visible = await page.evaluate(_VISIBLE_ROWS)
            assert visible >= 15, f"only {visible} orders above the fold at 1366x768"

            # Sideways: the grid scrolls, the order id stays where it was, on top.
            before = await page.evaluate(_ID_CELL)
            scrolled = await page.evaluate(
                "() => { const w = document.querySelector('#orders').closest('.grid-wrap');"
                " w.scrollLeft = w.scrollWidth; return w.scrollLeft; }"
            )
            assert scrolled > 100, "the grid is not wider than the window: nothing to scroll"
            after = await page.evaluate(_ID_CELL)
            assert after["left"] == pytest.approx(before["left"], abs=1)
            assert after["hit"], "the order id column is covered after scrolling sideways"
            await page.screenshot(path=str(SCREENSHOTS / "grid-1366x768-scrolled.png"))

            # Keyboard: / focuses the search; j j moves to the second row; Enter opens it.
            await page.keyboard.press("/")
            assert await page.evaluate("() => document.activeElement.id") == "search"
            await page.keyboard.press("Escape")
            await page.keyboard.press("j")
            await page.keyboard.press("j")
            second = await page.evaluate(
                "() => document.querySelectorAll('#orders tbody tr[data-order]')[1].dataset.order"
            )
            assert await page.evaluate("() => document.activeElement.dataset.order") == second
            await page.keyboard.press("k")
            await page.keyboard.press("j")
            await page.keyboard.press("Enter")
            await page.wait_for_url(f"**/orders/*/{second}")
            assert errors == []

            phone = await browser.new_page(
                viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
            )
            await phone.goto(dashboard.base_url + "/")
            await phone.screenshot(path=str(SCREENSHOTS / "grid-390x844.png"))
            assert not await phone.evaluate("() => document.querySelector('#filters-box').open")
            grid_top = await phone.evaluate(
                "() => document.querySelector('#orders').getBoundingClientRect().top"
            )
            key_top = await phone.evaluate(
                "() => document.querySelector('#status-key').getBoundingClientRect().top"
            )
            assert grid_top < key_top
            assert grid_top < 844 / 2, f"the orders start at {grid_top}px on a phone"
            assert await phone.evaluate(_VISIBLE_ROWS) >= 5
        finally:
            await browser.close()
