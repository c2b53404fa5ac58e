"""Kafka on the dashboard's Infrastructure panel: the embedded broker reachable with every catalogue
topic, a broker that is not there reported within seconds (not a page that hangs)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from ordersync.dashboard import create_app
from tests.factories import dashboard_settings, write_channels_file

pytestmark = pytest.mark.integration

NO_BROKER = "127.0.0.1:1"


@pytest.mark.usefixtures("topics")
def test_the_page_says_kafka_answers_with_every_topic(
    redis_url: str, redis_key_prefix: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = dashboard_settings(
        redis_url,
        redis_key_prefix,
        write_channels_file(tmp_path / "channels.yaml"),
        kafka_bootstrap=kafka_bootstrap,
    )
    with TestClient(create_app(settings)) as client:
        answer = client.get("/api/infrastructure").json()
        assert answer["kafka"]["reachable"] is True
        assert answer["kafka"]["brokers"] >= 1
        assert answer["kafka"]["missing_topics"] == []
        page = client.get("/notifications").text
        assert 'id="infra-kafka" data-reachable="yes"' in page
        assert "every catalogue topic present" in page


def test_a_broker_that_is_not_there_is_reported_within_seconds(
    redis_url: str, redis_key_prefix: str, tmp_path: Path
) -> None:
    settings = dashboard_settings(
        redis_url,
        redis_key_prefix,
        write_channels_file(tmp_path / "channels.yaml"),
        kafka_bootstrap=NO_BROKER,
    )
    with TestClient(create_app(settings)) as client:
        started = time.monotonic()
        answer = client.get("/api/infrastructure").json()
        first_s = time.monotonic() - started
        assert answer["kafka"]["reachable"] is False
        assert answer["kafka"]["summary"].startswith(f"Kafka at {NO_BROKER} cannot be reached")
        assert first_s < 15  # bounded (kafka-python alone would wait a minute)
        page = client.get("/notifications").text
        assert 'id="infra-kafka" data-reachable="no"' in page
        assert "cannot be reached" in page
