"""Log lines name the record being processed, and never carry a credential."""

from __future__ import annotations

import json
import logging

import pytest
from pydantic import SecretStr

from ordersync.amazon.operations import api_for_operation
from ordersync.errors import AmazonRejected
from ordersync.kafka.faust_app import make_app
from ordersync.logs import JsonFormatter, PlainFormatter, bind_log_context, log_context, redact
from ordersync.pipeline.stages import stage_worker
from ordersync.settings import Settings

pytestmark = pytest.mark.unit

REFRESH_TOKEN = "Atzr|IwEBIJ8xQk-secret-refresh"
ACCESS_TOKEN = "Atza|IwEBIA7z-secret-access"


def _record(message: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord("ordersync.test", logging.WARNING, __file__, 1, message, args, exc_info)


def test_json_lines_carry_the_record_being_processed() -> None:
    with log_context(stage="import", topic="orders.downloaded", partition=2, offset=41, key="A1:111-2"):
        bind_log_context(seller_id="A1", order_id="111-2", missing=None)
        inside = json.loads(JsonFormatter().format(_record("imported %s", "SO0001")))
        plain = PlainFormatter().format(_record("imported"))
    outside = json.loads(JsonFormatter().format(_record("idle")))
    assert inside["message"] == "imported SO0001"
    assert {k: inside[k] for k in ("stage", "topic", "partition", "offset", "seller_id", "order_id")} == {
        "stage": "import",
        "topic": "orders.downloaded",
        "partition": 2,
        "offset": 41,
        "seller_id": "A1",
        "order_id": "111-2",
    }
    assert "missing" not in inside
    assert "order_id=111-2" in plain
    assert "order_id" not in outside


def test_credentials_never_reach_a_log_line() -> None:
    password = SecretStr("hunter2-redis")
    try:
        raise RuntimeError(
            f"LWA said no to refresh_token={REFRESH_TOKEN}&client_secret=amzn1.oa2-cs.v1.abc123"
            f" with x-amz-access-token: {ACCESS_TOKEN} via redis://ops:{password.get_secret_value()}@redis:6379"
        )
    except RuntimeError as exc:
        error = exc
    for formatter in (JsonFormatter(), PlainFormatter()):
        line = formatter.format(_record("call failed: %s (password %s)", error, password, exc=error))
        for secret in (REFRESH_TOKEN, ACCESS_TOKEN, "amzn1.oa2-cs.v1.abc123", "hunter2-redis", "IwEB"):
            assert secret not in line, (secret, line)
        assert "**********" in line
    # What an LWA refusal raises holds Amazon's code and description, never the form it was sent.
    refused = AmazonRejected("lwaToken", 400, "invalid_grant", "The request has an invalid grant parameter")
    assert redact(str(refused)) == str(refused)


def test_operations_count_for_their_api() -> None:
    for operation in ("getOrders", "searchOrders", "getOrder", "getOrderItems", "getOrderAddress"):
        assert api_for_operation(operation) == "orders"
    assert api_for_operation("createRestrictedDataToken") == "orders"
    for operation in ("createFeed", "getFeed", "createFeedDocument", "getFeedDocument", "confirmShipment"):
        assert api_for_operation(operation) == "feeds"
    assert api_for_operation("createFeed", "POST_ORDER_FULFILLMENT_DATA") == "feeds"
    assert api_for_operation("createFeed", "JSON_LISTINGS_FEED") == "listings"


@pytest.mark.parametrize("level", ["WARNING", "ERROR"])
def test_a_stage_logging_at_warning_or_above_leaves_the_libraries_debug_lines_off(level: str) -> None:
    """faust's terminal spinner would set the root logger to DEBUG at these levels, so that every
    library's debug line is built (and dropped) on the stage's CPU."""
    settings = Settings(log_level=level)  # type: ignore[arg-type]
    worker = stage_worker(make_app("import", settings), settings)
    root = logging.getLogger("ordersync.test.root")
    root.handlers[:] = [logging.NullHandler()]
    root.setLevel(level)
    try:
        worker.on_setup_root_logger(root, logging.getLevelName(level))
        assert root.level == logging.getLevelName(level)
        assert len(root.handlers) == 1
    finally:
        root.handlers[:] = []
