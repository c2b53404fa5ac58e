"""The simulator's whole state and logic, without HTTP: scenario, clock, order book, LWA tokens,
token buckets, faults and counters.

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
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from ordersync.simulator import generate
from ordersync.simulator.clock import SimClock, epoch_to_iso, parse_iso
from ordersync.simulator.orders import (
    Item,
    Order,
    OrderBook,
    SimStatus,
    Snapshot,
    TransitionError,
)
from ordersync.simulator.paging import TokenCodec
from ordersync.simulator.render import (
    ALL_PII,
    STATUS_2026,
    Pii,
    order_2026,
    order_item_v0,
    order_truth,
    order_v0,
)
from ordersync.simulator.scenario import (
    MARKETPLACES,
    UNMAPPED_SKU_PREFIX,
    Faults,
    Product,
    Scenario,
    SellerScenario,
)
from ordersync.simulator.throttle import Counters, Throttler
from ordersync.simulator.validation import (
    ACCESS_DENIED_MESSAGE,
    QUOTA_EXCEEDED_MESSAGE,
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
_ORDER_ID = re.compile(r"^\d{3}-\d{7}-\d{7}$")
_STATUS_FROM_2026 = {v: k for k, v in STATUS_2026.items()}
_FULFILLED_BY = {"MERCHANT": "MFN", "AMAZON": "AFN"}


@dataclass(frozen=True)
class Operation:
    """One SP-API operation: the name it is counted under, its API and its usage-plan operation id."""

    key: str
    api: str
    operation_id: str
    method: str


OPERATIONS: dict[str, Operation] = {
    op.key: op
    for op in (
        Operation("getOrders", "orders-v0", "getOrders", "GET"),
        Operation("getOrder", "orders-v0", "getOrder", "GET"),
        Operation("getOrderItems", "orders-v0", "getOrderItems", "GET"),
        Operation("confirmShipment", "orders-v0", "confirmShipment", "POST"),
        Operation("searchOrders", "orders-2026-01-01", "searchOrders", "GET"),
        Operation("getOrder@2026-01-01", "orders-2026-01-01", "getOrder", "GET"),
        Operation("createRestrictedDataToken", "tokens", "createRestrictedDataToken", "POST"),
    )
}
#: Statuses whose responses carry ``x-amzn-RateLimit-Limit`` (the models' response headers).
RATE_LIMIT_HEADER_STATUSES = frozenset({200, 201, 202, 204, 400, 404})


@dataclass(frozen=True)
class SimResponse:
    status: int
    body: Any
    headers: dict[str, str]


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
        self.catalogues: dict[str, tuple[Product, ...]] = {
            s.seller_id: generate.catalogue(scenario, s) for s in scenario.sellers
        }
        self._taken_ids: set[str] = set()
        generate.populate(self.book, scenario, int(self.clock.start), self._taken_ids)
        self.book.advance(self.clock.now())
        self.throttler = Throttler(scenario)
        self.counters = Counters()
        self._runtime = _Runtime(faults=scenario.faults, pii_requires_rdt=scenario.pii_requires_rdt)
        self._tokens = TokenCodec()
        # Separate streams, so that e.g. fault draws do not shift lag draws.
        self._fault_rng = random.Random(f"{scenario.seed}/faults")
        self._lag_rng = random.Random(f"{scenario.seed}/lags")
        self._control_rng = random.Random(f"{scenario.seed}/control")
        self._handlers: dict[str, Callable[[Principal, _Call], tuple[int, Any]]] = {
            "getOrders": self._get_orders,
            "getOrder": self._get_order_v0,
            "getOrderItems": self._get_order_items,
            "confirmShipment": self._confirm_shipment,
            "searchOrders": self._search_orders,
            "getOrder@2026-01-01": self._get_order_2026,
            "createRestrictedDataToken": self._create_restricted_data_token,
        }

    # --- time ----------------------------------------------------------------------------------------

    def now(self) -> float:
        """Simulated now, with every change due by then applied."""
        with self._lock:
            now = self.clock.now()
            self.book.advance(now)
            return now

    def advance_clock(self, seconds: float) -> float:
        with self._lock:
            self.clock.advance(seconds)
            return self.now()

    # --- LWA ------------------------------------------------------------------------------------------

    def issue_access_token(self, form: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        """``POST /auth/o2/token`` (refresh-token grant): (status, body) as Login with Amazon answers."""
        with self._lock:
            status, body, seller = self._lwa(form)
            self.counters.count(seller, "lwaToken", status)
            return status, body

    def _lwa(self, form: Mapping[str, str]) -> tuple[int, dict[str, Any], str]:
        grant_type = form.get("grant_type")
        if not grant_type:
            return (
                400,
                _lwa_error("invalid_request", "The request is missing a required parameter : grant_type"),
                ANONYMOUS,
            )
        if grant_type != "refresh_token":
            message = "The authorization grant type is not supported by the authorization server"
            return 400, _lwa_error("unsupported_grant_type", message), ANONYMOUS
        client_id, client_secret = form.get("client_id", ""), form.get("client_secret", "")
        apps = [(s, a) for s in self.scenario.sellers for a in s.applications if a.client_id == client_id]
        if not apps or not secrets.compare_digest(apps[0][1].client_secret, client_secret):
            # Amazon answers 401 here (jlevers/selling-partner-api#578), not 400.
            return 401, _lwa_error("invalid_client", "Client authentication failed"), ANONYMOUS
        refresh_token = form.get("refresh_token")
        if not refresh_token:
            message = "The request is missing a required parameter : refresh_token"
            return 400, _lwa_error("invalid_request", message), ANONYMOUS
        for seller, app in apps:
            if secrets.compare_digest(app.refresh_token, refresh_token):
                token = "Atza|" + secrets.token_urlsafe(48)
                lifetime = self.scenario.access_token_lifetime_s
                principal = Principal(seller.seller_id, app.client_id)
                self._runtime.access_tokens[token] = _IssuedToken(principal, self._real_clock() + lifetime)
                body = {
                    "access_token": token,
                    "refresh_token": refresh_token,
                    "token_type": "bearer",
                    "expires_in": lifetime,
                }
                return 200, body, seller.seller_id
        message = "The request has an invalid grant parameter : refresh_token"
        return 400, _lwa_error("invalid_grant", message), ANONYMOUS

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

    def _pii(self, principal: Principal, method: str, path: str) -> Pii:
        if not self._runtime.pii_requires_rdt:
            return ALL_PII
        if principal.restricted is None:
            return Pii()
        if path.startswith("/orders/2026-01-01/"):
            return ALL_PII
        elements: set[str] = set()
        for resource in principal.restricted:
            if resource.matches(method, path):
                elements |= resource.data_elements
        return Pii(shipping_address="shippingAddress" in elements, buyer_info="buyerInfo" in elements)

    # --- the SP-API front door -------------------------------------------------------------------------

    def call(
        self,
        operation: str,
        *,
        access_token: str | None,
        path: str,
        path_params: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
        body: Any = None,
    ) -> SimResponse:
        """Run one SP-API request. ``query`` holds the first value of each parameter (as Amazon reads
        a repeated key); ``body`` is the parsed JSON body (anything else is refused as Amazon refuses it)."""
        op = OPERATIONS[operation]
        headers = {"x-amzn-RequestId": str(uuid.uuid4())}
        with self._lock:
            now = self.clock.now()
            self.book.advance(now)
            try:
                principal = self._authenticate(access_token, op.method, path)
            except SpApiError as exc:
                self.counters.count(ANONYMOUS, operation, exc.status)
                return SimResponse(
                    exc.status, exc.body(), {**headers, "x-amzn-ErrorType": "AccessDeniedException"}
                )
            seller = principal.seller_id
            plan = self.throttler.plan(seller, op.operation_id)
            if not self.throttler.take(seller, principal.application, op.api, op.operation_id, now):
                self.counters.count(seller, operation, 429)
                error = SpApiError(429, "QuotaExceeded", QUOTA_EXCEEDED_MESSAGE, "")
                return SimResponse(429, error.body(), headers)
            fault = self._draw_fault()
            if fault is not None:
                self.counters.count(seller, operation, fault.status)
                return SimResponse(fault.status, fault.body(), headers)
            call = _Call(
                now,
                path,
                dict(path_params or {}),
                dict(query or {}),
                body,
                self._pii(principal, op.method, path),
            )
            try:
                status, payload = self._handlers[operation](principal, call)
            except SpApiError as exc:
                status, payload = exc.status, exc.body()
            if status in RATE_LIMIT_HEADER_STATUSES:
                headers["x-amzn-RateLimit-Limit"] = plan.header
            self.counters.count(seller, operation, status)
            return SimResponse(status, payload, headers)

    def _draw_fault(self) -> SpApiError | None:
        faults = self._runtime.faults
        draw = self._fault_rng.random()
        if draw < faults.http_500:
            return SpApiError(
                500, "InternalFailure", "We encountered an internal error. Please try again.", ""
            )
        if draw < faults.http_500 + faults.http_503:
            return SpApiError(
                503, "ServiceUnavailable", "Service temporarily unavailable. Please try again.", ""
            )
        return None

    def _seller(self, principal: Principal) -> SellerScenario:
        return self.scenario.seller(principal.seller_id)

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
        self, kind: str, principal: Principal, token: str, now: float, *, expires: bool
    ) -> tuple[OrdersQuery, tuple[int, int, str]]:
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
        if snap.status == "Canceled":
            raise invalid_input(f"Order {order.order_id} is canceled.")
        if snap.status == "Pending":
            raise invalid_input(f"Order {order.order_id} is Pending: it cannot be shipped before payment.")
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
        if snap.status == "Shipped":
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
        complete = all(s == item.quantity for s, item in zip(shipped, order.items, strict=True))
        snapshot = Snapshot(
            "Shipped" if complete else "PartiallyShipped",
            tuple(shipped),
            (*snap.packages, request.package(int(call.now))),
            snap.cancel_reason,
        )
        self.book.change(
            order, snapshot, call.now, self._lag(), f"shipment {request.package_reference_id} confirmed"
        )
        return 204, None

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
        if token:
            query, resume = self._resume("searchOrders", principal, token, call.now, expires=True)
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
                tuple(_STATUS_FROM_2026[s] for s in wanted),
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
                "searchOrders", principal.seller_id, {"q": query.to_json(), "r": list(more)}
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
            resources.append(RestrictedResource(method, path.split("?")[0], frozenset(elements)))
        token = "Atz.sprdt|" + secrets.token_urlsafe(48)
        rdt = Principal(principal.seller_id, principal.application, tuple(resources))
        ttl = min(RESTRICTED_DATA_TOKEN_TTL_S, self.scenario.access_token_lifetime_s)
        self._runtime.access_tokens[token] = _IssuedToken(rdt, self._real_clock() + ttl)
        return 200, {"restrictedDataToken": token, "expiresIn": ttl}

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
            )
            pending = spec.pending_s is not None
            initial = Snapshot("Pending" if pending else "Unshipped", (0,) * len(items))
            self.book.add_order(order, initial, self._lag())
            ready_at = int(now) + int(spec.pending_s or 0)
            if spec.pending_s is not None:
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
        """``POST /_sim/orders/{id}/status``: Canceled, Unshipped (payment authorised) or Shipped."""
        if status not in ("Canceled", "Unshipped", "Shipped"):
            raise ControlError("status must be Canceled, Unshipped or Shipped")
        with self._lock:
            now = self.now()
            order = self.book.orders.get(order_id)
            if order is None:
                raise ControlError(f"no order {order_id}", 404)
            target: SimStatus = (
                "Canceled" if status == "Canceled" else "Unshipped" if status == "Unshipped" else "Shipped"
            )
            try:
                self.book.set_status(order, target, now, self._lag())
            except TransitionError as exc:
                raise ControlError(str(exc)) from exc
            return order_truth(order)

    def set_faults(self, raw: Any) -> dict[str, float]:
        try:
            faults = Faults.model_validate(raw or {})
        except ValidationError as exc:
            raise ControlError(str(exc)) from exc
        with self._lock:
            self._runtime.faults = faults
            return faults.model_dump()

    def counters_json(self) -> dict[str, Any]:
        with self._lock:
            return {"sellers": self.counters.as_json(), "operations": self.counters.as_rows()}

    def reset_counters(self) -> None:
        with self._lock:
            self.counters.reset()

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


def _lwa_error(error: str, description: str) -> dict[str, str]:
    return {"error_description": description, "error": error}
