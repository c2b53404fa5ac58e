"""An imported order's working state lives as long as the order, with a real Redis: it expires when the
order closes (after delivery), while the small marks that say it was imported stay; a later version of
a closed order never becomes a second sales order, and an invoice or a shipment request replayed for it
is refused with that reason instead of being written back again."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from ordersync.consumers import cancellation, shipment_write_back
from ordersync.dev.testing import RecordingRuntime
from ordersync.errors import Permanent
from ordersync.schemas.codec import decode
from ordersync.schemas.envelope import Envelope
from ordersync.schemas.events import (
    OrderCancellationRequested,
    OrderCancellationResult,
    OrderEnriched,
    OrderImported,
    ShipmentItem,
    ShipmentRequested,
)
from ordersync.schemas.topics import (
    INVOICES_ISSUED,
    ORDERS_CANCELLATION_RESULTS,
    ORDERS_IMPORTED,
    SHIPMENTS_REQUESTED,
)
from ordersync.simulator.runner import RunningSimulator
from ordersync.simulator.testing import tiny_scenario
from ordersync.state import keys
from ordersync.state.keys import ORDER_STATE_TTL_S
from ordersync.streams import invoice_issued, order_import
from tests.factories import invoice_record, item, one_line_sales_order, order

pytestmark = pytest.mark.stage

ORDER_ID, ITEM = "111-1111111-1111111", "11111111111111"
DAY = 86400
#: Redis counts a TTL down in real seconds while a test runs.
SLACK_S = 120


@pytest.fixture
def scenario() -> Any:
    return tiny_scenario(orders={"count": 1})


async def runtime_of(make_runtime: Any, stage: str, scenario: Any) -> RecordingRuntime:
    with RunningSimulator(scenario) as sim:
        runtime: RecordingRuntime = await make_runtime(stage, scenario, sim)
        # The stage reckons with the simulator's clock: frozen once the simulator is gone.
    return runtime


@pytest.fixture
async def importer(make_runtime: Any, scenario: Any) -> RecordingRuntime:
    """The import stage, its channel's SKU-1 mapped to a stock code."""
    runtime = await runtime_of(make_runtime, "import", scenario)
    chan = runtime.channels.channels[0]
    await runtime.store.set_listings(chan.name, {"SKU-1": "STK-1"})
    return runtime


def enriched(runtime: RecordingRuntime, **changes: Any) -> Envelope[OrderEnriched]:
    chan = runtime.channels.channels[0]
    amazon = order(seller_id=chan.seller_id, **changes)
    return Envelope.wrap(
        OrderEnriched(channel=chan.name, order=amazon), seller_id=chan.seller_id, correlation_id="c"
    )


async def ttl(runtime: RecordingRuntime, family: keys.KeyFamily, *parts: str) -> int:
    return int(await runtime.store.redis.ttl(runtime.store.key_of(family, *parts)))


async def expire_now(runtime: RecordingRuntime, *names: str) -> None:
    """Let Redis expire the keys, as it does when the order closes."""
    for name in names:
        await runtime.store.redis.pexpire(name, 1)
    await asyncio.sleep(0.05)


async def test_an_imported_orders_working_state_lives_until_it_closes_while_its_marks_stay(
    importer: RecordingRuntime,
) -> None:
    runtime = importer
    seller = runtime.channels.channels[0].seller_id
    now = runtime.clock.now()
    # Ship by in 2 days: delivered (as the privacy rules reckon it) two weeks later, closed 30 days after.
    await order_import.handle(
        runtime,
        enriched(runtime, purchase_date=now, last_update_date=now, latest_ship_date=now + timedelta(days=2)),
    )
    assert len(runtime.payloads(ORDERS_IMPORTED.name)) == 1
    life = (2 + 14 + 30) * DAY
    for family in (keys.SALES_ORDER, keys.ORDER_STATUS):
        assert life - SLACK_S <= await ttl(runtime, family, seller, ORDER_ID) <= life, family.name
    for family in (keys.IMPORTED, keys.SALES_ORDER_CODE):
        assert (
            ORDER_STATE_TTL_S - SLACK_S <= await ttl(runtime, family, seller, ORDER_ID) <= ORDER_STATE_TTL_S
        )

    # A stage that does not know the order (acknowledgement, cancellation) neither extends nor cuts it.
    await runtime.store.set_order_status(seller, ORDER_ID, acknowledgement="Pending")
    assert life - SLACK_S <= await ttl(runtime, keys.ORDER_STATUS, seller, ORDER_ID) <= life


async def test_a_later_version_of_a_closed_order_is_never_imported_again(importer: RecordingRuntime) -> None:
    runtime = importer
    seller = runtime.channels.channels[0].seller_id
    now = runtime.clock.now()
    await order_import.handle(
        runtime, enriched(runtime, purchase_date=now, last_update_date=now, latest_ship_date=now)
    )
    (imported,) = runtime.payloads(ORDERS_IMPORTED.name)
    assert isinstance(imported, OrderImported)
    await expire_now(
        runtime,
        runtime.store.key_of(keys.SALES_ORDER, seller, ORDER_ID),
        runtime.store.key_of(keys.ORDER_STATUS, seller, ORDER_ID),
    )

    later = enriched(
        runtime,
        purchase_date=now,
        latest_ship_date=now,
        last_update_date=now + timedelta(days=70),
        order_status="Shipped",
        items=(item(quantity_shipped=2),),
    )
    await order_import.handle(runtime, later)
    await order_import.handle(runtime, later)
    assert runtime.payloads(ORDERS_IMPORTED.name) == [imported]  # no second sales order, no update
    assert await runtime.store.sales_order(seller, ORDER_ID) is None
    status = await runtime.store.order_status(seller, ORDER_ID)
    assert status["note"] == order_import.CLOSED_NOTE
    assert status["amazon_status"] == "Shipped"
    assert await runtime.store.redis.exists(runtime.store.key_of(keys.LAST_ENRICHED, seller, ORDER_ID)) == 0
    assert await runtime.store.was_imported(seller, ORDER_ID)


async def test_an_invoice_of_a_closed_order_is_refused_at_once_with_the_reason(
    make_runtime: Any, scenario: Any
) -> None:
    runtime = await runtime_of(make_runtime, "invoice-issued", scenario)
    chan = runtime.channels.channels[0]
    seller = chan.seller_id
    now = runtime.clock.now()
    sales_order = one_line_sales_order(seller, ORDER_ID, channel=chan.name, order_item_id=ITEM, quantity=2)
    sales_order = sales_order.model_copy(update={"latest_ship_date": now + timedelta(days=1)})
    await runtime.store.save_sales_order(sales_order)
    await runtime.store.record_version(keys.IMPORTED.name, seller, ORDER_ID, now)

    await invoice_issued.handle(
        runtime, decode(invoice_record(seller, "INV-1", ORDER_ID, ITEM), INVOICES_ISSUED)
    )
    assert len(runtime.payloads(SHIPMENTS_REQUESTED.name)) == 1
    # What the invoice left lives as long as the order: 1 + 14 + 30 days.
    life = (1 + 14 + 30) * DAY
    state = (
        runtime.store.key_of(keys.REQUESTED, seller, ORDER_ID),
        runtime.store.key_of(keys.PACKAGE_SEQUENCE, seller, ORDER_ID),
        runtime.store.key_of(keys.INVOICE_SEEN, seller, ORDER_ID, "INV-1"),
        runtime.store.key_of(keys.PACKAGE, seller, ORDER_ID, "INV-1", "0"),
        runtime.store.key_of(keys.ORDER_STATUS, seller, ORDER_ID),
    )
    for name in state:
        assert life - SLACK_S <= await runtime.store.redis.ttl(name) <= life, name

    await expire_now(runtime, runtime.store.key_of(keys.SALES_ORDER, seller, ORDER_ID), *state)
    started = asyncio.get_running_loop().time()
    with pytest.raises(Permanent, match=f"order {ORDER_ID} of seller {seller} is closed"):
        await invoice_issued.handle(
            runtime, decode(invoice_record(seller, "INV-2", ORDER_ID, ITEM), INVOICES_ISSUED)
        )
    # Refused at once, not after waiting for a sales order that will never come.
    assert asyncio.get_running_loop().time() - started < runtime.settings.invoice.sales_order_wait_s
    assert len(runtime.payloads(SHIPMENTS_REQUESTED.name)) == 1


async def test_a_shipment_request_replayed_for_a_closed_order_is_not_written_back_again(
    make_runtime: Any, scenario: Any
) -> None:
    runtime = await runtime_of(make_runtime, "shipment-write-back", scenario)
    chan = runtime.channels.channels[0]
    seller = chan.seller_id
    await runtime.store.record_version(keys.IMPORTED.name, seller, ORDER_ID, runtime.clock.now())
    request = ShipmentRequested(
        channel=chan.name,
        amazon_order_id=ORDER_ID,
        package_reference_id="1",
        carrier_code="UPS",
        tracking_number="1Z999",
        ship_date=runtime.clock.now(),
        items=(ShipmentItem(order_item_id=ITEM, quantity=1),),
    )
    envelope = Envelope.wrap(request, seller_id=seller, marketplace_id="ATVPDKIKX0DER", correlation_id="c")
    with pytest.raises(Permanent, match=f"order {ORDER_ID} is closed"):
        await shipment_write_back.handle(runtime, envelope)
    # Nothing recorded for it: no state that would outlive the order again.
    assert await runtime.store.shipment_state(seller, ORDER_ID, "1") == {}


async def test_a_rebuild_puts_back_an_open_orders_state_for_its_life_and_only_the_marks_of_a_closed_one(
    make_runtime: Any, scenario: Any
) -> None:
    runtime = await runtime_of(make_runtime, "import", scenario)
    chan = runtime.channels.channels[0]
    seller = chan.seller_id
    now = runtime.clock.now()
    open_order = one_line_sales_order(seller, ORDER_ID, channel=chan.name, order_item_id=ITEM, quantity=1)
    open_order = open_order.model_copy(update={"latest_ship_date": now + timedelta(days=3)})
    closed_id = "222-2222222-2222222"
    closed_order = open_order.model_copy(
        update={
            "amazon_order_id": closed_id,
            "code": "SO00000002",
            "purchase_date": now - timedelta(days=80),
            "latest_ship_date": now - timedelta(days=78),
        }
    )
    await runtime.store.restore_sales_order(open_order, now.isoformat())
    await runtime.store.restore_sales_order(closed_order, now.isoformat())

    assert await runtime.store.sales_order(seller, ORDER_ID) == open_order
    life = (3 + 14 + 30) * DAY
    assert life - SLACK_S <= await ttl(runtime, keys.SALES_ORDER, seller, ORDER_ID) <= life
    assert life - SLACK_S <= await ttl(runtime, keys.ORDER_STATUS, seller, ORDER_ID) <= life

    assert await runtime.store.sales_order(seller, closed_id) is None
    assert await runtime.store.order_status(seller, closed_id) == {}
    assert await runtime.store.was_imported(seller, closed_id)
    assert await runtime.store.redis.get(runtime.store.key_of(keys.SALES_ORDER_CODE, seller, closed_id)) == (
        "SO00000002"
    )
    # A version downloaded later finds it closed, not new.
    await runtime.store.set_listings(chan.name, {"SKU-1": "STK-1"})
    await order_import.handle(
        runtime,
        enriched(
            runtime,
            amazon_order_id=closed_id,
            purchase_date=closed_order.purchase_date,
            last_update_date=now,
            order_status="Shipped",
        ),
    )
    assert runtime.payloads(ORDERS_IMPORTED.name) == []


async def test_a_cancellation_of_a_closed_order_is_refused_without_asking_amazon(
    make_runtime: Any, scenario: Any
) -> None:
    runtime = await runtime_of(make_runtime, "shipment-write-back", scenario)
    chan = runtime.channels.channels[0]
    seller = chan.seller_id
    await runtime.store.record_version(keys.IMPORTED.name, seller, ORDER_ID, runtime.clock.now())
    request = OrderCancellationRequested(
        channel=chan.name, amazon_order_id=ORDER_ID, requested_at=runtime.clock.now()
    )
    await cancellation.handle(runtime, Envelope.wrap(request, seller_id=seller, correlation_id="c"))
    (result,) = runtime.payloads(ORDERS_CANCELLATION_RESULTS.name)
    assert isinstance(result, OrderCancellationResult)
    assert not result.cancelled
    assert result.feed_id is None
    assert "closed" in (result.error_message or "")
    assert await cancellation.FEEDS.pending_count(runtime, seller) == 0
