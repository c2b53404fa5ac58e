"""How every ``ordersync`` command fails: one line on stderr, the same exit code for the same mistake
(:class:`ordersync.cli.common.ExitCode`), a traceback only with ``--debug``, no secret printed.

Redis and Kafka "stopped" are closed ports on 127.0.0.1: no server is started here."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner, Result

from ordersync.cli import app
from ordersync.cli.common import (
    EXIT_CODE_MEANINGS,
    ExitCode,
    exit_codes_epilog,
    failure_of,
    redact,
    redis_location,
)
from ordersync.cli.main import EXIT_CODES_EPILOG
from ordersync.dev.demo import cli_exports
from ordersync.settings import RedisSettings, get_settings

pytestmark = pytest.mark.unit

PASSWORD = "s3cret-redis-pw"
GOOD_ID = "123-1234567-1234567"
ORDER_ACTIONS = ("ignore", "unignore", "retry-import", "retry-writeback", "retry-download")


def _closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _channels(path: Path) -> Path:
    credentials = {name: {"value": "x"} for name in ("client_id", "client_secret", "refresh_token")}
    channels = [
        {
            "name": name,
            "seller_id": seller,
            "region": "na",
            "marketplaces": ["ATVPDKIKX0DER"],
            "credentials": credentials,
        }
        for name, seller in (("acme", "A2ACMESELLER"), ("other", "A3OTHERSELLER"))
    ]
    path.write_text(yaml.safe_dump({"channels": channels}))
    return path


@pytest.fixture
def down(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """Settings aimed at a Redis and a Kafka that are not there, with two channels."""
    env = {
        "ORDERSYNC_REDIS__URL": f"redis://:{PASSWORD}@127.0.0.1:{_closed_port()}/3",
        "ORDERSYNC_REDIS__KEY_PREFIX": "cli-test",
        "ORDERSYNC_KAFKA__BOOTSTRAP": f"127.0.0.1:{_closed_port()}",
        "ORDERSYNC_CHANNELS_FILE": str(_channels(tmp_path / "channels.yaml")),
    }
    monkeypatch.delenv("ORDERSYNC_DEBUG", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield env
    get_settings.cache_clear()


def _run(*args: str) -> tuple[Result, float]:
    started = time.monotonic()
    result = CliRunner().invoke(app, list(args))
    return result, time.monotonic() - started


def _one_error_line(result: Result) -> str:
    """The single ``error:`` line on stderr (and no traceback anywhere)."""
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines
    assert PASSWORD not in result.output
    return lines[0]


def test_the_codes_are_documented_alike_in_help_and_in_the_enum() -> None:
    assert exit_codes_epilog() == EXIT_CODES_EPILOG
    assert set(EXIT_CODE_MEANINGS) == set(ExitCode)
    assert len({int(code) for code in ExitCode}) == len(ExitCode)
    shown = CliRunner().invoke(app, ["--help"])
    assert shown.exit_code == 0
    flat = " ".join(shown.output.split())
    for code, meaning in EXIT_CODE_MEANINGS.items():
        assert f"{int(code)} {meaning}" in flat
    assert "--debug" in flat


def test_a_password_is_masked_wherever_a_redis_url_is_shown() -> None:
    settings = RedisSettings(url=f"redis://app:{PASSWORD}@cache.internal:6380/2")
    assert redis_location(settings) == "redis://app:***@cache.internal:6380/2"
    assert redact(f"cannot reach rediss://:{PASSWORD}@h:1/0 now") == "cannot reach rediss://:***@h:1/0 now"
    assert redis_location(RedisSettings(url="redis://127.0.0.1:6379")) == "redis://127.0.0.1:6379/0"


@pytest.mark.parametrize(
    "args",
    [
        ("status",),
        ("orders", "list"),
        ("orders", "show", GOOD_ID),
        ("orders", "ignore", "--channel", "acme", GOOD_ID),
        ("quota", "status"),
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_redis_down_is_one_line_naming_it_and_exit_4(down: dict[str, str], args: tuple[str, ...]) -> None:
    result, seconds = _run(*args)
    assert result.exit_code == ExitCode.REDIS, result.output
    line = _one_error_line(result)
    port = down["ORDERSYNC_REDIS__URL"].rsplit(":", 1)[1].split("/")[0]
    assert f"redis://:***@127.0.0.1:{port}/3" in line
    assert seconds < 5, seconds


@pytest.mark.parametrize(
    "args",
    [("orders", "retry-download", "--channel", "acme", GOOD_ID), ("topics", "list")],
    ids=lambda a: " ".join(a[:2]),
)
def test_kafka_down_is_one_line_naming_it_and_exit_5(down: dict[str, str], args: tuple[str, ...]) -> None:
    result, seconds = _run(*args)
    assert result.exit_code == ExitCode.KAFKA, result.output
    assert down["ORDERSYNC_KAFKA__BOOTSTRAP"] in _one_error_line(result)
    assert seconds < 15, seconds  # kafka-python alone waits 30 s to bootstrap


@pytest.mark.parametrize("action", ORDER_ACTIONS)
def test_a_malformed_order_id_is_exit_2_for_every_order_action(down: dict[str, str], action: str) -> None:
    result, _ = _run("orders", action, "--channel", "acme", GOOD_ID, "123-456")
    assert result.exit_code == ExitCode.USAGE, result.output
    line = _one_error_line(result)
    assert "amazon_order_ids" in line
    assert "'123-456'" in line
    assert "3-7-7 digits" in line


@pytest.mark.parametrize(
    "args",
    [
        ("orders", "ignore", "--channel", "acem", GOOD_ID),
        ("orders", "retry-download", "--channel", "acem", GOOD_ID),
        ("amazon", "check", "--channel", "acem"),
        ("products", "show", "--channel", "acem", "--asin", "B000000001"),
        ("notifications", "setup", "--channel", "acem"),
        ("run", "no-such-stage"),
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_an_unknown_name_is_exit_3_for_every_command(down: dict[str, str], args: tuple[str, ...]) -> None:
    result, _ = _run(*args)
    assert result.exit_code == ExitCode.NOT_FOUND, result.output
    line = _one_error_line(result)
    assert "acem" in line or "no-such-stage" in line


@pytest.mark.parametrize(
    "args",
    [
        ("orders", "ignore", "--channel", "acme", GOOD_ID),
        ("amazon", "check", "--channel", "acme"),
        ("quota", "status"),
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_a_bad_channels_file_is_exit_7_for_every_command(
    down: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...]
) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("channels:\n  - name: acme\n    region: mars\n")
    monkeypatch.setenv("ORDERSYNC_CHANNELS_FILE", str(broken))
    get_settings.cache_clear()
    result, _ = _run(*args)
    assert result.exit_code == ExitCode.CONFIG, result.output
    assert str(broken) in _one_error_line(result)


def test_an_invalid_setting_is_exit_7_naming_the_variable(
    down: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORDERSYNC_REDIS__SOCKET_TIMEOUT_S", "soon")
    get_settings.cache_clear()
    result, _ = _run("status")
    assert result.exit_code == ExitCode.CONFIG, result.output
    assert "ORDERSYNC_REDIS__SOCKET_TIMEOUT_S" in _one_error_line(result)


@pytest.mark.parametrize(
    "args",
    [("orders", "list", "--status", "bogus"), ("orders", "list", "--no-such-option")],
    ids=["value", "option"],
)
def test_a_usage_error_is_one_line_and_exit_2(down: dict[str, str], args: tuple[str, ...]) -> None:
    result, _ = _run(*args)
    assert result.exit_code == ExitCode.USAGE, result.output
    assert "orders list --help" in _one_error_line(result)


def test_the_traceback_only_with_debug(down: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    quiet, _ = _run("status")
    assert quiet.exit_code == ExitCode.REDIS
    assert not isinstance(quiet.exception, ConnectionError)

    loud, _ = _run("--debug", "status")
    assert loud.exit_code != 0
    assert type(loud.exception).__name__ == "ConnectionError"  # redis-py's, raised through

    monkeypatch.setenv("ORDERSYNC_DEBUG", "1")
    by_env, _ = _run("status")
    assert type(by_env.exception).__name__ == "ConnectionError"


def test_an_unexpected_error_is_one_line_and_exit_1() -> None:
    code, line = failure_of(ZeroDivisionError("division by zero"))
    assert code == ExitCode.FAILED
    assert line == "ZeroDivisionError: division by zero (ordersync --debug ... shows the traceback)"


def test_the_demo_prints_what_the_cli_needs_and_no_secret() -> None:
    env = {
        "ORDERSYNC_KAFKA__BOOTSTRAP": "127.0.0.1:39092",
        "ORDERSYNC_REDIS__URL": "redis://127.0.0.1:36379/0",
        "ORDERSYNC_CHANNELS_FILE": "/srv/ordersync demo/channels.yaml",
        "ORDERSYNC_AMAZON__ENDPOINT": "http://127.0.0.1:8100",
        "ORDERSYNC_AMAZON__LWA_ENDPOINT": "http://127.0.0.1:8100/auth/o2/token",
        "ORDERSYNC_PRIVACY__KEK": "kek-must-not-show",
        "ORDERSYNC_AWS__SECRET_ACCESS_KEY": "aws-must-not-show",
    }
    line = cli_exports(env)
    assert line.startswith("export ")
    assert "\n" not in line
    assert "ORDERSYNC_KAFKA__BOOTSTRAP=127.0.0.1:39092" in line
    assert "ORDERSYNC_REDIS__URL=redis://127.0.0.1:36379/0" in line
    assert "ORDERSYNC_REDIS__KEY_PREFIX=" in line
    assert "ORDERSYNC_CHANNELS_FILE='/srv/ordersync demo/channels.yaml'" in line  # pasteable
    assert "must-not-show" not in line
