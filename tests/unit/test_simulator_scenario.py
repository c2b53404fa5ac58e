"""Scenario files: the built-in ones load and do what they promise; bad ones are refused clearly."""

from __future__ import annotations

from typing import Any

import pytest

from ordersync.errors import ConfigurationError
from ordersync.simulator.scenario import Scenario, load_scenario, parse_scenario
from ordersync.simulator.state import SimulatorState
from ordersync.simulator.testing import TEST_APPLICATION, TEST_START, tiny_scenario

pytestmark = pytest.mark.unit


def test_default_scenario_is_one_us_seller_with_a_few_hundred_past_orders() -> None:
    scenario = load_scenario(None, seed=11)
    assert scenario.seed == 11
    (seller,) = scenario.sellers
    assert seller.marketplaces == ("ATVPDKIKX0DER",)
    state = SimulatorState(scenario.model_copy(update={"start": TEST_START, "time_scale": 0.0}))
    placed = state.truth_orders()
    assert 250 <= len(placed) <= 300
    assert min(o["created"] for o in placed) < "2026-01-03"


def test_demo_scenario_places_328_orders_over_twenty_minutes() -> None:
    scenario = load_scenario("demo", time_scale=0, start=TEST_START)
    assert [s.seller_id for s in scenario.sellers] == ["A1DEMOSELLERUS", "A2DEMOSELLEREU", "A3DEMOSELLERIN"]
    assert scenario.faults.http_500 == scenario.faults.http_503 == 0
    assert load_scenario("demo").time_scale == 20
    state = SimulatorState(scenario)
    assert len(state.truth_orders()) < 30
    state.advance_clock(20 * 60 + 1)
    orders = state.truth_orders()
    assert len(orders) == 328
    unmapped = sum(o["has_unmapped_sku"] for o in orders)
    assert 5 <= unmapped <= 30
    assert any(o["fulfillment_channel"] == "AFN" for o in orders)
    assert any(len(o["history"]) > 1 and o["history"][0]["status"] == "Pending" for o in orders)
    assert {o["marketplace_id"] for o in orders} == {"ATVPDKIKX0DER", "A1PA6795UKMFR9", "A21TJRUUN4KGV"}
    assert {o["currency"] for o in orders} == {"USD", "EUR", "INR"}
    # The India seller's seller-fulfilled orders are mostly in Easy Ship, scheduled in its slots.
    india = [
        o for o in orders if o["marketplace_id"] == "A21TJRUUN4KGV" and o["fulfillment_channel"] == "MFN"
    ]
    assert sum("AMAZON_EASY_SHIP" in o["programs"] for o in india) >= len(india) * 2 // 3
    assert scenario.easy_ship.marketplaces == ("A21TJRUUN4KGV",)


def _seller(**overrides: Any) -> dict[str, Any]:
    return {
        "seller_id": "A1SELLER",
        "marketplaces": ["ATVPDKIKX0DER"],
        "applications": [TEST_APPLICATION],
        **overrides,
    }


@pytest.mark.parametrize(
    ("seller", "problem"),
    [
        (_seller(marketplaces=["A1PA6795UKMFR9"]), "region eu"),
        (_seller(marketplaces=["NOTAMARKETPLACE"]), "unknown marketplace"),
        (_seller(usage_plans={"getEverything": {"rate": 1, "burst": 1}}), "unknown operations"),
        (_seller(orders={"items_per_order": [3, 1]}), "lower bound"),
        (_seller(orders={"pending_share": 1.5}), "less than or equal to 1"),
        (_seller(applications=[]), "at least 1"),
    ],
)
def test_invalid_scenarios_name_the_problem(seller: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        parse_scenario({"sellers": [seller]})


def test_credentials_cannot_authorise_two_sellers() -> None:
    with pytest.raises(ConfigurationError, match="only one seller"):
        parse_scenario({"sellers": [_seller(), _seller(seller_id="A2SELLER")]})


def test_unknown_scenario_file_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match=r"no-such-scenario\.yaml"):
        load_scenario("no-such-scenario.yaml")


def test_scenario_is_frozen() -> None:
    scenario: Scenario = tiny_scenario()
    with pytest.raises(ValueError, match="frozen"):
        scenario.seed = 4  # type: ignore[misc]
