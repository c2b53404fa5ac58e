"""1,000 malformed records on every topic another system writes, read by the real stage processes:
every one is dead-lettered with its reason (an oversize one by reference), no stage stops or turns
unready, and a valid invoice sent after them still becomes a shipment request."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from kafka import KafkaProducer

from ordersync.dev.devinfra import EmbeddedBroker, find_free_port, stop_process_group
from ordersync.kafka.reader import read_topic
from ordersync.schemas.codec import MAX_RECORD_BYTES, decode
from ordersync.schemas.events import EventDeadLettered, ShipmentRequested
from ordersync.schemas.topics import CATALOGUE, INVOICES_ISSUED, SHIPMENTS_REQUESTED, TopicSpec, order_key
from tests.factories import invoice_record, one_line_sales_order
from tests.processes import ready, start_stage, store_sales_orders, write_channels
from tests.topics import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

#: The stage that reads each topic another system writes.
READERS = ("invoice-issued", "shipment-write-back", "inventory", "import")
EXTERNAL: tuple[TopicSpec, ...] = tuple(spec for spec in CATALOGUE if spec.external)
READERS_OF = {
    "invoices.issued": ("invoice-issued",),
    "shipments.requested": ("shipment-write-back",),
    "inventory.levels": ("inventory",),
    "orders.cancellation-requested": ("shipment-write-back",),
    "packages.packed": ("shipment-write-back",),
    "channel.listings": ("import",),
    "ops.commands": ("import", "shipment-write-back"),
    "ops.task-requests": ("shipment-write-back", "inventory"),
}
PER_TOPIC = 1000
ORDER_ID, ITEM = "777-7777777-7777777", "88888888888888"


def _hostile(n: int) -> bytes:
    """The n-th of ten kinds of garbage another system may write."""
    deep = 5000 if n % 20 else 300_000  # past Python's recursion limit, now and then far past
    kinds: list[bytes] = [
        b"{this is not json",
        b'{"a": ' + b"[" * deep + b"]" * deep + b"}",
        b"null",
        b'["an", "array"]',
        json.dumps({"event_type": "NoSuchEvent", "schema_version": 1, "payload": {}}).encode(),
        json.dumps({"event_type": "InvoiceIssued", "schema_version": 99, "payload": {}}).encode(),
        json.dumps({"event_type": "InvoiceIssued", "schema_version": 1, "payload": {"x": [1] * 50}}).encode(),
        "\udcff".encode("utf-8", "surrogatepass"),
        b"\x00\x01\x02 binary",
        json.dumps({"sku": "S" * 5000, "quantity": -1}).encode(),
    ]
    return kinds[n % len(kinds)]


def test_every_stage_dead_letters_garbage_and_keeps_working(
    ordersync_env: dict[str, str], own_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    seller = f"A{uuid.uuid4().hex[:10].upper()}"
    channels = write_channels(tmp_path / "channels.yaml", "hostile", seller)
    nowhere = f"http://127.0.0.1:{find_free_port()}"  # no Amazon: nothing here may reach the real one
    env = {
        **ordersync_env,
        "ORDERSYNC_KAFKA__BOOTSTRAP": own_broker.bootstrap,
        "ORDERSYNC_CHANNELS_FILE": str(channels),
        "ORDERSYNC_AMAZON__ENDPOINT": nowhere,
        "ORDERSYNC_AMAZON__LWA_ENDPOINT": f"{nowhere}/auth/o2/token",
    }

    order = one_line_sales_order(seller, ORDER_ID, channel="hostile", order_item_id=ITEM, quantity=1)
    store_sales_orders(env["ORDERSYNC_REDIS__URL"], env["ORDERSYNC_REDIS__KEY_PREFIX"], [order])
    stages: dict[str, tuple[subprocess.Popen[bytes], int, Path]] = {}
    for stage in READERS:
        port, log_path = find_free_port(), tmp_path / f"{stage}.log"
        stages[stage] = (
            start_stage(stage, {**env, "ORDERSYNC_STAGE__WEB_PORT": str(port)}, log_path),
            port,
            log_path,
        )
    try:
        for stage, (_, port, _) in stages.items():
            wait_for(lambda port=port: ready(port), 120, what=f"{stage} is ready")
        producer = KafkaProducer(
            bootstrap_servers=env["ORDERSYNC_KAFKA__BOOTSTRAP"], acks="all", linger_ms=20
        )
        sent: dict[str, int] = {}
        for spec in EXTERNAL:
            for n in range(PER_TOPIC):
                producer.send(spec.name, key=f"{seller}:garbage-{n}".encode(), value=_hostile(n))
            # Two records too large to copy into a dead letter.
            oversize = b'{"event_type": "x", "pad": "' + b"x" * (MAX_RECORD_BYTES + 100_000) + b'"}'
            for n in range(2):
                producer.send(spec.name, key=f"{seller}:oversize-{n}".encode(), value=oversize)
            sent[spec.name] = PER_TOPIC + 2
        valid = invoice_record(seller, "INV-AFTER", ORDER_ID, ITEM)
        producer.send(INVOICES_ISSUED.name, key=order_key(seller, ORDER_ID).encode(), value=valid)
        producer.flush()
        producer.close()

        letters = _wait_for_letters(env["ORDERSYNC_KAFKA__BOOTSTRAP"], seller, sent, timeout_s=300)
        for topic, count in sent.items():
            # Each stage reading the topic dead-letters every record once (ops.commands and ops.task-requests
            # have two here).
            by_stage: dict[str, int] = {}
            for letter in letters[topic]:
                by_stage[letter.stage] = by_stage.get(letter.stage, 0) + 1
            assert by_stage == dict.fromkeys(READERS_OF[topic], count), topic
            oversize = [
                letter for letter in letters[topic] if letter.source_key and "oversize" in letter.source_key
            ]
            by_reference = [(o.original_value_b64, o.original_size_bytes is not None) for o in oversize]
            assert by_reference == [("", True)] * 2 * len(READERS_OF[topic])
            assert all(letter.error for letter in letters[topic])
        requests = [
            decode(r.value, SHIPMENTS_REQUESTED).payload_as(ShipmentRequested)
            for r in read_topic(env["ORDERSYNC_KAFKA__BOOTSTRAP"], SHIPMENTS_REQUESTED.name)
            if r.key and r.key.decode() == order_key(seller, ORDER_ID)
        ]
        assert [r.tracking_number for r in requests] == ["1ZINV-AFTER"]
        for stage, (process, port, log_path) in stages.items():
            assert process.poll() is None, f"{stage} stopped: " + log_path.read_text()[-3000:]
            assert ready(port), stage
    finally:
        for process, _, _ in stages.values():
            stop_process_group(process.pid, grace_s=10)
            process.wait(timeout=10)


def _wait_for_letters(
    bootstrap: str, seller: str, sent: dict[str, int], timeout_s: float
) -> dict[str, list[EventDeadLettered]]:
    deadline = time.monotonic() + timeout_s
    while True:
        letters: dict[str, list[EventDeadLettered]] = {topic: [] for topic in sent}
        dlqs = [f"{topic}.dlq" for topic in sent]
        for record in read_topic(bootstrap, dlqs):
            # Only the garbage: the valid invoice's shipment may be dead-lettered by the write-back,
            # which has no Amazon to reach here.
            if record.key and record.key.decode().startswith((f"{seller}:garbage-", f"{seller}:oversize-")):
                source = record.topic.removesuffix(".dlq")
                spec = next(spec for spec in EXTERNAL if spec.name == source)
                assert spec.dlq is not None
                letters[source].append(decode(record.value, spec.dlq).payload_as(EventDeadLettered))
        done = all(len(letters[t]) >= n * len(READERS_OF[t]) for t, n in sent.items())
        if done or time.monotonic() > deadline:
            return letters
        time.sleep(2.0)
