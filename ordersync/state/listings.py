"""Channel listings: which back-office stock code an Amazon seller SKU is.

The CSV has the columns of the channel-listings export of Increff (an order and inventory management
product), so a back-office that already keeps its listings in that layout loads them unchanged::

    Client SKU Id,Channel Serial No.,Channel SKU Id,EAN,ASIN,Merchant SKU

``Client SKU Id`` is the back-office stock code; ``Merchant SKU`` (else ``Channel SKU Id``) is the
Amazon seller SKU it maps from. A file is applied whole or not at all: every row is checked first and
every bad row is reported with its line number.

Every column is kept, so a channel can identify products by seller SKU, ASIN, EAN or another column
(``product_identification`` in the channel settings). In Redis, per channel: the row per seller SKU,
the legacy ``listings:<channel>`` hash (seller SKU -> stock code) and one index per other attribute;
a file (or a batch of ``ListingChanged`` events from the compacted ``channel.listings`` topic) is
written in one MULTI/EXEC transaction, so a reader never sees half of it.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, cast

from ordersync.errors import Permanent
from ordersync.schemas.events import ListingChanged
from ordersync.state import keys

if TYPE_CHECKING:
    from ordersync.channels import Channel
    from ordersync.schemas.events import AmazonOrderItem
    from ordersync.state.store import Store

#: Amazon's seller SKUs are at most this long (as ``schemas.events.SellerSku`` says).
MAX_SKU_CHARS = 40
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
    channel_serial_no: str | None = None
    channel_sku_id: str | None = None


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
        elif len(seller_sku) > MAX_SKU_CHARS:
            problems.append(f"line {line}: seller SKU of {len(seller_sku)} characters (Amazon's are 1 to 40)")
        if seller_sku and seller_sku in seen:
            problems.append(
                f"line {line}: seller SKU {seller_sku} is already mapped on line {seen[seller_sku]}"
            )
        if stock_code and seller_sku:
            seen.setdefault(seller_sku, line)
            listings.rows.append(
                ListingRow(
                    stock_code,
                    seller_sku,
                    row.get("ASIN") or None,
                    row.get("EAN") or None,
                    row.get("Channel Serial No.") or None,
                    row.get("Channel SKU Id") or None,
                )
            )
    if problems:
        raise ListingsRejected(problems)
    return listings


def parse_listing(fields: dict[str, str]) -> ListingRow:
    """One listing given by its CSV column names (a row fixed by hand), checked as a file's row is."""
    unknown = sorted(set(fields) - set(COLUMNS))
    if unknown:
        raise ListingsRejected([f"unknown column(s) {', '.join(unknown)}; the columns: {', '.join(COLUMNS)}"])
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    writer.writerow([fields.get(column, "") for column in COLUMNS])
    try:
        (row,) = parse_listings_csv(out.getvalue()).rows
    except ListingsRejected as exc:
        raise ListingsRejected([problem.removeprefix("line 2: ") for problem in exc.problems]) from exc
    return row


def matches(row: ListingRow, query: str) -> bool:
    """Whether ``query`` is part of the row's seller SKU, stock code, ASIN, EAN or channel ids, whatever
    the case."""
    wanted = query.strip().casefold()
    values = (row.seller_sku, row.stock_code, row.asin, row.ean, row.channel_serial_no, row.channel_sku_id)
    return not wanted or any(wanted in value.casefold() for value in values if value)


def listings_csv(rows: list[ListingRow]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow(
            [
                row.stock_code,
                row.channel_serial_no or "",
                row.channel_sku_id or row.seller_sku,
                row.ean or "",
                row.asin or "",
                row.seller_sku,
            ]
        )
    return out.getvalue()


# --- identification: which attribute of a listing an order item is matched on ---------------------

#: The Redis index each product-identification setting reads ("seller_sku": the legacy hash).
INDEX_OF = {
    "seller_sku": "seller_sku",
    "Merchant SKU": "seller_sku",
    "asin": "asin",
    "ASIN": "asin",
    "ean": "ean",
    "EAN": "ean",
    "Client SKU Id": "stock_code",
    "Channel Serial No.": "channel_serial_no",
    "Channel SKU Id": "channel_sku_id",
}
OTHER_INDEXES = ("asin", "ean", "stock_code", "channel_serial_no", "channel_sku_id")


def item_key(item: AmazonOrderItem, channel: Channel) -> str | None:
    """The value an order item is looked up by, per the channel's product identification: the ASIN,
    or the seller SKU after the channel's crop rules."""
    if INDEX_OF[channel.product_identification] == "asin":
        return item.asin
    return channel.crop_sku(item.seller_sku) if item.seller_sku else None


def _index_key(store: Store, channel: str, index: str) -> str:
    if index == "seller_sku":
        return store.key_of(keys.LISTINGS, channel)
    return store.key_of(keys.LISTINGS_INDEX, channel, index)


def _indexed(row: ListingRow) -> dict[str, str]:
    values = {index: getattr(row, index) for index in OTHER_INDEXES}
    return {index: value for index, value in values.items() if value}


def stock_code_index(store: Store, channel: Channel) -> str:
    """The hash of the channel's stock codes by the identifying value its orders' items are looked up by
    (:func:`item_key`)."""
    return _index_key(store, channel.name, INDEX_OF[channel.product_identification])


async def lookup_stock_codes(store: Store, channel: Channel, keys: list[str]) -> dict[str, str]:
    """Stock code per identifying value found in the channel's listings."""
    if not keys:
        return {}
    index = stock_code_index(store, channel)
    values = cast(list[str | None], await store.redis.hmget(index, keys))
    return {key: code for key, code in zip(keys, values, strict=True) if code}


async def apply_listings(
    store: Store, channel: str, rows: Iterable[ListingRow], removed: Iterable[str] = ()
) -> None:
    """Write listings (and remove the seller SKUs in ``removed``) in one transaction."""
    rows = list(rows)
    removed = list(removed)
    skus = [row.seller_sku for row in rows] + removed
    if not skus:
        return
    rows_key = store.key_of(keys.LISTINGS_ROWS, channel)
    previous = cast(list[str | None], await store.redis.hmget(rows_key, skus))
    async with store.redis.pipeline(transaction=True) as pipe:
        for sku, raw in zip(skus, previous, strict=True):
            if raw is None:
                continue
            old = ListingRow(**json.loads(raw))
            pipe.hdel(_index_key(store, channel, "seller_sku"), sku)
            for index, value in _indexed(old).items():
                pipe.hdel(_index_key(store, channel, index), value)
            pipe.hdel(rows_key, sku)
        for row in rows:
            pipe.hset(_index_key(store, channel, "seller_sku"), row.seller_sku, row.stock_code)
            for index, value in _indexed(row).items():
                pipe.hset(_index_key(store, channel, index), value, row.stock_code)
            pipe.hset(rows_key, row.seller_sku, json.dumps(asdict(row)))
        await pipe.execute()


async def listing_rows(store: Store, channel: str) -> dict[str, ListingRow]:
    raw = cast(dict[str, str], await store.redis.hgetall(store.key_of(keys.LISTINGS_ROWS, channel)))
    return {sku: ListingRow(**json.loads(value)) for sku, value in raw.items()}


def event_of(channel: str, row: ListingRow) -> ListingChanged:
    """The ``channel.listings`` event that sets ``row`` (the inverse of :func:`row_of`)."""
    return ListingChanged(
        channel=channel,
        merchant_sku=row.seller_sku,
        client_sku_id=row.stock_code,
        channel_serial_no=row.channel_serial_no,
        channel_sku_id=row.channel_sku_id,
        ean=row.ean,
        asin=row.asin,
    )


def row_of(event: ListingChanged) -> ListingRow | None:
    """The listing a ``ListingChanged`` sets, or None when it removes the listing."""
    if not event.client_sku_id:
        return None
    return ListingRow(
        event.client_sku_id,
        event.merchant_sku,
        event.asin,
        event.ean,
        event.channel_serial_no,
        event.channel_sku_id,
    )
