"""Retry tiers: what happens to a record whose transient fault outlived the in-line retries.

Amazon down for an hour, an LWA refusal that lasts, a timeout storm: a person should not have to
replay those records. The stage parks the record on a redrive tier (``pipeline.redrive.<n>`` in the
topic catalogue) and tries it again when the tier's delay has passed; each failed try moves it one
tier up (1 minute, 15 minutes, 2 hours by default, the last tier repeating) until the redrive deadline
(a day after the first failure by default). Only then is it dead-lettered, with its last error.

Kafka is the record: the parked copy is on the tier topic, and the tier's record is acknowledged only
once the try settled it (processed, parked again one tier up, or dead-lettered).

One order's records stay in order. A stage keeps each order's waiting line in Redis
(:data:`ordersync.state.keys.PARKED`): a record of an order that has a record parked is parked behind
it, without a try, and a parked record is tried only at the head of its line. After a Redis loss the
lines are rebuilt from the tiers (:func:`waiting_lines`): the copies not yet settled are those from
the stage's position on each tier partition on. A record never waits behind another longer than the
redrive deadline plus the last tier's delay, so a line whose head is gone cannot hold an order for ever.

This module holds the pure rules; :class:`~ordersync.pipeline.runtime.StageRuntime` applies them.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ordersync.schemas.events import RecordParked, record_id
from ordersync.settings import RedriveSettings

#: A record waiting for its due time checks the clock this often (seconds): the clock may be the
#: simulator's, which can run faster than the host's.
DUE_POLL_S = 1.0


@dataclass(frozen=True)
class SourceRecord:
    """One record as read from its topic: where it was and its bytes."""

    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes

    @property
    def id(self) -> str:
        return record_id(self.topic, self.partition, self.offset)

    @classmethod
    def of_message(cls, message: Any) -> SourceRecord:
        """From a faust/aiokafka message."""
        key = message.key.decode(errors="replace") if isinstance(message.key, bytes) else None
        value = message.value if isinstance(message.value, bytes) else b""
        return cls(message.topic, message.partition, message.offset, key, value)

    @classmethod
    def of_parked(cls, parked: RecordParked) -> SourceRecord:
        return cls(
            parked.source_topic,
            parked.source_partition,
            parked.source_offset,
            parked.source_key,
            parked.original_value(),
        )


@dataclass(frozen=True)
class Parking:
    """Where and until when a record waits: its tier and due time."""

    tier: int
    due_at: datetime


def parking_after(settings: RedriveSettings, tries: int, now: datetime) -> Parking:
    """The tier for a record that failed ``tries`` redrive tries (0: it failed only in line), due after
    that tier's delay."""
    tier = min(tries + 1, len(settings.delays_s))
    return Parking(tier, now + timedelta(seconds=settings.delays_s[tier - 1]))


def is_last_try(parked: RecordParked | None, now: datetime) -> bool:
    """Whether a failure now is final (dead-lettered rather than parked again): past the deadline."""
    return parked is not None and now >= parked.deadline_at


def waited_too_long(settings: RedriveSettings, parked: RecordParked, now: datetime) -> bool:
    """Whether a record parked behind another has waited longer than any head could take."""
    return now > parked.deadline_at + timedelta(seconds=settings.delays_s[-1])


def may_try(line: list[str], record: str) -> bool:
    """Whether ``record`` may be tried now: at the head of its order's line, or not in it (a line lost
    with Redis, or a record parked twice whose first copy settled)."""
    return not line or line[0] == record or record not in line


def waiting_lines(
    stage: str, unsettled: Iterable[RecordParked], order_keyed: set[str]
) -> dict[str, list[str]]:
    """Each order's waiting line of ``stage`` from its parked copies not yet settled (read off the tiers
    in any order): per record key, the parked records (topic:partition:offset) in the order they were
    first parked. ``order_keyed``: the source topics keyed by order (only those have lines). A record
    parked more than once (a try that failed again) is in its line once."""
    first: dict[str, RecordParked] = {}
    for parked in unsettled:
        if parked.stage != stage or not parked.source_key or parked.source_topic not in order_keyed:
            continue
        source = parked.record_id
        if source not in first or parked.first_failed_at < first[source].first_failed_at:
            first[source] = parked
    lines: dict[str, list[str]] = {}
    ordered = sorted(
        first.items(),
        key=lambda item: (item[1].first_failed_at, item[1].source_topic, item[1].source_offset),
    )
    for source, parked in ordered:
        lines.setdefault(parked.source_key or "", []).append(source)
    return lines


def parked_record(
    stage: str,
    source: SourceRecord,
    settings: RedriveSettings,
    *,
    now: datetime,
    earlier: RecordParked | None,
    error: Exception | str,
    behind: str | None = None,
) -> RecordParked:
    """The redrive copy of ``source``. ``earlier``: its copy being tried now (None: its first parking),
    whose first failure and deadline it keeps. A record that failed climbs one tier per try; one that
    only waits ``behind`` another (``error`` says so) stays on the first tier and spends no try."""
    if isinstance(error, Exception):
        error_type, reason = type(error).__name__, str(error) or type(error).__name__
        tries = 0 if earlier is None else earlier.tries + 1
    else:
        error_type, reason = "WaitingInLine", error
        tries = 0 if earlier is None else earlier.tries
    parking = parking_after(settings, tries if behind is None else 0, now)
    return RecordParked(
        stage=stage,
        source_topic=source.topic,
        source_partition=source.partition,
        source_offset=source.offset,
        source_key=source.key,
        original_value_b64=base64.b64encode(source.value).decode(),
        tier=parking.tier,
        tries=tries,
        first_failed_at=now if earlier is None else earlier.first_failed_at,
        parked_at=now,
        due_at=parking.due_at,
        deadline_at=now + timedelta(seconds=settings.deadline_s) if earlier is None else earlier.deadline_at,
        error_type=error_type,
        error=reason[:2000],
        behind=behind,
    )


def gave_up_reason(parked: RecordParked, error: Exception, now: datetime) -> str:
    """The dead letter's reason for a record the redrive gave up on."""
    hours = (now - parked.first_failed_at).total_seconds() / 3600
    return f"gave up after {parked.tries + 1} redrive tries over {hours:.1f} h: {error}"
