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
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    from ordersync.cli.common import ExitCode, channel_named, cli_producer_config, cli_redis, fail
    from ordersync.schemas.codec import encode
    from ordersync.schemas.envelope import Envelope
    from ordersync.schemas.topics import CHANNEL_LISTINGS, sku_key
    from ordersync.state.listings import ListingsRejected, apply_listings, event_of, parse_listings_csv
    from ordersync.state.store import Store

    settings = get_settings()
    seller = channel_named(settings, channel).seller_id
    try:
        listings = parse_listings_csv(file.read_text())
    except ListingsRejected as exc:
        raise fail(ExitCode.USAGE, str(exc)) from exc
    except OSError as exc:
        raise fail(ExitCode.USAGE, f"{file}: {exc.strerror}") from exc

    try:
        producer = KafkaProducer(acks="all", **cli_producer_config(settings))
        try:
            for row in listings.rows:
                event = Envelope.wrap(
                    event_of(channel, row), seller_id=seller, correlation_id=f"listings:{channel}"
                )
                key = sku_key(seller, row.seller_sku).encode()
                producer.send(CHANNEL_LISTINGS.name, key=key, value=encode(event))
            producer.flush(timeout=60)
        finally:
            producer.close()
    except KafkaError as exc:
        raise fail(
            ExitCode.KAFKA,
            f"Kafka at {settings.kafka.bootstrap} cannot be reached ({type(exc).__name__}: {exc});"
            " nothing loaded",
        ) from exc

    async def apply() -> None:
        redis = cli_redis(settings)
        try:
            await apply_listings(Store(redis, settings.redis.key_prefix), channel, listings.rows)
        finally:
            await redis.aclose()

    asyncio.run(apply())
    typer.echo(f"{len(listings.rows)} listings loaded for channel {channel}")
