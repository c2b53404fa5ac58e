"""``ordersync privacy``: the keys of buyers' personal data (:mod:`ordersync.privacy`): a new local
key-encryption key, the keys kept, re-wrapping after a rotation, destroying the keys whose retention
ended, and erasing one buyer's data on request."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Annotated, TypeVar

import typer

from ordersync.cli.common import ExitCode, cli_redis, fail, run_with_key_store
from ordersync.clock import SYSTEM_CLOCK
from ordersync.privacy import RETENTION_DAYS, new_kek, retention_of, shred_after
from ordersync.privacy.keyring import KeyRing, open_key_ring
from ordersync.settings import Settings, get_settings
from ordersync.state.readmodel import ReadModel
from ordersync.state.store import Store

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

    return run_with_key_store(run())


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


@dataclass(frozen=True)
class Erased:
    subject: str
    key_id: str
    shredded: bool


async def erase_order(
    ring: KeyRing,
    store: Store,
    model: ReadModel,
    order_id: str,
    *,
    channel: str | None,
    key_id: str | None,
    by: str,
    note: str,
    shred_day: bool,
) -> Erased:
    """Erase one order's personal data (see :func:`erase_command`); :class:`ValueError` says why not."""
    found = await model.find(order_id, channel)
    sellers = sorted({detail.row.seller_id for detail in found})
    if len(sellers) != 1:
        where = f" on channel {channel}" if channel else ""
        raise ValueError(
            f"order {order_id}{where} is not in the status model"
            if not sellers
            else f"order {order_id} belongs to several sellers ({', '.join(sellers)}): give --channel"
        )
    seller_id = sellers[0]
    if key_id is None:
        sales = await store.sales_order(seller_id, order_id)
        if sales is None or sales.personal is None:
            raise ValueError(
                f"no stored sales order of {order_id} holds personal data; give --key-id (the seller's"
                " keys: ordersync privacy keys)"
            )
        key_id = sales.personal.key_id
    subject = f"{seller_id}:{order_id}"
    await ring.erase(key_id, subject, by=by, note=note)
    if shred_day:
        await ring.shred(key_id)
    return Erased(subject, key_id, shred_day)


@privacy_app.command("erase")
def erase_command(  # noqa: PLR0917 - one parameter per CLI option
    order_id: Annotated[str, typer.Argument(help="The Amazon order whose buyer asked to be erased.")],
    by: Annotated[str, typer.Option(help="Who erases it (recorded with the erasure).")],
    note: Annotated[str, typer.Option(help="The request it answers (a ticket number; no personal data).")],
    channel: Annotated[str | None, typer.Option(help="The channel (when several sellers have it).")] = None,
    key_id: Annotated[
        str | None, typer.Option(help="The data key that sealed it, when no sales order is stored.")
    ] = None,
    shred_day: Annotated[
        bool,
        typer.Option(
            "--shred-day",
            help="Also destroy the whole day's key now: every copy is undecryptable at once, and every"
            " other order of that seller delivered that day loses its personal data too.",
        ),
    ] = False,
) -> None:
    """Erase one buyer's personal data before its day's key goes (a deletion request). No stage opens
    or keeps it again (running stages learn it within a minute), Amazon's copy is dropped if the order
    is downloaded again, and its sealed copies are undecryptable once the day's key is destroyed (at the
    end of its retention, or now with --shred-day)."""
    settings = get_settings()

    async def run(ring: KeyRing) -> Erased:
        redis = cli_redis(settings)
        try:
            prefix = settings.redis.key_prefix
            return await erase_order(
                ring,
                Store(redis, prefix),
                ReadModel(redis, prefix, notify_dlq=False),
                order_id.strip(),
                channel=channel,
                key_id=key_id,
                by=by,
                note=note,
                shred_day=shred_day,
            )
        finally:
            await redis.aclose()

    try:
        erased = _with_ring(settings, run)
    except ValueError as exc:
        unknown = "is not in the status model" in str(exc)
        raise fail(ExitCode.NOT_FOUND if unknown else ExitCode.USAGE, str(exc)) from exc
    typer.echo(f"erased the personal data of {erased.subject} (key {erased.key_id})")
    if erased.shredded:
        typer.echo(f"destroyed {erased.key_id}: that day's personal data of the seller is gone now")
    else:
        typer.echo(
            f"its sealed copies become undecryptable when {erased.key_id} is destroyed, from"
            f" {shred_after(erased.key_id).isoformat()}"
        )
