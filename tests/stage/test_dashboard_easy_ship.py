"""The Easy Ship package on the dashboard and in ``ordersync orders show``, on a real Redis (no broker):
the order page's Easy Ship section and cached product data, the PDF route (only a location the order's
state recorded, behind the same reading access as the other order pages), and the grid's "Packed,
awaiting pickup" filter. The PDFs are in a local directory store (``documents.directory``)."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr
from starlette.testclient import TestClient
from typer.testing import CliRunner

from ordersync.amazon.catalog import CatalogItem, Measured, item_to_json
from ordersync.cli import app as cli_app
from ordersync.dashboard import create_app
from ordersync.documents import DirectoryDocumentStore, document_key
from ordersync.schemas.events import (
    OrderUpdated,
    PackageDocumentsFailed,
    PackageDocumentsReady,
    PackageScheduled,
    PackageSchedulingFailed,
    PackedSize,
)
from ordersync.schemas.topics import ORDERS_IMPORTED, PACKAGES_DOCUMENTS, PACKAGES_SCHEDULED
from ordersync.settings import DashboardSettings, Settings, get_settings
from ordersync.state import keys
from ordersync.state.readmodel import ReadModel
from tests.factories import (
    CHANNEL,
    OPERATOR_TOKEN,
    SELLER,
    T0,
    US,
    RecordedRun,
    dashboard_settings,
    write_channels_file,
)

pytestmark = pytest.mark.stage

READ_TOKEN = "read-token-for-tests"
#: Scheduled, documents stored: awaiting pickup.
READY = "111-0000011-0000011"
#: Scheduled, documents stored too (another order's PDF).
OTHER = "111-0000012-0000012"
#: Amazon would not schedule the package.
REFUSED = "111-0000013-0000013"
#: Scheduled; Amazon made no documents.
NO_DOCUMENTS = "111-0000014-0000014"
#: Scheduled, then shipped (picked up by Amazon's carrier).
SHIPPED = "111-0000015-0000015"
#: Not an Easy Ship order.
PLAIN = "111-0000016-0000016"
ASIN = "B000000001"
PDF_READY = b"%PDF-1.4\n% label and invoice of " + READY.encode()
PDF_OTHER = b"%PDF-1.4\n% label and invoice of " + OTHER.encode()


def _scheduled(run: RecordedRun, order_id: str, *, size_from: str = "packer") -> None:
    run.add(
        PACKAGES_SCHEDULED.name,
        PackageScheduled(
            channel=CHANNEL,
            amazon_order_id=order_id,
            scheduled_package_id=f"PKG-{order_id[-2:]}",
            slot_id="slot-1",
            slot_start=T0 + timedelta(hours=26),
            slot_end=T0 + timedelta(hours=28),
            handover="PICKUP",
            status="ReadyForPickup",
            invoice_number=f"INV-{order_id[-2:]}",
            tracking_id=f"TRK-{order_id[-2:]}",
            size=PackedSize(
                length_cm=Decimal("20.5"), width_cm=Decimal(15), height_cm=Decimal(10), weight_g=Decimal(480)
            ),
            size_from=size_from,  # type: ignore[arg-type]
            attempts=1,
            scheduled_at=run.clock,
        ),
    )


async def _stored(run: RecordedRun, settings: Settings, order_id: str, reference: str, pdf: bytes) -> None:
    directory = settings.documents.directory
    assert directory is not None
    key = document_key(settings.documents, SELLER, order_id, reference)
    stored = await DirectoryDocumentStore(directory).put(key, pdf)
    run.add(
        PACKAGES_DOCUMENTS.name,
        PackageDocumentsReady(
            channel=CHANNEL,
            amazon_order_id=order_id,
            scheduled_package_id=f"PKG-{order_id[-2:]}",
            document_types=("ShippingLabel", "Invoice"),
            feed_id="FEED-1",
            report_reference_id=reference,
            location=stored.location,
            size_bytes=stored.size_bytes,
            sha256=stored.sha256,
            stored_at=run.clock,
        ),
    )


async def fill(settings: Settings, redis: aioredis.Redis) -> None:
    """The orders above, folded into the settings' read model, and one product in the catalog cache."""
    run = RecordedRun()
    for order_id in (READY, OTHER, REFUSED, NO_DOCUMENTS, SHIPPED, PLAIN):
        run.order_flow(order_id)
        run.imported(order_id, f"SO{order_id[-8:]}")
    _scheduled(run, READY)
    await _stored(run, settings, READY, "REF-READY", PDF_READY)
    _scheduled(run, OTHER, size_from="catalog")
    await _stored(run, settings, OTHER, "REF-OTHER", PDF_OTHER)
    run.add(
        PACKAGES_SCHEDULED.name,
        PackageSchedulingFailed(
            channel=CHANNEL,
            amazon_order_id=REFUSED,
            error_code="NoHandoverSlot",
            error_message="No handover slot is left for the package",
            attempts=2,
            failed_at=run.clock,
        ),
    )
    _scheduled(run, NO_DOCUMENTS)
    run.add(
        PACKAGES_DOCUMENTS.name,
        PackageDocumentsFailed(
            channel=CHANNEL,
            amazon_order_id=NO_DOCUMENTS,
            document_types=("ShippingLabel", "Invoice"),
            feed_id="FEED-2",
            error_code="InvalidPackageState",
            error_message="The package is not ready for documents",
            failed_at=run.clock,
        ),
    )
    _scheduled(run, SHIPPED)
    run.add(
        ORDERS_IMPORTED.name,
        OrderUpdated(
            channel=CHANNEL,
            amazon_order_id=SHIPPED,
            sales_order_code=f"SO{SHIPPED[-8:]}",
            order_status="Shipped",
            changed_at=run.clock,
            lines=(),
        ),
    )
    model = ReadModel(redis, settings.redis.key_prefix, notify_dlq=False, notify_late=False)
    for topic, envelope in run.events:
        await model.apply(topic, envelope)
    product = CatalogItem(
        asin=ASIN,
        marketplace_id=US,
        title="Steel water bottle",
        image_url="https://m.media-amazon.com/images/I/bottle.jpg",
        item=Measured(weight_g=Decimal("450.00")),
        package=Measured(weight_g=Decimal("520.00")),
    )
    await redis.set(keys.PRODUCT.key(settings.redis.key_prefix, US, ASIN), item_to_json(product))


@pytest.fixture
def settings(redis_url: str, redis_key_prefix: str, tmp_path: Path) -> Settings:
    base = dashboard_settings(redis_url, redis_key_prefix, write_channels_file(tmp_path / "channels.yaml"))
    documents = base.documents.model_copy(update={"directory": tmp_path / "documents"})
    return base.model_copy(update={"documents": documents})


@pytest.fixture
async def filled(settings: Settings, redis_client: aioredis.Redis) -> Settings:
    await fill(settings, redis_client)
    return settings


def _document_path(order_id: str, reference: str) -> str:
    return f"/orders/{SELLER}/{order_id}/documents/{reference}"


async def test_the_order_page_shows_the_easy_ship_package_and_the_product(filled: Settings) -> None:
    with TestClient(create_app(filled)) as client:
        page = client.get(f"/orders/{SELLER}/{READY}")
        assert page.status_code == 200
        html = page.text
        assert 'id="order-easy-ship"' in html
        assert 'data-awaiting-pickup="true"' in html
        assert ">PKG-11<" in html
        slot = (T0 + timedelta(hours=26)).strftime("%Y-%m-%d %H:%M:%S UTC")
        slot_end = (T0 + timedelta(hours=28)).strftime("%Y-%m-%d %H:%M:%S UTC")
        assert f"{slot} \u2013 {slot_end}" in html
        assert ">PICKUP<" in html
        assert ">ReadyForPickup<" in html
        assert "20.5 \u00d7 15 \u00d7 10 cm, 480 g" in html
        assert "(from the packer)" in html
        assert ">INV-11<" in html
        assert ">TRK-11<" in html
        assert f'href="{_document_path(READY, "REF-READY")}"' in html
        assert "shipping label, invoice (PDF)" in html
        # The product from the catalog cache: its image (a link: nothing is loaded from another host)
        # and weight.
        assert 'href="https://m.media-amazon.com/images/I/bottle.jpg"' in html
        assert "<img" not in html
        assert "450.00 g" in html
        assert "Steel water bottle" in html
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert "style=" not in html

        other = client.get(f"/orders/{SELLER}/{OTHER}").text
        assert "(from the catalog)" in other

        refused = client.get(f"/orders/{SELLER}/{REFUSED}").text
        assert 'id="easy-ship-error"' in refused
        assert "NoHandoverSlot" in refused
        assert "No handover slot is left for the package" in refused

        no_documents = client.get(f"/orders/{SELLER}/{NO_DOCUMENTS}").text
        assert 'id="easy-ship-documents-error"' in no_documents
        assert "InvalidPackageState" in no_documents
        assert "The package is not ready for documents" in no_documents

        plain = client.get(f"/orders/{SELLER}/{PLAIN}").text
        assert 'id="order-easy-ship"' not in plain

        detail = client.get(f"/api/orders/{SELLER}/{READY}").json()
        assert detail["easy_ship"]["documents"][0]["report_reference_id"] == "REF-READY"
        assert detail["row"]["awaiting_pickup"] is True


async def test_the_pdf_route_serves_only_a_location_the_order_recorded(filled: Settings) -> None:
    with TestClient(create_app(filled), headers={"X-Operator-Token": OPERATOR_TOKEN}) as client:
        served = client.get(_document_path(READY, "REF-READY"))
        assert served.status_code == 200
        assert served.content == PDF_READY
        assert served.headers["content-type"] == "application/pdf"
        assert served.headers["content-disposition"] == f"inline; filename={READY}-REF-READY.pdf"
        assert served.headers["cache-control"] == "no-store"

        assert client.get(_document_path(OTHER, "REF-OTHER")).content == PDF_OTHER
        # Another order's reference, an unknown one, an order without documents, an unknown order, a
        # location in the URL: nothing.
        assert client.get(_document_path(READY, "REF-OTHER")).status_code == 404
        assert client.get(_document_path(READY, "REF-UNKNOWN")).status_code == 404
        assert client.get(_document_path(PLAIN, "REF-READY")).status_code == 404
        assert client.get(_document_path("111-9999999-9999999", "REF-READY")).status_code == 404
        assert client.get(f"/orders/OTHERSELLER/{READY}/documents/REF-READY").status_code == 404
        location = (filled.documents.directory or Path()).resolve().as_uri() + "/x.pdf"
        assert client.get(_document_path(READY, location.replace("/", "%2F"))).status_code == 404


async def test_a_recorded_pdf_missing_from_the_store_is_not_found(filled: Settings) -> None:
    directory = filled.documents.directory
    assert directory is not None
    (directory / document_key(filled.documents, SELLER, READY, "REF-READY")).unlink()
    with TestClient(create_app(filled), headers={"X-Operator-Token": OPERATOR_TOKEN}) as client:
        assert client.get(_document_path(READY, "REF-READY")).status_code == 404


async def test_the_pdf_route_needs_the_operator_token_as_the_buyers_data_does(filled: Settings) -> None:
    protected = filled.model_copy(
        update={
            "dashboard": DashboardSettings(
                operator_token=SecretStr(OPERATOR_TOKEN), read_token=SecretStr(READ_TOKEN)
            )
        }
    )
    path = _document_path(READY, "REF-READY")
    with TestClient(create_app(protected)) as client:
        for url in (f"/orders/{SELLER}/{READY}", path):
            missing = client.get(url)
            assert missing.status_code == 401, url
            assert "application/pdf" not in missing.headers["content-type"]
            assert client.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 403, url
        # The read token opens the order page but not the PDFs: they print the buyer's address.
        assert client.get(
            f"/orders/{SELLER}/{READY}", headers={"Authorization": f"Bearer {READ_TOKEN}"}
        ).is_success
        read_only = client.get(path, headers={"Authorization": f"Bearer {READ_TOKEN}"})
        assert (read_only.status_code, "application/pdf" in read_only.headers["content-type"]) == (403, False)
        allowed = client.get(path, headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"})
        assert (allowed.status_code, allowed.content) == (200, PDF_READY)
        # The operator's sign-in cookie opens it too.
        signed_in = client.post("/login", data={"token": OPERATOR_TOKEN, "next": path}, follow_redirects=True)
        assert (signed_in.status_code, signed_in.content) == (200, PDF_READY)


def _ids(answer: dict[str, Any]) -> set[str]:
    return {row["amazon_order_id"] for row in answer["rows"]}


async def test_the_grid_filters_packed_orders_awaiting_pickup(filled: Settings) -> None:
    with TestClient(create_app(filled)) as client:
        awaiting = client.get("/api/orders", params={"easy_ship": "awaiting-pickup"}).json()
        assert _ids(awaiting) == {READY, OTHER, NO_DOCUMENTS}
        assert awaiting["total"] == 3
        # With another filter: an intersection.
        failed = client.get("/api/orders", params={"easy_ship": "awaiting-pickup", "status": "Failed"}).json()
        assert _ids(failed) == {NO_DOCUMENTS}
        assert client.get("/api/orders", params={"easy_ship": "picked-up"}).status_code == 400

        page = client.get("/", params={"easy_ship": "awaiting-pickup"})
        assert page.status_code == 200
        assert '<select name="easy_ship"' in page.text
        assert '<option value="awaiting-pickup" selected>Packed, awaiting pickup (3)</option>' in page.text
        for order_id in (READY, OTHER, NO_DOCUMENTS):
            assert f'data-order="{order_id}"' in page.text
        for order_id in (REFUSED, SHIPPED, PLAIN):
            assert f'data-order="{order_id}"' not in page.text
        # The filter is kept in the export link.
        assert "easy_ship=awaiting-pickup" in page.text

        everything = client.get("/", params={}).text
        assert '<option value="awaiting-pickup" >Packed, awaiting pickup (3)</option>' in everything


def test_orders_show_prints_the_package_and_its_documents_and_list_filters_them(
    settings: Settings, redis_url: str, redis_key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def fill_and_close() -> None:
        redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
        try:
            await fill(settings, redis)
        finally:
            await redis.aclose()

    async def clean() -> None:
        redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
        try:
            async for key in redis.scan_iter(match=f"{redis_key_prefix}*", count=500):
                await redis.delete(key)
        finally:
            await redis.aclose()

    asyncio.run(fill_and_close())
    monkeypatch.setenv("ORDERSYNC_REDIS__URL", redis_url)
    monkeypatch.setenv("ORDERSYNC_REDIS__KEY_PREFIX", redis_key_prefix)
    get_settings.cache_clear()
    try:
        shown = CliRunner().invoke(cli_app, ["orders", "show", READY], env={"COLUMNS": "200"})
        assert shown.exit_code == 0, shown.output
        out = shown.output
        assert "Easy Ship package" in out
        assert "PKG-11" in out
        slot_start = (T0 + timedelta(hours=26)).strftime("%Y-%m-%d %H:%M")
        slot_end = (T0 + timedelta(hours=28)).strftime("%Y-%m-%d %H:%M")
        assert f"{slot_start} - {slot_end} UTC" in out
        assert "ReadyForPickup" in out
        assert "PICKUP" in out
        directory = settings.documents.directory
        assert directory is not None
        location = (
            (directory / document_key(settings.documents, SELLER, READY, "REF-READY")).resolve().as_uri()
        )
        assert f"document ShippingLabel, Invoice (reference REF-READY, {len(PDF_READY)} bytes" in out
        assert location in out

        refused = CliRunner().invoke(cli_app, ["orders", "show", REFUSED], env={"COLUMNS": "200"})
        assert refused.exit_code == 0, refused.output
        assert "NoHandoverSlot: No handover slot is left for the package" in refused.output

        as_json = CliRunner().invoke(cli_app, ["orders", "show", READY, "--json"])
        assert '"awaiting_pickup": true' in as_json.output
        assert location in as_json.output

        listed = CliRunner().invoke(cli_app, ["orders", "list", "--easy-ship", "awaiting-pickup", "--json"])
        assert listed.exit_code == 0, listed.output
        assert {row["amazon_order_id"] for row in json.loads(listed.output)["rows"]} == {
            READY,
            OTHER,
            NO_DOCUMENTS,
        }
        wrong = CliRunner().invoke(cli_app, ["orders", "list", "--easy-ship", "picked-up"])
        assert wrong.exit_code != 0
    finally:
        asyncio.run(clean())
