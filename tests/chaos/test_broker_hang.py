"""The broker stops answering for 30 s (its process frozen: connections hang, nothing is refused) while
the invoice-issued stage works: no invoice is lost, none is dead-lettered, the stage stays up and goes
on by itself once the broker answers again."""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

import httpx
import pytest
from kafka import KafkaProducer

from ordersync.dev.devinfra import EmbeddedBroker, find_free_port, stop_process_group
from ordersync.kafka.reader import read_topic
from ordersync.schemas.topics import INVOICES_ISSUED, order_key
from tests.factories import invoice_record, one_line_sales_order
from tests.processes import ready, start_stage, store_sales_orders, write_channels
from tests.topics import requested_orders, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

ORDERS = 40
HANG_S = 30.0
ITEM = "99999999999999"


def _order_id(n: int) -> str:
    return f"444-{n:07d}-0000001"


def test_invoices_survive_a_broker_that_hangs_for_30_seconds(
    ordersync_env: dict[str, str], own_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    seller = f"A{uuid.uuid4().hex[:10].upper()}"
    web_port = find_free_port()
    env = {
        **ordersync_env,
        "ORDERSYNC_KAFKA__BOOTSTRAP": own_broker.bootstrap,
        "ORDERSYNC_CHANNELS_FILE": str(write_channels(tmp_path / "channels.yaml", "hang", seller)),
        "ORDERSYNC_STAGE__WEB_PORT": str(web_port),
    }

    orders = [
        one_line_sales_order(seller, _order_id(n), channel="hang", order_item_id=ITEM, quantity=1)
        for n in range(ORDERS)
    ]
    store_sales_orders(
        env["ORDERSYNC_REDIS__URL"],
        env["ORDERSYNC_REDIS__KEY_PREFIX"],
        (order.model_copy(update={"code": f"SO{n:08d}"}) for n, order in enumerate(orders)),
    )
    log_path = tmp_path / "stage.log"
    stage = start_stage("invoice-issued", env, log_path)
    producer = KafkaProducer(bootstrap_servers=own_broker.bootstrap, acks="all", linger_ms=5)
    assert own_broker.pid is not None
    frozen = False
    try:
        wait_for(lambda: ready(web_port), 90, what="the stage is ready")
        for n in range(ORDERS):
            value = invoice_record(seller, f"INV{n}", _order_id(n), ITEM)
            producer.send(INVOICES_ISSUED.name, key=order_key(seller, _order_id(n)).encode(), value=value)
            if n == ORDERS // 2:
                producer.flush()
                # Mid-stream: the stage is reading and publishing when the broker stops answering.
                os.kill(own_broker.pid, signal.SIGSTOP)
                frozen = True
                frozen_at = time.monotonic()
                # A frozen broker still accepts connections; it answers nothing, and readiness says so.
                wait_for(lambda: not ready(web_port), 20, what="the stage is unready while the broker hangs")
                unready = httpx.get(f"http://127.0.0.1:{web_port}/readyz", timeout=10).json()["checks"]
                assert unready["kafka"] == "no broker answered a metadata request within 2 s", unready
                time.sleep(max(0.0, HANG_S - (time.monotonic() - frozen_at)))
                assert stage.poll() is None, log_path.read_text()[-3000:]
                os.kill(own_broker.pid, signal.SIGCONT)
                frozen = False
        producer.flush()
        resumed = time.monotonic()
        requested = requested_orders(own_broker.bootstrap, seller, ORDERS, timeout_s=180)
        caught_up_s = time.monotonic() - resumed
        assert sorted(requested) == sorted(_order_id(n) for n in range(ORDERS)), log_path.read_text()[-3000:]
        assert INVOICES_ISSUED.dlq is not None
        assert [r for r in read_topic(own_broker.bootstrap, INVOICES_ISSUED.dlq.name)] == []
        wait_for(lambda: ready(web_port), 60, what="the stage is ready again by itself")
        assert stage.poll() is None
        print(
            f"broker hung {HANG_S:.0f} s: {ORDERS} of {ORDERS} requested, caught up {caught_up_s:.1f} s after"
        )
    finally:
        if frozen:
            os.kill(own_broker.pid, signal.SIGCONT)
        producer.close(timeout=5)
        stop_process_group(stage.pid, grace_s=10)
        stage.wait(timeout=10)
