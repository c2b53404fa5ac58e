"""Redis round trips per record, counted at the socket: each stage's work on one order stays within a
few trips to Redis (every command sent alone cost the pipeline most of its CPU)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from ordersync.consumers import fulfillment_feed
from ordersync.consumers.shipment_write_back import handle as write_back_handle
from ordersync.dev.testing import RecordingRuntime
from ordersync.producers.order_download import emit_page
from ordersync.schemas.codec import decode
from ordersync.schemas.envelope import Envelope
from ordersync.schemas.events import OrderEnriched, ShipmentItem, ShipmentRequested
from ordersync.schemas.topics import (
    INVOICES_ISSUED,
    ORDERS_IMPORTED,
    SHIPMENTS_CONFIRMED,
    SHIPMENTS_REQUESTED,
)
from ordersync.settings import WriteBackSettings
from ordersync.simulator.runner import RunningSimulator
from ordersync.simulator.testing import tiny_scenario
from ordersync.streams.invoice_issued import handle as invoice_handle
from ordersync.streams.order_import import handle as import_handle
from tests.factories import T0, invoice_record, one_line_sales_order, order
from tests.redis_trips import counting_trips

pytestmark = pytest.mark.stage


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
    # New: read what is known with the items' stock codes, sequence, code (two keys in different cluster
    # slots: two trips), sales order, then the version mark with the status. A replay: read. A change:
    # read, mark with status (an enriched version is kept only for an order not imported).
    # (A stage also checks once per record, and once per event sent, that Redis kept its state: not
    # counted here, where no rebuild is registered.)
    assert (new.trips / 20, replayed.trips / 20, updated.trips / 20) == (5, 1, 2)


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


@pytest.fixture
async def writing_back(make_runtime: Any) -> Any:
    scenario = tiny_scenario(orders={"count": 30})
    with RunningSimulator(scenario) as sim:
        made = await make_runtime("shipment-write-back", scenario, sim)
        made.sim = sim
        yield made


async def _saved_requests(
    runtime: RecordingRuntime, truths: list[dict[str, Any]]
) -> list[Envelope[ShipmentRequested]]:
    """One package of every item of each order, its sales order saved (ship-by far away)."""
    channel = runtime.channels.channels[0]
    requests = []
    for truth in truths:
        order_id = truth["amazon_order_id"]
        lines = truth["items"]
        sales = one_line_sales_order(
            channel.seller_id,
            order_id,
            channel=channel.name,
            order_item_id=lines[0]["order_item_id"],
            quantity=1,
        )
        await runtime.store.save_sales_order(
            sales.model_copy(update={"latest_ship_date": T0 + timedelta(days=400)})
        )
        request = ShipmentRequested(
            channel=channel.name,
            amazon_order_id=order_id,
            package_reference_id="1",
            carrier_code="UPS",
            tracking_number=f"1Z{order_id[-7:]}",
            ship_date=T0,
            items=tuple(
                ShipmentItem(order_item_id=i["order_item_id"], quantity=i["quantity_ordered"]) for i in lines
            ),
        )
        requests.append(
            Envelope.wrap(
                request,
                seller_id=channel.seller_id,
                marketplace_id=truth["marketplace_id"],
                correlation_id="c",
            )
        )
    return requests


@pytest.mark.parametrize("mode", ["confirm", "feed"])
async def test_write_back_round_trips_per_package(
    writing_back: RecordingRuntime, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    runtime = writing_back
    runtime.settings = runtime.settings.model_copy(
        update={"writeback": WriteBackSettings(mode=mode, retry_backoff_s=0.01)}
    )
    channel = runtime.channels.channels[0]
    sim: RunningSimulator = runtime.sim  # type: ignore[attr-defined]
    truths = sim.state.truth_orders(channel.seller_id, status="Unshipped")
    requests = await _saved_requests(runtime, truths[:21])
    await write_back_handle(runtime, requests[0])
    with counting_trips(monkeypatch) as new:
        for envelope in requests[1:]:
            sim.state.advance_clock(1)  # Amazon's confirmShipment bucket refills (2/s, burst 10)
            await write_back_handle(runtime, envelope)
    assert len(runtime.emitted) == (21 if mode == "confirm" else 0)
    # Read the package's state with its order's; write the request with the order's package index.
    # Confirm: the attempt marked pending, Amazon's call recorded for the API health board, the
    # outcome with the order's status. Feed: when the next feed could go (the ship-by rule), parked.
    assert new.trips / 20 == (5 if mode == "confirm" else 4)


async def test_a_feed_costs_the_same_round_trips_whatever_its_size_but_one_per_package_confirmed(
    writing_back: RecordingRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sending a feed and applying its report: what each package needs is read and written for the
    whole batch at once; per package remain only the look before it goes (confirmed meanwhile, or its
    order cancelled?) and its outcome."""
    runtime = writing_back
    runtime.settings = runtime.settings.model_copy(
        update={"writeback": WriteBackSettings(mode="feed", retry_backoff_s=0.01)}
    )
    channel = runtime.channels.channels[0]
    sim: RunningSimulator = runtime.sim  # type: ignore[attr-defined]
    truths = sim.state.truth_orders(channel.seller_id, status="Unshipped")
    trips = {}
    for size, batch in ((1, truths[:1]), (21, truths[1:22])):
        for envelope in await _saved_requests(runtime, batch):
            await write_back_handle(runtime, envelope)
        sim.state.advance_clock(120)  # the next feed may go (and Amazon's createFeed bucket refills)
        with counting_trips(monkeypatch) as sending:
            assert await fulfillment_feed.submit_pending(runtime, channel)
        sim.state.advance_clock(3600)  # Amazon processed it
        with counting_trips(monkeypatch) as applying:
            assert await fulfillment_feed.check_inflight(runtime, channel)
        trips[size] = (sending.trips, applying.trips)
    assert len(runtime.payloads(SHIPMENTS_CONFIRMED.name)) == 22
    per_package = tuple((big - small) / 20 for small, big in zip(trips[1], trips[21], strict=True))
    # Sending: one look per package. Applying: its outcome with its order's status. (The check before
    # an event is sent is not counted here, where no rebuild is registered.)
    assert per_package == (1, 1)


async def test_download_round_trips_per_order_version(
    make_runtime: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    scenario = tiny_scenario(orders={"count": 1})
    with RunningSimulator(scenario) as sim:
        runtime = await make_runtime("order-download", scenario, sim)
        channel = runtime.channels.channels[0]
        versions = [
            order(seller_id=channel.seller_id, amazon_order_id=f"111-0000000-{n:07d}") for n in range(28)
        ]
        # A page sends stage.concurrency versions at once: its connections are opened before counting.
        assert await emit_page(runtime, channel, versions[20:], "poll") == 8
        with counting_trips(monkeypatch) as new:
            sent = await emit_page(runtime, channel, versions[:20], "poll")
        with counting_trips(monkeypatch) as again:
            assert await emit_page(runtime, channel, versions[:20], "poll") == 0
    assert sent == 20
    # The claim; after Kafka's acknowledgement the status, the mark and the claim's release in one
    # MULTI. A version sent already: the claim finds its mark.
    assert (new.trips / 20, again.trips / 20) == (2, 1)
