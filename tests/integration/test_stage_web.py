"""A stage process's /healthz, /readyz and /metrics, and its JSON log lines naming the order: the
invoice-issued stage as its own process on the embedded broker and Redis."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from kafka import KafkaProducer

from ordersync.dev.devinfra import stop_process_group
from ordersync.redis_client import redis_client
from ordersync.schemas.topics import INVOICES_ISSUED, REDRIVE_TIERS, order_key
from ordersync.settings import RedisSettings, StageSettings
from ordersync.state.store import Store
from tests.factories import invoice_record, one_line_sales_order
from tests.topics import wait_for

pytestmark = pytest.mark.integration

ORDER_ID = "111-1111111-1111111"
UNKNOWN_ORDER_ID = "999-9999999-9999999"
ITEM_ID = "44444444444444"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def stage(
    ordersync_env: dict[str, str], topics: tuple[str, ...], tmp_path: Path
) -> Iterator[tuple[str, str, dict[str, str], Path]]:
    """(seller, base URL, env, log file) of a running invoice-issued stage with its web port."""
    seller = f"A{uuid.uuid4().hex[:10].upper()}"
    secret = {"value": "x"}
    channels = tmp_path / "channels.yaml"
    channels.write_text(
        yaml.safe_dump(
            {
                "channels": [
                    {
                        "name": "web-test",
                        "seller_id": seller,
                        "marketplaces": ["ATVPDKIKX0DER"],
                        "credentials": {
                            "client_id": secret,
                            "client_secret": secret,
                            "refresh_token": secret,
                        },
                    }
                ]
            }
        )
    )
    port = _free_port()
    env = {
        **ordersync_env,
        "ORDERSYNC_CHANNELS_FILE": str(channels),
        "ORDERSYNC_STAGE__WEB_PORT": str(port),
        "ORDERSYNC_STAGE__WEB_HOST": "127.0.0.1",
        "ORDERSYNC_LOG_JSON": "true",
        # An invoice of an unknown order: dead-lettered after a short wait and one redrive.
        "ORDERSYNC_INVOICE__SALES_ORDER_WAIT_S": "1",
        "ORDERSYNC_REDRIVE__DELAYS_S": "[1, 1, 1]",
        "ORDERSYNC_REDRIVE__DEADLINE_S": "1",
    }

    async def seed() -> None:
        redis = redis_client(RedisSettings(url=env["ORDERSYNC_REDIS__URL"]))
        await Store(redis, env["ORDERSYNC_REDIS__KEY_PREFIX"]).save_sales_order(
            one_line_sales_order(seller, ORDER_ID, channel="web-test", order_item_id=ITEM_ID, quantity=5)
        )
        await redis.aclose()

    asyncio.run(seed())
    log_path = tmp_path / "stage.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "ordersync.cli", "run", "invoice-issued"],
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield seller, f"http://127.0.0.1:{port}", env, log_path
        assert process.poll() is None, log_path.read_text()[-3000:]
    finally:
        stop_process_group(process.pid, grace_s=10)
        process.wait(timeout=10)


def _get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=5)
    except httpx.TransportError:
        return None


def _samples(metrics: str, name: str, **labels: str) -> list[float]:
    """Values of ``name`` samples whose labels include ``labels``."""
    values = []
    for line in metrics.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            values.append(float(match.group(2)))
    return values


def _metric(base: str, name: str, **labels: str) -> float:
    response = _get(base + "/metrics")
    return sum(_samples(response.text, name, **labels)) if response is not None else 0.0


def test_health_readiness_metrics_and_json_logs(stage: tuple[str, str, dict[str, str], Path]) -> None:
    seller, base, env, log_path = stage
    wait_for(lambda: (r := _get(base + "/healthz")) is not None and r.status_code == 200, timeout_s=60)
    wait_for(lambda: (r := _get(base + "/readyz")) is not None and r.status_code == 200, timeout_s=90)
    ready = httpx.get(base + "/readyz").json()
    assert ready["checks"] == {
        "worker": "ok",
        "consumer": "ok",
        "redis": "ok",
        "kafka": "ok",
        "progress": "ok",
        "rate_limiter": "ok",
    }

    topic = {"stage": "invoice-issued", "topic": INVOICES_ISSUED.name}
    processed_before = _metric(base, "ordersync_records_processed_total", **topic)
    key = order_key(seller, ORDER_ID).encode()
    producer = KafkaProducer(bootstrap_servers=env["ORDERSYNC_KAFKA__BOOTSTRAP"], acks="all")
    producer.send(INVOICES_ISSUED.name, key=key, value=invoice_record(seller, "INV-1", ORDER_ID, ITEM_ID))
    producer.send(INVOICES_ISSUED.name, key=key, value=invoice_record(seller, "INV-2", ORDER_ID, ITEM_ID))
    producer.send(INVOICES_ISSUED.name, key=key, value=b"{not json")
    producer.send(
        INVOICES_ISSUED.name,
        key=order_key(seller, UNKNOWN_ORDER_ID).encode(),
        value=invoice_record(seller, "INV-U", UNKNOWN_ORDER_ID, ITEM_ID),
    )
    producer.flush()
    producer.close()

    wait_for(lambda: _metric(base, "ordersync_records_processed_total", **topic) >= processed_before + 2)
    wait_for(lambda: _metric(base, "ordersync_dead_letters_total", **topic) >= 2)
    metrics = httpx.get(base + "/metrics").text
    assert _samples(metrics, "ordersync_record_errors_total", kind="invalid", **topic) == [1.0]
    assert _samples(metrics, "ordersync_record_errors_total", kind="permanent", **topic) == [1.0]
    assert _samples(metrics, "ordersync_processing_seconds_count", **topic)[0] >= 4
    # Every partition of the topic is assigned to this one process (the redrive tiers' too), and it
    # caught up.
    partitions = StageSettings().partitions
    assigned = _samples(metrics, "ordersync_consumer_assigned_partitions", stage="invoice-issued")[0]
    assert assigned == partitions * (1 + len(REDRIVE_TIERS))

    def lags() -> list[float]:
        return _samples(httpx.get(base + "/metrics").text, "ordersync_consumer_lag", **topic)

    wait_for(lambda: len(lags()) == partitions and set(lags()) == {0})
    assert "ordersync_quota_redis_up 1.0" in metrics  # the rate limiter's metrics, same registry

    # The dead-letter warning of the invoice for an unknown order names it, in JSON.
    text = log_path.read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    dead_letters = [
        line
        for line in lines
        if line.get("order_id") == UNKNOWN_ORDER_ID and "dead-lettered" in line["message"]
    ]
    assert len(dead_letters) == 1, text[-3000:]
    (dead,) = dead_letters
    assert "dead-lettered" in dead["message"]
    assert dead["seller_id"] == seller
    assert dead["stage"] == "invoice-issued"
    assert dead["topic"] == INVOICES_ISSUED.name
    assert isinstance(dead["offset"], int)
    assert dead["level"] == "WARNING"
