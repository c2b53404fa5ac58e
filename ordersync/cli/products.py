"""``ordersync products show``: a product's catalog data from Amazon (:mod:`ordersync.state.products`)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from typing import Annotated

import httpx
import typer

from ordersync.amazon.catalog import CatalogItem, Measured
from ordersync.channels import Channel
from ordersync.cli.common import ExitCode, channel_named, fail
from ordersync.errors import AmazonApiError, ConfigurationError, Permanent
from ordersync.settings import Settings, get_settings

products_app = typer.Typer(help="Product data from Amazon's catalog.", no_args_is_help=True)


@products_app.callback()
def _group() -> None:
    """Product data from Amazon's Catalog Items API."""


def _size(measured: Measured) -> str:
    sides = (measured.length_cm, measured.width_cm, measured.height_cm)
    size = " x ".join(str(side) for side in sides) + " cm" if None not in sides else "dimensions unknown"
    weight = f"{measured.weight_g} g" if measured.weight_g is not None else "weight unknown"
    return f"{size}, {weight}"


def describe(item: CatalogItem, cached: bool) -> list[str]:
    """The lines ``products show`` prints."""
    identifiers = ", ".join(f"{kind} {value}" for kind, value in sorted(item.identifiers.items()))
    return [
        f"{item.asin} in {item.marketplace_id}" + (" (cached)" if cached else ""),
        f"  title:   {item.title or '-'}",
        f"  brand:   {item.brand or '-'}",
        f"  image:   {item.image_url or '-'}",
        f"  item:    {_size(item.item)}",
        f"  package: {_size(item.package)}",
        f"  ids:     {identifiers or '-'}",
    ]


async def look_up(
    settings: Settings,
    channel: Channel,
    marketplace_id: str,
    *,
    asin: str | None,
    sku: str | None,
    refresh: bool,
) -> tuple[CatalogItem, bool]:
    """The product, through the Redis cache, with the shared rate limiter on the Amazon call."""
    from ordersync.amazon.client import SpApiClient
    from ordersync.cli.common import cli_redis
    from ordersync.ops.amazon_check import check_limiter
    from ordersync.state.products import ProductCatalog

    redis = cli_redis(settings)
    limiter, _ = check_limiter(settings, channel, local=False)
    try:
        async with httpx.AsyncClient(timeout=settings.amazon.request_timeout_s) as http:
            client = SpApiClient(channel=channel, amazon=settings.amazon, limiter=limiter, http=http)
            catalog = ProductCatalog(redis, settings.redis.key_prefix, settings.products.cache_ttl_s)
            return await catalog.product(client, marketplace_id, asin=asin, sku=sku, refresh=refresh)
    finally:
        await redis.aclose()


@products_app.command("show")
def show_command(  # noqa: PLR0917 - one parameter per CLI option
    channel: Annotated[str, typer.Option("--channel", help="The channel's name in the channels file.")],
    asin: Annotated[str | None, typer.Option("--asin", help="The product's ASIN.")] = None,
    sku: Annotated[str | None, typer.Option("--sku", help="The seller's SKU.")] = None,
    marketplace: Annotated[
        str | None, typer.Option("--marketplace", help="A marketplace id (default: the channel's first).")
    ] = None,
    refresh: Annotated[
        bool, typer.Option("--refresh", help="Ask Amazon again, whatever the cache holds.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the product as one JSON object.")] = False,
) -> None:
    """A product's title, image, item and package dimensions and weight, and identifiers."""
    if (asin is None) == (sku is None):
        typer.echo("error: give --asin or --sku (one of them)", err=True)
        raise typer.Exit(2)
    settings = get_settings()
    found = channel_named(settings, channel)
    marketplace_id = marketplace or found.marketplaces[0]
    if marketplace_id not in found.marketplaces:
        typer.echo(
            f"error: channel {channel} sells in {', '.join(found.marketplaces)}, not {marketplace_id}",
            err=True,
        )
        raise typer.Exit(2)
    try:
        item, cached = asyncio.run(
            look_up(settings, found, marketplace_id, asin=asin, sku=sku, refresh=refresh)
        )
    except AmazonApiError as exc:
        raise fail(ExitCode.AMAZON, f"Amazon SP-API: {exc}") from exc
    except ConfigurationError as exc:
        raise fail(ExitCode.CONFIG, str(exc)) from exc
    except Permanent as exc:
        raise fail(ExitCode.FAILED, str(exc)) from exc
    if as_json:
        typer.echo(json.dumps({**asdict(item), "cached": cached}, indent=2, default=str))
        return
    for line in describe(item, cached):
        typer.echo(line)
