"""Notifications fetched against the simulator (real HTTP) and a real Redis: one getOrder per change the
pipeline has not seen, one downloaded event per version whoever finds it first, and what is not an
ORDER_CHANGE of a served channel dead-lettered with the reason."""

from __future__ import annotations

import uuid
from datetime import datetime
from functools import partial
from typing import Any

import pytest

from ordersync.amazon.normalize import parse_time
from ordersync.aws import ensure_queue, sqs_client
from ordersync.dev.testing import RecordingRuntime
from ordersync.ops.notifications import setup_notifications
from ordersync.producers.download_send import CLAIM_TTL_S, DEDUPE_MARK, SUBSCRIPTION_TASK, emit_if_new
from ordersync.producers.order_notifications import (
    NOTIFICATIONS_TASK,
    check_subscriptions,
    fetch_notified_order,
    received_record,
)
from ordersync.schemas.codec import encode
from ordersync.schemas.events import EventDeadLettered, OrderDownloaded, RecordParked
from ordersync.schemas.topics import AMAZON_NOTIFICATIONS, ORDERS_DOWNLOADED, REDRIVE_TIERS
from ordersync.settings import AwsSettings, NotificationsSettings
from ordersync.simulator.runner import RunningSimulator
from ordersync.simulator.testing import tiny_scenario
from tests.factories import order_change_body
from tests.records import Message, Record, parked

pytestmark = pytest.mark.stage


class Harness:
    def __init__(self, sim: RunningSimulator, runtime: RecordingRuntime) -> None:
        self.sim = sim
        self.runtime = runtime
        self.channel = runtime.channels.channels[0]
        self.offset = 0

    def truth(self, order_id: str) -> dict[str, Any]:
        return self.sim.state.truth_order(order_id)

    def get_order_calls(self) -> int:
        counters = self.sim.state.counters_json()["sellers"].get(self.channel.seller_id, {})
        return int(counters.get("getOrder", {}).get("calls", 0))

    async def notify(
        self, order_id: str, changed_at: datetime, *, seller_id: str | None = None, body: str | None = None
    ) -> None:
        """Amazon's message, as copied to Kafka, handled by the stage."""
        self.offset += 1
        message = {
            "MessageId": f"m-{self.offset}",
            "Body": body
            or order_change_body(seller_id or self.channel.seller_id, order_id, changed_at=changed_at),
        }
        key, envelope = received_record("order-change", message, self.runtime.clock.now())
        record = Record(
            Message(encode(envelope), key.encode(), AMAZON_NOTIFICATIONS.name, offset=self.offset)
        )
        await self.runtime.process(AMAZON_NOTIFICATIONS, record, partial(fetch_notified_order, self.runtime))

    def downloaded(self) -> list[OrderDownloaded]:
        return self.runtime.payloads(ORDERS_DOWNLOADED.name)


@pytest.fixture
async def harness(make_runtime: Any) -> Any:
    scenario = tiny_scenario(orders={"count": 3})
    with RunningSimulator(scenario) as sim:
        sim.state.advance_clock(600)  # every order visible
        yield Harness(sim, await make_runtime("order-notifications", scenario, sim))


async def test_a_notification_sends_the_order_once_however_often_it_comes(harness: Harness) -> None:
    order_id = harness.sim.state.truth_orders()[0]["amazon_order_id"]
    changed = parse_time(harness.truth(order_id)["last_updated"])
    await harness.notify(order_id, changed)
    (sent,) = harness.downloaded()
    assert (sent.order.amazon_order_id, sent.found_by) == (order_id, "notification")
    assert harness.get_order_calls() == 1
    # Delivered again (SQS is at-least-once), and an older change delivered late: no call, nothing sent.
    await harness.notify(order_id, changed)
    await harness.notify(order_id, parse_time(harness.truth(order_id)["created"]))
    assert harness.get_order_calls() == 1
    assert len(harness.downloaded()) == 1
    health = await harness.runtime.store.task(NOTIFICATIONS_TASK, harness.channel.name)
    assert order_id in health["last_result"]


async def test_a_later_change_is_fetched_and_sent(harness: Harness) -> None:
    order_id = harness.sim.state.truth_orders()[0]["amazon_order_id"]
    await harness.notify(order_id, parse_time(harness.truth(order_id)["last_updated"]))
    harness.sim.state.set_order_status(order_id, "Canceled")
    harness.sim.state.advance_clock(600)
    await harness.notify(order_id, parse_time(harness.truth(order_id)["last_updated"]))
    assert [d.order.order_status for d in harness.downloaded()] == [
        harness.downloaded()[0].order.order_status,
        "Canceled",
    ]
    assert harness.get_order_calls() == 2


async def test_a_version_the_poll_sent_is_not_fetched_again(harness: Harness) -> None:
    order_id = harness.sim.state.truth_orders()[0]["amazon_order_id"]
    client = harness.runtime.amazon(harness.channel)
    polled = await client.get_order(order_id)
    assert await emit_if_new(harness.runtime, harness.channel, polled, "poll")
    calls = harness.get_order_calls()
    await harness.notify(order_id, polled.last_update_date)
    assert harness.get_order_calls() == calls
    assert [d.found_by for d in harness.downloaded()] == ["poll"]


async def test_a_version_another_sender_is_sending_waits_on_the_redrive(harness: Harness) -> None:
    order_id = harness.sim.state.truth_orders()[0]["amazon_order_id"]
    changed = parse_time(harness.truth(order_id)["last_updated"])
    store = harness.runtime.store
    # The poll claimed this version a moment ago and has not recorded it yet.
    assert (
        await store.claim_version(
            DEDUPE_MARK, harness.channel.seller_id, order_id, changed, ttl_s=CLAIM_TTL_S, owner="the poll/1"
        )
        == "mine"
    )
    await harness.notify(order_id, changed)
    assert harness.downloaded() == []
    (waiting,) = harness.runtime.payloads(REDRIVE_TIERS[0].name)
    assert isinstance(waiting, RecordParked)
    assert waiting.error_type == "VersionBeingSent"
    # Another change of the order waits behind it: one order's notifications stay in order.
    await harness.notify(order_id, changed)
    assert len(harness.runtime.payloads(REDRIVE_TIERS[0].name)) == 2
    # The other sender died: its claim lapses, and the redrive's try (when due) sends the version.
    await harness.runtime.store.release_claim(harness.channel.seller_id, order_id, changed, "the poll/1")
    harness.sim.state.advance_clock(120)
    runtime = harness.runtime
    await runtime.serve(AMAZON_NOTIFICATIONS, partial(fetch_notified_order, runtime))
    for record, _ in parked(runtime):
        await runtime.process(REDRIVE_TIERS[0], record, runtime._redrive)  # type: ignore[arg-type]
    assert [d.order.amazon_order_id for d in harness.downloaded()] == [order_id]
    assert harness.get_order_calls() == 2


async def test_what_is_not_a_served_order_change_is_dead_lettered_with_the_reason(harness: Harness) -> None:
    order_id = harness.sim.state.truth_orders()[0]["amazon_order_id"]
    changed = parse_time(harness.truth(order_id)["last_updated"])
    await harness.notify(order_id, changed, body='{"NotificationType": "ANY_OFFER_CHANGED"}')
    await harness.notify(order_id, changed, seller_id="A9NOTSERVED")
    await harness.notify(order_id, changed, body="{" * 50_000)
    assert AMAZON_NOTIFICATIONS.dlq is not None
    letters: list[EventDeadLettered] = harness.runtime.payloads(AMAZON_NOTIFICATIONS.dlq.name)
    assert [letter.error.split(":")[0] for letter in letters] == [
        "not an ORDER_CHANGE notification (NotificationType 'ANY_OFFER_CHANGED')",
        "notification 5c7d8b9e-0000-4000-8000-000000000001",
        "the message is not JSON",
    ]
    assert "no channel of seller 'A9NOTSERVED'" in letters[1].error
    assert harness.downloaded() == []
    assert harness.get_order_calls() == 0


async def test_the_subscription_check_says_when_amazon_cannot_send_here(
    make_runtime: Any, aws: AwsSettings
) -> None:
    queue_url, _ = await ensure_queue(aws, f"check-{uuid.uuid4().hex[:12]}")
    elsewhere_url, _ = await ensure_queue(aws, f"elsewhere-{uuid.uuid4().hex[:12]}")
    scenario = tiny_scenario(orders={"count": 1})
    with RunningSimulator(scenario, aws=aws) as sim:
        runtime = await make_runtime(
            "order-notifications",
            scenario,
            sim,
            other_settings={"aws": aws, "notifications": NotificationsSettings(queue_url=queue_url)},
        )
        channel = runtime.channels.channels[0]

        async def check() -> dict[str, str]:
            async with sqs_client(aws) as sqs:
                await check_subscriptions(runtime, sqs, queue_url)
            task: dict[str, str] = await runtime.store.task(SUBSCRIPTION_TASK, channel.name)
            return task

        never_subscribed = await check()
        assert never_subscribed["subscribed"] == "no"
        assert "no ORDER_CHANGE subscription" in never_subscribed["last_error"]
        (told,) = [
            n for n in await runtime.health.notifications() if n.kind == "notifications-subscription-missing"
        ]
        assert told.channel == channel.name

        assert (await setup_notifications(runtime.settings, channel, limiter=runtime.limiter_or_none)).ok
        subscribed = await check()
        assert subscribed["subscribed"] == "yes"
        assert "sends to the queue read here" in subscribed["last_result"]

        # Someone points the seller's ORDER_CHANGE at another queue (another tool, a second install).
        moved = runtime.settings.model_copy(
            update={"notifications": NotificationsSettings(queue_url=elsewhere_url)}
        )
        assert (await setup_notifications(moved, channel, limiter=runtime.limiter_or_none, replace=True)).ok
        misdirected = await check()
        assert misdirected["subscribed"] == "no"
        assert "not to the queue read here" in misdirected["last_error"]
