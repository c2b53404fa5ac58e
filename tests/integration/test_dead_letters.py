"""Bad input from another system goes to the topic's dead-letter companion, whole, with the reason, and
the stage keeps running: the invoice-issued stage as its own process on the embedded broker and Redis."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from ordersync.dev.devinfra import stop_process_group
from ordersync.redis_client import redis_client
from ordersync.schemas.codec import decode
from ordersync.schemas.events import (
    EventDeadLettered,
    RecordParked,
    ShipmentRequested,
)
from ordersync.schemas.topics import INVOICES_ISSUED, REDRIVE_TIERS, SHIPMENTS_REQUESTED, order_key
from ordersync.settings import RedisSettings
from ordersync.state.store import Store
from tests.factories import DLQ_ORDER_ID as ORDER_ID
from tests.factories import dlq_invoice, dlq_sales_order

pytestmark = pytest.mark.integration


@contextlib.contextmanager
def _invoice_stage(
    ordersync_env: dict[str, str], tmp_path: Path, redrive: dict[str, str]
) -> Iterator[tuple[str, dict[str, str]]]:
    """The invoice-issued stage as its own process, on a channel of a new seller; ``redrive``: its
    redrive settings."""
    seller = f"A{uuid.uuid4().hex[:10].upper()}"
    channels = tmp_path / "channels.yaml"
    secret = {"value": "x"}
    channels.write_text(
        yaml.safe_dump(
            {
                "channels": [
                    {
                        "name": "dlq-test",
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
    # An invoice of an unknown order waits this long for its sales order before it is parked.
    env = {
        **ordersync_env,
        "ORDERSYNC_CHANNELS_FILE": str(channels),
        "ORDERSYNC_INVOICE__SALES_ORDER_WAIT_S": "2",
        **redrive,
    }

    async def seed() -> None:
        redis = redis_client(RedisSettings(url=env["ORDERSYNC_REDIS__URL"]))
        await Store(redis, env["ORDERSYNC_REDIS__KEY_PREFIX"]).save_sales_order(dlq_sales_order(seller))
        await redis.aclose()

    asyncio.run(seed())
    with (tmp_path / "stage.log").open("wb") as log:  # the stage writes to its own copy
        process = subprocess.Popen(
            [sys.executable, "-m", "ordersync.cli", "run", "invoice-issued"],
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield seller, env
        assert process.poll() is None, (tmp_path / "stage.log").read_text()[-3000:]
    finally:
        stop_process_group(process.pid, grace_s=10)
        process.wait(timeout=10)


@pytest.fixture
def invoice_stage(
    ordersync_env: dict[str, str], topics: tuple[str, ...], tmp_path: Path
) -> Iterator[tuple[str, dict[str, str]]]:
    # A parked record is tried again after a second, until the redrive deadline (short here).
    redrive = {"ORDERSYNC_REDRIVE__DELAYS_S": "[1, 1, 1]", "ORDERSYNC_REDRIVE__DEADLINE_S": "2"}
    with _invoice_stage(ordersync_env, tmp_path, redrive) as stage:
        yield stage


@pytest.fixture
def invoice_stage_parking_long(
    ordersync_env: dict[str, str], topics: tuple[str, ...], tmp_path: Path
) -> Iterator[tuple[str, dict[str, str]]]:
    # A parked record stays parked for the whole test (a few seconds), and not much longer: the session's
    # broker is shared, and the next test's invoice-issued (the same consumer group) tries what is left.
    redrive = {"ORDERSYNC_REDRIVE__DELAYS_S": "[20, 20, 20]", "ORDERSYNC_REDRIVE__DEADLINE_S": "3600"}
    with _invoice_stage(ordersync_env, tmp_path, redrive) as stage:
        yield stage


def _read(
    bootstrap: str, topic: str, seller: str, want: int, timeout_s: float = 90
) -> list[tuple[int, bytes]]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100)
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    found: list[tuple[int, bytes]] = []
    deadline = time.monotonic() + timeout_s
    while len(found) < want and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            for record in records:
                if record.key and record.key.decode().startswith(f"{seller}:"):
                    found.append((record.offset, record.value))
    consumer.close()
    return found


def test_bad_invoices_are_dead_lettered_and_the_stage_keeps_going(
    invoice_stage: tuple[str, dict[str, str]],
) -> None:
    seller, env = invoice_stage
    bootstrap = env["ORDERSYNC_KAFKA__BOOTSTRAP"]
    key = order_key(seller, ORDER_ID).encode()
    wrong_types = json.loads(dlq_invoice(seller, "INV-T"))
    wrong_types["payload"]["packages"] = "three boxes"
    # A negative quantity cannot be built through the model (it validates): write what a careless
    # ERP would send.
    negative = json.loads(dlq_invoice(seller, "INV-N"))
    negative["payload"]["packages"][0]["lines"][0]["quantity"] = -2
    bad = {
        b"{this is not json": "not JSON",
        json.dumps(wrong_types).encode(): "packages",
        json.dumps(negative).encode(): "greater than 0",
        dlq_invoice(seller, "INV-U", order_id="999-9999999-9999999"): "was never imported",
        dlq_invoice(seller, "INV-O", quantity=3): "only 2 of 2 are left",
    }
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for value in bad:
        producer.send(INVOICES_ISSUED.name, key=key, value=value)
    good = dlq_invoice(seller, "INV-OK", quantity=2)
    producer.send(INVOICES_ISSUED.name, key=key, value=good)
    producer.flush()
    producer.close()

    assert INVOICES_ISSUED.dlq is not None
    dead = _read(bootstrap, INVOICES_ISSUED.dlq.name, seller, want=len(bad))
    letters = [decode(value, INVOICES_ISSUED.dlq).payload_as(EventDeadLettered) for _, value in dead]
    assert len(letters) == len(bad)
    by_original = {letter.original_value(): letter for letter in letters}
    assert set(by_original) == set(bad)
    for original, expected in bad.items():
        letter = by_original[original]
        assert expected in letter.error
        assert letter.stage == "invoice-issued"
        assert letter.source_topic == INVOICES_ISSUED.name
        assert letter.source_key == key.decode()
    assert len({letter.source_offset for letter in letters}) == len(bad)

    # The valid invoice after the bad ones still became a shipment request.
    (request,) = _read(bootstrap, SHIPMENTS_REQUESTED.name, seller, want=1)
    shipment = decode(request[1], SHIPMENTS_REQUESTED).payload_as(ShipmentRequested)
    assert shipment.tracking_number == "1ZINV-OK"
    assert shipment.items[0].quantity == 2


def test_an_orders_waiting_line_lost_with_redis_is_rebuilt_from_the_redrive_tier(
    invoice_stage_parking_long: tuple[str, dict[str, str]],
) -> None:
    seller, env = invoice_stage_parking_long
    bootstrap = env["ORDERSYNC_KAFKA__BOOTSTRAP"]
    never_imported = "999-9999999-9999999"
    key = order_key(seller, never_imported).encode()
    tier = REDRIVE_TIERS[0]
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    producer.send(INVOICES_ISSUED.name, key=key, value=dlq_invoice(seller, "INV-A", order_id=never_imported))
    producer.flush()
    # Its sales order never came: the invoice is parked, at the head of its order's line.
    ((_, value),) = _read(bootstrap, tier.name, seller, want=1)
    head = decode(value, tier).payload_as(RecordParked)
    assert head.behind is None

    async def lose_everything() -> None:
        redis = redis_client(RedisSettings(url=env["ORDERSYNC_REDIS__URL"]))
        doomed = [name async for name in redis.scan_iter(match=f"{env['ORDERSYNC_REDIS__KEY_PREFIX']}:*")]
        await redis.delete(*doomed)
        await redis.aclose()

    asyncio.run(lose_everything())
    producer.send(INVOICES_ISSUED.name, key=key, value=dlq_invoice(seller, "INV-B", order_id=never_imported))
    producer.flush()
    producer.close()
    # The order's next invoice waits behind the parked one: the line came back with the state.
    parked = [
        decode(value, tier).payload_as(RecordParked) for _, value in _read(bootstrap, tier.name, seller, 2)
    ]
    (second,) = [copy for copy in parked if copy.record_id != head.record_id]
    assert second.behind == head.record_id, second
    assert second.error_type == "WaitingInLine"
