"""The pipeline end to end on the production servers: Apache Kafka (the official image, KRaft) and Redis
with AUTH, started by testcontainers, instead of the embedded broker and redis-server.

Selected automatically where a Docker engine answers; skipped, saying so, where none does. Every stage
runs as its own process (as in tests/e2e/test_pipeline.py), against the simulator.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ordersync.dev.demo import OutcomeWatcher, local_pipeline, wait_until_accounted
from ordersync.kafka.admin import list_topics, partitions_of, topic_partitions
from ordersync.schemas.topics import CATALOGUE, ORDERS_IMPORTED, SHIPMENTS_CONFIRMED
from ordersync.settings import KafkaSettings, Settings
from ordersync.simulator.scenario import Scenario
from tests.topics import wait_for

pytestmark = pytest.mark.e2e

#: The images docker-compose.yml runs.
KAFKA_IMAGE = "apache/kafka:3.9.1"
REDIS_IMAGE = "redis:7.4-alpine"
#: Where the broker learns the address to advertise: Docker maps its port only once it has started.
ADVERTISED_FILE = "/tmp/advertised-listeners"  # noqa: S108 - inside the container


def _docker_problem() -> str | None:
    """Why no Docker engine can be used here, or None when one answers."""
    try:
        import docker  # type: ignore[import-untyped]  # noqa: PLC0415 - only where the tests may run
    except ImportError as exc:
        return f"the docker package is missing ({exc}); install ordersync[dev]"
    try:
        client = docker.from_env(timeout=5)
        client.ping()
        client.close()
    except Exception as exc:  # any failure to reach the engine means: skip, with the reason
        return f"{type(exc).__name__}: {exc}"
    return None


@pytest.fixture(scope="module")
def docker_engine() -> None:
    problem = _docker_problem()
    if problem is not None:
        pytest.skip(
            "no Docker engine: the Apache Kafka + Redis end-to-end test needs one "
            f"(`docker info` must work; DOCKER_HOST is honoured): {problem}"
        )


@dataclass(frozen=True)
class Servers:
    kafka_bootstrap: str
    redis_url: str
    redis_password: str


def _start_kafka() -> Any:
    from testcontainers.core.container import DockerContainer  # noqa: PLC0415

    # One node, broker and KRaft controller, as in docker-compose.yml. Clients reach the PLAINTEXT
    # listener through the port Docker maps; the broker talks to itself on BROKER.
    container = (
        DockerContainer(KAFKA_IMAGE)
        .with_exposed_ports(9092)
        .with_env("CLUSTER_ID", "b3JkZXJzeW5jLWUyZS10Yw")
        .with_env("KAFKA_NODE_ID", "1")
        .with_env("KAFKA_PROCESS_ROLES", "broker,controller")
        .with_env("KAFKA_CONTROLLER_QUORUM_VOTERS", "1@localhost:9093")
        .with_env("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER")
        .with_env("KAFKA_LISTENERS", "PLAINTEXT://:9092,CONTROLLER://:9093,BROKER://:19092")
        .with_env(
            "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
            "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,BROKER:PLAINTEXT",
        )
        .with_env("KAFKA_INTER_BROKER_LISTENER_NAME", "BROKER")
        .with_env("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false")
        .with_env("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
        .with_env("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")
        .with_command(
            [
                "sh",
                "-c",
                f"while [ ! -s {ADVERTISED_FILE} ]; do sleep 0.1; done; "
                f'export KAFKA_ADVERTISED_LISTENERS="$(cat {ADVERTISED_FILE})"; exec /etc/kafka/docker/run',
            ]
        )
    )
    container.start()
    bootstrap = f"{container.get_container_host_ip()}:{container.get_exposed_port(9092)}"
    listeners = f"PLAINTEXT://{bootstrap},BROKER://localhost:19092"
    container.copy_into_container(listeners.encode(), ADVERTISED_FILE)
    return container, bootstrap


def _start_redis(password: str) -> Any:
    from testcontainers.core.container import DockerContainer  # noqa: PLC0415

    container = (
        DockerContainer(REDIS_IMAGE)
        .with_exposed_ports(6379)
        .with_command(["redis-server", "--appendonly", "yes", "--requirepass", password])
    )
    container.start()
    return container, f"redis://{container.get_container_host_ip()}:{container.get_exposed_port(6379)}/0"


def _kafka_answers(bootstrap: str) -> bool:
    try:
        list_topics(Settings(kafka=KafkaSettings(bootstrap=bootstrap)))
    except Exception:  # not up yet: asked again until the deadline
        return False
    return True


def _redis_answers(url: str, password: str) -> bool:
    import redis  # noqa: PLC0415

    client = redis.Redis.from_url(url, password=password, socket_timeout=2)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


@pytest.fixture(scope="module")
def servers(docker_engine: None) -> Iterator[Servers]:
    password = secrets.token_hex(16)
    started: list[Any] = []
    try:
        kafka, bootstrap = _start_kafka()
        started.append(kafka)
        redis_container, redis_url = _start_redis(password)
        started.append(redis_container)
        wait_for(lambda: _kafka_answers(bootstrap), timeout_s=180)
        wait_for(lambda: _redis_answers(redis_url, password), timeout_s=60)
        yield Servers(bootstrap, redis_url, password)
    finally:
        for container in reversed(started):
            container.stop()


def _scenario() -> Scenario:
    orders: dict[str, Any] = {
        "count": 20,
        "history_s": 3600,
        "arrival_window_s": 300,
        "items_per_order": [1, 3],
        "quantity": [1, 2],
        "pending_share": 0.0,
        "afn_share": 0.0,
        "cancel_share": 0.0,
        "unknown_sku_share": 0.0,
    }

    def seller(seller_id: str, region: str, marketplace: str, token: str) -> dict[str, Any]:
        return {
            "seller_id": seller_id,
            "region": region,
            "marketplaces": [marketplace],
            "applications": [
                {
                    "client_id": "amzn1.application-oa2-client.tc",
                    "client_secret": "tc",
                    "refresh_token": token,
                }
            ],
            "catalogue_size": 8,
            "orders": orders,
        }

    return Scenario.model_validate(
        {
            "name": "containers",
            "seed": 23,
            "time_scale": 60,
            "sellers": [
                seller("A1TCSELLERUS", "na", "ATVPDKIKX0DER", "Atzr|tc-us"),
                seller("A2TCSELLERDE", "eu", "A1PA6795UKMFR9", "Atzr|tc-de"),
            ],
        }
    )


def test_every_order_is_confirmed_through_apache_kafka_and_redis_with_auth(
    servers: Servers, tmp_path: Path
) -> None:
    import redis  # noqa: PLC0415

    # AUTH is really on: without ORDERSYNC_REDIS__PASSWORD the stages could not use this Redis.
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(servers.redis_url, socket_timeout=2).ping()
    with local_pipeline(
        scenario=_scenario(),
        run_dir=tmp_path / "run",
        kafka_bootstrap=servers.kafka_bootstrap,
        redis_url=servers.redis_url,
        extra_env={"ORDERSYNC_REDIS__PASSWORD": servers.redis_password},
    ) as pipeline:
        # The catalogue's topics, with the partitions it declares, on Apache Kafka (no auto-creation).
        settings = pipeline.settings()
        partitions = topic_partitions(settings, [spec.name for spec in CATALOGUE])
        assert partitions == {spec.name: partitions_of(spec, settings) for spec in CATALOGUE}
        watcher = OutcomeWatcher(settings)
        watcher.start()
        try:
            accounting = wait_until_accounted(pipeline, watcher, timeout_s=300)
            outcomes = watcher.snapshot()
        finally:
            watcher.stop()
        truth, throttled, _ = pipeline.truth()

    assert len(truth) == 40
    assert accounting.unaccounted == []
    assert accounting.categories == {"confirmed on Amazon": 40}
    assert throttled == 0
    assert outcomes.count(ORDERS_IMPORTED.name) == 40
    assert outcomes.count(SHIPMENTS_CONFIRMED.name) == 40
