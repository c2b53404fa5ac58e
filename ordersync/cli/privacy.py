"""``ordersync privacy``: the keys of buyers' personal data (:mod:`ordersync.privacy`): a new local
key-encryption key, the keys kept, re-wrapping after a rotation, destroying the keys whose retention
ended."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Annotated, TypeVar

import typer
from botocore.exceptions import BotoCoreError, ClientError

from ordersync.clock import SYSTEM_CLOCK
from ordersync.errors import ConfigurationError
from ordersync.privacy import RETENTION_DAYS, new_kek, retention_of, shred_after
from ordersync.privacy.keyring import KeyRing, open_key_ring
from ordersync.settings import Settings, get_settings

T = TypeVar("T")
privacy_app = typer.Typer(help="Buyers' personal data: its keys.", no_args_is_help=True)


@privacy_app.callback()
def _group() -> None:
    """Buyers' personal data."""


def _with_ring(settings: Settings, action: Callable[[KeyRing], Awaitable[T]]) -> T:
    """``action`` on the key ring the settings describe; a clear error and exit code if it fails."""

    async def run() -> T:
        async with AsyncExitStack() as stack:
            return await action(await open_key_ring(settings.privacy, settings.aws, SYSTEM_CLOCK, stack))

    try:
        return asyncio.run(run())
    except ConfigurationError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    except (BotoCoreError, ClientError) as exc:
        typer.echo(f"error: the key store did not answer: {exc}", err=True)
        raise typer.Exit(1) from exc


async def _keys(ring: KeyRing) -> list[tuple[str, str | None]]:
    """Each key's name, with the recorded reason for a retention beyond 30 days."""
    found = []
    for key_id in sorted(await ring.store.key_ids()):
        reason = None
        if retention_of(key_id) > RETENTION_DAYS:
            stored = await ring.store.get(key_id)
            reason = stored.retention_reason if stored else None
        found.append((key_id, reason))
    return found


@privacy_app.command("new-kek")
def new_kek_command() -> None:
    """Print a new local key-encryption key (for ORDERSYNC_PRIVACY__KEK; keep it in your secret store)."""
    typer.echo(new_kek())


@privacy_app.command("keys")
def keys_command() -> None:
    """The data keys kept (seller and day of delivery), when each is destroyed and, for a retention
    beyond 30 days, the law recorded for it."""
    for key_id, reason in _with_ring(get_settings(), _keys):
        line = f"{key_id}\tdestroyed from {shred_after(key_id).isoformat()}"
        if retention_of(key_id) > RETENTION_DAYS:
            line += f"\tkept {retention_of(key_id)} days: {reason or '(no reason recorded)'}"
        typer.echo(line)


@privacy_app.command("rewrap")
def rewrap_command() -> None:
    """Wrap every data key with the current key-encryption key (after a rotation: then the previous
    one can be removed from privacy.previous_keks)."""
    typer.echo(f"{_with_ring(get_settings(), KeyRing.rewrap)} keys re-wrapped")


@privacy_app.command("shred")
def shred_command(
    quiet: Annotated[bool, typer.Option("--quiet", help="Print nothing when no key is due.")] = False,
) -> None:
    """Destroy every data key whose retention (30 days, or a longer one by law) after its day ended."""
    destroyed = _with_ring(get_settings(), KeyRing.shred_due)
    for key_id in destroyed:
        typer.echo(f"destroyed {key_id}")
    if not destroyed and not quiet:
        typer.echo("no key was due")
