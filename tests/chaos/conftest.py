"""Chaos tests inject faults into real processes; a test that freezes a broker or floods topics with
garbage gets a broker of its own, so no other test meets its fault or reads its records."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ordersync.dev.devinfra import EmbeddedBroker
from ordersync.kafka.admin import create_topics
from ordersync.settings import KafkaSettings, Settings


@pytest.fixture
def own_broker() -> Iterator[EmbeddedBroker]:
    """An embedded broker with the catalogue's topics, for this test only."""
    with EmbeddedBroker() as broker:
        create_topics(Settings(kafka=KafkaSettings(bootstrap=broker.bootstrap)))
        yield broker
