"""Trends: the pipeline's work per hour, kept in Redis for the dashboard's Trends page (``/trends``).

What is counted (every bucket is a UTC hour or day on the clock the read model dates things by: an
event's ``occurred_at``, Amazon's time; the quota's on the clock of the call):

- **Orders** per hour and channel (:data:`ORDER_METRICS`): *downloaded* (the order's first download),
  *imported* (its ``OrderImported``), *confirmed* (its first package confirmed on Amazon, by any method).
  An order counts once per metric, in the hour of its earliest fact of that kind.
- **Write-back lag** per hour of Amazon's confirmation: for each package ordersync confirmed itself
  (confirmShipment or a feed), the time from its invoice issued (without one: its first shipment request)
  to Amazon's confirmation; kept as a count, a sum, the maximum and a histogram (:data:`LAG_BOUNDS_S`)
  that the median is read from (:func:`lag_median`: exact to within its histogram bucket).
- **Failures** per day, channel, kind and reason (:data:`FAILURE_KINDS`): import failures (the reason
  code), write-back failures (Amazon's error code, for packages, cancellations and Easy Ship), dead letters
  (the stage that dead-lettered the record, and the error type).
- **Amazon quota** per hour, account and operation: calls, those Amazon answered 429 (*throttled*: there
  should be none), and those that waited for a rate-limiter token (*waited*).

Orders, lag and failures are written by the status projection's fold (:class:`ordersync.state.readmodel.
ReadModel`) with :class:`TrendWrites`, inside the write script that adds the order's new facts: no round
trip of their own, and a fact already folded (a redelivery, a replay) adds nothing, since only the facts
new to the order are counted. They live in the read model's generation, so ``ordersync status-model
rebuild`` (a new generation folded from the topics) rebuilds them, for the hours the topics and
:data:`KEEP` still cover. The quota counters are written by :meth:`ordersync.state.health.HealthBoard.
record_call` in the pipeline that records the call (:func:`quota_key`); Amazon's calls are not on Kafka,
so nothing rebuilds them.

Every key lives :data:`KEEP` past the end of its hour or day (an expiry set as it is written, from the
writer's clock), so the longest range, 30 days, is always whole. :class:`TrendStore` reads a range
(:data:`RANGES`) with missing hours as zeros.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, cast, get_args

import redis.asyncio as aioredis

from ordersync.settings import DEFAULT_PREFIX
from ordersync.state import keys

#: How long a bucket is kept past its end: the longest range (30 days) plus a day.
KEEP = timedelta(days=31)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)

RangeName = Literal["24h", "7d", "30d"]
#: The ranges the page offers: hours shown, ending with the current hour.
RANGES: dict[RangeName, int] = {"24h": 24, "7d": 7 * 24, "30d": 30 * 24}
RANGE_TITLES: dict[RangeName, str] = {"24h": "24 hours", "7d": "7 days", "30d": "30 days"}

OrderMetric = Literal["downloaded", "imported", "confirmed"]
ORDER_METRICS: tuple[OrderMetric, ...] = get_args(OrderMetric)
FailureKind = Literal["import", "write-back", "dead-letter"]
FAILURE_KINDS: tuple[FailureKind, ...] = get_args(FailureKind)
QuotaCounter = Literal["calls", "throttled", "waited"]
QUOTA_COUNTERS: tuple[QuotaCounter, ...] = get_args(QuotaCounter)

#: The lag histogram's upper bounds (seconds): bucket ``i`` holds lags in (bound ``i-1``, bound ``i``],
#: the last one (``len(LAG_BOUNDS_S)``) every lag above the last bound.
LAG_BOUNDS_S: tuple[int, ...] = (
    60,
    120,
    300,
    600,
    900,
    1200,
    1800,
    2700,
    3600,
    5400,
    7200,
    10800,
    14400,
    21600,
    28800,
    43200,
    64800,
    86400,
    129600,
    172800,
    259200,
    345600,
    604800,
)
LAG_BUCKETS = len(LAG_BOUNDS_S) + 1
#: The channel of a count whose order names none (a dead letter that does not decode).
NO_CHANNEL = "-"
#: A reason is cut to this many characters (a hash field per reason).
MAX_REASON_CHARS = 100
#: The script command of the read model's write script that keeps the larger of two numbers in a hash
#: field: (key, field, value).
HSET_IF_GREATER = "HSET-IF-GREATER"


# --- buckets -----------------------------------------------------------------------------------------


def hour_start(at: datetime) -> datetime:
    """The start of ``at``'s UTC hour."""
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def day_start(at: datetime) -> datetime:
    """The start of ``at``'s UTC day."""
    return hour_start(at).replace(hour=0)


def hour_part(at: datetime) -> str:
    """The key part of ``at``'s UTC hour: ``2026-11-20T13``."""
    return hour_start(at).strftime("%Y-%m-%dT%H")


def day_part(at: datetime) -> str:
    """The key part of ``at``'s UTC day: ``2026-11-20``."""
    return day_start(at).strftime("%Y-%m-%d")


def hours_of(range_name: RangeName, now: datetime) -> list[datetime]:
    """The range's hours, oldest first, ending with ``now``'s hour (whole even while it is still going)."""
    last = hour_start(now)
    count = RANGES[range_name]
    return [last - HOUR * (count - 1 - i) for i in range(count)]


def days_of(hours: Sequence[datetime]) -> list[datetime]:
    """The UTC days the hours touch, oldest first."""
    if not hours:
        return []
    first, last = day_start(hours[0]), day_start(hours[-1])
    return [first + DAY * i for i in range((last - first) // DAY + 1)]


def ttl_s(bucket_end: datetime, now: datetime) -> int:
    """Seconds a bucket ending at ``bucket_end`` is still kept at ``now`` (:data:`KEEP` past its end);
    0 when it is past keeping (not written at all)."""
    return max(0, int((bucket_end + KEEP - now).total_seconds()))


def lag_bucket(seconds: float) -> int:
    """The histogram bucket of a lag (:data:`LAG_BOUNDS_S`)."""
    return bisect.bisect_left(LAG_BOUNDS_S, seconds)


def lag_median(histogram: Sequence[int], max_s: float | None = None) -> float | None:
    """The median lag a histogram holds (None when empty): the middle lag's bucket, linearly
    interpolated inside it, never above ``max_s`` (the largest lag recorded, which also closes the last
    bucket)."""
    total = sum(histogram)
    if total <= 0:
        return None
    middle = total / 2
    seen = 0
    for index, count in enumerate(histogram):
        if count <= 0:
            continue
        if seen + count >= middle:
            low = float(LAG_BOUNDS_S[index - 1]) if index > 0 else 0.0
            if index < len(LAG_BOUNDS_S):
                high = float(LAG_BOUNDS_S[index])
            else:
                high = max(low, max_s) if max_s is not None else low
            value = low + (high - low) * (middle - seen) / count
            return min(value, max_s) if max_s is not None else value
        seen += count
    return max_s  # (unreachable: the counts add up to total)


def reason_text(text: str | None, fallback: str) -> str:
    """A failure's reason as a hash field holds it: one line, at most :data:`MAX_REASON_CHARS`."""
    reason = " ".join((text or "").split()) or fallback
    return reason[:MAX_REASON_CHARS]


# --- keys --------------------------------------------------------------------------------------------


def generation_part(generation: str) -> str:
    """The ``<generation>`` part of the read model's keys (its ``g<n>`` root)."""
    return f"g{generation}"


def hourly_key(prefix: str, generation: str, channel: str, hour: datetime) -> str:
    return keys.TRENDS_HOURLY.key(prefix, generation_part(generation), channel, hour_part(hour))


def failures_key(prefix: str, generation: str, channel: str, day: datetime) -> str:
    return keys.TRENDS_FAILURES.key(prefix, generation_part(generation), channel, day_part(day))


def channels_key(prefix: str, generation: str) -> str:
    return keys.TRENDS_CHANNELS.key(prefix, generation_part(generation))


def quota_key(prefix: str, seller_id: str, channel: str, hour: datetime) -> str:
    return keys.QUOTA_HOURLY.key(prefix, seller_id, channel, hour_part(hour))


def generation_key(prefix: str) -> str:
    """The read model's current generation (:class:`ordersync.state.readmodel.ReadModel`)."""
    return f"{prefix}:{keys.READ_MODEL.name}:generation"


def quota_commands(
    prefix: str,
    seller_id: str,
    channel: str,
    operation: str,
    *,
    at: datetime,
    throttled: bool,
    waited: bool,
) -> list[tuple[str, ...]]:
    """The commands counting one SP-API call in its hour (for the health board's pipeline)."""
    key = quota_key(prefix, seller_id, channel, at)
    commands: list[tuple[str, ...]] = [("HINCRBY", key, f"{operation}|calls", "1")]
    if throttled:
        commands.append(("HINCRBY", key, f"{operation}|throttled", "1"))
    if waited:
        commands.append(("HINCRBY", key, f"{operation}|waited", "1"))
    commands.append(("EXPIRE", key, str(max(1, ttl_s(hour_start(at) + HOUR, at)))))
    return commands


# --- writing (the fold) ------------------------------------------------------------------------------


class TrendWrites:
    """The counts one fold adds, gathered per key, then given as Redis commands for the read model's
    write script (:meth:`commands`): ``HINCRBY`` per field, one ``EXPIRE`` per key, the lag's maximum
    with :data:`HSET_IF_GREATER`, the channels in :func:`channels_key`. A bucket past :data:`KEEP` at
    ``now`` (a rebuild folding old history) is not written."""

    def __init__(self, prefix: str, generation: str, now: datetime) -> None:
        self.prefix = prefix
        self.generation = generation
        self.now = now
        self._counts: dict[str, dict[str, int]] = {}
        self._maxima: dict[str, dict[str, int]] = {}
        self._ttl: dict[str, int] = {}
        self._channels: set[str] = set()

    def _bucket(self, key: str, end: datetime, channel: str) -> bool:
        ttl = ttl_s(end, self.now)
        if ttl <= 0:
            return False
        self._ttl[key] = ttl
        self._channels.add(channel)
        return True

    def _add(self, key: str, field_name: str, n: int = 1) -> None:
        fields = self._counts.setdefault(key, {})
        fields[field_name] = fields.get(field_name, 0) + n

    def count(self, channel: str | None, at: datetime, metric: OrderMetric, n: int = 1) -> None:
        """``n`` orders (-1: an order's count moved to an earlier hour) in ``at``'s hour."""
        channel = channel or NO_CHANNEL
        key = hourly_key(self.prefix, self.generation, channel, at)
        if self._bucket(key, hour_start(at) + HOUR, channel):
            self._add(key, metric, n)

    def lag(self, channel: str | None, confirmed_at: datetime, seconds: float) -> None:
        channel = channel or NO_CHANNEL
        key = hourly_key(self.prefix, self.generation, channel, confirmed_at)
        if not self._bucket(key, hour_start(confirmed_at) + HOUR, channel):
            return
        whole = max(0, round(seconds))
        self._add(key, "lag_n")
        self._add(key, "lag_sum", whole)
        self._add(key, f"lag_b{lag_bucket(whole)}")
        maxima = self._maxima.setdefault(key, {})
        maxima["lag_max"] = max(maxima.get("lag_max", 0), whole)

    def failure(
        self, channel: str | None, at: datetime, kind: FailureKind, reason: str | None, fallback: str
    ) -> None:
        channel = channel or NO_CHANNEL
        key = failures_key(self.prefix, self.generation, channel, at)
        if self._bucket(key, day_start(at) + DAY, channel):
            self._add(key, f"{kind}|{reason_text(reason, fallback)}")

    def commands(self) -> list[tuple[str, ...]]:
        commands: list[tuple[str, ...]] = []
        for key in sorted(self._ttl):
            for name, n in sorted(self._counts.get(key, {}).items()):
                if n:
                    commands.append(("HINCRBY", key, name, str(n)))
            for name, value in sorted(self._maxima.get(key, {}).items()):
                commands.append((HSET_IF_GREATER, key, name, str(value)))
            commands.append(("EXPIRE", key, str(self._ttl[key])))
        if self._channels:
            commands.append(("SADD", channels_key(self.prefix, self.generation), *sorted(self._channels)))
        return commands


# --- reading -----------------------------------------------------------------------------------------


@dataclass
class LagSeries:
    """Per hour: packages with a lag, the median (from the histogram) and the largest lag, in seconds."""

    count: list[int]
    median_s: list[float | None]
    max_s: list[float | None]
    #: Per hour, the histogram (for sums over hours: days, the whole range).
    histograms: list[list[int]]


@dataclass
class FailureSeries:
    kind: FailureKind
    reason: str
    #: Per day of :attr:`Trends.days`.
    counts: list[int]

    @property
    def total(self) -> int:
        return sum(self.counts)


@dataclass
class QuotaSeries:
    operation: str
    #: Per hour of :attr:`Trends.hours`, by counter.
    counts: dict[QuotaCounter, list[int]]

    def total(self, counter: QuotaCounter) -> int:
        return sum(self.counts[counter])


@dataclass
class Trends:
    """One range of the trends, of one channel or of all."""

    range: RangeName
    channel: str | None
    now: datetime
    hours: list[datetime]
    days: list[datetime]
    orders: dict[OrderMetric, list[int]]
    lag: LagSeries
    failures: list[FailureSeries]
    quota: list[QuotaSeries]
    #: Channels with trends or quota counts (not :data:`NO_CHANNEL`), for the channel filter.
    channels: list[str] = field(default_factory=list)

    def failure_totals(self) -> dict[FailureKind, list[int]]:
        totals: dict[FailureKind, list[int]] = {kind: [0] * len(self.days) for kind in FAILURE_KINDS}
        for series in self.failures:
            totals[series.kind] = [a + b for a, b in zip(totals[series.kind], series.counts, strict=True)]
        return totals

    def lag_summary(self) -> dict[str, float | int | None]:
        """The whole range's packages, median and largest lag."""
        histogram = sum_histograms(self.lag.histograms)
        largest = max((m for m in self.lag.max_s if m is not None), default=None)
        return {"count": sum(self.lag.count), "median_s": lag_median(histogram, largest), "max_s": largest}

    def as_json(self) -> dict[str, Any]:
        """``GET /api/trends``'s answer (times as epoch seconds and ISO text)."""
        return {
            "range": self.range,
            "channel": self.channel,
            "channels": self.channels,
            "now": self.now.isoformat(),
            "hours": [int(h.timestamp()) for h in self.hours],
            "hour_starts": [h.isoformat() for h in self.hours],
            "orders": {metric: self.orders[metric] for metric in ORDER_METRICS},
            "lag": {
                "count": self.lag.count,
                "median_s": self.lag.median_s,
                "max_s": self.lag.max_s,
                "summary": self.lag_summary(),
            },
            "days": [d.date().isoformat() for d in self.days],
            "day_starts": [int(d.timestamp()) for d in self.days],
            "failures": {
                "totals": self.failure_totals(),
                "reasons": [
                    {"kind": s.kind, "reason": s.reason, "counts": s.counts, "total": s.total}
                    for s in self.failures
                ],
            },
            "quota": [
                {
                    "operation": s.operation,
                    **{counter: s.counts[counter] for counter in QUOTA_COUNTERS},
                    "total": {counter: s.total(counter) for counter in QUOTA_COUNTERS},
                }
                for s in self.quota
            ],
        }

    def table(self, *, by_day: bool) -> list[dict[str, Any]]:
        """The rows of the page's tables: per hour, or per UTC day (the longer ranges) with the lag's
        median and maximum over the day and the quota's calls summed."""
        groups: list[tuple[datetime, list[int]]] = []
        if by_day:
            for day in self.days:
                indexes = [i for i, h in enumerate(self.hours) if day_start(h) == day]
                groups.append((day, indexes))
        else:
            groups = [(h, [i]) for i, h in enumerate(self.hours)]
        rows: list[dict[str, Any]] = []
        for start, indexes in groups:
            largest = max((m for i in indexes if (m := self.lag.max_s[i]) is not None), default=None)
            histogram = sum_histograms(self.lag.histograms[i] for i in indexes)
            row: dict[str, Any] = {
                "start": start,
                **{metric: sum(self.orders[metric][i] for i in indexes) for metric in ORDER_METRICS},
                "lag_count": sum(self.lag.count[i] for i in indexes),
                "lag_median_s": lag_median(histogram, largest),
                "lag_max_s": largest,
            }
            for counter in QUOTA_COUNTERS:
                row[counter] = sum(s.counts[counter][i] for s in self.quota for i in indexes)
            rows.append(row)
        return rows


def sum_histograms(histograms: Iterable[Sequence[int]]) -> list[int]:
    total = [0] * LAG_BUCKETS
    for histogram in histograms:
        for i, n in enumerate(histogram):
            total[i] += n
    return total


def _int(raw: Mapping[str, str], name: str) -> int:
    try:
        return int(raw.get(name) or 0)
    except ValueError:
        return 0


def hourly_series(raws: Sequence[Mapping[str, str]]) -> tuple[dict[OrderMetric, list[int]], LagSeries]:
    """The order counts and the lag of each hour, from its hash (summed over channels); an hour without
    one (nothing happened, or past keeping) is zeros."""
    orders: dict[OrderMetric, list[int]] = {metric: [] for metric in ORDER_METRICS}
    lag = LagSeries(count=[], median_s=[], max_s=[], histograms=[])
    for raw in raws:
        for metric in ORDER_METRICS:
            orders[metric].append(_int(raw, metric))
        histogram = [_int(raw, f"lag_b{i}") for i in range(LAG_BUCKETS)]
        count = _int(raw, "lag_n")
        largest = float(_int(raw, "lag_max")) if count else None
        lag.count.append(count)
        lag.histograms.append(histogram)
        lag.max_s.append(largest)
        lag.median_s.append(lag_median(histogram, largest))
    return orders, lag


def merge_hashes(hashes: Iterable[Mapping[str, str]]) -> dict[str, str]:
    """Hashes of several channels as one: counts added, ``lag_max`` the largest."""
    merged: dict[str, int] = {}
    for raw in hashes:
        for name in raw:
            n = _int(raw, name)
            merged[name] = max(merged.get(name, 0), n) if name == "lag_max" else merged.get(name, 0) + n
    return {name: str(n) for name, n in merged.items()}


def failure_series(days_raw: Sequence[Mapping[str, str]]) -> list[FailureSeries]:
    """The failures of each day (its hash, summed over channels) by kind and reason: the kinds in
    :data:`FAILURE_KINDS` order, the most frequent reason first."""
    found: dict[tuple[FailureKind, str], list[int]] = {}
    for index, raw in enumerate(days_raw):
        for name in raw:
            kind, _, reason = name.partition("|")
            if kind not in FAILURE_KINDS:
                continue
            counts = found.setdefault((kind, reason), [0] * len(days_raw))
            counts[index] += _int(raw, name)
    series = [FailureSeries(kind, reason, counts) for (kind, reason), counts in found.items()]
    series.sort(key=lambda s: (FAILURE_KINDS.index(s.kind), -s.total, s.reason))
    return series


def quota_series(hours_raw: Sequence[Mapping[str, str]]) -> list[QuotaSeries]:
    """The calls of each hour (its hash, summed over accounts) per operation, the busiest first."""
    found: dict[str, dict[QuotaCounter, list[int]]] = {}
    for index, raw in enumerate(hours_raw):
        for name in raw:
            operation, _, counter = name.rpartition("|")
            if counter not in QUOTA_COUNTERS or not operation:
                continue
            counts = found.setdefault(operation, {c: [0] * len(hours_raw) for c in QUOTA_COUNTERS})
            counts[counter][index] += _int(raw, name)
    series = [QuotaSeries(operation, counts) for operation, counts in found.items()]
    series.sort(key=lambda s: (-s.total("calls"), s.operation))
    return series


class TrendStore:
    """Reads the trends of a range (:data:`RANGES`) from Redis: three round trips whatever the range."""

    def __init__(self, redis: aioredis.Redis, prefix: str = DEFAULT_PREFIX) -> None:
        self.redis = redis
        self.prefix = prefix

    async def read(self, range_name: RangeName, now: datetime, channel: str | None = None) -> Trends:
        hours = hours_of(range_name, now)
        days = days_of(hours)
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(generation_key(self.prefix))
        pipe.smembers(keys.HEALTH_ACCOUNTS.key(self.prefix))
        raw_generation, raw_accounts = await pipe.execute()
        generation = str(raw_generation or 0)
        accounts = parse_accounts(cast(set[str], raw_accounts))
        trend_channels = sorted(
            cast(set[str], await self.redis.smembers(channels_key(self.prefix, generation)))
        )
        read_channels = [c for c in trend_channels if channel is None or c == channel]
        read_accounts = [(c, s) for c, s in accounts if channel is None or c == channel]
        pipe = self.redis.pipeline(transaction=False)
        for hour in hours:
            for name in read_channels:
                pipe.hgetall(hourly_key(self.prefix, generation, name, hour))
        for day in days:
            for name in read_channels:
                pipe.hgetall(failures_key(self.prefix, generation, name, day))
        for hour in hours:
            for name, seller in read_accounts:
                pipe.hgetall(quota_key(self.prefix, seller, name, hour))
        replies = cast(list[dict[str, str]], await pipe.execute()) if len(pipe) else []
        width, accounts_width = len(read_channels), len(read_accounts)
        hourly = [merge_hashes(replies[i * width : (i + 1) * width]) for i in range(len(hours))]
        offset = len(hours) * width
        daily = [
            merge_hashes(replies[offset + i * width : offset + (i + 1) * width]) for i in range(len(days))
        ]
        offset += len(days) * width
        quota = [
            merge_hashes(replies[offset + i * accounts_width : offset + (i + 1) * accounts_width])
            for i in range(len(hours))
        ]
        orders, lag = hourly_series(hourly)
        return Trends(
            range=range_name,
            channel=channel,
            now=now,
            hours=hours,
            days=days,
            orders=orders,
            lag=lag,
            failures=failure_series(daily),
            quota=quota_series(quota),
            channels=sorted({*trend_channels, *(c for c, _ in accounts)} - {NO_CHANNEL}),
        )


def parse_accounts(members: Iterable[str]) -> list[tuple[str, str]]:
    """The (channel, seller) pairs of the health board's account set, sorted; unreadable members skipped."""
    accounts: list[tuple[str, str]] = []
    for member in members:
        try:
            channel, seller = json.loads(member)
        except (ValueError, TypeError):
            continue
        accounts.append((str(channel), str(seller)))
    return sorted(accounts)


def parse_range(value: str | None) -> RangeName | None:
    """A range's name as the page and the API take it (``24h``, ``7d``, ``30d``); None when not one."""
    name = value or "24h"
    return name if name in RANGES else None


__all__ = [
    "DAY",
    "FAILURE_KINDS",
    "HOUR",
    "KEEP",
    "LAG_BOUNDS_S",
    "ORDER_METRICS",
    "QUOTA_COUNTERS",
    "RANGES",
    "FailureKind",
    "OrderMetric",
    "RangeName",
    "TrendStore",
    "TrendWrites",
    "Trends",
]
