"""``ordersync quota ...``: the rate limiter's buckets as Redis holds them now.

Mounted as ``quota`` by :mod:`ordersync.cli.main`.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ordersync.channels import Channel, load_channels
from ordersync.cli.common import ExitCode, fail, redis_described
from ordersync.errors import ConfigurationError, QuotaUnavailable
from ordersync.ratelimit.limiter import BucketStatus, build_rate_limiter
from ordersync.settings import Settings, get_settings

quota_app = typer.Typer(
    help="The shared Amazon quota: buckets per seller and operation.", no_args_is_help=True
)


@quota_app.callback()
def _quota() -> None:
    """The shared Amazon quota: buckets per seller and operation."""


def _channels(settings: Settings) -> tuple[list[Channel], str | None]:
    """The channels (for their rate-limit overrides); none, with a note, when the file does not exist."""
    if not settings.channels_file.exists():
        return [], f"no channels file at {settings.channels_file}: showing the models' default plans"
    return list(load_channels(settings.channels_file).channels), None


async def _statuses(settings: Settings, channels: list[Channel], seller: str | None) -> list[BucketStatus]:
    limiter = build_rate_limiter(settings, channels)
    try:
        return await limiter.status(seller)
    finally:
        await limiter.aclose()


def _waiters_text(status: BucketStatus) -> str:
    if not status.waiters:
        return "0"
    lanes = ", ".join(f"{lane} {count}" for lane, count in status.waiters_by_lane)
    return f"{status.waiters} ({lanes})" if lanes else str(status.waiters)


def status_table(statuses: list[BucketStatus], *, title: str) -> Table:
    """One row per seller and operation (``createFeed:JSON_LISTINGS_FEED`` is a feed type's own bucket)."""
    table = Table(title=title)
    table.add_column("seller")
    table.add_column("operation")
    table.add_column("rate /s", justify="right")
    table.add_column("burst (usable)", justify="right")
    table.add_column("tokens left", justify="right")
    table.add_column("waiters", justify="right")
    table.add_column("reserved", justify="right")
    table.add_column("Amazon reported /s", justify="right")
    for status in statuses:
        table.add_row(
            status.seller_id,
            status.operation,
            f"{status.rate:g}",
            f"{status.burst} ({status.effective_burst})",
            f"{status.tokens_left:.2f}",
            _waiters_text(status),
            str(status.reserved_outstanding) if status.reserved_outstanding else "",
            f"{status.adopted_rate:g}" if status.adopted_rate is not None else "",
        )
    return table


@quota_app.command("status")
def status(
    seller: Annotated[str | None, typer.Option(help="Only this seller id.")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per bucket instead of a table.")
    ] = False,
) -> None:
    """Tokens left, waiters per lane, reservations and adopted rates of every bucket in use.

    Exits 4 when Redis cannot be reached (the limiter then grants nothing), 7 on a bad channels file.
    """
    settings = get_settings()
    console = Console()
    try:
        channels, note = _channels(settings)
        statuses = asyncio.run(_statuses(settings, channels, seller))
    except ConfigurationError as exc:
        raise fail(ExitCode.CONFIG, str(exc)) from exc
    except QuotaUnavailable as exc:
        where = redis_described(settings.redis)
        raise fail(ExitCode.REDIS, f"Redis at {where} cannot be reached: nothing is granted ({exc})") from exc
    if as_json:
        for item in statuses:
            typer.echo(json.dumps(asdict(item)))
        return
    if note:
        console.print(f"[dim]{note}[/dim]")
    if not statuses:
        where = redis_described(settings.redis)
        console.print(f"no buckets in use{f' for seller {seller}' if seller else ''} (Redis {where})")
        return
    title = f"Amazon quota in Redis {redis_described(settings.redis)}"
    console.print(status_table(statuses, title=title))
