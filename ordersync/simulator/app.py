"""The simulator over HTTP: Amazon's paths (LWA, Seller Central's consent page, Orders v0 and 2026-01-01,
Tokens, Feeds, Notifications, Reports, Sellers), the presigned document URLs (``/_sim/s3/``) and the
unauthenticated control and truth API under ``/_sim/``.

Handlers only translate HTTP to :class:`~ordersync.simulator.state.SimulatorState` calls and back,
plus the faults only HTTP can show: slow answers, and connections closed without an answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ordersync.simulator.consent import CONSENT_PATH, ConsentError, consent_page, error_page
from ordersync.simulator.state import SimResponse, SimulatorState
from ordersync.simulator.validation import ControlError

#: Stands for a body that is not JSON; operations answer it with 400 InvalidInput.
UNPARSABLE = object()


def _first_values(request: Request) -> dict[str, str]:
    """The first value of each query parameter: Amazon reads a repeated key that way
    (saleweaver/python-amazon-sp-api#164)."""
    query: dict[str, str] = {}
    for key, value in request.query_params.multi_items():
        query.setdefault(key, value)
    return query


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return UNPARSABLE


class SimulatedDrop(Exception):
    """Raised after the response started, so that the server closes the connection mid-answer."""


class _DropFilter(logging.Filter):
    """Keeps the server's error log free of the drops the simulator makes on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        while exc is not None:
            if isinstance(exc, SimulatedDrop):
                return False
            exc = exc.__cause__ or exc.__context__
        return True


logging.getLogger("uvicorn.error").addFilter(_DropFilter())


class DroppedResponse(Response):
    """Starts a response with a body promised, then breaks the connection: the client sees no answer."""

    def __init__(self) -> None:
        super().__init__(status_code=200, headers={"content-length": "1024"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        raise SimulatedDrop("connection dropped by the simulator")


async def _respond(result: SimResponse, *, content_type: str | None = None) -> Response:
    if result.delay_s > 0:
        await asyncio.sleep(result.delay_s)
    if result.drop:
        return DroppedResponse()
    if result.body is None:
        return Response(status_code=result.status, headers=result.headers)
    if isinstance(result.body, bytes):
        return Response(
            result.body,
            status_code=result.status,
            headers=result.headers,
            media_type=content_type or "application/xml",
        )
    return JSONResponse(result.body, status_code=result.status, headers=result.headers)


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _sp_api(operation: str, *, with_body: bool = False) -> Any:
    async def endpoint(request: Request) -> Response:
        state: SimulatorState = request.app.state.sim
        body = await _json_body(request) if with_body else None
        result = state.call(
            operation,
            access_token=request.headers.get("x-amz-access-token"),
            path=request.url.path,
            path_params={k: str(v) for k, v in request.path_params.items()},
            query=_first_values(request),
            body=body,
            base_url=_base_url(request),
            user_agent=request.headers.get("user-agent"),
        )
        return await _respond(result)

    endpoint.__name__ = f"sp_api_{operation}"
    return endpoint


async def lwa_token(request: Request) -> Response:
    state: SimulatorState = request.app.state.sim
    raw = await request.body()
    form: dict[str, str] = {}
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            parsed = json.loads(raw or b"{}")
        except ValueError:
            parsed = {}
        if isinstance(parsed, dict):
            form = {str(k): str(v) for k, v in parsed.items()}
    else:
        form = dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
    status, body = state.issue_access_token(form, user_agent=request.headers.get("user-agent"))
    headers = {"cache-control": "no-store", "x-amzn-RequestId": str(uuid.uuid4())}
    return JSONResponse(body, status_code=status, headers=headers)


async def seller_central_consent(request: Request) -> Response:
    """Seller Central's consent page (GET) and the seller's confirmation (POST: 302 to the redirect
    URI with the authorization code), :mod:`ordersync.simulator.consent`."""
    state: SimulatorState = request.app.state.sim
    headers = {"cache-control": "no-store"}
    if request.method == "GET":
        consent = state.consent(_first_values(request))
        if isinstance(consent, ConsentError):
            return HTMLResponse(error_page(consent), status_code=consent.status, headers=headers)
        return HTMLResponse(consent_page(consent), headers=headers)
    raw = await request.body()
    form: dict[str, str] = {}
    for key, value in parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True):
        form.setdefault(key, value)
    outcome = state.confirm_consent(form)
    if isinstance(outcome, ConsentError):
        return HTMLResponse(error_page(outcome), status_code=outcome.status, headers=headers)
    return RedirectResponse(outcome, status_code=302, headers=headers)


# --- control and truth API ------------------------------------------------------------------------------


def _control_error(exc: ControlError) -> Response:
    return JSONResponse({"error": str(exc)}, status_code=exc.status)


async def sim_orders(request: Request) -> Response:
    state: SimulatorState = request.app.state.sim
    if request.method == "POST":
        try:
            created = state.add_order(await _json_body(request))
        except ControlError as exc:
            return _control_error(exc)
        return JSONResponse(created, status_code=201)
    seller_id = request.query_params.get("seller_id")
    status = request.query_params.get("status")
    orders = state.truth_orders(seller_id, status)
    return JSONResponse({"now": state.clock_json()["now"], "count": len(orders), "orders": orders})


async def sim_order(request: Request) -> Response:
    state: SimulatorState = request.app.state.sim
    try:
        return JSONResponse(state.truth_order(request.path_params["order_id"]))
    except ControlError as exc:
        return _control_error(exc)


async def sim_order_status(request: Request) -> Response:
    state: SimulatorState = request.app.state.sim
    body = await _json_body(request)
    status = body.get("status") if isinstance(body, dict) else None
    try:
        return JSONResponse(state.set_order_status(request.path_params["order_id"], str(status)))
    except ControlError as exc:
        return _control_error(exc)


async def sim_amazon_shipment(request: Request) -> Response:
    state: SimulatorState = request.app.state.sim
    try:
        return JSONResponse(state.ship_by_amazon(request.path_params["order_id"], await _json_body(request)))
    except ControlError as exc:
        return _control_error(exc)


async def sim_notifications(request: Request) -> Response:
    state: SimulatorState = request.app.state.sim
    if request.method in ("PUT", "POST"):
        try:
            return JSONResponse(state.set_notification_profile(await _json_body(request)))
        except ControlError as exc:
            return _control_error(exc)
    q = request.query_params
    return JSONResponse(state.truth_notifications(q.get("seller_id"), q.get("order_id"), q.get("status")))


async def sim_counters(request: Request) -> Response:
    state: SimulatorState = request.app.state.sim
    if request.method == "DELETE":
        state.reset_counters()
    return JSONResponse(state.counters_json())


async def sim_clock(request: Request) -> Response:
    state: SimulatorState = request.app.state.sim
    return JSONResponse(state.clock_json())


async def sim_clock_advance(request: Request) -> Response:
    state: SimulatorState = request.app.state.sim
    body = await _json_body(request)
    seconds = body.get("seconds") if isinstance(body, dict) else None
    if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
        return JSONResponse({"error": 'give {"seconds": N} with N >= 0'}, status_code=400)
    state.advance_clock(float(seconds))
    return JSONResponse(state.clock_json())


async def sim_faults(request: Request) -> Response:
    state: SimulatorState = request.app.state.sim
    try:
        return JSONResponse(state.set_faults(await _json_body(request)))
    except ControlError as exc:
        return _control_error(exc)


async def sim_user_agents(request: Request) -> Response:
    state: SimulatorState = request.app.state.sim
    return JSONResponse(state.user_agents_json())


async def sim_catalogue(request: Request) -> Response:
    state: SimulatorState = request.app.state.sim
    return JSONResponse(state.catalogue_json())


async def sim_scenario(request: Request) -> Response:
    state: SimulatorState = request.app.state.sim
    return JSONResponse(state.scenario_json())


async def sim_revoke_tokens(request: Request) -> Response:
    state: SimulatorState = request.app.state.sim
    return JSONResponse({"revoked": state.revoke_access_tokens()})


async def sim_reset_buckets(request: Request) -> Response:
    state: SimulatorState = request.app.state.sim
    state.reset_buckets()
    return Response(status_code=204)


async def s3_document(request: Request) -> Response:
    """The presigned URLs of feed and report documents: PUT uploads, GET downloads (S3's behaviour and
    errors)."""
    state: SimulatorState = request.app.state.sim
    document_id = request.path_params["document_id"]
    query = _first_values(request)
    if request.method == "PUT":
        result = state.upload_document(
            document_id, query, request.headers.get("content-type"), await request.body()
        )
        return await _respond(result)
    result, content_type = state.download_document(document_id, query)
    return await _respond(result, content_type=content_type)


async def sim_feeds(request: Request) -> Response:
    state: SimulatorState = request.app.state.sim
    feeds = state.truth_feeds(request.query_params.get("seller_id"), request.query_params.get("feed_type"))
    return JSONResponse({"count": len(feeds), "feeds": feeds})


async def sim_easy_ship_packages(request: Request) -> Response:
    state: SimulatorState = request.app.state.sim
    packages = state.truth_easy_ship(request.query_params.get("seller_id"))
    return JSONResponse({"count": len(packages), "packages": packages})


async def sim_feed(request: Request) -> Response:
    state: SimulatorState = request.app.state.sim
    try:
        return JSONResponse(state.truth_feed(request.path_params["feed_id"]))
    except ControlError as exc:
        return _control_error(exc)


async def sim_reports(request: Request) -> Response:
    state: SimulatorState = request.app.state.sim
    if request.method in ("PUT", "POST"):
        try:
            return JSONResponse({"profile": state.set_report_profile(await _json_body(request))})
        except ControlError as exc:
            return _control_error(exc)
    q = request.query_params
    reports = state.truth_reports(q.get("seller_id"), q.get("report_type"))
    profile = state.reports.profile.model_dump(mode="json")
    return JSONResponse({"profile": profile, "count": len(reports), "reports": reports})


async def sim_report(request: Request) -> Response:
    state: SimulatorState = request.app.state.sim
    try:
        return JSONResponse(state.truth_report(request.path_params["report_id"]))
    except ControlError as exc:
        return _control_error(exc)


async def sim_listings(request: Request) -> Response:
    state: SimulatorState = request.app.state.sim
    return JSONResponse(state.truth_listings(request.query_params.get("seller_id")))


async def sim_forced_faults(request: Request) -> Response:
    state: SimulatorState = request.app.state.sim
    if request.method == "DELETE":
        return JSONResponse({"forced": state.clear_forced_faults()})
    try:
        return JSONResponse({"forced": state.force_fault(await _json_body(request))})
    except ControlError as exc:
        return _control_error(exc)


async def sim_usage_plans(request: Request) -> Response:
    state: SimulatorState = request.app.state.sim
    if request.method == "GET":
        return JSONResponse(state.usage_plans_json())
    try:
        return JSONResponse(state.set_usage_plan(await _json_body(request)))
    except ControlError as exc:
        return _control_error(exc)


async def not_found(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    code = "NotFound" if status == 404 else "InvalidInput" if status == 405 else "InternalFailure"
    return JSONResponse(
        {
            "errors": [
                {"code": code, "message": "Resource not found." if status == 404 else str(exc), "details": ""}
            ]
        },
        status_code=status,
        headers={"x-amzn-RequestId": str(uuid.uuid4())},
    )


def create_app(state: SimulatorState) -> Starlette:
    """The simulator's ASGI app over ``state``."""
    routes = [
        Route("/auth/o2/token", lwa_token, methods=["POST"]),
        Route(CONSENT_PATH, seller_central_consent, methods=["GET", "POST"]),
        Route(
            "/sellers/v1/marketplaceParticipations", _sp_api("getMarketplaceParticipations"), methods=["GET"]
        ),
        Route("/orders/v0/orders", _sp_api("getOrders"), methods=["GET"]),
        Route("/orders/v0/orders/{orderId}", _sp_api("getOrder"), methods=["GET"]),
        Route("/orders/v0/orders/{orderId}/orderItems", _sp_api("getOrderItems"), methods=["GET"]),
        Route(
            "/orders/v0/orders/{orderId}/shipmentConfirmation",
            _sp_api("confirmShipment", with_body=True),
            methods=["POST"],
        ),
        Route("/orders/2026-01-01/orders", _sp_api("searchOrders"), methods=["GET"]),
        Route("/orders/2026-01-01/orders/{orderId}", _sp_api("getOrder@2026-01-01"), methods=["GET"]),
        Route(
            "/tokens/2021-03-01/restrictedDataToken",
            _sp_api("createRestrictedDataToken", with_body=True),
            methods=["POST"],
        ),
        Route("/orders/v0/orders/{orderId}/address", _sp_api("getOrderAddress"), methods=["GET"]),
        Route(
            "/listings/2021-08-01/items/{sellerId}/{sku}",
            _sp_api("patchListingsItem", with_body=True),
            methods=["PATCH"],
        ),
        Route("/feeds/2021-06-30/documents", _sp_api("createFeedDocument", with_body=True), methods=["POST"]),
        Route("/feeds/2021-06-30/documents/{feedDocumentId}", _sp_api("getFeedDocument"), methods=["GET"]),
        Route("/feeds/2021-06-30/feeds", _sp_api("getFeeds"), methods=["GET"]),
        Route("/feeds/2021-06-30/feeds", _sp_api("createFeed", with_body=True), methods=["POST"]),
        Route("/feeds/2021-06-30/feeds/{feedId}", _sp_api("getFeed"), methods=["GET"]),
        Route("/feeds/2021-06-30/feeds/{feedId}", _sp_api("cancelFeed"), methods=["DELETE"]),
        Route(
            "/notifications/v1/destinations",
            _sp_api("createDestination", with_body=True),
            methods=["POST"],
        ),
        Route("/notifications/v1/destinations", _sp_api("getDestinations"), methods=["GET"]),
        Route("/notifications/v1/destinations/{destinationId}", _sp_api("getDestination"), methods=["GET"]),
        Route(
            "/notifications/v1/destinations/{destinationId}", _sp_api("deleteDestination"), methods=["DELETE"]
        ),
        Route(
            "/notifications/v1/subscriptions/{notificationType}",
            _sp_api("createSubscription", with_body=True),
            methods=["POST"],
        ),
        Route(
            "/notifications/v1/subscriptions/{notificationType}", _sp_api("getSubscription"), methods=["GET"]
        ),
        Route(
            "/notifications/v1/subscriptions/{notificationType}/{subscriptionId}",
            _sp_api("getSubscriptionById"),
            methods=["GET"],
        ),
        Route(
            "/notifications/v1/subscriptions/{notificationType}/{subscriptionId}",
            _sp_api("deleteSubscriptionById"),
            methods=["DELETE"],
        ),
        Route("/reports/2021-06-30/reports", _sp_api("getReports"), methods=["GET"]),
        Route("/reports/2021-06-30/reports", _sp_api("createReport", with_body=True), methods=["POST"]),
        Route("/reports/2021-06-30/reports/{reportId}", _sp_api("getReport"), methods=["GET"]),
        Route("/reports/2021-06-30/reports/{reportId}", _sp_api("cancelReport"), methods=["DELETE"]),
        Route(
            "/reports/2021-06-30/documents/{reportDocumentId}", _sp_api("getReportDocument"), methods=["GET"]
        ),
        Route(
            "/easyShip/2022-03-23/timeSlot", _sp_api("listHandoverSlots", with_body=True), methods=["POST"]
        ),
        Route("/easyShip/2022-03-23/package", _sp_api("getScheduledPackage"), methods=["GET"]),
        Route(
            "/easyShip/2022-03-23/package",
            _sp_api("createScheduledPackage", with_body=True),
            methods=["POST"],
        ),
        Route(
            "/easyShip/2022-03-23/package",
            _sp_api("updateScheduledPackages", with_body=True),
            methods=["PATCH"],
        ),
        Route(
            "/easyShip/2022-03-23/packages/bulk",
            _sp_api("createScheduledPackageBulk", with_body=True),
            methods=["POST"],
        ),
        Route("/catalog/2022-04-01/items", _sp_api("searchCatalogItems"), methods=["GET"]),
        Route("/catalog/2022-04-01/items/{asin}", _sp_api("getCatalogItem"), methods=["GET"]),
        Route("/_sim/s3/{document_id}", s3_document, methods=["GET", "PUT"]),
        Route("/_sim/reports", sim_reports, methods=["GET", "PUT", "POST"]),
        Route("/_sim/reports/{report_id}", sim_report, methods=["GET"]),
        Route("/_sim/feeds", sim_feeds, methods=["GET"]),
        Route("/_sim/easyship/packages", sim_easy_ship_packages, methods=["GET"]),
        Route("/_sim/feeds/{feed_id}", sim_feed, methods=["GET"]),
        Route("/_sim/listings", sim_listings, methods=["GET"]),
        Route("/_sim/notifications", sim_notifications, methods=["GET", "PUT", "POST"]),
        Route("/_sim/faults/next", sim_forced_faults, methods=["POST", "DELETE"]),
        Route("/_sim/usage-plans", sim_usage_plans, methods=["GET", "PUT", "POST"]),
        Route("/_sim/orders", sim_orders, methods=["GET", "POST"]),
        Route("/_sim/orders/{order_id}", sim_order, methods=["GET"]),
        Route("/_sim/orders/{order_id}/status", sim_order_status, methods=["POST"]),
        Route("/_sim/orders/{order_id}/amazon-shipment", sim_amazon_shipment, methods=["POST"]),
        Route("/_sim/counters", sim_counters, methods=["GET", "DELETE"]),
        Route("/_sim/clock", sim_clock, methods=["GET"]),
        Route("/_sim/clock/advance", sim_clock_advance, methods=["POST"]),
        Route("/_sim/faults", sim_faults, methods=["PUT", "POST"]),
        Route("/_sim/catalogue", sim_catalogue, methods=["GET"]),
        Route("/_sim/user-agents", sim_user_agents, methods=["GET"]),
        Route("/_sim/scenario", sim_scenario, methods=["GET"]),
        Route("/_sim/tokens/revoke", sim_revoke_tokens, methods=["POST"]),
        Route("/_sim/buckets/reset", sim_reset_buckets, methods=["POST"]),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: not_found})
    app.state.sim = state
    return app
