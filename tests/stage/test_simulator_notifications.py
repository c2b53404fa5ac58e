"""The simulator's ORDER_CHANGE notifications on a real SQS server (moto's, the session's
``aws_endpoint_url``), subscribed through ordersync's SP-API client over HTTP: each order change
arrives on the queue as Amazon's schema says; loss and duplicates change what arrives, the same way
for the same seed; a send that fails is tried again until the queue answers; the grantless
operations, their throttling and their errors as the client reports them."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from ordersync.amazon.client import AmazonConflict, SpApiClient
from ordersync.aws import ensure_queue, sqs_client
from ordersync.channels import Channel, LwaCredentials, SecretRef
from ordersync.errors import AmazonRejected, AmazonThrottled
from ordersync.ratelimit import InMemoryRateLimiter
from ordersync.ratelimit.plans import PlanBook
from ordersync.settings import AmazonSettings, AwsSettings
from ordersync.simulator import RunningSimulator, SimulatorState
from ordersync.simulator.testing import (
    TEST_CLIENT_ID,
    TEST_CLIENT_SECRET,
    TEST_REFRESH_TOKEN,
    TEST_SELLER,
    tiny_scenario,
    validate_notification,
)

pytestmark = pytest.mark.stage

US = "ATVPDKIKX0DER"
#: Every notification due 1 to 5 simulated seconds after its change, no late tail.
PROMPT = {"lag_s": [1, 5], "late": {"p_late": 0.0, "max_late_s": 0}}


async def new_queue(aws: AwsSettings) -> tuple[str, str]:
    """A fresh standard queue: (URL, ARN)."""
    return await ensure_queue(aws, f"sim-order-change-{uuid.uuid4().hex[:12]}")


def make_channel(client_secret: str = TEST_CLIENT_SECRET) -> Channel:
    return Channel(
        name="test-notifications",
        seller_id=TEST_SELLER,
        region="na",
        marketplaces=(US,),
        orders_api="v0",
        credentials=LwaCredentials(
            client_id=SecretRef(value=SecretStr(TEST_CLIENT_ID)),
            client_secret=SecretRef(value=SecretStr(client_secret)),
            refresh_token=SecretRef(value=SecretStr(TEST_REFRESH_TOKEN)),
        ),
    )


@dataclass
class Harness:
    sim: RunningSimulator
    http: httpx.AsyncClient
    aws: AwsSettings

    def client(self, channel: Channel | None = None) -> SpApiClient:
        amazon = AmazonSettings(endpoint=self.sim.base_url, lwa_endpoint=self.sim.lwa_url)
        # Amazon's plans run 100,000 times faster: the client's limiter never makes a test wait, so
        # the simulator's own buckets (frozen clock) are what throttles.
        limiter = InMemoryRateLimiter(plans=PlanBook(time_scale=100_000))
        return SpApiClient(channel=channel or make_channel(), amazon=amazon, limiter=limiter, http=self.http)

    async def control(self, method: str, path: str, body: Any = None) -> Any:
        response = await self.http.request(method, self.sim.base_url + path, json=body)
        assert response.status_code < 300, response.text
        return response.json() if response.content else None

    async def subscribe(self, arn: str) -> str:
        """The application's destination for ``arn`` and the seller's ORDER_CHANGE subscription."""
        client = self.client()
        destination = await client.create_destination("ordersync", sqs_arn=arn)
        subscription = await client.create_subscription("ORDER_CHANGE", destination.destination_id)
        return subscription.subscription_id

    async def truth(self, **query: str) -> dict[str, Any]:
        response = await self.http.get(self.sim.base_url + "/_sim/notifications", params=query)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def settled(self, timeout_s: float = 20.0) -> dict[str, Any]:
        """The truth once nothing is pending any more."""
        deadline = time.monotonic() + timeout_s
        while True:
            truth = await self.truth()
            if truth["counts"]["pending"] == 0 or time.monotonic() > deadline:
                return truth
            await asyncio.sleep(0.1)


@contextmanager
def simulator(aws: AwsSettings | None, **scenario: Any) -> Iterator[RunningSimulator]:
    scenario.setdefault("notifications", PROMPT)
    with RunningSimulator(SimulatorState(tiny_scenario(**scenario)), aws=aws) as running:
        yield running


@pytest.fixture
async def harness(aws: AwsSettings) -> AsyncIterator[Harness]:
    with simulator(aws) as sim:
        async with httpx.AsyncClient(timeout=10) as http:
            yield Harness(sim, http, aws)


async def receive(
    aws: AwsSettings, url: str, *, expected: int, timeout_s: float = 15.0
) -> list[dict[str, Any]]:
    """Messages from the queue (each deleted once read) until ``expected`` came or the time is up."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    async with sqs_client(aws) as sqs:
        while len(got) < expected and time.monotonic() < deadline:
            answer = await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
            for message in answer.get("Messages") or []:
                got.append(message)
                await sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return got


def change_of(message: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(message["Body"])
    change: dict[str, Any] = body["Payload"]["OrderChangeNotification"]
    return change


async def test_each_order_change_arrives_on_the_queue_as_amazon_sends_it(harness: Harness) -> None:
    url, arn = await new_queue(harness.aws)
    client = harness.client()
    destination = await client.create_destination("ordersync", sqs_arn=arn)
    assert destination.sqs_arn == arn
    with pytest.raises(AmazonConflict) as conflict:
        await client.create_destination("again", sqs_arn=arn)
    assert (conflict.value.status, conflict.value.code) == (409, "Conflict")
    assert conflict.value.kind == "permanent"
    assert [d.destination_id for d in await client.get_destinations()] == [destination.destination_id]

    assert await client.get_subscription("ORDER_CHANGE") is None
    subscription = await client.create_subscription("ORDER_CHANGE", destination.destination_id)
    assert subscription.processing_directive == {"eventFilter": {"eventFilterType": "ORDER_CHANGE"}}
    with pytest.raises(AmazonConflict) as again:
        await client.create_subscription("ORDER_CHANGE", destination.destination_id)
    assert (again.value.status, again.value.code) == (409, "StateConflict")
    found = await client.get_subscription("ORDER_CHANGE")
    assert found == subscription  # "already subscribed": the caller carries on with this one

    order = await harness.control("POST", "/_sim/orders", {"items": [{"quantity": 2}]})
    order_id = order["amazon_order_id"]
    await harness.control("POST", "/_sim/clock/advance", {"seconds": 5})
    (message,) = await receive(harness.aws, url, expected=1)
    body = json.loads(message["Body"])
    validate_notification("ORDER_CHANGE", body)
    change = body["Payload"]["OrderChangeNotification"]
    assert (change["SellerId"], change["AmazonOrderId"], change["Summary"]["OrderStatus"]) == (
        TEST_SELLER,
        order_id,
        "Unshipped",
    )
    assert body["NotificationMetadata"]["SubscriptionId"] == subscription.subscription_id
    truth = await harness.truth(order_id=order_id)
    assert truth["counts"]["messages_sent"] == 1
    (notification,) = truth["notifications"]
    assert notification["status"] == "sent"
    assert notification["notification_id"] == body["NotificationMetadata"]["NotificationId"]

    await harness.control("POST", f"/_sim/orders/{order_id}/status", {"status": "Canceled"})
    await harness.control("POST", "/_sim/clock/advance", {"seconds": 5})
    (canceled,) = await receive(harness.aws, url, expected=1)
    validate_notification("ORDER_CHANGE", json.loads(canceled["Body"]))
    assert change_of(canceled)["Summary"]["OrderStatus"] == "Canceled"

    # Unsubscribed: nothing more is sent.
    await client.delete_subscription_by_id("ORDER_CHANGE", subscription.subscription_id)
    assert await client.get_subscription("ORDER_CHANGE") is None
    await harness.control("POST", "/_sim/orders", {})
    await harness.control("POST", "/_sim/clock/advance", {"seconds": 60})
    assert await receive(harness.aws, url, expected=1, timeout_s=2) == []
    assert (await harness.truth())["counts"]["scheduled"] == 2


async def run_lossy(aws: AwsSettings, seed: int) -> dict[tuple[int, str], tuple[str, int]]:
    """Twelve new orders under loss and duplicates: per (order's rank, status), what the truth says
    became of its notification and how many messages arrived, checked against each other."""
    knobs = {**PROMPT, "loss": 0.3, "duplicate": 0.3, "duplicate_after_s": [1, 3]}
    url, arn = await new_queue(aws)
    with simulator(aws, seed=seed, notifications=knobs) as sim:
        async with httpx.AsyncClient(timeout=10) as http:
            harness = Harness(sim, http, aws)
            await harness.subscribe(arn)
            orders = [sim.state.add_order({})["amazon_order_id"] for _ in range(12)]
            sim.state.advance_clock(60)
            truth = await harness.settled()
            expected = truth["counts"]["messages_sent"]
            messages = await receive(aws, url, expected=expected)
            messages += await receive(aws, url, expected=1, timeout_s=1.5)  # nothing more comes
    arrived: dict[str, list[str]] = {}
    for message in messages:
        body = json.loads(message["Body"])
        validate_notification("ORDER_CHANGE", body)
        arrived.setdefault(body["NotificationMetadata"]["NotificationId"], []).append(message["Body"])
    story: dict[tuple[int, str], tuple[str, int]] = {}
    for notification in truth["notifications"]:
        bodies = arrived.get(notification["notification_id"], [])
        if notification["status"] == "lost":
            assert bodies == [], notification
        else:
            assert notification["status"] == "sent", notification
            assert len(bodies) == notification["copies"], notification
            assert len(set(bodies)) == 1  # a duplicate is the same message
        rank = orders.index(notification["amazon_order_id"])
        story[rank, notification["order_status"]] = (notification["status"], len(bodies))
    assert len(messages) == expected
    return story


async def test_loss_and_duplicates_change_what_arrives_the_same_way_for_a_seed(aws: AwsSettings) -> None:
    story = await run_lossy(aws, seed=21)
    outcomes = sorted(story.values())
    assert ("lost", 0) in outcomes
    assert ("sent", 2) in outcomes
    assert ("sent", 1) in outcomes
    assert await run_lossy(aws, seed=21) == story
    assert await run_lossy(aws, seed=22) != story


async def test_a_failed_send_is_tried_again_until_the_queue_answers(harness: Harness) -> None:
    name = f"sim-late-queue-{uuid.uuid4().hex[:12]}"
    arn = f"arn:aws:sqs:{harness.aws.region}:123456789012:{name}"
    await harness.subscribe(arn)
    order_id = harness.sim.state.add_order({})["amazon_order_id"]
    await harness.control("POST", "/_sim/clock/advance", {"seconds": 10})
    deadline = time.monotonic() + 10
    while True:
        (notification,) = (await harness.truth(order_id=order_id))["notifications"]
        if notification["failures"] >= 2 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert notification["status"] == "pending"
    assert notification["failures"] >= 2
    assert (
        "NonExistentQueue" in notification["last_error"] or "QueueDoesNotExist" in notification["last_error"]
    )
    assert (await harness.control("GET", "/_sim/clock"))["orders"] > 0  # the simulator answers on

    url, created_arn = await ensure_queue(harness.aws, name)
    assert created_arn == arn
    (message,) = await receive(harness.aws, url, expected=1, timeout_s=20)
    assert change_of(message)["AmazonOrderId"] == order_id
    assert (await harness.truth(order_id=order_id))["notifications"][0]["status"] == "sent"


async def test_grantless_calls_are_throttled_and_refused_as_the_client_reports_them(harness: Harness) -> None:
    client = harness.client()
    for _ in range(5):
        assert await client.get_destinations() == ()
    with pytest.raises(AmazonThrottled) as throttled:
        await client.get_destinations()
    assert (throttled.value.status, throttled.value.code) == (429, "QuotaExceeded")
    await harness.control("POST", "/_sim/clock/advance", {"seconds": 1})
    assert await client.get_destinations() == ()

    with pytest.raises(AmazonRejected) as unknown:
        await client.create_subscription("ORDER_CHANGE", "no-such-destination")
    assert not isinstance(unknown.value, AmazonConflict)
    assert (unknown.value.status, unknown.value.code) == (400, "InvalidInput")
    assert "DestinationId belongs to the application" in unknown.value.amazon_message
    with pytest.raises(AmazonRejected) as bad_type:
        await client.get_subscription("ORDER_STATUS_CHANGE")
    assert bad_type.value.status == 400

    refused = harness.client(make_channel(client_secret="wrong"))
    with pytest.raises(AmazonRejected) as auth:
        await refused.get_destinations()
    assert (auth.value.status, auth.value.code) == (401, "invalid_client")
    lwa = harness.sim.state.counters_json()["sellers"]["(grantless)"]["lwaToken"]
    assert lwa["ok"] == 1  # one client_credentials token, cached for every grantless call


async def test_knobs_over_http_and_no_sending_without_aws(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="ordersync.simulator.notifications")
    with simulator(None) as sim:
        async with httpx.AsyncClient(timeout=10) as http:
            harness = Harness(sim, http, AwsSettings())
            await harness.subscribe("arn:aws:sqs:us-east-1:123456789012:nowhere")
            for _ in range(2):
                sim.state.add_order({})
            await harness.control("POST", "/_sim/clock/advance", {"seconds": 60})
            truth = await harness.truth()
            assert truth["sender"] == {"attached": False}
            assert truth["counts"]["pending"] == 2
            said = [r for r in caplog.records if "will not be sent" in r.getMessage()]
            assert len(said) == 1  # said once

            profile = await harness.control("PUT", "/_sim/notifications", {"enabled": False})
            assert profile["enabled"] is False
            sim.state.add_order({})
            assert (await harness.truth())["counts"]["suppressed"] == 1
            response = await http.put(sim.base_url + "/_sim/notifications", json={"loss": 3})
            assert response.status_code == 400
