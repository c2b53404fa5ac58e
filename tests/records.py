"""What faust hands an agent, for driving ``StageRuntime.process`` without a broker: a record, its
message, and a handler that fails as told."""

from __future__ import annotations

from dataclasses import dataclass, field

from ordersync.dev import testing
from ordersync.dev.testing import Record, RecordingRuntime
from ordersync.schemas.codec import encode
from ordersync.schemas.envelope import Envelope, Event
from ordersync.schemas.events import RecordParked
from ordersync.schemas.topics import INVOICES_ISSUED, REDRIVE_TIERS


@dataclass
class Message(testing.Message):
    """A record's message, by default an invoice of the tests' seller at offset 41."""

    key: bytes = b"A1SELLER:111-1111111-1111111"
    topic: str = INVOICES_ISSUED.name
    offset: int = 41


@dataclass
class Handler:
    """Raises each of ``failures`` in turn, then succeeds; counts its calls."""

    failures: list[BaseException]
    calls: int = 0
    seen: list[Envelope[Event]] = field(default_factory=list)

    async def __call__(self, envelope: Envelope[Event]) -> None:
        self.calls += 1
        self.seen.append(envelope)
        if self.failures:
            raise self.failures.pop(0)


def parked(runtime: RecordingRuntime) -> list[tuple[Record, RecordParked]]:
    """Every record the runtime parked on a redrive tier, as the tier's agent would read it back."""
    found = []
    for offset, emitted in enumerate(runtime.emitted):
        if emitted.topic not in {spec.name for spec in REDRIVE_TIERS}:
            continue
        payload = emitted.envelope.payload
        assert isinstance(payload, RecordParked)
        message = Message(encode(emitted.envelope), emitted.key.encode(), emitted.topic, 0, offset)
        found.append((Record(message), payload))
    return found
