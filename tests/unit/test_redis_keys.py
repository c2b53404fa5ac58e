"""The Redis key catalogue: one entry per family, keys rendered from it, and the docs in sync."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ordersync.state import keys

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def test_every_family_is_catalogued_once() -> None:
    patterns = [family.pattern for family in keys.CATALOGUE]
    assert len(patterns) == len(set(patterns))
    declared = {value for value in vars(keys).values() if isinstance(value, keys.KeyFamily)}
    assert declared == set(keys.CATALOGUE), "a family declared in the module is missing from CATALOGUE"


def test_keys_carry_the_seller_in_a_hash_tag_and_refuse_wrong_arity() -> None:
    assert keys.SHIPMENT.key("os", "A1SELLER", "111-1", "2") == "os:shipment:{A1SELLER}:111-1:2"
    assert keys.CURSOR.key("acme", "acme-us") == "acme:cursor:acme-us"
    assert keys.LISTINGS_INDEX.key("os", "acme-us", "asin") == "os:listings:acme-us:by:asin"
    assert keys.TASKS.key("os") == "os:tasks"
    assert (
        keys.HEALTH_ACCOUNT.key("os", "A1", "acme-us", "orders", detail=("m", "42"))
        == "os:health:{A1}:acme-us:orders:m:42"
    )
    with pytest.raises(ValueError, match="takes 2 values"):
        keys.SALES_ORDER.key("os", "A1SELLER")
    with pytest.raises(ValueError, match="bad part"):
        keys.KeyFamily("x", ("Bad Part",), "string", "me", "none", "nothing")


def test_every_family_sharing_a_seller_uses_the_tag() -> None:
    for family in keys.CATALOGUE:
        if "seller" in "".join(family.variables):
            assert any(p.startswith("{") for p in family.parts), family.pattern


def test_the_ops_guide_lists_the_catalogue() -> None:
    text = (ROOT / "docs" / "ops.md").read_text()
    match = re.search(r"<!-- redis-keys:begin -->\n(.*?)<!-- redis-keys:end -->", text, re.S)
    assert match, "docs/ops.md has no generated Redis keys section"
    assert match.group(1) == keys.markdown_table(), "run `make docs-keys`"


def test_no_module_spells_a_key_of_its_own() -> None:
    """Stages reach their keys through the catalogue (``Store.key_of``), never by spelling them."""
    spelled = re.compile(r"""\.key\(\s*["'f]""")
    offenders = []
    for folder in ("ordersync", "producers", "consumers", "streams"):
        for path in (ROOT / folder).rglob("*.py"):
            if "simulator" in path.parts:
                continue  # the simulator's keys are Amazon's ids, not Redis keys
            for number, line in enumerate(path.read_text().splitlines(), start=1):
                if spelled.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []
