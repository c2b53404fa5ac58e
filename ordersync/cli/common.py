"""What several command modules share: exit codes and one-line failures, times on the command line,
Redis and Kafka clients for short-lived commands, the read model, logging.

Every command fails the same way: one line on stderr starting ``error:`` and an exit code from
:class:`ExitCode` (the root catches what a command raises, :func:`failure_of` words it). A traceback is
printed only with ``ordersync --debug ...`` or ``ORDERSYNC_DEBUG=1``; secrets never.
"""

from __future__ import annotations

import asyncio
import getpass
import re
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import typer

from ordersync.settings import RedisSettings, Settings, get_settings
from ordersync.state.readmodel import ReadModel

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from ordersync.channels import Channel, ChannelsFile
    from ordersync.privacy.reader import BuyerData

T = TypeVar("T")
#: Opens one order's personal data (seller id, order id) for the CLI's user.
BuyerOpener = Callable[[str, str], Awaitable["BuyerData"]]


class ExitCode(IntEnum):
    """The exit codes of every ``ordersync`` command (``ordersync --help`` and docs/ops.md list them)."""

    OK = 0
    #: The command ran and reports a failure (a check failed, records not acknowledged, an unexpected error).
    FAILED = 1
    #: Bad input: a malformed value, an unknown option or option value (typer's usage-error code).
    USAGE = 2
    #: An unknown name: channel, seller, order (or an order not of that channel's seller), topic, stage.
    NOT_FOUND = 3
    #: Redis cannot be reached (or refused the connection).
    REDIS = 4
    #: Kafka cannot be reached (or refused the request).
    KAFKA = 5
    #: Amazon's SP-API (or its login, LWA) cannot be reached or refused the credentials.
    AMAZON = 6
    #: The configuration is wrong: a setting (ORDERSYNC_*), the channels file, a missing key.
    CONFIG = 7
    #: AWS (the personal data key store, S3, SQS) cannot be reached or refused the request.
    AWS = 8


#: One line per exit code, for ``--help`` and the docs.
EXIT_CODE_MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: "done",
    ExitCode.FAILED: "the command ran and reports a failure",
    ExitCode.USAGE: "bad input (malformed value, unknown option or value)",
    ExitCode.NOT_FOUND: "unknown channel, seller, order, topic or stage",
    ExitCode.REDIS: "Redis unreachable",
    ExitCode.KAFKA: "Kafka unreachable",
    ExitCode.AMAZON: "Amazon SP-API unreachable or credentials refused",
    ExitCode.CONFIG: "configuration error (settings, channels file)",
    ExitCode.AWS: "AWS (key store, S3, SQS) unreachable",
}


def exit_codes_epilog() -> str:
    """The exit codes as ``--help`` shows them after the commands."""
    codes = ", ".join(f"{int(code)} {meaning}" for code, meaning in EXIT_CODE_MEANINGS.items())
    return (
        f"Exit codes: {codes}. Failures are one line on stderr; --debug (or ORDERSYNC_DEBUG=1) adds the"
        " traceback."
    )


class CliError(Exception):
    """A command's failure as the user sees it: one line and its exit code."""

    def __init__(self, code: ExitCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):[^@/\s]*@", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with any URL's password replaced by ``***``."""
    return _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)


def one_line(text: str, limit: int = 400) -> str:
    """``text`` on one line (whitespace collapsed), redacted, at most ``limit`` characters."""
    flat = " ".join(redact(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def redis_location(redis: RedisSettings) -> str:
    """Where the settings' Redis is: ``redis://host:port/db``, a password masked, never shown."""
    parts = urlsplit(redis.url)
    user = parts.username or ""
    credentials = f"{user}:***@" if parts.password is not None else (f"{user}@" if user else "")
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    path = parts.path if parts.path not in ("", "/") else "/0"
    return f"{parts.scheme}://{credentials}{host}{port}{path}"


def redis_described(redis: RedisSettings) -> str:
    """``redis://host:port/db, key prefix 'p'``."""
    return f"{redis_location(redis)}, key prefix {redis.key_prefix!r}"


def _settings_or_none() -> Settings | None:
    try:
        return get_settings()
    except Exception:  # only for naming where a failure happened: any failure means "unknown"
        return None


def _is(exc: BaseException, module: str, *names: str) -> bool:
    """Is ``exc`` one of ``module``'s classes ``names``? (Never imports: a module not loaded raised
    nothing.)"""
    loaded = sys.modules.get(module)
    return loaded is not None and any(
        isinstance(exc, cls) for name in names if isinstance(cls := getattr(loaded, name, None), type)
    )


def _validation_failure(exc: Any) -> tuple[ExitCode, str]:
    errors = exc.errors()
    title = str(getattr(exc, "title", ""))
    if title.endswith("Settings"):
        problems = "; ".join(
            f"ORDERSYNC_{'__'.join(str(p).upper() for p in e['loc'])}: {e['msg']}" for e in errors
        )
        return ExitCode.CONFIG, f"invalid settings: {problems}"
    first = errors[0] if errors else {"loc": (), "msg": str(exc)}
    field = ".".join(str(p) for p in first["loc"] if not isinstance(p, int)) or title
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return ExitCode.USAGE, f"{field}: {first['msg']}{more}"


def failure_of(exc: BaseException) -> tuple[ExitCode, str]:  # noqa: PLR0911 - one return per kind
    """The exit code and the one line (without ``error:``) a command's exception ends it with."""
    if isinstance(exc, CliError):
        return exc.code, one_line(exc.message)
    detail = one_line(str(exc) or type(exc).__name__)
    if _is(exc, "pydantic", "ValidationError"):
        return _validation_failure(exc)
    if _is(exc, "ordersync.errors", "QuotaUnavailable") or _is(
        exc, "redis.exceptions", "ConnectionError", "TimeoutError"
    ):
        settings = _settings_or_none()
        where = redis_described(settings.redis) if settings else "the configured Redis"
        return ExitCode.REDIS, f"Redis at {where} cannot be reached: {detail}"
    if _is(exc, "kafka.errors", "KafkaError") or _is(exc, "aiokafka.errors", "KafkaError"):
        settings = _settings_or_none()
        where = settings.kafka.bootstrap if settings else "the configured bootstrap servers"
        return ExitCode.KAFKA, f"Kafka at {where} cannot be reached: {detail}"
    if _is(exc, "ordersync.errors", "AmazonApiError") or _is(exc, "httpx", "TransportError"):
        return ExitCode.AMAZON, f"Amazon SP-API: {detail}"
    if _is(exc, "ordersync.errors", "ConfigurationError"):
        return ExitCode.CONFIG, detail
    if _is(exc, "botocore.exceptions", "BotoCoreError", "ClientError"):
        return ExitCode.AWS, f"AWS did not answer: {detail}"
    if _is(exc, "redis.exceptions", "RedisError"):
        return ExitCode.REDIS, f"Redis refused: {detail}"
    return ExitCode.FAILED, f"{type(exc).__name__}: {detail} (ordersync --debug ... shows the traceback)"


def cli_actor() -> str:
    """Who acts from the command line, as the audit names them."""
    return f"cli:{getpass.getuser()}"[:80]


def fail(code: ExitCode, message: str) -> typer.Exit:
    """Print ``error: message`` on stderr; returns the :class:`typer.Exit` to raise."""
    typer.echo(f"error: {one_line(message)}", err=True)
    return typer.Exit(int(code))


def setup_logging() -> None:
    from ordersync.logs import configure_logging, remember_secrets

    settings = get_settings()
    remember_secrets(settings)
    configure_logging(settings.log_level, json_lines=settings.log_json)


def effective_channels(settings: Settings) -> ChannelsFile:
    """The channels file's channels with the channel registry's (its Redis view; the file alone when
    Redis holds no view or cannot be reached): a bad file or registry ends the command with
    :attr:`ExitCode.CONFIG`."""
    from ordersync.channels import ChannelsFile, load_channels
    from ordersync.errors import ConfigurationError, is_outage
    from ordersync.redis_client import redis_client
    from ordersync.state.channel_registry import merge, read_view

    async def view() -> dict[str, Any]:
        client = redis_client(settings.redis)
        try:
            found = await read_view(client, settings.redis.key_prefix)
        finally:
            await client.aclose()
        return {} if found is None else dict(found[1])

    try:
        base = (
            load_channels(settings.channels_file)
            if settings.channels_file.exists()
            else ChannelsFile(channels=())
        )
        try:
            records = asyncio.run(view())
        except Exception as exc:
            if not is_outage(exc):
                raise
            records = {}  # Redis down: the commands that need it say so themselves
        return merge(base, records)[0]
    except ConfigurationError as exc:
        raise fail(ExitCode.CONFIG, str(exc)) from exc


def channel_named(settings: Settings, name: str) -> Channel:
    """The channel ``name`` (the file's or the registry's): a bad file ends the command with
    :attr:`ExitCode.CONFIG`, an unknown name with :attr:`ExitCode.NOT_FOUND`."""
    from ordersync.errors import ConfigurationError

    channels = effective_channels(settings)
    try:
        return channels.by_name(name)
    except ConfigurationError as exc:
        raise fail(ExitCode.NOT_FOUND, str(exc)) from exc


#: An Amazon order id: 3-7-7 digits.
ORDER_ID = re.compile(r"^\d{3}-\d{7}-\d{7}$")


def checked_order_ids(order_ids: Sequence[str]) -> list[str]:
    """``order_ids`` stripped; a malformed one ends the command (:attr:`ExitCode.USAGE`)."""
    cleaned = [order_id.strip() for order_id in order_ids]
    bad = [order_id for order_id in cleaned if not ORDER_ID.fullmatch(order_id)]
    if bad:
        shown = ", ".join(repr(b) for b in bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise fail(
            ExitCode.USAGE,
            f"amazon_order_ids: {shown} is not an Amazon order id (expected 3-7-7 digits, e.g."
            " 123-1234567-1234567)",
        )
    return cleaned


def cli_redis(settings: Settings) -> aioredis.Redis:
    """A Redis client for a short-lived command: the settings' address, credentials and timeouts, but
    no retries (redis-py retries a refused connection with backoff for seconds): a Redis that is down
    ends the command at once (:attr:`ExitCode.REDIS`)."""
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    from ordersync.redis_client import make_redis

    quick = settings.redis.model_copy(
        update={"pool_timeout_s": min(settings.redis.pool_timeout_s, CLI_REDIS_POOL_TIMEOUT_S)}
    )
    return make_redis(quick, decode_responses=True, retry=Retry(NoBackoff(), 0))


#: The longest a command waits for a pooled Redis connection.
CLI_REDIS_POOL_TIMEOUT_S = 5.0
#: How long a command's Kafka client tries to reach the cluster, and waits for one answer.
CLI_KAFKA_TIMEOUT_MS = 6_000


def cli_producer_config(settings: Settings) -> dict[str, Any]:
    """kafka-python producer arguments for a short-lived command: the settings' address and security,
    with bounded waits (kafka-python waits 30 s to bootstrap and 60 s for metadata), so a broker that is
    down ends the command within about ten seconds (:attr:`ExitCode.KAFKA`)."""
    from ordersync.kafka.admin import bounded_producer_config

    return {
        **bounded_producer_config(settings.kafka, CLI_KAFKA_TIMEOUT_MS / 1000, client_id="ordersync-cli"),
        "reconnect_backoff_max_ms": 1_000,
    }


async def keyspace_empty(redis: aioredis.Redis, prefix: str) -> bool:
    """Does Redis hold no key under ``prefix``? (SCAN until the first key: cheap when there are some.)"""
    cursor: int = 0
    while True:
        cursor, found = await redis.scan(cursor, match=f"{prefix}:*", count=1000)
        if found:
            return False
        if not cursor:
            return True


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
    async def run() -> T:
        redis = cli_redis(settings)
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
    from ordersync.state.store import Store

    async def run() -> T:
        redis = cli_redis(settings)
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
    """Run ``work``, which reaches the personal data key store: a missing key-encryption key exits
    :attr:`ExitCode.CONFIG`, a key store that does not answer :attr:`ExitCode.AWS`, each with one line."""
    from botocore.exceptions import BotoCoreError, ClientError

    from ordersync.errors import ConfigurationError

    try:
        return asyncio.run(work)
    except ConfigurationError as exc:
        raise fail(ExitCode.CONFIG, str(exc)) from exc
    except (BotoCoreError, ClientError) as exc:
        raise fail(ExitCode.AWS, f"the personal data key store did not answer: {exc}") from exc
