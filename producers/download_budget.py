"""How a channel's order download spends its listing budget.

Orders 2026-01-01 lists orders with ``searchOrders`` at 0.0056 requests/s, burst 20: about 20 calls an
hour, 100 orders a call (v0's ``getOrders``: 0.0167/s). Every call lists up to 100 changed orders, so
what a task costs follows the seller's change rate: a poll round reads its interval plus the overlap,
a rolling catch-up its window plus the time since its last run (it reaches back from where the last
run ended), the daily reconciliation the days since its last run.

The plan gives the poll its share first, at the interval wanted (short without notifications; long
with them, when the poll is only their backup); when the share cannot pay for that interval, the poll
slows down to what it can pay for, up to ``max_poll_interval_s``, then reads a shorter overlap, then
takes the whole budget (no catch-up would fit anyway). Each catch-up, in order, gets what is left,
stretched to the interval it can pay for; one that cannot be paid for at all, or only less often than
``max_catch_up_interval_s``, is skipped and says so (Amazon's order report, a quota of its own,
reconciles instead); what is left is shared equally among the catch-ups not planned yet. While
notifications flow, the whole plan spends at most ``notified_budget_share`` of the budget. Every
duration is in Amazon's seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ordersync.settings import DownloadSettings

#: Orders per listing call (searchOrders' and getOrders' largest page).
PAGE = 100
#: How fast the change-rate estimate follows a lower measurement (an exponential moving average).
CHANGE_RATE_WEIGHT = 0.3


@dataclass(frozen=True)
class Reader:
    """A task that lists changes: its wanted interval and how far back it reads beyond it."""

    task: str
    interval_s: float
    window_s: float
    #: The share of the seller's changes it lists (0.5: only orders fulfilled by Amazon, say).
    share: float = 1.0


@dataclass(frozen=True)
class SweepPlan:
    """What the download does until the next plan: calls per hour planned against the budget."""

    poll_interval_s: float
    overlap_s: float
    #: Per catch-up task, its interval; None: skipped (the budget cannot pay for it).
    catch_ups: dict[str, float | None]
    calls_per_hour: float
    budget_per_hour: float
    notes: tuple[str, ...] = field(default_factory=tuple)

    def summary(self) -> str:
        runs = ", ".join(
            f"{task} {'skipped' if every is None else f'every {_span(every)}'}"
            for task, every in self.catch_ups.items()
        )
        plan = (
            f"poll every {_span(self.poll_interval_s)} (overlap {_span(self.overlap_s)}); {runs};"
            f" {self.calls_per_hour:.1f} of {self.budget_per_hour:.1f} listing calls an hour"
        )
        return "; ".join((plan, *self.notes))


def _span(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.0f} s"


def calls_per_second(changes_per_s: float, reach_s: float, interval_s: float) -> float:
    """Listing calls a second for a task that reads ``reach_s`` seconds of changes every ``interval_s``."""
    return (1 + math.floor(changes_per_s * reach_s / PAGE)) / interval_s


def shortest_interval(changes_per_s: float, window_s: float, rate: float) -> float:
    """The shortest interval at which a task reading ``window_s`` beyond its interval fits ``rate``
    calls a second (infinite when even listing each change once costs more)."""
    marginal = rate - changes_per_s / PAGE
    if marginal <= 0:
        return math.inf
    return (1 + changes_per_s * window_s / PAGE) / marginal


def plan_sweep(
    *,
    listing_rate: float,
    changes_per_s: float,
    notifications_flow: bool,
    settings: DownloadSettings,
    catch_ups: tuple[Reader, ...],
    time_scale: float = 1.0,
) -> SweepPlan:
    """The poll's interval and overlap and each catch-up's interval for a seller whose listing
    operation allows ``listing_rate`` calls a second (Amazon's plan less the margin) and whose orders
    change ``changes_per_s`` times a second (both in Amazon's time)."""
    share = settings.notified_budget_share if notifications_flow else settings.budget_share
    budget = listing_rate * share
    notes: list[str] = []
    wanted = (
        settings.notified_poll_interval_s if notifications_flow else settings.poll_interval_s * time_scale
    )
    interval, overlap, whole = math.inf, settings.overlap_s, False
    # Its share first; a poll that cannot keep up on it gets the whole budget (no catch-up would fit).
    for poll_rate in (budget * settings.poll_share, budget):
        whole = poll_rate == budget
        for overlap in (settings.overlap_s, min(settings.overlap_s, settings.min_overlap_s)):
            interval = max(wanted, shortest_interval(changes_per_s, overlap, poll_rate))
            if interval <= settings.max_poll_interval_s:
                break
        if interval <= settings.max_poll_interval_s:
            break
    if interval > settings.max_poll_interval_s:
        interval = settings.max_poll_interval_s
        notes.append(
            "the poll alone needs more than the budget: it falls behind, and notifications and the order"
            " report must carry the seller"
        )
    else:
        if whole and settings.poll_share < 1:
            notes.append("the poll takes the whole budget to keep up; no catch-up fits")
        if overlap < settings.overlap_s:
            notes.append(f"overlap cut to {_span(overlap)} to keep the poll within {_span(interval)}")
        elif interval > wanted:
            notes.append(f"poll slowed from {_span(wanted)} to fit the budget")
    spent = calls_per_second(changes_per_s, interval + overlap, interval)
    left = max(0.0, budget - spent)
    planned: dict[str, float | None] = {}
    for index, reader in enumerate(catch_ups):
        changes = changes_per_s * reader.share
        # An equal part of what is left: what one does not use passes on to the next.
        part = left / (len(catch_ups) - index)
        every = max(reader.interval_s, shortest_interval(changes, reader.window_s, part))
        # A rolling re-scan reaches back to where its last run ended, so however far apart its runs it
        # misses nothing: only one that cannot be paid for (or only less than weekly) is skipped.
        if every > max(reader.interval_s, settings.max_catch_up_interval_s):
            planned[reader.task] = None
            notes.append(f"{reader.task} skipped: it does not fit the budget left")
            continue
        planned[reader.task] = every
        cost = calls_per_second(changes, reader.window_s + every, every)
        spent += cost
        left = max(0.0, left - cost)
    return SweepPlan(
        poll_interval_s=interval,
        overlap_s=overlap,
        catch_ups=planned,
        calls_per_hour=spent * 3600,
        budget_per_hour=listing_rate * 3600,
        notes=tuple(notes),
    )


def changes_per_second(previous: float | None, listed: int, span_s: float) -> float:
    """The change-rate estimate after a poll listed ``listed`` orders changed over ``span_s`` seconds: a
    higher rate is taken at once, a lower one followed gradually, so the plan never counts on a lull
    (a first window reaching back over a quiet month, a quiet hour) to pay for its catch-ups."""
    if span_s <= 0:
        return previous or 0.0
    measured = listed / span_s
    if previous is None or measured >= previous:
        return measured
    return previous + CHANGE_RATE_WEIGHT * (measured - previous)
