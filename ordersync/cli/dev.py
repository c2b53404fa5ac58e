"""``ordersync dev``, ``ordersync demo`` and ``ordersync backoffice``: development only."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ordersync.cli.common import setup_logging
from ordersync.dev.devinfra import (
    DevAlreadyRunning,
    EmbeddedServerError,
    ServiceRecord,
    ServiceStatus,
    dev_down,
    dev_status,
    dev_up,
    state_file_path,
)
from ordersync.settings import get_settings

dev_app = typer.Typer(
    help="Run an embedded Kafka-compatible broker (Tansu) and Redis on 127.0.0.1 for development.",
    no_args_is_help=True,
)


_STATE_DIR_OPTION = typer.Option(
    None,
    "--state-dir",
    help=(
        "Directory of the state file (default: $ORDERSYNC_STATE_DIR or the XDG state directory). "
        "The settings read addresses from the default place only."
    ),
    file_okay=False,
)


def _echo_services(services: list[ServiceStatus] | tuple[ServiceRecord, ...]) -> None:
    for service in services:
        alive = service.alive
        typer.echo(
            f"{service.name:<7} {service.address:<28} pid {service.pid:<8} "
            f"{'alive' if alive else 'dead':<6} log {service.log}"
        )


@dev_app.command("up")
def up_command(state_dir: Path | None = _STATE_DIR_OPTION) -> None:
    """Start the broker, Redis and a local AWS server (SQS, S3) in the background and record their
    addresses."""
    try:
        state = dev_up(state_dir)
    except DevAlreadyRunning as running:
        typer.echo(f"already running (started {running.state.started_at}); nothing started")
        state = running.state
    except EmbeddedServerError as exc:
        typer.echo(f"dev up failed: {exc}", err=True)
        raise typer.Exit(1) from exc
    _echo_services(state.services)
    typer.echo(f"kafka bootstrap  {state.kafka_bootstrap}")
    typer.echo(f"redis url        {state.redis_url}")
    if state.aws_endpoint_url:
        typer.echo(f"aws endpoint     {state.aws_endpoint_url}")
    typer.echo(f"state file       {state.state_file}")


@dev_app.command("down")
def down_command(state_dir: Path | None = _STATE_DIR_OPTION) -> None:
    """Stop what `dev up` started and remove the state file."""
    statuses = dev_down(state_dir)
    if not statuses:
        typer.echo("nothing recorded; nothing to stop")
        return
    for status in statuses:
        verb = "stopped" if status.alive else "already gone:"
        typer.echo(f"{verb} {status.name} {status.address} (pid {status.pid})")


@dev_app.command("status")
def status_command(state_dir: Path | None = _STATE_DIR_OPTION) -> None:
    """Show each service, its address, pid and whether it is alive (exit 1 unless all are)."""
    statuses = dev_status(state_dir)
    if not statuses:
        typer.echo(f"not running (no state in {state_file_path(state_dir)})")
        raise typer.Exit(1)
    _echo_services(statuses)
    if not all(status.alive for status in statuses):
        raise typer.Exit(1)


def backoffice(
    delay: Annotated[float, typer.Option(help="Seconds between an order's import and its invoice.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Seed for carriers and tracking numbers.")] = 7,
    simulator: Annotated[
        str | None,
        typer.Option(help="The simulator's URL: Ship+ and Easy Ship orders ship through it, as a seller's"),
    ] = None,
    label_share: Annotated[
        float, typer.Option(min=0, max=1, help="Share of other orders shipped with labels bought on Amazon.")
    ] = 0.0,
) -> None:
    """A back-office stand-in (demo, tests): invoices imported orders as an ERP would."""
    from ordersync.dev.backoffice import run_backoffice

    setup_logging()
    run_backoffice(get_settings(), delay_s=delay, seed=seed, simulator_url=simulator, label_share=label_share)


def demo(
    time_scale: Annotated[
        float, typer.Option(help="How much faster than real time the simulated Amazon runs.")
    ] = 20.0,
    seed: Annotated[int, typer.Option(help="Seed of the simulated orders.")] = 42,
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 240.0,
    keep: Annotated[
        bool, typer.Option(help="Keep everything running after the summary (to look around the dashboard).")
    ] = False,
) -> None:
    """Everything on one machine: embedded broker and Redis, the simulator, every stage, a back-office,
    and the dashboard."""
    from ordersync.dev.demo import run_demo

    raise typer.Exit(run_demo(time_scale=time_scale, seed=seed, timeout_s=timeout, keep=keep))
