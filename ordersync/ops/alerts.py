"""Alerts that reach people: rules over what the stages record, delivered, acknowledged, snoozed.

Every ``alerts.interval_s`` the status-projection stage (:func:`evaluate_once`, one worker at a time)
reads what the stages keep in Redis and asks the rules (:func:`firing`, pure) which alerts fire now:

- **api-status**: an account's API Red (with the status key's reason: refused credentials, an outage,
  failures), Yellow from sustained throttling, or no Orders API call for an active channel (the download
  is not running: colour None while there is work);
- **feed-fatal**: a feed Amazon could not process, within the last hour;
- **dead-letters**: records dead-lettered on a topic within ``alerts.dead_letters_window_s``;
- **late-shipment**: orders overdue (error) or at risk (warning) of shipping after their latest ship date;
- **stage-silent**: a stage worker whose heartbeat is older than ``alerts.stage_silent_s``;
- **credentials**: a channel's LWA client secret expiring within ``alerts.credentials_warn_days``.

:class:`AlertBook` keeps each alert by fingerprint (rule and subject) in Redis: a new one is delivered
at once, a firing one nobody acknowledged again every ``alerts.repeat_s``, a resolved one once more as
resolved, then it moves to the history. Acknowledged: not delivered again while it fires; snoozed: not
until the snooze ends. Deliveries go to the dashboard's notifications, every webhook
(``alerts.webhook_urls``, Slack-compatible JSON) and by e-mail (``alerts.smtp_host``); a delivery that
fails is logged and tried again at the next evaluation, never stopping the others.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any, Literal, cast

import aiosmtplib
import httpx
import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict

from ordersync.amazon.operations import API_TITLES
from ordersync.channels import Channel
from ordersync.pipeline.cancellation import raise_if_cancel_requested
from ordersync.pipeline.lock import Lock
from ordersync.settings import AlertSettings, Settings
from ordersync.state import keys
from ordersync.state.health import ApiHealth, HealthBoard, Notification, Severity
from ordersync.state.heartbeats import heartbeats
from ordersync.state.readmodel import DlqSize, ReadModel, ShipmentTimeliness

log = logging.getLogger(__name__)

AlertState = Literal["firing", "acknowledged", "snoozed"]
#: Resolved alerts kept in the history, newest first.
HISTORY_KEPT = 500
#: A feed-fatal notification keeps its alert firing this long.
FATAL_FEED_WINDOW = timedelta(hours=1)
#: A stage worker silent this long is forgotten (its alert resolves): scaled down or renamed.
FORGOTTEN_AFTER = timedelta(hours=24)


class Alert(BaseModel):
    """One alert as a rule raises it."""

    model_config = ConfigDict(frozen=True)

    fingerprint: str
    rule: str
    severity: Severity
    channel: str | None
    summary: str


class AlertRecord(BaseModel):
    """An alert as the book keeps it: the rule's latest word and what people did with it."""

    alert: Alert
    state: AlertState = "firing"
    first_at: datetime
    last_seen_at: datetime
    delivered_at: datetime | None = None
    acted_by: str | None = None
    acted_at: datetime | None = None
    snoozed_until: datetime | None = None
    resolved_at: datetime | None = None

    def due(self, now: datetime, repeat_s: float) -> bool:
        """Should it be delivered now (again)?"""
        if self.state == "acknowledged":
            return False
        if self.state == "snoozed" and self.snoozed_until is not None and now < self.snoozed_until:
            return False
        if self.delivered_at is None:
            return True
        if self.state == "snoozed":  # the snooze ended
            return True
        return repeat_s > 0 and (now - self.delivered_at).total_seconds() >= repeat_s


# --- the rules (pure) --------------------------------------------------------------------------------------


def _api_alerts(health: Iterable[ApiHealth], active: set[str]) -> list[Alert]:
    alerts = []
    for h in health:
        subject = f"{h.channel} ({h.seller_id}) {API_TITLES[h.api]}"
        judged: tuple[Severity, str] | None = None
        if h.colour == "Red":
            judged = "error", f"{subject} is Red: {h.reason}"
        elif h.colour == "Yellow" and h.reason.startswith("throttled"):
            judged = "warning", f"{subject}: {h.reason}"
        elif h.colour == "None" and h.api == "orders" and h.channel in active and h.last_call_at is not None:
            judged = "warning", f"{subject}: {h.reason}: is the order download running?"
        if judged is not None:
            severity, summary = judged
            fingerprint = f"api-status:{h.channel}:{h.api}"
            alerts.append(
                Alert(
                    fingerprint=fingerprint,
                    rule="api-status",
                    severity=severity,
                    channel=h.channel,
                    summary=summary,
                )
            )
    return alerts


def firing(
    *,
    now: datetime,
    settings: AlertSettings,
    channels: Sequence[Channel],
    health: Iterable[ApiHealth] = (),
    notifications: Iterable[Notification] = (),
    timeliness: Iterable[ShipmentTimeliness] = (),
    dead_letters_grew: dict[str, tuple[int, datetime]] | None = None,
    heartbeats: dict[str, datetime] | None = None,
) -> list[Alert]:
    """The alerts that fire now, from what the stages recorded (``dead_letters_grew``: topic -> dead
    letters added in the window and when the last came; ``heartbeats``: ``<stage>|<worker>`` -> its last
    heartbeat)."""
    active = {c.name for c in channels if c.active}
    alerts = _api_alerts(health, active)
    for notice in notifications:
        if notice.kind == "feed-fatal" and now - notice.at <= FATAL_FEED_WINDOW:
            alerts.append(
                Alert(
                    fingerprint=f"feed-fatal:{notice.channel}",
                    rule="feed-fatal",
                    severity="error",
                    channel=notice.channel,
                    summary=notice.message,
                )
            )
    for t in timeliness:
        if t.overdue or t.at_risk:
            late = f"{t.overdue} overdue" if t.overdue else ""
            risk = f"{t.at_risk} at risk" if t.at_risk else ""
            orders = ", ".join(o for o in t.due_order_ids)
            alerts.append(
                Alert(
                    fingerprint=f"late-shipment:{t.channel}",
                    rule="late-shipment",
                    severity="error" if t.overdue else "warning",
                    channel=t.channel,
                    summary=f"{t.channel} ({t.seller_id}): orders past or near their latest ship date: "
                    f"{' and '.join(x for x in (late, risk) if x)} ({orders})",
                )
            )
    for topic, (added, last_at) in sorted((dead_letters_grew or {}).items()):
        if added > 0 and (now - last_at).total_seconds() <= settings.dead_letters_window_s:
            alerts.append(
                Alert(
                    fingerprint=f"dead-letters:{topic}",
                    rule="dead-letters",
                    severity="warning",
                    channel=None,
                    summary=f"{added} record(s) dead-lettered on {topic} in the last "
                    f"{round(settings.dead_letters_window_s / 60)} minutes (last at {last_at:%H:%M} UTC)",
                )
            )
    for worker, beat in sorted((heartbeats or {}).items()):
        silent_s = (now - beat).total_seconds()
        if silent_s > settings.stage_silent_s:
            stage, _, name = worker.partition("|")
            alerts.append(
                Alert(
                    fingerprint=f"stage-silent:{worker}",
                    rule="stage-silent",
                    severity="error",
                    channel=None,
                    summary=f"stage {stage} ({name}) has not reported for {round(silent_s)} s"
                    f" (last heartbeat {beat:%H:%M:%S} UTC)",
                )
            )
    today = now.date()
    for channel in channels:
        expires = channel.credentials.client_secret_expires_at
        if (
            expires is not None
            and channel.active
            and (expires - today).days <= settings.credentials_warn_days
        ):
            left = (expires - today).days
            when = f"expired on {expires}" if left < 0 else f"expires on {expires} ({left} days)"
            alerts.append(
                Alert(
                    fingerprint=f"credentials:{channel.name}",
                    rule="credentials",
                    severity="error" if left <= 7 else "warning",
                    channel=channel.name,
                    summary=f"{channel.name} ({channel.seller_id}): the LWA client secret {when}: rotate it",
                )
            )
    return alerts


# --- the book ---------------------------------------------------------------------------------------------


class AlertBook:
    """The alerts in Redis, by fingerprint."""

    def __init__(self, redis: aioredis.Redis, prefix: str, *, repeat_s: float = 0.0) -> None:
        self.redis = redis
        self.repeat_s = repeat_s
        self.active_key = keys.ALERTS.key(prefix)
        self.history_key = keys.ALERTS_HISTORY.key(prefix)

    async def active(self) -> list[AlertRecord]:
        raw = cast(dict[str, str], await self.redis.hgetall(self.active_key))
        records = [AlertRecord.model_validate_json(value) for value in raw.values()]
        order = {"error": 0, "warning": 1, "info": 2}
        return sorted(records, key=lambda r: (order[r.alert.severity], r.first_at))

    async def history(self, limit: int = 100) -> list[AlertRecord]:
        raw = cast(list[str], await self.redis.lrange(self.history_key, 0, max(0, limit - 1)))
        return [AlertRecord.model_validate_json(value) for value in raw]

    async def get(self, fingerprint: str) -> AlertRecord | None:
        raw = cast(str | None, await self.redis.hget(self.active_key, fingerprint))
        return AlertRecord.model_validate_json(raw) if raw else None

    async def save(self, record: AlertRecord) -> None:
        await self.redis.hset(self.active_key, record.alert.fingerprint, record.model_dump_json())

    async def reconcile(
        self, current: Sequence[Alert], now: datetime
    ) -> tuple[list[AlertRecord], list[AlertRecord]]:
        """Fold the rules' alerts into the book: returns (records to deliver now: new, repeated or
        out of their snooze; records resolved now)."""
        known = {r.alert.fingerprint: r for r in await self.active()}
        seen: set[str] = set()
        due: list[AlertRecord] = []
        for alert in current:
            if alert.fingerprint in seen:
                continue
            seen.add(alert.fingerprint)
            record = known.get(alert.fingerprint)
            if record is None:
                record = AlertRecord(alert=alert, first_at=now, last_seen_at=now)
            else:
                record = record.model_copy(update={"alert": alert, "last_seen_at": now})
            if record.state == "snoozed" and record.snoozed_until is not None and now >= record.snoozed_until:
                # Out of its snooze and still firing: delivered again now.
                record = record.model_copy(
                    update={"state": "firing", "snoozed_until": None, "delivered_at": None}
                )
            if record.due(now, self.repeat_s):
                due.append(record)
            await self.save(record)
        resolved = [r.model_copy(update={"resolved_at": now}) for fp, r in known.items() if fp not in seen]
        if resolved:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hdel(self.active_key, *(r.alert.fingerprint for r in resolved))
                for record in resolved:
                    pipe.lpush(self.history_key, record.model_dump_json())
                pipe.ltrim(self.history_key, 0, HISTORY_KEPT - 1)
                await pipe.execute()
        return due, resolved

    async def mark_delivered(self, records: Iterable[AlertRecord], now: datetime) -> None:
        for record in records:
            fresh = await self.get(record.alert.fingerprint)
            if fresh is not None:
                await self.save(fresh.model_copy(update={"delivered_at": now}))

    async def acknowledge(self, fingerprint: str, who: str, now: datetime) -> AlertRecord:
        """Not delivered again while it fires (a new alert of the same kind, after it resolved, is)."""
        record = await self._acted(fingerprint)
        record = record.model_copy(update={"state": "acknowledged", "acted_by": who, "acted_at": now})
        await self.save(record)
        return record

    async def snooze(self, fingerprint: str, until: datetime, who: str, now: datetime) -> AlertRecord:
        """Not delivered until ``until``; then again if it still fires."""
        if until <= now:
            raise ValueError("a snooze must end in the future")
        record = await self._acted(fingerprint)
        update = {"state": "snoozed", "snoozed_until": until, "acted_by": who, "acted_at": now}
        record = record.model_copy(update=update)
        await self.save(record)
        return record

    async def _acted(self, fingerprint: str) -> AlertRecord:
        record = await self.get(fingerprint)
        if record is None:
            raise KeyError(f"no active alert {fingerprint!r} (it may have resolved)")
        return record


# --- delivery ----------------------------------------------------------------------------------------------


def message_text(record: AlertRecord, *, resolved: bool, dashboard_url: str | None) -> str:
    alert = record.alert
    head = "RESOLVED" if resolved else alert.severity.upper()
    text = f"[ordersync] {head} {alert.rule}: {alert.summary}"
    if dashboard_url:
        text += f" <{dashboard_url.rstrip('/')}/notifications>"
    return text


async def deliver(
    settings: AlertSettings,
    board: HealthBoard,
    http: httpx.AsyncClient,
    record: AlertRecord,
    *,
    resolved: bool = False,
) -> bool:
    """Deliver one alert everywhere configured; True when every channel took it."""
    text = message_text(record, resolved=resolved, dashboard_url=settings.dashboard_url)
    alert = record.alert
    await board.notify("alert", text, severity="info" if resolved else alert.severity, channel=alert.channel)
    ok = True
    payload = {"text": text, "alert": {**alert.model_dump(), "resolved": resolved}}
    for url in settings.webhook_urls:
        try:
            answer = await http.post(url.get_secret_value(), json=payload, timeout=settings.send_timeout_s)
            answer.raise_for_status()
        except httpx.HTTPError as exc:
            ok = False
            # The URL carries a token: only its host is logged.
            host = httpx.URL(url.get_secret_value()).host
            log.warning("alert %s: webhook at %s failed: %s", alert.fingerprint, host, type(exc).__name__)
    if settings.smtp_host and settings.email_to:
        try:
            await _send_mail(settings, text, record, resolved=resolved)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            ok = False
            log.warning("alert %s: e-mail via %s failed: %s", alert.fingerprint, settings.smtp_host, exc)
    return ok


async def _send_mail(settings: AlertSettings, text: str, record: AlertRecord, *, resolved: bool) -> None:
    message = EmailMessage()
    message["From"] = settings.email_from
    message["To"] = ", ".join(settings.email_to)
    message["Subject"] = text[:150]
    message.set_content(
        f"{text}\n\nRule: {record.alert.rule}\nSeverity: {record.alert.severity}\n"
        f"Firing since: {record.first_at:%Y-%m-%d %H:%M:%S} UTC\n" + ("Resolved.\n" if resolved else "")
    )
    await aiosmtplib.send(
        message,
        hostname=settings.smtp_host,
        port=settings.smtp_port,
        start_tls=settings.smtp_starttls,
        username=settings.smtp_username,
        password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
        timeout=settings.send_timeout_s,
    )


# --- one evaluation -------------------------------------------------------------------------------------


async def dead_letters_grew(
    redis: aioredis.Redis, prefix: str, sizes: Sequence[DlqSize], now: datetime, window_s: float
) -> dict[str, tuple[int, datetime]]:
    """Per DLQ topic, the dead letters added within ``window_s`` and when the last came, from the sizes
    now and those kept at earlier evaluations."""
    key = keys.ALERTS_BASELINE.key(prefix)
    baseline = {k: json.loads(v) for k, v in cast(dict[str, str], await redis.hgetall(key)).items()}
    grew: dict[str, tuple[int, datetime]] = {}
    updates: dict[str, str] = {}
    for size in sizes:
        seen = baseline.get(size.topic)
        if seen is None:
            updates[size.topic] = json.dumps({"count": size.records, "added": 0, "at": None})
            continue
        added, at = int(seen.get("added", 0)), seen.get("at")
        last_at = datetime.fromisoformat(at) if at else None
        if last_at is not None and (now - last_at).total_seconds() > window_s:
            added = 0
        if size.records > int(seen["count"]):
            added += size.records - int(seen["count"])
            last_at = size.last_at or now
        updates[size.topic] = json.dumps(
            {"count": size.records, "added": added, "at": last_at.isoformat() if last_at else None}
        )
        if added and last_at is not None:
            grew[size.topic] = (added, last_at)
    if updates:
        await redis.hset(key, mapping=cast(dict[Any, Any], updates))
    return grew


async def evaluate_once(
    settings: Settings,
    redis: aioredis.Redis,
    channels: Sequence[Channel],
    *,
    now: datetime,
    owner: str = "alerts",
    http: httpx.AsyncClient | None = None,
) -> tuple[list[AlertRecord], list[AlertRecord]]:
    """Evaluate the rules once, fold them into the book and deliver what is due; returns (delivered,
    resolved). ``now`` is the real time, as the stages record calls, heartbeats and notifications (order
    deadlines are the read model's, on Amazon's clock). Another worker evaluating meanwhile: nothing."""
    prefix = settings.redis.key_prefix
    lock = Lock(redis, keys.ALERTS_LOCK.key(prefix), owner, max(1.0, settings.alerts.interval_s * 2))
    if not await lock.hold():
        return [], []
    board = HealthBoard(redis, prefix, settings.health)
    model = ReadModel(redis, prefix, notify_dlq=False, notify_late=False)
    current = firing(
        now=now,
        settings=settings.alerts,
        channels=channels,
        health=await board.api_health([(c.name, c.seller_id) for c in channels], now=now),
        notifications=await board.notifications(200),
        timeliness=await model.shipment_timeliness(),
        dead_letters_grew=await dead_letters_grew(
            redis, prefix, await model.dlq_sizes(), now, settings.alerts.dead_letters_window_s
        ),
        heartbeats=await heartbeats(redis, prefix, forget_before=now - FORGOTTEN_AFTER),
    )
    book = AlertBook(redis, prefix, repeat_s=settings.alerts.repeat_s)
    due, resolved = await book.reconcile(current, now)
    own_http = http is None
    client = http or httpx.AsyncClient()
    delivered: list[AlertRecord] = []
    try:
        for record in due:
            if await deliver(settings.alerts, board, client, record):
                delivered.append(record)
        for record in resolved:
            await deliver(settings.alerts, board, client, record, resolved=True)
    finally:
        if own_http:
            await client.aclose()
    await book.mark_delivered(delivered, now)
    return delivered, resolved


async def run_alerts(
    settings: Settings,
    redis: aioredis.Redis,
    channels: Sequence[Channel] | Callable[[], Sequence[Channel]],
    owner: str,
) -> None:
    """Evaluate every ``alerts.interval_s`` until cancelled; a failing evaluation is logged and retried.
    ``channels``: the channels, or where to read them at each evaluation (a stage following the channel
    registry: a channel added while it runs is watched from the next evaluation)."""
    async with httpx.AsyncClient() as http:
        while True:
            current = channels() if callable(channels) else channels
            try:
                await evaluate_once(settings, redis, current, now=datetime.now(UTC), owner=owner, http=http)
            except Exception:  # the loop must outlive one bad evaluation
                log.exception("alert evaluation failed; next in %s s", settings.alerts.interval_s)
            raise_if_cancel_requested()  # an SMTP reply's wait may have swallowed a stop
            await asyncio.sleep(settings.alerts.interval_s)


__all__ = [
    "Alert",
    "AlertBook",
    "AlertRecord",
    "deliver",
    "evaluate_once",
    "firing",
    "run_alerts",
]
