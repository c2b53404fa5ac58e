"""``ordersync secrets``: the secret store (:mod:`ordersync.secret_store`) of channel credentials: put
one, list the names, delete one, re-encrypt them all after a key rotation.

A value is read from standard input when it is not a terminal (``ordersync secrets put NAME <
token.txt``; one trailing newline is dropped), else from a hidden prompt asked twice; never from an
argument, which would land in the shell's history. No command prints a value.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from pydantic import SecretStr

from ordersync.cli.common import ExitCode, fail
from ordersync.settings import get_settings

if TYPE_CHECKING:
    from ordersync.secret_store import SecretStore

T = TypeVar("T")

secrets_app = typer.Typer(
    help="The secret store of channel credentials: put, list, delete.", no_args_is_help=True
)

_Name = Annotated[
    str,
    typer.Argument(
        help="The secret's name: lower-case letters, digits and '._-', parts joined by '/' (e.g."
        " channels/acme-us/refresh-token); a channel names it as {store: NAME}.",
        show_default=False,
    ),
]


@secrets_app.callback()
def _group() -> None:
    """The secret store of channel credentials (S3, each value encrypted by a key-encryption key)."""


def _with_store(action: Callable[[SecretStore], Awaitable[T]]) -> T:
    """``action`` on the secret store the settings describe; each failure one line and its exit code."""
    from botocore.exceptions import BotoCoreError, ClientError

    from ordersync.errors import ConfigurationError
    from ordersync.secret_store import InvalidSecretName, SecretMissing, open_secret_store

    settings = get_settings()

    async def run() -> T:
        async with AsyncExitStack() as stack:
            return await action(await open_secret_store(settings, stack))

    try:
        return asyncio.run(run())
    except SecretMissing as exc:
        raise fail(ExitCode.NOT_FOUND, f"{exc} (see `ordersync secrets list`)") from None
    except (InvalidSecretName, ValueError) as exc:
        raise fail(ExitCode.USAGE, str(exc)) from None
    except ConfigurationError as exc:
        raise fail(ExitCode.CONFIG, str(exc)) from None
    except (BotoCoreError, ClientError) as exc:
        raise fail(
            ExitCode.AWS, f"the secret store (S3 bucket {settings.secrets.bucket}) did not answer: {exc}"
        ) from None


def _checked(name: str) -> str:
    from ordersync.secret_store import InvalidSecretName, valid_name

    try:
        return valid_name(name)
    except InvalidSecretName as exc:
        raise fail(ExitCode.USAGE, str(exc)) from None


def _value(name: str) -> SecretStr:
    """The value to store: standard input when it is not a terminal, else a hidden prompt (twice)."""
    if not sys.stdin.isatty():
        text = sys.stdin.read()
        text = text[:-1] if text.endswith("\n") else text
        text = text[:-1] if text.endswith("\r") else text
    else:
        text = str(typer.prompt(f"Value of secret {name}", hide_input=True, confirmation_prompt=True))
    if not text:
        raise fail(ExitCode.USAGE, f"secret {name!r}: the value is empty (nothing was stored)")
    return SecretStr(text)


@secrets_app.command("put")
def put_command(name: _Name) -> None:
    """Store a secret (replacing one of that name), its value from standard input or a hidden prompt."""
    name = _checked(name)
    value = _value(name)

    async def put(store: SecretStore) -> str:
        await store.put(name, value)
        return store.wrapped_by

    wrapped_by = _with_store(put)
    typer.echo(f"stored {name} (encrypted by {wrapped_by})")


@secrets_app.command("list")
def list_command() -> None:
    """The names of the secrets stored, one a line (never their values)."""

    async def names(store: SecretStore) -> list[str]:
        return await store.names()

    for name in _with_store(names):
        typer.echo(name)


@secrets_app.command("delete")
def delete_command(name: _Name) -> None:
    """Remove a secret (a channel still naming it can no longer be opened)."""
    name = _checked(name)

    async def delete(store: SecretStore) -> None:
        await store.delete(name)

    _with_store(delete)
    typer.echo(f"deleted {name}")


@secrets_app.command("rewrap")
def rewrap_command() -> None:
    """Encrypt every secret with the current key-encryption key (after a rotation: then the previous
    one can be removed from secrets.previous_keks)."""

    async def rewrap(store: SecretStore) -> int:
        return await store.rewrap()

    typer.echo(f"{_with_store(rewrap)} secrets re-encrypted")
