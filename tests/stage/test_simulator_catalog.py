"""The simulator's Catalog Items API 2022-04-01 over real HTTP (RunningSimulator, httpx)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ordersync.simulator import RunningSimulator, SimulatorState
from ordersync.simulator.testing import tiny_scenario, validate_response

pytestmark = pytest.mark.stage

US = "ATVPDKIKX0DER"
CATALOGUE = [
    {
        "sku": "MUG-001",
        "asin": "B0TESTMUG1",
        "ean": "4006381333931",
        "title": "Blue Coffee Mug",
        "price": "12.90",
    },
    {"sku": "LAMP-01", "asin": "B0TESTLMP1", "ean": "4006381333955", "title": "Desk Lamp", "price": "29.00"},
]


@pytest.fixture
def sim() -> Iterator[RunningSimulator]:
    scenario = tiny_scenario(seller={"catalogue": CATALOGUE}, orders={"count": 2})
    with RunningSimulator(SimulatorState(scenario)) as running:
        yield running


def checked(sim: RunningSimulator, operation_id: str, response: httpx.Response) -> Any:
    sim.state.reset_buckets()  # burst 2: the next request is about content, not throttling
    validate_response(
        "catalog-items", operation_id, response.status_code, response.json(), dict(response.headers)
    )
    return response.json()


def test_get_catalog_item_and_404_over_http(sim: RunningSimulator, sim_http: httpx.Client) -> None:
    params = {"marketplaceIds": US, "includedData": "summaries,images,dimensions,identifiers"}
    found = sim_http.get("/catalog/2022-04-01/items/B0TESTMUG1", params=params)
    assert found.status_code == 200
    assert found.headers["x-amzn-RateLimit-Limit"] == "2.0"
    body = checked(sim, "getCatalogItem", found)
    assert body["summaries"][0]["itemName"] == "Blue Coffee Mug"
    assert body["identifiers"][0]["identifiers"][0]["identifier"] == "4006381333931"
    missing = sim_http.get("/catalog/2022-04-01/items/B000000000", params=params)
    assert missing.status_code == 404
    assert checked(sim, "getCatalogItem", missing)["errors"][0]["code"] == "NotFound"


def test_search_catalog_items_over_http(sim: RunningSimulator, sim_http: httpx.Client) -> None:
    by_keywords = sim_http.get("/catalog/2022-04-01/items", params={"marketplaceIds": US, "keywords": "lamp"})
    assert [i["asin"] for i in checked(sim, "searchCatalogItems", by_keywords)["items"]] == ["B0TESTLMP1"]
    by_ean = sim_http.get(
        "/catalog/2022-04-01/items",
        params={"marketplaceIds": US, "identifiers": "4006381333931", "identifiersType": "EAN"},
    )
    assert [i["asin"] for i in checked(sim, "searchCatalogItems", by_ean)["items"]] == ["B0TESTMUG1"]
    refused = sim_http.get("/catalog/2022-04-01/items", params={"keywords": "lamp"})
    assert refused.status_code == 400
    assert checked(sim, "searchCatalogItems", refused)["errors"][0]["code"] == "InvalidInput"


def test_catalog_burst_is_two_over_http(sim: RunningSimulator, sim_http: httpx.Client) -> None:
    sim.state.reset_buckets()
    params = {"marketplaceIds": US}
    statuses = [
        sim_http.get("/catalog/2022-04-01/items/B0TESTMUG1", params=params).status_code for _ in range(3)
    ]
    assert statuses == [200, 200, 429]
