"""Catalog Items API 2022-04-01 (``catalogItems_2022-04-01.json``): a product's title, image, identifiers,
and its item and package dimensions and weights, per marketplace.

Parsing Amazon's ``Item`` into what ordersync shows and proposes (a packer's default package size), as a
pure function; :class:`SpApiClient` calls getCatalogItem and searchCatalogItems (2 requests a second,
burst 2) under the rate limiter.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

#: searchCatalogItems takes at most this many identifiers (the model's maxItems).
MAX_IDENTIFIERS = 20
#: The data ordersync asks Amazon for (getCatalogItem's includedData).
INCLUDED_DATA = ("summaries", "images", "dimensions", "identifiers")

#: Conversions to centimetres and grams from the units Amazon answers in.
_TO_CM = {
    "centimeters": Decimal(1),
    "cm": Decimal(1),
    "millimeters": Decimal("0.1"),
    "inches": Decimal("2.54"),
    "meters": Decimal(100),
    "feet": Decimal("30.48"),
}
_TO_G = {
    "grams": Decimal(1),
    "g": Decimal(1),
    "kilograms": Decimal(1000),
    "kg": Decimal(1000),
    "pounds": Decimal("453.59237"),
    "ounces": Decimal("28.349523125"),
}


@dataclass(frozen=True)
class Measured:
    """Dimensions in centimetres and weight in grams (None where Amazon gives none or an unknown unit)."""

    length_cm: Decimal | None = None
    width_cm: Decimal | None = None
    height_cm: Decimal | None = None
    weight_g: Decimal | None = None

    @property
    def complete(self) -> bool:
        return None not in (self.length_cm, self.width_cm, self.height_cm, self.weight_g)


@dataclass(frozen=True)
class CatalogItem:
    """One product in one marketplace, as the Catalog Items API describes it."""

    asin: str
    marketplace_id: str
    title: str | None = None
    brand: str | None = None
    image_url: str | None = None
    item: Measured = Measured()
    package: Measured = Measured()
    identifiers: dict[str, str] = field(default_factory=dict)


def _converted(raw: Any, table: dict[str, Decimal]) -> Decimal | None:
    if not isinstance(raw, dict):
        return None
    unit = str(raw.get("unit") or "").lower()
    factor = table.get(unit)
    try:
        value = Decimal(str(raw.get("value")))
    except (InvalidOperation, ValueError):
        return None
    if factor is None or not value.is_finite():
        return None
    return (value * factor).quantize(Decimal("0.01"))


def _measured(raw: Any) -> Measured:
    if not isinstance(raw, dict):
        return Measured()
    return Measured(
        length_cm=_converted(raw.get("length"), _TO_CM),
        width_cm=_converted(raw.get("width"), _TO_CM),
        height_cm=_converted(raw.get("height"), _TO_CM),
        weight_g=_converted(raw.get("weight"), _TO_G),
    )


def _for_marketplace(entries: Any, marketplace_id: str) -> dict[str, Any]:
    for entry in entries or ():
        if isinstance(entry, dict) and entry.get("marketplaceId") == marketplace_id:
            return entry
    return {}


def _main_image(images: Any) -> str | None:
    """The MAIN image, else the largest one."""
    candidates = [i for i in images or () if isinstance(i, dict) and isinstance(i.get("link"), str)]
    if not candidates:
        return None
    main = [i for i in candidates if i.get("variant") == "MAIN"] or candidates
    best = max(main, key=lambda image: int(image.get("height") or 0) * int(image.get("width") or 0))
    return str(best["link"])


def parse_item(raw: Any, marketplace_id: str) -> CatalogItem:
    """Amazon's ``Item`` for ``marketplace_id``."""
    if not isinstance(raw, dict) or not isinstance(raw.get("asin"), str):
        raise ValueError(f"not a catalog item: {raw!r}")
    summary = _for_marketplace(raw.get("summaries"), marketplace_id)
    dimensions = _for_marketplace(raw.get("dimensions"), marketplace_id)
    images = _for_marketplace(raw.get("images"), marketplace_id)
    identifiers = _for_marketplace(raw.get("identifiers"), marketplace_id)
    return CatalogItem(
        asin=raw["asin"],
        marketplace_id=marketplace_id,
        title=summary.get("itemName"),
        brand=summary.get("brand"),
        image_url=_main_image(images.get("images")),
        item=_measured(dimensions.get("item")),
        package=_measured(dimensions.get("package")),
        identifiers={
            str(i["identifierType"]): str(i["identifier"])
            for i in identifiers.get("identifiers") or ()
            if isinstance(i, dict) and i.get("identifierType") and i.get("identifier")
        },
    )


def item_to_json(item: CatalogItem) -> str:
    """``item`` as JSON (numbers as strings, exact), for a cache."""
    return json.dumps(asdict(item), default=str, sort_keys=True)


def _decimal(raw: Any) -> Decimal | None:
    return None if raw is None else Decimal(str(raw))


def item_from_json(text: str) -> CatalogItem:
    """What :func:`item_to_json` wrote."""
    raw = json.loads(text)
    sizes = {
        part: Measured(**{name: _decimal(value) for name, value in raw[part].items()})
        for part in ("item", "package")
    }
    return CatalogItem(
        asin=raw["asin"],
        marketplace_id=raw["marketplace_id"],
        title=raw.get("title"),
        brand=raw.get("brand"),
        image_url=raw.get("image_url"),
        item=sizes["item"],
        package=sizes["package"],
        identifiers=dict(raw.get("identifiers") or {}),
    )
