"""What the pipeline made of a run, read back for the end-to-end tests: each order's latest downloaded
status (from Redis) and the sales orders imported and cancelled (from orders.imported)."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import redis

from ordersync.dev.demo import LocalPipeline
from ordersync.kafka.reader import TopicReader
from ordersync.schemas.codec import decode
from ordersync.schemas.events import OrderCancelled, OrderImported
from ordersync.schemas.topics import ORDERS_IMPORTED


def pipeline_statuses(pipeline: LocalPipeline, truth: list[dict[str, Any]]) -> dict[str, str | None]:
    """The latest Amazon status the pipeline downloaded, per order (from its Redis)."""
    client = redis.Redis.from_url(pipeline.env["ORDERSYNC_REDIS__URL"], decode_responses=True)
    try:
        with client.pipeline(transaction=False) as batch:
            for order in truth:
                batch.hget(f"os:order:{{{order['seller_id']}}}:{order['amazon_order_id']}", "amazon_status")
            values = batch.execute()
    finally:
        client.close()
    return {order["amazon_order_id"]: value for order, value in zip(truth, values, strict=True)}


#: The import stage may still publish the last changes when the downloaded statuses agree: orders.imported
#: is read again after this pause until its end stops moving.
IMPORTS_SETTLE_S = 2.5


def imported_events(bootstrap: str) -> tuple[Counter[str], set[str]]:
    """Sales orders imported, per order, and the orders cancelled, from orders.imported's start up to its
    end, once that end stopped moving."""
    last_ends: list[int] | None = None
    while True:
        imported: Counter[str] = Counter()
        cancelled: set[str] = set()
        with TopicReader(bootstrap, ORDERS_IMPORTED.name, skip_missing=True) as reader:
            for record in reader.records():
                payload = decode(record.value, ORDERS_IMPORTED).payload
                if isinstance(payload, OrderImported):
                    imported[payload.sales_order.amazon_order_id] += 1
                elif isinstance(payload, OrderCancelled):
                    cancelled.add(payload.amazon_order_id)
            ends = [r.end for r in reader.ranges()]
        if ends == last_ends:
            return imported, cancelled
        last_ends = ends
        time.sleep(IMPORTS_SETTLE_S)
