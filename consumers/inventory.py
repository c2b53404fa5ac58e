"""Inventory: the back-office's stock levels to Amazon, one JSON_LISTINGS_FEED per seller per interval.

- Input: ``inventory.levels`` (``InventoryLevelChanged``, key ``seller_id:sku``; the latest value wins,
  an older observation never overwrites a newer one); ``orders.imported``, for the SKUs Amazon fulfils
  (seen on AFN orders), for which no merchant quantity is ever sent.
- What is sent of a level: the quantity less the channel's buffer (``stock_buffer_share``, then
  ``stock_buffer_units``), with the handling time and restock date when the back-office gives them.
- Output: Amazon. Every ``ratelimit.inventory_flush_interval_s`` (default hourly) each active channel
  with changed values gets one JSON_LISTINGS_FEED (PATCH merging ``fulfillment_availability``, so
  Amazon keeps the handling time and restock date it has; at most ``inventory.max_messages`` = 25,000
  messages; more wait for the next interval). A level at or under ``inventory.fast_threshold`` (sold
  out) goes within ``inventory.fast_interval_s`` by ``patchListingsItem`` instead (5/s, burst 5, per
  seller), from a loop of its own (a feed waiting for its createFeed token never holds it up); a feed
  in flight with an older value that lands later makes it urgent again.
- Amazon operations and quotas (per seller, through the rate limiter): ``patchListingsItem``;
  ``createFeed`` on the
  ``inventory`` lane, which holds a reserved token per flush interval (shipment feeds on the
  ``packing`` lane cannot starve it), together with JSON_LISTINGS_FEED's own 5 per 5 minutes;
  ``getFeed`` and ``getFeedDocument`` to read the processing report. The lifecycle is the
  batched-feed engine's (:mod:`ordersync.pipeline.feeds`); a feed not applied (FATAL, stalled: it is
  not cancelled) gives its SKUs back to pending, unless a newer value is there already.
- State in Redis, per seller: the latest quantity per SKU (``inv-latest``), the quantity Amazon last
  accepted (``inv-sent``), the SKUs to send (``inv-pending``: latest differs from sent, so unchanged
  values are never sent again), the urgent ones (``inv-fast``), the SKUs Amazon fulfils (``inv-fba``),
  the feed in flight (``inv-inflight``), and per-SKU errors from the
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
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any, cast

import faust
from redis.asyncio.client import Pipeline

from ordersync.amazon.feeds import JSON_CONTENT_TYPE, Availability, ProcessingResult, listings_quantity_feed
from ordersync.channels import Channel
from ordersync.errors import AmazonRejected, Permanent, Retryable, Throttled
from ordersync.pipeline.feeds import FeedEngine, FeedLimits, FeedType, Parked, pending_key, scaled, seller_key
from ordersync.pipeline.lock import Lock
from ordersync.pipeline.runtime import StageRuntime
from ordersync.schemas.envelope import Envelope, Event
from ordersync.schemas.events import InventoryLevelChanged, OrderImported
from ordersync.schemas.topics import INVENTORY_LEVELS, ORDERS_IMPORTED
from ordersync.settings import Settings

log = logging.getLogger(__name__)
STAGE = "inventory"
FEED_TYPE = "JSON_LISTINGS_FEED"
TASK = "inventory"
FAST_TASK = "inventory-urgent"
FAMILY = "inv"

# Set the latest value of a SKU if the observation is newer, and keep the pending set right:
# pending when it differs from what Amazon accepted last; urgent (KEYS[4]) too when ARGV[4] is "1".
# Returns 1 when the value was taken.
_OBSERVE = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current then
  local at = cjson.decode(current)['at']
  if at > ARGV[3] then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode({value = ARGV[2], at = ARGV[3]}))
local sent = redis.call('HGET', KEYS[2], ARGV[1])
if sent == ARGV[2] then
  redis.call('HDEL', KEYS[3], ARGV[1])
  redis.call('HDEL', KEYS[4], ARGV[1])
else
  redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
  if ARGV[4] == '1' then
    redis.call('HSET', KEYS[4], ARGV[1], ARGV[2])
  else
    redis.call('HDEL', KEYS[4], ARGV[1])
  end
end
return 1
"""

# Amazon accepted ARGV[2] for SKU ARGV[1] (a feed, or patchListingsItem): it is sent; pending and
# urgent drop it if they still hold that value. When the newest value observed (KEYS[1]) is another one
# (changed while the value was on its way), that one is pending again, and urgent when its quantity is
# at or under the threshold ARGV[3] (-1: none is).
_ACCEPTED = """
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('HDEL', KEYS[5], ARGV[1])
if redis.call('HGET', KEYS[3], ARGV[1]) == ARGV[2] then redis.call('HDEL', KEYS[3], ARGV[1]) end
if redis.call('HGET', KEYS[4], ARGV[1]) == ARGV[2] then redis.call('HDEL', KEYS[4], ARGV[1]) end
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current then
  local decoded = cjson.decode(current)
  local latest = decoded['value'] or tostring(decoded['quantity'])
  if latest ~= ARGV[2] then
    redis.call('HSET', KEYS[3], ARGV[1], latest)
    local quantity = tonumber(string.match(latest, '^%d+'))
    if tonumber(ARGV[3]) >= 0 and quantity <= tonumber(ARGV[3]) then
      redis.call('HSET', KEYS[4], ARGV[1], latest)
    end
  end
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


def _fast_key(runtime: StageRuntime, seller: str) -> str:
    """Hash ``inv-fast``: SKU -> an urgent value (at or under ``inventory.fast_threshold``)."""
    return seller_key(runtime, "inv-fast", seller)


def _fba_key(runtime: StageRuntime, seller: str) -> str:
    """Set ``inv-fba``: the seller's SKUs Amazon fulfils."""
    return seller_key(runtime, "inv-fba", seller)


def encode_value(availability: Availability) -> str:
    """One SKU's value as kept and compared (unchanged values are never sent again): the quantity,
    then the handling time and the restock date when given (``"7"``, ``"7|3|"``, ``"0||2026-12-24"``)."""
    lead, restock = availability.lead_time_to_ship_max_days, availability.restock_date
    if lead is None and restock is None:
        return str(availability.quantity)
    return f"{availability.quantity}|{'' if lead is None else lead}|{restock or ''}"


def decode_value(raw: str) -> Availability:
    quantity, _, rest = raw.partition("|")
    lead, _, restock = rest.partition("|")
    return Availability(int(quantity), int(lead) if lead else None, restock or None)


def _accepted(runtime: StageRuntime, seller: str, sku: str, value: str) -> tuple[Any, ...]:
    """The arguments of ``eval`` marking ``value`` accepted by Amazon for ``sku`` (:data:`_ACCEPTED`)."""
    keys = (
        _latest_key(runtime, seller),
        _sent_key(runtime, seller),
        pending_key(runtime, FAMILY, seller),
        _fast_key(runtime, seller),
        _errors_key(runtime, seller),
    )
    return (_ACCEPTED, len(keys), *keys, sku, value, str(runtime.settings.inventory.fast_threshold))


def is_urgent(settings: Settings, quantity: int) -> bool:
    """A level that cannot wait for the next feed: at or under ``inventory.fast_threshold``."""
    threshold = settings.inventory.fast_threshold
    return threshold >= 0 and quantity <= threshold


@dataclass
class SkuQuantity(Parked):
    """One SKU's value to send: ``inv-pending`` holds it as SKU -> :func:`encode_value`, a feed's batch
    as ``[sku, value]``."""

    sku: str
    availability: Availability

    @property
    def quantity(self) -> int:
        return self.availability.quantity

    @property
    def field(self) -> str:
        return self.sku

    def dumps(self) -> str:
        return encode_value(self.availability)

    def record(self) -> list[Any]:
        value = self.dumps()
        return [self.sku, self.quantity if value == str(self.quantity) else value]


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
        return SkuQuantity(field, decode_value(raw))

    def from_record(self, value: Any) -> SkuQuantity:
        return SkuQuantity(str(value[0]), decode_value(str(value[1])))

    def build(self, channel: Channel, batch: Mapping[int, SkuQuantity]) -> bytes:
        offers = ((i, e.sku, e.availability) for i, e in batch.items())
        return listings_quantity_feed(channel.seller_id, offers)

    async def apply(
        self,
        runtime: StageRuntime,
        channel: Channel,
        entry: SkuQuantity,
        errors: list[ProcessingResult],
        *,
        feed_id: str,
        pipe: Pipeline,
        detail: Any = None,
    ) -> None:
        seller = channel.seller_id
        if not errors:
            pipe.eval(*_accepted(runtime, seller, entry.sku, entry.dumps()))
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


def offer(channel: Channel, level: InventoryLevelChanged) -> Availability:
    """What Amazon is told of ``level``: the quantity less the channel's buffer, with the handling time
    and restock date the back-office gave."""
    return Availability(
        channel.offered(level.quantity),
        level.lead_time_to_ship_max_days,
        level.restock_date.isoformat() if level.restock_date else None,
    )


async def _record_error(runtime: StageRuntime, seller: str, sku: str, error: dict[str, Any]) -> None:
    body = {**error, "at": _iso(runtime.clock.now())}
    await runtime.store.redis.hset(_errors_key(runtime, seller), sku, json.dumps(body))


async def handle(runtime: StageRuntime, envelope: Envelope[Event]) -> None:
    level = envelope.payload_as(InventoryLevelChanged)
    channel = runtime.channels.by_name(level.channel)
    if channel.seller_id != envelope.seller_id:
        raise Permanent(f"channel {channel.name} is not seller {envelope.seller_id}'s")
    seller = channel.seller_id
    redis = runtime.store.redis
    if await redis.sismember(_fba_key(runtime, seller), level.seller_sku):
        # Amazon fulfils it: a merchant quantity would open a seller-fulfilled offer beside the FBA one.
        message = "fulfilled by Amazon (seen on AFN orders): no merchant quantity is sent"
        await _record_error(
            runtime, seller, level.seller_sku, {"code": "FulfilledByAmazon", "message": message}
        )
        return
    availability = offer(channel, level)
    await redis.eval(
        _OBSERVE,
        4,
        _latest_key(runtime, seller),
        _sent_key(runtime, seller),
        pending_key(runtime, FAMILY, seller),
        _fast_key(runtime, seller),
        level.seller_sku,
        encode_value(availability),
        _iso(level.observed_at),
        "1" if is_urgent(runtime.settings, availability.quantity) else "0",
    )


async def note_fulfilled_by_amazon(runtime: StageRuntime, envelope: Envelope[Event]) -> None:
    """An order Amazon fulfils names SKUs Amazon fulfils: remember them, and drop what was waiting."""
    payload = envelope.payload
    if not isinstance(payload, OrderImported) or payload.sales_order.fulfillment_channel != "AFN":
        return
    seller = envelope.seller_id
    skus = {line.seller_sku for line in payload.sales_order.lines if line.seller_sku}
    if not skus:
        return
    async with runtime.store.redis.pipeline(transaction=True) as pipe:
        pipe.sadd(_fba_key(runtime, seller), *skus)
        pipe.hdel(pending_key(runtime, FAMILY, seller), *skus)
        pipe.hdel(_fast_key(runtime, seller), *skus)
        await pipe.execute()


async def send_urgent(runtime: StageRuntime, channel: Channel) -> int:
    """Send the seller's urgent levels now, one patchListingsItem each (merge, like the feed); returns
    how many Amazon accepted. A refusal is kept as the SKU's error (the next feed carries the value
    too); Amazon unavailable leaves them for the next round."""
    seller = channel.seller_id
    redis = runtime.store.redis
    urgent = cast(dict[str, str], await redis.hgetall(_fast_key(runtime, seller)))
    if not urgent:
        return 0
    client = runtime.amazon(channel)
    accepted = 0
    for sku, value in sorted(urgent.items()):
        availability = decode_value(value)
        try:
            await client.patch_availability(sku, channel.marketplaces, availability.patch())
        except AmazonRejected as exc:
            error = {"code": exc.code, "message": str(exc), "quantity": availability.quantity}
            await _record_error(runtime, seller, sku, {**error, "feed_id": "patchListingsItem"})
            await redis.hdel(_fast_key(runtime, seller), sku)
            continue
        except (Retryable, Throttled) as exc:
            log.warning("%s: urgent levels wait for the next round: %s", seller, exc)
            break
        await redis.eval(*_accepted(runtime, seller, sku, value))
        accepted += 1
    await runtime.store.record_task(
        FAST_TASK,
        channel.name,
        ok=accepted == len(urgent),
        detail=f"{accepted} of {len(urgent)} sent at once",
    )
    return accepted


async def rebuild_levels(runtime: StageRuntime) -> int:
    """Every level on ``inventory.levels`` observed again (the newest per SKU wins), for a Redis that
    lost them: what Amazon accepted is unknown then, so each SKU's latest quantity is pending. Levels the
    agent dead-letters (another seller's channel, an unknown one) are skipped. The SKUs Amazon fulfils
    come back from ``orders.imported`` first. Returns levels read."""
    sellers = {channel.seller_id for channel in runtime.channels.channels}
    for envelope in await runtime.read_events(ORDERS_IMPORTED):
        if envelope.seller_id in sellers:
            await note_fulfilled_by_amazon(runtime, envelope)
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
    return {sku: decode_value(value).quantity for sku, value in raw.items()}


async def urgent(runtime: StageRuntime, seller: str) -> dict[str, int]:
    return await _quantities(runtime, _fast_key(runtime, seller))


async def values(runtime: StageRuntime, key_of: Any, seller: str) -> dict[str, Availability]:
    raw = cast(dict[str, str], await runtime.store.redis.hgetall(key_of(runtime, seller)))
    return {sku: decode_value(value) for sku, value in raw.items()}


async def pending(runtime: StageRuntime, seller: str) -> dict[str, int]:
    return await _quantities(runtime, pending_key(runtime, FAMILY, seller))


async def sent(runtime: StageRuntime, seller: str) -> dict[str, int]:
    return await _quantities(runtime, _sent_key(runtime, seller))


async def sku_errors(runtime: StageRuntime, seller: str) -> dict[str, dict[str, Any]]:
    """Per SKU, the error Amazon's last report gave for it (code, message, quantity, feed_id, at)."""
    raw = cast(dict[str, str], await runtime.store.redis.hgetall(_errors_key(runtime, seller)))
    return {sku: json.loads(value) for sku, value in raw.items()}


async def urgent_step(runtime: StageRuntime, channel: Channel, lease: Lock) -> None:
    """One channel's urgent round (every ``inventory.fast_interval_s``), by the replica that holds the
    channel's lease."""
    await runtime.confirm_state()  # Redis lost the levels: they come back first
    if await lease.hold():
        await send_urgent(runtime, channel)


async def feed_step(runtime: StageRuntime, channel: Channel, lease: Lock) -> None:
    """One channel's feed round (every ``inventory.feed_poll_interval_s``), by the replica that holds the
    channel's lease."""
    await runtime.confirm_state()
    if await lease.hold():
        await tick(runtime, channel)


async def _rounds(
    runtime: StageRuntime,
    name: str,
    interval_s: float,
    job: Callable[[StageRuntime, Channel, Lock], Awaitable[None]],
    leases: dict[str, Lock],
) -> None:
    """``job``'s rounds for every active channel, each channel on a loop of its own (a slow round, a
    feed waiting for its createFeed token, holds up only its channel), at most
    ``inventory.max_concurrent_channels`` rounds at once (a thousand channels never run at once)."""
    turns = asyncio.Semaphore(runtime.settings.inventory.max_concurrent_channels)

    async def one_channel(channel: Channel) -> None:
        while True:
            async with turns:
                # Whatever fails (Amazon, Redis, the broker), the next round tries again.
                lease = leases.get(channel.name)
                if lease is None:  # a channel added while the stage runs
                    lease = leases[channel.name] = runtime.lease("inventory", channel.name)
                await runtime.survive(f"{name} {channel.name}", partial(job, runtime, channel, lease))
            await runtime.wakeups.pause(name, channel.name, interval_s)  # or at once: Synchronize now

    await runtime.each_active_channel(name, one_channel)


async def channel_rounds(runtime: StageRuntime) -> None:
    """Every active channel's feed and urgent rounds, forever (the stage's task)."""
    settings = runtime.settings.inventory
    # One replica sends a channel's feeds at a time (the flush is not atomic across workers).
    leases: dict[str, Lock] = {}
    try:
        # Two loops: a feed waiting for its createFeed token (minutes at Amazon's 30 an hour) or
        # polling its status never holds up the urgent levels, due on Amazon within a minute.
        await asyncio.gather(
            _rounds(runtime, "inventory", scaled(runtime, settings.feed_poll_interval_s), feed_step, leases),
            _rounds(runtime, FAST_TASK, scaled(runtime, settings.fast_interval_s), urgent_step, leases),
        )
    finally:
        for lease in leases.values():
            await asyncio.shield(lease.release())


def register(app: faust.App, runtime: StageRuntime) -> None:
    runtime.on_redis_reset(partial(rebuild_levels, runtime))

    @app.task  # type: ignore[untyped-decorator]
    async def watch_redis() -> None:
        await runtime.watch_generation()

    @app.agent(runtime.topic(INVENTORY_LEVELS), name="inventory-levels")
    async def levels(stream: faust.StreamT[bytes]) -> None:
        await runtime.consume(INVENTORY_LEVELS, stream, lambda env: handle(runtime, env))

    @app.agent(runtime.topic(ORDERS_IMPORTED), name="inventory-fba-skus")
    async def fba_skus(stream: faust.StreamT[bytes]) -> None:
        await runtime.consume(ORDERS_IMPORTED, stream, lambda env: note_fulfilled_by_amazon(runtime, env))

    @app.task  # type: ignore[untyped-decorator]
    async def feeds() -> None:
        await runtime.start()
        await channel_rounds(runtime)
