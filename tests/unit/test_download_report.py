"""The report reconciliation's window and the orders it finds the pipeline behind on."""

from __future__ import annotations

from datetime import timedelta

import pytest

from ordersync.amazon.reports import ReportOrderLine
from ordersync.producers.download_report import report_gaps, report_window
from ordersync.settings import DownloadSettings
from tests.factories import T0

pytestmark = pytest.mark.unit

SETTINGS = DownloadSettings()


def test_the_first_report_covers_two_days_up_to_an_hour_ago() -> None:
    start, end = report_window(None, T0, SETTINGS)
    assert end == T0 - timedelta(hours=1)  # Amazon's report is up to 30 minutes behind
    assert start == end - timedelta(days=2)


def test_each_report_begins_an_hour_before_the_last_ended_and_never_spans_more_than_a_week() -> None:
    last_end = T0 - timedelta(days=1, hours=1)
    start, end = report_window(last_end, T0, SETTINGS)
    assert (start, end) == (last_end - timedelta(hours=1), T0 - timedelta(hours=1))
    start, end = report_window(T0 - timedelta(days=30), T0, SETTINGS)
    assert end - start == timedelta(days=7)


def _line(order_id: str, hours: float) -> ReportOrderLine:
    return ReportOrderLine.example(amazon_order_id=order_id, last_updated=T0 + timedelta(hours=hours))


def test_the_orders_the_pipeline_is_behind_on_are_those_newer_in_the_report_or_never_sent() -> None:
    latest = {"A": _line("A", 2), "B": _line("B", 1), "C": _line("C", 1)}
    sent = {"A": T0 + timedelta(hours=1), "B": T0 + timedelta(hours=1)}
    assert report_gaps(latest, sent) == ["A", "C"]
