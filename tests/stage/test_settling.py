"""No record is acknowledged unprocessed: whatever a handler raises, ``StageRuntime.process`` settles the
record as processed, tried again in place (an outage, throttling), or dead-lettered with the reason
(invalid, permanent, a bug that failed again, too large to copy: by reference)."""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from redis import exceptions as redis_errors

from ordersync.dev.testing import RecordingRuntime
from ordersync.errors import Permanent, QuotaUnavailable, Throttled
from ordersync.schemas.codec import MAX_NESTING, MAX_RECORD_BYTES
from ordersync.schemas.envelope import Envelope, Event
from ordersync.schemas.events import EventDeadLettered
from ordersync.schemas.topics import INVOICES_ISSUED
from ordersync.simulator.runner import RunningSimulator
from ordersync.simulator.testing import TEST_SELLER, tiny_scenario
from tests.factories import invoice_record
from tests.records import Handler, Message, Record

pytestmark = pytest.mark.stage

DLQ = "invoices.issued.dlq"


@pytest.fixture
async def runtime(make_runtime: Callable[..., Awaitable[RecordingRuntime]]) -> Any:
    scenario = tiny_scenario()
    with RunningSimulator(scenario) as sim:
        yield await make_runtime("invoice-issued", scenario, sim)


def _invoice() -> bytes:
    return invoice_record(TEST_SELLER, "INV-1", "111-1111111-1111111", "1")


def _dead_letters(runtime: RecordingRuntime) -> list[EventDeadLettered]:
    return [e.envelope.payload for e in runtime.emitted if e.topic == DLQ]


async def test_a_redis_outage_is_waited_out_and_the_record_processed(runtime: RecordingRuntime) -> None:
    stalls_seen: list[dict[str, str]] = []
    handler = Handler([redis_errors.ConnectionError("Connection refused"), redis_errors.BusyLoadingError()])

    async def watching(envelope: Envelope[Event]) -> None:
        stalls_seen.append(dict(runtime.stalls))
        await handler(envelope)

    await runtime.process(INVOICES_ISSUED, Record(Message(_invoice())), watching)  # type: ignore[arg-type]
    assert handler.calls == 3
    assert _dead_letters(runtime) == []
    # While Redis was away the record was reported stalled; once through, nothing is.
    assert stalls_seen[1] == {"invoices.issued[0]": "ConnectionError: Connection refused"}
    assert runtime.stalls == {}


async def test_throttling_and_a_failing_closed_limiter_are_waits(runtime: RecordingRuntime) -> None:
    handler = Handler(
        [Throttled("slow down", retry_after_s=0.01), QuotaUnavailable("limiter's Redis is down")]
    )
    await runtime.process(INVOICES_ISSUED, Record(Message(_invoice())), handler)  # type: ignore[arg-type]
    assert handler.calls == 3
    assert _dead_letters(runtime) == []


async def test_a_bug_that_fails_again_is_dead_lettered_with_its_reason(runtime: RecordingRuntime) -> None:
    handler = Handler([RecursionError("maximum recursion depth exceeded")] * 10)
    value = _invoice()
    await runtime.process(INVOICES_ISSUED, Record(Message(value)), handler)  # type: ignore[arg-type]
    assert handler.calls == 3
    [letter] = _dead_letters(runtime)
    assert (letter.error_type, letter.error) == ("RecursionError", "maximum recursion depth exceeded")
    assert (letter.source_topic, letter.source_partition, letter.source_offset) == ("invoices.issued", 0, 41)
    assert letter.original_value() == value


async def test_a_bug_that_goes_away_when_tried_again_loses_nothing(runtime: RecordingRuntime) -> None:
    handler = Handler([KeyError("sales_order")])
    await runtime.process(INVOICES_ISSUED, Record(Message(_invoice())), handler)  # type: ignore[arg-type]
    assert handler.calls == 2
    assert _dead_letters(runtime) == []


async def test_a_permanent_refusal_is_dead_lettered_at_once(runtime: RecordingRuntime) -> None:
    handler = Handler([Permanent("no sales order for 111-1111111-1111111")] * 5)
    await runtime.process(INVOICES_ISSUED, Record(Message(_invoice())), handler)  # type: ignore[arg-type]
    assert handler.calls == 1
    [letter] = _dead_letters(runtime)
    assert letter.error == "no sales order for 111-1111111-1111111"


async def test_a_record_dead_lettered_again_after_a_restart_is_one_dead_letter(
    runtime: RecordingRuntime,
) -> None:
    """A stage killed after dead-lettering a record, before its offset was committed, reads it again and
    dead-letters it again: both copies carry one event id (another record: another id), so whoever counts
    dead letters by id (the status model, its notifications) counts it once."""
    refused = Handler([Permanent("no sales order")] * 5)
    for offset in (7, 7, 8):
        await runtime.process(
            INVOICES_ISSUED,
            Record(Message(_invoice(), offset=offset)),
            refused,  # type: ignore[arg-type]
        )
    first, again, other = (e.envelope for e in runtime.emitted if e.topic == DLQ)
    assert first.event_id == again.event_id
    assert other.event_id != first.event_id
    assert (first.payload.source_offset, other.payload.source_offset) == (7, 8)


def _nested(depth: int) -> bytes:
    record = json.loads(_invoice())
    deep: Any = "x"
    for _ in range(depth):
        deep = [deep]
    record["payload"]["invoice_number"] = deep
    return json.dumps(record).encode()


@pytest.mark.parametrize("depth", [MAX_NESTING + 1, 100_000])
async def test_a_deeply_nested_record_is_dead_lettered_not_crashed_on(
    runtime: RecordingRuntime, depth: int
) -> None:
    handler = Handler([])
    # Past Python's recursion limit only bytes can build it (json.dumps would recurse too).
    value = _nested(depth) if depth <= MAX_NESTING + 1 else b'{"a": ' + b"[" * depth + b"]" * depth + b"}"
    await runtime.process(INVOICES_ISSUED, Record(Message(value)), handler)  # type: ignore[arg-type]
    assert handler.calls == 0
    [letter] = _dead_letters(runtime)
    assert letter.error == f"invoices.issued: JSON nested deeper than {MAX_NESTING} levels"
    assert letter.original_value() == value


async def test_an_oversize_record_is_dead_lettered_by_reference(runtime: RecordingRuntime) -> None:
    value = b'{"event_type": "InvoiceIssued", "padding": "' + b"x" * 800_000 + b'"}'
    await runtime.process(INVOICES_ISSUED, Record(Message(value, offset=7)), Handler([]))  # type: ignore[arg-type]
    [letter] = _dead_letters(runtime)
    assert (
        letter.error
        == f"invoices.issued: record of {len(value)} bytes is over the {MAX_RECORD_BYTES}-byte limit"
    )
    assert letter.original_value_b64 == ""
    assert letter.original_size_bytes == len(value)
    assert (letter.source_topic, letter.source_partition, letter.source_offset) == ("invoices.issued", 0, 7)
    # The dead letter itself fits in a broker message.
    assert (
        len(runtime.encode_for(runtime.emitted[-1] and INVOICES_ISSUED.dlq, runtime.emitted[-1].envelope))
        < 10_000
    )  # type: ignore[arg-type]


async def test_a_record_that_fits_is_copied_whole(runtime: RecordingRuntime) -> None:
    await runtime.process(INVOICES_ISSUED, Record(Message(b"not json")), Handler([]))  # type: ignore[arg-type]
    [letter] = _dead_letters(runtime)
    assert base64.b64decode(letter.original_value_b64) == b"not json"
    assert letter.original_size_bytes is None


async def test_a_limiter_failing_closed_inside_a_call_is_an_outage_not_an_attempt(
    runtime: RecordingRuntime,
) -> None:
    calls: list[dict[str, str]] = []

    async def get_order() -> str:
        calls.append(dict(runtime.stalls))
        if len(calls) <= 2:
            raise QuotaUnavailable("limiter's Redis is down")
        return "the order"

    assert await runtime.retrying("getOrder 111", get_order) == "the order"
    assert len(calls) == 3
    assert calls[1] == {"getOrder 111": "QuotaUnavailable: limiter's Redis is down"}
    assert runtime.stalls == {}
