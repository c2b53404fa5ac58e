"""`ordersync replay` on the embedded broker: exactly the records inside the time bounds that match the
filters are re-published, bytes, key, headers and partition unchanged; a dry run sends nothing; a target
that does not accept the events is refused before anything is sent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from kafka import KafkaProducer

from ordersync.kafka.reader import read_topic
from ordersync.schemas.codec import encode
from ordersync.schemas.envelope import Envelope
from ordersync.schemas.events import OrderImportFailed
from ordersync.schemas.topics import ORDERS_IMPORT_FAILED, SHIPMENTS_REQUESTED, order_key

pytestmark = pytest.mark.integration

Raw = tuple[int, bytes | None, bytes | None, tuple[tuple[str, bytes], ...], int]  # partition, key, value...


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ordersync.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _records(bootstrap: str, topic: str, seller: str) -> list[Raw]:
    """Every record of the topic whose key is the seller's, read from the start up to its end."""
    return [
        (r.partition, r.key, r.value, r.headers, r.timestamp_ms)
        for r in read_topic(bootstrap, topic, skip_missing=True)
        if r.key and r.key.decode().startswith(f"{seller}:")
    ]


def _failure(seller: str, order_id: str, channel: str) -> bytes:
    event = OrderImportFailed(
        channel=channel,
        amazon_order_id=order_id,
        reason_code="unknown_stock_code",
        reason=f"Unknown stock code for seller SKU X ({order_id})",
    )
    return encode(Envelope.wrap(event, seller_id=seller, correlation_id=order_id))


def test_replay_republishes_exactly_the_selected_records(
    ordersync_env: dict[str, str], topics: tuple[str, ...]
) -> None:
    bootstrap = ordersync_env["ORDERSYNC_KAFKA__BOOTSTRAP"]
    seller = f"A{uuid.uuid4().hex[:10].upper()}"
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    # (minutes after base, order, channel, headers)
    plan = [
        (0, "111-0000000-0000001", "east", ()),  # before --since
        (10, "111-0000000-0000002", "east", (("trace", b"t-2"),)),  # selected
        (20, "111-0000000-0000003", "west", ()),  # another channel
        (40, "111-0000000-0000004", "east", ()),  # selected
        (70, "111-0000000-0000005", "east", ()),  # after --until
    ]
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for minutes, order_id, channel, headers in plan:
        producer.send(
            ORDERS_IMPORT_FAILED.name,
            key=order_key(seller, order_id).encode(),
            value=_failure(seller, order_id, channel),
            headers=list(headers) or None,
            timestamp_ms=int((base + timedelta(minutes=minutes)).timestamp() * 1000),
        ).get(timeout=30)
    producer.close()
    before = _records(bootstrap, ORDERS_IMPORT_FAILED.name, seller)
    assert len(before) == len(plan)

    selection = [
        "replay",
        ORDERS_IMPORT_FAILED.name,
        "--since",
        (base + timedelta(minutes=5)).isoformat(),
        "--until",
        (base + timedelta(minutes=60)).isoformat(),
        "--filter",
        f"seller_id={seller}",
        "--filter",
        "channel=east",
    ]
    dry = _cli(ordersync_env, *selection, "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    summary = json.loads(dry.stdout)
    assert (summary["matched"], summary["sent"]) == (2, 0)
    assert summary["by_event_type"] == {"OrderImportFailed": 2}
    assert sorted(summary["sample_keys"]) == [order_key(seller, plan[1][1]), order_key(seller, plan[3][1])]
    # Producing is synchronous in the tool: nothing sent by the dry run can still be on its way.
    assert _records(bootstrap, ORDERS_IMPORT_FAILED.name, seller) == before

    done = _cli(ordersync_env, *selection)
    assert done.returncode == 0, done.stderr
    assert "sent 2 to orders.import-failed" in done.stdout
    after = _records(bootstrap, ORDERS_IMPORT_FAILED.name, seller)
    assert len(after) == len(plan) + 2
    originals = {(p, k, v, h) for p, k, v, h, _ in before}
    replayed = [r for r in after if r not in before]
    assert len(replayed) == 2
    by_order = {
        json.loads(v or b"")["payload"]["amazon_order_id"]: (p, k, v, h) for p, k, v, h, _ in replayed
    }
    assert set(by_order) == {plan[1][1], plan[3][1]}
    assert all(record in originals for record in by_order.values()), "key, value, headers, partition kept"
    assert by_order[plan[1][1]][3] == (("trace", b"t-2"),)

    # Offsets: from offset N of each partition, and nothing before N.
    from_end = _cli(
        ordersync_env, "replay", ORDERS_IMPORT_FAILED.name, "--from-offset", "1000000000", "--json"
    )
    assert from_end.returncode == 0, from_end.stderr
    assert json.loads(from_end.stdout)["read"] == 0


def test_replay_refuses_what_it_cannot_do(ordersync_env: dict[str, str], topics: tuple[str, ...]) -> None:
    bootstrap = ordersync_env["ORDERSYNC_KAFKA__BOOTSTRAP"]
    seller = f"A{uuid.uuid4().hex[:10].upper()}"
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    producer.send(
        ORDERS_IMPORT_FAILED.name,
        key=order_key(seller, "111-0000000-0000009").encode(),
        value=_failure(seller, "111-0000000-0000009", "east"),
    ).get(timeout=30)
    producer.close()

    wrong_target = _cli(
        ordersync_env,
        "replay",
        ORDERS_IMPORT_FAILED.name,
        "--from-offset",
        "0",
        "--to",
        SHIPMENTS_REQUESTED.name,
        "--filter",
        f"seller_id={seller}",
    )
    assert wrong_target.returncode == 2
    assert "does not accept OrderImportFailed" in wrong_target.stderr
    assert _records(bootstrap, SHIPMENTS_REQUESTED.name, seller) == []

    for args, expected, code in (  # 3: an unknown name, 2: bad input (ordersync.cli.common.ExitCode)
        (("no.such.topic", "--from-offset", "0"), "not a catalogue topic", 3),
        ((ORDERS_IMPORT_FAILED.name,), "--from-offset", 2),
        ((ORDERS_IMPORT_FAILED.name, "--since", "last tuesday"), "ISO 8601", 2),
        ((ORDERS_IMPORT_FAILED.name, "--from-offset", "0", "--filter", "seller_id"), "key=value", 2),
    ):
        refused = _cli(ordersync_env, "replay", *args)
        assert refused.returncode == code, refused.stdout
        assert expected in refused.stderr
    assert len(_records(bootstrap, ORDERS_IMPORT_FAILED.name, seller)) == 1
