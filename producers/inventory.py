"""Inventory: the back-office's stock levels to Amazon, one JSON_LISTINGS_FEED per seller per interval.

- Input: ``inventory.levels`` (``InventoryLevelChanged``, key ``seller_id:sku``; the latest value wins,
  an older observation never overwrites a newer one).
- Output: Amazon. Every ``ratelimit.inventory_flush_interval_s`` (default hourly) each active channel
  with changed quantities gets one JSON_LISTINGS_FEED (PATCH of ``fulfillment_availability``, at most
  ``inventory.max_messages`` = 25,000 messages; more wait for the next interval).
- Amazon operations and quotas (per seller, through the rate limiter): ``createFeed`` on the
  ``inventory`` lane, which holds a reserved token per flush interval (shipment feeds on the
  ``packing`` lane cannot starve it), together with JSON_LISTINGS_FEED's own 5 per 5 minutes;
  ``getFeed`` and ``getFeedDocument`` to read the processing report.
- State in Redis, per seller: the latest quantity per SKU (``inv-latest``), the quantity Amazon last
  accepted (``inv-sent``), the SKUs to send (``inv-pending``: latest differs from sent, so unchanged
  values are never sent again), the feed in flight (``inv-inflight``), and per-SKU errors from the
  reports (``inv-errors``: code, message, quantity, feed; cleared when the SKU is accepted), readable
  with :func:`sku_errors`. Each flush is recorded as task health ``inventory``.
- "Stock only" channels (no order import) run this stage alone.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import UTC, datetime
from typing import Any, cast

import faust

from ordersync.amazon.feeds import (
    JSON_CONTENT_TYPE,
    FeedsClient,
    listings_quantity_feed,
    parse_processing_report,
)
from ordersync.channels import Channel
from ordersync.clock import epoch_seconds
from ordersync.errors import Permanent, QuotaUnavailable, Retryable, Throttled
from ordersync.runtime import StageRuntime
from ordersync.schemas.envelope import Envelope, Event
from ordersync.schemas.events import InventoryLevelChanged
from ordersync.schemas.topics import INVENTORY_LEVELS

log = logging.getLogger(__name__)
STAGE = "inventory"
FEED_TYPE = "JSON_LISTINGS_FEED"
TASK = "inventory"
#: A worker that dies holding a seller's lock blocks that seller's inventory steps this long at most.
LOCK_TTL_S = 600.0

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

# Remove SKUs from pending only where the pending quantity is still the one sent (a newer value
# that arrived meanwhile stays pending). ARGV: sku1, qty1, sku2, qty2, ...
_TAKE = """
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then redis.call('HDEL', KEYS[1], ARGV[i]) end
end
return 1
"""


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _key(runtime: StageRuntime, name: str, seller: str) -> str:
    return runtime.store.key(name, f"{{{seller}}}")


def scaled(runtime: StageRuntime, seconds: float) -> float:
    """Amazon-time seconds as wall seconds (the simulator may run faster than real time)."""
    return seconds / runtime.settings.amazon.time_scale


async def handle(runtime: StageRuntime, envelope: Envelope[Event]) -> None:
    level = envelope.payload_as(InventoryLevelChanged)
    channel = runtime.channels.by_name(level.channel)
    if channel.seller_id != envelope.seller_id:
        raise Permanent(f"channel {channel.name} is not seller {envelope.seller_id}'s")
    seller = channel.seller_id
    redis = runtime.store.redis
    await redis.eval(
        _OBSERVE,
        3,
        _key(runtime, "inv-latest", seller),
        _key(runtime, "inv-sent", seller),
        _key(runtime, "inv-pending", seller),
        level.seller_sku,
        str(level.quantity),
        _iso(level.observed_at),
    )


async def pending(runtime: StageRuntime, seller: str) -> dict[str, int]:
    raw = cast(dict[str, str], await runtime.store.redis.hgetall(_key(runtime, "inv-pending", seller)))
    return {sku: int(qty) for sku, qty in raw.items()}


async def sent(runtime: StageRuntime, seller: str) -> dict[str, int]:
    raw = cast(dict[str, str], await runtime.store.redis.hgetall(_key(runtime, "inv-sent", seller)))
    return {sku: int(qty) for sku, qty in raw.items()}


async def sku_errors(runtime: StageRuntime, seller: str) -> dict[str, dict[str, Any]]:
    """Per SKU, the error Amazon's last report gave for it (code, message, quantity, feed_id, at)."""
    raw = cast(dict[str, str], await runtime.store.redis.hgetall(_key(runtime, "inv-errors", seller)))
    return {sku: json.loads(value) for sku, value in raw.items()}


class _Lock:
    def __init__(self, runtime: StageRuntime, seller: str, ttl_s: float) -> None:
        self.redis = runtime.store.redis
        self.key = _key(runtime, "inv-lock", seller)
        self.token = f"{id(self)}-{time.monotonic()}"
        self.ttl_ms = max(1000, int(ttl_s * 1000))

    async def __aenter__(self) -> bool:
        return bool(await self.redis.set(self.key, self.token, nx=True, px=self.ttl_ms))

    async def __aexit__(self, *exc: object) -> None:
        if await self.redis.get(self.key) == self.token:
            await self.redis.delete(self.key)


async def flush(runtime: StageRuntime, channel: Channel) -> str | None:
    """Send the seller's changed quantities in one JSON_LISTINGS_FEED (none while one is in flight);
    returns the feed id."""
    seller = channel.seller_id
    settings = runtime.settings.inventory
    async with _Lock(runtime, seller, scaled(runtime, LOCK_TTL_S)) as held:
        if not held:
            return None
        inflight_key = _key(runtime, "inv-inflight", seller)
        if await runtime.store.redis.exists(inflight_key):
            return None
        todo = sorted((await pending(runtime, seller)).items())[: settings.max_messages]
        if not todo:
            await runtime.store.record_task(TASK, channel.name, ok=True, detail="nothing changed")
            return None
        batch = {index: (sku, qty) for index, (sku, qty) in enumerate(todo, start=1)}
        content = listings_quantity_feed(seller, ((i, sku, qty) for i, (sku, qty) in batch.items()))
        feeds = FeedsClient(runtime.amazon(channel))
        try:
            feed_id = await feeds.submit(
                FEED_TYPE, content, JSON_CONTENT_TYPE, lane=runtime.settings.ratelimit.inventory_lane
            )
        except (Throttled, QuotaUnavailable, Retryable, Permanent) as exc:
            # Still pending: the next interval sends them (with whatever changed meanwhile).
            await runtime.store.record_task(TASK, channel.name, ok=False, detail=f"feed not sent: {exc}")
            log.warning("%s: inventory feed not sent: %s", channel.name, exc)
            return None
        async with runtime.store.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                inflight_key,
                mapping={
                    "feed_id": feed_id,
                    "batch": json.dumps({str(i): [sku, qty] for i, (sku, qty) in batch.items()}),
                    "started": str(epoch_seconds(runtime.clock)),
                },
            )
            pipe.eval(
                _TAKE,
                1,
                _key(runtime, "inv-pending", seller),
                *(part for sku, qty in todo for part in (sku, str(qty))),
            )
            await pipe.execute()
        log.info("%s: inventory feed %s with %d SKUs", channel.name, feed_id, len(batch))
        return feed_id


async def check_inflight(runtime: StageRuntime, channel: Channel) -> bool:
    """One look at the seller's inventory feed in flight: True when settled (or there is none)."""
    seller = channel.seller_id
    settings = runtime.settings.inventory
    async with _Lock(runtime, seller, scaled(runtime, LOCK_TTL_S)) as held:
        if not held:
            return False
        inflight_key = _key(runtime, "inv-inflight", seller)
        record = cast(dict[str, str], await runtime.store.redis.hgetall(inflight_key))
        if not record:
            return True
        feed_id = record["feed_id"]
        batch = {int(k): (str(v[0]), int(v[1])) for k, v in json.loads(record["batch"]).items()}
        feeds = FeedsClient(runtime.amazon(channel))
        feed = await runtime.retrying(f"getFeed {feed_id}", lambda: feeds.get_feed(feed_id))
        if not feed.done:
            if epoch_seconds(runtime.clock) - float(record.get("started", "0")) < scaled(
                runtime, settings.feed_timeout_s
            ):
                return False
            await _give_back(runtime, seller, batch, f"feed {feed_id} still {feed.processing_status}")
            return True
        document_id = feed.result_feed_document_id
        if feed.processing_status != "DONE" or not document_id:
            await _give_back(runtime, seller, batch, f"feed {feed_id} ended {feed.processing_status}")
            await runtime.store.record_task(TASK, channel.name, ok=False, detail=f"feed {feed_id} failed")
            return True
        content = await runtime.retrying(
            f"getFeedDocument {document_id}", lambda: feeds.get_feed_document(document_id)
        )
        await _apply_report(runtime, channel, feed_id, batch, content)
        return True


async def _give_back(runtime: StageRuntime, seller: str, batch: dict[int, tuple[str, int]], why: str) -> None:
    """A feed that did not apply: its SKUs go back to pending unless a newer value is there already."""
    log.warning("%s: inventory feed not applied (%s); sent again next interval", seller, why)
    pending_key = _key(runtime, "inv-pending", seller)
    async with runtime.store.redis.pipeline(transaction=True) as pipe:
        for sku, qty in batch.values():
            pipe.hsetnx(pending_key, sku, str(qty))
        pipe.delete(_key(runtime, "inv-inflight", seller))
        await pipe.execute()


async def _apply_report(
    runtime: StageRuntime, channel: Channel, feed_id: str, batch: dict[int, tuple[str, int]], content: bytes
) -> None:
    seller = channel.seller_id
    report = parse_processing_report(content)
    errors = report.errors_by_message()
    at = _iso(runtime.clock.now())
    accepted = refused = 0
    async with runtime.store.redis.pipeline(transaction=True) as pipe:
        for message_id, (sku, qty) in batch.items():
            problems = errors.get(message_id)
            if problems:
                refused += 1
                pipe.hset(
                    _key(runtime, "inv-errors", seller),
                    sku,
                    json.dumps(
                        {
                            "code": problems[0].code,
                            "message": "; ".join(p.description for p in problems),
                            "quantity": qty,
                            "feed_id": feed_id,
                            "at": at,
                        }
                    ),
                )
            else:
                accepted += 1
                pipe.hset(_key(runtime, "inv-sent", seller), sku, str(qty))
                pipe.hdel(_key(runtime, "inv-errors", seller), sku)
        pipe.delete(_key(runtime, "inv-inflight", seller))
        await pipe.execute()
    await runtime.store.record_task(
        TASK,
        channel.name,
        ok=refused == 0,
        detail=f"feed {feed_id}: {accepted} accepted, {refused} refused",
        feed_id=feed_id,
        accepted=accepted,
        refused=refused,
    )


async def tick(runtime: StageRuntime, channel: Channel) -> str | None:
    """Settle the feed in flight; when the flush interval has passed, send the next."""
    seller = channel.seller_id
    if not await check_inflight(runtime, channel):
        return None
    key = _key(runtime, "inv-last-flush", seller)
    interval_s = scaled(runtime, runtime.settings.ratelimit.inventory_flush_interval_s)
    last = await runtime.store.redis.get(key)
    if last is not None and epoch_seconds(runtime.clock) - float(last) < interval_s:
        return None
    await runtime.store.redis.set(key, str(epoch_seconds(runtime.clock)), ex=max(1, int(interval_s) + 1))
    return await flush(runtime, channel)


def register(app: faust.App, runtime: StageRuntime) -> None:
    @app.agent(runtime.topic(INVENTORY_LEVELS), name="inventory-levels")
    async def levels(stream: faust.StreamT[bytes]) -> None:
        await runtime.start()
        async for event in stream.events():
            await runtime.process(INVENTORY_LEVELS, event, lambda env: handle(runtime, env))

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
                    if not channel.active or not await leases[channel.name].hold():
                        continue
                    try:
                        await tick(runtime, channel)
                    except (Permanent, Retryable, Throttled) as exc:
                        log.warning("%s: inventory step failed, next tick retries: %s", channel.name, exc)
                await asyncio.sleep(poll_s)
        finally:
            for lease in leases.values():
                await asyncio.shield(lease.release())
