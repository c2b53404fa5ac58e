"""The import stage in the running pipeline: listings published by the back-office on the compacted
``channel.listings`` topic land in Redis, and replaying ``amazon.orders.enriched`` from the beginning
creates no second sales order."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from ordersync.dev.demo import local_pipeline
from ordersync.kafka.reader import Record, read_topic
from ordersync.schemas.codec import decode, encode
from ordersync.schemas.envelope import Envelope
from ordersync.schemas.events import ListingChanged, OrderImported
from ordersync.schemas.topics import CHANNEL_LISTINGS, ORDERS_ENRICHED, ORDERS_IMPORTED, sku_key
from ordersync.simulator.testing import tiny_scenario
from tests.topics import wait_for

pytestmark = pytest.mark.integration

ORDERS = 20
IMPORT_GROUP = "ordersync-import"  # the import stage's faust app id


def _records(bootstrap: str, topic: str) -> list[Record]:
    """Every record of the topic, from the start up to its end."""
    return list(read_topic(bootstrap, topic, skip_missing=True))


def _imported_ids(bootstrap: str) -> list[str]:
    payloads = [decode(r.value, ORDERS_IMPORTED).payload for r in _records(bootstrap, ORDERS_IMPORTED.name)]
    return [p.sales_order.amazon_order_id for p in payloads if isinstance(p, OrderImported)]


def _caught_up(bootstrap: str, topic: str) -> bool:
    """Has the import stage committed every record of ``topic``? (Reads the group's offsets; does
    not join the group.)"""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=IMPORT_GROUP, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        ends = consumer.end_offsets(partitions)
        return all((consumer.committed(tp) or 0) >= end for tp, end in ends.items())
    finally:
        consumer.close(autocommit=False)


def test_listings_topic_feeds_redis_and_a_replay_creates_no_second_sales_order(tmp_path: Path) -> None:
    scenario = tiny_scenario(orders={"count": ORDERS, "history_s": 3600}, time_scale=60, start=None)
    with local_pipeline(
        scenario=scenario,
        run_dir=tmp_path / "run",
        stages=("order-download", "item-fetch", "import"),
        backoffice=False,
    ) as pipeline:
        bootstrap = pipeline.env["ORDERSYNC_KAFKA__BOOTSTRAP"]
        channel = pipeline.channel_names()[0]
        seller = scenario.sellers[0].seller_id
        wait_for(lambda: len(_imported_ids(bootstrap)) == ORDERS)

        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
        listing = ListingChanged(channel=channel, merchant_sku="NEW-SKU", client_sku_id="STK-NEW", ean="123")
        envelope = Envelope.wrap(listing, seller_id=seller, correlation_id="backoffice")
        producer.send(
            CHANNEL_LISTINGS.name, key=sku_key(seller, "NEW-SKU").encode(), value=encode(envelope)
        ).get(timeout=30)

        prefix = pipeline.settings().redis.key_prefix
        client = redis.Redis.from_url(pipeline.env["ORDERSYNC_REDIS__URL"], decode_responses=True)
        wait_for(lambda: client.hget(f"{prefix}:listings:{channel}", "NEW-SKU") == "STK-NEW")
        assert client.hget(f"{prefix}:listings:{channel}:by:ean", "123") == "STK-NEW"

        # Replay the whole enriched topic, as an operator restoring it from the beginning would.
        for record in _records(bootstrap, ORDERS_ENRICHED.name):
            producer.send(ORDERS_ENRICHED.name, key=record.key, value=record.value)
        producer.flush()
        producer.close()
        wait_for(lambda: _caught_up(bootstrap, ORDERS_ENRICHED.name))
        imported = _imported_ids(bootstrap)
        assert len(imported) == len(set(imported)) == ORDERS
        client.close()
