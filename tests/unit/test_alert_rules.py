"""The alert rules, pure: which alerts fire from what the stages recorded, and when a kept alert is due."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr

from ordersync.channels import Channel, LwaCredentials, SecretRef
from ordersync.ops.alerts import Alert, AlertRecord, firing
from ordersync.settings import AlertSettings
from ordersync.state.health import ApiHealth, Notification
from ordersync.state.readmodel import ShipmentTimeliness

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 25, 10, 30, tzinfo=UTC)
SETTINGS = AlertSettings()


def channel(name: str = "shop-in", *, active: bool = True, expires: date | None = None) -> Channel:
    secret = SecretRef(value=SecretStr("x"))
    return Channel(
        name=name,
        seller_id="A3SELLER",
        region="eu",
        marketplaces=["A21TJRUUN4KGV"],
        active=active,
        credentials=LwaCredentials(
            client_id=secret, client_secret=secret, refresh_token=secret, client_secret_expires_at=expires
        ),
    )


def health(colour: str, reason: str, *, api: str = "orders", last: datetime | None = NOW) -> ApiHealth:
    return ApiHealth(
        channel="shop-in",
        seller_id="A3SELLER",
        api=api,  # type: ignore[arg-type]
        colour=colour,  # type: ignore[arg-type]
        reason=reason,
        calls=10,
        errors=0,
        throttled=0,
        last_call_at=last,
    )


def rules(**sources: Any) -> dict[str, Alert]:
    channels = sources.pop("channels", [channel()])
    return {a.fingerprint: a for a in firing(now=NOW, settings=SETTINGS, channels=channels, **sources)}


def test_a_red_api_fires_an_error_with_the_status_keys_reason() -> None:
    reason = "the last 8 calls failed since 10:29 (8 of 339 in the last 15 minutes): 503 ServiceUnavailable"
    fired = rules(health=[health("Red", reason), health("Green", "fine", api="feeds")])
    (alert,) = fired.values()
    assert (alert.fingerprint, alert.severity) == ("api-status:shop-in:orders", "error")
    assert alert.summary == f"shop-in (A3SELLER) Orders API is Red: {reason}"


def test_sustained_throttling_warns_and_other_yellow_does_not() -> None:
    throttled = health("Yellow", "throttled: Amazon answered 429 to 12 of 40 calls in the last 15 minutes")
    assert rules(health=[throttled])["api-status:shop-in:orders"].severity == "warning"
    assert rules(health=[health("Yellow", "3 of 40 calls failed in the last 15 minutes: 500")]) == {}


def test_no_orders_call_of_an_active_channel_warns_that_the_download_is_not_running() -> None:
    silent = health("None", "no call since 10:02")
    assert "is the order download running?" in rules(health=[silent])["api-status:shop-in:orders"].summary
    # A channel switched off, an API never called, a quiet feeds API: nothing.
    assert rules(health=[silent], channels=[channel(active=False)]) == {}
    assert rules(health=[health("None", "no call recorded", last=None)]) == {}
    assert rules(health=[health("None", "no call since 10:02", api="feeds")]) == {}


def test_a_fatal_feed_fires_for_an_hour() -> None:
    def notice(minutes_ago: int) -> Notification:
        return Notification(
            id="n",
            at=NOW - timedelta(minutes=minutes_ago),
            severity="error",
            kind="feed-fatal",
            channel="shop-in",
            message="shop-in: Amazon could not process feed 7",
        )

    assert rules(notifications=[notice(30)])["feed-fatal:shop-in"].summary.endswith("feed 7")
    assert rules(notifications=[notice(61)]) == {}


def test_orders_overdue_are_an_error_and_at_risk_a_warning() -> None:
    def late(overdue: int, at_risk: int) -> ShipmentTimeliness:
        return ShipmentTimeliness(
            channel="shop-in",
            seller_id="A3SELLER",
            confirmed=10,
            late=0,
            at_risk=at_risk,
            overdue=overdue,
            due_order_ids=("171-1", "171-2"),
        )

    overdue = rules(timeliness=[late(1, 1)])["late-shipment:shop-in"]
    assert overdue.severity == "error"
    assert "1 overdue and 1 at risk (171-1, 171-2)" in overdue.summary
    assert rules(timeliness=[late(0, 2)])["late-shipment:shop-in"].severity == "warning"
    assert rules(timeliness=[late(0, 0)]) == {}


def test_dead_letters_within_the_window_fire_and_older_ones_do_not() -> None:
    recent = {"orders.imported.dlq": (3, NOW - timedelta(minutes=5))}
    assert "3 record(s) dead-lettered on orders.imported.dlq" in (
        rules(dead_letters_grew=recent)["dead-letters:orders.imported.dlq"].summary
    )
    assert rules(dead_letters_grew={"x.dlq": (3, NOW - timedelta(hours=2))}) == {}


def test_a_stage_silent_past_the_threshold_fires() -> None:
    beats = {"import|host-1": NOW - timedelta(seconds=30), "inventory|host-2": NOW - timedelta(seconds=300)}
    fired = rules(heartbeats=beats)
    assert list(fired) == ["stage-silent:inventory|host-2"]
    assert fired["stage-silent:inventory|host-2"].summary.startswith(
        "stage inventory (host-2) has not reported"
    )


def test_a_client_secret_near_its_expiry_warns_then_errs() -> None:
    assert rules(channels=[channel(expires=NOW.date() + timedelta(days=40))]) == {}
    soon = rules(channels=[channel(expires=NOW.date() + timedelta(days=20))])["credentials:shop-in"]
    assert (soon.severity, "expires on" in soon.summary) == ("warning", True)
    gone = rules(channels=[channel(expires=NOW.date() - timedelta(days=1))])["credentials:shop-in"]
    assert (gone.severity, "expired on" in gone.summary) == ("error", True)


def test_a_kept_alert_is_due_when_new_repeated_or_out_of_its_snooze() -> None:
    alert = Alert(fingerprint="f", rule="r", severity="error", channel=None, summary="s")
    new = AlertRecord(alert=alert, first_at=NOW, last_seen_at=NOW)
    assert new.due(NOW, 3600)
    sent = new.model_copy(update={"delivered_at": NOW})
    assert not sent.due(NOW + timedelta(minutes=59), 3600)
    assert sent.due(NOW + timedelta(minutes=60), 3600)
    assert not sent.due(NOW + timedelta(days=1), 0)  # never repeated
    acknowledged = sent.model_copy(update={"state": "acknowledged"})
    assert not acknowledged.due(NOW + timedelta(days=1), 3600)
    snoozed = sent.model_copy(update={"state": "snoozed", "snoozed_until": NOW + timedelta(hours=2)})
    assert not snoozed.due(NOW + timedelta(hours=1), 3600)
    assert snoozed.due(NOW + timedelta(hours=2), 3600)
