"""The operators' read side on the command line, from the status read model
(:mod:`ordersync.state.readmodel`):

- ``ordersync orders list`` / ``ordersync orders show``: the grid and one order's detail;
- ``ordersync export failed --since ... > file.csv``: failed orders with what a person needs to check
  them by hand in Seller Central;
- ``ordersync status``: per channel, orders by status, shipments confirmed late (the Late Shipment Rate
  as ordersync sees it) and orders near or past their ship-by date, API health, tasks and dead-letter
  topics;
- ``ordersync status-model rebuild``: drop the model and fold every topic again from its first offset
  (:mod:`ordersync.state.readmodel.rebuild`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from ordersync.cli.common import keyspace_empty, redis_described, when, with_read_model
from ordersync.settings import Settings, get_settings
from ordersync.state.readmodel import (
    OVERALL_STATUSES,
    OverallStatus,
    ReadModel,
    ShipmentTimeliness,
)

T = TypeVar("T")

status_model_app = typer.Typer(help="The status read model (orders grid, status).", no_args_is_help=True)


# --- helpers ---------------------------------------------------------------------------------------------


# --- orders list / show ----------------------------------------------------------------------------------


# --- export failed ---------------------------------------------------------------------------------------


# --- status ----------------------------------------------------------------------------------------------


@dataclass
class StatusReport:
    #: Orders per status per account, from the read model's status sets: the same count as the
    #: dashboard's grid and status key (:meth:`ReadModel.status_counts`).
    counts: dict[tuple[str, str], dict[OverallStatus, int]] = field(default_factory=dict)
    #: Orders of no known account yet (no channel folded, e.g. known only from a dead letter).
    unattributed: dict[OverallStatus, int] = field(default_factory=dict)
    total: dict[OverallStatus, int] = field(default_factory=dict)
    health: list[Any] = field(default_factory=list)
    timeliness: list[ShipmentTimeliness] = field(default_factory=list)
    tasks: list[Any] = field(default_factory=list)
    dlq: list[Any] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)


async def status_report(model: ReadModel, settings: Settings) -> StatusReport:
    report = StatusReport()
    accounts = await model.sellers()
    counted = await model.status_counts()
    report.counts = {(channel, seller): counts for channel, seller, counts in counted.accounts}
    report.unattributed = dict(counted.unattributed)
    report.total = dict(counted.total)
    report.timeliness = await model.shipment_timeliness()
    from ordersync.state.health import HealthBoard

    board = HealthBoard(model.redis, model.prefix, settings.health)
    report.health = list(await board.api_health(accounts or None))
    report.tasks = await model.tasks()
    report.dlq = await model.dlq_sizes()
    report.skipped = await model.skipped()
    return report


def late_rate_text(timeliness: ShipmentTimeliness) -> str:
    """``2.5 %`` (late / confirmed), or empty before any confirmation."""
    rate = timeliness.late_rate
    return "" if rate is None else f"{rate * 100:.1f} %"


def timeliness_table(rows: list[ShipmentTimeliness]) -> Table:
    """Per account: shipments ordersync confirmed, those confirmed late and their rate (Amazon's Late
    Shipment Rate must stay under 4 %), and the orders awaiting shipment overdue or at risk."""
    table = Table(title="shipments vs. latest ship date (as ordersync confirmed them)", title_justify="left")
    for column in ("channel", "seller", "confirmed", "late", "late rate", "overdue", "at risk", "earliest"):
        table.add_column(column, justify="right" if column in ("confirmed", "late", "overdue") else "left")
    for row in rows:
        rate = row.late_rate
        style = "bold red" if rate is not None and rate >= 0.04 else ""
        rate_text = f"[{style}]{late_rate_text(row)}[/]" if style else late_rate_text(row)
        table.add_row(
            row.channel,
            row.seller_id,
            str(row.confirmed),
            str(row.late),
            rate_text,
            f"[bold red]{row.overdue}[/]" if row.overdue else "0",
            f"[yellow]{row.at_risk}[/]" if row.at_risk else "0",
            ", ".join(row.due_order_ids),
        )
    return table


def orders_table(report: StatusReport) -> Table:
    """Orders by status per account, those of no known account, and all: the dashboard's numbers."""
    orders = Table(title="orders by status", title_justify="left")
    for column in ("channel", "seller", *OVERALL_STATUSES):
        orders.add_column(column)
    for (channel, seller), counts in sorted(report.counts.items()):
        orders.add_row(channel, seller, *(str(counts[s]) for s in OVERALL_STATUSES))
    if any(report.unattributed.values()):
        orders.add_row("(no account)", "", *(str(report.unattributed.get(s, 0)) for s in OVERALL_STATUSES))
    if report.total:
        orders.add_row("[bold]all[/]", "", *(f"[bold]{report.total.get(s, 0)}[/]" for s in OVERALL_STATUSES))
    return orders


def status() -> None:
    """Per channel: orders by status, API health, tasks (last run, last error), dead-letter topics."""
    settings = get_settings()

    async def read(model: ReadModel) -> StatusReport | None:
        if await keyspace_empty(model.redis, model.prefix):
            return None
        return await status_report(model, settings)

    report = with_read_model(settings, read)
    console = Console()
    # Which Redis this is, first: a CLI aimed at another Redis (or prefix) than the pipeline's would
    # otherwise print empty tables as if nothing had happened.
    typer.echo(f"Redis {redis_described(settings.redis)}")
    if report is None:
        typer.echo(
            f"nothing under key prefix {settings.redis.key_prefix!r} in this Redis: no order, task or dead"
            " letter recorded (is it the pipeline's? set ORDERSYNC_REDIS__URL and"
            " ORDERSYNC_REDIS__KEY_PREFIX as the stages have them)"
        )
        return
    orders = orders_table(report)
    console.print(orders)
    if report.timeliness:
        console.print(timeliness_table(report.timeliness))
    if report.health:
        health = Table(title="API health", title_justify="left")
        for column in ("channel", "API", "status", "why"):
            health.add_column(column, overflow="fold")
        colour = {"Green": "green", "Yellow": "yellow", "Red": "bold red", "None": "dim"}
        for entry in report.health:
            health.add_row(
                entry.channel, entry.api, f"[{colour.get(entry.colour, '')}]{entry.colour}[/]", entry.reason
            )
        console.print(health)
    tasks = Table(title="tasks", title_justify="left")
    for column in ("task", "scope", "last run", "last success", "result", "last error"):
        tasks.add_column(column, overflow="fold")
    for task in report.tasks:
        error = f"{when(task.last_error_at)} {task.last_error}" if task.last_error else ""
        tasks.add_row(
            task.task,
            task.scope,
            when(task.last_run),
            when(task.last_success),
            task.last_result or "",
            error,
        )
    console.print(tasks)
    dlq = Table(title="dead-letter topics (records folded)", title_justify="left")
    dlq.add_column("topic")
    dlq.add_column("records", justify="right")
    dlq.add_column("latest")
    for size in report.dlq:
        style = "bold red" if size.records else ""
        dlq.add_row(size.topic, f"[{style}]{size.records}[/]" if style else "0", when(size.last_at))
    console.print(dlq)
    if report.skipped:
        console.print(
            "[yellow]records the projection skipped (not valid events):[/] "
            + ", ".join(f"{topic} {count}" for topic, count in sorted(report.skipped.items()))
        )


# --- rebuild ---------------------------------------------------------------------------------------------


@status_model_app.command("rebuild")
def rebuild_command(
    prefix: Annotated[
        str | None,
        typer.Option(help="Rebuild the model under this Redis key prefix (default: the configured one)."),
    ] = None,
) -> None:
    """Drop the status model and fold every topic again from its first offset (to the high watermark
    at the start). Safe while the status-projection stage runs: the fold is idempotent and
    order-insensitive."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ordersync.state.readmodel.rebuild import rebuild

    settings = get_settings()
    console = Console(stderr=True)
    with Progress(
        TextColumn("rebuilding the status model"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task("rebuild", total=None)

        def progress(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        try:
            result = with_read_model(
                settings, lambda model: rebuild(settings, model, progress=progress), prefix=prefix
            )
        except RuntimeError as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(1) from exc
    table = Table(title=f"status model rebuilt in {result.seconds:.1f}s", title_justify="left")
    table.add_column("topic")
    table.add_column("records folded", justify="right")
    table.add_column("skipped (not valid)", justify="right")
    for topic in sorted(set(result.records) | set(result.skipped)):
        table.add_row(topic, str(result.records[topic]), str(result.skipped[topic]))
    Console().print(table)
    Console().print(
        f"{result.orders} orders: "
        + ", ".join(f"{status} {result.by_status.get(status, 0)}" for status in OVERALL_STATUSES)
    )
    if result.missing_topics:
        typer.echo(f"topics not on the broker (skipped): {', '.join(result.missing_topics)}", err=True)
