"""The operators' read side on the command line, from the status read model
(:mod:`ordersync.state.readmodel`):

- ``ordersync orders list`` / ``ordersync orders show``: the grid and one order's detail;
- ``ordersync export failed --since ... > file.csv``: failed orders with what a person needs to check
  them by hand in Seller Central;
- ``ordersync status``: per channel, orders by status, API health, tasks and dead-letter topics;
- ``ordersync status-model rebuild``: drop the model and fold every topic again from its first offset
  (:mod:`ordersync.state.readmodel.rebuild`).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar, cast

import typer
from rich.console import Console
from rich.table import Table

from ordersync.settings import Settings, get_settings
from ordersync.state.readmodel import (
    OVERALL_STATUSES,
    FailedStage,
    OrderDetail,
    OrderFilter,
    OrderRow,
    OverallStatus,
    ReadModel,
    SortKey,
    write_orders_csv,
)

T = TypeVar("T")

export_app = typer.Typer(help="Export orders as CSV.", no_args_is_help=True)
status_model_app = typer.Typer(help="The status read model (orders grid, status).", no_args_is_help=True)


# --- helpers ---------------------------------------------------------------------------------------------


def parse_time(value: str | None, option: str) -> datetime | None:
    """An ISO 8601 date or date-time; without a zone it is UTC."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise typer.BadParameter(
            f"{value!r} is not an ISO 8601 date or date-time", param_hint=option
        ) from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _with_model(
    settings: Settings, work: Callable[[ReadModel], Awaitable[T]], prefix: str | None = None
) -> T:
    from ordersync.redis_client import redis_client  # noqa: PLC0415 - keeps CLI start-up fast

    async def run() -> T:
        redis = redis_client(settings.redis)
        try:
            return await work(ReadModel(redis, prefix or settings.redis.key_prefix, notify_dlq=False))
        finally:
            await redis.aclose()

    return asyncio.run(run())


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if value else ""


_STATUS_STYLE = {"Failed": "bold red", "Pending": "yellow", "Success": "green", "Ignored": "dim"}


def orders_table(rows: tuple[OrderRow, ...], *, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column in (
        "order",
        "channel",
        "marketplace",
        "purchased (UTC)",
        "status",
        "import",
        "write-back",
        "sales order",
        "attempts",
        "error",
    ):
        table.add_column(column, overflow="fold")
    for row in rows:
        error = f"{row.error_code}: {row.error_message}" if row.error_code else ""
        table.add_row(
            row.amazon_order_id,
            row.channel,
            row.marketplace_id or "",
            _when(row.purchase_date),
            f"[{_STATUS_STYLE[row.status]}]{row.status}[/]",
            row.import_status or "",
            row.writeback_status or "",
            row.sales_order_code or "",
            str(row.attempts) if row.attempts else "",
            error,
        )
    return table


# --- orders list / show ----------------------------------------------------------------------------------


def orders_list(  # noqa: PLR0917 - one parameter per CLI option
    status: Annotated[
        str | None, typer.Option(help="Failed | Pending | Success | Ignored (case-insensitive).")
    ] = None,
    channel: Annotated[str | None, typer.Option(help="Only this channel.")] = None,
    seller: Annotated[str | None, typer.Option(help="Only this seller id.")] = None,
    marketplace: Annotated[str | None, typer.Option(help="Only this marketplace id.")] = None,
    since: Annotated[
        str | None, typer.Option(help="Purchased at or after (ISO 8601, UTC if no zone).")
    ] = None,
    until: Annotated[str | None, typer.Option(help="Purchased before (ISO 8601).")] = None,
    search: Annotated[str | None, typer.Option(help="An order id, a prefix of one, or a seller SKU.")] = None,
    failed_stage: Annotated[
        str | None, typer.Option("--failed-stage", help="download | import | write-back.")
    ] = None,
    sort: Annotated[str, typer.Option(help="purchase_date | updated_at | amazon_order_id | status.")] = (
        "purchase_date"
    ),
    ascending: Annotated[bool, typer.Option("--ascending", help="Oldest / smallest first.")] = False,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="Rows per page.")] = 50,
    offset: Annotated[int, typer.Option(min=0, help="Rows to skip.")] = 0,
    as_json: Annotated[
        bool, typer.Option("--json", help="JSON (the page with its total) instead of a table.")
    ] = (False),
) -> None:
    """List orders from the status model (the dashboard's grid), filtered, sorted and paged."""
    order_filter = build_filter(
        status=status,
        channel=channel,
        seller=seller,
        marketplace=marketplace,
        since=since,
        until=until,
        search=search,
        failed_stage=failed_stage,
    )
    if sort not in ("purchase_date", "updated_at", "amazon_order_id", "status"):
        raise typer.BadParameter(f"unknown sort {sort!r}", param_hint="--sort")
    page = _with_model(
        get_settings(),
        lambda model: model.orders(
            order_filter, sort=cast(SortKey, sort), descending=not ascending, offset=offset, limit=limit
        ),
    )
    if as_json:
        typer.echo(page.model_dump_json(indent=2))
        return
    shown = f"{offset + 1}-{offset + len(page.rows)}" if page.rows else "none"
    Console().print(orders_table(page.rows, title=f"orders {shown} of {page.total}"))


def build_filter(
    *,
    status: str | None,
    channel: str | None,
    seller: str | None,
    marketplace: str | None,
    since: str | None,
    until: str | None,
    search: str | None,
    failed_stage: str | None,
) -> OrderFilter:
    overall: OverallStatus | None = None
    if status is not None:
        matches = [s for s in OVERALL_STATUSES if s.lower() == status.strip().lower()]
        if not matches:
            raise typer.BadParameter(
                f"{status!r} is not one of {', '.join(OVERALL_STATUSES)}", param_hint="--status"
            )
        overall = matches[0]
    if failed_stage is not None and failed_stage not in ("download", "import", "write-back"):
        raise typer.BadParameter(
            f"{failed_stage!r}: download, import or write-back", param_hint="--failed-stage"
        )
    return OrderFilter(
        status=overall,
        channel=channel,
        seller_id=seller,
        marketplace_id=marketplace,
        since=parse_time(since, "--since"),
        until=parse_time(until, "--until"),
        text=search.strip() if search and search.strip() else None,
        failed_stage=cast(FailedStage | None, failed_stage),
    )


def _detail_text(console: Console, detail: OrderDetail) -> None:
    row = detail.row
    console.print(
        f"[bold]{row.amazon_order_id}[/] channel {row.channel or '?'} seller {row.seller_id} "
        f"marketplace {row.marketplace_id or '?'}: [{_STATUS_STYLE[row.status]}]{row.status}[/]"
    )
    facts = Table(show_header=False, box=None)
    for label, value in (
        ("purchased", _when(row.purchase_date)),
        ("updated", _when(row.updated_at)),
        ("Amazon status", row.amazon_status),
        ("fulfilment", row.fulfillment_channel),
        ("download", row.download_status),
        ("import", row.import_status),
        ("sales order", row.sales_order_code),
        ("invoice", row.invoice_status),
        ("write-back", row.writeback_status),
        ("attempts", str(row.attempts)),
        ("error", f"{row.error_code}: {row.error_message}" if row.error_code else None),
    ):
        facts.add_row(label, value or "")
    console.print(facts)
    if detail.lines:
        lines = Table(title="lines", title_justify="left")
        for column in ("item", "seller SKU", "ASIN", "stock code", "ordered", "shipped", "line total"):
            lines.add_column(column)
        for line in detail.lines:
            lines.add_row(
                *(
                    str(line.get(k) if line.get(k) is not None else "")
                    for k in (
                        "order_item_id",
                        "seller_sku",
                        "asin",
                        "stock_code",
                        "quantity_ordered",
                        "quantity_shipped",
                        "line_total",
                    )
                )
            )
        console.print(lines)
    if detail.shipments:
        packages = Table(title="packages", title_justify="left")
        for column in (
            "package",
            "status",
            "carrier",
            "method",
            "tracking",
            "ship date",
            "attempts",
            "error",
        ):
            packages.add_column(column, overflow="fold")
        for package in detail.shipments:
            error = package.get("error_code")
            packages.add_row(
                str(package.get("package_reference_id")),
                str(package.get("status") or ""),
                str(package.get("carrier_code") or ""),
                str(package.get("shipping_method") or ""),
                str(package.get("tracking_number") or ""),
                str(package.get("ship_date") or "")[:16],
                str(package.get("attempts") or ""),
                f"{error}: {package.get('error_message')}" if error else "",
            )
        console.print(packages)
    if detail.errors:
        errors = Table(title="errors", title_justify="left")
        for column in ("at", "stage", "code", "message", "still open"):
            errors.add_column(column, overflow="fold")
        for error in detail.errors:
            errors.add_row(
                str(error["at"])[:19],
                str(error["stage"]),
                str(error.get("code") or ""),
                str(error.get("message") or ""),
                "yes" if error.get("active") else "superseded",
            )
        console.print(errors)
    history = Table(title="history", title_justify="left")
    for column in ("at", "topic", "what"):
        history.add_column(column, overflow="fold")
    for entry in detail.history:
        history.add_row(str(entry["at"])[:19], str(entry["topic"]), str(entry["summary"]))
    console.print(history)


def orders_show(
    order_id: Annotated[str, typer.Argument(help="The Amazon order id.")],
    channel: Annotated[str | None, typer.Option(help="The channel (when several sellers have it).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of tables.")] = False,
) -> None:
    """One order: its status at every stage, lines, packages, errors and history."""
    found = _with_model(get_settings(), lambda model: model.find(order_id.strip(), channel))
    if not found:
        where = f" on channel {channel}" if channel else ""
        typer.echo(f"order {order_id}{where} is not in the status model", err=True)
        raise typer.Exit(1)
    if as_json:
        payload: Any = [d.model_dump(mode="json") for d in found]
        typer.echo(json.dumps(payload[0] if len(payload) == 1 else payload, indent=2))
        return
    console = Console()
    for detail in found:
        _detail_text(console, detail)


# --- export failed ---------------------------------------------------------------------------------------


@export_app.command("failed")
def export_failed(
    since: Annotated[str, typer.Option(help="Purchased at or after (ISO 8601, UTC if no zone).")],
    until: Annotated[str | None, typer.Option(help="Purchased before (ISO 8601).")] = None,
    channel: Annotated[str | None, typer.Option(help="Only this channel.")] = None,
    stage: Annotated[str | None, typer.Option(help="import | write-back (default: every failure).")] = None,
) -> None:
    """Failed orders as CSV on stdout: for failed write-backs, one row per package with what Seller
    Central needs to confirm it by hand (order, marketplace, SKUs and quantities, carrier, method,
    tracking, ship date, attempts, Amazon's error); for failed imports, the reason."""
    if stage is not None and stage not in ("import", "write-back", "download"):
        raise typer.BadParameter(f"{stage!r}: import or write-back", param_hint="--stage")
    order_filter = OrderFilter(
        status="Failed",
        since=parse_time(since, "--since"),
        until=parse_time(until, "--until"),
        channel=channel,
        failed_stage=cast(FailedStage | None, stage),
    )
    written = _with_model(get_settings(), lambda model: write_orders_csv(model, order_filter, sys.stdout))
    sys.stdout.flush()
    typer.echo(f"{written} row(s) exported", err=True)


# --- status ----------------------------------------------------------------------------------------------


@dataclass
class StatusReport:
    counts: dict[tuple[str, str], dict[OverallStatus, int]] = field(default_factory=dict)
    health: list[Any] = field(default_factory=list)
    tasks: list[Any] = field(default_factory=list)
    dlq: list[Any] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)


async def status_report(model: ReadModel, settings: Settings) -> StatusReport:
    report = StatusReport()
    accounts = await model.sellers()
    for channel, seller in accounts:
        report.counts[(channel, seller)] = await model.counts(channel)
    try:
        from ordersync.health import HealthBoard  # noqa: PLC0415 - the health board is optional here

        board = HealthBoard(model.redis, model.prefix, settings.health)
        report.health = list(await board.api_health(accounts or None))
    except ImportError:  # pragma: no cover - without the health board there is no API health
        report.health = []
    report.tasks = await model.tasks()
    report.dlq = await model.dlq_sizes()
    report.skipped = await model.skipped()
    return report


def status() -> None:
    """Per channel: orders by status, API health, tasks (last run, last error), dead-letter topics."""
    settings = get_settings()
    report = _with_model(settings, lambda model: status_report(model, settings))
    console = Console()
    orders = Table(title="orders by status", title_justify="left")
    for column in ("channel", "seller", *OVERALL_STATUSES):
        orders.add_column(column)
    for (channel, seller), counts in sorted(report.counts.items()):
        orders.add_row(channel, seller, *(str(counts[s]) for s in OVERALL_STATUSES))
    console.print(orders)
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
        error = f"{_when(task.last_error_at)} {task.last_error}" if task.last_error else ""
        tasks.add_row(
            task.task,
            task.scope,
            _when(task.last_run),
            _when(task.last_success),
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
        dlq.add_row(size.topic, f"[{style}]{size.records}[/]" if style else "0", _when(size.last_at))
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
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: PLC0415

    from ordersync.state.readmodel.rebuild import rebuild  # noqa: PLC0415 - the Kafka client, only here

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
            result = _with_model(
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
