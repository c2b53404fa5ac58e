"""`ordersync orders retry-download`: an ops.commands event that makes the order-download stage fetch the
orders again from scratch, so they flow through item fetch once more (KCC's "Retry Download")."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition

from ordersync.demo import local_pipeline
from ordersync.schemas.codec import decode
from ordersync.schemas.events import OrderDownloaded, OrderEnriched
from ordersync.schemas.topics import ORDERS_DOWNLOADED, ORDERS_ENRICHED, TopicSpec
from ordersync.simulator.testing import tiny_scenario

pytestmark = pytest.mark.integration


def _read_all(bootstrap: str, spec: TopicSpec) -> list[Any]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50)
    partitions = [TopicPartition(spec.name, p) for p in consumer.partitions_for_topic(spec.name) or ()]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    payloads = []
    idle = 0
    while idle < 3:
        batch = consumer.poll(timeout_ms=300)
        idle = 0 if batch else idle + 1
        payloads += [decode(r.value, spec).payload for records in batch.values() for r in records]
    consumer.close()
    return payloads


def _wait_for(condition: Any, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(1)


def test_retry_download_fetches_the_order_again_through_the_pipeline(tmp_path: Path) -> None:
    scenario = tiny_scenario(orders={"count": 5, "history_s": 3600}, time_scale=60, start=None)
    with local_pipeline(
        scenario=scenario, run_dir=tmp_path / "run", stages=("order-download", "item-fetch"), backoffice=False
    ) as pipeline:
        bootstrap = pipeline.env["ORDERSYNC_KAFKA__BOOTSTRAP"]
        _wait_for(lambda: len(_read_all(bootstrap, ORDERS_ENRICHED)) == 5)
        target = _read_all(bootstrap, ORDERS_ENRICHED)[0].order.amazon_order_id
        channel = pipeline.channel_names()[0]
        output = pipeline.cli("orders", "retry-download", "--channel", channel, target)
        assert "sent as event" in output

        def retried() -> list[OrderDownloaded]:
            return [
                d
                for d in _read_all(bootstrap, ORDERS_DOWNLOADED)
                if d.found_by == "retry" and d.order.amazon_order_id == target
            ]

        _wait_for(lambda: len(retried()) == 1)
        _wait_for(
            lambda: (
                sum(
                    1
                    for e in _read_all(bootstrap, ORDERS_ENRICHED)
                    if isinstance(e, OrderEnriched) and e.order.amazon_order_id == target
                )
                == 2
            )
        )
        rejected = pipeline.cli_result("orders", "retry-download", "--channel", channel, "not-an-order-id")
        assert rejected.returncode == 1
        assert "amazon_order_ids" in rejected.stderr
