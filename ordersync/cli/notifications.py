"""``ordersync notifications setup``: a channel's ORDER_CHANGE notifications sent to ordersync's queue
(:mod:`ordersync.ops.notifications`)."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from ordersync.channels import load_channels
from ordersync.cli.common import ExitCode, fail
from ordersync.errors import ConfigurationError, PipelineError
from ordersync.ops.amazon_check import check_limiter
from ordersync.ops.notifications import setup_notifications
from ordersync.settings import get_settings

notifications_app = typer.Typer(
    help="Amazon's ORDER_CHANGE notifications: subscribe channels.", no_args_is_help=True
)


@notifications_app.callback()
def _group() -> None:
    """Amazon's notifications."""


@notifications_app.command("setup")
def setup_command(
    channel: Annotated[
        list[str] | None,
        typer.Option("--channel", help="A channel's name (repeat it); none: every active one."),
    ] = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="Delete a subscription that sends ORDER_CHANGE elsewhere first.")
    ] = False,
) -> None:
    """Create what is missing: the queue, the destination, each channel's ORDER_CHANGE subscription."""
    settings = get_settings()
    try:
        channels = load_channels(settings.channels_file)
    except ConfigurationError as exc:
        raise fail(ExitCode.CONFIG, str(exc)) from exc
    try:
        chosen = [channels.by_name(name) for name in channel] if channel else list(channels.active())
    except ConfigurationError as exc:
        raise fail(ExitCode.NOT_FOUND, str(exc)) from exc
    ready = True
    for found in chosen:
        limiter, _ = check_limiter(settings, found, local=False)
        try:
            report = asyncio.run(setup_notifications(settings, found, limiter=limiter, replace=replace))
        except PipelineError as exc:
            typer.echo(f"channel {found.name}: NOT ready: {exc}", err=True)
            ready = False
            continue
        for line in report.lines():
            typer.echo(line)
        ready = ready and report.ok
    raise typer.Exit(0 if ready else 1)
