"""Easy Ship packing against the simulator, with a real Redis: a packed package is scheduled in a
handover slot once (a replay is a no-op), a slot filled between listing and scheduling is retried with
the next one, the size comes from Amazon's catalog when the packer sent none, and what Amazon (or its
model) refuses is published with the reason, without a call when ordersync can tell beforehand."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from ordersync.amazon.client import SpApiClient
from ordersync.consumers import packing
from ordersync.dev.testing import RecordingRuntime
from ordersync.schemas.envelope import Envelope
from ordersync.schemas.events import (
    PackagePacked,
    PackageScheduled,
    PackageSchedulingFailed,
    PackedSize,
    SalesOrder,
    SalesOrderLine,
)
from ordersync.schemas.topics import PACKAGES_SCHEDULED
from ordersync.simulator.runner import RunningSimulator
from ordersync.simulator.testing import TEST_SELLER, tiny_scenario

pytestmark = pytest.mark.stage

INDIA = "A21TJRUUN4KGV"
SIZE = PackedSize(length_cm=Decimal(20), width_cm=Decimal(15), height_cm=Decimal(10), weight_g=Decimal(500))


@pytest.fixture
async def setup(make_runtime: Any) -> AsyncIterator[tuple[RecordingRuntime, RunningSimulator]]:
    scenario = tiny_scenario(
        seller={"region": "eu", "marketplaces": [INDIA]}, orders={"count": 1}, easy_ship={"slot_capacity": 1}
    )
    with RunningSimulator(scenario) as sim:
        yield await make_runtime("shipment-write-back", scenario, sim), sim


async def imported_order(
    runtime: RecordingRuntime, sim: RunningSimulator, *, easy_ship: bool = True, quantity: int = 1
) -> str:
    """An order on Amazon, and its sales order in Redis as the import stage keeps it."""
    spec = {
        "marketplace_id": INDIA,
        "programs": ["AMAZON_EASY_SHIP"] if easy_ship else [],
        "items": [{"quantity": quantity}],
    }
    truth = sim.state.add_order(spec)  # as POST /_sim/orders
    item = truth["items"][0]
    line = SalesOrderLine(
        order_item_id=item["order_item_id"],
        seller_sku=item["sku"],
        asin=item["asin"],
        stock_code="STK-1",
        quantity=quantity,
        unit_price=Decimal(100),
        tax=Decimal(0),
        line_total=Decimal(100 * quantity),
    )
    sales_order = SalesOrder(
        code=f"SO{truth['amazon_order_id'][-8:]}",
        channel=runtime.channels.channels[0].name,
        seller_id=TEST_SELLER,
        marketplace_id=INDIA,
        amazon_order_id=truth["amazon_order_id"],
        order_status="Unshipped",
        fulfillment_channel="MFN",
        purchase_date=datetime.now(UTC),
        currency="INR",
        customer_name=None,
        customer_email=None,
        shipping_address=None,
        ship_service_level="Std",
        lines=(line,),
        total=line.line_total,
        programs=("AMAZON_EASY_SHIP",) if easy_ship else (),
    )
    await runtime.store.save_sales_order(sales_order)
    return str(truth["amazon_order_id"])


def packed(runtime: RecordingRuntime, order_id: str, **changes: Any) -> Envelope[PackagePacked]:
    fields: dict[str, Any] = {
        "channel": runtime.channels.channels[0].name,
        "amazon_order_id": order_id,
        "size": SIZE,
        "packed_at": datetime.now(UTC),
        **changes,
    }
    return Envelope.wrap(PackagePacked(**fields), seller_id=TEST_SELLER, correlation_id=order_id)


def calls(sim: RunningSimulator, operation: str) -> int:
    return sim.state.counters.get(TEST_SELLER, operation).calls


async def test_a_packed_package_is_scheduled_once_in_the_earliest_slot(
    setup: tuple[RecordingRuntime, RunningSimulator],
) -> None:
    runtime, sim = setup
    order_id = await imported_order(runtime, sim)
    await packing.handle(runtime, packed(runtime, order_id, identifier="BOX-7"))
    await packing.handle(runtime, packed(runtime, order_id))  # a replay
    (outcome,) = runtime.payloads(PACKAGES_SCHEDULED.name)
    assert isinstance(outcome, PackageScheduled)
    assert (outcome.amazon_order_id, outcome.size, outcome.size_from) == (order_id, SIZE, "packer")
    assert outcome.status == "ReadyForPickup"
    assert outcome.attempts == 1
    (truth,) = sim.state.truth_easy_ship()
    assert truth["scheduledPackageId"]["packageId"] == outcome.scheduled_package_id
    assert truth["packageTimeSlot"]["slotId"] == outcome.slot_id
    assert calls(sim, "createScheduledPackage") == 1
    status = await runtime.store.order_status(TEST_SELLER, order_id)
    assert status["easy_ship"] == "Scheduled"


async def test_a_slot_filled_between_listing_and_scheduling_is_retried_with_the_next(
    setup: tuple[RecordingRuntime, RunningSimulator], monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime, sim = setup
    order_id, rival = await imported_order(runtime, sim), await imported_order(runtime, sim)
    listed = SpApiClient.list_handover_slots

    async def list_then_lose_the_first(self: SpApiClient, *args: Any, **kwargs: Any) -> Any:
        slots = await listed(self, *args, **kwargs)
        if calls(sim, "createScheduledPackage") == 0:
            # Another packer takes the earliest slot (capacity 1) right after this listing.
            await self.create_scheduled_package(INDIA, rival, slots[0])
        return slots

    monkeypatch.setattr(SpApiClient, "list_handover_slots", list_then_lose_the_first)
    await packing.handle(runtime, packed(runtime, order_id))
    (outcome,) = runtime.payloads(PACKAGES_SCHEDULED.name)
    assert isinstance(outcome, PackageScheduled)
    assert outcome.attempts == 2
    by_order = {p["scheduledPackageId"]["amazonOrderId"]: p for p in sim.state.truth_easy_ship()}
    assert by_order[order_id]["packageTimeSlot"]["slotId"] != by_order[rival]["packageTimeSlot"]["slotId"]


async def test_without_a_size_a_one_unit_orders_package_size_comes_from_amazons_catalog(
    setup: tuple[RecordingRuntime, RunningSimulator],
) -> None:
    runtime, sim = setup
    order_id = await imported_order(runtime, sim)
    await packing.handle(runtime, packed(runtime, order_id, size=None))
    (outcome,) = runtime.payloads(PACKAGES_SCHEDULED.name)
    assert isinstance(outcome, PackageScheduled)
    assert outcome.size_from == "catalog"
    assert calls(sim, "getCatalogItem") == 1
    asin = sim.state.truth_order(order_id)["items"][0]["asin"]
    item = await runtime.amazon(runtime.channels.channels[0]).get_catalog_item(INDIA, asin)
    assert item.package.weight_g == outcome.size.weight_g

    # Two units: no proposal, the packer is asked for the size.
    two = await imported_order(runtime, sim, quantity=2)
    await packing.handle(runtime, packed(runtime, two, size=None))
    failed = runtime.payloads(PACKAGES_SCHEDULED.name)[-1]
    assert isinstance(failed, PackageSchedulingFailed)
    assert failed.error_code == "SizeMissing"


async def test_what_can_be_told_beforehand_is_refused_without_asking_amazon(
    setup: tuple[RecordingRuntime, RunningSimulator],
) -> None:
    runtime, sim = setup
    not_easy_ship = await imported_order(runtime, sim, easy_ship=False)
    await packing.handle(runtime, packed(runtime, not_easy_ship))
    light = await imported_order(runtime, sim)
    feather = SIZE.model_copy(update={"weight_g": Decimal(5)})
    await packing.handle(runtime, packed(runtime, light, size=feather))
    first, second = runtime.payloads(PACKAGES_SCHEDULED.name)
    assert isinstance(first, PackageSchedulingFailed)
    assert first.error_code == "NotEasyShip"
    assert isinstance(second, PackageSchedulingFailed)
    assert (second.error_code, second.error_message) == (
        "InvalidSize",
        "weight 5 g is below Amazon's minimum of 11 g",
    )
    assert calls(sim, "listHandoverSlots") == 0
    # Published once: a replay of a refused package is a no-op too ...
    refused_record = packed(runtime, light, size=feather)
    await packing.handle(runtime, refused_record)
    await packing.handle(runtime, refused_record)
    assert len(runtime.payloads(PACKAGES_SCHEDULED.name)) == 3
    # ... while the package sent again, weighed properly, is scheduled.
    await packing.handle(runtime, packed(runtime, light))
    assert isinstance(runtime.payloads(PACKAGES_SCHEDULED.name)[-1], PackageScheduled)
    assert calls(sim, "createScheduledPackage") == 1


async def test_amazons_refusal_is_published_with_its_code_and_message(
    setup: tuple[RecordingRuntime, RunningSimulator],
) -> None:
    runtime, sim = setup
    order_id = await imported_order(runtime, sim)
    huge = SIZE.model_copy(update={"length_cm": Decimal(500)})  # above the scenario's limit
    await packing.handle(runtime, packed(runtime, order_id, size=huge))
    (failed,) = runtime.payloads(PACKAGES_SCHEDULED.name)
    assert isinstance(failed, PackageSchedulingFailed)
    assert failed.error_code == "TimeSlotNotAvailable"
    assert failed.error_message
    assert calls(sim, "createScheduledPackage") == 0


@pytest.fixture
async def busy_setup(make_runtime: Any) -> AsyncIterator[tuple[RecordingRuntime, RunningSimulator]]:
    """One package per handover slot, and room in listHandoverSlots' burst for a packing rush."""
    plans = {"listHandoverSlots": {"rate": 1, "burst": 20}}
    scenario = tiny_scenario(
        seller={"region": "eu", "marketplaces": [INDIA], "usage_plans": plans},
        orders={"count": 1},
        easy_ship={"slot_capacity": 1},
    )
    with RunningSimulator(scenario) as sim:
        yield await make_runtime("shipment-write-back", scenario, sim), sim


async def test_packages_ready_together_are_scheduled_in_bulk_and_a_slot_taken_by_another_moves_on(
    busy_setup: tuple[RecordingRuntime, RunningSimulator],
) -> None:
    runtime, sim = busy_setup
    orders = [await imported_order(runtime, sim) for _ in range(3)]
    records = [packed(runtime, order_id, identifier=f"BOX-{n}") for n, order_id in enumerate(orders)]
    # Packed at once: each lists the same earliest slot; one bulk call takes them together, Amazon
    # schedules one and refuses the others (slot full), which list again and move on to the next slot.
    await asyncio.gather(*(packing.handle(runtime, record) for record in records))
    outcomes = runtime.payloads(PACKAGES_SCHEDULED.name)
    assert all(isinstance(o, PackageScheduled) for o in outcomes)
    assert sorted(o.amazon_order_id for o in outcomes) == sorted(orders)
    assert sorted(o.attempts for o in outcomes) == [1, 2, 3]
    assert len({o.slot_id for o in outcomes}) == 3
    assert calls(sim, "createScheduledPackageBulk") == 2  # three together, then the two refused
    assert calls(sim, "createScheduledPackage") == 1  # the last one, alone in its window
    on_amazon = {p["scheduledPackageId"]["amazonOrderId"]: p for p in sim.state.truth_easy_ship()}
    for n, order_id in enumerate(orders):
        assert on_amazon[order_id]["packageIdentifier"] == f"BOX-{n}"


async def test_with_bulk_off_each_package_is_scheduled_by_itself(make_runtime: Any) -> None:
    scenario = tiny_scenario(seller={"region": "eu", "marketplaces": [INDIA]}, orders={"count": 1})
    with RunningSimulator(scenario) as sim:
        settings = {"writeback": {"easy_ship_bulk_window_s": 0}}
        runtime = await make_runtime("shipment-write-back", scenario, sim, other_settings=settings)
        orders = [await imported_order(runtime, sim) for _ in range(2)]
        await asyncio.gather(*(packing.handle(runtime, packed(runtime, order_id)) for order_id in orders))
        assert len(runtime.payloads(PACKAGES_SCHEDULED.name)) == 2
        assert (calls(sim, "createScheduledPackage"), calls(sim, "createScheduledPackageBulk")) == (2, 0)
