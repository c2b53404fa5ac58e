"""Serving the dashboard with uvicorn: in the foreground (``ordersync dashboard``) or in a background
thread (:class:`RunningDashboard`, for tests), as the simulator is served."""

from __future__ import annotations

import logging
import socket
import threading
import time
from types import TracebackType

import uvicorn

from ordersync.dashboard.app import create_app
from ordersync.settings import Settings

log = logging.getLogger(__name__)

_START_TIMEOUT_S = 15.0


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


class _QuietProbes(logging.Filter):
    """Leave the orchestrator's probes (every few seconds) out of the access log."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        return not (isinstance(args, tuple) and len(args) >= 3 and args[2] in ("/healthz", "/readyz"))


def serve(
    settings: Settings, host: str | None = None, port: int | None = None, log_level: str = "info"
) -> None:
    """Serve in the foreground until interrupted (SIGTERM or Ctrl-C)."""
    host = host or settings.dashboard.host
    port = port or settings.dashboard.port
    if settings.dashboard.operator_token is None:
        log.warning(
            "no operator token configured (ORDERSYNC_DASHBOARD__OPERATOR_TOKEN): actions are disabled"
        )
    if settings.dashboard.read_token is None and host not in ("127.0.0.1", "localhost", "::1"):
        log.warning(
            "reading is open to anyone who reaches %s:%d (set ORDERSYNC_DASHBOARD__READ_TOKEN)", host, port
        )
    log.info("dashboard on http://%s:%d", host, port)
    logging.getLogger("uvicorn.access").addFilter(_QuietProbes())
    uvicorn.Server(_config(settings, host, port, log_level)).run()


class RunningDashboard:
    """The dashboard on 127.0.0.1 and a free port in a background thread::

    with RunningDashboard(settings) as dashboard:
        httpx.get(dashboard.base_url + "/api/orders")
    """

    def __init__(
        self, settings: Settings, *, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"
    ) -> None:
        self._settings = settings
        self._host = host
        self._port = port
        self._log_level = log_level
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    @property
    def port(self) -> int:
        if self._socket is None:
            raise RuntimeError("the dashboard is not running")
        port: int = self._socket.getsockname()[1]
        return port

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self.port}"

    def start(self) -> RunningDashboard:
        if self._thread is not None:
            raise RuntimeError("already running")
        # Bound here, so the port is known (and ours) before uvicorn starts.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, self._port))
        self._socket = sock
        server = uvicorn.Server(_config(self._settings, self._host, self.port, self._log_level))
        self._server = server
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="ordersync-dashboard", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the dashboard did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=_START_TIMEOUT_S)
        if self._socket is not None:
            self._socket.close()
        self._server = None
        self._thread = None
        self._socket = None

    def __enter__(self) -> RunningDashboard:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
