"""The SP-API client every stage uses: async, typed, rate-limited, errors classified for the pipeline.

A thin httpx client rather than ``python-amazon-sp-api``: that library binds endpoints to its own
marketplace table, retries and sleeps on 429 inside each process (which a shared, exact budget must
not do), and hides the response headers ordersync feeds back into the rate limiter. Here every request

1. gets an LWA access token (refresh-token flow, cached until shortly before it expires; for a
   grantless operation, the client_credentials flow with the operation's scope, acting for no seller),
2. takes one token from the distributed rate limiter for (seller, application, operation) (grantless
   operations: for the application, :data:`~ordersync.amazon.operations.GRANTLESS_BUCKET`),
3. is sent before the grant's deadline, or dropped and re-acquired (the token stays spent),
4. hands ``x-amzn-RateLimit-Limit`` to the limiter, and a 429 empties our model of the bucket,
5. maps the outcome to the pipeline's errors: 429 -> :class:`AmazonThrottled`, timeouts and 5xx ->
   :class:`AmazonUnavailable` (retryable), other 4xx -> :class:`AmazonRejected` (permanent; 409, the
   resource exists, as its subclass :class:`AmazonConflict`),
6. reports the outcome to an optional :class:`ApiObserver` (the API health board), which can never fail
   the request.

Documents behind presigned URLs (report documents here, feed documents in :mod:`ordersync.amazon.feeds`)
are S3, not SP-API: fetched without the access token and outside the usage plans, S3's errors
classified the same way (5xx, 429 and transport errors retryable, other 4xx permanent).
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import platform
import time
import zlib
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from importlib import metadata
from typing import Any, Literal, Protocol, get_args
from urllib.parse import quote

import httpx
from lxml import etree
from pydantic import SecretStr

from ordersync.amazon import catalog, easyship
from ordersync.amazon.catalog import CatalogItem
from ordersync.amazon.easyship import (
    BulkSchedule,
    HandoverSlot,
    LabelFormat,
    PackageRequest,
    PackageSize,
    ScheduledPackage,
)
from ordersync.amazon.normalize import (
    STATUS_TO_2026,
    address_from_v0,
    item_from_v0,
    order_from_2026,
    order_from_v0,
    parse_time,
)
from ordersync.amazon.operations import (
    EVENT_FILTER_TYPES,
    FEED_OPERATIONS,
    GRANTLESS_BUCKET,
    GRANTLESS_OPERATIONS,
    NOTIFICATIONS_SCOPE,
    ApiCall,
    ApiName,
    CallOutcome,
    api_for_operation,
)
from ordersync.amazon.sellers import Participation, parse_participations
from ordersync.channels import Channel
from ordersync.errors import AmazonRejected, AmazonThrottled, AmazonUnavailable
from ordersync.schemas.events import Address, AmazonOrder, AmazonOrderItem, OrderStatus, ShipmentRequested
from ordersync.settings import AmazonSettings

log = logging.getLogger(__name__)

RATE_LIMIT_HEADER = "x-amzn-RateLimit-Limit"
REQUEST_ID_HEADER = "x-amzn-RequestId"
#: Renew the LWA access token this long before Amazon says it expires.
TOKEN_RENEW_MARGIN_S = 60.0
#: Longest an observer may hold up a request; past it the outcome goes unrecorded.
OBSERVER_TIMEOUT_S = 1.0
#: Amazon refuses a longer User-Agent header (docs "Include a User-Agent header in all requests").
USER_AGENT_MAX = 500


def _quoted(text: str, specials: str) -> str:
    """``text`` with a backslash before each backslash and each of ``specials``: the quoting Amazon's
    User-Agent format asks for."""
    return "".join("\\" + c if c == "\\" or c in specials else c for c in text)


@cache
def ordersync_version() -> str:
    """ordersync's version, from the installed package's metadata."""
    try:
        return metadata.version("ordersync")
    except metadata.PackageNotFoundError:
        from ordersync import __version__  # noqa: PLC0415 - only when not installed

        return __version__


def user_agent(app_name: str, version: str | None = None) -> str:
    """The User-Agent header Amazon asks every SP-API integrator to send (docs "Include a User-Agent
    header in all requests"): ``AppName/AppVersion (Language=Python/3.x.y; Platform=OS/release)``,
    with ``/`` quoted in the name, ``(`` in the version and ``)`` and ``;`` in attribute values, and
    at most 500 characters."""
    attributes = {
        "Language": f"Python/{platform.python_version()}",
        "Platform": f"{platform.system() or 'unknown'}/{platform.release() or 'unknown'}",
    }
    pairs = "; ".join(f"{_quoted(k, '=')}={_quoted(v, ');')}" for k, v in attributes.items())
    header = f"{_quoted(app_name, '/')}/{_quoted(version or ordersync_version(), '(')} ({pairs})"
    return header[:USER_AGENT_MAX]


def amazon_time(value: datetime) -> str:
    """ISO 8601 in UTC with a Z, as Amazon's examples write it."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


#: What ordersync asks the 2026-01-01 API to embed in every order ...
INCLUDED_DATA = "PROCEEDS,FULFILLMENT,CANCELLATION,TAX"
#: ... and, for a channel allowed personal data (``fetch_pii``: the application holds Amazon's restricted
#: roles and the seller needs the data to ship or invoice), the buyer and the recipient.
PERSONAL_DATA = "BUYER,RECIPIENT"


def included_data(channel: Channel) -> str:
    """The 2026-01-01 ``includedData`` for ``channel``: personal data only where it is allowed."""
    return f"{PERSONAL_DATA},{INCLUDED_DATA}" if channel.fetch_pii else INCLUDED_DATA


@dataclass(frozen=True)
class OrdersQuery:
    """Which orders to list: updated after an instant, or created within a span; optional filters."""

    updated_after: datetime | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    statuses: tuple[OrderStatus, ...] = ()
    #: None: the channel's own fulfilment channels.
    fulfillment_channels: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ListingParameters:
    """How one Orders API version spells the listing query's parameters and values."""

    marketplaces: str
    token: str
    updated_after: str
    created_after: str
    created_before: str
    page_size: str
    statuses: str
    channels: str
    status_value: Callable[[OrderStatus], str]
    channel_value: Callable[[str], str]
    #: Whether a follow-up page repeats the first page's filters with the token. searchOrders requires
    #: it ("All other parameters must be provided with the same values that were provided with the
    #: request that generated this token, with the exception of maxResultsPerPage and includedData",
    #: orders_2026-01-01.json); getOrders (v0) takes NextToken with MarketplaceIds alone.
    token_repeats_filters: bool = False


V0_LISTING = ListingParameters(
    "MarketplaceIds",
    "NextToken",
    "LastUpdatedAfter",
    "CreatedAfter",
    "CreatedBefore",
    "MaxResultsPerPage",
    "OrderStatuses",
    "FulfillmentChannels",
    str,
    str,
)
V2026_LISTING = ListingParameters(
    "marketplaceIds",
    "paginationToken",
    "lastUpdatedAfter",
    "createdAfter",
    "createdBefore",
    "maxResultsPerPage",
    "fulfillmentStatuses",
    "fulfilledBy",
    STATUS_TO_2026.__getitem__,
    {"MFN": "MERCHANT", "AFN": "AMAZON"}.__getitem__,
    token_repeats_filters=True,
)


@dataclass(frozen=True)
class OrdersPage:
    orders: tuple[AmazonOrder, ...]
    next_token: str | None
    #: Amazon's guarantee: every order up to this instant was returned (LastUpdatedBefore or
    #: CreatedBefore).
    updated_before: datetime | None


@dataclass(frozen=True)
class NotificationDestination:
    """A Notifications API destination: an SQS queue (``sqs_arn``) or an EventBridge account."""

    destination_id: str
    name: str
    sqs_arn: str | None = None
    event_bridge_region: str | None = None
    event_bridge_account_id: str | None = None


@dataclass(frozen=True)
class NotificationSubscription:
    """A selling partner's subscription to one notification type, delivered to a destination."""

    subscription_id: str
    notification_type: str
    payload_version: str
    destination_id: str
    #: Amazon's processingDirective as it answered it (event filter), if any.
    processing_directive: Mapping[str, Any] | None = None


ReportProcessingStatus = Literal["IN_QUEUE", "IN_PROGRESS", "DONE", "FATAL", "CANCELLED"]
REPORT_PROCESSING_STATUSES: frozenset[str] = frozenset(get_args(ReportProcessingStatus))
#: Statuses after which a report changes no more.
FINAL_REPORT_STATUSES: frozenset[str] = frozenset({"DONE", "FATAL", "CANCELLED"})


@dataclass(frozen=True)
class ReportStatus:
    """A report as getReport answers it (Reports API 2021-06-30): its status and, once DONE, its
    document. CANCELLED without a document: Amazon had nothing to report ("an automatic cancellation if
    there is no data to return") or the report was cancelled; FATAL: Amazon could not make it."""

    report_id: str
    report_type: str
    processing_status: ReportProcessingStatus
    report_document_id: str | None
    data_start: datetime | None
    data_end: datetime | None
    created: datetime

    @property
    def done(self) -> bool:
        """Processing ended (DONE, FATAL or CANCELLED)."""
        return self.processing_status in FINAL_REPORT_STATUSES


class AmazonConflict(AmazonRejected):
    """HTTP 409: the resource exists already (a destination for that SQS ARN, the seller's
    subscription of that notification type). Permanent as sent; a caller making sure the resource
    exists reads it (getDestinations, getSubscription) and carries on."""


class QuotaGrant(Protocol):
    """Permission to send one request (the rate limiter's grant)."""

    #: Seconds the request was held back for its quota (0: granted at once).
    @property
    def waited_s(self) -> float: ...

    def expired(self) -> bool: ...


class Quota(Protocol):
    """What the client needs from the distributed rate limiter (:class:`ordersync.ratelimit.RateLimiter`
    is one). Typed here so Amazon's client does not depend on the limiter, which reads Amazon's models."""

    async def acquire(
        self, operation: str, seller_id: str, *, lane: str = "default", feed_type: str | None = None
    ) -> QuotaGrant: ...

    async def observe_rate_limit(self, operation: str, seller_id: str, rate_per_s: float) -> None: ...

    async def on_throttled(self, operation: str, seller_id: str, *, feed_type: str | None = None) -> None: ...


class ApiObserver(Protocol):
    """Told of every SP-API request's outcome and of feeds Amazon could not process."""

    async def on_call(self, channel: Channel, call: ApiCall) -> None: ...

    async def on_feed_fatal(self, channel: Channel, api: ApiName, feed_id: str, feed_type: str) -> None: ...


def _outcome(status: int) -> CallOutcome:
    if status < 300:
        return "ok"
    if status == 429:
        return "throttled"
    if status in (401, 403):
        return "auth"
    if status in (502, 503, 504):
        return "unavailable"
    return "error"


async def lwa_token_request(
    http: httpx.AsyncClient,
    endpoint: str,
    form: Mapping[str, str],
    *,
    headers: Mapping[str, str] | None = None,
    operation: str = "lwaToken",
) -> dict[str, Any]:
    """One POST to LWA's token endpoint (any grant): its JSON body, which has an ``access_token``.
    No answer, 5xx or 429: :class:`AmazonUnavailable`; a refusal (``{"error": "invalid_grant",
    "error_description": ...}``, which carries no secret): :class:`AmazonRejected` with LWA's error as
    its code. The form (secrets) is never logged nor put in an error."""
    try:
        response = await http.post(endpoint, data=dict(form), headers=dict(headers or {}))
    except httpx.HTTPError as exc:
        raise AmazonUnavailable(operation, None, type(exc).__name__, str(exc) or "no answer") from exc
    if response.status_code >= 500 or response.status_code == 429:
        raise AmazonUnavailable(operation, response.status_code, "LwaUnavailable", response.text[:200])
    body = _json(response)
    if response.status_code != 200 or "access_token" not in body:
        raise AmazonRejected(
            operation,
            response.status_code,
            str(body.get("error", "LwaRejected")),
            str(body.get("error_description", "the credentials were refused")),
        )
    return body


class _LwaTokens(ABC):
    """Login with Amazon: short-lived access tokens of one grant, cached until shortly before they
    expire; LWA's refusals and outages mapped to the pipeline's errors."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        endpoint: str,
        client_id: SecretStr,
        client_secret: SecretStr,
        *,
        user_agent: str | None = None,
    ) -> None:
        """``user_agent``: the User-Agent header of token requests (default: httpx's)."""
        self._http = http
        self._endpoint = endpoint
        self._headers = {"user-agent": user_agent} if user_agent else {}
        self._client_id = client_id
        self._client_secret = client_secret
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()

    @abstractmethod
    def _grant(self) -> dict[str, str]:
        """The grant's own fields of the token request (``grant_type`` first)."""

    @property
    def client_id(self) -> str:
        return self._client_id.get_secret_value()

    def invalidate(self) -> None:
        self._token = None

    async def access_token(self) -> str:
        async with self._lock:
            if self._token is not None and time.monotonic() < self._expires_at:
                return self._token
            form = {
                **self._grant(),
                "client_id": self._client_id.get_secret_value(),
                "client_secret": self._client_secret.get_secret_value(),
            }
            body = await lwa_token_request(self._http, self._endpoint, form, headers=self._headers)
            self._token = str(body["access_token"])
            self._expires_at = time.monotonic() + float(body.get("expires_in", 3600)) - TOKEN_RENEW_MARGIN_S
            return self._token


class LwaTokenProvider(_LwaTokens):
    """Login with Amazon: exchanges the channel's refresh token for short-lived access tokens (the
    seller's, for every operation on the seller's behalf)."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        endpoint: str,
        client_id: SecretStr,
        client_secret: SecretStr,
        refresh_token: SecretStr,
        *,
        user_agent: str | None = None,
    ) -> None:
        super().__init__(http, endpoint, client_id, client_secret, user_agent=user_agent)
        self._refresh_token = refresh_token

    def _grant(self) -> dict[str, str]:
        return {"grant_type": "refresh_token", "refresh_token": self._refresh_token.get_secret_value()}


class GrantlessTokenProvider(_LwaTokens):
    """Login with Amazon's client_credentials grant: the application's own access tokens, for the
    grantless operations of one ``scope`` (e.g. ``sellingpartnerapi::notifications``)."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        endpoint: str,
        client_id: SecretStr,
        client_secret: SecretStr,
        scope: str,
        *,
        user_agent: str | None = None,
    ) -> None:
        super().__init__(http, endpoint, client_id, client_secret, user_agent=user_agent)
        self.scope = scope

    def _grant(self) -> dict[str, str]:
        return {"grant_type": "client_credentials", "scope": self.scope}


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _window_bound(value: Any) -> datetime | None:
    """The response's LastUpdatedBefore/CreatedBefore. ISO 8601 as documented; Amazon's own v0
    sandbox example sends epoch seconds ("1.569521782042E9"), so that is read too; anything else is
    no bound (the caller then keeps its own cursor)."""
    if not value:
        return None
    try:
        return parse_time(str(value))
    except ValueError:
        pass
    try:
        return datetime.fromtimestamp(float(value), UTC)
    except (ValueError, OverflowError, OSError):
        log.warning("ignored an unreadable window bound %r", value)
        return None


#: Amazon's own words are kept up to this many characters.
MAX_ERROR_TEXT = 1000


def s3_error(response: httpx.Response) -> tuple[str, str]:
    """The code and message of S3's XML error body (``<Error><Code>...``), else the HTTP status."""
    try:
        root = etree.fromstring(response.content, etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError:
        return f"S3Http{response.status_code}", response.text[:200]
    return root.findtext("Code") or f"S3Http{response.status_code}", root.findtext("Message") or ""


def _report_time(raw: Any) -> datetime | None:
    if not isinstance(raw, str) or not raw:
        return None
    try:
        return parse_time(raw)
    except ValueError:
        return None


def _report_status(response: httpx.Response, body: dict[str, Any]) -> ReportStatus:
    """getReport's Report, or :class:`AmazonRejected` when it lacks what the model requires."""
    status = body.get("processingStatus")
    created = _report_time(body.get("createdTime"))
    report_id, report_type = body.get("reportId"), body.get("reportType")
    if (
        not isinstance(report_id, str)
        or not report_id
        or not isinstance(report_type, str)
        or status not in REPORT_PROCESSING_STATUSES
        or created is None
    ):
        raise AmazonRejected(
            "getReport", response.status_code, "UnexpectedResponse", f"not a report: {str(body)[:200]}"
        )
    document = body.get("reportDocumentId")
    return ReportStatus(
        report_id=report_id,
        report_type=report_type,
        processing_status=status,
        report_document_id=document if isinstance(document, str) and document else None,
        data_start=_report_time(body.get("dataStartTime")),
        data_end=_report_time(body.get("dataEndTime")),
        created=created,
    )


def amazon_error(body: dict[str, Any]) -> tuple[str, str]:
    """The first error's code, and every error's message with its ``details`` (Amazon's ErrorList:
    ``{"errors": [{"code", "message", "details"?}]}``): "The input you have submitted is not valid"
    alone does not tell an operator that the buyer cancelled; the details do."""
    errors = [e for e in body.get("errors") or [] if isinstance(e, dict)]
    if not errors:
        return "Unknown", "no error details"
    parts = []
    for error in errors:
        text = str(error.get("message") or "").strip()
        details = str(error.get("details") or "").strip()
        if details and details not in text:
            text = f"{text} ({details})" if text else details
        if len(errors) > 1 and error.get("code"):
            text = f"{error['code']}: {text}"
        if text and text not in parts:
            parts.append(text)
    return str(errors[0].get("code") or "Unknown"), "; ".join(parts)[:MAX_ERROR_TEXT] or "no error details"


class SpApiClient:
    """One channel's view of SP-API: its endpoint, credentials and rate-limit buckets."""

    def __init__(
        self,
        *,
        channel: Channel,
        amazon: AmazonSettings,
        limiter: Quota,
        http: httpx.AsyncClient,
        lwa: LwaTokenProvider | None = None,
        observer: ApiObserver | None = None,
        feeds_api: ApiName = "feeds",
        grantless: GrantlessTokenProvider | None = None,
    ) -> None:
        """``observer``: told of every request's outcome. ``feeds_api``: which API this client's feed
        calls whose feed type is unknown (getFeed, documents) count for: "listings" in the inventory
        stage, whose feeds are all listings feeds. ``grantless``: the tokens of the grantless
        (Notifications) operations; default: the channel's LWA client, scope
        ``sellingpartnerapi::notifications``, made on first use."""
        self.channel = channel
        self.observer = observer
        self.feeds_api = feeds_api
        self._base_url = amazon.endpoint_for(channel.region)
        self.amazon = amazon
        self._limiter = limiter
        #: The last ``x-amzn-RateLimit-Limit`` Amazon sent per operation.
        self.last_rate_limits: dict[str, str] = {}
        self._rdts: dict[tuple[str, str, tuple[str, ...]], tuple[str, float]] = {}
        self._http = http
        #: Sent on every request to Amazon (SP-API, LWA, feed documents).
        self.user_agent = user_agent(amazon.user_agent_app)
        creds = channel.credentials
        self._lwa = lwa or LwaTokenProvider(
            http,
            amazon.lwa_endpoint,
            creds.client_id.resolve(f"channel {channel.name} client_id"),
            creds.client_secret.resolve(f"channel {channel.name} client_secret"),
            creds.refresh_token.resolve(f"channel {channel.name} refresh_token"),
            user_agent=self.user_agent,
        )
        self._grantless = grantless

    @property
    def seller_id(self) -> str:
        return self.channel.seller_id

    @property
    def base_url(self) -> str:
        return self._base_url

    @property
    def http(self) -> httpx.AsyncClient:
        return self._http

    @property
    def lwa(self) -> LwaTokenProvider:
        return self._lwa

    @property
    def grantless(self) -> GrantlessTokenProvider:
        """The application's tokens for grantless operations (made from the channel's LWA client)."""
        if self._grantless is None:
            creds = self.channel.credentials
            self._grantless = GrantlessTokenProvider(
                self._http,
                self.amazon.lwa_endpoint,
                creds.client_id.resolve(f"channel {self.channel.name} client_id"),
                creds.client_secret.resolve(f"channel {self.channel.name} client_secret"),
                NOTIFICATIONS_SCOPE,
                user_agent=self.user_agent,
            )
        return self._grantless

    # --- the one request path -------------------------------------------------------------------

    def api_of(self, operation: str, feed_type: str | None = None) -> ApiName:
        """The API an operation counts for on the health board."""
        if feed_type is None and operation in FEED_OPERATIONS:
            return self.feeds_api
        return api_for_operation(operation, feed_type)

    async def _observe(
        self,
        operation: str,
        api: ApiName,
        outcome: CallOutcome,
        status: int | None,
        detail: str | None,
        *,
        waited_s: float = 0.0,
    ) -> None:
        """Report one outcome; a failing or slow observer costs the request at most a second."""
        if self.observer is None:
            return
        call = ApiCall(operation, api, outcome, status, detail, waited_s)
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow the caller's own
            # cancellation when the inner call finishes at the same moment, and a stopped stage runs on.
            async with asyncio.timeout(OBSERVER_TIMEOUT_S):
                await self.observer.on_call(self.channel, call)
        except Exception as exc:  # recording health must never fail a request
            log.warning("could not record %s %s for %s: %s", operation, outcome, self.channel.name, exc)

    async def feed_fatal(self, feed_id: str, feed_type: str, *, api: ApiName | None = None) -> None:
        """Report a feed Amazon could not process at all (FATAL)."""
        if self.observer is None:
            return
        api = api or self.api_of("getFeed", feed_type)
        try:
            async with asyncio.timeout(OBSERVER_TIMEOUT_S):
                await self.observer.on_feed_fatal(self.channel, api, feed_id, feed_type)
        except Exception as exc:  # a notification must never fail the stage
            log.warning("could not notify feed %s FATAL for %s: %s", feed_id, self.channel.name, exc)

    async def call(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json_body: dict[str, Any] | None = None,
        lane: str = "default",
        feed_type: str | None = None,
        access_token: str | None = None,
        api: ApiName | None = None,
    ) -> httpx.Response:
        """Send one request under the rate limiter and classify its outcome; returns 2xx responses.

        ``feed_type`` (createFeed): the limiter also takes a token of that feed type's own bucket
        (JSON_LISTINGS_FEED: 5 per 5 minutes). ``access_token``: a Restricted Data Token to send
        instead of the LWA access token. ``api``: which API the call counts for on the health board
        (default: the operation's, see :meth:`api_of`). A grantless operation
        (:data:`~ordersync.amazon.operations.GRANTLESS_OPERATIONS`) goes with the application's
        client_credentials token, under the application's buckets.
        """
        api = api or self.api_of(operation, feed_type)
        grantless = access_token is None and operation in GRANTLESS_OPERATIONS
        lwa: _LwaTokens = self.grantless if grantless else self._lwa
        bucket = GRANTLESS_BUCKET if grantless else self.seller_id
        try:
            token = access_token or await lwa.access_token()
        except AmazonRejected as exc:
            await self._observe(
                operation, api, "auth", exc.status, f"LWA refused the credentials: {exc.code}"
            )
            raise
        except AmazonUnavailable as exc:
            await self._observe(operation, api, "unavailable", exc.status, f"LWA unavailable: {exc.code}")
            raise
        while True:
            grant = await self._limiter.acquire(operation, bucket, lane=lane, feed_type=feed_type)
            if not grant.expired():
                break
            # Too late to send safely (the request could reach Amazon after its bucket emptied):
            # drop it; the token stays spent.
            log.warning("dropped %s for %s: grant deadline passed before sending", operation, bucket)
        headers = {"x-amz-access-token": token, "accept": "application/json", "user-agent": self.user_agent}
        try:
            response = await self._http.request(
                method, self._base_url + path, params=params, json=json_body, headers=headers
            )
        except httpx.HTTPError as exc:
            detail = f"no answer: {type(exc).__name__}"
            await self._observe(operation, api, "unavailable", None, detail, waited_s=grant.waited_s)
            raise AmazonUnavailable(operation, None, type(exc).__name__, str(exc) or "no answer") from exc
        request_id = response.headers.get(REQUEST_ID_HEADER)
        limit = response.headers.get(RATE_LIMIT_HEADER)
        if limit:
            self.last_rate_limits[operation] = limit
        if limit:
            try:
                await self._limiter.observe_rate_limit(operation, bucket, float(limit))
            except ValueError:
                log.warning("ignored malformed %s header %r", RATE_LIMIT_HEADER, limit)
        status = response.status_code
        if status < 300:
            await self._observe(operation, api, "ok", status, None, waited_s=grant.waited_s)
            return response
        code, message = amazon_error(_json(response))
        await self._observe(
            operation, api, _outcome(status), status, f"{status} {code}", waited_s=grant.waited_s
        )
        if status == 429:
            await self._limiter.on_throttled(operation, bucket, feed_type=feed_type)
            raise AmazonThrottled(operation, status, code, message, request_id)
        if status >= 500:
            raise AmazonUnavailable(operation, status, code, message, request_id)
        if status == 403 and access_token is None:
            lwa.invalidate()
        rejected = AmazonConflict if status == 409 else AmazonRejected
        raise rejected(operation, status, code, message, request_id)

    # --- orders ---------------------------------------------------------------------------------

    async def list_orders_page(
        self,
        query: OrdersQuery | None = None,
        *,
        updated_after: datetime | None = None,
        next_token: str | None = None,
        statuses: tuple[OrderStatus, ...] = (),
    ) -> OrdersPage:
        """One page of the orders ``query`` selects: the first, or the one ``next_token`` names.

        With ``next_token``, pass the query of the first page: searchOrders (2026-01-01) wants its
        filters again, with the same values, on every page (v0 getOrders needs only the token).
        ``updated_after`` and ``statuses`` are a shorthand for ``OrdersQuery(updated_after=...)``.
        """
        if query is None:
            query = OrdersQuery(updated_after=updated_after, statuses=statuses)
        if self.channel.orders_api == "v0":
            return await self._get_orders_v0(query, next_token)
        return await self._search_orders(query, next_token)

    async def iter_orders(
        self, updated_after: datetime, statuses: tuple[OrderStatus, ...] = ()
    ) -> AsyncIterator[OrdersPage]:
        """Every page of one window, each page asking the rate limiter first; every page request
        is the same query with the previous page's token."""
        query = OrdersQuery(updated_after=updated_after, statuses=statuses)
        page = await self.list_orders_page(query)
        yield page
        while page.next_token:
            page = await self.list_orders_page(query, next_token=page.next_token)
            yield page

    def _fulfillment_channels(self, query: OrdersQuery) -> tuple[str, ...]:
        if query.fulfillment_channels is not None:
            return query.fulfillment_channels
        return self.channel.fulfillment_channels

    def _listing_params(
        self, query: OrdersQuery, next_token: str | None, names: ListingParameters
    ) -> dict[str, str]:
        """getOrders/searchOrders query parameters: the same query in each API's own words. A
        follow-up page is the token, with the same filters when the API requires them (searchOrders:
        the same values, so the same query must be passed for every page)."""
        params = {names.marketplaces: ",".join(self.channel.marketplaces)}
        if next_token:
            params[names.token] = next_token
            if not names.token_repeats_filters:
                return params
        if query.updated_after is not None:
            params[names.updated_after] = amazon_time(query.updated_after)
        elif query.created_after is not None:
            params[names.created_after] = amazon_time(query.created_after)
            if query.created_before is not None:
                params[names.created_before] = amazon_time(query.created_before)
        else:
            raise ValueError("an orders query needs updated_after or created_after")
        params[names.page_size] = "100"
        if query.statuses:
            params[names.statuses] = ",".join(names.status_value(s) for s in query.statuses)
        if channels := self._fulfillment_channels(query):
            params[names.channels] = ",".join(names.channel_value(c) for c in channels)
        return params

    async def _get_orders_v0(self, query: OrdersQuery, next_token: str | None) -> OrdersPage:
        params = self._listing_params(query, next_token, V0_LISTING)
        response = await self.call("getOrders", "GET", "/orders/v0/orders", params=params)
        payload = _json(response).get("payload") or {}
        before = payload.get("LastUpdatedBefore") or payload.get("CreatedBefore")
        return OrdersPage(
            orders=tuple(order_from_v0(raw, self.seller_id) for raw in payload.get("Orders") or []),
            next_token=payload.get("NextToken") or None,
            updated_before=_window_bound(before),
        )

    async def _search_orders(self, query: OrdersQuery, next_token: str | None) -> OrdersPage:
        params = self._listing_params(query, next_token, V2026_LISTING)
        params["includedData"] = included_data(self.channel)
        response = await self.call("searchOrders", "GET", "/orders/2026-01-01/orders", params=params)
        body = _json(response)
        before = body.get("lastUpdatedBefore") or body.get("createdBefore")
        return OrdersPage(
            orders=tuple(order_from_2026(raw, self.seller_id) for raw in body.get("orders") or []),
            next_token=(body.get("pagination") or {}).get("nextToken") or None,
            updated_before=_window_bound(before),
        )

    async def get_order(self, amazon_order_id: str) -> AmazonOrder:
        if self.channel.orders_api == "v0":
            response = await self.call("getOrder", "GET", f"/orders/v0/orders/{amazon_order_id}")
            return order_from_v0(_json(response).get("payload") or {}, self.seller_id)
        response = await self.call(
            "getOrder",
            "GET",
            f"/orders/2026-01-01/orders/{amazon_order_id}",
            params={"includedData": included_data(self.channel)},
        )
        return order_from_2026(_json(response).get("order") or {}, self.seller_id)

    async def get_order_items(self, amazon_order_id: str) -> tuple[AmazonOrderItem, ...]:
        """Every item of a v0 order, page by page, each page under the limiter."""
        items: list[AmazonOrderItem] = []
        next_token: str | None = None
        while True:
            params = {"NextToken": next_token} if next_token else None
            response = await self.call(
                "getOrderItems", "GET", f"/orders/v0/orders/{amazon_order_id}/orderItems", params=params
            )
            payload = _json(response).get("payload") or {}
            try:
                items.extend(item_from_v0(raw) for raw in payload.get("OrderItems") or [])
            except (KeyError, ValueError) as exc:
                raise AmazonRejected(
                    "getOrderItems", response.status_code, "UnexpectedResponse", f"item not understood: {exc}"
                ) from exc
            next_token = payload.get("NextToken") or None
            if not next_token:
                return tuple(items)

    async def confirm_shipment(self, shipment: ShipmentRequested, marketplace_id: str) -> None:
        """confirmShipment (v0): 204 on success; Amazon's errors raise classified."""
        package: dict[str, Any] = {
            "packageReferenceId": shipment.package_reference_id,
            "carrierCode": shipment.carrier_code,
            "trackingNumber": shipment.tracking_number,
            "shipDate": amazon_time(shipment.ship_date),
            "orderItems": [
                {"orderItemId": item.order_item_id, "quantity": item.quantity} for item in shipment.items
            ],
        }
        if shipment.carrier_name:
            package["carrierName"] = shipment.carrier_name
        if shipment.shipping_method:
            package["shippingMethod"] = shipment.shipping_method
        await self.call(
            "confirmShipment",
            "POST",
            f"/orders/v0/orders/{shipment.amazon_order_id}/shipmentConfirmation",
            json_body={"marketplaceId": marketplace_id, "packageDetail": package},
        )

    async def patch_availability(
        self, sku: str, marketplace_ids: tuple[str, ...], patch: dict[str, Any]
    ) -> str:
        """patchListingsItem (Listings Items 2021-08-01) with one ``fulfillment_availability`` patch, for
        a level that cannot wait for the next feed; returns the submission id. Amazon's INVALID answer
        (200 with issues) raises :class:`AmazonRejected` with the issues."""
        response = await self.call(
            "patchListingsItem",
            "PATCH",
            f"/listings/2021-08-01/items/{quote(self.seller_id, safe='')}/{quote(sku, safe='')}",
            params={"marketplaceIds": ",".join(marketplace_ids)},
            json_body={"productType": "PRODUCT", "patches": [patch]},
        )
        body = _json(response)
        if body.get("status") != "ACCEPTED":
            issues = body.get("issues") or []
            detail = "; ".join(f"{i.get('code')}: {i.get('message')}" for i in issues if isinstance(i, dict))
            raise AmazonRejected(
                "patchListingsItem",
                response.status_code,
                str(body.get("status") or "INVALID"),
                detail or "refused",
            )
        return str(body.get("submissionId") or "")

    # --- restricted data (PII) ------------------------------------------------------------------

    async def restricted_data_token(self, method: str, path: str, data_elements: tuple[str, ...] = ()) -> str:
        """A Restricted Data Token for one resource (createRestrictedDataToken), cached until shortly
        before it expires."""
        key = (method, path, tuple(sorted(data_elements)))
        cached = self._rdts.get(key)
        if cached is not None and time.monotonic() < cached[1]:
            return cached[0]
        resource: dict[str, Any] = {"method": method, "path": path}
        if data_elements:
            resource["dataElements"] = list(data_elements)
        response = await self.call(
            "createRestrictedDataToken",
            "POST",
            "/tokens/2021-03-01/restrictedDataToken",
            json_body={"restrictedResources": [resource]},
        )
        body = _json(response)
        token = body.get("restrictedDataToken")
        if not isinstance(token, str) or not token:
            raise AmazonRejected(
                "createRestrictedDataToken",
                response.status_code,
                "UnexpectedResponse",
                "no restrictedDataToken",
            )
        expires_in = float(body.get("expiresIn", 3600))
        self._rdts[key] = (token, time.monotonic() + max(0.0, expires_in - TOKEN_RENEW_MARGIN_S))
        return token

    async def get_order_address(self, amazon_order_id: str) -> Address | None:
        """getOrderAddress (v0): the order's shipping address, None when Amazon shows none (Pending,
        Canceled). With the channel's ``fetch_pii``, through a Restricted Data Token, so name, street
        and phone are included; without, only city, region, postal code and country. The RDT names
        no dataElements: the Tokens API needs them only for getOrders, getOrder and getOrderItems
        (tokens_2021-03-01.json); an RDT for getOrderAddress opens the address. (Orders 2026-01-01
        needs no RDT at all: the application's roles open buyer and recipient data.)"""
        path = f"/orders/v0/orders/{amazon_order_id}/address"
        rdt = None
        if self.channel.fetch_pii:
            rdt = await self.restricted_data_token("GET", path)
        response = await self.call("getOrderAddress", "GET", path, access_token=rdt)
        payload = _json(response).get("payload") or {}
        return address_from_v0(payload.get("ShippingAddress"))

    # --- reports (Reports API 2021-06-30) -------------------------------------------------------

    async def create_report(
        self,
        report_type: str,
        *,
        data_start: datetime,
        data_end: datetime,
        marketplace_ids: Sequence[str] | None = None,
    ) -> str:
        """createReport of ``report_type`` over [``data_start``, ``data_end``] (aware datetimes; Amazon
        refuses an end later than now); returns the reportId. ``marketplace_ids``: default the channel's
        (Amazon requires some; a regional report such as the order report covers every marketplace of
        the seller in the region whatever they are)."""
        if data_start > data_end:
            raise ValueError("data_start is later than data_end")
        markets = list(self.channel.marketplaces if marketplace_ids is None else marketplace_ids)
        body = {
            "reportType": report_type,
            "marketplaceIds": markets,
            "dataStartTime": amazon_time(data_start),
            "dataEndTime": amazon_time(data_end),
        }
        response = await self.call("createReport", "POST", "/reports/2021-06-30/reports", json_body=body)
        report_id = _json(response).get("reportId")
        if not isinstance(report_id, str) or not report_id:
            raise AmazonRejected("createReport", response.status_code, "UnexpectedResponse", "no reportId")
        return report_id

    async def get_report(self, report_id: str) -> ReportStatus:
        """getReport: the report's processing status and, once DONE, its document id."""
        response = await self.call(
            "getReport", "GET", f"/reports/2021-06-30/reports/{quote(report_id, safe='')}"
        )
        return _report_status(response, _json(response))

    async def get_report_document(self, document_id: str, *, restricted: bool = False) -> bytes:
        """getReportDocument and the download from its presigned URL: the document's content,
        gunzipped when Amazon says its ``compressionAlgorithm`` is GZIP. ``restricted``: a restricted
        report type's document (GET_EASYSHIP_DOCUMENTS), opened with a Restricted Data Token naming it."""
        operation = "getReportDocument"
        path = f"/reports/2021-06-30/documents/{quote(document_id, safe='')}"
        rdt = await self.restricted_data_token("GET", path) if restricted else None
        response = await self.call(operation, "GET", path, access_token=rdt)
        body = _json(response)
        url, compression = body.get("url"), body.get("compressionAlgorithm")
        if not isinstance(url, str) or not url:
            raise AmazonRejected(operation, response.status_code, "UnexpectedResponse", "no document url")
        if compression not in (None, "GZIP"):
            raise AmazonRejected(
                operation, response.status_code, "UnexpectedResponse", f"compressionAlgorithm {compression!r}"
            )
        return await self.download_document("downloadReportDocument", url, gzipped=compression == "GZIP")

    async def download_document(self, operation: str, url: str, *, gzipped: bool) -> bytes:
        """A document from its presigned URL (S3: no access token, no usage plan), decompressed when
        ``gzipped``, unless the download said ``Content-Encoding: gzip`` (then httpx did it)."""
        try:
            response = await self._http.get(url, headers={"user-agent": self.user_agent})
        except httpx.HTTPError as exc:
            raise AmazonUnavailable(operation, None, type(exc).__name__, str(exc) or "no answer") from exc
        status = response.status_code
        if status >= 300:
            code, message = s3_error(response)
            error = AmazonUnavailable if status >= 500 or status == 429 else AmazonRejected
            raise error(operation, status, code, message, response.headers.get("x-amz-request-id"))
        content = response.content
        decoded = "gzip" in response.headers.get("content-encoding", "").lower()
        if gzipped and not decoded:
            try:
                content = gzip.decompress(content)
            except (OSError, EOFError, zlib.error) as exc:
                raise AmazonRejected(operation, status, "BadGzip", str(exc)) from exc
        return content

    # --- notifications (Notifications API v1) --------------------------------------------------

    async def create_destination(self, name: str, *, sqs_arn: str) -> NotificationDestination:
        """createDestination (grantless): the application's destination for the SQS queue ``sqs_arn``.
        A destination for that ARN exists already: :class:`AmazonConflict` (find it with
        :meth:`get_destinations`)."""
        body = {"name": name, "resourceSpecification": {"sqs": {"arn": sqs_arn}}}
        response = await self.call(
            "createDestination", "POST", "/notifications/v1/destinations", json_body=body
        )
        return _destination("createDestination", response, _json(response).get("payload"))

    async def get_destinations(self) -> tuple[NotificationDestination, ...]:
        """getDestinations (grantless): every destination of the application."""
        response = await self.call("getDestinations", "GET", "/notifications/v1/destinations")
        payload = _json(response).get("payload")
        if not isinstance(payload, list):
            raise AmazonRejected(
                "getDestinations", response.status_code, "UnexpectedResponse", "no list of destinations"
            )
        return tuple(_destination("getDestinations", response, raw) for raw in payload)

    async def create_subscription(
        self,
        notification_type: str,
        destination_id: str,
        *,
        payload_version: str = "1.0",
        marketplace_ids: Sequence[str] | None = None,
        order_change_types: Sequence[str] | None = None,
    ) -> NotificationSubscription:
        """createSubscription for this channel's seller: ``notification_type`` (e.g. ORDER_CHANGE)
        delivered to ``destination_id``. Types with an event filter get one (Amazon requires it for
        ORDER_CHANGE), narrowed to ``marketplace_ids`` and ``order_change_types`` when given (else
        every marketplace and change type). The seller has such a subscription already:
        :class:`AmazonConflict` (:meth:`get_subscription` returns it)."""
        body: dict[str, Any] = {"payloadVersion": payload_version, "destinationId": destination_id}
        if notification_type in EVENT_FILTER_TYPES:
            event_filter: dict[str, Any] = {"eventFilterType": notification_type}
            if marketplace_ids is not None:
                event_filter["marketplaceIds"] = list(marketplace_ids)
            if order_change_types is not None:
                event_filter["orderChangeTypes"] = list(order_change_types)
            body["processingDirective"] = {"eventFilter": event_filter}
        elif marketplace_ids is not None or order_change_types is not None:
            raise ValueError(f"{notification_type} takes no event filter")
        response = await self.call(
            "createSubscription",
            "POST",
            f"/notifications/v1/subscriptions/{notification_type}",
            json_body=body,
        )
        return _subscription("createSubscription", notification_type, response)

    async def get_subscription(
        self, notification_type: str, *, payload_version: str | None = None
    ) -> NotificationSubscription | None:
        """getSubscription: this channel's seller's subscription of ``notification_type`` (the given
        payload version, else the latest); None when there is none (Amazon's 404)."""
        params = {"payloadVersion": payload_version} if payload_version else None
        try:
            response = await self.call(
                "getSubscription",
                "GET",
                f"/notifications/v1/subscriptions/{notification_type}",
                params=params,
            )
        except AmazonRejected as exc:
            if exc.status == 404:
                return None
            raise
        return _subscription("getSubscription", notification_type, response)

    async def delete_subscription_by_id(self, notification_type: str, subscription_id: str) -> None:
        """deleteSubscriptionById (grantless): Amazon stops sending that subscription's notifications."""
        await self.call(
            "deleteSubscriptionById",
            "DELETE",
            f"/notifications/v1/subscriptions/{notification_type}/{subscription_id}",
        )

    # --- Easy Ship (2022-03-23) --------------------------------------------------------------------

    async def list_handover_slots(
        self, marketplace_id: str, amazon_order_id: str, size: PackageSize
    ) -> tuple[HandoverSlot, ...]:
        """listHandoverSlots: the slots Amazon offers for this order's package, earliest first."""
        response = await self.call(
            "listHandoverSlots",
            "POST",
            "/easyShip/2022-03-23/timeSlot",
            json_body=easyship.slots_request(marketplace_id, amazon_order_id, size),
        )
        return easyship.parse_slots(_json(response))

    async def create_scheduled_package(
        self,
        marketplace_id: str,
        amazon_order_id: str,
        slot: HandoverSlot,
        *,
        order_item_ids: tuple[str, ...] = (),
        identifier: str | None = None,
    ) -> ScheduledPackage:
        """createScheduledPackage: the order's package scheduled in ``slot``."""
        response = await self.call(
            "createScheduledPackage",
            "POST",
            "/easyShip/2022-03-23/package",
            json_body={
                "amazonOrderId": amazon_order_id,
                "marketplaceId": marketplace_id,
                "packageDetails": easyship.package_details(slot, order_item_ids, identifier),
            },
        )
        return easyship.parse_package(_json(response))

    async def create_scheduled_packages(
        self,
        marketplace_id: str,
        packages: Sequence[PackageRequest],
        *,
        label_format: LabelFormat = "PDF",
    ) -> BulkSchedule:
        """createScheduledPackageBulk: several orders' packages (slot, items, identifier) in one call;
        Amazon schedules each it can and refuses the others one by one."""
        response = await self.call(
            "createScheduledPackageBulk",
            "POST",
            "/easyShip/2022-03-23/packages/bulk",
            json_body={
                "marketplaceId": marketplace_id,
                "labelFormat": label_format,
                "orderScheduleDetailsList": [
                    {
                        "amazonOrderId": package.amazon_order_id,
                        "packageDetails": easyship.package_details(
                            package.slot, package.order_item_ids, package.identifier
                        ),
                    }
                    for package in packages
                ],
            },
        )
        return easyship.parse_bulk(_json(response))

    async def get_scheduled_package(self, marketplace_id: str, amazon_order_id: str) -> ScheduledPackage:
        """getScheduledPackage: the order's package, its slot, status and invoice."""
        response = await self.call(
            "getScheduledPackage",
            "GET",
            "/easyShip/2022-03-23/package",
            params={"amazonOrderId": amazon_order_id, "marketplaceId": marketplace_id},
        )
        return easyship.parse_package(_json(response))

    async def update_scheduled_packages(
        self, marketplace_id: str, moves: Sequence[tuple[str, str | None, HandoverSlot]]
    ) -> tuple[ScheduledPackage, ...]:
        """updateScheduledPackages: packages (order id, package id) moved to other slots."""
        response = await self.call(
            "updateScheduledPackages",
            "PATCH",
            "/easyShip/2022-03-23/package",
            json_body={
                "marketplaceId": marketplace_id,
                "updatePackageDetailsList": [
                    {
                        "scheduledPackageId": {"amazonOrderId": order_id}
                        | ({"packageId": package_id} if package_id else {}),
                        "packageTimeSlot": slot.as_amazon(),
                    }
                    for order_id, package_id, slot in moves
                ],
            },
        )
        return tuple(easyship.parse_package(raw) for raw in _json(response).get("packages") or ())

    # --- Sellers (v1) -----------------------------------------------------------------------------

    async def get_marketplace_participations(self) -> tuple[Participation, ...]:
        """getMarketplaceParticipations: every marketplace the seller can list in, whether the seller
        participates there and whether its listings are suspended (0.016 per second, burst 15)."""
        response = await self.call(
            "getMarketplaceParticipations", "GET", "/sellers/v1/marketplaceParticipations"
        )
        return parse_participations(_json(response), status=response.status_code)

    # --- Catalog Items (2022-04-01) ----------------------------------------------------------------

    async def get_catalog_item(self, marketplace_id: str, asin: str) -> CatalogItem:
        """getCatalogItem: the product's title, image, identifiers, dimensions and weight."""
        response = await self.call(
            "getCatalogItem",
            "GET",
            f"/catalog/2022-04-01/items/{quote(asin, safe='')}",
            params={"marketplaceIds": marketplace_id, "includedData": ",".join(catalog.INCLUDED_DATA)},
        )
        return catalog.parse_item(_json(response), marketplace_id)

    async def search_catalog_items(
        self, marketplace_id: str, identifiers: Sequence[str], identifiers_type: str = "SKU"
    ) -> tuple[CatalogItem, ...]:
        """searchCatalogItems by identifiers (at most 20: Amazon's limit): the products found. A SKU
        search names the seller, as Amazon requires."""
        if not 0 < len(identifiers) <= catalog.MAX_IDENTIFIERS:
            raise ValueError(f"1 to {catalog.MAX_IDENTIFIERS} identifiers per search, not {len(identifiers)}")
        params = {
            "marketplaceIds": marketplace_id,
            "identifiers": ",".join(identifiers),
            "identifiersType": identifiers_type,
            "includedData": ",".join(catalog.INCLUDED_DATA),
        }
        if identifiers_type == "SKU":
            params["sellerId"] = self.seller_id
        response = await self.call("searchCatalogItems", "GET", "/catalog/2022-04-01/items", params=params)
        return tuple(catalog.parse_item(raw, marketplace_id) for raw in _json(response).get("items") or ())


def _destination(operation: str, response: httpx.Response, raw: Any) -> NotificationDestination:
    resource = raw.get("resource") if isinstance(raw, dict) else None
    if not isinstance(raw, dict) or not raw.get("destinationId") or not isinstance(resource, dict):
        raise AmazonRejected(operation, response.status_code, "UnexpectedResponse", "no destination")
    sqs: dict[str, Any] = resource.get("sqs") or {}
    bridge: dict[str, Any] = resource.get("eventBridge") or {}
    if not isinstance(sqs, dict) or not isinstance(bridge, dict):
        raise AmazonRejected(operation, response.status_code, "UnexpectedResponse", "no destination resource")
    return NotificationDestination(
        destination_id=str(raw["destinationId"]),
        name=str(raw.get("name") or ""),
        sqs_arn=str(sqs["arn"]) if sqs.get("arn") else None,
        event_bridge_region=str(bridge["region"]) if bridge.get("region") else None,
        event_bridge_account_id=str(bridge["accountId"]) if bridge.get("accountId") else None,
    )


def _subscription(
    operation: str, notification_type: str, response: httpx.Response
) -> NotificationSubscription:
    raw = _json(response).get("payload")
    if not isinstance(raw, dict) or not raw.get("subscriptionId") or not raw.get("destinationId"):
        raise AmazonRejected(operation, response.status_code, "UnexpectedResponse", "no subscription")
    directive = raw.get("processingDirective")
    return NotificationSubscription(
        subscription_id=str(raw["subscriptionId"]),
        notification_type=notification_type,
        payload_version=str(raw.get("payloadVersion") or ""),
        destination_id=str(raw["destinationId"]),
        processing_directive=directive if isinstance(directive, dict) else None,
    )
