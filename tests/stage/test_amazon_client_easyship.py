"""The client's Easy Ship and Catalog Items calls against the simulator over real HTTP and the rate
limiter: slots listed, a package scheduled and read back, a slot taken in between refused with Amazon's
"choose another slot" code, several orders in one bulk call with one refused, and a product's data, kept
in a real Redis."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from pypdf import PdfReader

from ordersync.amazon.client import SpApiClient
from ordersync.amazon.easyship import PackageRequest, PackageSize
from ordersync.amazon.feeds import (
    EASYSHIP_DOCUMENTS_FEED,
    XML_CONTENT_TYPE,
    EasyShipDocumentsMessage,
    FeedsClient,
    easyship_document_references,
    easyship_documents_feed,
    parse_processing_report,
)
from ordersync.channels import Channel, LwaCredentials, SecretRef
from ordersync.errors import AmazonRejected, Permanent
from ordersync.ratelimit import InMemoryRateLimiter
from ordersync.ratelimit.plans import PlanBook
from ordersync.settings import AmazonSettings
from ordersync.simulator import RunningSimulator, SimulatorState
from ordersync.simulator.testing import (
    TEST_CLIENT_ID,
    TEST_CLIENT_SECRET,
    TEST_REFRESH_TOKEN,
    TEST_SELLER,
    tiny_scenario,
)
from ordersync.state import keys
from ordersync.state.products import ProductCatalog

pytestmark = pytest.mark.stage

INDIA = "A21TJRUUN4KGV"
SIZE = PackageSize(Decimal(20), Decimal(15), Decimal(10), Decimal(500))


@pytest.fixture
def sim() -> Iterator[RunningSimulator]:
    scenario = tiny_scenario(
        seller={"region": "eu", "marketplaces": [INDIA]},
        orders={"count": 2},
        easy_ship={"slot_capacity": 1},
        feeds={"queue_delay_s": [5, 5], "duration_s": [10, 10], "stall_share": 0},
    )
    with RunningSimulator(SimulatorState(scenario)) as running:
        yield running


@pytest.fixture
async def client(sim: RunningSimulator) -> AsyncIterator[SpApiClient]:
    channel = Channel(
        name="acme-in",
        seller_id=TEST_SELLER,
        region="eu",
        marketplaces=(INDIA,),
        credentials=LwaCredentials(
            client_id=SecretRef(value=SecretStr(TEST_CLIENT_ID)),
            client_secret=SecretRef(value=SecretStr(TEST_CLIENT_SECRET)),
            refresh_token=SecretRef(value=SecretStr(TEST_REFRESH_TOKEN)),
        ),
    )
    # Amazon's plans 100,000 times faster: the limiter is on the path but never makes the test wait.
    limiter = InMemoryRateLimiter(plans=PlanBook(time_scale=100_000))
    async with httpx.AsyncClient(timeout=10) as http:
        amazon = AmazonSettings(endpoint=sim.base_url, lwa_endpoint=sim.lwa_url)
        yield SpApiClient(channel=channel, amazon=amazon, limiter=limiter, http=http)


def easy_ship_order(sim: RunningSimulator, programs: tuple[str, ...] = ("AMAZON_EASY_SHIP",)) -> str:
    """A new Unshipped order in India, through the simulator's control API."""
    response = httpx.post(
        sim.base_url + "/_sim/orders", json={"marketplace_id": INDIA, "programs": list(programs)}
    )
    assert response.status_code in (200, 201), response.text
    return str(response.json()["amazon_order_id"])


async def test_a_package_is_scheduled_in_a_listed_slot_and_read_back(
    sim: RunningSimulator, client: SpApiClient
) -> None:
    order_id = easy_ship_order(sim)
    slots = await client.list_handover_slots(INDIA, order_id, SIZE)
    assert slots
    assert [s.start for s in slots] == sorted(s.start for s in slots if s.start is not None)
    scheduled = await client.create_scheduled_package(INDIA, order_id, slots[0], identifier="BOX-1")
    assert scheduled.amazon_order_id == order_id
    assert scheduled.slot.slot_id == slots[0].slot_id
    assert scheduled.status == "ReadyForPickup"
    again = await client.get_scheduled_package(INDIA, order_id)
    assert (again.package_id, again.slot.slot_id) == (scheduled.package_id, slots[0].slot_id)
    packages = sim.state.truth_easy_ship()
    (truth,) = [p for p in packages if p["scheduledPackageId"]["amazonOrderId"] == order_id]
    assert truth["scheduledPackageId"]["packageId"] == scheduled.package_id

    # Moved to the next slot.
    (moved,) = await client.update_scheduled_packages(INDIA, [(order_id, scheduled.package_id, slots[1])])
    assert moved.slot.slot_id == slots[1].slot_id


async def test_a_slot_taken_between_listing_and_scheduling_is_refused_with_amazons_code(
    sim: RunningSimulator, client: SpApiClient
) -> None:
    first, second = easy_ship_order(sim), easy_ship_order(sim)
    slot = (await client.list_handover_slots(INDIA, second, SIZE))[0]
    await client.create_scheduled_package(INDIA, first, slot)  # capacity 1: the slot is full now
    with pytest.raises(AmazonRejected) as refused:
        await client.create_scheduled_package(INDIA, second, slot)
    assert refused.value.code == "RetryableAfterGettingNewSlots"
    # The next slot listed takes it.
    retry = (await client.list_handover_slots(INDIA, second, SIZE))[0]
    assert retry.slot_id != slot.slot_id
    assert (await client.create_scheduled_package(INDIA, second, retry)).slot.slot_id == retry.slot_id


async def test_a_bulk_call_schedules_what_it_can_and_names_the_refused(
    sim: RunningSimulator, client: SpApiClient
) -> None:
    first, second = easy_ship_order(sim), easy_ship_order(sim)
    slot = (await client.list_handover_slots(INDIA, first, SIZE))[0]
    bulk = await client.create_scheduled_packages(
        INDIA, [PackageRequest(first, slot, identifier="BOX-1"), PackageRequest(second, slot)]
    )
    assert [p.amazon_order_id for p in bulk.scheduled] == [first]
    assert [r.amazon_order_id for r in bulk.rejected] == [second]
    assert bulk.rejected[0].code == "RetryableAfterGettingNewSlots"


async def test_an_order_outside_easy_ship_is_refused_with_amazons_message(
    sim: RunningSimulator, client: SpApiClient
) -> None:
    order_id = easy_ship_order(sim, programs=())
    with pytest.raises(AmazonRejected) as refused:
        await client.list_handover_slots(INDIA, order_id, SIZE)
    assert refused.value.status == 400
    assert "Easy Ship" in refused.value.amazon_message


async def test_a_products_title_image_and_sizes_come_from_the_catalog(
    sim: RunningSimulator, client: SpApiClient
) -> None:
    product: Any = sim.state.catalogues[TEST_SELLER][0]
    item = await client.get_catalog_item(INDIA, product.asin)
    assert item.asin == product.asin
    assert item.title
    assert item.image_url is not None
    assert item.image_url.startswith("http")
    assert item.package.complete
    (found,) = await client.search_catalog_items(INDIA, [product.sku])
    assert found.asin == product.asin
    with pytest.raises(AmazonRejected) as missing:
        await client.get_catalog_item(INDIA, "B0NOTTHERE")
    assert missing.value.status == 404
    with pytest.raises(ValueError, match="1 to 20 identifiers"):
        await client.search_catalog_items(INDIA, [f"SKU-{n}" for n in range(21)])


async def test_a_product_is_read_from_amazon_once_then_from_redis_until_refreshed(
    sim: RunningSimulator, client: SpApiClient, redis_client: Any, redis_key_prefix: str
) -> None:
    product: Any = sim.state.catalogues[TEST_SELLER][0]
    catalog = ProductCatalog(redis_client, redis_key_prefix, ttl_s=3600)

    def calls(operation: str) -> int:
        return sim.state.counters.get(TEST_SELLER, operation).calls

    first, cached = await catalog.product(client, INDIA, asin=product.asin)
    assert (cached, calls("getCatalogItem")) == (False, 1)
    again, cached = await catalog.product(client, INDIA, asin=product.asin)
    assert (again, cached, calls("getCatalogItem")) == (first, True, 1)
    _, cached = await catalog.product(client, INDIA, asin=product.asin, refresh=True)
    assert (cached, calls("getCatalogItem")) == (False, 2)
    ttl = await redis_client.ttl(keys.PRODUCT.key(redis_key_prefix, INDIA, product.asin))
    assert 3500 < ttl <= 3600

    # By the seller's SKU: searched once, then its ASIN and product come from Redis.
    by_sku, cached = await catalog.product(client, INDIA, sku=product.sku)
    assert (by_sku.asin, cached, calls("searchCatalogItems")) == (product.asin, False, 1)
    _, cached = await catalog.product(client, INDIA, sku=product.sku)
    assert (cached, calls("searchCatalogItems")) == (True, 1)

    with pytest.raises(Permanent, match="'NO-SUCH-SKU' is not in Amazon's catalog"):
        await catalog.product(client, INDIA, sku="NO-SUCH-SKU")
    with pytest.raises(ValueError, match="not both"):
        await catalog.product(client, INDIA, asin=product.asin, sku=product.sku)


async def test_a_documents_feed_gives_each_scheduled_packages_pdf_naming_its_order(
    sim: RunningSimulator, client: SpApiClient
) -> None:
    scheduled, unscheduled = easy_ship_order(sim), easy_ship_order(sim)
    slot = (await client.list_handover_slots(INDIA, scheduled, SIZE))[0]
    await client.create_scheduled_package(INDIA, scheduled, slot)
    feeds = FeedsClient(client)
    document = easyship_documents_feed(
        TEST_SELLER,
        [EasyShipDocumentsMessage(1, scheduled), EasyShipDocumentsMessage(2, unscheduled, ("Invoice",))],
    )
    feed_id = await feeds.submit(EASYSHIP_DOCUMENTS_FEED, document, XML_CONTENT_TYPE, [INDIA], lane="packing")
    sim.state.advance_clock(60)
    feed = await feeds.get_feed(feed_id)
    assert feed.processing_status == "DONE"
    assert feed.result_feed_document_id is not None
    result = await feeds.get_feed_document(feed.result_feed_document_id)
    # The order without a scheduled package is refused by its message; the other has its reference.
    (error,) = parse_processing_report(result).results
    assert (error.message_id, error.amazon_order_id) == (2, unscheduled)
    (reference,) = easyship_document_references(result)
    assert (reference.message_id, reference.amazon_order_id) == (1, scheduled)
    # The reference is a restricted report document (GET_EASYSHIP_DOCUMENTS): getReportDocument with a
    # Restricted Data Token; not a feed document, and not without the token.
    with pytest.raises(AmazonRejected) as not_a_feed_document:
        await feeds.get_feed_document(reference.report_reference_id)
    assert not_a_feed_document.value.status == 404
    with pytest.raises(AmazonRejected) as without_token:
        await client.get_report_document(reference.report_reference_id)
    assert without_token.value.status == 403
    content = await client.get_report_document(reference.report_reference_id, restricted=True)
    pdf = PdfReader(io.BytesIO(content))
    assert len(pdf.pages) == 2  # shipping label and invoice
    assert all(scheduled in page.extract_text() for page in pdf.pages)
