"""Retention of the status read model on a real Redis: an order last updated before the cut-off leaves the
model completely (facts, row, every index entry) and a recent one stays; the pruned model is the model
that never saw the pruned orders, so the grid's pages and counts agree with it; an order folding a fact
while it is pruned is kept (or started again from that fact alone); a rebuild then a prune gives the
same model; the status projection's hourly task prunes as of Amazon's clock and records its health."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast, get_args

import pytest
import redis.asyncio as aioredis

from ordersync.clock import ManualClock
from ordersync.consumers import status_projection
from ordersync.consumers.status_projection import RETENTION_TASK, prune_read_model_once
from ordersync.schemas.events import OrderAcknowledgementResult
from ordersync.schemas.topics import ORDERS_ACKNOWLEDGEMENT_RESULTS, ORDERS_ENRICHED
from ordersync.settings import Settings
from ordersync.state.readmodel import OrderFilter, ReadModel, SortKey, facts_of
from ordersync.state.store import Store
from tests.factories import (
    CA,
    CHANNEL,
    OK,
    OTHER_CHANNEL,
    OTHER_SELLER,
    PENDING,
    SELLER,
    T0,
    WRITEBACK_FAILED,
    Recorded,
    RecordedRun,
    recorded_run,
)
from tests.stage.test_readmodel_deadlines import deadline_run

pytestmark = pytest.mark.stage

#: Amazon's "now" of these tests: the recorded run (around T0) is long past the retention.
NOW = T0 + timedelta(days=200)
RETENTION = timedelta(days=120)
RECENT = "111-0000301-0000301"
RECENT_OTHER = "222-0000302-0000302"
#: Keys of the model that are about topics and accounts, not orders: a prune leaves them.
#: (``z:sku-names``: the search's SKU vocabulary, kept like the sellers; ``trend``: the Trends page's
#: hourly counts, which expire by themselves.)
_NOT_PER_ORDER = ("dlq:", "dlq-last", "sellers", "seller-channel", "skipped:", "tmp:", "z:sku-names", "trend")


def recent_run() -> Recorded:
    """Two orders updated yesterday: one shares a SKU and a seller with the old ones, one is the other
    account's."""
    run = RecordedRun()
    run.clock = NOW - timedelta(days=1)
    run.order_flow(RECENT, sku="SKU-1")
    run.imported(RECENT, "SO00000301")
    run.order_flow(RECENT_OTHER, seller=OTHER_SELLER, channel=OTHER_CHANNEL, enrich=False)
    return run.events


def _member(seller: str, order_id: str) -> str:
    return f"{order_id}|{seller}"


def _members_of(events: Recorded) -> set[str]:
    return {target.member for topic, envelope in events for target, _ in facts_of(topic, envelope)}


def _without(events: Recorded, members: set[str]) -> Recorded:
    """The events about none of ``members``."""
    return [
        (topic, envelope)
        for topic, envelope in events
        if not {target.member for target, _ in facts_of(topic, envelope)} & members
    ]


def _model(redis: aioredis.Redis, prefix: str) -> ReadModel:
    return ReadModel(redis, prefix, notify_dlq=False, notify_late=False, clock=ManualClock(NOW))


async def _fold(model: ReadModel, events: Recorded) -> None:
    for topic, envelope in events:
        await model.apply(topic, envelope)


async def _dump(redis: aioredis.Redis, model: ReadModel, *, per_order_only: bool = True) -> dict[str, Any]:
    """Every key of the model's current generation with its value, named without the generation."""
    space = await model._space()
    dump: dict[str, Any] = {}
    async for key in redis.scan_iter(match=f"{space.root}:*", count=1000):
        name = key.removeprefix(f"{space.root}:")
        if per_order_only and name.startswith(_NOT_PER_ORDER):
            continue
        kind = await redis.type(key)
        if kind == "string":
            dump[name] = await redis.get(key)
        elif kind == "hash":
            dump[name] = await redis.hgetall(key)
        elif kind == "set":
            dump[name] = sorted(await redis.smembers(key))
        elif kind == "zset":
            dump[name] = await redis.zrange(key, 0, -1, withscores=True)
        else:
            raise AssertionError(f"unexpected {kind} {key}")
    return dump


async def _traces(redis: aioredis.Redis, model: ReadModel, members: set[str]) -> list[str]:
    """Where any of ``members`` is still found in the model: a key named after it, or an entry of a set,
    sorted set or hash (as a member or field)."""
    space = await model._space()
    found: list[str] = []
    async for key in redis.scan_iter(match=f"{space.root}:*", count=1000):
        found += [f"{key} (name)" for member in members if member in key]
        kind = await redis.type(key)
        if kind == "set":
            entries = set(await redis.smembers(key))
        elif kind == "zset":
            entries = set(await redis.zrange(key, 0, -1))
        elif kind == "hash":
            entries = set(await redis.hkeys(key))
        else:
            continue
        found += [f"{key} has {member}" for member in members & entries]
    return found


async def test_an_old_order_leaves_the_model_completely_and_a_recent_one_stays(
    redis_client: aioredis.Redis, redis_key_prefix: str
) -> None:
    model = _model(redis_client, redis_key_prefix)
    # Old (around T0): the recorded run, and orders with ship-by dates (awaiting shipment, confirmed late).
    old_events, recent_events = [*recorded_run(), *deadline_run()], recent_run()
    await _fold(model, [*old_events, *recent_events])
    old = _members_of(old_events)
    assert len(old) == 14
    space = await model._space()
    holding = {
        t.split(" has ")[0].removeprefix(f"{space.root}:") for t in await _traces(redis_client, model, old)
    }
    # Every kind of index holds old orders before.
    assert {
        *(f"z:{name}" for name in ("purchase_date", "updated_at", "status", "ship_by", "id", "await-ship")),
        *(f"s:{kind}:{SELLER}" for kind in ("seller", "confirmed", "late")),
        *(f"s:status:{status}" for status in ("Failed", "Pending", "Success", "Ignored")),
        *(f"s:failed:{stage}" for stage in ("import", "write-back")),
        f"s:channel:{CHANNEL}",
        f"s:mkt:{CA}",
        "s:sku:SKU-1",
    } <= holding

    # Bounded batches until none is left.
    before = NOW - RETENTION
    batches = []
    while removed := await model.prune(before, 4):
        batches.append(removed)
    assert batches == [4, 4, 4, 2]

    assert await _traces(redis_client, model, old) == []
    for order_id in (OK, WRITEBACK_FAILED):
        assert await model.order(SELLER, order_id) is None
    assert await model.find(PENDING) == []
    # The recent orders are whole: the same as a model never given the old ones.
    reference = _model(redis_client, f"{redis_key_prefix}-reference")
    try:
        await _fold(reference, recent_events)
        assert await _dump(redis_client, model) == await _dump(redis_client, reference)
        recent = await model.order(SELLER, RECENT)
        assert recent is not None
        assert recent.row.skus == ("SKU-1",)
        assert [r.amazon_order_id for r in (await model.orders(OrderFilter(text="SKU-1"))).rows] == [RECENT]
        assert await model.counts() == {"Failed": 0, "Pending": 1, "Success": 1, "Ignored": 0}
        # Accounts and dead-letter counts are not per order: they stay.
        assert await model.sellers() == [(CHANNEL, SELLER), (OTHER_CHANNEL, OTHER_SELLER)]
        assert {d.topic: d.records for d in await model.dlq_sizes()}[f"{ORDERS_ENRICHED.name}.dlq"] == 1
    finally:
        await reference.reset()
    # Nothing left to prune until the recent orders are old too.
    assert await model.prune(before, 100) == 0
    assert await model.prune(NOW, 100) == 2
    assert await _dump(redis_client, model) == {}


async def test_the_pruned_model_answers_as_one_that_never_saw_the_pruned_orders(
    redis_client: aioredis.Redis, redis_key_prefix: str
) -> None:
    events = [*recorded_run(), *recent_run()]
    model = _model(redis_client, redis_key_prefix)
    await _fold(model, events)
    by_update = (await model.orders(OrderFilter(), sort="updated_at", descending=False, limit=100)).rows
    # Cut between the third and the fourth oldest update: some of each status and stage go.
    cut = by_update[3].updated_at
    pruned = {_member(r.seller_id, r.amazon_order_id) for r in by_update if r.updated_at < cut}
    assert len(pruned) == 3
    assert await model.prune(cut) == 3

    reference = _model(redis_client, f"{redis_key_prefix}-reference")
    try:
        await _fold(reference, _without(events, pruned))
        assert await _dump(redis_client, model) == await _dump(redis_client, reference)
        # The grid's pages and counts: walked (sets only) and intersected (dates, text, deadlines).
        filters = [
            OrderFilter(),
            OrderFilter(seller_id=SELLER),
            OrderFilter(status="Failed"),
            OrderFilter(status="Success", seller_id=SELLER),
            OrderFilter(failed_stage="import"),
            OrderFilter(channel=OTHER_CHANNEL),
            OrderFilter(text="111-0000"),
            OrderFilter(text="SKU-1"),
            OrderFilter(since=T0 - timedelta(days=3)),
            OrderFilter(deadline="overdue"),
        ]
        for order_filter in filters:
            for sort in get_args(SortKey):
                for offset in (0, 2):
                    page = await model.orders(order_filter, sort=sort, offset=offset, limit=2)
                    expected = await reference.orders(order_filter, sort=sort, offset=offset, limit=2)
                    assert page == expected, (order_filter, sort, offset)
        for channel in (None, CHANNEL, OTHER_CHANNEL):
            assert await model.counts(channel) == await reference.counts(channel)
        assert await model.shipment_timeliness() == await reference.shipment_timeliness()
        assert (await model.orders(OrderFilter())).total == len(by_update) - 3
    finally:
        await reference.reset()


# An acknowledgement of OK folded while it is pruned, itself old (the order is still past the
# retention after it, so only the check-and-set can keep the order): after the order's last update it
# changes the row; before it, the row stays the same and only the facts count tells.
@pytest.mark.parametrize(
    "fact_at", [T0 + timedelta(hours=1), T0 - timedelta(hours=1)], ids=["later", "earlier"]
)
async def test_an_order_that_folds_a_fact_while_it_is_pruned_stays(
    redis_client: aioredis.Redis, redis_key_prefix: str, monkeypatch: pytest.MonkeyPatch, fact_at: datetime
) -> None:
    model = _model(redis_client, redis_key_prefix)
    events = recorded_run()
    await _fold(model, events)
    late = RecordedRun()
    late.clock = fact_at
    # An acknowledgement result leaves the row as it was when it is older than the order's last
    # update (a command would not: its outcome is kept with the row).
    late.add(
        ORDERS_ACKNOWLEDGEMENT_RESULTS.name,
        OrderAcknowledgementResult(
            channel=CHANNEL, amazon_order_id=OK, merchant_order_id="SO00000001", acknowledged=True
        ),
    )
    row_before = await redis_client.get((await model._space())("row", _member(SELLER, OK)))
    real_script = model._prune_script

    async def fold_between_read_and_delete(**kwargs: Any) -> Any:
        await _fold(model, late.events)
        return await real_script(**kwargs)

    monkeypatch.setattr(model, "_prune_script", fold_between_read_and_delete)
    assert await model.prune(NOW - RETENTION) == 5
    kept = await model.order(SELLER, OK)
    assert kept is not None
    assert "OrderAcknowledgementResult" in [h["event_type"] for h in kept.history]
    row_after = await redis_client.get((await model._space())("row", _member(SELLER, OK)))
    assert (row_after == row_before) is (fact_at < T0)
    assert await _traces(redis_client, model, _members_of(events) - {_member(SELLER, OK)}) == []
    # Kept whole: as if only OK had ever been folded.
    only_ok = _model(redis_client, f"{redis_key_prefix}-only-ok")
    try:
        others = _members_of(events) - {_member(SELLER, OK)}
        await _fold(only_ok, [*_without(events, others), *late.events])
        assert await _dump(redis_client, model) == await _dump(redis_client, only_ok)
    finally:
        await only_ok.reset()
    # Unchanged since: the next prune removes it.
    monkeypatch.setattr(model, "_prune_script", real_script)
    assert await model.prune(NOW - RETENTION) == 1
    assert await _dump(redis_client, model) == {}


async def test_an_order_whose_row_is_derived_again_while_it_is_pruned_stays(
    redis_client: aioredis.Redis, redis_key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No new fact, a new row: a record folded again after an upgrade that derives rows differently.
    The prune read the old row, so the entries it would remove are not the order's any more."""
    model = _model(redis_client, redis_key_prefix)
    events = recorded_run()
    await _fold(model, events)
    space = await model._space()
    member = _member(SELLER, OK)
    # As an older version stored it: another SKU, indexed so.
    stored = json.loads(await redis_client.get(space("row", member)))
    stored["row"]["skus"] = ["OLD-SKU"]
    await redis_client.set(space("row", member), json.dumps(stored, separators=(",", ":")))
    await redis_client.srem(space("s", "sku", "SKU-1"), member)
    await redis_client.sadd(space("s", "sku", "OLD-SKU"), member)
    again = next(
        (topic, envelope) for topic, envelope in events if _members_of([(topic, envelope)]) == {member}
    )
    real_script = model._prune_script

    async def fold_again_between_read_and_delete(**kwargs: Any) -> Any:
        await model.apply(*again)
        return await real_script(**kwargs)

    monkeypatch.setattr(model, "_prune_script", fold_again_between_read_and_delete)
    assert await model.prune(NOW - RETENTION) == 5
    assert await redis_client.smembers(space("s", "sku", "SKU-1")) == {member}
    monkeypatch.setattr(model, "_prune_script", real_script)
    assert await model.prune(NOW - RETENTION) == 1
    assert await _dump(redis_client, model) == {}


async def test_a_fold_that_read_the_order_before_it_was_pruned_starts_it_again_from_its_fact(
    redis_client: aioredis.Redis, redis_key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _model(redis_client, redis_key_prefix)
    await _fold(model, recorded_run())
    late = RecordedRun()
    late.clock = T0 + timedelta(hours=1)
    late.command("retry-writeback", WRITEBACK_FAILED)
    # Another projection process prunes after this one read the order and before it writes.
    pruner = _model(redis_client, redis_key_prefix)
    real_write = model._write_order
    pruned: list[int] = []

    async def prune_between_read_and_write(**kwargs: Any) -> Any:
        if not pruned:
            pruned.append(await pruner.prune(NOW - RETENTION))
        return await real_write(**kwargs)

    monkeypatch.setattr(model, "_write_order", prune_between_read_and_write)
    await _fold(model, late.events)
    assert pruned == [6]
    # The fold noticed (its facts count changed) and folded again: the order from that fact alone,
    # with no index entry of the pruned row left.
    only_fact = _model(redis_client, f"{redis_key_prefix}-only-fact")
    try:
        await _fold(only_fact, late.events)
        assert await _dump(redis_client, model) == await _dump(redis_client, only_fact)
    finally:
        await only_fact.reset()
    # Old too: the next prune takes it.
    assert await model.prune(NOW - RETENTION) == 1
    assert await _dump(redis_client, model) == {}


async def test_an_index_entry_without_a_row_is_pruned_too(
    redis_client: aioredis.Redis, redis_key_prefix: str
) -> None:
    """Not written by this model (a row lost by hand): still removed, or it would head every batch."""
    model = _model(redis_client, redis_key_prefix)
    space = await model._space()
    stray = _member(SELLER, "111-0000399-0000399")
    for name in ("updated_at", "purchase_date", "id"):
        await redis_client.zadd(space("z", name), {stray: 1.0})
    assert await model.prune(NOW - RETENTION) == 1
    assert await _dump(redis_client, model) == {}


async def test_a_rebuild_then_a_prune_gives_the_same_model(
    redis_client: aioredis.Redis, redis_key_prefix: str
) -> None:
    events = [*recorded_run(), *recent_run()]
    live = _model(redis_client, redis_key_prefix)
    await _fold(live, events)
    assert await live.prune(NOW - RETENTION) == 6
    pruned = await _dump(redis_client, live, per_order_only=False)

    # The rebuild: a new, empty generation, every record the topics hold folded again in batches
    # (the old orders come back), then the hourly prune.
    await live.reset()
    shuffled = list(events)
    random.Random(5).shuffle(shuffled)
    for start in range(0, len(shuffled), 7):
        await live.apply_many(shuffled[start : start + 7])
    assert (await live.orders(OrderFilter())).total == 8
    assert await live.prune(NOW - RETENTION) == 6
    assert await _dump(redis_client, live, per_order_only=False) == pruned


def _runtime(redis: aioredis.Redis, prefix: str, redis_url: str, clock: ManualClock, days: int) -> Any:
    settings = Settings.model_validate(
        {"redis": {"url": redis_url, "key_prefix": prefix}, "status_model": {"retention_days": days}}
    )
    return SimpleNamespace(store=Store(redis, prefix, clock=clock), settings=settings, clock=clock)


async def test_the_hourly_task_prunes_as_of_amazons_clock_in_batches(
    redis_client: aioredis.Redis, redis_key_prefix: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _model(redis_client, redis_key_prefix)
    await _fold(model, [*recorded_run(), *recent_run()])
    monkeypatch.setattr(status_projection, "PRUNE_BATCH", 4)
    # Amazon's clock, not this machine's: at T0 + 200 days with 120 days kept, the run around T0 goes.
    clock = ManualClock(NOW)
    runtime = _runtime(redis_client, redis_key_prefix, redis_url, clock, days=120)
    assert await prune_read_model_once(cast(Any, runtime), model) == 6
    health = await runtime.store.task(RETENTION_TASK, "all")
    cut = NOW - timedelta(days=120)
    assert health["last_result"] == f"6 orders removed (last updated before {cut:%Y-%m-%d %H:%M} UTC)"
    assert "last_error" not in health
    assert (await model.orders(OrderFilter())).total == 2

    # An hour later nothing is due; a shorter retention takes the recent orders too.
    clock.advance(3600)
    assert await prune_read_model_once(cast(Any, runtime), model) == 0
    assert (await runtime.store.task(RETENTION_TASK, "all"))["last_result"].startswith("0 orders removed")
    shorter = _runtime(redis_client, redis_key_prefix, redis_url, clock, days=1)
    assert await prune_read_model_once(cast(Any, shorter), model) == 2
    assert (await model.orders(OrderFilter())).total == 0
