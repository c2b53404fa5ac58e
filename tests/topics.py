"""Reading a topic from the start up to its end (the bounded reader, :mod:`ordersync.kafka.reader`), and
waiting for the pipeline: shared by the integration and end-to-end tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ordersync.kafka.reader import read_topic
from ordersync.schemas.codec import decode
from ordersync.schemas.topics import TopicSpec


def read_all(bootstrap: str, spec: TopicSpec) -> list[Any]:
    """Every event payload on ``spec``'s topic, from the first offset up to the high watermark each
    partition's first fetch reported (nothing when the topic does not exist)."""
    return [decode(r.value, spec).payload for r in read_topic(bootstrap, spec.name, skip_missing=True)]


def wait_for(condition: Callable[[], object], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(1)
