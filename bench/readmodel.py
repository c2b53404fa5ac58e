"""Benchmark of the status read model's grid queries over many orders (prints figures, asserts nothing).

Folds ``--orders`` orders (default 100,000; 2 accounts x 3 marketplaces, every order downloaded and
enriched, 90 % imported, 6 % import failures, 1 % ignored) through :meth:`ReadModel.apply`, then prints
the latency (p50/p95 of ``--repeat`` runs) of grid pages: no filter, one status, status + channel + date
range, a SKU, an order-id prefix, sorted by each key, a deep page; and the fold's rate and Redis memory.

It starts its own redis-server (``ordersync.dev.devinfra.EmbeddedRedis``) unless ``ORDERSYNC_REDIS__URL``
is set (then it writes under a fresh key prefix and removes it at the end).

    .venv/bin/python bench/readmodel.py [--orders 100000] [--repeat 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import time
import uuid
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import redis.asyncio as aioredis

from ordersync.schemas.envelope import Envelope, Event
from ordersync.schemas.events import (
    AmazonOrder,
    AmazonOrderItem,
    Money,
    OperatorCommandIssued,
    OrderDownloaded,
    OrderEnriched,
    OrderImported,
    OrderImportFailed,
    SalesOrder,
    SalesOrderLine,
)
from ordersync.schemas.topics import (
    OPS_COMMANDS,
    ORDERS_DOWNLOADED,
    ORDERS_ENRICHED,
    ORDERS_IMPORT_FAILED,
    ORDERS_IMPORTED,
)
from ordersync.state.readmodel import OrderFilter, ReadModel, SortKey

ACCOUNTS = (("acme-us", "A1ACME"), ("globex-eu", "A2GLOBEX"))
MARKETPLACES = ("ATVPDKIKX0DER", "A1F83G8C2ARO7P", "A1PA6795UKMFR9")
T0 = datetime(2026, 6, 1, tzinfo=UTC)


def _order_events(number: int, rng: random.Random) -> list[tuple[str, Envelope[Any]]]:
    channel, seller = ACCOUNTS[number % len(ACCOUNTS)]
    marketplace = MARKETPLACES[number % len(MARKETPLACES)]
    order_id = f"{100 + number % 900:03d}-{number:07d}-{rng.randrange(10**7):07d}"
    purchased = T0 + timedelta(seconds=rng.randrange(90 * 86400))
    sku = f"SKU-{rng.randrange(5000):05d}"
    item = AmazonOrderItem(
        order_item_id=f"{number:014d}",
        asin="B000000001",
        seller_sku=sku,
        quantity_ordered=1 + number % 3,
        item_price=Money(currency="USD", amount=Decimal("19.99")),
    )
    order = AmazonOrder(
        amazon_order_id=order_id,
        seller_id=seller,
        marketplace_id=marketplace,
        order_status="Unshipped",
        fulfillment_channel="MFN",
        purchase_date=purchased,
        last_update_date=purchased,
        api_version="v0",
    )
    at = purchased

    def wrap(event: Event) -> Envelope[Any]:
        nonlocal at
        at += timedelta(minutes=1)
        return Envelope.wrap(
            event, seller_id=seller, marketplace_id=marketplace, correlation_id="b", occurred_at=at
        )

    events: list[tuple[str, Envelope[Any]]] = [
        (ORDERS_DOWNLOADED.name, wrap(OrderDownloaded(channel=channel, order=order))),
        (
            ORDERS_ENRICHED.name,
            wrap(OrderEnriched(channel=channel, order=order.model_copy(update={"items": (item,)}))),
        ),
    ]
    roll = rng.random()
    if roll < 0.90:
        sales_order = SalesOrder(
            code=f"SO{number:08d}",
            channel=channel,
            seller_id=seller,
            marketplace_id=marketplace,
            amazon_order_id=order_id,
            order_status="Unshipped",
            fulfillment_channel="MFN",
            purchase_date=purchased,
            currency="USD",
            customer_name=None,
            customer_email=None,
            shipping_address=None,
            ship_service_level=None,
            lines=(
                SalesOrderLine(
                    order_item_id=item.order_item_id,
                    seller_sku=sku,
                    asin=item.asin,
                    stock_code=f"STK-{sku}",
                    quantity=item.quantity_ordered,
                    unit_price=Decimal("19.99"),
                    tax=Decimal(0),
                    line_total=Decimal("19.99"),
                ),
            ),
            total=Decimal("19.99"),
        )
        events.append((ORDERS_IMPORTED.name, wrap(OrderImported(sales_order=sales_order))))
    elif roll < 0.96:
        failed = OrderImportFailed(
            channel=channel,
            amazon_order_id=order_id,
            reason_code="unknown_stock_code",
            reason=f"Unknown {sku}",
        )
        events.append((ORDERS_IMPORT_FAILED.name, wrap(failed)))
    elif roll < 0.97:
        command = OperatorCommandIssued(command="ignore", channel=channel, amazon_order_ids=(order_id,))
        events.append((OPS_COMMANDS.name, wrap(command)))
    return events


async def _fold(model: ReadModel, orders: int, concurrency: int) -> float:
    rng = random.Random(42)
    started = time.perf_counter()
    batch: list[tuple[str, Envelope[Any]]] = []

    async def flush() -> None:
        for start in range(0, len(batch), concurrency):
            await asyncio.gather(*(model.apply(t, e) for t, e in batch[start : start + concurrency]))
        batch.clear()

    folded = 0
    for number in range(orders):
        events = _order_events(number, rng)
        batch += events
        folded += len(events)
        if len(batch) >= 4 * concurrency:
            await flush()
        if number and number % 20_000 == 0:
            print(f"  folded {number:,} orders ({folded / (time.perf_counter() - started):,.0f} events/s)")
    await flush()
    return folded / (time.perf_counter() - started)


async def _time(call: Any, repeat: int) -> tuple[float, float, int]:
    latencies: list[float] = []
    total = 0
    for _ in range(repeat):
        started = time.perf_counter()
        page = await call()
        latencies.append((time.perf_counter() - started) * 1000)
        total = page.total
    latencies.sort()
    return statistics.median(latencies), latencies[int(0.95 * (len(latencies) - 1))], total


async def run(url: str, orders: int, repeat: int, concurrency: int) -> None:
    redis = aioredis.Redis.from_url(url, decode_responses=True)
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    model = ReadModel(redis, prefix, notify_dlq=False)
    try:
        memory_before = int((await redis.info("memory"))["used_memory"])
        print(f"folding {orders:,} orders ...")
        rate = await _fold(model, orders, concurrency)
        memory = int((await redis.info("memory"))["used_memory"]) - memory_before
        print(
            f"fold: {rate:,.0f} events/s ({concurrency} concurrent); "
            f"model: {memory / 2**20:,.0f} MiB in Redis ({memory / orders:,.0f} bytes per order)"
        )
        some = (await model.orders(OrderFilter(), limit=1)).rows[0]
        queries: list[tuple[str, OrderFilter, SortKey, int]] = [
            ("all, newest first", OrderFilter(), "purchase_date", 0),
            ("all, page 1,000 (offset 49,950)", OrderFilter(), "purchase_date", 49_950),
            ("Failed", OrderFilter(status="Failed"), "purchase_date", 0),
            ("Success, by status", OrderFilter(status="Success"), "status", 0),
            (
                "Success + channel + marketplace + 30 days",
                OrderFilter(
                    status="Success",
                    channel=ACCOUNTS[0][0],
                    marketplace_id=MARKETPLACES[0],
                    since=T0 + timedelta(days=30),
                    until=T0 + timedelta(days=60),
                ),
                "purchase_date",
                0,
            ),
            (
                "channel + 30 days, by order id",
                OrderFilter(channel=ACCOUNTS[1][0], since=T0, until=T0 + timedelta(days=30)),
                "amazon_order_id",
                0,
            ),
            ("all, by updated_at", OrderFilter(), "updated_at", 0),
            ("order id prefix (3 digits)", OrderFilter(text=some.amazon_order_id[:3]), "purchase_date", 0),
            ("order id (exact)", OrderFilter(text=some.amazon_order_id), "purchase_date", 0),
            ("SKU (exact)", OrderFilter(text=some.skus[0]), "purchase_date", 0),
        ]
        print(f"\n{'grid page of 50':<45} {'p50 ms':>8} {'p95 ms':>8} {'matches':>9}")
        for label, order_filter, sort, offset in queries:

            async def page(f: OrderFilter = order_filter, s: SortKey = sort, o: int = offset) -> Any:
                return await model.orders(f, sort=s, offset=o, limit=50)

            p50, p95, total = await _time(page, repeat)
            print(f"{label:<45} {p50:>8.1f} {p95:>8.1f} {total:>9,}")
        started = time.perf_counter()
        detail = await model.order(some.seller_id, some.amazon_order_id)
        print(
            f"\norder detail: {(time.perf_counter() - started) * 1000:.1f} ms "
            f"({len(detail.history) if detail else 0} events)"
        )
    finally:
        await model.reset()
        await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    with ExitStack() as stack:
        url = os.environ.get("ORDERSYNC_REDIS__URL")
        if not url:
            from ordersync.dev.devinfra import EmbeddedRedis  # noqa: PLC0415

            url = stack.enter_context(EmbeddedRedis()).url
        asyncio.run(run(url, args.orders, args.repeat, args.concurrency))


if __name__ == "__main__":
    main()
