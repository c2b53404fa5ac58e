"""State that must be right, kept in Redis (not faust Tables): cursors, dedupe marks, the SKU listings,
sales-order codes, imported orders, shipment write-back status and task health.

Every write is idempotent, so a stage that re-processes an event after a crash (at-least-once) leaves
the same state. Every key comes from the catalogue (:mod:`ordersync.state.keys`), under
``settings.redis.key_prefix``, with the seller in a hash tag so one seller's keys share a Redis Cluster slot.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import UTC, datetime
from typing import Any, Literal, cast

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from ordersync.clock import SYSTEM_CLOCK, Clock
from ordersync.errors import StateLost
from ordersync.schemas.events import AmazonOrder, SalesOrder
from ordersync.settings import DEFAULT_PREFIX
from ordersync.state import keys
from ordersync.state.keys import ORDER_STATE_TTL_S
from ordersync.state.lifetime import DEFAULT_LIFETIME, OrderLifetime

# Keep a version only if it is newer than the stored one; returns 1 when stored.
_SET_IF_NEWER = """
local current = redis.call('GET', KEYS[1])
if current and current >= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""


#: Claim a version for sending (the claim holds "<version> <owner>"): 'sent' when it (or a newer one)
#: was recorded, 'claimed' when another owner holds a claim on it (or a newer one), else 'mine' with a
#: claim for ARGV[2] ms (an owner's own claim is taken again: it is trying once more).
_CLAIM_VERSION = """
local recorded = redis.call('GET', KEYS[1])
if recorded and recorded >= ARGV[1] then return 'sent' end
local claimed = redis.call('GET', KEYS[2])
if claimed then
  local version, owner = string.match(claimed, '^(%S+) (.*)$')
  if version and version >= ARGV[1] and owner ~= ARGV[3] then return 'claimed' end
end
redis.call('SET', KEYS[2], ARGV[1] .. ' ' .. ARGV[3], 'PX', ARGV[2])
return 'mine'
"""

#: DEL KEYS[1] if it still holds ARGV[1] (a claim is released only by its holder, for its version).
_RELEASE_IF = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

#: What :meth:`Store.claim_version` found.
VersionClaim = Literal["mine", "sent", "claimed"]


def newest_versions(orders: Iterable[AmazonOrder]) -> dict[tuple[str, str], datetime]:
    """Per (seller, order), the newest LastUpdateDate among ``orders``: dedupe marks read off a topic."""
    versions: dict[tuple[str, str], datetime] = {}
    for order in orders:
        key = (order.seller_id, order.amazon_order_id)
        versions[key] = max(versions.get(key, order.last_update_date), order.last_update_date)
    return versions


def _iso(value: datetime) -> str:
    # Fixed width, UTC, microseconds: lexicographic order is time order.
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


#: Keys written per pipeline when a rebuild puts state back.
RESTORE_BATCH = 1000

#: INCR a sequence that exists, else nil: a sequence Redis lost must not start again at 1.
_NEXT_IN_SEQUENCE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
return redis.call('INCR', KEYS[1])
"""

#: How far a rebuilt sequence resumes above the highest code on Kafka: codes the lost Redis gave to
#: orders still being imported (not on Kafka yet) are never given again. More than any stage has in
#: hand at once (one record per partition).
SEQUENCE_GAP_AFTER_LOSS = 100

#: SET key ARGV[1] unless the key already holds a larger number.
_RAISE_TO = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > current then redis.call('SET', KEYS[1], ARGV[1]) end
return current
"""


@dataclass(frozen=True)
class StoredOrder:
    """What Redis holds about one order for a stage deciding about it, read in one round trip
    (:meth:`Store.stored_order`)."""

    sales_order: SalesOrder | None
    status: dict[str, str]
    #: The version recorded under the mark asked for (fixed-width ISO text), or None.
    mark: str | None
    #: The values of the extra keys asked for, in order (None: no such key).
    extra: tuple[str | None, ...]
    #: The fields found of the hash looked up (field -> value), when one was asked for.
    looked_up: dict[str, str] = dataclass_field(default_factory=dict)

    def is_new_version(self, version: datetime) -> bool:
        """Is ``version`` newer than the one recorded under the mark (as :meth:`Store.is_new_version`)?"""
        return self.mark is None or self.mark < _iso(version)


#: Each package's reference id of an invoice, assigning the order's next number to those without one.
#: KEYS: the order's package sequence, then one package key per index; ARGV: the TTL.
_PACKAGE_REFERENCES = """
local found = {}
for i = 2, #KEYS do
  local reference = redis.call('GET', KEYS[i])
  if not reference then
    reference = tostring(redis.call('INCR', KEYS[1]))
    redis.call('SET', KEYS[i], reference, 'EX', ARGV[1])
  end
  found[#found + 1] = reference
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return found
"""

#: An invoice's quantities counted once: the invoice's marker, then HINCRBY per item; 0 when counted
#: before. KEYS: marker, requested hash; ARGV: TTL, then item, quantity pairs.
_ADD_REQUESTED = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return 0 end
for i = 2, #ARGV, 2 do redis.call('HINCRBY', KEYS[2], ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', KEYS[2], ARGV[1])
return 1
"""


def _queue_hset_expiring(
    pipe: Pipeline, key: str, fields: Mapping[str, str | int], ttl_s: int | None = None
) -> None:
    """HSET ``fields``; the hash then lives ``ttl_s`` (a writer that knows the order's life, see
    :mod:`ordersync.state.lifetime`), or, without one, keeps the life it has (a new hash: the order-state
    horizon): a status written by a stage that does not know the order never extends or cuts it."""
    pipe.hset(key, mapping={k: str(v) for k, v in fields.items()})
    if ttl_s is None:
        pipe.expire(key, ORDER_STATE_TTL_S, nx=True)
    else:
        pipe.expire(key, ttl_s)


@dataclass(frozen=True)
class ShipmentContext:
    """What the write-back reads about a package before deciding, in one round trip."""

    state: dict[str, str]
    sales_order: SalesOrder | None
    status: dict[str, str]
    #: The order was imported by ordersync (its import mark is there).
    imported: bool = False

    @property
    def closed(self) -> bool:
        """An imported order whose working state ended with its life (:mod:`ordersync.state.lifetime`)."""
        return self.imported and self.sales_order is None and not self.state


@dataclass(frozen=True)
class InvoiceContext:
    """What Redis holds for an invoice of an order, read in one round trip (:meth:`Store.invoice_context`)."""

    sales_order: SalesOrder | None
    #: This invoice was counted before (a replay): its quantities are not checked or added again.
    seen: bool
    #: Quantity per order item requested by earlier invoices.
    requested: dict[str, int]
    #: The order was imported by ordersync (its import mark is there).
    imported: bool = False

    @property
    def closed(self) -> bool:
        """An imported order whose working state ended with its life (:mod:`ordersync.state.lifetime`)."""
        return self.imported and self.sales_order is None


class Store:
    def __init__(
        self,
        redis: aioredis.Redis,
        prefix: str = DEFAULT_PREFIX,
        *,
        clock: Clock = SYSTEM_CLOCK,
        lifetime: OrderLifetime = DEFAULT_LIFETIME,
    ) -> None:
        """``clock``: what the task-health dates are written in and orders' lives are measured on (the
        stage's clock); ``lifetime``: how long an order's working state is kept."""
        self.redis = redis
        self.prefix = prefix
        self.clock = clock
        self.lifetime = lifetime
        self._set_if_newer = redis.register_script(_SET_IF_NEWER)
        self._claim_version = redis.register_script(_CLAIM_VERSION)
        self._release_if = redis.register_script(_RELEASE_IF)
        self._package_references = redis.register_script(_PACKAGE_REFERENCES)
        self._add_requested = redis.register_script(_ADD_REQUESTED)

    def key_of(self, family: keys.KeyFamily, *values: str) -> str:
        """The key of ``family`` (from the catalogue, :mod:`ordersync.state.keys`) for ``values``."""
        return family.key(self.prefix, *values)

    def ttl_of(self, order: SalesOrder | None) -> int | None:
        """Seconds a write of ``order``'s working state keeps it (None: the order is not known here)."""
        return None if order is None else self.lifetime.ttl_s(order, self.clock.now())

    def is_closed(self, order: SalesOrder) -> bool:
        """Has ``order``'s life ended (its working state is no longer kept)?"""
        return self.lifetime.closes_at(order) <= self.clock.now()

    # The client decodes responses (``decode_responses=True``): every value read back is a str.

    async def _get(self, key: str) -> str | None:
        value = await self.redis.get(key)
        return value.decode() if isinstance(value, bytes) else value

    async def _hgetall(self, key: str) -> dict[str, str]:
        return cast(dict[str, str], await self.redis.hgetall(key))

    async def _hset(self, key: str, fields: dict[str, str]) -> None:
        await self.redis.hset(key, mapping=cast(dict[Any, Any], fields))

    # --- download cursor and dedupe ---------------------------------------------------------------

    async def cursor(self, channel: str) -> datetime | None:
        raw = await self._get(self.key_of(keys.CURSOR, channel))
        return datetime.fromisoformat(raw.replace("Z", "+00:00")) if raw else None

    async def save_cursor(self, channel: str, value: datetime) -> None:
        await self.redis.set(self.key_of(keys.CURSOR, channel), _iso(value))

    async def is_new_version(self, mark: str, seller_id: str, order_id: str, version: datetime) -> bool:
        """Has this (seller, order, LastUpdateDate) not been recorded under ``mark`` yet?"""
        current = await self._get(self.key_of(keys.MARKS[mark], seller_id, order_id))
        return current is None or current < _iso(version)

    async def recorded_versions(
        self, mark: str, seller_id: str, order_ids: Sequence[str]
    ) -> dict[str, datetime]:
        """The version recorded under ``mark`` for each of ``order_ids`` that has one (MGET in batches)."""
        family = keys.MARKS[mark]
        found: dict[str, datetime] = {}
        for start in range(0, len(order_ids), RESTORE_BATCH):
            batch = list(order_ids[start : start + RESTORE_BATCH])
            values = cast(
                list[str | None], await self.redis.mget([self.key_of(family, seller_id, o) for o in batch])
            )
            for order_id, value in zip(batch, values, strict=True):
                if value:
                    found[order_id] = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return found

    async def stored_order(
        self,
        seller_id: str,
        order_id: str,
        *,
        mark: str,
        extra: Sequence[str] = (),
        lookup: tuple[str, Sequence[str]] | None = None,
    ) -> StoredOrder:
        """The order's sales order, status, version under ``mark``, the values of ``extra`` keys and the
        ``lookup`` (a hash and fields, e.g. the listings' stock codes of the order's items), in one round
        trip."""
        hash_key, fields = lookup if lookup is not None else ("", ())
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(self.key_of(keys.SALES_ORDER, seller_id, order_id))
            pipe.hgetall(self.key_of(keys.ORDER_STATUS, seller_id, order_id))
            pipe.get(self.key_of(keys.MARKS[mark], seller_id, order_id))
            if fields:
                pipe.hmget(hash_key, list(fields))
            for key in extra:
                pipe.get(key)
            sales, status, version, *values = await pipe.execute()
        found: dict[str, str] = {}
        if fields:
            hashed, *values = values
            found = {f: v for f, v in zip(fields, cast(list[str | None], hashed), strict=True) if v}
        return StoredOrder(
            sales_order=SalesOrder.model_validate_json(sales) if sales else None,
            status=cast(dict[str, str], status),
            mark=version,
            extra=tuple(values),
            looked_up=found,
        )

    async def mark_version_and_status(
        self,
        mark: str,
        seller_id: str,
        order_id: str,
        version: datetime,
        *,
        forget: Sequence[str] = (),
        ttl_s: int | None = None,
        **status: str | int,
    ) -> None:
        """:meth:`record_version` and :meth:`set_order_status` in one round trip; the keys in ``forget``
        (state the order no longer needs once marked) deleted in the same trip. ``ttl_s``: the status's
        life, from the order's (:meth:`ttl_of`)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            # EVAL, not the registered script: a script in a pipeline costs redis-py an extra trip
            # (SCRIPT EXISTS) on every execute; Redis caches the compiled body all the same.
            pipe.eval(
                _SET_IF_NEWER,
                1,
                self.key_of(keys.MARKS[mark], seller_id, order_id),
                _iso(version),
                ORDER_STATE_TTL_S,
            )
            self.queue_order_fields(pipe, seller_id, order_id, status, ttl_s=ttl_s)
            if forget:
                pipe.delete(*forget)
            await pipe.execute()

    async def record_version(self, mark: str, seller_id: str, order_id: str, version: datetime) -> bool:
        stored = await self._set_if_newer(
            keys=[self.key_of(keys.MARKS[mark], seller_id, order_id)], args=[_iso(version), ORDER_STATE_TTL_S]
        )
        return bool(stored)

    async def claim_version(
        self, mark: str, seller_id: str, order_id: str, version: datetime, *, ttl_s: float, owner: str
    ) -> VersionClaim:
        """Before ``owner`` sends (seller, order, ``version``): 'mine' (send it, then
        :meth:`record_sent`, or :meth:`release_claim` if it was not sent), 'sent' (recorded under ``mark``
        already), or
        'claimed' (another owner is sending it now; its claim lapses after ``ttl_s`` if it died)."""
        found = await self._claim_version(
            keys=[
                self.key_of(keys.MARKS[mark], seller_id, order_id),
                self.key_of(keys.DOWNLOAD_CLAIM, seller_id, order_id),
            ],
            args=[_iso(version), int(ttl_s * 1000), owner],
        )
        return cast(VersionClaim, found.decode() if isinstance(found, bytes) else found)

    async def record_sent(
        self, mark: str, seller_id: str, order_id: str, version: datetime, owner: str, **status: str | int
    ) -> None:
        """After Kafka acknowledged a claimed version: the order's status, the version's mark and the
        claim's release, in one round trip and in that order (MULTI: all or none), so the mark is
        never there without the status."""
        async with self.redis.pipeline(transaction=True) as pipe:
            self.queue_order_status(pipe, seller_id, order_id, **status)
            # EVAL, not the registered scripts: in a pipeline those cost a SCRIPT EXISTS trip.
            pipe.eval(
                _SET_IF_NEWER,
                1,
                self.key_of(keys.MARKS[mark], seller_id, order_id),
                _iso(version),
                ORDER_STATE_TTL_S,
            )
            pipe.eval(
                _RELEASE_IF,
                1,
                self.key_of(keys.DOWNLOAD_CLAIM, seller_id, order_id),
                f"{_iso(version)} {owner}",
            )
            await pipe.execute()

    async def release_claim(self, seller_id: str, order_id: str, version: datetime, owner: str) -> None:
        await self._release_if(
            keys=[self.key_of(keys.DOWNLOAD_CLAIM, seller_id, order_id)], args=[f"{_iso(version)} {owner}"]
        )

    async def restore_versions(self, mark: str, versions: Mapping[tuple[str, str], datetime]) -> None:
        """Dedupe marks read back from a topic (a rebuild): per (seller, order) the version given, unless
        Redis holds a newer one. Sent in pipelines of ``RESTORE_BATCH``."""
        family = keys.MARKS[mark]
        items = list(versions.items())
        for start in range(0, len(items), RESTORE_BATCH):
            async with self.redis.pipeline(transaction=False) as pipe:
                for (seller_id, order_id), version in items[start : start + RESTORE_BATCH]:
                    await self._set_if_newer(
                        keys=[self.key_of(family, seller_id, order_id)],
                        args=[_iso(version), ORDER_STATE_TTL_S],
                        client=pipe,
                    )
                await pipe.execute()

    async def forget_versions(self, seller_id: str, order_id: str, marks: tuple[str, ...]) -> None:
        await self.redis.delete(*(self.key_of(keys.MARKS[mark], seller_id, order_id) for mark in marks))

    # --- listings: Amazon seller SKU -> back-office stock code ----------------------------------

    async def set_listings(self, channel: str, mapping: dict[str, str]) -> None:
        if mapping:
            await self._hset(self.key_of(keys.LISTINGS, channel), mapping)

    async def stock_codes(self, channel: str, seller_skus: list[str]) -> dict[str, str]:
        if not seller_skus:
            return {}
        values = cast(
            list[str | None], await self.redis.hmget(self.key_of(keys.LISTINGS, channel), seller_skus)
        )
        return {sku: code for sku, code in zip(seller_skus, values, strict=True) if code}

    # --- sales orders -----------------------------------------------------------------------------

    async def sales_order_code(
        self,
        seller_id: str,
        order_id: str,
        prefix: str,
        *,
        sequence_kept: bool = False,
        known: str | None = None,
        read: bool = True,
    ) -> tuple[str, bool]:
        """The order's sales-order code, assigning the next of ``prefix``'s sequence on first call.

        Returns (code, newly_assigned). A code is never reused: the sequence only grows. A caller that
        read the code key in its own round trip passes ``read=False`` and the value as ``known``.
        ``sequence_kept``: the sequence exists already (a stage that rebuilds it from Kafka made it);
        if it is gone, Redis lost it and :class:`StateLost` is raised rather than starting at 1 again.
        """
        key = self.key_of(keys.SALES_ORDER_CODE, seller_id, order_id)
        # ``read=False``: the caller read the code key already (``known``: its value) in its own trip.
        existing = await self._get(key) if read else known
        if existing:
            return existing, False
        sequence = self.key_of(keys.SALES_ORDER_SEQUENCE, prefix)
        if sequence_kept:
            next_number = await self.redis.eval(_NEXT_IN_SEQUENCE, 1, sequence)
            if next_number is None:
                raise StateLost(f"the sales-order sequence of prefix {prefix!r} is not in Redis")
            number = int(next_number)
        else:
            number = await self.redis.incr(sequence)
        code = f"{prefix}{number:08d}"
        if await self.redis.set(key, code, nx=True, ex=ORDER_STATE_TTL_S):
            return code, True
        # Another worker assigned one in between: theirs stands; our number stays unused.
        return cast(str, await self._get(key)), False

    async def restore_sales_order(self, order: SalesOrder, imported_at: str) -> None:
        """Put back a sales order read from ``orders.imported`` (a rebuild): the order, its code, a
        sequence that never gives its number again, and its status as imported (so it is never
        published as new again). An order Redis still holds is left as it is. An order whose life ended
        (:mod:`ordersync.state.lifetime`) gets back only its code and import mark: it stays closed."""
        code_key = self.key_of(keys.SALES_ORDER_CODE, order.seller_id, order.amazon_order_id)
        if not await self.redis.set(code_key, order.code, nx=True, ex=ORDER_STATE_TTL_S):
            return
        if self.is_closed(order):
            # The mark says "imported"; the purchase date is older than any version, so every version
            # downloaded later is still compared with it (and found closed).
            await self._set_if_newer(
                keys=[self.key_of(keys.IMPORTED, order.seller_id, order.amazon_order_id)],
                args=[_iso(order.purchase_date), ORDER_STATE_TTL_S],
            )
            return
        await self.save_sales_order(order)
        async with self.redis.pipeline(transaction=False) as pipe:
            self.queue_order_fields(
                pipe,
                order.seller_id,
                order.amazon_order_id,
                {"stage": "imported", "sales_order_code": order.code, "imported_at": imported_at},
                ttl_s=self.ttl_of(order),
            )
            await pipe.execute()

    async def resume_sequences(self, highest: Mapping[str, int]) -> None:
        """After a rebuild, each prefix's sequence (every channel's prefix in ``highest``, 0 where none
        was used): above the highest number on Kafka by :data:`SEQUENCE_GAP_AFTER_LOSS` when there is
        one, else at least there; a sequence only ever grows."""
        for prefix, number in highest.items():
            resume = number + SEQUENCE_GAP_AFTER_LOSS if number else 0
            await self.redis.eval(_RAISE_TO, 1, self.key_of(keys.SALES_ORDER_SEQUENCE, prefix), resume)
            await self.redis.set(self.key_of(keys.SALES_ORDER_SEQUENCE, prefix), 0, nx=True)

    async def save_sales_order(self, order: SalesOrder) -> None:
        """Store the sales order for the order's life (:mod:`ordersync.state.lifetime`)."""
        await self.redis.set(
            self.key_of(keys.SALES_ORDER, order.seller_id, order.amazon_order_id),
            order.model_dump_json(),
            ex=self.lifetime.ttl_s(order, self.clock.now()),
        )

    async def was_imported(self, seller_id: str, order_id: str) -> bool:
        """Is the order imported (its sales order stored, or its import mark there: a closed order)?"""
        found = await self.redis.exists(
            self.key_of(keys.SALES_ORDER, seller_id, order_id),
            self.key_of(keys.IMPORTED, seller_id, order_id),
        )
        return bool(found)

    async def sales_order(self, seller_id: str, order_id: str) -> SalesOrder | None:
        raw = await self._get(self.key_of(keys.SALES_ORDER, seller_id, order_id))
        return SalesOrder.model_validate_json(raw) if raw else None

    # --- per-order status (for the status view) -------------------------------------------------

    async def set_order_status(self, seller_id: str, order_id: str, **fields: str | int) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            self.queue_order_fields(pipe, seller_id, order_id, fields)
            await pipe.execute()

    def queue_order_status(self, pipe: Pipeline, seller_id: str, order_id: str, **fields: str | int) -> None:
        """:meth:`set_order_status` queued on ``pipe``, to go with other writes in one round trip."""
        self.queue_order_fields(pipe, seller_id, order_id, fields)

    @staticmethod
    def queue_hash(
        pipe: Pipeline, key: str, fields: Mapping[str, str | int], *, ttl_s: int | None = None
    ) -> None:
        """HSET ``fields`` of a per-order hash, with its life as :func:`_queue_hset_expiring` keeps it."""
        _queue_hset_expiring(pipe, key, fields, ttl_s)

    def queue_order_fields(
        self,
        pipe: Pipeline,
        seller_id: str,
        order_id: str,
        fields: Mapping[str, str | int],
        *,
        ttl_s: int | None = None,
    ) -> None:
        """:meth:`queue_order_status` with ``ttl_s``, the order's life (:meth:`ttl_of`), from a writer that
        knows it."""
        _queue_hset_expiring(pipe, self.key_of(keys.ORDER_STATUS, seller_id, order_id), fields, ttl_s)

    async def order_status(self, seller_id: str, order_id: str) -> dict[str, str]:
        return await self._hgetall(self.key_of(keys.ORDER_STATUS, seller_id, order_id))

    # --- shipments: what was requested and confirmed per order item -----------------------------

    async def shipment_state(self, seller_id: str, order_id: str, package_id: str) -> dict[str, str]:
        key = self.key_of(keys.SHIPMENT, seller_id, order_id, package_id)
        return await self._hgetall(key)

    async def update_shipment_state(
        self, seller_id: str, order_id: str, package_id: str, **fields: str | int
    ) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            self.queue_shipment_state(pipe, seller_id, order_id, package_id, **fields)
            await pipe.execute()

    def queue_shipment_state(
        self, pipe: Pipeline, seller_id: str, order_id: str, package_id: str, **fields: str | int
    ) -> None:
        """:meth:`update_shipment_state` queued on ``pipe``."""
        self.queue_shipment_fields(pipe, seller_id, order_id, package_id, fields)

    def queue_shipment_fields(
        self,
        pipe: Pipeline,
        seller_id: str,
        order_id: str,
        package_id: str,
        fields: Mapping[str, str | int],
        *,
        ttl_s: int | None = None,
    ) -> None:
        """:meth:`queue_shipment_state` with ``ttl_s``, as :meth:`queue_order_fields`."""
        _queue_hset_expiring(pipe, self.key_of(keys.SHIPMENT, seller_id, order_id, package_id), fields, ttl_s)

    def queue_shipment_forget(
        self, pipe: Pipeline, seller_id: str, order_id: str, package_id: str, *fields: str
    ) -> None:
        """Deleting ``fields`` of the package's shipment state (no longer needed), queued on ``pipe``."""
        pipe.hdel(self.key_of(keys.SHIPMENT, seller_id, order_id, package_id), *fields)

    async def shipment_context(self, seller_id: str, order_id: str, package_id: str) -> ShipmentContext:
        """The package's shipment state, its order's sales order, status and import mark, in one round
        trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.key_of(keys.SHIPMENT, seller_id, order_id, package_id))
            pipe.get(self.key_of(keys.SALES_ORDER, seller_id, order_id))
            pipe.hgetall(self.key_of(keys.ORDER_STATUS, seller_id, order_id))
            pipe.exists(self.key_of(keys.IMPORTED, seller_id, order_id))
            state, sales, status, imported = await pipe.execute()
        return ShipmentContext(
            state=cast(dict[str, str], state),
            sales_order=SalesOrder.model_validate_json(sales) if sales else None,
            status=cast(dict[str, str], status),
            imported=bool(imported),
        )

    async def invoice_context(self, seller_id: str, order_id: str, invoice: str) -> InvoiceContext:
        """The order's sales order, whether this invoice was counted, what earlier invoices requested,
        and whether the order was imported, in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(self.key_of(keys.SALES_ORDER, seller_id, order_id))
            pipe.exists(self.key_of(keys.INVOICE_SEEN, seller_id, order_id, invoice))
            pipe.hgetall(self.key_of(keys.REQUESTED, seller_id, order_id))
            pipe.exists(self.key_of(keys.IMPORTED, seller_id, order_id))
            sales, seen, requested, imported = await pipe.execute()
        return InvoiceContext(
            sales_order=SalesOrder.model_validate_json(sales) if sales else None,
            seen=bool(seen),
            requested={item: int(qty) for item, qty in cast(dict[str, str], requested).items()},
            imported=bool(imported),
        )

    async def package_references(
        self,
        seller_id: str,
        order_id: str,
        invoice: str,
        indexes: Sequence[int],
        *,
        ttl_s: int = ORDER_STATE_TTL_S,
    ) -> list[str]:
        """Amazon's packageReferenceId for each package ``index`` of an invoice, in one round trip: a
        positive number unique within the order, the same every time this invoice is processed (one
        script, so two workers never give one package two numbers); kept ``ttl_s``, the order's life."""
        if not indexes:
            return []
        found = await self._package_references(
            keys=[
                self.key_of(keys.PACKAGE_SEQUENCE, seller_id, order_id),
                *(self.key_of(keys.PACKAGE, seller_id, order_id, invoice, str(index)) for index in indexes),
            ],
            args=[ttl_s],
        )
        return [value.decode() if isinstance(value, bytes) else str(value) for value in found]

    async def restore_package_references(
        self, seller_id: str, order_id: str, invoice: str, references: list[str]
    ) -> None:
        """An invoice's package reference ids again (a rebuild from ``shipments.requested``), in package
        order."""
        for index, reference in enumerate(references):
            key = self.key_of(keys.PACKAGE, seller_id, order_id, invoice, str(index))
            await self.redis.set(key, reference, ex=ORDER_STATE_TTL_S)

    async def restore_requested(
        self, seller_id: str, order_id: str, invoices: list[str], quantities: dict[str, int]
    ) -> None:
        """The order's invoices seen and its quantities requested per item, set to what the topic holds
        (a rebuild: whatever Redis kept of them half-written is replaced, never added to)."""
        key = self.key_of(keys.REQUESTED, seller_id, order_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            for invoice in invoices:
                pipe.set(
                    self.key_of(keys.INVOICE_SEEN, seller_id, order_id, invoice), "1", ex=ORDER_STATE_TTL_S
                )
            pipe.delete(key)
            if quantities:
                pipe.hset(key, mapping={item: str(qty) for item, qty in quantities.items()})
                pipe.expire(key, ORDER_STATE_TTL_S)
            await pipe.execute()

    async def resume_package_sequence(self, seller_id: str, order_id: str, highest: int) -> None:
        """The order's package reference ids continue above ``highest`` (the largest on the topic)."""
        sequence = self.key_of(keys.PACKAGE_SEQUENCE, seller_id, order_id)
        if int(await self._get(sequence) or 0) < highest:
            await self.redis.set(sequence, str(highest), ex=ORDER_STATE_TTL_S)

    async def add_requested(
        self, seller_id: str, order_id: str, invoice: str, quantities: dict[str, int]
    ) -> bool:
        """Record an invoice's quantities once; False when this invoice was recorded before."""
        added = await self._add_requested(
            keys=self._requested_keys(seller_id, order_id, invoice), args=self._requested_args(quantities)
        )
        return bool(added)

    def _requested_keys(self, seller_id: str, order_id: str, invoice: str) -> list[str]:
        return [
            self.key_of(keys.INVOICE_SEEN, seller_id, order_id, invoice),
            self.key_of(keys.REQUESTED, seller_id, order_id),
        ]

    @staticmethod
    def _requested_args(quantities: Mapping[str, int], ttl_s: int = ORDER_STATE_TTL_S) -> list[str | int]:
        return [ttl_s, *(part for item, qty in quantities.items() for part in (item, qty))]

    async def invoice_done(
        self,
        seller_id: str,
        order_id: str,
        invoice: str,
        quantities: Mapping[str, int] | None,
        *,
        ttl_s: int | None = None,
        **status: str | int,
    ) -> None:
        """After its requests went out: the invoice's quantities counted once (None: a replay, counted
        before) and the order's status, in one round trip; ``ttl_s``: the order's life."""
        async with self.redis.pipeline(transaction=False) as pipe:
            if quantities is not None:
                # EVAL in a pipeline: see mark_version_and_status.
                pipe.eval(
                    _ADD_REQUESTED,
                    2,
                    *self._requested_keys(seller_id, order_id, invoice),
                    *self._requested_args(quantities, ttl_s or ORDER_STATE_TTL_S),
                )
            self.queue_order_fields(pipe, seller_id, order_id, status, ttl_s=ttl_s)
            await pipe.execute()

    # --- task health ----------------------------------------------------------------------------

    async def record_task(self, task: str, scope: str, *, ok: bool, detail: str = "", **extra: Any) -> None:
        now = _iso(self.clock.now())
        fields: dict[str, str] = {"last_run": now}
        if ok:
            fields["last_success"] = now
            fields["last_result"] = detail
        else:
            fields["last_error"] = detail
            fields["last_error_at"] = now
        fields.update({k: json.dumps(v) if not isinstance(v, str) else v for k, v in extra.items()})
        # With the index the status model lists tasks from (no SCAN over the keyspace), in one round trip:
        # item fetch records a task per order.
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(self.key_of(keys.TASK, task, scope), mapping=cast(dict[Any, Any], fields))
        pipe.sadd(self.key_of(keys.TASKS), json.dumps([task, scope]))
        await pipe.execute()

    async def task(self, task: str, scope: str) -> dict[str, str]:
        return await self._hgetall(self.key_of(keys.TASK, task, scope))
