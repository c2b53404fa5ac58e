"""``ordersync notifications setup``: a channel's ORDER_CHANGE notifications sent to ordersync's queue.

Three steps, each done only if it is not done already, so running it again (or for every channel in
turn) is harmless: the SQS queue (``notifications.queue_url``, else the standard queue
``notifications.queue_name``, created), the application's destination for that queue (grantless
createDestination, found first with getDestinations), and the seller's ORDER_CHANGE subscription to
that destination (getSubscription first; createSubscription). A subscription of the seller's that
sends ORDER_CHANGE elsewhere is reported and left alone unless ``replace`` says to delete it first.

In production the queue's access policy must let Amazon send to it (SQS ``SendMessage`` and
``GetQueueAttributes`` for Amazon's notification principal, as Amazon's SQS set-up guide says);
createDestination fails until it does, with Amazon's words.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx

from ordersync.amazon.client import AmazonConflict, NotificationDestination, SpApiClient
from ordersync.aws import find_or_create_queue, queue_arn, sqs_client
from ordersync.channels import Channel
from ordersync.ratelimit import RateLimiter
from ordersync.settings import Settings

ORDER_CHANGE = "ORDER_CHANGE"


@dataclass
class SetupReport:
    """What ``setup`` found and did, step by step."""

    channel: str
    queue_url: str = ""
    queue_arn: str = ""
    destination_id: str = ""
    subscription_id: str = ""
    steps: list[str] = field(default_factory=list)
    ok: bool = True

    def lines(self) -> list[str]:
        return [f"channel {self.channel}: {'ready' if self.ok else 'NOT ready'}", *self.steps]


async def queue_of(settings: Settings) -> tuple[str, str, bool]:
    """The notifications queue's URL and ARN, and whether it was created now."""
    url = settings.notifications.queue_url
    if url:
        async with sqs_client(settings.aws) as sqs:
            return url, await queue_arn(sqs, url), False
    return await find_or_create_queue(settings.aws, settings.notifications.queue_name)


async def destination_for(client: SpApiClient, arn: str) -> tuple[NotificationDestination, bool]:
    """The application's destination for the queue ``arn`` (created if there is none), and whether it was
    created now."""
    for destination in await client.get_destinations():
        if destination.sqs_arn == arn:
            return destination, False
    try:
        return await client.create_destination(f"ordersync {arn.rsplit(':', 1)[-1]}", sqs_arn=arn), True
    except AmazonConflict:
        # Created meanwhile (another run): it is there now.
        for destination in await client.get_destinations():
            if destination.sqs_arn == arn:
                return destination, False
        raise


async def setup_notifications(
    settings: Settings,
    channel: Channel,
    *,
    limiter: RateLimiter,
    replace: bool = False,
    http: httpx.AsyncClient | None = None,
) -> SetupReport:
    """Make sure ``channel``'s ORDER_CHANGE notifications reach ordersync's queue (see the module)."""
    report = SetupReport(channel=channel.name)
    report.queue_url, report.queue_arn, created = await queue_of(settings)
    report.steps.append(
        f"queue {report.queue_arn}: {'created' if created else 'exists'} ({report.queue_url})"
    )
    own_http = http is None
    http = http or httpx.AsyncClient(timeout=settings.amazon.request_timeout_s)
    try:
        client = SpApiClient(channel=channel, amazon=settings.amazon, limiter=limiter, http=http)
        destination, created = await destination_for(client, report.queue_arn)
        report.destination_id = destination.destination_id
        report.steps.append(f"destination {destination.destination_id}: {'created' if created else 'exists'}")
        current = await client.get_subscription(ORDER_CHANGE)
        if current is not None and current.destination_id != destination.destination_id:
            if not replace:
                report.ok = False
                report.steps.append(
                    f"subscription {current.subscription_id} sends ORDER_CHANGE to destination"
                    f" {current.destination_id}, not ordersync's: left alone (--replace deletes it first)"
                )
                return report
            await client.delete_subscription_by_id(ORDER_CHANGE, current.subscription_id)
            report.steps.append(
                f"subscription {current.subscription_id} to {current.destination_id}: deleted"
            )
            current = None
        if current is None:
            try:
                current = await client.create_subscription(ORDER_CHANGE, destination.destination_id)
                verb = "created"
            except AmazonConflict:
                current = await client.get_subscription(ORDER_CHANGE)
                verb = "exists"
                if current is None:
                    raise
        else:
            verb = "exists"
        report.subscription_id = current.subscription_id
        report.steps.append(f"ORDER_CHANGE subscription {current.subscription_id}: {verb}")
        return report
    finally:
        if own_http:
            await http.aclose()
