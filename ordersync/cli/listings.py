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
    """Load a listings CSV; applied whole, or not at all when any row is wrong."""
    from ordersync.channels import load_channels
    from ordersync.errors import ConfigurationError
    from ordersync.redis_client import redis_client
    from ordersync.state.listings import ListingsRejected, apply_listings, parse_listings_csv
    from ordersync.state.store import Store

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
