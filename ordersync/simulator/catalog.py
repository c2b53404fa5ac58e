"""Amazon's Catalog Items API 2022-04-01 in the simulator (catalogItems_2022-04-01.json): getCatalogItem
and searchCatalogItems over the scenario's products.

Amazon's catalogue is shared by sellers: an ASIN is in a marketplace when a seller of the scenario
sells it there. What the scenario does not declare (brand, images, item and package dimensions and
weights, product type) is derived from the ASIN, so the same ASIN always looks the same. Amazon's
keyword search is a relevance search; the simulator matches an item when every keyword is a word
of its title (case-insensitive). The error codes are the simulator's (the model lists none):
InvalidInput (400) and NotFound (404).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ordersync.simulator.scenario import MARKETPLACES, Product
from ordersync.simulator.validation import SpApiError, csv_values, invalid_input

#: includedData values the model allows (default: summaries).
INCLUDED_DATA = frozenset(
    {
        "attributes",
        "classifications",
        "dimensions",
        "identifiers",
        "images",
        "productTypes",
        "relationships",
        "salesRanks",
        "summaries",
        "vendorDetails",
    }
)
IDENTIFIER_TYPES = frozenset({"ASIN", "EAN", "GTIN", "ISBN", "JAN", "MINSAN", "SKU", "UPC"})
#: searchCatalogItems: at most 20 identifiers or keywords, one marketplace, pageSize 1 to 20 (default 10).
MAX_TERMS = 20
DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 20
IMAGE_BASE_URL = "https://m.media-amazon.com/images/I/"
BRAND = "SimBrand"
PRODUCT_TYPE = "HOME"
_ASIN = re.compile(r"^[A-Z0-9]{10}$")


@dataclass(frozen=True)
class CatalogEntry:
    """A product as Amazon's catalogue knows it: who sells it where, under which SKUs."""

    product: Product
    marketplaces: frozenset[str]
    #: (seller id, SKU) of each seller's listing of the ASIN.
    skus: frozenset[tuple[str, str]]


def build_catalog(
    catalogues: Mapping[str, tuple[Product, ...]], marketplaces: Mapping[str, Iterable[str]]
) -> dict[str, CatalogEntry]:
    """ASIN -> entry, from each seller's catalogue and marketplaces (the first seller's product wins)."""
    entries: dict[str, CatalogEntry] = {}
    for seller_id, products in catalogues.items():
        markets = frozenset(marketplaces[seller_id])
        for product in products:
            known = entries.get(product.asin)
            if known is None:
                entries[product.asin] = CatalogEntry(product, markets, frozenset({(seller_id, product.sku)}))
            else:
                entries[product.asin] = CatalogEntry(
                    known.product, known.marketplaces | markets, known.skus | {(seller_id, product.sku)}
                )
    return entries


def _digest(asin: str, salt: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{asin}/{salt}".encode()).digest()[:4], "big")


def _measure(asin: str, salt: str, low: float, high: float) -> float:
    return round(low + (_digest(asin, salt) % 10_000) / 10_000 * (high - low), 2)


def _dimensions(asin: str, padding_cm: float, extra_kg: float) -> dict[str, Any]:
    sides = sorted((_measure(asin, name, 5.0, 40.0) for name in ("l", "w", "h")), reverse=True)
    return {
        "length": {"unit": "centimeters", "value": round(sides[0] + padding_cm, 2)},
        "width": {"unit": "centimeters", "value": round(sides[1] + padding_cm, 2)},
        "height": {"unit": "centimeters", "value": round(sides[2] + padding_cm, 2)},
        "weight": {"unit": "kilograms", "value": round(_measure(asin, "kg", 0.1, 5.0) + extra_kg, 2)},
    }


class Catalog:
    """The Catalog Items API over the scenario's products."""

    def __init__(self, entries: dict[str, CatalogEntry]) -> None:
        self.entries = entries

    # --- parameters ------------------------------------------------------------------------------------

    @staticmethod
    def _marketplaces(query: Mapping[str, str], limit: int | None) -> list[str]:
        marketplaces = csv_values(query.get("marketplaceIds"))
        if not marketplaces:
            raise invalid_input("marketplaceIds is required.")
        if limit is not None and len(marketplaces) > limit:
            raise invalid_input(f"marketplaceIds takes at most {limit} marketplace id(s).")
        unknown = [m for m in marketplaces if m not in MARKETPLACES]
        if unknown:
            raise invalid_input(f"Invalid marketplaceIds: {', '.join(unknown)}.")
        return list(marketplaces)

    @staticmethod
    def _included(query: Mapping[str, str]) -> list[str]:
        included = list(csv_values(query.get("includedData"))) or ["summaries"]
        unknown = sorted(set(included) - INCLUDED_DATA)
        if unknown:
            raise invalid_input(f"Invalid includedData: {', '.join(unknown)}.")
        return included

    # --- operations ------------------------------------------------------------------------------------

    def get_catalog_item(self, asin: str, query: Mapping[str, str]) -> dict[str, Any]:
        marketplaces = self._marketplaces(query, None)
        included = self._included(query)
        entry = self.entries.get(asin) if _ASIN.match(asin) else None
        present = [m for m in marketplaces if entry is not None and m in entry.marketplaces]
        if entry is None or not present:
            raise SpApiError(
                404,
                "NotFound",
                "The resource specified does not exist.",
                f"Requested item '{asin[:40]}' not found in marketplace(s) {', '.join(marketplaces)}.",
            )
        return self.item(entry, present, included)

    def search_catalog_items(self, query: Mapping[str, str], seller_id: str) -> dict[str, Any]:
        marketplaces = self._marketplaces(query, 1)
        included = self._included(query)
        identifiers, keywords = (
            list(csv_values(query.get("identifiers"))),
            list(csv_values(query.get("keywords"))),
        )
        if identifiers and keywords:
            raise invalid_input("identifiers and keywords cannot be used in the same request.")
        if not identifiers and not keywords:
            raise invalid_input("Give identifiers (with identifiersType) or keywords.")
        if len(identifiers) > MAX_TERMS or len(keywords) > MAX_TERMS:
            raise invalid_input(f"identifiers and keywords take at most {MAX_TERMS} values.")
        page_size = _page_size(query.get("pageSize"))
        marketplace_id = marketplaces[0]
        candidates = [e for e in self.entries.values() if marketplace_id in e.marketplaces]
        if identifiers:
            matches = self._by_identifiers(candidates, identifiers, query, seller_id)
        else:
            words = [k.lower() for k in keywords]
            matches = [e for e in candidates if all(w in e.product.title.lower().split() for w in words)]
        matches.sort(key=lambda e: e.product.asin)
        offset = _offset(query.get("pageToken"), len(matches))
        page = matches[offset : offset + page_size]
        body: dict[str, Any] = {
            "numberOfResults": len(matches),
            "items": [self.item(e, [marketplace_id], included) for e in page],
        }
        pagination: dict[str, str] = {}
        if offset + page_size < len(matches):
            pagination["nextToken"] = _token(offset + page_size)
        if offset > 0:
            pagination["previousToken"] = _token(max(0, offset - page_size))
        if pagination:
            body["pagination"] = pagination
        body["refinements"] = {
            "brands": [{"numberOfResults": len(matches), "brandName": BRAND}] if matches else [],
            "classifications": [],
        }
        return body

    @staticmethod
    def _by_identifiers(
        candidates: list[CatalogEntry], identifiers: list[str], query: Mapping[str, str], seller_id: str
    ) -> list[CatalogEntry]:
        kind = query.get("identifiersType")
        if not kind:
            raise invalid_input("identifiersType is required when identifiers is in the request.")
        if kind not in IDENTIFIER_TYPES:
            raise invalid_input(f"Invalid identifiersType: {kind}.")
        wanted = set(identifiers)
        if kind == "SKU":
            owner = query.get("sellerId")
            if not owner:
                raise invalid_input("sellerId is required when identifiersType is SKU.")
            if owner != seller_id:
                raise SpApiError(403, "Unauthorized", "Access to requested resource is denied.", "")
            return [e for e in candidates if any(s == owner and sku in wanted for s, sku in e.skus)]
        if kind == "ASIN":
            return [e for e in candidates if e.product.asin in wanted]
        if kind in ("EAN", "GTIN"):  # every EAN is a GTIN; the simulator's products have EANs only
            return [e for e in candidates if e.product.ean in wanted or e.product.ean.zfill(14) in wanted]
        return []

    # --- rendering ---------------------------------------------------------------------------------------

    def item(self, entry: CatalogEntry, marketplaces: list[str], included: list[str]) -> dict[str, Any]:
        product, asin = entry.product, entry.product.asin
        body: dict[str, Any] = {"asin": asin}
        for name in included:
            if name == "summaries":
                body[name] = [
                    {
                        "marketplaceId": m,
                        "brand": BRAND,
                        "itemClassification": "BASE_PRODUCT",
                        "itemName": product.title,
                        "manufacturer": BRAND,
                        "packageQuantity": 1,
                    }
                    for m in marketplaces
                ]
            elif name == "images":
                body[name] = [{"marketplaceId": m, "images": _images(asin)} for m in marketplaces]
            elif name == "dimensions":
                body[name] = [
                    {
                        "marketplaceId": m,
                        "item": _dimensions(asin, 0.0, 0.0),
                        "package": _dimensions(asin, 2.0, 0.15),
                    }
                    for m in marketplaces
                ]
            elif name == "identifiers":
                body[name] = [
                    {
                        "marketplaceId": m,
                        "identifiers": [{"identifierType": "EAN", "identifier": product.ean}],
                    }
                    for m in marketplaces
                ]
            elif name == "attributes":
                body[name] = _attributes(product, marketplaces)
            elif name == "productTypes":
                body[name] = [{"marketplaceId": m, "productType": PRODUCT_TYPE} for m in marketplaces]
            else:  # classifications, relationships, salesRanks, vendorDetails: none in the simulator
                body[name] = []
        return body


def _images(asin: str) -> list[dict[str, Any]]:
    return [
        {
            "variant": variant,
            "link": f"{IMAGE_BASE_URL}{asin}.{variant}._SL1500_.jpg",
            "height": 1500,
            "width": 1500,
        }
        for variant in ("MAIN", "PT01")
    ]


def _attributes(product: Product, marketplaces: list[str]) -> dict[str, Any]:
    def each(value: Any, **extra: Any) -> list[dict[str, Any]]:
        return [{"value": value, "marketplace_id": m, **extra} for m in marketplaces]

    currency = {m: MARKETPLACES[m].currency for m in marketplaces}
    return {
        "item_name": each(product.title, language_tag="en_US"),
        "brand": each(BRAND, language_tag="en_US"),
        "externally_assigned_product_identifier": [
            {"type": "ean", "value": product.ean, "marketplace_id": m} for m in marketplaces
        ],
        "list_price": [
            {"value": float(Decimal(product.price)), "currency": currency[m], "marketplace_id": m}
            for m in marketplaces
        ],
    }


def _page_size(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_PAGE_SIZE
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE_SIZE:
        raise invalid_input(f"pageSize must be an integer from 1 to {MAX_PAGE_SIZE}.")
    return int(raw)


def _token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"catalog:{offset}".encode()).decode()


def _offset(raw: str | None, total: int) -> int:
    if raw is None:
        return 0
    try:
        kind, _, number = base64.urlsafe_b64decode(raw.encode()).decode().partition(":")
        offset = int(number)
    except ValueError:
        offset, kind = -1, ""
    if kind != "catalog" or not 0 <= offset <= total:
        raise invalid_input("Invalid pageToken.")
    return offset
