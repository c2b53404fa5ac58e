"""Who asks and what they may do, request by request, and how the audit names what they asked: the
dashboard's helpers around :class:`~ordersync.dashboard.auth.Principal` (the principal and the admitted
actor kept on ``request.state``), the CSRF token a request carries, forms, and each POST route's audit
name and targets read from its body (for a request refused before its handler runs)."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta, tzinfo
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request

from ordersync.dashboard.actions import ACTION_LABELS
from ordersync.dashboard.auth import ANONYMOUS, CSRF_FIELD, CSRF_HEADER, Principal
from ordersync.ops.audit import OUTCOMES, AuditFilter
from ordersync.ops.users import Role, UserProblem, checked_name

#: A thousand orders of a channel in one action is well under this.
MAX_ACTION_BODY = 1_000_000

ACTIONS_DISABLED = (
    "actions are disabled: no operator token is configured (ORDERSYNC_DASHBOARD__OPERATOR_TOKEN)"
)
#: The audit's actor for a sign-in with a name that is no account (the name is not kept: people type
#: their password there by mistake).
NOBODY = Principal("(unknown)", None, "none")
TOKEN_GIVEN = Principal("(token)", None, "none")
#: The users page's notice after a change, by what was done.
USER_NOTICES = {
    "add": "User {user} added.",
    "role": "The role of {user} changed; their sessions ended.",
    "disable": "User {user} disabled; their sessions ended.",
    "enable": "User {user} enabled.",
    "password": "The password of {user} was reset; their sessions ended.",
}
#: A form is small: a sign-in, a time zone, an account change.
MAX_FORM_BODY = 64 * 1024
AUDIT_PAGE_SIZES = (50, 100, 500)


def principal_of(request: Request) -> Principal:
    found = getattr(request.state, "principal", None)
    return found if isinstance(found, Principal) else Principal(ANONYMOUS, None, "none")


def has_accounts(request: Request) -> bool:
    return bool(getattr(request.state, "accounts", False))


def actor_of(request: Request) -> Principal:
    """The principal :meth:`_Dashboard.admit` admitted (the reader's, for a request it did not see)."""
    found = getattr(request.state, "actor", None)
    return found if isinstance(found, Principal) else principal_of(request)


def role_refusal(principal: Principal, needed: Role, what: str) -> str:
    allowed = "an operator or an admin" if needed == "operator" else "an admin"
    if principal.via == "session":
        return f"your role ({principal.role}) may not {what}: {allowed} may"
    return f"{what} needs {allowed}'s sign-in"


def self_declared(request: Request, operator: str) -> str:
    """The name an operator-token client gave for itself, for the audit's detail."""
    actor = actor_of(request)
    return f"operator given: {operator}" if actor.via != "session" and operator else ""


async def form_fields(request: Request) -> dict[str, str]:
    """A urlencoded form's fields (the first value of each)."""
    declared = request.headers.get("content-length", "0")
    if declared.isdigit() and int(declared) > MAX_FORM_BODY:
        return {}
    raw = await request.body()
    if len(raw) > MAX_FORM_BODY:
        return {}
    return {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True).items()}


async def csrf_given(request: Request) -> str:
    """The CSRF token the request carries: the header (the script's requests), else the form field."""
    header = request.headers.get(CSRF_HEADER, "").strip()
    if header:
        return header
    if request.headers.get("content-type", "").split(";")[0].strip() == "application/x-www-form-urlencoded":
        return (await form_fields(request)).get(CSRF_FIELD, "")
    return ""


async def peeked_json(request: Request) -> Any:
    """The JSON body, if it is one (for naming a refused request in the audit); None otherwise."""
    declared = request.headers.get("content-length", "0")
    if declared.isdigit() and int(declared) > MAX_ACTION_BODY:
        return None
    try:
        return json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        return None


def order_audit(body: Any) -> tuple[str, list[str]]:
    """A grid action's audit name and targets (``channel/order id``), from its body as sent."""
    if not isinstance(body, dict):
        return "order.invalid", []
    action = body.get("action")
    name = f"order.{action}" if action in ACTION_LABELS else "order.invalid"
    targets: dict[str, None] = {}
    orders = body.get("orders")
    for ref in orders if isinstance(orders, list) else ():
        if isinstance(ref, dict):
            targets[f"{str(ref.get('channel'))[:63]}/{str(ref.get('amazon_order_id'))[:40]}"] = None
    return name, list(targets)


def letter_audit(body: Any) -> tuple[str, list[str]]:
    """A dead-letter action's audit name and targets (the letters' ids), from its body as sent."""
    if not isinstance(body, dict):
        return "dead-letter.invalid", []
    action = body.get("action")
    name = f"dead-letter.{action}" if action in ("replay", "resolve") else "dead-letter.invalid"
    letters = body.get("letters")
    targets = [
        f"{ref.get('topic')}:{ref.get('partition')}:{ref.get('offset')}"[:300]
        for ref in (letters if isinstance(letters, list) else ())
        if isinstance(ref, dict)
    ]
    return name, targets


async def audit_orders(request: Request) -> tuple[str, list[str]]:
    return order_audit(await peeked_json(request))


async def audit_letters(request: Request) -> tuple[str, list[str]]:
    return letter_audit(await peeked_json(request))


def task_targets(body: object) -> list[str]:
    """What a Synchronize now names, as its audit entry shows it: ``task:channel``."""
    body = body if isinstance(body, dict) else {}
    task, channel = body.get("task"), body.get("channel")
    if not isinstance(task, str) or not isinstance(channel, str):
        return []
    return [f"{task}:{channel}"[:300]]


async def audit_tasks(request: Request) -> tuple[str, list[str]]:
    return "task.run", task_targets(await peeked_json(request))


def listings_audit(path: str, body: object) -> tuple[str, list[str]]:
    """A listings change's audit name and targets: the channel (an upload) or ``channel:seller SKU``."""
    body = body if isinstance(body, dict) else {}
    channel = body.get("channel")
    channel = channel[:64] if isinstance(channel, str) else "?"
    if path.endswith("/upload"):
        return "listings.upload", [channel]
    row = body.get("row")
    sku = row.get("Merchant SKU") or row.get("Channel SKU Id") if isinstance(row, dict) else None
    return "listings.row", [f"{channel}:{sku[:40] if isinstance(sku, str) else '?'}"]


async def audit_listings(request: Request) -> tuple[str, list[str]]:
    return listings_audit(request.url.path, await peeked_json(request))


def channels_audit(path: str, body: object) -> tuple[str, list[str]]:
    """A channel change's audit name and target (the channel's name), from its path and body as sent."""
    body = body if isinstance(body, dict) else {}
    name = body.get("name")
    targets = [name[:64]] if isinstance(name, str) and name else []
    kind = path.rstrip("/").rsplit("/", 1)[-1]
    if kind == "active":
        kind = "activate" if body.get("active") is True else "deactivate"
    action = f"channel.{kind}" if kind in CHANNEL_ACTIONS else "channel.invalid"
    return action, targets


#: What the Channels page's API does, as the audit names it (``channel.<kind>``).
CHANNEL_ACTIONS = ("save", "activate", "deactivate", "test", "discover", "revert")


async def audit_channels(request: Request) -> tuple[str, list[str]]:
    return channels_audit(request.url.path, await peeked_json(request))


async def audit_alerts(request: Request) -> tuple[str, list[str]]:
    body = await peeked_json(request)
    body = body if isinstance(body, dict) else {}
    action = body.get("action")
    fingerprint = body.get("fingerprint")
    return (
        f"alert.{action}" if action in ("acknowledge", "snooze") else "alert.invalid",
        [fingerprint[:300]] if isinstance(fingerprint, str) else [],
    )


async def audit_users(request: Request) -> tuple[str, list[str]]:
    name = request.path_params.get("name")
    if request.url.path.startswith("/api/"):
        body = await peeked_json(request)
        body = body if isinstance(body, dict) else {}
        if name is None:
            return "user.add", [str(body.get("name"))[:64]] if body.get("name") else []
        kind = next((k for k in ("role", "disabled", "password") if k in body), "")
        if kind == "disabled":
            kind = "disable" if body.get("disabled") else "enable"
    else:
        form = await form_fields(request)
        if name is None:
            return "user.add", [form.get("name", "")[:64]] if form.get("name") else []
        kind = form.get("change", "")
    action = f"user.{kind}" if kind in ("role", "disable", "enable", "password") else "user.invalid"
    return action, [name[:64]]


def text_or_empty(value: object) -> str:
    return value if isinstance(value, str) else ""


def safe_user(name: str) -> bool:
    try:
        return checked_name(name) == name
    except UserProblem:
        return False


def audit_time(value: str, tz: tzinfo, *, end: bool) -> datetime:
    """An audit filter's bound: a date (the whole day in the reader's time zone; ``end``: the day after
    it, as the upper bound is exclusive) or an ISO date-time (without a zone: the reader's)."""
    value = value.strip()
    if len(value) == 10:
        day = datetime.fromisoformat(value).replace(tzinfo=tz)
        return day + timedelta(days=1) if end else day
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=tz)


def audit_query(params: Mapping[str, str], tz: tzinfo) -> tuple[AuditFilter, str | None, int]:
    """The audit filter, cursor and page size of a query string; raises ValueError naming what is
    wrong."""
    outcome = params.get("outcome") or None
    if outcome is not None and outcome not in OUTCOMES:
        raise ValueError(f"outcome: one of {', '.join(OUTCOMES)}")
    bounds: dict[str, datetime | None] = {}
    for name in ("since", "until"):
        raw = params.get(name) or ""
        try:
            bounds[name] = audit_time(raw, tz, end=name == "until") if raw else None
        except ValueError:
            raise ValueError(f"{name}: an ISO date (2026-11-25) or date-time (2026-11-25T10:30)") from None
    if bounds["since"] and bounds["until"] and bounds["since"] >= bounds["until"]:
        raise ValueError("since must come before until")
    older = params.get("older") or None
    if older is not None and not STREAM_ID.match(older):
        raise ValueError("older: the cursor an earlier page gave")
    raw_limit = params.get("limit") or str(AUDIT_PAGE_SIZES[0])
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 500:
        raise ValueError("limit: a whole number in 1..500")
    chosen = AuditFilter(
        actor=(params.get("user") or "").strip() or None,
        action=(params.get("action") or "").strip() or None,
        outcome=outcome,
        since=bounds["since"],
        until=bounds["until"],
    )
    return chosen, older, int(raw_limit)


STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
Guard = Callable[[Request], Awaitable[tuple[str, list[str]]]]
