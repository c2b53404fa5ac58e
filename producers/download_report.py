"""Order download's reconciliation from Amazon's order report: nothing missed, whatever the poll's budget.

Once a day per channel (``download.report_interval_s``, Amazon's seconds), a task of the order-download
stage asks for ``GET_FLAT_FILE_ALL_ORDERS_DATA_BY_LAST_UPDATE_GENERAL`` over the orders changed since the
last report's end (less ``report_overlap_s``) up to ``report_lag_s`` ago (the report is up to 30 minutes
behind), waits for it (getReport every ``report_poll_s``), reads its gzip document, and compares every
(order, last update) in it with the version the pipeline sent. Each order the pipeline is behind on is
fetched with getOrder and sent to ``amazon.orders.downloaded`` (``found_by: reconciliation``), under the
same claims as the poll and the notifications, so it is never sent twice. The report covers a seller's
every marketplace of the region: an order of a marketplace the channel does not sell in is fetched
once, marked seen and not sent.

Amazon operations and quotas (per seller, through the rate limiter): createReport 0.0167/s burst 15 and
getReportDocument 0.0167/s burst 15, once a run; getReport 2/s burst 15 while the report is made;
getOrder 0.5/s burst 30 per order behind. None of it spends the listing budget (searchOrders).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from ordersync.amazon.reports import ReportOrderLine, latest_versions, parse_all_orders_report
from ordersync.channels import Channel
from ordersync.errors import LeaseLost, PipelineError, Retryable, is_outage
from ordersync.pipeline.runtime import StageRuntime
from ordersync.producers.download_send import DEDUPE_MARK, emit_if_new
from ordersync.settings import DownloadSettings

log = logging.getLogger(__name__)
REPORT_TYPE = "GET_FLAT_FILE_ALL_ORDERS_DATA_BY_LAST_UPDATE_GENERAL"
#: The task (health, per channel) of the report reconciliation.
REPORT_TASK = "report-reconciliation"
#: Statuses after which a report changes no more.
FINISHED = frozenset({"DONE", "CANCELLED", "FATAL"})


def report_window(
    reached: datetime | None, now: datetime, settings: DownloadSettings
) -> tuple[datetime, datetime]:
    """The report's data window: from the last report's end less the overlap (the first time: a window
    of ``report_first_window_s``), never longer than ``report_max_window_s``, to ``report_lag_s`` ago."""
    end = now - timedelta(seconds=settings.report_lag_s)
    start = (
        reached - timedelta(seconds=settings.report_overlap_s)
        if reached is not None
        else end - timedelta(seconds=settings.report_first_window_s)
    )
    return max(start, end - timedelta(seconds=settings.report_max_window_s)), end


def report_gaps(latest: Mapping[str, ReportOrderLine], sent: Mapping[str, datetime]) -> list[str]:
    """The orders whose version in the report is newer than the one the pipeline sent (or it sent none)."""
    return sorted(
        order_id
        for order_id, line in latest.items()
        if (version := sent.get(order_id)) is None or version < line.last_updated
    )


@dataclass
class ReconciliationReport:
    """One run: the report's window and size, the orders behind, what was sent."""

    start: datetime
    end: datetime
    lines: int = 0
    orders: int = 0
    behind: int = 0
    sent: int = 0
    other_marketplaces: int = 0
    status: str = ""

    def summary(self) -> str:
        window = f"{self.start.isoformat()} to {self.end.isoformat()}"
        others = f", {self.other_marketplaces} of other marketplaces" if self.other_marketplaces else ""
        return (
            f"report {self.status} for {window}: {self.lines} lines, {self.orders} orders,"
            f" {self.behind} behind, {self.sent} sent{others}"
        )


#: Renews this worker's lease on the channel's reconciliation: False when another worker has it now.
Holding = Callable[[], Awaitable[bool]]


async def _still_mine(hold: Holding, channel: Channel) -> None:
    if not await hold():
        raise LeaseLost(f"{channel.name}: another worker reconciles this channel now")


async def _wait_for_report(
    runtime: StageRuntime, channel: Channel, report_id: str, hold: Holding
) -> tuple[str, str | None]:
    """The report's final status and document, asking every ``report_poll_s`` (Amazon's seconds)."""
    client = runtime.amazon(channel)
    settings = runtime.settings.download
    deadline = runtime.clock.now() + timedelta(seconds=settings.report_timeout_s)
    while True:
        await _still_mine(hold, channel)
        status = await runtime.retrying(f"getReport {report_id}", partial(client.get_report, report_id))
        if status.processing_status in FINISHED:
            return status.processing_status, status.report_document_id
        if runtime.clock.now() >= deadline:
            raise Retryable(
                f"report {report_id} still {status.processing_status} after {settings.report_timeout_s:.0f} s"
            )
        await asyncio.sleep(settings.report_poll_s / runtime.settings.amazon.time_scale)


async def reconcile_from_report(
    runtime: StageRuntime, channel: Channel, reached: datetime | None, hold: Holding, amazon_now: datetime
) -> ReconciliationReport:
    """One reconciliation of ``channel`` from the report of the orders changed since ``reached``, up to
    ``amazon_now`` less the report's lag; ``hold`` renews the worker's lease before each step
    (:class:`LeaseLost` once another has it)."""
    client = runtime.amazon(channel)
    start, end = report_window(reached, amazon_now, runtime.settings.download)
    result = ReconciliationReport(start, end)
    report_id = await runtime.retrying(
        "createReport", partial(client.create_report, REPORT_TYPE, data_start=start, data_end=end)
    )
    result.status, document_id = await _wait_for_report(runtime, channel, report_id, hold)
    if result.status != "DONE" or document_id is None:
        # CANCELLED: Amazon had nothing to report; FATAL: it could not (tried again at the next run).
        if result.status == "FATAL":
            raise Retryable(f"report {report_id} ended FATAL")
        return result
    document = await runtime.retrying(
        f"getReportDocument {document_id}", partial(client.get_report_document, document_id)
    )
    lines = parse_all_orders_report(document.decode("utf-8", errors="replace"))
    latest = latest_versions(lines)
    result.lines, result.orders = len(lines), len(latest)
    sent = await runtime.store.recorded_versions(DEDUPE_MARK, channel.seller_id, list(latest))
    behind = report_gaps(latest, sent)
    result.behind = len(behind)
    for order_id in behind:
        await _still_mine(hold, channel)
        order = await runtime.retrying(f"getOrder {order_id}", partial(client.get_order, order_id))
        if order.marketplace_id not in channel.marketplaces:
            # Amazon's report is regional: not this channel's to send, and not to be fetched again.
            await runtime.store.record_version(
                DEDUPE_MARK, channel.seller_id, order_id, order.last_update_date
            )
            result.other_marketplaces += 1
            continue
        result.sent += await emit_if_new(runtime, channel, order, "reconciliation", sender="report")
    return result


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


async def reconcile_channel(runtime: StageRuntime, channel: Channel) -> None:
    """The channel's report reconciliation, whenever it is due, for as long as the stage runs; one
    replica does it at a time (a lease), and its outcome is the task health ``report-reconciliation``."""
    settings = runtime.settings.download
    lease = runtime.lease("report", channel.name)
    store = runtime.store

    async def one_run() -> None:
        await runtime.confirm_state()
        # Amazon's time is the channel's cursor (its LastUpdatedBefore, about now): the report's window
        # and schedule follow Amazon's clock, whatever the host's says.
        amazon_now = await store.cursor(channel.name)
        if amazon_now is None:
            return  # nothing downloaded yet
        health = await store.task(REPORT_TASK, channel.name)
        reached = _parse(health.get("reached"))
        due = timedelta(seconds=settings.report_interval_s + settings.report_lag_s)
        if reached is not None and amazon_now - reached < due:
            return
        if not await lease.hold():
            return
        try:
            result = await reconcile_from_report(runtime, channel, reached, lease.hold, amazon_now)
        except LeaseLost:
            return
        except PipelineError as exc:
            if is_outage(exc):
                raise
            await store.record_task(REPORT_TASK, channel.name, ok=False, detail=str(exc))
            log.error("%s: report reconciliation failed: %s", channel.name, exc)
            return
        await store.record_task(
            REPORT_TASK, channel.name, ok=True, detail=result.summary(), reached=result.end.isoformat()
        )
        log.info("%s: %s", channel.name, result.summary())

    try:
        while True:
            await runtime.survive(f"{REPORT_TASK} {channel.name}", one_run)
            await asyncio.sleep(settings.report_check_s / runtime.settings.amazon.time_scale)
    finally:
        await asyncio.shield(lease.release())
