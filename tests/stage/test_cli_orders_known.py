"""The order actions of ``ordersync orders`` refuse an order that ordersync does not know under the
channel's seller (exit 3, nothing sent), and ``ordersync status`` names the Redis it read and says when
nothing is stored there. A real Redis; Kafka is a closed port, so an action that got past its checks
ends with exit 5 (Kafka unreachable) instead of 3."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml
from typer.testing import CliRunner

from ordersync.cli import app
from ordersync.cli.common import ExitCode
from ordersync.settings import get_settings
from ordersync.state import keys

pytestmark = pytest.mark.stage

ACME, OTHER = "A2ACMESELLER", "A3OTHERSELLER"
KNOWN = "111-1111111-1111111"  # downloaded for ACME
OTHERS = "222-2222222-2222222"  # downloaded for OTHER only
NEVER = "333-3333333-3333333"  # nowhere


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def env(
    tmp_path: Path, redis_url: str, redis_key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[redis.Redis]:
    credentials = {name: {"value": "x"} for name in ("client_id", "client_secret", "refresh_token")}
    channels = [
        {
            "name": n,
            "seller_id": s,
            "region": "na",
            "marketplaces": ["ATVPDKIKX0DER"],
            "credentials": credentials,
        }
        for n, s in (("acme", ACME), ("other", OTHER))
    ]
    channels_file = tmp_path / "channels.yaml"
    channels_file.write_text(yaml.safe_dump({"channels": channels}))
    for name, value in {
        "ORDERSYNC_REDIS__URL": redis_url,
        "ORDERSYNC_REDIS__KEY_PREFIX": redis_key_prefix,
        "ORDERSYNC_KAFKA__BOOTSTRAP": f"127.0.0.1:{_closed_port()}",
        "ORDERSYNC_CHANNELS_FILE": str(channels_file),
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("ORDERSYNC_DEBUG", raising=False)
    get_settings.cache_clear()
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    # What the order-download stage leaves: the version it sent, per seller and order.
    client.set(keys.DOWNLOADED.key(redis_key_prefix, ACME, KNOWN), "2026-01-02T03:04:05+00:00")
    client.set(keys.DOWNLOADED.key(redis_key_prefix, OTHER, OTHERS), "2026-01-02T03:04:05+00:00")
    yield client
    for name in client.scan_iter(match=f"{redis_key_prefix}:*"):
        client.delete(name)
    client.close()
    get_settings.cache_clear()


@pytest.mark.parametrize("action", ["ignore", "unignore", "retry-import", "retry-writeback"])
def test_an_order_of_another_account_is_refused_with_exit_3(env: redis.Redis, action: str) -> None:
    result = CliRunner().invoke(app, ["orders", action, "--channel", "acme", OTHERS])
    assert result.exit_code == ExitCode.NOT_FOUND, result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: ")
    assert f"{OTHERS} not known to channel acme (seller {ACME})" in line
    assert "known on channel" not in line or "other" in line
    assert "nothing sent" in line


@pytest.mark.parametrize("action", ["ignore", "retry-writeback"])
def test_an_order_never_seen_is_refused_with_exit_3(env: redis.Redis, action: str) -> None:
    result = CliRunner().invoke(app, ["orders", action, "--channel", "acme", KNOWN, NEVER])
    assert result.exit_code == ExitCode.NOT_FOUND, result.output
    assert NEVER in result.stderr
    assert KNOWN not in result.stderr  # only the unknown one is named


def test_a_known_order_passes_the_checks_and_reaches_kafka(env: redis.Redis) -> None:
    result = CliRunner().invoke(app, ["orders", "ignore", "--channel", "acme", KNOWN])
    # Past every check: only the (closed) broker stops it.
    assert result.exit_code == ExitCode.KAFKA, result.output
    assert "ignore not sent" in result.stderr


def test_retry_download_checks_the_id_and_channel_only(env: redis.Redis) -> None:
    result = CliRunner().invoke(app, ["orders", "retry-download", "--channel", "acme", NEVER])
    assert result.exit_code == ExitCode.KAFKA, result.output  # not refused as unknown


def test_status_names_its_redis_and_says_when_nothing_is_stored(
    env: redis.Redis, redis_key_prefix: str
) -> None:
    filled = CliRunner().invoke(app, ["status"])
    assert filled.exit_code == 0, filled.output
    first = filled.stdout.splitlines()[0]
    assert first.startswith("Redis redis://")
    assert f"key prefix {redis_key_prefix!r}" in first
    assert "nothing under key prefix" not in filled.stdout
    assert "orders by status" in filled.stdout

    for name in env.scan_iter(match=f"{redis_key_prefix}:*"):
        env.delete(name)
    empty = CliRunner().invoke(app, ["status"])
    assert empty.exit_code == 0, empty.output
    assert empty.stdout.splitlines()[0] == filled.stdout.splitlines()[0]
    assert f"nothing under key prefix {redis_key_prefix!r} in this Redis" in empty.stdout
    assert "orders by status" not in empty.stdout
