"""Topic creation: the whole catalogue, with its partitions, idempotently, seen by another client.

Each test works on its own broker (not the session's), so "created" versus "already there" is exact
whatever other tests did first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
from kafka import KafkaConsumer
from pydantic import SecretStr

from ordersync.cli.topics import topics_app
from ordersync.dev.devinfra import EmbeddedBroker
from ordersync.kafka import admin as kafka_admin
from ordersync.kafka.admin import (
    aiokafka_client_config,
    create_topics,
    kafka_client_config,
    list_topics,
    partitions_of,
    topic_partitions,
)
from ordersync.schemas.topics import CATALOGUE, TopicSpec
from ordersync.settings import KafkaSettings, Settings, StageSettings

pytestmark = pytest.mark.integration


@pytest.fixture
def own_broker() -> Iterator[str]:
    with EmbeddedBroker() as broker:
        yield broker.bootstrap


@pytest.fixture
def settings(own_broker: str) -> Settings:
    # Not the catalogue default of 4: proves the count comes from the settings.
    return Settings(kafka=KafkaSettings(bootstrap=own_broker), stage=StageSettings(partitions=3))


def _topics_seen_by_a_consumer(bootstrap: str) -> set[str]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, request_timeout_ms=15_000)
    try:
        topics: set[str] = consumer.topics()
    finally:
        consumer.close()
    return topics


def test_creates_the_whole_catalogue_with_its_partitions(settings: Settings, own_broker: str) -> None:
    created = create_topics(settings)

    names = [spec.name for spec in CATALOGUE]
    assert created == names
    assert set(names) <= _topics_seen_by_a_consumer(own_broker)
    assert set(names) <= list_topics(settings)
    partitions = topic_partitions(settings, names)
    assert partitions == {spec.name: partitions_of(spec, settings) for spec in CATALOGUE}
    assert set(partitions.values()) == {3}


def test_second_run_creates_nothing_and_changes_nothing(settings: Settings) -> None:
    first = create_topics(settings)
    before = topic_partitions(settings)

    assert create_topics(settings) == []
    assert topic_partitions(settings) == before
    assert first


def test_a_topic_missing_from_a_partial_catalogue_is_added(settings: Settings) -> None:
    first_half, second_half = CATALOGUE[:3], CATALOGUE[3:]
    create_topics(settings, first_half)

    assert create_topics(settings) == [spec.name for spec in second_half]


def test_a_declared_partition_count_wins_over_the_default(settings: Settings) -> None:
    spec: TopicSpec = replace(CATALOGUE[0], name="test.declared-partitions", partitions=2, dlq=None)

    assert create_topics(settings, [spec]) == [spec.name]
    assert topic_partitions(settings, [spec.name]) == {spec.name: 2}


def test_topics_cli_create_then_list(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner  # noqa: PLC0415

    monkeypatch.setenv("ORDERSYNC_KAFKA__BOOTSTRAP", settings.kafka.bootstrap)
    runner = CliRunner()

    first = runner.invoke(topics_app, ["create"])
    assert first.exit_code == 0, first.output
    assert all(spec.name in first.output for spec in CATALOGUE)
    assert f"{len(CATALOGUE)} created, 0 already there" in first.output

    second = runner.invoke(topics_app, ["create"])
    assert second.exit_code == 0, second.output
    assert f"0 created, {len(CATALOGUE)} already there" in second.output

    listed = runner.invoke(topics_app, ["list"])
    assert listed.exit_code == 0, listed.output
    assert "MISSING" not in listed.output
    assert all(spec.name in listed.output for spec in CATALOGUE)


def test_topics_cli_reports_an_unreachable_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner  # noqa: PLC0415

    from ordersync.dev.devinfra import find_free_port  # noqa: PLC0415

    monkeypatch.setenv("ORDERSYNC_KAFKA__BOOTSTRAP", f"127.0.0.1:{find_free_port()}")
    monkeypatch.setattr(kafka_admin, "ADMIN_BOOTSTRAP_TIMEOUT_MS", 1000)
    result = CliRunner().invoke(topics_app, ["list"])
    assert result.exit_code == 5  # Kafka unreachable (ordersync.cli.common.ExitCode)
    assert "Kafka at 127.0.0.1:" in result.output


# -- client configuration (no broker needed, but it belongs with the admin code) ----------------------


@pytest.mark.parametrize("client_config", [kafka_client_config, aiokafka_client_config])
def test_client_config_carries_security_settings(
    client_config: Callable[[KafkaSettings], dict[str, Any]],
) -> None:
    kafka = KafkaSettings(
        bootstrap="b1:9093, b2:9093",
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="ordersync",
        sasl_password=SecretStr("s3cret"),
    )
    config = client_config(kafka)
    assert config["bootstrap_servers"] == ["b1:9093", "b2:9093"]
    assert config["security_protocol"] == "SASL_PLAINTEXT"
    assert config["sasl_mechanism"] == "SCRAM-SHA-512"
    assert config["sasl_plain_username"] == "ordersync"
    assert config["sasl_plain_password"] == "s3cret"
    assert "ssl_cafile" not in config
    assert "ssl_context" not in config


def test_plaintext_client_config_is_minimal() -> None:
    assert kafka_client_config(KafkaSettings(bootstrap="k:9092")) == {
        "bootstrap_servers": ["k:9092"],
        "security_protocol": "PLAINTEXT",
    }


def test_session_topics_fixture_created_the_catalogue(topics: tuple[str, ...], kafka_bootstrap: str) -> None:
    assert set(topics) == {spec.name for spec in CATALOGUE}
    assert set(topics) <= _topics_seen_by_a_consumer(kafka_bootstrap)
