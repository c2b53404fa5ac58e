"""The SP-API simulator's logic, through SimulatorState.call (no HTTP, frozen or injected clocks)."""

from __future__ import annotations

from typing import Any

import pytest

from ordersync.amazon.models import default_plans
from ordersync.simulator.clock import SimClock, epoch_to_iso, parse_iso
from ordersync.simulator.state import SimResponse, SimulatorState
from ordersync.simulator.testing import (
    TEST_APPLICATION,
    TEST_CLIENT_ID,
    TEST_CLIENT_SECRET,
    TEST_REFRESH_TOKEN,
    TEST_SELLER,
    TEST_START,
    access_token,
    tiny_scenario,
    validate_against_model,
)
from ordersync.simulator.validation import ControlError

pytestmark = pytest.mark.unit

US = "ATVPDKIKX0DER"
DAY = 86400


def make_state(**kwargs: Any) -> tuple[SimulatorState, str]:
    state = SimulatorState(tiny_scenario(**kwargs))
    return state, access_token(state)


def iso_ago(state: SimulatorState, seconds: float) -> str:
    return epoch_to_iso(state.now() - seconds)


def get_orders(state: SimulatorState, token: str, **query: str) -> SimResponse:
    query.setdefault("MarketplaceIds", US)
    return state.call("getOrders", access_token=token, path="/orders/v0/orders", query=query)


def search_orders(state: SimulatorState, token: str, **query: str) -> SimResponse:
    return state.call("searchOrders", access_token=token, path="/orders/2026-01-01/orders", query=query)


def get_order(state: SimulatorState, token: str, order_id: str) -> SimResponse:
    return state.call(
        "getOrder",
        access_token=token,
        path=f"/orders/v0/orders/{order_id}",
        path_params={"orderId": order_id},
    )


def get_items(state: SimulatorState, token: str, order_id: str, next_token: str | None = None) -> SimResponse:
    return state.call(
        "getOrderItems",
        access_token=token,
        path=f"/orders/v0/orders/{order_id}/orderItems",
        path_params={"orderId": order_id},
        query={"NextToken": next_token} if next_token else {},
    )


def confirm(state: SimulatorState, token: str, order_id: str, body: Any) -> SimResponse:
    return state.call(
        "confirmShipment",
        access_token=token,
        path=f"/orders/v0/orders/{order_id}/shipmentConfirmation",
        path_params={"orderId": order_id},
        body=body,
    )


def shipment(
    order: dict[str, Any], reference: str = "1", quantities: dict[str, int] | None = None
) -> dict[str, Any]:
    items = quantities or {i["order_item_id"]: i["quantity_ordered"] for i in order["items"]}
    return {
        "marketplaceId": order["marketplace_id"],
        "packageDetail": {
            "packageReferenceId": reference,
            "carrierCode": "UPS",
            "trackingNumber": f"1Z{reference}",
            "shipDate": "2026-01-05T08:00:00Z",
            "orderItems": [{"orderItemId": k, "quantity": v} for k, v in items.items()],
        },
    }


def all_pages(state: SimulatorState, token: str, **query: str) -> list[dict[str, Any]]:
    orders: list[dict[str, Any]] = []
    response = get_orders(state, token, **query)
    while True:
        assert response.status == 200, response.body
        payload = response.body["payload"]
        orders.extend(payload["Orders"])
        if not payload.get("NextToken"):
            return orders
        response = get_orders(state, token, NextToken=payload["NextToken"])


def error_code(response: SimResponse) -> str:
    return str(response.body["errors"][0]["code"])


# --- clock ---------------------------------------------------------------------------------------------


def test_clock_runs_scaled_from_start_and_jumps_forward() -> None:
    real = [100.0]
    clock = SimClock(10, TEST_START, monotonic=lambda: real[0])
    start = TEST_START.timestamp()
    assert clock.now() == start
    real[0] += 3
    assert clock.now() == start + 30
    clock.advance(60)
    assert clock.now() == start + 90
    with pytest.raises(ValueError, match="forward"):
        clock.advance(-1)


def test_iso_round_trip_and_refusals() -> None:
    assert epoch_to_iso(parse_iso("2026-01-05T09:00:00Z")) == "2026-01-05T09:00:00Z"
    assert parse_iso("2026-01-05T10:00:00+01:00") == parse_iso("2026-01-05T09:00:00.000Z")
    assert parse_iso("2026-01-05T09:00:00") == parse_iso("2026-01-05T09:00:00Z")  # no offset: UTC
    for bad in ("2026-01-05", "02/21/2022", "soon"):
        with pytest.raises(ValueError, match="ISO 8601"):
            parse_iso(bad)


# --- scenario and determinism -------------------------------------------------------------------------


def test_same_seed_same_orders_other_seed_other_orders() -> None:
    def ids(seed: int) -> list[tuple[str, str, str, int]]:
        state = SimulatorState(tiny_scenario(seed=seed, orders={"pending_share": 0.3, "afn_share": 0.3}))
        return [
            (o["amazon_order_id"], o["created"], o["status"], len(o["items"])) for o in state.truth_orders()
        ]

    assert ids(5) == ids(5)
    assert ids(5) != ids(6)


def test_generated_orders_look_like_amazons() -> None:
    state = SimulatorState(tiny_scenario(orders={"count": 200, "unknown_sku_share": 0.5}))
    orders = state.truth_orders()
    assert len(orders) == 200
    catalogue = {p["sku"] for p in state.catalogue_json()[TEST_SELLER]}
    unmapped = [o for o in orders if o["has_unmapped_sku"]]
    assert 60 < len(unmapped) < 140
    for order in orders:
        assert len(order["amazon_order_id"]) == 19
        assert order["amazon_order_id"][3] == "-"
        assert order["amazon_order_id"][11] == "-"
        assert order["amazon_order_id"].replace("-", "").isdigit()
        for item in order["items"]:
            assert item["order_item_id"].isdigit()
            assert (item["sku"] in catalogue) != item["sku"].startswith("UNMAPPED-")
            assert item["unmapped"] == item["sku"].startswith("UNMAPPED-")


def test_orders_arrive_over_the_window_as_the_clock_passes() -> None:
    state = SimulatorState(tiny_scenario(orders={"count": 30, "history_s": 0, "arrival_window_s": 1200}))
    first = len(state.truth_orders())
    assert first < 30
    state.advance_clock(600)
    middle = len(state.truth_orders())
    state.advance_clock(601)
    assert first <= middle <= len(state.truth_orders()) == 30


# --- LWA and authorisation ----------------------------------------------------------------------------


def test_lwa_issues_tokens_for_the_scenarios_credentials_only() -> None:
    state = SimulatorState(tiny_scenario())
    good = {
        "grant_type": "refresh_token",
        "refresh_token": TEST_REFRESH_TOKEN,
        "client_id": TEST_CLIENT_ID,
        "client_secret": TEST_CLIENT_SECRET,
    }
    status, body = state.issue_access_token(good)
    assert status == 200
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 3600
    assert body["access_token"].startswith("Atza|")
    assert state.issue_access_token({**good, "client_secret": "wrong"})[0] == 401
    assert state.issue_access_token({**good, "client_secret": "wrong"})[1]["error"] == "invalid_client"
    status, body = state.issue_access_token({**good, "refresh_token": "Atzr|stolen"})
    assert (status, body["error"]) == (400, "invalid_grant")
    status, body = state.issue_access_token({**good, "grant_type": "password"})
    assert (status, body["error"]) == (400, "unsupported_grant_type")


def test_sp_api_refuses_missing_unknown_and_expired_tokens() -> None:
    real = [0.0]
    state = SimulatorState(tiny_scenario(access_token_lifetime_s=3600), real_clock=lambda: real[0])
    token = access_token(state)
    after = iso_ago(state, DAY)
    for bad in (None, "", "Atza|forged"):
        response = state.call(
            "getOrders",
            access_token=bad,
            path="/orders/v0/orders",
            query={"MarketplaceIds": US, "LastUpdatedAfter": after},
        )
        assert response.status == 403
        assert response.body["errors"][0] == {
            "code": "Unauthorized",
            "message": "Access to requested resource is denied.",
            "details": response.body["errors"][0]["details"],
        }
        assert "x-amzn-RateLimit-Limit" not in response.headers
        assert response.headers["x-amzn-RequestId"]
    assert get_orders(state, token, LastUpdatedAfter=after).status == 200
    real[0] += 3600  # real time: the client caching the token cannot see the simulated clock
    expired = get_orders(state, token, LastUpdatedAfter=after)
    assert expired.status == 403
    assert "expired" in expired.body["errors"][0]["details"]


def test_revoked_tokens_are_refused() -> None:
    state, token = make_state()
    assert state.revoke_access_tokens() == 1
    assert get_orders(state, token, LastUpdatedAfter=iso_ago(state, DAY)).status == 403


# --- throttling -----------------------------------------------------------------------------------------


def test_get_orders_allows_the_burst_then_429_without_rate_header() -> None:
    state, token = make_state()
    rate, burst = default_plans()["getOrders"]
    after = iso_ago(state, DAY)
    for _ in range(burst):
        response = get_orders(state, token, LastUpdatedAfter=after)
        assert response.status == 200
        assert response.headers["x-amzn-RateLimit-Limit"] == str(rate) == "0.0167"
    throttled = get_orders(state, token, LastUpdatedAfter=after)
    assert throttled.status == 429
    assert throttled.body == {
        "errors": [
            {
                "code": "QuotaExceeded",
                "message": "You exceeded your quota for the requested resource.",
                "details": "",
            }
        ]
    }
    assert "x-amzn-RateLimit-Limit" not in throttled.headers
    assert throttled.headers["x-amzn-RequestId"]
    # One token comes back after 1/rate simulated seconds, not before.
    state.advance_clock(1 / rate - 2)
    assert get_orders(state, token, LastUpdatedAfter=after).status == 429
    state.advance_clock(3)
    assert get_orders(state, token, LastUpdatedAfter=after).status == 200
    assert get_orders(state, token, LastUpdatedAfter=after).status == 429


def test_buckets_refill_at_the_scaled_rate_in_real_time() -> None:
    real = [0.0]
    scenario = tiny_scenario(time_scale=10)
    state = SimulatorState(scenario, SimClock(10, TEST_START, monotonic=lambda: real[0]))
    token = access_token(state)
    after = iso_ago(state, DAY)
    for _ in range(20):
        assert get_orders(state, token, LastUpdatedAfter=after).status == 200
    assert get_orders(state, token, LastUpdatedAfter=after).status == 429
    real[0] += 6.1  # 61 simulated seconds: one token at 0.0167/s
    assert get_orders(state, token, LastUpdatedAfter=after).status == 200
    assert get_orders(state, token, LastUpdatedAfter=after).status == 429


def test_buckets_are_per_seller_application_and_operation_and_overridable() -> None:
    second_app = {
        "client_id": "amzn1.application-oa2-client.other",
        "client_secret": "x",
        "refresh_token": "Atzr|o",
    }
    scenario = tiny_scenario(
        seller={
            "applications": [
                {
                    "client_id": TEST_CLIENT_ID,
                    "client_secret": TEST_CLIENT_SECRET,
                    "refresh_token": TEST_REFRESH_TOKEN,
                },
                second_app,
            ],
            "usage_plans": {"getOrders": {"rate": 0.5, "burst": 2}},
        }
    )
    state = SimulatorState(scenario)
    first, other = access_token(state), access_token(state, application=1)
    after = iso_ago(state, DAY)
    assert [get_orders(state, first, LastUpdatedAfter=after).status for _ in range(3)] == [200, 200, 429]
    response = get_orders(state, other, LastUpdatedAfter=after)
    assert response.status == 200
    assert response.headers["x-amzn-RateLimit-Limit"] == "0.5"
    order_id = state.truth_orders()[0]["amazon_order_id"]
    assert get_order(state, first, order_id).status == 200  # another operation, another bucket


# --- getOrders ------------------------------------------------------------------------------------------


def test_before_must_be_two_minutes_old_and_defaults_to_that() -> None:
    state, token = make_state()
    now = state.now()
    after = epoch_to_iso(now - DAY)
    too_recent = get_orders(state, token, LastUpdatedAfter=after, LastUpdatedBefore=epoch_to_iso(now - 60))
    assert too_recent.status == 400
    assert error_code(too_recent) == "InvalidInput"
    assert too_recent.headers["x-amzn-RateLimit-Limit"] == "0.0167"
    ok = get_orders(state, token, LastUpdatedAfter=after, LastUpdatedBefore=epoch_to_iso(now - 180))
    assert ok.body["payload"]["LastUpdatedBefore"] == epoch_to_iso(now - 180)
    default = get_orders(state, token, LastUpdatedAfter=after)
    assert default.body["payload"]["LastUpdatedBefore"] == epoch_to_iso(now - 120)
    created = get_orders(state, token, CreatedAfter=after)
    assert created.body["payload"]["CreatedBefore"] == epoch_to_iso(now - 120)
    assert "LastUpdatedBefore" not in created.body["payload"]


@pytest.mark.parametrize(
    "query",
    [
        {},  # neither CreatedAfter nor LastUpdatedAfter
        {"CreatedAfter": "A", "LastUpdatedAfter": "A"},
        {"CreatedAfter": "A", "LastUpdatedBefore": "B"},
        {"LastUpdatedAfter": "A", "CreatedBefore": "B"},
        {"LastUpdatedAfter": "2026-01-04"},  # a date without time
        {"LastUpdatedAfter": "A", "MaxResultsPerPage": "101"},
        {"LastUpdatedAfter": "A", "MaxResultsPerPage": "0"},
        {"LastUpdatedAfter": "A", "OrderStatuses": "Lost"},
        {"LastUpdatedAfter": "A", "FulfillmentChannels": "FBA"},
        {"LastUpdatedAfter": "A", "MarketplaceIds": "A1PA6795UKMFR9"},  # not this seller's
        {"LastUpdatedAfter": "A", "MarketplaceIds": ""},  # required
        {"LastUpdatedAfter": "B", "LastUpdatedBefore": "A"},  # before < after
    ],
)
def test_get_orders_refuses_invalid_queries(query: dict[str, str]) -> None:
    state, token = make_state()
    times = {"A": iso_ago(state, 2 * DAY), "B": iso_ago(state, DAY)}
    query = {k: times.get(v, v) for k, v in query.items()}
    response = get_orders(state, token, **query)
    assert response.status == 400, response.body
    assert error_code(response) == "InvalidInput"


def test_pagination_returns_every_order_once_in_update_order() -> None:
    state, token = make_state(
        orders={"count": 130, "pending_share": 0.3, "afn_share": 0.3, "cancel_share": 0.1}
    )
    now = state.now()
    orders = all_pages(state, token, LastUpdatedAfter=epoch_to_iso(now - 3 * DAY), MaxResultsPerPage="7")
    ids = [o["AmazonOrderId"] for o in orders]
    assert len(ids) == len(set(ids))
    truth = {o["amazon_order_id"]: o for o in state.truth_orders()}
    expected = {i for i, o in truth.items() if parse_iso(o["last_updated"]) <= now - 120}
    assert set(ids) == expected
    stamps = [parse_iso(o["LastUpdateDate"]) for o in orders]
    assert stamps == sorted(stamps)
    for order in orders:
        assert order["OrderStatus"] == truth[order["AmazonOrderId"]]["status"]


def test_filters_and_created_window() -> None:
    state, token = make_state(orders={"count": 80, "afn_share": 0.5, "pending_share": 0.2})
    now = state.now()
    truth = state.truth_orders()
    afn = all_pages(state, token, CreatedAfter=epoch_to_iso(now - 2 * DAY), FulfillmentChannels="AFN")
    assert {o["AmazonOrderId"] for o in afn} == {
        o["amazon_order_id"]
        for o in truth
        if o["fulfillment_channel"] == "AFN" and parse_iso(o["created"]) <= now - 120
    }
    pending = all_pages(state, token, LastUpdatedAfter=epoch_to_iso(now - 2 * DAY), OrderStatuses="Pending")
    assert all(o["OrderStatus"] == "Pending" for o in pending)
    picked = [o["amazon_order_id"] for o in truth[:3]]
    by_id = all_pages(state, token, CreatedAfter=epoch_to_iso(now - 2 * DAY), AmazonOrderIds=",".join(picked))
    assert sorted(o["AmazonOrderId"] for o in by_id) == sorted(picked)


def test_next_token_must_be_ours_for_this_seller() -> None:
    eu_seller = {
        "seller_id": "A2OTHERSELLER",
        "region": "na",
        "marketplaces": [US],
        "applications": [
            {"client_id": TEST_CLIENT_ID, "client_secret": TEST_CLIENT_SECRET, "refresh_token": "Atzr|b"}
        ],
    }
    state = SimulatorState(tiny_scenario(extra_sellers=[eu_seller]))
    token, other = access_token(state), access_token(state, "A2OTHERSELLER")
    first = get_orders(state, token, LastUpdatedAfter=iso_ago(state, 2 * DAY), MaxResultsPerPage="5")
    next_token = first.body["payload"]["NextToken"]
    for bad_token, caller in ((next_token[:-4] + "AAAA", token), ("not base64!", token), (next_token, other)):
        response = get_orders(state, caller, NextToken=bad_token)
        assert response.status == 400
        assert response.body["errors"][0]["message"].startswith("We could not decode your NextToken")
    assert get_orders(state, token, NextToken=next_token).status == 200


def test_pages_are_a_snapshot_of_the_first_page() -> None:
    state, token = make_state(orders={"count": 20})
    now = state.now()
    first = get_orders(state, token, LastUpdatedAfter=epoch_to_iso(now - 2 * DAY), MaxResultsPerPage="10")
    seen = [o["AmazonOrderId"] for o in first.body["payload"]["Orders"]]
    # Ship an order of page 1 between the pages: it must not come back on page 2.
    truth = state.truth_order(seen[0])
    assert confirm(state, token, seen[0], shipment(truth)).status == 204
    second = get_orders(state, token, NextToken=first.body["payload"]["NextToken"])
    rest = [o["AmazonOrderId"] for o in second.body["payload"]["Orders"]]
    assert not set(seen) & set(rest)
    listed = {o["amazon_order_id"] for o in state.truth_orders() if parse_iso(o["created"]) <= now - 120}
    assert set(seen) | set(rest) == listed


def test_visibility_lag_hides_a_change_until_it_is_indexed() -> None:
    state, token = make_state(
        orders={"count": 20, "history_s": 0, "arrival_window_s": 60},
        visibility_lag={"p_late": 1.0, "max_late_s": 3600},
    )
    state.advance_clock(61)
    order = max(state.truth_orders(), key=lambda o: parse_iso(o["visible_at"]) - parse_iso(o["created"]))
    order_id, created, visible_at = (
        order["amazon_order_id"],
        parse_iso(order["created"]),
        parse_iso(order["visible_at"]),
    )
    assert visible_at - created > 300

    def listed() -> set[str]:
        response = get_orders(state, token, LastUpdatedAfter=epoch_to_iso(created - 60))
        return {o["AmazonOrderId"] for o in response.body["payload"]["Orders"]}

    state.advance_clock(created + 180 - state.now())  # inside the window, not yet indexed
    assert order_id not in listed()
    assert get_order(state, token, order_id).status == 200  # by id: read-your-writes
    state.advance_clock(visible_at + 1 - state.now())
    assert order_id in listed()


# --- order life ------------------------------------------------------------------------------------------


def test_pending_orders_hide_prices_and_address_until_payment() -> None:
    state, token = make_state(
        orders={
            "count": 1,
            "history_s": 0,
            "arrival_window_s": 1,
            "pending_share": 1.0,
            "pending_duration_s": [600, 600],
        }
    )
    state.advance_clock(1)
    (order,) = state.truth_orders()
    order_id = order["amazon_order_id"]
    pending = get_order(state, token, order_id).body["payload"]
    assert pending["OrderStatus"] == "Pending"
    assert "OrderTotal" not in pending
    assert "ShippingAddress" not in pending
    for item in get_items(state, token, order_id).body["payload"]["OrderItems"]:
        assert "ItemPrice" not in item
        assert "ItemTax" not in item
        assert "IsGift" not in item
    state.advance_clock(601)
    ready = get_order(state, token, order_id).body["payload"]
    assert ready["OrderStatus"] == "Unshipped"
    assert ready["PurchaseDate"] == pending["PurchaseDate"]
    assert parse_iso(ready["LastUpdateDate"]) == parse_iso(pending["PurchaseDate"]) + 600
    assert "OrderTotal" in ready
    assert "ShippingAddress" in ready
    assert all(
        "ItemPrice" in item for item in get_items(state, token, order_id).body["payload"]["OrderItems"]
    )
    assert [h["status"] for h in state.truth_order(order_id)["history"]] == ["Pending", "Unshipped"]


def test_amazon_ships_afn_orders_after_the_delay_and_buyers_cancel() -> None:
    profile = {"count": 60, "history_s": 0, "arrival_window_s": 60, "afn_share": 0.5, "cancel_share": 0.3}
    timing = {"afn_ship_delay_s": [300, 300], "cancel_after_s": [100, 100]}
    state = SimulatorState(tiny_scenario(orders={**profile, **timing}))
    state.advance_clock(61)
    assert all(o["status"] in ("Unshipped", "Canceled") for o in state.truth_orders())
    state.advance_clock(400)
    orders = state.truth_orders()
    afn = [o for o in orders if o["fulfillment_channel"] == "AFN"]
    assert afn
    assert all(o["status"] in ("Shipped", "Canceled") for o in afn)
    shipped = [o for o in afn if o["status"] == "Shipped"]
    assert shipped
    for order in shipped:
        assert all(i["quantity_shipped"] == i["quantity_ordered"] for i in order["items"])
        assert parse_iso(order["last_updated"]) == parse_iso(order["created"]) + 300
    canceled = [o for o in orders if o["status"] == "Canceled"]
    assert canceled
    assert all(parse_iso(o["last_updated"]) == parse_iso(o["created"]) + 100 for o in canceled)


def test_confirm_shipment_ships_partially_then_fully_and_refuses_reconfirmation() -> None:
    state, token = make_state(orders={"quantity": [3, 3]})
    order = state.truth_orders()[0]
    order_id = order["amazon_order_id"]
    first_item = order["items"][0]["order_item_id"]
    before = parse_iso(order["last_updated"])
    state.advance_clock(30)
    response = confirm(state, token, order_id, shipment(order, "1", {first_item: 1}))
    assert response.status == 204, response.body
    assert response.body is None
    assert response.headers["x-amzn-RateLimit-Limit"] == "2.0"
    truth = state.truth_order(order_id)
    assert truth["status"] == "PartiallyShipped"
    assert parse_iso(truth["last_updated"]) > before
    assert truth["shipments"][0]["tracking_number"] == "1Z1"
    too_many = confirm(state, token, order_id, shipment(order, "2", {first_item: 3}))
    assert (too_many.status, error_code(too_many)) == (400, "InvalidInput")
    rest = {i["order_item_id"]: i["quantity_ordered"] for i in order["items"]}
    rest[first_item] -= 1
    assert confirm(state, token, order_id, shipment(order, "2", rest)).status == 204
    shipped = state.truth_order(order_id)
    assert shipped["status"] == "Shipped"
    assert get_order(state, token, order_id).body["payload"]["NumberOfItemsUnshipped"] == 0
    again = confirm(state, token, order_id, shipment(order, "3", {first_item: 1}))
    assert (again.status, error_code(again)) == (400, "PackageToUpdateNotFound")
    # The same package again is an edit of that package (a retry changes nothing).
    assert confirm(state, token, order_id, shipment(order, "2", rest)).status == 204
    assert state.truth_order(order_id)["history"] == shipped["history"]


def test_confirm_shipment_refusals() -> None:
    state, token = make_state(
        orders={"afn_share": 0.5}, seller={"usage_plans": {"confirmShipment": {"rate": 2, "burst": 100}}}
    )
    orders = state.truth_orders()
    mfn = next(o for o in orders if o["fulfillment_channel"] == "MFN")
    afn = next(o for o in orders if o["fulfillment_channel"] == "AFN")
    assert confirm(state, token, "111-0000000-0000000", shipment(mfn)).status == 404
    assert error_code(confirm(state, token, "111-0000000-0000000", shipment(mfn))) == "NotFound"
    assert confirm(state, token, afn["amazon_order_id"], shipment(afn)).status == 400
    wrong_market = {**shipment(mfn), "marketplaceId": "A2EUQ1WTGCTBG2"}
    assert confirm(state, token, mfn["amazon_order_id"], wrong_market).status == 400
    bad_date = shipment(mfn)
    bad_date["packageDetail"]["shipDate"] = "02/21/2022"
    response = confirm(state, token, mfn["amazon_order_id"], bad_date)
    assert (response.status, error_code(response)) == (400, "Invalid Input")
    for field in ("carrierCode", "trackingNumber", "orderItems", "packageReferenceId"):
        incomplete = shipment(mfn)
        del incomplete["packageDetail"][field]
        assert confirm(state, token, mfn["amazon_order_id"], incomplete).status == 400
    unknown_item = shipment(mfn, quantities={"99999999999999": 1})
    assert confirm(state, token, mfn["amazon_order_id"], unknown_item).status == 400
    assert confirm(state, token, mfn["amazon_order_id"], "not an object").status == 400
    state.set_order_status(mfn["amazon_order_id"], "Canceled")
    canceled = confirm(state, token, mfn["amazon_order_id"], shipment(mfn))
    assert (canceled.status, error_code(canceled)) == (400, "InvalidInput")
    assert state.truth_order(mfn["amazon_order_id"])["shipments"] == []


def test_programmes_are_shown_on_both_apis_and_their_confirmations_refused() -> None:
    state, token = make_state(orders={"count": 60, "ship_plus_share": 0.3, "easy_ship_share": 0.3})
    orders = state.truth_orders()
    ship_plus = next(o for o in orders if o["programs"] == ["FBM_SHIP_PLUS"])
    easy_ship = next(o for o in orders if o["programs"] == ["AMAZON_EASY_SHIP"])
    plain = next(o for o in orders if o["programs"] == [])
    # v0: Ship+ on the items, Easy Ship as the order's EasyShipShipmentStatus; 2026-01-01: programs.
    items = get_items(state, token, ship_plus["amazon_order_id"]).body["payload"]["OrderItems"]
    assert items[0]["AmazonPrograms"] == {"Programs": ["FBM_SHIP_PLUS"]}
    assert get_order(state, token, easy_ship["amazon_order_id"]).body["payload"][
        "EasyShipShipmentStatus"
    ] == ("PendingPickUp")
    assert "EasyShipShipmentStatus" not in get_order(state, token, plain["amazon_order_id"]).body["payload"]
    listed = {
        o["orderId"]: o["programs"]
        for o in search_orders(state, token, createdAfter=iso_ago(state, 2 * DAY), marketplaceIds=US).body[
            "orders"
        ]
    }
    assert listed[ship_plus["amazon_order_id"]] == ["FBM_SHIP_PLUS"]
    assert listed[easy_ship["amazon_order_id"]] == ["AMAZON_EASY_SHIP"]
    # Amazon: Ship+ orders "do not support the confirmShipment operation and result in a 400 error".
    refused = confirm(state, token, ship_plus["amazon_order_id"], shipment(ship_plus))
    assert (refused.status, error_code(refused)) == (400, "InvalidInput")
    assert "Ship+" in refused.body["errors"][0]["details"]
    assert confirm(state, token, easy_ship["amazon_order_id"], shipment(easy_ship)).status == 400
    assert confirm(state, token, plain["amazon_order_id"], shipment(plain)).status == 204
    assert state.counters_json()["refusals"] == {TEST_SELLER: {"ship_plus": 1, "easy_ship": 1}}
    # A label bought through Amazon ships the Ship+ order; Easy Ship's carrier picks the other up.
    labelled = state.ship_by_amazon(ship_plus["amazon_order_id"], {"by": "label"})
    assert (labelled["status"], labelled["shipments"][0]["by"], labelled["confirmed_by_seller"]) == (
        "Shipped",
        "label",
        False,
    )
    picked = state.ship_by_amazon(easy_ship["amazon_order_id"], {"by": "easy-ship"})
    assert picked["status"] == "Shipped"
    assert get_order(state, token, easy_ship["amazon_order_id"]).body["payload"][
        "EasyShipShipmentStatus"
    ] == ("PickedUp")
    with pytest.raises(ControlError, match="not an Easy Ship order"):
        state.ship_by_amazon(plain["amazon_order_id"], {"by": "easy-ship"})
    with pytest.raises(ControlError, match="nothing to ship"):
        state.ship_by_amazon(ship_plus["amazon_order_id"], {"by": "label"})


def test_an_easy_ship_confirmation_is_accepted_when_the_scenario_says_so() -> None:
    state, token = make_state(orders={"count": 20, "easy_ship_share": 1.0}, easy_ship_confirm="accept")
    order = state.truth_orders()[0]
    assert order["programs"] == ["AMAZON_EASY_SHIP"]
    assert confirm(state, token, order["amazon_order_id"], shipment(order)).status == 204
    assert state.counters_json()["refusals"] == {}


def test_get_order_items_pages_long_orders() -> None:
    state, token = make_state()
    order = state.add_order({"item_count": 35})
    first = get_items(state, token, order["amazon_order_id"])
    assert len(first.body["payload"]["OrderItems"]) == 30
    second = get_items(state, token, order["amazon_order_id"], first.body["payload"]["NextToken"])
    assert len(second.body["payload"]["OrderItems"]) == 5
    assert "NextToken" not in second.body["payload"]
    ids = [
        i["OrderItemId"] for i in first.body["payload"]["OrderItems"] + second.body["payload"]["OrderItems"]
    ]
    assert ids == [i["order_item_id"] for i in order["items"]]
    assert get_items(state, token, order["amazon_order_id"], "garbage").status == 400


# --- faults and counters ---------------------------------------------------------------------------------


def test_faults_answer_before_the_operation_runs() -> None:
    state, token = make_state(faults={"http_500": 1.0})
    order = state.truth_orders()[0]
    response = confirm(state, token, order["amazon_order_id"], shipment(order))
    assert response.status == 500
    assert error_code(response) == "InternalFailure"
    assert "x-amzn-RateLimit-Limit" not in response.headers
    assert state.truth_order(order["amazon_order_id"])["status"] == "Unshipped"
    state.set_faults({"http_503": 1.0})
    assert get_order(state, token, order["amazon_order_id"]).status == 503
    state.set_faults({})
    assert get_order(state, token, order["amazon_order_id"]).status == 200


def test_counters_count_calls_throttles_and_errors_per_seller_and_operation() -> None:
    state, token = make_state()
    after = iso_ago(state, DAY)
    for _ in range(22):
        get_orders(state, token, LastUpdatedAfter=after)
    get_order(state, token, "111-0000000-0000000")
    state.call("getOrders", access_token=None, path="/orders/v0/orders", query={})
    counters = state.counters_json()["sellers"]
    assert counters[TEST_SELLER]["getOrders"]["calls"] == 22
    assert counters[TEST_SELLER]["getOrders"]["throttled"] == 2
    assert counters[TEST_SELLER]["getOrders"]["statuses"] == {"200": 20, "429": 2}
    assert counters[TEST_SELLER]["getOrder"]["errors_by_status"] == {"404": 1}
    assert counters["-"]["getOrders"]["statuses"] == {"403": 1}
    assert counters[TEST_SELLER]["lwaToken"]["calls"] == 1


# --- restricted data -------------------------------------------------------------------------------------


def test_personal_data_needs_a_restricted_data_token() -> None:
    state, token = make_state()
    order_id = state.truth_orders()[0]["amazon_order_id"]
    plain = get_order(state, token, order_id).body["payload"]
    assert set(plain["ShippingAddress"]) == {"City", "StateOrRegion", "PostalCode", "CountryCode"}
    assert "BuyerInfo" not in plain
    created = state.call(
        "createRestrictedDataToken",
        access_token=token,
        path="/tokens/2021-03-01/restrictedDataToken",
        body={
            "restrictedResources": [
                {"method": "GET", "path": "/orders/v0/orders/{orderId}", "dataElements": ["shippingAddress"]}
            ]
        },
    )
    assert created.status == 200
    validate_against_model("tokens", "CreateRestrictedDataTokenResponse", created.body)
    rdt = created.body["restrictedDataToken"]
    full = get_order(state, rdt, order_id).body["payload"]
    assert full["ShippingAddress"]["Name"]
    assert full["ShippingAddress"]["AddressLine1"]
    assert "BuyerInfo" not in full  # buyerInfo was not asked for
    assert get_orders(state, rdt, LastUpdatedAfter=iso_ago(state, DAY)).status == 403  # another path


def test_without_enforcement_personal_data_is_always_there() -> None:
    state, token = make_state(pii_requires_rdt=False)
    order_id = state.truth_orders()[0]["amazon_order_id"]
    payload = get_order(state, token, order_id).body["payload"]
    assert payload["ShippingAddress"]["Name"]
    assert payload["BuyerInfo"]["BuyerEmail"]


def create_rdt(state: SimulatorState, token: str, *resources: dict[str, Any]) -> SimResponse:
    return state.call(
        "createRestrictedDataToken",
        access_token=token,
        path="/tokens/2021-03-01/restrictedDataToken",
        body={"restrictedResources": list(resources)},
    )


def get_order_address(state: SimulatorState, token: str, order_id: str) -> SimResponse:
    return state.call(
        "getOrderAddress",
        access_token=token,
        path=f"/orders/v0/orders/{order_id}/address",
        path_params={"orderId": order_id},
    )


def get_order_2026(state: SimulatorState, token: str, order_id: str, included: str) -> SimResponse:
    return state.call(
        "getOrder@2026-01-01",
        access_token=token,
        path=f"/orders/2026-01-01/orders/{order_id}",
        path_params={"orderId": order_id},
        query={"includedData": included},
    )


def with_roles(*roles: str) -> dict[str, Any]:
    """A ``seller`` override: the test application holds exactly these restricted roles."""
    return {"applications": [{**TEST_APPLICATION, "pii_roles": list(roles)}]}


def test_rdt_for_get_order_address_needs_no_data_elements() -> None:
    # tokens_2021-03-01.json: dataElements "is required only when getting an RDT for use with the
    # getOrder, getOrders, or getOrderItems operation"; an RDT for getOrderAddress opens the address.
    state, token = make_state(
        seller={"usage_plans": {"createRestrictedDataToken": {"rate": 1, "burst": 100}}}
    )
    order_id = state.add_order({})["amazon_order_id"]
    plain = get_order_address(state, token, order_id).body["payload"]["ShippingAddress"]
    assert "Name" not in plain
    created = create_rdt(state, token, {"method": "GET", "path": f"/orders/v0/orders/{order_id}/address"})
    assert created.status == 200, created.body
    full = get_order_address(state, created.body["restrictedDataToken"], order_id)
    assert full.status == 200
    validate_against_model("orders-v0", "GetOrderAddressResponse", full.body)
    address = full.body["payload"]["ShippingAddress"]
    assert address["Name"]
    assert address["AddressLine1"]
    assert address["Phone"]
    # getOrders, getOrder and getOrderItems: the RDT must name its data elements.
    for path in (
        "/orders/v0/orders",
        f"/orders/v0/orders/{order_id}",
        "/orders/v0/orders/{orderId}/orderItems",
    ):
        refused = create_rdt(state, token, {"method": "GET", "path": path})
        assert (refused.status, error_code(refused)) == (400, "InvalidInput"), path
        assert create_rdt(state, token, {"method": "GET", "path": path, "dataElements": []}).status == 400
        named = create_rdt(state, token, {"method": "GET", "path": path, "dataElements": ["buyerInfo"]})
        assert named.status == 200, path
    # buyerInfo on getOrder: the buyer's name and email.
    rdt = create_rdt(
        state,
        token,
        {"method": "GET", "path": f"/orders/v0/orders/{order_id}", "dataElements": ["buyerInfo"]},
    ).body["restrictedDataToken"]
    payload = get_order(state, rdt, order_id).body["payload"]
    assert payload["BuyerInfo"]["BuyerName"]
    assert payload["BuyerInfo"]["BuyerEmail"]
    assert "Name" not in payload["ShippingAddress"]  # shippingAddress was not asked for


def test_v0_rdt_opens_only_the_data_of_the_roles_held() -> None:
    state, token = make_state(seller=with_roles("tax_invoicing"))
    order_id = state.add_order({})["amazon_order_id"]
    resource = {
        "method": "GET",
        "path": f"/orders/v0/orders/{order_id}",
        "dataElements": ["buyerInfo", "shippingAddress"],
    }
    rdt = create_rdt(state, token, resource).body["restrictedDataToken"]
    payload = get_order(state, rdt, order_id).body["payload"]
    assert payload["BuyerInfo"]["BuyerName"]
    assert "Name" not in payload["ShippingAddress"]  # no Direct-to-Consumer Delivery role
    address_rdt = create_rdt(state, token, {"method": "GET", "path": f"/orders/v0/orders/{order_id}/address"})
    address = get_order_address(state, address_rdt.body["restrictedDataToken"], order_id)
    assert "Name" not in address.body["payload"]["ShippingAddress"]


def test_orders_2026_personal_data_comes_with_the_roles_and_needs_no_rdt() -> None:
    state, token = make_state()  # the default application holds all three roles
    order_id = state.add_order({})["amazon_order_id"]
    state.advance_clock(121)
    for response in (
        get_order_2026(state, token, order_id, "BUYER,RECIPIENT,FULFILLMENT"),
        search_orders(state, token, lastUpdatedAfter=iso_ago(state, 600), includedData="BUYER,RECIPIENT"),
    ):
        assert response.status == 200, response.body
        listed = [response.body["order"]] if "order" in response.body else response.body["orders"]
        order = next(o for o in listed if o["orderId"] == order_id)
        assert order["buyer"]["buyerName"]
        assert order["buyer"]["buyerEmail"]  # seller-fulfilled and unshipped
        address = order["recipient"]["deliveryAddress"]
        assert {"name", "addressLine1", "postalCode", "phone", "city", "countryCode"} <= set(address)
    full = get_order_2026(state, token, order_id, "BUYER,RECIPIENT")
    validate_against_model("orders-2026-01-01", "GetOrderResponse", full.body)
    # Asked for nothing personal: nothing personal.
    bare = get_order_2026(state, token, order_id, "FULFILLMENT").body["order"]
    assert "buyer" not in bare
    assert "recipient" not in bare
    # An RDT is not needed; one for the path is accepted and opens nothing more or less.
    rdt = create_rdt(state, token, {"method": "GET", "path": "/orders/2026-01-01/orders/{orderId}"})
    assert rdt.status == 200
    with_rdt = get_order_2026(state, rdt.body["restrictedDataToken"], order_id, "BUYER,RECIPIENT")
    assert with_rdt.status == 200
    assert with_rdt.body == full.body
    # Amazon shows no buyer email for orders fulfilled by Amazon or not yet paid.
    afn = state.add_order({"fulfillment_channel": "AFN"})["amazon_order_id"]
    pending = state.add_order({"pending_s": 3600})["amazon_order_id"]
    for other in (afn, pending):
        buyer = get_order_2026(state, token, other, "BUYER").body["order"]["buyer"]
        assert buyer["buyerName"]
        assert "buyerEmail" not in buyer


def test_orders_2026_without_the_roles_personal_fields_are_left_out() -> None:
    state, token = make_state(seller=with_roles())
    order_id = state.add_order({})["amazon_order_id"]
    response = get_order_2026(state, token, order_id, "BUYER,RECIPIENT")
    assert response.status == 200
    validate_against_model("orders-2026-01-01", "GetOrderResponse", response.body)
    order = response.body["order"]
    assert "buyer" not in order
    assert set(order["recipient"]["deliveryAddress"]) == {"city", "stateOrRegion", "countryCode"}
    # An RDT grants nothing the roles do not.
    rdt = create_rdt(state, token, {"method": "GET", "path": f"/orders/2026-01-01/orders/{order_id}"})
    assert get_order_2026(state, rdt.body["restrictedDataToken"], order_id, "BUYER,RECIPIENT").body == (
        response.body
    )
    # Tax roles only: the buyer's name, but no email and no street.
    state, token = make_state(seller=with_roles("tax_remittance"))
    order_id = state.add_order({})["amazon_order_id"]
    order = get_order_2026(state, token, order_id, "BUYER,RECIPIENT").body["order"]
    assert set(order["buyer"]) == {"buyerName"}
    assert "name" not in order["recipient"]["deliveryAddress"]


def test_orders_2026_without_the_roles_can_be_forbidden_by_scenario() -> None:
    state, token = make_state(seller=with_roles("tax_invoicing"), pii_without_role="forbidden")
    order_id = state.add_order({})["amazon_order_id"]
    state.advance_clock(121)
    denied = get_order_2026(state, token, order_id, "BUYER,RECIPIENT")
    assert (denied.status, error_code(denied)) == (403, "Unauthorized")
    assert "RECIPIENT" in denied.body["errors"][0]["details"]
    validate_against_model("orders-2026-01-01", "ErrorList", denied.body)
    searched = search_orders(state, token, lastUpdatedAfter=iso_ago(state, 600), includedData="RECIPIENT")
    assert searched.status == 403
    assert get_order_2026(state, token, order_id, "BUYER,FULFILLMENT").status == 200  # the role it holds


# --- Orders 2026-01-01 -----------------------------------------------------------------------------------


def test_search_orders_pages_with_expiring_tokens_and_embeds_items() -> None:
    state, token = make_state(orders={"count": 45, "pending_share": 0.3})
    now = state.now()
    seen: list[dict[str, Any]] = []
    after = epoch_to_iso(now - 2 * DAY)
    response = search_orders(
        state, token, lastUpdatedAfter=after, maxResultsPerPage="20", includedData="FULFILLMENT,PROCEEDS"
    )
    first_token = response.body["pagination"]["nextToken"]
    while True:
        assert response.status == 200, response.body
        assert response.body["lastUpdatedBefore"] == epoch_to_iso(now - 120)
        seen.extend(response.body["orders"])
        next_token = response.body.get("pagination", {}).get("nextToken")
        if not next_token:
            break
        response = search_orders(
            state,
            token,
            lastUpdatedAfter=after,
            paginationToken=next_token,
            maxResultsPerPage="20",
            includedData="FULFILLMENT,PROCEEDS",
        )
    truth = {o["amazon_order_id"]: o for o in state.truth_orders()}
    listed = {i for i, o in truth.items() if parse_iso(o["last_updated"]) <= now - 120}
    assert len({o["orderId"] for o in seen}) == len(seen) == len(listed) > 40
    for order in seen:
        assert (
            order["fulfillment"]["fulfillmentStatus"]
            == {"Unshipped": "UNSHIPPED", "Pending": "PENDING"}[truth[order["orderId"]]["status"]]
        )
        assert len(order["orderItems"]) == len(truth[order["orderId"]]["items"])
        priced = "price" in order["orderItems"][0]["product"]
        assert priced == (truth[order["orderId"]]["status"] != "Pending")
    state.advance_clock(DAY + 1)
    expired = search_orders(state, token, lastUpdatedAfter=after, paginationToken=first_token)
    assert (expired.status, error_code(expired)) == (400, "InvalidInput")
    assert "expired" in expired.body["errors"][0]["details"]


def search_all_pages(
    state: SimulatorState, token: str, first: dict[str, str], then: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Every page of a searchOrders query: the first request ``first``, each follow-up ``then``
    (default: the same parameters) with the previous page's token."""
    orders: list[dict[str, Any]] = []
    response = search_orders(state, token, **first)
    while True:
        assert response.status == 200, response.body
        orders.extend(response.body["orders"])
        next_token = response.body.get("pagination", {}).get("nextToken")
        if not next_token:
            return orders
        response = search_orders(state, token, **(then or first), paginationToken=next_token)


def test_search_orders_follow_up_pages_repeat_the_first_requests_filters() -> None:
    """orders_2026-01-01.json (Pagination): "All other parameters must be provided with the same
    values that were provided with the request that generated this token, with the exception of
    maxResultsPerPage and includedData". Values compare as instants and as sets of values."""
    state, token = make_state(orders={"count": 60, "afn_share": 0.5})
    now = state.now()
    after, before = epoch_to_iso(now - 2 * DAY), epoch_to_iso(now - 600)
    first = {
        "createdAfter": after,
        "createdBefore": before,
        "marketplaceIds": US,
        "fulfilledBy": "MERCHANT,AMAZON",
        "fulfillmentStatuses": "UNSHIPPED,PENDING",
        "maxResultsPerPage": "10",
        "includedData": "FULFILLMENT",
    }
    response = search_orders(state, token, **first)
    assert response.status == 200, response.body
    page_token = response.body["pagination"]["nextToken"]

    def follow_up(**changed: str | None) -> SimResponse:
        query = {k: v for k, v in {**first, **changed}.items() if v is not None}
        return search_orders(state, token, **query, paginationToken=page_token)

    refused = {
        "the token alone (the old follow-up)": search_orders(state, token, paginationToken=page_token),
        "the token with the marketplaces alone": search_orders(
            state, token, marketplaceIds=US, paginationToken=page_token
        ),
        "another createdAfter": follow_up(createdAfter=epoch_to_iso(now - 3 * DAY)),
        "createdBefore left out": follow_up(createdBefore=None),
        "another fulfilledBy": follow_up(fulfilledBy="MERCHANT"),
        "fulfillmentStatuses left out": follow_up(fulfillmentStatuses=None),
        "the window by update instead": follow_up(
            createdAfter=None, createdBefore=None, lastUpdatedAfter=after
        ),
    }
    for case, answer in refused.items():
        assert (answer.status, error_code(answer)) == (400, "InvalidInput"), case
        validate_against_model("orders-2026-01-01", "ErrorList", answer.body)
        error = answer.body["errors"][0]
        assert "same values" in error["details"], case
        assert "paginationToken was generated by a request with other parameters" in error["message"], case
    assert "createdAfter" in refused["another createdAfter"].body["errors"][0]["message"]
    assert "createdBefore is missing" in refused["createdBefore left out"].body["errors"][0]["message"]

    # The same values written differently; another page size and includedData: accepted and honoured.
    same = follow_up(
        createdAfter=after.replace("Z", ".000+00:00"),
        fulfilledBy="AMAZON, MERCHANT",
        fulfillmentStatuses="PENDING,UNSHIPPED,PENDING",
        maxResultsPerPage="3",
        includedData="FULFILLMENT,PROCEEDS",
    )
    assert same.status == 200, same.body
    assert len(same.body["orders"]) == 3
    assert all("proceeds" in o for o in same.body["orders"])
    # A token that came with the first request's filters stays usable.
    assert follow_up().status == 200


def test_search_orders_follow_up_omits_what_the_first_request_omitted() -> None:
    """Amazon's rule is "the same values as provided": a *Before (or marketplaceIds) the first
    request left to its default must be left out again, even with the value Amazon defaulted to."""
    state, token = make_state(orders={"count": 30})
    after = iso_ago(state, 2 * DAY)
    first = search_orders(state, token, lastUpdatedAfter=after, maxResultsPerPage="5")
    page_token = first.body["pagination"]["nextToken"]
    defaulted = first.body["lastUpdatedBefore"]
    for extra in ({"lastUpdatedBefore": defaulted}, {"marketplaceIds": US}):
        answer = search_orders(state, token, lastUpdatedAfter=after, paginationToken=page_token, **extra)
        assert answer.status == 400, extra
        assert "was not in the first request" in answer.body["errors"][0]["message"]
    assert search_orders(state, token, lastUpdatedAfter=after, paginationToken=page_token).status == 200


def test_search_orders_walks_a_multi_page_window_returning_every_order_once() -> None:
    state, token = make_state(
        orders={"count": 130, "pending_share": 0.3, "afn_share": 0.3, "cancel_share": 0.1}
    )
    now = state.now()
    window = {"lastUpdatedAfter": epoch_to_iso(now - 3 * DAY), "fulfilledBy": "MERCHANT,AMAZON"}
    orders = search_all_pages(
        state,
        token,
        {**window, "maxResultsPerPage": "20", "includedData": "FULFILLMENT"},
        # Follow-ups change only what Amazon lets change: the page size and includedData.
        {**window, "maxResultsPerPage": "7"},
    )
    ids = [o["orderId"] for o in orders]
    assert len(ids) == len(set(ids))
    truth = state.truth_orders()
    assert set(ids) == {o["amazon_order_id"] for o in truth if parse_iso(o["last_updated"]) <= now - 120}
    assert len(ids) > 100  # 1 page of 20, then pages of 7


def test_search_orders_filters_by_2026_statuses_and_included_data() -> None:
    state, token = make_state(orders={"count": 30, "afn_share": 0.5})
    after = iso_ago(state, 2 * DAY)
    amazon = search_orders(
        state, token, lastUpdatedAfter=after, fulfilledBy="AMAZON", includedData="FULFILLMENT"
    )
    assert amazon.body["orders"]
    assert {o["fulfillment"]["fulfilledBy"] for o in amazon.body["orders"]} == {"AMAZON"}
    bare = search_orders(state, token, lastUpdatedAfter=after)
    assert all("fulfillment" not in o and "proceeds" not in o for o in bare.body["orders"])
    assert search_orders(state, token, lastUpdatedAfter=after, includedData="EVERYTHING").status == 400
    assert search_orders(state, token, lastUpdatedAfter=after, fulfillmentStatuses="Unshipped").status == 400
    assert search_orders(state, token, createdAfter=after, lastUpdatedAfter=after).status == 400


# --- conformance with Amazon's models ----------------------------------------------------------------------


def test_responses_validate_against_the_models() -> None:
    shares = {"pending_share": 0.3, "afn_share": 0.3, "cancel_share": 0.2, "unknown_sku_share": 0.3}
    timing = {"pending_duration_s": [3 * DAY, 3 * DAY], "afn_ship_delay_s": [600, 600]}
    roomy = {"rate": 1, "burst": 100}
    state, token = make_state(
        orders={"count": 40, **shares, **timing},
        seller={"usage_plans": {"getOrder": roomy, "getOrderItems": roomy}},
        pii_requires_rdt=False,
    )
    after = epoch_to_iso(state.now() - 3 * DAY)
    mfn = next(
        o for o in state.truth_orders() if o["fulfillment_channel"] == "MFN" and o["status"] == "Unshipped"
    )
    assert confirm(state, token, mfn["amazon_order_id"], shipment(mfn)).status == 204
    state.advance_clock(180)
    listed = get_orders(state, token, LastUpdatedAfter=after)
    validate_against_model("orders-v0", "GetOrdersResponse", listed.body)
    statuses = {o["OrderStatus"] for o in listed.body["payload"]["Orders"]}
    assert {"Pending", "Unshipped", "Shipped", "Canceled"} <= statuses
    for order in listed.body["payload"]["Orders"]:
        one, items = (
            get_order(state, token, order["AmazonOrderId"]),
            get_items(state, token, order["AmazonOrderId"]),
        )
        assert (one.status, items.status) == (200, 200)
        validate_against_model("orders-v0", "GetOrderResponse", one.body)
        validate_against_model("orders-v0", "GetOrderItemsResponse", items.body)
    included = "BUYER,RECIPIENT,PROCEEDS,FULFILLMENT,CANCELLATION,PACKAGES,TAX"
    searched = search_orders(state, token, lastUpdatedAfter=after, includedData=included)
    assert searched.status == 200
    validate_against_model("orders-2026-01-01", "SearchOrdersResponse", searched.body)
    assert any(o.get("packages") for o in searched.body["orders"])
    single = state.call(
        "getOrder@2026-01-01",
        access_token=token,
        path=f"/orders/2026-01-01/orders/{mfn['amazon_order_id']}",
        path_params={"orderId": mfn["amazon_order_id"]},
        query={"includedData": included},
    )
    assert single.status == 200
    validate_against_model("orders-2026-01-01", "GetOrderResponse", single.body)
    errors = get_orders(state, token, LastUpdatedAfter="yesterday")
    assert errors.status == 400
    validate_against_model("orders-v0", "GetOrdersResponse", errors.body)
    validate_against_model("orders-2026-01-01", "ErrorList", search_orders(state, token).body)


# --- control API -----------------------------------------------------------------------------------------


def test_control_api_adds_orders_and_changes_status() -> None:
    state, token = make_state()
    added = state.add_order({"items": [{"unmapped": True, "quantity": 2}], "pending_s": 300})
    assert added["status"] == "Pending"
    assert added["has_unmapped_sku"]
    assert added["items"][0]["sku"].startswith("UNMAPPED-")
    state.advance_clock(301)
    assert state.truth_order(added["amazon_order_id"])["status"] == "Unshipped"
    canceled = state.set_order_status(added["amazon_order_id"], "Canceled")
    assert canceled["status"] == "Canceled"
    with pytest.raises(ValueError, match="cannot be canceled"):
        state.set_order_status(added["amazon_order_id"], "Canceled")
    with pytest.raises(ValueError, match="not in the catalogue"):
        state.add_order({"items": [{"sku": "NOPE"}]})
    state.advance_clock(121)
    payload = get_order(state, token, added["amazon_order_id"]).body["payload"]
    assert payload["OrderStatus"] == "Canceled"
    (item,) = get_items(state, token, added["amazon_order_id"]).body["payload"]["OrderItems"]
    assert item["BuyerRequestedCancel"]["IsBuyerRequestedCancel"] == "true"


def test_twenty_thousand_orders_stay_cheap() -> None:
    state, token = make_state(
        orders={"count": 20_000, "history_s": 10 * DAY, "pending_share": 0.2, "afn_share": 0.3},
        seller={"usage_plans": {"getOrders": {"rate": 1, "burst": 1000}}},
    )
    assert len(state.truth_orders()) == 20_000
    orders = all_pages(state, token, LastUpdatedAfter=iso_ago(state, 11 * DAY))
    assert len({o["AmazonOrderId"] for o in orders}) == len(orders) > 19_000
    state.reset_buckets()
    recent = get_orders(state, token, LastUpdatedAfter=iso_ago(state, 3600))
    assert recent.status == 200


def test_latest_ship_date_follows_the_handling_time_and_late_confirmations_are_counted() -> None:
    state, token = make_state(orders={"count": 20, "ship_within_s": [3600, 7200]})
    for truth in state.truth_orders():
        due = parse_iso(truth["latest_ship_date"]) - parse_iso(truth["created"])
        assert 3600 <= due <= 7200
        shown = get_order(state, token, truth["amazon_order_id"]).body["payload"]
        assert parse_iso(shown["LatestShipDate"]) == parse_iso(truth["latest_ship_date"])
    on_time = state.add_order({"ship_within_s": 600})
    late = state.add_order({"ship_within_s": 600})
    assert confirm(state, token, on_time["amazon_order_id"], shipment(on_time)).status == 204
    state.advance_clock(601)
    assert confirm(state, token, late["amazon_order_id"], shipment(late)).status == 204
    assert state.counters_json()["shipments"][TEST_SELLER] == {"confirmed": 2, "late": 1}
    assert [p["late"] for p in state.truth_order(late["amazon_order_id"])["shipments"]] == [True]
    assert [p["late"] for p in state.truth_order(on_time["amazon_order_id"])["shipments"]] == [False]
