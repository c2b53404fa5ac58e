"""A stage's web endpoints in process, without a broker (a plain listening socket stands for one where
only its reachability matters): /healthz and /readyz follow the worker, its loop, Redis, the broker,
records or tasks that cannot make progress, and the rate limiter; /metrics serves the stage's and the
limiter's metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from ordersync.channels import ChannelsFile
from ordersync.kafka.faust_app import make_app
from ordersync.pipeline.probes import StageWebServer
from ordersync.pipeline.runtime import StageRuntime
from ordersync.ratelimit import InMemoryRateLimiter, PlanBook
from ordersync.settings import KafkaSettings, RedisSettings, Settings

pytestmark = pytest.mark.stage


async def serve(settings: Settings) -> tuple[StageRuntime, StageWebServer]:
    app = make_app("web-test", settings)
    runtime = StageRuntime(
        "web-test", settings, app, ChannelsFile(channels=()), limiter=InMemoryRateLimiter(plans=PlanBook())
    )
    server = StageWebServer(runtime, "127.0.0.1", 0)
    await server.start()
    return runtime, server


@pytest.fixture
async def listening_port() -> AsyncIterator[int]:
    """A port that accepts connections (and closes them): a reachable broker as far as readiness goes."""

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


@pytest.fixture
async def started(
    redis_url: str, redis_key_prefix: str, listening_port: int
) -> AsyncIterator[tuple[StageRuntime, str]]:
    settings = Settings(
        redis=RedisSettings(url=redis_url, key_prefix=redis_key_prefix),
        kafka=KafkaSettings(bootstrap=f"127.0.0.1:{listening_port}"),
    )
    runtime, server = await serve(settings)
    yield runtime, f"http://127.0.0.1:{server.port}"
    await server.stop()
    await runtime.close()


async def test_ready_once_the_stage_loop_runs_and_unhealthy_once_crashed(
    started: tuple[StageRuntime, str],
) -> None:
    runtime, base = started
    async with httpx.AsyncClient(base_url=base) as http:
        assert (await http.get("/healthz")).status_code == 200
        # No agent: ready once the stage's own loop started (a producer's).
        not_yet = await http.get("/readyz")
        assert not_yet.status_code == 503
        assert not_yet.json()["reason"] == "consumer: loop not started"
        await runtime.start()
        ready = await http.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["reason"] == "ready"
        metrics = (await http.get("/metrics")).text
        assert 'ordersync_stage_ready{stage="web-test"} 1.0' in metrics
        assert "ordersync_quota_redis_up" in metrics

        await runtime.app.crash(ValueError("boom"))
        dead = await http.get("/healthz")
        assert dead.status_code == 503
        assert dead.json()["reason"] == "worker crashed: ValueError: boom"
        assert (await http.get("/readyz")).status_code == 503


async def test_not_ready_while_redis_does_not_answer(redis_key_prefix: str) -> None:
    settings = Settings(redis=RedisSettings(url="redis://127.0.0.1:1/0", key_prefix=redis_key_prefix))
    runtime, server = await serve(settings)
    try:
        runtime.loop_started = True
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
            response = await http.get("/readyz")
            assert (await http.get("/healthz")).status_code == 200
    finally:
        await server.stop()
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["redis"] == "PING failed: ConnectionError"
    assert body["ready"] is False


async def test_not_ready_while_no_broker_accepts_a_connection(redis_url: str, redis_key_prefix: str) -> None:
    settings = Settings(
        redis=RedisSettings(url=redis_url, key_prefix=redis_key_prefix),
        kafka=KafkaSettings(bootstrap="127.0.0.1:1"),
    )
    runtime, server = await serve(settings)
    try:
        await runtime.start()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
            response = await http.get("/readyz")
    finally:
        await server.stop()
        await runtime.close()
    assert response.status_code == 503
    assert response.json()["checks"]["kafka"] == "no broker of 127.0.0.1:1 accepts a connection"
    assert response.json()["checks"]["redis"] == "ok"


async def test_not_ready_while_work_is_stalled_and_ready_once_it_moves(
    started: tuple[StageRuntime, str],
) -> None:
    runtime, base = started
    await runtime.start()
    async with httpx.AsyncClient(base_url=base) as http:
        assert (await http.get("/readyz")).status_code == 200
        runtime.stalled("shipments.requested[0]", ConnectionError("Redis went away"))
        stalled = await http.get("/readyz")
        assert stalled.status_code == 503
        assert stalled.json()["checks"]["progress"] == (
            "stalled: shipments.requested[0]: ConnectionError: Redis went away"
        )
        runtime.resumed("shipments.requested[0]")
        assert (await http.get("/readyz")).status_code == 200
