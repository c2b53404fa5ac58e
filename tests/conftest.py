"""Fixtures shared by every test: the embedded broker and Redis, and per-test isolation on them.

Servers start lazily: only a test that asks (directly or through another fixture) for ``kafka_bootstrap``
or ``redis_url`` starts one, once per session, so unit tests start nothing. Set
``ORDERSYNC_KAFKA__BOOTSTRAP`` / ``ORDERSYNC_REDIS__URL`` to run the suite against a real Kafka or Redis
instead (their security settings come from the usual ``ORDERSYNC_*`` variables).

Tests share the session's servers, so each test writes Redis keys under its own ``redis_key_prefix`` and
never flushes anything global.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr

from ordersync.dev.devinfra import EmbeddedAws, EmbeddedBroker, EmbeddedRedis
from ordersync.kafka.admin import create_topics
from ordersync.schemas.topics import CATALOGUE
from ordersync.settings import LOCAL_AWS_KEY, AwsSettings, Settings, get_settings
from ordersync.state.readmodel import ReadModel
from tests.factories import Orders, fill_read_model


@pytest.fixture(scope="session", autouse=True)
def _isolated_dev_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Point the settings at an empty state directory for the whole session.

    Settings fall back to the addresses of a running ``ordersync dev up``; without this a developer's
    dev pair would leak into every test that builds ``Settings()``.
    """
    state_dir = tmp_path_factory.mktemp("dev-state")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ORDERSYNC_STATE_DIR", str(state_dir))
        get_settings.cache_clear()
        yield state_dir
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of the session's Redis: ``ORDERSYNC_REDIS__URL`` if set, else an embedded redis-server."""
    external = os.environ.get("ORDERSYNC_REDIS__URL")
    if external:
        yield external
        return
    with EmbeddedRedis() as server:
        yield server.url


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """``host:port`` of the session's broker: ``ORDERSYNC_KAFKA__BOOTSTRAP`` if set, else embedded Tansu."""
    external = os.environ.get("ORDERSYNC_KAFKA__BOOTSTRAP")
    if external:
        yield external
        return
    with EmbeddedBroker() as broker:
        yield broker.bootstrap


@pytest.fixture(scope="session")
def aws_endpoint_url() -> Iterator[str]:
    """The session's SQS/S3 endpoint: ``ORDERSYNC_AWS__ENDPOINT_URL`` if set, else moto's server."""
    external = os.environ.get("ORDERSYNC_AWS__ENDPOINT_URL")
    if external:
        yield external
        return
    with EmbeddedAws() as server:
        yield server.endpoint_url


@pytest.fixture
def aws(aws_endpoint_url: str) -> AwsSettings:
    """The settings that reach the session's SQS/S3/KMS server (it takes any credentials)."""
    return AwsSettings(
        endpoint_url=aws_endpoint_url,
        access_key_id=SecretStr(LOCAL_AWS_KEY),
        secret_access_key=SecretStr(LOCAL_AWS_KEY),
    )


def _settings_on(kafka_bootstrap: str) -> Settings:
    """The environment's settings (security included) aimed at the session's broker."""
    base = Settings()
    return base.model_copy(update={"kafka": base.kafka.model_copy(update={"bootstrap": kafka_bootstrap})})


@pytest.fixture(scope="session")
def topics(kafka_bootstrap: str) -> tuple[str, ...]:
    """Every catalogue topic, created once on the session's broker; yields their names."""
    create_topics(_settings_on(kafka_bootstrap))
    return tuple(spec.name for spec in CATALOGUE)


@pytest.fixture
def redis_key_prefix() -> str:
    """A Redis key prefix no other test uses (give it to the code under test as ``key_prefix``)."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def ordersync_env(
    tmp_path: Path, redis_url: str, kafka_bootstrap: str, redis_key_prefix: str
) -> dict[str, str]:
    """The ``ORDERSYNC_*`` variables aiming a subprocess at the session's servers.

    Only those variables: pass ``env={**os.environ, **ordersync_env}``. The state directory is this
    test's own, so the subprocess never finds a developer's ``dev up``.
    """
    state_dir = tmp_path / "ordersync-state"
    state_dir.mkdir(exist_ok=True)
    return {
        "ORDERSYNC_KAFKA__BOOTSTRAP": kafka_bootstrap,
        "ORDERSYNC_REDIS__URL": redis_url,
        "ORDERSYNC_REDIS__KEY_PREFIX": redis_key_prefix,
        "ORDERSYNC_STATE_DIR": str(state_dir),
    }


@pytest.fixture
def ordersync_settings(ordersync_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """``Settings()`` for in-process code under test, with ``ordersync_env`` in the environment.

    ``get_settings()`` returns the same values for the duration of the test.
    """
    for name, value in ordersync_env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    return get_settings()


@pytest.fixture(autouse=True)
def _fresh_settings_cache() -> Iterator[None]:
    # get_settings() is cached per process: one test's environment must not become the next one's.
    yield
    get_settings.cache_clear()


@pytest.fixture
async def redis_client(redis_url: str, redis_key_prefix: str) -> AsyncIterator[aioredis.Redis]:
    """An async Redis client (``decode_responses=True``, like the project's) on the session's Redis.

    At teardown it deletes the keys under ``redis_key_prefix`` and nothing else.
    """
    client = aioredis.Redis.from_url(
        redis_url,
        password=os.environ.get("ORDERSYNC_REDIS__PASSWORD"),
        username=os.environ.get("ORDERSYNC_REDIS__USERNAME"),
        decode_responses=True,
    )
    try:
        yield client
    finally:
        async for key in client.scan_iter(match=f"{redis_key_prefix}*", count=500):
            await client.delete(key)
        await client.aclose()


@pytest.fixture
async def filled(redis_client: aioredis.Redis, redis_key_prefix: str) -> Orders:
    """The read model filled with the factories' orders of every kind (a module may override it)."""
    return await fill_read_model(ReadModel(redis_client, redis_key_prefix, notify_dlq=False))
