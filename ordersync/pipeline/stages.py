"""The stages, each its own process: ``ordersync run <stage>``."""

from __future__ import annotations

import asyncio
import importlib
import logging
import socket
from datetime import UTC, datetime
from functools import partial
from typing import Protocol

import faust

from ordersync.channels import ChannelsFile
from ordersync.errors import ConfigurationError
from ordersync.kafka.faust_app import make_app
from ordersync.pipeline.feeds import flush_mark_key
from ordersync.pipeline.runtime import StageRuntime
from ordersync.pipeline.schedule import owned_task, tasks_of
from ordersync.schemas.envelope import Envelope, Event
from ordersync.schemas.topics import OPS_TASK_REQUESTS
from ordersync.settings import Settings
from ordersync.state.heartbeats import record_heartbeat

log = logging.getLogger(__name__)

#: Stage name -> the module that registers its agents and tasks on a faust app.
STAGES: dict[str, str] = {
    "order-download": "ordersync.producers.order_download",
    "order-notifications": "ordersync.producers.order_notifications",
    "item-fetch": "ordersync.streams.item_fetch",
    "import": "ordersync.streams.order_import",
    "invoice-issued": "ordersync.streams.invoice_issued",
    "shipment-write-back": "ordersync.consumers.shipment_write_back",
    "inventory": "ordersync.consumers.inventory",
    "status-projection": "ordersync.consumers.status_projection",
}


class StageModule(Protocol):
    """A stage's module. One that sets ``PARKS_RECORDS = False`` never parks a record on the redrive
    tiers (it consumes without :meth:`StageRuntime.consume`) and gets no redrive agents."""

    STAGE: str

    def register(self, app: faust.App, runtime: StageRuntime) -> None: ...


def check_privacy(settings: Settings, channels: ChannelsFile) -> None:
    """A channel allowed buyers' personal data needs a key-encryption key to seal it: refuse to start
    rather than find out at the first order."""
    allowed = [channel.name for channel in channels.channels if channel.fetch_pii]
    if allowed and not settings.privacy.wraps_keys:
        raise ConfigurationError(
            f"channels {', '.join(allowed)} fetch buyers' personal data, which ordersync keeps only sealed:"
            " set ORDERSYNC_PRIVACY__KEK (`ordersync privacy new-kek`) or ORDERSYNC_PRIVACY__KMS_KEY_ID"
        )


def register_heartbeat(app: faust.App, runtime: StageRuntime) -> None:
    """Every ``stage.heartbeat_s`` the worker records that it is alive (the alerts' "stage not
    reporting", the dashboard's infrastructure health)."""
    worker = f"{runtime.stage}|{runtime.settings.stage.worker_id or socket.gethostname()}"
    prefix = runtime.settings.redis.key_prefix

    @app.task  # type: ignore[untyped-decorator]
    async def heartbeat() -> None:
        await runtime.start()
        while True:
            beat = partial(record_heartbeat, runtime.store.redis, prefix, worker, datetime.now(UTC))
            await runtime.survive("heartbeat", beat)
            await asyncio.sleep(runtime.settings.stage.heartbeat_s)


def register_channel_registry(app: faust.App, runtime: StageRuntime) -> None:
    """Every worker follows the channel registry: channels added or changed in the dashboard reach it
    within ``stage.channel_refresh_s``, without a restart."""

    @app.task  # type: ignore[untyped-decorator]
    async def channel_registry() -> None:
        await runtime.follow_channels()


async def run_now(runtime: StageRuntime, envelope: Envelope[Event]) -> bool:
    """A request on ``ops.task-requests`` naming a task of this stage: its feed pacing skipped once for the
    channel's seller, the request noted in the task's health, and every worker pausing the task woken
    (:mod:`.schedule`). True when this stage runs the task."""
    owned = owned_task(runtime.stage, envelope)
    if owned is None:
        return False
    task, request = owned
    channel = next((c for c in runtime.channels.active() if c.name == request.channel), None)
    if channel is None:
        # Asked before a channel was removed or deactivated: nothing of it runs here.
        log.warning("run-now %s: channel %r is not active in this stage", task.name, request.channel)
        return False
    for family in task.flush_families:
        await runtime.store.redis.delete(flush_mark_key(runtime, family, channel.seller_id))
    by = request.operator or ""
    heard = await runtime.wakeups.request(task.name, task.scope(channel.name), by=by, at=runtime.clock.now())
    log.info("%s %s: run now, asked by %s (%d workers heard)", task.name, channel.name, by, heard)
    return True


def register_task_requests(app: faust.App, runtime: StageRuntime) -> None:
    """A stage that owns periodic tasks an operator may run now: every worker listens for wake-ups, and
    the requests on ``ops.task-requests`` naming its tasks are turned into one (:func:`run_now`)."""

    @app.task  # type: ignore[untyped-decorator]
    async def task_wakeups() -> None:
        await runtime.start()
        await runtime.wakeups.listen()

    async def handle(envelope: Envelope[Event]) -> None:
        await run_now(runtime, envelope)

    @app.agent(runtime.topic(OPS_TASK_REQUESTS), name="task-requests")
    async def task_requests(stream: faust.StreamT[bytes]) -> None:
        await runtime.consume(OPS_TASK_REQUESTS, stream, handle)


def build_stage(name: str, settings: Settings) -> tuple[faust.App, StageRuntime]:
    if name not in STAGES:
        raise KeyError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
    module: StageModule = importlib.import_module(STAGES[name])
    app = make_app(name, settings)
    runtime = StageRuntime(name, settings, app, follow_channels=True)
    check_privacy(settings, runtime.channels)
    module.register(app, runtime)
    register_heartbeat(app, runtime)
    register_channel_registry(app, runtime)
    if tasks_of(name):
        register_task_requests(app, runtime)
    if getattr(module, "PARKS_RECORDS", True):
        runtime.register_redrive(app)
    return app, runtime


def stage_worker(app: faust.App, settings: Settings) -> faust.Worker:
    """The faust worker of a stage, logging at ``settings.log_level``."""
    worker = faust.Worker(app, loglevel=settings.log_level.lower(), quiet=True)
    # faust's terminal spinner, kept at WARNING and above, sets the root logger to DEBUG to spin on every
    # record: every library's debug line would then be built and dropped (5 % of a stage's CPU).
    worker.spinner = None
    return worker


def run_stage(name: str, settings: Settings) -> None:
    """Run one stage's faust worker until SIGTERM/SIGINT."""
    app, _ = build_stage(name, settings)
    worker = stage_worker(app, settings)
    logging.getLogger("ordersync").setLevel(settings.log_level)
    worker.execute_from_commandline()
