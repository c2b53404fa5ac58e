"""Amazon's throttling, on the simulated clock, and the per-seller call counters.

One token bucket per (seller, application, API, operation): ``burst`` tokens, refilled at ``rate``
per simulated second, starting full; a request takes one token or is answered 429.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from ordersync.amazon.models import default_plans
from ordersync.simulator.feeds import LISTINGS_FEED_OPERATION, LISTINGS_FEED_PLAN
from ordersync.simulator.scenario import Scenario


@dataclass(frozen=True)
class Plan:
    rate: float
    burst: int

    @property
    def header(self) -> str:
        """``x-amzn-RateLimit-Limit``: Amazon's per-second rate, e.g. ``0.0167`` or ``2.0``."""
        return str(float(self.rate))


@dataclass
class TokenBucket:
    plan: Plan
    tokens: float
    updated: float

    def refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(float(self.plan.burst), self.tokens + (now - self.updated) * self.plan.rate)
            self.updated = now

    def take(self, now: float) -> bool:
        self.refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class Throttler:
    """Buckets keyed by (seller, application, api, operation), plans from the models and scenario."""

    def __init__(self, scenario: Scenario) -> None:
        self._defaults = {**default_plans(), LISTINGS_FEED_OPERATION: LISTINGS_FEED_PLAN}
        self._overrides = {
            seller.seller_id: {op: Plan(p.rate, p.burst) for op, p in seller.usage_plans.items()}
            for seller in scenario.sellers
        }
        self._buckets: dict[tuple[str, str, str, str], TokenBucket] = {}

    def plan(self, seller_id: str, operation: str) -> Plan:
        override = self._overrides.get(seller_id, {}).get(operation)
        if override is not None:
            return override
        rate, burst = self._defaults[operation]
        return Plan(rate, burst)

    def bucket(self, seller_id: str, application: str, api: str, operation: str, now: float) -> TokenBucket:
        key = (seller_id, application, api, operation)
        found = self._buckets.get(key)
        if found is None:
            plan = self.plan(seller_id, operation)
            found = self._buckets[key] = TokenBucket(plan, float(plan.burst), now)
        return found

    def take(self, seller_id: str, application: str, api: str, operation: str, now: float) -> bool:
        return self.bucket(seller_id, application, api, operation, now).take(now)

    def take_all(self, keys: list[tuple[str, str, str, str, float]]) -> bool:
        """One token from each bucket, or none at all when any is empty."""
        buckets = [(self.bucket(*key), key[4]) for key in keys]
        for bucket, now in buckets:
            bucket.refill(now)
        if any(bucket.tokens < 1.0 for bucket, _ in buckets):
            return False
        for bucket, _ in buckets:
            bucket.tokens -= 1.0
        return True

    def set_plan(self, seller_id: str, operation: str, plan: Plan | None) -> Plan:
        """Change one seller's plan for one operation now (Amazon's dynamic usage plans); ``None``
        restores the default. The seller's buckets of that operation start again, full."""
        if plan is None:
            self._overrides.get(seller_id, {}).pop(operation, None)
        else:
            self._overrides.setdefault(seller_id, {})[operation] = plan
        for key in [k for k in self._buckets if k[0] == seller_id and k[3] == operation]:
            del self._buckets[key]
        return self.plan(seller_id, operation)

    def plans_json(self, seller_id: str) -> dict[str, dict[str, float]]:
        return {
            op: {"rate": plan.rate, "burst": plan.burst}
            for op, plan in sorted(self._overrides.get(seller_id, {}).items())
        }

    def reset(self) -> None:
        """Every bucket full again (they are recreated full on first use)."""
        self._buckets.clear()


@dataclass
class OperationCounter:
    calls: int = 0
    throttled: int = 0
    statuses: dict[int, int] = field(default_factory=lambda: defaultdict(int))

    def as_json(self) -> dict[str, Any]:
        errors = {str(s): n for s, n in sorted(self.statuses.items()) if s >= 400}
        return {
            "calls": self.calls,
            "throttled": self.throttled,
            "ok": sum(n for s, n in self.statuses.items() if s < 400),
            "errors": sum(errors.values()),
            "statuses": {str(s): n for s, n in sorted(self.statuses.items())},
            "errors_by_status": errors,
        }


class Counters:
    """Calls per seller and operation, by HTTP status. Requests without a valid access token count
    under the seller ``-``."""

    def __init__(self) -> None:
        self._counts: dict[str, dict[str, OperationCounter]] = defaultdict(
            lambda: defaultdict(OperationCounter)
        )

    def count(self, seller_id: str, operation: str, status: int) -> None:
        counter = self._counts[seller_id][operation]
        counter.calls += 1
        counter.statuses[status] += 1
        if status == 429:
            counter.throttled += 1

    def get(self, seller_id: str, operation: str) -> OperationCounter:
        return self._counts.get(seller_id, {}).get(operation) or OperationCounter()

    def as_json(self) -> dict[str, Any]:
        return {
            seller: {op: counter.as_json() for op, counter in sorted(ops.items())}
            for seller, ops in sorted(self._counts.items())
        }

    def as_rows(self) -> list[dict[str, Any]]:
        """The same counts as one row per (seller, operation)."""
        return [
            {"seller_id": seller, "operation": op, **counter.as_json()}
            for seller, ops in sorted(self._counts.items())
            for op, counter in sorted(ops.items())
        ]

    def reset(self) -> None:
        self._counts.clear()
