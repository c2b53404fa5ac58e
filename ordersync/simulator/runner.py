"""Serving the simulator with uvicorn: in the foreground (the CLI) or in a background thread
(:class:`RunningSimulator`, for tests and the demo)."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from pathlib import Path
from types import TracebackType

import uvicorn

from ordersync.simulator.app import create_app
from ordersync.simulator.scenario import Scenario, load_scenario
from ordersync.simulator.state import SimulatorState

log = logging.getLogger(__name__)

_START_TIMEOUT_S = 10.0


def _uvicorn_config(state: SimulatorState, host: str, port: int, log_level: str) -> uvicorn.Config:
    # No access log: a 20,000-order run makes tens of thousands of requests.
    return uvicorn.Config(
        create_app(state), host=host, port=port, log_level=log_level, access_log=False, lifespan="off"
    )


def serve(
    state: SimulatorState, host: str = "127.0.0.1", port: int = 8100, log_level: str = "warning"
) -> None:
    """Serve in the foreground until interrupted."""
    server = uvicorn.Server(_uvicorn_config(state, host, port, log_level))
    server.run()


class RunningSimulator:
    """The simulator served on 127.0.0.1 and a free port in a background thread.

    ::

        with RunningSimulator(load_scenario("demo", seed=1)) as sim:
            httpx.get(sim.base_url + "/_sim/clock")

    Also ``async with``. ``state`` gives direct access to the simulator's state (thread-safe).
    """

    def __init__(
        self,
        source: SimulatorState | Scenario | str | Path | None = None,
        *,
        seed: int | None = None,
        time_scale: float | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        log_level: str = "warning",
    ) -> None:
        """``source``: a ready state, a scenario, or a scenario file or built-in name (default:
        ``default``); ``seed`` and ``time_scale`` override a scenario loaded here."""
        if isinstance(source, SimulatorState):
            state = source
        else:
            scenario = (
                source if isinstance(source, Scenario) else load_scenario(source, seed, time_scale=time_scale)
            )
            state = SimulatorState(scenario)
        self.state = state
        self._host = host
        self._port = port
        self._log_level = log_level
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    @property
    def port(self) -> int:
        if self._socket is None:
            raise RuntimeError("the simulator is not running")
        port: int = self._socket.getsockname()[1]
        return port

    @property
    def base_url(self) -> str:
        """SP-API endpoint (and the control API under ``/_sim``)."""
        return f"http://{self._host}:{self.port}"

    @property
    def lwa_url(self) -> str:
        return f"{self.base_url}/auth/o2/token"

    def start(self) -> RunningSimulator:
        if self._thread is not None:
            raise RuntimeError("already running")
        # Bind first, so the port is known (and ours) before uvicorn starts. IPPROTO_TCP explicitly:
        # asyncio sets TCP_NODELAY only on sockets that say so, and without it every keep-alive
        # response waits ~40 ms for a delayed ACK between its header and body writes.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, self._port))
        self._socket = sock
        server = uvicorn.Server(_uvicorn_config(self.state, self._host, self.port, self._log_level))
        self._server = server
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="sp-api-simulator", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the simulator did not start")
            time.sleep(0.01)
        log.info("SP-API simulator serving on %s", self.base_url)
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

    def __enter__(self) -> RunningSimulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> RunningSimulator:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)
