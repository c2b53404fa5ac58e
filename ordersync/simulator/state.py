"""The simulator's whole state and logic, without HTTP: scenario, clock, order book, LWA tokens,
token buckets, faults, counters, the Feeds and Reports APIs, and the Notifications API (destinations,
subscriptions, the ORDER_CHANGE notifications an SQS sender takes from here).

:meth:`SimulatorState.call` runs one SP-API request the way Amazon's front door does: request id,
access token (403), token bucket (429), injected fault (500/503), then the operation (200/204,
or 400/404), then the headers and the counters. The HTTP app is a thin adapter over it, so unit
tests exercise the same path without a server.
"""

from __future__ import annotations

import random
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import cache
from typing import Any, Literal, cast

from pydantic import ValidationError

from ordersync.amazon.models import default_plans, load_model
from ordersync.amazon.operations import NOTIFICATIONS_SCOPE
from ordersync.simulator import generate
from ordersync.simulator.catalog import Catalog, build_catalog
from ordersync.simulator.clock import SimClock, epoch_to_iso, parse_iso
from ordersync.simulator.consent import (
    AUTHORIZATION_CODE_TTL_S,
    AuthorizationCode,
    Consent,
    ConsentError,
    check_consent,
    marketplace_participations,
    redirect_location,
)
from ordersync.simulator.easyship import EasyShipEngine, ScheduledPackage
from ordersync.simulator.easyship_documents import (
    CODE_NO_WARRANTY,
    CODE_NOT_SCHEDULED,
    DocumentRequest,
    PackageFacts,
    documents_pdf,
)
from ordersync.simulator.feeds import (
    CODE_CANCELED_ORDER,
    CODE_ORDER_STATE,
    CODE_QUANTITY_ABOVE_UNSHIPPED,
    CODE_UNKNOWN_ITEM,
    CODE_UNKNOWN_ORDER,
    CONTENT_ENCODING_PARAMETER,
    FEED_STATUSES,
    FEEDS_KEPT_S,
    KNOWN_FEED_TYPES,
    LISTINGS_FEED_OPERATION,
    AcknowledgementMessage,
    Document,
    FeedEngine,
    FulfillmentMessage,
    Listing,
    MessageResult,
    S3Error,
)
from ordersync.simulator.notifications import GRANTLESS_SCOPES, Delivery, NotificationEngine
from ordersync.simulator.orders import (
    EASY_SHIP,
    SHIP_PLUS,
    Item,
    Order,
    OrderBook,
    Package,
    SimStatus,
    Snapshot,
    TransitionError,
)
from ordersync.simulator.paging import TokenCodec
from ordersync.simulator.render import (
    ADDRESS_STATUSES,
    STATUS_2026,
    Pii,
    address_v0,
    order_2026,
    order_item_v0,
    order_truth,
    order_v0,
)
from ordersync.simulator.reports import (
    EASYSHIP_DOCUMENTS_REPORT,
    KNOWN_REPORT_TYPES,
    REPORT_STATUSES,
    RESTRICTED_REPORT_TYPES,
    Report,
    ReportEngine,
)
from ordersync.simulator.scenario import (
    MARKETPLACES,
    UNMAPPED_SKU_PREFIX,
    Application,
    Faults,
    NotificationProfile,
    Product,
    ReportProfile,
    Scenario,
    SellerScenario,
    UsagePlanOverride,
)
from ordersync.simulator.throttle import Counters, Plan, Throttler
from ordersync.simulator.validation import (
    ACCESS_DENIED_MESSAGE,
    QUOTA_EXCEEDED_MESSAGE,
    AmazonShipment,
    ControlError,
    NewOrder,
    NewOrderItem,
    OrdersQuery,
    SpApiError,
    csv_values,
    invalid_input,
    not_found,
    parse_confirm_shipment,
)

#: Amazon refuses a *Before later than two minutes ago and defaults it to that (ordersV0.json).
TWO_MINUTES = 120.0
#: searchOrders pagination tokens expire after 24 hours (orders_2026-01-01.json).
PAGINATION_TOKEN_TTL_S = 86400.0
#: getOrderItems returns this many items per page, then a NextToken.
ORDER_ITEMS_PAGE_SIZE = 30
MAX_RESULTS_PER_PAGE = 100
RESTRICTED_DATA_TOKEN_TTL_S = 3600
#: Counted as the seller of requests that carry no valid access token.
ANONYMOUS = "-"
#: The seller of grantless calls (LWA client_credentials tokens act for an application, no seller):
#: their counters and token buckets are the application's.
GRANTLESS = "(grantless)"

ORDER_STATUSES_V0 = (
    "PendingAvailability",
    "Pending",
    "Unshipped",
    "PartiallyShipped",
    "Shipped",
    "Canceled",
    "Unfulfillable",
    "InvoiceUnconfirmed",
)
INCLUDED_DATA_2026 = frozenset(
    {"BUYER", "RECIPIENT", "PROCEEDS", "EXPENSE", "PROMOTION", "CANCELLATION", "FULFILLMENT", "PACKAGES"}
    | {"TAX", "PAYMENT", "FULFILLMENT_ORDERS"}
)
RDT_DATA_ELEMENTS = frozenset({"buyerInfo", "shippingAddress", "buyerTaxInformation"})
#: The personal data each v0 restricted operation without data elements returns: an RDT for it
#: opens that data ("dataElements ... is required only when getting an RDT for use with the getOrder,
#: getOrders, or getOrderItems operation", tokens_2021-03-01.json; its sandbox example asks for
#: getOrderAddress without dataElements).
_V0_OWN_DATA: dict[tuple[str, ...], frozenset[str]] = {
    ("address",): frozenset({"shippingAddress"}),
    ("buyerInfo",): frozenset({"buyerInfo"}),
    ("orderItems", "buyerInfo"): frozenset({"buyerInfo"}),
}
_ORDER_ID = re.compile(r"^\d{3}-\d{7}-\d{7}$")
_STATUS_FROM_2026: dict[str, tuple[str, ...]] = {
    v: (k, "InvoiceUnconfirmed") if k == "Shipped" else (k,) for k, v in STATUS_2026.items()
}
_FULFILLED_BY = {"MERCHANT": "MFN", "AMAZON": "AFN"}


@dataclass(frozen=True)
class Operation:
    """One SP-API operation: the name it is counted under, its API and its usage-plan operation id;
    ``scope``: the grantless scope it needs (its callers' tokens come from the client_credentials grant
    and act for no seller), None for an operation on a seller's behalf (refresh-token grant)."""

    key: str
    api: str
    operation_id: str
    method: str
    scope: str | None = None


OPERATIONS: dict[str, Operation] = {
    op.key: op
    for op in (
        Operation("getOrders", "orders-v0", "getOrders", "GET"),
        Operation("getOrder", "orders-v0", "getOrder", "GET"),
        Operation("getOrderItems", "orders-v0", "getOrderItems", "GET"),
        Operation("confirmShipment", "orders-v0", "confirmShipment", "POST"),
        Operation("searchOrders", "orders-2026-01-01", "searchOrders", "GET"),
        Operation("getOrder@2026-01-01", "orders-2026-01-01", "getOrder", "GET"),
        Operation("getOrderAddress", "orders-v0", "getOrderAddress", "GET"),
        Operation("createRestrictedDataToken", "tokens", "createRestrictedDataToken", "POST"),
        Operation("createFeedDocument", "feeds", "createFeedDocument", "POST"),
        Operation("createFeed", "feeds", "createFeed", "POST"),
        Operation("getFeeds", "feeds", "getFeeds", "GET"),
        Operation("getFeed", "feeds", "getFeed", "GET"),
        Operation("cancelFeed", "feeds", "cancelFeed", "DELETE"),
        Operation("getFeedDocument", "feeds", "getFeedDocument", "GET"),
        Operation("createDestination", "notifications", "createDestination", "POST", NOTIFICATIONS_SCOPE),
        Operation("getDestinations", "notifications", "getDestinations", "GET", NOTIFICATIONS_SCOPE),
        Operation("getDestination", "notifications", "getDestination", "GET", NOTIFICATIONS_SCOPE),
        Operation("deleteDestination", "notifications", "deleteDestination", "DELETE", NOTIFICATIONS_SCOPE),
        Operation("createSubscription", "notifications", "createSubscription", "POST"),
        Operation("getSubscription", "notifications", "getSubscription", "GET"),
        Operation("getSubscriptionById", "notifications", "getSubscriptionById", "GET", NOTIFICATIONS_SCOPE),
        Operation(
            "deleteSubscriptionById", "notifications", "deleteSubscriptionById", "DELETE", NOTIFICATIONS_SCOPE
        ),
        Operation("createReport", "reports", "createReport", "POST"),
        Operation("getReports", "reports", "getReports", "GET"),
        Operation("getReport", "reports", "getReport", "GET"),
        Operation("cancelReport", "reports", "cancelReport", "DELETE"),
        Operation("getReportDocument", "reports", "getReportDocument", "GET"),
        Operation("patchListingsItem", "listings", "patchListingsItem", "PATCH"),
        Operation("listHandoverSlots", "easyship", "listHandoverSlots", "POST"),
        Operation("getScheduledPackage", "easyship", "getScheduledPackage", "GET"),
        Operation("createScheduledPackage", "easyship", "createScheduledPackage", "POST"),
        Operation("updateScheduledPackages", "easyship", "updateScheduledPackages", "PATCH"),
        Operation("createScheduledPackageBulk", "easyship", "createScheduledPackageBulk", "POST"),
        Operation("getCatalogItem", "catalog-items", "getCatalogItem", "GET"),
        Operation("searchCatalogItems", "catalog-items", "searchCatalogItems", "GET"),
        Operation("getMarketplaceParticipations", "sellers", "getMarketplaceParticipations", "GET"),
    )
}
#: Faults the control API can force on the next matching requests.
FAULT_KINDS = ("500", "503", "429", "timeout", "drop", "slow")
FEEDS_PAGE_SIZE = 10
#: getReports' default pageSize (reports_2021-06-30.json).
REPORTS_PAGE_SIZE = 10
#: Statuses whose responses carry ``x-amzn-RateLimit-Limit`` when the model does not say.
RATE_LIMIT_HEADER_STATUSES = frozenset({200, 201, 202, 204, 400, 404})


@cache
def rate_limit_header_statuses(api: str, operation_id: str) -> frozenset[int]:
    """The statuses whose responses the model documents with ``x-amzn-RateLimit-Limit``."""
    for methods in load_model(api).get("paths", {}).values():
        for op in methods.values():
            if isinstance(op, dict) and op.get("operationId") == operation_id:
                return frozenset(
                    int(status)
                    for status, response in op.get("responses", {}).items()
                    if status.isdigit() and "x-amzn-RateLimit-Limit" in (response.get("headers") or {})
                )
    return RATE_LIMIT_HEADER_STATUSES


# --- searchOrders paging: the same filters on every page ----------------------------------------------

#: searchOrders parameters a follow-up page may change (orders_2026-01-01.json, ``Pagination``: "All
#: other parameters must be provided with the same values that were provided with the request that
#: generated this token, with the exception of ``maxResultsPerPage`` and ``includedData``").
SEARCH_PAGING_MAY_CHANGE = frozenset({"paginationToken", "maxResultsPerPage", "includedData"})
SEARCH_PAGING_RULE = (
    "All other parameters must be provided with the same values that were provided with the request "
    "that generated this token, with the exception of maxResultsPerPage and includedData."
)

FilterKind = Literal["instant", "set", "text"]


@cache
def search_orders_filters() -> tuple[tuple[str, FilterKind], ...]:
    """searchOrders' filters, from the model: every query parameter but those a follow-up page may
    change, with how a follow-up's value is compared with the first request's (date-times as
    instants, arrays as sets of values, anything else as text)."""
    operation = load_model("orders-2026-01-01")["paths"]["/orders/2026-01-01/orders"]["get"]
    filters: list[tuple[str, FilterKind]] = []
    for parameter in operation.get("parameters", []):
        name = parameter.get("name")
        if parameter.get("in") != "query" or name in SEARCH_PAGING_MAY_CHANGE:
            continue
        kind: FilterKind = (
            "instant"
            if parameter.get("format") == "date-time"
            else "set"
            if parameter.get("type") == "array"
            else "text"
        )
        filters.append((name, kind))
    return tuple(filters)


def search_filters(query: Mapping[str, str]) -> dict[str, Any]:
    """The filters a searchOrders request carries, normalised so that equal values compare equal:
    a date-time as its instant (``Z``, ``+00:00``, ``.000`` or another offset for the same instant are
    the same value), an array as its sorted set of values (the order of comma-separated values and
    repeats do not matter; values stay case-sensitive, as Amazon's enums and marketplace ids are). A
    parameter left empty counts as absent, as the first request reads it. An unparseable date-time
    stays text (the first request refuses it, so a follow-up sending it differs)."""
    found: dict[str, Any] = {}
    for name, kind in search_orders_filters():
        raw = query.get(name)
        if raw is None or not raw.strip():
            continue
        if kind == "set":
            found[name] = sorted(set(csv_values(raw)))
        elif kind == "instant":
            try:
                found[name] = parse_iso(raw)
            except ValueError:
                found[name] = raw.strip()
        else:
            found[name] = raw.strip()
    return found


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return datetime.fromtimestamp(value, UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return repr(value)


def search_filter_changes(issued: Mapping[str, Any], asked: Mapping[str, Any]) -> list[str]:
    """How a follow-up page's filters (``asked``) differ from the first request's (``issued``)."""
    changes: list[str] = []
    for name, _ in search_orders_filters():
        first, now = issued.get(name), asked.get(name)
        if first == now:
            continue
        if now is None:
            changes.append(f"{name} is missing (the first request had {_shown(first)})")
        elif first is None:
            changes.append(f"{name} {_shown(now)} was not in the first request")
        else:
            changes.append(f"{name} {_shown(now)} is not the first request's {_shown(first)}")
    return changes


@dataclass(frozen=True)
class SimResponse:
    status: int
    body: Any
    headers: dict[str, str]
    #: Real seconds the HTTP layer waits before answering (slow responses, timeouts).
    delay_s: float = 0.0
    #: Close the connection without an answer (after ``delay_s``).
    drop: bool = False


@dataclass
class ForcedFault:
    kind: str
    operation: str | None
    remaining: int


@dataclass(frozen=True)
class RestrictedResource:
    method: str
    path: str
    data_elements: frozenset[str]

    def matches(self, method: str, path: str) -> bool:
        if method != self.method:
            return False
        granted = self.path.strip("/").split("/")
        asked = path.strip("/").split("/")
        return len(granted) == len(asked) and all(
            g == a or (g.startswith("{") and g.endswith("}")) for g, a in zip(granted, asked, strict=True)
        )


@dataclass(frozen=True)
class Principal:
    """Who calls: the seller and LWA application an access token (or RDT) was issued to."""

    seller_id: str
    application: str
    restricted: tuple[RestrictedResource, ...] | None = None
    #: The restricted roles the application holds for this seller (scenario ``pii_roles``).
    pii_roles: frozenset[str] = frozenset()
    #: A grantless token's scopes (its seller is :data:`GRANTLESS`); empty for a seller's token.
    scopes: frozenset[str] = frozenset()


@dataclass
class _IssuedToken:
    principal: Principal
    expires_at: float


@dataclass
class _Runtime:
    """Mutable knobs the control API can change."""

    faults: Faults
    pii_requires_rdt: bool
    access_tokens: dict[str, _IssuedToken] = field(default_factory=dict)
    forced: list[ForcedFault] = field(default_factory=list)
    #: Authorization codes of confirmed consents not exchanged yet, by code.
    authorization_codes: dict[str, AuthorizationCode] = field(default_factory=dict)
    #: Refresh tokens LWA minted for authorization codes: (seller id, client id) by token.
    minted_refresh_tokens: dict[str, tuple[str, str]] = field(default_factory=dict)


class SimulatorState:
    """Everything the simulator knows and does; thread-safe (one lock around every operation)."""

    def __init__(
        self,
        scenario: Scenario,
        clock: SimClock | None = None,
        *,
        real_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.scenario = scenario
        self.clock = clock or SimClock(scenario.time_scale, scenario.start)
        self._real_clock = real_clock
        self._lock = threading.RLock()
        self.book = OrderBook()
        self.notifications = NotificationEngine(scenario.notifications, scenario.seed)
        self.book.on_version = self.notifications.order_changed
        self.catalogues: dict[str, tuple[Product, ...]] = {
            s.seller_id: generate.catalogue(scenario, s) for s in scenario.sellers
        }
        self._taken_ids: set[str] = set()
        generate.populate(self.book, scenario, int(self.clock.start), self._taken_ids)
        self.book.advance(self.clock.now())
        self.throttler = Throttler(scenario)
        self.counters = Counters()
        #: Confirmations Amazon's programme rules refused, per seller and rule (a client that knows the
        #: rules never meets one).
        self.refusals: dict[str, dict[str, int]] = {}
        #: Per seller: orders the seller confirmed (first confirmation) and those confirmed late, after
        #: the order's LatestShipDate (what Amazon's Late Shipment Rate counts).
        self.shipments: dict[str, dict[str, int]] = {}
        self._runtime = _Runtime(faults=scenario.faults, pii_requires_rdt=scenario.pii_requires_rdt)
        self._tokens = TokenCodec()
        #: The User-Agent header of the last request of each operation (and of "lwaToken").
        self._user_agents: dict[str, str] = {}
        # Separate streams, so that e.g. fault draws do not shift lag draws.
        self._fault_rng = random.Random(f"{scenario.seed}/faults")
        self._lag_rng = random.Random(f"{scenario.seed}/lags")
        self._control_rng = random.Random(f"{scenario.seed}/control")
        self._order_rng = random.Random(f"{scenario.seed}/order-life")
        self.feeds = FeedEngine(scenario.feeds, scenario.seed, self)
        self.feeds.easy_ship_documents_fatal = scenario.easy_ship.documents_fatal
        self.reports = ReportEngine(scenario.reports, scenario.seed, self.feeds)
        for seller_id, products in self.catalogues.items():
            listings = self.feeds.seller_listings(seller_id)
            for product in products:
                listings[product.sku] = Listing(product.sku, 0)
        self.easyship = EasyShipEngine(scenario.easy_ship, self.book, self._easy_ship_picked_up)
        self.catalog = Catalog(
            build_catalog(self.catalogues, {s.seller_id: s.marketplaces for s in scenario.sellers})
        )
        easyship, catalog = self.easyship, self.catalog
        self._handlers: dict[str, Callable[[Principal, _Call], tuple[int, Any]]] = {
            "getOrders": self._get_orders,
            "getOrder": self._get_order_v0,
            "getOrderItems": self._get_order_items,
            "confirmShipment": self._confirm_shipment,
            "searchOrders": self._search_orders,
            "getOrder@2026-01-01": self._get_order_2026,
            "getOrderAddress": self._get_order_address,
            "createRestrictedDataToken": self._create_restricted_data_token,
            "createFeedDocument": self._create_feed_document,
            "createFeed": self._create_feed,
            "getFeeds": self._get_feeds,
            "getFeed": self._get_feed,
            "cancelFeed": self._cancel_feed,
            "getFeedDocument": self._get_feed_document,
            "createDestination": self._create_destination,
            "getDestinations": self._get_destinations,
            "getDestination": self._get_destination,
            "deleteDestination": self._delete_destination,
            "createSubscription": self._create_subscription,
            "getSubscription": self._get_subscription,
            "getSubscriptionById": self._get_subscription_by_id,
            "deleteSubscriptionById": self._delete_subscription_by_id,
            "createReport": self._create_report,
            "getReports": self._get_reports,
            "getReport": self._get_report,
            "cancelReport": self._cancel_report,
            "getReportDocument": self._get_report_document,
            "patchListingsItem": self._patch_listings_item,
            "listHandoverSlots": lambda p, c: (200, easyship.list_handover_slots(p.seller_id, c.body, c.now)),
            "getScheduledPackage": lambda p, c: (200, easyship.get_scheduled_package(p.seller_id, c.query)),
            "createScheduledPackage": lambda p, c: (
                200,
                easyship.create_scheduled_package(p.seller_id, c.body, c.now),
            ),
            "updateScheduledPackages": lambda p, c: (
                200,
                easyship.update_scheduled_packages(p.seller_id, c.body, c.now),
            ),
            "createScheduledPackageBulk": lambda p, c: (
                200,
                easyship.create_scheduled_package_bulk(p.seller_id, c.body, c.now),
            ),
            "getCatalogItem": lambda p, c: (200, catalog.get_catalog_item(c.path_params["asin"], c.query)),
            "searchCatalogItems": lambda p, c: (200, catalog.search_catalog_items(c.query, p.seller_id)),
            "getMarketplaceParticipations": lambda p, c: (200, marketplace_participations(self._seller(p))),
        }

    # --- time ----------------------------------------------------------------------------------------

    def now(self) -> float:
        """Simulated now, with every change due by then applied."""
        with self._lock:
            now = self.clock.now()
            self._advance(now)
            return now

    def _advance(self, now: float) -> None:
        """Apply every change due by ``now`` in time order: the order book's scheduled changes and
        the feeds' status changes (whose messages change orders too); then the reports' (whose content
        was fixed when they were requested)."""
        while True:
            event = self.feeds.next_event()
            if event is None or event[0] > now:
                break
            at, feed = event
            self.book.advance(at)
            self.feeds.step(at, feed)
        while (pick_up_at := self.easyship.next_event_at()) is not None and pick_up_at <= now:
            self.book.advance(pick_up_at)
            self.easyship.step()
        self.book.advance(now)
        self.reports.advance(now)

    def advance_clock(self, seconds: float) -> float:
        with self._lock:
            self.clock.advance(seconds)
            now = self.now()
            if self.notifications.wake is not None:
                self.notifications.wake()  # notifications may have fallen due
            return now

    # --- LWA ------------------------------------------------------------------------------------------

    def issue_access_token(
        self, form: Mapping[str, str], *, user_agent: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        """``POST /auth/o2/token`` (refresh-token grant, client_credentials with a grantless ``scope``, or
        authorization_code with a consent's code): (status, body) as Login with Amazon answers."""
        with self._lock:
            self._user_agents["lwaToken"] = user_agent or ""
            status, body, seller = self._lwa(form)
            self.counters.count(seller, "lwaToken", status)
            return status, body

    def _lwa(self, form: Mapping[str, str]) -> tuple[int, dict[str, Any], str]:  # noqa: PLR0911 - one per LWA answer
        grant_type = form.get("grant_type")
        if not grant_type:
            return (
                400,
                _lwa_error("invalid_request", "The request is missing a required parameter : grant_type"),
                ANONYMOUS,
            )
        if grant_type not in ("refresh_token", "client_credentials", "authorization_code"):
            message = "The authorization grant type is not supported by the authorization server"
            return 400, _lwa_error("unsupported_grant_type", message), ANONYMOUS
        client_id, client_secret = form.get("client_id", ""), form.get("client_secret", "")
        apps = [(s, a) for s in self.scenario.sellers for a in s.applications if a.client_id == client_id]
        if not apps or not secrets.compare_digest(apps[0][1].client_secret, client_secret):
            # Amazon answers 401 here (jlevers/selling-partner-api#578), not 400.
            return 401, _lwa_error("invalid_client", "Client authentication failed"), ANONYMOUS
        if grant_type == "client_credentials":
            return self._grantless_token(client_id, form.get("scope"))
        if grant_type == "authorization_code":
            return self._exchange_code(form, apps)
        refresh_token = form.get("refresh_token")
        if not refresh_token:
            message = "The request is missing a required parameter : refresh_token"
            return 400, _lwa_error("invalid_request", message), ANONYMOUS
        for seller, app in apps:
            if secrets.compare_digest(app.refresh_token, refresh_token):
                return self._seller_token(seller.seller_id, app, refresh_token)
        minted = self._runtime.minted_refresh_tokens.get(refresh_token)
        if minted is not None and minted[1] == client_id:
            return self._seller_token(minted[0], self._application_for(minted[0], apps), refresh_token)
        message = "The request has an invalid grant parameter : refresh_token"
        return 400, _lwa_error("invalid_grant", message), ANONYMOUS

    @staticmethod
    def _application_for(seller_id: str, apps: list[tuple[SellerScenario, Application]]) -> Application:
        """The client's application as ``seller_id`` authorised it in the scenario (its roles), else as
        the first seller did."""
        return next((app for seller, app in apps if seller.seller_id == seller_id), apps[0][1])

    def _seller_token(
        self, seller_id: str, app: Application, refresh_token: str
    ) -> tuple[int, dict[str, Any], str]:
        """An access token acting for ``seller_id`` through ``app``."""
        token = "Atza|" + secrets.token_urlsafe(48)
        lifetime = self.scenario.access_token_lifetime_s
        principal = Principal(seller_id, app.client_id, pii_roles=frozenset(app.pii_roles))
        self._runtime.access_tokens[token] = _IssuedToken(principal, self._real_clock() + lifetime)
        body = {
            "access_token": token,
            "refresh_token": refresh_token,
            "token_type": "bearer",
            "expires_in": lifetime,
        }
        return 200, body, seller_id

    def _exchange_code(
        self, form: Mapping[str, str], apps: list[tuple[SellerScenario, Application]]
    ) -> tuple[int, dict[str, Any], str]:
        """``grant_type=authorization_code``: a consent's code, exchanged once within 5 simulated
        minutes with the redirect URI it was issued for, buys a new refresh token for that seller and
        application (kept here: the refresh-token grant takes it from then on). A refused exchange
        leaves the code as it was."""
        code, redirect_uri = form.get("code"), form.get("redirect_uri")
        for name, value in (("code", code), ("redirect_uri", redirect_uri)):
            if not value:
                message = f"The request is missing a required parameter : {name}"
                return 400, _lwa_error("invalid_request", message), ANONYMOUS
        client_id = apps[0][1].client_id
        issued = self._runtime.authorization_codes.get(code or "")
        if issued is None or issued.client_id != client_id:
            return 400, _lwa_error("invalid_grant", "The authorization code is invalid or used"), ANONYMOUS
        if self.clock.now() - issued.issued_at > AUTHORIZATION_CODE_TTL_S:
            del self._runtime.authorization_codes[code or ""]
            return 400, _lwa_error("invalid_grant", "The authorization code has expired"), ANONYMOUS
        if redirect_uri != issued.redirect_uri:
            message = "The redirect_uri does not match the one the authorization code was issued for"
            return 400, _lwa_error("invalid_grant", message), ANONYMOUS
        del self._runtime.authorization_codes[code or ""]
        refresh_token = "Atzr|" + secrets.token_urlsafe(64)
        self._runtime.minted_refresh_tokens[refresh_token] = (issued.seller_id, client_id)
        app = self._application_for(issued.seller_id, apps)
        return self._seller_token(issued.seller_id, app, refresh_token)

    # --- Seller Central: the website authorization workflow ------------------------------------------

    def consent(self, query: Mapping[str, str]) -> Consent | ConsentError:
        """``GET /apps/authorize/consent``: the consent Seller Central would show, or its error page."""
        with self._lock:
            return check_consent(self.scenario, dict(query))

    def confirm_consent(self, form: Mapping[str, str]) -> str | ConsentError:
        """``POST /apps/authorize/consent``: the seller confirmed; returns where Amazon redirects the
        browser (the redirect URI with ``spapi_oauth_code``, ``state``, ``selling_partner_id``)."""
        with self._lock:
            consent = check_consent(self.scenario, dict(form))
            if isinstance(consent, ConsentError):
                return consent
            seller_id = form.get("selling_partner_id", "")
            if seller_id not in {s.seller_id for s in consent.sellers}:
                return ConsentError(400, "UnknownSeller", f"No selling account {seller_id or '(none)'}.")
            code = "ANsim" + secrets.token_urlsafe(24)
            self._runtime.authorization_codes[code] = AuthorizationCode(
                seller_id, consent.application.client_id, consent.redirect_uri, self.clock.now()
            )
            return redirect_location(consent, code, seller_id)

    def _grantless_token(self, client_id: str, scope: str | None) -> tuple[int, dict[str, Any], str]:
        """A client_credentials token: the application's own, for grantless operations."""
        if not scope:
            message = "The request is missing a required parameter : scope"
            return 400, _lwa_error("invalid_request", message), ANONYMOUS
        scopes = frozenset(scope.split())
        if not scopes or not scopes <= GRANTLESS_SCOPES:
            return 400, _lwa_error("invalid_scope", "An unknown scope was requested"), ANONYMOUS
        token = "Atc|" + secrets.token_urlsafe(48)
        lifetime = self.scenario.access_token_lifetime_s
        principal = Principal(GRANTLESS, client_id, scopes=scopes)
        self._runtime.access_tokens[token] = _IssuedToken(principal, self._real_clock() + lifetime)
        body = {"access_token": token, "scope": scope, "token_type": "bearer", "expires_in": lifetime}
        return 200, body, GRANTLESS

    def revoke_access_tokens(self) -> int:
        """Forget every access token and RDT (clients must refresh); returns how many."""
        with self._lock:
            count = len(self._runtime.access_tokens)
            self._runtime.access_tokens.clear()
            return count

    def _authenticate(self, token: str | None, method: str, path: str) -> Principal:
        if not token:
            raise SpApiError(403, "Unauthorized", ACCESS_DENIED_MESSAGE, "")
        issued = self._runtime.access_tokens.get(token)
        if issued is None:
            raise SpApiError(
                403,
                "Unauthorized",
                ACCESS_DENIED_MESSAGE,
                "The access token you provided is revoked, malformed or invalid.",
            )
        if self._real_clock() >= issued.expires_at:
            del self._runtime.access_tokens[token]
            raise SpApiError(
                403, "Unauthorized", ACCESS_DENIED_MESSAGE, "The access token you provided has expired."
            )
        restricted = issued.principal.restricted
        if restricted is not None and not any(r.matches(method, path) for r in restricted):
            raise SpApiError(403, "Unauthorized", ACCESS_DENIED_MESSAGE, "")
        return issued.principal

    def _pii(self, principal: Principal, method: str, path: str, query: Mapping[str, str]) -> Pii:
        """The personal data this request may see.

        Orders 2026-01-01 never needs a Restricted Data Token: the application's roles decide ("Access
        Orders PII"); an RDT for the path is accepted like any access token and adds nothing. BUYER or
        RECIPIENT asked without the role: the fields are left out, or (scenario ``pii_without_role:
        forbidden``) the request is refused with 403. Orders v0: the data elements of the Restricted
        Data Token (all of them when the scenario does not enforce RDTs), of the roles held.
        """
        roles = principal.pii_roles
        delivery = "direct_to_consumer_delivery" in roles
        tax = bool({"tax_invoicing", "tax_remittance"} & roles)
        if path.startswith("/orders/2026-01-01/"):
            if self.scenario.pii_without_role == "forbidden":
                included = set(csv_values(query.get("includedData")))
                lacking = [
                    f"includedData {dataset} needs the {role} role"
                    for dataset, held, role in (
                        ("BUYER", tax, "Tax Invoicing or Tax Remittance (Restricted)"),
                        ("RECIPIENT", delivery, "Direct-to-Consumer Delivery (Restricted)"),
                    )
                    if dataset in included and not held
                ]
                if lacking:
                    raise SpApiError(403, "Unauthorized", ACCESS_DENIED_MESSAGE, "; ".join(lacking) + ".")
            return Pii(shipping_address=delivery, buyer_name=tax, buyer_email=delivery)
        elements: set[str] = set()
        if not self._runtime.pii_requires_rdt:
            elements = set(RDT_DATA_ELEMENTS)
        elif principal.restricted is not None:
            for resource in principal.restricted:
                if resource.matches(method, path):
                    own = _v0_own_data(path)
                    elements |= resource.data_elements if own is None else own
        buyer = "buyerInfo" in elements and tax
        return Pii(
            shipping_address="shippingAddress" in elements and delivery, buyer_name=buyer, buyer_email=buyer
        )

    # --- the SP-API front door -------------------------------------------------------------------------

    def call(  # noqa: PLR0911 - one return per way Amazon's front door answers
        self,
        operation: str,
        *,
        access_token: str | None,
        path: str,
        path_params: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        base_url: str = "",
        user_agent: str | None = None,
    ) -> SimResponse:
        """Run one SP-API request. ``query`` holds the first value of each parameter (as Amazon reads
        a repeated key); ``body`` is the parsed JSON body (anything else is refused as Amazon refuses it);
        ``base_url`` prefixes the document URLs the Feeds API hands out; ``user_agent`` is recorded
        (:meth:`user_agents_json`)."""
        op = OPERATIONS[operation]
        headers = {"x-amzn-RequestId": str(uuid.uuid4())}
        with self._lock:
            self._user_agents[operation] = user_agent or ""
            now = self.clock.now()
            self._advance(now)
            try:
                principal = self._authenticate(access_token, op.method, path)
                _authorize(principal, op)
            except SpApiError as exc:
                self.counters.count(ANONYMOUS, operation, exc.status)
                return SimResponse(
                    exc.status, exc.body(), {**headers, "x-amzn-ErrorType": "AccessDeniedException"}
                )
            seller = principal.seller_id
            plan = self.throttler.plan(seller, op.operation_id)
            forced = self._forced_fault(operation)
            buckets = self._buckets(seller, op, body)
            if forced == "429" or not self.throttler.take_all(
                [(seller, principal.application, api, operation_id, now) for api, operation_id in buckets]
            ):
                self.counters.count(seller, operation, 429)
                error = SpApiError(429, "QuotaExceeded", QUOTA_EXCEEDED_MESSAGE, "")
                return SimResponse(429, error.body(), self._rate_headers(headers, op, plan, 429))
            kind = forced or self._draw_fault()
            if kind in ("500", "503"):
                fault = _server_error(int(kind))
                self.counters.count(seller, operation, fault.status)
                return SimResponse(
                    fault.status, fault.body(), self._rate_headers(headers, op, plan, fault.status)
                )
            try:
                call = _Call(
                    now,
                    path,
                    dict(path_params or {}),
                    dict(query or {}),
                    body,
                    self._pii(principal, op.method, path, query or {}),
                    base_url.rstrip("/"),
                )
                status, payload = self._handlers[operation](principal, call)
            except SpApiError as exc:
                status, payload = exc.status, exc.body()
            headers = self._rate_headers(headers, op, plan, status)
            self.counters.count(seller, operation, status)
            faults = self._runtime.faults
            if kind == "timeout":
                return SimResponse(status, payload, headers, delay_s=faults.timeout_s, drop=True)
            if kind == "drop":
                return SimResponse(status, payload, headers, drop=True)
            if kind == "slow":
                return SimResponse(status, payload, headers, delay_s=faults.slow_s)
            return SimResponse(status, payload, headers)

    @staticmethod
    def _rate_headers(headers: dict[str, str], op: Operation, plan: Plan, status: int) -> dict[str, str]:
        if status in rate_limit_header_statuses(op.api, op.operation_id):
            return {**headers, "x-amzn-RateLimit-Limit": plan.header}
        return headers

    def _buckets(self, seller_id: str, op: Operation, body: Any) -> list[tuple[str, str]]:
        """The (api, usage-plan operation) buckets a request takes a token from."""
        own = [(op.api, op.operation_id)]
        if op.key == "createFeed" and isinstance(body, dict) and body.get("feedType") == "JSON_LISTINGS_FEED":
            region = self._seller_by_id(seller_id).region
            listings = (f"feeds-{region}", LISTINGS_FEED_OPERATION)
            return [listings] if self.scenario.feeds.listings_limit == "separate" else [*own, listings]
        return own

    def _forced_fault(self, operation: str) -> str | None:
        for forced in self._runtime.forced:
            if forced.operation in (None, operation):
                forced.remaining -= 1
                if forced.remaining <= 0:
                    self._runtime.forced.remove(forced)
                return forced.kind
        return None

    def _draw_fault(self) -> str | None:
        faults = self._runtime.faults
        draw = self._fault_rng.random()
        for kind, share in (
            ("500", faults.http_500),
            ("503", faults.http_503),
            ("timeout", faults.timeout),
            ("drop", faults.drop),
            ("slow", faults.slow),
        ):
            if draw < share:
                return kind
            draw -= share
        return None

    def _seller(self, principal: Principal) -> SellerScenario:
        return self.scenario.seller(principal.seller_id)

    def _seller_by_id(self, seller_id: str) -> SellerScenario:
        return self.scenario.seller(seller_id)

    def _patch_listings_item(self, principal: Principal, call: _Call) -> tuple[int, Any]:
        """patchListingsItem (Listings Items 2021-08-01): the listing's attributes patched as a listings
        feed's PATCH message would, at once."""
        if call.path_params["sellerId"] != principal.seller_id:
            raise SpApiError(403, "Unauthorized", ACCESS_DENIED_MESSAGE, "")
        marketplaces = csv_values(call.query.get("marketplaceIds"))
        seller = self._seller_by_id(principal.seller_id)
        if not marketplaces or any(m not in seller.marketplaces for m in marketplaces):
            raise invalid_input(f"marketplaceIds must name this seller's marketplaces, got {marketplaces}.")
        body = call.body if isinstance(call.body, dict) else {}
        patches = body.get("patches")
        valid_patch = all(
            isinstance(p, dict) and p.get("op") in ("add", "replace", "merge", "delete") and p.get("path")
            for p in patches or []
        )
        if not isinstance(body.get("productType"), str) or not patches or not valid_patch:
            raise invalid_input("The body needs productType and one or more patches (op, path, value).")
        sku = call.path_params["sku"]
        status, issues = self.feeds.patch_listing(
            principal.seller_id, sku, body["productType"], patches, call.now
        )
        return 200, {"sku": sku, "status": status, "submissionId": uuid.uuid4().hex, "issues": issues}

    def _owned_order(self, principal: Principal, order_id: str) -> Order:
        if not _ORDER_ID.match(order_id):
            raise invalid_input(f"Invalid order id {order_id!r}: expected the 3-7-7 format.", "Invalid Input")
        order = self.book.orders.get(order_id)
        if order is None or order.seller_id != principal.seller_id:
            raise not_found(order_id)
        return order

    def _lag(self) -> float:
        return generate.draw_lag(self._lag_rng, self.scenario.visibility_lag)

    # --- Orders v0 -------------------------------------------------------------------------------------

    def _marketplaces(
        self, principal: Principal, raw: str | None, *, required: bool, name: str
    ) -> tuple[str, ...]:
        seller = self._seller(principal)
        wanted = csv_values(raw)
        if not wanted:
            if required:
                raise invalid_input(f"Missing required parameter {name}.", "Invalid Input")
            return seller.marketplaces
        if len(wanted) > 50:
            raise invalid_input(f"{name} accepts at most 50 values.", "Invalid Input")
        foreign = [m for m in wanted if m not in seller.marketplaces]
        if foreign:
            raise invalid_input(f"Invalid {name}: {', '.join(foreign)} (not a marketplace of this seller).")
        return wanted

    def _window(
        self,
        now: float,
        created: tuple[str | None, str | None],
        updated: tuple[str | None, str | None],
        names: tuple[str, str, str, str],
    ) -> tuple[Literal["updated", "created"], float, float]:
        """Validate the Created*/LastUpdated* pair; returns (by, after, effective before)."""
        created_after, created_before = created
        updated_after, updated_before = updated
        n_ca, n_cb, n_ua, n_ub = names
        if (created_after is None) == (updated_after is None):
            raise invalid_input(f"Exactly one of {n_ca} and {n_ua} must be specified.")
        if created_after is not None and (updated_after is not None or updated_before is not None):
            raise invalid_input(f"{n_ca} cannot be combined with {n_ua} or {n_ub}.")
        if updated_after is not None and created_before is not None:
            raise invalid_input(f"{n_ua} cannot be combined with {n_ca} or {n_cb}.")
        by: Literal["updated", "created"] = "created" if created_after is not None else "updated"
        after_raw, before_raw = (
            (created_after, created_before) if by == "created" else (updated_after, updated_before)
        )
        names_used = (n_ca, n_cb) if by == "created" else (n_ua, n_ub)
        bad = []
        try:
            after = parse_iso(after_raw or "")
        except ValueError:
            bad.append(names_used[0])
            after = 0.0
        before = float(int(now - TWO_MINUTES))
        if before_raw is not None:
            try:
                before = parse_iso(before_raw)
            except ValueError:
                bad.append(names_used[1])
        if bad:
            raise invalid_input(f"Invalid date-time field(s) [{', '.join(bad)}].", "This is an invalid input")
        if before_raw is not None and before > now - TWO_MINUTES:
            raise invalid_input(
                f"{names_used[1]} must be at least two minutes before the time of the request."
            )
        if after > before:
            raise invalid_input(
                f"{names_used[0]} ({epoch_to_iso(after)}) must not be later than {names_used[1]} "
                f"({epoch_to_iso(before)}; at most two minutes before the time of the request)."
            )
        return by, after, before

    @staticmethod
    def _page_size(raw: str | None, name: str) -> int:
        if raw is None:
            return MAX_RESULTS_PER_PAGE
        try:
            size = int(raw)
        except ValueError:
            size = 0
        if not 1 <= size <= MAX_RESULTS_PER_PAGE:
            raise invalid_input(
                f"{name} must be an integer from 1 to {MAX_RESULTS_PER_PAGE}.", "Invalid Input"
            )
        return size

    def _get_orders(self, principal: Principal, call: _Call) -> tuple[int, Any]:
        q = call.query
        markets = self._marketplaces(principal, q.get("MarketplaceIds"), required=True, name="MarketplaceIds")
        token = q.get("NextToken")
        if token:
            query, resume = self._resume("getOrders", principal, token, call.now, expires=False)
        else:
            by, after, before = self._window(
                call.now,
                (q.get("CreatedAfter"), q.get("CreatedBefore")),
                (q.get("LastUpdatedAfter"), q.get("LastUpdatedBefore")),
                ("CreatedAfter", "CreatedBefore", "LastUpdatedAfter", "LastUpdatedBefore"),
            )
            statuses = csv_values(q.get("OrderStatuses"))
            unknown = [s for s in statuses if s not in ORDER_STATUSES_V0]
            if unknown:
                raise invalid_input(f"Invalid OrderStatuses: {', '.join(unknown)}.", "Invalid Input")
            channels = csv_values(q.get("FulfillmentChannels"))
            if any(c not in ("AFN", "MFN") for c in channels):
                raise invalid_input("FulfillmentChannels must be AFN or MFN.", "Invalid Input")
            order_ids = csv_values(q.get("AmazonOrderIds"))
            if len(order_ids) > 50:
                raise invalid_input("AmazonOrderIds accepts at most 50 values.", "Invalid Input")
            limit = self._page_size(q.get("MaxResultsPerPage"), "MaxResultsPerPage")
            query = OrdersQuery(
                by, after, before, call.now, markets, statuses, channels, order_ids, limit, call.now
            )
            resume = None
        page, more = self.book.scan(
            principal.seller_id,
            by=query.by,
            after=query.after,
            before=query.before,
            as_of=query.as_of,
            resume_after=resume,
            accept=query.accept,
            limit=query.limit,
        )
        payload: dict[str, Any] = {"Orders": [order_v0(order, version, call.pii) for order, version in page]}
        if more is not None:
            payload["NextToken"] = self._tokens.encode(
                "getOrders", principal.seller_id, {"q": query.to_json(), "r": list(more)}
            )
        payload["CreatedBefore" if query.by == "created" else "LastUpdatedBefore"] = epoch_to_iso(
            query.before
        )
        return 200, {"payload": payload}

    def _resume(
        self,
        kind: str,
        principal: Principal,
        token: str,
        now: float,
        *,
        expires: bool,
        filters: Mapping[str, Any] | None = None,
    ) -> tuple[OrdersQuery, tuple[int, int, str]]:
        """The query and position a page token carries. With ``filters`` (searchOrders), the request
        must repeat the filters of the request that generated the token (:func:`search_filters`)."""
        raw = self._tokens.decode(kind, principal.seller_id, token)
        name = "NextToken" if kind == "getOrders" else "paginationToken"
        if raw is None:
            raise invalid_input(
                f"Invalid {name}.",
                f"We could not decode your {name}. Please check your {name} and try again.",
            )
        try:
            query = OrdersQuery.from_json(raw["q"])
            at, seq, order_id = raw["r"]
            resume = (int(at), int(seq), str(order_id))
        except (KeyError, TypeError, ValueError) as exc:
            raise invalid_input(f"Invalid {name}.", f"We could not decode your {name}.") from exc
        if expires and now - query.issued_at > PAGINATION_TOKEN_TTL_S:
            raise invalid_input(f"The {name} has expired (24 hours); start the search again.")
        if filters is not None:
            issued = raw.get("f")
            if not isinstance(issued, dict):
                raise invalid_input(f"Invalid {name}.", f"We could not decode your {name}.")
            changes = search_filter_changes(issued, filters)
            if changes:
                raise invalid_input(
                    SEARCH_PAGING_RULE,
                    f"The {name} was generated by a request with other parameters: {'; '.join(changes)}.",
                )
        return query, resume

    def _get_order_v0(self, principal: Principal, call: _Call) -> tuple[int, Any]:
        order = self._owned_order(principal, call.path_params["orderId"])
        return 200, {"payload": order_v0(order, order.versions[-1], call.pii)}

    def _get_order_items(self, principal: Principal, call: _Call) -> tuple[int, Any]:
        order = self._owned_order(principal, call.path_params["orderId"])
        offset = 0
        token = call.query.get("NextToken")
        if token:
            raw = self._tokens.decode("getOrderItems", principal.seller_id, token)
            if raw is None or raw.get("order") != order.order_id or not isinstance(raw.get("offset"), int):
                raise invalid_input(
                    "Invalid NextToken.",
                    "We could not decode your NextToken. Please check your NextToken and try again.",
                )
            offset = raw["offset"]
        snapshot = order.current
        end = min(offset + ORDER_ITEMS_PAGE_SIZE, len(order.items))
        payload: dict[str, Any] = {
            "AmazonOrderId": order.order_id,
            "OrderItems": [order_item_v0(order, i, snapshot) for i in range(offset, end)],
        }
        if end < len(order.items):
            payload["NextToken"] = self._tokens.encode(
                "getOrderItems", principal.seller_id, {"order": order.order_id, "offset": end}
            )
        return 200, {"payload": payload}

    def _confirm_shipment(self, principal: Principal, call: _Call) -> tuple[int, Any]:
        order = self._owned_order(principal, call.path_params["orderId"])
        request = parse_confirm_shipment(call.body)
        if request.marketplace_id != order.marketplace.marketplace_id:
            raise invalid_input(
                f"marketplaceId {request.marketplace_id} is not the marketplace of order {order.order_id}."
            )
        snap = order.current
        if order.channel == "AFN":
            raise invalid_input(
                f"Order {order.order_id} is fulfilled by Amazon; the seller cannot confirm it."
            )
        self._check_shippable(order, snap)
        existing = next(
            (p for p in snap.packages if p.package_reference_id == request.package_reference_id), None
        )
        indexed: list[tuple[int, int]] = []
        for item_id, quantity in request.items:
            found = order.item(item_id)
            if found is None:
                raise invalid_input(f"orderItemId {item_id} is not an item of order {order.order_id}.")
            indexed.append((found[0], quantity))
        if existing is not None:
            # Same packageReferenceId: an edit of that package (carrier, tracking), as Amazon allows.
            if sorted(existing.items) != sorted(request.items):
                raise invalid_input(f"Package {existing.package_reference_id} exists with other items.")
            updated = request.package(existing.confirmed_at)
            if updated == existing:
                return 204, None  # a retry of the same confirmation changes nothing
            packages = tuple(updated if p is existing else p for p in snap.packages)
            edited = Snapshot(snap.status, snap.shipped, packages, snap.cancel_reason)
            change = f"package {existing.package_reference_id} updated"
            self.book.change(order, edited, call.now, self._lag(), change)
            return 204, None
        if snap.status in ("Shipped", "InvoiceUnconfirmed"):
            raise SpApiError(
                400,
                "PackageToUpdateNotFound",
                "Failed to create package due to not finding a matching package or order already fulfilled.",
                f"Unable to find package to update for order ({order.order_id}).",
            )
        shipped = list(snap.shipped)
        for index, quantity in indexed:
            remaining = order.items[index].quantity - shipped[index]
            if quantity > remaining:
                raise invalid_input(
                    f"orderItemId {order.items[index].order_item_id}: quantity {quantity} exceeds the "
                    f"{remaining} unit(s) not yet shipped."
                )
            shipped[index] += quantity
        self._record_shipment(
            order,
            tuple(shipped),
            request.package(int(call.now)),
            call.now,
            f"shipment {request.package_reference_id} confirmed",
        )
        return 204, None

    def _check_shippable(self, order: Order, snap: Snapshot) -> None:
        """confirmShipment's refusals by the order's state and programme (400 InvalidInput)."""
        if snap.status == "Canceled":
            raise invalid_input(f"Order {order.order_id} is canceled.")
        if snap.status in ("Pending", "PendingAvailability"):
            raise invalid_input(
                f"Order {order.order_id} is {snap.status}: it cannot be shipped before payment."
            )
        refused = self._programme_refusal(order)
        if refused is not None:
            raise invalid_input(refused)

    def _programme_refusal(self, order: Order) -> str | None:
        """Why Amazon refuses a seller's confirmation of ``order`` by its programme (counted), or None:
        Ship+ orders do not support confirmShipment (Amazon: "result in a 400 error"); Easy Ship orders
        ship through Easy Ship (what a confirmation gets is undocumented: ``easy_ship_confirm``)."""
        if SHIP_PLUS in order.programs:
            rule, why = "ship_plus", f"Order {order.order_id} is a Ship+ order: its Ship+ label confirms it."
        elif EASY_SHIP in order.programs and self.scenario.easy_ship_confirm == "refuse":
            rule, why = (
                "easy_ship",
                f"Order {order.order_id} is an Easy Ship order: it ships through Easy Ship.",
            )
        else:
            return None
        by_seller = self.refusals.setdefault(order.seller_id, {})
        by_seller[rule] = by_seller.get(rule, 0) + 1
        return why

    def ship_by_amazon(self, order_id: str, raw: Any) -> dict[str, Any]:
        """``POST /_sim/orders/{id}/amazon-shipment``: the whole order ships without the seller's
        confirmation: a label bought through Amazon (Buy Shipping, Ship+) or Amazon's Easy Ship carrier."""
        try:
            spec = AmazonShipment.model_validate(raw or {})
        except ValidationError as exc:
            raise ControlError(str(exc)) from exc
        with self._lock:
            now = self.now()
            order = self.book.orders.get(order_id)
            if order is None:
                raise ControlError(f"no order {order_id}", 404)
            snap = order.current
            if spec.by == "easy-ship" and EASY_SHIP not in order.programs:
                raise ControlError(f"order {order_id} is not an Easy Ship order")
            if order.channel != "MFN" or snap.status not in ("Unshipped", "PartiallyShipped"):
                raise ControlError(f"order {order_id} is {order.channel} {snap.status}: nothing to ship")
            remaining = tuple(
                (item.order_item_id, item.quantity - done)
                for item, done in zip(order.items, snap.shipped, strict=True)
                if item.quantity > done
            )
            package = Package(
                package_reference_id=str(len(snap.packages) + 1),
                carrier_code=spec.carrier_code,
                carrier_name=None,
                shipping_method=None,
                tracking_number=spec.tracking_number or f"AMZN{secrets.token_hex(6).upper()}",
                ship_date=now,
                items=remaining,
                confirmed_at=int(now),
                by=spec.by,
            )
            shipped = tuple(item.quantity for item in order.items)
            how = "a label bought through Amazon" if spec.by == "label" else "Easy Ship pick-up"
            self._record_shipment(order, shipped, package, now, f"shipped by {how}")
            return order_truth(order)

    def _easy_ship_picked_up(self, order: Order, scheduled: ScheduledPackage, at: int) -> None:
        """Amazon's carrier picked an Easy Ship package up: the order ships, as Easy Ship pick-up."""
        items = tuple((item.order_item_id, item.quantity) for item in order.items)
        package = Package(
            package_reference_id=str(len(order.current.packages) + 1),
            carrier_code="Amazon Shipping",
            carrier_name=None,
            shipping_method=None,
            tracking_number=scheduled.tracking_id,
            ship_date=float(at),
            items=items,
            confirmed_at=at,
            by="easy-ship",
        )
        shipped = tuple(item.quantity for item in order.items)
        self._record_shipment(
            order, shipped, package, float(at), f"Easy Ship package {scheduled.package_id} picked up"
        )

    def truth_easy_ship(self, seller_id: str | None = None) -> list[dict[str, Any]]:
        """``GET /_sim/easyship/packages``: every scheduled Easy Ship package, with its timeline."""
        with self._lock:
            self.now()
            return self.easyship.truth(seller_id)

    def _record_shipment(
        self, order: Order, shipped: tuple[int, ...], package: Package, at: float, change: str
    ) -> None:
        """A seller's shipment (confirmShipment or a fulfillment feed): PartiallyShipped, or Shipped
        when complete; some orders stay InvoiceUnconfirmed a while first (scenario)."""
        snap = order.current
        if package.by == "seller" and not any(p.by == "seller" for p in snap.packages):
            counts = self.shipments.setdefault(order.seller_id, {"confirmed": 0, "late": 0})
            counts["confirmed"] += 1
            counts["late"] += package.confirmed_at > order.latest_ship
        complete = all(s == item.quantity for s, item in zip(shipped, order.items, strict=True))
        profile = self._seller_by_id(order.seller_id).orders
        unconfirmed = complete and self._order_rng.random() < profile.invoice_unconfirmed_share
        status: SimStatus = (
            "InvoiceUnconfirmed" if unconfirmed else "Shipped" if complete else "PartiallyShipped"
        )
        snapshot = replace(snap, status=status, shipped=shipped, packages=(*snap.packages, package))
        version = self.book.change(order, snapshot, at, self._lag(), change)
        if unconfirmed:
            delay = max(1, int(self._order_rng.uniform(*profile.invoice_confirm_s)))
            self.book.schedule(version.at + delay, order.order_id, "confirm_invoice", self._lag())

    # --- Orders 2026-01-01 -----------------------------------------------------------------------------

    def _included(self, raw: str | None) -> frozenset[str]:
        included = frozenset(csv_values(raw))
        unknown = sorted(included - INCLUDED_DATA_2026)
        if unknown:
            raise invalid_input(f"Invalid includedData: {', '.join(unknown)}.", "Invalid Input")
        return included

    def _search_orders(self, principal: Principal, call: _Call) -> tuple[int, Any]:
        q = call.query
        included = self._included(q.get("includedData"))
        token = q.get("paginationToken")
        filters = search_filters(q)
        if token:
            # The first request's filters again (checked), its page size and includedData or new ones.
            query, resume = self._resume(
                "searchOrders", principal, token, call.now, expires=True, filters=filters
            )
            query = replace(query, limit=self._page_size(q.get("maxResultsPerPage"), "maxResultsPerPage"))
        else:
            markets = self._marketplaces(
                principal, q.get("marketplaceIds"), required=False, name="marketplaceIds"
            )
            by, after, before = self._window(
                call.now,
                (q.get("createdAfter"), q.get("createdBefore")),
                (q.get("lastUpdatedAfter"), q.get("lastUpdatedBefore")),
                ("createdAfter", "createdBefore", "lastUpdatedAfter", "lastUpdatedBefore"),
            )
            wanted = csv_values(q.get("fulfillmentStatuses"))
            unknown = [s for s in wanted if s not in _STATUS_FROM_2026]
            if unknown:
                raise invalid_input(f"Invalid fulfillmentStatuses: {', '.join(unknown)}.", "Invalid Input")
            fulfilled_by = csv_values(q.get("fulfilledBy"))
            if any(f not in _FULFILLED_BY for f in fulfilled_by):
                raise invalid_input("fulfilledBy must be MERCHANT or AMAZON.", "Invalid Input")
            limit = self._page_size(q.get("maxResultsPerPage"), "maxResultsPerPage")
            query = OrdersQuery(
                by,
                after,
                before,
                call.now,
                markets,
                tuple(status for s in wanted for status in _STATUS_FROM_2026[s]),
                tuple(_FULFILLED_BY[f] for f in fulfilled_by),
                (),
                limit,
                call.now,
            )
            resume = None
        page, more = self.book.scan(
            principal.seller_id,
            by=query.by,
            after=query.after,
            before=query.before,
            as_of=query.as_of,
            resume_after=resume,
            accept=query.accept,
            limit=query.limit,
        )
        body: dict[str, Any] = {
            "orders": [order_2026(order, version, included, call.pii) for order, version in page]
        }
        if more is not None:
            token = self._tokens.encode(
                "searchOrders", principal.seller_id, {"q": query.to_json(), "r": list(more), "f": filters}
            )
            body["pagination"] = {"nextToken": token}
        body["createdBefore" if query.by == "created" else "lastUpdatedBefore"] = epoch_to_iso(query.before)
        return 200, body

    def _get_order_2026(self, principal: Principal, call: _Call) -> tuple[int, Any]:
        included = self._included(call.query.get("includedData"))
        order = self.book.orders.get(call.path_params["orderId"])
        if order is None or order.seller_id != principal.seller_id:
            raise SpApiError(404, "NotFound", "The resource specified does not exist.", "")
        return 200, {"order": order_2026(order, order.versions[-1], included, call.pii)}

    # --- Tokens API -------------------------------------------------------------------------------------

    def _create_restricted_data_token(self, principal: Principal, call: _Call) -> tuple[int, Any]:
        if principal.restricted is not None:
            raise SpApiError(403, "Unauthorized", ACCESS_DENIED_MESSAGE, "An RDT cannot create another RDT.")
        body = call.body if isinstance(call.body, dict) else None
        resources_raw = body.get("restrictedResources") if body else None
        if not isinstance(resources_raw, list) or not 1 <= len(resources_raw) <= 50:
            raise invalid_input("restrictedResources must list 1 to 50 resources.")
        resources: list[RestrictedResource] = []
        for raw in resources_raw:
            if not isinstance(raw, dict):
                raise invalid_input("Each restricted resource is an object.")
            method, path, elements = raw.get("method"), raw.get("path"), raw.get("dataElements", [])
            if (
                method not in ("GET", "PUT", "POST", "DELETE")
                or not isinstance(path, str)
                or not path.startswith("/")
            ):
                raise invalid_input("A restricted resource needs method (GET, PUT, POST, DELETE) and path.")
            if not isinstance(elements, list) or any(e not in RDT_DATA_ELEMENTS for e in elements):
                raise invalid_input(f"dataElements must be among {', '.join(sorted(RDT_DATA_ELEMENTS))}.")
            if not elements and method == "GET" and _v0_own_data(path.split("?")[0]) is None:
                raise invalid_input(
                    f"dataElements is required for {path}: an RDT for the getOrders, getOrder or "
                    "getOrderItems operation names the data it opens (buyerInfo, shippingAddress, "
                    "buyerTaxInformation)."
                )
            resources.append(RestrictedResource(method, path.split("?")[0], frozenset(elements)))
        token = "Atz.sprdt|" + secrets.token_urlsafe(48)
        rdt = replace(principal, restricted=tuple(resources))
        ttl = min(RESTRICTED_DATA_TOKEN_TTL_S, self.scenario.access_token_lifetime_s)
        self._runtime.access_tokens[token] = _IssuedToken(rdt, self._real_clock() + ttl)
        return 200, {"restrictedDataToken": token, "expiresIn": ttl}

    # --- getOrderAddress (v0) ------------------------------------------------------------------------------

    def _get_order_address(self, principal: Principal, call: _Call) -> tuple[int, Any]:
        order = self._owned_order(principal, call.path_params["orderId"])
        payload: dict[str, Any] = {"AmazonOrderId": order.order_id}
        snap = order.current
        if order.address is not None and snap.status in ADDRESS_STATUSES:
            payload["ShippingAddress"] = address_v0(order.address, call.pii)
        return 200, {"payload": payload}

    # --- Feeds 2021-06-30 -------------------------------------------------------------------------------

    def _create_feed_document(self, principal: Principal, call: _Call) -> tuple[int, Any]:
        # CreateFeedDocumentSpecification does not forbid other properties (python-amazon-sp-api
        # sends some): they are ignored; contentType is checked.
        body = call.body
        if not isinstance(body, dict):
            raise invalid_input("The body must be a CreateFeedDocumentSpecification JSON object.")
        content_type = body.get("contentType")
        if not isinstance(content_type, str) or not content_type.strip():
            raise invalid_input("contentType is required and must be a string.")
        region = self._seller(principal).region
        doc = self.feeds.create_document(principal.seller_id, content_type.strip(), call.now, region)
        url = call.base_url + self.feeds.presigned_path(doc, "PUT", call.now)
        return 201, {"feedDocumentId": doc.document_id, "url": url}

    def _owned_document(self, principal: Principal, document_id: str) -> Document:
        doc = self.feeds.documents.get(document_id)
        if doc is None or doc.seller_id != principal.seller_id or doc.kind == "report":
            raise SpApiError(404, "NotFound", "The requested feed document was not found.", "")
        return doc

    def _create_feed(self, principal: Principal, call: _Call) -> tuple[int, Any]:
        body = call.body
        if not isinstance(body, dict):
            raise invalid_input("The body must be a CreateFeedSpecification JSON object.")
        # CreateFeedSpecification does not forbid other properties (python-amazon-sp-api's
        # submit_feed sends some): they are ignored; the four known ones are checked.
        feed_type, markets = body.get("feedType"), body.get("marketplaceIds")
        document_id, options = body.get("inputFeedDocumentId"), body.get("feedOptions") or {}
        if not isinstance(feed_type, str) or not feed_type:
            raise invalid_input("feedType is required.")
        if feed_type not in KNOWN_FEED_TYPES:
            raise invalid_input(f"Invalid feedType: {feed_type}.", "Invalid request parameters")
        if (
            not isinstance(markets, list)
            or not 1 <= len(markets) <= 25
            or not all(isinstance(m, str) for m in markets)
        ):
            raise invalid_input("marketplaceIds must list 1 to 25 marketplace ids.")
        foreign = [m for m in markets if m not in self._seller(principal).marketplaces]
        if foreign:
            raise invalid_input(
                f"Invalid marketplaceIds: {', '.join(foreign)} (not a marketplace of this seller)."
            )
        if not isinstance(document_id, str) or not document_id:
            raise invalid_input("inputFeedDocumentId is required.")
        if not isinstance(options, dict) or not all(isinstance(v, str) for v in options.values()):
            raise invalid_input("feedOptions is a map of strings.")
        doc = self.feeds.documents.get(document_id)
        if doc is None or doc.seller_id != principal.seller_id or doc.kind != "input":
            raise invalid_input(f"Invalid inputFeedDocumentId: {document_id}.")
        feed = self.feeds.create_feed(
            principal.seller_id,
            feed_type,
            tuple(markets),
            doc,
            {str(k): v for k, v in options.items()},
            call.now,
        )
        return 202, {"feedId": feed.feed_id}

    def _get_feeds(self, principal: Principal, call: _Call) -> tuple[int, Any]:  # noqa: PLR0912 - one check per parameter
        q = call.query
        token = q.get("nextToken")
        if token:
            if set(q) - {"nextToken"}:
                raise invalid_input("nextToken must be the only parameter.")
            raw = self._tokens.decode("getFeeds", principal.seller_id, token)
            if raw is None or not isinstance(raw.get("q"), dict) or not isinstance(raw.get("after"), int):
                raise invalid_input("Invalid nextToken.", "We could not decode your nextToken.")
            query, after = raw["q"], raw["after"]
        else:
            types = csv_values(q.get("feedTypes"))
            if not types:
                raise invalid_input("Either feedTypes or nextToken is required.")
            if len(types) > 10:
                raise invalid_input("feedTypes accepts at most 10 values.")
            markets = csv_values(q.get("marketplaceIds"))
            if len(markets) > 10:
                raise invalid_input("marketplaceIds accepts at most 10 values.")
            statuses = csv_values(q.get("processingStatuses"))
            bad = [x for x in statuses if x not in FEED_STATUSES]
            if bad:
                raise invalid_input(f"Invalid processingStatuses: {', '.join(bad)}.")
            size_raw = q.get("pageSize", str(FEEDS_PAGE_SIZE))
            if not size_raw.isdigit() or not 1 <= int(size_raw) <= 100:
                raise invalid_input("pageSize must be an integer from 1 to 100.")
            try:
                since = parse_iso(q["createdSince"]) if "createdSince" in q else call.now - FEEDS_KEPT_S
                until = parse_iso(q["createdUntil"]) if "createdUntil" in q else call.now
            except ValueError:
                raise invalid_input("createdSince and createdUntil must be ISO 8601 date-times.") from None
            if since > until:
                raise invalid_input("createdSince must not be later than createdUntil.")
            query = {
                "types": list(types),
                "markets": list(markets),
                "statuses": list(statuses),
                "size": int(size_raw),
                "since": since,
                "until": until,
            }
            after = -1
        feeds = sorted(
            (
                f
                for f in self.feeds.feeds.values()
                if f.seller_id == principal.seller_id
                and f.feed_type in query["types"]
                and (not query["markets"] or set(f.marketplace_ids) & set(query["markets"]))
                and (not query["statuses"] or f.status in query["statuses"])
                and query["since"] <= f.created <= query["until"]
                and f.created >= call.now - FEEDS_KEPT_S
            ),
            key=lambda f: -int(f.feed_id),
        )
        if after >= 0:
            feeds = [f for f in feeds if int(f.feed_id) < after]
        page = feeds[: query["size"]]
        body: dict[str, Any] = {"feeds": [f.as_amazon() for f in page]}
        if len(feeds) > len(page):
            body["nextToken"] = self._tokens.encode(
                "getFeeds", principal.seller_id, {"q": query, "after": int(page[-1].feed_id)}
            )
        return 200, body

    def _owned_feed(self, principal: Principal, feed_id: str) -> Any:
        if not feed_id.isdigit():
            raise invalid_input(f"Invalid feedId {feed_id!r}.")
        feed = self.feeds.feeds.get(feed_id)
        if feed is None or feed.seller_id != principal.seller_id:
            raise SpApiError(404, "NotFound", "The requested feed was not found.", f"feedId {feed_id}")
        return feed

    def _get_feed(self, principal: Principal, call: _Call) -> tuple[int, Any]:
        return 200, self._owned_feed(principal, call.path_params["feedId"]).as_amazon()

    def _cancel_feed(self, principal: Principal, call: _Call) -> tuple[int, Any]:
        feed = self._owned_feed(principal, call.path_params["feedId"])
        if feed.status != "IN_QUEUE":
            raise invalid_input(
                f"The feed {feed.feed_id} is {feed.status}; only IN_QUEUE feeds can be cancelled.",
                "Feed cannot be cancelled.",
            )
        self.feeds.cancel(feed, call.now)
        return 200, None

    def _get_feed_document(self, principal: Principal, call: _Call) -> tuple[int, Any]:
        enable = call.query.get("enableContentEncodingUrlHeader")
        if enable is not None and enable not in ("true", "false"):
            raise invalid_input("enableContentEncodingUrlHeader must be true or false.")
        doc = self._owned_document(principal, call.path_params["feedDocumentId"])
        if doc.content is None:
            raise SpApiError(404, "NotFound", "The requested feed document was not found.", "not uploaded")
        # "When true, the Content-Encoding header on the returned URL is set to gzip instead of the
        # default identity when compressionAlgorithm is GZIP" (feeds_2021-06-30.json): the URL carries
        # the (signed) encoding its download answers with, as S3's response-content-encoding does.
        encoding = "gzip" if enable == "true" and doc.compression == "GZIP" else None
        url = call.base_url + self.feeds.presigned_path(doc, "GET", call.now, content_encoding=encoding)
        body: dict[str, Any] = {"feedDocumentId": doc.document_id, "url": url}
        if doc.compression is not None:
            body["compressionAlgorithm"] = doc.compression
        return 200, body

    # --- Notifications v1 -------------------------------------------------------------------------------

    def _create_destination(self, principal: Principal, call: _Call) -> tuple[int, Any]:
        destination = self.notifications.create_destination(principal.application, call.body, call.now)
        return 200, {"payload": destination.as_amazon()}

    def _get_destinations(self, principal: Principal, call: _Call) -> tuple[int, Any]:
        destinations = self.notifications.destinations_of(principal.application)
        return 200, {"payload": [d.as_amazon() for d in destinations]}

    def _get_destination(self, principal: Principal, call: _Call) -> tuple[int, Any]:
        destination = self.notifications.destination(principal.application, call.path_params["destinationId"])
        return 200, {"payload": destination.as_amazon()}

    def _delete_destination(self, principal: Principal, call: _Call) -> tuple[int, Any]:
        self.notifications.delete_destination(principal.application, call.path_params["destinationId"])
        return 200, {}

    def _create_subscription(self, principal: Principal, call: _Call) -> tuple[int, Any]:
        subscription = self.notifications.create_subscription(
            principal.seller_id,
            principal.application,
            call.path_params["notificationType"],
            call.body,
            call.now,
        )
        return 200, {"payload": subscription.as_amazon()}

    def _get_subscription(self, principal: Principal, call: _Call) -> tuple[int, Any]:
        subscription = self.notifications.subscription(
            principal.seller_id,
            principal.application,
            call.path_params["notificationType"],
            call.query.get("payloadVersion") or None,
        )
        return 200, {"payload": subscription.as_amazon()}

    def _get_subscription_by_id(self, principal: Principal, call: _Call) -> tuple[int, Any]:
        subscription = self.notifications.subscription_by_id(
            principal.application, call.path_params["notificationType"], call.path_params["subscriptionId"]
        )
        return 200, {"payload": subscription.as_amazon()}

    def _delete_subscription_by_id(self, principal: Principal, call: _Call) -> tuple[int, Any]:
        self.notifications.delete_subscription(
            principal.application, call.path_params["notificationType"], call.path_params["subscriptionId"]
        )
        return 200, {}

    # --- Reports 2021-06-30 ------------------------------------------------------------------------------

    @staticmethod
    def _data_time(body: Mapping[str, Any], name: str, now: float) -> float:
        """dataStartTime / dataEndTime: "The default is now. The value must be prior to or equal to the
        current date and time" (reports_2021-06-30.json)."""
        raw = body.get(name)
        if raw is None:
            return now
        try:
            if not isinstance(raw, str):
                raise ValueError(raw)
            value = parse_iso(raw)
        except ValueError:
            raise invalid_input(f"{name} must be an ISO 8601 date-time.", "Invalid input") from None
        if value > now:
            raise invalid_input(
                f"{name} {raw} must be prior to or equal to the current date and time.", "Invalid input"
            )
        return value

    def _create_report(self, principal: Principal, call: _Call) -> tuple[int, Any]:
        body = call.body
        if not isinstance(body, dict):
            raise invalid_input("The body must be a CreateReportSpecification JSON object.", "Invalid input")
        # CreateReportSpecification does not forbid other properties: they are ignored.
        missing = [name for name in ("reportType", "marketplaceIds") if body.get(name) is None]
        if missing:
            # How Amazon answers a specification without them (selling-partner-api-docs#2721).
            details = "".join(f"{name};" for name in missing)
            raise invalid_input(details, "One or more required parameters missing")
        report_type, markets, options = body["reportType"], body["marketplaceIds"], body.get("reportOptions")
        if not isinstance(report_type, str) or report_type not in KNOWN_REPORT_TYPES:
            # The model's own example refuses an unknown type (BAD_FEE_DISCOUNTS_REPORT) this way.
            raise invalid_input(f"Invalid reportType {str(report_type)[:100]}.", "Invalid input")
        if (
            not isinstance(markets, list)
            or not 1 <= len(markets) <= 25
            or not all(isinstance(m, str) and m for m in markets)
        ):
            raise invalid_input("marketplaceIds must list 1 to 25 marketplace ids.", "Invalid input")
        seller = self._seller(principal)
        foreign = [m for m in markets if m not in seller.marketplaces]
        if foreign:
            raise invalid_input(
                f"Invalid marketplaceIds: {', '.join(foreign)} (not a marketplace of this seller).",
                "Invalid input",
            )
        if options is not None and (
            not isinstance(options, dict) or not all(isinstance(v, str) for v in options.values())
        ):
            raise invalid_input("reportOptions is a map of strings.", "Invalid input")
        start = self._data_time(body, "dataStartTime", call.now)
        end = self._data_time(body, "dataEndTime", call.now)
        if start > end:
            raise invalid_input("dataStartTime must not be later than dataEndTime.", "Invalid input")
        # The order report is regional: marketplaceIds are checked, kept on the report, and ignored for
        # its content, which covers every order of the seller (one region per seller).
        report = self.reports.create(
            principal.seller_id,
            seller.region,
            report_type,
            marketplace_ids=tuple(markets),
            options={str(k): v for k, v in (options or {}).items()},
            window=(start, end),
            now=call.now,
            orders=self.book.seller_orders(principal.seller_id),
        )
        return 202, {"reportId": report.report_id}

    def _listed_reports(self, seller_id: str, now: float) -> list[Report]:
        """The seller's reports still kept ("Reports are retained for a maximum of 90 days")."""
        kept = self.reports.profile.reports_kept_s
        return [
            r for r in self.reports.reports.values() if r.seller_id == seller_id and now - r.created <= kept
        ]

    def _get_reports(self, principal: Principal, call: _Call) -> tuple[int, Any]:  # noqa: PLR0912 - one check per parameter
        q = call.query
        token = q.get("nextToken")
        if token:
            if set(q) - {"nextToken"}:
                raise invalid_input("nextToken must be the only parameter.", "Invalid input")
            raw = self._tokens.decode("getReports", principal.seller_id, token)
            if raw is None or not isinstance(raw.get("q"), dict) or not isinstance(raw.get("after"), int):
                raise invalid_input("Invalid nextToken.", "We could not decode your nextToken.")
            query, after = raw["q"], raw["after"]
        else:
            types = csv_values(q.get("reportTypes"))
            if not types:
                raise invalid_input("Either reportTypes or nextToken is required.", "Invalid input")
            if len(types) > 10:
                raise invalid_input("reportTypes accepts at most 10 values.", "Invalid input")
            markets = csv_values(q.get("marketplaceIds"))
            if len(markets) > 10:
                raise invalid_input("marketplaceIds accepts at most 10 values.", "Invalid input")
            statuses = csv_values(q.get("processingStatuses"))
            if any(x not in REPORT_STATUSES for x in statuses):
                # The model's example: "Invalid input in processing status".
                raise invalid_input("Invalid input in processing status", "Invalid input")
            size_raw = q.get("pageSize", str(REPORTS_PAGE_SIZE))
            if not size_raw.isdigit() or not 1 <= int(size_raw) <= 100:
                raise invalid_input("pageSize must be an integer from 1 to 100.", "Invalid input")
            kept = self.reports.profile.reports_kept_s
            try:
                since = parse_iso(q["createdSince"]) if "createdSince" in q else call.now - kept
                until = parse_iso(q["createdUntil"]) if "createdUntil" in q else call.now
            except ValueError:
                raise invalid_input(
                    "createdSince and createdUntil must be ISO 8601 date-times.", "Invalid input"
                ) from None
            if since > until:
                raise invalid_input("createdSince must not be later than createdUntil.", "Invalid input")
            query = {
                "types": list(types),
                "markets": list(markets),
                "statuses": list(statuses),
                "size": int(size_raw),
                "since": since,
                "until": until,
            }
            after = -1
        reports = sorted(
            (
                r
                for r in self._listed_reports(principal.seller_id, call.now)
                if r.report_type in query["types"]
                and (not query["markets"] or set(r.marketplace_ids) & set(query["markets"]))
                and (not query["statuses"] or r.status in query["statuses"])
                and query["since"] <= r.created <= query["until"]
            ),
            key=lambda r: -int(r.report_id),
        )
        if after >= 0:
            reports = [r for r in reports if int(r.report_id) < after]
        page = reports[: query["size"]]
        body: dict[str, Any] = {"reports": [r.as_amazon() for r in page]}
        if len(reports) > len(page):
            body["nextToken"] = self._tokens.encode(
                "getReports", principal.seller_id, {"q": query, "after": int(page[-1].report_id)}
            )
        return 200, body

    def _owned_report(self, principal: Principal, report_id: str, now: float) -> Report:
        if not report_id.isdigit():
            raise invalid_input(f"Invalid reportId {report_id[:100]!r}.", "Invalid input")
        report = self.reports.reports.get(report_id)
        if report is None or report not in self._listed_reports(principal.seller_id, now):
            raise SpApiError(404, "NotFound", "The requested report was not found.", f"reportId {report_id}")
        return report

    def _get_report(self, principal: Principal, call: _Call) -> tuple[int, Any]:
        return 200, self._owned_report(principal, call.path_params["reportId"], call.now).as_amazon()

    def _cancel_report(self, principal: Principal, call: _Call) -> tuple[int, Any]:
        report = self._owned_report(principal, call.path_params["reportId"], call.now)
        if report.status != "IN_QUEUE":
            # "Only reports with processingStatus=IN_QUEUE can be cancelled."
            raise invalid_input(
                f"The report {report.report_id} is {report.status}; only IN_QUEUE reports can be cancelled.",
                "Invalid input",
            )
        self.reports.cancel(report, call.now)
        return 200, None

    def _get_report_document(self, principal: Principal, call: _Call) -> tuple[int, Any]:
        enable = call.query.get("enableContentEncodingUrlHeader")
        if enable is not None and enable not in ("true", "false"):
            raise invalid_input("enableContentEncodingUrlHeader must be true or false.", "Invalid input")
        document_id = call.path_params["reportDocumentId"]
        report = self.reports.by_document.get(document_id)
        doc = self.reports.document(document_id)
        # An id Amazon does not know: 400 (jlevers/selling-partner-api#487, selling-partner-api-models#2420).
        unknown = SpApiError(400, "InvalidInput", f"Invalid reportDocumentId {document_id[:200]}", "")
        if report is None or doc is None or report.seller_id != principal.seller_id:
            raise unknown
        if (
            report.report_type in RESTRICTED_REPORT_TYPES
            and principal.restricted is None
            and self._runtime.pii_requires_rdt
        ):
            # A restricted report's document opens only with a Restricted Data Token naming it.
            raise SpApiError(403, "Unauthorized", ACCESS_DENIED_MESSAGE, "")
        if doc.expires_at is not None and call.now >= doc.expires_at:
            if self.reports.profile.expired_document == "not_found":
                raise SpApiError(
                    404, "NotFound", "The requested report document was not found.", "The document expired."
                )
            raise unknown
        # As getFeedDocument: the URL carries the (signed) Content-Encoding its download answers with.
        encoding = "gzip" if enable == "true" and doc.compression == "GZIP" else None
        url = call.base_url + self.feeds.presigned_path(doc, "GET", call.now, content_encoding=encoding)
        body: dict[str, Any] = {"reportDocumentId": document_id, "url": url}
        if doc.compression is not None:
            body["compressionAlgorithm"] = doc.compression
        return 200, body

    # --- ORDER_CHANGE delivery: what the SQS sender asks (its own thread) ---------------------------------

    def attach_notification_sender(self, wake: Callable[[], None] | None) -> None:
        """A sender takes the due notifications from now on (``wake``: called, from any thread, when
        one may have fallen due); None detaches it."""
        with self._lock:
            self.notifications.wake = wake
            self.notifications.sender_attached = wake is not None

    def take_due_notifications(self, limit: int = 100) -> list[Delivery]:
        """The notification copies due by now on the simulated clock, oldest first."""
        with self._lock:
            return self.notifications.take_due(self.now(), limit)

    def notification_sent(self, delivery: Delivery) -> None:
        with self._lock:
            self.notifications.delivered(delivery, self.clock.now())

    def notification_failed(self, delivery: Delivery, error: str) -> None:
        with self._lock:
            self.notifications.failed(delivery, error)

    def real_seconds_to_next_notification(self) -> float | None:
        """Real seconds until the next notification falls due (inf on a frozen clock; None: none
        scheduled)."""
        with self._lock:
            now = self.now()
            due = self.notifications.next_due()
            return None if due is None else self.clock.real_seconds(max(0.0, due - now))

    # --- the presigned document URLs (S3, not SP-API: no access token, no usage plan) ------------------

    def upload_document(
        self, document_id: str, query: Mapping[str, str], content_type: str | None, content: bytes
    ) -> SimResponse:
        """``PUT`` on an upload URL createFeedDocument returned: 200, or S3's XML error."""
        headers = {"x-amz-request-id": uuid.uuid4().hex[:16].upper()}
        with self._lock:
            now = self.now()
            doc = self.feeds.documents.get(document_id)
            seller = doc.seller_id if doc else ANONYMOUS
            forced = self._forced_fault("uploadFeedDocument")
            if forced in ("500", "503"):
                self.counters.count(seller, "uploadFeedDocument", int(forced))
                error = S3Error(
                    int(forced), "InternalError" if forced == "500" else "SlowDown", "Please retry."
                )
                return SimResponse(error.status, error.body(), headers)
            try:
                self.feeds.upload(document_id, dict(query), content_type, content, now)
            except S3Error as exc:
                self.counters.count(seller, "uploadFeedDocument", exc.status)
                return SimResponse(exc.status, exc.body(), headers)
            self.counters.count(seller, "uploadFeedDocument", 200)
            headers["ETag"] = '"' + uuid.uuid5(uuid.NAMESPACE_OID, document_id).hex + '"'
            if forced == "drop":
                return SimResponse(200, None, headers, drop=True)
            if forced == "timeout":
                return SimResponse(200, None, headers, delay_s=self._runtime.faults.timeout_s, drop=True)
            return SimResponse(200, None, headers)

    def download_document(self, document_id: str, query: Mapping[str, str]) -> tuple[SimResponse, str]:
        """``GET`` on a URL getFeedDocument or getReportDocument returned: (response with the bytes,
        content type)."""
        headers = {"x-amz-request-id": uuid.uuid4().hex[:16].upper()}
        with self._lock:
            now = self.now()
            try:
                doc = self.feeds.download(document_id, dict(query), now)
            except S3Error as exc:
                return SimResponse(exc.status, exc.body(), headers), "application/xml"
            kind = "downloadReportDocument" if doc.kind == "report" else "downloadFeedDocument"
            self.counters.count(doc.seller_id, kind, 200)
            # The stored bytes as they are (GZIP documents compressed); Content-Encoding only when the
            # URL was asked for with enableContentEncodingUrlHeader.
            encoding = query.get(CONTENT_ENCODING_PARAMETER)
            if encoding:
                headers["Content-Encoding"] = encoding
            return SimResponse(200, doc.content, headers), doc.content_type

    # --- what order feeds do (called by the feed engine at a feed's end) -------------------------------

    def report_document_made(self, seller_id: str, region: str, document: Document, at: float) -> None:
        self.reports.made_elsewhere(seller_id, region, EASYSHIP_DOCUMENTS_REPORT, document, at)

    def easy_ship_documents(
        self, seller_id: str, request: DocumentRequest, at: float
    ) -> tuple[MessageResult, bytes | None]:
        """A POST_EASYSHIP_DOCUMENTS message: the PDF of a scheduled package of the seller's order."""
        order = self.book.orders.get(request.order_id)
        key, message_id = request.order_id, request.message_id
        if order is None or order.seller_id != seller_id:
            return MessageResult(message_id, key, False, CODE_UNKNOWN_ORDER, "Order not found."), None
        package = self.easyship.packages.get(order.order_id)
        if package is None:
            why = f"Order {order.order_id} has no scheduled Easy Ship package: schedule it first."
            return MessageResult(message_id, key, False, CODE_NOT_SCHEDULED, why), None
        if "Warranty" in request.document_types and not package.has_serial_numbers:
            why = f"No warranty for order {order.order_id}: its package was scheduled without serial numbers."
            return MessageResult(message_id, key, False, CODE_NO_WARRANTY, why), None
        titles = {item.order_item_id: (item.title, item.quantity) for item in order.items}
        facts = PackageFacts(
            order_id=order.order_id,
            package_id=package.package_id,
            tracking_id=package.tracking_id,
            invoice_number=package.invoice_number,
            invoice_date=package.invoice_date,
            seller_id=seller_id,
            slot_start=package.slot.start,
            weight_g=package.size.weight_g,
            items=tuple((i, *titles[i], serials) for i, serials in package.items),
        )
        detail = {"document_types": list(request.document_types), "package_id": package.package_id}
        return MessageResult(message_id, key, True, detail=detail), documents_pdf(
            facts, request.document_types
        )

    def fulfil(  # noqa: PLR0911 - one result per rule, as Amazon reports them
        self, seller_id: str, message: FulfillmentMessage, feed_id: str, at: float
    ) -> MessageResult:
        """One OrderFulfillment message: the same rules as confirmShipment."""
        key = message.order_id
        order = self.book.orders.get(message.order_id)
        if order is None or order.seller_id != seller_id:
            return MessageResult(
                message.message_id,
                key,
                False,
                CODE_UNKNOWN_ORDER,
                f"The order id {message.order_id} was not found in our system.",
            )
        snap = order.current
        if snap.status == "Canceled":
            return MessageResult(
                message.message_id,
                key,
                False,
                CODE_CANCELED_ORDER,
                f"The order {order.order_id} has been canceled; it cannot be shipped.",
            )
        if order.channel == "AFN":
            return MessageResult(
                message.message_id,
                key,
                False,
                CODE_ORDER_STATE,
                f"The order {order.order_id} is fulfilled by Amazon.",
            )
        if snap.status in ("Pending", "PendingAvailability"):
            return MessageResult(
                message.message_id,
                key,
                False,
                CODE_ORDER_STATE,
                f"The order {order.order_id} is {snap.status}: payment is not authorised yet.",
            )
        refused = self._programme_refusal(order)
        if refused is not None:  # a feed message follows confirmShipment's rules (undocumented)
            return MessageResult(message.message_id, key, False, CODE_ORDER_STATE, refused)
        shipped = list(snap.shipped)
        if message.items:
            wanted: list[tuple[int, int]] = []
            for item in message.items:
                found = order.item(item.order_item_id)
                if found is None:
                    return MessageResult(
                        message.message_id,
                        key,
                        False,
                        CODE_UNKNOWN_ITEM,
                        f"AmazonOrderItemCode {item.order_item_id} is not an item of order {order.order_id}.",
                    )
                index = found[0]
                remaining = order.items[index].quantity - shipped[index]
                quantity = remaining if item.quantity is None else item.quantity
                if quantity > remaining or quantity == 0:
                    return MessageResult(
                        message.message_id,
                        key,
                        False,
                        CODE_QUANTITY_ABOVE_UNSHIPPED,
                        f"Item {item.order_item_id}: quantity {quantity} exceeds the {remaining} unit(s) "
                        f"not yet shipped of order {order.order_id}.",
                    )
                wanted.append((index, quantity))
        else:
            wanted = [
                (i, it.quantity - shipped[i]) for i, it in enumerate(order.items) if it.quantity > shipped[i]
            ]
            if not wanted:
                return MessageResult(
                    message.message_id,
                    key,
                    False,
                    CODE_QUANTITY_ABOVE_UNSHIPPED,
                    f"The order {order.order_id} has no unit left to ship.",
                )
        for index, quantity in wanted:
            shipped[index] += quantity
        package = Package(
            package_reference_id=f"{feed_id}{message.message_id:05d}",
            carrier_code=message.carrier_code or "Other",
            carrier_name=message.carrier_name,
            shipping_method=message.shipping_method,
            tracking_number=message.tracking_number or "",
            ship_date=message.fulfillment_date,
            items=tuple((order.items[i].order_item_id, q) for i, q in wanted),
            confirmed_at=int(at),
        )
        self._record_shipment(order, tuple(shipped), package, at, f"shipment confirmed by feed {feed_id}")
        return MessageResult(
            message.message_id,
            key,
            True,
            detail={"shipped": {order.items[i].order_item_id: q for i, q in wanted}},
        )

    def acknowledge(  # noqa: PLR0911 - one result per rule
        self, seller_id: str, message: AcknowledgementMessage, at: float
    ) -> MessageResult:
        """One OrderAcknowledgement message: Success acknowledges; Failure is the seller's cancellation."""
        key = message.order_id
        order = self.book.orders.get(message.order_id)
        if order is None or order.seller_id != seller_id:
            return MessageResult(
                message.message_id,
                key,
                False,
                CODE_UNKNOWN_ORDER,
                f"The order id {message.order_id} was not found in our system.",
            )
        for item_id, _reason in message.items:
            if order.item(item_id) is None:
                return MessageResult(
                    message.message_id,
                    key,
                    False,
                    CODE_UNKNOWN_ITEM,
                    f"AmazonOrderItemCode {item_id} is not an item of order {order.order_id}.",
                )
        snap = order.current
        if message.status_code == "Success":
            if snap.status == "Canceled":
                return MessageResult(
                    message.message_id,
                    key,
                    False,
                    CODE_CANCELED_ORDER,
                    f"The order {order.order_id} is canceled; it cannot be acknowledged.",
                )
            if message.merchant_order_id:
                # Kept for later feeds and shown as the seller's order id; no new order version.
                order.merchant_order_id = message.merchant_order_id
            detail: dict[str, Any] = {"acknowledged": True}
            if message.merchant_order_id:
                detail["merchant_order_id"] = message.merchant_order_id
            return MessageResult(message.message_id, key, True, detail=detail)
        if snap.status == "Canceled":
            return MessageResult(message.message_id, key, True, detail={"canceled": "already"})
        if (
            order.channel == "AFN"
            or any(snap.shipped)
            or snap.status not in ("Pending", "PendingAvailability", "Unshipped")
        ):
            return MessageResult(
                message.message_id,
                key,
                False,
                CODE_ORDER_STATE,
                f"The order {order.order_id} is {snap.status} ({order.channel}); "
                "the seller cannot cancel it.",
            )
        reason = next((r for _, r in message.items if r), None) or "NoInventory"
        canceled = replace(snap, status="Canceled", cancel_reason=reason, cancel_requester="SELLER")
        self.book.change(order, canceled, at, self._lag(), "canceled by the seller (acknowledgement feed)")
        return MessageResult(message.message_id, key, True, detail={"canceled": reason})

    # --- control and truth API ---------------------------------------------------------------------------

    def truth_orders(self, seller_id: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            self.now()
            orders = sorted(self.book.seller_orders(seller_id), key=lambda o: (o.created, o.order_id))
            return [order_truth(o) for o in orders if status is None or o.current.status == status]

    def truth_order(self, order_id: str) -> dict[str, Any]:
        with self._lock:
            self.now()
            order = self.book.orders.get(order_id)
            if order is None:
                raise ControlError(f"no order {order_id}", 404)
            return order_truth(order)

    def add_order(self, raw: Any) -> dict[str, Any]:
        """Place an order now (``POST /_sim/orders``); returns its truth view."""
        try:
            spec = NewOrder.model_validate(raw or {})
        except ValidationError as exc:
            raise ControlError(str(exc)) from exc
        with self._lock:
            now = self.now()
            seller = self._control_seller(spec.seller_id)
            marketplace_id = spec.marketplace_id or seller.marketplaces[0]
            if marketplace_id not in seller.marketplaces:
                raise ControlError(f"{marketplace_id} is not a marketplace of {seller.seller_id}")
            marketplace = MARKETPLACES[marketplace_id]
            rng = self._control_rng
            items = self._new_items(seller, spec, marketplace.marketplace_id)
            if spec.order_id is not None and (
                spec.order_id in self._taken_ids or self.book.known(spec.order_id)
            ):
                raise ControlError(f"order {spec.order_id} exists")
            if spec.programs and spec.fulfillment_channel != "MFN":
                raise ControlError("Ship+ and Easy Ship are programmes of seller-fulfilled orders")
            if spec.order_id is not None:
                self._taken_ids.add(spec.order_id)
            buyer = generate.address(rng, marketplace.country_code)
            order = Order(
                order_id=spec.order_id or generate.order_id(rng, seller.region, self._taken_ids),
                seller_id=seller.seller_id,
                marketplace=marketplace,
                channel=spec.fulfillment_channel,
                created=int(now),
                items=items,
                address=None if spec.missing_address else buyer,
                buyer_name=buyer.name,
                buyer_email=f"{secrets.token_hex(7)}@marketplace.amazon.com",
                ship_service_level=generate.ship_level(marketplace, expedited=False),
                ship_category="Standard",
                preorder=spec.preorder_release_s is not None,
                programs=tuple(spec.programs),
            )
            released_at = int(now) + int(spec.preorder_release_s or 0)
            ship_within = (
                spec.ship_within_s if spec.ship_within_s is not None else seller.orders.ship_within_s[0]
            )
            order.latest_ship_at = released_at + int(ship_within)
            pending = spec.pending_s is not None or spec.preorder_release_s is not None
            status: SimStatus = (
                "PendingAvailability"
                if spec.preorder_release_s is not None
                else "Pending"
                if pending
                else "Unshipped"
            )
            self.book.add_order(order, Snapshot(status, (0,) * len(items)), self._lag())
            ready_at = released_at + int(spec.pending_s or (1 if spec.preorder_release_s else 0))
            if spec.preorder_release_s is not None:
                self.book.schedule(released_at, order.order_id, "release", self._lag())
            if pending:
                self.book.schedule(ready_at, order.order_id, "authorise", self._lag())
            if spec.fulfillment_channel == "AFN":
                delay = spec.afn_ship_after_s or rng.uniform(*seller.orders.afn_ship_delay_s)
                self.book.schedule(ready_at + max(1, int(delay)), order.order_id, "afn_ship", self._lag())
            return order_truth(order)

    def _control_seller(self, seller_id: str | None) -> SellerScenario:
        if seller_id is None:
            return self.scenario.sellers[0]
        try:
            return self.scenario.seller(seller_id)
        except KeyError:
            raise ControlError(f"no seller {seller_id}") from None

    def _new_items(self, seller: SellerScenario, spec: NewOrder, marketplace_id: str) -> tuple[Item, ...]:
        rng = self._control_rng
        marketplace = MARKETPLACES[marketplace_id]
        products = {p.sku: p for p in self.catalogues[seller.seller_id]}
        wanted = spec.items or tuple(NewOrderItem() for _ in range(spec.item_count or 1))
        items: list[Item] = []
        for entry in wanted:
            if entry.unmapped or (entry.sku or "").startswith(UNMAPPED_SKU_PREFIX):
                item = generate.unmapped_item(rng, marketplace, entry.quantity)
                if entry.sku:
                    item = Item(
                        item.order_item_id, entry.sku, item.asin, item.title, item.quantity, item.unit_price
                    )
            elif entry.sku is None:
                item = generate.catalogue_item(
                    rng, rng.choice(list(products.values())), marketplace, entry.quantity
                )
            elif entry.sku in products:
                item = generate.catalogue_item(rng, products[entry.sku], marketplace, entry.quantity)
            else:
                raise ControlError(f"SKU {entry.sku} is not in the catalogue (use unmapped: true)")
            items.append(item)
        return tuple(items)

    def set_order_status(self, order_id: str, status: str) -> dict[str, Any]:
        """``POST /_sim/orders/{id}/status``: Canceled, Pending (pre-order released), Unshipped
        (payment authorised), Shipped (by Amazon, or the invoice confirmed) or InvoiceUnconfirmed."""
        allowed = ("Canceled", "Pending", "Unshipped", "Shipped", "InvoiceUnconfirmed")
        if status not in allowed:
            raise ControlError(f"status must be one of {', '.join(allowed)}")
        with self._lock:
            now = self.now()
            order = self.book.orders.get(order_id)
            if order is None:
                raise ControlError(f"no order {order_id}", 404)
            target = cast(SimStatus, status)
            try:
                self.book.set_status(order, target, now, self._lag())
            except TransitionError as exc:
                raise ControlError(str(exc)) from exc
            return order_truth(order)

    def truth_notifications(
        self, seller_id: str | None = None, order_id: str | None = None, status: str | None = None
    ) -> dict[str, Any]:
        """``GET /_sim/notifications``: the delivery knobs, counts (scheduled, pending, sent, lost,
        duplicated, canceled, messages sent, failed attempts, suppressed), destinations,
        subscriptions and every ORDER_CHANGE notification (filtered), oldest first."""
        with self._lock:
            now = self.now()
            return {
                "now": epoch_to_iso(now),
                **self.notifications.truth(seller_id=seller_id, order_id=order_id, status=status),
            }

    def set_notification_profile(self, raw: Any) -> dict[str, Any]:
        """``PUT /_sim/notifications`` ``{"loss": 0.2, "enabled": false, ...}``: the knobs given
        replace the current ones (:class:`~ordersync.simulator.scenario.NotificationProfile`), for the
        changes made from now on."""
        if raw is not None and not isinstance(raw, dict):
            raise ControlError("give the NotificationProfile fields to change as a JSON object")
        with self._lock:
            current = self.notifications.profile.model_dump()
            try:
                profile = NotificationProfile.model_validate({**current, **(raw or {})})
            except ValidationError as exc:
                raise ControlError(str(exc)) from exc
            self.notifications.profile = profile
            return profile.model_dump(mode="json")

    def truth_feeds(self, seller_id: str | None = None, feed_type: str | None = None) -> list[dict[str, Any]]:
        """Every feed (oldest first) with its messages' outcomes and its report."""
        with self._lock:
            self.now()
            return [
                self.feeds.feed_truth(f)
                for f in sorted(self.feeds.feeds.values(), key=lambda f: int(f.feed_id))
                if (seller_id is None or f.seller_id == seller_id)
                and (feed_type is None or f.feed_type == feed_type)
            ]

    def truth_feed(self, feed_id: str) -> dict[str, Any]:
        with self._lock:
            self.now()
            feed = self.feeds.feeds.get(feed_id)
            if feed is None:
                raise ControlError(f"no feed {feed_id}", 404)
            return self.feeds.feed_truth(feed, with_input=True)

    def truth_reports(
        self, seller_id: str | None = None, report_type: str | None = None
    ) -> list[dict[str, Any]]:
        """Every report (oldest first) with its status, lag, line and order counts."""
        with self._lock:
            now = self.now()
            return [
                self.reports.truth(r, now)
                for r in sorted(self.reports.reports.values(), key=lambda r: int(r.report_id))
                if seller_id in (None, r.seller_id) and report_type in (None, r.report_type)
            ]

    def truth_report(self, report_id: str) -> dict[str, Any]:
        """One report with the order versions it shows and its document's text."""
        with self._lock:
            now = self.now()
            report = self.reports.reports.get(report_id)
            if report is None:
                raise ControlError(f"no report {report_id}", 404)
            return self.reports.truth(report, now, with_document=True)

    def set_report_profile(self, raw: Any) -> dict[str, Any]:
        """``PUT /_sim/reports`` ``{"lag_s": [0, 0], ...}``: the knobs given replace the current ones
        (:class:`~ordersync.simulator.scenario.ReportProfile`), for the reports requested from now on
        (and the documents made from now on)."""
        if raw is not None and not isinstance(raw, dict):
            raise ControlError("give the ReportProfile fields to change as a JSON object")
        with self._lock:
            current = self.reports.profile.model_dump()
            try:
                profile = ReportProfile.model_validate({**current, **(raw or {})})
            except ValidationError as exc:
                raise ControlError(str(exc)) from exc
            self.reports.profile = profile
            return profile.model_dump(mode="json")

    def truth_listings(self, seller_id: str | None = None) -> dict[str, Any]:
        """Each seller's listings (SKU -> quantity) as JSON_LISTINGS_FEED feeds left them."""
        with self._lock:
            self.now()
            return {
                seller: {sku: listing.as_json() for sku, listing in sorted(listings.items())}
                for seller, listings in sorted(self.feeds.listings.items())
                if seller_id is None or seller == seller_id
            }

    def listing_quantity(self, seller_id: str, sku: str) -> int | None:
        with self._lock:
            self.now()
            listing = self.feeds.seller_listings(seller_id).get(sku)
            return None if listing is None else listing.quantity

    def force_fault(self, raw: Any) -> list[dict[str, Any]]:
        """``POST /_sim/faults/next`` ``{"fault": "drop", "operation": "confirmShipment", "count": 1}``:
        the next ``count`` requests of that operation (any, without one) fail that way."""
        if not isinstance(raw, dict):
            raise ControlError('give {"fault": KIND, "operation": NAME?, "count": N?}')
        kind, operation, count = str(raw.get("fault")), raw.get("operation"), raw.get("count", 1)
        if kind not in FAULT_KINDS:
            raise ControlError(f"fault must be one of {', '.join(FAULT_KINDS)}")
        known = {*OPERATIONS, "uploadFeedDocument"}
        if operation is not None and operation not in known:
            raise ControlError(f"unknown operation {operation}; known: {', '.join(sorted(known))}")
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ControlError("count must be a positive integer")
        with self._lock:
            self._runtime.forced.append(ForcedFault(kind, operation, count))
            return self._forced_json()

    def clear_forced_faults(self) -> list[dict[str, Any]]:
        with self._lock:
            self._runtime.forced.clear()
            return self._forced_json()

    def _forced_json(self) -> list[dict[str, Any]]:
        return [
            {"fault": f.kind, "operation": f.operation, "count": f.remaining} for f in self._runtime.forced
        ]

    def usage_plans_json(self) -> dict[str, Any]:
        with self._lock:
            return {s.seller_id: self.throttler.plans_json(s.seller_id) for s in self.scenario.sellers}

    def set_usage_plan(self, raw: Any) -> dict[str, Any]:
        """``PUT /_sim/usage-plans`` ``{"seller_id", "operation", "rate", "burst"}`` (rate and burst
        omitted: back to the default): Amazon's dynamic usage plans, changed while running."""
        if not isinstance(raw, dict) or not isinstance(raw.get("operation"), str):
            raise ControlError('give {"seller_id": ID?, "operation": NAME, "rate": R, "burst": B}')
        operation = raw["operation"]
        if operation not in default_plans():
            raise ControlError(f"no usage plan for operation {operation}")
        seller = self._control_seller(raw.get("seller_id"))
        plan: Plan | None = None
        if raw.get("rate") is not None or raw.get("burst") is not None:
            try:
                override = UsagePlanOverride.model_validate(
                    {"rate": raw.get("rate"), "burst": raw.get("burst")}
                )
            except ValidationError as exc:
                raise ControlError(str(exc)) from exc
            plan = Plan(override.rate, override.burst)
        with self._lock:
            applied = self.throttler.set_plan(seller.seller_id, operation, plan)
            return {
                "seller_id": seller.seller_id,
                "operation": operation,
                "rate": applied.rate,
                "burst": applied.burst,
                "header": applied.header,
            }

    def set_faults(self, raw: Any) -> dict[str, float]:
        try:
            faults = Faults.model_validate(raw or {})
        except ValidationError as exc:
            raise ControlError(str(exc)) from exc
        with self._lock:
            self._runtime.faults = faults
            return faults.model_dump()

    def user_agents_json(self) -> dict[str, str]:
        """The User-Agent header of the last request of each operation ("" when it had none):
        Amazon asks every integrator for ``AppName/AppVersion (Language=...; Platform=...)``."""
        with self._lock:
            return dict(self._user_agents)

    def counters_json(self) -> dict[str, Any]:
        with self._lock:
            return {
                "sellers": self.counters.as_json(),
                "operations": self.counters.as_rows(),
                "refusals": {seller: dict(rules) for seller, rules in self.refusals.items()},
                "shipments": {seller: dict(counts) for seller, counts in self.shipments.items()},
            }

    def reset_counters(self) -> None:
        with self._lock:
            self.counters.reset()
            self.refusals.clear()
            self.shipments.clear()

    def reset_buckets(self) -> None:
        with self._lock:
            self.throttler.reset()

    def clock_json(self) -> dict[str, Any]:
        with self._lock:
            now = self.now()
            return {
                "now": epoch_to_iso(now),
                "now_epoch": now,
                "start": epoch_to_iso(self.clock.start),
                "time_scale": self.clock.time_scale,
                "orders": len(self.book.orders),
                "orders_upcoming": self.book.upcoming,
            }

    def catalogue(self, seller_id: str) -> tuple[Product, ...]:
        """The SKUs the seller's back-office knows (orders' UNMAPPED- items are not among them)."""
        return self.catalogues[seller_id]

    def catalogue_json(self) -> dict[str, Any]:
        return {
            seller_id: [
                {"sku": p.sku, "asin": p.asin, "ean": p.ean, "title": p.title, "price": str(p.price)}
                for p in products
            ]
            for seller_id, products in self.catalogues.items()
        }

    def scenario_json(self) -> dict[str, Any]:
        """The scenario without the LWA secrets."""
        data = self.scenario.model_dump(mode="json")
        for seller in data["sellers"]:
            seller["applications"] = [{"client_id": a["client_id"]} for a in seller["applications"]]
        return data


@dataclass(frozen=True)
class _Call:
    now: float
    path: str
    path_params: dict[str, str]
    query: dict[str, str]
    body: Any
    pii: Pii
    base_url: str = ""


def _v0_own_data(path: str) -> frozenset[str] | None:
    """None for the v0 operations whose RDT names its data elements (getOrders, getOrder,
    getOrderItems); else the data the path's own operation returns (empty when none)."""
    parts = path.strip("/").split("/")
    if parts[:3] != ["orders", "v0", "orders"]:
        return frozenset()
    rest = tuple(parts[4:])
    if rest in ((), ("orderItems",)):
        return None
    return _V0_OWN_DATA.get(rest, frozenset())


def _authorize(principal: Principal, op: Operation) -> None:
    """Grantless operations take only a grantless token of their scope; the others act for a seller
    and take only a seller's token (403 otherwise, as Amazon's front door answers)."""
    if op.scope is not None and op.scope not in principal.scopes:
        raise SpApiError(
            403,
            "Unauthorized",
            ACCESS_DENIED_MESSAGE,
            f"{op.operation_id} is a grantless operation: it takes an access token of the LWA "
            f"client_credentials grant with scope {op.scope}.",
        )
    if op.scope is None and principal.seller_id == GRANTLESS:
        raise SpApiError(
            403,
            "Unauthorized",
            ACCESS_DENIED_MESSAGE,
            f"{op.operation_id} acts for a selling partner: it takes an access token of the refresh_token "
            "grant, not a grantless one.",
        )


def _server_error(status: int) -> SpApiError:
    if status == 500:
        return SpApiError(500, "InternalFailure", "We encountered an internal error. Please try again.", "")
    return SpApiError(503, "ServiceUnavailable", "Service temporarily unavailable. Please try again.", "")


def _lwa_error(error: str, description: str) -> dict[str, str]:
    return {"error_description": description, "error": error}
