"""The batched-feed engine's pure parts: a processing report mapped back to its messages, the stall
decision, backoff, what a failure costs, and the feed types' items as Redis keeps them."""

from __future__ import annotations

import json

import pytest

from ordersync.amazon.feeds import Availability, ProcessingReport, ProcessingResult
from ordersync.consumers.cancellation import AcknowledgementFeed, PendingCancellation, failure_reason
from ordersync.consumers.inventory import ListingsFeed, SkuQuantity
from ordersync.errors import AmazonUnavailable, QuotaUnavailable, Retryable, Throttled
from ordersync.pipeline.feeds import (
    FeedFailure,
    FeedProblem,
    RetryPolicy,
    map_report,
    retry_at,
    stall_verdict,
)

pytestmark = pytest.mark.unit


def _report(*results: ProcessingResult) -> ProcessingReport:
    return ProcessingReport(
        processed=3, successful=3 - len(results), with_error=len(results), with_warning=0, results=results
    )


def _error(message_id: int | None, code: str = "E1", order: str | None = None) -> ProcessingResult:
    return ProcessingResult(message_id, "Error", code, f"problem {code}", amazon_order_id=order)


def test_errors_map_by_message_id_and_warnings_are_accepted() -> None:
    warning = ProcessingResult(1, "Warning", "W1", "only a warning")
    mapped = map_report(_report(_error(2), _error(2, "E2"), warning), {1: "o1", 2: "o2", 3: "o3"})
    assert mapped.whole == ()
    assert mapped.errors[1] == []
    assert [r.code for r in mapped.errors[2]] == ["E1", "E2"]
    assert mapped.errors[3] == []


def test_a_result_naming_the_order_but_no_message_maps_to_that_orders_message() -> None:
    mapped = map_report(_report(_error(None, order="o3"), _error(None, "E9", order="o9")), {1: "o1", 3: "o3"})
    assert mapped.whole == ()
    assert [r.code for r in mapped.errors[3]] == ["E1"]
    assert mapped.errors[1] == []
    # Without order ids (SKUs), such results map nowhere.
    assert map_report(_report(_error(None, order="o3")), {1: None, 3: None}).errors == {1: [], 3: []}


def test_errors_naming_neither_message_nor_order_refuse_the_whole_document() -> None:
    mapped = map_report(_report(_error(None, "5000")), {1: "o1", 2: "o2"})
    assert [r.code for r in mapped.whole] == ["5000"]
    assert mapped.errors == {}


def test_stall_decision() -> None:
    assert stall_verdict("IN_QUEUE", age_s=10, timeout_s=60, cancel_stalled=True) == "wait"
    assert stall_verdict("IN_QUEUE", age_s=60, timeout_s=60, cancel_stalled=True) == "cancel"
    assert stall_verdict("IN_PROGRESS", age_s=61, timeout_s=60, cancel_stalled=True) == "unknown"
    # A feed type that leaves stalled feeds to Amazon (inventory) never cancels.
    assert stall_verdict("IN_QUEUE", age_s=61, timeout_s=60, cancel_stalled=False) == "unknown"


def test_backoff_doubles_with_each_attempt() -> None:
    assert [retry_at(1000.0, n, 30.0) for n in (1, 2, 3)] == [1030.0, 1060.0, 1120.0]
    assert retry_at(1000.0, 0, 30.0) == 1030.0


def test_the_retry_policy_keeps_a_transient_failure_until_the_deadline() -> None:
    policy = RetryPolicy(max_attempts=3, backoff_s=30.0, deadline_s=3600.0, cap_s=600.0)
    # Attempts left: never given up, whatever the failure.
    assert not policy.gives_up(attempts=2, first_failed_at=0.0, now=10_000.0, transient=False)
    # Attempts spent: a fault of the work goes at once; an outage only after the deadline.
    assert policy.gives_up(attempts=3, first_failed_at=0.0, now=10.0, transient=False)
    assert not policy.gives_up(attempts=3, first_failed_at=0.0, now=3599.0, transient=True)
    assert policy.gives_up(attempts=3, first_failed_at=0.0, now=3600.0, transient=True)
    # Backoff doubles up to the cap; without backoff the item goes at the next round.
    assert [policy.not_before(attempts=n, now=1000.0) for n in (1, 2, 6)] == [1030.0, 1060.0, 1600.0]
    unbounded = RetryPolicy(max_attempts=None, backoff_s=None, deadline_s=0.0, cap_s=600.0)
    assert not unbounded.gives_up(attempts=10**6, first_failed_at=0.0, now=1e9, transient=False)
    assert unbounded.not_before(attempts=5, now=1000.0) is None


def test_throttling_and_a_limiter_without_redis_cost_no_attempt() -> None:
    assert not FeedFailure("not-sent", Throttled("wait"), outcome_unknown=False).spent
    assert not FeedFailure("not-sent", QuotaUnavailable("no redis"), outcome_unknown=True).spent
    timeout = AmazonUnavailable("createFeed", None, "ReadTimeout", "no answer")
    assert FeedFailure("not-sent", timeout, outcome_unknown=True).spent
    ended = FeedFailure("ended", FeedProblem("feed 7 ended FATAL"), False, "7", "FATAL")
    assert ended.spent
    assert ended.summary == "feed 7 failed"
    assert FeedFailure("not-sent", timeout, True).summary.startswith("feed not sent: createFeed")


def test_a_cancellation_given_up_says_why_its_feed_failed() -> None:
    assert failure_reason(FeedFailure("stalled", Retryable("x"), True, "9", "IN_PROGRESS")) == (
        "FeedStalled: feed 9 IN_PROGRESS"
    )
    assert failure_reason(FeedFailure("ended", FeedProblem("feed 9 ended FATAL"), False, "9", "FATAL")) == (
        "FeedFailed: feed 9 ended FATAL"
    )
    assert failure_reason(FeedFailure("interrupted", Retryable("x"), True)) == (
        "Interrupted: the cancellation feed was not confirmed sent"
    )
    assert failure_reason(FeedFailure("not-sent", Throttled("slow down"), False)) == "Throttled: slow down"


def test_items_keep_their_redis_shapes() -> None:
    cancel = AcknowledgementFeed()
    raw = json.dumps(
        {
            "order_id": "111-1",
            "channel": "acme",
            "reason": "NoInventory",
            "items": ["i1"],
            "correlation_id": "c",
            "marketplace_id": "ATVPDKIKX0DER",
            "attempts": 2,
            "first_failed_at": 1767600000.5,
        }
    )
    entry = cancel.loads("111-1", raw)
    assert entry == PendingCancellation(
        "111-1", "acme", "NoInventory", ["i1"], "c", "ATVPDKIKX0DER", attempts=2, first_failed_at=1767600000.5
    )
    assert json.loads(entry.dumps()) == json.loads(raw)
    assert cancel.from_record(entry.record()) == entry
    stock = ListingsFeed()
    sku = stock.loads("SKU-1", "7")
    assert (sku.field, sku.dumps(), sku.record()) == ("SKU-1", "7", ["SKU-1", 7])
    assert stock.from_record(["SKU-1", 7]) == SkuQuantity("SKU-1", Availability(7))
    # With the handling time and restock date the back-office gave: kept with the quantity.
    kept = stock.loads("SKU-2", "0|3|2026-12-24")
    assert kept.availability == Availability(0, 3, "2026-12-24")
    assert (kept.dumps(), kept.record()) == ("0|3|2026-12-24", ["SKU-2", "0|3|2026-12-24"])
    assert stock.from_record(kept.record()) == kept
    assert stock.loads("SKU-3", "5||2027-01-02").availability == Availability(5, None, "2027-01-02")
