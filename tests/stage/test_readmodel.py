"""The status read model on a real Redis, from a recorded sequence of events: statuses, supersession,
idempotence and order-insensitivity of the fold, the grid's filters, sorts, paging and search, and the
CSV a person uses to check failed write-backs by hand in Seller Central."""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis

from ordersync.clock import ManualClock
from ordersync.schemas.envelope import Envelope
from ordersync.schemas.events import (
    EventDeadLettered,
    OrderCancellationResult,
    OrderImportFailed,
)
from ordersync.schemas.topics import (
    INVOICES_ISSUED,
    ORDERS_CANCELLATION_RESULTS,
    ORDERS_ENRICHED,
    ORDERS_IMPORT_FAILED,
    SHIPMENTS_REQUESTED,
    order_key,
)
from ordersync.state.health import HealthBoard
from ordersync.state.readmodel import (
    FOLDED_TOPICS,
    OrderFilter,
    ReadModel,
    failed_orders_csv_header,
    write_orders_csv,
)
from ordersync.state.readmodel.facts import facts_of
from ordersync.state.store import Store
from tests.factories import (
    CA,
    CHANNEL,
    DEAD_LETTERED,
    IGNORED,
    OK,
    OTHER_CHANNEL,
    OTHER_SELLER,
    PENDING,
    RETRIED,
    SELLER,
    T0,
    WRITEBACK_FAILED,
    Recorded,
    RecordedRun,
    recorded_run,
)
from tests.redis_trips import counting_trips

pytestmark = pytest.mark.stage


async def _fold(model: ReadModel, events: Recorded) -> None:
    for topic, envelope in events:
        await model.apply(topic, envelope)


async def _snapshot(model: ReadModel) -> dict[str, Any]:
    page = await model.orders(OrderFilter(), sort="amazon_order_id", descending=False, limit=1000)
    details = {}
    for row in page.rows:
        detail = await model.order(row.seller_id, row.amazon_order_id)
        assert detail is not None
        dumped = detail.model_dump()
        # A command's event id is the run's own (each recorded_run() makes new ones).
        dumped["commands"] = [{k: v for k, v in c.items() if k != "event_id"} for c in dumped["commands"]]
        details[row.amazon_order_id] = dumped
    return {"rows": [r.model_dump() for r in page.rows], "details": details}


@pytest.fixture
async def model(redis_client: aioredis.Redis, redis_key_prefix: str) -> ReadModel:
    folded = ReadModel(redis_client, redis_key_prefix, notify_dlq=False)
    await _fold(folded, recorded_run())
    return folded


async def test_statuses_of_a_recorded_run(model: ReadModel) -> None:
    page = await model.orders(OrderFilter(), sort="amazon_order_id", descending=False)
    status = {row.amazon_order_id: row.status for row in page.rows}
    assert status == {
        OK: "Success",
        RETRIED: "Success",
        WRITEBACK_FAILED: "Failed",
        IGNORED: "Ignored",
        DEAD_LETTERED: "Failed",
        PENDING: "Pending",
    }
    assert page.total == 6

    ok = await model.order(SELLER, OK)
    assert ok is not None
    assert ok.row.channel == CHANNEL
    assert ok.row.marketplace_id == "ATVPDKIKX0DER"
    assert ok.row.sales_order_code == "SO00000001"
    assert (ok.row.download_status, ok.row.import_status) == ("enriched", "imported")
    assert (ok.row.invoice_status, ok.row.writeback_status) == ("invoiced", "confirmed")
    assert ok.row.amazon_status == "Unshipped"
    assert ok.row.skus == ("SKU-1",)
    assert ok.row.error_code is None
    assert ok.lines[0]["stock_code"] == "STK-SKU-1"
    assert ok.lines[0]["quantity_ordered"] == 2
    (package,) = ok.shipments
    assert package["status"] == "confirmed"
    assert package["tracking_number"] == "1Z0000001"
    assert [h["event_type"] for h in ok.history] == [
        "OrderDownloaded",
        "OrderEnriched",
        "OrderImported",
        "InvoiceIssued",
        "ShipmentRequested",
        "ShipmentConfirmed",
    ]

    # A retry that succeeds supersedes the failure; the failure stays in the record, inactive.
    retried = await model.order(SELLER, RETRIED)
    assert retried is not None
    assert retried.row.error_code is None
    assert retried.row.import_status == "imported"
    (error,) = retried.errors
    assert error["code"] == "unknown_stock_code"
    assert error["active"] is False
    assert "retry-import by ops" in [h["summary"] for h in retried.history]

    failed = await model.order(SELLER, WRITEBACK_FAILED)
    assert failed is not None
    assert failed.row.writeback_status == "failed"
    assert failed.row.attempts == 5
    assert failed.row.error_code == "InvalidInput"
    assert failed.shipments[0]["status"] == "failed"

    dead = await model.order(SELLER, DEAD_LETTERED)
    assert dead is not None
    assert dead.row.import_status == "failed"
    assert dead.row.error_code == "Permanent"
    assert dead.row.error_message == "channel acme-us: tax rule refused the order"
    assert dead.errors[0]["source_offset"] == 42

    ignored = await model.order(SELLER, IGNORED)
    assert ignored is not None
    assert ignored.row.import_status == "failed"

    pending = await model.order(OTHER_SELLER, PENDING)
    assert pending is not None
    assert (pending.row.channel, pending.row.marketplace_id) == (OTHER_CHANNEL, CA)
    assert pending.row.download_status == "downloaded"

    assert await model.sellers() == [(CHANNEL, SELLER), (OTHER_CHANNEL, OTHER_SELLER)]
    assert await model.counts(CHANNEL) == {"Failed": 2, "Pending": 0, "Success": 2, "Ignored": 1}
    sizes = {s.topic: s.records for s in await model.dlq_sizes()}
    assert sizes[f"{ORDERS_ENRICHED.name}.dlq"] == 1
    assert sizes[f"{INVOICES_ISSUED.name}.dlq"] == 0


async def test_fold_is_idempotent_and_order_insensitive(
    model: ReadModel, redis_client: aioredis.Redis, redis_key_prefix: str
) -> None:
    live = await _snapshot(model)
    shuffled = ReadModel(redis_client, f"{redis_key_prefix}-shuffled", notify_dlq=False)
    events = recorded_run()
    try:
        # The same records again (same event ids), twice over, in a random order.
        same = [(t, e) for t, e in events]
        random.Random(7).shuffle(same)
        await _fold(shuffled, same + same[:5])
        replayed = await _snapshot(shuffled)
        reference = ReadModel(redis_client, f"{redis_key_prefix}-reference", notify_dlq=False)
        await _fold(reference, events)
        assert replayed == await _snapshot(reference)
        await reference.reset()
    finally:
        await shuffled.reset()
    assert live["rows"]  # the fixture's model was folded


async def test_replaying_identical_records_changes_nothing(
    redis_client: aioredis.Redis, redis_key_prefix: str
) -> None:
    model = ReadModel(redis_client, redis_key_prefix, notify_dlq=False)
    events = recorded_run()
    await _fold(model, events)
    before = await _snapshot(model)
    await _fold(model, events)
    await _fold(model, list(reversed(events)))
    assert await _snapshot(model) == before
    assert {s.topic: s.records for s in await model.dlq_sizes()}[f"{ORDERS_ENRICHED.name}.dlq"] == 1


async def test_a_later_failure_of_an_order_seen_first_as_success_is_ordered_by_occurred_at(
    redis_client: aioredis.Redis, redis_key_prefix: str
) -> None:
    run = RecordedRun()
    run.order_flow(RETRIED, sku="UNMAPPED-7")
    run.import_failed(RETRIED, "UNMAPPED-7")
    run.imported(RETRIED, "SO00000002", sku="UNMAPPED-7")
    model = ReadModel(redis_client, redis_key_prefix, notify_dlq=False)
    # The success arrives first (another partition, a replay): the failure that happened before it
    # must not win.
    await _fold(model, list(reversed(run.events)))
    detail = await model.order(SELLER, RETRIED)
    assert detail is not None
    assert detail.row.status == "Success"


async def test_filters(model: ReadModel) -> None:
    async def ids(**filter: Any) -> list[str]:
        page = await model.orders(OrderFilter(**filter), sort="amazon_order_id", descending=False)
        assert page.total == len(page.rows)
        return [row.amazon_order_id for row in page.rows]

    assert await ids(status="Failed") == [WRITEBACK_FAILED, DEAD_LETTERED]
    assert await ids(status="Failed", failed_stage="write-back") == [WRITEBACK_FAILED]
    assert await ids(failed_stage="import") == [DEAD_LETTERED]
    assert await ids(channel=OTHER_CHANNEL) == [PENDING]
    assert await ids(seller_id=SELLER, status="Pending") == []
    assert await ids(marketplace_id=CA) == [PENDING]
    assert await ids(since=T0 - timedelta(days=2), until=T0) == [RETRIED, WRITEBACK_FAILED]
    assert await ids(since=T0 - timedelta(days=2), status="Success") == [RETRIED]
    # Text: any part of an order id or of a seller SKU, in any case.
    assert await ids(text=WRITEBACK_FAILED) == [WRITEBACK_FAILED]
    assert await ids(text="111-0000") == [OK, RETRIED, WRITEBACK_FAILED, IGNORED, DEAD_LETTERED]
    assert await ids(text="222") == [PENDING]
    assert await ids(text="UNMAPPED-7") == [RETRIED]
    assert await ids(text="SKU-3", status="Failed") == [WRITEBACK_FAILED]
    assert await ids(text="unmapped") == [RETRIED]
    assert await ids(text="kU-3") == [WRITEBACK_FAILED]
    assert await ids(text="0000003") == [WRITEBACK_FAILED]
    assert await ids(text="SKU") == [OK, WRITEBACK_FAILED, DEAD_LETTERED]
    assert await ids(text="333") == []


async def test_sorts_and_paging(model: ReadModel) -> None:
    newest_first = await model.orders(OrderFilter(seller_id=SELLER), sort="purchase_date")
    assert [r.amazon_order_id for r in newest_first.rows] == [
        WRITEBACK_FAILED,
        RETRIED,
        OK,
        IGNORED,
        DEAD_LETTERED,
    ]

    by_status = await model.orders(OrderFilter(), sort="status", descending=False)
    assert [r.status for r in by_status.rows] == [
        "Failed",
        "Failed",
        "Pending",
        "Success",
        "Success",
        "Ignored",
    ]
    by_update = await model.orders(OrderFilter(), sort="updated_at", descending=True)
    updates = [r.updated_at for r in by_update.rows]
    assert updates == sorted(updates, reverse=True)

    first = await model.orders(OrderFilter(), sort="amazon_order_id", descending=True, offset=0, limit=4)
    second = await model.orders(OrderFilter(), sort="amazon_order_id", descending=True, offset=4, limit=4)
    assert (first.total, second.total) == (6, 6)
    assert [r.amazon_order_id for r in first.rows + second.rows] == [
        PENDING,
        DEAD_LETTERED,
        IGNORED,
        WRITEBACK_FAILED,
        RETRIED,
        OK,
    ]
    # Pages of a filter of sets (walked) and of one with a date range (intersected) agree with the whole.
    for order_filter in (
        OrderFilter(seller_id=SELLER),
        OrderFilter(seller_id=SELLER, since=T0 - timedelta(days=9)),
    ):
        for descending in (True, False):
            whole = await model.orders(order_filter, sort="updated_at", descending=descending)
            paged = [
                row
                for start in range(0, 6, 2)
                for row in (
                    await model.orders(
                        order_filter, sort="updated_at", descending=descending, offset=start, limit=2
                    )
                ).rows
            ]
            assert paged == list(whole.rows)
            assert whole.total == 5
    dated = await model.orders(
        OrderFilter(since=T0 - timedelta(days=4)), sort="purchase_date", descending=True, offset=1, limit=2
    )
    assert dated.total == 5
    assert [r.amazon_order_id for r in dated.rows] == [WRITEBACK_FAILED, RETRIED]


async def test_failed_export_has_what_seller_central_needs(model: ReadModel) -> None:
    out = io.StringIO()
    written = await write_orders_csv(model, OrderFilter(status="Failed", failed_stage="write-back"), out)
    assert written == 1
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert list(rows[0]) == failed_orders_csv_header()
    (row,) = rows
    assert row["amazon_order_id"] == WRITEBACK_FAILED
    assert row["marketplace_id"] == "ATVPDKIKX0DER"
    assert (row["seller_id"], row["channel"]) == (SELLER, CHANNEL)
    assert row["seller_skus"] == "SKU-3"
    assert row["quantities"] == "SKU-3 x2"
    assert row["carrier"] == "UPS"
    assert row["shipping_method"] == "Ground"
    assert row["tracking_number"] == "1Z0000003"
    assert row["ship_date"].startswith(T0.strftime("%Y-%m-%dT%H:%M"))
    assert row["attempts"] == "5"
    assert row["error_code"] == "InvalidInput"
    assert row["error_message"] == "The carrier code is not valid for this marketplace"
    assert row["sales_order_code"] == "SO00000003"
    assert row["failed_stage"] == "write-back"

    out = io.StringIO()
    written = await write_orders_csv(model, OrderFilter(status="Failed", failed_stage="import"), out)
    (row,) = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert row["amazon_order_id"] == DEAD_LETTERED
    assert row["error_message"] == "channel acme-us: tax rule refused the order"
    assert row["seller_skus"] == "SKU-5"


async def test_reset_drops_the_model_only(model: ReadModel, redis_client: aioredis.Redis) -> None:
    store = Store(redis_client, model.prefix)
    await store.record_task("download", CHANNEL, ok=True, detail="3 orders")
    await store.record_task("download", CHANNEL, ok=False, detail="503 from Amazon")
    await model.reset()
    assert (await model.orders(OrderFilter())).total == 0
    assert await model.order(SELLER, OK) is None
    (task,) = await model.tasks()
    assert (task.task, task.scope, task.last_result, task.last_error) == (
        "download",
        CHANNEL,
        "3 orders",
        "503 from Amazon",
    )
    assert task.last_run is not None
    assert task.last_error_at is not None


def test_every_dead_letter_topic_is_folded() -> None:
    names = {spec.name for spec in FOLDED_TOPICS}
    assert f"{ORDERS_ENRICHED.name}.dlq" in names
    assert f"{INVOICES_ISSUED.name}.dlq" in names


def _dead_letter(run: RecordedRun, order_id: str, source_topic: str, *, at: datetime | None = None) -> None:
    """A record of ``source_topic`` that was not even JSON, dead-lettered under the order's key."""
    letter = EventDeadLettered(
        source_topic=source_topic,
        source_partition=1,
        source_offset=7,
        source_key=order_key(run.seller, order_id),
        original_value_b64=base64.b64encode(b"{not json").decode(),
        stage="invoice-issued",
        error_type="InvalidEvent",
        error=f"{source_topic}: not JSON",
        dead_lettered_at=at or run.clock,
    )
    if at is None:
        run.add(f"{source_topic}.dlq", letter)
    else:
        run.events.append(
            (
                f"{source_topic}.dlq",
                Envelope.wrap(letter, seller_id=run.seller, correlation_id="dlq", occurred_at=at),
            )
        )


async def test_dead_letter_growth_notifies_once_per_topic_and_hour(
    redis_client: aioredis.Redis, redis_key_prefix: str
) -> None:
    run = RecordedRun()
    now = datetime.now(UTC)
    _dead_letter(run, OK, INVOICES_ISSUED.name, at=now)
    _dead_letter(run, RETRIED, INVOICES_ISSUED.name, at=now + timedelta(seconds=1))
    _dead_letter(run, WRITEBACK_FAILED, SHIPMENTS_REQUESTED.name, at=now)
    model = ReadModel(redis_client, redis_key_prefix)
    await _fold(model, run.events)
    await _fold(model, run.events)  # the same records again: counted once, no new notification
    board = HealthBoard(redis_client, redis_key_prefix)
    notes = [n for n in await board.notifications() if n.kind == "dlq-growth"]
    assert sorted(n.message.split()[0] for n in notes) == [
        f"{INVOICES_ISSUED.name}.dlq",
        f"{SHIPMENTS_REQUESTED.name}.dlq",
    ]
    sizes = {s.topic: s.records for s in await model.dlq_sizes()}
    assert sizes[f"{INVOICES_ISSUED.name}.dlq"] == 2
    # A record that did not decode still lands on its order, by key: a failed invoice.
    detail = await model.order(SELLER, OK)
    assert detail is not None
    assert detail.row.status == "Failed"
    assert detail.row.invoice_status == "failed"
    assert detail.row.error_message == f"{INVOICES_ISSUED.name}: not JSON"


async def test_old_dead_letters_and_rebuilds_do_not_notify(
    redis_client: aioredis.Redis, redis_key_prefix: str
) -> None:
    # Dead-lettered on 2026-11-20, folded two days later (a rebuild): nobody is told.
    model = ReadModel(redis_client, redis_key_prefix, clock=ManualClock(T0 + timedelta(days=2)))
    await _fold(model, recorded_run())
    board = HealthBoard(redis_client, redis_key_prefix)
    assert [n for n in await board.notifications() if n.kind == "dlq-growth"] == []


async def test_a_failed_invoice_is_superseded_by_a_later_shipment_request(
    redis_client: aioredis.Redis, redis_key_prefix: str
) -> None:
    run = RecordedRun()
    run.order_flow(OK)
    run.imported(OK, "SO00000001")
    _dead_letter(run, OK, INVOICES_ISSUED.name)
    run.shipped(OK, "SO00000001")  # the corrected invoice
    model = ReadModel(redis_client, redis_key_prefix, notify_dlq=False)
    await _fold(model, run.events)
    detail = await model.order(SELLER, OK)
    assert detail is not None
    assert (detail.row.status, detail.row.invoice_status, detail.row.writeback_status) == (
        "Success",
        "invoiced",
        "pending",
    )


async def test_held_pending_orders_and_refused_cancellations(
    redis_client: aioredis.Redis, redis_key_prefix: str
) -> None:
    run = RecordedRun()
    run.order_flow(PENDING.replace("222", "111"))
    run.add(
        ORDERS_IMPORT_FAILED.name,
        OrderImportFailed(
            channel=CHANNEL,
            amazon_order_id=PENDING.replace("222", "111"),
            reason_code="pending_no_prices",
            reason="Pending: no prices yet (payment not authorised)",
        ),
    )
    run.order_flow(OK)
    run.imported(OK, "SO00000001")
    run.add(
        ORDERS_CANCELLATION_RESULTS.name,
        OrderCancellationResult(
            channel=CHANNEL,
            amazon_order_id=OK,
            cancelled=False,
            reason="BuyerCanceled",
            error_code="25",
            error_message="Order already shipped",
        ),
    )
    model = ReadModel(redis_client, redis_key_prefix, notify_dlq=False)
    await model.apply_many(run.events)
    held = await model.order(SELLER, PENDING.replace("222", "111"))
    assert held is not None
    assert (held.row.status, held.row.import_status, held.row.error_code) == ("Pending", "held", None)
    refused = await model.order(SELLER, OK)
    assert refused is not None
    assert (refused.row.status, refused.row.writeback_status) == ("Failed", "failed")
    assert (refused.row.error_code, refused.row.error_message) == ("25", "Order already shipped")
    assert [r.amazon_order_id for r in (await model.orders(OrderFilter(failed_stage="write-back"))).rows] == [
        OK
    ]


async def test_apply_many_equals_one_by_one_and_a_reset_starts_empty(
    redis_client: aioredis.Redis, redis_key_prefix: str
) -> None:
    one_by_one = ReadModel(redis_client, redis_key_prefix, notify_dlq=False)
    await _fold(one_by_one, recorded_run())
    batched = ReadModel(redis_client, f"{redis_key_prefix}-batched", notify_dlq=False)
    try:
        await batched.apply_many(recorded_run())
        assert await _snapshot(batched) == await _snapshot(one_by_one)
        await batched.reset()
        assert (await batched.orders(OrderFilter())).total == 0
        assert await batched.sellers() == []
        assert {s.records for s in await batched.dlq_sizes()} == {0}
        await batched.apply_many(recorded_run())
        assert await _snapshot(batched) == await _snapshot(one_by_one)
    finally:
        await batched.reset()
    leftovers = [k async for k in redis_client.scan_iter(match=f"{redis_key_prefix}-batched:*:g0:*")]
    assert leftovers == []


async def _assert_agrees_with_one_fold(
    model: ReadModel, redis_client: aioredis.Redis, redis_key_prefix: str
) -> None:
    """``model`` is what one fold of the recorded run, in order, makes."""
    reference = ReadModel(redis_client, f"{redis_key_prefix}-reference", notify_dlq=False)
    await _fold(reference, recorded_run())
    assert await _snapshot(model) == await _snapshot(reference)
    await reference.reset()


async def test_two_workers_folding_at_once_agree_with_one(
    redis_client: aioredis.Redis, redis_key_prefix: str, redis_url: str
) -> None:
    """Two projection processes (their own clients, no shared lock) on the same orders at once: the
    check-and-set makes one of them fold again, and nothing is lost."""
    events = recorded_run() * 2  # redeliveries too
    random.Random(3).shuffle(events)
    other_client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        first = ReadModel(redis_client, redis_key_prefix, notify_dlq=False)
        second = ReadModel(other_client, redis_key_prefix, notify_dlq=False)
        await asyncio.gather(
            *(
                (first if number % 2 else second).apply(topic, envelope)
                for number, (topic, envelope) in enumerate(events)
            )
        )
        await _assert_agrees_with_one_fold(first, redis_client, redis_key_prefix)
    finally:
        await other_client.aclose()


async def test_two_workers_folding_batches_at_once_agree_with_one(
    redis_client: aioredis.Redis, redis_key_prefix: str, redis_url: str
) -> None:
    """Batches of the same orders folded by two processes at once: an order the other changed between
    a batch's read and its write is folded again on its own, and nothing is lost."""
    events = recorded_run() * 2
    random.Random(5).shuffle(events)
    other_client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        first = ReadModel(redis_client, redis_key_prefix, notify_dlq=False)
        second = ReadModel(other_client, redis_key_prefix, notify_dlq=False)
        batches = [events[start : start + 7] for start in range(0, len(events), 7)]
        await asyncio.gather(
            *((first if number % 2 else second).apply_many(batch) for number, batch in enumerate(batches))
        )
        await _assert_agrees_with_one_fold(first, redis_client, redis_key_prefix)
    finally:
        await other_client.aclose()


async def test_a_batch_of_orders_is_read_in_one_round_trip_and_written_in_another(
    redis_client: aioredis.Redis, redis_key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = ReadModel(redis_client, redis_key_prefix, notify_dlq=False)
    events = [(t, e) for t, e in recorded_run() if not isinstance(e.payload, EventDeadLettered)]
    orders = {target for t, e in events for target, _ in facts_of(t, e)}
    assert len(orders) >= 6
    await redis_client.ping()  # (the connection is open before counting)
    with counting_trips(monkeypatch) as batched:
        await model.apply_many(events)
    assert batched.trips == 2
    with counting_trips(monkeypatch) as again:
        await model.apply_many(events)  # nothing changes: read only
    assert again.trips == 1
