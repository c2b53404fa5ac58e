"""The Trends page's series on a real Redis (ordersync.state.trends): a known set of events folded at known
times by the status read model (the status projection's fold) and SP-API calls recorded by the health
board, read back through ``GET /api/trends`` and ``/trends`` (starlette's TestClient) on a clock of the
test's own: orders per hour, failures per day by reason, the write-back lag's median and maximum, calls
per operation. A record folded again counts nothing; the events folded in reverse give the same orders
and failures; a rebuild (a new generation folded again) gives the same series; folding an event costs
the fold no extra Redis round trip, and recording a call none either."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from starlette.testclient import TestClient

from ordersync.clock import ManualClock
from ordersync.dashboard import create_app
from ordersync.schemas.codec import encode
from ordersync.schemas.envelope import Envelope, Event
from ordersync.schemas.events import (
    EventDeadLettered,
    InvoiceIssued,
    OrderDownloaded,
    OrderEnriched,
    OrderImported,
    OrderImportFailed,
    Package,
    SalesOrder,
    SalesOrderLine,
    ShipmentConfirmed,
    ShipmentFailed,
    ShipmentItem,
    ShipmentRequested,
    ShippedLine,
)
from ordersync.schemas.topics import (
    INVOICES_ISSUED,
    ORDERS_DOWNLOADED,
    ORDERS_ENRICHED,
    ORDERS_IMPORT_FAILED,
    ORDERS_IMPORTED,
    SHIPMENTS_CONFIRMED,
    SHIPMENTS_FAILED,
    SHIPMENTS_REQUESTED,
    order_key,
)
from ordersync.settings import Settings
from ordersync.state import trends
from ordersync.state.health import HealthBoard
from ordersync.state.readmodel import ReadModel
from ordersync.state.trends import lag_bucket
from tests.factories import (
    CHANNEL,
    ITEM,
    OTHER_CHANNEL,
    OTHER_SELLER,
    SELLER,
    dashboard_settings,
    item,
    order,
    write_channels_file,
)
from tests.redis_trips import counting_trips

pytestmark = pytest.mark.stage

#: The test's "now" (Amazon's clock, the dashboard's): every event below is dated from it.
DAY = datetime(2026, 11, 20, tzinfo=UTC)
NOW = DAY.replace(hour=15, minute=20)
READ_TOKEN = "read-token-for-trends"

A, B, C, D = "111-0000001-0000001", "111-0000002-0000002", "111-0000003-0000003", "111-0000004-0000004"
E, F, G = "111-0000005-0000005", "111-0000006-0000006", "111-0000007-0000007"
OTHER, OLD = "222-0000008-0000008", "111-0000009-0000009"

Recorded = list[tuple[str, Envelope[Any]]]


def at(hour: int, minute: int) -> datetime:
    return DAY.replace(hour=hour, minute=minute)


class Run:
    """Events at the times given, as the stages would have published them."""

    def __init__(self) -> None:
        self.events: Recorded = []

    def add(self, topic: str, event: Event, when: datetime, seller: str = SELLER) -> Envelope[Any]:
        envelope = Envelope.wrap(event, seller_id=seller, correlation_id="trends", occurred_at=when)
        self.events.append((topic, envelope))
        return envelope

    def downloaded(
        self, order_id: str, when: datetime, *, seller: str = SELLER, channel: str = CHANNEL
    ) -> None:
        amazon = order(amazon_order_id=order_id, seller_id=seller, last_update_date=when, items=None)
        self.add(ORDERS_DOWNLOADED.name, OrderDownloaded(channel=channel, order=amazon), when, seller)

    def imported(self, order_id: str, when: datetime) -> None:
        line = SalesOrderLine(
            order_item_id=ITEM,
            seller_sku="SKU-1",
            asin="B000000001",
            stock_code="STK-1",
            quantity=1,
            unit_price=10,
            tax=0,
            line_total=10,
        )
        sales_order = SalesOrder(
            code=f"SO{order_id[-6:]}",
            channel=CHANNEL,
            seller_id=SELLER,
            marketplace_id="ATVPDKIKX0DER",
            amazon_order_id=order_id,
            order_status="Unshipped",
            fulfillment_channel="MFN",
            purchase_date=when,
            currency="USD",
            customer_name=None,
            customer_email=None,
            shipping_address=None,
            ship_service_level="Std",
            lines=(line,),
            total=10,
        )
        self.add(ORDERS_IMPORTED.name, OrderImported(sales_order=sales_order), when)

    def import_failed(self, order_id: str, when: datetime, reason_code: str = "unknown_stock_code") -> None:
        failed = OrderImportFailed(
            channel=CHANNEL, amazon_order_id=order_id, reason_code=reason_code, reason="no stock code"
        )
        self.add(ORDERS_IMPORT_FAILED.name, failed, when)

    def invoiced(self, order_id: str, when: datetime) -> None:
        package = Package(
            carrier_code="UPS",
            tracking_number=f"1Z{order_id[-7:]}",
            ship_date=when,
            lines=(ShippedLine(order_item_id=ITEM, quantity=1),),
        )
        invoice = InvoiceIssued(
            invoice_number=f"INV-{order_id[-3:]}", amazon_order_id=order_id, packages=(package,)
        )
        self.add(INVOICES_ISSUED.name, invoice, when)

    def requested(self, order_id: str, when: datetime, *, invoice: bool) -> ShipmentRequested:
        request = ShipmentRequested(
            channel=CHANNEL,
            amazon_order_id=order_id,
            package_reference_id="1",
            carrier_code="UPS",
            tracking_number=f"1Z{order_id[-7:]}",
            ship_date=when,
            items=(ShipmentItem(order_item_id=ITEM, quantity=1),),
            source=f"invoice INV-{order_id[-3:]}" if invoice else "warehouse",
        )
        self.add(SHIPMENTS_REQUESTED.name, request, when)
        return request

    def confirmed(self, request: ShipmentRequested, when: datetime, method: str = "confirmShipment") -> None:
        confirmed = ShipmentConfirmed(
            channel=request.channel,
            amazon_order_id=request.amazon_order_id,
            package_reference_id=request.package_reference_id,
            method=method,  # type: ignore[arg-type]
            attempts=1 if method == "confirmShipment" else 0,
            carrier_code=request.carrier_code,
            tracking_number=request.tracking_number,
            quantity=1,
            confirmed_at=when,
            note=None if method == "confirmShipment" else "bought on Amazon",
        )
        self.add(SHIPMENTS_CONFIRMED.name, confirmed, when)

    def dead_letter(self, when: datetime, original: bytes, source_key: str | None, error_type: str) -> None:
        letter = EventDeadLettered(
            source_topic=ORDERS_ENRICHED.name,
            source_partition=0,
            source_offset=7,
            source_key=source_key,
            original_value_b64=base64.b64encode(original).decode(),
            stage="import",
            error_type=error_type,
            error="the import could not take it",
            dead_lettered_at=when,
        )
        self.add(f"{ORDERS_ENRICHED.name}.dlq", letter, when)


def known_run() -> Recorded:
    run = Run()
    # A: invoiced 10:30, requested 10:31, confirmed 11:01: 31 min from the invoice. Downloaded twice.
    run.downloaded(A, at(10, 5))
    run.imported(A, at(10, 20))
    run.invoiced(A, at(10, 30))
    run.confirmed(run.requested(A, at(10, 31), invoice=True), at(11, 1))
    run.downloaded(A, at(11, 10))
    # F: from a warehouse (no invoice), requested 10:51, confirmed 11:01: 10 min.
    run.downloaded(F, at(10, 40))
    run.confirmed(run.requested(F, at(10, 51), invoice=False), at(11, 1))
    # G: invoiced 10:50, requested 10:52, confirmed 11:05: 15 min from the invoice.
    run.downloaded(G, at(10, 42))
    run.invoiced(G, at(10, 50))
    run.confirmed(run.requested(G, at(10, 52), invoice=True), at(11, 5))
    # B: its import failed twice (unknown stock code), then held for prices (not a failure).
    run.downloaded(B, at(10, 44))
    run.import_failed(B, at(10, 45))
    run.import_failed(B, at(11, 50))
    run.import_failed(B, at(11, 55), "pending_no_prices")
    # C: its label bought on Amazon confirmed it at 12:20: confirmed, no lag of ordersync's.
    run.downloaded(C, at(11, 15))
    run.imported(C, at(11, 16))
    run.confirmed(run.requested(C, at(11, 20), invoice=False), at(12, 20), method="amazon-label")
    # D: Amazon refused the confirmation.
    run.downloaded(D, at(11, 30))
    request = run.requested(D, at(11, 31), invoice=False)
    failed = ShipmentFailed(
        channel=CHANNEL,
        amazon_order_id=D,
        package_reference_id="1",
        attempts=5,
        error_code="InvalidInput",
        error_message="The carrier code is not valid",
        carrier_code="UPS",
        tracking_number=request.tracking_number,
        ship_date=at(11, 31),
        quantity=1,
    )
    run.add(SHIPMENTS_FAILED.name, failed, at(12, 10))
    # E: dead-lettered by the import; and a dead letter that decodes to no order (its seller's channel).
    enriched = OrderEnriched(channel=CHANNEL, order=order(amazon_order_id=E, items=(item(),)))
    original = Envelope.wrap(enriched, seller_id=SELLER, correlation_id="trends", occurred_at=at(12, 29))
    run.dead_letter(at(12, 30), encode(original), order_key(SELLER, E), "Permanent")
    run.dead_letter(at(12, 35), b"not an event", None, "InvalidEvent")
    # The other account's order.
    run.downloaded(OTHER, at(12, 45), seller=OTHER_SELLER, channel=OTHER_CHANNEL)
    # Past keeping: 40 days ago.
    run.downloaded(OLD, NOW - timedelta(days=40))
    return run.events


async def record_calls(redis: aioredis.Redis, prefix: str) -> None:
    board = HealthBoard(redis, prefix)
    for minute in (10, 11, 12):
        await board.record_call(CHANNEL, SELLER, "getOrders", "ok", at=at(10, minute))
    await board.record_call(
        CHANNEL, SELLER, "getOrders", "throttled", at=at(12, 10), detail="429 QuotaExceeded"
    )
    await board.record_call(CHANNEL, SELLER, "confirmShipment", "ok", at=at(11, 1))
    await board.record_call(CHANNEL, SELLER, "confirmShipment", "ok", at=at(11, 5), waited=True)


def _model(redis: aioredis.Redis, prefix: str) -> ReadModel:
    return ReadModel(redis, prefix, notify_dlq=False, notify_late=False, clock=ManualClock(NOW))


async def _fold(model: ReadModel, events: Recorded) -> None:
    for topic, envelope in events:
        await model.apply(topic, envelope)


@pytest.fixture
def settings(redis_url: str, redis_key_prefix: str, tmp_path: Path) -> Settings:
    return dashboard_settings(
        redis_url, redis_key_prefix, write_channels_file(tmp_path / "channels.yaml"), read_token=READ_TOKEN
    )


def _get(client: TestClient, path: str) -> Any:
    answer = client.get(path, headers={"Authorization": f"Bearer {READ_TOKEN}"})
    assert answer.status_code == 200, answer.text
    return answer.json() if path.startswith("/api/") else answer.text


def _by_hour(answer: dict[str, Any], series: list[Any]) -> dict[int, Any]:
    """A series' non-zero hours, by the UTC hour of the test's day."""
    return {
        datetime.fromtimestamp(t, UTC).hour: v
        for t, v in zip(answer["hours"], series, strict=True)
        if v and datetime.fromtimestamp(t, UTC).date() == DAY.date()
    }


def _comparable(answer: dict[str, Any]) -> dict[str, Any]:
    return {key: answer[key] for key in ("orders", "lag", "failures", "hours", "days")}


async def test_the_api_answers_the_folded_events_per_hour_day_reason_and_operation(
    redis_client: aioredis.Redis, redis_key_prefix: str, settings: Settings
) -> None:
    model = _model(redis_client, redis_key_prefix)
    events = known_run()
    await _fold(model, events)
    await record_calls(redis_client, redis_key_prefix)
    # Nothing is written for an event past keeping.
    assert [k async for k in redis_client.scan_iter(match=f"{redis_key_prefix}:*:2026-10-1*")] == []

    with TestClient(create_app(settings, clock=ManualClock(NOW))) as client:
        answer = _get(client, "/api/trends?range=24h")
        assert answer["range"] == "24h"
        assert len(answer["hours"]) == 24
        assert answer["hour_starts"][-1] == "2026-11-20T15:00:00+00:00"
        assert answer["days"] == ["2026-11-19", "2026-11-20"]
        assert answer["channels"] == [CHANNEL, OTHER_CHANNEL]
        orders = answer["orders"]
        # A's second download is the same order: not counted again.
        assert _by_hour(answer, orders["downloaded"]) == {10: 4, 11: 2, 12: 1}
        assert _by_hour(answer, orders["imported"]) == {10: 1, 11: 1}
        assert _by_hour(answer, orders["confirmed"]) == {11: 3, 12: 1}
        # 11:00: A 31 min from its invoice, F 10 min from its request, G 15 min from its invoice.
        lag = answer["lag"]
        assert _by_hour(answer, lag["count"]) == {11: 3}
        assert _by_hour(answer, lag["max_s"]) == {11: 1860}
        median = _by_hour(answer, lag["median_s"])[11]
        assert lag_bucket(median) == lag_bucket(900)
        assert 600 < median <= 900
        assert lag["summary"]["count"] == 3
        assert lag["summary"]["max_s"] == 1860
        failures = {(r["kind"], r["reason"]): r["counts"] for r in answer["failures"]["reasons"]}
        assert failures == {
            ("import", "unknown_stock_code"): [0, 2],
            ("write-back", "InvalidInput"): [0, 1],
            ("dead-letter", "import: Permanent"): [0, 1],
            ("dead-letter", "import: InvalidEvent"): [0, 1],
        }
        assert answer["failures"]["totals"] == {"import": [0, 2], "write-back": [0, 1], "dead-letter": [0, 2]}
        quota = {q["operation"]: q for q in answer["quota"]}
        assert quota["getOrders"]["total"] == {"calls": 4, "throttled": 1, "waited": 0}
        assert quota["confirmShipment"]["total"] == {"calls": 2, "throttled": 0, "waited": 1}
        assert _by_hour(answer, quota["getOrders"]["calls"]) == {10: 3, 12: 1}
        assert _by_hour(answer, quota["getOrders"]["throttled"]) == {12: 1}

        # One channel: the other account's order alone, and none of the first account's calls.
        other = _get(client, f"/api/trends?range=24h&channel={OTHER_CHANNEL}")
        assert _by_hour(other, other["orders"]["downloaded"]) == {12: 1}
        assert sum(other["orders"]["imported"]) == 0
        assert other["failures"]["reasons"] == []
        assert other["quota"] == []
        mine = _get(client, f"/api/trends?range=24h&channel={CHANNEL}")
        assert _by_hour(mine, mine["orders"]["downloaded"]) == {10: 4, 11: 2}
        assert {q["operation"] for q in mine["quota"]} == {"getOrders", "confirmShipment"}

        # The longer ranges hold the same hours, zeros around them.
        week = _get(client, "/api/trends?range=7d")
        assert len(week["hours"]) == 168
        assert len(week["days"]) == 8
        assert sum(week["orders"]["downloaded"]) == 7
        month = _get(client, "/api/trends?range=30d")
        assert len(month["hours"]) == 720
        assert sum(month["orders"]["confirmed"]) == 4
        assert sum(month["failures"]["totals"]["dead-letter"]) == 2

        # Refused: a range not offered, a channel not known, a reader without the token.
        assert (
            client.get("/api/trends?range=1y", headers={"Authorization": f"Bearer {READ_TOKEN}"}).status_code
            == 400
        )
        assert (
            client.get(
                "/api/trends?channel=nope", headers={"Authorization": f"Bearer {READ_TOKEN}"}
            ).status_code
            == 404
        )
        assert client.get("/api/trends").status_code == 401
        assert client.get("/trends").status_code == 401

        # The page: a nav tab, the range switch, the charts' places, and the numbers in its tables.
        page = _get(client, f"/trends?range=24h&channel={CHANNEL}")
        assert 'id="tab-trends"' in page
        assert 'aria-current="page">Trends<' in page
        assert 'data-range="24h" aria-current="page"' in page
        assert page.count('class="trend-chart"') == 4
        assert "/static/vendor/uplot/uPlot.iife.min.js" in page
        assert "/static/trends.js" in page
        assert f'data-api="/api/trends?range=24h&amp;channel={CHANNEL}"' in page
        row = re.search(r'<tr data-start="2026-11-20T10:00:00\+00:00">(.*?)</tr>', page)
        assert row is not None
        assert '<td class="num" data-metric="downloaded">4</td>' in row.group(1)
        lag_row = re.findall(r'<tr data-start="2026-11-20T11:00:00\+00:00">(.*?)</tr>', page)[1]
        assert 'data-metric="lag_count">3<' in lag_row
        assert 'data-metric="lag_max_s" data-seconds="1860">31.0 min<' in lag_row
        assert re.search(
            r'data-kind="import"><td class="time">2026-11-20</td><td>import</td>'
            r'<td class="error-text">unknown_stock_code</td><td class="num">2</td>',
            page,
        )
        assert '<tr data-operation="getOrders" class="failing">' in page
        week_page = _get(client, "/trends?range=7d")
        # The longer ranges' tables add up each UTC day.
        day_row = re.search(r'<tr data-start="2026-11-20T00:00:00\+00:00">(.*?)</tr>', week_page)
        assert day_row is not None
        assert 'data-metric="downloaded">7<' in day_row.group(1)


async def test_a_record_folded_again_counts_nothing_and_the_order_of_folding_does_not_matter(
    redis_client: aioredis.Redis, redis_key_prefix: str
) -> None:
    events = known_run()
    store = trends.TrendStore(redis_client, redis_key_prefix)
    model = _model(redis_client, redis_key_prefix)
    await _fold(model, events)
    once = (await store.read("24h", NOW)).as_json()
    # Redelivered: one by one, and as the projection's batches.
    await _fold(model, events[::3])
    await model.apply_many(events)
    assert _comparable((await store.read("24h", NOW)).as_json()) == _comparable(once)
    # Redelivered beside a new record of the same order (one write of the order): only the new one counts.
    later = Run()
    later.import_failed(B, at(12, 50))
    first_failure = next(
        (t, e) for t, e in events if t == ORDERS_IMPORT_FAILED.name and e.payload.amazon_order_id == B
    )
    await model.apply_many([first_failure, *later.events])
    again = (await store.read("24h", NOW)).as_json()
    assert {(r["kind"], r["reason"]): r["counts"] for r in again["failures"]["reasons"]}[
        ("import", "unknown_stock_code")
    ] == [0, 3]
    assert again["orders"] == once["orders"]
    assert again["lag"] == once["lag"]

    # Another model, the same events newest first: an order counts in the hour of its earliest fact,
    # a package's lag once its request, confirmation and invoice are all there.
    reversed_prefix = f"{redis_key_prefix}-reversed"
    other = _model(redis_client, reversed_prefix)
    try:
        await _fold(other, events[::-1])
        backwards = (await trends.TrendStore(redis_client, reversed_prefix).read("24h", NOW)).as_json()
        assert _comparable(backwards) == _comparable(once)
    finally:
        await other.reset()


async def test_a_rebuild_folds_the_series_again(redis_client: aioredis.Redis, redis_key_prefix: str) -> None:
    events = known_run()
    model = _model(redis_client, redis_key_prefix)
    store = trends.TrendStore(redis_client, redis_key_prefix)
    await _fold(model, events)
    await record_calls(redis_client, redis_key_prefix)
    before = (await store.read("7d", NOW)).as_json()
    # What ordersync status-model rebuild does: a new, empty generation, then every topic folded again.
    await model.reset()
    emptied = (await store.read("7d", NOW)).as_json()
    assert sum(emptied["orders"]["downloaded"]) == 0
    assert emptied["failures"]["reasons"] == []
    assert emptied["quota"] == before["quota"]  # calls are not in the model (and not on Kafka)
    await model.apply_many(events)
    assert (await store.read("7d", NOW)).as_json() == before


async def test_the_trends_cost_the_fold_and_the_health_board_no_round_trip(
    redis_client: aioredis.Redis, redis_key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _model(redis_client, redis_key_prefix)
    board = HealthBoard(redis_client, redis_key_prefix)
    run = Run()
    run.downloaded(A, at(10, 5))
    run.invoiced(A, at(10, 30))
    request = run.requested(A, at(10, 31), invoice=True)
    run.confirmed(request, at(11, 1))
    warm, confirmation = run.events[:-1], run.events[-1]
    await _fold(model, warm)  # (the scripts are loaded)
    await board.record_call(CHANNEL, SELLER, "getOrders", "ok", at=at(10, 1))
    with counting_trips(monkeypatch) as folding:
        await model.apply(*confirmation)
    # Read the order, write it with its trends: the fold's own two trips.
    assert folding.trips == 2
    with counting_trips(monkeypatch) as recording:
        await board.record_call(CHANNEL, SELLER, "confirmShipment", "ok", at=at(11, 1))
    assert recording.trips == 1
    answer = (await trends.TrendStore(redis_client, redis_key_prefix).read("24h", NOW)).as_json()
    assert sum(answer["orders"]["confirmed"]) == 1
    assert answer["lag"]["summary"]["max_s"] == 1860
    assert {q["operation"]: q["total"]["calls"] for q in answer["quota"]} == {
        "getOrders": 1,
        "confirmShipment": 1,
    }
