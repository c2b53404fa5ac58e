"""Serving the dashboard with uvicorn: in the foreground (``ordersync dashboard``) or in a background
thread (:class:`RunningDashboard`, for tests), as the simulator is served."""

from __future__ import annotations

import logging

import uvicorn

from ordersync.dashboard.app import create_app
from ordersync.settings import Settings
from ordersync.threaded_server import ThreadedServer

log = logging.getLogger(__name__)


def _config(settings: Settings, host: str, port: int, log_level: str) -> uvicorn.Config:
    # The access log shows paths and statuses only: tokens travel in headers, never in a URL. No log
    # config of uvicorn's own: its lines go through ordersync's logging (JSON lines when configured).
    return uvicorn.Config(
        create_app(settings),
        host=host,
        port=port,
        log_level=log_level,
        log_config=None,
        lifespan="on",
        proxy_headers=False,
        server_header=False,
    )


class _AccessLogHygiene(logging.Filter):
    """Leave the orchestrator's probes (every few seconds) out of the access log, and query strings
    too: a token someone put in a URL by mistake must not land in the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if not (isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str)):
            return True
        path, _, query = args[2].partition("?")
        if path in ("/healthz", "/readyz"):
            return False
        if query:
            record.args = (*args[:2], f"{path}?(query not logged)", *args[3:])
        return True


def serve(
    settings: Settings, host: str | None = None, port: int | None = None, log_level: str = "info"
) -> None:
    """Serve in the foreground until interrupted (SIGTERM or Ctrl-C)."""
    host = host or settings.dashboard.host
    port = port or settings.dashboard.port
    if settings.dashboard.operator_token is None:
        log.warning(
            "no operator token configured (ORDERSYNC_DASHBOARD__OPERATOR_TOKEN): API clients cannot act,"
            " and only signed-in operators can (ordersync users add)"
        )
    if settings.dashboard.read_token is None and host not in ("127.0.0.1", "localhost", "::1"):
        log.warning(
            "without accounts (ordersync users add) reading is open to anyone who reaches %s:%d (or set"
            " ORDERSYNC_DASHBOARD__READ_TOKEN)",
            host,
            port,
        )
    log.info("dashboard on http://%s:%d", host, port)
    logging.getLogger("uvicorn.access").addFilter(_AccessLogHygiene())
    uvicorn.Server(_config(settings, host, port, log_level)).run()


class RunningDashboard(ThreadedServer):
    """The dashboard on 127.0.0.1 and a free port in a background thread::

    with RunningDashboard(settings) as dashboard:
        httpx.get(dashboard.base_url + "/api/orders")
    """

    name = "dashboard"
    start_timeout_s = 15.0

    def __init__(
        self, settings: Settings, *, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"
    ) -> None:
        super().__init__(host=host, port=port, log_level=log_level)
        self._settings = settings

    def config(self, host: str, port: int, log_level: str) -> uvicorn.Config:
        return _config(self._settings, host, port, log_level)
