"""What several command modules share: times on the command line, the read model, logging."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

import typer

from ordersync.settings import Settings, get_settings
from ordersync.state.readmodel import ReadModel

T = TypeVar("T")


def setup_logging() -> None:
    from ordersync.logs import configure_logging, remember_secrets

    settings = get_settings()
    remember_secrets(settings)
    configure_logging(settings.log_level, json_lines=settings.log_json)


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
            return await work(ReadModel(redis, prefix or settings.redis.key_prefix, notify_dlq=False))
        finally:
            await redis.aclose()

    return asyncio.run(run())


def when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if value else ""
