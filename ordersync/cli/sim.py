"""``ordersync sim``: the SP-API simulator from the command line."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from ordersync.errors import ConfigurationError
from ordersync.simulator.runner import serve
from ordersync.simulator.scenario import load_scenario
from ordersync.simulator.state import SimulatorState

log = logging.getLogger("ordersync.simulator")

sim_app = typer.Typer(
    help="The SP-API simulator (Amazon's Orders, Feeds, Tokens, Notifications and LWA endpoints).",
    no_args_is_help=True,
)


@sim_app.callback()
def _group() -> None:
    """The SP-API simulator."""


@sim_app.command("serve")
def serve_command(  # noqa: PLR0917 - one parameter per CLI option
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8100,
    scenario: Annotated[
        str | None,
        typer.Option(help="Scenario YAML file, or a built-in one: default, demo. Default: default."),
    ] = None,
    time_scale: Annotated[
        float | None,
        typer.Option(min=0.0, help="Simulated seconds per real second (default: the scenario's)."),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (default: the scenario's).")] = None,
    sqs: Annotated[
        bool,
        typer.Option(
            "--sqs/--no-sqs",
            help="Send ORDER_CHANGE notifications to SQS through the settings' aws.* (endpoint_url: the"
            " local server of `ordersync dev up`); --no-sqs schedules them without sending.",
        ),
    ] = True,
) -> None:
    """Serve the simulator until interrupted."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        loaded = load_scenario(scenario, seed, time_scale=time_scale)
    except ConfigurationError as exc:
        from ordersync.cli.common import ExitCode, fail

        raise fail(ExitCode.CONFIG, str(exc)) from exc
    aws = None
    if sqs:
        from ordersync.settings import get_settings

        aws = get_settings().aws
    state = SimulatorState(loaded)
    clock = state.clock_json()
    log.info(
        "SP-API simulator on http://%s:%d (scenario %s, seed %d, time scale %g, %d orders placed, %d to come;"
        " control API under /_sim/)",
        host,
        port,
        loaded.name,
        loaded.seed,
        loaded.time_scale,
        clock["orders"],
        clock["orders_upcoming"],
    )
    serve(state, host, port, aws=aws)
