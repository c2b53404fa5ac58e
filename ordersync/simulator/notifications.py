"""The Notifications API v1 of the simulator: destinations, subscriptions, and the ORDER_CHANGE
notifications Amazon sends to a subscribed SQS queue.

- Destinations belong to an application (grantless operations, LWA ``client_credentials`` token with
  scope ``sellingpartnerapi::notifications``): an SQS queue (``sqs.arn``) or an EventBridge account
  (``eventBridge.region``, ``accountId``), never both.
- Subscriptions belong to a selling partner and an application (createSubscription and
  getSubscription with the seller's access token; getSubscriptionById and deleteSubscriptionById
  grantless): one per notification type and payload version.
- ORDER_CHANGE: every version the order book records (a new order, each status change, a package
  added or edited) makes one notification per ORDER_CHANGE subscription of the order's seller whose
  destination is an SQS queue and whose event filter lets it through. Each is due on the simulated
  clock after the scenario's delivery lag (:class:`~ordersync.simulator.scenario.NotificationProfile`:
  lag, late tail, loss, duplicates, reordering), drawn from the scenario's seed. The sending itself
  (SQS, real network) is :class:`ordersync.simulator.sqs.NotificationSender`'s: it takes what is due
  and reports back, so the HTTP handlers never wait on AWS.

Errors follow the model (400 InvalidInput, 404 NotFound, 409) with the bodies Amazon was seen to
answer where the model says nothing: a destination ARN registered twice (409 Conflict,
selling-partner-api-docs#2072), a second subscription (409 StateConflict, selling-partner-api-docs#1564),
an ORDER_CHANGE subscription without an event filter (400, jlevers/selling-partner-api#885), deleting a
destination that still has subscriptions (403, selling-partner-api-docs#1800).
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import random
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ordersync.amazon.operations import EVENT_FILTER_TYPES, NOTIFICATIONS_SCOPE
from ordersync.simulator.clock import epoch_to_iso, epoch_to_iso_ms
from ordersync.simulator.orders import Order, Version
from ordersync.simulator.render import order_change
from ordersync.simulator.scenario import NotificationProfile
from ordersync.simulator.validation import SpApiError

log = logging.getLogger(__name__)

#: The grantless scopes LWA grants (docs "Grantless operations"): notifications, and the rotation of an
#: application's client secret.
GRANTLESS_SCOPES = frozenset({NOTIFICATIONS_SCOPE, "sellingpartnerapi::client_credential:rotation"})
#: The Notifications API's answer to a request it cannot read (notifications.json, every 400).
INVALID_MESSAGE = "Request has missing or invalid parameters and cannot be parsed."
NOT_FOUND_MESSAGE = "The resource specified does not exist."

#: Notification types a subscription may name (docs "Notification Type Values"); ORDER_STATUS_CHANGE
#: and MFN_ORDER_STATUS_CHANGE were removed in favour of ORDER_CHANGE.
NOTIFICATION_TYPES = frozenset(
    {
        "ACCOUNT_STATUS_CHANGED",
        "ANY_OFFER_CHANGED",
        "B2B_ANY_OFFER_CHANGED",
        "BRANDED_ITEM_CONTENT_CHANGE",
        "DATA_KIOSK_QUERY_PROCESSING_FINISHED",
        "DETAIL_PAGE_TRAFFIC_EVENT",
        "FBA_INVENTORY_AVAILABILITY_CHANGES",
        "FBA_OUTBOUND_SHIPMENT_STATUS",
        "FEE_PROMOTION",
        "FEED_PROCESSING_FINISHED",
        "FULFILLMENT_ORDER_STATUS",
        "ITEM_INVENTORY_EVENT_CHANGE",
        "ITEM_PRODUCT_TYPE_CHANGE",
        "ITEM_SALES_EVENT_CHANGE",
        "LISTINGS_ITEM_ISSUES_CHANGE",
        "LISTINGS_ITEM_MFN_QUANTITY_CHANGE",
        "LISTINGS_ITEM_STATUS_CHANGE",
        "ORDER_CHANGE",
        "PRICING_HEALTH",
        "PRODUCT_TYPE_DEFINITIONS_CHANGE",
        "REPORT_PROCESSING_FINISHED",
        "SHIPMENT_TRACKING_MILESTONE_CHANGED",
        "TRANSACTION_UPDATE",
    }
)
#: The payload versions of the types the simulator sends (OrderChangeNotification.json: 1.0 only);
#: other types take any version, as the simulator sends none of them.
PAYLOAD_VERSIONS: dict[str, frozenset[str]] = {"ORDER_CHANGE": frozenset({"1.0"})}
#: notifications.json OrderChangeTypeEnum.
ORDER_CHANGE_TYPES = frozenset({"BuyerRequestedChange", "DeliveryTipChange", "OrderStatusChange"})
#: notifications.json AggregationTimePeriod.
AGGREGATION_PERIODS = frozenset({"FiveMinutes", "TenMinutes"})
#: notifications.json TrackingIdentifier's fields.
TRACKING_FIELDS = frozenset(
    {"id", "acsin", "aftn", "containerNumber", "houseBillOfLadingNumber", "carrierTracking"}
)
#: notifications.json SqsResource.arn (the model's pattern; the simulator reads region, account and
#: queue name from its parts).
SQS_ARN = re.compile(r"^arn:aws:sqs:(\S+?):(\S+?):(\S+)$")
SQS_ARN_MAX = 1000
NAME_MAX = 256
FILTER_EXPRESSION_MAX = 256

NotificationStatus = Literal["pending", "sent", "lost", "canceled"]
NOTIFICATION_STATUSES: tuple[NotificationStatus, ...] = ("pending", "sent", "lost", "canceled")


def invalid(details: str) -> SpApiError:
    return SpApiError(400, "InvalidInput", INVALID_MESSAGE, details)


def missing(details: str) -> SpApiError:
    return SpApiError(404, "NotFound", NOT_FOUND_MESSAGE, details)


def application_id(client_id: str) -> str:
    """The application's id as notifications name it (``amzn1.sellerapps.app.<uuid>``): the scenario
    knows only its LWA client id, so a stable one is derived from that."""
    return f"amzn1.sellerapps.app.{uuid.uuid5(uuid.NAMESPACE_URL, client_id)}"


def parse_sqs_arn(arn: str) -> tuple[str, str, str]:
    """(region, account, queue name) of an SQS queue's ARN."""
    match = SQS_ARN.match(arn)
    if match is None:
        raise ValueError(f"not an SQS queue ARN: {arn!r}")
    return match.group(1), match.group(2), match.group(3)


@dataclass
class Destination:
    destination_id: str
    application: str
    name: str
    created: float
    sqs_arn: str | None = None
    #: EventBridge: (region, accountId, partner event source name).
    event_bridge: tuple[str, str, str] | None = None

    def as_amazon(self) -> dict[str, Any]:
        resource: dict[str, Any]
        if self.sqs_arn is not None:
            resource = {"sqs": {"arn": self.sqs_arn}}
        else:
            region, account, name = self.event_bridge or ("", "", "")
            resource = {"eventBridge": {"name": name, "region": region, "accountId": account}}
        return {"name": self.name, "destinationId": self.destination_id, "resource": resource}

    def truth(self) -> dict[str, Any]:
        return {**self.as_amazon(), "application": self.application, "created": epoch_to_iso(self.created)}


@dataclass
class Subscription:
    subscription_id: str
    notification_type: str
    seller_id: str
    application: str
    destination_id: str
    payload_version: str
    created: float
    #: The processingDirective as accepted (only the model's fields), or None.
    directive: dict[str, Any] | None = None

    @property
    def event_filter(self) -> Mapping[str, Any]:
        return (self.directive or {}).get("eventFilter") or {}

    def accepts(self, marketplace_id: str, change_type: str) -> bool:
        """Whether the subscription's event filter lets a notification through (no list: all)."""
        markets = self.event_filter.get("marketplaceIds")
        types = self.event_filter.get("orderChangeTypes")
        return (markets is None or marketplace_id in markets) and (types is None or change_type in types)

    def as_amazon(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "subscriptionId": self.subscription_id,
            "payloadVersion": self.payload_version,
            "destinationId": self.destination_id,
        }
        if self.directive is not None:
            body["processingDirective"] = self.directive
        return body

    def truth(self) -> dict[str, Any]:
        return {
            **self.as_amazon(),
            "notificationType": self.notification_type,
            "seller_id": self.seller_id,
            "application": self.application,
            "created": epoch_to_iso(self.created),
        }


@dataclass
class Notification:
    """One ORDER_CHANGE notification: when each copy is due (none: lost), what was sent."""

    notification_id: str
    subscription_id: str
    seller_id: str
    order_id: str
    marketplace_id: str
    version_seq: int
    order_status: str
    change: str
    changed_at: float
    destination_id: str
    arn: str
    payload: dict[str, Any]
    payload_version: str
    application: str
    #: When the notification is due (lost ones too: when it would have been sent).
    due_at: float
    #: Due times of the copies to send: none (lost), one, or two (a duplicate).
    copies: tuple[float, ...]
    status: NotificationStatus = "pending"
    sent: int = 0
    sent_at: list[float] = field(default_factory=list)
    failures: int = 0
    last_error: str | None = None
    #: The message (JSON), fixed when the first copy is taken: a duplicate is the same message.
    body: str | None = None

    def truth(self) -> dict[str, Any]:
        return {
            "notification_id": self.notification_id,
            "subscription_id": self.subscription_id,
            "seller_id": self.seller_id,
            "amazon_order_id": self.order_id,
            "marketplace_id": self.marketplace_id,
            "version": self.version_seq,
            "order_status": self.order_status,
            "change": self.change,
            "changed_at": epoch_to_iso(self.changed_at),
            "due_at": epoch_to_iso_ms(self.due_at),
            "due_at_epoch": self.due_at,
            "status": self.status,
            "copies": len(self.copies),
            "duplicated": len(self.copies) > 1,
            "sent": self.sent,
            "sent_at": [epoch_to_iso_ms(at) for at in self.sent_at],
            "failures": self.failures,
            "last_error": self.last_error,
            "destination_id": self.destination_id,
            "arn": self.arn,
        }


@dataclass(frozen=True)
class Delivery:
    """One copy of a notification to send now: the queue's ARN and the message body."""

    notification_id: str
    copy: int
    arn: str
    body: str


class NotificationEngine:
    """Destinations, subscriptions and ORDER_CHANGE notifications (guarded by the state's lock)."""

    def __init__(self, profile: NotificationProfile, seed: int) -> None:
        self.profile = profile
        self._rng = random.Random(f"{seed}/notifications")
        self.destinations: dict[str, Destination] = {}
        self.subscriptions: dict[str, Subscription] = {}
        self.notifications: dict[str, Notification] = {}
        self._due: list[tuple[float, int, str, int]] = []
        self._seq = itertools.count()
        #: Changes no notification was made for because ``enabled`` was off.
        self.suppressed = 0
        #: Called (from any thread) when a notification becomes due earlier than before.
        self.wake: Callable[[], None] | None = None
        #: Whether a sender takes the due notifications (else they stay pending; said once).
        self.sender_attached = False
        self._said_unsent = False

    # --- destinations (grantless: the application's) --------------------------------------------

    def create_destination(self, application: str, body: Any, now: float) -> Destination:
        if not isinstance(body, dict):
            raise invalid("The body must be a CreateDestinationRequest JSON object.")
        name, spec = body.get("name"), body.get("resourceSpecification")
        if not isinstance(name, str) or not name.strip():
            raise invalid("name is required.")
        if len(name) > NAME_MAX:
            raise invalid(f"name is longer than {NAME_MAX} characters.")
        if not isinstance(spec, dict):
            raise invalid("resourceSpecification is required.")
        # "Applications should use one resource type (sqs or eventBridge) per destination"; other
        # keys (Amazon's newer resource types) are not served by the simulator.
        given = [kind for kind in ("sqs", "eventBridge") if spec.get(kind) is not None]
        if len(given) != 1:
            raise invalid("resourceSpecification must hold exactly one of sqs and eventBridge.")
        destination = Destination(str(uuid.uuid4()), application, name, now)
        if given == ["sqs"]:
            destination.sqs_arn = self._sqs_arn(spec["sqs"])
            for other in self.destinations.values():
                if other.application == application and other.sqs_arn == destination.sqs_arn:
                    raise SpApiError(
                        409,
                        "Conflict",
                        "The requested resource conflict with a resource in the server.",
                        f"A destination with arn {destination.sqs_arn} already exists for the application "
                        f"{application_id(application)}",
                    )
        else:
            region, account = self._event_bridge(spec["eventBridge"])
            for other in self.destinations.values():
                if other.application == application and (other.event_bridge or ())[:2] == (region, account):
                    raise SpApiError(
                        409,
                        "Conflict",
                        "The requested resource conflict with a resource in the server.",
                        f"An EventBridge destination for account {account} in {region} already exists "
                        f"for the application {application_id(application)}",
                    )
            source = f"aws.partner/sellingpartnerapi.amazon/{account}/{destination.destination_id}"
            destination.event_bridge = (region, account, source)
        self.destinations[destination.destination_id] = destination
        return destination

    @staticmethod
    def _sqs_arn(raw: Any) -> str:
        arn = raw.get("arn") if isinstance(raw, dict) else None
        if not isinstance(arn, str) or not arn:
            raise invalid("sqs.arn is required.")
        if len(arn) > SQS_ARN_MAX or SQS_ARN.match(arn) is None:
            raise invalid(f"sqs.arn {arn[:200]!r} is not an SQS queue ARN (arn:aws:sqs:region:account:name).")
        return arn

    @staticmethod
    def _event_bridge(raw: Any) -> tuple[str, str]:
        if not isinstance(raw, dict):
            raise invalid("eventBridge must be an object with region and accountId.")
        region, account = raw.get("region"), raw.get("accountId")
        if not isinstance(region, str) or not region or not isinstance(account, str) or not account:
            raise invalid("eventBridge.region and eventBridge.accountId are required.")
        return region, account

    def destinations_of(self, application: str) -> list[Destination]:
        return [d for d in self.destinations.values() if d.application == application]

    def destination(self, application: str, destination_id: str) -> Destination:
        found = self.destinations.get(destination_id)
        if found is None or found.application != application:
            raise missing(f"No destination {destination_id} for this application.")
        return found

    def delete_destination(self, application: str, destination_id: str) -> None:
        destination = self.destination(application, destination_id)
        if any(s.destination_id == destination_id for s in self.subscriptions.values()):
            raise SpApiError(
                403, "Unauthorized", "The requested action is forbidden.", "Destination has subscriptions"
            )
        del self.destinations[destination.destination_id]

    # --- subscriptions ----------------------------------------------------------------------------

    @staticmethod
    def check_type(notification_type: str) -> None:
        if notification_type not in NOTIFICATION_TYPES:
            raise invalid(f'Invalid value "{notification_type}" for path parameter notificationType')

    def create_subscription(
        self, seller_id: str, application: str, notification_type: str, body: Any, now: float
    ) -> Subscription:
        self.check_type(notification_type)
        if not isinstance(body, dict):
            raise invalid("The body must be a CreateSubscriptionRequest JSON object.")
        version, destination_id = body.get("payloadVersion"), body.get("destinationId")
        if not isinstance(version, str) or not version:
            raise invalid("payloadVersion is required.")
        if not isinstance(destination_id, str) or not destination_id:
            raise invalid("destinationId is required.")
        known = PAYLOAD_VERSIONS.get(notification_type)
        if known is not None and version not in known:
            raise invalid(
                f"payloadVersion {version} is not a version of {notification_type} "
                f"(known: {', '.join(sorted(known))})."
            )
        directive = self._directive(notification_type, body.get("processingDirective"))
        destination = self.destinations.get(destination_id)
        if destination is None or destination.application != application:
            # As the model's own 400 example words it (sendTestNotification).
            raise invalid(
                "Invalid Input, recheck that the AppId and DestinationId are valid and DestinationId "
                "belongs to the application"
            )
        if self.find_subscription(seller_id, application, notification_type, version) is not None:
            raise SpApiError(409, "StateConflict", "The resource specified conflicts with the current state.")
        # An ORDER_CHANGE subscription to an EventBridge destination is accepted and never delivered:
        # Amazon documents ORDER_CHANGE as an SQS notification ("Notification Type Values"), but
        # neither the model nor the docs say that createSubscription refuses EventBridge, so the
        # simulator does not invent a 400 either.
        subscription = Subscription(
            str(uuid.uuid4()),
            notification_type,
            seller_id,
            application,
            destination_id,
            version,
            now,
            directive,
        )
        self.subscriptions[subscription.subscription_id] = subscription
        return subscription

    def _directive(self, notification_type: str, raw: Any) -> dict[str, Any] | None:  # noqa: PLR0912 - one check per field
        """The processingDirective, validated where the model is strict; unknown fields dropped."""
        if raw is None:
            if notification_type == "ORDER_CHANGE":
                # Observed (jlevers/selling-partner-api#885): ORDER_CHANGE needs its event filter.
                raise invalid("Processing Directive eventFilter must not be empty")
            return None
        if not isinstance(raw, dict):
            raise invalid("processingDirective must be an object.")
        event_filter, expression = raw.get("eventFilter"), raw.get("filterExpression")
        if event_filter is not None and expression is not None:
            raise invalid("eventFilter and filterExpression are mutually exclusive.")
        if expression is not None:
            if not isinstance(expression, str) or not 1 <= len(expression) <= FILTER_EXPRESSION_MAX:
                raise invalid(f"filterExpression must be 1 to {FILTER_EXPRESSION_MAX} characters.")
            if notification_type == "ORDER_CHANGE":
                # The simulator cannot evaluate CEL: refusing is better than delivering what the
                # filter would have dropped.
                raise invalid("filterExpression is not supported for ORDER_CHANGE by the simulator.")
            return {"filterExpression": expression}
        if event_filter is None:
            if notification_type == "ORDER_CHANGE":
                raise invalid("Processing Directive eventFilter must not be empty")
            return None
        if not isinstance(event_filter, dict):
            raise invalid("eventFilter must be an object.")
        kind = event_filter.get("eventFilterType")
        if kind not in EVENT_FILTER_TYPES:
            raise invalid(f"eventFilterType must be one of {', '.join(sorted(EVENT_FILTER_TYPES))}.")
        if kind != notification_type:
            raise invalid(f"eventFilterType {kind} does not match notificationType {notification_type}.")
        accepted: dict[str, Any] = {"eventFilterType": kind}
        markets = event_filter.get("marketplaceIds")
        if markets is not None:
            if not isinstance(markets, list) or not all(isinstance(m, str) and m for m in markets):
                raise invalid("marketplaceIds must be a list of marketplace ids.")
            accepted["marketplaceIds"] = list(dict.fromkeys(markets))
        types = event_filter.get("orderChangeTypes")
        if types is not None:
            if not isinstance(types, list) or any(t not in ORDER_CHANGE_TYPES for t in types):
                raise invalid(
                    f"orderChangeTypes must list values among {', '.join(sorted(ORDER_CHANGE_TYPES))}."
                )
            accepted["orderChangeTypes"] = list(dict.fromkeys(types))
        aggregation = event_filter.get("aggregationSettings")
        if aggregation is not None:
            period = aggregation.get("aggregationTimePeriod") if isinstance(aggregation, dict) else None
            if period not in AGGREGATION_PERIODS:
                periods = ", ".join(sorted(AGGREGATION_PERIODS))
                raise invalid(f"aggregationSettings.aggregationTimePeriod must be one of {periods}.")
            # Kept, not applied: aggregation is marketplace-ASIN level (offer changes), not orders'.
            accepted["aggregationSettings"] = {"aggregationTimePeriod": period}
        tracking = event_filter.get("trackingIdentifier")
        if tracking is not None:
            if not isinstance(tracking, dict):
                raise invalid("trackingIdentifier must be an object.")
            accepted["trackingIdentifier"] = {k: v for k, v in tracking.items() if k in TRACKING_FIELDS}
        return {"eventFilter": accepted}

    def find_subscription(
        self, seller_id: str, application: str, notification_type: str, payload_version: str | None = None
    ) -> Subscription | None:
        """The seller's and application's subscription of a type (a version, or the latest one)."""
        found = [
            s
            for s in self.subscriptions.values()
            if s.seller_id == seller_id
            and s.application == application
            and s.notification_type == notification_type
            and payload_version in (None, s.payload_version)
        ]
        return max(found, key=lambda s: _version_key(s.payload_version)) if found else None

    def subscription(
        self, seller_id: str, application: str, notification_type: str, payload_version: str | None
    ) -> Subscription:
        self.check_type(notification_type)
        found = self.find_subscription(seller_id, application, notification_type, payload_version)
        if found is None:
            raise missing(f"No {notification_type} subscription for this selling partner and application.")
        return found

    def subscription_by_id(
        self, application: str, notification_type: str, subscription_id: str
    ) -> Subscription:
        self.check_type(notification_type)
        found = self.subscriptions.get(subscription_id)
        if found is None or found.application != application or found.notification_type != notification_type:
            raise missing(f"No {notification_type} subscription {subscription_id} for this application.")
        return found

    def delete_subscription(self, application: str, notification_type: str, subscription_id: str) -> None:
        """ "After you successfully call this operation, notifications will stop being sent for the
        associated subscription": those not sent yet are dropped."""
        subscription = self.subscription_by_id(application, notification_type, subscription_id)
        del self.subscriptions[subscription.subscription_id]
        for notification in self.notifications.values():
            if notification.subscription_id == subscription_id and notification.status == "pending":
                notification.status = "sent" if notification.sent else "canceled"

    # --- ORDER_CHANGE -----------------------------------------------------------------------------

    def order_changed(self, order: Order, version: Version) -> None:
        """A version was recorded: one notification per ORDER_CHANGE subscription it concerns."""
        payload: dict[str, Any] | None = None
        for subscription in list(self.subscriptions.values()):
            if subscription.notification_type != "ORDER_CHANGE" or subscription.seller_id != order.seller_id:
                continue
            destination = self.destinations.get(subscription.destination_id)
            if destination is None or destination.sqs_arn is None:
                continue  # EventBridge does not carry ORDER_CHANGE (see create_subscription)
            if not subscription.accepts(order.marketplace.marketplace_id, "OrderStatusChange"):
                continue
            if not self.profile.enabled:
                self.suppressed += 1
                continue
            payload = payload or order_change(order, version)
            self._schedule(subscription, destination.sqs_arn, order, version, payload)

    def _schedule(
        self, subscription: Subscription, arn: str, order: Order, version: Version, payload: dict[str, Any]
    ) -> None:
        profile = self.profile
        # Always the same number of draws, so that one knob changes only what it governs.
        u = [self._rng.random() for _ in range(8)]
        lag = profile.lag_s[0] + (profile.lag_s[1] - profile.lag_s[0]) * u[1]
        late = profile.late.max_late_s * (1.0 - u[3]) if u[2] < profile.late.p_late else 0.0
        held = profile.reorder_s * (1.0 - u[5]) if u[4] < profile.reorder else 0.0
        due = version.at + lag + late + held
        lost = u[0] < profile.loss
        copies: tuple[float, ...] = ()
        if not lost:
            low, high = profile.duplicate_after_s
            copies = (due, due + low + (high - low) * u[7]) if u[6] < profile.duplicate else (due,)
        notification = Notification(
            notification_id=str(uuid.uuid4()),
            subscription_id=subscription.subscription_id,
            seller_id=order.seller_id,
            order_id=order.order_id,
            marketplace_id=order.marketplace.marketplace_id,
            version_seq=version.seq,
            order_status=version.snapshot.status,
            change=version.change,
            changed_at=version.at,
            destination_id=subscription.destination_id,
            arn=arn,
            payload=payload,
            payload_version=subscription.payload_version,
            application=subscription.application,
            due_at=due,
            copies=copies,
            status="lost" if lost else "pending",
        )
        self.notifications[notification.notification_id] = notification
        for index, at in enumerate(copies):
            heapq.heappush(self._due, (at, next(self._seq), notification.notification_id, index))
        if copies and not self.sender_attached and not self._said_unsent:
            self._said_unsent = True
            log.warning(
                "ORDER_CHANGE notifications are scheduled but will not be sent: the simulator runs "
                "without AWS settings (no SQS)"
            )
        if copies and self.wake is not None:
            self.wake()

    @staticmethod
    def _body(notification: Notification) -> str:
        # Published when due: a clock moved on in one jump has passed that instant already.
        published = epoch_to_iso_ms(notification.due_at)
        message = {
            "NotificationVersion": "1.0",
            "NotificationType": "ORDER_CHANGE",
            "PayloadVersion": notification.payload_version,
            "EventTime": published,
            "Payload": {"OrderChangeNotification": notification.payload},
            "NotificationMetadata": {
                "ApplicationId": application_id(notification.application),
                "SubscriptionId": notification.subscription_id,
                "PublishTime": published,
                "NotificationId": notification.notification_id,
            },
        }
        return json.dumps(message, separators=(",", ":"))

    def take_due(self, now: float, limit: int = 100) -> list[Delivery]:
        """The copies due by ``now`` (oldest first), handed to the sender."""
        taken: list[Delivery] = []
        while self._due and self._due[0][0] <= now and len(taken) < limit:
            _, _, notification_id, index = heapq.heappop(self._due)
            notification = self.notifications[notification_id]
            if notification.status != "pending":
                continue
            if notification.body is None:
                notification.body = self._body(notification)
            taken.append(Delivery(notification_id, index, notification.arn, notification.body))
        return taken

    def next_due(self) -> float | None:
        while self._due and self.notifications[self._due[0][2]].status != "pending":
            heapq.heappop(self._due)
        return self._due[0][0] if self._due else None

    def delivered(self, delivery: Delivery, now: float) -> None:
        notification = self.notifications[delivery.notification_id]
        notification.sent += 1
        notification.sent_at.append(now)
        if notification.sent >= len(notification.copies) or notification.status == "canceled":
            notification.status = "sent"

    def failed(self, delivery: Delivery, error: str) -> None:
        notification = self.notifications[delivery.notification_id]
        notification.failures += 1
        notification.last_error = error[:300]

    # --- truth -----------------------------------------------------------------------------------

    def truth(
        self, *, seller_id: str | None = None, order_id: str | None = None, status: str | None = None
    ) -> dict[str, Any]:
        every = list(self.notifications.values())
        counts: dict[str, int] = {
            state: sum(1 for n in every if n.status == state) for state in NOTIFICATION_STATUSES
        }
        counts.update(
            {
                "scheduled": len(every),
                "duplicated": sum(1 for n in every if len(n.copies) > 1),
                "messages_sent": sum(n.sent for n in every),
                "failed_attempts": sum(n.failures for n in every),
                "suppressed": self.suppressed,
            }
        )
        shown = [
            n.truth()
            for n in every
            if seller_id in (None, n.seller_id)
            and order_id in (None, n.order_id)
            and status in (None, n.status)
        ]
        return {
            "profile": self.profile.model_dump(mode="json"),
            "sender": {"attached": self.sender_attached},
            "counts": counts,
            "destinations": [d.truth() for d in self.destinations.values()],
            "subscriptions": [s.truth() for s in self.subscriptions.values()],
            "count": len(shown),
            "notifications": shown,
        }


def _version_key(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        return (-1,)
