"""Buyers' personal data through the real stage processes: two sellers allowed it (one on Orders v0 with
Restricted Data Tokens, one on 2026-01-01 by role), notifications on. Every name, street, postal code,
phone and e-mail the simulator gave out is absent in the clear from every topic (from offset 0), every
Redis key and every stage's log, and is there sealed: it opens with the key ring."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import redis

from ordersync.clock import EpochClock
from ordersync.dev.demo import LocalPipeline, local_pipeline
from ordersync.kafka.reader import TopicReader
from ordersync.privacy.keyring import open_key_ring
from ordersync.privacy.orders import open_order
from ordersync.schemas.events import AmazonOrder, OrderEnriched, OrderImported
from ordersync.schemas.topics import CATALOGUE, ORDERS_ENRICHED, ORDERS_IMPORTED
from ordersync.simulator.testing import TEST_APPLICATION, tiny_scenario
from tests.topics import read_all, wait_for

pytestmark = pytest.mark.integration

STAGES = ("order-download", "order-notifications", "item-fetch", "import", "status-projection")


def _personal_strings(pipeline: LocalPipeline) -> set[str]:
    """What of each order the simulator would show only to an application with the roles."""
    assert pipeline.simulator is not None
    found: set[str] = set()
    for order in pipeline.simulator.state.book.orders.values():
        found |= {order.buyer_name, order.buyer_email}
        if order.address is not None:
            address = order.address
            found |= {address.name, address.line1, address.postal_code, address.phone}
            if address.line2:
                found.add(address.line2)
    return {value for value in found if value and len(value) >= 5}


def _topic_text(bootstrap: str) -> str:
    parts = []
    for spec in CATALOGUE:
        with TopicReader(bootstrap, spec.name, skip_missing=True) as reader:
            parts.extend(r.value.decode("utf-8", "replace") for r in reader.records() if r.value)
    return "\n".join(parts)


def _redis_text(url: str) -> str:
    client = redis.Redis.from_url(url)
    parts = []
    try:
        for key in client.scan_iter(count=1000):
            kind = client.type(key)
            if kind == b"string":
                parts.append(repr(client.get(key)))
            elif kind == b"hash":
                parts.append(repr(client.hgetall(key)))
            elif kind == b"list":
                parts.append(repr(client.lrange(key, 0, -1)))
            elif kind == b"set":
                parts.append(repr(client.smembers(key)))
            elif kind == b"zset":
                parts.append(repr(client.zrange(key, 0, -1)))
            elif kind == b"stream":
                parts.append(repr(client.xrange(key)))
    finally:
        client.close()
    return "\n".join(parts)


async def _opened(pipeline: LocalPipeline, orders: list[AmazonOrder]) -> list[AmazonOrder]:
    assert pipeline.simulator is not None
    settings = pipeline.settings()
    async with AsyncExitStack() as stack:
        clock = EpochClock(pipeline.simulator.state.now)
        ring = await open_key_ring(settings.privacy, settings.aws, clock, stack)
        return [await open_order(order, ring) for order in orders]


@pytest.mark.timeout(600)
def test_personal_data_is_kept_only_sealed_and_never_logged(tmp_path: Path) -> None:
    scenario = tiny_scenario(
        orders={"count": 16, "history_s": 0, "arrival_window_s": 900, "items_per_order": [1, 2]},
        extra_sellers=[
            {
                "seller_id": "A2TESTSELLER",
                "region": "na",
                "marketplaces": ["ATVPDKIKX0DER"],
                "applications": [{**TEST_APPLICATION, "refresh_token": "Atzr|second"}],
                "catalogue_size": 10,
                "orders": {"count": 16, "history_s": 0, "arrival_window_s": 900, "pending_share": 0.0},
            }
        ],
        time_scale=60,
        start=None,
        pii_requires_rdt=True,
    )
    with local_pipeline(
        scenario=scenario,
        run_dir=tmp_path / "run",
        stages=STAGES,
        backoffice=False,
        fetch_pii=True,
        extra_env={"ORDERSYNC_NOTIFICATIONS__WAIT_TIME_S": "1"},
    ) as pipeline:
        assert pipeline.simulator is not None
        bootstrap = pipeline.env["ORDERSYNC_KAFKA__BOOTSTRAP"]

        def imported() -> list[OrderImported]:
            return read_all(bootstrap, ORDERS_IMPORTED)  # type: ignore[return-value]

        simulator = pipeline.simulator

        def imported_orders() -> set[str]:
            return {e.sales_order.amazon_order_id for e in imported() if isinstance(e, OrderImported)}

        wait_for(lambda: len(simulator.state.truth_orders()) == 32, 120, what="every order placed")
        wait_for(lambda: len(imported_orders()) >= 30, 240, what="the orders imported")
        personal = _personal_strings(pipeline)
        enriched = [e for e in read_all(bootstrap, ORDERS_ENRICHED) if isinstance(e, OrderEnriched)]
        topics, stored = _topic_text(bootstrap), _redis_text(pipeline.env["ORDERSYNC_REDIS__URL"])
        logs = "\n".join(path.read_text(errors="replace") for path in (tmp_path / "run").glob("*.log"))
        opened = asyncio.run(_opened(pipeline, [e.order for e in enriched if e.order.personal is not None]))

    assert len(personal) > 50
    for where, text in (("a topic", topics), ("Redis", stored), ("a log", logs)):
        leaked = sorted(value for value in personal if value in text)
        assert not leaked, f"{len(leaked)} personal values in the clear in {where}, e.g. {leaked[:3]}"
    # It is all there, sealed: both sellers' orders open to the simulator's names and streets.
    assert {o.seller_id for o in opened} == {"A1TESTSELLER", "A2TESTSELLER"}
    shown = {o.buyer_name for o in opened} | {o.shipping_address.line1 for o in opened if o.shipping_address}
    assert len(shown & personal) >= 20
