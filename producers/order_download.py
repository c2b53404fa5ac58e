"""Order download: polls Amazon for orders updated since each channel's cursor.

- Input: Amazon, per active channel, every ``download.poll_interval_s``; and ``ops.commands``
  (``retry-download``: fetch the named orders again from scratch, as KCC's "Retry Download").
- Output: ``amazon.orders.downloaded`` (key ``seller_id:amazon_order_id``).
- Amazon operations and quotas (per seller, through the rate limiter): ``getOrders`` (v0; 0.0167/s,
  burst 20) or ``searchOrders`` (2026-01-01; 0.0056/s, burst 20), one call per page of 100;
  ``getOrder`` (0.5/s, burst 30) per order of a retry-download command.
- State in Redis: the cursor per channel (Amazon's returned ``LastUpdatedBefore``), saved only after
  every event of the window is acknowledged by Kafka, so a crash re-reads rather than skips; a dedupe
  mark per (seller, order, LastUpdateDate), so the overlap never emits an order version twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial

import faust

from ordersync.amazon.client import OrdersPage
from ordersync.channels import Channel
from ordersync.errors import PipelineError
from ordersync.runtime import StageRuntime
from ordersync.schemas.envelope import Envelope, Event
from ordersync.schemas.events import AmazonOrder, FoundBy, OperatorCommandIssued, OrderDownloaded
from ordersync.schemas.topics import OPS_COMMANDS, ORDERS_DOWNLOADED, order_key
from ordersync.settings import DownloadSettings

log = logging.getLogger(__name__)
STAGE = "order-download"
DEDUPE_MARK = "downloaded"


def window_start(cursor: datetime | None, now: datetime, settings: DownloadSettings) -> datetime:
    """Where the next window begins: the cursor minus the overlap, or the initial look-back."""
    if cursor is None:
        return now - timedelta(seconds=settings.initial_lookback_s)
    return cursor - timedelta(seconds=settings.overlap_s)


def downloaded_event(
    channel: Channel, order: AmazonOrder, found_by: FoundBy = "poll"
) -> Envelope[OrderDownloaded]:
    return Envelope.wrap(
        OrderDownloaded(channel=channel.name, order=order, found_by=found_by),
        seller_id=channel.seller_id,
        marketplace_id=order.marketplace_id,
        correlation_id=order_key(channel.seller_id, order.amazon_order_id),
    )


@dataclass
class WindowReport:
    pages: int = 0
    listed: int = 0
    emitted: int = 0
    updated_before: datetime | None = None


async def download_window(
    runtime: StageRuntime,
    channel: Channel,
    fetch_page: Callable[[datetime | None, str | None], Awaitable[OrdersPage]],
    found_by: FoundBy = "poll",
) -> WindowReport:
    """One window from the channel's cursor to what Amazon guarantees now; saves the cursor last."""
    store = runtime.store
    cursor = await store.cursor(channel.name)
    start = window_start(cursor, datetime.now(UTC), runtime.settings.download)
    report = WindowReport()
    next_token: str | None = None
    while True:
        # A throttled page is retried with the same token (the limiter waits; nothing is skipped).
        page = await runtime.retrying(
            f"{channel.name} orders page", partial(fetch_page, None if next_token else start, next_token)
        )
        report.pages += 1
        report.listed += len(page.orders)
        for order in page.orders:
            if await store.is_new_version(
                DEDUPE_MARK, channel.seller_id, order.amazon_order_id, order.last_update_date
            ):
                await runtime.emit(
                    ORDERS_DOWNLOADED,
                    order_key(channel.seller_id, order.amazon_order_id),
                    downloaded_event(channel, order, found_by),
                )
                await store.record_version(
                    DEDUPE_MARK, channel.seller_id, order.amazon_order_id, order.last_update_date
                )
                await store.set_order_status(
                    channel.seller_id,
                    order.amazon_order_id,
                    channel=channel.name,
                    marketplace_id=order.marketplace_id,
                    amazon_status=order.order_status,
                    fulfillment_channel=order.fulfillment_channel,
                    downloaded_at=datetime.now(UTC).isoformat(),
                )
                report.emitted += 1
        if page.updated_before is not None:
            report.updated_before = page.updated_before
        next_token = page.next_token
        if not next_token:
            break
    if report.updated_before is not None and (cursor is None or report.updated_before > cursor):
        await store.save_cursor(channel.name, report.updated_before)
    return report


async def poll_channel(runtime: StageRuntime, channel: Channel) -> None:
    """Download rounds for one channel, forever; each round's outcome is recorded as task health."""
    client = runtime.amazon(channel)

    async def fetch_page(after: datetime | None, token: str | None) -> OrdersPage:
        return await client.list_orders_page(updated_after=after, next_token=token)

    while True:
        try:
            report = await download_window(runtime, channel, fetch_page)
            await runtime.store.record_task(
                "download",
                channel.name,
                ok=True,
                detail=f"{report.pages} pages, {report.listed} listed, {report.emitted} new or changed",
            )
            log.info(
                "%s: %d pages, %d orders listed, %d new or changed, cursor %s",
                channel.name,
                report.pages,
                report.listed,
                report.emitted,
                report.updated_before,
            )
        except PipelineError as exc:
            await runtime.store.record_task("download", channel.name, ok=False, detail=str(exc))
            log.error("%s: download round failed: %s", channel.name, exc)
        await asyncio.sleep(runtime.settings.download.poll_interval_s)


async def retry_download(runtime: StageRuntime, envelope: Envelope[Event]) -> None:
    """Fetch the commanded orders again and send them down the pipeline as if new."""
    command = envelope.payload_as(OperatorCommandIssued)
    if command.command != "retry-download":
        return
    channel = runtime.channels.by_name(command.channel)
    client = runtime.amazon(channel)
    store = runtime.store
    for order_id in command.amazon_order_ids:
        order = await runtime.retrying(f"getOrder {order_id}", partial(client.get_order, order_id))
        # From scratch: forget what was seen, so item fetch and import treat this version as new.
        await store.forget_versions(channel.seller_id, order_id, (DEDUPE_MARK, "enriched"))
        await runtime.emit(
            ORDERS_DOWNLOADED,
            order_key(channel.seller_id, order_id),
            downloaded_event(channel, order, "retry"),
        )
        await store.record_version(DEDUPE_MARK, channel.seller_id, order_id, order.last_update_date)
    await store.record_task(
        "retry-download",
        channel.name,
        ok=True,
        detail=f"{len(command.amazon_order_ids)} orders downloaded again",
    )


def register(app: faust.App, runtime: StageRuntime) -> None:
    runtime.topic(ORDERS_DOWNLOADED)

    @app.agent(runtime.topic(OPS_COMMANDS), name="retry-download")
    async def retry_downloads(stream: faust.StreamT[bytes]) -> None:
        await runtime.start()
        async for event in stream.events():
            await runtime.process(OPS_COMMANDS, event, lambda env: retry_download(runtime, env))

    @app.task  # type: ignore[untyped-decorator]
    async def download_orders() -> None:
        await runtime.start()
        await asyncio.gather(*(poll_channel(runtime, channel) for channel in runtime.channels.active()))
