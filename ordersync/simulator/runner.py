"""Serving the simulator with uvicorn: in the foreground (the CLI) or in a background thread
(:class:`RunningSimulator`, for tests and the demo); with AWS settings, its ORDER_CHANGE notifications
go to SQS from a sender thread of their own (:class:`~ordersync.simulator.sqs.NotificationSender`)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from types import TracebackType
from typing import Self

import uvicorn

from ordersync.settings import AwsSettings
from ordersync.simulator.app import create_app
from ordersync.simulator.scenario import Scenario, load_scenario
from ordersync.simulator.sqs import NotificationSender
from ordersync.simulator.state import SimulatorState
from ordersync.threaded_server import ThreadedServer

log = logging.getLogger(__name__)


def _uvicorn_config(state: SimulatorState, host: str, port: int, log_level: str) -> uvicorn.Config:
    # No access log: a 20,000-order run makes tens of thousands of requests.
    return uvicorn.Config(
        create_app(state), host=host, port=port, log_level=log_level, access_log=False, lifespan="off"
    )


def serve(
    state: SimulatorState,
    host: str = "127.0.0.1",
    port: int = 8100,
    log_level: str = "warning",
    *,
    aws: AwsSettings | None = None,
) -> None:
    """Serve in the foreground until interrupted; ``aws``: where notifications are sent (None: none
    is, see :class:`RunningSimulator`)."""
    sender = NotificationSender(state, aws).start() if aws is not None else None
    try:
        server = uvicorn.Server(_uvicorn_config(state, host, port, log_level))
        server.run()
    finally:
        if sender is not None:
            sender.stop()


class RunningSimulator(ThreadedServer):
    """The simulator served on 127.0.0.1 and a free port in a background thread.

    ::

        with RunningSimulator(load_scenario("demo", seed=1)) as sim:
            httpx.get(sim.base_url + "/_sim/clock")

    Also ``async with``. ``state`` gives direct access to the simulator's state (thread-safe).
    ``aws``: the SQS endpoint and credentials ORDER_CHANGE notifications are sent with; None: the
    Notifications API answers and notifications are scheduled (``/_sim/notifications``), but none is
    sent (said once in the log).
    """

    name = "simulator"

    def __init__(
        self,
        source: SimulatorState | Scenario | str | Path | None = None,
        *,
        seed: int | None = None,
        time_scale: float | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        log_level: str = "warning",
        aws: AwsSettings | None = None,
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
        self.aws = aws
        self._sender: NotificationSender | None = None
        super().__init__(host=host, port=port, log_level=log_level)

    def config(self, host: str, port: int, log_level: str) -> uvicorn.Config:
        return _uvicorn_config(self.state, host, port, log_level)

    @property
    def lwa_url(self) -> str:
        return f"{self.base_url}/auth/o2/token"

    def start(self) -> Self:
        super().start()
        if self.aws is not None:
            try:
                self._sender = NotificationSender(self.state, self.aws).start()
            except BaseException:
                super().stop()
                raise
        log.info("SP-API simulator serving on %s", self.base_url)
        return self

    def stop(self) -> None:
        if self._sender is not None:
            self._sender.stop()
            self._sender = None
        super().stop()

    async def __aenter__(self) -> RunningSimulator:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)
