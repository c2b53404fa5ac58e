"""Reading a topic from the start up to its end (the bounded reader, :mod:`ordersync.kafka.reader`), and
waiting for the pipeline: shared by the integration and end-to-end tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ordersync.kafka.reader import read_topic
from ordersync.schemas.codec import decode
from ordersync.schemas.events import ShipmentRequested
from ordersync.schemas.topics import SHIPMENTS_REQUESTED, TopicSpec


def read_envelopes(bootstrap: str, spec: TopicSpec) -> list[Any]:
    """Every event on ``spec``'s topic, from the first offset up to the high watermark each partition's
    first fetch reported (nothing when the topic does not exist)."""
    return [decode(r.value, spec) for r in read_topic(bootstrap, spec.name, skip_missing=True)]


def read_all(bootstrap: str, spec: TopicSpec) -> list[Any]:
    """The payloads of :func:`read_envelopes`."""
    return [envelope.payload for envelope in read_envelopes(bootstrap, spec)]


def wait_for(condition: Callable[[], object], timeout_s: float = 120, *, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.25)


def requested_orders(bootstrap: str, seller: str, want: int, timeout_s: float = 90) -> list[str]:
    """The orders of the distinct packages requested for ``seller`` (a redelivery may repeat one)."""
    deadline = time.monotonic() + timeout_s
    while True:
        packages: dict[tuple[str, str], str] = {}
        for record in read_topic(bootstrap, SHIPMENTS_REQUESTED.name):
            if record.key and record.key.decode().startswith(f"{seller}:"):
                request = decode(record.value, SHIPMENTS_REQUESTED).payload_as(ShipmentRequested)
                packages[(request.amazon_order_id, request.package_reference_id)] = request.amazon_order_id
        if len(packages) >= want or time.monotonic() > deadline:
            return list(packages.values())
        time.sleep(1.0)
