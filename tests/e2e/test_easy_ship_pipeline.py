"""Easy Ship end to end, as in the demo: an India seller's orders imported, invoiced and packed by the
back-office stand-in; each Easy Ship package scheduled with Amazon (the simulator holds it) and its label
and invoice stored in S3 (moto), where the PDF names the order; the seller's other orders confirmed as
usual; no 429 from Amazon."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
from pypdf import PdfReader

from ordersync.dev.demo import OutcomeWatcher, local_pipeline, wait_until_accounted
from ordersync.documents import document_store
from ordersync.schemas.events import EASY_SHIP, PackageDocumentsReady
from ordersync.schemas.topics import PACKAGES_DOCUMENTS
from ordersync.settings import Settings
from ordersync.simulator.scenario import Scenario, load_scenario
from tests.topics import read_all

pytestmark = pytest.mark.e2e

INDIA_SELLER = "A3DEMOSELLERIN"


def _scenario() -> Scenario:
    """The demo's India seller alone, its orders on Amazon already or arriving within two simulated
    minutes, none pending or cancelled, at 60x."""
    demo = load_scenario("demo")
    india = demo.seller(INDIA_SELLER)
    orders = india.orders.model_copy(
        update={
            "count": 14,
            "history_s": 600.0,
            "arrival_window_s": 120.0,
            "pending_share": 0.0,
            "afn_share": 0.0,
            "cancel_share": 0.0,
            "easy_ship_share": 0.75,
        }
    )
    return demo.model_copy(
        update={"seed": 13, "time_scale": 60.0, "sellers": (india.model_copy(update={"orders": orders}),)}
    )


async def _pdf_texts(settings: Settings, locations: dict[str, str]) -> dict[str, str]:
    """Each order's stored PDF, its text extracted by pypdf."""
    texts = {}
    async with document_store(settings) as store:
        for order_id, location in locations.items():
            reader = PdfReader(io.BytesIO(await store.get(location)))
            texts[order_id] = "\n".join(page.extract_text() for page in reader.pages)
    return texts


def test_easy_ship_packages_are_scheduled_and_their_documents_stored(tmp_path: Path) -> None:
    with local_pipeline(scenario=_scenario(), run_dir=tmp_path / "run") as pipeline:
        watcher = OutcomeWatcher(pipeline.settings())
        watcher.start()
        try:
            accounting = wait_until_accounted(pipeline, watcher, timeout_s=150)
            outcomes = watcher.snapshot()
        finally:
            watcher.stop()
        truth, throttled, _ = pipeline.truth()
        on_amazon = pipeline.easy_ship_orders()
        ready = [
            event
            for event in read_all(pipeline.env["ORDERSYNC_KAFKA__BOOTSTRAP"], PACKAGES_DOCUMENTS)
            if isinstance(event, PackageDocumentsReady)
        ]
        texts = asyncio.run(_pdf_texts(pipeline.settings(), {e.amazon_order_id: e.location for e in ready}))

    easy_ship = {order["amazon_order_id"] for order in truth if EASY_SHIP in order["programs"]}
    others = {order["amazon_order_id"] for order in truth} - easy_ship
    assert accounting.unaccounted == []
    assert easy_ship, "the scenario has Easy Ship orders"
    assert others, "the scenario has other seller-fulfilled orders"
    assert outcomes.scheduling_failures == {}
    assert outcomes.scheduled == easy_ship == on_amazon
    assert accounting.categories["Easy Ship package scheduled, documents stored"] == len(easy_ship)
    assert accounting.categories["confirmed on Amazon"] == len(others)
    assert {event.amazon_order_id for event in ready} == easy_ship
    for event in ready:
        assert event.location.startswith(f"s3://{pipeline.settings().documents.bucket}/")
        assert event.amazon_order_id in texts[event.amazon_order_id]
    assert throttled == 0, "the rate limiter let a request through that Amazon throttled"
