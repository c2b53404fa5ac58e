"""Stage tests: a stage's logic with a real Redis and the simulator over HTTP, no broker.

The one seam replaced is the stage runtime's ``emit`` (the Kafka producer): it records the envelopes
instead, so a test can assert exactly what the stage would have published.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from ordersync.channels import ChannelsFile
from ordersync.clock import EpochClock
from ordersync.demo import channels_for
from ordersync.faustapp import make_app
from ordersync.ratelimit import InMemoryRateLimiter, PlanBook
from ordersync.runtime import StageRuntime
from ordersync.schemas.envelope import Envelope
from ordersync.schemas.topics import TopicSpec
from ordersync.settings import AmazonSettings, RedisSettings, Settings
from ordersync.simulator.runner import RunningSimulator
from ordersync.simulator.scenario import Scenario


@dataclass
class Emitted:
    topic: str
    key: str
    envelope: Envelope[Any]


class RecordingRuntime(StageRuntime):
    """A real stage runtime (Redis, rate limiter, Amazon client) whose Kafka producer records."""

    emitted: list[Emitted]

    async def emit(self, spec: TopicSpec, key: str, envelope: Envelope[Any]) -> None:
        if spec.accepts(envelope.event_type) is None:
            raise ValueError(f"{envelope.event_type} does not belong on {spec.name}")
        self.emitted.append(Emitted(spec.name, key, envelope))

    def payloads(self, topic: str) -> list[Any]:
        return [e.envelope.payload for e in self.emitted if e.topic == topic]


@pytest.fixture
async def make_runtime(redis_url: str, redis_key_prefix: str) -> AsyncIterator[Any]:
    """``make_runtime(stage, scenario, sim, **download_settings)``: a started RecordingRuntime."""
    made: list[RecordingRuntime] = []

    async def make(
        stage: str, scenario: Scenario, sim: RunningSimulator, **download: Any
    ) -> RecordingRuntime:
        channels = ChannelsFile.model_validate(yaml.safe_load(yaml.safe_dump(channels_for(scenario))))
        settings = Settings(
            redis=RedisSettings(url=redis_url, key_prefix=redis_key_prefix),
            amazon=AmazonSettings(endpoint=sim.base_url, lwa_endpoint=sim.lwa_url),
            download=download,  # type: ignore[arg-type]
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
        runtime.emitted = []
        await runtime.start()
        made.append(runtime)
        return runtime

    yield make
    for runtime in made:
        await runtime.close()
