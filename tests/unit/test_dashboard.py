"""The dashboard's pure parts: the grid's query string, token checks and action planning."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from urllib.parse import parse_qs

import pytest
from pydantic import SecretStr

from ordersync.dashboard.actions import ActionRejected, operator_name, parse_action, plan_action
from ordersync.dashboard.auth import cookie_value, tokens_equal
from ordersync.dashboard.query import BadQuery, parse_grid_query
from ordersync.dashboard.server import _AccessLogHygiene
from ordersync.settings import DashboardSettings
from ordersync.state.readmodel.export import spreadsheet_safe

pytestmark = pytest.mark.unit

ORDER = "111-0000001-0000001"


def test_the_query_string_becomes_the_read_models_filter() -> None:
    query = parse_grid_query(
        {
            "status": "Failed",
            "failed_stage": "write-back",
            "since": "2026-11-01",
            "until": "2026-11-20",
            "channel": "acme-us",
            "marketplace_id": "ATVPDKIKX0DER",
            "q": " 111-0000001 ",
            "sort": "amazon_order_id",
            "offset": "100",
            "limit": "100",
        },
        DashboardSettings(),
    )
    assert query.filter.status == "Failed"
    assert query.filter.failed_stage == "write-back"
    assert query.filter.since == datetime(2026, 11, 1, tzinfo=UTC)
    # The last day typed is included whole: the read model's upper bound is exclusive.
    assert query.filter.until == datetime(2026, 11, 21, tzinfo=UTC)
    assert query.filter.text == "111-0000001"
    assert (query.sort, query.descending, query.offset, query.limit) == ("amazon_order_id", False, 100, 100)


def test_links_keep_the_filter_and_change_what_is_asked() -> None:
    query = parse_grid_query({"status": "Failed", "q": "SKU 1", "offset": "50"}, DashboardSettings())
    assert parse_qs(query.link(offset=100)[1:]) == {
        "status": ["Failed"],
        "q": ["SKU 1"],
        "sort": ["purchase_date"],
        "dir": ["desc"],
        "offset": ["100"],
        "limit": ["50"],
    }
    # Sorting again by the same column flips it, and starts at the first page.
    flipped = parse_qs(query.sort_link("purchase_date")[1:])
    assert (flipped["dir"], flipped["offset"]) == (["asc"], ["0"])
    # The export carries the filter only.
    assert parse_qs(query.export_link()[1:]) == {"status": ["Failed"], "q": ["SKU 1"]}


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"status": "failed"}, "status"),
        ({"failed_stage": "invoice"}, "failed_stage"),
        ({"since": "20/11/2026"}, "since"),
        ({"since": "2026-11-20", "until": "2026-11-01"}, "since"),
        ({"limit": "0"}, "limit"),
        ({"limit": "501"}, "limit"),
        ({"offset": "-1"}, "offset"),
        ({"offset": "ten"}, "offset"),
        ({"dir": "up"}, "dir"),
        ({"marketplace_id": "A1<script>"}, "marketplace_id"),
        ({"q": "x" * 201}, "q"),
    ],
)
def test_a_bad_parameter_is_named(params: dict[str, str], named: str) -> None:
    with pytest.raises(BadQuery, match=f"^{named}:"):
        parse_grid_query(params, DashboardSettings())


def test_page_size_is_bounded_by_the_settings() -> None:
    settings = DashboardSettings(page_sizes=(25, 50), max_page_size=50)
    assert parse_grid_query({}, settings).limit == 25
    with pytest.raises(BadQuery, match="limit"):
        parse_grid_query({"limit": "100"}, settings)


def test_tokens_compare_whole_and_the_cookie_never_holds_the_token() -> None:
    token = SecretStr("s3cret-token")
    assert tokens_equal("s3cret-token", token)
    assert not tokens_equal("s3cret-toke", token)
    assert not tokens_equal("", token)
    cookie = cookie_value(token)
    assert "s3cret" not in cookie
    assert cookie == cookie_value(SecretStr("s3cret-token"))
    assert cookie != cookie_value(SecretStr("other"))


def test_an_action_is_planned_per_channel_with_each_order_once() -> None:
    action = parse_action(
        {
            "action": "retry-import",
            "orders": [
                {"channel": "acme-us", "amazon_order_id": ORDER},
                {"channel": "other-ca", "amazon_order_id": "222-0000001-0000001"},
                {"channel": "acme-us", "amazon_order_id": ORDER},
                {"channel": "acme-us", "amazon_order_id": "111-0000002-0000002"},
            ],
            "operator": "Ana",
        }
    )
    plan = plan_action(action, {"acme-us", "other-ca"}, max_orders=1000)
    assert plan == {
        "acme-us": (ORDER, "111-0000002-0000002"),
        "other-ca": ("222-0000001-0000001",),
    }
    assert operator_name(action) == "dashboard:Ana"


def test_a_bad_action_is_refused_whole_with_every_problem() -> None:
    with pytest.raises(ActionRejected) as refused:
        parse_action({"action": "delete", "orders": [{"channel": "acme-us", "amazon_order_id": "1-2-3"}]})
    assert any(p.startswith("action:") for p in refused.value.problems)
    assert any("amazon_order_id" in p for p in refused.value.problems)
    with pytest.raises(ActionRejected, match="operator"):
        parse_action(
            {"action": "ignore", "orders": [{"channel": "a", "amazon_order_id": ORDER}], "operator": "<b>"}
        )

    action = parse_action(
        {
            "action": "ignore",
            "orders": [{"channel": "nope", "amazon_order_id": ORDER}]
            + [{"channel": "acme-us", "amazon_order_id": f"111-0000000-{n:07d}"} for n in range(3)],
        }
    )
    with pytest.raises(ActionRejected) as too_many:
        plan_action(action, {"acme-us"}, max_orders=2)
    assert too_many.value.problems == [
        "unknown channel nope (known: acme-us)",
        "3 orders of acme-us selected; one action takes at most 2",
    ]


def test_formula_cells_are_neutralised_in_csv_exports() -> None:
    # OWASP's rule: a cell a spreadsheet would run as a formula gets a leading apostrophe.
    for cell in ('=HYPERLINK("http://evil")', "+1+1", "-2+3", "@SUM(A1)", "\tx", "\rx"):
        assert spreadsheet_safe(cell) == "'" + cell
    for cell in ("1Z999", "SKU-1", "", "a=b"):
        assert spreadsheet_safe(cell) == cell


def test_the_access_log_keeps_no_query_string_and_no_probe() -> None:
    hygiene = _AccessLogHygiene()

    def access(path: str) -> logging.LogRecord:
        args = ("10.0.0.1:5000", "GET", path, "1.1", 200)
        return logging.LogRecord(
            "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d', args, None
        )

    leaked = access("/api/orders?token=op-s3cret&status=Failed")
    assert hygiene.filter(leaked)
    assert leaked.getMessage() == '10.0.0.1:5000 - "GET /api/orders?(query not logged) HTTP/1.1" 200'
    assert not hygiene.filter(access("/readyz"))
    plain = access("/tasks")
    assert hygiene.filter(plain)
    assert plain.getMessage() == '10.0.0.1:5000 - "GET /tasks HTTP/1.1" 200'
