"""Kafka client settings and topic administration: every catalogue topic, created up front.

Topics are never auto-created: the broker would pick its own partition count (the embedded one uses 4,
Apache Kafka ``num.partitions``) and cleanup policy. :func:`create_topics` creates the whole catalogue
with the partitions, replication factor and ``cleanup.policy`` it declares, and is safe to run again.

:func:`kafka_client_config` (kafka-python) and :func:`aiokafka_client_config` (aiokafka) are the one
place the connection and security settings become client arguments; every client in ordersync uses
them, so TLS and SASL work the same way everywhere.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ordersync.schemas.topics import CATALOGUE, TopicSpec
from ordersync.settings import KafkaSettings, Settings

if TYPE_CHECKING:
    from kafka.admin import KafkaAdminClient

#: Kafka's error code for a topic that already exists: the idempotent case of a create.
TOPIC_ALREADY_EXISTS = 36
TOPICS_READY_TIMEOUT_MS = 30_000
#: How long an admin command tries to reach the cluster before it says so (kafka-python waits 30 s).
ADMIN_BOOTSTRAP_TIMEOUT_MS = 10_000


class TopicCreationError(RuntimeError):
    """The broker refused to create some topics; the message names each with the broker's reason."""


def _bootstrap_servers(kafka: KafkaSettings) -> list[str]:
    return [server.strip() for server in kafka.bootstrap.split(",") if server.strip()]


def kafka_client_config(kafka: KafkaSettings, *, client_id: str | None = None) -> dict[str, Any]:
    """Keyword arguments for any kafka-python client (producer, consumer, admin): address and security.

    Group and fetch tuning (``session_timeout_ms``...) is left to the caller: not every client accepts it.
    """
    config: dict[str, Any] = {
        "bootstrap_servers": _bootstrap_servers(kafka),
        "security_protocol": kafka.security_protocol,
    }
    if client_id:
        config["client_id"] = client_id
    if kafka.security_protocol.startswith("SASL_"):
        config["sasl_mechanism"] = kafka.sasl_mechanism or "PLAIN"
        # kafka-python names the credentials "plain" for SCRAM too.
        config["sasl_plain_username"] = kafka.sasl_username
        config["sasl_plain_password"] = (
            kafka.sasl_password.get_secret_value() if kafka.sasl_password is not None else None
        )
    if kafka.ssl_cafile is not None and kafka.security_protocol in ("SSL", "SASL_SSL"):
        config["ssl_cafile"] = str(kafka.ssl_cafile)
    if kafka.ssl_certfile is not None and kafka.security_protocol in ("SSL", "SASL_SSL"):  # mutual TLS
        config["ssl_certfile"] = str(kafka.ssl_certfile)
        if kafka.ssl_keyfile is not None:
            config["ssl_keyfile"] = str(kafka.ssl_keyfile)
        if kafka.ssl_key_password is not None:
            config["ssl_password"] = kafka.ssl_key_password.get_secret_value()
    return config


def aiokafka_client_config(kafka: KafkaSettings, *, client_id: str | None = None) -> dict[str, Any]:
    """The aiokafka twin of :func:`kafka_client_config`: TLS goes in as an ``ssl_context``."""
    config = kafka_client_config(kafka, client_id=client_id)
    for tls_option in ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_password"):
        config.pop(tls_option, None)
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        from aiokafka.helpers import create_ssl_context  # noqa: PLC0415 - only TLS needs it

        # aiokafka refuses SSL without a context; without a CA file the system's CAs verify the broker.
        config["ssl_context"] = create_ssl_context(
            cafile=kafka.ssl_cafile,
            certfile=kafka.ssl_certfile,
            keyfile=kafka.ssl_keyfile,
            password=kafka.ssl_key_password.get_secret_value() if kafka.ssl_key_password else None,
        )
    return config


def bounded_producer_config(kafka: KafkaSettings, wait_s: float, *, client_id: str) -> dict[str, Any]:
    """kafka-python producer arguments whose waits end within ``wait_s`` (kafka-python alone waits 30 s
    to bootstrap and 60 s for metadata): for a person waiting on the answer (the CLI, the dashboard)."""
    wait_ms = int(wait_s * 1000)
    return {
        **kafka_client_config(kafka, client_id=client_id),
        "bootstrap_timeout_ms": wait_ms,
        "request_timeout_ms": wait_ms,
        "max_block_ms": wait_ms,
    }


@contextlib.contextmanager
def admin_client(settings: Settings) -> Iterator[KafkaAdminClient]:
    """A kafka-python admin client on the configured cluster, closed on exit."""
    from kafka.admin import KafkaAdminClient  # noqa: PLC0415 - keeps CLI start-up fast

    client = KafkaAdminClient(
        **kafka_client_config(settings.kafka, client_id="ordersync-admin"),
        bootstrap_timeout_ms=ADMIN_BOOTSTRAP_TIMEOUT_MS,
    )
    try:
        yield client
    finally:
        client.close()


def partitions_of(spec: TopicSpec, settings: Settings) -> int:
    """The partition count a catalogue topic is created with."""
    return spec.partitions if spec.partitions is not None else settings.stage.partitions


def create_topics(settings: Settings, specs: Iterable[TopicSpec] = CATALOGUE) -> list[str]:
    """Create every topic of ``specs`` that does not exist yet; returns the names created.

    Each gets its declared partitions (or ``settings.stage.partitions``), the replication factor of
    ``settings.stage`` and its ``cleanup.policy``. A topic that already exists is left as it is (its
    partitions are not changed), so running this again is harmless. Returns once the created topics
    have a leader for every partition. Raises :class:`TopicCreationError` for any other refusal.
    """
    specs = list(specs)
    if not specs:
        return []
    request = {
        spec.name: {
            "num_partitions": partitions_of(spec, settings),
            "replication_factor": settings.stage.replication_factor,
            "configs": {"cleanup.policy": spec.cleanup_policy},
        }
        for spec in specs
    }
    with admin_client(settings) as admin:
        response = admin.create_topics(request, raise_errors=False)
        created: list[str] = []
        refused: list[str] = []
        for result in response["topics"]:
            if result["error_code"] == 0:
                created.append(result["name"])
            elif result["error_code"] != TOPIC_ALREADY_EXISTS:
                reason = result.get("error_message") or ""
                refused.append(f"{result['name']}: error {result['error_code']} {reason}".strip())
        if created:
            # Producers that start right after this must find a leader, not UNKNOWN_TOPIC_OR_PARTITION.
            admin.wait_for_topics(created, timeout_ms=TOPICS_READY_TIMEOUT_MS)
    if refused:
        raise TopicCreationError("the broker refused to create: " + "; ".join(refused))
    # In catalogue order, whatever order the broker answered in.
    return [spec.name for spec in specs if spec.name in created]


def list_topics(settings: Settings) -> set[str]:
    """Every topic name the cluster has."""
    with admin_client(settings) as admin:
        return set(admin.list_topics())


@dataclass(frozen=True)
class KafkaHealth:
    """What one look at the cluster found: reachable or why not, its brokers, and the catalogue's topics
    it lacks (a stage consuming a missing topic waits for it)."""

    bootstrap: str
    reachable: bool
    brokers: int = 0
    missing_topics: tuple[str, ...] = ()
    error: str = ""

    @property
    def summary(self) -> str:
        if not self.reachable:
            return f"Kafka at {self.bootstrap} cannot be reached: {self.error}"
        topics = (
            f"{len(self.missing_topics)} catalogue topic(s) missing: {', '.join(self.missing_topics[:5])}"
            if self.missing_topics
            else "every catalogue topic present"
        )
        return f"Kafka at {self.bootstrap}: {self.brokers} broker(s), {topics}"


def kafka_health(settings: Settings, timeout_s: float = 5.0) -> KafkaHealth:
    """One metadata round trip to the cluster, bounded by ``timeout_s`` (blocking: run it in a thread)."""
    from kafka.admin import KafkaAdminClient  # noqa: PLC0415 - keeps CLI start-up fast
    from kafka.errors import KafkaError  # noqa: PLC0415

    bootstrap = settings.kafka.bootstrap
    timeout_ms = int(timeout_s * 1000)
    try:
        admin = KafkaAdminClient(
            **kafka_client_config(settings.kafka, client_id="ordersync-health"),
            bootstrap_timeout_ms=timeout_ms,
            request_timeout_ms=timeout_ms,
        )
    except KafkaError as exc:
        return KafkaHealth(bootstrap, False, error=f"{type(exc).__name__}: {exc}")
    try:
        cluster = admin.describe_cluster()
        existing = set(admin.list_topics())
    except KafkaError as exc:
        return KafkaHealth(bootstrap, False, error=f"{type(exc).__name__}: {exc}")
    finally:
        admin.close()
    missing = tuple(spec.name for spec in CATALOGUE if spec.name not in existing)
    return KafkaHealth(bootstrap, True, brokers=len(cluster.get("brokers", ())), missing_topics=missing)


def topic_partitions(settings: Settings, names: Iterable[str] | None = None) -> dict[str, int]:
    """Partition count per existing topic (all topics when ``names`` is None; missing ones are absent)."""
    wanted = None if names is None else list(names)
    with admin_client(settings) as admin:
        existing = set(admin.list_topics())
        to_describe = sorted(existing if wanted is None else existing.intersection(wanted))
        if not to_describe:
            return {}
        described = admin.describe_topics(to_describe)
    return {topic["name"]: len(topic["partitions"]) for topic in described if topic["error_code"] == 0}


# --------------------------------------------------------------------------------------------------
# CLI: mounted as `ordersync topics`
