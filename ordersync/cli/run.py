"""``ordersync run STAGE`` and ``ordersync dashboard``: the long-running production processes."""

from __future__ import annotations

from typing import Annotated

import typer

from ordersync.cli.common import setup_logging
from ordersync.settings import get_settings


def run(
    stage: Annotated[
        str,
        typer.Argument(
            help="order-download | item-fetch | import | invoice-issued | shipment-write-back | inventory"
            " | status-projection"
        ),
    ],
) -> None:
    """Run one stage's worker until stopped (SIGTERM or Ctrl-C)."""
    from ordersync.pipeline.stages import STAGES, run_stage

    if stage not in STAGES:
        from ordersync.cli.common import ExitCode, fail

        raise fail(ExitCode.NOT_FOUND, f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    setup_logging()
    from ordersync.errors import ConfigurationError

    try:
        run_stage(stage, get_settings())
    except ConfigurationError as exc:
        from ordersync.cli.common import ExitCode, fail

        raise fail(ExitCode.CONFIG, str(exc)) from exc


def dashboard(
    host: Annotated[
        str | None, typer.Option(help="Listen address (default ORDERSYNC_DASHBOARD__HOST, 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Listen port (default ORDERSYNC_DASHBOARD__PORT, 8080).")
    ] = None,
) -> None:
    """The operators' web page: status key, orders grid with actions, tasks, notifications, CSV export."""
    from ordersync.dashboard import serve

    setup_logging()
    settings = get_settings()
    serve(settings, host=host, port=port, log_level=settings.log_level.lower())
