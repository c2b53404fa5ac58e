"""Stage tests: a stage's logic with a real Redis and the simulator over HTTP, no broker.

The one seam replaced is the stage runtime's ``emit`` (the Kafka producer): it records the envelopes
instead (:class:`ordersync.dev.testing.RecordingRuntime`), so a test can assert exactly what the stage would
have published.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from ordersync.clock import EpochClock
from ordersync.dev.testing import RecordingRuntime, channels_of
from ordersync.kafka.faust_app import make_app
from ordersync.ratelimit import InMemoryRateLimiter, PlanBook
from ordersync.settings import AmazonSettings, RedisSettings, Settings
from ordersync.simulator.runner import RunningSimulator
from ordersync.simulator.scenario import Scenario
from ordersync.simulator.testing import lwa_form


@pytest.fixture
async def make_runtime(redis_url: str, redis_key_prefix: str) -> AsyncIterator[Any]:
    """``make_runtime(stage, scenario, sim, other_settings={...}, **download_settings)``: a started
    RecordingRuntime."""
    made: list[RecordingRuntime] = []

    async def make(
        stage: str,
        scenario: Scenario,
        sim: RunningSimulator,
        *,
        other_settings: dict[str, Any] | None = None,
        **download: Any,
    ) -> RecordingRuntime:
        channels = channels_of(scenario)
        settings = Settings(
            redis=RedisSettings(url=redis_url, key_prefix=redis_key_prefix),
            amazon=AmazonSettings(endpoint=sim.base_url, lwa_endpoint=sim.lwa_url),
            download=download,  # type: ignore[arg-type]
            **(other_settings or {}),
        )
        # Generous plans: these tests are about what the stage emits, not about waiting for quota.
        limiter = InMemoryRateLimiter(plans=PlanBook.from_channels(channels.channels, time_scale=1000))
        # Amazon's time is the simulator's: the stage reckons its windows and schedules from it, so no
        # test depends on the day it runs.
        runtime = RecordingRuntime(
            stage,
            settings,
            make_app(stage, settings),
            channels,
            limiter=limiter,
            clock=EpochClock(sim.state.now),
        )
        await runtime.start()
        made.append(runtime)
        return runtime

    yield make
    for runtime in made:
        await runtime.close()


@pytest.fixture
def sim_http(sim: RunningSimulator) -> Iterator[httpx.Client]:
    """An HTTP client of the test module's ``sim`` fixture, signed in as its first seller (an LWA
    access token on every request)."""
    with httpx.Client(base_url=sim.base_url, timeout=10) as client:
        response = client.post("/auth/o2/token", data=lwa_form(sim.state.scenario))
        assert response.status_code == 200, response.text
        client.headers["x-amz-access-token"] = response.json()["access_token"]
        yield client
