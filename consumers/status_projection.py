"""Status projection: folds every outcome topic into the Redis read model behind ``ordersync orders
list|show``, ``ordersync status``, ``ordersync export failed`` and the dashboard.

- Input (consumer group ``ordersync-status-projection``, suffixed with the Redis key prefix when it is
  not the default ``os``; from the earliest offset on first start):
  ``amazon.orders.downloaded``, ``amazon.orders.enriched``, ``orders.imported``,
  ``orders.import-failed``, ``invoices.issued``, ``shipments.requested``, ``shipments.confirmed``,
  ``shipments.failed``, ``orders.cancellation-requested``, ``orders.cancellation-results``,
  ``orders.acknowledgement-results``, ``packages.scheduled``, ``packages.documents``, ``ops.commands``
  and every ``.dlq`` topic (the list is
  :data:`ordersync.state.readmodel.FOLDED_TOPICS`).
- Output: none on Kafka; the read model in Redis (:class:`ordersync.state.readmodel.ReadModel`), with
  the Trends page's hourly and daily counts (:mod:`ordersync.state.trends`: orders downloaded,
  imported, confirmed, failures by reason, the write-back lag) written with each order's facts, and
  notifications on the health board: ``dlq-growth`` when a dead-letter topic receives records,
  ``late-shipment`` when an order is folded as confirmed after its latest ship date.
- Ship-by deadlines: every 5 minutes (Amazon's time) one ``ship-by`` notification per seller with orders
  awaiting shipment whose latest ship date is past or within ``health.ship_by_lead_s`` (how many, the
  earliest order ids; held back an hour per seller); task health ``ship-by-watch``.
- Retention: every hour (Amazon's time) the orders last updated more than
  ``status_model.retention_days`` ago (120 days, the per-order stage state's horizon) leave the read
  model, facts, row and index entries, in batches until none is left (:meth:`ReadModel.prune`; an order
  folding a new fact meanwhile stays); task health ``read-model-retention`` with how many. Any number of
  replicas may do it: an order is removed once.
- Amazon operations and quotas: none.
- Buyers' personal data: every hour (Amazon's time) where a key-encryption key is configured, the data
  keys whose day of deliveries ended 30 days ago are destroyed (:meth:`KeyRing.shred_due`), which makes
  every copy of what they sealed unreadable; task health ``privacy-shredding``. Any number of replicas
  may do it: destroying a key twice is harmless.
- A record that does not decode is skipped with a log line and counted (``ordersync status`` shows the
  count): it is already the DLQ matter of the stage that consumes it, and this stage never writes to a
  DLQ. Redis unavailable: the record is retried until Redis answers, nothing is skipped.
- Rebuild from the topics: by itself when it finds Redis without the model (its generation marker
  gone: Redis restarted empty, a failover to a replica that lagged), before it folds another record;
  by hand with ``ordersync status-model rebuild`` (the fold is idempotent and order-insensitive, so a
  rebuild while this stage runs is safe). A rebuild folds back orders past the retention that the
  topics still hold; the next hourly pruning removes them again.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from functools import partial
from typing import Any

import faust

from ordersync.errors import InvalidEvent
from ordersync.ops.alerts import run_alerts
from ordersync.pipeline.runtime import StageRuntime
from ordersync.schemas.envelope import Envelope, Event
from ordersync.schemas.topics import TopicSpec
from ordersync.settings import DEFAULT_PREFIX
from ordersync.state.health import HealthBoard
from ordersync.state.readmodel import FOLDED_TOPICS, PRUNE_BATCH, ReadModel, ShipmentTimeliness
from ordersync.state.readmodel.rebuild import RebuildResult, rebuild

log = logging.getLogger(__name__)
STAGE = "status-projection"
SHRED_TASK = "privacy-shredding"
#: How often (Amazon's seconds) the keys due are destroyed: data lives at most this much past its 30 days.
SHRED_CHECK_S = 3600.0
SHIP_BY_TASK = "ship-by-watch"
#: How often (Amazon's seconds) orders near or past their ship-by date are looked for.
SHIP_BY_CHECK_S = 300.0
RETENTION_TASK = "read-model-retention"
#: How often (Amazon's seconds) orders past the retention are removed: they stay at most this much longer.
RETENTION_CHECK_S = 3600.0
#: Records of one topic folded together, at most, and how long (seconds) a batch waits to fill.
FOLD_BATCH = 200
FOLD_WITHIN_S = 0.05
#: It retries Redis in place and never parks a record: no redrive agents (see ordersync.pipeline.stages).
PARKS_RECORDS = False


class Projection:
    """The fold of one stage process: decode, apply, never crash, never skip a decodable record."""

    def __init__(self, runtime: StageRuntime) -> None:
        self.runtime = runtime
        self._model: ReadModel | None = None

    @property
    def model(self) -> ReadModel:
        if self._model is None:
            store = self.runtime.store
            self._model = ReadModel(
                store.redis,
                store.prefix,
                clock=self.runtime.clock,
                ship_by_lead=timedelta(seconds=self.runtime.settings.health.ship_by_lead_s),
            )
        return self._model

    async def handle_batch(self, spec: TopicSpec, records: list[tuple[bytes | None, int, int]]) -> None:
        """Fold records (value, partition, offset) of ``spec`` together: their orders read and written
        in one round trip each (:meth:`ReadModel.apply_many`). A record that does not decode is skipped
        as :meth:`handle` skips it; should the batch's fold fail otherwise, each record is folded on
        its own, so only one a fold bug cannot take is skipped."""
        decoded: list[tuple[str, Envelope[Event]]] = []
        for value, partition, offset in records:
            try:
                decoded.append((spec.name, self.runtime.decode(spec, value)))
            except InvalidEvent:
                await self.handle(spec, value, partition, offset)  # (skipped there, with its log line)
        if not decoded:
            return
        what = f"{spec.name}[{records[0][1]}]"
        try:
            await self.runtime.through_outages(what, partial(self.model.apply_many, decoded))
        except Exception:
            log.exception("%s: a batch of %d records could not be folded; folding each", what, len(records))
            for value, partition, offset in records:
                await self.handle(spec, value, partition, offset)

    async def handle(self, spec: TopicSpec, value: bytes | None, partition: int, offset: int) -> None:
        """Fold one record; a Redis outage is waited out (the record is never skipped for it)."""
        what = f"{spec.name}[{partition}]"
        skipped = partial(self.model.count_skipped, spec.name, partition, offset)
        try:
            envelope = self.runtime.decode(spec, value)
        except InvalidEvent as exc:
            log.warning("%s@%d skipped, not a valid event: %s", what, offset, exc)
            await self.runtime.through_outages(what, skipped)
            return
        try:
            await self.runtime.through_outages(what, partial(self.model.apply, spec.name, envelope))
        except Exception:  # a fold bug must not stop the projection of every other order
            log.exception("%s@%d could not be folded; skipped", what, offset)
            await self.runtime.through_outages(what, skipped)


def group_id(key_prefix: str) -> str:
    """The consumer group of the model under ``key_prefix``: a model's read positions belong to that
    model, so a second model (another key prefix on the same cluster) starts from the earliest offsets
    instead of inheriting the first one's."""
    base = f"ordersync-{STAGE}"
    return base if key_prefix == DEFAULT_PREFIX else f"{base}-{key_prefix}"


async def rebuild_model(runtime: StageRuntime, projection: Projection) -> RebuildResult:
    """The whole status model again from the topics, for a Redis that lost it (restarted empty, a
    failover to a replica that lagged): what ``ordersync status-model rebuild`` does, by itself."""
    result = await rebuild(runtime.settings, projection.model)
    log.warning(
        "status model rebuilt from the topics: %d orders from %d records in %.1f s",
        result.orders,
        sum(result.records.values()),
        result.seconds,
    )
    return result


async def shred_once(runtime: StageRuntime) -> list[str]:
    """Destroy the data keys due now; the names destroyed, also kept as task health."""
    destroyed = await (await runtime.key_ring()).shred_due()
    detail = f"{len(destroyed)} keys destroyed" + (f": {', '.join(destroyed)}" if destroyed else "")
    await runtime.store.record_task(SHRED_TASK, "all", ok=True, detail=detail)
    if destroyed:
        log.info("personal data: %s", detail)
    return destroyed


async def shred_personal_data(runtime: StageRuntime) -> None:
    """:func:`shred_once` every :data:`SHRED_CHECK_S`, for as long as the stage runs."""
    if not runtime.settings.privacy.wraps_keys:
        return  # no key-encryption key: no data key was ever made here
    while True:
        await runtime.survive(SHRED_TASK, partial(shred_once, runtime))
        await asyncio.sleep(SHRED_CHECK_S / runtime.settings.amazon.time_scale)


async def warn_ship_by_once(runtime: StageRuntime, model: ReadModel) -> list[ShipmentTimeliness]:
    """One ``ship-by`` notification per seller with orders awaiting shipment overdue or at risk (as of
    Amazon's clock); the sellers warned about, also kept as task health."""
    due = [seller for seller in await model.shipment_timeliness() if seller.overdue or seller.at_risk]
    board = HealthBoard(runtime.store.redis, runtime.store.prefix, runtime.settings.health)
    lead_h = runtime.settings.health.ship_by_lead_s / 3600
    for seller in due:
        parts = [f"{seller.overdue} overdue"] if seller.overdue else []
        if seller.at_risk:
            parts.append(f"{seller.at_risk} due within {lead_h:g} h")
        await board.notify(
            "ship-by",
            f"{seller.channel} ({seller.seller_id}): orders awaiting shipment near or past their latest "
            f"ship date: {', '.join(parts)}; earliest {', '.join(seller.due_order_ids)}",
            severity="error" if seller.overdue else "warning",
            channel=seller.channel,
            # One per seller while the dedupe holds (an hour): a reminder, not a stream.
            dedupe_key=f"ship-by:{seller.channel}:{seller.seller_id}",
            at=runtime.clock.now(),
        )
    detail = "; ".join(f"{s.seller_id}: {s.overdue} overdue, {s.at_risk} at risk" for s in due)
    await runtime.store.record_task(SHIP_BY_TASK, "all", ok=True, detail=detail or "none due")
    return due


async def watch_ship_by(runtime: StageRuntime, model: ReadModel) -> None:
    """:func:`warn_ship_by_once` every :data:`SHIP_BY_CHECK_S`, for as long as the stage runs."""
    while True:
        await runtime.survive(SHIP_BY_TASK, partial(warn_ship_by_once, runtime, model))
        await asyncio.sleep(SHIP_BY_CHECK_S / runtime.settings.amazon.time_scale)


async def prune_read_model_once(runtime: StageRuntime, model: ReadModel) -> int:
    """Remove the orders last updated more than ``status_model.retention_days`` before Amazon's now, in
    batches until none is left; how many, also kept as task health."""
    before = runtime.clock.now() - timedelta(days=runtime.settings.status_model.retention_days)
    removed = 0
    # Bounded batches: folds and queries run between them. An order kept because it changed meanwhile
    # does not loop here: a batch removing nothing ends the run, the next hour tries again.
    while batch := await model.prune(before, PRUNE_BATCH):
        removed += batch
    detail = f"{removed} orders removed (last updated before {before:%Y-%m-%d %H:%M} UTC)"
    await runtime.store.record_task(RETENTION_TASK, "all", ok=True, detail=detail)
    if removed:
        log.info("status model: %s", detail)
    return removed


async def retain_read_model(runtime: StageRuntime, model: ReadModel) -> None:
    """:func:`prune_read_model_once` every :data:`RETENTION_CHECK_S`, for as long as the stage runs."""
    while True:
        await runtime.survive(RETENTION_TASK, partial(prune_read_model_once, runtime, model))
        await asyncio.sleep(RETENTION_CHECK_S / runtime.settings.amazon.time_scale)


def register(app: faust.App, runtime: StageRuntime) -> None:
    app.conf.id = group_id(runtime.settings.redis.key_prefix)
    projection = Projection(runtime)
    runtime.on_redis_reset(partial(rebuild_model, runtime, projection))

    @app.task  # type: ignore[untyped-decorator]
    async def watch_redis() -> None:
        await runtime.watch_generation()

    @app.task  # type: ignore[untyped-decorator]
    async def shred() -> None:
        await runtime.start()
        await shred_personal_data(runtime)

    @app.task  # type: ignore[untyped-decorator]
    async def ship_by() -> None:
        await runtime.start()
        await watch_ship_by(runtime, projection.model)

    @app.task  # type: ignore[untyped-decorator]
    async def retention() -> None:
        await runtime.start()
        await retain_read_model(runtime, projection.model)

    if runtime.settings.alerts.enabled:

        @app.task  # type: ignore[untyped-decorator]
        async def alerts() -> None:
            await runtime.start()
            await run_alerts(
                runtime.settings, runtime.store.redis, lambda: runtime.channels.channels, runtime.owner
            )

    for spec in FOLDED_TOPICS:
        _fold_agent(app, runtime, projection, spec)


def _fold_agent(app: faust.App, runtime: StageRuntime, projection: Projection, spec: TopicSpec) -> None:
    async def fold(stream: faust.StreamT[bytes]) -> None:
        await runtime.start()
        manual: Any = stream.noack()  # type: ignore[attr-defined]  # faust's StreamT omits noack
        # The records that came within FOLD_WITHIN_S, FOLD_BATCH at most, folded together.
        async for events in manual.noack_take(FOLD_BATCH, within=FOLD_WITHIN_S):
            # Redis still holds the model (else it is rebuilt from the topics first).
            await runtime.through_outages("Redis generation check", runtime.confirm_state)
            records = [
                (
                    event.message.value if isinstance(event.message.value, bytes | None) else None,
                    event.message.partition,
                    event.message.offset,
                )
                for event in events
            ]
            # Acknowledged only once folded: a Redis outage is waited out, never skipped.
            await projection.handle_batch(spec, records)
            for event in events:
                message = event.message
                # Consumer lag on /metrics is measured from these positions where the runtime keeps them.
                runtime.next_offsets[(message.topic, message.partition)] = message.offset + 1
                await manual.ack(event)

    # One agent per topic: topics fold concurrently, each in its partitions' order.
    app.agent(runtime.topic(spec), name=f"{STAGE}-{spec.name}")(fold)
