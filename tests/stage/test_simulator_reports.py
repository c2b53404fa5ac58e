"""The simulator's Reports API over HTTP with ordersync's SP-API client: the order report requested,
waited for on the simulated clock, downloaded from its presigned URL and parsed, against the
simulator's truth; throttling, statuses and an expired document as the client reports them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from ordersync.amazon.client import SpApiClient
from ordersync.amazon.reports import ALL_ORDERS_REPORT, latest_versions, parse_all_orders_report
from ordersync.channels import Channel, LwaCredentials, SecretRef
from ordersync.errors import AmazonRejected, AmazonThrottled
from ordersync.ratelimit import InMemoryRateLimiter
from ordersync.ratelimit.plans import PlanBook
from ordersync.settings import AmazonSettings
from ordersync.simulator import RunningSimulator, SimulatorState
from ordersync.simulator.clock import parse_iso
from ordersync.simulator.testing import (
    TEST_CLIENT_ID,
    TEST_CLIENT_SECRET,
    TEST_REFRESH_TOKEN,
    TEST_SELLER,
    tiny_scenario,
)

pytestmark = pytest.mark.stage

US = "ATVPDKIKX0DER"
CA = "A2EUQ1WTGCTBG2"
#: Reports wait 20 s, take 100 s and are 15 minutes behind (simulated seconds).
REPORTS = {"queue_delay_s": [20, 20], "duration_s": [100, 100], "lag_s": [900, 900]}
HOUR = timedelta(hours=1)


def make_channel() -> Channel:
    return Channel(
        name="test-reports",
        seller_id=TEST_SELLER,
        region="na",
        marketplaces=(US,),
        orders_api="2026-01-01",
        credentials=LwaCredentials(
            client_id=SecretRef(value=SecretStr(TEST_CLIENT_ID)),
            client_secret=SecretRef(value=SecretStr(TEST_CLIENT_SECRET)),
            refresh_token=SecretRef(value=SecretStr(TEST_REFRESH_TOKEN)),
        ),
    )


@dataclass
class Harness:
    sim: RunningSimulator
    http: httpx.AsyncClient
    client: SpApiClient

    async def control(self, method: str, path: str, body: Any = None) -> Any:
        response = await self.http.request(method, self.sim.base_url + path, json=body)
        assert response.status_code < 300, response.text
        return response.json() if response.content else None

    async def advance(self, seconds: float) -> None:
        await self.control("POST", "/_sim/clock/advance", {"seconds": seconds})

    async def now(self) -> datetime:
        clock = await self.control("GET", "/_sim/clock")
        return datetime.fromtimestamp(clock["now_epoch"], UTC)


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    scenario = tiny_scenario(seller={"marketplaces": [US, CA]}, reports=REPORTS)
    async with RunningSimulator(SimulatorState(scenario)) as sim, httpx.AsyncClient(timeout=10) as http:
        amazon = AmazonSettings(endpoint=sim.base_url, lwa_endpoint=sim.lwa_url)
        # Amazon's plans 100,000 times faster in the client's limiter: the simulator's own buckets (on a
        # frozen clock) are what throttles.
        limiter = InMemoryRateLimiter(plans=PlanBook(time_scale=100_000))
        client = SpApiClient(channel=make_channel(), amazon=amazon, limiter=limiter, http=http)
        yield Harness(sim, http, client)


def as_of(order: dict[str, Any], cutoff: float) -> datetime | None:
    """The order's last update at ``cutoff`` by the truth's history (None: it did not exist yet)."""
    stamps = [parse_iso(v["at"]) for v in order["history"] if parse_iso(v["at"]) <= cutoff]
    return datetime.fromtimestamp(max(stamps), UTC) if stamps else None


async def test_the_order_report_lists_the_truths_orders_of_the_window_as_of_its_lag(harness: Harness) -> None:
    client = harness.client
    start = await harness.now()
    canadian = await harness.control("POST", "/_sim/orders", {"marketplace_id": CA, "item_count": 2})
    changed = await harness.control("POST", "/_sim/orders", {"items": [{"quantity": 2}]})
    await harness.advance(3600)
    await harness.control("POST", f"/_sim/orders/{changed['amazon_order_id']}/status", {"status": "Canceled"})
    recent = await harness.control("POST", "/_sim/orders", {"item_count": 3})
    await harness.advance(600)  # the cancellation and the last order are 10 minutes old: within the lag
    end = await harness.now()

    report_id = await client.create_report(ALL_ORDERS_REPORT, data_start=start, data_end=end)
    status = await client.get_report(report_id)
    assert (status.report_id, status.report_type) == (report_id, ALL_ORDERS_REPORT)
    assert (status.processing_status, status.report_document_id, status.done) == ("IN_QUEUE", None, False)
    assert (status.data_start, status.data_end, status.created) == (start, end, end)
    await harness.advance(119)
    assert (await client.get_report(report_id)).processing_status == "IN_PROGRESS"
    await harness.advance(1)
    status = await client.get_report(report_id)
    assert status.processing_status == "DONE"
    assert status.report_document_id is not None

    document = await client.get_report_document(status.report_document_id)
    lines = parse_all_orders_report(document.decode("utf-8"))
    latest = latest_versions(lines)

    orders = (await harness.control("GET", "/_sim/orders"))["orders"]
    truth = {o["amazon_order_id"]: o for o in orders}
    cutoff = parse_iso((await harness.control("GET", f"/_sim/reports/{report_id}"))["cutoff"])
    assert cutoff == end.timestamp() - 900
    expected = {
        order_id: at
        for order_id, order in truth.items()
        if (at := as_of(order, cutoff)) is not None and start <= at <= end
    }
    # Exactly the truth's orders changed in the window, each at the version the report's lag shows.
    assert {order_id: line.last_updated for order_id, line in latest.items()} == expected
    # Regional: the Canadian order is there though the channel (and the request) is US only.
    assert canadian["amazon_order_id"] in latest
    assert latest[canadian["amazon_order_id"]].sales_channel == "Amazon.ca"
    # Within the lag: the cancellation is not in it yet, and the newest order is absent.
    assert latest[changed["amazon_order_id"]].order_status == "Shipping"
    assert recent["amazon_order_id"] not in latest
    # One line per item.
    for order_id in expected:
        assert len([line for line in lines if line.amazon_order_id == order_id]) == len(
            truth[order_id]["items"]
        )

    # Later, the next report has what the lag held back.
    await harness.advance(900)
    later = await client.create_report(ALL_ORDERS_REPORT, data_start=start, data_end=await harness.now())
    await harness.advance(120)
    status = await client.get_report(later)
    assert status.report_document_id is not None
    document = await client.get_report_document(status.report_document_id)
    latest = latest_versions(parse_all_orders_report(document.decode()))
    assert latest[changed["amazon_order_id"]].order_status == "Cancelled"
    assert recent["amazon_order_id"] in latest


async def test_the_client_meets_throttling_empty_and_fatal_reports_and_an_expired_document(
    harness: Harness,
) -> None:
    client = harness.client
    now = await harness.now()
    for _ in range(14):
        await client.create_report(ALL_ORDERS_REPORT, data_start=now - HOUR, data_end=now)
    empty = await client.create_report(
        ALL_ORDERS_REPORT, data_start=now - timedelta(seconds=10), data_end=now
    )
    with pytest.raises(AmazonThrottled) as throttled:  # burst 15, then one a minute
        await client.create_report(ALL_ORDERS_REPORT, data_start=now - HOUR, data_end=now)
    assert (throttled.value.status, throttled.value.code, throttled.value.kind) == (
        429,
        "QuotaExceeded",
        "throttled",
    )
    await harness.advance(121)  # two tokens
    fatal = await client.create_report("GET_MERCHANT_LISTINGS_ALL_DATA", data_start=now, data_end=now)
    with pytest.raises(AmazonRejected) as refused:
        await client.create_report("NO_SUCH_REPORT", data_start=now, data_end=now)
    assert (refused.value.status, refused.value.code, refused.value.kind) == (
        400,
        "InvalidInput",
        "permanent",
    )

    await harness.advance(120)
    assert (await client.get_report(empty)).processing_status == "CANCELLED"
    assert (await client.get_report(fatal)).processing_status == "FATAL"

    # A document is kept 30 days: then Amazon no longer knows it.
    await harness.control("POST", "/_sim/orders", {})
    await harness.control("PUT", "/_sim/reports", {"lag_s": [0, 0]})
    await harness.advance(1)
    report_id = await client.create_report(ALL_ORDERS_REPORT, data_start=now, data_end=await harness.now())
    await harness.advance(120)
    document_id = (await client.get_report(report_id)).report_document_id
    assert document_id is not None
    assert parse_all_orders_report((await client.get_report_document(document_id)).decode())
    await harness.advance(30 * 86400)
    with pytest.raises(AmazonRejected) as expired:
        await client.get_report_document(document_id)
    assert (expired.value.status, expired.value.code) == (400, "InvalidInput")
    reports = (await harness.control("GET", "/_sim/reports"))["reports"]
    assert next(r for r in reports if r["reportId"] == report_id)["documentExpired"] is True
