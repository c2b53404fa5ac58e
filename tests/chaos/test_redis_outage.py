"""Redis SIGKILLed and restarted from its append-only file (appendfsync everysec, as production runs it)
while the invoice-issued stage works: no invoice is lost or dead-lettered, the stage stays up, says it
is stalled on /readyz while Redis is away, and goes on by itself once Redis is back. A stage that
rebuilds state from Kafka treats a restarted Redis as possibly behind (the last second of writes may
not be on disk) and rebuilds before its next record, though its generation marker survived."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest
from kafka import KafkaProducer

from ordersync.dev.devinfra import find_free_port, stop_process_group
from ordersync.kafka.faust_app import make_app
from ordersync.kafka.reader import read_topic
from ordersync.pipeline.runtime import StageRuntime
from ordersync.schemas.topics import INVOICES_ISSUED, order_key
from ordersync.settings import Settings
from ordersync.state import keys
from tests.chaos.servers import AofRedis
from tests.factories import invoice_record, one_line_sales_order
from tests.processes import ready, start_stage, store_sales_orders, write_channels
from tests.topics import requested_orders, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

ORDERS = 40
ITEM = "44444444444444"


def _order_id(n: int) -> str:
    return f"333-{n:07d}-0000001"


def test_invoices_survive_a_redis_kill_and_restart(
    ordersync_env: dict[str, str], topics: tuple[str, ...], redis_with_aof: AofRedis, tmp_path: Path
) -> None:
    seller = f"A{uuid.uuid4().hex[:10].upper()}"
    channels = write_channels(tmp_path / "channels.yaml", "chaos", seller)
    web_port = find_free_port()
    env = {
        **ordersync_env,
        "ORDERSYNC_CHANNELS_FILE": str(channels),
        "ORDERSYNC_REDIS__URL": redis_with_aof.url,
        "ORDERSYNC_STAGE__WEB_PORT": str(web_port),
    }
    prefix = env["ORDERSYNC_REDIS__KEY_PREFIX"]

    orders = [
        one_line_sales_order(seller, _order_id(n), channel="chaos", order_item_id=ITEM, quantity=1)
        for n in range(ORDERS)
    ]
    store_sales_orders(
        redis_with_aof.url,
        prefix,
        (order.model_copy(update={"code": f"SO{n:08d}"}) for n, order in enumerate(orders)),
    )
    time.sleep(1.5)  # past appendfsync everysec: the sales orders are on disk
    bootstrap = env["ORDERSYNC_KAFKA__BOOTSTRAP"]
    log_path = tmp_path / "stage.log"
    stage = start_stage("invoice-issued", env, log_path)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")

    def send(numbers: range) -> None:
        for n in numbers:
            value = invoice_record(seller, f"INV{n}", _order_id(n), ITEM)
            producer.send(INVOICES_ISSUED.name, key=order_key(seller, _order_id(n)).encode(), value=value)
        producer.flush()

    try:
        wait_for(lambda: ready(web_port), 90, what="the stage is ready")
        send(range(ORDERS // 2))
        time.sleep(1.0)
        redis_with_aof.kill()
        send(range(ORDERS // 2, ORDERS))  # these arrive while Redis is away
        wait_for(lambda: not ready(web_port), 30, what="the stage reports itself not ready")
        time.sleep(3.0)
        assert stage.poll() is None, log_path.read_text()[-3000:]
        redis_with_aof.start()
        wait_for(lambda: ready(web_port), 90, what="the stage is ready again by itself")
        requests = requested_orders(bootstrap, seller, ORDERS)
        assert sorted(requests) == sorted(_order_id(n) for n in range(ORDERS)), log_path.read_text()[-3000:]
        assert INVOICES_ISSUED.dlq is not None
        dead = [
            r
            for r in read_topic(bootstrap, INVOICES_ISSUED.dlq.name)
            if r.key and r.key.decode().startswith(seller)
        ]
        assert dead == []
        assert stage.poll() is None
    finally:
        producer.close()
        stop_process_group(stage.pid, grace_s=10)
        stage.wait(timeout=10)


async def test_a_redis_restarted_from_disk_is_rebuilt_from_kafka_before_the_next_record(
    ordersync_settings: Settings, redis_with_aof: AofRedis, tmp_path: Path
) -> None:
    channels = write_channels(tmp_path / "channels.yaml", "restart", "A1RESTART")
    redis = ordersync_settings.redis.model_copy(update={"url": redis_with_aof.url})
    settings = ordersync_settings.model_copy(update={"redis": redis, "channels_file": channels})
    runtime = StageRuntime("import", settings, make_app("import", settings))
    rebuilds: list[int] = []

    async def rebuild() -> None:
        rebuilds.append(1)

    runtime.on_redis_reset(rebuild)
    await runtime.start()
    try:
        await runtime.confirm_state()  # the first look at an empty Redis
        await runtime.confirm_state()  # nothing lost since
        assert len(rebuilds) == 1
        marker = runtime.store.key_of(keys.GENERATION, "import")
        before = await runtime.store.redis.get(marker)
        await asyncio.sleep(1.5)  # past appendfsync everysec: the marker is on disk
        redis_with_aof.kill()
        redis_with_aof.start()
        # As a record does: the dropped connection is an outage, waited out, then the check.
        await runtime.through_outages("a record", runtime.confirm_state)
        assert await runtime.store.redis.get(marker) == before  # the marker came back from disk ...
        assert len(rebuilds) == 2  # ... and the state was rebuilt all the same
        await runtime.confirm_state()
        assert len(rebuilds) == 2
    finally:
        await runtime.close()
