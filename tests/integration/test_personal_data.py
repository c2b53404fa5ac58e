"""Buyers' personal data through the real stage processes: two sellers allowed it (one on Orders v0 with
Restricted Data Tokens, one on 2026-01-01 by role), notifications on. Every name, street, postal code,
phone and e-mail the simulator gave out is absent in the clear from every topic (from offset 0), every
Redis key and every stage's log, and is there sealed: it opens with the key ring."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from ordersync.clock import EpochClock
from ordersync.dev.demo import LocalPipeline, local_pipeline
from ordersync.privacy.keyring import open_key_ring
from ordersync.privacy.orders import open_order
from ordersync.schemas.events import AmazonOrder, OrderEnriched, OrderImported
from ordersync.schemas.topics import ORDERS_ENRICHED, ORDERS_IMPORTED
from ordersync.simulator.testing import TEST_APPLICATION, tiny_scenario
from tests.personal_data import log_text, personal_strings, redis_text, topic_text
from tests.topics import read_all, wait_for

pytestmark = pytest.mark.integration

STAGES = ("order-download", "order-notifications", "item-fetch", "import", "status-projection")


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
        personal = personal_strings(pipeline)
        enriched = [e for e in read_all(bootstrap, ORDERS_ENRICHED) if isinstance(e, OrderEnriched)]
        topics, stored = topic_text(bootstrap), redis_text(pipeline.env["ORDERSYNC_REDIS__URL"])
        logs = log_text(tmp_path / "run")
        opened = asyncio.run(_opened(pipeline, [e.order for e in enriched if e.order.personal is not None]))

    assert len(personal) > 50
    for where, text in (("a topic", topics), ("Redis", stored), ("a log", logs)):
        leaked = sorted(value for value in personal if value in text)
        assert not leaked, f"{len(leaked)} personal values in the clear in {where}, e.g. {leaked[:3]}"
    # It is all there, sealed: both sellers' orders open to the simulator's names and streets.
    assert {o.seller_id for o in opened} == {"A1TESTSELLER", "A2TESTSELLER"}
    shown = {o.buyer_name for o in opened} | {o.shipping_address.line1 for o in opened if o.shipping_address}
    assert len(shown & personal) >= 20
