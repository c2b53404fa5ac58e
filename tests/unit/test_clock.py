"""The one clock: what the stages read Amazon's "now" from."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ordersync.clock import EpochClock, ManualClock, SystemClock, epoch_seconds

pytestmark = pytest.mark.unit

START = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def test_epoch_clock_reads_its_source_as_an_aware_utc_instant() -> None:
    source = [START.timestamp()]
    clock = EpochClock(lambda: source[0])
    assert clock.now() == START
    assert clock.now().tzinfo is UTC
    source[0] += 90
    assert clock.now() == START + timedelta(seconds=90)
    assert epoch_seconds(clock) == START.timestamp() + 90


def test_manual_clock_moves_only_when_told_and_refuses_naive_starts() -> None:
    clock = ManualClock(START)
    assert clock.now() == clock.now() == START
    assert clock.advance(3600) == START + timedelta(hours=1)
    with pytest.raises(ValueError, match="timezone-aware"):
        ManualClock(datetime(2026, 1, 5))


def test_system_clock_is_aware_utc() -> None:
    before = datetime.now(UTC)
    now = SystemClock().now()
    assert now.tzinfo is UTC
    assert before <= now <= datetime.now(UTC)
