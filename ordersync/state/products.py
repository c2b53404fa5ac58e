"""Product data from Amazon's Catalog Items API, kept in Redis for ``products.cache_ttl_s``.

A product is looked up by ASIN, or by the seller's SKU (Amazon's searchCatalogItems with
``identifiersType=SKU``, whose ASIN is then kept too). A lookup found in Redis costs no Amazon call; one
that is not, or ``refresh``, spends the seller's Catalog Items quota (getCatalogItem or
searchCatalogItems, 2 a second, burst 2) through the client's rate limiter.
"""

from __future__ import annotations

from typing import Protocol

import redis.asyncio as aioredis

from ordersync.amazon.catalog import CatalogItem, item_from_json, item_to_json
from ordersync.errors import Permanent
from ordersync.state import keys


class CatalogSource(Protocol):
    """What the lookup needs of the SP-API client (:class:`~ordersync.amazon.client.SpApiClient`)."""

    @property
    def seller_id(self) -> str: ...

    async def get_catalog_item(self, marketplace_id: str, asin: str) -> CatalogItem: ...

    async def search_catalog_items(
        self, marketplace_id: str, identifiers: list[str], identifiers_type: str = "SKU"
    ) -> tuple[CatalogItem, ...]: ...


class ProductCatalog:
    """Products by marketplace and ASIN or seller SKU, read through a Redis cache."""

    def __init__(self, redis: aioredis.Redis, prefix: str, ttl_s: float) -> None:
        self.redis = redis
        self.prefix = prefix
        self.ttl_s = int(ttl_s)

    def _product_key(self, marketplace_id: str, asin: str) -> str:
        return keys.PRODUCT.key(self.prefix, marketplace_id, asin)

    def _sku_key(self, marketplace_id: str, seller_id: str, sku: str) -> str:
        return keys.PRODUCT_SKU.key(self.prefix, marketplace_id, seller_id, sku)

    async def product(
        self,
        source: CatalogSource,
        marketplace_id: str,
        *,
        asin: str | None = None,
        sku: str | None = None,
        refresh: bool = False,
    ) -> tuple[CatalogItem, bool]:
        """The product of ``asin`` or of the seller's ``sku`` in ``marketplace_id``, and whether it came from
        the cache. A SKU Amazon does not know raises :class:`Permanent`; an unknown ASIN raises Amazon's 404
        (:class:`~ordersync.errors.AmazonRejected`)."""
        if (asin is None) == (sku is None):
            raise ValueError("give an ASIN or a seller SKU, not both")
        if not refresh:
            cached = await self._cached(source.seller_id, marketplace_id, asin=asin, sku=sku)
            if cached is not None:
                return cached, True
        if asin is not None:
            item = await source.get_catalog_item(marketplace_id, asin)
        else:
            assert sku is not None
            found = await source.search_catalog_items(marketplace_id, [sku], "SKU")
            if not found:
                raise Permanent(
                    f"seller SKU {sku!r} is not in Amazon's catalog for marketplace {marketplace_id}"
                )
            item = found[0]
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(self._product_key(marketplace_id, item.asin), item_to_json(item), ex=self.ttl_s)
            if sku is not None:
                pipe.set(self._sku_key(marketplace_id, source.seller_id, sku), item.asin, ex=self.ttl_s)
            await pipe.execute()
        return item, False

    async def _cached(
        self, seller_id: str, marketplace_id: str, *, asin: str | None, sku: str | None
    ) -> CatalogItem | None:
        if asin is None:
            assert sku is not None
            known = await self.redis.get(self._sku_key(marketplace_id, seller_id, sku))
            if known is None:
                return None
            asin = known.decode() if isinstance(known, bytes) else str(known)
        raw = await self.redis.get(self._product_key(marketplace_id, asin))
        if raw is None:
            return None
        return item_from_json(raw.decode() if isinstance(raw, bytes) else str(raw))
