"""The order report's parser: columns found by header name in any order, unknown columns ignored,
one line per item read into aware datetimes, the newest version per order, clear errors for a
document it cannot read, and no personal data kept beyond the ship country. And how the client reads
reports from Amazon's answers (the model's own examples, a mock transport): getReport, getReportDocument
and the document's download from its presigned URL."""

from __future__ import annotations

import dataclasses
import gzip
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from ordersync.amazon.client import ReportStatus, SpApiClient
from ordersync.amazon.reports import (
    ALL_ORDERS_REPORT,
    ReportFormatError,
    ReportOrderLine,
    latest_versions,
    parse_all_orders_report,
)
from ordersync.channels import Channel, LwaCredentials, SecretRef
from ordersync.errors import AmazonRejected, AmazonUnavailable, Permanent
from ordersync.ratelimit import InMemoryRateLimiter
from ordersync.ratelimit.plans import PlanBook
from ordersync.settings import AmazonSettings
from ordersync.simulator.testing import model_operation

pytestmark = pytest.mark.unit

#: Amazon's documented columns with the ones older or other accounts' files carry too (url after
#: order-channel, number-of-items, cpf, is-iba), as a real file of this report looks.
HEADER = (
    "amazon-order-id\tmerchant-order-id\tpurchase-date\tlast-updated-date\torder-status\t"
    "fulfillment-channel\tsales-channel\torder-channel\turl\tship-service-level\tproduct-name\tsku\tasin\t"
    "number-of-items\titem-status\tquantity\tcurrency\titem-price\titem-tax\tshipping-price\tshipping-tax\t"
    "gift-wrap-price\tgift-wrap-tax\titem-promotion-discount\tship-promotion-discount\tship-city\t"
    "ship-state\tship-postal-code\tship-country\tpromotion-ids\tcpf\tis-business-order\t"
    "purchase-order-number\tprice-designation\tis-iba"
)


def row(**values: str) -> str:
    defaults = {
        "sales-channel": "Amazon.com",
        "ship-service-level": "Standard",
        "product-name": "Classic Coffee Mug, 12 oz",
        "currency": "USD",
        "item-price": "12.90",
        "ship-city": "SEATTLE",
        "ship-state": "WA",
        "ship-postal-code": "98101-1234",
        "ship-country": "US",
        "is-business-order": "false",
        "number-of-items": "1",
    }
    merged = {**defaults, **values}
    return "\t".join(merged.get(name, "") for name in HEADER.split("\t"))


DOCUMENT = (
    "\n".join(
        [
            HEADER,
            row(
                **{
                    "amazon-order-id": "114-2297870-8536095",
                    "purchase-date": "2026-01-04T09:51:33+00:00",
                    "last-updated-date": "2026-01-04T10:02:10+00:00",
                    "order-status": "Shipping",
                    "fulfillment-channel": "Merchant",
                    "sku": "MUG-001",
                    "asin": "B0DEMO0001",
                    "item-status": "Unshipped",
                    "quantity": "2",
                }
            ),
            row(
                **{
                    "amazon-order-id": "114-2297870-8536095",
                    "purchase-date": "2026-01-04T09:51:33+00:00",
                    "last-updated-date": "2026-01-04T10:02:10+00:00",
                    "order-status": "Shipping",
                    "fulfillment-channel": "Merchant",
                    "sku": "LAMP-002",
                    "asin": "B0DEMO0002",
                    "item-status": "Unshipped",
                    "quantity": "1",
                }
            ),
            row(
                **{
                    "amazon-order-id": "250-1234567-7654321",
                    "merchant-order-id": "SO-1001",
                    "purchase-date": "2026-01-03T23:00:00Z",
                    "last-updated-date": "2026-01-05T08:30:00+09:00",
                    "order-status": "Cancelled",
                    "fulfillment-channel": "Amazon",
                    "sales-channel": "Amazon.co.jp",
                    "sku": "BOTTLE-3",
                    "item-status": "Cancelled",
                    "quantity": "1",
                    "ship-country": "JP",
                }
            ),
        ]
    )
    + "\n"
)


def test_a_real_shaped_document_with_extra_columns_is_read_line_by_line() -> None:
    lines = parse_all_orders_report(DOCUMENT)
    assert [(line.amazon_order_id, line.sku, line.quantity) for line in lines] == [
        ("114-2297870-8536095", "MUG-001", 2),
        ("114-2297870-8536095", "LAMP-002", 1),
        ("250-1234567-7654321", "BOTTLE-3", 1),
    ]
    first, _, canceled = lines
    assert first == ReportOrderLine(
        amazon_order_id="114-2297870-8536095",
        merchant_order_id=None,
        purchase_date=datetime(2026, 1, 4, 9, 51, 33, tzinfo=UTC),
        last_updated=datetime(2026, 1, 4, 10, 2, 10, tzinfo=UTC),
        order_status="Shipping",
        fulfillment_channel="MFN",
        sales_channel="Amazon.com",
        sku="MUG-001",
        asin="B0DEMO0001",
        quantity=2,
        item_status="Unshipped",
        ship_country="US",
    )
    # Offsets are kept as aware datetimes: Z, +00:00 and +09:00 alike.
    assert canceled.purchase_date == datetime(2026, 1, 3, 23, 0, tzinfo=UTC)
    assert canceled.last_updated == datetime(2026, 1, 5, 8, 30, tzinfo=timezone(timedelta(hours=9)))
    assert canceled.last_updated.utcoffset() is not None
    assert (canceled.merchant_order_id, canceled.fulfillment_channel, canceled.asin) == (
        "SO-1001",
        "AFN",
        None,
    )
    assert (canceled.order_status, canceled.item_status, canceled.sales_channel) == (
        "Cancelled",
        "Cancelled",
        "Amazon.co.jp",
    )


def test_columns_are_found_by_name_in_any_order() -> None:
    header = HEADER.split("\t")
    shuffled = list(reversed(header))
    rows = [line.split("\t") for line in DOCUMENT.rstrip("\n").split("\n")]
    moved = "\n".join("\t".join(r[header.index(name)] for name in shuffled) for r in rows)
    assert parse_all_orders_report(moved) == parse_all_orders_report(DOCUMENT)
    # And only the required columns are enough; what is absent is None.
    minimal = (
        "amazon-order-id\tpurchase-date\tlast-updated-date\torder-status\tfulfillment-channel\tsku\tquantity\n"
        "111-0000000-0000001\t2026-01-05T09:00:00+00:00\t2026-01-05T09:05:00+00:00\tPending\tMerchant\tX\t3\n"
    )
    (line,) = parse_all_orders_report(minimal)
    assert (line.asin, line.item_status, line.sales_channel, line.ship_country) == (None, None, None, None)


def test_no_personal_data_is_kept_beyond_the_ship_country() -> None:
    fields = {f.name for f in dataclasses.fields(ReportOrderLine)}
    assert not fields & {
        "ship_city",
        "ship_state",
        "ship_postal_code",
        "product_name",
        "purchase_order_number",
    }
    for line in parse_all_orders_report(DOCUMENT):
        shown = repr(line)
        assert "SEATTLE" not in shown
        assert "98101" not in shown
        assert "WA'" not in shown


def test_the_latest_version_of_each_order_is_its_newest_last_update() -> None:
    older = ReportOrderLine.example(amazon_order_id="A", last_updated=datetime(2026, 1, 5, 9, tzinfo=UTC))
    newer = dataclasses.replace(older, last_updated=older.last_updated + timedelta(minutes=5), sku="B")
    other = ReportOrderLine.example(amazon_order_id="C")
    latest = latest_versions([older, newer, other, dataclasses.replace(older, sku="late but older")])
    assert latest == {"A": newer, "C": other}
    lines = parse_all_orders_report(DOCUMENT)
    assert {k: v.sku for k, v in latest_versions(lines).items()} == {
        "114-2297870-8536095": "MUG-001",  # an order's lines share its last update: its first line
        "250-1234567-7654321": "BOTTLE-3",
    }


def test_windows_line_endings_a_bom_blank_lines_and_trailing_empty_values_are_read() -> None:
    rows = DOCUMENT.rstrip("\n").split("\n")
    trimmed = [rows[0], *(r.rstrip("\t") for r in rows[1:])]  # trailing empty columns left out
    text = "\ufeff" + "\r\n".join([trimmed[0], "", *trimmed[1:], ""]) + "\r\n"
    assert parse_all_orders_report(text) == parse_all_orders_report(DOCUMENT)
    assert parse_all_orders_report(HEADER + "\n") == []


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "empty"),
        ("order-id\torder-item-id\tpurchase-date\n1\t2\t2026-01-05T09:00:00Z\n", "lacks amazon-order-id"),
        (HEADER.replace("last-updated-date", "last-update") + "\n", "lacks last-updated-date"),
        (
            HEADER + "\n" + row(**{"amazon-order-id": "X", "purchase-date": "yesterday"}),
            "line 2: purchase-date",
        ),
        (
            HEADER
            + "\n"
            + row(**{"amazon-order-id": "X", "purchase-date": "2026-01-05T09:00:00Z"})
            + "\textra",
            "line 2: 36 values",
        ),
        (HEADER + "\n\n" + row(**{"purchase-date": "2026-01-05T09:00:00Z"}), "line 3: no amazon-order-id"),
        (
            HEADER
            + "\n"
            + row(
                **{
                    "amazon-order-id": "X",
                    "purchase-date": "2026-01-05T09:00:00Z",
                    "last-updated-date": "2026-01-05T09:00:00Z",
                    "quantity": "two",
                }
            ),
            "quantity 'two'",
        ),
    ],
)
def test_a_document_it_cannot_read_is_a_permanent_error_that_says_why(text: str, says: str) -> None:
    with pytest.raises(ReportFormatError, match=says) as caught:
        parse_all_orders_report(text)
    assert isinstance(caught.value, Permanent)
    assert caught.value.kind == "permanent"


# --- how the client reads reports (getReport, getReportDocument and the download) -------------------


def _example(operation: str, status: str) -> Any:
    """The model's own (sandbox) answer of ``operation`` with ``status``."""
    return model_operation("reports", operation)["responses"][status]["x-amzn-api-sandbox"]["static"][0][
        "response"
    ]


def _client(handler: Callable[[httpx.Request], httpx.Response]) -> SpApiClient:
    def with_lwa(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/auth/o2/token":
            return httpx.Response(200, json={"access_token": "Atza|x", "expires_in": 3600})
        return handler(request)

    channel = Channel(
        name="reports",
        seller_id="A1SELLER",
        marketplaces=("ATVPDKIKX0DER",),
        credentials=LwaCredentials(
            client_id=SecretRef(value=SecretStr("id")),
            client_secret=SecretRef(value=SecretStr("secret")),
            refresh_token=SecretRef(value=SecretStr("Atzr|x")),
        ),
    )
    return SpApiClient(
        channel=channel,
        amazon=AmazonSettings(endpoint="https://sp.example", lwa_endpoint="https://sp.example/auth/o2/token"),
        limiter=InMemoryRateLimiter(plans=PlanBook(time_scale=100_000)),
        http=httpx.AsyncClient(transport=httpx.MockTransport(with_lwa)),
    )


async def test_the_client_reads_amazons_own_report_examples() -> None:
    seen: list[httpx.Request] = []
    listing = b"item-name\tseller-sku\nMug\tMUG-001\n"

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        path = request.url.path
        if request.method == "POST":
            return httpx.Response(202, json=_example("createReport", "202"))
        if path.startswith("/reports/2021-06-30/reports/bad"):
            return httpx.Response(400, json=_example("getReport", "400"), headers={"x-amzn-RequestId": "r"})
        if path.startswith("/reports/2021-06-30/reports/"):
            return httpx.Response(200, json=_example("getReport", "200"))
        if path.startswith("/reports/2021-06-30/documents/"):
            return httpx.Response(200, json=_example("getReportDocument", "200"))
        return httpx.Response(200, content=listing)  # the document's URL

    client = _client(handler)
    when = datetime(2026, 1, 5, 9, tzinfo=UTC)
    assert (
        await client.create_report(ALL_ORDERS_REPORT, data_start=when - timedelta(days=1), data_end=when)
        == "ID323"
    )
    body = json.loads(seen[0].content)
    assert body == {
        "reportType": ALL_ORDERS_REPORT,
        "marketplaceIds": ["ATVPDKIKX0DER"],  # the channel's
        "dataStartTime": "2026-01-04T09:00:00Z",
        "dataEndTime": "2026-01-05T09:00:00Z",
    }
    status = await client.get_report("ID323")
    assert status == ReportStatus(
        report_id="ReportId1",
        report_type="FEE_DISCOUNTS_REPORT",
        processing_status="IN_PROGRESS",
        report_document_id=None,
        data_start=datetime(2024, 3, 11, 13, 47, 20, 677000, tzinfo=UTC),
        data_end=datetime(2024, 3, 12, 13, 47, 20, 677000, tzinfo=UTC),
        created=datetime(2024, 3, 10, 13, 47, 20, 677000, tzinfo=UTC),
    )
    assert not status.done
    with pytest.raises(AmazonRejected) as refused:
        await client.get_report("badReportId1")
    assert (refused.value.status, refused.value.code, refused.value.request_id) == (400, "400", "r")
    # The example's document is not compressed: downloaded as it is, without SP-API credentials.
    assert await client.get_report_document("0356cf79-b8b0-4226-b4b9-0ee058ea5760") == listing
    download = seen[-1]
    assert download.url.host == "d34o8swod1owfl.cloudfront.net"
    assert "x-amz-access-token" not in download.headers
    assert download.headers["user-agent"] == client.user_agent
    await client.http.aclose()


def _document_client(download: httpx.Response, compression: str | None = "GZIP") -> SpApiClient:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/reports/2021-06-30/documents/"):
            body = {"reportDocumentId": "doc", "url": "https://s3.example/doc?X-Amz-Signature=s"}
            if compression is not None:
                body["compressionAlgorithm"] = compression
            return httpx.Response(200, json=body)
        return download

    return _client(handler)


async def test_report_documents_are_gunzipped_once_and_s3_errors_are_classified() -> None:
    text = DOCUMENT.encode()
    packed = gzip.compress(text)
    assert await _document_client(httpx.Response(200, content=packed)).get_report_document("doc") == text
    # A URL asked with Content-Encoding gzip: httpx decodes it, the client must not again.
    encoded = httpx.Response(200, content=packed, headers={"content-encoding": "gzip"})
    assert await _document_client(encoded).get_report_document("doc") == text
    with pytest.raises(AmazonRejected, match="BadGzip"):
        await _document_client(httpx.Response(200, content=b"not gzip")).get_report_document("doc")
    with pytest.raises(AmazonRejected, match="compressionAlgorithm"):
        await _document_client(httpx.Response(200, content=text), "ZSTD").get_report_document("doc")
    s3 = b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"
    with pytest.raises(AmazonRejected) as denied:
        await _document_client(httpx.Response(403, content=s3)).get_report_document("doc")
    assert (denied.value.operation, denied.value.code, denied.value.kind) == (
        "downloadReportDocument",
        "AccessDenied",
        "permanent",
    )
    slow = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
    with pytest.raises(AmazonUnavailable) as unavailable:
        await _document_client(httpx.Response(503, content=slow)).get_report_document("doc")
    assert (unavailable.value.code, unavailable.value.kind) == ("SlowDown", "retryable")
