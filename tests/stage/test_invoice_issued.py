"""Invoice issued with a real Redis: an invoice may arrive a moment before its sales order is stored;
it waits for it (bounded), then on the redrive tiers, and is refused with a clear reason at the redrive
deadline."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ordersync.dev.testing import RecordingRuntime
from ordersync.schemas.codec import decode
from ordersync.schemas.events import ShipmentRequested
from ordersync.schemas.topics import INVOICES_ISSUED, REDRIVE_TIERS, SHIPMENTS_REQUESTED
from ordersync.settings import InvoiceSettings, RedriveSettings
from ordersync.simulator.runner import RunningSimulator
from ordersync.simulator.testing import tiny_scenario
from ordersync.streams.invoice_issued import handle
from tests.factories import invoice_record, one_line_sales_order
from tests.records import Message, Record, parked

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


async def test_an_invoice_of_an_order_not_imported_is_parked_then_refused_at_the_redrive_deadline(
    make_runtime: Any,
) -> None:
    scenario = tiny_scenario(orders={"count": 1})
    with RunningSimulator(scenario) as sim:
        runtime = await make_runtime("invoice-issued", scenario, sim)
        runtime.settings = runtime.settings.model_copy(
            update={
                "invoice": InvoiceSettings(sales_order_wait_s=0.5),
                "redrive": RedriveSettings(delays_s=(60.0, 60.0, 60.0), deadline_s=100.0),
            }
        )
        seller = runtime.channels.channels[0].seller_id
        await runtime.serve(INVOICES_ISSUED, lambda env: handle(runtime, env))
        value = invoice_record(seller, "INV-2", ORDER_ID, ITEM)
        record = Record(Message(value, f"{seller}:{ORDER_ID}".encode()))
        await runtime.process(INVOICES_ISSUED, record, lambda env: handle(runtime, env))  # type: ignore[arg-type]
        [(_, copy)] = parked(runtime)
        assert copy.error == (
            f"invoice INV-2: order {ORDER_ID} of seller {seller} is not imported yet"
            " (waited 0.5 s for its sales order)"
        )
        for _ in range(2):  # due at 60 s: parked again; at 120 s, past the deadline: refused
            sim.state.advance_clock(61)
            tier_record, _ = parked(runtime)[-1]
            await runtime.process(REDRIVE_TIERS[0], tier_record, runtime._redrive)  # type: ignore[arg-type]
        assert len(parked(runtime)) == 2
        [letter] = [e.envelope.payload for e in runtime.emitted if e.topic == "invoices.issued.dlq"]
        assert letter.error_type == "Permanent"
        assert letter.error.endswith("was never imported (no sales order by the redrive deadline)")
        assert letter.original_value() == value
        assert runtime.payloads(SHIPMENTS_REQUESTED.name) == []
