"""Kafka is the record, Redis is rebuilt from it: ``ordersync listings import`` publishes every row on
channel.listings before it writes Redis, and the import stage, finding Redis without its state (its
generation marker gone), rebuilds the SKU mappings from the topic before it processes another order."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ordersync.cli import app
from ordersync.kafka.faust_app import make_app
from ordersync.pipeline.runtime import StageRuntime
from ordersync.settings import Settings, get_settings
from ordersync.state.listings import ListingRow, listings_csv, lookup_stock_codes
from ordersync.streams.order_import import rebuild_listings
from tests.processes import write_channels

pytestmark = pytest.mark.integration


async def _forget_everything(runtime: StageRuntime) -> int:
    """What a Redis restarted without persistence holds of this test: nothing."""
    redis = runtime.store.redis
    doomed = [key async for key in redis.scan_iter(match=f"{runtime.store.prefix}:*")]
    return int(await redis.delete(*doomed)) if doomed else 0


async def test_listings_come_back_from_kafka_after_redis_lost_them(
    ordersync_settings: Settings, topics: tuple[str, ...], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seller = f"A{uuid.uuid4().hex[:10].upper()}"
    channels = write_channels(tmp_path / "channels.yaml", "rebuild", seller)
    monkeypatch.setenv("ORDERSYNC_CHANNELS_FILE", str(channels))
    get_settings.cache_clear()  # the CLI reads the settings again, with the channels file
    rows = [ListingRow(f"STK-{n}", f"SKU-{n}", asin=f"B00000000{n}") for n in range(5)]
    csv_file = tmp_path / "listings.csv"
    csv_file.write_text(listings_csv(rows))
    command = ["listings", "import", str(csv_file), "--channel", "rebuild"]
    loaded = await asyncio.to_thread(CliRunner().invoke, app, command)  # the CLI runs its own loop
    assert loaded.exit_code == 0, loaded.output

    settings = ordersync_settings.model_copy(update={"channels_file": channels})
    runtime = StageRuntime("import", settings, make_app("import", settings))
    await runtime.start()
    channel = runtime.channels.by_name("rebuild")
    skus = [row.seller_sku for row in rows]
    expected = {row.seller_sku: row.stock_code for row in rows}
    rebuilt: list[int] = []

    async def rebuild() -> None:
        rebuilt.append(await rebuild_listings(runtime))

    runtime.on_redis_reset(rebuild)
    try:
        assert await lookup_stock_codes(runtime.store, channel, skus) == expected  # the CLI wrote Redis
        # The first look: no marker yet, so the stage cannot know Redis is whole; it rebuilds.
        assert await runtime.check_generation() is True
        assert await runtime.check_generation() is False  # nothing lost since
        assert await _forget_everything(runtime) > 0
        assert await lookup_stock_codes(runtime.store, channel, skus) == {}
        assert await runtime.check_generation() is True
        assert await lookup_stock_codes(runtime.store, channel, skus) == expected
        assert rebuilt == [5, 5]
    finally:
        await runtime.close()
