"""One listing fixed by hand is checked as a file's row is, and the listings search matches any part of
any identifier whatever the case."""

from __future__ import annotations

import pytest

from ordersync.state.listings import ListingRow, ListingsRejected, matches, parse_listing

pytestmark = pytest.mark.unit


def test_one_row_is_checked_as_a_files_row_is() -> None:
    row = parse_listing({"Merchant SKU": " Red-Mug ", "Client SKU Id": "MUG-RED", "ASIN": "B0MUGRED01"})
    assert row == ListingRow("MUG-RED", "Red-Mug", asin="B0MUGRED01")
    with pytest.raises(ListingsRejected) as refused:
        parse_listing({"Merchant SKU": "x" * 41})
    assert refused.value.problems == [
        "Client SKU Id is empty",
        "seller SKU of 41 characters (Amazon's are 1 to 40)",
    ]
    with pytest.raises(ListingsRejected, match="unknown column"):
        parse_listing({"Merchant SKU": "a", "Client SKU Id": "b", "Colour": "red"})


@pytest.mark.parametrize(
    ("query", "found"),
    [("", True), ("mug", True), ("RED-M", True), ("b0mugred", True), ("381333", True), ("blue", False)],
)
def test_search_matches_any_part_of_any_identifier(query: str, found: bool) -> None:
    row = ListingRow("MUG-RED", "Red-Mug-11oz", asin="B0MUGRED01", ean="4006381333931")
    assert matches(row, query) is found
