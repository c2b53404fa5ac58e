"""``ordersync export failed``: failed orders as CSV, with what a person needs to check them by hand."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Annotated, cast

import typer

from ordersync.cli.common import BuyerOpener, parse_time, with_read_model_and_buyers
from ordersync.settings import get_settings
from ordersync.state.readmodel import FailedStage, OrderFilter, ReadModel, write_orders_csv

export_app = typer.Typer(help="Export orders as CSV.", no_args_is_help=True)


@export_app.command("failed")
def export_failed(
    since: Annotated[str, typer.Option(help="Purchased at or after (ISO 8601, UTC if no zone).")],
    until: Annotated[str | None, typer.Option(help="Purchased before (ISO 8601).")] = None,
    channel: Annotated[str | None, typer.Option(help="Only this channel.")] = None,
    stage: Annotated[str | None, typer.Option(help="import | write-back (default: every failure).")] = None,
    personal: Annotated[
        bool,
        typer.Option(
            "--personal",
            help="Add the buyer's name, e-mail and delivery address, opened with the key-encryption key"
            " (each opening is logged with your user name; mind where the file goes).",
        ),
    ] = False,
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

    async def export(model: ReadModel, open_buyer: BuyerOpener) -> int:
        async def opened(seller_id: str, order_id: str) -> tuple[str, Mapping[str, str]]:
            buyer = await open_buyer(seller_id, order_id)
            return buyer.state, buyer.fields

        return await write_orders_csv(model, order_filter, sys.stdout, opened if personal else None)

    written = with_read_model_and_buyers(get_settings(), export, "export failed")
    sys.stdout.flush()
    typer.echo(f"{written} row(s) exported", err=True)
