"""Reading a topic from the start like any Kafka client, and waiting for the pipeline: shared by the
integration and end-to-end tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from ordersync.schemas.codec import decode
from ordersync.schemas.topics import TopicSpec


def read_all(bootstrap: str, spec: TopicSpec) -> list[Any]:
    """Every event payload on ``spec``'s topic, from the first offset until the topic is quiet."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50)
    partitions = [TopicPartition(spec.name, p) for p in consumer.partitions_for_topic(spec.name) or ()]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    payloads: list[Any] = []
    idle = 0
    while idle < 3:
        batch = consumer.poll(timeout_ms=300)
        idle = 0 if batch else idle + 1
        payloads += [decode(r.value, spec).payload for records in batch.values() for r in records]
    consumer.close()
    return payloads


def wait_for(condition: Callable[[], object], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(1)
