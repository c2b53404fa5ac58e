"""Redis restarted empty between two of a stage's periodic checks: the next record finds the generation
marker gone and waits for the rebuild from Kafka; a record whose state vanished while it was being
decided is refused at emit and tried again on the rebuilt state, never decided on the empty one."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from ordersync.dev.testing import RecordingRuntime
from ordersync.errors import Permanent
from ordersync.pipeline.runtime import REBUILD_TASK
from ordersync.schemas.envelope import Envelope, Event
from ordersync.schemas.topics import INVOICES_ISSUED
from ordersync.simulator.runner import RunningSimulator
from ordersync.simulator.testing import TEST_SELLER, tiny_scenario
from tests.factories import invoice_record
from tests.records import Message, Record
from tests.redis_trips import counting_trips

pytestmark = pytest.mark.stage

ORDER = "111-1111111-1111111"
KEY = f"{TEST_SELLER}:{ORDER}"


class Stage:
    """A stage whose one piece of state, a SKU mapping (what a rebuild from Kafka brings back), decides
    each record."""

    def __init__(self, runtime: RecordingRuntime) -> None:
        self.runtime = runtime
        self.channel = runtime.channels.channels[0].name
        self.rebuilds = 0
        self.decided: list[str] = []
        self.lose_state_while_deciding = False
        runtime.on_redis_reset(self.rebuild)

    async def rebuild(self) -> None:
        self.rebuilds += 1
        await self.runtime.store.set_listings(self.channel, {"SKU-1": "STK-1"})

    async def lose_everything(self) -> None:
        redis = self.runtime.store.redis
        doomed = [key async for key in redis.scan_iter(match=f"{self.runtime.store.prefix}:*")]
        await redis.delete(*doomed)

    async def handle(self, envelope: Envelope[Event]) -> None:
        mapped = await self.runtime.store.stock_codes(self.channel, ["SKU-1"])
        if not mapped:
            raise Permanent("unknown SKU-1")  # what an empty Redis would make of the record
        self.decided.append(mapped["SKU-1"])
        if self.lose_state_while_deciding:
            self.lose_state_while_deciding = False
            await self.lose_everything()
        await self.runtime.emit(INVOICES_ISSUED, KEY, envelope)


@pytest.fixture
async def stage(make_runtime: Callable[..., Awaitable[RecordingRuntime]]) -> AsyncIterator[Stage]:
    scenario = tiny_scenario()
    with RunningSimulator(scenario) as sim:
        stage = Stage(await make_runtime("invoice-issued", scenario, sim))
        assert await stage.runtime.check_generation() is True  # the first look at an empty Redis
        yield stage


def _record(offset: int) -> Record:
    value = invoice_record(TEST_SELLER, f"INV-{offset}", ORDER, "1")
    return Record(Message(value, KEY.encode(), INVOICES_ISSUED.name, offset=offset))


def _dead_letters(runtime: RecordingRuntime) -> list[object]:
    return runtime.payloads(f"{INVOICES_ISSUED.name}.dlq")


async def test_a_record_after_redis_lost_everything_waits_for_the_rebuild(stage: Stage) -> None:
    runtime = stage.runtime
    await runtime.process(INVOICES_ISSUED, _record(1), stage.handle)
    await stage.lose_everything()
    await runtime.process(INVOICES_ISSUED, _record(2), stage.handle)
    assert stage.rebuilds == 2
    assert stage.decided == ["STK-1", "STK-1"]
    assert len(runtime.payloads(INVOICES_ISSUED.name)) == 2
    assert _dead_letters(runtime) == []
    # Said in the stage's health (the dashboard's Tasks page), and no longer stalled.
    health = await runtime.store.task(REBUILD_TASK, runtime.stage)
    assert health["last_result"].startswith("Redis has no state: state rebuilt from Kafka in ")
    assert runtime.stalls == {}


async def test_a_record_whose_state_vanished_while_it_was_decided_is_decided_again(stage: Stage) -> None:
    runtime = stage.runtime
    stage.lose_state_while_deciding = True
    await runtime.process(INVOICES_ISSUED, _record(3), stage.handle)
    # Refused at emit (the decision may rest on what vanished), rebuilt, decided again: emitted once.
    assert stage.rebuilds == 2
    assert stage.decided == ["STK-1", "STK-1"]
    assert len(runtime.payloads(INVOICES_ISSUED.name)) == 1
    assert _dead_letters(runtime) == []
    assert runtime.stalls == {}


async def test_a_rebuild_that_failed_runs_again_before_the_next_try(stage: Stage) -> None:
    runtime = stage.runtime
    rebuild = stage.rebuild
    failures = [RuntimeError("a bug in one rebuild")]

    async def failing_once() -> None:
        if failures:
            raise failures.pop()
        await rebuild()

    stage.rebuild = failing_once  # type: ignore[method-assign]
    runtime._rebuilders = [failing_once]
    await stage.lose_everything()
    await runtime.process(INVOICES_ISSUED, _record(4), stage.handle)
    # The failed rebuild left the state owed: the record's next try rebuilt it, and was decided on it.
    assert stage.rebuilds == 2
    assert stage.decided == ["STK-1"]
    assert len(runtime.payloads(INVOICES_ISSUED.name)) == 1
    assert _dead_letters(runtime) == []


async def test_a_record_costs_one_trip_before_its_handler_and_one_per_event_sent(
    stage: Stage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check that Redis holds the stage's state and the look at the order's waiting line go in one
    round trip; the handler's own read is one; the check before its event is sent, one."""
    runtime = stage.runtime
    await runtime.process(INVOICES_ISSUED, _record(5), stage.handle)  # connections opened
    with counting_trips(monkeypatch) as counted:
        for offset in range(6, 16):
            await runtime.process(INVOICES_ISSUED, _record(offset), stage.handle)
    assert counted.trips / 10 == 3
    assert len(runtime.payloads(INVOICES_ISSUED.name)) == 11
    assert stage.rebuilds == 1
