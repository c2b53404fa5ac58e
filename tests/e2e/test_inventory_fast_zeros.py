"""Fast zeros, end to end: the inventory stage runs as its own process (``ordersync run inventory``) on
the broker, Redis and the simulator; a SKU whose stock drops to zero is on Amazon within one simulated
minute, by patchListingsItem, while the other levels published around it go only with the next
JSON_LISTINGS_FEED. Judged from the simulator's listings (Amazon's truth) and its call counters."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from kafka import KafkaProducer

from ordersync.dev.demo import channels_for
from ordersync.dev.devinfra import find_free_port, stop_process_group
from ordersync.schemas.codec import encode
from ordersync.schemas.envelope import Envelope
from ordersync.schemas.events import InventoryLevelChanged
from ordersync.schemas.topics import INVENTORY_LEVELS
from ordersync.simulator.feeds import Listing
from ordersync.simulator.runner import RunningSimulator
from ordersync.simulator.testing import TEST_SELLER, tiny_scenario
from ordersync.state import keys
from tests.processes import ready, start_stage
from tests.topics import wait_for

pytestmark = pytest.mark.e2e

#: Simulated seconds per wall second: the feed's interval passes in half a minute, and the zero's
#: simulated minute is still 6 s of wall time for the broker and the stage's urgent round (1 s).
TIME_SCALE = 10.0
FLUSH_INTERVAL_S = 300.0  # simulated: 30 s of wall time
ON_AMAZON = 12  # every listing's quantity before the test
PATCH = "patchListingsItem"


def _listings(sim: RunningSimulator) -> dict[str, dict[str, Any]]:
    listings: dict[str, dict[str, Any]] = sim.state.truth_listings(TEST_SELLER).get(TEST_SELLER, {})
    return listings


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_a_zero_reaches_amazon_within_a_simulated_minute_the_rest_by_feed(
    ordersync_env: dict[str, str], topics: tuple[str, ...], tmp_path: Path
) -> None:
    # No stalled feed, short processing: the ordinary levels' feed lands within the test's time.
    scenario = tiny_scenario(
        time_scale=TIME_SCALE,
        feeds={"stall_share": 0.0, "queue_delay_s": [5, 10], "duration_s": [10, 30]},
    )
    with RunningSimulator(scenario) as sim:
        state = sim.state
        skus = [product.sku for product in state.catalogue(TEST_SELLER)][:7]
        zero, early, late = skus[0], skus[1:4], skus[4:]
        # Amazon has stock of each at first, so the zero is a change on Amazon, not its starting value.
        for sku in skus:
            state.feeds.seller_listings(TEST_SELLER)[sku] = Listing(sku, ON_AMAZON)
        channels_file = channels_for(scenario, orders_api="v0")
        (channel,) = (c["name"] for c in channels_file["channels"])
        channels = tmp_path / "channels.yaml"
        channels.write_text(yaml.safe_dump(channels_file, sort_keys=False))
        web_port = find_free_port()
        env = {
            **ordersync_env,
            "ORDERSYNC_AMAZON__ENDPOINT": sim.base_url,
            "ORDERSYNC_AMAZON__LWA_ENDPOINT": sim.lwa_url,
            "ORDERSYNC_AMAZON__TIME_SCALE": str(TIME_SCALE),
            "ORDERSYNC_CHANNELS_FILE": str(channels),
            "ORDERSYNC_STAGE__WEB_PORT": str(web_port),
            "ORDERSYNC_RATELIMIT__INVENTORY_FLUSH_INTERVAL_S": str(FLUSH_INTERVAL_S),
        }
        log_path = tmp_path / "inventory.log"
        stage = start_stage("inventory", env, log_path)
        producer = KafkaProducer(bootstrap_servers=ordersync_env["ORDERSYNC_KAFKA__BOOTSTRAP"], acks="all")
        store = redis.Redis.from_url(ordersync_env["ORDERSYNC_REDIS__URL"], decode_responses=True)
        prefix = ordersync_env["ORDERSYNC_REDIS__KEY_PREFIX"]
        latest_key = keys.seller_family("inv-latest").key(prefix, TEST_SELLER)
        flush_key = keys.seller_family("inv-last-flush").key(prefix, TEST_SELLER)
        published: dict[str, tuple[int, float]] = {}  # SKU -> (quantity, simulated time published)

        def publish(levels: dict[str, int]) -> None:
            for sku, quantity in levels.items():
                now = state.now()
                published[sku] = (quantity, now)
                level = InventoryLevelChanged(
                    channel=channel,
                    seller_sku=sku,
                    quantity=quantity,
                    observed_at=datetime.fromtimestamp(now, UTC),
                )
                envelope = Envelope.wrap(level, seller_id=TEST_SELLER, correlation_id=f"stock-{uuid.uuid4()}")
                producer.send(
                    INVENTORY_LEVELS.name, key=f"{TEST_SELLER}:{sku}".encode(), value=encode(envelope)
                )
            producer.flush()

        seen_by_patch: dict[str, dict[str, Any]] = {}  # SKU -> its listing when first seen patched
        when_zero_seen: dict[str, dict[str, Any]] = {}  # every listing then

        def zero_on_amazon() -> bool:
            listings = _listings(sim)
            for sku, listing in listings.items():
                if listing["feed_id"] == PATCH:
                    seen_by_patch.setdefault(sku, listing)
            if zero in seen_by_patch and not when_zero_seen:
                when_zero_seen.update(listings)
            return zero in seen_by_patch

        def far_from_the_next_flush() -> bool:
            # The stage's clock is the host's: its next feed goes one interval after the last flush.
            # The zero is published with at least 12 s (120 simulated s) to go, so a feed cannot carry
            # the levels published with it before it is due on Amazon.
            mark = store.get(flush_key)
            return mark is not None and time.time() - float(mark) < FLUSH_INTERVAL_S / TIME_SCALE - 12

        try:
            wait_for(lambda: ready(web_port), 90, what="the inventory stage is ready")
            # Ordinary levels first, until the stage has read them: its consumer is running.
            publish(dict.fromkeys(early, 40))
            wait_for(lambda: store.hlen(latest_key) == len(early), 60, what="the stage read the levels")
            # The zero among other changes.
            wait_for(far_from_the_next_flush, 60, what="the next flush is at least 12 s away")
            publish({late[0]: 25, zero: 0, late[1]: 3, early[0]: 41, late[2]: 7})
            wait_for(zero_on_amazon, 60, what="the zero is on Amazon")
            expected = {sku: quantity for sku, (quantity, _) in published.items()}

            def all_on_amazon() -> bool:
                zero_on_amazon()
                listings = _listings(sim)
                return all(listings[sku]["quantity"] == quantity for sku, quantity in expected.items())

            wait_for(all_on_amazon, 90, what="every level is on Amazon")
            assert stage.poll() is None, log_path.read_text()[-3000:]
        finally:
            producer.close(timeout=5)
            store.close()
            stop_process_group(stage.pid, grace_s=10)
            stage.wait(timeout=10)
        listings = _listings(sim)
        feeds = {f["feedId"]: f for f in state.truth_feeds(TEST_SELLER)}
        calls = state.counters_json()["sellers"][TEST_SELLER]

    # The zero: on Amazon by patchListingsItem within a simulated minute of its publication, and kept.
    patched = seen_by_patch[zero]
    assert patched["quantity"] == 0
    latency_s = _epoch(patched["updated_at"]) - published[zero][1]
    assert 0 <= latency_s <= 60, latency_s
    assert listings[zero]["quantity"] == 0
    # When it was there, the levels published with it were not: they wait for the feed.
    for sku in (*late, early[0]):
        assert when_zero_seen[sku]["quantity"] != published[sku][0], (sku, when_zero_seen[sku])
    # The others: never patched (one patchListingsItem call in all, the zero's), each at its latest
    # quantity from a JSON_LISTINGS_FEED.
    assert set(seen_by_patch) == {zero}
    assert calls[PATCH]["calls"] == 1
    for sku in (*early, *late):
        listing = listings[sku]
        assert listing["quantity"] == published[sku][0]
        feed = feeds[listing["feed_id"]]
        assert feed["feedType"] == "JSON_LISTINGS_FEED"
        assert feed["processingStatus"] == "DONE"
    print(f"zero on Amazon {latency_s:.1f} simulated s after publication; the rest by feed {sorted(feeds)}")
