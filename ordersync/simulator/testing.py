"""Helpers for tests that use the simulator: small scenarios, credentials, and validation of
responses against Amazon's models (``jsonschema``, a dev dependency, is imported only there)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from functools import cache
from typing import Any

from ordersync.amazon.models import load_model, load_notification_schema
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


def _close(schema: Any, definitions: dict[str, Any], *, part: bool = False) -> None:
    """Forbid undeclared properties in ``schema`` and below. An ``allOf`` is closed over the union of
    its parts' properties, its parts left open (each holds only some of the properties); ``part``: the
    schema is such a part."""
    if isinstance(schema, dict):
        members = schema.get("allOf")
        if isinstance(members, list):
            names: dict[str, Any] = {}
            for member in members:
                ref = member.get("$ref", "") if isinstance(member, dict) else ""
                resolved = definitions.get(ref.rsplit("/", 1)[-1], {}) if ref else member
                names.update({key: {} for key in (resolved or {}).get("properties", {})})
            schema["properties"] = {**names, **schema.get("properties", {})}
            schema.setdefault("additionalProperties", False)
        elif schema.get("type") == "object" and "properties" in schema and not part:
            schema.setdefault("additionalProperties", False)
        for key, value in schema.items():
            if key == "allOf" and isinstance(value, list):
                for member in value:
                    _close(member, definitions, part=True)
            elif key != "properties" or not isinstance(value, dict):
                _close(value, definitions)
            else:
                for sub in value.values():
                    _close(sub, definitions)
    elif isinstance(schema, list):
        for value in schema:
            _close(value, definitions)


@cache
def _strict_definitions(api: str) -> dict[str, Any]:
    """The model's definitions with undeclared properties forbidden, so extra fields fail too."""
    definitions: dict[str, Any] = copy.deepcopy(load_model(api)["definitions"])
    parts = {
        member["$ref"].rsplit("/", 1)[-1]
        for schema in definitions.values()
        for member in schema.get("allOf", [])
        if isinstance(member, dict) and "$ref" in member
    }
    for name, schema in definitions.items():
        _close(schema, definitions, part=name in parts)
    return definitions


@cache
def _strict_notification_schema(notification_type: str) -> dict[str, Any]:
    schema: dict[str, Any] = copy.deepcopy(load_notification_schema(notification_type))
    _close(schema, {})
    return schema


def validate_notification(notification_type: str, message: Any, *, strict: bool = True) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``message`` (parsed JSON) is a valid notification of
    ``notification_type`` (e.g. ``ORDER_CHANGE``) by Amazon's schema; ``strict`` also refuses
    properties the schema does not declare."""
    import jsonschema  # noqa: PLC0415 - a dev dependency, needed only by tests

    schema = (
        _strict_notification_schema(notification_type)
        if strict
        else load_notification_schema(notification_type)
    )
    jsonschema.Draft7Validator(schema).validate(message)


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


def many_sellers(count: int) -> Scenario:
    """``count`` sellers (each a channel) with one order each, visible once the clock moves on: the
    thousand-channel tests and bench."""
    orders = {"count": 1, "history_s": 3600}
    extra = [
        {
            "seller_id": f"A{n:06d}MANY",
            "region": "na",
            "marketplaces": ["ATVPDKIKX0DER"],
            "applications": [{**TEST_APPLICATION, "refresh_token": f"Atzr|many-{n}"}],
            "catalogue_size": 1,
            "orders": orders,
        }
        for n in range(1, count)
    ]
    return tiny_scenario(orders=orders, seller={"catalogue_size": 1}, extra_sellers=extra)
