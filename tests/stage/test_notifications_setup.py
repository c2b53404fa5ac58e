"""`ordersync notifications setup` against the simulator (HTTP) and a real SQS server: the queue, the
destination and the channel's ORDER_CHANGE subscription are made once, found on every later run, and
order changes then reach the queue; a subscription sending elsewhere is left alone unless replaced."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ordersync.aws import sqs_client
from ordersync.ops.notifications import setup_notifications
from ordersync.ratelimit import InMemoryRateLimiter
from ordersync.ratelimit.plans import PlanBook
from ordersync.settings import AmazonSettings, AwsSettings, NotificationsSettings, Settings
from ordersync.simulator import RunningSimulator, SimulatorState
from ordersync.simulator.testing import TEST_SELLER, tiny_scenario
from tests.stage.test_simulator_notifications import PROMPT, make_channel

pytestmark = pytest.mark.stage


@pytest.fixture
def sim(aws: AwsSettings) -> Iterator[RunningSimulator]:
    with RunningSimulator(SimulatorState(tiny_scenario(notifications=PROMPT)), aws=aws) as running:
        yield running


def _settings(sim: RunningSimulator, aws: AwsSettings, queue: str) -> Settings:
    return Settings(
        amazon=AmazonSettings(endpoint=sim.base_url, lwa_endpoint=sim.lwa_url),
        aws=aws,
        notifications=NotificationsSettings(queue_name=queue),
    )


def _limiter() -> InMemoryRateLimiter:
    return InMemoryRateLimiter(plans=PlanBook(time_scale=100_000))


async def _received(aws: AwsSettings, url: str) -> list[dict[str, Any]]:
    async with sqs_client(aws) as sqs:
        for _ in range(30):
            answer = await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
            if answer.get("Messages"):
                return [json.loads(m["Body"]) for m in answer["Messages"]]
    return []


async def test_setup_makes_what_is_missing_once_and_order_changes_then_arrive(
    sim: RunningSimulator, aws: AwsSettings
) -> None:
    settings = _settings(sim, aws, f"order-change-{uuid.uuid4().hex[:8]}")
    channel = make_channel()
    first = await setup_notifications(settings, channel, limiter=_limiter())
    assert first.ok
    assert [" created" in step for step in first.steps] == [True] * 3
    again = await setup_notifications(settings, channel, limiter=_limiter())
    assert again.ok
    assert (again.queue_url, again.destination_id, again.subscription_id) == (
        first.queue_url,
        first.destination_id,
        first.subscription_id,
    )
    assert all(" exists" in step for step in again.steps)

    async with httpx.AsyncClient(base_url=sim.base_url) as http:
        order = (await http.post("/_sim/orders", json={})).json()
        await http.post("/_sim/clock/advance", json={"seconds": 10})
    (body,) = await _received(aws, first.queue_url)
    change = body["Payload"]["OrderChangeNotification"]
    assert (change["SellerId"], change["AmazonOrderId"]) == (TEST_SELLER, order["amazon_order_id"])
    assert body["NotificationMetadata"]["SubscriptionId"] == first.subscription_id


async def test_a_subscription_sending_elsewhere_is_left_alone_unless_replaced(
    sim: RunningSimulator, aws: AwsSettings
) -> None:
    channel = make_channel()
    elsewhere = await setup_notifications(
        _settings(sim, aws, f"other-{uuid.uuid4().hex[:8]}"), channel, limiter=_limiter()
    )
    ours = _settings(sim, aws, f"ordersync-{uuid.uuid4().hex[:8]}")
    refused = await setup_notifications(ours, channel, limiter=_limiter())
    assert not refused.ok
    assert f"sends ORDER_CHANGE to destination {elsewhere.destination_id}" in refused.steps[-1]
    replaced = await setup_notifications(ours, channel, limiter=_limiter(), replace=True)
    assert replaced.ok
    assert any(
        f"subscription {elsewhere.subscription_id} to" in step and "deleted" in step
        for step in replaced.steps
    )
    assert replaced.subscription_id != elsewhere.subscription_id
