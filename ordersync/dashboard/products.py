"""Product data for the order detail, read from the Catalog Items cache only (never an Amazon call): the
title, image link and weights :class:`ordersync.state.products.ProductCatalog` keeps in Redis."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis

from ordersync.amazon.catalog import CatalogItem, item_from_json
from ordersync.state import keys


@dataclass(frozen=True)
class CachedProduct:
    """One order line's product as the cache has it."""

    order_item_id: str
    seller_sku: str | None
    asin: str
    title: str | None
    #: The image's address when it is an https link (shown as a link: the page loads nothing from
    #: another host).
    image_url: str | None
    item_weight_g: Decimal | None
    package_weight_g: Decimal | None


def _text(raw: Any) -> str | None:
    if raw is None:
        return None
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _https(url: str | None) -> str | None:
    return url if url and urlsplit(url).scheme == "https" else None


async def cached_products(
    redis: aioredis.Redis,
    prefix: str,
    marketplace_id: str | None,
    seller_id: str,
    lines: Iterable[Mapping[str, Any]],
) -> list[CachedProduct]:
    """The cached products of the order's lines (by ASIN, else by the seller's SKU), in line order; lines
    whose product the cache does not hold are left out. Two round trips at most."""
    if not marketplace_id:
        return []
    wanted = [line for line in lines if line.get("asin") or line.get("seller_sku")]
    if not wanted:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for line in wanted:
            if line.get("asin"):
                pipe.get(keys.PRODUCT.key(prefix, marketplace_id, str(line["asin"])))
            else:
                pipe.get(keys.PRODUCT_SKU.key(prefix, marketplace_id, seller_id, str(line["seller_sku"])))
        raws: list[str | None] = [_text(found) for found in await pipe.execute()]
    # Lines known by SKU only: the cache gave their ASIN; their product is one more read.
    by_sku = [i for i, line in enumerate(wanted) if not line.get("asin") and raws[i]]
    if by_sku:
        async with redis.pipeline(transaction=False) as pipe:
            for i in by_sku:
                pipe.get(keys.PRODUCT.key(prefix, marketplace_id, str(raws[i])))
            for i, found in zip(by_sku, await pipe.execute(), strict=True):
                raws[i] = _text(found)
    products: list[CachedProduct] = []
    for line, raw in zip(wanted, raws, strict=True):
        if not raw:
            continue
        try:
            item: CatalogItem = item_from_json(raw)
        except (ValueError, KeyError, TypeError):
            continue  # an entry this version cannot read: the page shows the line without it
        products.append(
            CachedProduct(
                order_item_id=str(line.get("order_item_id") or ""),
                seller_sku=line.get("seller_sku"),
                asin=item.asin,
                title=item.title or line.get("title"),
                image_url=_https(item.image_url),
                item_weight_g=item.item.weight_g,
                package_weight_g=item.package.weight_g,
            )
        )
    return products
