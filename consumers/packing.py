"""Easy Ship packing: a packed package of an Easy Ship order scheduled for Amazon's pick-up or drop-off.

- Input: ``packages.packed`` (the back-office or WMS); invalid records go to ``packages.packed.dlq`` with
  the reason.
- Output: ``packages.scheduled``: PackageScheduled (slot, Amazon's package id, invoice, tracking), or
  PackageSchedulingFailed with Amazon's code and message (or ordersync's reason when nothing was asked).
- Runs in the shipment-write-back stage: scheduling the package is how an Easy Ship order ships (Amazon
  refuses confirmShipment for it).
- Amazon operations and quotas: listHandoverSlots and createScheduledPackage (Easy Ship 2022-03-23,
  1 a second, burst 5, per seller), or createScheduledPackageBulk (the same quota) for the packages of a
  seller whose slot was chosen within ``writeback.easy_ship_bulk_window_s`` of each other (each is still
  listed with its own size: the bulk call takes none); getScheduledPackage when Amazon says the package
  exists already;
  getCatalogItem (2 a second, burst 2; cached ``products.cache_ttl_s``) when the packer sent no size.
- A slot filled between listing and scheduling (RetryableAfterGettingNewSlots, ScheduleWindowExpired)
  is retried with the next slot listed, up to :data:`MAX_SLOT_TRIES` times; sizes Amazon refuses, orders
  outside Easy Ship and other refusals are final; Amazon unavailable parks the record on the redrive
  tiers, and it fails only at the redrive deadline.
- State in Redis: the order's package outcome (``easyship``) and the record that decided it, for the
  order's life, so a replay is not scheduled twice, while a package refused before is tried again when
  the packer sends it again; rebuilt from ``packages.scheduled`` when Redis lost it.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from ordersync.amazon.client import SpApiClient
from ordersync.amazon.easyship import HandoverSlot, PackageRequest, PackageSize, ScheduledPackage
from ordersync.errors import AmazonRejected, AmazonUnavailable, Retryable
from ordersync.pipeline.feeds import scaled
from ordersync.pipeline.runtime import StageRuntime
from ordersync.schemas.envelope import Envelope, Event
from ordersync.schemas.events import (
    PackagePacked,
    PackageScheduled,
    PackageSchedulingFailed,
    PackedSize,
    SalesOrder,
)
from ordersync.schemas.topics import PACKAGES_SCHEDULED, order_key
from ordersync.state import keys
from ordersync.state.products import ProductCatalog

log = logging.getLogger(__name__)

EASY_SHIP = "AMAZON_EASY_SHIP"
#: Slots tried for one package when each fills up before it is scheduled.
MAX_SLOT_TRIES = 3
#: Amazon's codes for "this slot is gone: list the slots again and take another".
NEXT_SLOT_CODES = frozenset({"RetryableAfterGettingNewSlots", "ScheduleWindowExpired"})
#: Amazon's code for an order whose package is scheduled already (a retry after an unknown outcome).
ALREADY_SCHEDULED = "ScheduledPackageAlreadyExists"
Refusal = Literal["next-slot", "already-scheduled", "final"]
BULK = "createScheduledPackageBulk"


class NotScheduled(Exception):
    """Why ordersync did not (or Amazon would not) schedule the package: a final outcome."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def refusal(error: AmazonRejected) -> Refusal:
    """What Amazon's refusal of createScheduledPackage means for the package."""
    if error.code in NEXT_SLOT_CODES:
        return "next-slot"
    if error.code == ALREADY_SCHEDULED:
        return "already-scheduled"
    return "final"


def choose_slot(
    slots: Sequence[HandoverSlot], preferred: str, handover: str | None, tried: set[str]
) -> HandoverSlot | None:
    """The packer's slot when Amazon still lists it, else the earliest (of the handover method asked for)
    not tried yet; None when none is left."""
    usable = [s for s in slots if s.slot_id not in tried and handover in (None, s.handover_method)]
    for slot in usable:
        if slot.slot_id == preferred:
            return slot
    return usable[0] if usable else None


def size_of(size: PackedSize) -> PackageSize:
    return PackageSize(size.length_cm, size.width_cm, size.height_cm, size.weight_g)


def eligibility(sales_order: SalesOrder | None, marketplace: str | None) -> NotScheduled | None:
    """Why the package cannot be scheduled before asking Amazon, or None."""
    if marketplace is None:
        return NotScheduled("UnknownMarketplace", "no marketplace known for the order: it was not imported")
    if sales_order is not None and EASY_SHIP not in sales_order.programs:
        return NotScheduled(
            "NotEasyShip", "the order is not in Amazon's Easy Ship programme: confirm its shipment instead"
        )
    return None


async def proposed_size(
    runtime: StageRuntime, client: SpApiClient, sales_order: SalesOrder | None, marketplace: str
) -> PackedSize:
    """The package size of a one-unit order's product, from Amazon's catalog (cached)."""
    lines = sales_order.lines if sales_order is not None else ()
    if len(lines) != 1 or lines[0].quantity != 1:
        raise NotScheduled(
            "SizeMissing", "send the package's dimensions and weight: only a one-unit order's is proposed"
        )
    settings = runtime.settings
    catalog = ProductCatalog(runtime.store.redis, settings.redis.key_prefix, settings.products.cache_ttl_s)
    try:
        product, _ = await catalog.product(client, marketplace, asin=lines[0].asin)
    except AmazonRejected as exc:
        raise NotScheduled(
            exc.code, f"no size sent, and Amazon's catalog has none: {exc.amazon_message}"
        ) from exc
    package = product.package
    if package.length_cm is None or package.width_cm is None or package.height_cm is None:
        raise NotScheduled(
            "SizeMissing", f"send the package's size: Amazon's catalog has none for {product.asin}"
        )
    if package.weight_g is None:
        raise NotScheduled(
            "SizeMissing", f"send the package's weight: Amazon's catalog has none for {product.asin}"
        )
    return PackedSize(
        length_cm=package.length_cm,
        width_cm=package.width_cm,
        height_cm=package.height_cm,
        weight_g=package.weight_g,
    )


@dataclass
class _Batch:
    client: SpApiClient
    marketplace: str
    waiting: list[tuple[PackageRequest, asyncio.Future[ScheduledPackage]]] = field(default_factory=list)


class BulkScheduler:
    """Packages of one seller and marketplace whose slot was chosen at about the same time (within
    ``window_s``), scheduled together in one createScheduledPackageBulk call; each caller gets its own
    package, or Amazon's refusal of its order as :class:`AmazonRejected` (the same codes as
    createScheduledPackage's, so a slot filled in between is retried the same way). A package alone in
    its window goes by createScheduledPackage."""

    def __init__(self, window_s: float, max_packages: int) -> None:
        self.window_s = window_s
        self.max_packages = max_packages
        self._open: dict[tuple[str, str], _Batch] = {}
        self._flushing: set[asyncio.Task[None]] = set()

    async def schedule(
        self, client: SpApiClient, marketplace: str, request: PackageRequest
    ) -> ScheduledPackage:
        key = (client.seller_id, marketplace)
        batch = self._open.get(key)
        loop = asyncio.get_running_loop()
        if batch is None:
            batch = self._open[key] = _Batch(client, marketplace)
            loop.call_later(self.window_s, self._close, key, batch)
        future: asyncio.Future[ScheduledPackage] = loop.create_future()
        batch.waiting.append((request, future))
        if len(batch.waiting) >= self.max_packages:
            self._close(key, batch)
        return await future

    def _close(self, key: tuple[str, str], batch: _Batch) -> None:
        if self._open.get(key) is not batch:
            return  # closed already (full before its window ended)
        del self._open[key]
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def _send(self, batch: _Batch) -> None:
        futures = {request.amazon_order_id: future for request, future in batch.waiting}
        try:
            outcomes = await self._outcomes(batch)
        except Exception as exc:  # every caller gets the call's failure, to handle as its own
            outcomes = dict.fromkeys(futures, exc)
        for order_id, future in futures.items():
            if future.done():
                continue  # its caller is gone (the worker is stopping)
            outcome = outcomes.get(order_id)
            if isinstance(outcome, ScheduledPackage):
                future.set_result(outcome)
            else:
                future.set_exception(
                    outcome
                    if isinstance(outcome, BaseException)
                    else AmazonUnavailable(BULK, None, "Missing", f"order {order_id} not in Amazon's answer")
                )

    @staticmethod
    async def _outcomes(batch: _Batch) -> dict[str, ScheduledPackage | Exception]:
        requests = [request for request, _ in batch.waiting]
        if len(requests) == 1:
            (one,) = requests
            package = await batch.client.create_scheduled_package(
                batch.marketplace,
                one.amazon_order_id,
                one.slot,
                order_item_ids=one.order_item_ids,
                identifier=one.identifier,
            )
            return {one.amazon_order_id: package}
        answer = await batch.client.create_scheduled_packages(batch.marketplace, requests)
        outcomes: dict[str, ScheduledPackage | Exception] = {p.amazon_order_id: p for p in answer.scheduled}
        for rejected in answer.rejected:
            outcomes[rejected.amazon_order_id] = AmazonRejected(BULK, 400, rejected.code, rejected.message)
        log.info(
            "%s: %d Easy Ship packages in one bulk call: %d scheduled, %d refused",
            batch.client.seller_id,
            len(requests),
            len(answer.scheduled),
            len(answer.rejected),
        )
        return outcomes


_BULK: weakref.WeakKeyDictionary[StageRuntime, BulkScheduler] = weakref.WeakKeyDictionary()


def bulk_scheduler(runtime: StageRuntime) -> BulkScheduler | None:
    """The worker's bulk scheduler (None: ``writeback.easy_ship_bulk_window_s`` 0, one call a package)."""
    settings = runtime.settings.writeback
    if settings.easy_ship_bulk_window_s <= 0:
        return None
    if runtime not in _BULK:
        _BULK[runtime] = BulkScheduler(
            scaled(runtime, settings.easy_ship_bulk_window_s), settings.easy_ship_bulk_max
        )
    return _BULK[runtime]


async def schedule(
    client: SpApiClient,
    packed: PackagePacked,
    marketplace: str,
    size: PackageSize,
    item_ids: tuple[str, ...],
    *,
    bulk: BulkScheduler | None = None,
) -> tuple[ScheduledPackage, int]:
    """List the slots, schedule in the chosen one (with other packages of the seller in one bulk call
    where ``bulk`` finds some), and take the next when it filled in between; returns the package and the
    scheduling attempts made."""
    tried: set[str] = set()
    attempts = 0
    while True:
        try:
            slots = await client.list_handover_slots(marketplace, packed.amazon_order_id, size)
        except AmazonRejected as exc:
            raise NotScheduled(exc.code, exc.amazon_message) from exc
        slot = choose_slot(slots, packed.slot, packed.handover, tried)
        if slot is None or attempts >= MAX_SLOT_TRIES:
            raise NotScheduled(
                "NoHandoverSlot",
                f"no handover slot left after {attempts} tried"
                if attempts
                else "Amazon offers no handover slot",
            )
        attempts += 1
        request = PackageRequest(packed.amazon_order_id, slot, item_ids, packed.identifier)
        try:
            if bulk is not None:
                return await bulk.schedule(client, marketplace, request), attempts
            package = await client.create_scheduled_package(
                marketplace,
                packed.amazon_order_id,
                slot,
                order_item_ids=item_ids,
                identifier=packed.identifier,
            )
            return package, attempts
        except AmazonRejected as exc:
            kind = refusal(exc)
            if kind == "already-scheduled":
                # Scheduled by an earlier try whose answer was lost: Amazon's record is the outcome.
                return await client.get_scheduled_package(marketplace, packed.amazon_order_id), attempts
            if kind == "final":
                raise NotScheduled(exc.code, exc.amazon_message) from exc
            tried.add(slot.slot_id)
            log.info(
                "slot %s of order %s filled before scheduling: trying the next",
                slot.slot_id,
                packed.amazon_order_id,
            )


def _state_key(runtime: StageRuntime, seller: str, order_id: str) -> str:
    return runtime.store.key_of(keys.EASY_SHIP_PACKAGE, seller, order_id)


async def handle(runtime: StageRuntime, envelope: Envelope[Event]) -> None:
    packed = envelope.payload_as(PackagePacked)
    seller = envelope.seller_id
    store = runtime.store
    async with store.redis.pipeline(transaction=False) as pipe:
        pipe.hmget(_state_key(runtime, seller, packed.amazon_order_id), ["status", "event"])
        pipe.get(store.key_of(keys.SALES_ORDER, seller, packed.amazon_order_id))
        (status, decided_by), raw_order = await pipe.execute()
    if status == "Scheduled" or (status == "Failed" and decided_by == str(envelope.event_id)):
        # A replay (its outcome was published), or a package scheduled already. A package refused before
        # is tried again when the packer sends it again (a new event: another size, another slot).
        return
    sales_order = SalesOrder.model_validate_json(raw_order) if raw_order else None
    marketplace = envelope.marketplace_id or (sales_order.marketplace_id if sales_order else None)
    attempts = 0
    try:
        refused = eligibility(sales_order, marketplace)
        if refused is not None:
            raise refused
        assert marketplace is not None
        client = runtime.amazon(runtime.channels.by_name(packed.channel))
        size_from: Literal["packer", "catalog"] = "packer"
        size = packed.size
        if size is None:
            size, size_from = await proposed_size(runtime, client, sales_order, marketplace), "catalog"
        problems = size_of(size).problems()
        if problems:
            raise NotScheduled("InvalidSize", "; ".join(problems))
        item_ids = tuple(item.order_item_id for item in packed.items)
        package, attempts = await schedule(
            client, packed, marketplace, size_of(size), item_ids, bulk=bulk_scheduler(runtime)
        )
    except NotScheduled as why:
        failed = _failure(runtime, packed, why.code, why.message, attempts)
        await _publish(runtime, envelope, failed, sales_order, {"status": "Failed", "error": str(why)})
        return
    except Retryable as exc:
        if not runtime.last_try():
            raise  # parked on the redrive tiers, tried again later
        failed = _failure(runtime, packed, "AmazonUnavailable", str(exc), attempts)
        await _publish(runtime, envelope, failed, sales_order, {"status": "Failed", "error": str(exc)})
        return
    scheduled = PackageScheduled(
        channel=packed.channel,
        amazon_order_id=packed.amazon_order_id,
        scheduled_package_id=package.package_id,
        slot_id=package.slot.slot_id,
        slot_start=package.slot.start,
        slot_end=package.slot.end,
        handover=package.slot.handover_method,
        status=package.status,
        invoice_number=package.invoice_number,
        tracking_id=package.tracking_id,
        size=size,
        size_from=size_from,
        attempts=max(attempts, 1),
        scheduled_at=runtime.clock.now(),
    )
    state = {"status": "Scheduled", "package_id": package.package_id or "", "slot": package.slot.slot_id}
    await _publish(runtime, envelope, scheduled, sales_order, state)


def _failure(
    runtime: StageRuntime, packed: PackagePacked, code: str, message: str, attempts: int
) -> PackageSchedulingFailed:
    return PackageSchedulingFailed(
        channel=packed.channel,
        amazon_order_id=packed.amazon_order_id,
        error_code=code,
        error_message=message or code,
        attempts=attempts,
        failed_at=runtime.clock.now(),
    )


async def _publish(
    runtime: StageRuntime,
    envelope: Envelope[Event],
    event: PackageScheduled | PackageSchedulingFailed,
    sales_order: SalesOrder | None,
    state: dict[str, str],
) -> None:
    """Publish the outcome, then record it (the record says the event went out), for the order's life."""
    seller, order_id = envelope.seller_id, event.amazon_order_id
    await runtime.emit(
        PACKAGES_SCHEDULED,
        order_key(seller, order_id),
        Envelope.wrap(
            event,
            seller_id=seller,
            marketplace_id=envelope.marketplace_id,
            correlation_id=envelope.correlation_id,
        ),
    )
    store = runtime.store
    key = _state_key(runtime, seller, order_id)
    async with store.redis.pipeline(transaction=False) as pipe:
        recorded = {**state, "event": str(envelope.event_id)}
        store.queue_hash(pipe, key, recorded, ttl_s=store.ttl_of(sales_order) or keys.ORDER_STATE_TTL_S)
        store.queue_order_status(pipe, seller, order_id, easy_ship=state["status"])
        await pipe.execute()


async def rebuild_outcomes(runtime: StageRuntime) -> int:
    """Every package outcome again from ``packages.scheduled``, for a Redis that lost them: a replayed
    package stays a no-op. Returns the outcomes read."""
    sellers = {channel.name: channel.seller_id for channel in runtime.channels.channels}
    restored = 0
    for envelope in await runtime.read_events(PACKAGES_SCHEDULED):
        payload = envelope.payload
        if not isinstance(payload, PackageScheduled | PackageSchedulingFailed):
            continue
        if sellers.get(payload.channel) != envelope.seller_id:
            continue  # another deployment's channel on a shared cluster
        status = "Scheduled" if isinstance(payload, PackageScheduled) else "Failed"
        key = _state_key(runtime, envelope.seller_id, payload.amazon_order_id)
        async with runtime.store.redis.pipeline(transaction=False) as pipe:
            runtime.store.queue_hash(pipe, key, {"status": status})
            await pipe.execute()
        restored += 1
    log.warning("Easy Ship package outcomes rebuilt from %s: %d", PACKAGES_SCHEDULED.name, restored)
    return restored
