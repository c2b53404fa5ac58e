"""The ``ordersync`` command."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer

from ordersync.settings import get_settings

app = typer.Typer(
    help="ordersync: keeps an Amazon seller's back-office in sync with Amazon, on Kafka.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold secrets
)


def _mount() -> None:
    from ordersync.amazon.cli import amazon_app
    from ordersync.devinfra import dev_app
    from ordersync.kafka_admin import topics_app
    from ordersync.ratelimit.cli import quota_app
    from ordersync.simulator.cli import sim_app

    app.add_typer(dev_app, name="dev", help="Start, stop and show the embedded broker and Redis.")
    app.add_typer(topics_app, name="topics", help="Create and list the catalogue's Kafka topics.")
    app.add_typer(sim_app, name="sim", help="The Amazon SP-API simulator.")
    app.add_typer(amazon_app, name="amazon", help="Amazon SP-API: check a channel's access.")
    app.add_typer(quota_app, name="quota", help="Amazon quota per seller and operation.")

    from ordersync.envdoc import settings_app

    app.add_typer(settings_app, name="settings", help="Every setting as an environment variable; check them.")

    from ordersync.replaycli import dlq_app, replay_command

    app.command("replay")(replay_command)
    app.add_typer(dlq_app, name="dlq", help="Dead letters: list, show, send back to their source.")

    from ordersync.opscli import export_app, status, status_model_app

    app.command("status")(status)
    app.add_typer(export_app, name="export", help="Export orders as CSV (failed write-backs and imports).")
    app.add_typer(status_model_app, name="status-model", help="The status read model: rebuild it.")


_mount()

schemas_app = typer.Typer(help="The event schemas.", no_args_is_help=True)
listings_app = typer.Typer(
    help="Channel listings: Amazon seller SKU -> back-office stock code.", no_args_is_help=True
)
orders_app = typer.Typer(help="Act on orders (the actions are events on ops.commands).", no_args_is_help=True)
app.add_typer(orders_app, name="orders")
app.add_typer(schemas_app, name="schemas")
app.add_typer(listings_app, name="listings")


def _mount_order_views() -> None:
    from ordersync.opscli import orders_list, orders_show

    orders_app.command("list")(orders_list)
    orders_app.command("show")(orders_show)


_mount_order_views()


def _setup_logging() -> None:
    from ordersync.logs import configure_logging

    settings = get_settings()
    configure_logging(settings.log_level, json_lines=settings.log_json)


@app.command()
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
    from ordersync.stages import STAGES, run_stage

    if stage not in STAGES:
        typer.echo(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}", err=True)
        raise typer.Exit(2)
    _setup_logging()
    run_stage(stage, get_settings())


@app.command()
def backoffice(
    delay: Annotated[float, typer.Option(help="Seconds between an order's import and its invoice.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Seed for carriers and tracking numbers.")] = 7,
) -> None:
    """A back-office stand-in (demo, tests): invoices imported orders as an ERP would."""
    from ordersync.backoffice import run_backoffice

    _setup_logging()
    run_backoffice(get_settings(), delay_s=delay, seed=seed)


@schemas_app.command("export")
def schemas_export(
    directory: Annotated[Path, typer.Argument(help="Folder to write the JSON Schemas into.")],
) -> None:
    """Write one JSON Schema per event (in its envelope), for teams in other languages."""
    from ordersync.schemas.envelope import Envelope
    from ordersync.schemas.topics import CATALOGUE

    directory.mkdir(parents=True, exist_ok=True)
    written: set[str] = set()
    for spec in CATALOGUE:
        for event in spec.events:
            name = f"{event.event_type()}.v{event.schema_version}.json"
            if name in written:
                continue
            schema = Envelope[event].model_json_schema()  # type: ignore[valid-type]
            schema["title"] = event.event_type()
            schema["description"] = (event.__doc__ or "").strip()
            (directory / name).write_text(json.dumps(schema, indent=2) + "\n")
            written.add(name)
            typer.echo(f"{directory / name}")


@listings_app.command("import")
def listings_import(
    file: Annotated[
        Path,
        typer.Argument(
            help="CSV with the columns Client SKU Id, Channel Serial No., Channel SKU Id, EAN, ASIN,"
            " Merchant SKU (see ordersync.listings)."
        ),
    ],
    channel: Annotated[str, typer.Option(help="The channel the listings belong to.")],
) -> None:
    """Load a listings CSV; applied whole, or not at all when any row is wrong."""
    from ordersync.channels import load_channels
    from ordersync.errors import ConfigurationError
    from ordersync.listings import ListingsRejected, apply_listings, parse_listings_csv
    from ordersync.redis_client import redis_client
    from ordersync.store import Store

    settings = get_settings()
    try:
        load_channels(settings.channels_file).by_name(channel)
        listings = parse_listings_csv(file.read_text())
    except (ListingsRejected, ConfigurationError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from exc

    async def apply() -> None:
        redis = redis_client(settings.redis)
        try:
            await apply_listings(Store(redis, settings.redis.key_prefix), channel, listings.rows)
        finally:
            await redis.aclose()

    asyncio.run(apply())
    typer.echo(f"{len(listings.rows)} listings loaded for channel {channel}")


@orders_app.command("retry-download")
def orders_retry_download(
    order_ids: Annotated[list[str], typer.Argument(help="Amazon order ids (3-7-7 digits).")],
    channel: Annotated[str, typer.Option(help="The channel the orders belong to.")],
    operator: Annotated[str | None, typer.Option(help="Who asks, for the record.")] = None,
) -> None:
    """Download the orders again from scratch, through the pipeline (the dashboard's Retry Download)."""
    from ordersync.commands import CommandRejected, publish_command

    try:
        published = publish_command(get_settings(), "retry-download", channel, order_ids, operator=operator)
    except CommandRejected as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"retry-download of {len(order_ids)} order(s) on {channel} sent as event {published}")


def _order_command(command: str, order_ids: list[str], channel: str, operator: str | None) -> None:
    from typing import cast

    from ordersync.commands import CommandRejected, publish_command
    from ordersync.schemas.events import OperatorCommand

    try:
        published = publish_command(
            get_settings(), cast(OperatorCommand, command), channel, order_ids, operator=operator
        )
    except CommandRejected as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"{command} of {len(order_ids)} order(s) on {channel} sent as event {published}")


@orders_app.command("ignore")
def orders_ignore(
    order_ids: Annotated[list[str], typer.Argument(help="Amazon order ids (3-7-7 digits).")],
    channel: Annotated[str, typer.Option(help="The channel the orders belong to.")],
    operator: Annotated[str | None, typer.Option(help="Who asks, for the record.")] = None,
) -> None:
    """Don't import the orders, even when they change later, until un-ignored (the dashboard's Ignore)."""
    _order_command("ignore", order_ids, channel, operator)


@orders_app.command("unignore")
def orders_unignore(
    order_ids: Annotated[list[str], typer.Argument(help="Amazon order ids (3-7-7 digits).")],
    channel: Annotated[str, typer.Option(help="The channel the orders belong to.")],
    operator: Annotated[str | None, typer.Option(help="Who asks, for the record.")] = None,
) -> None:
    """Lift an Ignore; the orders are imported again from their downloaded data."""
    _order_command("unignore", order_ids, channel, operator)


@orders_app.command("retry-import")
def orders_retry_import(
    order_ids: Annotated[list[str], typer.Argument(help="Amazon order ids (3-7-7 digits).")],
    channel: Annotated[str, typer.Option(help="The channel the orders belong to.")],
    operator: Annotated[str | None, typer.Option(help="Who asks, for the record.")] = None,
) -> None:
    """Import the orders again from the downloaded data (after fixing listings); no Amazon call."""
    _order_command("retry-import", order_ids, channel, operator)


@orders_app.command("retry-writeback")
def orders_retry_writeback(
    order_ids: Annotated[list[str], typer.Argument(help="Amazon order ids (3-7-7 digits).")],
    channel: Annotated[str, typer.Option(help="The channel the orders belong to.")],
    operator: Annotated[str | None, typer.Option(help="Who asks, for the record.")] = None,
) -> None:
    """Send the orders' failed shipments to Amazon again (after fixing the cause), attempts reset;
    confirmed packages are never sent twice. Carried out by the shipment-write-back stage."""
    _order_command("retry-writeback", order_ids, channel, operator)


@app.command()
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
    from ordersync.demo import run_demo

    raise typer.Exit(run_demo(time_scale=time_scale, seed=seed, timeout_s=timeout, keep=keep))


@app.command()
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

    _setup_logging()
    settings = get_settings()
    serve(settings, host=host, port=port, log_level=settings.log_level.lower())


def main() -> None:
    app()


if __name__ == "__main__":
    main()
