"""Chaos tests inject faults into real processes; a test that freezes a broker or floods topics with
garbage gets a broker of its own, so no other test meets its fault or reads its records; one that kills
Redis gets a Redis of its own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ordersync.dev.devinfra import EmbeddedBroker
from ordersync.kafka.admin import create_topics
from ordersync.settings import KafkaSettings, Settings
from tests.chaos.servers import AofRedis


@pytest.fixture
def own_broker() -> Iterator[EmbeddedBroker]:
    """An embedded broker with the catalogue's topics, for this test only."""
    with EmbeddedBroker() as broker:
        create_topics(Settings(kafka=KafkaSettings(bootstrap=broker.bootstrap)))
        yield broker


@pytest.fixture
def redis_with_aof(tmp_path: Path) -> Iterator[AofRedis]:
    """A Redis with an append-only file (appendfsync everysec, as production runs it), for this test."""
    server = AofRedis(tmp_path)
    server.start()
    yield server
    if server.process is not None and server.process.poll() is None:
        server.kill()
