"""Helpers for tests that use the simulator: small scenarios, credentials, and validation of
responses against Amazon's models (``jsonschema``, a dev dependency, is imported only there)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from functools import cache
from typing import Any

from ordersync.amazon.models import load_model
from ordersync.simulator.scenario import Scenario
from ordersync.simulator.state import SimulatorState

#: A fixed simulated start, so tests read well-known timestamps.
TEST_START = datetime(2026, 1, 5, 9, 0, 0, tzinfo=UTC)
TEST_SELLER = "A1TESTSELLER"
TEST_CLIENT_ID = "amzn1.application-oa2-client.test"
TEST_CLIENT_SECRET = "test-client-secret"  # noqa: S105 - a fixture, not a secret
TEST_REFRESH_TOKEN = "Atzr|test-refresh-token"  # noqa: S105
TEST_APPLICATION = {
    "client_id": TEST_CLIENT_ID,
    "client_secret": TEST_CLIENT_SECRET,
    "refresh_token": TEST_REFRESH_TOKEN,
}


def tiny_scenario(
    *,
    orders: dict[str, Any] | None = None,
    seller: dict[str, Any] | None = None,
    extra_sellers: list[dict[str, Any]] | None = None,
    **top: Any,
) -> Scenario:
    """One US seller (``A1TESTSELLER``) with a few dozen orders over the past day; every part
    overridable: ``orders`` updates the order profile, ``seller`` the seller, ``top`` the scenario."""
    profile: dict[str, Any] = {
        "count": 40,
        "history_s": 86400,
        "arrival_window_s": 0,
        "pending_share": 0.0,
        "afn_share": 0.0,
        "cancel_share": 0.0,
        **(orders or {}),
    }
    base_seller: dict[str, Any] = {
        "seller_id": TEST_SELLER,
        "region": "na",
        "marketplaces": ["ATVPDKIKX0DER"],
        "applications": [TEST_APPLICATION],
        "catalogue_size": 10,
        "orders": profile,
        **(seller or {}),
    }
    raw: dict[str, Any] = {
        "name": "tiny",
        "seed": 3,
        "start": TEST_START,
        "time_scale": 0,
        "sellers": [base_seller, *(extra_sellers or [])],
        **top,
    }
    return Scenario.model_validate(raw)


def lwa_form(scenario: Scenario, seller_id: str | None = None, application: int = 0) -> dict[str, str]:
    """The refresh-token grant form of a seller's application."""
    seller = scenario.seller(seller_id) if seller_id else scenario.sellers[0]
    app = seller.applications[application]
    return {
        "grant_type": "refresh_token",
        "refresh_token": app.refresh_token,
        "client_id": app.client_id,
        "client_secret": app.client_secret,
    }


def access_token(state: SimulatorState, seller_id: str | None = None, application: int = 0) -> str:
    status, body = state.issue_access_token(lwa_form(state.scenario, seller_id, application))
    if status != 200:
        raise AssertionError(f"LWA refused the scenario's own credentials: {status} {body}")
    return str(body["access_token"])


@cache
def _strict_definitions(api: str) -> dict[str, Any]:
    """The model's definitions with undeclared properties forbidden, so extra fields fail too."""
    definitions: dict[str, Any] = copy.deepcopy(load_model(api)["definitions"])

    def close(schema: Any) -> None:
        if isinstance(schema, dict):
            if schema.get("type") == "object" and "properties" in schema:
                schema.setdefault("additionalProperties", False)
            for value in schema.values():
                close(value)
        elif isinstance(schema, list):
            for value in schema:
                close(value)

    close(definitions)
    return definitions


def validate_against_model(api: str, definition: str, instance: Any, *, strict: bool = True) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``instance`` is a valid ``definition`` of the
    model ``api`` (``orders-v0``, ``orders-2026-01-01``, ``tokens``). ``strict`` also refuses
    properties the model does not declare."""
    import jsonschema  # noqa: PLC0415 - a dev dependency, needed only by tests

    definitions = _strict_definitions(api) if strict else load_model(api)["definitions"]
    schema = {"$ref": f"#/definitions/{definition}", "definitions": definitions}
    jsonschema.Draft4Validator(schema).validate(instance)


def model_operation(api: str, operation_id: str) -> dict[str, Any]:
    """The operation object of ``operation_id`` in the model ``api``."""
    for methods in load_model(api)["paths"].values():
        for op in methods.values():
            if isinstance(op, dict) and op.get("operationId") == operation_id:
                return op
    raise KeyError(f"{operation_id} is not in the {api} model")


def validate_response(
    api: str, operation_id: str, status: int, body: Any, headers: dict[str, str] | None = None
) -> None:
    """Raise unless ``status`` is a response the model lists for the operation, ``body`` validates
    (strictly) against that response's schema (or is empty where the model gives none), and the
    headers are those the model documents: ``x-amzn-RequestId`` always, ``x-amzn-RateLimit-Limit``
    exactly on the statuses that list it."""
    import jsonschema  # noqa: PLC0415 - a dev dependency, needed only by tests

    response = model_operation(api, operation_id)["responses"].get(str(status))
    if response is None:
        raise AssertionError(f"{api} {operation_id} does not document status {status}")
    schema = response.get("schema")
    if schema is None:
        if body not in (None, b"", ""):
            raise AssertionError(f"{operation_id} {status}: the model gives no body, got {body!r}")
    else:
        full = {"allOf": [schema], "definitions": _strict_definitions(api)}
        jsonschema.Draft4Validator(full).validate(body)
    if headers is not None:
        lowered = {k.lower() for k in headers}
        documented = {k.lower() for k in response.get("headers") or {}}
        if "x-amzn-requestid" not in lowered:
            raise AssertionError(f"{operation_id} {status}: no x-amzn-RequestId")
        has_limit = "x-amzn-ratelimit-limit" in lowered
        if has_limit != ("x-amzn-ratelimit-limit" in documented):
            raise AssertionError(
                f"{operation_id} {status}: x-amzn-RateLimit-Limit {'present' if has_limit else 'missing'}"
                " against the model"
            )
