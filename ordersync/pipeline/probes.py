"""Each stage's own HTTP endpoints for Prometheus and orchestrators (``stage.web_port``; off by default).

- ``GET /metrics``: Prometheus text. Records processed, failed and dead-lettered per topic, processing
  time, consumer lag per partition, partitions assigned, SP-API requests by outcome, and the rate
  limiter's ``ordersync_quota_*`` metrics (tokens, waits, throttles).
- ``GET /healthz``: 200 while the worker's event loop answers and nothing crashed; 503 once the faust
  worker or one of its agents crashed (the orchestrator restarts the container).
- ``GET /readyz``: 200 once the consumer has its partitions (or the stage has no consumer and its loop
  runs), Redis answers PING, the broker answers a metadata request, nothing is stalled and the rate
  limiter is not failing closed; 503 with a JSON reason otherwise.

Consumer lag is the fetch high-watermark the broker sent with the last fetch of each assigned partition
(aiokafka's ``highwater``), minus the next offset to process: the last offset this process handled plus
one, or the group's committed offset before it handled any. No ListOffsets request is sent for it (end
offsets lookups cost a broker round trip per scrape, and the embedded broker answers some wrongly).

The server is an aiohttp site on the worker's own event loop, started as a dependency of the faust app
(before the consumer, so ``/healthz`` answers while the group is still joining).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any, Protocol

import redis.asyncio as aioredis
from aiohttp import web
from aiokafka.protocol.metadata import MetadataRequest
from mode import Service
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from ordersync.logs import redact
from ordersync.pipeline.metrics import ASSIGNED_PARTITIONS, CONSUMER_LAG, STAGE_READY
from ordersync.redis_client import redis_client
from ordersync.settings import Settings

log = logging.getLogger(__name__)


class StageProbe(Protocol):
    """What the probes read from a running stage (the stage runtime provides it)."""

    stage: str
    settings: Settings
    app: Any
    next_offsets: dict[tuple[str, int], int]
    loop_started: bool
    assigned: bool
    stalls: dict[str, str]

    @property
    def limiter_or_none(self) -> object | None: ...


PING_TIMEOUT_S = 2.0


def consumer_lag(runtime: StageProbe) -> tuple[int, dict[tuple[str, int], int]] | None:
    """Partitions assigned, and the lag per assigned (topic, partition); None when the stage has no
    consumer (or it is not started). Partitions not fetched yet (no high-watermark) have no lag."""
    app = runtime.app
    if not app.agents:
        return None
    try:
        consumer: Any = app.consumer
        assignment = consumer.assignment()
    except Exception:  # the consumer thread is not running yet
        return None
    committed: Any = getattr(consumer, "_committed_offset", {})
    lags: dict[tuple[str, int], int] = {}
    for tp in assignment:
        try:
            highwater = consumer.highwater(tp)
        except Exception:  # noqa: S112 - revoked between assignment() and now
            continue
        if highwater is None:
            continue
        position = runtime.next_offsets.get((tp.topic, tp.partition))
        if position is None:
            position = committed.get(tp) if hasattr(committed, "get") else None
        if position is None and highwater == 0:
            position = 0  # an empty partition: nothing to be behind on
        if position is None:
            continue
        lags[(tp.topic, tp.partition)] = max(0, int(highwater) - int(position))
    return len(assignment), lags


def crashed(runtime: StageProbe) -> str | None:
    """Why the worker is dead, or None while it lives."""
    app: Any = runtime.app
    services: list[tuple[str, Any]] = [("worker", app)]
    services += [(f"agent {name}", agent) for name, agent in app.agents.items()]
    for what, service in services:
        if getattr(service, "crashed", False):
            reason = getattr(service, "crash_reason", None)
            why = f"{type(reason).__name__}: {reason}" if reason is not None else "unknown reason"
            return redact(f"{what} crashed: {why}")[:300]
    return None


class StageWebServer(Service):
    """/metrics, /healthz and /readyz of one stage, on the worker's loop."""

    def __init__(self, runtime: StageProbe, host: str, port: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.runtime = runtime
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None
        self._redis: aioredis.Redis | None = None

    def application(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        return app

    async def on_start(self) -> None:
        self._redis = redis_client(self.runtime.settings.redis)
        self._runner = web.AppRunner(self.application(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server: Any = site._server  # the bound socket: port 0 picks a free one
        if server is not None and server.sockets:
            self.port = int(server.sockets[0].getsockname()[1])
        log.info("stage %s: /metrics /healthz /readyz on %s:%d", self.runtime.stage, self.host, self.port)

    async def on_stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._redis is not None:
            await self._redis.aclose()

    # --- handlers ------------------------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        reason = crashed(self.runtime)
        if reason is not None:
            return _json(503, {"status": "crashed", "stage": self.runtime.stage, "reason": reason})
        return _json(200, {"status": "ok", "stage": self.runtime.stage})

    async def readyz(self, request: web.Request) -> web.Response:
        ready, checks = await self.readiness()
        STAGE_READY.labels(self.runtime.stage).set(1 if ready else 0)
        reasons = [f"{name}: {state}" for name, state in checks.items() if state != "ok"]
        body = {
            "ready": ready,
            "stage": self.runtime.stage,
            "checks": checks,
            "reason": "; ".join(reasons) if reasons else "ready",
        }
        return _json(200 if ready else 503, body)

    async def readiness(self) -> tuple[bool, dict[str, str]]:
        runtime = self.runtime
        checks: dict[str, str] = {}
        reason = crashed(runtime)
        checks["worker"] = "ok" if reason is None else reason
        checks["consumer"] = self._consumer_state()
        checks["redis"] = await self._redis_state()
        checks["kafka"] = await self._broker_state()
        checks["progress"] = (
            "ok"
            if not runtime.stalls
            else "stalled: " + "; ".join(f"{k}: {v}" for k, v in runtime.stalls.items())
        )
        limiter_healthy = getattr(runtime.limiter_or_none, "healthy", True)
        checks["rate_limiter"] = "ok" if limiter_healthy else "failing closed: its Redis cannot be reached"
        return all(state == "ok" for state in checks.values()), checks

    def _consumer_state(self) -> str:
        runtime = self.runtime
        app: Any = runtime.app
        if not app.agents:
            return "ok" if runtime.loop_started else "loop not started"
        if getattr(app, "rebalancing", False):
            return "rebalancing"
        if not runtime.assigned:
            return "waiting for partitions (joining the consumer group)"
        return "ok"

    async def _redis_state(self) -> str:
        if self._redis is None:
            return "not connected"
        try:
            async with asyncio.timeout(PING_TIMEOUT_S):
                await self._redis.ping()
        except Exception as exc:  # any failure means not ready
            return f"PING failed: {type(exc).__name__}"
        return "ok"

    async def _broker_state(self) -> str:
        """Whether the broker answers: a metadata request for no topic on the stage's own producer
        connection (its TLS and SASL settings included) once the producer runs, else whether a bootstrap
        broker accepts a connection. The consumer and producer retry on their own while the broker is
        gone, so without this check such a stage would look ready; a frozen broker still accepts
        connections (the kernel does), but answers nothing."""
        client = _kafka_client(self.runtime.app)
        if client is not None:
            return await _broker_answers(client)
        servers = self.runtime.settings.kafka.bootstrap.split(",")
        for server in servers:
            host, _, port = server.strip().rpartition(":")
            try:
                async with asyncio.timeout(PING_TIMEOUT_S):
                    _, writer = await asyncio.open_connection(host.strip("[]"), int(port))
            except (OSError, TimeoutError, ValueError):
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return "ok"
        return f"no broker of {self.runtime.settings.kafka.bootstrap} accepts a connection"

    async def metrics(self, request: web.Request) -> web.Response:
        self.update_gauges()
        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    def update_gauges(self) -> None:
        stage = self.runtime.stage
        state = consumer_lag(self.runtime)
        # Partitions revoked since the last scrape must not keep their last value.
        CONSUMER_LAG.clear()
        if state is None:
            return
        assigned, lags = state
        ASSIGNED_PARTITIONS.labels(stage).set(assigned)
        for (topic, partition), lag in lags.items():
            CONSUMER_LAG.labels(stage, topic, str(partition)).set(lag)


def _json(status: int, body: dict[str, Any]) -> web.Response:
    return web.Response(status=status, text=json.dumps(body), content_type="application/json")


def _kafka_client(app: Any) -> Any | None:
    """The aiokafka client of the faust app's producer once it runs (faust creates it lazily; reading
    ``app.producer`` would create one)."""
    producer = getattr(getattr(app, "_producer", None), "_producer", None)
    return getattr(producer, "client", None)


async def _broker_answers(client: Any) -> str:
    nodes = [broker.nodeId for broker in client.cluster.brokers()]
    for node in nodes:
        try:
            async with asyncio.timeout(PING_TIMEOUT_S):
                await client.send(node, MetadataRequest([]))
        except Exception:  # noqa: S112 - any failure: try the next broker
            continue
        return "ok"
    if not nodes:
        return "no broker known yet (no metadata)"
    return f"no broker answered a metadata request within {PING_TIMEOUT_S:g} s"
