"""Channel listings: which back-office stock code an Amazon seller SKU is.

The CSV has the columns Increff's channel listings use::

    Client SKU Id,Channel Serial No.,Channel SKU Id,EAN,ASIN,Merchant SKU

``Client SKU Id`` is the back-office stock code; ``Merchant SKU`` (else ``Channel SKU Id``) is the
Amazon seller SKU it maps from. A file is applied whole or not at all: every row is checked first and
every bad row is reported with its line number.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

from ordersync.errors import Permanent

COLUMNS = ("Client SKU Id", "Channel Serial No.", "Channel SKU Id", "EAN", "ASIN", "Merchant SKU")


class ListingsRejected(Permanent):
    def __init__(self, problems: list[str]) -> None:
        super().__init__(f"{len(problems)} problem(s) in the listings file:\n" + "\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class ListingRow:
    stock_code: str
    seller_sku: str
    asin: str | None = None
    ean: str | None = None


@dataclass
class Listings:
    rows: list[ListingRow] = field(default_factory=list)

    def by_seller_sku(self) -> dict[str, str]:
        return {row.seller_sku: row.stock_code for row in self.rows}


def parse_listings_csv(text: str) -> Listings:
    """Parse and check a listings CSV; raises :class:`ListingsRejected` naming every bad row."""
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in reader.fieldnames or []]
    missing = [c for c in ("Client SKU Id",) if c not in header]
    if missing or not ({"Merchant SKU", "Channel SKU Id"} & set(header)):
        raise ListingsRejected(
            [f"header: expected the columns {', '.join(COLUMNS)}; got {', '.join(header) or 'nothing'}"]
        )
    problems: list[str] = []
    listings = Listings()
    seen: dict[str, int] = {}
    for line, raw in enumerate(reader, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
        stock_code = row.get("Client SKU Id", "")
        seller_sku = row.get("Merchant SKU") or row.get("Channel SKU Id", "")
        if not stock_code:
            problems.append(f"line {line}: Client SKU Id is empty")
        if not seller_sku:
            problems.append(f"line {line}: neither Merchant SKU nor Channel SKU Id is given")
        if seller_sku and seller_sku in seen:
            problems.append(
                f"line {line}: seller SKU {seller_sku} is already mapped on line {seen[seller_sku]}"
            )
        if stock_code and seller_sku:
            seen.setdefault(seller_sku, line)
            listings.rows.append(
                ListingRow(stock_code, seller_sku, row.get("ASIN") or None, row.get("EAN") or None)
            )
    if problems:
        raise ListingsRejected(problems)
    return listings


def listings_csv(rows: list[ListingRow]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([row.stock_code, "", row.seller_sku, row.ean or "", row.asin or "", row.seller_sku])
    return out.getvalue()
