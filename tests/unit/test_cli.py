"""The ``ordersync`` command's root: every group is listed, mounted lazily, and each one loads."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import typer
from botocore.exceptions import EndpointConnectionError
from typer.testing import CliRunner

from ordersync.cli import app
from ordersync.cli.common import run_with_key_store
from ordersync.cli.main import COMMANDS, load_command
from ordersync.errors import ConfigurationError

pytestmark = pytest.mark.unit

#: Modules the root's ``--help`` must not import: the Kafka clients, faust, the simulator, Redis, httpx.
HEAVY = ("kafka", "aiokafka", "faust", "ordersync.simulator", "redis", "httpx", "ordersync.pipeline")


def test_root_help_lists_every_command_without_importing_them() -> None:
    probe = (
        "import sys, json\n"
        "from ordersync.cli import main\n"
        "sys.argv = ['ordersync', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        f"heavy = {HEAVY!r}\n"
        "loaded = sorted(m for m in sys.modules if any(m == h or m.startswith(h + '.') for h in heavy))\n"
        "print(json.dumps(loaded))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    *help_lines, loaded = done.stdout.strip().splitlines()
    assert json.loads(loaded) == []
    help_text = "\n".join(help_lines)
    for name in COMMANDS:
        assert f"  {name} " in help_text, name


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_loads_and_answers_its_help(name: str) -> None:
    command = load_command(name)
    assert command.name == name
    result = CliRunner().invoke(app, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


@pytest.mark.parametrize(
    "path",
    [
        "orders list",
        "orders show",
        "orders ignore",
        "orders retry-writeback",
        "dlq list",
        "dlq replay",
        "status-model rebuild",
        "export failed",
        "topics create",
        "settings env",
        "dev up",
        "quota status",
        "amazon check",
        "sim serve",
        "schemas export",
        "listings import",
    ],
)
def test_each_subcommand_the_docs_name_answers(path: str) -> None:
    result = CliRunner().invoke(app, [*path.split(), "--help"])
    assert result.exit_code == 0, result.output
    assert f"{path.rsplit(maxsplit=1)[-1]} [OPTIONS]" in result.output


def test_an_unknown_command_is_refused() -> None:
    result = CliRunner().invoke(app, ["no-such-command"])
    assert result.exit_code == 2
    assert "No such command" in result.output


def test_the_key_store_fails_with_a_clear_message_and_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    async def fails(exc: Exception) -> None:
        raise exc

    for raised, code, said in (
        (ConfigurationError("privacy: no key-encryption key"), 7, "no key-encryption key"),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), 8, "key store did not answer"),
    ):
        with pytest.raises(typer.Exit) as stopped:
            run_with_key_store(fails(raised))
        assert stopped.value.exit_code == code
        assert said in capsys.readouterr().err
