"""The import stage with a real Redis: channel listings (CSV rows, the compacted topic, identification
by ASIN, EAN or a column), the operator actions Ignore / Un-ignore / Retry Import, and replays."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from ordersync.channels import Channel, ChannelsFile
from ordersync.dev.testing import RecordingRuntime
from ordersync.schemas.envelope import Envelope
from ordersync.schemas.events import (
    ListingChanged,
    OperatorCommand,
    OperatorCommandIssued,
    OrderEnriched,
    OrderImported,
    OrderImportFailed,
    OrderUpdated,
)
from ordersync.schemas.topics import ORDERS_IMPORT_FAILED, ORDERS_IMPORTED
from ordersync.simulator.runner import RunningSimulator
from ordersync.simulator.testing import tiny_scenario
from ordersync.state.keys import LAST_ENRICHED
from ordersync.state.listings import ListingRow, apply_listings, listing_rows, parse_listings_csv
from ordersync.streams.order_import import handle, listing_changed, operator_command
from tests.factories import T0, item, order

pytestmark = pytest.mark.stage

ORDER_ID = "111-1111111-1111111"


@pytest.fixture
async def runtime(make_runtime: Any) -> Any:
    scenario = tiny_scenario(orders={"count": 1})
    with RunningSimulator(scenario) as sim:
        yield await make_runtime("import", scenario, sim)


def chan(runtime: RecordingRuntime) -> Channel:
    return runtime.channels.channels[0]


def configure(runtime: RecordingRuntime, **settings: Any) -> Channel:
    data = chan(runtime).model_dump(mode="python")
    data.update(settings)
    data["credentials"] = chan(runtime).credentials  # secrets dump masked: keep the objects
    updated = Channel.model_validate(data)
    runtime.channels = ChannelsFile(channels=(updated,))
    return updated


def enriched(runtime: RecordingRuntime, **changes: Any) -> Envelope[OrderEnriched]:
    c = chan(runtime)
    amazon = order(seller_id=c.seller_id, **changes)
    return Envelope.wrap(
        OrderEnriched(channel=c.name, order=amazon), seller_id=c.seller_id, correlation_id="c"
    )


def command(runtime: RecordingRuntime, what: OperatorCommand, *ids: str) -> Envelope[OperatorCommandIssued]:
    c = chan(runtime)
    event = OperatorCommandIssued(
        command=what, channel=c.name, amazon_order_ids=ids or (ORDER_ID,), operator="t"
    )
    return Envelope.wrap(event, seller_id=c.seller_id, correlation_id=f"{what}:{c.name}")


async def test_identification_by_ean_matches_the_seller_sku_against_the_ean_column(
    runtime: RecordingRuntime,
) -> None:
    configure(runtime, product_identification="ean")
    csv = (
        "Client SKU Id,Channel Serial No.,Channel SKU Id,EAN,ASIN,Merchant SKU\n"
        "STK-E,,,4006381333931,B0X,OTHER\n"
    )
    await apply_listings(runtime.store, chan(runtime).name, parse_listings_csv(csv).rows)
    await handle(runtime, enriched(runtime, items=(item(seller_sku="4006381333931"),)))
    (imported,) = runtime.payloads(ORDERS_IMPORTED.name)
    assert imported.sales_order.lines[0].stock_code == "STK-E"


async def test_identification_by_a_listings_column(runtime: RecordingRuntime) -> None:
    configure(runtime, product_identification="Channel Serial No.")
    csv = "Client SKU Id,Channel Serial No.,Channel SKU Id,EAN,ASIN,Merchant SKU\nSTK-C,SER-9,,,,M-1\n"
    await apply_listings(runtime.store, chan(runtime).name, parse_listings_csv(csv).rows)
    await handle(runtime, enriched(runtime, items=(item(seller_sku="SER-9"),)))
    (imported,) = runtime.payloads(ORDERS_IMPORTED.name)
    assert imported.sales_order.lines[0].stock_code == "STK-C"


async def test_identification_by_asin_reads_the_asin_column(runtime: RecordingRuntime) -> None:
    configure(runtime, product_identification="asin")
    await apply_listings(runtime.store, chan(runtime).name, [ListingRow("STK-A", "M-1", asin="B000000001")])
    await handle(runtime, enriched(runtime))
    (imported,) = runtime.payloads(ORDERS_IMPORTED.name)
    assert imported.sales_order.lines[0].stock_code == "STK-A"


async def test_sales_order_code_uses_the_channels_prefix(runtime: RecordingRuntime) -> None:
    configure(runtime, sales_order_prefix="AMZ-")
    await apply_listings(runtime.store, chan(runtime).name, [ListingRow("STK-1", "SKU-1")])
    await handle(runtime, enriched(runtime))
    (imported,) = runtime.payloads(ORDERS_IMPORTED.name)
    assert imported.sales_order.code.startswith("AMZ-")


async def test_stock_only_and_disabled_channels_import_nothing(runtime: RecordingRuntime) -> None:
    await apply_listings(runtime.store, chan(runtime).name, [ListingRow("STK-1", "SKU-1")])
    configure(runtime, sync_level="stock only")
    await handle(runtime, enriched(runtime))
    status = await runtime.store.order_status(chan(runtime).seller_id, ORDER_ID)
    assert (status["stage"], status["reason"]) == ("not-imported", "the channel syncs stock only")
    configure(runtime, sync_level="orders and stock", active=False)
    await handle(runtime, enriched(runtime, last_update_date=T0 + timedelta(minutes=1)))
    assert runtime.emitted == []


async def test_listings_from_the_compacted_topic_map_and_unmap(runtime: RecordingRuntime) -> None:
    c = chan(runtime)

    def changed(**fields: Any) -> Envelope[ListingChanged]:
        event = ListingChanged(channel=c.name, merchant_sku="SKU-1", **fields)
        return Envelope.wrap(event, seller_id=c.seller_id, correlation_id="listings")

    await listing_changed(runtime, changed(client_sku_id="STK-OLD", ean="111", asin="B000000001"))
    await listing_changed(runtime, changed(client_sku_id="STK-1", ean="222", asin="B000000001"))
    rows = await listing_rows(runtime.store, c.name)
    assert rows["SKU-1"] == ListingRow("STK-1", "SKU-1", asin="B000000001", ean="222")
    assert await runtime.store.stock_codes(c.name, ["SKU-1"]) == {"SKU-1": "STK-1"}
    await handle(runtime, enriched(runtime))
    (imported,) = runtime.payloads(ORDERS_IMPORTED.name)
    assert imported.sales_order.lines[0].stock_code == "STK-1"

    await listing_changed(runtime, changed())  # no Client SKU Id: the listing is removed
    assert await listing_rows(runtime.store, c.name) == {}
    assert await runtime.store.stock_codes(c.name, ["SKU-1"]) == {}


async def test_retry_import_imports_from_the_stored_order_after_the_listings_are_fixed(
    runtime: RecordingRuntime,
) -> None:
    c = chan(runtime)
    await handle(runtime, enriched(runtime))
    (failed,) = runtime.payloads(ORDERS_IMPORT_FAILED.name)
    assert isinstance(failed, OrderImportFailed)
    status = await runtime.store.order_status(c.seller_id, ORDER_ID)
    assert (status["stage"], status["reason_code"]) == ("import-failed", "unknown_stock_code")
    assert status["reason"] == "Unknown stock code for seller SKU SKU-1 (ASIN B000000001)"

    # Retried before the fix, with an order never downloaded: each order's own outcome in the task.
    never = "999-9999999-9999999"
    await operator_command(runtime, command(runtime, "retry-import", ORDER_ID, never))
    task = await runtime.store.task("retry-import", c.name)
    assert task["last_error"] == (
        f"0 of 2 orders imported; {ORDER_ID} import-failed: unknown_stock_code: Unknown stock code for"
        f" seller SKU SKU-1 (ASIN B000000001); {never} not imported: no downloaded data yet; retry the"
        " download"
    )

    kept = runtime.store.key_of(LAST_ENRICHED, c.seller_id, ORDER_ID)
    assert await runtime.store.redis.exists(kept)  # what Retry Import imports from
    await apply_listings(runtime.store, c.name, [ListingRow("STK-1", "SKU-1")])
    await operator_command(runtime, command(runtime, "retry-import"))
    task = await runtime.store.task("retry-import", c.name)
    assert task["last_result"] == "1 of 1 orders imported"
    (imported,) = runtime.payloads(ORDERS_IMPORTED.name)
    assert isinstance(imported, OrderImported)
    assert (await runtime.store.order_status(c.seller_id, ORDER_ID))["stage"] == "imported"
    assert not await runtime.store.redis.exists(kept)  # imported: no longer kept
    await operator_command(runtime, command(runtime, "retry-import"))  # again: nothing new
    assert len(runtime.payloads(ORDERS_IMPORTED.name)) == 1
    assert (await runtime.store.task("retry-import", c.name))["last_result"] == "1 of 1 orders imported"
    # A later version of the imported order is an update: nothing is kept for it either.
    await handle(runtime, enriched(runtime, order_status="Shipped", last_update_date=T0 + timedelta(hours=1)))
    assert not await runtime.store.redis.exists(kept)


async def test_ignored_orders_stay_out_even_when_updated_until_unignored(runtime: RecordingRuntime) -> None:
    c = chan(runtime)
    await apply_listings(runtime.store, c.name, [ListingRow("STK-1", "SKU-1")])
    await operator_command(runtime, command(runtime, "ignore"))
    await handle(runtime, enriched(runtime))
    await handle(runtime, enriched(runtime, order_status="Shipped", last_update_date=T0 + timedelta(hours=1)))
    await operator_command(runtime, command(runtime, "retry-import"))
    assert runtime.emitted == []
    assert (await runtime.store.order_status(c.seller_id, ORDER_ID))["stage"] == "ignored"

    await operator_command(runtime, command(runtime, "unignore"))
    (imported,) = runtime.payloads(ORDERS_IMPORTED.name)
    assert imported.sales_order.order_status == "Shipped"  # the newest version kept


async def test_ignore_does_not_undo_an_import(runtime: RecordingRuntime) -> None:
    c = chan(runtime)
    await apply_listings(runtime.store, c.name, [ListingRow("STK-1", "SKU-1")])
    await handle(runtime, enriched(runtime))
    await operator_command(runtime, command(runtime, "ignore"))
    status = await runtime.store.order_status(c.seller_id, ORDER_ID)
    assert (status["stage"], status["note"]) == ("imported", "ignore refused: already imported")
    task = await runtime.store.task("ignore", c.name)
    assert task["last_error"] == f"0 of 1 orders ignored; {ORDER_ID} refused: already imported"


async def test_replaying_the_enriched_topic_from_the_beginning_creates_no_second_sales_order(
    runtime: RecordingRuntime,
) -> None:
    c = chan(runtime)
    await apply_listings(runtime.store, c.name, [ListingRow("STK-1", "SKU-1")])
    other = "222-2222222-2222222"
    topic = [
        enriched(runtime),
        enriched(runtime, amazon_order_id=other),
        enriched(runtime, order_status="Shipped", last_update_date=T0 + timedelta(hours=2)),
        enriched(
            runtime, amazon_order_id=other, order_status="Canceled", last_update_date=T0 + timedelta(hours=3)
        ),
    ]
    for event in topic:
        await handle(runtime, event)
    first = list(runtime.emitted)
    for event in topic + topic:  # the whole topic again, twice (a consumer-group reset)
        await handle(runtime, event)
    assert runtime.emitted == first
    imported = [p for p in runtime.payloads(ORDERS_IMPORTED.name) if isinstance(p, OrderImported)]
    assert sorted(p.sales_order.amazon_order_id for p in imported) == [ORDER_ID, other]
    assert any(isinstance(p, OrderUpdated) for p in runtime.payloads(ORDERS_IMPORTED.name))
