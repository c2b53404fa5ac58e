"""Retry tiers at stage level: a transient failure that outlived the in-line retries is parked on a
redrive tier, tried again when due on the stage's clock, climbs the tiers while it keeps failing and is
dead-lettered only at the redrive deadline; one order's later records wait behind it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest

from ordersync.dev.testing import RecordingRuntime
from ordersync.errors import AmazonUnavailable, Retryable
from ordersync.pipeline import runtime as runtime_module
from ordersync.schemas.events import EventDeadLettered, RecordParked
from ordersync.schemas.topics import INVOICES_ISSUED, REDRIVE_TIERS
from ordersync.settings import RedriveSettings
from ordersync.simulator.runner import RunningSimulator
from ordersync.simulator.testing import TEST_SELLER, tiny_scenario
from ordersync.state import keys
from tests.factories import invoice_record
from tests.records import Handler, Message, Record, parked

pytestmark = pytest.mark.stage

ORDER = "111-1111111-1111111"
KEY = f"{TEST_SELLER}:{ORDER}"
DLQ = "invoices.issued.dlq"


@pytest.fixture
async def stage(
    make_runtime: Callable[..., Awaitable[RecordingRuntime]],
) -> AsyncIterator[tuple[RecordingRuntime, RunningSimulator]]:
    scenario = tiny_scenario()
    with RunningSimulator(scenario) as sim:
        runtime = await make_runtime("invoice-issued", scenario, sim)
        runtime.settings = runtime.settings.model_copy(
            update={"redrive": RedriveSettings(delays_s=(60.0, 900.0, 7200.0), deadline_s=3600.0)}
        )
        yield runtime, sim


def _invoice(number: str) -> Record:
    offset = int(number.rsplit("-", 1)[1])
    return Record(Message(invoice_record(TEST_SELLER, number, ORDER, "1"), KEY.encode(), offset=offset))


async def _line(runtime: RecordingRuntime) -> list[str]:
    line = await runtime.store.redis.lrange(runtime.store.key_of(keys.PARKED, runtime.stage, KEY), 0, -1)
    return list(line)


def _dead_letters(runtime: RecordingRuntime) -> list[EventDeadLettered]:
    return [e.envelope.payload for e in runtime.emitted if e.topic == DLQ]


async def _redrive(runtime: RecordingRuntime, record: Record) -> None:
    await runtime.process(REDRIVE_TIERS[0], record, runtime._redrive)  # type: ignore[arg-type]


async def test_a_transient_failure_is_parked_then_processed_when_due(
    stage: tuple[RecordingRuntime, RunningSimulator],
) -> None:
    runtime, sim = stage
    handler = Handler([AmazonUnavailable("getOrderItems", 503, "ServiceUnavailable", "try later")])
    await runtime.serve(INVOICES_ISSUED, handler)
    failed_at = runtime.clock.now()
    source = _invoice("INV-5")
    await runtime.process(INVOICES_ISSUED, source, handler)  # type: ignore[arg-type]

    [(record, copy)] = parked(runtime)
    assert record.message.topic == "pipeline.redrive.1"
    assert (copy.stage, copy.source_topic, copy.source_offset, copy.tier, copy.tries) == (
        "invoice-issued",
        INVOICES_ISSUED.name,
        5,
        1,
        0,
    )
    assert copy.error_type == "AmazonUnavailable"
    assert "503 ServiceUnavailable" in copy.error
    assert timedelta(seconds=59) < copy.due_at - failed_at < timedelta(seconds=62)
    assert timedelta(seconds=3599) < copy.deadline_at - failed_at < timedelta(seconds=3602)
    assert copy.original_value() == source.value
    assert _dead_letters(runtime) == []
    assert await _line(runtime) == [f"{INVOICES_ISSUED.name}:0:5"]

    sim.state.advance_clock(61)  # due: tried again, succeeds, and the order's line is empty
    await _redrive(runtime, record)
    assert handler.calls == 2
    assert handler.seen[1].payload == handler.seen[0].payload
    assert len(parked(runtime)) == 1
    assert await _line(runtime) == []
    assert _dead_letters(runtime) == []


async def test_a_record_not_yet_due_waits_for_the_stages_clock(
    stage: tuple[RecordingRuntime, RunningSimulator],
) -> None:
    runtime, sim = stage
    handler = Handler([Retryable("timeout")])
    await runtime.serve(INVOICES_ISSUED, handler)
    await runtime.process(INVOICES_ISSUED, _invoice("INV-6"), handler)  # type: ignore[arg-type]
    [(record, _)] = parked(runtime)
    sim.state.advance_clock(58)
    redrive = runtime.app.loop.create_task(_redrive(runtime, record))
    await asyncio.sleep(1.5)
    assert handler.calls == 1, "tried before it was due"
    sim.state.advance_clock(3)
    await redrive
    assert handler.calls == 2


async def test_failures_climb_the_tiers_and_are_dead_lettered_at_the_deadline(
    stage: tuple[RecordingRuntime, RunningSimulator],
) -> None:
    runtime, sim = stage
    handler = Handler([Retryable("503 from Amazon")] * 10)
    await runtime.serve(INVOICES_ISSUED, handler)
    source = _invoice("INV-7")
    await runtime.process(INVOICES_ISSUED, source, handler)  # type: ignore[arg-type]
    tiers = []
    for wait in (61, 901, 7201):
        record, copy = parked(runtime)[-1]
        tiers.append((copy.tier, copy.tries))
        sim.state.advance_clock(wait)
        await _redrive(runtime, record)
    # Parked at tier 1, then 2, then 3; the try at 2.3 h is past the 1 h deadline: dead-lettered.
    assert tiers == [(1, 0), (2, 1), (3, 2)]
    assert handler.calls == 4
    [letter] = _dead_letters(runtime)
    assert letter.error_type == "Retryable"
    assert letter.error.startswith("gave up after 3 redrive tries over 2.")
    assert letter.error.endswith(": 503 from Amazon")
    assert (letter.source_topic, letter.source_offset) == (INVOICES_ISSUED.name, 7)
    assert letter.original_value() == source.value
    assert await _line(runtime) == []


async def test_a_later_record_of_the_order_waits_behind_the_parked_one(
    stage: tuple[RecordingRuntime, RunningSimulator],
) -> None:
    runtime, sim = stage
    handler = Handler([Retryable("Amazon down")])
    await runtime.serve(INVOICES_ISSUED, handler)
    await runtime.process(INVOICES_ISSUED, _invoice("INV-1"), handler)  # type: ignore[arg-type]
    await runtime.process(INVOICES_ISSUED, _invoice("INV-2"), handler)  # type: ignore[arg-type]
    assert handler.calls == 1, "the second record was tried while the first waited"
    first, second = parked(runtime)
    assert second[1].behind == f"{INVOICES_ISSUED.name}:0:1"
    assert second[1].error_type == "WaitingInLine"
    assert await _line(runtime) == [f"{INVOICES_ISSUED.name}:0:{n}" for n in (1, 2)]

    sim.state.advance_clock(61)
    await _redrive(runtime, second[0])  # due first, but not at the head: parked again
    assert handler.calls == 1
    again = parked(runtime)[-1]
    assert again[1].source_offset == 2
    assert again[1].behind == f"{INVOICES_ISSUED.name}:0:1"
    await _redrive(runtime, first[0])
    sim.state.advance_clock(61)
    await _redrive(runtime, again[0])
    numbers = [seen.payload.invoice_number for seen in handler.seen]  # type: ignore[attr-defined]
    assert numbers == ["INV-1", "INV-1", "INV-2"]
    assert await _line(runtime) == []
    assert _dead_letters(runtime) == []


async def test_a_record_read_again_after_it_was_parked_is_not_parked_twice(
    stage: tuple[RecordingRuntime, RunningSimulator],
) -> None:
    runtime, _ = stage
    handler = Handler([Retryable("Amazon down")])
    await runtime.serve(INVOICES_ISSUED, handler)
    source = _invoice("INV-3")
    await runtime.process(INVOICES_ISSUED, source, handler)  # type: ignore[arg-type]
    # The worker stopped before acknowledging it: the source record is read again.
    await runtime.process(INVOICES_ISSUED, source, handler)  # type: ignore[arg-type]
    assert handler.calls == 1
    assert len(parked(runtime)) == 1


async def test_another_stages_parked_records_are_left_alone(
    stage: tuple[RecordingRuntime, RunningSimulator],
) -> None:
    runtime, sim = stage
    handler = Handler([Retryable("Amazon down")])
    await runtime.serve(INVOICES_ISSUED, handler)
    await runtime.process(INVOICES_ISSUED, _invoice("INV-4"), handler)  # type: ignore[arg-type]
    [(record, copy)] = parked(runtime)
    other: RecordParked = copy.model_copy(update={"stage": "import"})
    record.message.value = record.value = record.value.replace(b'"invoice-issued"', b'"import"')
    assert other.stage in record.value.decode()
    sim.state.advance_clock(61)
    await _redrive(runtime, record)
    assert handler.calls == 1
    assert await _line(runtime) == [f"{INVOICES_ISSUED.name}:0:4"]


async def test_a_stage_waits_for_its_handler_then_refuses_a_topic_it_does_not_consume(
    stage: tuple[RecordingRuntime, RunningSimulator], monkeypatch: Any
) -> None:
    runtime, sim = stage
    handler = Handler([Retryable("Amazon down")])
    await runtime.process(INVOICES_ISSUED, _invoice("INV-8"), handler)  # type: ignore[arg-type]
    [(record, _)] = parked(runtime)
    monkeypatch.setattr(runtime_module, "HANDLER_WAIT_S", 0.2)
    sim.state.advance_clock(61)
    await _redrive(runtime, record)
    [letter] = [e.envelope.payload for e in runtime.emitted if e.topic == "pipeline.redrive.1.dlq"]
    assert "does not consume invoices.issued" in letter.error
