"""``ordersync orders``: the orders grid and one order's detail (from the status read model), and the
operator's actions on orders (events on ``ops.commands``, as the dashboard sends them)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer
from rich.console import Console
from rich.table import Table

from ordersync.cli.common import (
    CLI_KAFKA_TIMEOUT_MS,
    BuyerOpener,
    ExitCode,
    channel_named,
    checked_order_ids,
    cli_producer_config,
    cli_redis,
    effective_channels,
    fail,
    keyspace_empty,
    parse_time,
    redis_described,
    when,
    with_read_model,
    with_read_model_and_buyers,
)
from ordersync.settings import Settings, get_settings
from ordersync.state.readmodel import (
    DEADLINES,
    EASY_SHIP_STATES,
    OVERALL_STATUSES,
    FailedStage,
    OrderDetail,
    OrderFilter,
    OrderRow,
    OrdersPage,
    OverallStatus,
    ReadModel,
    SortKey,
)

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from ordersync.privacy.reader import BuyerData

orders_app = typer.Typer(help="Act on orders (the actions are events on ops.commands).", no_args_is_help=True)


#: What the order actions check before anything is sent (their ``--help`` says it too).
_CHECKED_KNOWN = (
    " Checked before anything is sent: each id is 3-7-7 digits (else exit 2), the channel exists (else"
    " exit 3), and ordersync knows the order under that channel's seller: downloaded, imported or in"
    " the status model (else exit 3; an order of another account is refused)."
)
_CHECKED_FORMAT = (
    " Checked before anything is sent: each id is 3-7-7 digits (else exit 2) and the channel exists"
    " (else exit 3); the order need not be known to ordersync yet (this is how one it never downloaded"
    " is fetched)."
)

OrderIds = Annotated[list[str], typer.Argument(help="Amazon order ids (3-7-7 digits).")]
ChannelOption = Annotated[str, typer.Option(help="The channel the orders belong to.")]
OperatorOption = Annotated[str | None, typer.Option(help="Who asks, for the record.")]


@orders_app.command(
    "retry-download",
    help=(
        "Download the orders again from scratch, through the pipeline (the dashboard's Retry Download)."
        + _CHECKED_FORMAT
    ),
)
def orders_retry_download(
    order_ids: OrderIds, channel: ChannelOption, operator: OperatorOption = None
) -> None:
    """Download the orders again from scratch, through the pipeline (the dashboard's Retry Download)."""
    _order_command("retry-download", order_ids, channel, operator, must_be_known=False)


async def unknown_orders(redis: Redis, prefix: str, seller_id: str, order_ids: list[str]) -> list[str]:
    """The ids of ``order_ids`` ordersync does not know under ``seller_id``: no download, enrichment or
    import mark, no sales order or kept enriched order, no write-back or Easy Ship package, and no
    status-model row that came from Amazon
    (a row made only of operators' commands does not count: it may be an earlier typo's)."""
    from ordersync.state import keys
    from ordersync.state.store import Store

    store = Store(redis, prefix)
    model = ReadModel(redis, prefix, notify_dlq=False, notify_late=False)
    # Any stage's state of the order: a write-back's packages count (a stage may run alone).
    families = (
        keys.DOWNLOADED,
        keys.ENRICHED,
        keys.IMPORTED,
        keys.SALES_ORDER,
        keys.LAST_ENRICHED,
        keys.WRITEBACK_PACKAGES,
        keys.EASY_SHIP_PACKAGE,
    )
    unknown: list[str] = []
    for order_id in order_ids:
        if await redis.exists(*(store.key_of(family, seller_id, order_id) for family in families)):
            continue
        detail = await model.order(seller_id, order_id)
        row = detail.row if detail is not None else None
        if row is not None and (row.purchase_date or row.amazon_status or row.download_status):
            continue
        unknown.append(order_id)
    return unknown


async def _elsewhere(redis: Redis, prefix: str, order_id: str) -> list[str]:
    """The channels the status model knows ``order_id`` under."""
    model = ReadModel(redis, prefix, notify_dlq=False, notify_late=False)
    return sorted({detail.row.channel for detail in await model.find(order_id) if detail.row.channel})


def _check_known(settings: Settings, channel: str, seller_id: str, order_ids: list[str]) -> None:
    """End the command (exit 3) when an order is not known under the channel's seller."""
    import asyncio

    async def check() -> tuple[list[str], list[str]]:
        redis = cli_redis(settings)
        try:
            unknown = await unknown_orders(redis, settings.redis.key_prefix, seller_id, order_ids)
            others = await _elsewhere(redis, settings.redis.key_prefix, unknown[0]) if unknown else []
            return unknown, others
        finally:
            await redis.aclose()

    unknown, others = asyncio.run(check())
    if not unknown:
        return
    shown = ", ".join(unknown[:3]) + (f" and {len(unknown) - 3} more" if len(unknown) > 3 else "")
    hint = f"; {unknown[0]} is known on channel {', '.join(others)}" if others else ""
    raise fail(
        ExitCode.NOT_FOUND,
        f"order(s) {shown} not known to channel {channel} (seller {seller_id}) in Redis"
        f" {redis_described(settings.redis)}{hint}; nothing sent",
    )


def _order_command(
    command: str, order_ids: list[str], channel: str, operator: str | None, *, must_be_known: bool = True
) -> None:
    """Check the ids, the channel and (``must_be_known``) the orders, then publish the command on
    ``ops.commands`` with a producer that gives up within seconds when Kafka is down."""
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    from ordersync.ops.commands import CommandRejected, build_command
    from ordersync.schemas.codec import encode
    from ordersync.schemas.events import OperatorCommand
    from ordersync.schemas.topics import OPS_COMMANDS

    settings = get_settings()
    ids = checked_order_ids(order_ids)
    channels = effective_channels(settings)
    seller_id = channel_named(settings, channel).seller_id
    if must_be_known:
        _check_known(settings, channel, seller_id, ids)
    try:
        envelope = build_command(channels, cast(OperatorCommand, command), channel, ids, operator)
    except CommandRejected as exc:
        raise fail(ExitCode.USAGE, str(exc)) from exc
    try:
        producer = KafkaProducer(acks="all", **cli_producer_config(settings))
        try:
            producer.send(OPS_COMMANDS.name, key=channel.encode(), value=encode(envelope)).get(
                timeout=CLI_KAFKA_TIMEOUT_MS / 1000
            )
        finally:
            producer.close(timeout=2)
    except KafkaError as exc:
        raise fail(
            ExitCode.KAFKA,
            f"Kafka at {settings.kafka.bootstrap} cannot be reached ({type(exc).__name__}: {exc});"
            f" {command} not sent",
        ) from exc
    typer.echo(f"{command} of {len(ids)} order(s) on {channel} sent as event {envelope.event_id}")


@orders_app.command(
    "ignore",
    help=(
        "Don't import the orders, even when they change later, until un-ignored (the dashboard's Ignore)."
        + _CHECKED_KNOWN
    ),
)
def orders_ignore(order_ids: OrderIds, channel: ChannelOption, operator: OperatorOption = None) -> None:
    _order_command("ignore", order_ids, channel, operator)


@orders_app.command(
    "unignore",
    help=("Lift an Ignore; the orders are imported again from their downloaded data." + _CHECKED_KNOWN),
)
def orders_unignore(order_ids: OrderIds, channel: ChannelOption, operator: OperatorOption = None) -> None:
    _order_command("unignore", order_ids, channel, operator)


@orders_app.command(
    "retry-import",
    help=(
        "Import the orders again from the downloaded data (after fixing listings); no Amazon call."
        + _CHECKED_KNOWN
    ),
)
def orders_retry_import(order_ids: OrderIds, channel: ChannelOption, operator: OperatorOption = None) -> None:
    _order_command("retry-import", order_ids, channel, operator)


@orders_app.command(
    "retry-writeback",
    help=(
        "Send the orders' failed shipments to Amazon again (after fixing the cause), attempts reset;"
        " confirmed packages are never sent twice. Carried out by the shipment-write-back stage."
        + _CHECKED_KNOWN
    ),
)
def orders_retry_writeback(
    order_ids: OrderIds, channel: ChannelOption, operator: OperatorOption = None
) -> None:
    _order_command("retry-writeback", order_ids, channel, operator)


_STATUS_STYLE = {"Failed": "bold red", "Pending": "yellow", "Success": "green", "Ignored": "dim"}
_SHIP_BY_STYLE = {"overdue": "bold red", "late": "red", "at-risk": "yellow"}


def _ship_by_cell(row: OrderRow, now: datetime | None, lead_s: float) -> str:
    """The ship-by time, marked overdue / at-risk / late as of ``now`` (unmarked without one)."""
    if row.ship_by is None:
        return ""
    state = row.ship_by_state(now, lead_s) if now is not None else None
    return when(row.ship_by) + (f" [{_SHIP_BY_STYLE[state]}]{state}[/]" if state else "")


def orders_table(
    rows: tuple[OrderRow, ...], *, title: str, now: datetime | None = None, lead_s: float = 0.0
) -> Table:
    """The grid's rows as a table; ``now`` and ``lead_s`` (the at-risk lead time) mark the ship-by
    dates that are overdue or at risk."""
    table = Table(title=title, title_justify="left")
    for column in (
        "order",
        "channel",
        "marketplace",
        "purchased (UTC)",
        "ship by (UTC)",
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
            when(row.purchase_date),
            _ship_by_cell(row, now, lead_s),
            f"[{_STATUS_STYLE[row.status]}]{row.status}[/]",
            row.import_status or "",
            row.writeback_status or "",
            row.sales_order_code or "",
            str(row.attempts) if row.attempts else "",
            error,
        )
    return table


@orders_app.command("list")
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
    deadline: Annotated[
        str | None,
        typer.Option(
            help="Awaiting shipment with the latest ship date at-risk (within health.ship_by_lead_s) "
            "or overdue (past)."
        ),
    ] = None,
    easy_ship: Annotated[
        str | None,
        typer.Option(
            "--easy-ship",
            help="awaiting-pickup: the Easy Ship package is scheduled and not yet picked up, shipped,"
            " delivered or cancelled (the dashboard's Packed, awaiting pickup).",
        ),
    ] = None,
    sort: Annotated[
        str, typer.Option(help="purchase_date | updated_at | amazon_order_id | status | ship_by.")
    ] = "purchase_date",
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
        deadline=deadline,
        easy_ship=easy_ship,
    )
    if sort not in ("purchase_date", "updated_at", "amazon_order_id", "status", "ship_by"):
        raise typer.BadParameter(f"unknown sort {sort!r}", param_hint="--sort")
    settings = get_settings()

    async def page_now(model: ReadModel) -> tuple[OrdersPage, datetime]:
        page = await model.orders(
            order_filter, sort=cast(SortKey, sort), descending=not ascending, offset=offset, limit=limit
        )
        return page, model.clock.now()

    page, now = with_read_model(settings, page_now)
    if as_json:
        typer.echo(page.model_dump_json(indent=2))
        return
    typer.echo(f"Redis {redis_described(settings.redis)}")
    if not page.total and with_read_model(settings, lambda m: keyspace_empty(m.redis, m.prefix)):
        typer.echo(f"nothing under key prefix {settings.redis.key_prefix!r} in this Redis: no order recorded")
        return
    shown = f"{offset + 1}-{offset + len(page.rows)}" if page.rows else "none"
    title = f"orders {shown} of {page.total}"
    Console().print(orders_table(page.rows, title=title, now=now, lead_s=settings.health.ship_by_lead_s))


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
    deadline: str | None = None,
    easy_ship: str | None = None,
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
    if deadline is not None and deadline not in DEADLINES:
        raise typer.BadParameter(f"{deadline!r}: {' or '.join(DEADLINES)}", param_hint="--deadline")
    if easy_ship is not None and easy_ship not in EASY_SHIP_STATES:
        raise typer.BadParameter(f"{easy_ship!r}: {' or '.join(EASY_SHIP_STATES)}", param_hint="--easy-ship")
    return OrderFilter(
        status=overall,
        channel=channel,
        seller_id=seller,
        marketplace_id=marketplace,
        since=parse_time(since, "--since"),
        until=parse_time(until, "--until"),
        text=search.strip() if search and search.strip() else None,
        failed_stage=cast(FailedStage | None, failed_stage),
        deadline=deadline,
        easy_ship=easy_ship,
    )


def _detail_text(console: Console, detail: OrderDetail) -> None:
    row = detail.row
    console.print(
        f"[bold]{row.amazon_order_id}[/] channel {row.channel or '?'} seller {row.seller_id} "
        f"marketplace {row.marketplace_id or '?'}: [{_STATUS_STYLE[row.status]}]{row.status}[/]"
    )
    facts = Table(show_header=False, box=None)
    for label, value in (
        ("purchased", when(row.purchase_date)),
        ("updated", when(row.updated_at)),
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
    _easy_ship_text(console, detail.easy_ship)
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


def _slot_time(value: str | None) -> str:
    return when(datetime.fromisoformat(value.replace("Z", "+00:00"))) if value else ""


def _easy_ship_text(console: Console, package: dict[str, Any] | None) -> None:
    """The Easy Ship package (its id, slot, handover, status, size, invoice, tracking, refusal) and where
    its documents are stored, one line each (never wrapped: a location is copied whole); nothing for an
    order not packed for Easy Ship."""
    if package is None:
        return
    facts = Table(title="Easy Ship package", title_justify="left", show_header=False)
    size = package.get("size")
    slot = ""
    if package.get("slot_start") or package.get("slot_end"):
        slot = f"{_slot_time(package.get('slot_start'))} - {_slot_time(package.get('slot_end'))} UTC"
    refusal = (
        f"{package.get('error_code')}: {package.get('error_message')}"
        if package.get("outcome") == "failed"
        else None
    )
    documents_error = package.get("documents_error")
    for label, value in (
        ("package", package.get("scheduled_package_id")),
        ("slot", slot),
        ("handover", package.get("handover")),
        ("status", package.get("status")),
        (
            "size",
            f"{size['length_cm']} x {size['width_cm']} x {size['height_cm']} cm, {size['weight_g']} g"
            f" (from the {package.get('size_from') or '?'})"
            if size
            else None,
        ),
        ("invoice", package.get("invoice_number")),
        ("tracking", package.get("tracking_id")),
        ("not scheduled", refusal),
        (
            "documents not made",
            f"{documents_error['code']}: {documents_error['message']}" if documents_error else None,
        ),
    ):
        if value:
            facts.add_row(label, str(value))
    console.print(facts)
    for document in package.get("documents") or ():
        console.print(
            f"document {', '.join(document.get('document_types') or ())}"
            f" (reference {document.get('report_reference_id')}, {document.get('size_bytes')} bytes,"
            f" stored {_slot_time(document.get('stored_at'))} UTC): {document.get('location')}",
            markup=False,
            soft_wrap=True,
        )


@orders_app.command("show")
def orders_show(
    order_id: Annotated[str, typer.Argument(help="The Amazon order id.")],
    channel: Annotated[str | None, typer.Option(help="The channel (when several sellers have it).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of tables.")] = False,
    personal: Annotated[
        bool,
        typer.Option(
            "--personal",
            help="Also the buyer's name, e-mail and delivery address, opened with the key-encryption key"
            " (each opening is logged with your user name).",
        ),
    ] = False,
) -> None:
    """One order: its status at every stage, lines, packages, errors and history."""

    async def find(model: ReadModel, open_buyer: BuyerOpener) -> list[tuple[OrderDetail, BuyerData | None]]:
        details = await model.find(order_id.strip(), channel)
        if not personal:
            return [(detail, None) for detail in details]
        return [
            (detail, await open_buyer(detail.row.seller_id, detail.row.amazon_order_id)) for detail in details
        ]

    settings = get_settings()
    found = with_read_model_and_buyers(settings, find, "orders show")
    if not found:
        where = f" on channel {channel}" if channel else ""
        raise fail(
            ExitCode.NOT_FOUND,
            f"order {order_id}{where} is not in the status model (Redis {redis_described(settings.redis)})",
        )
    if as_json:
        payload: Any = [
            {**d.model_dump(mode="json"), **({"buyer": b.as_json()} if b else {})} for d, b in found
        ]
        typer.echo(json.dumps(payload[0] if len(payload) == 1 else payload, indent=2))
        return
    console = Console()
    for detail, buyer in found:
        _detail_text(console, detail)
        if buyer is not None:
            _buyer_text(console, buyer)


def _buyer_text(console: Console, buyer: BuyerData) -> None:
    if buyer.state != "open":
        console.print(f"buyer: personal data {buyer.state}: {buyer.note}", markup=False)
        return
    table = Table(title="buyer and delivery (personal data)", title_justify="left", show_header=False)
    for label, value in buyer.labelled():
        table.add_row(label, value)
    console.print(table)
