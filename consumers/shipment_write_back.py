"""Shipment write-back: confirms each requested package on Amazon, with a result per package.

- Input: ``shipments.requested`` (from the invoice-issued stage, or a warehouse system directly).
- Output: ``shipments.confirmed``, or ``shipments.failed`` with Amazon's message when Amazon refuses
  the package, or when a transient fault (5xx, timeout) still fails at the redrive deadline: each run
  makes up to ``writeback.max_attempts`` attempts, and between runs the request waits on the redrive
  tiers (``pipeline.redrive.*``); invalid requests go to ``shipments.requested.dlq``.
- Amazon's programmes first: a package whose label was bought through Amazon (Buy Shipping; the
  request says so), of a Ship+ order (Amazon answers confirmShipment with 400) or of an Easy Ship order
  (Amazon's carrier ships it) is not sent: ``shipments.confirmed`` records how Amazon learns of it
  (``amazon-label``, ``easy-ship``) and why, a final outcome that is no failure.
- Modes (the channel's ``writeback_mode``, else ``writeback.mode``): ``confirm`` sends confirmShipment per
  package here; ``feed`` parks it for the seller's next POST_ORDER_FULFILLMENT_DATA
  (:mod:`ordersync.consumers.fulfillment_feed`, run by this stage's feed task); ``auto`` confirms while
  the seller's backlog is small and feeds when it is large. Ship-by deadlines come first in both feed
  modes (``writeback.ship_by_direct``): a package whose order's latest ship date the next feed would
  miss goes by confirmShipment, at once or from the feed task, and one inside a feed still not done near
  its deadline is read on Amazon and confirmed directly (:mod:`ordersync.consumers.fulfillment_feed`).
  The same task sends seller cancellations
  (:mod:`ordersync.consumers.cancellation`). The channel's "don't upload order status" sends nothing.
- Order acknowledgements (:mod:`ordersync.consumers.acknowledgement`): its own agent reads
  ``orders.imported`` and its own task tells Amazon each imported order's sales-order code
  (MerchantOrderID, StatusCode Success) for channels with ``acknowledge_orders``, with a result per
  order on ``orders.acknowledgement-results``.
- Easy Ship packing (:mod:`ordersync.consumers.packing`): its own agent reads ``packages.packed`` and
  schedules each package's handover with Amazon (listHandoverSlots, createScheduledPackage; 1/s,
  burst 5), with the outcome on ``packages.scheduled``; its documents
  (:mod:`ordersync.consumers.packing_documents`: its own agent reads ``packages.scheduled``, its own task
  sends POST_EASYSHIP_DOCUMENTS on the ``packing`` lane and downloads the PDFs) are stored and announced
  on ``packages.documents``.
- Amazon operations and quotas (per seller, through the rate limiter): ``confirmShipment`` (v0; 2/s,
  burst 10); createFeed on the ``packing`` lane (shipments, cancellations) and the ``acknowledgement``
  lane (behind them and stock's extra feeds; at most one per ``writeback.acknowledge_flush_interval_s``),
  getFeed, getFeedDocument. Throttling waits and is never counted as an attempt.
- State in Redis, per package: status Pending/Success/Failed, attempts, last attempt, last error,
  carrier, tracking, quantity, and the request itself (so it can be sent again without another writer
  on ``shipments.requested``). A package already confirmed is never sent again; after an unknown
  outcome (timeout, 5xx) Amazon's "already fulfilled" answer counts as confirmed.
- Redis lost (restarted empty, a failover that lagged): before another record, the package outcomes
  come back from ``shipments.confirmed`` and ``shipments.failed``, and requests with neither are sent
  again on ``shipments.requested`` (:func:`rebuild_packages`), so nothing is confirmed twice or lost.
- Also consumes ``ops.commands`` (its own agent; other commands belong to other stages):
  ``retry-writeback`` sends each failed package of the named orders again through the normal path
  (confirm or feed), attempts reset, so a new ShipmentConfirmed or ShipmentFailed follows.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from functools import partial
from typing import Literal

import faust
from redis.asyncio.client import Pipeline

from ordersync.channels import Channel
from ordersync.clock import epoch_seconds
from ordersync.consumers import acknowledgement, cancellation, fulfillment_feed, packing, packing_documents
from ordersync.consumers.shipment_package import PackageWriteBack, confirmed_by_amazon, total_quantity
from ordersync.errors import InvalidEvent, Permanent, Retryable, Throttled
from ordersync.ops.commands import outcome_detail
from ordersync.pipeline.feeds import scaled
from ordersync.pipeline.runtime import StageRuntime
from ordersync.schemas.codec import decode, encode
from ordersync.schemas.envelope import Envelope, Event
from ordersync.schemas.events import (
    OperatorCommandIssued,
    SalesOrder,
    ShipmentConfirmed,
    ShipmentFailed,
    ShipmentRequested,
)
from ordersync.schemas.topics import (
    OPS_COMMANDS,
    ORDERS_ACKNOWLEDGEMENT_RESULTS,
    ORDERS_CANCELLATION_REQUESTED,
    ORDERS_CANCELLATION_RESULTS,
    ORDERS_IMPORTED,
    PACKAGES_DOCUMENTS,
    PACKAGES_PACKED,
    PACKAGES_SCHEDULED,
    SHIPMENTS_CONFIRMED,
    SHIPMENTS_FAILED,
    SHIPMENTS_REQUESTED,
)
from ordersync.state import keys
from ordersync.state.keys import ORDER_STATE_TTL_S

log = logging.getLogger(__name__)

#: The channels' feed rounds, as task health and "Synchronize now" name them.
FEEDS_TASK = "write-back"
STAGE = "shipment-write-back"


def writeback_mode(runtime: StageRuntime, channel: Channel) -> str:
    return channel.writeback_mode or runtime.settings.writeback.mode


async def use_feed(runtime: StageRuntime, channel: Channel, seller: str) -> bool:
    """feed: always; confirm: never; auto: when the seller's backlog is large (more requests within
    ``auto_window_s`` than ``auto_feed_threshold``, or shipments already waiting for a feed)."""
    mode = writeback_mode(runtime, channel)
    if mode != "auto":
        return mode == "feed"
    settings = runtime.settings.writeback
    window_s = scaled(runtime, settings.auto_window_s)
    window = int(epoch_seconds(runtime.clock) // window_s)
    key = runtime.store.key_of(keys.WRITEBACK_RECENT, seller, str(window))
    # One round trip: the backlog waiting for a feed, and this request counted in its window.
    async with runtime.store.redis.pipeline(transaction=False) as pipe:
        fulfillment_feed.queue_pending_count(runtime, pipe, seller)
        pipe.incr(key)
        pipe.expire(key, max(1, int(2 * window_s) + 1))
        waiting, recent, _ = await pipe.execute()
    return bool(waiting) or int(recent) > settings.auto_feed_threshold


def latest_ship_by(sales_order: SalesOrder | None) -> float | None:
    """The order's latest ship date (epoch seconds), where the imported order has one."""
    if sales_order is None or sales_order.latest_ship_date is None:
        return None
    return sales_order.latest_ship_date.timestamp()


async def handle(runtime: StageRuntime, envelope: Envelope[Event]) -> None:
    request = envelope.payload_as(ShipmentRequested)
    seller = envelope.seller_id
    store = runtime.store
    order_id = request.amazon_order_id
    known = await store.shipment_context(seller, order_id, request.package_reference_id)
    if known.closed:
        # A replay long after delivery: nothing of the order is kept to send it once only.
        raise Permanent(
            f"order {order_id} is closed: it was imported long ago and its working state ended after"
            " delivery (order_state settings); its shipment is not written back again"
        )
    state = known.state
    if state.get("status") in ("Success", "Failed"):
        return  # a replayed request: its result was published already
    if state.get("method") == "feed" and await fulfillment_feed.is_queued(
        runtime, seller, fulfillment_feed.pending_field(request)
    ):
        return  # a replayed request: it waits for (or is inside) a feed already
    sales_order = known.sales_order
    marketplace = envelope.marketplace_id or (sales_order.marketplace_id if sales_order else None)
    package = PackageWriteBack(runtime, envelope, request, marketplace)
    ship_by = latest_ship_by(sales_order)
    recorded: dict[str, str | int] = {
        "carrier": request.carrier_code,
        "service": request.shipping_method or "",
        "tracking": request.tracking_number,
        "quantity": total_quantity(request),
        "request": encode(envelope).decode(),  # what a retry-writeback sends again
    }
    if ship_by is not None:
        recorded["ship_by"] = datetime.fromtimestamp(ship_by, UTC).isoformat()
    ttl_s = store.ttl_of(sales_order)  # the order's life; None: not imported here, the default horizon
    async with store.redis.pipeline(transaction=False) as pipe:
        store.queue_shipment_fields(
            pipe, seller, order_id, request.package_reference_id, recorded, ttl_s=ttl_s
        )
        queue_remember_package(runtime, pipe, seller, order_id, request.package_reference_id, ttl_s=ttl_s)
        await pipe.execute()
    deadline_first = False
    attempts = int(state.get("attempts", 0))
    channel = runtime.channels.by_name(request.channel)
    if not channel.upload_order_status:
        # The channel's "don't upload order status": the back-office keeps it; nothing goes to Amazon.
        await package.record_state(status="NotUploaded")
        await store.set_order_status(seller, order_id, writeback="NotUploaded")
        return
    by_amazon = confirmed_by_amazon(request, sales_order.programs if sales_order else ())
    if known.status.get("amazon_status") == "Canceled":
        error: Exception | None = Permanent(
            f"order {order_id} is cancelled on Amazon; a cancelled order is never confirmed"
        )
    elif by_amazon is not None:
        # Amazon's rules: nothing to send (a label bought on Amazon, Ship+, Easy Ship); a final outcome.
        await package.publish_confirmed(by_amazon[0], 0, note=by_amazon[1])
        return
    elif marketplace is None:
        error = Permanent(f"no marketplace known for order {order_id}: it was not imported by ordersync")
    elif await use_feed(runtime, channel, seller) and not (
        deadline_first := await fulfillment_feed.misses_deadline_by_feed(runtime, seller, ship_by)
    ):
        parked = fulfillment_feed.PendingShipment(
            envelope,
            marketplace,
            ship_by=ship_by,
            attempts=attempts,
            outcome_unknown=state.get("outcome") == "unknown",
        )
        async with store.redis.pipeline(transaction=False) as pipe:
            fulfillment_feed.queue_enqueue(runtime, pipe, parked)
            store.queue_shipment_state(
                pipe, seller, order_id, request.package_reference_id, status="Pending", method="feed"
            )
            await pipe.execute()
        return
    else:
        method, error, attempts = await package.attempt(attempts, state.get("outcome") == "unknown")
        if method is not None:
            note = fulfillment_feed.deadline_note(ship_by) if deadline_first and ship_by else None
            await package.publish_confirmed(method, attempts, note=note)
            return
        if isinstance(error, Retryable) and not runtime.last_try():
            # Amazon still down after this run's attempts: the runtime parks the request on the redrive
            # tiers and runs it again later; it fails only at the redrive deadline.
            raise error
    await package.publish_failed(error, attempts)


# --- retry-writeback (ops.commands) -------------------------------------------------------------


def _packages_key(runtime: StageRuntime, seller: str, order_id: str) -> str:
    return runtime.store.key_of(keys.WRITEBACK_PACKAGES, seller, order_id)


async def remember_package(runtime: StageRuntime, seller: str, order_id: str, package_id: str) -> None:
    """Index the order's packages, so a retry finds them without scanning Redis."""
    async with runtime.store.redis.pipeline(transaction=False) as pipe:
        queue_remember_package(runtime, pipe, seller, order_id, package_id)
        await pipe.execute()


def queue_remember_package(
    runtime: StageRuntime,
    pipe: Pipeline,
    seller: str,
    order_id: str,
    package_id: str,
    *,
    ttl_s: int | None = None,
) -> None:
    """:func:`remember_package` queued on ``pipe``; ``ttl_s``: the order's life, where known."""
    key = _packages_key(runtime, seller, order_id)
    pipe.sadd(key, package_id)
    if ttl_s is None:
        pipe.expire(key, ORDER_STATE_TTL_S, nx=True)
    else:
        pipe.expire(key, ttl_s)


async def order_packages(runtime: StageRuntime, seller: str, order_id: str) -> dict[str, dict[str, str]]:
    """Every package of the order this stage has seen: reference id -> its shipment state."""
    members = await runtime.store.redis.smembers(_packages_key(runtime, seller, order_id))
    return {
        str(package): await runtime.store.shipment_state(seller, order_id, str(package))
        for package in sorted(members, key=str)
    }


RetryVerdict = Literal["retry", "resume", "skip"]


def retry_verdict(state: dict[str, str], command_id: str) -> RetryVerdict:
    """What a retry-writeback command does with one package.

    Failed: send again, unless this very command already did (a redelivered command never retries
    twice). Pending after this command started it: the worker stopped mid-retry, resume. Anything else
    (confirmed, not uploaded, a regular attempt in progress): leave it."""
    retried_by = state.get("retried_by")
    status = state.get("status")
    if status == "Failed":
        return "skip" if retried_by == command_id else "retry"
    if status in ("Retrying", "Pending") and retried_by == command_id:
        return "resume"
    return "skip"


async def retry_package(
    runtime: StageRuntime, seller: str, order_id: str, package_id: str, command_id: str
) -> bool:
    """Send one package again through :func:`handle`; True when it was (re)started."""
    store = runtime.store
    state = await store.shipment_state(seller, order_id, package_id)
    verdict = retry_verdict(state, command_id)
    if verdict == "skip":
        log.info("retry-writeback %s/%s: %s, not sent again", order_id, package_id, state.get("status"))
        return False
    raw = state.get("request")
    try:
        envelope: Envelope[Event] | None = decode(raw.encode() if raw else None, SHIPMENTS_REQUESTED)
    except InvalidEvent:
        envelope = None  # handled before requests were kept in Redis
    if verdict == "retry":
        # Attempts start again; an unknown earlier outcome stays known, so the order is re-read on
        # Amazon before anything is sent (nothing is confirmed twice).
        await store.update_shipment_state(
            seller,
            order_id,
            package_id,
            status="Retrying",
            attempts=0,
            retried_by=command_id,
            retried_at=runtime.clock.now().isoformat(),
        )
    if envelope is None:
        # Reset all the same: a replay of its request is then processed like a new one.
        log.warning(
            "retry-writeback %s/%s: the request is not kept in Redis; send it again with: ordersync "
            "replay %s --from-offset 0 --filter amazon_order_id=%s",
            order_id,
            package_id,
            SHIPMENTS_REQUESTED.name,
            order_id,
        )
        return False
    await store.set_order_status(seller, order_id, writeback="Pending")
    await handle(runtime, envelope)
    return True


async def retry_writeback(runtime: StageRuntime, envelope: Envelope[Event]) -> None:
    """Retry Write-back: every failed package of the named orders is sent to Amazon again."""
    command = envelope.payload_as(OperatorCommandIssued)
    if command.command != "retry-writeback":
        return  # other commands belong to other stages
    channel = runtime.channels.by_name(command.channel)
    seller = channel.seller_id
    retried = 0
    exceptions: dict[str, str] = {}
    for order_id in command.amazon_order_ids:
        packages = await order_packages(runtime, seller, order_id)
        if not packages:
            exceptions[order_id] = "no shipment known (not invoiced yet, or invoiced before this stage ran)"
            continue
        sent = 0
        for package_id in packages:
            sent += await retry_package(runtime, seller, order_id, package_id, str(envelope.event_id))
        if not sent:
            exceptions[order_id] = "nothing sent again: no package of it failed"
        retried += sent
    orders = len(command.amazon_order_ids)
    await runtime.store.record_task(
        "retry-writeback",
        channel.name,
        ok=True,
        detail=outcome_detail(f"{retried} package(s) sent again for {orders} order(s)", exceptions),
        operator=command.operator or "",
    )


async def channel_feeds(runtime: StageRuntime, channel: Channel) -> None:
    """One channel's write-back feeds (by feed where its channel may, and its cancellations): settle the
    feed in flight, send the next."""
    await runtime.confirm_state()  # Redis lost the packages: their outcomes come back first
    try:
        if writeback_mode(runtime, channel) != "confirm":
            await fulfillment_feed.rescue_parked(runtime, channel)
            await fulfillment_feed.run_feeds(runtime, channel)
        await cancellation.run_feeds(runtime, channel)
    except (Permanent, Retryable, Throttled) as exc:
        log.warning("%s: write-back feed step failed, next round retries: %s", channel.name, exc)


async def feed_tick(runtime: StageRuntime) -> None:
    """Every active channel's write-back feeds, one channel after another: one pass, for tests and the
    benchmark (the stage runs each channel on a loop of its own: :func:`feed_rounds`)."""
    for channel in runtime.channels.active():
        await channel_feeds(runtime, channel)


async def feed_rounds(runtime: StageRuntime, interval_s: float) -> None:
    """Every active channel's write-back feeds, forever, each channel on a loop of its own, so a seller
    whose feed waits for its createFeed token (minutes at Amazon's 30 an hour) holds up no other seller;
    at most ``writeback.max_concurrent_channels`` rounds at once."""
    turns = asyncio.Semaphore(runtime.settings.writeback.max_concurrent_channels)

    async def one_channel(channel: Channel) -> None:
        while True:
            async with turns:
                await runtime.survive(
                    f"{FEEDS_TASK} {channel.name}", partial(channel_feeds, runtime, channel)
                )
            await runtime.wakeups.pause(FEEDS_TASK, channel.name, interval_s)  # or at once: Synchronize now

    await runtime.each_active_channel(FEEDS_TASK, one_channel)


async def rebuild_packages(runtime: StageRuntime) -> tuple[int, int]:
    """The packages' outcomes again from the topics, for a Redis that lost them: each package Amazon
    confirmed (``shipments.confirmed``) or that failed (``shipments.failed``) is marked so, and is never
    sent again; each requested package with neither (it was pending, in a feed, or not read yet) is
    published again on ``shipments.requested``, its key and bytes unchanged, so this stage sends it
    (the replay of a request already settled is a no-op). Returns (settled, sent again)."""
    sellers = {channel.name: channel.seller_id for channel in runtime.channels.channels}
    settled: dict[tuple[str, str, str], str] = {}
    outcomes: list[tuple[str, ShipmentFailed | ShipmentConfirmed]] = [
        (envelope.seller_id, envelope.payload_as(ShipmentFailed))
        for envelope in await runtime.read_events(SHIPMENTS_FAILED)
    ]
    outcomes += [
        (envelope.seller_id, envelope.payload_as(ShipmentConfirmed))
        for envelope in await runtime.read_events(SHIPMENTS_CONFIRMED)
    ]
    for seller, outcome in outcomes:  # failed first: a package confirmed after a retry is confirmed
        if sellers.get(outcome.channel) != seller:
            continue  # another deployment's channel on a shared cluster
        status = "Success" if isinstance(outcome, ShipmentConfirmed) else "Failed"
        settled[(seller, outcome.amazon_order_id, outcome.package_reference_id)] = status
    for (seller, order_id, package_id), status in settled.items():
        await runtime.store.update_shipment_state(
            seller,
            order_id,
            package_id,
            status=status,
            outcome="confirmed" if status == "Success" else "refused",
        )
        await remember_package(runtime, seller, order_id, package_id)
    again = 0
    for record, envelope in await runtime.read_records(SHIPMENTS_REQUESTED):
        request = envelope.payload_as(ShipmentRequested)
        package = (envelope.seller_id, request.amazon_order_id, request.package_reference_id)
        if sellers.get(request.channel) != envelope.seller_id or package in settled:
            continue
        await runtime.send_again(SHIPMENTS_REQUESTED, record)
        again += 1
    log.warning(
        "write-back rebuilt from the topics: %d packages settled, %d requests sent again", len(settled), again
    )
    return len(settled), again


def register(app: faust.App, runtime: StageRuntime) -> None:
    runtime.topic(SHIPMENTS_CONFIRMED)
    runtime.topic(SHIPMENTS_FAILED)
    runtime.topic(ORDERS_CANCELLATION_RESULTS)
    runtime.topic(ORDERS_ACKNOWLEDGEMENT_RESULTS)
    runtime.topic(PACKAGES_SCHEDULED)
    runtime.topic(PACKAGES_DOCUMENTS)
    settings = runtime.settings.writeback
    # Package outcomes live in Redis but are Kafka's: a Redis that lost them gets them back first.
    runtime.on_redis_reset(partial(rebuild_packages, runtime))
    runtime.on_redis_reset(partial(cancellation.rebuild_pending, runtime))
    runtime.on_redis_reset(partial(acknowledgement.rebuild_pending, runtime))
    runtime.on_redis_reset(partial(packing.rebuild_outcomes, runtime))
    runtime.on_redis_reset(partial(packing_documents.rebuild_pending, runtime))

    @app.agent(runtime.topic(PACKAGES_PACKED), name="easy-ship-packing")
    async def packages(stream: faust.StreamT[bytes]) -> None:
        await runtime.consume(PACKAGES_PACKED, stream, lambda env: packing.handle(runtime, env))

    @app.agent(runtime.topic(PACKAGES_SCHEDULED), name="easy-ship-documents")
    async def package_documents(stream: faust.StreamT[bytes]) -> None:
        await runtime.consume(PACKAGES_SCHEDULED, stream, lambda env: packing_documents.handle(runtime, env))

    @app.task  # type: ignore[untyped-decorator]
    async def watch_redis() -> None:
        await runtime.watch_generation()

    @app.agent(runtime.topic(ORDERS_CANCELLATION_REQUESTED), name="seller-cancellations")
    async def cancellations(stream: faust.StreamT[bytes]) -> None:
        await runtime.consume(
            ORDERS_CANCELLATION_REQUESTED, stream, lambda env: cancellation.handle(runtime, env)
        )

    tick_s = min(settings.feed_poll_interval_s, settings.feed_flush_interval_s)

    @app.task  # type: ignore[untyped-decorator]
    async def feeds() -> None:
        await runtime.start()
        await feed_rounds(runtime, scaled(runtime, tick_s))

    @app.task  # type: ignore[untyped-decorator]
    async def easy_ship_documents() -> None:
        # Its own task: downloads wait for getReportDocument's slow quota without holding up shipments.
        await runtime.start()
        while True:
            await runtime.survive("easy-ship documents", partial(packing_documents.tick, runtime))
            await asyncio.sleep(scaled(runtime, tick_s))

    @app.agent(runtime.topic(ORDERS_IMPORTED), name="order-acknowledgements")
    async def acknowledgements(stream: faust.StreamT[bytes]) -> None:
        await runtime.consume(ORDERS_IMPORTED, stream, lambda env: acknowledgement.handle(runtime, env))

    @app.task  # type: ignore[untyped-decorator]
    async def acknowledgement_feeds() -> None:
        # Its own task: an acknowledgement feed waiting for its createFeed token (its lane comes after
        # shipments) never holds up the shipments' feeds.
        await runtime.start()
        while True:
            await runtime.survive("acknowledgement feeds", partial(acknowledgement.tick, runtime))
            await asyncio.sleep(scaled(runtime, tick_s))

    @app.agent(runtime.topic(OPS_COMMANDS), name="writeback-commands")
    async def writeback_commands(stream: faust.StreamT[bytes]) -> None:
        await runtime.consume(OPS_COMMANDS, stream, lambda env: retry_writeback(runtime, env))

    @app.agent(runtime.topic(SHIPMENTS_REQUESTED), name="shipment-write-back")
    async def write_back(stream: faust.StreamT[bytes]) -> None:
        await runtime.consume(SHIPMENTS_REQUESTED, stream, lambda env: handle(runtime, env))
