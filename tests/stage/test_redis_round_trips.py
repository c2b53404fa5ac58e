"""Redis round trips per record, counted at the socket: each stage's work on one order stays within a
few trips to Redis (every command sent alone cost the pipeline most of its CPU)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from redis.asyncio.connection import AbstractConnection

from ordersync.dev.testing import RecordingRuntime
from ordersync.schemas.codec import decode
from ordersync.schemas.envelope import Envelope
from ordersync.schemas.events import OrderEnriched
from ordersync.schemas.topics import INVOICES_ISSUED, ORDERS_IMPORTED, SHIPMENTS_REQUESTED
from ordersync.simulator.runner import RunningSimulator
from ordersync.simulator.testing import tiny_scenario
from ordersync.streams.invoice_issued import handle as invoice_handle
from ordersync.streams.order_import import handle as import_handle
from tests.factories import T0, invoice_record, one_line_sales_order, order

pytestmark = pytest.mark.stage


class TripCounter:
    def __init__(self) -> None:
        self.trips = 0


@contextmanager
def counting_trips(monkeypatch: pytest.MonkeyPatch) -> Iterator[TripCounter]:
    """Every request written to a Redis socket (a pipeline is one) while the block runs."""
    counter = TripCounter()
    send: Callable[..., Awaitable[None]] = AbstractConnection.send_packed_command

    async def counted(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        counter.trips += 1
        await send(self, command, check_health)

    with monkeypatch.context() as patch:
        patch.setattr(AbstractConnection, "send_packed_command", counted)
        yield counter


@pytest.fixture
async def runtime(make_runtime: Any) -> Any:
    scenario = tiny_scenario(orders={"count": 1})
    with RunningSimulator(scenario) as sim:
        yield await make_runtime("import", scenario, sim)


@pytest.fixture
async def invoicing(make_runtime: Any) -> Any:
    scenario = tiny_scenario(orders={"count": 1})
    with RunningSimulator(scenario) as sim:
        yield await make_runtime("invoice-issued", scenario, sim)


def _enriched(runtime: RecordingRuntime, number: int, **changes: Any) -> Envelope[OrderEnriched]:
    chan = runtime.channels.channels[0]
    amazon = order(seller_id=chan.seller_id, amazon_order_id=f"111-0000000-{number:07d}", **changes)
    return Envelope.wrap(
        OrderEnriched(channel=chan.name, order=amazon), seller_id=chan.seller_id, correlation_id="c"
    )


async def test_import_round_trips_per_order(
    runtime: RecordingRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    chan = runtime.channels.channels[0]
    await runtime.store.set_listings(chan.name, {"SKU-1": "STK-1"})
    await import_handle(runtime, _enriched(runtime, 0))  # the connections and scripts are ready
    orders = [_enriched(runtime, n) for n in range(1, 21)]
    with counting_trips(monkeypatch) as new:
        for envelope in orders:
            await import_handle(runtime, envelope)
    with counting_trips(monkeypatch) as replayed:
        for envelope in orders:
            await import_handle(runtime, envelope)
    changed = [
        _enriched(runtime, n, order_status="Shipped", last_update_date=T0 + timedelta(hours=1))
        for n in range(1, 21)
    ]
    with counting_trips(monkeypatch) as updated:
        for envelope in changed:
            await import_handle(runtime, envelope)
    assert len(runtime.payloads(ORDERS_IMPORTED.name)) == 41
    # New: read what is known, keep the enriched version, stock codes, sequence, code, sales order, then
    # the version mark with the status. A replay: read, keep. A change: read, keep, mark with status.
    # (A stage also checks once per record, and once per event sent, that Redis kept its state: not
    # counted here, where no rebuild is registered.)
    assert (new.trips / 20, replayed.trips / 20, updated.trips / 20) == (7, 2, 3)


async def test_invoice_round_trips_per_invoice(
    invoicing: RecordingRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    channel = invoicing.channels.channels[0]
    seller = channel.seller_id
    invoices = []
    for number in range(21):
        order_id = f"111-0000000-{number:07d}"
        sales = one_line_sales_order(seller, order_id, channel=channel.name, order_item_id="10", quantity=1)
        await invoicing.store.save_sales_order(sales)
        invoices.append(decode(invoice_record(seller, f"INV-{number}", order_id, "10"), INVOICES_ISSUED))
    await invoice_handle(invoicing, invoices[0])  # the connections and scripts are ready
    with counting_trips(monkeypatch) as new:
        for envelope in invoices[1:]:
            await invoice_handle(invoicing, envelope)
    with counting_trips(monkeypatch) as replayed:
        for envelope in invoices[1:]:
            await invoice_handle(invoicing, envelope)
    requests = invoicing.payloads(SHIPMENTS_REQUESTED.name)
    assert len(requests) == 41
    assert {r.package_reference_id for r in requests} == {"1"}  # a replay asks for the very same package
    # Read what is known; the package's reference; the quantities counted with the status. A replay
    # the same (its quantities are not counted again).
    assert (new.trips / 20, replayed.trips / 20) == (3, 3)
