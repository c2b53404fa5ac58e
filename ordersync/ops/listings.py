"""Loading listings (seller SKU -> back-office stock code) from the CLI and the dashboard, one way: every
row on ``channel.listings`` first, each acknowledged by Kafka (the record: a Redis that loses the
listings gets them back from there), then written to Redis in one transaction so orders find them at
once (:mod:`ordersync.state.listings`)."""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as aioredis
from kafka import KafkaProducer
from starlette.concurrency import run_in_threadpool

from ordersync.kafka.admin import bounded_producer_config
from ordersync.schemas.codec import encode
from ordersync.schemas.envelope import Envelope
from ordersync.schemas.topics import CHANNEL_LISTINGS, sku_key
from ordersync.settings import Settings
from ordersync.state.listings import ListingRow, apply_listings, event_of
from ordersync.state.store import Store


def publish_listings(
    settings: Settings,
    channel: str,
    seller: str,
    rows: Sequence[ListingRow],
    *,
    wait_s: float = 60.0,
    client_id: str = "ordersync",
) -> None:
    """Every row on ``channel.listings``; returns once Kafka acknowledged each, raises ``KafkaError``
    (within about ``wait_s`` when Kafka is down) otherwise. Blocking: run it in a thread."""
    producer = KafkaProducer(
        acks="all", **bounded_producer_config(settings.kafka, wait_s, client_id=client_id)
    )
    try:
        sent = [
            producer.send(
                CHANNEL_LISTINGS.name,
                key=sku_key(seller, row.seller_sku).encode(),
                value=encode(
                    Envelope.wrap(
                        event_of(channel, row), seller_id=seller, correlation_id=f"listings:{channel}"
                    )
                ),
            )
            for row in rows
        ]
        # A large file takes a while to flush; Kafka down fails earlier, at the first send (``wait_s``).
        producer.flush(timeout=max(wait_s, 60.0))
        for future in sent:
            future.get(timeout=wait_s)  # a record the broker refused raises here
    finally:
        producer.close(timeout=2)


async def load_listings(
    settings: Settings,
    redis: aioredis.Redis,
    channel: str,
    seller: str,
    rows: Sequence[ListingRow],
    *,
    wait_s: float = 60.0,
    client_id: str = "ordersync",
) -> None:
    """Publish ``rows`` (:func:`publish_listings`, in a thread), then apply them to Redis. Kafka down:
    nothing is written anywhere."""
    await run_in_threadpool(
        publish_listings, settings, channel, seller, rows, wait_s=wait_s, client_id=client_id
    )
    await apply_listings(Store(redis, settings.redis.key_prefix), channel, rows)


__all__ = ["load_listings", "publish_listings"]
