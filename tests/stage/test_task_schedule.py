"""Task schedules and "Synchronize now" with a real Redis: a paused task records when it runs next and
is woken across workers (two Redis clients, as two processes) by a request the owning stage handles; the
feed pacing is skipped once; the request shows on the task's row (the tasks page, ``ordersync tasks``)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from typer.testing import CliRunner

from ordersync.clock import ManualClock
from ordersync.kafka.faust_app import make_app
from ordersync.pipeline.feeds import flush_mark_key
from ordersync.pipeline.runtime import StageRuntime
from ordersync.pipeline.schedule import Wakeups
from ordersync.pipeline.stages import run_now
from ordersync.schemas.envelope import Envelope
from ordersync.schemas.events import TaskRunRequested
from ordersync.settings import RedisSettings, Settings
from ordersync.state.readmodel import ReadModel
from tests.factories import CHANNEL, OTHER_CHANNEL, SELLER, write_channels_file

pytestmark = pytest.mark.stage

NOW = datetime(2026, 11, 25, 10, 30, tzinfo=UTC)


async def _listening(wakeups: Wakeups) -> asyncio.Task[None]:
    listener = asyncio.create_task(wakeups.listen())
    channel = wakeups.channel
    for _ in range(100):  # subscribed once Redis counts a subscriber on the channel
        counts = await wakeups.redis.pubsub_numsub(channel)
        if counts and counts[0][1]:
            return listener
        await asyncio.sleep(0.02)
    raise AssertionError("the listener never subscribed")


async def _stop(*tasks: asyncio.Task[Any]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_pause_records_its_schedule_and_runs_out_when_nobody_asks(
    redis_client: aioredis.Redis, redis_key_prefix: str
) -> None:
    wakeups = Wakeups(redis_client, redis_key_prefix, ManualClock(NOW), time_scale=20.0)
    started = time.monotonic()
    assert await wakeups.pause("download", CHANNEL, 0.2) is False
    assert time.monotonic() - started >= 0.19
    (row,) = await ReadModel(redis_client, redis_key_prefix).tasks()
    # 0.2 wall seconds at 20x: 4 of the clock's seconds.
    assert (row.task, row.scope, row.every_s, row.next_run) == (
        "download",
        CHANNEL,
        4.0,
        NOW + timedelta(seconds=4),
    )


async def test_a_request_in_one_worker_wakes_the_pause_in_another(
    redis_client: aioredis.Redis, redis_url: str, redis_key_prefix: str
) -> None:
    other_client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    pausing = Wakeups(other_client, redis_key_prefix, ManualClock(NOW))
    asking = Wakeups(redis_client, redis_key_prefix, ManualClock(NOW))
    listener = await _listening(pausing)
    try:
        paused = asyncio.create_task(pausing.pause("inventory", CHANNEL, 30))
        other = asyncio.create_task(pausing.pause("inventory", OTHER_CHANNEL, 30))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        heard = await asking.request("inventory", CHANNEL, by="dana", at=NOW)
        assert heard == 1
        assert await asyncio.wait_for(paused, 5) is True
        assert time.monotonic() - started < 5
        assert not other.done()  # another channel's pause is not this request's
        (row,) = [r for r in await ReadModel(redis_client, redis_key_prefix).tasks() if r.scope == CHANNEL]
        assert (row.run_requested_at, row.run_requested_by) == (NOW, "dana")
        # A request while the task runs (not paused) is kept: the next pause ends at once.
        await asking.request("inventory", CHANNEL, by="dana", at=NOW)
        for _ in range(50):
            if pausing._event("inventory", CHANNEL).is_set():
                break
            await asyncio.sleep(0.02)
        assert await asyncio.wait_for(pausing.pause("inventory", CHANNEL, 30), 1) is True
        await _stop(other)
    finally:
        await _stop(listener)
        await other_client.aclose()


async def test_the_owning_stage_skips_the_feed_pacing_and_wakes_its_task(
    redis_url: str, redis_key_prefix: str, tmp_path: Path
) -> None:
    settings = Settings(
        redis=RedisSettings(url=redis_url, key_prefix=redis_key_prefix),
        channels_file=write_channels_file(tmp_path / "channels.yaml"),
    )
    inventory = StageRuntime("inventory", settings, make_app("inventory", settings))
    download = StageRuntime("order-download", settings, make_app("order-download", settings))
    await inventory.start()
    await download.start()
    listener = await _listening(inventory.wakeups)
    try:
        redis = inventory.store.redis
        mark = flush_mark_key(inventory, "inv", SELLER)
        await redis.set(mark, "1")  # a feed went a moment ago: the next waits its interval
        paused = asyncio.create_task(inventory.wakeups.pause("inventory", CHANNEL, 60))
        await asyncio.sleep(0.1)

        request = Envelope.wrap(
            TaskRunRequested(task="inventory", channel=CHANNEL, operator="lee"),
            seller_id=SELLER,
            correlation_id="run-now",
        )
        # Every stage reads the topic; only the one running the task acts.
        assert await run_now(download, request) is False
        assert not paused.done()
        assert await redis.exists(mark)
        assert await run_now(inventory, request) is True
        assert await asyncio.wait_for(paused, 5) is True
        assert not await redis.exists(mark)
        (row,) = await ReadModel(redis, redis_key_prefix).tasks()
        assert row.run_requested_by == "lee"

        unknown_channel = Envelope.wrap(
            TaskRunRequested(task="inventory", channel="gone", operator="lee"),
            seller_id=SELLER,
            correlation_id="run-now",
        )
        assert await run_now(inventory, unknown_channel) is False
        unknown_task = Envelope.wrap(
            TaskRunRequested(task="reindex", channel=CHANNEL), seller_id=SELLER, correlation_id="run-now"
        )
        assert await run_now(inventory, unknown_task) is False
    finally:
        await _stop(listener)
        await inventory.close()
        await download.close()


def test_the_cli_lists_schedules_and_refuses_bad_requests_before_kafka(
    redis_url: str, redis_key_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ordersync.cli import app  # noqa: PLC0415 - only this test drives the CLI

    async def schedule() -> None:
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        try:
            wakeups = Wakeups(client, redis_key_prefix, ManualClock(NOW))
            await wakeups.pause("download", CHANNEL, 0)
            await wakeups.pause("download", OTHER_CHANNEL, 0)
            await wakeups.request("download", CHANNEL, by="dana", at=NOW)
        finally:
            await client.aclose()

    asyncio.run(schedule())
    monkeypatch.setenv("ORDERSYNC_REDIS__URL", redis_url)
    monkeypatch.setenv("ORDERSYNC_REDIS__KEY_PREFIX", redis_key_prefix)
    monkeypatch.setenv("ORDERSYNC_CHANNELS_FILE", str(write_channels_file(tmp_path / "channels.yaml")))
    monkeypatch.setenv("ORDERSYNC_KAFKA__BOOTSTRAP", "127.0.0.1:9")  # nothing listens
    monkeypatch.setenv("COLUMNS", "200")  # the table on one line per task
    runner = CliRunner()
    listed = runner.invoke(app, ["tasks", "list", "--channel", CHANNEL])
    assert listed.exit_code == 0, listed.output
    assert "2026-11-25 10:30 by dana" in listed.output
    assert OTHER_CHANNEL not in listed.output
    assert runner.invoke(app, ["tasks", "run", "reindex", "--channel", CHANNEL]).exit_code == 3
    assert runner.invoke(app, ["tasks", "run", "download", "--channel", "nowhere"]).exit_code == 3
    down = runner.invoke(app, ["tasks", "run", "download", "--channel", CHANNEL])
    assert down.exit_code == 5, down.output
    assert "run of download not asked" in down.output


async def test_a_seller_waiting_for_its_feed_token_holds_up_no_other_seller(
    redis_url: str, redis_key_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ordersync.consumers import shipment_write_back  # noqa: PLC0415 - only this test runs its loops

    settings = Settings(
        redis=RedisSettings(url=redis_url, key_prefix=redis_key_prefix),
        channels_file=write_channels_file(tmp_path / "channels.yaml"),
    )
    runtime = StageRuntime("shipment-write-back", settings, make_app("shipment-write-back", settings))
    await runtime.start()
    rounds: dict[str, int] = {CHANNEL: 0, OTHER_CHANNEL: 0}
    token = asyncio.Event()

    async def channel_feeds(_runtime: StageRuntime, channel: Any) -> None:
        rounds[channel.name] += 1
        if channel.name == CHANNEL:
            await token.wait()  # createFeed's token for this seller is minutes away

    monkeypatch.setattr(shipment_write_back, "channel_feeds", channel_feeds)
    loops = asyncio.create_task(shipment_write_back.feed_rounds(runtime, 0.05))
    try:
        for _ in range(100):
            if rounds[OTHER_CHANNEL] >= 5:
                break
            await asyncio.sleep(0.05)
        assert rounds[OTHER_CHANNEL] >= 5
        assert rounds[CHANNEL] == 1
        token.set()
        for _ in range(100):
            if rounds[CHANNEL] >= 2:
                break
            await asyncio.sleep(0.05)
        assert rounds[CHANNEL] >= 2
        rows = {row.scope: row for row in await ReadModel(runtime.store.redis, redis_key_prefix).tasks()}
        assert rows[OTHER_CHANNEL].task == "write-back"
        assert rows[OTHER_CHANNEL].next_run is not None
    finally:
        await _stop(loops)
        await runtime.close()
