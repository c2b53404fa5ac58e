"""Replay of a DLQ after a fix lands the events: an invoice for an order whose import is not known yet is
dead-lettered by the invoice-issued stage (its own process); once the import has landed,
`ordersync dlq replay invoice-issued` sends the original invoice back and it becomes a shipment request;
a second replay sends nothing, and `dlq list` / `dlq show` report the letter."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kafka import KafkaProducer

from ordersync.dev.devinfra import stop_process_group
from ordersync.kafka.reader import read_topic
from ordersync.redis_client import redis_client
from ordersync.schemas.codec import decode
from ordersync.schemas.events import ShipmentRequested
from ordersync.schemas.topics import INVOICES_ISSUED, SHIPMENTS_REQUESTED, order_key
from ordersync.settings import RedisSettings
from ordersync.state.store import Store
from tests.factories import DLQ_ORDER_ID as ORDER_ID
from tests.factories import dlq_invoice, dlq_sales_order
from tests.topics import wait_for

pytestmark = pytest.mark.integration


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ordersync.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _values(bootstrap: str, topic: str, seller: str) -> list[bytes | None]:
    """The values of the seller's records on the topic, from the start up to its end."""
    return [
        r.value
        for r in read_topic(bootstrap, topic, skip_missing=True)
        if r.key and r.key.decode().startswith(f"{seller}:")
    ]


@pytest.fixture
def invoice_stage(
    ordersync_env: dict[str, str], topics: tuple[str, ...], tmp_path: Path
) -> Iterator[tuple[str, dict[str, str]]]:
    """The invoice-issued stage as its own process, for a seller of this test only."""
    seller = f"A{uuid.uuid4().hex[:10].upper()}"
    secret = {"value": "x"}
    channels = tmp_path / "channels.yaml"
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
    # An invoice of an unknown order waits this long for its sales order before it is dead-lettered.
    env = {
        **ordersync_env,
        "ORDERSYNC_CHANNELS_FILE": str(channels),
        "ORDERSYNC_INVOICE__SALES_ORDER_WAIT_S": "2",
        # ... then on the redrive tiers, until the redrive deadline (short here).
        "ORDERSYNC_REDRIVE__DELAYS_S": "[1, 1, 1]",
        "ORDERSYNC_REDRIVE__DEADLINE_S": "2",
    }
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


def test_dead_letters_replayed_after_the_fix_land_once(invoice_stage: tuple[str, dict[str, str]]) -> None:
    seller, env = invoice_stage
    bootstrap = env["ORDERSYNC_KAFKA__BOOTSTRAP"]
    assert INVOICES_ISSUED.dlq is not None
    dlq = INVOICES_ISSUED.dlq.name
    mine = f"seller_id={seller}"

    # The back-office invoices an order ordersync has not imported (yet): dead-lettered.
    invoice = dlq_invoice(seller, "INV-EARLY", quantity=2)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    producer.send(INVOICES_ISSUED.name, key=order_key(seller, ORDER_ID).encode(), value=invoice).get(
        timeout=30
    )
    producer.close()
    wait_for(lambda: _values(bootstrap, dlq, seller), timeout_s=90)

    shown = _cli(env, "dlq", "show", "invoice-issued", "--filter", mine, "--json")
    assert shown.returncode == 0, shown.stderr
    (letter,) = [json.loads(line) for line in shown.stdout.splitlines()]
    assert letter["dlq_topic"] == dlq
    assert letter["source_topic"] == INVOICES_ISSUED.name
    assert letter["source_key"] == order_key(seller, ORDER_ID)
    assert "was never imported" in letter["error"]
    assert letter["original"]["payload"]["invoice_number"] == "INV-EARLY"
    assert letter["replayed"] is False

    listed = _cli(env, "dlq", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    by_topic = {entry["topic"]: entry for entry in json.loads(listed.stdout)}
    assert by_topic[dlq]["letters"] >= 1
    assert by_topic[dlq]["by_stage"].get("invoice-issued", 0) >= 1

    # A dry run says what it would send, and sends nothing.
    dry = _cli(env, "dlq", "replay", "invoice-issued", "--filter", mine, "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert (json.loads(dry.stdout)["to_send"], json.loads(dry.stdout)["sent"]) == (1, 0)
    assert _values(bootstrap, INVOICES_ISSUED.name, seller) == [invoice]

    # The fix: the order's import lands.
    async def import_lands() -> None:
        redis = redis_client(RedisSettings(url=env["ORDERSYNC_REDIS__URL"]))
        await Store(redis, env["ORDERSYNC_REDIS__KEY_PREFIX"]).save_sales_order(dlq_sales_order(seller))
        await redis.aclose()

    asyncio.run(import_lands())

    replayed = _cli(env, "dlq", "replay", "invoice-issued", "--filter", mine, "--json")
    assert replayed.returncode == 0, replayed.stderr
    summary = json.loads(replayed.stdout)
    assert (summary["to_send"], summary["sent"]) == (1, 1)
    assert summary["by_source"] == {INVOICES_ISSUED.name: 1}
    assert _values(bootstrap, INVOICES_ISSUED.name, seller) == [invoice, invoice], "the original bytes"

    wait_for(lambda: _values(bootstrap, SHIPMENTS_REQUESTED.name, seller), timeout_s=90)
    (request,) = _values(bootstrap, SHIPMENTS_REQUESTED.name, seller)
    shipment = decode(request, SHIPMENTS_REQUESTED).payload_as(ShipmentRequested)
    assert shipment.amazon_order_id == ORDER_ID
    assert shipment.tracking_number == "1ZINV-EARLY"

    again = _cli(env, "dlq", "replay", "invoice-issued", "--filter", mine, "--json")
    assert again.returncode == 0, again.stderr
    second = json.loads(again.stdout)
    assert (second["to_send"], second["sent"]) == (0, 0)
    assert second["skipped"] == {"already replayed": 1}
    assert len(_values(bootstrap, INVOICES_ISSUED.name, seller)) == 2
    (shown_after,) = [
        json.loads(line)
        for line in _cli(env, "dlq", "show", dlq, "--filter", mine, "--json").stdout.splitlines()
    ]
    assert shown_after["replayed"] is True

    refused = _cli(env, "dlq", "replay", "no-such-stage")
    assert refused.returncode == 3  # an unknown name (ordersync.cli.common.ExitCode)
    assert "neither a stage" in refused.stderr
