"""Amazon's official SP-API models (Apache-2.0, see models/LICENSE), shipped with ordersync, and the
default usage plans (token buckets) read from them.

Each operation's description in the models carries its usage plan as a table row
``| Rate (requests per second) | Burst |``; that is the single source of ordersync's default plans,
used by the rate limiter and the simulator alike.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

#: The model files, by API.
MODEL_FILES: dict[str, str] = {
    "orders-v0": "ordersV0.json",
    "orders-2026-01-01": "orders_2026-01-01.json",
    "feeds": "feeds_2021-06-30.json",
    "tokens": "tokens_2021-03-01.json",
    "listings": "listingsItems_2021-08-01.json",
    "notifications": "notifications.json",
    "reports": "reports_2021-06-30.json",
    "easyship": "easyShip_2022-03-23.json",
    "catalog-items": "catalogItems_2022-04-01.json",
    "sellers": "sellers.json",
}

#: The JSON schemas of the notifications' messages, by notification type.
NOTIFICATION_SCHEMA_FILES: dict[str, str] = {
    "ORDER_CHANGE": "OrderChangeNotification.json",
    "FEED_PROCESSING_FINISHED": "FeedProcessingFinishedNotification.json",
}

_PLAN_ROW = re.compile(r"\|\s*([0-9]*\.?[0-9]+)\s*\|\s*([0-9]+)\s*\|")


@dataclass(frozen=True)
class OperationPlan:
    """One operation's default token bucket: ``burst`` tokens refilled at ``rate`` per second."""

    api: str
    operation: str
    method: str
    path: str
    rate: float
    burst: int


def model_text(file_name: str) -> str:
    return resources.files("ordersync.amazon").joinpath("models", file_name).read_text()


@cache
def load_model(api: str) -> dict[str, Any]:
    model: dict[str, Any] = json.loads(model_text(MODEL_FILES[api]))
    return model


@cache
def load_notification_schema(notification_type: str) -> dict[str, Any]:
    """The JSON schema (draft 7) of one notification type's messages, e.g. ``ORDER_CHANGE``."""
    schema: dict[str, Any] = json.loads(model_text(NOTIFICATION_SCHEMA_FILES[notification_type]))
    return schema


@cache
def operation_plans() -> tuple[OperationPlan, ...]:
    """Every operation of every shipped model with the usage plan its description states."""
    plans: list[OperationPlan] = []
    for api in MODEL_FILES:
        model = load_model(api)
        for path, methods in model.get("paths", {}).items():
            for method, op in methods.items():
                if not isinstance(op, dict) or "operationId" not in op:
                    continue
                match = _PLAN_ROW.search(op.get("description", ""))
                if match is None:
                    continue
                plans.append(
                    OperationPlan(
                        api=api,
                        operation=op["operationId"],
                        method=method.upper(),
                        path=path,
                        rate=float(match.group(1)),
                        burst=int(match.group(2)),
                    )
                )
    return tuple(plans)


@cache
def default_plans() -> dict[str, tuple[float, int]]:
    """operationId -> (rate per second, burst).

    Operation ids are unique across the APIs ordersync uses except ``getOrder``, which v0 and
    2026-01-01 both define with the same plan; ordersync counts both against one bucket, which can
    only under-use Amazon's quota, never exceed it.
    """
    plans: dict[str, tuple[float, int]] = {}
    for plan in operation_plans():
        known = plans.get(plan.operation)
        value = (plan.rate, plan.burst)
        plans[plan.operation] = value if known is None else min(known, value)
    return plans
