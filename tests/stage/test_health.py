"""API health and notifications on a real Redis: each colour with its reason (the clock injected), the
window and the 10-minute horizon, notifications deduplicated; and the SP-API client reporting its real
calls to the simulator (orders, feeds, listings feeds, auth failures, a FATAL feed)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr

from ordersync.amazon.client import SpApiClient
from ordersync.amazon.feeds import JSON_CONTENT_TYPE, Availability, FeedsClient, listings_quantity_feed
from ordersync.amazon.operations import CallOutcome
from ordersync.channels import Channel, LwaCredentials, SecretRef
from ordersync.errors import AmazonRejected, AmazonUnavailable
from ordersync.ratelimit import InMemoryRateLimiter
from ordersync.ratelimit.plans import PlanBook
from ordersync.settings import AmazonSettings, HealthSettings
from ordersync.simulator import RunningSimulator, SimulatorState
from ordersync.simulator.testing import (
    TEST_CLIENT_ID,
    TEST_CLIENT_SECRET,
    TEST_REFRESH_TOKEN,
    TEST_SELLER,
    tiny_scenario,
)
from ordersync.state.health import HealthBoard, HealthObserver

pytestmark = pytest.mark.stage

NOW = datetime(2026, 11, 25, 10, 30, tzinfo=UTC)
ACCOUNT = ("shop-us", "A1SELLER")


@pytest.fixture
def board(redis_client: aioredis.Redis, redis_key_prefix: str) -> HealthBoard:
    return HealthBoard(redis_client, redis_key_prefix, HealthSettings())


async def record(
    board: HealthBoard,
    outcome: CallOutcome,
    count: int,
    *,
    at: datetime = NOW,
    operation: str = "getOrders",
    detail: str | None = None,
) -> None:
    for _ in range(count):
        await board.record_call(*ACCOUNT, operation, outcome, at=at, detail=detail)


async def health_of(board: HealthBoard, api: str = "orders", now: datetime = NOW) -> tuple[str, str]:
    by_api = {h.api: h for h in await board.api_health([ACCOUNT], now=now)}
    return by_api[api].colour, by_api[api].reason  # type: ignore[index]


async def test_green_with_calls_that_all_answered(board: HealthBoard) -> None:
    await record(board, "ok", 20, at=NOW - timedelta(minutes=3))
    assert await health_of(board) == ("Green", "20 calls in the last 15 minutes, none failed")
    (orders,) = [h for h in await board.api_health([ACCOUNT], now=NOW) if h.api == "orders"]
    assert (orders.calls, orders.errors, orders.throttled) == (20, 0, 0)
    assert orders.last_call_at == NOW - timedelta(minutes=3)


async def test_none_without_a_call_for_ten_minutes(board: HealthBoard) -> None:
    assert await health_of(board) == ("None", "no call recorded")
    await record(board, "ok", 5, at=datetime(2026, 11, 25, 10, 2, tzinfo=UTC))
    assert (await health_of(board, now=datetime(2026, 11, 25, 10, 11, tzinfo=UTC)))[0] == "Green"
    assert await health_of(board, now=datetime(2026, 11, 25, 10, 13, tzinfo=UTC)) == (
        "None",
        "no call since 10:02",
    )
    # The other APIs of a known account are reported too, with no call.
    assert await health_of(board, "feeds") == ("None", "no call recorded")
    assert {h.api for h in await board.api_health(now=NOW)} == {"orders", "feeds", "listings"}


async def test_yellow_above_the_yellow_error_rate(board: HealthBoard) -> None:
    await record(board, "error", 3, at=NOW - timedelta(minutes=5), detail="500 InternalFailure")
    await record(board, "ok", 37, at=NOW - timedelta(minutes=1))
    assert await health_of(board) == (
        "Yellow",
        "3 of 40 calls failed in the last 15 minutes: 500 InternalFailure",
    )


async def test_a_rare_failure_stays_green_and_old_failures_leave_the_window(board: HealthBoard) -> None:
    await record(board, "error", 10, at=NOW - timedelta(minutes=20), detail="500 InternalFailure")
    await record(board, "ok", 99, at=NOW - timedelta(minutes=2))
    await record(board, "error", 1, at=NOW, detail="500 InternalFailure")
    colour, reason = await health_of(board)
    assert colour == "Green"
    assert reason.startswith("1 of 100 calls failed")


async def test_red_above_the_red_error_rate(board: HealthBoard) -> None:
    await record(board, "ok", 15, at=NOW - timedelta(minutes=4))
    await record(board, "error", 25, at=NOW, detail="500 InternalFailure")
    assert await health_of(board) == (
        "Red",
        "25 of 40 calls failed in the last 15 minutes: 500 InternalFailure",
    )


async def test_an_outage_is_red_at_once_however_many_calls_answered_before(board: HealthBoard) -> None:
    # A busy account: 330 calls answered over ten minutes, then Amazon answers 503 to everything.
    for minute in range(10, 0, -1):
        await record(board, "ok", 33, at=NOW - timedelta(minutes=minute))
    await record(board, "unavailable", 2, at=NOW - timedelta(seconds=20), detail="503 ServiceUnavailable")
    assert (await health_of(board))[0] == "Green"  # two failures: not yet an outage
    await record(board, "throttled", 1, at=NOW - timedelta(seconds=10))  # a 429 neither ends nor extends it
    await record(board, "unavailable", 6, at=NOW, detail="503 ServiceUnavailable")
    # 8 of 339 in the window (2 %), but every call since 10:29 failed.
    assert await health_of(board) == (
        "Red",
        "the last 8 calls failed since 10:29 (8 of 339 in the last 15 minutes): 503 ServiceUnavailable",
    )
    # Amazon answers again: the run ends, the key turns back.
    await record(board, "ok", 1, at=NOW + timedelta(seconds=30))
    assert (await health_of(board, now=NOW + timedelta(seconds=30)))[0] == "Green"


async def test_red_when_nothing_gets_through(board: HealthBoard) -> None:
    await record(board, "unavailable", 6, detail="503 ServiceUnavailable")
    assert await health_of(board) == (
        "Red",
        "all 6 calls in the last 15 minutes failed: 503 ServiceUnavailable",
    )


async def test_refused_credentials_are_red_and_notified_once(board: HealthBoard) -> None:
    await record(board, "auth", 3, detail="LWA refused the credentials: invalid_grant")
    assert await health_of(board) == ("Red", "LWA refused the credentials: invalid_grant")
    notifications = await board.notifications()
    assert [(n.kind, n.severity, n.channel) for n in notifications] == [("auth", "error", "shop-us")]
    assert "invalid_grant" in notifications[0].message
    # A 403 from the API itself.
    await record(board, "auth", 1, operation="createFeed", detail="403 Unauthorized")
    assert await health_of(board, "feeds") == ("Red", "Amazon refused the credentials: 403 Unauthorized")


async def test_sustained_throttling_is_yellow_and_notified(board: HealthBoard) -> None:
    # One burst of 429s is normal for a limiter finding Amazon's real rate: not degraded.
    await record(board, "ok", 10, at=NOW - timedelta(minutes=6))
    await record(board, "throttled", 5, at=NOW - timedelta(minutes=6))
    assert (await health_of(board))[0] == "Green"
    assert await board.notifications() == []
    for minutes in (4, 2, 0):
        await record(board, "throttled", 5, at=NOW - timedelta(minutes=minutes))
    assert await health_of(board) == (
        "Yellow",
        "throttled: Amazon answered 429 to 20 of 30 calls in the last 15 minutes",
    )
    (throttling,) = await board.notifications()
    assert throttling.kind == "throttling"
    assert throttling.severity == "warning"


async def test_unreadable_status_is_none() -> None:
    # Nothing listens on port 1: every read fails.
    dead = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5, decode_responses=True)
    try:
        health = await HealthBoard(dead, "x").api_health([ACCOUNT], now=NOW)
    finally:
        await dead.aclose()
    assert {(h.api, h.colour) for h in health} == {
        ("orders", "None"),
        ("feeds", "None"),
        ("listings", "None"),
    }
    assert health[0].reason == "status unreadable: ConnectionError"


async def test_notifications_newest_first_capped_and_deduplicated(
    redis_client: aioredis.Redis, redis_key_prefix: str
) -> None:
    board = HealthBoard(redis_client, redis_key_prefix, HealthSettings(notifications_kept=3))
    for n in range(5):
        await board.notify("dlq", f"message {n}", severity="info", at=NOW + timedelta(seconds=n))
    assert [n.message for n in await board.notifications()] == ["message 4", "message 3", "message 2"]
    assert [n.message for n in await board.notifications(limit=1)] == ["message 4"]
    await board.notify("dlq", "grew by 5", dedupe_key="dlq:import", severity="warning")
    await board.notify("dlq", "grew by 7", dedupe_key="dlq:import", severity="warning")
    await board.notify("dlq", "other stage", dedupe_key="dlq:invoice", severity="warning")
    assert [n.message for n in await board.notifications()] == ["other stage", "grew by 5", "message 4"]


# --- the client reports its real calls ------------------------------------------------------------------


@pytest.fixture
def sim() -> Iterator[RunningSimulator]:
    scenario = tiny_scenario(
        orders={"count": 3}, feeds={"queue_delay_s": [0, 0], "duration_s": [0, 0], "stall_share": 0}
    )
    with RunningSimulator(SimulatorState(scenario)) as running:
        yield running


def channel(refresh_token: str = TEST_REFRESH_TOKEN) -> Channel:
    return Channel(
        name="sim-us",
        seller_id=TEST_SELLER,
        region="na",
        marketplaces=("ATVPDKIKX0DER",),
        orders_api="v0",
        credentials=LwaCredentials(
            client_id=SecretRef(value=SecretStr(TEST_CLIENT_ID)),
            client_secret=SecretRef(value=SecretStr(TEST_CLIENT_SECRET)),
            refresh_token=SecretRef(value=SecretStr(refresh_token)),
        ),
    )


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5) as client:
        yield client


def client_for(
    sim: RunningSimulator,
    http: httpx.AsyncClient,
    board: HealthBoard,
    refresh_token: str = TEST_REFRESH_TOKEN,
) -> SpApiClient:
    return SpApiClient(
        channel=channel(refresh_token),
        amazon=AmazonSettings(endpoint=sim.base_url, lwa_endpoint=sim.lwa_url),
        limiter=InMemoryRateLimiter(plans=PlanBook(time_scale=100_000)),
        http=http,
        observer=HealthObserver(board),
    )


async def test_the_client_records_each_call_on_its_api(
    sim: RunningSimulator, http: httpx.AsyncClient, board: HealthBoard
) -> None:
    client = client_for(sim, http, board)
    order_id = sim.state.add_order({})["amazon_order_id"]
    await client.get_order(order_id)
    await client.get_order_items(order_id)
    await http.post(sim.base_url + "/_sim/faults/next", json={"fault": "500", "operation": "getOrder"})
    with pytest.raises(AmazonUnavailable):
        await client.get_order(order_id)
    feeds = FeedsClient(client)
    content = listings_quantity_feed(TEST_SELLER, [(1, "SKU-1", Availability(3))])
    feed_id = await feeds.submit("JSON_LISTINGS_FEED", content, JSON_CONTENT_TYPE)
    await feeds.get_feed(feed_id)

    health = {h.api: h for h in await board.api_health([("sim-us", TEST_SELLER)])}
    assert (health["orders"].calls, health["orders"].errors) == (3, 1)
    assert "500 InternalFailure" in health["orders"].reason
    # createFeed names the listings feed type; the document and getFeed calls count for the Feeds API
    # unless the client is told its feeds are listings feeds (the inventory stage's is).
    assert health["listings"].calls == 1
    assert health["listings"].colour == "Green"
    assert health["feeds"].calls == 2
    listings_only = FeedsClient(client, api="listings")
    await listings_only.get_feed(feed_id)
    assert {h.api: h.calls for h in await board.api_health([("sim-us", TEST_SELLER)])}["listings"] == 2


async def test_refused_credentials_and_a_fatal_feed_are_notified(
    sim: RunningSimulator, http: httpx.AsyncClient, board: HealthBoard
) -> None:
    refused = client_for(sim, http, board, refresh_token="Atzr|unknown")
    with pytest.raises(AmazonRejected):
        await refused.get_order("111-0000000-0000000")
    (orders,) = [h for h in await board.api_health([("sim-us", TEST_SELLER)]) if h.api == "orders"]
    assert (orders.colour, orders.reason) == ("Red", "LWA refused the credentials: invalid_grant")
    assert "Atzr" not in orders.reason

    feeds = FeedsClient(client_for(sim, http, board))
    document = await feeds.create_feed_document(JSON_CONTENT_TYPE)
    # Never uploaded: Amazon ends such a feed FATAL.
    feed_id = await feeds.create_feed("JSON_LISTINGS_FEED", document.feed_document_id)
    feed = await feeds.get_feed(feed_id)
    assert feed.processing_status == "FATAL"
    await feeds.get_feed(feed_id)
    kinds = [n.kind for n in await board.notifications()]
    assert kinds == ["feed-fatal", "auth"]  # one per feed, however often it is read
    (fatal, _) = await board.notifications()
    assert feed_id in fatal.message
    assert "JSON_LISTINGS_FEED" in fatal.message


async def test_a_call_held_back_for_its_quota_is_counted_as_waited(
    http: httpx.AsyncClient, board: HealthBoard, redis_client: aioredis.Redis, redis_key_prefix: str
) -> None:
    # The simulator's clock at 10x: getOrder's quota lets a few calls go at once, then paces them; the
    # limiter holds those back rather than let Amazon answer 429.
    scenario = tiny_scenario(orders={"count": 1}, time_scale=10, start=None)

    async def counted() -> dict[str, int]:
        totals: dict[str, int] = {}
        async for key in redis_client.scan_iter(match=f"{redis_key_prefix}:quota:*"):
            for field, value in (await redis_client.hgetall(key)).items():
                totals[field] = totals.get(field, 0) + int(value)
        return totals

    with RunningSimulator(SimulatorState(scenario)) as sim:
        client = SpApiClient(
            channel=channel(TEST_REFRESH_TOKEN),
            amazon=AmazonSettings(endpoint=sim.base_url, lwa_endpoint=sim.lwa_url),
            limiter=InMemoryRateLimiter(plans=PlanBook(time_scale=10)),
            http=http,
            observer=HealthObserver(board),
        )
        order_id = sim.state.add_order({})["amazon_order_id"]
        for _ in range(10):
            await client.get_order(order_id)
        paced = await counted()
        assert paced.get("getOrder|waited", 0) >= 1
        await asyncio.sleep(2.0)  # 20 s of Amazon's time: tokens to spare again
        await client.get_order(order_id)
    totals = await counted()
    assert totals["getOrder|calls"] == 11
    assert totals.get("getOrder|waited", 0) == paced["getOrder|waited"]  # the last went at once
    assert totals.get("getOrder|throttled", 0) == 0
