"""``ordersync alerts``: the alerts firing now, and acknowledging or snoozing one
(:mod:`ordersync.ops.alerts`)."""

from __future__ import annotations

import asyncio
import getpass
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

from ordersync.cli.common import ExitCode, cli_redis, fail
from ordersync.ops.alerts import AlertBook, AlertRecord
from ordersync.settings import get_settings

alerts_app = typer.Typer(help="Alerts: list those firing, acknowledge or snooze one.", no_args_is_help=True)

_DURATION = re.compile(r"^(\d+)([mhd])$")
_UNIT_S = {"m": 60, "h": 3600, "d": 86400}


@alerts_app.callback()
def _group() -> None:
    """Alerts raised by the status-projection stage's rules (API status, feeds, dead letters, late
    shipments, silent stages, expiring credentials)."""


def duration(text: str) -> timedelta:
    """``30m``, ``4h``, ``2d``: a snooze's length (1 minute to 30 days)."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise fail(ExitCode.USAGE, f"--for {text!r}: give minutes, hours or days, e.g. 30m, 4h, 2d")
    length = timedelta(seconds=int(match.group(1)) * _UNIT_S[match.group(2)])
    if not timedelta(minutes=1) <= length <= timedelta(days=30):
        raise fail(ExitCode.USAGE, f"--for {text}: a snooze lasts 1 minute to 30 days")
    return length


def line(record: AlertRecord) -> str:
    """One alert as ``alerts list`` prints it."""
    alert = record.alert
    state: str = record.state
    if state == "snoozed" and record.snoozed_until is not None:
        state = f"snoozed until {record.snoozed_until:%Y-%m-%d %H:%M} UTC"
    if record.acted_by and record.state != "firing":
        state += f" by {record.acted_by}"
    since = f"{record.first_at:%Y-%m-%d %H:%M} UTC"
    return (
        f"{alert.severity.upper():7} {alert.fingerprint}  ({state}, since {since})\n        {alert.summary}"
    )


@alerts_app.command("list")
def alerts_list(
    history: Annotated[
        bool, typer.Option("--history", help="Resolved alerts instead, newest first.")
    ] = False,
) -> None:
    """The alerts firing (acknowledged and snoozed included), errors first."""
    settings = get_settings()

    async def read() -> list[AlertRecord]:
        redis = cli_redis(settings)
        try:
            book = AlertBook(redis, settings.redis.key_prefix)
            return await (book.history() if history else book.active())
        finally:
            await redis.aclose()

    records = asyncio.run(read())
    if not records:
        typer.echo("no resolved alert kept" if history else "no alert firing")
        return
    for record in records:
        typer.echo(line(record))


def _act(fingerprint: str, act: str, snooze_for: timedelta | None, who: str | None) -> None:
    settings = get_settings()
    name = who or getpass.getuser()
    now = datetime.now(UTC)

    async def run() -> AlertRecord:
        redis = cli_redis(settings)
        try:
            book = AlertBook(redis, settings.redis.key_prefix)
            if snooze_for is not None:
                return await book.snooze(fingerprint, now + snooze_for, name, now)
            return await book.acknowledge(fingerprint, name, now)
        finally:
            await redis.aclose()

    try:
        record = asyncio.run(run())
    except KeyError:
        raise fail(
            ExitCode.NOT_FOUND, f"no alert {fingerprint!r} is firing (see `ordersync alerts list`)"
        ) from None
    typer.echo(f"{act}: {line(record)}")


@alerts_app.command("ack")
def alerts_ack(
    fingerprint: Annotated[str, typer.Argument(help="The alert, as `alerts list` names it.")],
    who: Annotated[str | None, typer.Option("--by", help="Who acknowledges (default: the user).")] = None,
) -> None:
    """Acknowledge an alert: not delivered again while it fires."""
    _act(fingerprint, "acknowledged", None, who)


@alerts_app.command("snooze")
def alerts_snooze(
    fingerprint: Annotated[str, typer.Argument(help="The alert, as `alerts list` names it.")],
    length: Annotated[str, typer.Option("--for", help="How long: 30m, 4h, 2d.")] = "1h",
    who: Annotated[str | None, typer.Option("--by", help="Who snoozes (default: the user).")] = None,
) -> None:
    """Snooze an alert: not delivered until the snooze ends, then again if it still fires."""
    _act(fingerprint, "snoozed", duration(length), who)
