"""Order download: polls Amazon for orders updated since each channel's cursor, and never loses one.

- Input: Amazon, per active channel, every ``download.poll_interval_s``; and ``ops.commands``
  (``retry-download``: fetch the named orders again from scratch; the dashboard's Retry Download).
- Output: ``amazon.orders.downloaded`` (key ``seller_id:amazon_order_id``).
- Amazon operations and quotas (per seller, through the rate limiter): ``getOrders`` (v0; 0.0167/s,
  burst 20) or ``searchOrders`` (2026-01-01; 0.0056/s, burst 20), one call per page of 100;
  ``getOrder`` (0.5/s, burst 30) per order of a retry-download command.
- Time: every instant (the first window's start, the catch-ups' schedule) comes from the runtime's
  clock, Amazon's "now"; the windows themselves end where Amazon says (``LastUpdatedBefore``).
- Output too: ``amazon.orders.cursors`` (compacted, key ``channel``): the cursor, Kafka's copy first.
- State in Redis: the cursor per channel (Amazon's returned ``LastUpdatedBefore``), saved only after
  every event of the window is acknowledged by Kafka, so a crash re-reads rather than skips; a dedupe
  mark per (seller, order, LastUpdateDate), so the overlap never emits an order version twice. Redis
  found without them (restarted empty), the stage puts both back from ``amazon.orders.cursors`` and
  ``amazon.orders.downloaded`` before its next round: no re-scan from the initial look-back, and no
  order version sent twice.
- Catch-ups (scheduled, each run's findings recorded as task health): a rolling re-scan of the last
  48 hours, a 7-day re-scan of orders fulfilled by Amazon, and a daily reconciliation listing the
  previous day's orders; whatever version the pipeline has not seen is emitted. Amazon guarantees
  completeness only up to the ``LastUpdatedBefore`` it returns, and changes can become visible late.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import cast

import faust

from ordersync.amazon.client import OrdersPage, OrdersQuery
from ordersync.channels import Channel
from ordersync.errors import LeaseLost, Permanent, PipelineError, Retryable, is_outage
from ordersync.ops.commands import outcome_detail
from ordersync.pipeline.runtime import StageRuntime
from ordersync.producers.download_budget import Reader, SweepPlan, changes_per_second, plan_sweep
from ordersync.producers.download_report import reconcile_channel
from ordersync.producers.download_send import (
    DEDUPE_MARK,
    NOTIFICATIONS_TASK,
    SUBSCRIPTION_TASK,
    downloaded_event,
    emit_if_new,
    rebuild_download_marks,
)
from ordersync.ratelimit import PlanBook
from ordersync.schemas.envelope import Envelope, Event
from ordersync.schemas.events import (
    AmazonOrder,
    DownloadCursorSaved,
    FoundBy,
    OperatorCommandIssued,
)
from ordersync.schemas.topics import DOWNLOAD_CURSORS, OPS_COMMANDS, ORDERS_DOWNLOADED, order_key
from ordersync.settings import DownloadSettings
from ordersync.state import keys

log = logging.getLogger(__name__)
STAGE = "order-download"


def window_start(
    cursor: datetime | None, now: datetime, settings: DownloadSettings, overlap_s: float | None = None
) -> datetime:
    """Where the next window begins: the cursor minus the overlap (``overlap_s``, else the configured
    one), or the initial look-back."""
    if cursor is None:
        return now - timedelta(seconds=settings.initial_lookback_s)
    return cursor - timedelta(seconds=settings.overlap_s if overlap_s is None else overlap_s)


@dataclass
class ScanReport:
    """What one scan found: pages read, orders listed, versions new to the pipeline, Amazon's bound."""

    task: str
    pages: int = 0
    listed: int = 0
    emitted: int = 0
    restarts: int = 0
    #: Orders listed that Amazon fulfils (AFN): what the FBA re-scan's share of the budget follows.
    listed_afn: int = 0
    bound: datetime | None = None
    #: Where the window began (a poll's): with ``bound``, the span of changes ``listed`` counts.
    since: datetime | None = None

    def summary(self) -> str:
        restarted = f", restarted {self.restarts}x after a refused page token" if self.restarts else ""
        return f"{self.pages} pages, {self.listed} listed, {self.emitted} new or changed{restarted}"


#: A refused or expired page token restarts the scan from its first page, at most this often.
MAX_SCAN_RESTARTS = 3

FetchPage = Callable[[OrdersQuery, str | None], Awaitable[OrdersPage]]


async def scan(
    runtime: StageRuntime,
    channel: Channel,
    query: OrdersQuery,
    fetch_page: FetchPage,
    *,
    found_by: FoundBy,
    task: str,
) -> ScanReport:
    """Every page of ``query``; each order version new to the pipeline is emitted.

    A throttled page is retried with the same token (the limiter waits; nothing is skipped). A page
    token Amazon refuses (malformed or expired) restarts the scan from its first page: the dedupe
    marks make the re-read free of duplicates.
    """
    report = ScanReport(task)
    next_token: str | None = None
    while True:
        try:
            page = await runtime.retrying(
                f"{channel.name} {task} page", partial(fetch_page, query, next_token)
            )
        except Permanent as exc:
            if next_token is None or report.restarts >= MAX_SCAN_RESTARTS:
                raise
            log.warning("%s: %s page token refused (%s); restarting the scan", channel.name, task, exc)
            report.restarts += 1
            next_token = None
            continue
        report.pages += 1
        report.listed += len(page.orders)
        report.listed_afn += sum(order.fulfillment_channel == "AFN" for order in page.orders)
        report.emitted += await emit_page(runtime, channel, page.orders, found_by)
        if page.updated_before is not None:
            report.bound = page.updated_before
        next_token = page.next_token
        if not next_token:
            return report


async def emit_page(
    runtime: StageRuntime, channel: Channel, orders: Sequence[AmazonOrder], found_by: FoundBy
) -> int:
    """Each order of a page sent if new, ``stage.concurrency`` at once (a page lists an order once: they
    are independent, and each waits for Kafka's acknowledgement and Redis on its own); how many were
    sent. Every send finishes before the first failure is raised, so none is left running."""
    limit = asyncio.Semaphore(runtime.settings.stage.concurrency)

    async def send(order: AmazonOrder) -> bool:
        async with limit:
            return await emit_if_new(runtime, channel, order, found_by)

    results = await asyncio.gather(*(send(order) for order in orders), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return sum(bool(result) for result in results)


async def download_window(
    runtime: StageRuntime, channel: Channel, fetch_page: FetchPage, *, overlap_s: float | None = None
) -> ScanReport:
    """One window from the channel's cursor (less ``overlap_s``, else the configured overlap) to what
    Amazon guarantees now; saves the cursor last, after every event of the window was acknowledged, so
    a crash re-reads rather than skips."""
    store = runtime.store
    cursor = await store.cursor(channel.name)
    start = window_start(cursor, runtime.clock.now(), runtime.settings.download, overlap_s)
    report = await scan(
        runtime, channel, OrdersQuery(updated_after=start), fetch_page, found_by="poll", task="download"
    )
    report.since = start
    if report.bound is not None and (cursor is None or report.bound > cursor):
        await save_cursor(runtime, channel, report.bound)
    return report


async def save_cursor(runtime: StageRuntime, channel: Channel, bound: datetime) -> None:
    """The channel's new cursor: on Kafka first (the record a rebuild reads), then in Redis."""
    saved = DownloadCursorSaved(channel=channel.name, last_updated_before=bound)
    envelope = Envelope.wrap(saved, seller_id=channel.seller_id, correlation_id=f"cursor {channel.name}")
    await runtime.emit(DOWNLOAD_CURSORS, channel.name, envelope)
    await runtime.store.save_cursor(channel.name, bound)


async def rebuild_download_state(runtime: StageRuntime) -> tuple[int, int]:
    """The cursors and the dedupe marks again from Kafka, for a Redis that lost them: each channel's
    latest cursor from ``amazon.orders.cursors`` (kept unless Redis holds a later one), and the marks
    (:func:`rebuild_download_marks`). Returns (cursors, orders) restored."""
    store = runtime.store
    channels = {channel.name for channel in runtime.channels.channels}
    cursors: dict[str, datetime] = {}
    for envelope in await runtime.read_events(DOWNLOAD_CURSORS):
        saved = envelope.payload_as(DownloadCursorSaved)
        if saved.channel in channels:
            bound = saved.last_updated_before
            cursors[saved.channel] = max(cursors.get(saved.channel, bound), bound)
    for name, bound in cursors.items():
        current = await store.cursor(name)
        if current is None or current < bound:
            await store.save_cursor(name, bound)
    orders = await rebuild_download_marks(runtime)
    log.warning("download cursors rebuilt from %s: %d", DOWNLOAD_CURSORS.name, len(cursors))
    return len(cursors), orders


#: A catch-up's plan: from the cursor and how far its last run reached, the scans to run now and how
#: far they will reach.
CatchUpPlan = Callable[[datetime, datetime | None], tuple[list[OrdersQuery], datetime]]

#: The reconciliation catches up on at most this many missed days per run.
MAX_RECONCILED_DAYS = 7


@dataclass(frozen=True)
class CatchUp:
    """A scheduled re-scan that does not move the cursor: how often, what it reads (``plan``), and for
    the budget how far back it reads beyond the time since its last run and whether only orders
    fulfilled by Amazon."""

    task: str
    interval_s: float
    plan: CatchUpPlan
    found_by: FoundBy
    window_s: float = 0.0
    afn_only: bool = False

    def reader(self, afn_share: float) -> Reader:
        return Reader(self.task, self.interval_s, self.window_s, afn_share if self.afn_only else 1.0)


def rolling(window_s: float, channels: tuple[str, ...] | None = None) -> CatchUpPlan:
    """Re-scan changes of the last ``window_s`` before the cursor. The scan reaches back from where
    the previous run ended, so runs overlap however far apart they are: a change Amazon shows up to
    ``window_s`` late is always inside one of them."""

    def plan(cursor: datetime, reached: datetime | None) -> tuple[list[OrdersQuery], datetime]:
        anchor = min(cursor, reached) if reached else cursor
        query = OrdersQuery(updated_after=anchor - timedelta(seconds=window_s), fulfillment_channels=channels)
        return [query], cursor

    return plan


def daily_reconciliation(cursor: datetime, reached: datetime | None) -> tuple[list[OrdersQuery], datetime]:
    """List every order created on each whole day since the last reconciled one (the previous day on
    the first run), by creation date, so an order whose changes were all missed is still found."""
    today = cursor.replace(hour=0, minute=0, second=0, microsecond=0)
    first = reached if reached is not None else today - timedelta(days=1)
    first = max(first, today - timedelta(days=MAX_RECONCILED_DAYS))
    days = []
    day = first
    while day < today:
        days.append(OrdersQuery(created_after=day, created_before=day + timedelta(days=1)))
        day += timedelta(days=1)
    return days, max(today, first)


def catch_ups(settings: DownloadSettings) -> tuple[CatchUp, ...]:
    """The rolling re-scans (48 hours; 7 days for orders fulfilled by Amazon, which Amazon reports
    late) and the daily reconciliation, each relative to the cursor (Amazon's clock, not ours)."""
    return (
        CatchUp(
            "catch-up-48h",
            settings.catch_up_interval_s,
            rolling(settings.catch_up_window_s),
            "catch-up",
            window_s=settings.catch_up_window_s,
        ),
        CatchUp(
            "catch-up-fba",
            settings.fba_catch_up_interval_s,
            rolling(settings.fba_catch_up_window_s, ("AFN",)),
            "catch-up",
            window_s=settings.fba_catch_up_window_s,
            afn_only=True,
        ),
        CatchUp("reconciliation", settings.reconciliation_interval_s, daily_reconciliation, "reconciliation"),
    )


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


async def run_due_catch_ups(
    runtime: StageRuntime,
    channel: Channel,
    fetch_page: FetchPage,
    intervals: Mapping[str, float | None] | None = None,
) -> list[ScanReport]:
    """Run each catch-up whose interval has passed since its last success (kept in Redis, so a
    restarted worker does not rerun them all at once). ``intervals``: the budget's plan per catch-up
    (None for one: skipped; absent: its configured interval)."""
    store = runtime.store
    cursor = await store.cursor(channel.name)
    if cursor is None:
        return []  # the first window has not completed: there is nothing to catch up on yet
    reports = []
    now = runtime.clock.now()
    for catch_up in catch_ups(runtime.settings.download):
        interval_s = (
            catch_up.interval_s if intervals is None else intervals.get(catch_up.task, catch_up.interval_s)
        )
        if interval_s is None:
            continue  # the budget cannot pay for it (the plan's task health says so)
        health = await store.task(catch_up.task, channel.name)
        last_success = _parse(health.get("last_success"))
        if last_success and now - last_success < timedelta(seconds=interval_s):
            continue
        queries, reaches = catch_up.plan(cursor, _parse(health.get("reached")))
        report = ScanReport(catch_up.task)
        try:
            for query in queries:
                part = await scan(
                    runtime, channel, query, fetch_page, found_by=catch_up.found_by, task=catch_up.task
                )
                report.pages += part.pages
                report.listed += part.listed
                report.emitted += part.emitted
                report.restarts += part.restarts
        except LeaseLost:
            raise
        except PipelineError as exc:
            await store.record_task(catch_up.task, channel.name, ok=False, detail=str(exc))
            log.error("%s: %s failed: %s", channel.name, catch_up.task, exc)
            continue
        await store.record_task(
            catch_up.task, channel.name, ok=True, detail=report.summary(), reached=reaches.isoformat()
        )
        log.info("%s: %s: %s", channel.name, catch_up.task, report.summary())
        reports.append(report)
    return reports


#: Amazon removes Orders API v0's order reading (getOrders, getOrder, getOrderItems, getOrderAddress) on
#: this day; channels still on it are told from ``V0_NOTICE`` before.
V0_RETIREMENT = datetime(2027, 3, 27, tzinfo=UTC)
V0_NOTICE = timedelta(days=90)


def v0_retirement_notice(channel: Channel, now: datetime) -> str | None:
    """What operators are told about a channel still reading orders through v0 (None: nothing yet)."""
    if channel.orders_api != "v0" or now < V0_RETIREMENT - V0_NOTICE:
        return None
    days = (V0_RETIREMENT - now).days
    when = f"in {days} days" if now < V0_RETIREMENT else "already: its order download fails"
    return (
        f"channel {channel.name} reads orders through Orders API v0, which Amazon removes on"
        f" {V0_RETIREMENT.date().isoformat()} ({when}); set its orders_api to 2026-01-01 (the README says"
        " how, without losing or repeating orders)"
    )


#: The task whose health shows a channel's download plan: poll interval, catch-ups, budget spent.
PLAN_TASK = "download plan"
#: Before the first poll says otherwise: the share of a seller's orders Amazon fulfils.
AFN_SHARE_GUESS = 0.5


def notifications_flow(
    *,
    queue_configured: bool,
    last_notified: datetime | None,
    now: datetime,
    silence_s: float,
    poll_found_new: bool,
    flowed_before: bool,
    subscription_missing: bool = False,
) -> bool:
    """Whether a channel's ORDER_CHANGE notifications flow: one came within ``silence_s``; or none did
    but none was due either (they flowed, and the poll finds no change they missed). Silence while the
    poll finds changed orders means they stopped (a subscription gone, a queue misconfigured); Amazon
    saying the subscription is gone or sends elsewhere means so at once."""
    if not queue_configured or subscription_missing:
        return False
    if last_notified is not None and (now - last_notified).total_seconds() < silence_s:
        return True
    return flowed_before and not poll_found_new


def listing_budget(runtime: StageRuntime, channel: Channel) -> tuple[float, float]:
    """The channel's listing operation's rate (Amazon's plan less its margin, in Amazon's units) and
    Amazon's time scale, as the rate limiter has them."""
    operation = "getOrders" if channel.orders_api == "v0" else "searchOrders"
    limiter = runtime.limiter_or_none
    plans = limiter.plans if limiter is not None else None
    if plans is None:
        plans = PlanBook.from_channels([channel], time_scale=runtime.settings.amazon.time_scale)
    return plans.enforced_plan(operation, channel.seller_id)[0], plans.time_scale


@dataclass
class ChannelSweep:
    """What the worker polling a channel knows between rounds: how fast its orders change, which share
    Amazon fulfils, whether notifications flow, and the plan in force."""

    changes_per_s: float | None = None
    afn_share: float = AFN_SHARE_GUESS
    flowing: bool = False
    found_new: bool = False
    plan: SweepPlan | None = None
    time_scale: float = 1.0

    def observe(self, report: ScanReport) -> None:
        """A poll's window: its changes per (Amazon's) second, its AFN share, whether it found news."""
        self.found_new = report.emitted > 0
        if report.since is not None and report.bound is not None:
            span = (report.bound - report.since).total_seconds()
            self.changes_per_s = changes_per_second(self.changes_per_s, report.listed, span)
        if report.listed:
            self.afn_share = report.listed_afn / report.listed

    def pause_s(self, settings: DownloadSettings) -> float:
        """Seconds (the host's) until the next round."""
        if self.plan is None:
            return settings.poll_interval_s
        return self.plan.poll_interval_s / self.time_scale


async def plan_round(runtime: StageRuntime, channel: Channel, sweep: ChannelSweep) -> SweepPlan:
    """The plan for this round, from the budget, the change rate and whether notifications flow; kept
    in the channel's task health. Notifications that stop raise a notification for the operators."""
    now = runtime.clock.now()
    settings = runtime.settings
    notified = await runtime.store.task(NOTIFICATIONS_TASK, channel.name)
    subscription = await runtime.store.task(SUBSCRIPTION_TASK, channel.name)
    subscription_missing = subscription.get("subscribed") == "no"
    flowing = notifications_flow(
        queue_configured=bool(settings.notifications.queue_url),
        last_notified=_parse(notified.get("last_success")),
        now=now,
        silence_s=settings.notifications.silence_s,
        poll_found_new=sweep.found_new,
        flowed_before=sweep.flowing,
        subscription_missing=subscription_missing,
    )
    if sweep.flowing and not flowing:
        why = (
            subscription.get("last_error", "the subscription is missing")
            if subscription_missing
            else f"no ORDER_CHANGE notification for {settings.notifications.silence_s:.0f} s while its"
            " orders change"
        )
        await runtime.health.notify(
            "notifications-stopped",
            f"channel {channel.name}: {why}; it is polled at the"
            " budget's pace (check the subscription: ordersync notifications setup)",
            channel=channel.name,
            dedupe_key=f"notifications-stopped:{channel.name}",
            at=now,
        )
    sweep.flowing = flowing
    rate, sweep.time_scale = listing_budget(runtime, channel)
    plan = plan_sweep(
        listing_rate=rate,
        changes_per_s=sweep.changes_per_s or 0.0,
        notifications_flow=flowing,
        settings=settings.download,
        catch_ups=tuple(catch_up.reader(sweep.afn_share) for catch_up in catch_ups(settings.download)),
        time_scale=sweep.time_scale,
    )
    flow = "notifications flow" if flowing else "no notifications"
    await runtime.store.record_task(PLAN_TASK, channel.name, ok=True, detail=f"{flow}: {plan.summary()}")
    sweep.plan = plan
    return plan


async def poll_channel(
    runtime: StageRuntime, channel: Channel, turns: asyncio.Semaphore | None = None
) -> None:
    """Download rounds for one channel, forever, with the catch-ups when due; each round's outcome
    is recorded as task health. One worker polls a channel at a time (a lease, renewed with every page):
    other replicas stand by, so the channel's quota is not spent twice. ``turns``: shared by the
    channels of the stage, a round runs holding one (``download.max_concurrent_channels``)."""
    client = runtime.amazon(channel)
    lease = runtime.lease("download", channel.name)
    turns = turns or asyncio.Semaphore(1)

    async def fetch_page(query: OrdersQuery, token: str | None) -> OrdersPage:
        if not await lease.hold():
            raise LeaseLost(f"{channel.name}: another worker polls this channel now")
        return await client.list_orders_page(query, next_token=token)

    sweep = ChannelSweep()

    async def one_round() -> None:
        await runtime.confirm_state()  # Redis lost the cursors and marks: they come back first
        notice = v0_retirement_notice(channel, runtime.clock.now())
        if notice is not None:
            await runtime.health.notify(
                "orders-v0-retirement",
                notice,
                channel=channel.name,
                dedupe_key=f"orders-v0:{channel.name}",
                at=runtime.clock.now(),
            )
        try:
            if await lease.hold():
                plan = await plan_round(runtime, channel, sweep)
                report = await download_window(runtime, channel, fetch_page, overlap_s=plan.overlap_s)
                sweep.observe(report)
                await runtime.store.record_task("download", channel.name, ok=True, detail=report.summary())
                log.info("%s: download: %s, cursor %s", channel.name, report.summary(), report.bound)
                # The plan is in Amazon's seconds; the catch-ups' schedule in the stage clock's.
                scale = sweep.time_scale
                due = {
                    task: None if every is None else every / scale for task, every in plan.catch_ups.items()
                }
                await run_due_catch_ups(runtime, channel, fetch_page, due)
        except LeaseLost as exc:
            log.warning("%s", exc)
        except PipelineError as exc:
            if is_outage(exc):
                raise  # the rate limiter's Redis is down: a stall, not a failed round
            await runtime.store.record_task("download", channel.name, ok=False, detail=str(exc))
            log.error("%s: download round failed: %s", channel.name, exc)

    try:
        while True:
            # A thousand channels would otherwise all poll at once (requests, Redis connections, the
            # CPU): a round waits for its turn, and the channels that waited spread over the interval.
            async with turns:
                # Redis or the broker down, or a surprise: the round is tried again at the next poll.
                await runtime.survive(f"download {channel.name}", one_round)
            await runtime.wakeups.pause("download", channel.name, sweep.pause_s(runtime.settings.download))
    finally:
        await asyncio.shield(lease.release())


async def poll_channels(runtime: StageRuntime) -> None:
    """Every active channel polled, forever, at most ``download.max_concurrent_channels`` rounds at once."""
    turns = asyncio.Semaphore(runtime.settings.download.max_concurrent_channels)
    # Channels added, changed or deactivated while the stage runs are followed (the channel registry).
    await runtime.each_active_channel("download", lambda channel: poll_channel(runtime, channel, turns))


async def retry_download(runtime: StageRuntime, envelope: Envelope[Event]) -> None:
    """Fetch the commanded orders again and send them down the pipeline as if new, each order on its
    own: one Amazon refuses is reported with Amazon's words and the others go on; one Amazon cannot
    answer now (down, auth refused for a while) makes the command wait on the redrive tiers, and only
    those orders are tried again."""
    command = envelope.payload_as(OperatorCommandIssued)
    if command.command != "retry-download":
        return
    channel = runtime.channels.by_name(command.channel)
    client = runtime.amazon(channel)
    store = runtime.store
    progress_key = store.key_of(keys.COMMAND_PROGRESS, str(envelope.event_id))
    progress = cast(dict[str, str], await store.redis.hgetall(progress_key))
    waiting: dict[str, str] = {}
    for order_id in command.amazon_order_ids:
        if order_id in progress:
            continue  # done (or refused) on an earlier try of this command
        try:
            order = await runtime.retrying(f"getOrder {order_id}", partial(client.get_order, order_id))
        except Retryable as exc:
            if is_outage(exc):
                raise
            waiting[order_id] = str(exc)
            continue
        except Permanent as exc:
            outcome = f"refused: {exc}"
        else:
            # From scratch: forget what was seen, so item fetch and import treat this version as new.
            await store.forget_versions(channel.seller_id, order_id, (DEDUPE_MARK, "enriched"))
            await runtime.emit(
                ORDERS_DOWNLOADED,
                order_key(channel.seller_id, order_id),
                downloaded_event(channel, await runtime.sealed(channel, order), "retry"),
            )
            await store.record_version(DEDUPE_MARK, channel.seller_id, order_id, order.last_update_date)
            outcome = "done"
        progress[order_id] = outcome
        await store.redis.hset(progress_key, order_id, outcome)
        await store.redis.expire(progress_key, int(runtime.redrive_settings.deadline_s) + 2 * 86400)
    if waiting and not runtime.last_try():
        await _record_retry_download(runtime, channel, command, progress, waiting, final=False)
        first = next(iter(waiting.values()))
        raise Retryable(f"retry-download: Amazon could not answer for {len(waiting)} order(s): {first}")
    await _record_retry_download(runtime, channel, command, progress, waiting, final=True)


async def _record_retry_download(
    runtime: StageRuntime,
    channel: Channel,
    command: OperatorCommandIssued,
    progress: dict[str, str],
    waiting: dict[str, str],
    *,
    final: bool,
) -> None:
    """The command's outcome per order, in the task's health (what the dashboard's Tasks page shows)."""
    done = [o for o in command.amazon_order_ids if progress.get(o) == "done"]
    refused = {o: progress[o] for o in command.amazon_order_ids if progress.get(o, "done") != "done"}
    verb = "failed, Amazon did not answer by the redrive deadline" if final else "waits for Amazon"
    exceptions = {**refused, **{order_id: f"{verb}: {reason}" for order_id, reason in waiting.items()}}
    detail = outcome_detail(
        f"{len(done)} of {len(command.amazon_order_ids)} orders downloaded again", exceptions
    )
    await runtime.store.record_task(
        "retry-download",
        channel.name,
        ok=not refused and not waiting,
        detail=detail,
        operator=command.operator or "",
    )


def register(app: faust.App, runtime: StageRuntime) -> None:
    runtime.topic(ORDERS_DOWNLOADED)
    runtime.topic(DOWNLOAD_CURSORS)
    runtime.on_redis_reset(partial(rebuild_download_state, runtime))

    @app.task  # type: ignore[untyped-decorator]
    async def watch_redis() -> None:
        await runtime.watch_generation()

    @app.agent(runtime.topic(OPS_COMMANDS), name="retry-download")
    async def retry_downloads(stream: faust.StreamT[bytes]) -> None:
        await runtime.consume(OPS_COMMANDS, stream, lambda env: retry_download(runtime, env))

    @app.task  # type: ignore[untyped-decorator]
    async def download_orders() -> None:
        await runtime.start()
        await poll_channels(runtime)

    @app.task  # type: ignore[untyped-decorator]
    async def reconcile_from_reports() -> None:
        if not runtime.settings.download.report_reconciliation:
            return
        await runtime.start()
        await runtime.each_active_channel("reconciliation", partial(reconcile_channel, runtime))
