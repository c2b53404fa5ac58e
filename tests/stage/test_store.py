"""The Redis state every stage relies on, against a real Redis: idempotent under re-processing."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
import redis.asyncio as aioredis

from ordersync.channels import Channel
from ordersync.errors import StateLost
from ordersync.state.store import SEQUENCE_GAP_AFTER_LOSS, Store
from ordersync.streams.order_import import build_sales_order
from tests.factories import T0, channel, order

pytestmark = pytest.mark.stage


@pytest.fixture
def store(redis_client: aioredis.Redis, redis_key_prefix: str) -> Store:
    return Store(redis_client, redis_key_prefix)


async def test_cursor_roundtrip(store: Store) -> None:
    assert await store.cursor("acme-us") is None
    await store.save_cursor("acme-us", T0)
    assert await store.cursor("acme-us") == T0


async def test_versions_only_move_forward(store: Store) -> None:
    later = T0 + timedelta(minutes=5)
    assert await store.is_new_version("downloaded", "S1", "111-1111111-1111111", T0)
    assert await store.record_version("downloaded", "S1", "111-1111111-1111111", later)
    assert not await store.is_new_version("downloaded", "S1", "111-1111111-1111111", T0)
    assert not await store.is_new_version("downloaded", "S1", "111-1111111-1111111", later)
    assert not await store.record_version("downloaded", "S1", "111-1111111-1111111", T0)
    assert await store.is_new_version("downloaded", "S1", "111-1111111-1111111", later + timedelta(seconds=1))
    await store.forget_versions("S1", "111-1111111-1111111", ("downloaded",))
    assert await store.is_new_version("downloaded", "S1", "111-1111111-1111111", T0)


async def test_one_sender_at_a_time_claims_an_order_version(store: Store) -> None:
    order_id, later = "111-1111111-1111111", T0 + timedelta(minutes=5)
    claims = await asyncio.gather(
        *(
            store.claim_version("downloaded", "S1", order_id, T0, ttl_s=60, owner=f"sender-{n}")
            for n in range(5)
        )
    )
    assert sorted(claims) == ["claimed"] * 4 + ["mine"]
    holder = f"sender-{claims.index('mine')}"
    # Its holder trying again takes it again; a newer version is a new claim, which holds the older too.
    assert await store.claim_version("downloaded", "S1", order_id, T0, ttl_s=60, owner=holder) == "mine"
    assert await store.claim_version("downloaded", "S1", order_id, later, ttl_s=60, owner="poll") == "mine"
    assert await store.claim_version("downloaded", "S1", order_id, T0, ttl_s=60, owner=holder) == "claimed"
    # Released by its holder only.
    await store.release_claim("S1", order_id, later, "someone else")
    assert await store.claim_version("downloaded", "S1", order_id, later, ttl_s=60, owner="x") == "claimed"
    await store.release_claim("S1", order_id, later, "poll")
    assert await store.claim_version("downloaded", "S1", order_id, later, ttl_s=60, owner="x") == "mine"
    # Recorded as sent: no claim for it or anything older.
    await store.record_version("downloaded", "S1", order_id, later)
    assert await store.claim_version("downloaded", "S1", order_id, later, ttl_s=60, owner="y") == "sent"
    assert await store.claim_version("downloaded", "S1", order_id, T0, ttl_s=60, owner="y") == "sent"


async def test_a_dead_senders_claim_lapses(store: Store) -> None:
    order_id = "111-1111111-1111111"
    assert await store.claim_version("downloaded", "S1", order_id, T0, ttl_s=0.2, owner="died") == "mine"
    assert await store.claim_version("downloaded", "S1", order_id, T0, ttl_s=0.2, owner="next") == "claimed"
    await asyncio.sleep(0.3)
    assert await store.claim_version("downloaded", "S1", order_id, T0, ttl_s=0.2, owner="next") == "mine"


async def test_sales_order_codes_are_stable_and_never_reused(store: Store) -> None:
    first = await asyncio.gather(
        *(store.sales_order_code("S1", "111-1111111-1111111", "SO") for _ in range(5))
    )
    codes = {code for code, _ in first}
    assert len(codes) == 1, "concurrent imports of one order agree on one code"
    assert sum(new for _, new in first) == 1
    other, new = await store.sales_order_code("S1", "222-2222222-2222222", "SO")
    assert new
    assert other not in codes
    assert other > codes.pop()


async def test_a_kept_sequence_found_missing_is_never_started_again_at_one(store: Store) -> None:
    """A stage that rebuilds its sequences from Kafka finds one gone: Redis lost it, and a code is not
    given from 1 again (an earlier order's). Rebuilt, it resumes above the highest code on Kafka with a
    margin for codes given but not published when Redis was lost, and never goes back."""
    with pytest.raises(StateLost):
        await store.sales_order_code("S1", "111-1111111-1111111", "SO", sequence_kept=True)
    await store.resume_sequences({"SO": 41, "NEW": 0})
    code, new = await store.sales_order_code("S1", "111-1111111-1111111", "SO", sequence_kept=True)
    assert (code, new) == (f"SO{41 + SEQUENCE_GAP_AFTER_LOSS + 1:08d}", True)
    fresh, _ = await store.sales_order_code("S1", "222-2222222-2222222", "NEW", sequence_kept=True)
    assert fresh == "NEW00000001"  # a prefix nothing was published under starts at 1
    await store.resume_sequences({"SO": 3})  # an older rebuild's figure never lowers a sequence
    later, _ = await store.sales_order_code("S1", "333-3333333-3333333", "SO", sequence_kept=True)
    assert later > code


async def test_sales_order_and_listings(store: Store) -> None:
    chan: Channel = channel()
    sales = build_sales_order(order(), chan, {"SKU-1": "STK-1"}, "SO00000001")
    await store.save_sales_order(sales)
    assert await store.sales_order("A1ACME", "111-1111111-1111111") == sales
    assert await store.sales_order("A1ACME", "999-9999999-9999999") is None
    await store.set_listings("acme-us", {"SKU-1": "STK-1", "SKU-2": "STK-2"})
    assert await store.stock_codes("acme-us", ["SKU-1", "SKU-9"]) == {"SKU-1": "STK-1"}


async def test_invoice_quantities_count_once_and_package_ids_are_stable(store: Store) -> None:
    order = "111-1111111-1111111"
    assert not (await store.invoice_context("S1", order, "INV-1")).seen
    assert await store.add_requested("S1", order, "INV-1", {"A": 1, "B": 2})
    assert not await store.add_requested("S1", order, "INV-1", {"A": 1, "B": 2})
    context = await store.invoice_context("S1", order, "INV-1")
    assert (context.seen, context.requested, context.sales_order) == (True, {"A": 1, "B": 2}, None)
    # Done once more (a replay: None) only sets the status; a second invoice adds its own.
    await store.invoice_done("S1", order, "INV-1", None, invoice_number="INV-1")
    await store.invoice_done("S1", order, "INV-2", {"A": 3}, invoice_number="INV-2")
    assert (await store.invoice_context("S1", order, "INV-2")).requested == {"A": 4, "B": 2}
    assert (await store.order_status("S1", order))["invoice_number"] == "INV-2"
    first = await store.package_references("S1", order, "INV-1", range(2))
    again = await store.package_references("S1", order, "INV-1", range(2))
    second_invoice = await store.package_references("S1", order, "INV-3", [0])
    assert first == again == ["1", "2"]
    assert second_invoice == ["3"]


async def test_status_and_task_health(store: Store) -> None:
    await store.set_order_status("S1", "111-1111111-1111111", stage="imported", attempts=2)
    await store.set_order_status("S1", "111-1111111-1111111", writeback="Success")
    assert await store.order_status("S1", "111-1111111-1111111") == {
        "stage": "imported",
        "attempts": "2",
        "writeback": "Success",
    }
    await store.record_task("download", "acme-us", ok=True, detail="3 pages")
    await store.record_task("download", "acme-us", ok=False, detail="timeout")
    task = await store.task("download", "acme-us")
    assert task["last_result"] == "3 pages"
    assert task["last_error"] == "timeout"
    assert task["last_success"] <= task["last_error_at"]
