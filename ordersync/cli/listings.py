"""``ordersync listings import``: load a channel's listings CSV (seller SKU -> back-office stock code)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from ordersync.settings import get_settings

listings_app = typer.Typer(
    help="Channel listings: Amazon seller SKU -> back-office stock code.", no_args_is_help=True
)


@listings_app.command("import")
def listings_import(
    file: Annotated[
        Path,
        typer.Argument(
            help="CSV with the columns Client SKU Id, Channel Serial No., Channel SKU Id, EAN, ASIN,"
            " Merchant SKU (see ordersync.state.listings)."
        ),
    ],
    channel: Annotated[str, typer.Option(help="The channel the listings belong to.")],
) -> None:
    """Load a listings CSV; applied whole, or not at all when any row is wrong. Each row is published on
    channel.listings first (Kafka is the record: a Redis that loses the listings gets them back from
    there), then written to Redis so orders find it at once."""
    from kafka.errors import KafkaError

    from ordersync.cli.common import CLI_KAFKA_TIMEOUT_MS, ExitCode, channel_named, cli_redis, fail
    from ordersync.ops.listings import load_listings
    from ordersync.state.listings import ListingsRejected, parse_listings_csv

    settings = get_settings()
    seller = channel_named(settings, channel).seller_id
    try:
        listings = parse_listings_csv(file.read_text())
    except ListingsRejected as exc:
        raise fail(ExitCode.USAGE, str(exc)) from exc
    except OSError as exc:
        raise fail(ExitCode.USAGE, f"{file}: {exc.strerror}") from exc

    async def load() -> None:
        redis = cli_redis(settings)
        try:
            await load_listings(
                settings,
                redis,
                channel,
                seller,
                listings.rows,
                wait_s=CLI_KAFKA_TIMEOUT_MS / 1000,
                client_id="ordersync-cli",
            )
        finally:
            await redis.aclose()

    try:
        asyncio.run(load())
    except KafkaError as exc:
        raise fail(
            ExitCode.KAFKA,
            f"Kafka at {settings.kafka.bootstrap} cannot be reached ({type(exc).__name__}: {exc});"
            " nothing loaded",
        ) from exc
    typer.echo(f"{len(listings.rows)} listings loaded for channel {channel}")
