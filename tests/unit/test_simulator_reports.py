"""The simulator's Reports API through SimulatorState (no HTTP): reports made on the simulated clock,
the order report's content (the orders changed in the window, one line per item, regional, without
the changes within the report lag), Amazon's throttling and errors, documents kept 30 days."""

from __future__ import annotations

import gzip
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from ordersync.simulator.clock import epoch_to_iso, parse_iso
from ordersync.simulator.reports import ALL_ORDERS_COLUMNS
from ordersync.simulator.state import OPERATIONS, SimResponse, SimulatorState
from ordersync.simulator.testing import access_token, tiny_scenario, validate_response

pytestmark = pytest.mark.unit

US = "ATVPDKIKX0DER"
CA = "A2EUQ1WTGCTBG2"
ALL_ORDERS = "GET_FLAT_FILE_ALL_ORDERS_DATA_BY_LAST_UPDATE_GENERAL"
#: Reports that wait 30 s, take 120 s, and are 10 minutes behind.
STEADY = {"queue_delay_s": [30, 30], "duration_s": [120, 120], "lag_s": [600, 600]}
HOUR = 3600.0


class Sim:
    def __init__(self, reports: dict[str, Any] | None = None, **top: Any) -> None:
        top.setdefault("seller", {"marketplaces": [US, CA]})
        self.state = SimulatorState(tiny_scenario(reports={**STEADY, **(reports or {})}, **top))
        self.token = access_token(self.state)

    def call(self, operation: str, path: str, **kwargs: Any) -> SimResponse:
        response = self.state.call(
            operation, access_token=self.token, path=path, base_url="http://sim", **kwargs
        )
        op = OPERATIONS[operation]
        validate_response(op.api, op.operation_id, response.status, response.body, response.headers)
        return response

    def create(self, start: float, end: float | None = None, **spec: Any) -> SimResponse:
        body: dict[str, Any] = {
            "reportType": ALL_ORDERS,
            "marketplaceIds": [US],
            "dataStartTime": epoch_to_iso(start),
            **spec,
        }
        if end is not None:
            body["dataEndTime"] = epoch_to_iso(end)
        return self.call("createReport", "/reports/2021-06-30/reports", body=body)

    def request(self, start: float, end: float | None = None) -> str:
        response = self.create(start, end)
        assert response.status == 202, response.body
        return str(response.body["reportId"])

    def report(self, report_id: str) -> dict[str, Any]:
        response = self.call(
            "getReport", f"/reports/2021-06-30/reports/{report_id}", path_params={"reportId": report_id}
        )
        assert response.status == 200, response.body
        return dict(response.body)

    def document_info(self, document_id: str, **query: str) -> SimResponse:
        return self.call(
            "getReportDocument",
            f"/reports/2021-06-30/documents/{document_id}",
            path_params={"reportDocumentId": document_id},
            query=query,
        )

    def download(self, url: str) -> SimResponse:
        split = urlsplit(url)
        response, _ = self.state.download_document(split.path.rsplit("/", 1)[1], dict(parse_qsl(split.query)))
        return response

    def document(self, report_id: str) -> list[dict[str, str]]:
        """The DONE report's document as one dict per line (after checking header and compression)."""
        info = self.document_info(self.report(report_id)["reportDocumentId"])
        assert info.status == 200, info.body
        assert info.body["compressionAlgorithm"] == "GZIP"
        downloaded = self.download(info.body["url"])
        assert downloaded.status == 200
        text = gzip.decompress(downloaded.body).decode()
        header, *rows = text.rstrip("\n").split("\n")
        columns = header.split("\t")
        assert tuple(columns) == ALL_ORDERS_COLUMNS
        return [dict(zip(columns, row.split("\t"), strict=True)) for row in rows]

    def finish(self) -> None:
        self.state.advance_clock(30 + 120)


def order_ids(lines: list[dict[str, str]]) -> set[str]:
    return {line["amazon-order-id"] for line in lines}


def last_update_as_of(truth: dict[str, Any], cutoff: float) -> float | None:
    """What the truth says an order's last update was at ``cutoff`` (None: it did not exist)."""
    stamps = [parse_iso(v["at"]) for v in truth["history"] if parse_iso(v["at"]) <= cutoff]
    return max(stamps) if stamps else None


def test_a_report_is_done_only_after_its_processing_delay_on_the_simulated_clock() -> None:
    sim = Sim()
    now = sim.state.now()
    report_id = sim.request(now - 2 * 86400)
    report = sim.report(report_id)
    assert report["processingStatus"] == "IN_QUEUE"
    assert report["createdTime"] == epoch_to_iso(now)
    assert "reportDocumentId" not in report
    sim.state.advance_clock(29)
    assert sim.report(report_id)["processingStatus"] == "IN_QUEUE"
    sim.state.advance_clock(1)
    report = sim.report(report_id)
    assert (report["processingStatus"], report["processingStartTime"]) == (
        "IN_PROGRESS",
        epoch_to_iso(now + 30),
    )
    sim.state.advance_clock(119)
    assert sim.report(report_id)["processingStatus"] == "IN_PROGRESS"
    sim.state.advance_clock(1)
    report = sim.report(report_id)
    assert report["processingStatus"] == "DONE"
    assert report["processingEndTime"] == epoch_to_iso(now + 150)
    assert report["reportDocumentId"].startswith("amzn1.spdoc.")
    # The report keeps what was asked: marketplaces and window.
    assert report["marketplaceIds"] == [US]
    assert report["dataStartTime"] == epoch_to_iso(now - 2 * 86400)
    assert report["dataEndTime"] == epoch_to_iso(now)


def test_the_document_lists_every_order_changed_in_the_window_one_line_per_item_across_the_region() -> None:
    sim = Sim(reports={"lag_s": [0, 0]})
    state = sim.state
    start = state.now()
    canadian = state.add_order({"marketplace_id": CA, "items": [{"quantity": 1}, {"quantity": 2}]})
    american = state.add_order({"items": [{"quantity": 3}]})
    three_items = state.add_order({"item_count": 3})
    state.advance_clock(HOUR)
    state.set_order_status(american["amazon_order_id"], "Shipped")
    state.advance_clock(HOUR)
    end = state.now()
    state.advance_clock(HOUR)
    later = state.add_order({})  # after the window
    report_id = sim.request(start, end)
    sim.finish()
    lines = sim.document(report_id)

    truth = {o["amazon_order_id"]: o for o in state.truth_orders()}
    cutoff = parse_iso(state.truth_report(report_id)["cutoff"])
    # Exactly the orders whose last update (as of the report) lies in the window: the generated
    # orders of the past day are before it, the last one after it.
    expected = {
        order_id
        for order_id, order in truth.items()
        if (at := last_update_as_of(order, cutoff)) is not None and start <= at <= end
    }
    assert expected == {
        canadian["amazon_order_id"],
        american["amazon_order_id"],
        three_items["amazon_order_id"],
    }
    assert order_ids(lines) == expected
    assert later["amazon_order_id"] not in order_ids(lines)
    # Regional: the Canadian order is in a report asked for the US marketplace only.
    assert {line["sales-channel"] for line in lines} == {"Amazon.com", "Amazon.ca"}
    # One line per item, with the item's SKU and quantity.
    for order_id in expected:
        mine = [line for line in lines if line["amazon-order-id"] == order_id]
        items = truth[order_id]["items"]
        assert [(line["sku"], int(line["quantity"])) for line in mine] == [
            (item["sku"], item["quantity_ordered"]) for item in items
        ]
        assert {line["last-updated-date"] for line in mine} == {
            truth[order_id]["last_updated"].replace("Z", "+00:00")
        }
    shipped = [line for line in lines if line["amazon-order-id"] == american["amazon_order_id"]]
    assert [(line["order-status"], line["item-status"]) for line in shipped] == [("Shipped", "Shipped")]
    assert sim.state.truth_report(report_id)["lines"] == len(lines) == 2 + 1 + 3


def test_changes_within_the_report_lag_are_not_in_it_yet() -> None:
    sim = Sim()  # 10 minutes behind
    state = sim.state
    start = state.now()
    changed = state.add_order({"items": [{"quantity": 1}]})["amazon_order_id"]
    state.advance_clock(HOUR)
    state.set_order_status(changed, "Canceled")
    placed = state.add_order({})["amazon_order_id"]
    state.advance_clock(300)  # both changes 5 minutes old
    first = sim.request(start)
    state.advance_clock(900)
    second = sim.request(start)
    sim.finish()

    lines = sim.document(first)
    # The cancellation is too recent: the order shows as it was before it; the new order is absent.
    (line,) = [line for line in lines if line["amazon-order-id"] == changed]
    assert (line["order-status"], line["item-status"]) == ("Shipping", "Unshipped")
    assert line["last-updated-date"] == epoch_to_iso(start).replace("Z", "+00:00")
    assert placed not in order_ids(lines)
    truth = sim.state.truth_report(first)
    assert truth["cutoff"] == epoch_to_iso(parse_iso(truth["createdTime"]) - 600)
    assert truth["orderVersions"][changed] == epoch_to_iso(start)

    # Once the lag has passed, the next report has both changes.
    lines = sim.document(second)
    (line,) = [line for line in lines if line["amazon-order-id"] == changed]
    assert (line["order-status"], line["item-status"]) == ("Cancelled", "Cancelled")
    assert placed in order_ids(lines)


def test_create_report_is_throttled_at_amazons_rate() -> None:
    sim = Sim()
    start = sim.state.now() - HOUR
    for _ in range(15):  # reports_2021-06-30.json: burst 15
        response = sim.create(start)
        assert response.status == 202
        assert response.headers["x-amzn-RateLimit-Limit"] == "0.0167"
    throttled = sim.create(start)
    assert throttled.status == 429
    assert throttled.body["errors"][0]["code"] == "QuotaExceeded"
    assert "x-amzn-RateLimit-Limit" not in throttled.headers
    sim.state.advance_clock(59)
    assert sim.create(start).status == 429
    sim.state.advance_clock(2)  # one token per 1 / 0.0167 s (about 60 s)
    assert sim.create(start).status == 202
    counters = sim.state.counters_json()["sellers"]["A1TESTSELLER"]["createReport"]
    assert (counters["calls"], counters["throttled"]) == (18, 2)


@pytest.mark.parametrize(
    ("knob", "status", "code"), [("invalid", 400, "InvalidInput"), ("not_found", 404, "NotFound")]
)
def test_a_document_expires_after_thirty_days(knob: str, status: int, code: str) -> None:
    sim = Sim(reports={"expired_document": knob})
    sim.state.add_order({})
    sim.state.advance_clock(HOUR)
    report_id = sim.request(sim.state.now() - HOUR - 1)
    sim.finish()
    document_id = sim.report(report_id)["reportDocumentId"]
    sim.state.advance_clock(30 * 86400 - 100)  # kept 30 days from when it was made
    url = sim.document_info(document_id).body["url"]
    assert sim.download(url).status == 200
    sim.state.advance_clock(100)
    expired = sim.document_info(document_id)
    assert (expired.status, expired.body["errors"][0]["code"]) == (status, code)
    # A URL handed out before the end no longer downloads either: S3 deleted the object.
    gone = sim.download(url)
    assert gone.status == 404
    assert b"NoSuchKey" in gone.body
    # The report itself is still listed (reports are kept 90 days), document id and all.
    assert sim.report(report_id)["reportDocumentId"] == document_id
    assert sim.state.truth_report(report_id)["documentExpired"] is True


def test_an_empty_report_is_cancelled_or_done_with_only_the_header() -> None:
    sim = Sim()
    recent = sim.state.now() - 60  # nothing changed in the last minute (and the report is 10 minutes behind)
    report_id = sim.request(recent)
    sim.finish()
    report = sim.report(report_id)
    assert report["processingStatus"] == "CANCELLED"
    assert "reportDocumentId" not in report

    sim = Sim(reports={"empty": "done"})
    report_id = sim.request(sim.state.now() - 60)
    sim.finish()
    assert sim.document(report_id) == []


def test_unknown_report_types_are_refused_and_known_ones_the_simulator_does_not_make_end_fatal() -> None:
    sim = Sim()
    start = sim.state.now() - HOUR
    refused = sim.create(start, reportType="BAD_FEE_DISCOUNTS_REPORT")
    assert (refused.status, refused.body["errors"][0]["code"]) == (400, "InvalidInput")
    accepted = sim.create(start, reportType="GET_MERCHANT_LISTINGS_ALL_DATA")
    assert accepted.status == 202
    report_id = accepted.body["reportId"]
    sim.finish()
    report = sim.report(report_id)
    assert report["processingStatus"] == "FATAL"
    assert "reportDocumentId" not in report
    assert "does not make" in sim.state.truth_report(report_id)["fatalReason"]


def test_create_report_refuses_what_amazon_refuses() -> None:
    sim = Sim()
    now = sim.state.now()
    missing = sim.call("createReport", "/reports/2021-06-30/reports", body={"reportType": ALL_ORDERS}).body[
        "errors"
    ][0]
    # As Amazon answers it (selling-partner-api-docs#2721).
    assert (missing["message"], missing["details"]) == (
        "One or more required parameters missing",
        "marketplaceIds;",
    )
    for bad in (
        {"dataEndTime": epoch_to_iso(now + 60)},  # later than now
        {"dataStartTime": epoch_to_iso(now - 60), "dataEndTime": epoch_to_iso(now - 120)},
        {"marketplaceIds": ["A1PA6795UKMFR9"]},  # not this seller's
        {"marketplaceIds": []},
        {"reportOptions": {"x": 1}},
        {"dataStartTime": "yesterday"},
    ):
        response = sim.call(
            "createReport",
            "/reports/2021-06-30/reports",
            body={"reportType": ALL_ORDERS, "marketplaceIds": [US], **bad},
        )
        assert response.status == 400, bad
    unparsable = sim.call("createReport", "/reports/2021-06-30/reports", body=["not", "an", "object"])
    assert unparsable.status == 400


def test_only_a_report_in_queue_can_be_cancelled() -> None:
    sim = Sim()
    report_id = sim.request(sim.state.now() - HOUR)
    path = f"/reports/2021-06-30/reports/{report_id}"
    assert sim.call("cancelReport", path, path_params={"reportId": report_id}).status == 200
    report = sim.report(report_id)
    assert report["processingStatus"] == "CANCELLED"
    assert sim.call("cancelReport", path, path_params={"reportId": report_id}).status == 400
    sim.finish()
    assert sim.report(report_id)["processingStatus"] == "CANCELLED"
    unknown = sim.call("getReport", "/reports/2021-06-30/reports/1", path_params={"reportId": "1"})
    assert unknown.status == 404


def test_get_reports_filters_and_pages_newest_first() -> None:
    sim = Sim()
    start = sim.state.now() - HOUR
    made = [sim.request(start) for _ in range(5)]
    sim.state.advance_clock(10)
    fatal = sim.create(start, reportType="GET_AFN_INVENTORY_DATA").body["reportId"]
    sim.finish()
    query = {"reportTypes": ALL_ORDERS, "pageSize": "2"}
    seen: list[str] = []
    while True:
        page = sim.call("getReports", "/reports/2021-06-30/reports", query=query).body
        seen += [r["reportId"] for r in page["reports"]]
        if "nextToken" not in page:
            break
        query = {"nextToken": page["nextToken"]}
    assert seen == list(reversed(made))
    both = sim.call(
        "getReports",
        "/reports/2021-06-30/reports",
        query={"reportTypes": f"{ALL_ORDERS},GET_AFN_INVENTORY_DATA", "processingStatuses": "FATAL"},
    ).body
    assert [r["reportId"] for r in both["reports"]] == [fatal]
    bad = sim.call(
        "getReports",
        "/reports/2021-06-30/reports",
        query={"reportTypes": ALL_ORDERS, "processingStatuses": "NOPE"},
    )
    assert bad.status == 400


def test_orders_older_than_amazon_supports_are_left_out() -> None:
    sim = Sim(reports={"max_order_age_s": 2 * HOUR, "lag_s": [0, 0]})
    state = sim.state
    old = state.add_order({})["amazon_order_id"]
    state.advance_clock(3 * HOUR)
    state.set_order_status(old, "Canceled")  # changed now, placed three hours ago
    young = state.add_order({})["amazon_order_id"]
    state.advance_clock(1)
    report_id = sim.request(state.now() - HOUR)
    sim.finish()
    assert order_ids(sim.document(report_id)) == {young}


def test_documents_can_be_plain_and_the_url_can_ask_for_content_encoding() -> None:
    sim = Sim(reports={"lag_s": [0, 0]})
    sim.state.add_order({})
    sim.state.advance_clock(1)
    report_id = sim.request(sim.state.now() - HOUR)
    sim.finish()
    document_id = sim.report(report_id)["reportDocumentId"]
    info = sim.document_info(document_id, enableContentEncodingUrlHeader="true")
    response, content_type = sim.state.download_document(
        urlsplit(info.body["url"]).path.rsplit("/", 1)[1], dict(parse_qsl(urlsplit(info.body["url"]).query))
    )
    assert response.headers["Content-Encoding"] == "gzip"
    assert content_type.startswith("text/tab-separated-values")
    assert sim.document_info(document_id, enableContentEncodingUrlHeader="maybe").status == 400

    plain = Sim(reports={"lag_s": [0, 0], "compress": False})
    plain.state.add_order({})
    plain.state.advance_clock(1)
    report_id = plain.request(plain.state.now() - HOUR)
    plain.finish()
    info = plain.document_info(plain.report(report_id)["reportDocumentId"])
    assert "compressionAlgorithm" not in info.body
    assert plain.download(info.body["url"]).body.startswith(b"amazon-order-id\t")
    # A report document is not a feed document.
    feed_doc = plain.call(
        "getFeedDocument",
        "/feeds/2021-06-30/documents/x",
        path_params={"feedDocumentId": info.body["reportDocumentId"]},
    )
    assert feed_doc.status == 404


def test_another_sellers_report_and_document_are_not_found() -> None:
    other = {
        "seller_id": "A2OTHERSELLER",
        "marketplaces": [US],
        "applications": [
            {
                "client_id": "amzn1.application-oa2-client.other",
                "client_secret": "s",
                "refresh_token": "Atzr|o",
            }
        ],
        "orders": {"count": 0},
    }
    sim = Sim(reports={"lag_s": [0, 0]}, extra_sellers=[other])
    sim.state.add_order({})
    sim.state.advance_clock(1)
    report_id = sim.request(sim.state.now() - HOUR)
    sim.finish()
    document_id = sim.report(report_id)["reportDocumentId"]
    sim.token = access_token(sim.state, "A2OTHERSELLER")
    assert (
        sim.call(
            "getReport", f"/reports/2021-06-30/reports/{report_id}", path_params={"reportId": report_id}
        ).status
        == 404
    )
    denied = sim.document_info(document_id)
    assert (denied.status, denied.body["errors"][0]["message"]) == (
        400,
        f"Invalid reportDocumentId {document_id}",
    )


def test_the_truth_lists_reports_and_the_knobs_change_while_running() -> None:
    sim = Sim()
    start = sim.state.now()
    sim.state.add_order({})
    profile = sim.state.set_report_profile({"lag_s": [0, 0], "columns": ["sku", "amazon-order-id", "custom"]})
    assert profile["lag_s"] == [0.0, 0.0]
    sim.state.advance_clock(1)
    report_id = sim.request(start)
    (listed,) = sim.state.truth_reports()
    assert (listed["reportId"], listed["processingStatus"], listed["lines"], listed["lag_s"]) == (
        report_id,
        "IN_QUEUE",
        1,
        0.0,
    )
    sim.finish()
    document = sim.state.truth_report(report_id)["document"]
    header, line = document.rstrip("\n").split("\n")
    assert header == "sku\tamazon-order-id\tcustom"
    assert line.endswith("\t")  # the unknown column is empty
    with pytest.raises(ValueError, match="lag_s"):
        sim.state.set_report_profile({"lag_s": [10, 1]})
