"""Item fetch against the simulator and a real Redis: items fetched once per order version, Pending
orders held without spending quota, and the full address through a restricted data token, sealed."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from pydantic import SecretStr

from ordersync.amazon.client import OrdersQuery
from ordersync.privacy import new_kek
from ordersync.privacy.orders import open_order
from ordersync.schemas.envelope import Envelope
from ordersync.schemas.events import OrderDownloaded, OrderEnriched
from ordersync.schemas.topics import ORDERS_ENRICHED
from ordersync.settings import AwsSettings, PrivacySettings
from ordersync.simulator.runner import RunningSimulator
from ordersync.simulator.testing import tiny_scenario
from ordersync.streams.item_fetch import handle

pytestmark = pytest.mark.stage


async def _downloaded(runtime: Any) -> list[Envelope[OrderDownloaded]]:
    channel = runtime.channels.channels[0]
    page = await runtime.amazon(channel).list_orders_page(
        OrdersQuery(
            updated_after=__import__("datetime").datetime(2025, 1, 1, tzinfo=__import__("datetime").UTC)
        )
    )
    return [
        Envelope.wrap(
            OrderDownloaded(channel=channel.name, order=o), seller_id=channel.seller_id, correlation_id="c"
        )
        for o in page.orders
    ]


async def test_items_once_per_version_pending_held_and_the_address_with_pii(
    make_runtime: Any, aws: AwsSettings
) -> None:
    scenario = tiny_scenario(orders={"count": 8, "pending_share": 0.5, "pending_duration_s": [90000, 90000]})
    privacy = PrivacySettings(key_bucket=f"keys-{uuid.uuid4().hex[:12]}", kek=SecretStr(new_kek()))
    with RunningSimulator(scenario) as sim:
        sim.state.advance_clock(300)
        runtime = await make_runtime(
            "item-fetch", scenario, sim, other_settings={"aws": aws, "privacy": privacy}
        )
        runtime.channels = runtime.channels.model_copy(
            update={"channels": (runtime.channels.channels[0].model_copy(update={"fetch_pii": True}),)}
        )
        events = await _downloaded(runtime)
        for event in events:
            await handle(runtime, event)
            await handle(runtime, event)  # redelivered: no second fetch, no second event
        enriched: list[OrderEnriched] = runtime.payloads(ORDERS_ENRICHED.name)
        pending = [e for e in events if e.payload.order.order_status == "Pending"]
        assert pending, "the scenario has Pending orders"
        assert len(enriched) == len(events) - len(pending)
        ring = await runtime.key_ring()
        for event in enriched:
            assert event.order.items
            address = event.order.shipping_address
            assert address is not None
            # Name and street leave the stage sealed; the rest of the address stays readable.
            assert (address.name, address.line1, address.postal_code) == (None, None, None)
            assert address.city
            assert address.country_code
            assert event.order.personal is not None
            # Name and street come only with the restricted data token.
            opened = (await open_order(event.order, ring)).shipping_address
            assert opened is not None
            assert opened.name
            assert opened.line1
            assert opened.name not in event.model_dump_json()
        calls = sim.state.counters_json()["sellers"][scenario.sellers[0].seller_id]
        assert calls["getOrderItems"]["calls"] == len(enriched)  # none for Pending, none twice
        assert calls["getOrderAddress"]["calls"] == len(enriched)
