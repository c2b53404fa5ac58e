"""ORDER_CHANGE notifications read as ordersync reads them: what decides anything is checked, the rest
is Amazon's to add to; every message becomes a Kafka record, whatever it holds."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from ordersync.amazon.client import NotificationDestination, NotificationSubscription
from ordersync.channels import ChannelsFile
from ordersync.errors import InvalidEvent, Permanent
from ordersync.producers.order_notifications import (
    channel_of,
    check_subscription,
    parse_order_change,
    received_record,
)
from ordersync.schemas.codec import decode, encode
from ordersync.schemas.events import MAX_NOTIFICATION_CHARS, AmazonNotificationReceived
from ordersync.schemas.topics import AMAZON_NOTIFICATIONS
from tests.factories import T0, channel, order_change_body

pytestmark = pytest.mark.unit

ORDER = "111-2222222-3333333"


def test_an_order_change_names_the_order_its_marketplace_and_when_it_changed() -> None:
    changed = T0 + timedelta(minutes=3)
    change = parse_order_change(order_change_body("A1ACME", ORDER, changed_at=changed, status="Shipped"))
    assert (change.seller_id, change.amazon_order_id, change.marketplace_id) == (
        "A1ACME",
        ORDER,
        "ATVPDKIKX0DER",
    )
    assert change.changed_at == changed
    assert change.order_status == "Shipped"
    assert change.change_type == "OrderStatusChange"


def test_fields_amazon_adds_are_accepted() -> None:
    document = json.loads(order_change_body(order_id=ORDER))
    document["Payload"]["OrderChangeNotification"]["Summary"]["SomethingNew"] = {"x": 1}
    document["AlsoNew"] = True
    assert parse_order_change(json.dumps(document)).amazon_order_id == ORDER


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"NotificationType": "FEED_PROCESSING_FINISHED"}', "not an ORDER_CHANGE"),
        ("[" * 100_000, "not JSON"),
    ],
)
def test_what_is_not_an_order_change_is_refused_with_the_reason(body: str, reason: str) -> None:
    with pytest.raises(InvalidEvent, match=reason):
        parse_order_change(body)


def test_an_order_change_without_what_ordersync_needs_says_which_field() -> None:
    document = json.loads(order_change_body(order_id=ORDER))
    del document["Payload"]["OrderChangeNotification"]["OrderChangeTrigger"]
    with pytest.raises(InvalidEvent, match="OrderChangeTrigger"):
        parse_order_change(json.dumps(document))
    document = json.loads(order_change_body(order_id="not-an-order"))
    with pytest.raises(InvalidEvent, match="AmazonOrderId"):
        parse_order_change(json.dumps(document))


def test_every_message_becomes_a_record_keyed_by_the_order_it_names() -> None:
    message = {
        "MessageId": "m-1",
        "Body": order_change_body("A1ACME", ORDER),
        "Attributes": {"SentTimestamp": "1764504000000", "ApproximateReceiveCount": "2"},
    }
    key, envelope = received_record("order-change", message, T0)
    assert key == f"A1ACME:{ORDER}"
    received = decode(encode(envelope), AMAZON_NOTIFICATIONS).payload_as(AmazonNotificationReceived)
    expected = json.loads(message["Body"])
    del expected["Payload"]["OrderChangeNotification"]["Summary"]["DestinationPostalCode"]  # the buyer's
    assert json.loads(received.body) == expected
    assert received.receive_count == 2
    assert received.sent_at == datetime(2025, 11, 30, 12, 0, tzinfo=UTC)
    assert received.received_at == T0


def test_garbage_is_kept_too_and_an_oversize_body_is_cut_and_says_so() -> None:
    key, envelope = received_record(
        "q", {"MessageId": "m-2", "Body": "{garbage", "Attributes": {"X": "y"}}, T0
    )
    assert key == "unknown:m-2"
    assert envelope.payload_as(AmazonNotificationReceived).body == "{garbage"
    huge = "x" * (MAX_NOTIFICATION_CHARS + 10)
    _, envelope = received_record("q", {"MessageId": "m-3", "Body": huge}, T0)
    received = decode(encode(envelope), AMAZON_NOTIFICATIONS).payload_as(AmazonNotificationReceived)
    assert received.body_chars == MAX_NOTIFICATION_CHARS + 10
    assert len(received.body) == MAX_NOTIFICATION_CHARS


def test_a_notification_of_a_seller_or_marketplace_not_served_is_refused() -> None:
    channels = ChannelsFile(channels=(channel(),))
    served = parse_order_change(order_change_body("A1ACME", ORDER))
    assert channel_of(channels, served).name == channels.channels[0].name
    with pytest.raises(Permanent, match="no channel of seller 'A9OTHER'"):
        channel_of(channels, parse_order_change(order_change_body("A9OTHER", ORDER)))
    with pytest.raises(Permanent, match="marketplace 'A1PA6795UKMFR9'"):
        channel_of(
            channels, parse_order_change(order_change_body("A1ACME", ORDER, marketplace_id="A1PA6795UKMFR9"))
        )


QUEUE_ARN = "arn:aws:sqs:us-east-1:123456789012:ordersync-order-change"
OURS = NotificationDestination("dest-ours", "ordersync", sqs_arn=QUEUE_ARN)
OTHER_QUEUE = NotificationDestination("dest-other", "erp", sqs_arn=QUEUE_ARN.replace("ordersync", "erp"))
BRIDGE = NotificationDestination(
    "dest-bridge", "bus", event_bridge_region="us-east-1", event_bridge_account_id="999"
)


def _subscription(destination_id: str) -> NotificationSubscription:
    return NotificationSubscription("sub-1", "ORDER_CHANGE", "1.0", destination_id)


def test_a_subscription_to_this_queue_is_one_notifications_come_through() -> None:
    check = check_subscription(_subscription("dest-ours"), (OTHER_QUEUE, OURS), QUEUE_ARN)
    assert check.subscribed
    assert "sub-1" in check.detail


@pytest.mark.parametrize(
    ("subscription", "destinations", "reason"),
    [
        (None, (OURS,), "no ORDER_CHANGE subscription"),
        (_subscription("dest-other"), (OURS, OTHER_QUEUE), "not to the queue read here"),
        (_subscription("dest-bridge"), (OURS, BRIDGE), "EventBridge"),
        (_subscription("dest-gone"), (OURS,), "unknown to the application"),
    ],
)
def test_a_missing_or_misdirected_subscription_says_why(
    subscription: NotificationSubscription | None,
    destinations: tuple[NotificationDestination, ...],
    reason: str,
) -> None:
    check = check_subscription(subscription, destinations, QUEUE_ARN)
    assert not check.subscribed
    assert reason in check.detail


def test_the_copy_on_kafka_keeps_no_postal_code_of_the_buyer() -> None:
    document = json.loads(order_change_body("A1ACME", ORDER))
    document["Payload"]["OrderChangeNotification"]["Summary"]["DestinationPostalCode"] = "98101"
    _, envelope = received_record("q", {"MessageId": "m-1", "Body": json.dumps(document)}, T0)
    kept = envelope.payload_as(AmazonNotificationReceived).body
    assert "98101" not in kept
    assert parse_order_change(kept).amazon_order_id == ORDER
    # What is not a notification is copied as it came (for its dead letter).
    _, garbage = received_record("q", {"MessageId": "m-2", "Body": "{not json 98101"}, T0)
    assert garbage.payload_as(AmazonNotificationReceived).body == "{not json 98101"
