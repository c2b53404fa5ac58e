"""Kafka is the record, Redis is rebuilt from it: ``ordersync listings import`` publishes every row on
channel.listings before it writes Redis, and the import stage, finding Redis without its state (its
generation marker gone), rebuilds the SKU mappings and the sales orders with their codes from the
topics before it processes another order; the status projection rebuilds its model the same way."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TypeVar

import pytest
import yaml
from kafka import KafkaProducer
from redis.asyncio import Redis
from typer.testing import CliRunner

from ordersync.cli import app
from ordersync.consumers import acknowledgement, inventory
from ordersync.consumers.cancellation import rebuild_pending
from ordersync.dev.devinfra import stop_process_group
from ordersync.kafka.faust_app import make_app
from ordersync.pipeline.runtime import StageRuntime
from ordersync.producers.download_send import DEDUPE_MARK
from ordersync.producers.order_download import rebuild_download_state
from ordersync.redis_client import redis_client
from ordersync.schemas.codec import encode
from ordersync.schemas.envelope import Envelope, Event
from ordersync.schemas.events import (
    DownloadCursorSaved,
    InventoryLevelChanged,
    ListingChanged,
    OperatorCommand,
    OperatorCommandIssued,
    OrderAcknowledgementResult,
    OrderCancellationRequested,
    OrderCancellationResult,
    OrderDownloaded,
    OrderEnriched,
    OrderImported,
    OrderImportFailed,
    ShipmentConfirmed,
    ShipmentItem,
    ShipmentRequested,
)
from ordersync.schemas.topics import (
    CHANNEL_LISTINGS,
    DOWNLOAD_CURSORS,
    INVENTORY_LEVELS,
    OPS_COMMANDS,
    ORDERS_ACKNOWLEDGEMENT_RESULTS,
    ORDERS_CANCELLATION_REQUESTED,
    ORDERS_CANCELLATION_RESULTS,
    ORDERS_DOWNLOADED,
    ORDERS_ENRICHED,
    ORDERS_IMPORT_FAILED,
    ORDERS_IMPORTED,
    SHIPMENTS_CONFIRMED,
    SHIPMENTS_REQUESTED,
    TopicSpec,
    order_key,
)
from ordersync.settings import RedisSettings, Settings, get_settings
from ordersync.state import keys
from ordersync.state.listings import ListingRow, listings_csv, lookup_stock_codes
from ordersync.state.readmodel import ReadModel
from ordersync.state.store import SEQUENCE_GAP_AFTER_LOSS, Store
from ordersync.streams.invoice_issued import rebuild_requests
from ordersync.streams.item_fetch import rebuild_marks
from ordersync.streams.order_import import (
    IGNORED,
    LAST_ENRICHED,
    rebuild_listings,
    rebuild_operator_state,
    rebuild_sales_orders,
)
from tests.factories import T0, one_line_sales_order
from tests.factories import order as amazon_order
from tests.processes import start_stage, write_channels
from tests.topics import read_all, wait_for

pytestmark = pytest.mark.integration
T = TypeVar("T")


async def _forget(redis: Redis, prefix: str) -> int:
    """What a Redis restarted without persistence holds of this test: nothing. Returns keys deleted."""
    doomed = [key async for key in redis.scan_iter(match=f"{prefix}:*")]
    return int(await redis.delete(*doomed)) if doomed else 0


async def _forget_everything(runtime: StageRuntime) -> int:
    return await _forget(runtime.store.redis, runtime.store.prefix)


def _on_redis(redis_url: str, use: Callable[[Redis], Awaitable[T]]) -> T:
    """``use`` on a client of its own, from the test's thread (the stage under test is a process)."""

    async def run() -> T:
        redis = redis_client(RedisSettings(url=redis_url))
        try:
            return await use(redis)
        finally:
            await redis.aclose()

    return asyncio.run(run())


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


async def test_sales_orders_and_their_codes_come_back_from_kafka(
    ordersync_settings: Settings, topics: tuple[str, ...], tmp_path: Path
) -> None:
    seller = f"A{uuid.uuid4().hex[:10].upper()}"
    channels = write_channels(tmp_path / "channels.yaml", "codes", seller)
    settings = ordersync_settings.model_copy(update={"channels_file": channels})
    prefix = f"T{uuid.uuid4().hex[:6].upper()}"
    orders = [
        one_line_sales_order(seller, f"111-{n:07d}-1234567", channel="codes", order_item_id="1", quantity=1)
        for n in range(3)
    ]
    orders = [o.model_copy(update={"code": f"{prefix}{n + 41:08d}"}) for n, o in enumerate(orders)]
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap, acks="all")
    for order in orders:
        event = Envelope.wrap(OrderImported(sales_order=order), seller_id=seller, correlation_id="rebuild")
        producer.send(
            ORDERS_IMPORTED.name, key=order_key(seller, order.amazon_order_id).encode(), value=encode(event)
        )
    producer.flush()
    producer.close()

    runtime = StageRuntime("import", settings, make_app("import", settings))
    await runtime.start()
    runtime.on_redis_reset(lambda: rebuild_sales_orders(runtime))
    try:
        assert await runtime.check_generation() is True  # an empty Redis: everything from Kafka
        for order in orders:
            assert await runtime.store.sales_order(seller, order.amazon_order_id) == order
            code, new = await runtime.store.sales_order_code(seller, order.amazon_order_id, prefix)
            assert (code, new) == (order.code, False)  # the same code, never a second sales order
            status = await runtime.store.order_status(seller, order.amazon_order_id)
            assert status["stage"] == "imported"
        # A new order continues the sequence above the highest code Kafka holds (with the margin for
        # codes given but not published when Redis was lost): no code twice.
        code, new = await runtime.store.sales_order_code(
            seller, "999-0000000-0000001", prefix, sequence_kept=True
        )
        assert (code, new) == (f"{prefix}{43 + SEQUENCE_GAP_AFTER_LOSS + 1:08d}", True)
    finally:
        await runtime.close()


async def test_download_cursors_and_dedupe_marks_come_back_from_kafka(
    ordersync_settings: Settings, topics: tuple[str, ...], tmp_path: Path
) -> None:
    """Redis lost the download's cursor and marks: the cursor comes back from amazon.orders.cursors (no
    re-scan from the initial look-back), and the marks from the order topics (no version sent twice)."""
    seller = f"A{uuid.uuid4().hex[:10].upper()}"
    channels = write_channels(tmp_path / "channels.yaml", "cursors", seller)
    settings = ordersync_settings.model_copy(update={"channels_file": channels})
    bound = datetime(2026, 3, 1, 12, tzinfo=UTC)
    changed = bound - timedelta(hours=2)
    versions = {
        "444-0000001-0000001": [changed - timedelta(days=1), changed],  # downloaded twice: changed later
        "444-0000002-0000002": [changed - timedelta(hours=1)],
    }
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap, acks="all")

    def send(spec: TopicSpec, key: str, event: Event) -> None:
        envelope = Envelope.wrap(event, seller_id=seller, correlation_id="cursors")
        producer.send(spec.name, key=key.encode(), value=encode(envelope))

    for saved in (bound - timedelta(hours=1), bound):
        send(DOWNLOAD_CURSORS, "cursors", DownloadCursorSaved(channel="cursors", last_updated_before=saved))
    for order_id, dates in versions.items():
        for date in dates:
            amazon = amazon_order(seller_id=seller, amazon_order_id=order_id, last_update_date=date)
            key = order_key(seller, order_id)
            send(ORDERS_DOWNLOADED, key, OrderDownloaded(channel="cursors", order=amazon))
            send(ORDERS_ENRICHED, key, OrderEnriched(channel="cursors", order=amazon))
    producer.flush()
    producer.close()

    download = StageRuntime("order-download", settings, make_app("order-download", settings))
    fetch = StageRuntime("item-fetch", settings, make_app("item-fetch", settings))
    download.on_redis_reset(partial(rebuild_download_state, download))
    fetch.on_redis_reset(partial(rebuild_marks, fetch))
    try:
        for runtime in (download, fetch):
            await runtime.start()
            assert await runtime.check_generation() is True  # an empty Redis: everything from Kafka
        store = download.store
        assert await store.cursor("cursors") == bound  # the latest, not the initial look-back
        for mark in (DEDUPE_MARK, "enriched"):
            for order_id, dates in versions.items():
                for date in dates:
                    assert not await store.is_new_version(mark, seller, order_id, date)
                assert await store.is_new_version(mark, seller, order_id, dates[-1] + timedelta(seconds=1))
    finally:
        await download.close()
        await fetch.close()


async def test_ignored_orders_and_enriched_versions_come_back_from_kafka(
    ordersync_settings: Settings, topics: tuple[str, ...], tmp_path: Path
) -> None:
    """An order an operator ignored stays ignored across a Redis loss (and one imported since stays
    imported); Retry Import still finds each order's newest enriched version."""
    seller = f"A{uuid.uuid4().hex[:10].upper()}"
    channels = write_channels(tmp_path / "channels.yaml", "ignores", seller)
    settings = ordersync_settings.model_copy(update={"channels_file": channels})
    ignored, unignored, imported = "555-0000001-0000001", "555-0000002-0000002", "555-0000003-0000003"
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap, acks="all")

    def send(spec: TopicSpec, key: str, event: Event) -> None:
        envelope = Envelope.wrap(event, seller_id=seller, correlation_id="ignores")
        producer.send(spec.name, key=key.encode(), value=encode(envelope))

    def command(name: OperatorCommand, *orders: str) -> OperatorCommandIssued:
        return OperatorCommandIssued(command=name, channel="ignores", amazon_order_ids=orders, operator="ana")

    for issued in (command("ignore", ignored, unignored), command("unignore", unignored)):
        send(OPS_COMMANDS, "ignores", issued)
    send(OPS_COMMANDS, "ignores", command("ignore", imported))
    sales_order = one_line_sales_order(seller, imported, channel="ignores", order_item_id="1", quantity=1)
    send(ORDERS_IMPORTED, order_key(seller, imported), OrderImported(sales_order=sales_order))
    newest = T0 + timedelta(hours=3)
    for date in (T0, newest, T0 + timedelta(hours=1)):  # a late copy of an older version last
        amazon = amazon_order(seller_id=seller, amazon_order_id=ignored, last_update_date=date)
        send(ORDERS_ENRICHED, order_key(seller, ignored), OrderEnriched(channel="ignores", order=amazon))
    amazon = amazon_order(seller_id=seller, amazon_order_id=imported, last_update_date=T0)
    send(ORDERS_ENRICHED, order_key(seller, imported), OrderEnriched(channel="ignores", order=amazon))
    producer.flush()
    producer.close()

    runtime = StageRuntime("import", settings, make_app("import", settings))
    await runtime.start()

    async def rebuild() -> None:
        await rebuild_sales_orders(runtime)
        await rebuild_operator_state(runtime)

    runtime.on_redis_reset(rebuild)
    redis = runtime.store.redis
    try:
        assert await runtime.check_generation() is True  # an empty Redis: everything from Kafka
        marks = {
            order_id: await redis.get(runtime.store.key_of(IGNORED, seller, order_id))
            for order_id in (ignored, unignored, imported)
        }
        assert marks == {ignored: "ana", unignored: None, imported: None}
        kept = await redis.get(runtime.store.key_of(LAST_ENRICHED, seller, ignored))
        assert OrderEnriched.model_validate_json(kept).order.last_update_date == newest
        # An imported order's enriched version is not kept: nothing needs it any more.
        assert await redis.get(runtime.store.key_of(LAST_ENRICHED, seller, imported)) is None
    finally:
        await runtime.close()


async def test_stock_levels_and_seller_cancellations_come_back_from_kafka(
    ordersync_settings: Settings, topics: tuple[str, ...], tmp_path: Path
) -> None:
    """Inventory: every SKU's newest level is pending again (what Amazon accepted is unknown after the
    loss). Cancellations: an answered one stays answered, an unanswered one is published again."""
    seller = f"A{uuid.uuid4().hex[:10].upper()}"
    channels = write_channels(tmp_path / "channels.yaml", "stock", seller)
    settings = ordersync_settings.model_copy(update={"channels_file": channels})
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap, acks="all")

    def send(spec: TopicSpec, key: str, event: Event) -> None:
        envelope = Envelope.wrap(event, seller_id=seller, correlation_id="stock")
        producer.send(spec.name, key=key.encode(), value=encode(envelope))

    for sku, quantity, hours in (("SKU-A", 7, 2), ("SKU-A", 3, 1), ("SKU-B", 0, 1)):  # A's older one last
        level = InventoryLevelChanged(
            channel="stock", seller_sku=sku, quantity=quantity, observed_at=T0 + timedelta(hours=hours)
        )
        send(INVENTORY_LEVELS, f"{seller}:{sku}", level)
    answered, unanswered = "666-0000001-0000001", "666-0000002-0000002"
    for order_id in (answered, unanswered):
        request = OrderCancellationRequested(channel="stock", amazon_order_id=order_id, requested_at=T0)
        send(ORDERS_CANCELLATION_REQUESTED, order_key(seller, order_id), request)
    result = OrderCancellationResult(channel="stock", amazon_order_id=answered, cancelled=True, reason="ok")
    send(ORDERS_CANCELLATION_RESULTS, order_key(seller, answered), result)
    producer.flush()
    producer.close()

    stock = StageRuntime("inventory", settings, make_app("inventory", settings))
    write_back = StageRuntime("shipment-write-back", settings, make_app("shipment-write-back", settings))
    stock.on_redis_reset(partial(inventory.rebuild_levels, stock))
    write_back.on_redis_reset(partial(rebuild_pending, write_back))
    try:
        for runtime in (stock, write_back):
            await runtime.start()
            assert await runtime.check_generation() is True  # an empty Redis: everything from Kafka
        assert await inventory.pending(stock, seller) == {"SKU-A": 7, "SKU-B": 0}
        status = await write_back.store.order_status(seller, answered)
        assert status["seller_cancellation"] == "Success"
        requested = Counter(
            p.amazon_order_id
            for p in read_all(settings.kafka.bootstrap, ORDERS_CANCELLATION_REQUESTED)
            if isinstance(p, OrderCancellationRequested) and p.channel == "stock"
        )
        assert requested == {answered: 1, unanswered: 2}  # the unanswered one published again
    finally:
        await stock.close()
        await write_back.close()


async def test_order_acknowledgements_come_back_from_kafka(
    ordersync_settings: Settings, topics: tuple[str, ...], tmp_path: Path
) -> None:
    """An acknowledged order stays acknowledged across a Redis loss (never sent again); an imported one
    without a result is parked again, and orders.imported (the back-office's) is not published again."""
    seller = f"A{uuid.uuid4().hex[:10].upper()}"
    channels = write_channels(tmp_path / "channels.yaml", "acks", seller)
    raw = yaml.safe_load(channels.read_text())
    raw["channels"][0]["acknowledge_orders"] = True
    channels.write_text(yaml.safe_dump(raw))
    settings = ordersync_settings.model_copy(update={"channels_file": channels})
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap, acks="all")

    def send(spec: TopicSpec, key: str, event: Event) -> None:
        envelope = Envelope.wrap(event, seller_id=seller, correlation_id="acks")
        producer.send(spec.name, key=key.encode(), value=encode(envelope))

    acknowledged, waiting = "777-0000001-0000001", "777-0000002-0000002"
    for n, order_id in enumerate((acknowledged, waiting), 1):
        sales_order = one_line_sales_order(seller, order_id, channel="acks", order_item_id="1", quantity=1)
        imported = OrderImported(sales_order=sales_order.model_copy(update={"code": f"SO{n}"}))
        send(ORDERS_IMPORTED, order_key(seller, order_id), imported)
    result = OrderAcknowledgementResult(
        channel="acks", amazon_order_id=acknowledged, merchant_order_id="SO1", acknowledged=True, feed_id="9"
    )
    send(ORDERS_ACKNOWLEDGEMENT_RESULTS, order_key(seller, acknowledged), result)
    producer.flush()
    producer.close()

    write_back = StageRuntime("shipment-write-back", settings, make_app("shipment-write-back", settings))
    write_back.on_redis_reset(partial(acknowledgement.rebuild_pending, write_back))
    try:
        await write_back.start()
        assert await write_back.check_generation() is True  # an empty Redis: everything from Kafka
        status = await write_back.store.order_status(seller, acknowledged)
        assert status["acknowledgement"] == "Success"
        parked = await acknowledgement.FEEDS.pending(write_back, seller)
        assert [(p.order_id, p.merchant_order_id) for p in parked] == [(waiting, "SO2")]
        imports = [
            p.sales_order.amazon_order_id
            for p in read_all(settings.kafka.bootstrap, ORDERS_IMPORTED)
            if isinstance(p, OrderImported) and p.sales_order.seller_id == seller
        ]
        assert sorted(imports) == [acknowledged, waiting]  # nothing published again
    finally:
        await write_back.close()


def test_an_order_read_right_after_redis_lost_everything_is_imported_on_the_rebuilt_state(
    ordersync_env: dict[str, str], topics: tuple[str, ...], redis_url: str, tmp_path: Path
) -> None:
    """Redis restarted empty between two periodic checks (an hour apart here): the next record finds the
    marker gone and waits for the rebuild, so its SKU is known and its code continues the sequence."""
    seller = f"A{uuid.uuid4().hex[:10].upper()}"
    channels = write_channels(tmp_path / "channels.yaml", "flushed", seller)
    prefix = ordersync_env["ORDERSYNC_REDIS__KEY_PREFIX"]
    env = {
        **ordersync_env,
        "ORDERSYNC_CHANNELS_FILE": str(channels),
        "ORDERSYNC_STAGE__GENERATION_CHECK_S": "3600",
    }
    bootstrap = env["ORDERSYNC_KAFKA__BOOTSTRAP"]
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    listing = Envelope.wrap(
        ListingChanged(channel="flushed", merchant_sku="SKU-1", client_sku_id="STK-1"),
        seller_id=seller,
        correlation_id="flushed",
    )
    producer.send(CHANNEL_LISTINGS.name, key=f"{seller}:SKU-1".encode(), value=encode(listing))

    def enriched(order_id: str) -> None:
        amazon = amazon_order(seller_id=seller, amazon_order_id=order_id)
        event = Envelope.wrap(
            OrderEnriched(channel="flushed", order=amazon), seller_id=seller, correlation_id=order_id
        )
        producer.send(ORDERS_ENRICHED.name, key=order_key(seller, order_id).encode(), value=encode(event))
        producer.flush()

    def codes() -> dict[str, str]:
        return {
            p.sales_order.amazon_order_id: p.sales_order.code
            for p in read_all(bootstrap, ORDERS_IMPORTED)
            if isinstance(p, OrderImported) and p.sales_order.seller_id == seller
        }

    stage = start_stage("import", env, tmp_path / "stage.log")
    try:
        enriched("333-0000001-0000001")
        wait_for(lambda: len(codes()) == 1, 90, what="the first order is imported")
        assert _on_redis(redis_url, lambda redis: _forget(redis, prefix)) > 0
        enriched("333-0000002-0000002")
        wait_for(lambda: len(codes()) == 2, 60, what="the second order is imported")
        first, second = sorted(codes().items())
        assert second[1] > first[1]  # the sequence went on from Kafka's highest code: no code twice
        refused = [
            p.amazon_order_id
            for p in read_all(bootstrap, ORDERS_IMPORT_FAILED)
            if isinstance(p, OrderImportFailed) and p.channel == "flushed"
        ]
        assert refused == []  # the SKU mapping was back before the order was looked at
        assert (tmp_path / "stage.log").read_text().count("rebuilding it from Kafka") == 2
        assert stage.poll() is None
    finally:
        producer.close()
        stop_process_group(stage.pid, grace_s=10)
        stage.wait(timeout=10)


def test_the_status_projection_rebuilds_its_model_by_itself_after_redis_lost_it(
    ordersync_env: dict[str, str], topics: tuple[str, ...], redis_url: str, tmp_path: Path
) -> None:
    seller = f"A{uuid.uuid4().hex[:10].upper()}"
    channels = write_channels(tmp_path / "channels.yaml", "model", seller)
    prefix = ordersync_env["ORDERSYNC_REDIS__KEY_PREFIX"]
    env = {
        **ordersync_env,
        "ORDERSYNC_CHANNELS_FILE": str(channels),
        "ORDERSYNC_STAGE__GENERATION_CHECK_S": "1",
    }
    orders = [
        one_line_sales_order(seller, f"222-{n:07d}-7654321", channel="model", order_item_id="1", quantity=1)
        for n in range(4)
    ]
    producer = KafkaProducer(bootstrap_servers=env["ORDERSYNC_KAFKA__BOOTSTRAP"], acks="all")
    for order in orders:
        event = Envelope.wrap(OrderImported(sales_order=order), seller_id=seller, correlation_id="model")
        producer.send(
            ORDERS_IMPORTED.name, key=order_key(seller, order.amazon_order_id).encode(), value=encode(event)
        )
    producer.flush()
    producer.close()

    async def shown_in(redis: Redis) -> set[str]:
        model = ReadModel(redis, prefix)
        return {o.amazon_order_id for o in orders if await model.order(seller, o.amazon_order_id)}

    def shown() -> set[str]:
        return _on_redis(redis_url, shown_in)

    every = {o.amazon_order_id for o in orders}
    stage = start_stage("status-projection", env, tmp_path / "stage.log")
    try:
        wait_for(lambda: shown() == every, 90, what="the projection folds the orders")
        rebuilds = (tmp_path / "stage.log").read_text().count("status model rebuilt from the topics")
        assert rebuilds == 1  # the first start found an empty Redis
        assert _on_redis(redis_url, lambda redis: _forget(redis, prefix)) > 0
        # Nothing new arrives on the topics: only a rebuild can bring them back.
        wait_for(
            lambda: (tmp_path / "stage.log").read_text().count("status model rebuilt from the topics") == 2,
            60,
            what="the model is rebuilt by itself",
        )
        wait_for(lambda: shown() == every, 30, what="the rebuilt model shows the orders")
        assert stage.poll() is None
    finally:
        stop_process_group(stage.pid, grace_s=10)
        stage.wait(timeout=10)


def test_the_write_back_gets_its_package_outcomes_back_and_sends_unsettled_requests_again(
    ordersync_env: dict[str, str], topics: tuple[str, ...], redis_url: str, tmp_path: Path
) -> None:
    seller = f"A{uuid.uuid4().hex[:10].upper()}"
    channels = write_channels(tmp_path / "channels.yaml", "pkgs", seller)
    # Nothing reaches Amazon: the channel keeps order status in the back-office.
    config = yaml.safe_load(channels.read_text())
    config["channels"][0]["upload_order_status"] = False
    channels.write_text(yaml.safe_dump(config))
    prefix = ordersync_env["ORDERSYNC_REDIS__KEY_PREFIX"]
    env = {
        **ordersync_env,
        "ORDERSYNC_CHANNELS_FILE": str(channels),
        "ORDERSYNC_STAGE__GENERATION_CHECK_S": "1",
    }
    order_id = "333-1212121-3434343"
    key = order_key(seller, order_id).encode()

    def request(package: str) -> bytes:
        event = ShipmentRequested(
            channel="pkgs",
            amazon_order_id=order_id,
            package_reference_id=package,
            carrier_code="UPS",
            tracking_number=f"1Z{package}",
            ship_date=datetime.now(UTC),
            items=(ShipmentItem(order_item_id="1", quantity=1),),
        )
        return encode(Envelope.wrap(event, seller_id=seller, correlation_id="pkgs"))

    confirmed = ShipmentConfirmed(
        channel="pkgs",
        amazon_order_id=order_id,
        package_reference_id="1",
        method="confirmShipment",
        attempts=1,
        carrier_code="UPS",
        tracking_number="1Z1",
        quantity=1,
        confirmed_at=datetime.now(UTC),
    )
    bootstrap = env["ORDERSYNC_KAFKA__BOOTSTRAP"]
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    producer.send(SHIPMENTS_REQUESTED.name, key=key, value=request("1"))
    producer.send(SHIPMENTS_REQUESTED.name, key=key, value=request("2"))
    producer.send(
        SHIPMENTS_CONFIRMED.name,
        key=key,
        value=encode(Envelope.wrap(confirmed, seller_id=seller, correlation_id="pkgs")),
    )
    producer.flush()
    producer.close()

    async def states_in(redis: Redis) -> dict[str, str]:
        store = Store(redis, prefix)
        return {p: (await store.shipment_state(seller, order_id, p)).get("status", "") for p in ("1", "2")}

    def states() -> dict[str, str]:
        return _on_redis(redis_url, states_in)

    def requests_of(package: str) -> int:
        return sum(
            1
            for r in read_all(bootstrap, SHIPMENTS_REQUESTED)
            if isinstance(r, ShipmentRequested)
            and r.amazon_order_id == order_id
            and r.package_reference_id == package
        )

    stage = start_stage("shipment-write-back", env, tmp_path / "stage.log")
    try:
        # An empty Redis at the first start: package 1's outcome comes from shipments.confirmed (never
        # handled again), package 2 (no outcome) is sent again and handled.
        wait_for(lambda: states() == {"1": "Success", "2": "NotUploaded"}, 90, what="first rebuild")
        assert requests_of("1") == 1
        assert requests_of("2") == 2
        assert _on_redis(redis_url, lambda redis: _forget(redis, prefix)) > 0
        wait_for(lambda: states() == {"1": "Success", "2": "NotUploaded"}, 60, what="second rebuild")
        assert requests_of("1") == 1
        assert stage.poll() is None
    finally:
        stop_process_group(stage.pid, grace_s=10)
        stage.wait(timeout=10)


async def test_what_invoices_asked_for_comes_back_from_kafka(
    ordersync_settings: Settings, topics: tuple[str, ...], tmp_path: Path
) -> None:
    seller = f"A{uuid.uuid4().hex[:10].upper()}"
    channels = write_channels(tmp_path / "channels.yaml", "invoices", seller)
    settings = ordersync_settings.model_copy(update={"channels_file": channels})
    order_id = "444-5656565-7878787"
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap, acks="all")
    for package, items, source in (
        ("3", (("10", 1), ("11", 2)), "invoice INV-9"),
        ("4", (("10", 1),), "invoice INV-9"),
        ("3", (("10", 1), ("11", 2)), "invoice INV-9"),  # the invoice replayed: the same package again
        ("7", (("12", 1),), "warehouse"),  # not an invoice's
    ):
        request = ShipmentRequested(
            channel="invoices",
            amazon_order_id=order_id,
            package_reference_id=package,
            carrier_code="UPS",
            tracking_number=f"1Z{package}",
            ship_date=datetime.now(UTC),
            items=tuple(ShipmentItem(order_item_id=i, quantity=q) for i, q in items),
            source=source,
        )
        producer.send(
            SHIPMENTS_REQUESTED.name,
            key=order_key(seller, order_id).encode(),
            value=encode(Envelope.wrap(request, seller_id=seller, correlation_id="inv")),
        )
    producer.flush()
    producer.close()

    runtime = StageRuntime("invoice-issued", settings, make_app("invoice-issued", settings))
    await runtime.start()
    runtime.on_redis_reset(lambda: rebuild_requests(runtime))
    try:
        store = runtime.store
        # Half-written when Redis went away: quantities counted, the invoice not marked seen.
        await store.redis.hset(store.key_of(keys.REQUESTED, seller, order_id), "10", "2")
        assert await runtime.check_generation() is True
        context = await store.invoice_context(seller, order_id, "INV-9")
        assert (context.seen, context.requested) == (True, {"10": 2, "11": 2})
        assert await store.package_references(seller, order_id, "INV-9", (0, 1)) == ["3", "4"]
        # A new invoice's package gets an id never given before, the warehouse's included.
        assert await store.package_references(seller, order_id, "INV-10", [0]) == ["8"]
    finally:
        await runtime.close()
