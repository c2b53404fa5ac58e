"""A periodic loop stops when asked, even when a library swallowed the cancellation (Python 3.11's
``asyncio.wait_for`` does when the request arrives as its inner call completes; aiosmtplib and redis-py
wait that way). The alerts loop hung a test run for ten minutes that way."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
import redis.asyncio as aioredis

from ordersync.ops import alerts
from ordersync.pipeline.cancellation import raise_if_cancel_requested
from ordersync.settings import Settings

pytestmark = pytest.mark.unit


async def _swallows_a_cancellation(*, first_step: bool) -> None:
    """What the 3.11 ``wait_for`` race looks like from outside: the stop request is consumed. Only the
    first step swallows (the race is rare), so every loop here ends at the latest at a second request."""
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        if not first_step:
            raise


async def _loop(*, guarded: bool, steps: list[int]) -> None:
    while True:
        steps.append(1)
        await _swallows_a_cancellation(first_step=len(steps) == 1)
        if guarded:
            raise_if_cancel_requested()
        await asyncio.sleep(0)


async def _stop(task: asyncio.Task[Any]) -> bool:
    """Cancel ``task`` while it waits in a step; True when it ended cancelled within a second."""
    await asyncio.sleep(0.05)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=1)
    return task in done and task.cancelled()


async def _force_stop(task: asyncio.Task[Any]) -> None:
    """Cancel again until the task ends, so a failing test does not leave a loop running for ever."""
    for _ in range(50):
        if task.done():
            return
        task.cancel()
        await asyncio.wait({task}, timeout=0.02)


async def test_an_unguarded_loop_goes_on_after_a_swallowed_cancellation() -> None:
    steps: list[int] = []
    task = asyncio.create_task(_loop(guarded=False, steps=steps))
    try:
        assert not await _stop(task)
        assert len(steps) == 2  # it went round again, into the next step
    finally:
        await _force_stop(task)


async def test_a_guarded_loop_stops() -> None:
    steps: list[int] = []
    task = asyncio.create_task(_loop(guarded=True, steps=steps))
    try:
        assert await _stop(task)
        assert len(steps) == 1
    finally:
        await _force_stop(task)


def test_outside_a_cancelled_task_the_guard_does_nothing() -> None:
    async def plain() -> str:
        raise_if_cancel_requested()
        return "went on"

    assert asyncio.run(plain()) == "went on"


async def test_the_alerts_loop_stops_though_a_delivery_swallowed_the_cancellation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    evaluations: list[int] = []

    async def evaluate_swallowing(*_args: object, **_kwargs: object) -> tuple[list[Any], list[Any]]:
        evaluations.append(1)
        # an SMTP reply's wait_for, cancelled as the reply came
        await _swallows_a_cancellation(first_step=len(evaluations) == 1)
        return [], []

    monkeypatch.setattr(alerts, "evaluate_once", evaluate_swallowing)
    quick = Settings()
    quick = quick.model_copy(update={"alerts": quick.alerts.model_copy(update={"interval_s": 0.01})})
    task = asyncio.create_task(alerts.run_alerts(quick, cast(aioredis.Redis, None), [], "test"))
    try:
        assert await _stop(task)
        assert len(evaluations) == 1
    finally:
        await _force_stop(task)


async def test_a_stage_task_step_that_swallowed_the_cancellation_ends_the_task(tmp_path: Any) -> None:
    from ordersync.kafka.faust_app import make_app  # noqa: PLC0415 - only this test builds a stage
    from ordersync.pipeline.runtime import StageRuntime  # noqa: PLC0415
    from tests.factories import write_channels_file  # noqa: PLC0415

    settings = Settings(channels_file=write_channels_file(tmp_path / "channels.yaml"))
    runtime = StageRuntime("import", settings, make_app("import", settings))
    rounds: list[int] = []

    async def feed_tick() -> None:
        rounds.append(1)
        await _swallows_a_cancellation(first_step=len(rounds) == 1)

    async def periodic() -> None:
        while True:
            await runtime.survive("feed-tick", feed_tick)
            await asyncio.sleep(0)

    task = asyncio.create_task(periodic())
    try:
        assert await _stop(task)
        assert len(rounds) == 1
    finally:
        await _force_stop(task)
