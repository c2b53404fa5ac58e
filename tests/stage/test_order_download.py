"""Order download against the simulator (real HTTP) and a real Redis: windows, dedupe, late changes,
catch-ups, reconciliation and refused page tokens."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ordersync.amazon.client import OrdersPage, OrdersQuery
from ordersync.amazon.normalize import parse_time
from ordersync.dev.testing import RecordingRuntime
from ordersync.pipeline.lock import Lock
from ordersync.producers.download_send import DEDUPE_MARK
from ordersync.producers.order_download import (
    download_window,
    poll_channel,
    run_due_catch_ups,
    scan,
)
from ordersync.schemas.events import OrderDownloaded
from ordersync.schemas.topics import DOWNLOAD_CURSORS, ORDERS_DOWNLOADED
from ordersync.simulator.runner import RunningSimulator
from ordersync.simulator.scenario import Scenario
from ordersync.simulator.testing import tiny_scenario
from ordersync.state import keys

pytestmark = pytest.mark.stage


def downloaded(runtime: RecordingRuntime) -> list[OrderDownloaded]:
    return runtime.payloads(ORDERS_DOWNLOADED.name)


def fetcher(runtime: RecordingRuntime) -> Any:
    client = runtime.amazon(runtime.channels.channels[0])

    async def fetch_page(query: OrdersQuery, token: str | None) -> OrdersPage:
        return await client.list_orders_page(query, next_token=token)

    return fetch_page


async def _setup(
    make_runtime: Any, scenario: Scenario, **download: Any
) -> tuple[RunningSimulator, RecordingRuntime]:
    sim = RunningSimulator(scenario)
    sim.start()
    runtime = await make_runtime("order-download", scenario, sim, **download)
    return sim, runtime


async def test_window_emits_each_visible_order_once_and_saves_amazons_bound(make_runtime: Any) -> None:
    scenario = tiny_scenario(orders={"count": 150})  # more than one page of 100
    sim, runtime = await _setup(make_runtime, scenario)
    try:
        channel = runtime.channels.channels[0]
        # Amazon lists changes up to two minutes ago: let the newest order get older than that.
        sim.state.advance_clock(300)
        first = await download_window(runtime, channel, fetcher(runtime))
        truth = sim.state.truth_orders()
        assert first.pages == 2
        assert first.emitted == len(truth) == 150
        assert {o.order.amazon_order_id for o in downloaded(runtime)} == {o["amazon_order_id"] for o in truth}
        cursor = await runtime.store.cursor(channel.name)
        assert cursor == first.bound
        assert cursor == sim_now(sim) - timedelta(minutes=2)
        # Kafka's copy of the cursor, the record a rebuild reads: sent after every order of the window.
        topics = [e.topic for e in runtime.emitted]
        assert topics.index(DOWNLOAD_CURSORS.name) == len(topics) - 1
        assert [c.last_updated_before for c in runtime.payloads(DOWNLOAD_CURSORS.name)] == [cursor]
        # The next window overlaps the last 15 minutes: nothing new, so nothing emitted again.
        second = await download_window(runtime, channel, fetcher(runtime))
        assert second.listed > 0
        assert second.emitted == 0
        assert len(downloaded(runtime)) == 150
    finally:
        sim.stop()


async def test_a_change_after_download_flows_as_a_new_version(make_runtime: Any) -> None:
    sim, runtime = await _setup(make_runtime, tiny_scenario(orders={"count": 5}))
    try:
        channel = runtime.channels.channels[0]
        await download_window(runtime, channel, fetcher(runtime))
        victim = sim.state.truth_orders()[0]["amazon_order_id"]
        sim.state.set_order_status(victim, "Canceled")
        sim.state.advance_clock(600)
        report = await download_window(runtime, channel, fetcher(runtime))
        assert report.emitted == 1
        latest = downloaded(runtime)[-1].order
        assert (latest.amazon_order_id, latest.order_status) == (victim, "Canceled")
    finally:
        sim.stop()


async def test_changes_visible_late_are_caught_by_the_overlap_none_twice(make_runtime: Any) -> None:
    # Every change becomes visible up to 10 minutes late; the overlap is 15 minutes.
    scenario = tiny_scenario(
        orders={"count": 60, "history_s": 0, "arrival_window_s": 3600},
        visibility_lag={"p_late": 1.0, "max_late_s": 600},
    )
    sim, runtime = await _setup(make_runtime, scenario)
    try:
        channel = runtime.channels.channels[0]
        for _ in range(30):  # poll every 3 simulated minutes for 90 minutes
            await download_window(runtime, channel, fetcher(runtime))
            sim.state.advance_clock(180)
        await download_window(runtime, channel, fetcher(runtime))
        truth = sim.state.truth_orders()
        seen = Counter((o.order.amazon_order_id, o.order.last_update_date) for o in downloaded(runtime))
        assert {order_id for order_id, _ in seen} == {o["amazon_order_id"] for o in truth}
        assert max(seen.values()) == 1, "an order version was emitted twice"
    finally:
        sim.stop()


async def test_catch_up_finds_what_the_poll_window_missed_and_reports_it(make_runtime: Any) -> None:
    sim, runtime = await _setup(make_runtime, tiny_scenario(orders={"count": 3}), catch_up_interval_s=60)
    try:
        channel = runtime.channels.channels[0]
        await download_window(runtime, channel, fetcher(runtime))
        # An order Amazon shows only an hour after its change (the losses the seeds admit): by then
        # the cursor has moved past it, and the poll's 15-minute overlap no longer reaches it.
        added = sim.state.add_order({"seller_id": scenario_seller(runtime)})
        sim.state.advance_clock(3600)
        await runtime.store.save_cursor(channel.name, sim_now(sim) - timedelta(minutes=2))
        poll = await download_window(runtime, channel, fetcher(runtime))
        assert poll.emitted == 0
        reports = await run_due_catch_ups(runtime, channel, fetcher(runtime))
        found = [o.order.amazon_order_id for o in downloaded(runtime) if o.found_by == "catch-up"]
        assert found == [added["amazon_order_id"]]
        assert {r.task for r in reports} == {"catch-up-48h", "catch-up-fba", "reconciliation"}
        health = await runtime.store.task("catch-up-48h", channel.name)
        assert "1 new or changed" in health["last_result"]
        # None is due again until its interval has passed.
        assert await run_due_catch_ups(runtime, channel, fetcher(runtime)) == []
    finally:
        sim.stop()


async def test_reconciliation_emits_the_previous_days_orders_the_pipeline_has_not_seen(
    make_runtime: Any,
) -> None:
    scenario = tiny_scenario(orders={"count": 20, "history_s": 86400 * 2})
    sim, runtime = await _setup(make_runtime, scenario, reconciliation_interval_s=1)
    try:
        channel = runtime.channels.channels[0]
        await download_window(runtime, channel, fetcher(runtime))
        cursor = await runtime.store.cursor(channel.name)
        assert cursor is not None
        day_end = cursor.replace(hour=0, minute=0, second=0, microsecond=0)
        yesterday = [
            o["amazon_order_id"]
            for o in sim.state.truth_orders()
            if day_end - timedelta(days=1) <= _time(o["created"]) < day_end
        ]
        assert yesterday, "the scenario places orders on the previous day"
        lost = yesterday[0]
        await runtime.store.forget_versions(channel.seller_id, lost, ("downloaded",))
        runtime.emitted.clear()
        reports = {r.task: r for r in await run_due_catch_ups(runtime, channel, fetcher(runtime))}
        assert reports["reconciliation"].listed == len(yesterday)
        # Found again exactly once (the 48-hour re-scan runs first and may be the one to find it).
        assert [o.order.amazon_order_id for o in downloaded(runtime)] == [lost]
        assert sum(r.emitted for r in reports.values()) == 1
    finally:
        sim.stop()


async def test_a_refused_page_token_restarts_the_scan_without_duplicates(make_runtime: Any) -> None:
    sim, runtime = await _setup(make_runtime, tiny_scenario(orders={"count": 150}))
    try:
        channel = runtime.channels.channels[0]
        sim.state.advance_clock(300)
        real = fetcher(runtime)
        corrupted = []

        async def fetch_page(query: OrdersQuery, token: str | None) -> OrdersPage:
            if token and not corrupted:
                corrupted.append(token)
                return await real(query, token[::-1])  # Amazon cannot decode it: 400 InvalidInput
            return await real(query, token)

        cursor_before = await runtime.store.cursor(channel.name)
        report = await scan(
            runtime,
            channel,
            OrdersQuery(updated_after=sim_now(sim) - timedelta(days=3)),
            fetch_page,
            found_by="poll",
            task="download",
        )
        assert corrupted
        assert report.restarts == 1
        ids = [o.order.amazon_order_id for o in downloaded(runtime)]
        assert len(ids) == len(set(ids)) == 150
        assert await runtime.store.cursor(channel.name) == cursor_before
    finally:
        sim.stop()


def scenario_seller(runtime: RecordingRuntime) -> str:
    return runtime.channels.channels[0].seller_id


def sim_now(sim: RunningSimulator) -> datetime:
    return datetime.fromtimestamp(sim.state.now(), UTC)


def _time(value: str) -> datetime:
    return parse_time(value)


async def test_one_worker_polls_a_channel_and_a_standby_takes_over(make_runtime: Any) -> None:
    """Replicas of order-download share the channel through a lease: while another worker holds it, this
    one makes no Amazon call; once released, this one polls, and gives the lease up when stopped."""
    sim, runtime = await _setup(make_runtime, tiny_scenario(orders={"count": 5}), poll_interval_s=0.05)
    channel = runtime.channels.channels[0]
    other = Lock(
        runtime.store.redis, runtime.store.key_of(keys.LEASE, "download", channel.name), "other/x", 60
    )
    poller: asyncio.Task[None] | None = None
    try:
        sim.state.advance_clock(300)
        assert await other.hold()
        poller = asyncio.create_task(poll_channel(runtime, channel))
        await asyncio.sleep(0.5)
        assert downloaded(runtime) == [], "standing by: nothing polled"
        assert await runtime.store.cursor(channel.name) is None
        await other.release()
        for _ in range(100):
            if len(downloaded(runtime)) == 5:
                break
            await asyncio.sleep(0.05)
        assert len(downloaded(runtime)) == 5, "took over once the other worker let go"
        assert not await other.hold(), "now ours"
        poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poller
        assert await other.hold(), "released when stopped"
    finally:
        if poller is not None:
            poller.cancel()
        sim.stop()


async def test_a_crash_after_sending_never_leaves_an_order_marked_sent_without_its_status(
    make_runtime: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The status, the dedupe mark and the claim's release of a sent version are one MULTI after Kafka's
    acknowledgement: a crash before it leaves nothing marked (the next scan sends the version again),
    and once it ran the status and the mark are both there."""
    sim, runtime = await _setup(make_runtime, tiny_scenario(orders={"count": 1}))
    try:
        sim.state.advance_clock(300)
        channel = runtime.channels.channels[0]
        [truth] = sim.state.truth_orders()
        order_id = truth["amazon_order_id"]
        record_sent = runtime.store.record_sent

        async def crash(*args: Any, **kwargs: Any) -> None:
            raise ConnectionError("killed before the sent version was recorded")

        monkeypatch.setattr(runtime.store, "record_sent", crash)
        with pytest.raises(ConnectionError):
            await download_window(runtime, channel, fetcher(runtime))
        [sent] = downloaded(runtime)
        version = sent.order.last_update_date
        assert await runtime.store.is_new_version(DEDUPE_MARK, channel.seller_id, order_id, version)
        monkeypatch.setattr(runtime.store, "record_sent", record_sent)
        again = await download_window(runtime, channel, fetcher(runtime))
        assert again.emitted == 1, "not marked as sent: sent again"
        assert len(downloaded(runtime)) == 2
        status = await runtime.store.order_status(channel.seller_id, order_id)
        assert status["amazon_status"] == truth["status"]
        assert not await runtime.store.is_new_version(DEDUPE_MARK, channel.seller_id, order_id, version)
    finally:
        sim.stop()


async def test_a_channel_switched_from_v0_to_2026_loses_and_repeats_no_order(make_runtime: Any) -> None:
    """The README's switch: change the channel's orders_api and restart order-download. The cursor and
    the dedupe marks are the channel's, whichever API read them: the next window goes on from the
    cursor, and versions already sent through v0 are not sent again."""
    scenario = tiny_scenario(orders={"count": 20})
    sim, runtime = await _setup(make_runtime, scenario)
    try:
        configured = runtime.channels.channels[0]
        on_v0 = configured.model_copy(update={"orders_api": "v0"})
        on_2026 = configured.model_copy(update={"orders_api": "2026-01-01"})

        def fetch(channel: Any) -> Any:
            client = runtime.amazon(channel)

            async def fetch_page(query: OrdersQuery, token: str | None) -> OrdersPage:
                return await client.list_orders_page(query, next_token=token)

            return fetch_page

        sim.state.advance_clock(300)
        before = await download_window(runtime, on_v0, fetch(on_v0))
        assert before.emitted == 20
        assert {d.order.api_version for d in downloaded(runtime)} == {"v0"}
        # Switched (a new process would build a new client; the runtime keys clients by channel name).
        runtime._amazon.pop(on_2026.name, None)
        new = sim.state.add_order({"seller_id": on_2026.seller_id})
        sim.state.advance_clock(300)
        after = await download_window(runtime, on_2026, fetch(on_2026))
        assert after.listed > 1  # the overlap read orders v0 had sent ...
        assert after.emitted == 1  # ... and only the new one went out
        assert [d.order.amazon_order_id for d in downloaded(runtime)][-1] == new["amazon_order_id"]
        assert downloaded(runtime)[-1].order.api_version == "2026-01-01"
        ids = [d.order.amazon_order_id for d in downloaded(runtime)]
        assert len(ids) == len(set(ids)) == 21
    finally:
        sim.stop()
