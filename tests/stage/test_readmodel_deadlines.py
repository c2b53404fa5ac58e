"""Ship-by deadlines in the status read model on a real Redis: the grid's at-risk / overdue filter as of
the model's clock, the ship_by sort, the late counts per seller, the late-shipment notification (live
only, once) and the ship-by notification of the status projection's periodic check; the indexes are
the same whatever order the facts fold in and after a rebuild."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

import pytest
import redis.asyncio as aioredis

from ordersync.clock import ManualClock
from ordersync.consumers.status_projection import warn_ship_by_once
from ordersync.schemas.events import OrderDownloaded, ShipmentConfirmed
from ordersync.schemas.topics import ORDERS_DOWNLOADED, SHIPMENTS_CONFIRMED
from ordersync.settings import Settings
from ordersync.state.health import HealthBoard
from ordersync.state.readmodel import OrderFilter, ReadModel
from ordersync.state.store import Store
from tests.factories import CHANNEL, OTHER_CHANNEL, OTHER_SELLER, SELLER, T0, Recorded, RecordedRun, order

pytestmark = pytest.mark.stage

#: Amazon's "now" of these tests.
NOW = T0 + timedelta(days=1)
LEAD = timedelta(hours=4)

OVERDUE = "111-0000201-0000201"  # ship-by an hour ago, nothing shipped
AT_RISK = "111-0000202-0000202"  # ship-by in an hour
LATER = "111-0000203-0000203"  # ship-by in ten hours
LATE = "111-0000204-0000204"  # confirmed by ordersync after its ship-by
ON_TIME = "111-0000205-0000205"  # confirmed before its ship-by
AFN = "111-0000206-0000206"  # Amazon ships it
UNDATED = "111-0000207-0000207"  # no ship-by date
OTHER_OVERDUE = "222-0000208-0000208"  # another seller's, overdue


def _listed(run: RecordedRun, order_id: str, ship_by: datetime | None, **changes: Any) -> None:
    seller = changes.pop("seller", SELLER)
    listed = order(
        amazon_order_id=order_id, seller_id=seller, latest_ship_date=ship_by, items=None, **changes
    )
    channel = CHANNEL if seller == SELLER else OTHER_CHANNEL
    run.add(ORDERS_DOWNLOADED.name, OrderDownloaded(channel=channel, order=listed), seller=seller)


def _confirmed(run: RecordedRun, order_id: str, at: datetime) -> None:
    run.add(
        SHIPMENTS_CONFIRMED.name,
        ShipmentConfirmed(
            channel=CHANNEL,
            amazon_order_id=order_id,
            package_reference_id="1",
            method="confirmShipment",
            attempts=1,
            carrier_code="UPS",
            tracking_number="1Z1",
            quantity=1,
            confirmed_at=at,
        ),
    )


def deadline_run() -> Recorded:
    run = RecordedRun()
    _listed(run, OVERDUE, NOW - timedelta(hours=1))
    _listed(run, AT_RISK, NOW + timedelta(hours=1))
    _listed(run, LATER, NOW + timedelta(hours=10))
    _listed(run, LATE, NOW - timedelta(hours=6))
    _confirmed(run, LATE, NOW - timedelta(hours=2))
    _listed(run, ON_TIME, NOW - timedelta(hours=6))
    _confirmed(run, ON_TIME, NOW - timedelta(hours=8))
    _listed(run, AFN, NOW - timedelta(hours=1), fulfillment_channel="AFN")
    _listed(run, UNDATED, None)
    _listed(
        run, OTHER_OVERDUE, NOW - timedelta(hours=3), seller=OTHER_SELLER, marketplace_id="A2EUQ1WTGCTBG2"
    )
    return run.events


async def _fold(model: ReadModel, events: Recorded) -> None:
    for topic, envelope in events:
        await model.apply(topic, envelope)


def _model(redis: aioredis.Redis, prefix: str, clock: ManualClock, **options: Any) -> ReadModel:
    options.setdefault("notify_dlq", False)
    options.setdefault("notify_late", False)
    return ReadModel(redis, prefix, clock=clock, ship_by_lead=LEAD, **options)


async def _ids(model: ReadModel, order_filter: OrderFilter, **sort: Any) -> list[str]:
    page = await model.orders(order_filter, limit=100, **sort)
    assert page.total == len(page.rows)
    return [row.amazon_order_id for row in page.rows]


async def test_the_deadline_filter_follows_the_models_clock(
    redis_client: aioredis.Redis, redis_key_prefix: str
) -> None:
    clock = ManualClock(NOW)
    model = _model(redis_client, redis_key_prefix, clock)
    await _fold(model, deadline_run())

    assert await _ids(model, OrderFilter(deadline="overdue"), sort="ship_by", descending=False) == [
        OTHER_OVERDUE,
        OVERDUE,
    ]
    assert await _ids(model, OrderFilter(deadline="at-risk")) == [AT_RISK]
    # Combined with the other filters (a seller), through the same intersection.
    assert await _ids(model, OrderFilter(deadline="overdue", seller_id=SELLER)) == [OVERDUE]
    assert await _ids(model, OrderFilter(deadline="overdue", status="Failed")) == []

    # Seven hours later: the at-risk order is overdue, the later one at risk.
    clock.advance(7 * 3600)
    assert set(await _ids(model, OrderFilter(deadline="overdue"))) == {OVERDUE, AT_RISK, OTHER_OVERDUE}
    assert await _ids(model, OrderFilter(deadline="at-risk")) == [LATER]

    # Sorting by ship-by keeps every order, those without a date last when earliest comes first.
    by_ship_by = await _ids(model, OrderFilter(), sort="ship_by", descending=False)
    assert by_ship_by[-1] == UNDATED
    assert set(by_ship_by[:2]) == {LATE, ON_TIME}  # both due six hours before NOW
    # (Equal dates: Redis orders members by their text, the order id first.)
    assert by_ship_by[2:7] == [OTHER_OVERDUE, OVERDUE, AFN, AT_RISK, LATER]

    row = {r.amazon_order_id: r for r in (await model.orders(OrderFilter(), limit=100)).rows}
    assert row[LATE].confirmed_late is True
    assert row[ON_TIME].confirmed_late is False
    assert row[OVERDUE].ship_by == NOW - timedelta(hours=1)
    assert row[AFN].awaiting_shipment is False

    # The CSV export's iteration takes the same filter.
    exported = [d.row.amazon_order_id async for d in model.iter_orders(OrderFilter(deadline="at-risk"))]
    assert exported == [LATER]


async def test_a_confirmation_takes_the_order_out_of_the_deadline_index(
    redis_client: aioredis.Redis, redis_key_prefix: str
) -> None:
    model = _model(redis_client, redis_key_prefix, ManualClock(NOW))
    await _fold(model, deadline_run())
    run = RecordedRun()
    run.clock = NOW
    _confirmed(run, OVERDUE, NOW)
    await _fold(model, run.events)
    assert await _ids(model, OrderFilter(deadline="overdue", seller_id=SELLER)) == []
    (detail,) = await model.find(OVERDUE)
    assert (detail.row.confirmed_late, detail.row.awaiting_shipment) == (True, False)


async def test_the_deadline_indexes_do_not_depend_on_the_fold_order_or_a_rebuild(
    redis_client: aioredis.Redis, redis_key_prefix: str
) -> None:
    clock = ManualClock(NOW)
    events = deadline_run()
    live = _model(redis_client, redis_key_prefix, clock)
    await _fold(live, events)
    shuffled = [*events, *events[:4]]
    random.Random(3).shuffle(shuffled)
    replayed = _model(redis_client, f"{redis_key_prefix}-replayed", clock)
    try:
        await _fold(replayed, shuffled)

        async def indexes(model: ReadModel) -> dict[str, Any]:
            space = await model._space()
            return {
                name: await redis_client.zrange(space("z", name), 0, -1, withscores=True)
                for name in ("await-ship", "ship_by")
            } | {
                name: sorted(await redis_client.smembers(space("s", name, SELLER)))
                for name in ("confirmed", "late")
            }

        reference = await indexes(live)
        # Only the orders awaiting shipment, earliest ship-by first.
        assert [member for member, _ in reference["await-ship"]] == [
            f"{OTHER_OVERDUE}|{OTHER_SELLER}",
            f"{OVERDUE}|{SELLER}",
            f"{AT_RISK}|{SELLER}",
            f"{LATER}|{SELLER}",
        ]
        assert await indexes(replayed) == reference
        # A rebuild: the model dropped and every record folded again.
        await live.reset()
        await _fold(live, list(reversed(events)))
        assert await indexes(live) == reference
        assert reference["late"] == [f"{LATE}|{SELLER}"]
        assert reference["confirmed"] == sorted([f"{LATE}|{SELLER}", f"{ON_TIME}|{SELLER}"])
    finally:
        await replayed.reset()


async def test_late_counts_and_due_orders_per_seller(
    redis_client: aioredis.Redis, redis_key_prefix: str
) -> None:
    model = _model(redis_client, redis_key_prefix, ManualClock(NOW))
    await _fold(model, deadline_run())
    by_seller = {t.seller_id: t for t in await model.shipment_timeliness()}
    mine = by_seller[SELLER]
    assert (mine.channel, mine.confirmed, mine.late, mine.late_rate) == (CHANNEL, 2, 1, 0.5)
    assert (mine.overdue, mine.at_risk) == (1, 1)
    assert mine.due_order_ids == (OVERDUE, AT_RISK)
    other = by_seller[OTHER_SELLER]
    assert (other.confirmed, other.late, other.late_rate, other.overdue) == (0, 0, None, 1)


async def test_a_late_confirmation_notifies_once_and_only_when_live(
    redis_client: aioredis.Redis, redis_key_prefix: str
) -> None:
    board = HealthBoard(redis_client, redis_key_prefix)
    events = deadline_run()
    # A rebuild three days later folds the old confirmation: nobody is told again.
    later = _model(redis_client, redis_key_prefix, ManualClock(NOW + timedelta(days=3)), notify_late=True)
    await _fold(later, events)
    assert [n for n in await board.notifications() if n.kind == "late-shipment"] == []

    await later.reset()
    live = _model(redis_client, redis_key_prefix, ManualClock(NOW), notify_late=True)
    await _fold(live, events)
    await _fold(live, events)  # read again: the row was already late
    (late,) = [n for n in await board.notifications() if n.kind == "late-shipment"]
    assert LATE in late.message
    assert "4 h 0 min after its ship-by date" in late.message
    assert (late.channel, late.at) == (CHANNEL, NOW - timedelta(hours=2))


async def test_the_periodic_check_names_each_sellers_due_orders(
    redis_client: aioredis.Redis, redis_key_prefix: str, redis_url: str
) -> None:
    clock = ManualClock(NOW)
    model = _model(redis_client, redis_key_prefix, clock)
    await _fold(model, deadline_run())
    settings = Settings.model_validate({"redis": {"url": redis_url, "key_prefix": redis_key_prefix}})
    runtime = SimpleNamespace(
        store=Store(redis_client, redis_key_prefix, clock=clock), settings=settings, clock=clock
    )
    due = await warn_ship_by_once(cast(Any, runtime), model)
    assert {t.seller_id for t in due} == {SELLER, OTHER_SELLER}
    notes = {n.channel: n for n in await HealthBoard(redis_client, redis_key_prefix).notifications()}
    mine = notes[CHANNEL]
    assert (mine.kind, mine.severity, mine.at) == ("ship-by", "error", NOW)
    assert "1 overdue, 1 due within 4 h" in mine.message
    assert mine.message.endswith(f"earliest {OVERDUE}, {AT_RISK}")
    assert "1 overdue" in notes[OTHER_CHANNEL].message
    # Held back while the dedupe lasts: a reminder, not one every few minutes.
    await warn_ship_by_once(cast(Any, runtime), model)
    assert len(await HealthBoard(redis_client, redis_key_prefix).notifications()) == 2
    task = await runtime.store.task("ship-by-watch", "all")
    assert "A1ACME: 1 overdue, 1 at risk" in str(task)
