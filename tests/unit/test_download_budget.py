"""The download's listing budget: the poll and the catch-ups planned within searchOrders' 20 calls an
hour, whatever the seller's size, and slower while notifications do the fast work."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest

from ordersync.producers.download_budget import (
    Reader,
    calls_per_second,
    changes_per_second,
    plan_sweep,
    shortest_interval,
)
from ordersync.producers.order_download import catch_ups, notifications_flow
from ordersync.settings import DownloadSettings
from tests.factories import T0

pytestmark = pytest.mark.unit

SEARCH_ORDERS = 0.0056  # Amazon's rate for searchOrders (2026-01-01)
SETTINGS = DownloadSettings()
READERS = tuple(catch_up.reader(afn_share=0.3) for catch_up in catch_ups(SETTINGS))


def _changes(orders_a_day: int, changes_an_order: float = 2.0) -> float:
    return orders_a_day * changes_an_order / 86400


def test_a_small_seller_polls_as_often_as_its_share_pays_and_keeps_every_catch_up() -> None:
    plan = plan_sweep(
        listing_rate=SEARCH_ORDERS,
        changes_per_s=_changes(50),
        notifications_flow=False,
        settings=SETTINGS,
        catch_ups=READERS,
    )
    # One call a minute would be 60 an hour: three times the budget. The poll's share pays one call
    # every few minutes, with the full overlap.
    assert 180 < plan.poll_interval_s < 600
    assert plan.overlap_s == SETTINGS.overlap_s
    assert all(every is not None for every in plan.catch_ups.values())
    assert plan.catch_ups["reconciliation"] == SETTINGS.reconciliation_interval_s
    assert plan.calls_per_hour <= SETTINGS.budget_share * SEARCH_ORDERS * 3600 + 1e-9


@pytest.mark.parametrize("orders_a_day", [1_000, 3_000])
def test_within_the_budget_without_notifications_and_under_half_of_it_with_them(orders_a_day: int) -> None:
    budget = SEARCH_ORDERS * 3600
    without = plan_sweep(
        listing_rate=SEARCH_ORDERS,
        changes_per_s=_changes(orders_a_day),
        notifications_flow=False,
        settings=SETTINGS,
        catch_ups=READERS,
    )
    with_them = plan_sweep(
        listing_rate=SEARCH_ORDERS,
        changes_per_s=_changes(orders_a_day),
        notifications_flow=True,
        settings=SETTINGS,
        catch_ups=READERS,
    )
    assert without.calls_per_hour <= SETTINGS.budget_share * budget + 1e-9
    assert with_them.calls_per_hour <= 0.5 * budget
    # Notifications do the fast work: the poll is their backup, slower.
    assert with_them.poll_interval_s >= SETTINGS.notified_poll_interval_s > without.poll_interval_s
    # Catch-ups that would need more than is left are skipped, and say so.
    for task, every in without.catch_ups.items():
        if every is None:
            assert any(note.startswith(f"{task} skipped") for note in without.notes)


def test_a_seller_too_big_for_listing_is_told_so_and_the_poll_waits_at_most_its_cap() -> None:
    plan = plan_sweep(
        listing_rate=SEARCH_ORDERS,
        changes_per_s=_changes(50_000),
        notifications_flow=False,
        settings=SETTINGS,
        catch_ups=READERS,
    )
    assert plan.poll_interval_s == SETTINGS.max_poll_interval_s
    assert plan.overlap_s == SETTINGS.min_overlap_s
    assert set(plan.catch_ups.values()) == {None}
    assert any("the poll alone needs more than the budget" in note for note in plan.notes)
    # Listing 100,000 changes a day once is about 42 calls an hour: more than Amazon gives.
    assert shortest_interval(_changes(50_000), 0, SEARCH_ORDERS) == math.inf


def test_the_overlap_is_cut_before_the_poll_gives_up() -> None:
    plan = plan_sweep(
        listing_rate=SEARCH_ORDERS,
        changes_per_s=_changes(10_000),
        notifications_flow=False,
        settings=SETTINGS,
        catch_ups=READERS,
    )
    assert plan.overlap_s == SETTINGS.min_overlap_s
    assert plan.poll_interval_s < SETTINGS.max_poll_interval_s
    reach = plan.poll_interval_s + plan.overlap_s
    poll_share = SETTINGS.poll_share * SETTINGS.budget_share * SEARCH_ORDERS
    assert calls_per_second(_changes(10_000), reach, plan.poll_interval_s) <= poll_share + 1e-9


def test_a_poll_its_share_cannot_keep_up_takes_the_whole_budget() -> None:
    plan = plan_sweep(
        listing_rate=SEARCH_ORDERS,
        changes_per_s=_changes(12_000),
        notifications_flow=False,
        settings=SETTINGS,
        catch_ups=READERS,
    )
    assert plan.poll_interval_s < SETTINGS.max_poll_interval_s
    assert set(plan.catch_ups.values()) == {None}
    assert any("takes the whole budget" in note for note in plan.notes)
    assert plan.calls_per_hour <= SETTINGS.budget_share * SEARCH_ORDERS * 3600 + 1e-9


def test_a_time_scaled_amazon_wants_the_poll_in_its_own_seconds() -> None:
    plan = plan_sweep(
        listing_rate=1.0,  # a generous plan: the wanted interval decides
        changes_per_s=0.0,
        notifications_flow=False,
        settings=SETTINGS,
        catch_ups=(Reader("r", 3600, 0),),
        time_scale=60,
    )
    assert plan.poll_interval_s == SETTINGS.poll_interval_s * 60


def test_the_change_rate_follows_what_the_polls_list() -> None:
    first = changes_per_second(None, 600, 3600)
    assert first == pytest.approx(600 / 3600)
    assert changes_per_second(first, 0, 0) == first  # an empty span says nothing
    later = changes_per_second(first, 0, 3600)
    assert 0 < later < first
    # A quiet first month, then a busy half hour: the busy rate counts at once.
    quiet = changes_per_second(None, 3, 30 * 86400)
    assert changes_per_second(quiet, 1000, 1800) == pytest.approx(1000 / 1800)


def test_notifications_flow_while_they_come_or_while_nothing_changes() -> None:
    now = T0
    recent, old = now - timedelta(minutes=5), now - timedelta(hours=2)
    flows = {"queue_configured": True, "now": now, "silence_s": 1800.0}
    assert notifications_flow(**flows, last_notified=recent, poll_found_new=True, flowed_before=False)
    # Silent: fine while the poll finds nothing they missed; stopped once it does.
    assert notifications_flow(**flows, last_notified=old, poll_found_new=False, flowed_before=True)
    assert not notifications_flow(**flows, last_notified=old, poll_found_new=True, flowed_before=True)
    assert not notifications_flow(**flows, last_notified=None, poll_found_new=False, flowed_before=False)
    assert not notifications_flow(
        queue_configured=False,
        now=now,
        silence_s=1800.0,
        last_notified=recent,
        poll_found_new=False,
        flowed_before=True,
    )


def test_a_subscription_amazon_says_is_missing_stops_the_flow_at_once() -> None:
    recent = T0 - timedelta(minutes=1)
    flows = {"queue_configured": True, "now": T0, "silence_s": 1800.0, "last_notified": recent}
    assert notifications_flow(**flows, poll_found_new=False, flowed_before=True, subscription_missing=False)
    assert not notifications_flow(
        **flows, poll_found_new=False, flowed_before=True, subscription_missing=True
    )
