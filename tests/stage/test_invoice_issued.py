"""Invoice issued with a real Redis: an invoice may arrive a moment before its sales order is stored;
it waits for it (bounded), then is refused with a clear reason."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ordersync.dev.testing import RecordingRuntime
from ordersync.errors import Permanent
from ordersync.schemas.codec import decode
from ordersync.schemas.events import ShipmentRequested
from ordersync.schemas.topics import INVOICES_ISSUED, SHIPMENTS_REQUESTED
from ordersync.simulator.runner import RunningSimulator
from ordersync.simulator.testing import tiny_scenario
from ordersync.streams.invoice_issued import handle
from tests.factories import invoice_record, one_line_sales_order

pytestmark = pytest.mark.stage

ORDER_ID, ITEM = "555-5555555-5555555", "66666666666666"


@pytest.fixture
async def runtime(make_runtime: Any) -> Any:
    scenario = tiny_scenario(orders={"count": 1})
    with RunningSimulator(scenario) as sim:
        made = await make_runtime("invoice-issued", scenario, sim)
        # Tests wait less than a deployment would.
        made.settings = made.settings.model_copy(
            update={"invoice": made.settings.invoice.model_copy(update={"sales_order_wait_s": 2.0})}
        )
        yield made


async def test_an_invoice_waits_for_a_sales_order_stored_a_moment_later(runtime: RecordingRuntime) -> None:
    seller = runtime.channels.channels[0].seller_id
    invoice = decode(invoice_record(seller, "INV-1", ORDER_ID, ITEM), INVOICES_ISSUED)

    async def store_later() -> None:
        await asyncio.sleep(0.5)
        channel = runtime.channels.channels[0].name
        sales_order = one_line_sales_order(seller, ORDER_ID, channel=channel, order_item_id=ITEM, quantity=1)
        await runtime.store.save_sales_order(sales_order)

    await asyncio.gather(handle(runtime, invoice), store_later())
    [request] = runtime.payloads(SHIPMENTS_REQUESTED.name)
    assert isinstance(request, ShipmentRequested)
    assert request.amazon_order_id == ORDER_ID


async def test_an_invoice_of_an_order_never_imported_is_refused_after_the_wait(
    runtime: RecordingRuntime,
) -> None:
    seller = runtime.channels.channels[0].seller_id
    invoice = decode(invoice_record(seller, "INV-2", ORDER_ID, ITEM), INVOICES_ISSUED)
    with pytest.raises(Permanent, match=r"was never imported \(waited 2 s for its sales order\)"):
        await handle(runtime, invoice)
    assert runtime.payloads(SHIPMENTS_REQUESTED.name) == []
