"""The orders grid's query string: filters, sort and page, parsed strictly and written back into links.

The same parameters serve the page (``/``), the JSON API (``/api/orders``) and the CSV export
(``/export.csv``), so a filtered grid, its API call and its export always agree.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Literal, cast, get_args
from urllib.parse import urlencode

from pydantic import BaseModel, ConfigDict

from ordersync.settings import DashboardSettings
from ordersync.state.readmodel import (
    DEADLINES,
    EASY_SHIP_STATES,
    Deadline,
    EasyShipState,
    OrderFilter,
    OverallStatus,
    SortKey,
)

FailedStage = Literal["import", "write-back", "download"]

STATUSES: tuple[OverallStatus, ...] = get_args(OverallStatus)
SORT_KEYS: tuple[SortKey, ...] = get_args(SortKey)
FAILED_STAGES: tuple[FailedStage, ...] = get_args(FailedStage)

#: Amazon order ids are 3-7-7 digits; the search box also takes a prefix of one, or a seller SKU.
AMAZON_ORDER_ID = re.compile(r"^\d{3}-\d{7}-\d{7}$")
_MAX_TEXT = 200
_MAX_NAME = 100
_MAX_OFFSET = 10_000_000

#: The filter parameters, in the order they appear in links.
FILTER_PARAMS: tuple[str, ...] = (
    "status",
    "failed_stage",
    "deadline",
    "easy_ship",
    "since",
    "until",
    "channel",
    "seller_id",
    "marketplace_id",
    "q",
)


class BadQuery(ValueError):
    """A query parameter is not valid; the message names it and says what is expected."""


class GridQuery(BaseModel):
    """One view of the orders grid: what to show, in which order, which page."""

    model_config = ConfigDict(frozen=True)

    filter: OrderFilter = OrderFilter()
    sort: SortKey = "purchase_date"
    descending: bool = True
    offset: int = 0
    limit: int = 50
    #: The filter parameters as given (dates as typed), to refill the form and build links.
    raw: tuple[tuple[str, str], ...] = ()

    def filter_params(self) -> dict[str, str]:
        return dict(self.raw)

    def link(self, **changes: str | int | None) -> str:
        """A query string for this view with ``changes`` (None drops a parameter)."""
        params: dict[str, str] = {
            **self.filter_params(),
            "sort": self.sort,
            "dir": "desc" if self.descending else "asc",
            "offset": str(self.offset),
            "limit": str(self.limit),
        }
        for name, value in changes.items():
            if value is None:
                params.pop(name, None)
            else:
                params[name] = str(value)
        return "?" + urlencode([(k, v) for k, v in params.items() if v != ""])

    def sort_link(self, key: str) -> str:
        """Sort by ``key``; the column already sorted on flips its direction. Back to the first page."""
        descending = not self.descending if key == self.sort else key != "amazon_order_id"
        return self.link(sort=key, dir="desc" if descending else "asc", offset=0)

    def export_link(self) -> str:
        return "?" + urlencode([(k, v) for k, v in self.filter_params().items() if v != ""])


def _one(params: Mapping[str, str], name: str) -> str:
    return params.get(name, "").strip()


def _choice(params: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str | None:
    value = _one(params, name)
    if not value:
        return None
    if value not in choices:
        raise BadQuery(f"{name}: {value!r} is not one of {', '.join(choices)}")
    return value


def parse_time(name: str, value: str, *, end_of_day: bool, tz: tzinfo = UTC) -> datetime:
    """A date (``2026-11-20``: the day's start; for ``until`` the next day's start, as the read model's
    upper bound is exclusive and the day typed is meant whole) or an ISO time; dates and times without
    an offset are in ``tz`` (the reader's time zone; UTC by default)."""
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            if end_of_day:
                day += timedelta(days=1)
            return datetime.combine(day, time(0), tzinfo=tz)
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise BadQuery(f"{name}: {value!r} is not a date (YYYY-MM-DD) or an ISO 8601 time") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=tz)


def _name(params: Mapping[str, str], name: str) -> str | None:
    value = _one(params, name)
    if not value:
        return None
    if len(value) > _MAX_NAME or not re.fullmatch(r"[A-Za-z0-9._-]+", value):
        raise BadQuery(f"{name}: {value[:40]!r} is not a valid identifier (letters, digits, . _ -)")
    return value


def _int(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    value = _one(params, name)
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        raise BadQuery(f"{name}: {value[:20]!r} is not a whole number") from None
    if not low <= number <= high:
        raise BadQuery(f"{name}: {number} is outside {low}..{high}")
    return number


def parse_filter(
    params: Mapping[str, str], tz: tzinfo = UTC
) -> tuple[OrderFilter, tuple[tuple[str, str], ...]]:
    """The order filter of a query string, and its parameters as given; dates are days of ``tz``. A
    reversed date range is refused (never swapped, never read as no range)."""
    status = _choice(params, "status", STATUSES)
    failed_stage = _choice(params, "failed_stage", FAILED_STAGES)
    deadline = _choice(params, "deadline", DEADLINES)
    easy_ship = _choice(params, "easy_ship", EASY_SHIP_STATES)
    since_raw, until_raw = _one(params, "since"), _one(params, "until")
    since = parse_time("since", since_raw, end_of_day=False, tz=tz) if since_raw else None
    until = parse_time("until", until_raw, end_of_day=True, tz=tz) if until_raw else None
    if since and until and since >= until:
        raise BadQuery(
            f"since: the date range is reversed: From {since_raw} is after To {until_raw}; "
            "swap them (no order is listed for a reversed range)"
        )
    text = _one(params, "q")
    if len(text) > _MAX_TEXT:
        raise BadQuery(f"q: the search text is longer than {_MAX_TEXT} characters")
    order_filter = OrderFilter(
        status=cast(OverallStatus | None, status),
        failed_stage=cast(FailedStage | None, failed_stage),
        deadline=cast(Deadline | None, deadline),
        easy_ship=cast(EasyShipState | None, easy_ship),
        since=since,
        until=until,
        channel=_name(params, "channel"),
        seller_id=_name(params, "seller_id"),
        marketplace_id=_name(params, "marketplace_id"),
        text=text or None,
    )
    raw = tuple((name, _one(params, name)) for name in FILTER_PARAMS if _one(params, name))
    return order_filter, raw


def parse_grid_query(params: Mapping[str, str], settings: DashboardSettings, tz: tzinfo = UTC) -> GridQuery:
    """The whole grid view of a query string; raises :class:`BadQuery` naming the bad parameter."""
    order_filter, raw = parse_filter(params, tz)
    sort = _choice(params, "sort", SORT_KEYS) or "purchase_date"
    direction = _choice(params, "dir", ("asc", "desc")) or ("asc" if sort == "amazon_order_id" else "desc")
    default_limit = settings.page_sizes[0] if settings.page_sizes else 50
    return GridQuery(
        filter=order_filter,
        sort=cast(SortKey, sort),
        descending=direction == "desc",
        offset=_int(params, "offset", 0, 0, _MAX_OFFSET),
        limit=_int(params, "limit", min(default_limit, settings.max_page_size), 1, settings.max_page_size),
        raw=raw,
    )
