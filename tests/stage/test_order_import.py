"""The import stage with a real Redis: one sales order per Amazon order, ever; later versions become
updates or a cancellation; failures carry a reason."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from ordersync.dev.testing import RecordingRuntime
from ordersync.schemas.envelope import Envelope
from ordersync.schemas.events import (
    OrderCancelled,
    OrderEnriched,
    OrderImported,
    OrderImportFailed,
    OrderUpdated,
)
from ordersync.schemas.topics import ORDERS_IMPORT_FAILED, ORDERS_IMPORTED
from ordersync.simulator.runner import RunningSimulator
from ordersync.simulator.testing import tiny_scenario
from ordersync.streams.order_import import handle
from tests.factories import T0, item, order

pytestmark = pytest.mark.stage


@pytest.fixture
async def runtime(make_runtime: Any) -> Any:
    scenario = tiny_scenario(orders={"count": 1})
    with RunningSimulator(scenario) as sim:
        yield await make_runtime("import", scenario, sim)


def enriched(runtime: RecordingRuntime, **changes: Any) -> Envelope[OrderEnriched]:
    chan = runtime.channels.channels[0]
    amazon = order(seller_id=chan.seller_id, **changes)
    return Envelope.wrap(
        OrderEnriched(channel=chan.name, order=amazon), seller_id=chan.seller_id, correlation_id="c"
    )


async def test_one_sales_order_per_amazon_order_even_when_replayed(runtime: RecordingRuntime) -> None:
    chan = runtime.channels.channels[0]
    await runtime.store.set_listings(chan.name, {"SKU-1": "STK-1"})
    event = enriched(runtime)
    await handle(runtime, event)
    await handle(runtime, event)  # a replay of amazon.orders.enriched
    imported = runtime.payloads(ORDERS_IMPORTED.name)
    assert len(imported) == 1
    assert isinstance(imported[0], OrderImported)
    assert imported[0].sales_order.code.startswith(chan.sales_order_prefix)

    shipped_later = enriched(
        runtime,
        order_status="Shipped",
        last_update_date=T0 + timedelta(hours=5),
        items=(item(quantity_shipped=2),),
    )
    await handle(runtime, shipped_later)
    await handle(runtime, shipped_later)
    cancelled = enriched(runtime, order_status="Canceled", last_update_date=T0 + timedelta(hours=6))
    await handle(runtime, cancelled)
    events = runtime.payloads(ORDERS_IMPORTED.name)
    assert [type(e) for e in events] == [OrderImported, OrderUpdated, OrderCancelled]
    assert {e.sales_order_code for e in events[1:]} == {imported[0].sales_order.code}


async def test_unknown_stock_code_fails_with_a_reason_then_imports_after_the_fix(
    runtime: RecordingRuntime,
) -> None:
    chan = runtime.channels.channels[0]
    await handle(runtime, enriched(runtime))
    (failed,) = runtime.payloads(ORDERS_IMPORT_FAILED.name)
    assert isinstance(failed, OrderImportFailed)
    assert failed.reason_code == "unknown_stock_code"
    assert failed.reason == "Unknown stock code for seller SKU SKU-1 (ASIN B000000001)"
    status = await runtime.store.order_status(chan.seller_id, failed.amazon_order_id)
    assert status["stage"] == "import-failed"
    await runtime.store.set_listings(chan.name, {"SKU-1": "STK-1"})
    await handle(runtime, enriched(runtime, last_update_date=T0 + timedelta(minutes=1)))
    assert len(runtime.payloads(ORDERS_IMPORTED.name)) == 1


async def test_statuses_outside_the_channels_list_are_not_imported(runtime: RecordingRuntime) -> None:
    await runtime.store.set_listings(runtime.channels.channels[0].name, {"SKU-1": "STK-1"})
    await handle(runtime, enriched(runtime, order_status="Canceled"))
    assert runtime.emitted == []


async def test_the_sales_order_is_stored_before_order_imported_is_published(
    runtime: RecordingRuntime,
) -> None:
    chan = runtime.channels.channels[0]
    await runtime.store.set_listings(chan.name, {"SKU-1": "STK-1"})
    event = enriched(runtime)
    stored_when_published: list[bool] = []
    publish = runtime.emit

    async def watching_emit(spec: Any, key: str, envelope: Any) -> None:
        if spec is ORDERS_IMPORTED:
            found = await runtime.store.sales_order(envelope.seller_id, event.payload.order.amazon_order_id)
            stored_when_published.append(found is not None)
        await publish(spec, key, envelope)

    runtime.emit = watching_emit  # type: ignore[method-assign]
    await handle(runtime, event)
    # A back-office invoicing the moment it reads OrderImported finds the sales order.
    assert stored_when_published == [True]


async def test_a_stop_between_storing_and_publishing_publishes_on_redelivery(
    runtime: RecordingRuntime,
) -> None:
    chan = runtime.channels.channels[0]
    await runtime.store.set_listings(chan.name, {"SKU-1": "STK-1"})
    event = enriched(runtime)
    publish = runtime.emit

    async def broker_gone(spec: Any, key: str, envelope: Any) -> None:
        raise ConnectionError("the broker went away")

    runtime.emit = broker_gone  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        await handle(runtime, event)
    runtime.emit = publish  # type: ignore[method-assign]
    await handle(runtime, event)  # the record is read again
    await handle(runtime, event)
    [imported] = runtime.payloads(ORDERS_IMPORTED.name)
    stored = await runtime.store.sales_order(chan.seller_id, event.payload.order.amazon_order_id)
    assert stored is not None
    assert imported.sales_order == stored
