"""``ordersync amazon``: commands against the configured Amazon (real, or the simulator).

``ordersync amazon check --channel NAME`` makes one cheap call with the channel's credentials and
reports what it proves: LWA accepts the credentials, the region's endpoint answers, the seller takes
part in the channel's marketplaces (Amazon refuses foreign ones with 400 InvalidInput), and the rate
limits Amazon reports (``x-amzn-RateLimit-Limit``) next to the plans ordersync enforces.

The call is the first page of the channel's own order listing (getOrders for v0, searchOrders for
2026-01-01), one order, created in the last hour: it needs exactly the access the pipeline needs.
It takes one token from the shared Redis rate limiter like every stage, waiting for one if the
stages use them all (``--local-quota``: sent at once without Redis, outside the shared budget; a
429 is then possible and reported as such).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx

from ordersync.amazon.client import SpApiClient, amazon_time
from ordersync.channels import Channel
from ordersync.errors import AmazonApiError, PipelineError
from ordersync.ratelimit import RateLimiter
from ordersync.ratelimit.limiter import BucketStatus, Grant
from ordersync.ratelimit.plans import PlanBook
from ordersync.settings import Settings

#: The operations whose plans the report shows (what the stages call).
REPORTED_OPERATIONS = (
    "getOrders",
    "getOrderItems",
    "searchOrders",
    "getOrder",
    "confirmShipment",
    "createFeed",
    "getFeed",
    "createFeedDocument",
    "getFeedDocument",
)


@dataclass
class CheckReport:
    channel: str
    seller_id: str
    region: str
    endpoint: str
    lwa_endpoint: str
    orders_api: str
    marketplaces: list[str]
    operation: str
    ok: bool = False
    auth: str = "not tried"
    status: int | None = None
    error_kind: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    request_id: str | None = None
    orders_seen: int | None = None
    rate_limits_learned: dict[str, str] = field(default_factory=dict)
    configured_plans: dict[str, dict[str, float]] = field(default_factory=dict)

    def lines(self) -> list[str]:
        who = f"{self.channel} (seller {self.seller_id}, region {self.region}, orders API {self.orders_api})"
        if self.ok:
            outcome = f"HTTP {self.status}, {self.orders_seen} order(s) on the first page"
        else:
            answer = f"{self.status or 'no response'} {self.error_code}: {self.error_message}"
            outcome = f"{self.error_kind} ({answer})"
        markets = (
            "accepted" if self.ok else "refused" if self.error_code == "InvalidInput" else "not confirmed"
        )
        out = [
            f"channel      {who}",
            f"endpoint     {self.endpoint}",
            f"LWA          {self.lwa_endpoint}: {self.auth}",
            f"call         {self.operation}: {outcome}",
            f"marketplaces {', '.join(self.marketplaces)}: {markets}",
        ]
        if self.request_id:
            out.append(f"request id   {self.request_id}")
        learned = ", ".join(f"{op} {rate}/s" for op, rate in sorted(self.rate_limits_learned.items()))
        out.append(
            f"rate limits  learned from Amazon: {learned or 'none (no x-amzn-RateLimit-Limit header)'}"
        )
        for op, plan in self.configured_plans.items():
            out.append(f"             enforced {op}: {plan['rate']:g}/s, burst {plan['burst']:g}")
        out.append("result       " + ("OK" if self.ok else "FAILED"))
        return out


async def run_check(
    settings: Settings,
    channel: Channel,
    *,
    limiter: RateLimiter,
    plans: PlanBook,
    http: httpx.AsyncClient | None = None,
) -> CheckReport:
    """Make the one call and describe what happened (never raises for Amazon's answers)."""
    api = channel.orders_api
    operation = "getOrders" if api == "v0" else "searchOrders"
    report = CheckReport(
        channel=channel.name,
        seller_id=channel.seller_id,
        region=channel.region,
        endpoint=settings.amazon.endpoint_for(channel.region),
        lwa_endpoint=settings.amazon.lwa_endpoint,
        orders_api=api,
        marketplaces=list(channel.marketplaces),
        operation=operation,
        configured_plans={
            op: {"rate": rate, "burst": burst}
            for op in REPORTED_OPERATIONS
            for rate, burst in [plans.amazon_plan(op, channel.seller_id)]
        },
    )
    own_http = http is None
    http = http or httpx.AsyncClient(timeout=settings.amazon.request_timeout_s)
    try:
        client = SpApiClient(channel=channel, amazon=settings.amazon, limiter=limiter, http=http)
        try:
            await client.lwa.access_token()
            report.auth = "access token granted"
        except AmazonApiError as exc:
            report.auth = f"refused: {exc.code}: {exc.amazon_message}"
            _record_error(report, exc)
            return report
        since = amazon_time(datetime.now(UTC) - timedelta(hours=1))
        markets = ",".join(channel.marketplaces)
        try:
            if api == "v0":
                response = await client.call(
                    operation,
                    "GET",
                    "/orders/v0/orders",
                    params={"MarketplaceIds": markets, "CreatedAfter": since, "MaxResultsPerPage": "1"},
                )
                orders = (response.json().get("payload") or {}).get("Orders") or []
            else:
                response = await client.call(
                    operation,
                    "GET",
                    "/orders/2026-01-01/orders",
                    params={"marketplaceIds": markets, "createdAfter": since, "maxResultsPerPage": "1"},
                )
                orders = response.json().get("orders") or []
        except PipelineError as exc:
            _record_error(report, exc)
        else:
            report.ok = True
            report.status = response.status_code
            report.request_id = response.headers.get("x-amzn-RequestId")
            report.orders_seen = len(orders)
        report.rate_limits_learned = dict(client.last_rate_limits)
        return report
    finally:
        if own_http:
            await http.aclose()


def _record_error(report: CheckReport, exc: PipelineError) -> None:
    report.ok = False
    report.error_kind = exc.kind
    if isinstance(exc, AmazonApiError):
        report.status = exc.status
        report.error_code = exc.code
        report.error_message = exc.amazon_message
        report.request_id = exc.request_id
    else:
        report.error_code = type(exc).__name__
        report.error_message = str(exc)


class SingleCallLimiter:
    """Grants every request at once and learns nothing: for the one call of a check made outside
    the shared budget (``--local-quota``). A fresh limiter would start its buckets empty and make
    the check wait a full token interval (a minute for getOrders); Amazon answers 429 instead if
    its bucket is empty, and the check reports that."""

    def __init__(self, send_deadline_s: float, plans: PlanBook) -> None:
        self._send_deadline_s = send_deadline_s
        self.plans = plans

    async def acquire(
        self,
        operation: str,
        seller_id: str,
        *,
        lane: str = "default",
        timeout: float | None = None,  # noqa: ASYNC109 - the protocol's signature
        feed_type: str | None = None,
    ) -> Grant:
        return Grant(operation, seller_id, lane, time.monotonic() + self._send_deadline_s)

    async def observe_rate_limit(self, operation: str, seller_id: str, rate_per_s: float) -> None:
        return None

    async def on_throttled(self, operation: str, seller_id: str, *, feed_type: str | None = None) -> None:
        return None

    async def status(self, seller_id: str | None = None) -> list[BucketStatus]:
        return []


def check_limiter(settings: Settings, channel: Channel, local: bool) -> tuple[RateLimiter, PlanBook]:
    plans = PlanBook.from_channels([channel], time_scale=settings.amazon.time_scale)
    if local:
        return SingleCallLimiter(settings.ratelimit.send_deadline_s, plans), plans
    from ordersync.ratelimit.limiter import build_rate_limiter  # noqa: PLC0415 - needs Redis

    limiter = build_rate_limiter(settings, [channel])
    return limiter, limiter.plans
