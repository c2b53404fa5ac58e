"""The orders' waiting lines rebuilt from the parked copies not yet settled (after a Redis loss)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ordersync.errors import Retryable
from ordersync.pipeline.redrive import SourceRecord, parked_record, waiting_lines
from ordersync.schemas.events import RecordParked
from ordersync.schemas.topics import CATALOGUE, INVENTORY_LEVELS, INVOICES_ISSUED, SHIPMENTS_REQUESTED
from ordersync.settings import RedriveSettings

pytestmark = pytest.mark.unit

SETTINGS = RedriveSettings()
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
ORDER_KEYED = {spec.name for spec in CATALOGUE if spec.key == "order"}
KEY = "A1SELLER:111-1111111-1111111"


def _source(topic: str, offset: int, key: str = KEY) -> SourceRecord:
    return SourceRecord(topic, 0, offset, key, b"{}")


def _parked(
    source: SourceRecord,
    minutes: int,
    *,
    stage: str = "invoice-issued",
    earlier: RecordParked | None = None,
    behind: str | None = None,
) -> RecordParked:
    error: Exception | str = Retryable("Amazon is down") if behind is None else f"waits behind {behind}"
    now = T0 + timedelta(minutes=minutes)
    return parked_record(stage, source, SETTINGS, now=now, earlier=earlier, error=error, behind=behind)


def test_a_line_is_in_the_order_its_records_were_first_parked_whatever_the_tier() -> None:
    head, second, third = (_source(INVOICES_ISSUED.name, offset) for offset in (7, 9, 12))
    first_try = _parked(head, 0)
    climbed = _parked(head, 1, earlier=first_try)  # tried at the head, failed again: tier 2
    waiting = _parked(second, 0, behind=head.id)
    # On another order-keyed topic of the same order, parked last.
    other_topic = _parked(_source(SHIPMENTS_REQUESTED.name, 3), 5, behind=head.id)
    again = _parked(third, 2, behind=head.id)
    lines = waiting_lines("invoice-issued", [again, other_topic, climbed, waiting], ORDER_KEYED)
    assert lines == {KEY: [head.id, second.id, third.id, f"{SHIPMENTS_REQUESTED.name}:0:3"]}


def test_a_record_parked_twice_is_in_its_line_once() -> None:
    head = _source(INVOICES_ISSUED.name, 7)
    first_try = _parked(head, 0)
    lines = waiting_lines("invoice-issued", [first_try, _parked(head, 1, earlier=first_try)], ORDER_KEYED)
    assert lines == {KEY: [head.id]}


def test_only_this_stages_order_keyed_records_have_lines() -> None:
    other_order = "A1SELLER:222-2222222-2222222"
    mine = _parked(_source(INVOICES_ISSUED.name, 1, other_order), 0)
    others = _parked(_source(INVOICES_ISSUED.name, 2), 0, stage="import")
    not_order_keyed = _parked(_source(INVENTORY_LEVELS.name, 3, "A1SELLER:SKU-1"), 0)
    assert INVENTORY_LEVELS.name not in ORDER_KEYED
    lines = waiting_lines("invoice-issued", [mine, others, not_order_keyed], ORDER_KEYED)
    assert lines == {other_order: [f"{INVOICES_ISSUED.name}:0:1"]}
