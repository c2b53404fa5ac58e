"""Easy Ship documents against the simulator, with a real Redis and a real S3-protocol server (moto): the
scheduled packages of a seller are asked for their label and invoice in one POST_EASYSHIP_DOCUMENTS feed
on the shipments' createFeed lane, each PDF is downloaded with getReportDocument and a Restricted Data
Token, stored encrypted, and announced with where it is; a replay asks nothing again; a refused message,
a feed that ends FATAL and a download Amazon cannot serve end as Amazon's rules say."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader

from ordersync.amazon.client import SpApiClient
from ordersync.consumers import packing, packing_documents
from ordersync.dev.testing import RecordingRuntime
from ordersync.documents import document_store
from ordersync.errors import AmazonUnavailable
from ordersync.schemas.envelope import Envelope
from ordersync.schemas.events import PackageDocumentsFailed, PackageDocumentsReady, PackageScheduled
from ordersync.schemas.topics import PACKAGES_DOCUMENTS, PACKAGES_SCHEDULED
from ordersync.settings import AwsSettings
from ordersync.simulator.runner import RunningSimulator
from ordersync.simulator.testing import TEST_SELLER, tiny_scenario
from tests.stage.test_easy_ship_packing import INDIA, imported_order, packed

pytestmark = pytest.mark.stage


def documents_scenario(**easy_ship: Any) -> Any:
    return tiny_scenario(
        seller={"region": "eu", "marketplaces": [INDIA]},
        orders={"count": 1},
        easy_ship=easy_ship,
        feeds={"queue_delay_s": [5, 5], "duration_s": [10, 10], "stall_share": 0},
    )


@pytest.fixture
async def s3_setup(
    make_runtime: Any, aws: AwsSettings
) -> AsyncIterator[tuple[RecordingRuntime, RunningSimulator]]:
    scenario = documents_scenario()
    bucket = f"docs-{hashlib.sha256(str(id(scenario)).encode()).hexdigest()[:12]}"
    with RunningSimulator(scenario) as sim:
        settings = {"aws": aws, "documents": {"bucket": bucket, "flush_interval_s": 60}}
        yield await make_runtime("shipment-write-back", scenario, sim, other_settings=settings), sim


async def scheduled(runtime: RecordingRuntime, sim: RunningSimulator, count: int) -> list[Envelope[Any]]:
    """``count`` Easy Ship orders packed and scheduled; their ``packages.scheduled`` records."""
    for _ in range(count):
        await packing.handle(runtime, packed(runtime, await imported_order(runtime, sim)))
    records = [e.envelope for e in runtime.emitted if e.topic == PACKAGES_SCHEDULED.name]
    assert all(isinstance(r.payload, PackageScheduled) for r in records)
    return records


def calls(sim: RunningSimulator, operation: str) -> int:
    return sim.state.counters.get(TEST_SELLER, operation).calls


async def test_scheduled_packages_get_their_pdfs_in_one_feed_stored_encrypted_in_s3(
    s3_setup: tuple[RecordingRuntime, RunningSimulator],
) -> None:
    runtime, sim = s3_setup
    records = await scheduled(runtime, sim, 2)
    for record in records + records:  # each replayed once
        await packing_documents.handle(runtime, record)
    channel = runtime.channels.channels[0]
    assert await packing_documents.FEEDS.pending_count(runtime, TEST_SELLER) == 2

    await packing_documents.tick(runtime)  # the feed goes
    assert calls(sim, "createFeed") == 1
    sim.state.advance_clock(60)
    await packing_documents.tick(runtime)  # its report read, each PDF downloaded and stored

    ready = runtime.payloads(PACKAGES_DOCUMENTS.name)
    orders = {r.payload.amazon_order_id for r in records}
    assert {r.amazon_order_id for r in ready} == orders
    assert all(isinstance(r, PackageDocumentsReady) for r in ready)
    assert calls(sim, "createFeed") == 1
    assert calls(sim, "getReportDocument") == 2
    assert calls(sim, "createRestrictedDataToken") == 2
    async with document_store(runtime.settings) as store:
        for event in ready:
            assert event.location.startswith(
                f"s3://{runtime.settings.documents.bucket}/easyship/{TEST_SELLER}/"
            )
            content = await store.get(event.location)
            assert (len(content), hashlib.sha256(content).hexdigest()) == (event.size_bytes, event.sha256)
            pages = PdfReader(io.BytesIO(content)).pages
            assert len(pages) == 2  # the label and the invoice
            assert all(event.amazon_order_id in page.extract_text() for page in pages)
            bucket, key = event.location.removeprefix("s3://").split("/", 1)
            head = await store._s3.head_object(Bucket=bucket, Key=key)  # type: ignore[attr-defined]
            assert head["ServerSideEncryption"] == "AES256"
    for order_id in orders:
        status = await runtime.store.order_status(TEST_SELLER, order_id)
        assert status["easy_ship_documents"] == "Ready"

    # A replay after the documents are stored asks Amazon nothing.
    for record in records:
        await packing_documents.handle(runtime, record)
    await packing_documents.tick(runtime)
    assert await packing_documents.FEEDS.pending_count(runtime, TEST_SELLER) == 0
    assert len(runtime.payloads(PACKAGES_DOCUMENTS.name)) == 2
    assert calls(sim, "createFeed") == 1
    assert channel.seller_id == TEST_SELLER


@pytest.fixture
async def local_setup(
    make_runtime: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[RecordingRuntime, RunningSimulator]]:
    options: dict[str, Any] = getattr(request, "param", {})
    scenario = documents_scenario(**options.get("easy_ship", {}))
    with RunningSimulator(scenario) as sim:
        settings: dict[str, Any] = {
            "documents": {"directory": tmp_path, "flush_interval_s": 60, **options.get("documents", {})},
            "writeback": {"retry_backoff_s": 30, **options.get("writeback", {})},
        }
        yield await make_runtime("shipment-write-back", scenario, sim, other_settings=settings), sim


@pytest.mark.parametrize(
    "local_setup", [{"documents": {"types": ("ShippingLabel", "Warranty")}}], indirect=True
)
async def test_a_refused_message_fails_its_package_with_amazons_message(
    local_setup: tuple[RecordingRuntime, RunningSimulator],
) -> None:
    runtime, sim = local_setup
    (record,) = await scheduled(runtime, sim, 1)
    await packing_documents.handle(runtime, record)
    await packing_documents.tick(runtime)
    sim.state.advance_clock(60)
    await packing_documents.tick(runtime)
    (failed,) = runtime.payloads(PACKAGES_DOCUMENTS.name)
    assert isinstance(failed, PackageDocumentsFailed)
    assert failed.error_code == "18041"  # a warranty asked for a package scheduled without serial numbers
    assert "serial numbers" in failed.error_message
    assert failed.feed_id is not None
    assert calls(sim, "getReportDocument") == 0
    status = await runtime.store.order_status(TEST_SELLER, record.payload.amazon_order_id)
    assert status["easy_ship_documents"] == "Failed"


@pytest.mark.parametrize(
    "local_setup", [{"easy_ship": {"documents_fatal": True}, "writeback": {"max_attempts": 2}}], indirect=True
)
async def test_a_documents_feed_that_ends_fatal_is_sent_again_then_given_up(
    local_setup: tuple[RecordingRuntime, RunningSimulator],
) -> None:
    runtime, sim = local_setup
    (record,) = await scheduled(runtime, sim, 1)
    await packing_documents.handle(runtime, record)
    await packing_documents.tick(runtime)
    sim.state.advance_clock(60)
    await packing_documents.tick(runtime)  # FATAL: back to pending, one attempt spent
    assert runtime.payloads(PACKAGES_DOCUMENTS.name) == []
    (waiting,) = await packing_documents.FEEDS.pending(runtime, TEST_SELLER)
    assert (waiting.attempts, "FATAL" in waiting.last_error) == (1, True)
    for _ in range(3):  # past the backoff and the flush interval: sent again, FATAL again, given up
        sim.state.advance_clock(120)
        await packing_documents.tick(runtime)
    assert calls(sim, "createFeed") == 2
    (failed,) = runtime.payloads(PACKAGES_DOCUMENTS.name)
    assert isinstance(failed, PackageDocumentsFailed)
    assert failed.error_code == "FeedFailed"
    assert "FATAL" in failed.error_message
    assert await packing_documents.FEEDS.pending_count(runtime, TEST_SELLER) == 0


async def test_a_download_amazon_cannot_serve_now_is_tried_again_later(
    local_setup: tuple[RecordingRuntime, RunningSimulator], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    runtime, sim = local_setup
    (record,) = await scheduled(runtime, sim, 1)
    await packing_documents.handle(runtime, record)
    real = SpApiClient.get_report_document
    failures = [AmazonUnavailable("getReportDocument", 503, "ServiceUnavailable", "try later")]

    async def unavailable_once(self: SpApiClient, *args: Any, **kwargs: Any) -> bytes:
        if failures:
            raise failures.pop()
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(SpApiClient, "get_report_document", unavailable_once)
    await packing_documents.tick(runtime)
    sim.state.advance_clock(60)
    await packing_documents.tick(runtime)  # the report read; the download fails: kept, with backoff
    assert runtime.payloads(PACKAGES_DOCUMENTS.name) == []
    (waiting,) = await packing_documents.downloads(runtime, TEST_SELLER)
    assert (waiting.attempts, waiting.last_error) == (1, "ServiceUnavailable: try later")
    await packing_documents.tick(runtime)  # still inside its backoff: not tried
    assert runtime.payloads(PACKAGES_DOCUMENTS.name) == []
    sim.state.advance_clock(60)
    await packing_documents.tick(runtime)
    (ready,) = runtime.payloads(PACKAGES_DOCUMENTS.name)
    assert isinstance(ready, PackageDocumentsReady)
    assert ready.location.startswith("file://")
    stored = Path(ready.location.removeprefix("file://"))
    assert stored.is_relative_to(tmp_path)
    assert os.stat(stored).st_mode & 0o777 == 0o600  # buyers' addresses: the owner's only
    with open(stored, "rb") as pdf:  # noqa: ASYNC230 - a test reading a small local file
        assert record.payload.amazon_order_id in PdfReader(pdf).pages[0].extract_text()
    assert await packing_documents.downloads(runtime, TEST_SELLER) == []
