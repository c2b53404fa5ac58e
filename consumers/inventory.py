"""Inventory: the back-office's stock levels to Amazon, one JSON_LISTINGS_FEED per seller per interval.

- Input: ``inventory.levels`` (``InventoryLevelChanged``, key ``seller_id:sku``; the latest value wins,
  an older observation never overwrites a newer one).
- Output: Amazon. Every ``ratelimit.inventory_flush_interval_s`` (default hourly) each active channel
  with changed quantities gets one JSON_LISTINGS_FEED (PATCH of ``fulfillment_availability``, at most
  ``inventory.max_messages`` = 25,000 messages; more wait for the next interval).
- Amazon operations and quotas (per seller, through the rate limiter): ``createFeed`` on the
  ``inventory`` lane, which holds a reserved token per flush interval (shipment feeds on the
  ``packing`` lane cannot starve it), together with JSON_LISTINGS_FEED's own 5 per 5 minutes;
  ``getFeed`` and ``getFeedDocument`` to read the processing report. The lifecycle is the
  batched-feed engine's (:mod:`ordersync.pipeline.feeds`); a feed not applied (FATAL, stalled: it is
  not cancelled) gives its SKUs back to pending, unless a newer value is there already.
- State in Redis, per seller: the latest quantity per SKU (``inv-latest``), the quantity Amazon last
  accepted (``inv-sent``), the SKUs to send (``inv-pending``: latest differs from sent, so unchanged
  values are never sent again), the feed in flight (``inv-inflight``), and per-SKU errors from the
  reports (``inv-errors``: code, message, quantity, feed; cleared when the SKU is accepted), readable
  with :func:`sku_errors`. Each flush is recorded as task health ``inventory``.
- Redis found without this state (restarted empty), :func:`rebuild_levels` observes every level on
  ``inventory.levels`` again before the next record or feed: with nothing known as accepted, each
  SKU's latest quantity is sent once more, which also covers a feed whose report was lost in flight.
- "Stock only" channels (no order import) run this stage alone.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any, cast

import faust
from redis.asyncio.client import Pipeline

from ordersync.amazon.feeds import JSON_CONTENT_TYPE, ProcessingResult, listings_quantity_feed
from ordersync.channels import Channel
from ordersync.errors import Permanent
from ordersync.pipeline.feeds import FeedEngine, FeedLimits, FeedType, Parked, pending_key, scaled, seller_key
from ordersync.pipeline.lock import Lock
from ordersync.pipeline.runtime import StageRuntime
from ordersync.schemas.envelope import Envelope, Event
from ordersync.schemas.events import InventoryLevelChanged
from ordersync.schemas.topics import INVENTORY_LEVELS
from ordersync.settings import Settings

log = logging.getLogger(__name__)
STAGE = "inventory"
FEED_TYPE = "JSON_LISTINGS_FEED"
TASK = "inventory"
FAMILY = "inv"

# Set the latest quantity of a SKU if the observation is newer, and keep the pending set right:
# pending when it differs from what Amazon accepted last. Returns 1 when the value was taken.
_OBSERVE = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current then
  local at = cjson.decode(current)['at']
  if at > ARGV[3] then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode({quantity = tonumber(ARGV[2]), at = ARGV[3]}))
local sent = redis.call('HGET', KEYS[2], ARGV[1])
if sent == ARGV[2] then
  redis.call('HDEL', KEYS[3], ARGV[1])
else
  redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
end
return 1
"""


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _latest_key(runtime: StageRuntime, seller: str) -> str:
    """Hash ``inv-latest``: SKU -> the newest quantity observed (JSON with its time)."""
    return seller_key(runtime, "inv-latest", seller)


def _sent_key(runtime: StageRuntime, seller: str) -> str:
    """Hash ``inv-sent``: SKU -> the quantity Amazon accepted last."""
    return seller_key(runtime, "inv-sent", seller)


def _errors_key(runtime: StageRuntime, seller: str) -> str:
    """Hash ``inv-errors``: SKU -> Amazon's last refusal (JSON)."""
    return seller_key(runtime, "inv-errors", seller)


@dataclass
class SkuQuantity(Parked):
    """One SKU's quantity to send: ``inv-pending`` holds it as SKU -> quantity, a feed's batch as
    ``[sku, quantity]``."""

    sku: str
    quantity: int

    @property
    def field(self) -> str:
        return self.sku

    def dumps(self) -> str:
        return str(self.quantity)

    def record(self) -> list[Any]:
        return [self.sku, self.quantity]


class ListingsFeed(FeedType[SkuQuantity]):
    feed_type = FEED_TYPE
    content_type = JSON_CONTENT_TYPE
    family = FAMILY
    noun = "inventory feed"
    task = TASK
    cancel_stalled = False
    latest_wins = True
    flush_on_schedule = True

    def limits(self, settings: Settings) -> FeedLimits:
        return FeedLimits(
            lane=settings.ratelimit.inventory_lane,
            max_messages=settings.inventory.max_messages,
            timeout_s=settings.inventory.feed_timeout_s,
            flush_interval_s=settings.ratelimit.inventory_flush_interval_s,
        )

    def loads(self, field: str, raw: str) -> SkuQuantity:
        return SkuQuantity(field, int(raw))

    def from_record(self, value: Any) -> SkuQuantity:
        return SkuQuantity(str(value[0]), int(value[1]))

    def build(self, channel: Channel, batch: Mapping[int, SkuQuantity]) -> bytes:
        return listings_quantity_feed(channel.seller_id, ((i, e.sku, e.quantity) for i, e in batch.items()))

    async def apply(
        self,
        runtime: StageRuntime,
        channel: Channel,
        entry: SkuQuantity,
        errors: list[ProcessingResult],
        *,
        feed_id: str,
        pipe: Pipeline,
    ) -> None:
        seller = channel.seller_id
        if not errors:
            pipe.hset(_sent_key(runtime, seller), entry.sku, str(entry.quantity))
            pipe.hdel(_errors_key(runtime, seller), entry.sku)
            return
        error = {
            "code": errors[0].code,
            "message": "; ".join(p.description for p in errors),
            "quantity": entry.quantity,
            "feed_id": feed_id,
            "at": _iso(runtime.clock.now()),
        }
        pipe.hset(_errors_key(runtime, seller), entry.sku, json.dumps(error))


FEEDS = FeedEngine(ListingsFeed())
#: Send the seller's changed quantities in one JSON_LISTINGS_FEED (none while one is in flight);
#: returns the feed id.
flush = FEEDS.submit
#: One look at the seller's inventory feed in flight: True when settled (or there is none).
check_inflight = FEEDS.check
#: Settle the feed in flight; when the flush interval has passed, send the next.
tick = FEEDS.run


async def handle(runtime: StageRuntime, envelope: Envelope[Event]) -> None:
    level = envelope.payload_as(InventoryLevelChanged)
    channel = runtime.channels.by_name(level.channel)
    if channel.seller_id != envelope.seller_id:
        raise Permanent(f"channel {channel.name} is not seller {envelope.seller_id}'s")
    seller = channel.seller_id
    await runtime.store.redis.eval(
        _OBSERVE,
        3,
        _latest_key(runtime, seller),
        _sent_key(runtime, seller),
        pending_key(runtime, FAMILY, seller),
        level.seller_sku,
        str(level.quantity),
        _iso(level.observed_at),
    )


async def rebuild_levels(runtime: StageRuntime) -> int:
    """Every level on ``inventory.levels`` observed again (the newest per SKU wins), for a Redis that
    lost them: what Amazon accepted is unknown then, so each SKU's latest quantity is pending. Levels the
    agent dead-letters (another seller's channel, an unknown one) are skipped. Returns levels read."""
    observed = 0
    for envelope in await runtime.read_events(INVENTORY_LEVELS):
        try:
            await handle(runtime, envelope)
        except Permanent:
            continue
        observed += 1
    log.warning("inventory rebuilt from %s: %d levels observed", INVENTORY_LEVELS.name, observed)
    return observed


async def _quantities(runtime: StageRuntime, key: str) -> dict[str, int]:
    raw = cast(dict[str, str], await runtime.store.redis.hgetall(key))
    return {sku: int(qty) for sku, qty in raw.items()}


async def pending(runtime: StageRuntime, seller: str) -> dict[str, int]:
    return await _quantities(runtime, pending_key(runtime, FAMILY, seller))


async def sent(runtime: StageRuntime, seller: str) -> dict[str, int]:
    return await _quantities(runtime, _sent_key(runtime, seller))


async def sku_errors(runtime: StageRuntime, seller: str) -> dict[str, dict[str, Any]]:
    """Per SKU, the error Amazon's last report gave for it (code, message, quantity, feed_id, at)."""
    raw = cast(dict[str, str], await runtime.store.redis.hgetall(_errors_key(runtime, seller)))
    return {sku: json.loads(value) for sku, value in raw.items()}


async def step(runtime: StageRuntime, channel: Channel, lease: Lock) -> None:
    """One channel's inventory tick, by the replica that holds the channel's lease."""
    await runtime.confirm_state()  # Redis lost the levels: they come back first
    if await lease.hold():
        await tick(runtime, channel)


def register(app: faust.App, runtime: StageRuntime) -> None:
    runtime.on_redis_reset(partial(rebuild_levels, runtime))

    @app.task  # type: ignore[untyped-decorator]
    async def watch_redis() -> None:
        await runtime.watch_generation()

    @app.agent(runtime.topic(INVENTORY_LEVELS), name="inventory-levels")
    async def levels(stream: faust.StreamT[bytes]) -> None:
        await runtime.consume(INVENTORY_LEVELS, stream, lambda env: handle(runtime, env))

    @app.task  # type: ignore[untyped-decorator]
    async def feeds() -> None:
        await runtime.start()
        poll_s = scaled(runtime, runtime.settings.inventory.feed_poll_interval_s)
        # One replica sends a channel's feeds at a time (the flush is not atomic across workers).
        leases = {
            channel.name: runtime.lease("inventory", channel.name) for channel in runtime.channels.channels
        }
        try:
            while True:
                for channel in runtime.channels.channels:
                    if channel.active:
                        # Whatever fails (Amazon, Redis, the broker), the next tick tries again.
                        await runtime.survive(
                            f"inventory {channel.name}", partial(step, runtime, channel, leases[channel.name])
                        )
                await asyncio.sleep(poll_s)
        finally:
            for lease in leases.values():
                await asyncio.shield(lease.release())
