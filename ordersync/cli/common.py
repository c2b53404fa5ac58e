"""What several command modules share: times on the command line, the read model, logging."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from ordersync.settings import Settings, get_settings
from ordersync.state.readmodel import ReadModel

if TYPE_CHECKING:
    from ordersync.channels import Channel
    from ordersync.privacy.reader import BuyerData

T = TypeVar("T")
#: Opens one order's personal data (seller id, order id) for the CLI's user.
BuyerOpener = Callable[[str, str], Awaitable["BuyerData"]]


def setup_logging() -> None:
    from ordersync.logs import configure_logging, remember_secrets

    settings = get_settings()
    remember_secrets(settings)
    configure_logging(settings.log_level, json_lines=settings.log_json)


def channel_named(settings: Settings, name: str) -> Channel:
    """The channels file's channel ``name``; an unknown name or a bad file ends the command (exit 2)."""
    from ordersync.channels import load_channels
    from ordersync.errors import ConfigurationError

    try:
        return load_channels(settings.channels_file).by_name(name)
    except ConfigurationError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


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


def with_read_model(
    settings: Settings, work: Callable[[ReadModel], Awaitable[T]], prefix: str | None = None
) -> T:
    from ordersync.redis_client import redis_client

    async def run() -> T:
        redis = redis_client(settings.redis)
        try:
            model = ReadModel(
                redis,
                prefix or settings.redis.key_prefix,
                # A rebuild from the CLI folds history: its old news notifies nobody.
                notify_dlq=False,
                notify_late=False,
                ship_by_lead=timedelta(seconds=settings.health.ship_by_lead_s),
            )
            return await work(model)
        finally:
            await redis.aclose()

    return asyncio.run(run())


def when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if value else ""


def with_read_model_and_buyers(
    settings: Settings, work: Callable[[ReadModel, BuyerOpener], Awaitable[T]], purpose: str
) -> T:
    """``work`` on the read model with an opener of orders' personal data. Holding the key-encryption
    key is the CLI user's permission; each opening is logged with the user's name and ``purpose``."""
    import getpass
    from contextlib import AsyncExitStack

    from ordersync.clock import SYSTEM_CLOCK
    from ordersync.privacy.keyring import KeyRing, open_key_ring
    from ordersync.privacy.reader import buyer_data
    from ordersync.redis_client import redis_client
    from ordersync.state.store import Store

    async def run() -> T:
        redis = redis_client(settings.redis)
        try:
            async with AsyncExitStack() as stack:
                rings: list[KeyRing | None] = []  # opened on the first order asked for, if ever
                store = Store(redis, settings.redis.key_prefix)
                reader = f"CLI user {getpass.getuser()}"

                async def opener(seller_id: str, order_id: str) -> BuyerData:
                    if not rings:
                        wraps = settings.privacy.wraps_keys
                        rings.append(
                            await open_key_ring(settings.privacy, settings.aws, SYSTEM_CLOCK, stack)
                            if wraps
                            else None
                        )
                    order = await store.sales_order(seller_id, order_id)
                    return await buyer_data(order, rings[0], reader=reader, purpose=purpose)

                return await work(ReadModel(redis, settings.redis.key_prefix, notify_dlq=False), opener)
        finally:
            await redis.aclose()

    return run_with_key_store(run())


def run_with_key_store(work: Coroutine[Any, Any, T]) -> T:
    """Run ``work``, which reaches the personal data key store: a missing key-encryption key exits 2,
    a key store that does not answer exits 1, each with a clear message."""
    from botocore.exceptions import BotoCoreError, ClientError

    from ordersync.errors import ConfigurationError

    try:
        return asyncio.run(work)
    except ConfigurationError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    except (BotoCoreError, ClientError) as exc:
        typer.echo(f"error: the personal data key store did not answer: {exc}", err=True)
        raise typer.Exit(1) from exc
