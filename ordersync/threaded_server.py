"""A uvicorn server in a background thread on a port bound up front: how the simulator and the dashboard
run inside tests and the demo."""

from __future__ import annotations

import socket
import threading
import time
from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self

import uvicorn


class ThreadedServer(ABC):
    """Serves :meth:`config`'s app on ``host`` and ``port`` (0: a free one) in a daemon thread::

    with Subclass(...) as server:
        httpx.get(server.base_url + "/...")
    """

    #: What the server is, in errors and the thread's name.
    name = "server"
    start_timeout_s = 10.0

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning") -> None:
        self._host = host
        self._port = port
        self._log_level = log_level
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    @abstractmethod
    def config(self, host: str, port: int, log_level: str) -> uvicorn.Config:
        """uvicorn's configuration of the app to serve."""

    @property
    def port(self) -> int:
        if self._socket is None:
            raise RuntimeError(f"the {self.name} is not running")
        port: int = self._socket.getsockname()[1]
        return port

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self.port}"

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError("already running")
        # Bind first, so the port is known (and ours) before uvicorn starts. IPPROTO_TCP explicitly:
        # asyncio sets TCP_NODELAY only on sockets that say so, and without it every keep-alive
        # response waits ~40 ms for a delayed ACK between its header and body writes.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, self._port))
        self._socket = sock
        server = uvicorn.Server(self.config(self._host, self.port, self._log_level))
        self._server = server
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name=f"ordersync-{self.name}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + self.start_timeout_s
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the {self.name} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=self.start_timeout_s)
        if self._socket is not None:
            self._socket.close()
        self._server = None
        self._thread = None
        self._socket = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
