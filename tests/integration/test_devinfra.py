"""The embedded broker and Redis, alone and as the detached pair of ``dev up`` / ``status`` / ``down``.

The CLI runs as a real subprocess, so these tests also prove that what ``dev up`` starts outlives it.
It is invoked as the user does, ``ordersync dev ...`` (``python -m ordersync.cli dev ...``).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from kafka.admin import KafkaAdminClient

from ordersync.dev.devinfra import (
    EmbeddedBroker,
    EmbeddedRedis,
    dev_down,
    port_is_open,
)
from ordersync.schemas.topics import CATALOGUE
from ordersync.settings import Settings, get_settings

pytestmark = pytest.mark.integration

DevCli = Callable[..., subprocess.CompletedProcess[str]]


def _pid_running(pid: int) -> bool:
    """Running and not a zombie (an unreaped zombie no longer serves anything)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def _pids_working_in(directory: Path) -> set[int]:
    """Live processes whose working directory is under ``directory`` (each server runs in its own)."""
    pids = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cwd = Path(os.readlink(proc / "cwd"))
        except OSError:
            continue
        if cwd.is_relative_to(directory) and _pid_running(int(proc.name)):
            pids.add(int(proc.name))
    return pids


def _host_port(address: str) -> tuple[str, int]:
    """host and port of a service's address: host:port, redis://host:port/0 or http://host:port."""
    bare = address.split("://", 1)[-1].partition("/")[0]
    host, _, port = bare.rpartition(":")
    return host, int(port)


def _kafka_topics(bootstrap: str) -> list[str]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        topics: list[str] = admin.list_topics()
    finally:
        admin.close()
    return topics


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def dev_cli(state_dir: Path) -> Iterator[DevCli]:
    """Runs ``dev <args>`` in a subprocess; whatever it started is stopped after the test, pass or fail."""
    env = {**os.environ, "ORDERSYNC_STATE_DIR": str(state_dir)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ordersync.cli", "dev", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    yield run
    dev_down(state_dir, grace_s=2.0)


@pytest.fixture
def dev_pair(dev_cli: DevCli, state_dir: Path) -> tuple[str, dict[str, Any]]:
    """``dev up`` has run: its output and the state file it wrote."""
    result = dev_cli("up")
    assert result.returncode == 0, result.stderr
    return result.stdout, json.loads((state_dir / "dev.json").read_text())


# -- the servers on their own ----------------------------------------------------------------------


def test_embedded_redis_answers_and_stops(tmp_path: Path) -> None:
    with EmbeddedRedis(run_dir=tmp_path) as server:
        assert server.url.startswith("redis://127.0.0.1:")
        client = redis.Redis.from_url(server.url, decode_responses=True)
        assert client.ping()
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}
        client.close()
        pid = server.pid
        assert pid is not None
    assert not port_is_open(server.host, server.port)
    assert not _pid_running(pid)


def test_embedded_broker_answers_and_stops(tmp_path: Path) -> None:
    with EmbeddedBroker(run_dir=tmp_path) as broker:
        host, port = _host_port(broker.bootstrap)
        assert host == "127.0.0.1"
        assert isinstance(_kafka_topics(broker.bootstrap), list)
        pid = broker.pid
        assert pid is not None
        # Its own process group, so stop() reaches everything it runs and Ctrl-C elsewhere does not.
        assert os.getpgid(pid) == pid
        # Started from an empty directory: nothing there for Tansu to read as a `.env`.
        assert list(broker.work_dir.iterdir()) == []
    assert not port_is_open(host, port)
    assert not _pid_running(pid)


def test_stop_survives_a_server_that_died(tmp_path: Path) -> None:
    server = EmbeddedRedis(run_dir=tmp_path).start()
    assert server.pid is not None
    os.killpg(server.pid, signal.SIGKILL)
    server.stop()
    assert not server.alive


# -- dev up / status / down ------------------------------------------------------------------------


def test_up_prints_and_records_every_address(dev_pair: tuple[str, dict[str, Any]]) -> None:
    output, state = dev_pair
    bootstrap, redis_url, aws = state["kafka_bootstrap"], state["redis_url"], state["aws_endpoint_url"]
    assert bootstrap.startswith("127.0.0.1:")
    assert redis_url.startswith("redis://127.0.0.1:")
    assert aws.startswith("http://127.0.0.1:")
    assert bootstrap in output
    assert redis_url in output
    assert aws in output
    assert set(state["services"]) == {"broker", "redis", "aws"}
    # A key-encryption key of its own for buyers' personal data, in a file only its user reads.
    assert len(base64.b64decode(state["privacy_kek"])) == 32
    for service in state["services"].values():
        assert isinstance(service["pid"], int)
        assert Path(service["log"]).is_file()
    assert state["started_at"]


def test_the_pair_outlives_the_cli_and_answers(dev_pair: tuple[str, dict[str, Any]]) -> None:
    _, state = dev_pair
    assert isinstance(_kafka_topics(state["kafka_bootstrap"]), list)
    client = redis.Redis.from_url(state["redis_url"])
    try:
        assert client.ping()
    finally:
        client.close()


def test_settings_find_the_pair_through_the_state_file(
    dev_pair: tuple[str, dict[str, Any]], state_dir: Path
) -> None:
    _, state = dev_pair
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in ("ORDERSYNC_KAFKA__BOOTSTRAP", "ORDERSYNC_REDIS__URL")
    }
    env["ORDERSYNC_STATE_DIR"] = str(state_dir)
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from ordersync.settings import Settings; s = Settings(); print(s.kafka.bootstrap, s.redis.url)",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.split() == [state["kafka_bootstrap"], state["redis_url"]]


def test_after_dev_up_topics_create_shows_the_whole_catalogue_to_any_client(
    dev_pair: tuple[str, dict[str, Any]], state_dir: Path
) -> None:
    """The issue's "done when": `dev up`, then `ordersync topics create`, and a plain Kafka client
    listing the broker's topics sees every catalogue topic."""
    _, state = dev_pair
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERSYNC_")}
    env["ORDERSYNC_STATE_DIR"] = str(state_dir)
    created = subprocess.run(
        [sys.executable, "-m", "ordersync.cli", "topics", "create"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert created.returncode == 0, created.stderr
    listed = set(_kafka_topics(state["kafka_bootstrap"]))
    assert {spec.name for spec in CATALOGUE} <= listed
    again = subprocess.run(
        [sys.executable, "-m", "ordersync.cli", "topics", "create"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert again.returncode == 0, again.stderr
    assert "already there" in again.stdout


def test_status_says_alive(dev_pair: tuple[str, dict[str, Any]], dev_cli: DevCli) -> None:
    _, state = dev_pair
    result = dev_cli("status")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    for name, service in state["services"].items():
        (line,) = [line for line in lines if line.startswith(name)]
        assert service["address"] in line
        assert str(service["pid"]) in line
        assert " alive " in line


def test_up_twice_keeps_the_running_pair(
    dev_pair: tuple[str, dict[str, Any]], dev_cli: DevCli, state_dir: Path
) -> None:
    _, state = dev_pair
    again = dev_cli("up")
    assert again.returncode == 0, again.stderr
    assert "already running" in again.stdout
    assert state["kafka_bootstrap"] in again.stdout
    assert json.loads((state_dir / "dev.json").read_text()) == state
    recorded = {service["pid"] for service in state["services"].values()}
    assert _pids_working_in(state_dir) == recorded  # one pair, not two


def test_down_stops_them_all(dev_pair: tuple[str, dict[str, Any]], dev_cli: DevCli, state_dir: Path) -> None:
    _, state = dev_pair
    result = dev_cli("down")
    assert result.returncode == 0, result.stderr
    for name, service in state["services"].items():
        assert f"stopped {name}" in result.stdout
        assert not _pid_running(service["pid"])
        assert not port_is_open(*_host_port(service["address"]))
    assert not (state_dir / "dev.json").exists()
    status = dev_cli("status")
    assert status.returncode == 1
    assert "not running" in status.stdout


def test_up_replaces_a_half_dead_pair(
    dev_pair: tuple[str, dict[str, Any]], dev_cli: DevCli, state_dir: Path
) -> None:
    _, state = dev_pair
    old_broker, old_redis = state["services"]["broker"], state["services"]["redis"]
    os.killpg(old_redis["pid"], signal.SIGKILL)

    status = dev_cli("status")
    assert status.returncode == 1
    assert any(line.startswith("redis") and " dead " in line for line in status.stdout.splitlines())

    again = dev_cli("up")
    assert again.returncode == 0, again.stderr
    assert "already running" not in again.stdout
    new_state = json.loads((state_dir / "dev.json").read_text())
    assert new_state["services"]["broker"]["pid"] != old_broker["pid"]
    assert not _pid_running(old_broker["pid"])
    assert isinstance(_kafka_topics(new_state["kafka_bootstrap"]), list)


# -- the shared fixtures of tests/conftest.py ------------------------------------------------------


async def test_redis_client_fixture_works_under_its_own_prefix(
    redis_client: aioredis.Redis, redis_key_prefix: str
) -> None:
    key = f"{redis_key_prefix}:probe"
    await redis_client.set(key, "value")
    assert await redis_client.get(key) == "value"


def test_ordersync_env_aims_a_subprocess_at_the_session_servers(
    ordersync_env: dict[str, str], kafka_bootstrap: str, redis_url: str, redis_key_prefix: str
) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from ordersync.settings import Settings; s = Settings();"
            " print(s.kafka.bootstrap, s.redis.url, s.redis.key_prefix)",
        ],
        env={**os.environ, **ordersync_env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.split() == [kafka_bootstrap, redis_url, redis_key_prefix]


def test_ordersync_settings_fixture(ordersync_settings: Settings, ordersync_env: dict[str, str]) -> None:
    assert ordersync_settings.kafka.bootstrap == ordersync_env["ORDERSYNC_KAFKA__BOOTSTRAP"]
    assert ordersync_settings.redis.key_prefix == ordersync_env["ORDERSYNC_REDIS__KEY_PREFIX"]
    assert get_settings() == ordersync_settings
