"""``ordersync amazon check``: one call proving a channel's access (:mod:`ordersync.ops.amazon_check`)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from typing import Annotated, Any

import typer

from ordersync.cli.common import ExitCode, channel_named
from ordersync.ops.amazon_check import check_limiter, run_check
from ordersync.settings import get_settings

amazon_app = typer.Typer(help="Amazon SP-API: check a channel's access.", no_args_is_help=True)


@amazon_app.callback()
def _group() -> None:
    """Amazon SP-API commands."""


@amazon_app.command("check")
def check_command(
    channel: Annotated[str, typer.Option("--channel", help="The channel's name in the channels file.")],
    local_quota: Annotated[
        bool,
        typer.Option(
            "--local-quota/--shared-quota",
            help="Take the call's token from a limiter of this process instead of the shared Redis one.",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as one JSON object.")] = False,
) -> None:
    """One cheap call with the channel's credentials: auth, region, marketplaces, rate limits (exit 6 when
    Amazon refuses or does not answer)."""
    settings = get_settings()
    found = channel_named(settings, channel)
    limiter, plans = check_limiter(settings, found, local_quota)
    report = asyncio.run(run_check(settings, found, limiter=limiter, plans=plans))
    if as_json:
        typer.echo(json.dumps(asdict(report), indent=2, default=_json_default))
    else:
        for line in report.lines():
            typer.echo(line)
    # A refused or unanswered call is Amazon's failure (the report above says which).
    raise typer.Exit(int(ExitCode.OK if report.ok else ExitCode.AMAZON))


def _json_default(value: Any) -> str:
    return str(value)
