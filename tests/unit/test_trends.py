"""The trends' bucket arithmetic (ordersync.state.trends): UTC hour and day boundaries, the ranges, the
expiry of a bucket, missing hours as zeros, the lag histogram and the median read from it, and the
commands one fold adds."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone

import pytest

from ordersync.state import keys, trends
from ordersync.state.trends import (
    HSET_IF_GREATER,
    KEEP,
    LAG_BOUNDS_S,
    LAG_BUCKETS,
    FailureSeries,
    LagSeries,
    QuotaSeries,
    Trends,
    TrendWrites,
    days_of,
    hour_part,
    hour_start,
    hourly_series,
    hours_of,
    lag_bucket,
    lag_median,
    merge_hashes,
    ttl_s,
)

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 20, 10, 30, 15, tzinfo=UTC)


def _histogram(*lags: int) -> list[int]:
    histogram = [0] * LAG_BUCKETS
    for lag in lags:
        histogram[lag_bucket(lag)] += 1
    return histogram


def test_hours_are_utc_hours_whatever_the_zone_given() -> None:
    assert hour_start(datetime(2026, 11, 20, 13, 59, 59, 999999, tzinfo=UTC)) == datetime(
        2026, 11, 20, 13, tzinfo=UTC
    )
    assert hour_start(datetime(2026, 11, 20, 14, 0, tzinfo=UTC)) == datetime(2026, 11, 20, 14, tzinfo=UTC)
    # 00:30 in UTC+05:30 is 19:00 UTC the day before; 01:15 at UTC-02:00 is 03:15 UTC.
    india = timezone(timedelta(hours=5, minutes=30))
    assert hour_part(datetime(2026, 11, 21, 0, 30, tzinfo=india)) == "2026-11-20T19"
    assert (
        trends.day_part(datetime(2026, 11, 21, 1, 15, tzinfo=timezone(timedelta(hours=-2)))) == "2026-11-21"
    )
    assert trends.day_part(datetime(2026, 11, 21, 3, 0, tzinfo=timezone(timedelta(hours=4)))) == "2026-11-20"


@pytest.mark.parametrize(("name", "count"), [("24h", 24), ("7d", 168), ("30d", 720)])
def test_a_range_is_its_hours_up_to_the_current_one(name: trends.RangeName, count: int) -> None:
    hours = hours_of(name, NOW)
    assert len(hours) == count
    assert hours[-1] == datetime(2026, 11, 20, 10, tzinfo=UTC)
    assert hours[0] == hours[-1] - timedelta(hours=count - 1)
    assert all(b - a == timedelta(hours=1) for a, b in itertools.pairwise(hours))
    # The oldest hour of the longest range is still kept (its key lives KEEP past its end).
    assert ttl_s(hours[0] + timedelta(hours=1), NOW) > 0


def test_the_days_of_a_range_are_the_utc_days_its_hours_touch() -> None:
    assert days_of(hours_of("24h", NOW)) == [
        datetime(2026, 11, 19, tzinfo=UTC),
        datetime(2026, 11, 20, tzinfo=UTC),
    ]
    # At 23:xx the last 24 hours are one day exactly.
    assert days_of(hours_of("24h", datetime(2026, 11, 20, 23, 5, tzinfo=UTC))) == [
        datetime(2026, 11, 20, tzinfo=UTC)
    ]
    assert len(days_of(hours_of("7d", NOW))) == 8
    assert len(days_of(hours_of("30d", NOW))) == 31
    assert days_of([]) == []


def test_a_bucket_expires_keep_after_its_end_and_is_not_written_past_it() -> None:
    end = datetime(2026, 11, 20, 11, tzinfo=UTC)
    assert ttl_s(end, NOW) == int((end + KEEP - NOW).total_seconds())
    assert ttl_s(end, end + KEEP) == 0
    assert ttl_s(end, end + KEEP + timedelta(days=1)) == 0
    # A day's bucket ends at the day's end: still kept when its hours are not.
    day_end = datetime(2026, 11, 21, tzinfo=UTC)
    writes = TrendWrites("os", "0", now=end + KEEP + timedelta(seconds=1))
    writes.count("acme-us", end - timedelta(minutes=30), "downloaded")
    writes.failure("acme-us", end - timedelta(minutes=30), "import", "unknown_stock_code", "x")
    assert [c[0] for c in writes.commands()] == ["HINCRBY", "EXPIRE", "SADD"]
    writes = TrendWrites("os", "0", now=day_end + KEEP)
    writes.count("acme-us", end - timedelta(minutes=30), "downloaded")
    writes.failure("acme-us", end - timedelta(minutes=30), "import", "unknown_stock_code", "x")
    writes.lag("acme-us", end - timedelta(minutes=30), 60)
    assert writes.commands() == []


def test_lag_buckets_hold_their_upper_bound() -> None:
    # The key catalogue names the histogram's fields.
    assert f"lag_b0 to lag_b{LAG_BUCKETS - 1})" in keys.TRENDS_HOURLY.holds
    assert lag_bucket(0) == 0
    assert lag_bucket(60) == 0
    assert lag_bucket(61) == 1
    assert lag_bucket(3600) == LAG_BOUNDS_S.index(3600)
    assert lag_bucket(LAG_BOUNDS_S[-1] + 1) == len(LAG_BOUNDS_S) == LAG_BUCKETS - 1


def test_the_median_is_read_from_the_histogram_within_its_bucket() -> None:
    assert lag_median([0] * LAG_BUCKETS) is None
    # One lag: the median is that lag (the bucket's interpolation is capped by the largest).
    assert lag_median(_histogram(1000), 1000) == 1000
    # 70, 100, 110, 800 s: the middle two lie in (60, 120]; interpolated at two thirds of that bucket.
    assert lag_median(_histogram(70, 100, 110, 800), 800) == pytest.approx(100.0)
    # 10 min, 15 min, 31 min: the true median (900 s) and the one read share a bucket.
    median = lag_median(_histogram(600, 900, 1860), 1860)
    assert median is not None
    assert lag_bucket(median) == lag_bucket(900)
    assert 600 < median <= 900
    # Beyond the last bound: the largest lag closes the open bucket.
    week = LAG_BOUNDS_S[-1]
    assert lag_median(_histogram(week + 100, week + 200, week + 300), week + 300) == pytest.approx(week + 150)
    assert lag_median(_histogram(50, 55), None) == pytest.approx(30.0)


def test_missing_hours_are_zeros_and_channels_add_up() -> None:
    raws = [
        {},
        merge_hashes(
            [
                {"downloaded": "2", "lag_n": "1", "lag_max": "1860", f"lag_b{lag_bucket(1860)}": "1"},
                {
                    "downloaded": "1",
                    "confirmed": "1",
                    "lag_n": "1",
                    "lag_max": "600",
                    f"lag_b{lag_bucket(600)}": "1",
                },
            ]
        ),
        {"imported": "3"},
    ]
    assert raws[1]["lag_max"] == "1860"
    assert raws[1]["lag_n"] == "2"
    orders, lag = hourly_series(raws)
    assert orders == {"downloaded": [0, 3, 0], "imported": [0, 0, 3], "confirmed": [0, 1, 0]}
    assert lag.count == [0, 2, 0]
    assert lag.max_s == [None, 1860.0, None]
    assert lag.median_s[0] is None
    assert lag.median_s[2] is None
    assert lag.median_s[1] == pytest.approx(600.0)


def test_one_fold_gives_one_command_per_field_and_an_expiry_per_key() -> None:
    at = datetime(2026, 11, 20, 9, 5, tzinfo=UTC)
    writes = TrendWrites("os", "3", now=NOW)
    writes.count("acme-us", at, "downloaded")
    writes.count("acme-us", at + timedelta(minutes=20), "imported")
    writes.count("acme-us", at - timedelta(hours=1), "downloaded", -1)  # moved to 09:00
    writes.lag("acme-us", at, 1860.4)
    writes.lag("acme-us", at, 600)
    writes.failure(None, at, "dead-letter", "import:\n  Permanent", "unknown")
    commands = writes.commands()
    hour = "os:{rm}:g3:trend:acme-us:2026-11-20T09"
    earlier = "os:{rm}:g3:trend:acme-us:2026-11-20T08"
    fails = "os:{rm}:g3:trend-fail:-:2026-11-20"
    hour_ttl = str(ttl_s(datetime(2026, 11, 20, 10, tzinfo=UTC), NOW))
    assert commands == [
        ("HINCRBY", fails, "dead-letter|import: Permanent", "1"),
        ("EXPIRE", fails, str(ttl_s(datetime(2026, 11, 21, tzinfo=UTC), NOW))),
        ("HINCRBY", earlier, "downloaded", "-1"),
        ("EXPIRE", earlier, str(ttl_s(datetime(2026, 11, 20, 9, tzinfo=UTC), NOW))),
        ("HINCRBY", hour, "downloaded", "1"),
        ("HINCRBY", hour, "imported", "1"),
        ("HINCRBY", hour, f"lag_b{lag_bucket(600)}", "1"),
        ("HINCRBY", hour, f"lag_b{lag_bucket(1860)}", "1"),
        ("HINCRBY", hour, "lag_n", "2"),
        ("HINCRBY", hour, "lag_sum", "2460"),
        (HSET_IF_GREATER, hour, "lag_max", "1860"),
        ("EXPIRE", hour, hour_ttl),
        ("SADD", "os:{rm}:g3:trend-channels", "-", "acme-us"),
    ]


def test_a_call_is_counted_in_its_hour_by_operation() -> None:
    at = datetime(2026, 11, 20, 9, 59, 59, tzinfo=UTC)
    key = "os:quota:{A1}:acme-us:2026-11-20T09"
    assert trends.quota_commands("os", "A1", "acme-us", "getOrders", at=at, throttled=True, waited=True) == [
        ("HINCRBY", key, "getOrders|calls", "1"),
        ("HINCRBY", key, "getOrders|throttled", "1"),
        ("HINCRBY", key, "getOrders|waited", "1"),
        ("EXPIRE", key, str(ttl_s(datetime(2026, 11, 20, 10, tzinfo=UTC), at))),
    ]
    ok = trends.quota_commands("os", "A1", "acme-us", "getOrders", at=at, throttled=False, waited=False)
    assert [c[0] for c in ok] == ["HINCRBY", "EXPIRE"]


def test_failures_and_quota_are_read_by_kind_reason_and_operation() -> None:
    days = [{"import|unknown_stock_code": "2", "dead-letter|import: Permanent": "1"}, {}]
    days.append({"import|unknown_stock_code": "1", "write-back|InvalidInput": "4", "junk": "9"})
    series = trends.failure_series(days)
    assert [(s.kind, s.reason, s.counts) for s in series] == [
        ("import", "unknown_stock_code", [2, 0, 1]),
        ("write-back", "InvalidInput", [0, 0, 4]),
        ("dead-letter", "import: Permanent", [1, 0, 0]),
    ]
    quota = trends.quota_series(
        [{"getOrders|calls": "3", "getOrders|throttled": "1"}, {"confirmShipment|calls": "5", "x": "1"}]
    )
    assert [(q.operation, q.counts["calls"], q.total("throttled")) for q in quota] == [
        ("confirmShipment", [0, 5], 0),
        ("getOrders", [3, 0], 1),
    ]


def _trends(hours: list[datetime]) -> Trends:
    n = len(hours)
    lag_hour = hours.index(datetime(2026, 11, 20, 1, tzinfo=UTC))
    histograms = [[0] * LAG_BUCKETS for _ in hours]
    histograms[lag_hour] = _histogram(600, 900)
    histograms[lag_hour + 1] = _histogram(1860)
    return Trends(
        range="7d",
        channel=None,
        now=NOW,
        hours=hours,
        days=days_of(hours),
        orders={
            "downloaded": [1] * n,
            "imported": [0] * n,
            "confirmed": [1 if i in (lag_hour, lag_hour + 1) else 0 for i in range(n)],
        },
        lag=LagSeries(
            count=[sum(h) for h in histograms],
            median_s=[lag_median(h) for h in histograms],
            max_s=[900.0 if i == lag_hour else 1860.0 if i == lag_hour + 1 else None for i in range(n)],
            histograms=histograms,
        ),
        failures=[FailureSeries("import", "unknown_stock_code", [1] * len(days_of(hours)))],
        quota=[QuotaSeries("getOrders", {"calls": [2] * n, "throttled": [0] * n, "waited": [1] * n})],
    )


def test_the_tables_add_up_days_and_merge_the_lag() -> None:
    hours = hours_of("7d", NOW)
    found = _trends(hours)
    daily = found.table(by_day=True)
    assert [row["start"] for row in daily] == found.days
    # The first day of the range starts at 11:00 UTC (13 hours), the last ends with 10:00 (11 hours).
    assert [row["downloaded"] for row in daily] == [13, 24, 24, 24, 24, 24, 24, 11]
    assert sum(row["calls"] for row in daily) == 2 * len(hours)
    day = next(row for row in daily if row["start"] == datetime(2026, 11, 20, tzinfo=UTC))
    assert day["lag_count"] == 3
    assert day["lag_max_s"] == 1860.0
    assert lag_bucket(day["lag_median_s"]) == lag_bucket(900)
    hourly = found.table(by_day=False)
    assert len(hourly) == len(hours)
    assert all(row["lag_median_s"] is None for row in hourly if not row["lag_count"])
    summary = found.lag_summary()
    assert summary["count"] == 3
    assert summary["max_s"] == 1860.0
    answer = found.as_json()
    assert answer["hours"][0] == int(hours[0].timestamp())
    assert answer["days"][0] == "2026-11-13"
    assert answer["failures"]["totals"]["import"] == [1] * 8
    assert answer["failures"]["totals"]["dead-letter"] == [0] * 8
    assert answer["quota"][0]["total"] == {"calls": 2 * len(hours), "throttled": 0, "waited": len(hours)}


def test_only_the_offered_ranges_are_taken() -> None:
    assert trends.parse_range(None) == "24h"
    assert trends.parse_range("") == "24h"
    assert trends.parse_range("30d") == "30d"
    assert trends.parse_range("365d") is None
