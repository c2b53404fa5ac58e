"""How every ordersync process connects to Redis: address, credentials, TLS and timeouts from the
settings, on connections that never swallow a task's cancellation.

redis-py's asyncio connection sends each command under ``asyncio.wait_for`` when a socket timeout is
set. On Python 3.11, ``wait_for`` returns the inner result when the caller is cancelled while that
inner call is finishing, which a fast local write almost always is: the cancellation is lost and the
cancelled task runs on (a stage told to stop keeps polling; an agent cancelled by a rebalance keeps
processing). Python 3.12 reimplemented ``wait_for`` on ``asyncio.timeout``; until then, the connections
here send under ``asyncio.timeout`` themselves, with the same timeout and the same error.

Every client has a pool that waits for a free connection (``redis.max_connections``) rather than
raising: redis-py's default pool raises ``MaxConnectionsError`` once it holds its limit, which crashed a
stage polling hundreds of channels at once. A wait past ``redis.pool_timeout_s`` raises redis-py's
``ConnectionError``, which the stages already treat as Redis unavailable (:func:`ordersync.errors.is_outage`).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import (
    BlockingConnectionPool,
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.exceptions import TimeoutError as RedisTimeoutError

from ordersync.settings import RedisSettings

#: Python versions whose ``asyncio.wait_for`` can swallow a cancellation.
WAIT_FOR_SWALLOWS_CANCELLATION = sys.version_info < (3, 12)


class _CancelSafeSend:
    """Sends a command under ``asyncio.timeout`` instead of redis-py's ``asyncio.wait_for``."""

    socket_timeout: float | None

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        timeout = self.socket_timeout
        if not timeout:
            await super().send_packed_command(command, check_health)  # type: ignore[misc]
            return
        # The connection belongs to one command at a time (the pool hands it out), so the library's
        # own timed path can be switched off for this send and restored before the reply is read.
        self.socket_timeout = None
        try:
            async with asyncio.timeout(timeout):
                await super().send_packed_command(command, check_health)  # type: ignore[misc]
        except TimeoutError:
            await self.disconnect(nowait=True)  # type: ignore[attr-defined]
            raise RedisTimeoutError("Timeout writing to socket") from None
        finally:
            self.socket_timeout = timeout


class CancelSafeConnection(_CancelSafeSend, Connection):
    pass


class CancelSafeSSLConnection(_CancelSafeSend, SSLConnection):
    pass


class CancelSafeUnixConnection(_CancelSafeSend, UnixDomainSocketConnection):
    pass


_CANCEL_SAFE: dict[type[Any], type[Any]] = {
    Connection: CancelSafeConnection,
    SSLConnection: CancelSafeSSLConnection,
    UnixDomainSocketConnection: CancelSafeUnixConnection,
}


def cancel_safe(client: aioredis.Redis) -> aioredis.Redis:
    """``client`` with its pool making connections that keep a task's cancellation (a no-op on Python
    3.12 and later, and for connection classes other than redis-py's own three)."""
    pool: Any = client.connection_pool  # (redis-py leaves connection_class untyped)
    if WAIT_FOR_SWALLOWS_CANCELLATION:
        pool.connection_class = _CANCEL_SAFE.get(pool.connection_class, pool.connection_class)
    return client


def redis_tls_options(settings: RedisSettings) -> dict[str, Any]:
    """redis-py's TLS arguments for a rediss:// URL (a plain connection refuses them)."""
    if not settings.url.startswith("rediss://"):
        return {}
    files = {
        "ssl_ca_certs": settings.ssl_ca_certs,
        "ssl_certfile": settings.ssl_certfile,
        "ssl_keyfile": settings.ssl_keyfile,
    }
    return {name: str(path) for name, path in files.items() if path is not None}


def make_redis(settings: RedisSettings, **options: Any) -> aioredis.Redis:
    """A client of ``settings``'s Redis (address, credentials, TLS, socket timeouts) on a pool of its
    own that waits for a free connection (redis-py's ``BlockingConnectionPool``), cancel-safe; ``options``:
    more connection arguments (``decode_responses``, ``retry``, ``health_check_interval``).

    The client owns the pool: closing it closes the connections."""
    # Given only when set: the URL's own user and password win over these anyway (redis-py's from_url).
    credentials: dict[str, Any] = {}
    if settings.username is not None:
        credentials["username"] = settings.username
    if settings.password is not None:
        credentials["password"] = settings.password.get_secret_value()
    pool = BlockingConnectionPool.from_url(
        settings.url,
        max_connections=settings.max_connections,
        timeout=settings.pool_timeout_s,
        socket_timeout=settings.socket_timeout_s,
        socket_connect_timeout=settings.socket_timeout_s,
        **credentials,
        **redis_tls_options(settings),
        **options,
    )
    return cancel_safe(aioredis.Redis.from_pool(pool))


def redis_client(settings: RedisSettings) -> aioredis.Redis:
    """The client of a stage, the dashboard and the CLI (responses decoded to ``str``)."""
    return make_redis(settings, decode_responses=True)
