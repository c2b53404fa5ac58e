"""The simulator's Notifications API v1 and ORDER_CHANGE notifications, through SimulatorState.call on a
frozen clock (no HTTP, no SQS): LWA's client_credentials grant, grantless and seller tokens, destinations
and subscriptions with the model's errors, every answer valid by Amazon's model, throttling at 1 request
per second with a burst of 5, and the notifications each order change makes (Amazon's schema, filters,
the delivery knobs, deterministic by seed)."""

from __future__ import annotations

import json
import uuid
from functools import partial
from typing import Any

import pytest

from ordersync.amazon.operations import NOTIFICATIONS_OPERATIONS, NOTIFICATIONS_SCOPE
from ordersync.simulator.notifications import Delivery, application_id
from ordersync.simulator.state import OPERATIONS, SimResponse, SimulatorState
from ordersync.simulator.testing import (
    TEST_CLIENT_ID,
    TEST_CLIENT_SECRET,
    TEST_SELLER,
    access_token,
    tiny_scenario,
    validate_notification,
    validate_response,
)
from ordersync.simulator.validation import ControlError

pytestmark = pytest.mark.unit

US = "ATVPDKIKX0DER"
CA = "A2EUQ1WTGCTBG2"
ARN = "arn:aws:sqs:us-east-1:123456789012:order-change"
OTHER_SELLER = "A2OTHERSELLER"
OTHER_CLIENT_ID = "amzn1.application-oa2-client.other"
#: Delivery without randomness beyond the lag: every notification due 1 to 10 s after its change.
PROMPT = {"lag_s": [1, 10], "late": {"p_late": 0.0, "max_late_s": 0}}
ORDER_CHANGE_FILTER = {"eventFilter": {"eventFilterType": "ORDER_CHANGE"}}


def other_seller(**extra: Any) -> dict[str, Any]:
    return {
        "seller_id": OTHER_SELLER,
        "marketplaces": [US],
        "applications": [
            {"client_id": TEST_CLIENT_ID, "client_secret": TEST_CLIENT_SECRET, "refresh_token": "Atzr|other"},
            {
                "client_id": OTHER_CLIENT_ID,
                "client_secret": "other-secret",
                "refresh_token": "Atzr|other-app",
            },
        ],
        "orders": {"count": 3, "pending_share": 0, "afn_share": 0, "cancel_share": 0},
        **extra,
    }


class Api:
    """The Notifications operations of one simulator, with a seller token and a grantless one."""

    def __init__(self, state: SimulatorState) -> None:
        self.state = state
        self.seller = access_token(state)
        self.grantless = self.grantless_token()
        #: Off: every call finds full buckets (the clock is frozen, the burst is 5).
        self.throttled = False

    def grantless_token(
        self,
        scope: str = NOTIFICATIONS_SCOPE,
        client_id: str = TEST_CLIENT_ID,
        secret: str = TEST_CLIENT_SECRET,
    ) -> str:
        status, body = self.state.issue_access_token(
            {
                "grant_type": "client_credentials",
                "scope": scope,
                "client_id": client_id,
                "client_secret": secret,
            }
        )
        assert status == 200, body
        return str(body["access_token"])

    def call(
        self,
        operation: str,
        path: str,
        *,
        token: str | None,
        path_params: dict[str, str] | None = None,
        query: dict[str, str] | None = None,
        body: Any = None,
    ) -> SimResponse:
        if not self.throttled:
            self.state.reset_buckets()
        response = self.state.call(
            operation, access_token=token, path=path, path_params=path_params, query=query, body=body
        )
        op = OPERATIONS[operation]
        validate_response(op.api, op.operation_id, response.status, response.body, response.headers)
        return response

    def create_destination(self, body: Any = None, *, auth: str | None = "grantless") -> SimResponse:
        spec = {"name": "orders", "resourceSpecification": {"sqs": {"arn": ARN}}} if body is None else body
        return self.call(
            "createDestination",
            "/notifications/v1/destinations",
            token=self._token(auth),
            body=spec,
        )

    def get_destinations(self, *, auth: str | None = "grantless") -> SimResponse:
        return self.call("getDestinations", "/notifications/v1/destinations", token=self._token(auth))

    def destination(
        self, operation: str, destination_id: str, *, auth: str | None = "grantless"
    ) -> SimResponse:
        return self.call(
            operation,
            f"/notifications/v1/destinations/{destination_id}",
            token=self._token(auth),
            path_params={"destinationId": destination_id},
        )

    def subscribe(
        self,
        destination_id: str,
        *,
        kind: str = "ORDER_CHANGE",
        directive: Any = ORDER_CHANGE_FILTER,
        version: Any = "1.0",
        auth: str | None = "seller",
        extra: dict[str, Any] | None = None,
    ) -> SimResponse:
        body: dict[str, Any] = {"payloadVersion": version, "destinationId": destination_id, **(extra or {})}
        if directive is not None:
            body["processingDirective"] = directive
        if version is None:
            del body["payloadVersion"]
        return self.call(
            "createSubscription",
            f"/notifications/v1/subscriptions/{kind}",
            token=self._token(auth),
            path_params={"notificationType": kind},
            body=body,
        )

    def get_subscription(
        self,
        kind: str = "ORDER_CHANGE",
        *,
        auth: str | None = "seller",
        query: dict[str, str] | None = None,
    ) -> SimResponse:
        return self.call(
            "getSubscription",
            f"/notifications/v1/subscriptions/{kind}",
            token=self._token(auth),
            path_params={"notificationType": kind},
            query=query,
        )

    def by_id(
        self,
        operation: str,
        subscription_id: str,
        kind: str = "ORDER_CHANGE",
        *,
        auth: str | None = "grantless",
    ) -> SimResponse:
        return self.call(
            operation,
            f"/notifications/v1/subscriptions/{kind}/{subscription_id}",
            token=self._token(auth),
            path_params={"notificationType": kind, "subscriptionId": subscription_id},
        )

    def _token(self, auth: str | None) -> str | None:
        """``auth``: "seller" or "grantless" (this simulator's tokens), another token, or none."""
        if auth in ("seller", "grantless"):
            return self.seller if auth == "seller" else self.grantless
        return auth

    def subscribed(self, **subscribe: Any) -> str:
        """A destination for ARN and the seller's ORDER_CHANGE subscription to it: its id."""
        destination = self.create_destination()
        assert destination.status == 200, destination.body
        response = self.subscribe(destination.body["payload"]["destinationId"], **subscribe)
        assert response.status == 200, response.body
        return str(response.body["payload"]["subscriptionId"])


def make(**scenario: Any) -> Api:
    scenario.setdefault("notifications", PROMPT)
    return Api(SimulatorState(tiny_scenario(**scenario)))


def error(response: SimResponse) -> tuple[int, str, str]:
    first = response.body["errors"][0]
    return response.status, first["code"], first.get("details", "")


def deliver_all(state: SimulatorState, seconds: float = 3600) -> list[Delivery]:
    state.advance_clock(seconds)
    taken = state.take_due_notifications(limit=10_000)
    for delivery in taken:
        state.notification_sent(delivery)
    return taken


def messages(deliveries: list[Delivery]) -> list[dict[str, Any]]:
    return [json.loads(d.body) for d in deliveries]


# --- LWA: the client_credentials grant ---------------------------------------------------------------


def test_lwa_grants_grantless_tokens_for_known_scopes_only() -> None:
    state = SimulatorState(tiny_scenario())
    form = {
        "grant_type": "client_credentials",
        "client_id": TEST_CLIENT_ID,
        "client_secret": TEST_CLIENT_SECRET,
    }
    status, body = state.issue_access_token({**form, "scope": NOTIFICATIONS_SCOPE})
    assert status == 200
    assert body["scope"] == NOTIFICATIONS_SCOPE
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 3600
    assert body["access_token"].startswith("Atc|")
    assert "refresh_token" not in body
    assert state.issue_access_token(form) == (
        400,
        {
            "error_description": "The request is missing a required parameter : scope",
            "error": "invalid_request",
        },
    )
    assert (
        state.issue_access_token({**form, "scope": "sellingpartnerapi::orders"})[1]["error"]
        == "invalid_scope"
    )
    assert state.issue_access_token({**form, "scope": NOTIFICATIONS_SCOPE, "client_secret": "no"})[0] == 401
    assert (
        state.issue_access_token({**form, "grant_type": "password"})[1]["error"] == "unsupported_grant_type"
    )
    lwa = state.counters_json()["sellers"]
    assert lwa["(grantless)"]["lwaToken"]["ok"] == 1


def test_grantless_operations_take_grantless_tokens_and_seller_operations_seller_tokens() -> None:
    api = make()
    rotation = api.grantless_token(scope="sellingpartnerapi::client_credential:rotation")
    for token in (api.seller, rotation, None):
        status, code, _ = error(api.create_destination(auth=token))
        assert (status, code) == (403, "Unauthorized")
    destination_id = api.create_destination().body["payload"]["destinationId"]
    refused = api.subscribe(destination_id, auth=api.grantless)
    assert error(refused)[:2] == (403, "Unauthorized")
    assert "refresh_token grant" in error(refused)[2]
    assert api.get_subscription(auth=api.grantless).status == 403
    subscription_id = api.subscribe(destination_id).body["payload"]["subscriptionId"]
    assert api.by_id("getSubscriptionById", subscription_id, auth=api.seller).status == 403
    assert api.by_id("deleteSubscriptionById", subscription_id, auth=api.seller).status == 403
    assert api.by_id("getSubscriptionById", subscription_id).status == 200
    # Grantless calls count for the application, outside every seller's counters.
    sellers = api.state.counters_json()["sellers"]
    assert sellers["(grantless)"]["createDestination"]["ok"] == 1
    assert sellers[TEST_SELLER]["createSubscription"]["ok"] == 1


# --- destinations ---------------------------------------------------------------------------------------


def test_destinations_are_the_applications_and_validated_as_the_model_says() -> None:
    api = make(extra_sellers=[other_seller()])
    created = api.create_destination()
    assert created.status == 200
    payload = created.body["payload"]
    assert payload["resource"] == {"sqs": {"arn": ARN}}
    assert payload["name"] == "orders"
    uuid.UUID(payload["destinationId"])

    bridge = api.create_destination(
        {
            "name": "bridge",
            "resourceSpecification": {"eventBridge": {"region": "us-east-1", "accountId": "1234"}},
        }
    )
    assert bridge.status == 200
    resource = bridge.body["payload"]["resource"]["eventBridge"]
    assert (resource["region"], resource["accountId"]) == ("us-east-1", "1234")
    assert resource["name"].startswith("aws.partner/sellingpartnerapi.amazon/")

    conflict = api.create_destination()
    assert error(conflict)[:2] == (409, "Conflict")
    assert f"A destination with arn {ARN} already exists for the application" in error(conflict)[2]

    spec = {"sqs": {"arn": ARN}}
    for body in (
        {"name": "x", "resourceSpecification": {}},
        {"name": "x", "resourceSpecification": {**spec, "eventBridge": {"region": "r", "accountId": "a"}}},
        {"name": "x", "resourceSpecification": {"sqs": {"arn": "arn:aws:sns:us-east-1:1:topic"}}},
        {"name": "x", "resourceSpecification": {"sqs": {}}},
        {"name": "x", "resourceSpecification": {"eventBridge": {"region": "us-east-1"}}},
        {"resourceSpecification": spec},
        {"name": "x" * 257, "resourceSpecification": spec},
        {"name": "x"},
        ["not", "an", "object"],
    ):
        status, code, _ = error(api.create_destination(body))
        assert (status, code) == (400, "InvalidInput"), body

    listed = api.get_destinations()
    assert [d["name"] for d in listed.body["payload"]] == ["orders", "bridge"]
    other_app = api.grantless_token(client_id=OTHER_CLIENT_ID, secret="other-secret")
    assert api.get_destinations(auth=other_app).body == {"payload": []}
    assert api.destination("getDestination", payload["destinationId"], auth=other_app).status == 404
    assert api.destination("getDestination", payload["destinationId"]).body == {"payload": payload}
    assert error(api.destination("getDestination", "nope"))[:2] == (404, "NotFound")


def test_a_destination_with_subscriptions_cannot_be_deleted() -> None:
    api = make()
    destination_id = api.create_destination().body["payload"]["destinationId"]
    subscription_id = api.subscribe(destination_id).body["payload"]["subscriptionId"]
    refused = api.destination("deleteDestination", destination_id)
    assert error(refused) == (403, "Unauthorized", "Destination has subscriptions")
    assert api.by_id("deleteSubscriptionById", subscription_id).status == 200
    deleted = api.destination("deleteDestination", destination_id)
    assert (deleted.status, deleted.body) == (200, {})
    assert api.destination("getDestination", destination_id).status == 404
    assert api.destination("deleteDestination", destination_id).status == 404


# --- subscriptions --------------------------------------------------------------------------------------


def test_one_subscription_per_type_and_seller_a_second_is_a_conflict() -> None:
    api = make(extra_sellers=[other_seller()])
    destination_id = api.create_destination().body["payload"]["destinationId"]
    directive = {"eventFilter": {"eventFilterType": "ORDER_CHANGE", "marketplaceIds": [US]}}
    created = api.subscribe(destination_id, directive=directive)
    assert created.status == 200
    subscription = created.body["payload"]
    assert subscription["destinationId"] == destination_id
    assert subscription["payloadVersion"] == "1.0"
    assert subscription["processingDirective"] == directive

    again = api.subscribe(destination_id)
    assert error(again) == (409, "StateConflict", "")
    assert again.body["errors"][0]["message"] == "The resource specified conflicts with the current state."
    assert api.get_subscription().body == {"payload": subscription}
    assert api.get_subscription(query={"payloadVersion": "1.0"}).body == {"payload": subscription}
    assert api.by_id("getSubscriptionById", subscription["subscriptionId"]).body == {"payload": subscription}
    assert (
        api.by_id("getSubscriptionById", subscription["subscriptionId"], kind="ANY_OFFER_CHANGED").status
        == 404
    )
    assert error(api.get_subscription("FEED_PROCESSING_FINISHED"))[:2] == (404, "NotFound")

    # Another seller of the same application has a subscription of its own.
    other = access_token(api.state, OTHER_SELLER)
    assert api.get_subscription(auth=other).status == 404
    assert api.subscribe(destination_id, auth=other).status == 200

    assert api.by_id("deleteSubscriptionById", subscription["subscriptionId"]).body == {}
    assert api.get_subscription().status == 404
    assert api.by_id("deleteSubscriptionById", subscription["subscriptionId"]).status == 404
    assert api.subscribe(destination_id).status == 200  # subscribing again after the delete


def test_subscription_bodies_are_validated_as_the_model_and_amazon_say() -> None:
    api = make(extra_sellers=[other_seller()])
    destination_id = api.create_destination().body["payload"]["destinationId"]
    other_app = api.grantless_token(client_id=OTHER_CLIENT_ID, secret="other-secret")
    foreign = api.create_destination(auth=other_app).body["payload"]["destinationId"]

    def refused(details: str, **subscribe: Any) -> None:
        response = api.subscribe(subscribe.pop("destination", destination_id), **subscribe)
        status, code, said = error(response)
        assert (status, code) == (400, "InvalidInput"), response.body
        assert response.body["errors"][0]["message"] == (
            "Request has missing or invalid parameters and cannot be parsed."
        )
        assert details in said

    refused("Processing Directive eventFilter must not be empty", directive=None)
    refused("Processing Directive eventFilter must not be empty", directive={})
    refused("eventFilterType must be one of", directive={"eventFilter": {"marketplaceIds": [US]}})
    refused(
        "does not match notificationType",
        directive={"eventFilter": {"eventFilterType": "ANY_OFFER_CHANGED"}},
    )
    refused(
        "orderChangeTypes",
        directive={"eventFilter": {"eventFilterType": "ORDER_CHANGE", "orderChangeTypes": ["Shipped"]}},
    )
    refused(
        "marketplaceIds",
        directive={"eventFilter": {"eventFilterType": "ORDER_CHANGE", "marketplaceIds": US}},
    )
    refused(
        "aggregationTimePeriod",
        directive={"eventFilter": {"eventFilterType": "ORDER_CHANGE", "aggregationSettings": {}}},
    )
    refused(
        "mutually exclusive",
        directive={**ORDER_CHANGE_FILTER, "filterExpression": "Summary.OrderStatus == `Shipped`"},
    )
    refused("payloadVersion is required", version=None)
    refused("payloadVersion 2.0 is not a version of ORDER_CHANGE", version="2.0")
    refused("DestinationId belongs to the application", destination="no-such-destination")
    refused("DestinationId belongs to the application", destination=foreign)
    refused(
        'Invalid value "ORDER_STATUS_CHANGE" for path parameter notificationType', kind="ORDER_STATUS_CHANGE"
    )
    # Lenient where the model is: unknown fields are ignored, the model's are kept.
    directive = {
        "eventFilter": {
            "eventFilterType": "ORDER_CHANGE",
            "orderChangeTypes": ["OrderStatusChange"],
            "aggregationSettings": {"aggregationTimePeriod": "FiveMinutes"},
            "futureField": 1,
        }
    }
    accepted = api.subscribe(destination_id, directive=directive, extra={"futureField": True})
    assert accepted.status == 200
    assert accepted.body["payload"]["processingDirective"] == {
        "eventFilter": {
            "eventFilterType": "ORDER_CHANGE",
            "orderChangeTypes": ["OrderStatusChange"],
            "aggregationSettings": {"aggregationTimePeriod": "FiveMinutes"},
        }
    }
    # Other types need no event filter (and take none of another type's).
    assert api.subscribe(destination_id, kind="FEED_PROCESSING_FINISHED", directive=None).status == 200


# --- every answer as the model documents it, and throttling ---------------------------------------------


def test_every_status_of_every_notifications_operation_conforms_to_the_model() -> None:
    """What tests/unit/test_conformance.py does for the other operations (statuses listed, bodies
    strictly valid, x-amzn-RateLimit-Limit exactly where documented), for the Notifications API."""
    api = make()
    destination_id = api.create_destination().body["payload"]["destinationId"]
    subscription_id = api.subscribe(destination_id).body["payload"]["subscriptionId"]
    seen: dict[str, set[int]] = {}

    def record(operation: str, response: SimResponse) -> None:
        seen.setdefault(operation, set()).add(response.status)

    second_arn = {"name": "b", "resourceSpecification": {"sqs": {"arn": ARN + "-2"}}}
    cases: dict[str, list[tuple[Any, ...]]] = {
        "createDestination": [
            (api.create_destination, (second_arn,)),
            (api.create_destination, ({},)),
            (api.create_destination, (second_arn,)),
        ],
        "getDestinations": [(api.get_destinations, ())],
        "getDestination": [
            (api.destination, ("getDestination", destination_id)),
            (api.destination, ("getDestination", "missing")),
        ],
        "deleteDestination": [(api.destination, ("deleteDestination", "missing"))],
        "createSubscription": [
            (partial(api.subscribe, kind="FEED_PROCESSING_FINISHED", directive=None), (destination_id,)),
            (api.subscribe, (destination_id,)),
            (api.subscribe, ("missing",)),
        ],
        "getSubscription": [
            (api.get_subscription, ()),
            (api.get_subscription, ("NOPE",)),
            (api.get_subscription, ("REPORT_PROCESSING_FINISHED",)),
        ],
        "getSubscriptionById": [
            (api.by_id, ("getSubscriptionById", subscription_id)),
            (api.by_id, ("getSubscriptionById", "missing")),
            (api.by_id, ("getSubscriptionById", subscription_id, "NOPE")),
        ],
        "deleteSubscriptionById": [
            (api.by_id, ("deleteSubscriptionById", "missing")),
            (api.by_id, ("deleteSubscriptionById", "missing", "NOPE")),
        ],
    }
    assert (
        set(cases)
        == set(NOTIFICATIONS_OPERATIONS)
        == {key for key, op in OPERATIONS.items() if op.api == "notifications"}
    )
    for operation, calls in cases.items():
        for method, args in calls:
            record(operation, method(*args))
            record(operation, method(*args, auth="Atza|unknown"))  # type: ignore[operator]
        for fault in ("429", "500", "503"):
            api.state.force_fault({"fault": fault, "operation": operation})
            method, args = calls[0]
            record(operation, method(*args))
    # A destination is deleted once its subscription is.
    record("deleteDestination", api.destination("deleteDestination", destination_id))  # 403: subscribed
    for subscription in api.state.truth_notifications()["subscriptions"]:
        deleted = api.by_id(
            "deleteSubscriptionById", subscription["subscriptionId"], subscription["notificationType"]
        )
        record("deleteSubscriptionById", deleted)
    record("deleteDestination", api.destination("deleteDestination", destination_id))
    for operation in cases:
        assert {403, 429, 500, 503} <= seen[operation], (operation, seen[operation])
    assert {200, 400, 409} <= seen["createDestination"]
    assert {200, 400, 409} <= seen["createSubscription"]
    assert {200, 404} <= seen["getDestination"]
    assert {200, 403, 404} <= seen["deleteDestination"]
    assert {200, 400, 404} <= seen["getSubscription"]
    assert {200, 400, 404} <= seen["getSubscriptionById"]
    assert {200, 400, 404} <= seen["deleteSubscriptionById"]


def test_notifications_operations_are_throttled_at_one_per_second_burst_five() -> None:
    api = make(extra_sellers=[other_seller()])
    api.throttled = True
    state = api.state
    for _ in range(5):
        assert api.get_destinations().status == 200
    throttled = api.get_destinations()
    assert error(throttled)[:2] == (429, "QuotaExceeded")
    assert "x-amzn-RateLimit-Limit" not in throttled.headers
    state.advance_clock(1)
    ok = api.get_destinations()
    assert ok.status == 200
    assert ok.headers["x-amzn-RateLimit-Limit"] == "1.0"
    assert api.get_destinations().status == 429
    # Each operation has its own bucket; grantless ones are the application's, seller ones the seller's.
    assert api.create_destination().status == 200
    other_app = api.grantless_token(client_id=OTHER_CLIENT_ID, secret="other-secret")
    assert api.get_destinations(auth=other_app).status == 200
    for _ in range(5):
        assert api.get_subscription().status == 404
    assert api.get_subscription().status == 429
    assert api.get_subscription(auth=access_token(state, OTHER_SELLER)).status == 404
    assert state.counters_json()["sellers"]["(grantless)"]["getDestinations"]["throttled"] == 2


# --- ORDER_CHANGE notifications ---------------------------------------------------------------------------


def test_each_order_change_makes_one_notification_as_amazons_schema_says() -> None:
    api = make()
    state = api.state
    subscription_id = api.subscribed()
    order = state.add_order({"items": [{"quantity": 2}, {"quantity": 1}]})
    order_id = order["amazon_order_id"]
    created_at = state.now()
    pending = state.truth_notifications(order_id=order_id)
    assert pending["counts"]["pending"] == 1
    (first,) = pending["notifications"]
    assert created_at + 1 <= first["due_at_epoch"] <= created_at + 10
    assert state.take_due_notifications() == []  # not due yet

    state.advance_clock(10)
    (delivery,) = state.take_due_notifications()
    state.notification_sent(delivery)
    message = json.loads(delivery.body)
    validate_notification("ORDER_CHANGE", message)
    assert message["NotificationVersion"] == "1.0"
    assert message["NotificationType"] == "ORDER_CHANGE"
    assert message["PayloadVersion"] == "1.0"
    metadata = message["NotificationMetadata"]
    assert metadata["SubscriptionId"] == subscription_id
    assert metadata["NotificationId"] == delivery.notification_id == first["notification_id"]
    assert str(uuid.UUID(metadata["NotificationId"])) == metadata["NotificationId"]
    assert metadata["ApplicationId"] == application_id(TEST_CLIENT_ID)
    assert metadata["PublishTime"] == message["EventTime"] == first["due_at"]
    change = message["Payload"]["OrderChangeNotification"]
    assert change["NotificationLevel"] == "OrderLevel"
    assert (change["SellerId"], change["AmazonOrderId"]) == (TEST_SELLER, order_id)
    assert change["OrderChangeType"] == "OrderStatusChange"
    assert change["OrderChangeTrigger"]["TimeOfOrderChange"] == "2026-01-05T09:00:00.000Z"
    summary = change["Summary"]
    assert (summary["MarketplaceId"], summary["OrderStatus"], summary["FulfillmentType"]) == (
        US,
        "Unshipped",
        "MFN",
    )
    assert (summary["NumberOfItemsShipped"], summary["NumberOfItemsUnshipped"]) == (0, 3)
    assert [(i["OrderItemId"], i["Quantity"]) for i in summary["OrderItems"]] == [
        (i["order_item_id"], i["quantity_ordered"]) for i in order["items"]
    ]
    assert state.truth_notifications(order_id=order_id)["notifications"][0]["status"] == "sent"

    # One item shipped: PartiallyShipped, each item's own status shown (they differ).
    item = order["items"][1]
    package = {
        "packageReferenceId": "1",
        "carrierCode": "UPS",
        "trackingNumber": "1Z",
        "shipDate": "2026-01-05T09:00:00Z",
        "orderItems": [{"orderItemId": item["order_item_id"], "quantity": 1}],
    }
    confirmed = state.call(
        "confirmShipment",
        access_token=api.seller,
        path=f"/orders/v0/orders/{order_id}/shipmentConfirmation",
        path_params={"orderId": order_id},
        body={"marketplaceId": US, "packageDetail": package},
    )
    assert confirmed.status == 204
    (shipped,) = messages(deliver_all(state, 60))
    validate_notification("ORDER_CHANGE", shipped)
    summary = shipped["Payload"]["OrderChangeNotification"]["Summary"]
    assert summary["OrderStatus"] == "PartiallyShipped"
    assert [i.get("OrderItemStatus") for i in summary["OrderItems"]] == ["Unshipped", "Shipped"]
    assert shipped["NotificationMetadata"]["NotificationId"] != metadata["NotificationId"]

    # Canceled by the buyer.
    other = state.add_order({})["amazon_order_id"]
    state.set_order_status(other, "Canceled")
    canceled = [
        m
        for m in messages(deliver_all(state, 60))
        if m["Payload"]["OrderChangeNotification"]["AmazonOrderId"] == other
    ]
    assert [m["Payload"]["OrderChangeNotification"]["Summary"]["OrderStatus"] for m in canceled] in (
        ["Unshipped", "Canceled"],
        ["Canceled", "Unshipped"],  # standard SQS keeps no order: the lags decide
    )
    for message in canceled:
        validate_notification("ORDER_CHANGE", message)
    last = next(
        m for m in canceled if m["Payload"]["OrderChangeNotification"]["Summary"]["OrderStatus"] == "Canceled"
    )
    items = last["Payload"]["OrderChangeNotification"]["Summary"]["OrderItems"]
    assert all(i["IsBuyerRequestedCancel"] for i in items)
    counts = state.truth_notifications()["counts"]
    assert (counts["scheduled"], counts["sent"], counts["messages_sent"], counts["pending"]) == (4, 4, 4, 0)


def test_scheduled_changes_notify_too_and_nothing_before_the_subscription() -> None:
    api = make(
        orders={
            "count": 5,
            "history_s": 0,
            "arrival_window_s": 600,
            "pending_share": 1.0,
            "pending_duration_s": [60, 60],
        }
    )
    state = api.state
    before = state.add_order({"pending_s": 30})["amazon_order_id"]  # placed before subscribing
    api.subscribed()
    deliveries = deliver_all(state, 3600)
    statuses: dict[str, list[str]] = {}
    for message in sorted(messages(deliveries), key=lambda m: m["EventTime"]):
        change = message["Payload"]["OrderChangeNotification"]
        statuses.setdefault(change["AmazonOrderId"], []).append(change["Summary"]["OrderStatus"])
    assert statuses.pop(before) == ["Unshipped"]  # its authorisation, not its creation
    assert len(statuses) == 5  # the scenario's arrivals, each placed Pending then authorised
    assert all(s == ["Pending", "Unshipped"] for s in statuses.values()), statuses


def test_event_filters_sellers_and_eventbridge_decide_what_is_notified() -> None:
    api = make(
        seller={"marketplaces": [US, CA]},
        extra_sellers=[other_seller()],
    )
    state = api.state
    api.subscribed(directive={"eventFilter": {"eventFilterType": "ORDER_CHANGE", "marketplaceIds": [CA]}})
    us_order = state.add_order({"marketplace_id": US})["amazon_order_id"]
    ca_order = state.add_order({"marketplace_id": CA})["amazon_order_id"]
    state.add_order({"seller_id": OTHER_SELLER})
    notified = {
        json.loads(d.body)["Payload"]["OrderChangeNotification"]["AmazonOrderId"] for d in deliver_all(state)
    }
    assert notified == {ca_order}
    assert us_order not in notified

    # Only BuyerRequestedChange: the simulator's changes are all OrderStatusChange.
    other = access_token(state, OTHER_SELLER)
    destination_id = api.get_destinations().body["payload"][0]["destinationId"]
    directive = {
        "eventFilter": {"eventFilterType": "ORDER_CHANGE", "orderChangeTypes": ["BuyerRequestedChange"]}
    }
    assert api.subscribe(destination_id, directive=directive, auth=other).status == 200
    state.add_order({"seller_id": OTHER_SELLER})
    assert deliver_all(state) == []

    # An EventBridge destination never receives ORDER_CHANGE (accepted, see the engine's comment).
    bridge_api = make()
    bridge = bridge_api.create_destination(
        {
            "name": "bridge",
            "resourceSpecification": {"eventBridge": {"region": "us-east-1", "accountId": "1"}},
        }
    )
    assert bridge_api.subscribe(bridge.body["payload"]["destinationId"]).status == 200
    bridge_api.state.add_order({})
    assert deliver_all(bridge_api.state) == []
    assert bridge_api.state.truth_notifications()["counts"]["scheduled"] == 0


def test_a_deleted_subscription_stops_what_was_not_sent() -> None:
    api = make()
    state = api.state
    subscription_id = api.subscribed()
    order_id = state.add_order({})["amazon_order_id"]
    assert api.by_id("deleteSubscriptionById", subscription_id).status == 200
    assert deliver_all(state) == []
    (notification,) = state.truth_notifications(order_id=order_id)["notifications"]
    assert notification["status"] == "canceled"
    state.set_order_status(order_id, "Canceled")
    assert state.truth_notifications()["counts"]["scheduled"] == 1


# --- the delivery knobs -------------------------------------------------------------------------------------


def run_changes(seed: int, **knobs: Any) -> tuple[list[tuple[str, int, str, int, float]], dict[str, int]]:
    """A fixed sequence of changes under ``knobs``: per notification (order, version, status, copies,
    due offset), and the counts."""
    api = make(seed=seed, notifications={**PROMPT, **knobs})
    state = api.state
    api.subscribed()
    for _ in range(20):
        order_id = state.add_order({})["amazon_order_id"]
        state.advance_clock(1)
        state.set_order_status(order_id, "Shipped")
        state.advance_clock(1)
    truth = state.truth_notifications()
    rows = [
        (
            n["amazon_order_id"],
            n["version"],
            n["status"],
            n["copies"],
            round(n["due_at_epoch"] - parse_changed(n), 6),
        )
        for n in truth["notifications"]
    ]
    return rows, truth["counts"]


def parse_changed(notification: dict[str, Any]) -> float:
    from ordersync.simulator.clock import parse_iso  # noqa: PLC0415

    return parse_iso(notification["changed_at"])


def test_loss_duplicates_and_reordering_follow_the_seed() -> None:
    knobs = {"loss": 0.25, "duplicate": 0.25, "reorder": 0.25, "reorder_s": 600}
    rows, counts = run_changes(5, **knobs)
    assert rows == run_changes(5, **knobs)[0]  # the same seed, the same story
    assert rows != run_changes(6, **knobs)[0]
    assert counts["scheduled"] == 40
    assert 0 < counts["lost"] < 40
    assert 0 < counts["duplicated"] < 40
    assert any(offset > 10 for *_, offset in rows)  # some held back past the plain lag
    lost = {(o, v) for o, v, status, copies, _ in rows if status == "lost"}
    assert all(copies == 0 for o, v, _, copies, _ in rows if (o, v) in lost)

    # One knob changes only what it governs: without loss, the same notifications have the same lags.
    plain, _ = run_changes(5, **{**knobs, "loss": 0.0})
    kept = {(o, v): offset for o, v, status, _, offset in rows if status != "lost"}
    assert all(
        dict(((o, v), off) for o, v, _, _, off in plain)[key] == offset for key, offset in kept.items()
    )
    assert all(status == "pending" for _, _, status, _, _ in plain)


def test_duplicates_are_the_same_message_twice_and_lost_ones_never_come() -> None:
    api = make(seed=11, notifications={**PROMPT, "loss": 0.3, "duplicate": 0.3, "duplicate_after_s": [5, 5]})
    state = api.state
    api.subscribed()
    for _ in range(15):
        state.add_order({})
    deliveries = deliver_all(state, 3600)
    truth = state.truth_notifications()["notifications"]
    by_id: dict[str, list[str]] = {}
    for delivery in deliveries:
        by_id.setdefault(delivery.notification_id, []).append(delivery.body)
    for notification in truth:
        bodies = by_id.get(notification["notification_id"], [])
        expected = 0 if notification["status"] == "lost" else notification["copies"]
        assert len(bodies) == expected, notification
        assert len(set(bodies)) <= 1  # a duplicate is the same message
        if expected:
            assert notification["status"] == "sent"
            assert notification["sent"] == expected
    assert {n["status"] for n in truth} == {"sent", "lost"}
    assert any(n["duplicated"] for n in truth)


def test_notifications_can_be_switched_off_and_the_knobs_changed_while_running() -> None:
    api = make()
    state = api.state
    api.subscribed()
    profile = state.set_notification_profile({"enabled": False})
    assert profile["enabled"] is False
    assert profile["lag_s"] == [1.0, 10.0]  # the other knobs stay
    state.add_order({})
    counts = state.truth_notifications()["counts"]
    assert (counts["scheduled"], counts["suppressed"]) == (0, 1)
    state.set_notification_profile({"enabled": True, "loss": 1.0})
    state.add_order({})
    assert state.truth_notifications()["counts"]["lost"] == 1
    for bad in ({"loss": 2}, {"lag_s": [10, 1]}, {"nope": 1}, ["enabled"]):
        with pytest.raises(ControlError):
            state.set_notification_profile(bad)


def test_failed_sends_are_recorded_and_the_copy_stays_pending_until_sent() -> None:
    api = make()
    state = api.state
    api.subscribed()
    order_id = state.add_order({})["amazon_order_id"]
    state.advance_clock(10)
    (delivery,) = state.take_due_notifications()
    state.notification_failed(delivery, "QueueDoesNotExist: The specified queue does not exist.")
    (notification,) = state.truth_notifications(order_id=order_id)["notifications"]
    assert (notification["status"], notification["failures"]) == ("pending", 1)
    assert notification["last_error"].startswith("QueueDoesNotExist")
    state.notification_sent(delivery)
    assert state.truth_notifications(order_id=order_id)["notifications"][0]["status"] == "sent"
    assert state.truth_notifications()["counts"]["failed_attempts"] == 1


def test_the_scenario_documents_and_validates_the_notification_knobs() -> None:
    from ordersync.simulator import scenario  # noqa: PLC0415

    assert scenario.__doc__ is not None
    assert "notifications:" in scenario.__doc__
    doc = scenario.NotificationProfile.__doc__ or ""
    assert "undocumented" in doc
    assert scenario.NotificationProfile().loss == 0.0
    with pytest.raises(ValueError, match="duplicate_after_s"):
        tiny_scenario(notifications={"duplicate_after_s": [60, 1]})
