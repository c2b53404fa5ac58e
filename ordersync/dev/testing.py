"""The test kit: a stage runtime whose Kafka producer records, for ordersync's tests and benchmarks.

Nothing in a stage uses this module; it ships in the package so that the stage tests
(``tests/stage/conftest.py``) and the benchmarks (``bench/writeback.py``) share one recording runtime
instead of keeping copies. It imports no test framework, so a benchmark runs without pytest. The
simulator's own helpers for tests (a tiny scenario, the test seller) are in
:mod:`ordersync.simulator.testing`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import yaml

from ordersync.channels import ChannelsFile
from ordersync.dev.demo import channels_for
from ordersync.pipeline.runtime import StageRuntime
from ordersync.schemas.envelope import Envelope
from ordersync.schemas.topics import TopicSpec
from ordersync.simulator.scenario import Scenario


@dataclass
class Emitted:
    """One envelope a stage would have published: topic, key, envelope, and when by the stage's clock."""

    topic: str
    key: str
    envelope: Envelope[Any]
    at: datetime


class RecordingRuntime(StageRuntime):
    """A real stage runtime (Redis, rate limiter, Amazon client) whose Kafka producer records.

    ``emit`` checks what the real one checks (Redis still holds the stage's state, the event belongs on
    the topic and fits in a message), then appends an :class:`Emitted` to :attr:`emitted` instead of
    sending it to Kafka.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.emitted: list[Emitted] = []

    async def _send(self, spec: TopicSpec, key: str, envelope: Envelope[Any]) -> None:
        self.encode_for(spec, envelope)
        self.emitted.append(Emitted(spec.name, key, envelope, self.clock.now()))

    def payloads(self, topic: str) -> list[Any]:
        """The payloads recorded for ``topic``, in the order they were emitted."""
        return [e.envelope.payload for e in self.emitted if e.topic == topic]


def channels_of(scenario: Scenario) -> ChannelsFile:
    """The channels file of a simulator scenario's sellers, as the demo writes it (through YAML)."""
    return ChannelsFile.model_validate(yaml.safe_load(yaml.safe_dump(channels_for(scenario))))


@dataclass
class Message:
    """What faust hands an agent for one record (``StageRuntime.process`` reads these), without a broker."""

    value: bytes
    key: bytes
    topic: str
    partition: int = 0
    offset: int = 0


@dataclass
class Record:
    """A faust event: the record's value and its message."""

    message: Message
    value: bytes = field(init=False)

    def __post_init__(self) -> None:
        self.value = self.message.value
