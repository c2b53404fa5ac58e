"""Redis SIGKILLed and restarted from its append-only file (appendfsync everysec, as production runs it)
while the invoice-issued stage works: no invoice is lost or dead-lettered, the stage stays up, says it
is stalled on /readyz while Redis is away, and goes on by itself once Redis is back."""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaProducer

from ordersync.dev.devinfra import find_free_port, redis_server_binary, stop_process_group, wait_for_port
from ordersync.kafka.reader import read_topic
from ordersync.schemas.topics import INVOICES_ISSUED, order_key
from tests.factories import invoice_record, one_line_sales_order
from tests.processes import ready, start_stage, store_sales_orders, write_channels
from tests.topics import requested_orders, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

ORDERS = 40
ITEM = "44444444444444"


class AofRedis:
    """A redis-server on a fixed port with an append-only file, which the test can SIGKILL and restart."""

    def __init__(self, work_dir: Path) -> None:
        self.port = find_free_port()
        self.work_dir = work_dir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = [
            redis_server_binary(),
            "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.work_dir),
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
        ]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, start_new_session=True)
        wait_for_port("127.0.0.1", self.port, timeout=30)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)


@pytest.fixture
def redis_with_aof(tmp_path: Path) -> Iterator[AofRedis]:
    server = AofRedis(tmp_path)
    server.start()
    yield server
    if server.process is not None and server.process.poll() is None:
        server.kill()


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
