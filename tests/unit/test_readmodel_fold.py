"""The fold as a pure function of an order's facts: every permutation of the same events gives the same
row, and the status rules (ignore refused once imported, later success supersedes, held is Pending)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from ordersync.readmodel import derive, facts_of
from tests.stage.test_readmodel import IGNORED, OK, RETRIED, SELLER, _Run, recorded_run

pytestmark = pytest.mark.unit


def _facts(events: list[tuple[str, Any]], order_id: str) -> list[dict[str, Any]]:
    return [
        fact
        for topic, envelope in events
        for target, fact in facts_of(topic, envelope)
        if target.amazon_order_id == order_id and target.seller_id == SELLER
    ]


@pytest.mark.parametrize("order_id", [OK, RETRIED, IGNORED])
def test_every_order_of_the_facts_gives_the_same_row(order_id: str) -> None:
    facts = _facts(recorded_run(), order_id)
    reference = derive(SELLER, order_id, facts)
    for permutation in itertools.islice(itertools.permutations(facts), 200):
        derived = derive(SELLER, order_id, permutation)
        assert derived.row == reference.row
        assert derived.history == reference.history


def test_ignore_after_the_import_is_refused() -> None:
    run = _Run()
    run.order_flow(OK)
    run.imported(OK, "SO00000001")
    run.command("ignore", OK)
    row = derive(SELLER, OK, _facts(run.events, OK)).row
    assert row.status == "Success"


def test_unignore_lifts_the_ignore() -> None:
    run = _Run()
    run.order_flow(IGNORED, sku="GONE-1")
    run.import_failed(IGNORED, "GONE-1")
    run.command("ignore", IGNORED)
    assert derive(SELLER, IGNORED, _facts(run.events, IGNORED)).row.status == "Ignored"
    run.command("unignore", IGNORED)
    row = derive(SELLER, IGNORED, _facts(run.events, IGNORED)).row
    assert (row.status, row.error_code) == ("Failed", "unknown_stock_code")


def test_repeated_import_failures_count_as_attempts_and_one_open_error() -> None:
    run = _Run()
    run.order_flow(RETRIED, sku="UNMAPPED-7")
    run.import_failed(RETRIED, "UNMAPPED-7")
    run.command("retry-import", RETRIED)
    run.import_failed(RETRIED, "UNMAPPED-7")
    derived = derive(SELLER, RETRIED, _facts(run.events, RETRIED))
    assert (derived.row.status, derived.row.attempts) == ("Failed", 2)
    assert [e["active"] for e in derived.errors] == [False, True]
    assert derived.failed_stages == ("import",)
