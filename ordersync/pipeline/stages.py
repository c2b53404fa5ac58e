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
from ordersync.pipeline.runtime import StageRuntime
from ordersync.settings import Settings
from ordersync.state.heartbeats import record_heartbeat

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


def build_stage(name: str, settings: Settings) -> tuple[faust.App, StageRuntime]:
    if name not in STAGES:
        raise KeyError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
    module: StageModule = importlib.import_module(STAGES[name])
    app = make_app(name, settings)
    runtime = StageRuntime(name, settings, app)
    check_privacy(settings, runtime.channels)
    module.register(app, runtime)
    register_heartbeat(app, runtime)
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
