"""Order notifications: Amazon's ORDER_CHANGE notifications, the fast path to new and changed orders.

- Input: the standard SQS queue Amazon sends ORDER_CHANGE to (``notifications.queue_url``; one queue
  can carry every seller), long-polled; then ``amazon.notifications``, where each message is copied.
- Output: ``amazon.notifications`` (key ``seller_id:amazon_order_id``): every message as received, on
  Kafka before it is deleted from the queue (at-least-once: a crash between the two delivers it again,
  and the copy is read twice, harmlessly). ``amazon.orders.downloaded`` (``found_by: notification``):
  the order as ``getOrder`` returns it now, sent only if the pipeline has not seen that version (the
  dedupe marks and claims order-download uses: a duplicate notification, the poll and a notification
  of one version send it once). ``amazon.notifications.dlq``: what is not an ORDER_CHANGE of a
  configured channel, with the reason.
- Amazon operations and quotas (per seller, through the rate limiter): ``getOrder`` (v0 or 2026-01-01,
  the channel's ``orders_api``: 0.5/s, burst 30), one per notification of a change the pipeline has
  not seen; none for a notification whose change is older than the version already sent (a
  duplicate, or one the poll was first to).
- Amazon operations for the subscription check, every ``notifications.subscription_check_s`` (an
  hour) per channel: ``getSubscription`` (1/s, burst 5) and ``getDestinations`` (grantless, 1/s,
  burst 5).
- State in Redis: the dedupe marks and claims shared with order-download (rebuilt from
  ``amazon.orders.downloaded``), and per channel the time of the last notification (task health
  ``notifications``) and whether its ORDER_CHANGE subscription sends to this queue (task health
  ``notifications-subscription``): the download scheduler reads both to know notifications flow.

Notifications can be late, duplicated, out of order or missing (Amazon says to keep a backup): the
order-download stage's sweep is that backup, and a late or reordered notification costs at most one
``getOrder``, never a version sent twice or an older version sent after a newer one was seen.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

import faust
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from ordersync.amazon.client import NotificationDestination, NotificationSubscription
from ordersync.aws import queue_arn, queue_name, sqs_client
from ordersync.channels import Channel, ChannelsFile
from ordersync.errors import InvalidEvent, Permanent
from ordersync.pipeline.runtime import StageRuntime
from ordersync.producers.download_send import (
    DEDUPE_MARK,
    NOTIFICATIONS_TASK,
    SUBSCRIPTION_TASK,
    emit_if_new,
    rebuild_download_marks,
)
from ordersync.schemas.envelope import Envelope, Event
from ordersync.schemas.events import MAX_NOTIFICATION_CHARS, AmazonNotificationReceived
from ordersync.schemas.topics import AMAZON_NOTIFICATIONS, ORDERS_DOWNLOADED, order_key
from ordersync.settings import NotificationsSettings

log = logging.getLogger(__name__)
STAGE = "order-notifications"
#: Pause after a failed receive (the queue or the broker unreachable), growing to the maximum.
RECEIVE_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)


# --- Amazon's message, as far as ordersync reads it ---------------------------------------------------
# Lenient on purpose: Amazon adds fields, and only these decide anything here. The simulator is the
# strict side (it sends what Amazon's schema requires).


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _Trigger(_Lenient):
    TimeOfOrderChange: AwareDatetime
    ChangeReason: str | None = None


class _Summary(_Lenient):
    MarketplaceId: str = Field(min_length=1)
    OrderStatus: str | None = None


class _OrderChange(_Lenient):
    SellerId: str = Field(min_length=1, max_length=40)
    AmazonOrderId: str = Field(pattern=r"^\d{3}-\d{7}-\d{7}$")
    OrderChangeType: str | None = None
    OrderChangeTrigger: _Trigger
    Summary: _Summary


class _Payload(_Lenient):
    OrderChangeNotification: _OrderChange


class _Metadata(_Lenient):
    NotificationId: str = Field(min_length=1)
    SubscriptionId: str | None = None
    PublishTime: AwareDatetime | None = None


class _Notification(_Lenient):
    NotificationType: str
    Payload: _Payload
    NotificationMetadata: _Metadata


@dataclass(frozen=True)
class OrderChange:
    """What an ORDER_CHANGE notification says: which order of which seller changed, when."""

    seller_id: str
    amazon_order_id: str
    marketplace_id: str
    changed_at: datetime
    order_status: str | None
    change_type: str | None
    notification_id: str


def parse_order_change(body: str) -> OrderChange:
    """The order change of an ORDER_CHANGE notification's body; :class:`InvalidEvent` says why not."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise InvalidEvent(f"the message is not JSON: {str(exc)[:200]}") from None
    if not isinstance(document, dict):
        raise InvalidEvent("the message is not a JSON object")
    kind = document.get("NotificationType")
    if kind != "ORDER_CHANGE":
        raise InvalidEvent(f"not an ORDER_CHANGE notification (NotificationType {str(kind)[:100]!r})")
    try:
        notification = _Notification.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in exc.errors()[:5]
        )
        raise InvalidEvent(f"ORDER_CHANGE notification not as Amazon sends it: {problems}") from None
    change = notification.Payload.OrderChangeNotification
    return OrderChange(
        seller_id=change.SellerId,
        amazon_order_id=change.AmazonOrderId,
        marketplace_id=change.Summary.MarketplaceId,
        changed_at=change.OrderChangeTrigger.TimeOfOrderChange,
        order_status=change.Summary.OrderStatus,
        change_type=change.OrderChangeType,
        notification_id=notification.NotificationMetadata.NotificationId,
    )


def _named_order(body: str) -> tuple[str, str] | None:
    """(seller, order) a message names, if it is readable enough to say: its Kafka key."""
    try:
        change = json.loads(body)["Payload"]["OrderChangeNotification"]
        seller, order = change["SellerId"], change["AmazonOrderId"]
    except (ValueError, RecursionError, KeyError, TypeError):
        return None
    if isinstance(seller, str) and isinstance(order, str) and 0 < len(seller) <= 40 and 0 < len(order) <= 40:
        return seller, order
    return None


def _number(value: object) -> int | None:
    """An SQS attribute's whole number (SQS sends them as strings), None when it is not one."""
    text = str(value) if value is not None else ""
    return int(text) if text.isdigit() else None


#: What of an ORDER_CHANGE is the buyer's (Amazon's Orders PII list names the postal code): not kept.
PERSONAL_SUMMARY_FIELDS = ("DestinationPostalCode",)


def without_personal_data(body: str) -> str:
    """The message body without the buyer's data Amazon puts in an ORDER_CHANGE summary; a body that is
    not such a notification is left as it is (it goes to the dead letters, and holds no such field)."""
    try:
        document = json.loads(body)
        summary = document["Payload"]["OrderChangeNotification"]["Summary"]
    except (ValueError, RecursionError, KeyError, TypeError):
        return body
    if not isinstance(summary, dict) or not any(field in summary for field in PERSONAL_SUMMARY_FIELDS):
        return body
    for field in PERSONAL_SUMMARY_FIELDS:
        summary.pop(field, None)
    return json.dumps(document, separators=(",", ":"))


def received_record(
    queue: str, message: Mapping[str, Any], now: datetime
) -> tuple[str, Envelope[AmazonNotificationReceived]]:
    """An SQS message as the record copied to ``amazon.notifications``: (key, envelope). Nothing is
    validated here beyond what the key needs: the record is Kafka's copy, whatever it holds, less the
    buyer's postal code."""
    body = without_personal_data(str(message.get("Body", "")))
    attributes = message.get("Attributes") or {}
    sent_ms = _number(attributes.get("SentTimestamp"))
    received = AmazonNotificationReceived(
        queue=queue,
        message_id=str(message.get("MessageId") or "unknown"),
        body=body[:MAX_NOTIFICATION_CHARS],
        body_chars=len(body) if len(body) > MAX_NOTIFICATION_CHARS else None,
        sent_at=datetime.fromtimestamp(sent_ms / 1000, UTC) if sent_ms is not None else None,
        receive_count=max(1, _number(attributes.get("ApproximateReceiveCount")) or 1),
        received_at=now,
    )
    named = _named_order(body)
    seller, key = (named[0], order_key(*named)) if named else ("unknown", f"unknown:{received.message_id}")
    return key, Envelope.wrap(received, seller_id=seller, correlation_id=key, occurred_at=now)


def channel_of(channels: ChannelsFile, change: OrderChange) -> Channel:
    """The channel the change is for; a notification of a seller or marketplace ordersync does not
    serve is refused (Permanent: dead-lettered with the reason)."""
    try:
        return channels.selling(change.seller_id, change.marketplace_id)
    except Permanent as exc:
        raise Permanent(f"notification {change.notification_id}: {exc}") from None


# --- the queue, copied to Kafka -------------------------------------------------------------------


async def copy_batch(runtime: StageRuntime, sqs: Any, settings: NotificationsSettings, queue_url: str) -> int:
    """One long poll of the queue: every message received is sent to ``amazon.notifications`` and, once
    Kafka acknowledged them all, deleted from the queue. Returns the messages copied."""
    answer = await sqs.receive_message(
        QueueUrl=queue_url,
        MaxNumberOfMessages=settings.max_messages,
        WaitTimeSeconds=settings.wait_time_s,
        VisibilityTimeout=settings.visibility_timeout_s,
        MessageSystemAttributeNames=["SentTimestamp", "ApproximateReceiveCount"],
    )
    messages = answer.get("Messages") or []
    if not messages:
        return 0
    queue = queue_name(queue_url)
    now = runtime.clock.now()
    # Sent together, each awaited: every one is on Kafka before any is deleted from the queue.
    pending = []
    for message in messages:
        key, envelope = received_record(queue, message, now)
        pending.append(runtime.emit(AMAZON_NOTIFICATIONS, key, envelope))
    await asyncio.gather(*pending)
    entries = [{"Id": str(index), "ReceiptHandle": m["ReceiptHandle"]} for index, m in enumerate(messages)]
    deleted = await sqs.delete_message_batch(QueueUrl=queue_url, Entries=entries)
    for failure in deleted.get("Failed") or []:
        # Delivered again after the visibility timeout: copied twice, read twice, sent once.
        log.warning(
            "a notification copied to Kafka was not deleted from the queue: %s", failure.get("Message")
        )
    return len(messages)


async def copy_queue_to_kafka(runtime: StageRuntime) -> None:
    """Copy the notifications queue to Kafka for as long as the stage runs; the queue or the broker
    unreachable stalls the copy (readiness says so) and it resumes when they answer."""
    settings = runtime.settings.notifications
    queue_url = settings.queue_url
    if not queue_url:
        log.warning("notifications.queue_url is not set: no notification will be read")
        return
    failures = 0
    async with sqs_client(runtime.settings.aws) as sqs:
        while True:
            if await runtime.survive(
                "notifications queue", partial(copy_batch, runtime, sqs, settings, queue_url)
            ):
                failures = 0
                continue
            await asyncio.sleep(RECEIVE_BACKOFF_S[min(failures, len(RECEIVE_BACKOFF_S) - 1)])
            failures += 1


# --- each notification: the order fetched and sent on --------------------------------------------


async def fetch_notified_order(runtime: StageRuntime, envelope: Envelope[Event]) -> None:
    """The order a notification names, fetched with ``getOrder`` and sent to
    ``amazon.orders.downloaded`` if its version is new to the pipeline."""
    received = envelope.payload_as(AmazonNotificationReceived)
    if received.body_chars is not None:
        raise InvalidEvent(
            f"a message of {received.body_chars} characters (cut): Amazon's notifications are small"
        )
    change = parse_order_change(received.body)
    channel = channel_of(runtime.channels, change)
    if not channel.active:
        log.info("%s: notification for an inactive channel, not fetched", channel.name)
        return
    store = runtime.store
    await store.record_task(
        NOTIFICATIONS_TASK,
        channel.name,
        ok=True,
        detail=f"last: {change.amazon_order_id} ({change.order_status}) of {change.changed_at.isoformat()}",
    )
    if not await store.is_new_version(
        DEDUPE_MARK, change.seller_id, change.amazon_order_id, change.changed_at
    ):
        return  # the pipeline has a version at least as new as the change (a duplicate, or the poll's)
    client = runtime.amazon(channel)
    order = await runtime.retrying(
        f"getOrder {change.amazon_order_id}", partial(client.get_order, change.amazon_order_id)
    )
    await emit_if_new(runtime, channel, order, "notification", wait_for_other_sender=True)


# --- each channel's subscription: still there, still sending to this queue ---------------------------

ORDER_CHANGE = "ORDER_CHANGE"


@dataclass(frozen=True)
class SubscriptionCheck:
    """Whether a seller's ORDER_CHANGE notifications reach the queue this stage reads, and why not."""

    subscribed: bool
    detail: str


def check_subscription(
    subscription: NotificationSubscription | None,
    destinations: tuple[NotificationDestination, ...],
    queue_arn: str,
) -> SubscriptionCheck:
    """The seller's ORDER_CHANGE subscription (getSubscription), the application's destinations
    (getDestinations) and the queue's ARN: do Amazon's notifications come here?"""
    if subscription is None:
        return SubscriptionCheck(
            False, "no ORDER_CHANGE subscription: Amazon sends this seller's changes nowhere"
        )
    named = f"ORDER_CHANGE subscription {subscription.subscription_id}"
    target = next((d for d in destinations if d.destination_id == subscription.destination_id), None)
    if target is None:
        return SubscriptionCheck(
            False, f"{named} sends to destination {subscription.destination_id}, unknown to the application"
        )
    if target.sqs_arn != queue_arn:
        where = target.sqs_arn or f"EventBridge ({target.event_bridge_account_id})"
        return SubscriptionCheck(False, f"{named} sends to {where}, not to the queue read here ({queue_arn})")
    return SubscriptionCheck(True, f"{named} sends to the queue read here")


async def check_subscriptions(runtime: StageRuntime, sqs: Any, queue_url: str) -> None:
    """One check of every active channel's subscription, kept as task health; a missing or misdirected
    one raises a notification (order-download stops counting on notifications at once)."""
    arn = await queue_arn(sqs, queue_url)
    for channel in runtime.channels.active():
        client = runtime.amazon(channel)
        try:
            subscription = await runtime.retrying(
                f"getSubscription {channel.name}", partial(client.get_subscription, ORDER_CHANGE)
            )
            destinations = await runtime.retrying(f"getDestinations {channel.name}", client.get_destinations)
        except Permanent as exc:
            # Amazon refuses to say (the application lacks the Notifications role): nothing is known.
            await runtime.store.record_task(SUBSCRIPTION_TASK, channel.name, ok=False, detail=str(exc))
            continue
        check = check_subscription(subscription, destinations, arn)
        await runtime.store.record_task(
            SUBSCRIPTION_TASK,
            channel.name,
            ok=check.subscribed,
            detail=check.detail,
            subscribed="yes" if check.subscribed else "no",
        )
        if not check.subscribed:
            await runtime.health.notify(
                "notifications-subscription-missing",
                f"channel {channel.name}: {check.detail}; it is polled at the budget's pace"
                f" (ordersync notifications setup --channel {channel.name})",
                channel=channel.name,
                dedupe_key=f"notifications-subscription:{channel.name}",
                at=runtime.clock.now(),
            )


async def watch_subscriptions(runtime: StageRuntime) -> None:
    """The subscription check, every ``subscription_check_s`` of Amazon's time, for as long as the stage
    runs."""
    settings = runtime.settings.notifications
    queue_url = settings.queue_url
    if not queue_url:
        return
    async with sqs_client(runtime.settings.aws) as sqs:
        while True:
            await runtime.survive(
                "notifications subscription", partial(check_subscriptions, runtime, sqs, queue_url)
            )
            await asyncio.sleep(settings.subscription_check_s / runtime.settings.amazon.time_scale)


def register(app: faust.App, runtime: StageRuntime) -> None:
    runtime.topic(ORDERS_DOWNLOADED)
    runtime.on_redis_reset(partial(rebuild_download_marks, runtime))

    @app.task  # type: ignore[untyped-decorator]
    async def watch_redis() -> None:
        await runtime.watch_generation()

    @app.agent(runtime.topic(AMAZON_NOTIFICATIONS), name="fetch-notified-orders")
    async def fetch_notified_orders(stream: faust.StreamT[bytes]) -> None:
        await runtime.consume(AMAZON_NOTIFICATIONS, stream, partial(fetch_notified_order, runtime))

    @app.task  # type: ignore[untyped-decorator]
    async def copy_queue() -> None:
        await runtime.start()
        await copy_queue_to_kafka(runtime)

    @app.task  # type: ignore[untyped-decorator]
    async def check_subscription_state() -> None:
        await runtime.start()
        await watch_subscriptions(runtime)
