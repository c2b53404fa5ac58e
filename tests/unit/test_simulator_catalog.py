"""The simulator's Catalog Items API 2022-04-01 through SimulatorState (no HTTP): item lookup with the
included data the model allows, search by identifiers and keywords, paging, and its refusals."""

from __future__ import annotations

from typing import Any

import pytest

from ordersync.simulator.state import OPERATIONS, SimResponse, SimulatorState
from ordersync.simulator.testing import TEST_SELLER, access_token, tiny_scenario, validate_response

pytestmark = pytest.mark.unit

US = "ATVPDKIKX0DER"
ITEMS = "/catalog/2022-04-01/items"
CATALOGUE = [
    {
        "sku": "MUG-001",
        "asin": "B0TESTMUG1",
        "ean": "4006381333931",
        "title": "Blue Coffee Mug",
        "price": "12.90",
    },
    {
        "sku": "MUG-002",
        "asin": "B0TESTMUG2",
        "ean": "4006381333948",
        "title": "Red Coffee Mug",
        "price": "13.90",
    },
    {"sku": "LAMP-01", "asin": "B0TESTLMP1", "ean": "4006381333955", "title": "Desk Lamp", "price": "29.00"},
]


@pytest.fixture
def sim() -> tuple[SimulatorState, str]:
    state = SimulatorState(tiny_scenario(seller={"catalogue": CATALOGUE}))
    return state, access_token(state)


def call(state: SimulatorState, token: str, operation: str, path: str, **kwargs: Any) -> SimResponse:
    state.reset_buckets()  # the plan is 2 requests per second, burst 2: these tests are about content
    response = state.call(operation, access_token=token, path=path, **kwargs)
    op = OPERATIONS[operation]
    validate_response(op.api, op.operation_id, response.status, response.body, response.headers)
    return response


def get_item(state: SimulatorState, token: str, asin: str, **query: str) -> SimResponse:
    return call(state, token, "getCatalogItem", f"{ITEMS}/{asin}", path_params={"asin": asin}, query=query)


def search(state: SimulatorState, token: str, **query: str) -> SimResponse:
    return call(state, token, "searchCatalogItems", ITEMS, query=query)


def test_get_catalog_item_gives_summaries_by_default(sim: tuple[SimulatorState, str]) -> None:
    state, token = sim
    response = get_item(state, token, "B0TESTMUG1", marketplaceIds=US)
    assert response.status == 200
    assert set(response.body) == {"asin", "summaries"}
    assert response.body["summaries"][0]["itemName"] == "Blue Coffee Mug"
    assert response.body["summaries"][0]["marketplaceId"] == US


def test_get_catalog_item_gives_images_dimensions_identifiers_and_attributes(
    sim: tuple[SimulatorState, str],
) -> None:
    state, token = sim
    included = "summaries,images,dimensions,identifiers,attributes"
    body = get_item(state, token, "B0TESTLMP1", marketplaceIds=US, includedData=included).body
    assert body["identifiers"] == [
        {"marketplaceId": US, "identifiers": [{"identifierType": "EAN", "identifier": "4006381333955"}]}
    ]
    image = body["images"][0]["images"][0]
    assert image["variant"] == "MAIN"
    assert image["link"].startswith("https://")
    assert "B0TESTLMP1" in image["link"]
    dimensions = body["dimensions"][0]
    for part in ("item", "package"):
        assert {"length", "width", "height", "weight"} <= set(dimensions[part])
    # The package holds the item: larger and heavier.
    assert dimensions["package"]["length"]["value"] > dimensions["item"]["length"]["value"]
    assert dimensions["package"]["weight"]["value"] > dimensions["item"]["weight"]["value"]
    assert body["attributes"]["item_name"][0]["value"] == "Desk Lamp"
    # The same ASIN always looks the same.
    again = get_item(state, token, "B0TESTLMP1", marketplaceIds=US, includedData=included).body
    assert again == body


def test_an_unknown_asin_or_a_marketplace_without_it_is_not_found(sim: tuple[SimulatorState, str]) -> None:
    state, token = sim
    unknown = get_item(state, token, "B000000000", marketplaceIds=US)
    assert unknown.status == 404
    assert "B000000000" in unknown.body["errors"][0]["details"]
    elsewhere = get_item(state, token, "B0TESTMUG1", marketplaceIds="A1PA6795UKMFR9")
    assert elsewhere.status == 404


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"marketplaceIds": "NOTAMARKET"},
        {"marketplaceIds": US, "includedData": "summaries,bogus"},
    ],
)
def test_get_catalog_item_refuses_bad_parameters(
    sim: tuple[SimulatorState, str], query: dict[str, str]
) -> None:
    state, token = sim
    assert get_item(state, token, "B0TESTMUG1", **query).status == 400


def test_search_by_identifiers(sim: tuple[SimulatorState, str]) -> None:
    state, token = sim
    by_ean = search(state, token, marketplaceIds=US, identifiers="4006381333948", identifiersType="EAN")
    assert [i["asin"] for i in by_ean.body["items"]] == ["B0TESTMUG2"]
    assert by_ean.body["numberOfResults"] == 1
    by_asin = search(
        state, token, marketplaceIds=US, identifiers="B0TESTMUG1,B0TESTLMP1", identifiersType="ASIN"
    )
    assert [i["asin"] for i in by_asin.body["items"]] == ["B0TESTLMP1", "B0TESTMUG1"]
    by_sku = search(
        state, token, marketplaceIds=US, identifiers="MUG-001", identifiersType="SKU", sellerId=TEST_SELLER
    )
    assert [i["asin"] for i in by_sku.body["items"]] == ["B0TESTMUG1"]
    no_seller = search(state, token, marketplaceIds=US, identifiers="MUG-001", identifiersType="SKU")
    assert no_seller.status == 400
    assert search(state, token, marketplaceIds=US, identifiers="MUG-001").status == 400


def test_search_by_keywords_with_pages(sim: tuple[SimulatorState, str]) -> None:
    state, token = sim
    first = search(state, token, marketplaceIds=US, keywords="coffee,mug", pageSize="1")
    assert first.body["numberOfResults"] == 2
    assert [i["asin"] for i in first.body["items"]] == ["B0TESTMUG1"]
    token_next = first.body["pagination"]["nextToken"]
    second = search(
        state, token, marketplaceIds=US, keywords="coffee,mug", pageSize="1", pageToken=token_next
    )
    assert [i["asin"] for i in second.body["items"]] == ["B0TESTMUG2"]
    assert "nextToken" not in second.body["pagination"]
    none = search(state, token, marketplaceIds=US, keywords="teapot")
    assert (none.body["numberOfResults"], none.body["items"]) == (0, [])


@pytest.mark.parametrize(
    "query",
    [
        {"marketplaceIds": US},
        {"marketplaceIds": US, "keywords": "mug", "identifiers": "B0TESTMUG1", "identifiersType": "ASIN"},
        {"marketplaceIds": f"{US},A2EUQ1WTGCTBG2", "keywords": "mug"},
        {"keywords": "mug"},
        {"marketplaceIds": US, "keywords": "mug", "pageSize": "21"},
        {"marketplaceIds": US, "keywords": "mug", "pageToken": "garbage"},
    ],
)
def test_search_refuses_bad_parameters(sim: tuple[SimulatorState, str], query: dict[str, str]) -> None:
    state, token = sim
    response = search(state, token, **query)
    assert response.status == 400
    assert response.body["errors"][0]["code"] == "InvalidInput"


def test_catalog_requests_are_throttled_by_the_models_plan(sim: tuple[SimulatorState, str]) -> None:
    state, token = sim
    state.reset_buckets()
    statuses = [
        state.call(
            "getCatalogItem",
            access_token=token,
            path=f"{ITEMS}/B0TESTMUG1",
            path_params={"asin": "B0TESTMUG1"},
            query={"marketplaceIds": US},
        ).status
        for _ in range(3)
    ]
    assert statuses == [200, 200, 429]  # burst 2
