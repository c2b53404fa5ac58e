"""API health per account and the operators' notifications, kept in Redis.

Every SP-API request a stage sends is recorded (:meth:`HealthBoard.record_call`, wired into
:class:`~ordersync.amazon.client.SpApiClient` by the stage runtime) as one outcome in a per-minute counter
of its (channel, seller, API). :meth:`HealthBoard.api_health` judges the last window of those counters:

- **None**: no call for ``health.stale_after_s`` (10 minutes), or the counters cannot be read;
- **Red**: every failing call of the window failed with nothing answered (unavailable or refused
  credentials), the error rate is above ``health.red_error_rate``, or the last ``health.min_calls``
  calls or more all failed (an outage shows at once, however many calls of the window answered before
  it; the next answered call ends the run);
- **Yellow**: the error rate is above ``health.yellow_error_rate``, or Amazon throttled (429) a share of
  calls in several minutes of the window (sustained throttling; a 429 is degraded, not an error);
- **Green** otherwise,

each with a sentence saying why. Notifications (auth failures, sustained throttling, feeds FATAL, DLQ
growth) are a capped list, newest first; a ``dedupe_key`` holds back repeats for an hour.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, cast

import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict
from redis.exceptions import RedisError

from ordersync.amazon.operations import (
    API_NAMES,
    API_TITLES,
    ApiCall,
    ApiName,
    CallOutcome,
    api_for_operation,
)
from ordersync.settings import DEFAULT_PREFIX, HealthSettings
from ordersync.state import keys
from ordersync.state.trends import parse_accounts, quota_commands

if TYPE_CHECKING:
    from ordersync.channels import Channel

log = logging.getLogger(__name__)

HealthColour = Literal["Green", "Yellow", "Red", "None"]
Severity = Literal["info", "warning", "error"]


#: The last call of an account is kept this long, for "no call since ..." (counters live one window).
_LAST_CALL_TTL_S = 30 * 86400
_COUNTERS: tuple[str, ...] = ("calls", "errors", "throttled", "auth", "unavailable")
#: Outcomes that count as failures (a 429 is degraded, not failed).
_FAILURES = frozenset({"error", "auth", "unavailable"})
_COUNTER_OF: dict[str, str] = {
    "error": "errors",
    "throttled": "throttled",
    "auth": "auth",
    "unavailable": "unavailable",
}


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class ApiHealth(_Frozen):
    channel: str
    seller_id: str
    api: ApiName
    colour: HealthColour
    reason: str
    calls: int
    errors: int
    throttled: int
    last_call_at: datetime | None


class Notification(_Frozen):
    id: str
    at: datetime
    severity: Severity
    kind: str
    channel: str | None
    message: str


def _minute(at: datetime) -> int:
    return int(at.timestamp()) // 60


def _clock(at: datetime, now: datetime) -> str:
    """10:02 today, 2026-11-24 10:02 otherwise (UTC)."""
    at = at.astimezone(UTC)
    return at.strftime("%H:%M") if at.date() == now.astimezone(UTC).date() else at.strftime("%Y-%m-%d %H:%M")


def _span(seconds: float) -> str:
    minutes = round(seconds / 60)
    if minutes >= 120 and minutes % 60 == 0:
        return f"{minutes // 60} hours"
    return "minute" if minutes == 1 else f"{minutes} minutes"


def _parse_time(raw: str | None) -> datetime | None:
    if not raw:
        return None
    try:
        return datetime.fromisoformat(raw)
    except ValueError:
        return None


class _Window(BaseModel):
    """The counters of one (channel, seller, API) summed over the window."""

    calls: int = 0
    errors: int = 0
    throttled: int = 0
    auth: int = 0
    unavailable: int = 0
    throttled_minutes: int = 0

    @property
    def failures(self) -> int:
        return self.errors + self.auth + self.unavailable


class HealthBoard:
    def __init__(
        self, redis: aioredis.Redis, prefix: str = DEFAULT_PREFIX, settings: HealthSettings | None = None
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.settings = settings or HealthSettings()

    # --- keys ----------------------------------------------------------------------------------------

    def _account_key(self, channel: str, seller_id: str, api: str, *parts: str) -> str:
        # The seller in a hash tag: one account's keys share a Redis Cluster slot (pipelines).
        return keys.HEALTH_ACCOUNT.key(self.prefix, seller_id, channel, api, detail=parts)

    def _minute_key(self, channel: str, seller_id: str, api: str, minute: int) -> str:
        return self._account_key(channel, seller_id, api, "m", str(minute))

    @property
    def _accounts_key(self) -> str:
        return keys.HEALTH_ACCOUNTS.key(self.prefix)

    @property
    def _notifications_key(self) -> str:
        return keys.NOTIFICATIONS.key(self.prefix)

    def _dedupe_key(self, dedupe_key: str) -> str:
        return keys.NOTIFICATION_DEDUPE.key(self.prefix, dedupe_key)

    # --- recording -----------------------------------------------------------------------------------

    async def record_call(
        self,
        channel: str,
        seller_id: str,
        operation: str,
        outcome: CallOutcome,
        *,
        at: datetime | None = None,
        api: ApiName | None = None,
        detail: str | None = None,
        waited: bool = False,
    ) -> None:
        """Count one SP-API request's outcome. ``api`` defaults to the operation's
        (:func:`api_for_operation`); ``detail`` ("500 InternalFailure", "LWA refused the credentials:
        invalid_grant") is kept as the last failure's and shown in the reason; it must hold no secret.
        ``waited``: the request waited for a rate-limiter token first.

        The same pipeline counts the call in its hour per operation, for the Trends page
        (:func:`ordersync.state.trends.quota_commands`). Auth failures and sustained throttling also
        raise a notification (deduplicated)."""
        at = at or datetime.now(UTC)
        api = api or api_for_operation(operation)
        minute_key = self._minute_key(channel, seller_id, api, _minute(at))
        ttl = int(self.settings.window_s + self.settings.stale_after_s) + 120
        pipe = self.redis.pipeline(transaction=False)
        pipe.hincrby(minute_key, "calls", 1)
        if outcome != "ok":
            pipe.hincrby(minute_key, _COUNTER_OF[outcome], 1)
        pipe.expire(minute_key, ttl)
        for command in quota_commands(
            self.prefix,
            seller_id,
            channel,
            operation,
            at=at,
            throttled=outcome == "throttled",
            waited=waited,
        ):
            pipe.execute_command(*command)
        last_key = self._account_key(channel, seller_id, api, "last")
        last: dict[str, str] = {"at": at.isoformat(), "outcome": outcome, "operation": operation}
        if outcome not in ("ok", "throttled"):
            last.update({"failure_at": at.isoformat(), "failure": detail or outcome, "failure_kind": outcome})
        elif outcome == "ok":
            last["ok_at"] = at.isoformat()
        if outcome in _FAILURES:
            # The run of failures since the last answered call: an outage shows at once, however many
            # calls of the window answered before it.
            pipe.hincrby(last_key, "streak", 1)
            pipe.hsetnx(last_key, "streak_since", at.isoformat())
        elif outcome == "ok":
            pipe.hdel(last_key, "streak", "streak_since")
        pipe.hset(last_key, mapping=cast(dict[Any, Any], last))
        pipe.expire(last_key, _LAST_CALL_TTL_S)
        pipe.sadd(self._accounts_key, json.dumps([channel, seller_id]))
        await pipe.execute()
        if outcome == "auth":
            await self.notify(
                "auth",
                f"{channel} ({seller_id}): {API_TITLES[api]} refused the credentials"
                f"{': ' + detail if detail else ''}",
                severity="error",
                channel=channel,
                dedupe_key=f"auth:{channel}:{api}",
                at=at,
            )
        elif outcome == "throttled":
            window = await self._window(channel, seller_id, api, at)
            if self._sustained_throttling(window):
                await self.notify(
                    "throttling",
                    f"{channel} ({seller_id}): Amazon throttled {window.throttled} of {window.calls} "
                    f"{API_TITLES[api]} calls in the last {_span(self.settings.window_s)}",
                    severity="warning",
                    channel=channel,
                    dedupe_key=f"throttling:{channel}:{api}",
                    at=at,
                )

    # --- evaluation ----------------------------------------------------------------------------------

    async def _window(self, channel: str, seller_id: str, api: str, now: datetime) -> _Window:
        last_minute = _minute(now)
        minutes = max(1, int(self.settings.window_s // 60))
        pipe = self.redis.pipeline(transaction=False)
        for minute in range(last_minute - minutes + 1, last_minute + 1):
            pipe.hgetall(self._minute_key(channel, seller_id, api, minute))
        totals = dict.fromkeys(_COUNTERS, 0)
        throttled_minutes = 0
        for raw in cast(list[dict[str, str]], await pipe.execute()):
            for name in _COUNTERS:
                totals[name] += int(raw.get(name, 0))
            throttled_minutes += int(raw.get("throttled", 0)) > 0
        return _Window(**totals, throttled_minutes=throttled_minutes)

    def _sustained_throttling(self, window: _Window) -> bool:
        s = self.settings
        return (
            window.calls > 0
            and window.throttled / window.calls > s.throttled_yellow_rate
            and window.throttled_minutes >= s.throttled_min_minutes
        )

    async def accounts(self) -> list[tuple[str, str]]:
        """Every (channel, seller) a call was recorded for."""
        return parse_accounts(cast(set[str], await self.redis.smembers(self._accounts_key)))

    async def api_health(
        self, channels: Sequence[tuple[str, str]] | None = None, *, now: datetime | None = None
    ) -> list[ApiHealth]:
        """The health of each API of each (channel, seller): of ``channels``, or of every account a call
        was ever recorded for. Never raises for Redis: unreadable status is colour None."""
        now = now or datetime.now(UTC)
        try:
            accounts = list(channels) if channels is not None else await self.accounts()
        except RedisError as exc:
            log.warning("API health unreadable: %s", exc)
            return []
        result: list[ApiHealth] = []
        for channel, seller_id in accounts:
            for api in API_NAMES:
                result.append(await self._api_health(channel, seller_id, api, now))
        return result

    async def _api_health(self, channel: str, seller_id: str, api: ApiName, now: datetime) -> ApiHealth:
        try:
            last = cast(
                dict[str, str], await self.redis.hgetall(self._account_key(channel, seller_id, api, "last"))
            )
            window = await self._window(channel, seller_id, api, now)
        except RedisError as exc:
            last, window = {}, _Window()
            colour, reason = "None", f"status unreadable: {type(exc).__name__}"
        else:
            colour, reason = self.judge(window, last, now)
        return ApiHealth(
            channel=channel,
            seller_id=seller_id,
            api=api,
            colour=colour,
            reason=reason,
            calls=window.calls,
            errors=window.failures,
            throttled=window.throttled,
            last_call_at=_parse_time(last.get("at")),
        )

    def judge(  # noqa: PLR0911 - one return per rule reads best
        self, window: _Window, last: dict[str, str], now: datetime
    ) -> tuple[HealthColour, str]:
        """The colour and its reason, from the window's counters and the last call's record."""
        s = self.settings
        last_at = _parse_time(last.get("at"))
        span = _span(s.window_s)
        if last_at is None:
            return "None", "no call recorded"
        if (now - last_at).total_seconds() > s.stale_after_s or window.calls == 0:
            return "None", f"no call since {_clock(last_at, now)}"
        failure = last.get("failure") or "failed"
        answered = window.calls - window.failures
        if window.failures and answered == 0:
            # Nothing got through: the API is down for this account, or refuses it.
            if last.get("failure_kind") == "auth":
                return "Red", failure if "LWA" in failure else f"Amazon refused the credentials: {failure}"
            return "Red", f"all {window.calls} calls in the last {span} failed: {failure}"
        rate = window.failures / window.calls
        failed = f"{window.failures} of {window.calls} calls failed in the last {span}: {failure}"
        if window.failures and window.calls >= s.min_calls and rate > s.red_error_rate:
            return "Red", failed
        streak = int(last.get("streak") or 0)
        if streak >= s.min_calls:
            since = _parse_time(last.get("streak_since"))
            when = f" since {_clock(since, now)}" if since else ""
            share = f"{window.failures} of {window.calls} in the last {span}"
            return "Red", f"the last {streak} calls failed{when} ({share}): {failure}"
        if window.failures and (window.calls < s.min_calls or rate > s.yellow_error_rate):
            return "Yellow", failed
        if self._sustained_throttling(window):
            throttled = f"{window.throttled} of {window.calls} calls"
            return "Yellow", f"throttled: Amazon answered 429 to {throttled} in the last {span}"
        if window.failures:
            return "Green", failed
        return "Green", f"{window.calls} calls in the last {span}, none failed"

    # --- notifications -------------------------------------------------------------------------------

    async def notify(
        self,
        kind: str,
        message: str,
        *,
        severity: Severity = "warning",
        channel: str | None = None,
        dedupe_key: str | None = None,
        at: datetime | None = None,
    ) -> None:
        """Add a notification for the operators; with ``dedupe_key``, one that repeats within
        ``health.notification_dedupe_s`` (an hour) is held back."""
        at = at or datetime.now(UTC)
        if dedupe_key is not None and self.settings.notification_dedupe_s > 0:
            fresh = await self.redis.set(
                self._dedupe_key(dedupe_key),
                at.isoformat(),
                nx=True,
                ex=int(self.settings.notification_dedupe_s),
            )
            if not fresh:
                return
        notification = Notification(
            id=uuid.uuid4().hex, at=at, severity=severity, kind=kind, channel=channel, message=message
        )
        pipe = self.redis.pipeline(transaction=False)
        pipe.lpush(self._notifications_key, notification.model_dump_json())
        pipe.ltrim(self._notifications_key, 0, self.settings.notifications_kept - 1)
        await pipe.execute()
        log.log(
            logging.ERROR
            if severity == "error"
            else logging.WARNING
            if severity == "warning"
            else logging.INFO,
            "notification %s: %s",
            kind,
            message,
        )

    async def notifications(self, limit: int = 100) -> list[Notification]:
        """The newest ``limit`` notifications, newest first."""
        raw = cast(list[str], await self.redis.lrange(self._notifications_key, 0, max(0, limit - 1)))
        notifications: list[Notification] = []
        for item in raw:
            try:
                notifications.append(Notification.model_validate_json(item))
            except ValueError:
                log.warning("skipped an unreadable notification")
        return notifications


class HealthObserver:
    """Records an :class:`~ordersync.amazon.client.SpApiClient`'s calls on a :class:`HealthBoard` (its
    ``ApiObserver``), and notifies feeds Amazon could not process."""

    def __init__(self, board: HealthBoard) -> None:
        self.board = board

    async def on_call(self, channel: Channel, call: ApiCall) -> None:
        await self.board.record_call(
            channel.name,
            channel.seller_id,
            call.operation,
            call.outcome,
            api=call.api,
            detail=call.detail,
            waited=call.waited_s > 0,
        )

    async def on_feed_fatal(self, channel: Channel, api: ApiName, feed_id: str, feed_type: str) -> None:
        await self.board.notify(
            "feed-fatal",
            f"{channel.name} ({channel.seller_id}): Amazon could not process feed {feed_id} ({feed_type}):"
            " processing status FATAL, nothing in it was applied",
            severity="error",
            channel=channel.name,
            dedupe_key=f"feed-fatal:{channel.name}:{feed_id}",
        )


__all__ = [
    "ApiHealth",
    "HealthBoard",
    "HealthColour",
    "HealthObserver",
    "Notification",
    "Severity",
]
