"""The dashboard's Starlette application: pages, JSON API, CSV export, health probes.

Pages (server-rendered, work without the script except for actions):
``/`` orders grid with the status key, ``/orders/{seller}/{order}`` detail (with its Easy Ship package and
the cached product data), ``/orders/{seller}/{order}/documents/{reference}`` (an Easy Ship PDF recorded in
the order's state, from the document store), ``/tasks``, ``/notifications``, ``/dead-letters``, ``/login``,
``/users`` (admins), ``/audit`` (operators and admins), ``/trends`` (charts drawn by its script, the
numbers in tables).
JSON: ``/api/orders``, ``/api/orders/{seller}/{order}``, ``/api/health``, ``/api/tasks``,
``/api/notifications``, ``/api/trends``, ``/api/dead-letters``, ``/api/users``, ``/api/audit``,
``POST /api/actions``, ``POST /api/dead-letters/actions``, ``POST /api/alerts/actions``,
``POST /api/users[/{name}]``.
``/export.csv`` streams the current filter's orders.
``/healthz`` (process up) and ``/readyz`` (Redis answers) are for orchestrators and need no token.

Every other route first learns who asks (:meth:`_Dashboard.identify`: a session, a token, open reading);
every POST route then admits the request or refuses it (:meth:`_Dashboard.admit`: the role the route
needs, the CSRF token of a session), and every action, account change, sign-in and sign-out is audited
(:mod:`ordersync.ops.audit`).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from functools import lru_cache
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, urlencode, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import httpx
import redis.asyncio as aioredis
from botocore.exceptions import BotoCoreError, ClientError
from jinja2 import Environment, PackageLoader, pass_context, select_autoescape
from jinja2.runtime import Context
from kafka.errors import KafkaError
from pydantic import SecretStr, ValidationError
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ordersync.amazon.authorization import (
    AuthorizationStateError,
    consent_url,
    exchange_code,
    read_state,
    sign_state,
)
from ordersync.amazon.client import SpApiClient
from ordersync.amazon.operations import API_NAMES, API_TITLES
from ordersync.amazon.sellers import Participation, discover_marketplaces
from ordersync.channels import Channel, ChannelsFile, LwaCredentials, SecretRef, load_channels
from ordersync.clock import SYSTEM_CLOCK, Clock
from ordersync.dashboard.access import (
    ACTIONS_DISABLED,
    MAX_ACTION_BODY,
    NOBODY,
    TOKEN_GIVEN,
    USER_NOTICES,
    Guard,
    actor_of,
    audit_alerts,
    audit_channels,
    audit_letters,
    audit_listings,
    audit_orders,
    audit_query,
    audit_tasks,
    audit_users,
    channels_audit,
    csrf_given,
    form_fields,
    has_accounts,
    letter_audit,
    listings_audit,
    order_audit,
    principal_of,
    role_refusal,
    safe_user,
    self_declared,
    task_targets,
    text_or_empty,
)
from ordersync.dashboard.actions import (
    ACTION_LABELS,
    ActionRejected,
    action_refusal,
    allowed_actions,
    check_orders,
    parse_action,
    plan_action,
    publish_action,
)
from ordersync.dashboard.auth import (
    ANONYMOUS,
    API_CLIENT,
    BACKGROUND_HEADER,
    CSRF_FIELD,
    OPERATOR_HEADER,
    READ_COOKIE,
    READER,
    SESSION_COOKIE,
    Principal,
    cookie_value,
    login_token_valid,
    operator_access,
    token_role,
)
from ordersync.dashboard.channels import (
    CREDENTIAL_FIELDS,
    ChannelProblems,
    channel_yaml,
    definition,
    kafka_listens,
    keeps_file_credentials,
    parse_definition,
    secret_name,
    with_channel,
    with_marketplaces,
)
from ordersync.dashboard.dead_letters import (
    ActionProblem,
    DeadLetterBoard,
    LetterFilter,
    carry_out,
    load_board,
    parse_letter_action,
)
from ordersync.dashboard.oidc import CALLBACK_PATH, LOGIN_PATH, OIDC_COOKIE, OidcSignIn, SignInRefused
from ordersync.dashboard.products import cached_products
from ordersync.dashboard.query import (
    AMAZON_ORDER_ID,
    FAILED_STAGES,
    STATUSES,
    BadQuery,
    GridQuery,
    parse_filter,
    parse_grid_query,
)
from ordersync.documents import PDF, DocumentNotFound, document_store
from ordersync.errors import AmazonApiError, AmazonRejected, ConfigurationError, PipelineError
from ordersync.kafka.admin import KafkaHealth, kafka_health
from ordersync.logs import EveryInterval, remember_secrets
from ordersync.ops.alerts import AlertBook
from ordersync.ops.amazon_check import SingleCallLimiter, check_limiter, run_check
from ordersync.ops.audit import (
    ACTIONS,
    OUTCOMES,
    AuditLog,
    AuditPage,
    AuditSender,
    AuditSink,
    KafkaAuditSink,
    new_entry,
)
from ordersync.ops.listings import load_listings
from ordersync.ops.replay import ReplayLedger, dead_letter_topics
from ordersync.ops.users import (
    ROLE_MEANINGS,
    ROLES,
    Role,
    SessionStore,
    SignInThrottle,
    User,
    UserNotFound,
    UserProblem,
    UserStore,
    checked_name,
)
from ordersync.pipeline.schedule import SCHEDULABLE, TaskRequestRejected, every, publish_task_request
from ordersync.privacy.keyring import KeyRing, open_key_ring
from ordersync.privacy.reader import BuyerData, buyer_data
from ordersync.redis_client import redis_client
from ordersync.schemas.events import AuditOutcome
from ordersync.secret_store import SecretStore, open_channel_secrets, open_secret_store
from ordersync.settings import Region, Settings, get_settings
from ordersync.state import keys
from ordersync.state.channel_registry import ChannelRegistry, save_channel
from ordersync.state.health import ApiHealth, HealthBoard
from ordersync.state.heartbeats import heartbeats
from ordersync.state.listings import COLUMNS as LISTING_FILE_COLUMNS
from ordersync.state.listings import (
    ListingRow,
    ListingsRejected,
    listing_rows,
    matches,
    parse_listing,
    parse_listings_csv,
)
from ordersync.state.readmodel import (
    DEADLINES,
    EASY_SHIP_STATES,
    OrderDetail,
    OrderFilter,
    OrdersPage,
    ReadModel,
    write_orders_csv,
)
from ordersync.state.readmodel.export import PersonalOpener
from ordersync.state.store import Store
from ordersync.state.trends import RANGE_TITLES, RANGES, Trends, TrendStore, parse_range

log = logging.getLogger(__name__)

#: How long a Synchronize now waits for Kafka before the page says it was not asked.
TASK_REQUEST_WAIT_S = 6.0
#: Listings shown per page, and the largest listings file the page takes (about 200,000 rows).
LISTINGS_PAGE = 100
LISTINGS_UPLOAD_LIMIT = 20_000_000
#: How long the Kafka health the pages show is reused, and how long one look may take.
KAFKA_HEALTH_TTL_S = 15.0
KAFKA_HEALTH_TIMEOUT_S = 3.0

_STATIC = Path(__file__).parent / "static"
#: Bumped with the static files, so browsers never mix an old script with a new page.
_ASSET_VERSION = "5"
#: The reader's time zone (an IANA name), for every time the pages show and the dates the filter takes.
TZ_COOKIE = "ordersync_tz"
#: Operator commands shown on the Tasks page.
_COMMANDS_SHOWN = 20
_NOTIFICATIONS_SHOWN = 200
#: Resolved alerts shown on the notifications page.
_RESOLVED_SHOWN = 20
_CSV_CHUNK = 16 * 1024

_SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


class _SecurityHeaders:
    """Strict headers on every answer; no caching of order data (pages, API, CSV)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        is_static = str(scope.get("path", "")).startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += _SECURITY_HEADERS
                if not is_static:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


class _SameOriginWrites:
    """Refuses (403) a state-changing request (POST: sign-in, sign-out, actions) that a page on another
    site sent: its ``Origin`` (or, without one, ``Sec-Fetch-Site``) must say it came from this site.
    Sign-in needs it most (login CSRF: another site signing the operator in under its own token)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method") not in ("GET", "HEAD", "OPTIONS"):
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            if not _same_origin(headers):
                response = PlainTextResponse("cross-site request refused", status_code=403)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _same_origin(headers: dict[str, str]) -> bool:
    """Whether a request's headers say it came from a page of this site (or from no page at all: curl
    and scripts send neither ``Origin`` nor ``Sec-Fetch-Site``). A form posted by one of this site's
    pages says ``Origin: null`` (the pages' ``Referrer-Policy: no-referrer``): then the browser's own
    ``Sec-Fetch-Site``, which no page can set, decides, and without it the request is refused."""
    origin = headers.get("origin")
    fetch_site = headers.get("sec-fetch-site")
    if origin == "null":
        return fetch_site == "same-origin"
    if origin is None:
        return (fetch_site or "same-origin") in ("same-origin", "none")
    host = headers.get("host", "")
    return urlsplit(origin).netloc.lower() == host.lower()


@dataclass
class _Deps:
    redis: aioredis.Redis
    model: ReadModel
    board: HealthBoard
    #: The channels: the file's (empty when it is missing or invalid) merged with the channel registry's,
    #: followed while the dashboard runs.
    registry: ChannelRegistry
    channels_problem: str | None
    users: UserStore
    sessions: SessionStore
    throttle: SignInThrottle
    audit: AuditLog
    sender: AuditSender

    @property
    def channels(self) -> ChannelsFile | None:
        """The effective channels; None only when the file is not loaded and no channel is known."""
        snapshot = self.registry.snapshot
        if self.channels_problem is not None and not snapshot.channels:
            return None
        return snapshot


def _load_channels(settings: Settings) -> tuple[ChannelsFile | None, str | None]:
    try:
        return load_channels(settings.channels_file), None
    except ConfigurationError as exc:
        # The grid still works from the read model; actions are checked against the channels file.
        log.warning("dashboard without a channels file: %s", exc)
        return None, str(exc)


@lru_cache(maxsize=1)
def time_zone_names() -> tuple[str, ...]:
    """The IANA time zones this machine knows (``zoneinfo``), UTC first."""
    return ("UTC", *sorted(name for name in available_timezones() if name != "UTC"))


def time_zone(name: str | None) -> tzinfo | None:
    """The IANA time zone ``name``; None when it is not one."""
    if not name or len(name) > 64 or ".." in name or name.startswith("/"):
        return None
    if name == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _format_time(value: datetime | None, tz: tzinfo = UTC) -> str:
    if value is None:
        return ""
    local = value.astimezone(tz)
    return local.strftime("%Y-%m-%d %H:%M:%S ") + (local.tzname() or "UTC")


def _format_short_time(value: datetime | None, tz: tzinfo = UTC) -> str:
    return "" if value is None else value.astimezone(tz).strftime("%Y-%m-%d %H:%M")


def _format_iso(value: str | None, tz: tzinfo = UTC) -> str:
    """An ISO time of the read model's dicts, like every other time of the page."""
    parsed = _iso_time(value) if value else None
    return _format_time(parsed, tz) if parsed else (value or "")


def _tz(context: Context) -> tzinfo:
    found = context.get("tz")
    return found if isinstance(found, tzinfo) else UTC


#: What the grid's Easy Ship filter is called.
EASY_SHIP_LABELS: dict[str, str] = {"awaiting-pickup": "Packed, awaiting pickup"}
_DOCUMENT_TYPE_LABELS = {"ShippingLabel": "shipping label", "Invoice": "invoice", "Warranty": "warranty"}


def _document_label(types: Sequence[str]) -> str:
    return ", ".join(_DOCUMENT_TYPE_LABELS.get(t, t) for t in types) or "documents"


def _file_part(text: str) -> str:
    """``text`` made safe for a file name in a header: letters, digits, dot, dash and underscore."""
    return "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "_" for c in text)[:100]


def _recorded_document(detail: OrderDetail | None, reference: str) -> dict[str, Any] | None:
    """The order's stored document of Amazon's ``reference``, as its state recorded it, or None."""
    if detail is None or detail.easy_ship is None:
        return None
    for document in detail.easy_ship.get("documents") or ():
        if document.get("report_reference_id") == reference and document.get("location"):
            return cast(dict[str, Any], document)
    return None


def _format_value(value: Any, tz: tzinfo = UTC) -> str:
    text: str
    if value is None:
        text = ""
    elif isinstance(value, datetime):
        text = _format_time(value, tz)
    elif isinstance(value, str):
        # Times in the read model's dicts are ISO strings; show them like every other time.
        text = _format_time(parsed, tz) if (parsed := _iso_time(value)) else value
    elif isinstance(value, list | tuple) and value and all(_is_item_quantity(v) for v in value):
        text = ", ".join(f"{v['order_item_id']} \u00d7{v['quantity']}" for v in value)
    elif isinstance(value, dict | list | tuple):
        text = json.dumps(value, default=str, ensure_ascii=False)
    else:
        text = str(value)
    return text


def _is_item_quantity(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"order_item_id", "quantity"}


def _iso_time(value: str) -> datetime | None:
    if len(value) < 19 or value[4] != "-" or value[10] != "T":
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


#: Columns a person looks for first in the detail's tables; any other key the read model gives follows.
_FIRST_COLUMNS: tuple[str, ...] = (
    "at",
    "stage",
    "order_item_id",
    "seller_sku",
    "package_reference_id",
    "status",
    "carrier_code",
    "carrier_name",
    "shipping_method",
    "tracking_number",
    "ship_date",
    "items",
    "attempts",
    "code",
    "message",
    "error_code",
    "error_message",
)


def _columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Every key of ``rows``: the usual ones first, then the others in the order first seen (the read
    model decides what a line, a package or an error holds)."""
    keys = {key for row in rows for key in row}
    seen: dict[str, None] = {key: None for key in _FIRST_COLUMNS if key in keys}
    for row in rows:
        for key in row:
            seen.setdefault(key, None)
    return list(seen)


def _heading(key: str) -> str:
    return key.replace("_", " ").capitalize()


def _templates() -> Environment:
    env = Environment(
        loader=PackageLoader("ordersync.dashboard", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    # Every time in the reader's time zone (the page's ``tz``; UTC when none).
    env.filters["time"] = pass_context(lambda c, v: _format_time(v, _tz(c)))
    env.filters["short_time"] = pass_context(lambda c, v: _format_short_time(v, _tz(c)))
    env.filters["value"] = pass_context(lambda c, v: _format_value(v, _tz(c)))
    env.filters["iso_time"] = pass_context(lambda c, v: _format_iso(v, _tz(c)))
    env.filters["document_label"] = _document_label
    env.filters["every"] = every
    env.filters["heading"] = _heading
    env.globals["columns"] = _columns
    env.globals["asset_version"] = _ASSET_VERSION
    return env


def _group_health(health: Sequence[ApiHealth]) -> list[dict[str, Any]]:
    accounts: dict[tuple[str, str], dict[str, ApiHealth]] = {}
    for item in health:
        accounts.setdefault((item.channel, item.seller_id), {})[item.api] = item
    return [
        {"channel": channel, "seller_id": seller, "apis": apis}
        for (channel, seller), apis in sorted(accounts.items())
    ]


def _safe_next(target: str | None) -> str:
    # Only a path of this site: never an open redirect to another host.
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _api_error(status_code: int, message: str, problems: Sequence[str] = ()) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if problems:
        body["problems"] = list(problems)
    return JSONResponse(body, status_code=status_code)


def _client(request: Request) -> str:
    return request.client.host if request.client else "?"


#: The listings grid's columns: (field, heading).
LISTING_COLUMNS = (
    ("seller_sku", "Seller SKU"),
    ("stock_code", "Stock code"),
    ("asin", "ASIN"),
    ("ean", "EAN"),
    ("channel_serial_no", "Channel serial no."),
    ("channel_sku_id", "Channel SKU id"),
)


@dataclass(frozen=True)
class ListingsPage:
    query: str
    offset: int
    limit: int
    total: int
    rows: tuple[ListingRow, ...]


class _AuthorizationFailed(Exception):
    """An authorization that ends on an error page (and in the audit as ``outcome``)."""

    def __init__(self, status_code: int, outcome: AuditOutcome, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.outcome = outcome
        self.message = message


#: A channel's name (as :class:`Channel` takes it).
CHANNEL_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
#: What the page's "New channel" form starts from.
NEW_CHANNEL_YAML = """name: new-channel
seller_id: A1SELLERID
region: na
marketplaces: [ATVPDKIKX0DER]
active: true
orders_api: "2026-01-01"
credentials:                  # by reference; or type them below (kept in the secret store)
  client_id: {env: NEW_LWA_CLIENT_ID}
  client_secret: {env: NEW_LWA_CLIENT_SECRET}
  refresh_token: {store: channels/new-channel/refresh_token}
"""


class _BadBody(ValueError):
    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code


async def _json_body(request: Request, limit: int = MAX_ACTION_BODY) -> Any:
    """The request's JSON body, refused when it is not JSON or larger than ``limit`` bytes."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise _BadBody(415, "send the action as application/json")
    too_large = _BadBody(413, f"the request is larger than {limit} bytes")
    declared = request.headers.get("content-length", "0")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    raw = await request.body()
    if len(raw) > limit:
        raise too_large
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise _BadBody(400, "the body is not JSON") from None


class _Dashboard:
    """The endpoints, sharing the settings, the templates and (from startup) Redis."""

    def __init__(self, settings: Settings, clock: Clock, audit_sink: AuditSink | None = None) -> None:
        self.settings = settings
        self.clock = clock
        self.dashboard = settings.dashboard
        self.templates = _templates()
        self._ring: KeyRing | None = None
        self._ring_lock = asyncio.Lock()
        self._kafka_seen: tuple[float, KafkaHealth] | None = None
        self._kafka_lock = asyncio.Lock()
        self._ring_stack = AsyncExitStack()
        self._audit_sink = audit_sink
        self._store: SecretStore | None = None
        self._store_lock = asyncio.Lock()
        oidc = settings.dashboard.oidc
        self.oidc = OidcSignIn(oidc, settings.redis.key_prefix) if oidc.issuer is not None else None

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        redis = redis_client(self.settings.redis)
        prefix = self.settings.redis.key_prefix
        channels, problem = _load_channels(self.settings)
        registry = ChannelRegistry(
            channels if channels is not None else ChannelsFile(channels=()),
            settings=self.settings,
            redis=lambda: redis,
        )
        audit = AuditLog(redis, prefix, kept=self.dashboard.audit_kept)
        sender = AuditSender(audit, self._audit_sink or KafkaAuditSink(self.settings))
        app.state.deps = _Deps(
            redis=redis,
            model=ReadModel(
                redis,
                prefix,
                clock=self.clock,
                ship_by_lead=timedelta(seconds=self.settings.health.ship_by_lead_s),
            ),
            board=HealthBoard(redis, prefix, self.settings.health),
            registry=registry,
            channels_problem=problem,
            users=UserStore(redis, prefix, clock=self.clock),
            sessions=SessionStore(
                redis, prefix, idle_s=self.dashboard.session_idle_s, max_s=self.dashboard.session_max_s
            ),
            throttle=SignInThrottle(
                redis,
                prefix,
                max_failures=self.dashboard.sign_in_failures,
                lock_s=self.dashboard.sign_in_lock_s,
            ),
            audit=audit,
            sender=sender,
        )
        # Entries left unsent (Kafka was down, the CLI could not send its own) go out from startup on.
        sender.start()
        following = asyncio.create_task(
            registry.follow(self.settings.stage.channel_refresh_s, self._registry_survive(registry, redis))
        )
        try:
            yield
        finally:
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await following
            await sender.stop()
            await redis.aclose()
            await self._ring_stack.aclose()

    @staticmethod
    def deps(request: Request) -> _Deps:
        found: _Deps = request.app.state.deps
        return found

    # --- rendering ---------------------------------------------------------------------------------

    def page(self, request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        tz = self.zone(request)
        principal = principal_of(request)
        accounts = has_accounts(request)
        can_act, why_not = self.act_permission(principal, accounts)
        html = self.templates.get_template(name).render(
            request_path=request.url.path,
            request_target=request.url.path + (f"?{request.url.query}" if request.url.query else ""),
            read_protected=self.dashboard.read_token is not None or accounts,
            actions_enabled=can_act,
            actions_refusal=why_not,
            # Without accounts the page asks for the operator token and the operator's name.
            token_mode=principal.via != "session" and not accounts,
            principal=principal,
            accounts=accounts,
            csrf_token=principal.session.csrf_token if principal.session is not None else "",
            csrf_field=CSRF_FIELD,
            action_labels=ACTION_LABELS,
            allowed_actions=allowed_actions,
            action_refusal=action_refusal,
            tz=tz,
            tz_name=str(tz) if tz is not UTC else "UTC",
            time_zones=time_zone_names(),
            **context,
        )
        return HTMLResponse(html, status_code=status_code)

    @staticmethod
    def zone(request: Request) -> tzinfo:
        """The reader's time zone: the cookie's, UTC when none (or not a time zone)."""
        return time_zone(request.cookies.get(TZ_COOKIE)) or UTC

    async def set_time_zone(self, request: Request) -> Response:
        """``POST /preferences/timezone`` (tz, next): the reader's time zone, kept in a cookie."""
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        name = (form.get("tz") or [""])[0].strip()
        target = _safe_next((form.get("next") or ["/"])[0])
        if time_zone(name) is None:
            message = f"{name[:64]!r} is not an IANA time zone (e.g. Europe/Berlin, America/New_York, UTC)"
            return self.page(request, "error.html", 400, message=message, health=None)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            TZ_COOKIE,
            name,
            max_age=400 * 86400,
            httponly=True,
            samesite="strict",
            secure=self.dashboard.cookie_secure,
            path="/",
        )
        return response

    # --- access --------------------------------------------------------------------------------------

    async def identify(self, request: Request) -> Principal:
        """Who asks (kept in ``request.state.principal``): a signed-in user (their session still live,
        their account enabled), else the shared tokens, else open reading when nothing protects it."""
        d = self.deps(request)
        accounts = await d.users.any()
        request.state.accounts = accounts
        principal = await self._identified(request, d, accounts)
        request.state.principal = principal
        return principal

    async def _identified(self, request: Request, d: _Deps, accounts: bool) -> Principal:
        session_id = request.cookies.get(SESSION_COOKIE)
        if session_id:
            background = request.headers.get(BACKGROUND_HEADER) == "1"
            session = await d.sessions.get(session_id, self.clock.now(), touch=not background)
            user = await d.users.get(session.user) if session is not None else None
            if session is not None and user is not None and not user.disabled:
                return Principal(user.name, user.role, "session", session=session)
            if session is not None:
                await d.sessions.end(session_id)  # the account went away or was disabled meanwhile
        role, access = token_role(request, self.dashboard)
        if role is not None:
            return Principal(API_CLIENT if role == "operator" else READER, role, "token")
        if not accounts and self.dashboard.read_token is None:
            return Principal(ANONYMOUS, "viewer", "open")
        if access == "refused":
            log.warning("dashboard: reading refused, wrong token, from %s", _client(request))
        return Principal(ANONYMOUS, None, "none", refusal=access, session_ended=bool(session_id))

    def act_permission(self, principal: Principal, accounts: bool) -> tuple[bool, str | None]:
        """Whether the page offers actions to this reader, and why not (the disabled buttons' title)."""
        if principal.via == "session":
            if principal.may("operator"):
                return True, None
            return False, f"Your role ({principal.role}) may not act: an operator or an admin may."
        if accounts:
            return False, "Sign in as an operator to act."
        if self.dashboard.operator_token is None:
            return False, ACTIONS_DISABLED[0].upper() + ACTIONS_DISABLED[1:] + "."
        return True, None

    def refuse_reading(self, request: Request, *, api: bool) -> Response | None:
        principal = principal_of(request)
        if principal.role is not None:
            return None
        status_code = 401 if principal.refusal == "missing" else 403
        if principal.refusal == "refused":
            message = "the token is not valid"
        elif principal.session_ended:
            message = "your session has ended: sign in again"
        elif has_accounts(request):
            message = "sign in to read the dashboard"
        else:
            message = "a read token is needed"
        if api:
            response = _api_error(status_code, message)
            if status_code == 401:
                response.headers["WWW-Authenticate"] = 'Bearer realm="ordersync dashboard"'
            return response
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return self.login_page(request, status_code, next=target, error=message)

    def refuse_role(self, request: Request, needed: Role, what: str, *, api: bool) -> Response | None:
        """Refuses a reader whose role is below ``needed`` (after :meth:`refuse_reading`)."""
        if refused := self.refuse_reading(request, api=api):
            return refused
        principal = principal_of(request)
        if principal.may(needed):
            return None
        message = role_refusal(principal, needed, what)
        if api:
            return _api_error(403, message)
        return self.page(request, "error.html", 403, message=message, health=None)

    async def admit(
        self, request: Request, needed: Role | None, what: str, audited: Guard | None
    ) -> Response | None:
        """Admit a state-changing request, or refuse it (403; 401 for a session that has ended) and
        audit the refusal. The operator token in ``X-Operator-Token`` acts as ``api-token`` with the
        operator role (a header another site cannot make a browser send: no CSRF token needed); a
        signed-in user needs the session's CSRF token and a role of at least ``needed``. The admitted
        principal is ``request.state.actor``."""
        principal = principal_of(request)
        if needed is not None and request.headers.get(OPERATOR_HEADER, "").strip():
            actor, refusal = self._token_admission(request, needed, what)
        elif principal.via == "session":
            actor, refusal = principal, await self._session_refusal(request, principal, needed, what)
        elif needed is None:
            actor, refusal = principal, None
        else:
            actor, refusal = principal, self._anonymous_refusal(request, principal, what)
        if refusal is None:
            request.state.actor = actor
            return None
        status_code, message = refusal
        if audited is not None:
            action, targets = await audited(request)
            await self.audit(request, action, "refused", targets=targets, reason=message, actor=actor)
        if request.url.path.startswith("/api/"):
            return _api_error(status_code, message)
        return self.page(request, "error.html", status_code, message=message, health=None)

    def _token_admission(
        self, request: Request, needed: Role, what: str
    ) -> tuple[Principal, tuple[int, str] | None]:
        access = operator_access(request, self.dashboard)
        if access == "disabled":
            return TOKEN_GIVEN, (403, ACTIONS_DISABLED)
        if access != "granted":
            log.warning("dashboard: action refused, operator token not valid, from %s", _client(request))
            return TOKEN_GIVEN, (403, "the operator token is not valid")
        actor = Principal(API_CLIENT, "operator", "token")
        if not actor.may(needed):
            return actor, (403, f"{what} needs an admin's sign-in: the operator token has the operator role")
        return actor, None

    async def _session_refusal(
        self, request: Request, principal: Principal, needed: Role | None, what: str
    ) -> tuple[int, str] | None:
        session = principal.session
        if session is None or not session.csrf_matches(await csrf_given(request)):
            log.warning(
                "dashboard: %s %s by %s refused: CSRF token missing or wrong",
                request.method,
                request.url.path,
                principal.name,
            )
            return 403, "the CSRF token is missing or wrong: reload the page and try again"
        if needed is not None and not principal.may(needed):
            return 403, role_refusal(principal, needed, what)
        return None

    def _anonymous_refusal(self, request: Request, principal: Principal, what: str) -> tuple[int, str]:
        if principal.session_ended:
            return 401, "your session has ended: sign in again"
        if has_accounts(request):
            return 403, f"sign in as an operator to {what} (or send the operator token)"
        if self.dashboard.operator_token is None:
            return 403, ACTIONS_DISABLED
        log.warning("dashboard: action refused, operator token missing, from %s", _client(request))
        return 403, "the operator token is missing"

    async def audit(
        self,
        request: Request,
        action: str,
        outcome: AuditOutcome,
        *,
        targets: Iterable[str] = (),
        reason: str = "",
        detail: str = "",
        actor: Principal | None = None,
    ) -> None:
        """Record an audit entry for this request (who: ``actor``, else the admitted principal)."""
        who = actor or actor_of(request)
        d = self.deps(request)
        entry = new_entry(
            actor=who.name,
            role=who.role,
            via="api" if who.via == "token" else "dashboard",
            action=action,
            outcome=outcome,
            at=self.clock.now(),
            targets=targets,
            reason=reason,
            detail=detail,
            client=_client(request),
        )
        await d.audit.record(entry)
        d.sender.wake()
        log.info(
            "audit: %s by %s: %s%s (%d target(s))",
            action,
            entry.actor,
            outcome,
            f" ({reason[:200]})" if reason else "",
            len(entry.targets),
        )

    def may_see_personal(self, request: Request) -> bool:
        """Buyers' personal data: for operators and admins (the operator token included)."""
        return principal_of(request).may("operator")

    # --- buyers' personal data ------------------------------------------------------------------------

    async def key_ring(self) -> KeyRing | None:
        """The personal data keys, opened on first need; None where no key-encryption key is set."""
        if not self.settings.privacy.wraps_keys:
            return None
        async with self._ring_lock:
            if self._ring is None:
                self._ring = await open_key_ring(
                    self.settings.privacy, self.settings.aws, self.clock, self._ring_stack
                )
            return self._ring

    async def buyer(self, request: Request, seller_id: str, order_id: str, purpose: str) -> BuyerData:
        """The order's personal data for this request: opened for the operator, hidden for others."""
        if not self.may_see_personal(request):
            principal = principal_of(request)
            if principal.via == "session":
                note = f"your role ({principal.role}) may not see it: an operator or an admin may"
            elif has_accounts(request):
                note = "sign in as an operator to see the buyer's name and address"
            elif self.dashboard.operator_token is not None:
                note = "sign in with the operator token to see the buyer's name and address"
            else:
                note = "no operator token is configured, so nobody may see it here"
            return BuyerData("hidden", note=note)
        redis = self.deps(request).redis
        order = await Store(redis, self.settings.redis.key_prefix).sales_order(seller_id, order_id)
        try:
            ring = await self.key_ring()
        except (ConfigurationError, BotoCoreError, ClientError) as exc:
            log.warning("dashboard: the personal data key store is unavailable: %s", exc)
            return BuyerData("no key", note=f"the key store is unavailable ({type(exc).__name__})")
        reader = f"dashboard {principal_of(request).name} at {_client(request)}"
        return await buyer_data(order, ring, reader=reader, purpose=purpose)

    # --- shared page parts ---------------------------------------------------------------------------

    async def known_accounts(self, d: _Deps) -> list[tuple[str, str]]:
        """Accounts of the channels file, of the read model and of the health board."""
        accounts: set[tuple[str, str]] = set()
        if d.channels is not None:
            accounts.update((c.name, c.seller_id) for c in d.channels.channels)
        accounts.update(await d.model.sellers())
        accounts.update(await d.board.accounts())
        return sorted(accounts)

    async def shell(self, d: _Deps) -> dict[str, Any]:
        """What every page shows around its content: the status key."""
        return {
            "health": _group_health(await d.board.api_health(await self.known_accounts(d))),
            "timeliness": {(t.channel, t.seller_id): t for t in await d.model.shipment_timeliness()},
            # The one count of orders per status (the CLI's `ordersync status` reads the same).
            "status_counts": await d.model.status_counts(),
            "api_names": API_NAMES,
            "api_titles": API_TITLES,
            "channels_problem": d.channels_problem,
        }

    def default_query(self) -> GridQuery:
        return GridQuery(limit=min(self.dashboard.page_sizes[0], self.dashboard.max_page_size))

    # --- pages ---------------------------------------------------------------------------------------

    async def orders_page(self, request: Request) -> Response:
        if refused := self.refuse_reading(request, api=False):
            return refused
        d = self.deps(request)
        error: str | None = None
        try:
            query = parse_grid_query(request.query_params, self.dashboard, self.zone(request))
        except BadQuery as exc:
            error, query = str(exc), self.default_query()
        if error is None:
            result = await d.model.orders(
                query.filter,
                sort=query.sort,
                descending=query.descending,
                offset=query.offset,
                limit=query.limit,
            )
        else:
            # A filter that is not valid lists nothing (never every order as if there were no filter).
            result = OrdersPage(rows=(), total=0, offset=0, limit=query.limit)
        configured = d.channels.channels if d.channels else ()
        return self.page(
            request,
            "orders.html",
            400 if error else 200,
            tab="orders",
            query=query,
            result=result,
            error=error,
            raw_params=dict(request.query_params) if error else {},
            statuses=STATUSES,
            failed_stages=FAILED_STAGES,
            deadlines=DEADLINES,
            easy_ship_states=EASY_SHIP_STATES,
            easy_ship_labels=EASY_SHIP_LABELS,
            easy_ship_counts=await d.model.easy_ship_counts(),
            now=self.clock.now(),
            ship_by_lead_s=self.settings.health.ship_by_lead_s,
            sellers=await d.model.sellers(),
            marketplaces=sorted({m for c in configured for m in c.marketplaces}),
            page_sizes=[s for s in self.dashboard.page_sizes if s <= self.dashboard.max_page_size],
            **await self.shell(d),
        )

    async def order_page(self, request: Request) -> Response:
        if refused := self.refuse_reading(request, api=False):
            return refused
        d = self.deps(request)
        seller_id, order_id = request.path_params["seller_id"], request.path_params["order_id"]
        detail = await d.model.order(seller_id, order_id) if AMAZON_ORDER_ID.match(order_id) else None
        buyer = await self.buyer(request, seller_id, order_id, "order page") if detail is not None else None
        products = (
            await cached_products(
                d.redis, self.settings.redis.key_prefix, detail.row.marketplace_id, seller_id, detail.lines
            )
            if detail is not None
            else []
        )
        return self.page(
            request,
            "order.html",
            200 if detail is not None else 404,
            tab="orders",
            detail=detail,
            buyer=buyer,
            products=products,
            seller_id=seller_id,
            order_id=order_id,
            **await self.shell(d),
        )

    async def order_document(self, request: Request) -> Response:
        """An Easy Ship PDF of the order (label, invoice), read from the document store: only at a
        location the order's state recorded for that reference, never one the request names."""
        if refused := self.refuse_reading(request, api=False):
            return refused
        if not self.may_see_personal(request):
            # The label and invoice print the buyer's name and address: as the buyer's section, only
            # for the operator.
            message = (
                "the documents hold the buyer's name and address: sign in as an operator (or with the"
                " operator token)"
            )
            return self.page(request, "error.html", 403, message=message, health=None)
        d = self.deps(request)
        seller_id, order_id = request.path_params["seller_id"], request.path_params["order_id"]
        reference = request.path_params["reference"]
        detail = await d.model.order(seller_id, order_id) if AMAZON_ORDER_ID.match(order_id) else None
        document = _recorded_document(detail, reference)
        missing = f"order {order_id[:40]} of seller {seller_id[:40]} has no stored document {reference[:60]}"
        if document is None:
            return self.page(request, "error.html", 404, message=missing, health=None)
        try:
            async with document_store(self.settings) as store:
                content = await store.get(str(document["location"]))
        except DocumentNotFound:
            log.warning("dashboard: document %s of order %s is not in the store", reference, order_id)
            return self.page(request, "error.html", 404, message=missing + " (not in the store)", health=None)
        except (BotoCoreError, ClientError) as exc:
            log.warning("dashboard: the document store is unavailable: %s", exc)
            message = f"the document store is unavailable ({type(exc).__name__})"
            return self.page(request, "error.html", 503, message=message, health=None)
        # The PDFs carry the buyer's name and address: every serving is logged.
        log.info(
            "dashboard: Easy Ship document %s of order %s served to %s", reference, order_id, _client(request)
        )
        filename = f"{order_id}-{_file_part(reference)}.pdf"
        disposition = {"content-disposition": f"inline; filename={filename}"}
        return Response(content, media_type=PDF, headers=disposition)

    async def tasks_page(self, request: Request) -> Response:
        if refused := self.refuse_reading(request, api=False):
            return refused
        d = self.deps(request)
        tasks = await d.model.tasks()
        commands = await d.model.recent_commands(_COMMANDS_SHOWN)
        # A command task's result as the outcomes tell it: the latest command of that name and channel.
        latest: dict[tuple[str, str], Any] = {}
        for command in commands:
            latest.setdefault((command.command or "", command.channel or ""), command)
        return self.page(
            request,
            "tasks.html",
            tab="tasks",
            tasks=tasks,
            schedulable=SCHEDULABLE,
            commands=commands,
            command_results=latest,
            **await self.shell(d),
        )

    async def api_task_run(self, request: Request) -> Response:
        """Synchronize now: ``{"task", "channel", "operator"}`` (a signed-in operator, whose name is used,
        or the operator token with the ``operator`` given) published on ``ops.task-requests``; the
        stage that owns the task runs it at once (:mod:`ordersync.pipeline.schedule`). 404: no such task
        or channel; 422: a channel not active; 503: Kafka did not take it."""
        try:
            body = await _json_body(request)
        except _BadBody as exc:
            return _api_error(exc.status_code, str(exc))
        body = body if isinstance(body, dict) else {}
        task, channel = body.get("task"), body.get("channel")
        targets = task_targets(body)
        operator = self.operator_of(request, body.get("operator"))
        if not isinstance(task, str) or not isinstance(channel, str) or not operator:
            message = "give task, channel and operator"
            await self.audit(request, "task.run", "refused", targets=targets, reason=message)
            return _api_error(422, message)
        if task not in SCHEDULABLE:
            message = f"no task {task[:64]!r} can run now; tasks: {', '.join(SCHEDULABLE)}"
            await self.audit(request, "task.run", "refused", targets=targets, reason=message)
            return _api_error(404, message)
        try:
            # Bounded: the operator waits for the answer (Kafka down: 503 within seconds).
            event_id = await run_in_threadpool(
                publish_task_request,
                self.settings,
                task,
                channel,
                operator=operator,
                wait_s=TASK_REQUEST_WAIT_S,
                client_id="ordersync-dashboard",
            )
        except TaskRequestRejected as exc:
            status = 404 if "no channel named" in str(exc) else 422
            await self.audit(request, "task.run", "refused", targets=targets, reason=str(exc))
            return _api_error(status, str(exc))
        except KafkaError as exc:
            reason = f"Kafka did not take the request ({type(exc).__name__}: {exc})"
            log.warning("dashboard: run of %s on %s not asked: %s", task, channel, type(exc).__name__)
            await self.audit(request, "task.run", "failed", targets=targets, reason=reason)
            return _api_error(503, reason)
        log.info("dashboard: run of %s on %s asked by %s as event %s", task, channel, operator, event_id)
        await self.audit(
            request, "task.run", "sent", targets=targets, detail=self_declared(request, operator)
        )
        stage = SCHEDULABLE[task].stage
        return JSONResponse({"task": task, "channel": channel, "stage": stage, "event_id": event_id})

    async def notifications_page(self, request: Request) -> Response:
        if refused := self.refuse_reading(request, api=False):
            return refused
        d = self.deps(request)
        notifications = await d.board.notifications(_NOTIFICATIONS_SHOWN)
        book = AlertBook(d.redis, self.settings.redis.key_prefix)
        return self.page(
            request,
            "notifications.html",
            tab="notifications",
            notifications=notifications,
            alerts=await book.active(),
            resolved=await book.history(_RESOLVED_SHOWN),
            workers=await self.workers(d),
            kafka=await self.kafka(),
            settings_stage_silent_s=round(self.settings.alerts.stage_silent_s),
            **await self.shell(d),
        )

    async def kafka(self) -> KafkaHealth:
        """The cluster as one metadata request found it, at most ``KAFKA_HEALTH_TTL_S`` old: pages
        refreshed by many operators ask the broker once (in a thread; bounded by a few seconds)."""
        async with self._kafka_lock:
            seen = self._kafka_seen
            if seen is None or time.monotonic() - seen[0] > KAFKA_HEALTH_TTL_S:
                found = await run_in_threadpool(kafka_health, self.settings, KAFKA_HEALTH_TIMEOUT_S)
                seen = self._kafka_seen = (time.monotonic(), found)
            return seen[1]

    async def api_infrastructure(self, request: Request) -> Response:
        """``GET /api/infrastructure``: Kafka (reachable, brokers, catalogue topics missing), Redis (it
        answered, or this is a 503) and each stage worker's last heartbeat."""
        if refused := self.refuse_reading(request, api=True):
            return refused
        d = self.deps(request)
        await d.redis.ping()
        kafka = await self.kafka()
        workers = await self.workers(d)
        return JSONResponse(
            {
                "kafka": {
                    "bootstrap": kafka.bootstrap,
                    "reachable": kafka.reachable,
                    "brokers": kafka.brokers,
                    "missing_topics": list(kafka.missing_topics),
                    "error": kafka.error,
                    "summary": kafka.summary,
                },
                "redis": {"reachable": True},
                "workers": [{**w, "at": w["at"].isoformat()} for w in workers],
            }
        )

    async def workers(self, d: _Deps) -> list[dict[str, Any]]:
        """Each stage worker's last heartbeat (wall clock), and whether it is silent."""
        now = datetime.now(UTC)
        silent_s = self.settings.alerts.stage_silent_s
        rows = []
        for worker, beat in sorted((await heartbeats(d.redis, self.settings.redis.key_prefix)).items()):
            stage, _, name = worker.partition("|")
            age = (now - beat).total_seconds()
            rows.append(
                {"stage": stage, "worker": name, "at": beat, "age_s": round(age), "silent": age > silent_s}
            )
        return rows

    async def api_alerts(self, request: Request) -> Response:
        if refused := self.refuse_reading(request, api=True):
            return refused
        d = self.deps(request)
        book = AlertBook(d.redis, self.settings.redis.key_prefix)
        return JSONResponse(
            {
                "active": [r.model_dump(mode="json") for r in await book.active()],
                "resolved": [r.model_dump(mode="json") for r in await book.history(_RESOLVED_SHOWN)],
                "workers": [{**w, "at": w["at"].isoformat()} for w in await self.workers(d)],
            }
        )

    async def api_alert_actions(self, request: Request) -> Response:
        """Acknowledge or snooze an alert: ``{"fingerprint", "action": "acknowledge"|"snooze",
        "snooze_s", "operator"}`` (a signed-in operator, whose name is used, or the operator token with
        the ``operator`` given)."""
        try:
            body = await _json_body(request)
        except _BadBody as exc:
            return _api_error(exc.status_code, str(exc))
        if not isinstance(body, dict):
            body = {}
        fingerprint, action = body.get("fingerprint"), body.get("action")
        operator = self.operator_of(request, body.get("operator"))
        audited = f"alert.{action}" if action in ("acknowledge", "snooze") else "alert.invalid"
        targets = [fingerprint[:300]] if isinstance(fingerprint, str) else []
        if not isinstance(fingerprint, str) or action not in ("acknowledge", "snooze") or not operator:
            message = "give fingerprint, action (acknowledge or snooze) and operator"
            await self.audit(request, audited, "refused", targets=targets, reason=message)
            return _api_error(422, message)
        now = datetime.now(UTC)
        book = AlertBook(self.deps(request).redis, self.settings.redis.key_prefix)
        detail = self_declared(request, operator)
        try:
            if action == "snooze":
                snooze_s = body.get("snooze_s")
                if not isinstance(snooze_s, int) or not 60 <= snooze_s <= 30 * 86400:
                    message = "snooze_s: whole seconds, 60 to 2592000"
                    await self.audit(request, audited, "refused", targets=targets, reason=message)
                    return _api_error(422, message)
                record = await book.snooze(fingerprint, now + timedelta(seconds=snooze_s), operator, now)
                detail = f"for {snooze_s} s; {detail}".rstrip("; ")
            else:
                record = await book.acknowledge(fingerprint, operator, now)
        except KeyError:
            message = f"no alert {fingerprint[:120]!r} is firing (it may have resolved)"
            await self.audit(request, audited, "refused", targets=targets, reason=message)
            return _api_error(404, message)
        log.info("dashboard: alert %s %s by %s", fingerprint, action, operator)
        await self.audit(request, audited, "sent", targets=targets, detail=detail)
        return JSONResponse(record.model_dump(mode="json"))

    def operator_of(self, request: Request, given: object) -> str:
        """Who acts, as the events and the pages name them: the signed-in user (whatever the body
        says), else the name the operator token's client gives."""
        actor = actor_of(request)
        if actor.via == "session":
            return actor.name
        return str(given or "").strip()[:80]

    async def dead_letter_board(self, request: Request) -> DeadLetterBoard:
        params = request.query_params
        try:
            chosen = LetterFilter(
                stage=params.get("stage") or None,
                source_topic=params.get("source_topic") or None,
                error_type=params.get("error_type") or None,
                state=params.get("state") or "open",
            )
        except ValidationError as exc:
            raise _BadBody(400, f"filter: {exc.errors()[0]['msg']}") from None
        store = Store(self.deps(request).redis, self.settings.redis.key_prefix)
        ledger = ReplayLedger(store)
        entries = {spec.name: await ledger.replayed(spec.name) for spec in dead_letter_topics()}
        return await run_in_threadpool(load_board, self.settings, entries, chosen)

    async def dead_letters_page(self, request: Request) -> Response:
        if refused := self.refuse_reading(request, api=False):
            return refused
        d = self.deps(request)
        try:
            board = await self.dead_letter_board(request)
        except _BadBody as exc:
            return self.page(request, "error.html", exc.status_code, message=str(exc), health=None)
        except KafkaError as exc:
            message = f"the broker is unreachable ({type(exc).__name__}); dead letters cannot be read"
            return self.page(request, "error.html", 503, message=message, health=None)
        return self.page(
            request,
            "dead_letters.html",
            tab="dead-letters",
            board=board,
            chosen=dict(request.query_params),
            **await self.shell(d),
        )

    async def api_dead_letters(self, request: Request) -> Response:
        if refused := self.refuse_reading(request, api=True):
            return refused
        try:
            board = await self.dead_letter_board(request)
        except _BadBody as exc:
            return _api_error(exc.status_code, str(exc))
        except KafkaError as exc:
            return _api_error(503, f"the broker is unreachable ({type(exc).__name__})")
        return JSONResponse(board.model_dump(mode="json"))

    async def api_dead_letter_actions(self, request: Request) -> Response:
        try:
            body = await _json_body(request)
        except _BadBody as exc:
            return _api_error(exc.status_code, str(exc))
        audited, targets = letter_audit(body)
        if isinstance(body, dict):
            body = {**body, "operator": self.operator_of(request, body.get("operator"))}
        try:
            action = parse_letter_action(body)
        except ActionProblem as exc:
            await self.audit(request, audited, "refused", targets=targets, reason=str(exc))
            return _api_error(422, "nothing was done", [str(exc)])
        store = Store(self.deps(request).redis, self.settings.redis.key_prefix)
        try:
            outcome = await carry_out(self.settings, store, action, self.clock)
        except KafkaError as exc:
            message = f"the broker is unreachable ({type(exc).__name__}); it may be partly done"
            await self.audit(request, audited, "failed", targets=targets, reason=message)
            return _api_error(503, message)
        log.info(
            "dashboard: %s of %d dead letter(s) by %s: %d done",
            action.action,
            outcome.asked,
            action.operator,
            outcome.done,
        )
        detail = f"{outcome.done} of {outcome.asked} done"
        if outcome.missing:
            detail += f"; {len(outcome.missing)} not found"
        detail = "; ".join(part for part in (detail, self_declared(request, action.operator)) if part)
        await self.audit(request, audited, "sent", targets=targets, detail=detail)
        return JSONResponse(outcome.model_dump(mode="json"))

    # --- signing in and out -------------------------------------------------------------------------

    def login_page(self, request: Request, status_code: int = 200, **context: Any) -> HTMLResponse:
        context.setdefault("next", "/")
        return self.page(
            request,
            "login.html",
            status_code,
            token_sign_in=not has_accounts(request)
            and (self.dashboard.read_token is not None or self.dashboard.operator_token is not None),
            sso_name=self.dashboard.oidc.provider_name if self.oidc is not None else None,
            health=None,
            **context,
        )

    async def login(self, request: Request) -> Response:
        """``/login``: a user name and password (a session), or, where no account exists, a token (the
        read cookie)."""
        accounts = has_accounts(request)
        tokens = self.dashboard.read_token is not None or self.dashboard.operator_token is not None
        if not accounts and not tokens and self.oidc is None:
            return RedirectResponse("/", status_code=303)
        if request.method == "GET":
            return self.login_page(request, next=_safe_next(request.query_params.get("next")))
        form = await form_fields(request)
        target = _safe_next(form.get("next") or "/")
        if "username" not in form and "token" in form:
            return await self.token_login(request, form.get("token", ""), target)
        return await self.password_login(request, form.get("username", ""), form.get("password", ""), target)

    async def password_login(self, request: Request, name_given: str, password: str, target: str) -> Response:
        """A user's sign-in: refused while the name is locked, counted when wrong; a new session."""
        now = self.clock.now()
        d = self.deps(request)
        try:
            name = checked_name(name_given)
        except UserProblem:
            name = None
        wrong = "the user name or the password is wrong"
        if name is None or not password:
            await self.audit(
                request, "sign-in", "refused", reason="not a user name, or no password", actor=NOBODY
            )
            return self.login_page(request, 403, next=target, error=wrong, username=name_given[:64])
        known = await d.users.get(name) is not None
        who = Principal(name if known else "(unknown)", None, "none")
        locked = await d.throttle.locked_until(name, now)
        if locked is not None:
            minutes = max(1, round((locked - now).total_seconds() / 60))
            message = f"too many failed sign-ins for this user name: try again in {minutes} min"
            await self.audit(request, "sign-in", "refused", reason="user name locked", actor=who)
            log.warning("dashboard: sign-in of %s from %s refused: locked", who.name, _client(request))
            locked_page = self.login_page(request, 429, next=target, error=message, username=name)
            locked_page.headers["Retry-After"] = str(max(1, int((locked - now).total_seconds())))
            return locked_page
        user, why = await d.users.authenticate(name, password)
        if user is None:
            until = await d.throttle.failed(name, now)
            reason = why + (f"; the user name is locked until {until.isoformat()}" if until else "")
            await self.audit(request, "sign-in", "refused", reason=reason, actor=who)
            log.warning("dashboard: sign-in of %s from %s refused: %s", who.name, _client(request), why)
            return self.login_page(request, 403, next=target, error=wrong, username=name)
        await d.throttle.succeeded(name)
        return await self.start_session(request, user, RedirectResponse(target, status_code=303))

    async def start_session(
        self, request: Request, user: User, response: Response, detail: str = ""
    ) -> Response:
        """A new session of ``user`` (audited), its cookie set on ``response``."""
        d = self.deps(request)
        if old := request.cookies.get(SESSION_COOKIE):
            await d.sessions.end(old)  # a new session id at every sign-in (no fixation)
        session_id, _ = await d.sessions.create(user.name, self.clock.now())
        await self.audit(
            request, "sign-in", "sent", actor=Principal(user.name, user.role, "session"), detail=detail
        )
        response.set_cookie(
            SESSION_COOKIE,
            session_id,
            httponly=True,
            samesite="strict",
            secure=self.dashboard.cookie_secure,
            path="/",
        )
        response.delete_cookie(READ_COOKIE, path="/")
        return response

    async def token_login(self, request: Request, given: str, target: str) -> Response:
        """The sign-in of a setup without accounts: the read or operator token, kept as a keyed hash in
        the read cookie."""
        if has_accounts(request):
            message = "accounts are set up: sign in with your user name and password"
            await self.audit(request, "sign-in", "refused", reason=message, actor=TOKEN_GIVEN)
            return self.login_page(request, 403, next=target, error=message)
        token = login_token_valid(given, self.dashboard) if given else None
        if token is None:
            log.warning("dashboard: sign-in refused for %s", _client(request))
            await self.audit(
                request, "sign-in", "refused", reason="the token is not valid", actor=TOKEN_GIVEN
            )
            return self.login_page(request, 403, next=target, error="the token is not valid")
        is_operator = self.dashboard.operator_token is not None and token == self.dashboard.operator_token
        who = (
            Principal(API_CLIENT, "operator", "token")
            if is_operator
            else Principal(READER, "viewer", "token")
        )
        await self.audit(request, "sign-in", "sent", actor=who)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            READ_COOKIE,
            cookie_value(token),
            httponly=True,
            samesite="strict",
            secure=self.dashboard.cookie_secure,
            path="/",
        )
        return response

    async def oidc_login(self, request: Request) -> Response:
        """``GET /login/oidc?next=``: to the OpenID Connect provider (single sign-on, ``dashboard.oidc``;
        :mod:`ordersync.dashboard.oidc`), the flow kept in Redis and bound to this browser by a cookie."""
        if self.oidc is None:
            return self.page(request, "error.html", 404, message="single sign-on is not set up", health=None)
        target = _safe_next(request.query_params.get("next"))
        redirect_uri = self.dashboard.oidc.redirect_uri or str(request.base_url).rstrip("/") + CALLBACK_PATH
        try:
            url, binding = await self.oidc.begin(self.deps(request).redis, redirect_uri, target)
        except SignInRefused as exc:
            log.error("dashboard: single sign-on cannot start: %s", exc.reason)
            return self.login_page(request, exc.status_code, next=target, error=exc.message)
        response = RedirectResponse(url, status_code=303)
        response.set_cookie(
            OIDC_COOKIE,
            binding,
            max_age=self.dashboard.oidc.flow_max_age_s,
            httponly=True,
            samesite="lax",  # the provider's redirect back is cross-site: a Strict cookie would stay home
            secure=self.dashboard.cookie_secure,
            path=LOGIN_PATH,
        )
        return response

    async def oidc_callback(self, request: Request) -> Response:
        """``GET /login/oidc/callback?code=&state=``: the provider's redirect. The flow (once), this
        browser's binding, the ID token and the role the claims give decide; a new session as a password
        sign-in makes, audited (``sign-in``, detail ``method: oidc``) like every refusal."""
        if self.oidc is None:
            return self.page(request, "error.html", 404, message="single sign-on is not set up", health=None)
        d = self.deps(request)
        who = NOBODY
        try:
            signed = await self.oidc.finish(
                d.redis, request.query_params, request.cookies.get(OIDC_COOKIE, "")
            )
            who = Principal(signed.name, None, "none")
            if signed.role is None:
                raise SignInRefused(
                    403,
                    "your account at the sign-in provider has no role on this dashboard: ask an admin",
                    "no role mapped from the provider's claims, and no dashboard.oidc.default_role",
                )
            user, why = await d.users.single_sign_on(
                signed.name,
                signed.role,
                create=self.dashboard.oidc.auto_create,
                by=f"oidc:{signed.name}"[:80],
            )
            if user is None:
                raise SignInRefused(403, "you may not sign in to this dashboard: ask an admin", why)
        except (SignInRefused, UserProblem) as exc:
            refused = exc if isinstance(exc, SignInRefused) else SignInRefused(403, str(exc))
            await self.audit(
                request, "sign-in", "refused", reason=refused.reason[:500], detail="method: oidc", actor=who
            )
            log.warning(
                "dashboard: single sign-on of %s from %s refused: %s",
                who.name,
                _client(request),
                refused.reason,
            )
            page = self.login_page(request, refused.status_code, error=refused.message)
            page.delete_cookie(OIDC_COOKIE, path=LOGIN_PATH)
            return page
        # A page of this site goes on: after the provider's cross-site redirect, a redirect would not
        # carry the new SameSite=Strict session cookie to the target.
        target = _safe_next(signed.target)
        page = self.page(request, "signed_in_continue.html", target=target, health=None)
        response = await self.start_session(request, user, page, detail="method: oidc")
        response.delete_cookie(OIDC_COOKIE, path=LOGIN_PATH)
        return response

    async def logout(self, request: Request) -> Response:
        principal = principal_of(request)
        session_id = request.cookies.get(SESSION_COOKIE)
        if (session_id and await self.deps(request).sessions.end(session_id) is not None) or (
            principal.via == "token" and request.cookies.get(READ_COOKIE)
        ):
            await self.audit(request, "sign-out", "sent", actor=principal)
        protected = self.dashboard.read_token is not None or has_accounts(request)
        response = RedirectResponse("/login" if protected else "/", status_code=303)
        response.delete_cookie(READ_COOKIE, path="/")
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    # --- accounts (admins) ----------------------------------------------------------------------------

    async def users_page(self, request: Request) -> Response:
        if refused := self.refuse_role(request, "admin", "manage users", api=False):
            return refused
        d = self.deps(request)
        done = request.query_params.get("done")
        changed = request.query_params.get("user", "")
        notice = USER_NOTICES.get(done or "", "").format(user=changed) if safe_user(changed) else ""
        return self.page(
            request,
            "users.html",
            tab="users",
            users=await d.users.list(),
            roles=ROLES,
            role_meanings=ROLE_MEANINGS,
            notice=notice,
            **await self.shell(d),
        )

    async def users(self, request: Request) -> Response:
        return await (self.users_page(request) if request.method == "GET" else self.users_form(request))

    async def users_form(self, request: Request) -> Response:
        """The users page's forms: ``POST /users`` (add) and ``POST /users/{name}`` (``change``: role,
        disable, enable, password), then back to the page."""
        form = await form_fields(request)
        name = request.path_params.get("name")
        if name is None:
            change: dict[str, Any] = {"add": True, "name": form.get("name", ""), "role": form.get("role", "")}
            change["password"] = form.get("password", "")
        else:
            kind = form.get("change", "")
            change = {"name": name, kind: form.get(kind, "") if kind in ("role", "password") else True}
        status_code, message, user, done = await self.change_user(request, change)
        if user is None:
            d = self.deps(request)
            return self.page(
                request,
                "users.html",
                status_code,
                tab="users",
                users=await d.users.list(),
                roles=ROLES,
                role_meanings=ROLE_MEANINGS,
                error=message,
                **await self.shell(d),
            )
        return RedirectResponse(f"/users?done={done}&user={user.name}", status_code=303)

    async def api_users(self, request: Request) -> Response:
        if refused := self.refuse_role(request, "admin", "manage users", api=True):
            return refused
        users = await self.deps(request).users.list()
        return JSONResponse({"users": [u.public() for u in users]})

    async def api_user_change(self, request: Request) -> Response:
        """``POST /api/users`` ``{"name", "role", "password"}`` adds an account (201);
        ``POST /api/users/{name}`` with one of ``{"role"}``, ``{"disabled": true|false}``,
        ``{"password"}`` changes one."""
        try:
            body = await _json_body(request)
        except _BadBody as exc:
            return _api_error(exc.status_code, str(exc))
        if not isinstance(body, dict):
            return _api_error(422, "send a JSON object")
        name = request.path_params.get("name")
        if name is None:
            change = {"add": True, "name": body.get("name"), "role": body.get("role")}
            change["password"] = body.get("password")
        else:
            kinds = [k for k in ("role", "disabled", "password") if k in body]
            if len(kinds) != 1 or set(body) - {"role", "disabled", "password"}:
                message = "give exactly one of role, disabled (true or false), password"
                await self.audit(request, "user.invalid", "refused", targets=[name[:64]], reason=message)
                return _api_error(422, message)
            kind = kinds[0]
            if kind == "disabled":
                if not isinstance(body["disabled"], bool):
                    await self.audit(
                        request, "user.invalid", "refused", targets=[name[:64]], reason="disabled"
                    )
                    return _api_error(422, "disabled: true or false")
                change = {"name": name, "disable" if body["disabled"] else "enable": True}
            else:
                change = {"name": name, kind: body[kind]}
        status_code, message, user, _ = await self.change_user(request, change)
        if user is None:
            return _api_error(status_code, message)
        return JSONResponse(user.public(), status_code=status_code)

    async def change_user(
        self, request: Request, change: Mapping[str, Any]
    ) -> tuple[int, str, User | None, str]:
        """Carry out one change to the accounts and audit it: returns the answer's status, the problem
        (when refused), the account (None: refused) and what was done (for the page's notice)."""
        users = self.deps(request).users
        by = actor_of(request).name
        name = str(change.get("name") or "")[:64]
        kinds = [k for k in ("role", "disable", "enable", "password") if k in change]
        kind = "add" if "add" in change else kinds[0] if len(kinds) == 1 else "invalid"
        action = {
            "add": "user.add",
            "role": "user.role",
            "disable": "user.disable",
            "enable": "user.enable",
        }.get(kind, "user.password" if kind == "password" else "user.invalid")
        detail = ""
        try:
            if kind == "add":
                user = await users.add(
                    name, str(change.get("role") or ""), text_or_empty(change.get("password")), by
                )
                status_code, detail = 201, f"role {user.role}"
            elif kind == "role":
                before, user = await users.set_role(name, str(change.get("role") or ""), by)
                status_code = 200
                detail = f"{before} -> {user.role}" + ("; sessions ended" if before != user.role else "")
            elif kind in ("disable", "enable"):
                user = await users.set_disabled(name, kind == "disable", by)
                status_code, detail = 200, "sessions ended" if kind == "disable" else ""
            elif kind == "password":
                user = await users.set_password(name, text_or_empty(change.get("password")), by)
                status_code, detail = 200, "sessions ended"
            else:
                raise UserProblem("nothing to change")
        except UserNotFound as exc:
            await self.audit(request, action, "refused", targets=[name], reason=str(exc))
            return 404, str(exc), None, kind
        except UserProblem as exc:
            status_code = 409 if "exists already" in str(exc) else 422
            await self.audit(request, action, "refused", targets=[name], reason=str(exc))
            return status_code, str(exc), None, kind
        log.info("dashboard: %s %s by %s", action, user.name, by)
        await self.audit(request, action, "sent", targets=[user.name], detail=detail)
        return status_code, "", user, kind

    # --- the audit trail (operators and admins) --------------------------------------------------------

    async def audit_page(self, request: Request) -> Response:
        if refused := self.refuse_role(request, "operator", "see the audit trail", api=False):
            return refused
        d = self.deps(request)
        try:
            chosen, older, limit = audit_query(request.query_params, self.zone(request))
            page: AuditPage | None = await d.audit.page(chosen, older_than=older, limit=limit)
            error = None
        except ValueError as exc:
            page, error = None, str(exc)
        params = {k: v for k, v in request.query_params.items() if k != "older" and v}
        return self.page(
            request,
            "audit.html",
            400 if error else 200,
            tab="audit",
            audit=page,
            error=error,
            chosen=params,
            older_link="/audit?" + urlencode({**params, "older": page.older})
            if page and page.older
            else None,
            newest_link="/audit?" + urlencode(params) if request.query_params.get("older") else None,
            actions=ACTIONS,
            outcomes=OUTCOMES,
            user_names=[u.name for u in await d.users.list()],
            unsent=await d.audit.unsent_count(),
            **await self.shell(d),
        )

    async def api_audit(self, request: Request) -> Response:
        """``GET /api/audit``: entries newest first; filters ``user``, ``action`` (an action or its family,
        e.g. ``order``), ``outcome``, ``since``, ``until`` (ISO dates or date-times), paging with ``older``
        (the ``older`` of the answer) and ``limit``."""
        if refused := self.refuse_role(request, "operator", "see the audit trail", api=True):
            return refused
        d = self.deps(request)
        try:
            chosen, older, limit = audit_query(request.query_params, self.zone(request))
        except ValueError as exc:
            return _api_error(400, str(exc))
        page = await d.audit.page(chosen, older_than=older, limit=limit)
        return JSONResponse(
            {
                "entries": [{"id": sid, **entry.model_dump(mode="json")} for sid, entry in page.entries],
                "older": page.older,
                "unsent": await d.audit.unsent_count(),
            }
        )

    # --- JSON API ------------------------------------------------------------------------------------

    async def api_orders(self, request: Request) -> Response:
        if refused := self.refuse_reading(request, api=True):
            return refused
        try:
            query = parse_grid_query(request.query_params, self.dashboard, self.zone(request))
        except BadQuery as exc:
            return _api_error(400, str(exc))
        result = await self.deps(request).model.orders(
            query.filter, sort=query.sort, descending=query.descending, offset=query.offset, limit=query.limit
        )
        return JSONResponse(result.model_dump(mode="json"))

    async def api_order(self, request: Request) -> Response:
        if refused := self.refuse_reading(request, api=True):
            return refused
        seller_id, order_id = request.path_params["seller_id"], request.path_params["order_id"]
        if not AMAZON_ORDER_ID.match(order_id):
            return _api_error(400, f"{order_id[:40]!r} is not an Amazon order id (3-7-7 digits)")
        detail = await self.deps(request).model.order(seller_id, order_id)
        if detail is None:
            return _api_error(404, f"order {order_id} of seller {seller_id} is not in the read model")
        return JSONResponse(detail.model_dump(mode="json"))

    async def api_order_personal(self, request: Request) -> Response:
        """The buyer's name, e-mail and delivery address of one order, for the operator token only (a
        back-office adapter that ships with them); every opening is logged."""
        if refused := self.refuse_reading(request, api=True):
            return refused
        if not self.may_see_personal(request):
            return _api_error(403, "buyers' personal data needs the operator role (or the operator token)")
        seller_id, order_id = request.path_params["seller_id"], request.path_params["order_id"]
        if not AMAZON_ORDER_ID.match(order_id):
            return _api_error(400, f"{order_id[:40]!r} is not an Amazon order id (3-7-7 digits)")
        buyer = await self.buyer(request, seller_id, order_id, "personal data API")
        return JSONResponse(buyer.as_json())

    async def api_health(self, request: Request) -> Response:
        if refused := self.refuse_reading(request, api=True):
            return refused
        d = self.deps(request)
        health = await d.board.api_health(await self.known_accounts(d))
        shipments = await d.model.shipment_timeliness()
        return JSONResponse(
            {
                "health": [h.model_dump(mode="json") for h in health],
                # Per account: confirmed by ordersync, late, and orders overdue / at risk now.
                "shipments": [{**t.model_dump(mode="json"), "late_rate": t.late_rate} for t in shipments],
            }
        )

    # --- channels ---------------------------------------------------------------------------------------

    def _registry_survive(
        self, registry: ChannelRegistry, redis: aioredis.Redis
    ) -> Callable[[str, Callable[[], Awaitable[object]]], Awaitable[bool]]:
        """The dashboard's ``survive`` for :meth:`ChannelRegistry.follow`: an outage keeps the last
        channels and is logged once a minute. When the registry's view is not loaded in Redis (it is read
        again from Kafka then), Kafka is first asked whether it listens at all: a broker that is down
        never leaves a thread blocked on its bootstrap."""
        said = EveryInterval()
        prefix = self.settings.redis.key_prefix

        def tell(key: str, message: str, level: int = logging.WARNING) -> None:
            held = said.due(key)
            if held is not None:
                log.log(level, "dashboard: %s%s", message, f" ({held} more since)" if held else "")

        async def survive(what: str, look: Callable[[], Awaitable[object]]) -> bool:
            try:
                loaded = await redis.exists(keys.CHANNEL_REGISTRY_REVISION.key(prefix))
                if not loaded and not await kafka_listens(self.settings.kafka.bootstrap):
                    # Kafka's own health (the Notifications page) reports it down; here only what it means.
                    tell(
                        "kafka",
                        f"{what}: not loaded and Kafka does not listen; the channels stay as they are",
                        logging.INFO,
                    )
                    return False
                await look()
            except (RedisError, KafkaError, ConfigurationError, OSError) as exc:
                tell("error", f"{what} not read, the channels stay as they are: {type(exc).__name__}: {exc}")
                return False
            return True

        return survive

    async def secret_store(self) -> SecretStore:
        """The secret store, opened on first need (its AWS clients close with the dashboard)."""
        async with self._store_lock:
            if self._store is None:
                self._store = await open_secret_store(self.settings, self._ring_stack)
            return self._store

    @staticmethod
    def is_admin(request: Request) -> bool:
        principal = principal_of(request)
        return principal.via == "session" and principal.may("admin")

    def channel_rows(self, d: _Deps) -> list[dict[str, Any]]:
        registry = d.registry
        declared = {c.name for c in registry.base.channels}
        rows = []
        for channel in registry.snapshot.channels:
            source = registry.sources.get(channel.name, "file")
            rows.append(
                {
                    "name": channel.name,
                    "seller_id": channel.seller_id,
                    "region": channel.region,
                    "marketplaces": list(channel.marketplaces),
                    "orders_api": channel.orders_api,
                    "active": channel.active,
                    "source": "dashboard" if source == "registry" else "file",
                    "in_file": channel.name in declared,
                    "stored_secrets": channel.stored_secrets(),
                    "yaml": channel_yaml(channel),
                }
            )
        return rows

    async def channels_page(self, request: Request) -> Response:
        """``/channels``: every channel, where it comes from; for admins the forms that change them."""
        if refused := self.refuse_reading(request, api=False):
            return refused
        d = self.deps(request)
        auth = self.settings.amazon.authorization
        authorized = request.query_params.get("authorized", "")[:64]
        return self.page(
            request,
            "channels.html",
            tab="channels",
            rows=self.channel_rows(d),
            is_admin=self.is_admin(request),
            authorized=authorized,
            consent_ready=bool(auth.application_id and auth.client_id and auth.client_secret),
            credential_fields=CREDENTIAL_FIELDS,
            regions=("na", "eu", "fe"),
            new_yaml=NEW_CHANNEL_YAML,
            **await self.shell(d),
        )

    async def api_channels(self, request: Request) -> Response:
        """``GET /api/channels``: every channel (its definition, credentials as references) and its
        source (file / dashboard)."""
        if refused := self.refuse_reading(request, api=True):
            return refused
        rows = self.channel_rows(self.deps(request))
        return JSONResponse({"channels": [{k: v for k, v in r.items() if k != "yaml"} for r in rows]})

    async def _channel_body(self, request: Request) -> tuple[dict[str, Any], str, list[str]] | Response:
        try:
            body = await _json_body(request)
        except _BadBody as exc:
            return _api_error(exc.status_code, str(exc))
        body = body if isinstance(body, dict) else {}
        action, targets = channels_audit(request.url.path, body)
        return body, action, targets

    async def _save(
        self, request: Request, name: str, channel: Channel | None, action: str, targets: list[str]
    ) -> Response | None:
        """``channel`` into the registry (None: the registry's definition taken back), then the snapshot
        read again; a refusal answered (422, 503) and audited, None when saved."""
        try:
            await self._registry_write(request, name, channel)
        except ConfigurationError as exc:
            await self.audit(request, action, "refused", targets=targets, reason=str(exc)[:500])
            return _api_error(422, "nothing was saved", [str(exc)])
        except KafkaError as exc:
            reason = f"Kafka did not take the change ({type(exc).__name__}: {exc}); nothing was saved"
            await self.audit(request, action, "failed", targets=targets, reason=reason)
            return _api_error(503, reason)
        return None

    async def _registry_write(self, request: Request, name: str, channel: Channel | None) -> None:
        """``channel`` saved in the registry by the user asking (:func:`save_channel`: raises
        ``ConfigurationError`` or ``KafkaError``, nothing saved), then the snapshot read again."""
        d = self.deps(request)
        await save_channel(
            self.settings,
            d.redis,
            d.registry.base,
            name,
            channel,
            clock=self.clock,
            operator=actor_of(request).name,
            wait_s=TASK_REQUEST_WAIT_S,
        )
        await d.registry.refresh(force=True)

    async def _kafka_refusal(self, request: Request, action: str, targets: list[str]) -> Response | None:
        if await kafka_listens(self.settings.kafka.bootstrap):
            return None
        reason = f"Kafka does not listen at {self.settings.kafka.bootstrap}; nothing was saved"
        await self.audit(request, action, "failed", targets=targets, reason=reason)
        return _api_error(503, reason)

    async def _unknown(self, request: Request, name: object, action: str, targets: list[str]) -> Response:
        message = f"no channel named {str(name)[:64]!r}"
        await self.audit(request, action, "refused", targets=targets, reason=message)
        return _api_error(404, message)

    async def api_channel_save(self, request: Request) -> Response:
        """``POST /api/channels/save`` ``{"name", "yaml", "credentials": {client_id, client_secret,
        refresh_token}}``: add channel ``name`` or replace its definition (validated as the channels
        file is). Credentials typed go straight into the secret store (``channels/<name>/<field>``) and
        the definition names them ``{store: ...}``: never Kafka, Redis or a log. 422 with every problem;
        503 when Kafka or the secret store is down (nothing saved)."""
        read = await self._channel_body(request)
        if isinstance(read, Response):
            return read
        body, action, targets = read
        name, text = body.get("name"), body.get("yaml")
        typed_raw = body.get("credentials")
        typed_raw = typed_raw if isinstance(typed_raw, dict) else {}
        typed = {
            f: v.strip()
            for f, v in typed_raw.items()
            if f in CREDENTIAL_FIELDS and isinstance(v, str) and v.strip()
        }
        remember_secrets(*(SecretStr(v) for v in typed.values()))
        d = self.deps(request)
        try:
            if not isinstance(name, str) or not isinstance(text, str):
                raise ChannelProblems(["give name and yaml: the channel's definition"])
            in_file = next((c for c in d.registry.base.channels if c.name == name), None)
            channel = parse_definition(name, text, typed, in_file)
            if clashes := with_channel(d.registry.snapshot, name, channel):
                raise ChannelProblems(clashes)
        except ChannelProblems as exc:
            reason = "; ".join(exc.problems)[:500]
            await self.audit(request, action, "refused", targets=targets, reason=reason)
            return _api_error(422, "nothing was saved", exc.problems)
        known = "replaced" if name in {c.name for c in d.registry.snapshot.channels} else "added"
        if refused := await self._store_and_save(request, channel, typed, action, targets):
            return refused
        detail = f"seller {channel.seller_id}, {channel.region}, {','.join(channel.marketplaces)}"
        if typed:
            detail += f"; secrets stored: {', '.join(sorted(typed))}"
        await self.audit(request, action, "sent", targets=targets, detail=detail)
        return JSONResponse({"name": name, "saved": known, "channel": definition(channel)})

    async def _store_and_save(
        self, request: Request, channel: Channel, typed: Mapping[str, str], action: str, targets: list[str]
    ) -> Response | None:
        """Kafka listening, the typed secrets stored, the channel saved; or the refusal."""
        if refused := await self._kafka_refusal(request, action, targets):
            return refused
        if refused := await self._stored_secrets(request, channel, typed, action, targets):
            return refused
        return await self._save(request, channel.name, channel, action, targets)

    async def _stored_secrets(
        self, request: Request, channel: Channel, typed: Mapping[str, str], action: str, targets: list[str]
    ) -> Response | None:
        """Put the typed credentials into the secret store and check that every other one the channel
        names there is in it (422 naming the missing; 503 when the store is down)."""
        named = {f: getattr(channel.credentials, f).store for f in channel.stored_secrets() if f not in typed}
        if not typed and not named:
            return None
        try:
            store = await self.secret_store()
            absent = [
                f"credentials.{f}: secret {n!r} is not in the secret store"
                for f, n in named.items()
                if not await store.exists(n)
            ]
            if absent:
                await self.audit(request, action, "refused", targets=targets, reason="; ".join(absent)[:500])
                return _api_error(422, "nothing was saved", absent)
            for field, value in typed.items():
                await store.put(secret_name(channel.name, field), SecretStr(value))
        except ValueError as exc:  # a value the store does not take (too long)
            await self.audit(request, action, "refused", targets=targets, reason=str(exc)[:500])
            return _api_error(422, "nothing was saved", [f"credentials: {exc}"])
        except (ConfigurationError, BotoCoreError, ClientError) as exc:
            reason = f"the secret store is unavailable ({type(exc).__name__}: {exc}); nothing was saved"
            await self.audit(request, action, "failed", targets=targets, reason=reason)
            return _api_error(503, reason)
        return None

    async def api_channel_active(self, request: Request) -> Response:
        """``POST /api/channels/active`` ``{"name", "active": true|false}``: the channel (de)activated in
        the registry."""
        read = await self._channel_body(request)
        if isinstance(read, Response):
            return read
        body, action, targets = read
        d = self.deps(request)
        channel = self.listing_channel(d, body.get("name"))
        if channel is None:
            return await self._unknown(request, body.get("name"), action, targets)
        active = body.get("active")
        problems = [] if isinstance(active, bool) else ["active: true or false"]
        in_file = next((c for c in d.registry.base.channels if c.name == channel.name), None)
        if not keeps_file_credentials(channel, in_file) and (inline := channel.inline_secrets()):
            problems += [
                f"credentials.{f}: given inline in the channels file; the registry keeps no secret: edit"
                " the channel and name it by env, file or store (or type it in the credential fields)"
                for f in inline
            ]
        if problems:
            await self.audit(request, action, "refused", targets=targets, reason="; ".join(problems)[:500])
            return _api_error(422, "nothing was saved", problems)
        changed: Channel = channel.model_copy(update={"active": active})
        if refused := await self._store_and_save(request, changed, {}, action, targets):
            return refused
        await self.audit(request, action, "sent", targets=targets)
        return JSONResponse({"name": channel.name, "active": active})

    async def api_channel_revert(self, request: Request) -> Response:
        """``POST /api/channels/revert`` ``{"name"}``: the dashboard's changes of a channel the channels
        file declares taken back (the file's definition applies again)."""
        read = await self._channel_body(request)
        if isinstance(read, Response):
            return read
        body, action, targets = read
        d = self.deps(request)
        name = body.get("name")
        if not isinstance(name, str) or self.listing_channel(d, name) is None:
            return await self._unknown(request, name, action, targets)
        if d.registry.sources.get(name) != "registry" or name not in {
            c.name for c in d.registry.base.channels
        }:
            problem = f"{name}: no dashboard change of a channel the channels file declares to take back"
            await self.audit(request, action, "refused", targets=targets, reason=problem)
            return _api_error(422, "nothing was changed", [problem])
        if refused := await self._kafka_refusal(request, action, targets):
            return refused
        if refused := await self._save(request, name, None, action, targets):
            return refused
        await self.audit(request, action, "sent", targets=targets)
        return JSONResponse({"name": name, "source": d.registry.sources.get(name, "file")})

    async def opened_channel(self, channel: Channel) -> Channel:
        """``channel`` with its secret store credentials opened (in memory only)."""
        if not channel.stored_secrets():
            return channel
        return await open_channel_secrets(channel, await self.secret_store())

    async def api_channel_test(self, request: Request) -> Response:
        """``POST /api/channels/test`` ``{"name"}``: ``ordersync amazon check`` for the channel (one
        call outside the shared budget): ok, or what failed."""
        read = await self._channel_body(request)
        if isinstance(read, Response):
            return read
        body, action, targets = read
        channel = self.listing_channel(self.deps(request), body.get("name"))
        if channel is None:
            return await self._unknown(request, body.get("name"), action, targets)
        try:
            opened = await self.opened_channel(channel)
            limiter, plans = check_limiter(self.settings, opened, local=True)
            report = await run_check(self.settings, opened, limiter=limiter, plans=plans)
        except (ConfigurationError, BotoCoreError, ClientError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
            await self.audit(request, action, "failed", targets=targets, reason=reason[:500])
            return JSONResponse({"name": channel.name, "ok": False, "lines": [reason], "auth": "not tried"})
        outcome: AuditOutcome = "sent" if report.ok else "failed"
        reason = "" if report.ok else f"{report.error_kind}: {report.error_code}: {report.error_message}"
        await self.audit(request, action, outcome, targets=targets, reason=reason[:500])
        return JSONResponse(
            {
                "name": channel.name,
                "ok": report.ok,
                "auth": report.auth,
                "status": report.status,
                "error_code": report.error_code,
                "error_message": report.error_message,
                "lines": report.lines(),
            }
        )

    async def participations(self, channel: Channel) -> list[Participation]:
        """The seller's marketplaces (one getMarketplaceParticipations, outside the shared budget)."""
        _, plans = check_limiter(self.settings, channel, local=True)
        limiter = SingleCallLimiter(self.settings.ratelimit.send_deadline_s, plans)
        async with httpx.AsyncClient(timeout=self.settings.amazon.request_timeout_s) as http:
            client = SpApiClient(channel=channel, amazon=self.settings.amazon, limiter=limiter, http=http)
            return await discover_marketplaces(client)

    async def api_channel_discover(self, request: Request) -> Response:
        """``POST /api/channels/discover`` ``{"name", "yaml"?}``: the seller's marketplace
        participations, and the definition (the page's ``yaml`` if given) with the participating ones as
        its marketplaces."""
        read = await self._channel_body(request)
        if isinstance(read, Response):
            return read
        body, action, targets = read
        channel = self.listing_channel(self.deps(request), body.get("name"))
        if channel is None:
            return await self._unknown(request, body.get("name"), action, targets)
        try:
            found = await self.participations(await self.opened_channel(channel))
        except (ConfigurationError, BotoCoreError, ClientError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
            await self.audit(request, action, "failed", targets=targets, reason=reason[:500])
            return _api_error(503, reason)
        except PipelineError as exc:
            reason = f"Amazon did not tell the marketplaces ({type(exc).__name__}: {exc})"
            await self.audit(request, action, "failed", targets=targets, reason=reason[:500])
            return _api_error(502, reason)
        participating = [p.marketplace_id for p in found if p.is_participating]
        text = body.get("yaml")
        await self.audit(request, action, "sent", targets=targets, detail=",".join(participating))
        return JSONResponse(
            {
                "name": channel.name,
                "participations": [
                    {
                        "marketplace_id": p.marketplace_id,
                        "name": p.marketplace.name,
                        "country_code": p.marketplace.country_code,
                        "participating": p.is_participating,
                        "suspended_listings": p.has_suspended_listings,
                        "store_name": p.store_name,
                    }
                    for p in found
                ],
                "participating": participating,
                "yaml": with_marketplaces(text if isinstance(text, str) else None, channel, participating)
                if participating
                else None,
            }
        )

    # --- Amazon's website authorization ---------------------------------------------------------------

    def redirect_uri(self, request: Request) -> str:
        """Where Amazon sends the seller back: the configured URI, else this dashboard's callback."""
        configured = self.settings.amazon.authorization.redirect_uri
        return configured or str(request.base_url).rstrip("/") + "/channels/authorized"

    def state_key(self) -> SecretStr:
        key = self.settings.amazon.authorization.state_secret
        if key is None or not key.get_secret_value():
            raise ConfigurationError(
                "amazon.authorization.state_secret is not set"
                " (ORDERSYNC_AMAZON__AUTHORIZATION__STATE_SECRET): the key that signs the consent's state"
            )
        return key

    def authorization_refusal(self, request: Request, status_code: int, message: str) -> HTMLResponse:
        return self.page(request, "error.html", status_code, message=message, health=None)

    async def channel_authorize(self, request: Request) -> Response:
        """``GET /channels/authorize?name=&region=`` (admins): to Seller Central's consent page, with a
        signed state naming the channel, the region, the admin and a nonce."""
        if refused := self.refuse_role(request, "admin", "authorize channels", api=False):
            return refused
        principal = principal_of(request)
        if principal.via != "session":
            return self.authorization_refusal(request, 403, "authorizing a channel needs an admin's sign-in")
        name = request.query_params.get("name", "").strip()
        region = request.query_params.get("region", "").strip()
        problems = []
        if not CHANNEL_NAME.fullmatch(name):
            problems.append("name: lower-case letters, digits and . _ -, starting with a letter or digit")
        existing = self.listing_channel(self.deps(request), name)
        if existing is not None:
            region = existing.region
        if region not in ("na", "eu", "fe"):
            problems.append("region: na, eu or fe")
        if problems:
            return self.authorization_refusal(request, 422, "; ".join(problems))
        try:
            state = sign_state(
                self.state_key(),
                {
                    "channel": name,
                    "region": region,
                    "user": principal.name,
                    "nonce": secrets.token_urlsafe(16),
                },
            )
            url = consent_url(
                self.settings.amazon, cast(Region, region), state, redirect_uri=self.redirect_uri(request)
            )
        except ConfigurationError as exc:
            return self.authorization_refusal(request, 503, str(exc))
        log.info("dashboard: %s asked Amazon's consent for channel %s (%s)", principal.name, name, region)
        return RedirectResponse(url, status_code=303)

    async def channel_authorized(self, request: Request) -> Response:
        """``GET /channels/authorized?spapi_oauth_code=&state=&selling_partner_id=``: Amazon's redirect
        after the seller's consent.

        A GET from Amazon cannot carry a CSRF token: the signed state is the protection. It was signed
        here (``amazon.authorization.state_secret``) for the admin who started the consent, must come
        back within ``state_max_age_s`` and to the same signed-in admin; a changed, foreign or old state
        is refused. The authorization code is good once at Amazon, so a redirect replayed is refused
        there. The session cookie is SameSite=Strict, which a redirect from Amazon's site does not
        carry: without a session, the page first sends the browser on to the same address from this
        site (then the cookie comes along)."""
        params = request.query_params
        principal = principal_of(request)
        if principal.via != "session" and params.get("continued") != "1":
            target = request.url.path + "?" + urlencode({**dict(params), "continued": "1"})
            return self.page(request, "authorized_continue.html", target=target, health=None)
        if refused := self.refuse_role(request, "admin", "authorize channels", api=False):
            return refused
        action = "channel.authorize"
        try:
            state = read_state(
                self.state_key(), params.get("state", ""), self.settings.amazon.authorization.state_max_age_s
            )
        except (AuthorizationStateError, ConfigurationError) as exc:
            await self.audit(request, action, "refused", reason=str(exc))
            return self.authorization_refusal(request, 400, f"Amazon's answer was not accepted: {exc}")
        name, region = str(state.get("channel", "")), str(state.get("region", ""))
        targets = [name[:64]]
        code, seller_id = params.get("spapi_oauth_code", ""), params.get("selling_partner_id", "")
        try:
            if state.get("user") != principal.name:
                raise _AuthorizationFailed(
                    403, "refused", "this authorization was started by another user: start it again yourself"
                )
            if not code or not seller_id:
                raise _AuthorizationFailed(
                    400, "refused", "Amazon's answer carries no authorization code or seller: start again"
                )
            saved = await self.authorized_channel(request, name, region, code, seller_id)
        except _AuthorizationFailed as exc:
            await self.audit(request, action, exc.outcome, targets=targets, reason=exc.message[:500])
            return self.authorization_refusal(request, exc.status_code, exc.message)
        detail = f"seller {saved.seller_id}, {saved.region}, {','.join(saved.marketplaces)}"
        await self.audit(request, action, "sent", targets=targets, detail=detail)
        return RedirectResponse("/channels?" + urlencode({"authorized": name}), status_code=303)

    async def new_channel(
        self, name: str, region: Region, seller_id: str, values: Mapping[str, SecretStr]
    ) -> Channel:
        """The channel an authorization adds: active, Orders API 2026-01-01, the marketplaces the seller
        participates in (asked of Amazon with ``values``, the credentials, in memory only), its
        credentials in the secret store."""
        opened = Channel(
            name=name,
            seller_id=seller_id,
            region=region,
            marketplaces=("unknown",),
            credentials=LwaCredentials(**{f: SecretRef(value=v) for f, v in values.items()}),
        )
        try:
            found = await self.participations(opened)
        except PipelineError as exc:
            raise _AuthorizationFailed(
                502, "failed", f"Amazon did not tell the marketplaces: {exc}"
            ) from None
        participating = tuple(p.marketplace_id for p in found if p.is_participating)
        if not participating:
            raise _AuthorizationFailed(422, "refused", f"seller {seller_id} participates in no marketplace")
        return Channel(
            name=name,
            seller_id=seller_id,
            region=region,
            marketplaces=participating,
            active=True,
            orders_api="2026-01-01",
            credentials=LwaCredentials(
                **{f: SecretRef(store=secret_name(name, f)) for f in CREDENTIAL_FIELDS}
            ),
        )

    async def authorized_channel(
        self, request: Request, name: str, region: str, code: str, seller_id: str
    ) -> Channel:
        """The code exchanged, the secrets stored, the marketplaces discovered, the channel saved."""
        d = self.deps(request)
        auth = self.settings.amazon.authorization
        existing = self.listing_channel(d, name)
        if existing is not None and existing.seller_id != seller_id:
            raise _AuthorizationFailed(
                409,
                "refused",
                f"channel {name} is seller {existing.seller_id}'s; Amazon's consent is seller {seller_id}'s",
            )
        if not await kafka_listens(self.settings.kafka.bootstrap):
            raise _AuthorizationFailed(503, "failed", "Kafka does not listen: nothing was saved; try again")
        try:
            async with httpx.AsyncClient(timeout=self.settings.amazon.request_timeout_s) as http:
                granted = await exchange_code(http, self.settings.amazon, code, self.redirect_uri(request))
        except ConfigurationError as exc:
            raise _AuthorizationFailed(503, "failed", str(exc)) from None
        except AmazonApiError as exc:
            status_code = 502 if isinstance(exc, AmazonRejected) else 503
            raise _AuthorizationFailed(
                status_code, "failed", f"Amazon did not grant the token: {exc}"
            ) from None
        remember_secrets(granted.refresh_token)
        assert auth.client_id is not None  # exchange_code checked both
        assert auth.client_secret is not None
        # The token Amazon granted is the application's: the channel uses the application's LWA client
        # with it (a channel authorized again moves to it too), all three kept in the secret store.
        values = {
            "refresh_token": granted.refresh_token,
            "client_id": SecretStr(auth.client_id),
            "client_secret": auth.client_secret,
        }
        stored = LwaCredentials(**{f: SecretRef(store=secret_name(name, f)) for f in CREDENTIAL_FIELDS})
        if existing is not None:
            channel: Channel = existing.model_copy(update={"credentials": stored})
        else:
            channel = await self.new_channel(name, cast(Region, region), seller_id, values)
        problems = [f"credentials.{f} is given inline" for f in channel.inline_secrets()]
        problems = problems or with_channel(d.registry.snapshot, name, channel)
        if problems:
            raise _AuthorizationFailed(422, "refused", "the channel was not saved: " + "; ".join(problems))
        try:
            store = await self.secret_store()
            for field, value in values.items():
                await store.put(secret_name(name, field), value)
        except (ConfigurationError, BotoCoreError, ClientError, ValueError) as exc:
            raise _AuthorizationFailed(
                503, "failed", f"the secret store is unavailable ({type(exc).__name__}); nothing was saved"
            ) from None
        try:
            await self._registry_write(request, name, channel)
        except ConfigurationError as exc:
            raise _AuthorizationFailed(422, "refused", str(exc)) from None
        except KafkaError as exc:
            raise _AuthorizationFailed(
                503, "failed", f"Kafka did not take the channel ({type(exc).__name__}); nothing was saved"
            ) from None
        return channel

    # --- listings ---------------------------------------------------------------------------------------

    def listing_channel(self, d: _Deps, name: str | None) -> Channel | None:
        channels = d.channels.channels if d.channels is not None else ()
        return next((c for c in channels if c.name == name), None)

    async def listings_found(self, request: Request) -> tuple[Channel | None, ListingsPage]:
        """The listings of ``channel`` matching ``q`` (any part of a SKU, stock code, ASIN or EAN, any
        case), a page of them (``offset``, ``limit``)."""
        d = self.deps(request)
        params = request.query_params
        channels = d.channels.channels if d.channels is not None else ()
        channel = self.listing_channel(d, params.get("channel") or (channels[0].name if channels else None))
        query = params.get("q", "")[:100]
        offset = max(0, int(params["offset"])) if params.get("offset", "").isdigit() else 0
        limit = min(500, int(params["limit"])) if params.get("limit", "").isdigit() else LISTINGS_PAGE
        if channel is None:
            return None, ListingsPage(query=query, offset=offset, limit=limit, total=0, rows=())
        rows = await listing_rows(Store(d.redis, self.settings.redis.key_prefix), channel.name)
        found = sorted((r for r in rows.values() if matches(r, query)), key=lambda r: r.seller_sku.casefold())
        page = tuple(found[offset : offset + max(1, limit)])
        return channel, ListingsPage(query=query, offset=offset, limit=limit, total=len(found), rows=page)

    async def listings_page(self, request: Request) -> Response:
        if refused := self.refuse_reading(request, api=False):
            return refused
        d = self.deps(request)
        channel, found = await self.listings_found(request)
        return self.page(
            request,
            "listings.html",
            tab="listings",
            channel=channel,
            channels=d.channels.channels if d.channels is not None else (),
            found=found,
            columns=LISTING_COLUMNS,
            listing_file_columns=LISTING_FILE_COLUMNS,
            **await self.shell(d),
        )

    async def api_listings(self, request: Request) -> Response:
        """``GET /api/listings?channel=&q=&offset=&limit=``: the channel's listings matching ``q``."""
        if refused := self.refuse_reading(request, api=True):
            return refused
        channel, found = await self.listings_found(request)
        if channel is None:
            return _api_error(404, f"no channel named {request.query_params.get('channel', '')[:64]!r}")
        return JSONResponse(
            {
                "channel": channel.name,
                "total": found.total,
                "offset": found.offset,
                "rows": [asdict(row) for row in found.rows],
            }
        )

    async def api_listings_change(self, request: Request) -> Response:
        """``POST /api/listings/upload`` ``{"channel", "csv"}`` (a whole listings file, applied whole or
        not at all) or ``POST /api/listings/row`` ``{"channel", "row": {column: value}}`` (one row fixed by
        hand): published on ``channel.listings``, then written to Redis (:mod:`ordersync.ops.listings`).
        422 with every problem; 503 when Kafka does not take it (nothing is written)."""
        upload = request.url.path.endswith("/upload")
        try:
            body = await _json_body(request, limit=LISTINGS_UPLOAD_LIMIT if upload else MAX_ACTION_BODY)
        except _BadBody as exc:
            return _api_error(exc.status_code, str(exc))
        body = body if isinstance(body, dict) else {}
        action, targets = listings_audit(request.url.path, body)
        channel = self.listing_channel(self.deps(request), body.get("channel"))
        if channel is None:
            message = f"no channel named {str(body.get('channel', ''))[:64]!r}"
            await self.audit(request, action, "refused", targets=targets, reason=message)
            return _api_error(404, message)
        try:
            if upload:
                text = body.get("csv")
                if not isinstance(text, str):
                    raise ListingsRejected(["give the file's text as csv"])
                rows = parse_listings_csv(text).rows
            else:
                fields = body.get("row")
                if not isinstance(fields, dict) or not all(isinstance(v, str) for v in fields.values()):
                    raise ListingsRejected(["give row: the listing's columns and their text"])
                rows = [parse_listing(fields)]
        except ListingsRejected as exc:
            await self.audit(
                request, action, "refused", targets=targets, reason="; ".join(exc.problems)[:500]
            )
            return _api_error(422, "nothing was loaded", exc.problems)
        try:
            await load_listings(
                self.settings,
                self.deps(request).redis,
                channel.name,
                channel.seller_id,
                rows,
                wait_s=TASK_REQUEST_WAIT_S,
                client_id="ordersync-dashboard",
            )
        except KafkaError as exc:
            reason = f"Kafka did not take the listings ({type(exc).__name__}: {exc}); nothing was loaded"
            await self.audit(request, action, "failed", targets=targets, reason=reason)
            return _api_error(503, reason)
        detail = f"{len(rows)} listing(s)"
        await self.audit(request, action, "sent", targets=targets, detail=detail)
        log.info("dashboard: %s of %s loaded for %s", detail, channel.name, actor_of(request).name)
        return JSONResponse(
            {"channel": channel.name, "loaded": len(rows), "rows": [asdict(r) for r in rows[:1]]}
        )

    async def api_tasks(self, request: Request) -> Response:
        if refused := self.refuse_reading(request, api=True):
            return refused
        model = self.deps(request).model
        tasks = await model.tasks()
        commands = await model.recent_commands(_COMMANDS_SHOWN)
        return JSONResponse(
            {
                "tasks": [t.model_dump(mode="json") for t in tasks],
                "commands": [_command_json(c) for c in commands],
            }
        )

    async def api_command(self, request: Request) -> Response:
        """``GET /api/commands/{event_id}``: an operator command's outcome per order, as folded so far
        (``state`` sent / done / failed; sent while the pipeline has not reported on every order)."""
        if refused := self.refuse_reading(request, api=True):
            return refused
        event_id = request.path_params["event_id"]
        if not 1 <= len(event_id) <= 64 or not all(c.isalnum() or c == "-" for c in event_id):
            return _api_error(400, "not an event id")
        outcome = await self.deps(request).model.command(event_id)
        return JSONResponse(_command_json(outcome))

    # --- trends --------------------------------------------------------------------------------------

    async def trends(self, request: Request) -> Trends:
        """The trends of the request's ``range`` (24h, 7d, 30d) and ``channel`` (all when none), as of
        the dashboard's clock (:mod:`ordersync.state.trends`)."""
        params = request.query_params
        range_name = parse_range(params.get("range"))
        if range_name is None:
            raise _BadBody(400, f"range: one of {', '.join(RANGES)}")
        channel = params.get("channel") or None
        d = self.deps(request)
        found = await TrendStore(d.redis, self.settings.redis.key_prefix).read(
            range_name, self.clock.now(), channel
        )
        configured = {c.name for c in d.channels.channels} if d.channels is not None else set()
        found.channels = sorted({*found.channels, *configured})
        if channel is not None and channel not in found.channels:
            raise _BadBody(404, f"no channel named {channel[:64]!r}")
        return found

    async def trends_page(self, request: Request) -> Response:
        if refused := self.refuse_reading(request, api=False):
            return refused
        d = self.deps(request)
        try:
            found = await self.trends(request)
        except _BadBody as exc:
            return self.page(request, "error.html", exc.status_code, message=str(exc), health=None)
        by_day = found.range != "24h"
        return self.page(
            request,
            "trends.html",
            tab="trends",
            trends=found,
            ranges=RANGE_TITLES,
            rows=found.table(by_day=by_day),
            by_day=by_day,
            api_url="/api/trends?" + urlencode({"range": found.range, "channel": found.channel or ""}),
            **await self.shell(d),
        )

    async def api_trends(self, request: Request) -> Response:
        """``GET /api/trends?range=24h|7d|30d&channel=...``: the series of the Trends page."""
        if refused := self.refuse_reading(request, api=True):
            return refused
        try:
            found = await self.trends(request)
        except _BadBody as exc:
            return _api_error(exc.status_code, str(exc))
        return JSONResponse(found.as_json())

    async def api_notifications(self, request: Request) -> Response:
        if refused := self.refuse_reading(request, api=True):
            return refused
        raw_limit = request.query_params.get("limit", "100")
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 1000:
            return _api_error(400, "limit: a whole number in 1..1000")
        notifications = await self.deps(request).board.notifications(int(raw_limit))
        return JSONResponse({"notifications": [n.model_dump(mode="json") for n in notifications]})

    async def api_actions(self, request: Request) -> Response:
        try:
            body = await _json_body(request)
        except _BadBody as exc:
            return _api_error(exc.status_code, str(exc))
        audited, targets = order_audit(body)
        if isinstance(body, dict) and actor_of(request).via == "session":
            body = {**body, "operator": actor_of(request).name}  # who acts is the signed-in user
        d = self.deps(request)
        try:
            action = parse_action(body)
            known = (
                {c.name for c in d.channels.channels}
                if d.channels is not None
                else {c for c, _ in await d.model.sellers()}
            )
            plan = plan_action(action, known, self.dashboard.max_action_orders)
            sellers = (
                {c.name: c.seller_id for c in d.channels.channels}
                if d.channels is not None
                else dict(await d.model.sellers())
            )
            rows = await d.model.rows_of((sellers.get(c, ""), o) for c, ids in plan.items() for o in ids)
            check_orders(action.action, plan, sellers, rows)
            configured = d.channels if d.channels is not None else ChannelsFile(channels=())
            outcome = await publish_action(self.settings, configured, action, plan)
        except ActionRejected as exc:
            await self.audit(request, audited, "refused", targets=targets, reason="; ".join(exc.problems))
            return _api_error(409 if exc.conflict else 422, "the action was not sent", exc.problems)
        answer = outcome.model_dump(mode="json")
        sent = "; ".join(f"{p.channel}: event {p.event_id}" for p in outcome.published)
        declared = self_declared(request, action.operator or "")
        if outcome.failure is not None:
            answer["error"] = outcome.failure
            detail = "; ".join(
                p for p in (sent and f"sent {sent}", f"not sent: {', '.join(outcome.not_sent)}") if p
            )
            await self.audit(
                request, audited, "failed", targets=targets, reason=outcome.failure, detail=detail
            )
        else:
            detail = "; ".join(p for p in (sent, declared) if p)
            await self.audit(request, audited, "sent", targets=targets, detail=detail)
        return JSONResponse(answer, status_code=200 if outcome.failure is None else 503)

    # --- CSV export ----------------------------------------------------------------------------------

    async def export_csv(self, request: Request) -> Response:
        if refused := self.refuse_reading(request, api=True):
            return refused
        try:
            order_filter, _ = parse_filter(request.query_params, self.zone(request))
        except BadQuery as exc:
            return _api_error(400, str(exc))
        personal: PersonalOpener | None = None
        if request.query_params.get("personal") in ("1", "true", "yes"):
            if not self.may_see_personal(request):
                return _api_error(
                    403,
                    "an export with buyers' personal data needs the operator role (or the operator token)",
                )

            async def personal(seller_id: str, order_id: str) -> tuple[str, Mapping[str, str]]:
                found = await self.buyer(request, seller_id, order_id, "CSV export")
                return found.state, found.fields

        filename = f"ordersync-orders-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.csv"
        return StreamingResponse(
            _csv_chunks(self.deps(request).model, order_filter, personal),
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": f'attachment; filename="{filename}"'},
        )

    # --- probes and errors ---------------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        return PlainTextResponse("ok")

    async def readyz(self, request: Request) -> Response:
        try:
            await self.deps(request).redis.ping()
        except (RedisError, OSError) as exc:
            return PlainTextResponse(f"redis unreachable: {type(exc).__name__}", status_code=503)
        return PlainTextResponse("ready")

    async def redis_down(self, request: Request, exc: Exception) -> Response:
        log.warning("dashboard: Redis unreachable: %s", exc)
        message = f"Redis is unreachable ({type(exc).__name__}); the read model cannot be shown"
        if request.url.path.startswith("/api/") or request.url.path.endswith(".csv"):
            return _api_error(503, message)
        html = self.templates.get_template("error.html").render(
            message=message, health=None, principal=principal_of(request), csrf_token=""
        )
        return HTMLResponse(html, status_code=503)


def create_app(
    settings: Settings | None = None, clock: Clock = SYSTEM_CLOCK, *, audit_sink: AuditSink | None = None
) -> Starlette:
    """The dashboard for ``settings`` (default: the process's); Redis is opened at startup. ``clock``
    decides when personal data has expired, dates the operator's dead-letter actions and the audit
    entries, and times sessions and sign-in locks. ``audit_sink``: where audit entries go (default:
    ``ops.audit`` on the settings' Kafka)."""
    d = _Dashboard(settings or get_settings(), clock, audit_sink)
    remember_secrets(d.settings)

    def read(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        """A page or API read: who asks is known before the handler runs."""

        async def endpoint(request: Request) -> Response:
            await d.identify(request)
            return await handler(request)

        return endpoint

    def write(
        handler: Callable[[Request], Awaitable[Response]],
        needed: Role | None = None,
        what: str = "",
        audited: Guard | None = None,
    ) -> Callable[[Request], Awaitable[Response]]:
        """A state-changing route: admitted (role, CSRF) before the handler runs; GET (a form's page)
        only identifies."""

        async def endpoint(request: Request) -> Response:
            await d.identify(request)
            if request.method not in ("GET", "HEAD"):
                refused = await d.admit(request, needed, what, audited)
                if refused is not None:
                    return refused
            return await handler(request)

        endpoint.__dict__["admission"] = (needed, what)
        return endpoint

    acting = "act on orders"
    routes = [
        Route("/", read(d.orders_page)),
        Route("/orders/{seller_id}/{order_id}", read(d.order_page)),
        Route("/orders/{seller_id}/{order_id}/documents/{reference}", read(d.order_document)),
        Route("/tasks", read(d.tasks_page)),
        Route("/notifications", read(d.notifications_page)),
        Route("/trends", read(d.trends_page)),
        Route("/dead-letters", read(d.dead_letters_page)),
        Route("/users", write(d.users, "admin", "manage users", audit_users), methods=["GET", "POST"]),
        Route("/users/{name}", write(d.users_form, "admin", "manage users", audit_users), methods=["POST"]),
        Route("/audit", read(d.audit_page)),
        Route("/login", write(d.login), methods=["GET", "POST"]),
        Route("/logout", write(d.logout), methods=["POST"]),
        Route("/login/oidc", read(d.oidc_login)),
        Route("/login/oidc/callback", read(d.oidc_callback)),
        Route("/api/orders", read(d.api_orders)),
        Route("/api/orders/{seller_id}/{order_id}", read(d.api_order)),
        Route("/api/orders/{seller_id}/{order_id}/personal", read(d.api_order_personal)),
        Route("/api/health", read(d.api_health)),
        Route("/api/tasks", read(d.api_tasks)),
        Route("/listings", read(d.listings_page)),
        Route("/api/listings", read(d.api_listings)),
        Route(
            "/api/listings/upload",
            write(d.api_listings_change, "operator", "edit listings", audit_listings),
            methods=["POST"],
        ),
        Route(
            "/api/listings/row",
            write(d.api_listings_change, "operator", "edit listings", audit_listings),
            methods=["POST"],
        ),
        Route("/channels", read(d.channels_page)),
        Route("/channels/authorize", read(d.channel_authorize)),
        Route("/channels/authorized", read(d.channel_authorized)),
        Route("/api/channels", read(d.api_channels)),
        *(
            Route(
                f"/api/channels/{kind}",
                write(handler, "admin", "change channels", audit_channels),
                methods=["POST"],
            )
            for kind, handler in (
                ("save", d.api_channel_save),
                ("active", d.api_channel_active),
                ("revert", d.api_channel_revert),
                ("test", d.api_channel_test),
                ("discover", d.api_channel_discover),
            )
        ),
        Route("/api/infrastructure", read(d.api_infrastructure)),
        Route("/api/notifications", read(d.api_notifications)),
        Route("/api/trends", read(d.api_trends)),
        Route("/api/alerts", read(d.api_alerts)),
        Route(
            "/api/alerts/actions",
            write(d.api_alert_actions, "operator", "act on alerts", audit_alerts),
            methods=["POST"],
        ),
        Route("/api/dead-letters", read(d.api_dead_letters)),
        Route(
            "/api/dead-letters/actions",
            write(d.api_dead_letter_actions, "operator", "act on dead letters", audit_letters),
            methods=["POST"],
        ),
        Route("/api/actions", write(d.api_actions, "operator", acting, audit_orders), methods=["POST"]),
        Route(
            "/api/tasks/run", write(d.api_task_run, "operator", "run tasks", audit_tasks), methods=["POST"]
        ),
        Route("/api/commands/{event_id}", read(d.api_command)),
        Route("/api/users", read(d.api_users), methods=["GET"]),
        Route(
            "/api/users",
            write(d.api_user_change, "admin", "manage users", audit_users),
            methods=["POST"],
        ),
        Route(
            "/api/users/{name}",
            write(d.api_user_change, "admin", "manage users", audit_users),
            methods=["POST"],
        ),
        Route("/api/audit", read(d.api_audit)),
        Route("/preferences/timezone", write(d.set_time_zone), methods=["POST"]),
        Route("/export.csv", read(d.export_csv)),
        Route("/healthz", d.healthz),
        Route("/readyz", d.readyz),
        Mount("/static", StaticFiles(directory=_STATIC), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=d.lifespan, exception_handlers={RedisError: d.redis_down})
    app.add_middleware(_SameOriginWrites)
    app.add_middleware(_SecurityHeaders)
    return app


def _command_json(outcome: Any) -> dict[str, Any]:
    return {
        **outcome.model_dump(mode="json"),
        "state": outcome.state,
        "summary": outcome.summary(),
        "counts": {state: outcome.count(state) for state in ("sent", "done", "failed")},
    }


class _PacedOrders:
    """The read model as :func:`write_orders_csv` sees it for a streamed export: it hands over the next
    order only once the client has taken what was written, so a slow download slows the reading and
    100,000 orders never pile up in memory."""

    def __init__(self, model: ReadModel, buffer: io.StringIO) -> None:
        self._model = model
        self._buffer = buffer
        self.ready = asyncio.Event()
        self.drained = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        # Anything else write_orders_csv may use is the model's own.
        return getattr(self._model, name)

    async def iter_orders(self, filter: OrderFilter, *, batch: int = 500) -> AsyncIterator[OrderDetail]:
        async for detail in self._model.iter_orders(filter, batch=batch):
            if self._buffer.tell() >= _CSV_CHUNK:
                self.drained.clear()
                self.ready.set()
                await self.drained.wait()
            yield detail


async def _csv_chunks(
    model: ReadModel, order_filter: OrderFilter, personal: PersonalOpener | None = None
) -> AsyncIterator[str]:
    """The CLI's export (:func:`ordersync.state.readmodel.write_orders_csv`), sent in chunks as written."""
    buffer = io.StringIO()
    paced = _PacedOrders(model, buffer)
    # The paced view is the model for write_orders_csv: its orders come through the pacing.
    writing = asyncio.ensure_future(write_orders_csv(cast(ReadModel, paced), order_filter, buffer, personal))
    try:
        while True:
            ready = asyncio.ensure_future(paced.ready.wait())
            await asyncio.wait({writing, ready}, return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()
            paced.ready.clear()
            chunk = buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
            if chunk:
                yield chunk
            paced.drained.set()
            if writing.done():
                writing.result()  # a failure while writing ends the download as an error
                return
    finally:
        if not writing.done():
            writing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writing
