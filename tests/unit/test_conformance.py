"""Conformance: every operation the simulator serves, in every status it can answer, validates
against that operation's response in Amazon's models (status listed, body schema, headers)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from ordersync.simulator.clock import epoch_to_iso
from ordersync.simulator.state import OPERATIONS, SimResponse, SimulatorState
from ordersync.simulator.testing import TEST_SELLER, access_token, tiny_scenario, validate_response

pytestmark = pytest.mark.unit

US = "ATVPDKIKX0DER"
XML = "text/xml; charset=UTF-8"
ALL_ORDERS = "GET_FLAT_FILE_ALL_ORDERS_DATA_BY_LAST_UPDATE_GENERAL"


@dataclass(frozen=True)
class Request:
    path: str
    path_params: dict[str, str]
    query: dict[str, str]
    body: Any = None


@dataclass(frozen=True)
class Case:
    """How to make an operation answer: a valid request, an invalid one (None: the operation takes no
    input to get wrong, e.g. getMarketplaceParticipations), one for a missing resource."""

    ok: Request
    invalid: Request | None
    missing: Request | None = None


class World:
    """A simulator with one order in each interesting state, a finished feed and a finished report."""

    def __init__(self) -> None:
        self.state = SimulatorState(
            tiny_scenario(
                orders={"count": 30, "pending_share": 0.3, "afn_share": 0.3, "cancel_share": 0.2},
                feeds={
                    "queue_delay_s": [1, 1],
                    "duration_s": [1, 1],
                    "stall_share": 0,
                    "compress_reports": True,
                },
                reports={"queue_delay_s": [1, 1], "duration_s": [1, 1], "lag_s": [0, 0]},
                easy_ship={"marketplaces": [US]},
            )
        )
        self.token = access_token(self.state)
        state = self.state
        self.order = state.add_order({"items": [{"quantity": 2}]})["amazon_order_id"]
        self.shipped = state.add_order({})["amazon_order_id"]
        state.set_order_status(self.shipped, "Shipped")
        self.pending = state.add_order({"pending_s": 3600})["amazon_order_id"]
        self.preorder = state.add_order({"preorder_release_s": 3600})["amazon_order_id"]
        unconfirmed = state.add_order({})["amazon_order_id"]
        state.set_order_status(unconfirmed, "InvoiceUnconfirmed")
        canceled = state.add_order({})["amazon_order_id"]
        state.set_order_status(canceled, "Canceled")
        self.all_orders = [self.order, self.shipped, self.pending, self.preorder, unconfirmed, canceled]
        self.easy_ship = [
            state.add_order({"programs": ["AMAZON_EASY_SHIP"]})["amazon_order_id"] for _ in range(3)
        ]
        self.slots = [slot.slot_id for slot in state.easyship.slots(US, state.now())]
        self.sp("createScheduledPackageBulk", self.easy_ship_bulk(self.easy_ship[0]))
        doc = self.sp(
            "createFeedDocument", Request("/feeds/2021-06-30/documents", {}, {}, {"contentType": XML})
        )
        self.document_id = str(doc.body["feedDocumentId"])
        split = urlsplit(doc.body["url"])
        upload = state.upload_document(
            self.document_id, dict(parse_qsl(split.query)), XML, b"<AmazonEnvelope/>"
        )
        assert upload.status == 200
        spec = {
            "feedType": "POST_ORDER_FULFILLMENT_DATA",
            "marketplaceIds": [US],
            "inputFeedDocumentId": self.document_id,
        }
        self.feed_spec = spec
        self.feed_id = str(
            self.sp("createFeed", Request("/feeds/2021-06-30/feeds", {}, {}, spec)).body["feedId"]
        )
        self.report_spec = {
            "reportType": ALL_ORDERS,
            "marketplaceIds": [US],
            "dataStartTime": epoch_to_iso(state.now() - 2 * 86400),
        }
        self.report_id = self.new_report()
        state.advance_clock(5)
        self.queued_feed = str(
            self.sp("createFeed", Request("/feeds/2021-06-30/feeds", {}, {}, spec)).body["feedId"]
        )
        self.queued_report = self.new_report()
        done = self.sp("getReport", self.report_path(self.report_id)).body
        assert done["processingStatus"] == "DONE", done
        self.report_document = str(done["reportDocumentId"])
        self.result_document = str(
            self.sp(
                "getFeed", Request(f"/feeds/2021-06-30/feeds/{self.feed_id}", {"feedId": self.feed_id}, {})
            ).body["resultFeedDocumentId"]
        )

    def new_report(self) -> str:
        created = self.sp("createReport", Request("/reports/2021-06-30/reports", {}, {}, self.report_spec))
        return str(created.body["reportId"])

    @staticmethod
    def report_path(report_id: str) -> Request:
        return Request(f"/reports/2021-06-30/reports/{report_id}", {"reportId": report_id}, {})

    def sp(self, operation: str, request: Request, token: str | None = "own") -> SimResponse:  # noqa: S107
        return self.state.call(
            operation,
            access_token=self.token if token == "own" else token,
            path=request.path,
            path_params=request.path_params,
            query=request.query,
            body=request.body,
            base_url="http://sim",
        )

    @staticmethod
    def easy_ship_bulk(order_id: str, label_format: str = "PDF") -> Request:
        body = {
            "marketplaceId": US,
            "labelFormat": label_format,
            "orderScheduleDetailsList": [{"amazonOrderId": order_id}],
        }
        return Request("/easyShip/2022-03-23/packages/bulk", {}, {}, body)

    def easy_ship_cases(self) -> dict[str, Case]:
        unknown = "999-0000000-0000000"
        package = "/easyShip/2022-03-23/package"

        def slots(order_id: str, weight: float = 500) -> Request:
            body = {
                "marketplaceId": US,
                "amazonOrderId": order_id,
                "packageDimensions": {"length": 20, "width": 15, "height": 10, "unit": "cm"},
                "packageWeight": {"value": weight, "unit": "g"},
            }
            return Request("/easyShip/2022-03-23/timeSlot", {}, {}, body)

        def create(order_id: str, details: Any) -> Request:
            body = {"marketplaceId": US, "amazonOrderId": order_id, "packageDetails": details}
            return Request(package, {}, {}, body)

        def update(order_id: str, updates: int = 1) -> Request:
            entry = {
                "scheduledPackageId": {"amazonOrderId": order_id},
                "packageTimeSlot": {"slotId": self.slots[1]},
            }
            return Request(
                package, {}, {}, {"marketplaceId": US, "updatePackageDetailsList": [entry] * updates}
            )

        def get(order_id: str, marketplace_id: str = US) -> Request:
            return Request(package, {}, {"amazonOrderId": order_id, "marketplaceId": marketplace_id})

        slot = {"packageTimeSlot": {"slotId": self.slots[0]}}
        return {
            "listHandoverSlots": Case(slots(self.easy_ship[1]), slots(self.easy_ship[1], 0), slots(unknown)),
            "createScheduledPackage": Case(
                create(self.easy_ship[1], slot), create(self.easy_ship[1], None), create(unknown, slot)
            ),
            "createScheduledPackageBulk": Case(
                self.easy_ship_bulk(self.easy_ship[2]), self.easy_ship_bulk(self.easy_ship[2], "PNG")
            ),
            "getScheduledPackage": Case(get(self.easy_ship[0]), get(self.easy_ship[0], ""), get(unknown)),
            "updateScheduledPackages": Case(
                update(self.easy_ship[0]), update(self.easy_ship[0], 0), update(unknown)
            ),
        }

    def catalog_cases(self) -> dict[str, Case]:
        asin = self.state.catalogue(TEST_SELLER)[0].asin
        all_data = "summaries,images,dimensions,identifiers,attributes,productTypes,salesRanks"

        def item(asin: str, included: str = all_data) -> Request:
            query = {"marketplaceIds": US, "includedData": included}
            return Request(f"/catalog/2022-04-01/items/{asin}", {"asin": asin}, query)

        search = "/catalog/2022-04-01/items"
        return {
            "getCatalogItem": Case(item(asin), item(asin, "bogus"), item("B000000000")),
            "searchCatalogItems": Case(
                Request(
                    search,
                    {},
                    {
                        "marketplaceIds": US,
                        "identifiers": asin,
                        "identifiersType": "ASIN",
                        "includedData": all_data,
                    },
                ),
                Request(search, {}, {"marketplaceIds": US}),
            ),
        }

    def patch_listing_case(self) -> Case:
        sku = self.state.catalogue(TEST_SELLER)[0].sku
        merge = {
            "op": "merge",
            "path": "/attributes/fulfillment_availability",
            "value": [{"fulfillment_channel_code": "DEFAULT", "quantity": 0}],
        }

        def patch(body: dict[str, Any], seller: str = TEST_SELLER) -> Request:
            path = f"/listings/2021-08-01/items/{seller}/{sku}"
            return Request(path, {"sellerId": seller, "sku": sku}, {"marketplaceIds": US}, body)

        return Case(
            patch({"productType": "PRODUCT", "patches": [merge]}),
            patch({"productType": "PRODUCT", "patches": []}),  # 400: at least one patch
        )

    def cases(self) -> dict[str, Case]:
        week = epoch_to_iso(self.state.now() - 7 * 86400)
        o = self.order

        def order_path(order_id: str, suffix: str = "") -> Request:
            return Request(f"/orders/v0/orders/{order_id}{suffix}", {"orderId": order_id}, {})

        confirm = {
            "marketplaceId": US,
            "packageDetail": {
                "packageReferenceId": "1",
                "carrierCode": "UPS",
                "trackingNumber": "1Z",
                "shipDate": "2026-01-05T08:00:00Z",
                "orderItems": [],
            },
        }
        return {
            "getOrders": Case(
                Request("/orders/v0/orders", {}, {"MarketplaceIds": US, "LastUpdatedAfter": week}),
                Request("/orders/v0/orders", {}, {"LastUpdatedAfter": week}),
            ),
            "getOrder": Case(order_path(o), order_path("bad"), order_path("111-0000000-0000000")),
            "getOrderItems": Case(
                order_path(o, "/orderItems"),
                Request(f"/orders/v0/orders/{o}/orderItems", {"orderId": o}, {"NextToken": "bad"}),
                order_path("111-0000000-0000000", "/orderItems"),
            ),
            "getOrderAddress": Case(
                order_path(o, "/address"),
                order_path("bad", "/address"),
                order_path("111-0000000-0000000", "/address"),
            ),
            "confirmShipment": Case(
                Request(f"/orders/v0/orders/{o}/shipmentConfirmation", {"orderId": o}, {}, confirm),
                Request(
                    f"/orders/v0/orders/{o}/shipmentConfirmation", {"orderId": o}, {}, {"marketplaceId": US}
                ),
                Request(
                    "/orders/v0/orders/111-0000000-0000000/shipmentConfirmation",
                    {"orderId": "111-0000000-0000000"},
                    {},
                    confirm,
                ),
            ),
            "searchOrders": Case(
                Request(
                    "/orders/2026-01-01/orders",
                    {},
                    {
                        "lastUpdatedAfter": week,
                        "includedData": ",".join(
                            [
                                "BUYER",
                                "RECIPIENT",
                                "PROCEEDS",
                                "FULFILLMENT",
                                "CANCELLATION",
                                "TAX",
                                "PACKAGES",
                                "EXPENSE",
                            ]
                        ),
                    },
                ),
                Request("/orders/2026-01-01/orders", {}, {"createdAfter": week, "lastUpdatedAfter": week}),
            ),
            "getOrder@2026-01-01": Case(
                Request(
                    f"/orders/2026-01-01/orders/{o}", {"orderId": o}, {"includedData": "FULFILLMENT,PACKAGES"}
                ),
                Request(f"/orders/2026-01-01/orders/{o}", {"orderId": o}, {"includedData": "ALL"}),
                Request(
                    "/orders/2026-01-01/orders/111-0000000-0000000", {"orderId": "111-0000000-0000000"}, {}
                ),
            ),
            "createRestrictedDataToken": Case(
                Request(
                    "/tokens/2021-03-01/restrictedDataToken",
                    {},
                    {},
                    {
                        "restrictedResources": [
                            {"method": "GET", "path": "/orders/v0/orders", "dataElements": ["buyerInfo"]}
                        ]
                    },
                ),
                Request("/tokens/2021-03-01/restrictedDataToken", {}, {}, {"restrictedResources": []}),
            ),
            "createFeedDocument": Case(
                Request("/feeds/2021-06-30/documents", {}, {}, {"contentType": XML}),
                Request("/feeds/2021-06-30/documents", {}, {}, {}),
            ),
            "createFeed": Case(
                Request("/feeds/2021-06-30/feeds", {}, {}, self.feed_spec),
                Request("/feeds/2021-06-30/feeds", {}, {}, {**self.feed_spec, "feedType": "NOPE"}),
            ),
            "getFeeds": Case(
                Request("/feeds/2021-06-30/feeds", {}, {"feedTypes": "POST_ORDER_FULFILLMENT_DATA"}),
                Request("/feeds/2021-06-30/feeds", {}, {}),
            ),
            "getFeed": Case(
                Request(f"/feeds/2021-06-30/feeds/{self.feed_id}", {"feedId": self.feed_id}, {}),
                Request("/feeds/2021-06-30/feeds/x", {"feedId": "x"}, {}),
                Request("/feeds/2021-06-30/feeds/1", {"feedId": "1"}, {}),
            ),
            "cancelFeed": Case(
                Request(f"/feeds/2021-06-30/feeds/{self.queued_feed}", {"feedId": self.queued_feed}, {}),
                Request(f"/feeds/2021-06-30/feeds/{self.feed_id}", {"feedId": self.feed_id}, {}),
                Request("/feeds/2021-06-30/feeds/1", {"feedId": "1"}, {}),
            ),
            "getFeedDocument": Case(
                Request(
                    f"/feeds/2021-06-30/documents/{self.result_document}",
                    {"feedDocumentId": self.result_document},
                    {},
                ),
                Request(
                    f"/feeds/2021-06-30/documents/{self.result_document}",
                    {"feedDocumentId": self.result_document},
                    {"enableContentEncodingUrlHeader": "maybe"},
                ),
                Request("/feeds/2021-06-30/documents/nope", {"feedDocumentId": "nope"}, {}),
            ),
            "createReport": Case(
                Request("/reports/2021-06-30/reports", {}, {}, self.report_spec),
                Request("/reports/2021-06-30/reports", {}, {}, {"reportType": ALL_ORDERS}),
            ),
            "getReports": Case(
                Request("/reports/2021-06-30/reports", {}, {"reportTypes": ALL_ORDERS}),
                Request("/reports/2021-06-30/reports", {}, {"processingStatuses": "DONE"}),
            ),
            "getReport": Case(self.report_path(self.report_id), self.report_path("x"), self.report_path("1")),
            "cancelReport": Case(
                self.report_path(self.queued_report),
                self.report_path(self.report_id),  # DONE: only IN_QUEUE reports can be cancelled
                self.report_path("1"),
            ),
            "patchListingsItem": self.patch_listing_case(),
            **self.easy_ship_cases(),
            **self.catalog_cases(),
            "getMarketplaceParticipations": Case(
                Request("/sellers/v1/marketplaceParticipations", {}, {}), None
            ),
            "getReportDocument": Case(
                Request(
                    f"/reports/2021-06-30/documents/{self.report_document}",
                    {"reportDocumentId": self.report_document},
                    {},
                ),
                # Amazon answers an id it does not know with 400 (no 404 to be had here).
                Request("/reports/2021-06-30/documents/nope", {"reportDocumentId": "nope"}, {}),
            ),
        }


def fix_confirm_items(world: World, case: Case) -> Case:
    items = [
        {"orderItemId": i["order_item_id"], "quantity": 1}
        for i in world.state.truth_order(world.order)["items"]
    ]
    body = json.loads(json.dumps(case.ok.body))
    body["packageDetail"]["orderItems"] = items
    return Case(Request(case.ok.path, case.ok.path_params, case.ok.query, body), case.invalid, case.missing)


def test_every_operation_and_status_the_simulator_serves_conforms_to_the_models() -> None:
    world = World()
    cases = world.cases()
    cases["confirmShipment"] = fix_confirm_items(world, cases["confirmShipment"])
    # The Notifications operations have theirs in test_simulator_notifications.py (grantless tokens).
    conformed_elsewhere = {name for name, op in OPERATIONS.items() if op.api == "notifications"}
    assert conformed_elsewhere, "the Notifications operations are served"
    assert set(cases) == set(OPERATIONS) - conformed_elsewhere, (
        "every served operation has a conformance case"
    )
    seen: dict[str, set[int]] = {}

    def check(operation: str, response: SimResponse) -> None:
        op = OPERATIONS[operation]
        validate_response(op.api, op.operation_id, response.status, response.body, response.headers)
        seen.setdefault(operation, set()).add(response.status)

    for operation, case in cases.items():
        state = world.state
        check(operation, world.sp(operation, case.ok))
        if case.invalid is not None:
            check(operation, world.sp(operation, case.invalid))
        state.reset_buckets()  # Catalog Items' burst is 2: the next requests must reach the operation
        if case.missing is not None:
            check(operation, world.sp(operation, case.missing))
        check(operation, world.sp(operation, case.ok, token=None))  # 403
        for fault in ("429", "500", "503"):
            state.reset_buckets()
            state.force_fault({"fault": fault, "operation": operation})
            check(operation, world.sp(operation, case.ok))

    # Every order state renders valid in both APIs.
    for order_id in world.all_orders:
        for operation, request in (
            ("getOrder", Request(f"/orders/v0/orders/{order_id}", {"orderId": order_id}, {})),
            ("getOrderItems", Request(f"/orders/v0/orders/{order_id}/orderItems", {"orderId": order_id}, {})),
            ("getOrderAddress", Request(f"/orders/v0/orders/{order_id}/address", {"orderId": order_id}, {})),
            (
                "getOrder@2026-01-01",
                Request(
                    f"/orders/2026-01-01/orders/{order_id}",
                    {"orderId": order_id},
                    {"includedData": "BUYER,RECIPIENT,PROCEEDS,FULFILLMENT,CANCELLATION,TAX,PACKAGES"},
                ),
            ),
        ):
            response = world.sp(operation, request)
            assert response.status == 200, (operation, response.body)
            check(operation, response)
    # A paged getOrders / searchOrders over every generated order, with and without an RDT.
    week = epoch_to_iso(world.state.now() - 7 * 86400)
    rdt = world.sp("createRestrictedDataToken", cases["createRestrictedDataToken"].ok).body[
        "restrictedDataToken"
    ]
    for token in ("own", rdt):
        query = {"MarketplaceIds": US, "CreatedAfter": week, "MaxResultsPerPage": "7"}
        while True:
            response = world.sp("getOrders", Request("/orders/v0/orders", {}, query), token=token)
            check("getOrders", response)
            next_token = response.body["payload"].get("NextToken")
            if not next_token:
                break
            query = {"MarketplaceIds": US, "NextToken": next_token}
        world.state.reset_buckets()

    expected_missing = {op: {404} for op, case in cases.items() if case.missing is not None}
    for operation in cases:
        success = {
            "createFeedDocument": 201,
            "createFeed": 202,
            "confirmShipment": 204,
            "createReport": 202,
        }.get(operation, 200)
        wanted = {success, 403, 429, 500, 503} | expected_missing.get(operation, set())
        if cases[operation].invalid is not None:
            wanted.add(400)
        assert wanted <= seen[operation], (operation, sorted(seen[operation]))


def _sandbox_cases() -> list[tuple[str, str, str, Any]]:
    from ordersync.amazon.models import load_model  # noqa: PLC0415

    found: list[tuple[str, str, str, Any]] = []
    for api in ("orders-v0", "orders-2026-01-01", "tokens", "feeds", "reports"):
        for methods in load_model(api)["paths"].values():
            for op in methods.values():
                if not isinstance(op, dict):
                    continue
                for status, response in op.get("responses", {}).items():
                    for case in (response.get("x-amzn-api-sandbox") or {}).get("static", []):
                        if "response" in case:
                            found.append((api, op["operationId"], status, case["response"]))
    return found


@pytest.mark.parametrize(("api", "operation", "status", "body"), _sandbox_cases())
def test_the_validator_accepts_amazons_own_sandbox_examples(
    api: str, operation: str, status: str, body: Any
) -> None:
    """Guards the validator itself: Amazon's examples pass it (non-strict: examples carry extra
    fields the models do not declare)."""
    import jsonschema  # noqa: PLC0415

    from ordersync.amazon.models import load_model  # noqa: PLC0415
    from ordersync.simulator.testing import model_operation  # noqa: PLC0415

    schema = model_operation(api, operation)["responses"][status].get("schema")
    if schema is None:
        return
    full = {"allOf": [schema], "definitions": load_model(api)["definitions"]}
    jsonschema.Draft4Validator(full).validate(body)
