"""The order-notifications stage as its own process, reading Amazon's notifications from a real SQS
queue (moto's server) onto the embedded broker: every order once however often it is notified, a
SIGKILL while messages are in hand loses nothing and sends nothing twice, and garbage is dead-lettered
with the reason while the stage keeps going."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from ordersync.amazon.normalize import parse_time
from ordersync.aws import sqs_client
from ordersync.dev.demo import LocalPipeline, local_pipeline
from ordersync.schemas.events import EventDeadLettered, OrderDownloaded
from ordersync.schemas.topics import AMAZON_NOTIFICATIONS, ORDERS_DOWNLOADED
from ordersync.simulator.testing import tiny_scenario
from tests.factories import order_change_body
from tests.topics import read_all, read_envelopes, wait_for

pytestmark = pytest.mark.integration

STAGE = "order-notifications"


def _send(pipeline: LocalPipeline, bodies: list[str]) -> None:
    """Put ``bodies`` on the queue as Amazon would."""

    async def send() -> None:
        async with sqs_client(pipeline.settings().aws) as sqs:
            for start in range(0, len(bodies), 10):
                entries = [
                    {"Id": str(i), "MessageBody": body} for i, body in enumerate(bodies[start : start + 10])
                ]
                await sqs.send_message_batch(QueueUrl=pipeline.queue_url, Entries=entries)

    asyncio.run(send())


def _queue_depth(pipeline: LocalPipeline) -> int:
    async def depth() -> int:
        async with sqs_client(pipeline.settings().aws) as sqs:
            names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
            attributes = (await sqs.get_queue_attributes(QueueUrl=pipeline.queue_url, AttributeNames=names))[
                "Attributes"
            ]
            return sum(int(attributes[name]) for name in names)

    return asyncio.run(depth())


def test_notifications_become_each_order_once_through_a_sigkill(tmp_path: Path) -> None:
    scenario = tiny_scenario(orders={"count": 30, "history_s": 3600}, time_scale=60, start=None)
    extra = {
        # A message in hand when the stage dies is delivered again this soon.
        "ORDERSYNC_NOTIFICATIONS__VISIBILITY_TIMEOUT_S": "10",
        "ORDERSYNC_NOTIFICATIONS__WAIT_TIME_S": "1",
        "ORDERSYNC_NOTIFICATIONS__MAX_MESSAGES": "3",
    }
    with local_pipeline(
        scenario=scenario, run_dir=tmp_path / "run", stages=(STAGE,), backoffice=False, extra_env=extra
    ) as pipeline:
        assert pipeline.simulator is not None
        bootstrap = pipeline.env["ORDERSYNC_KAFKA__BOOTSTRAP"]
        truth = pipeline.simulator.state.truth_orders()
        # Each order notified three times (SQS delivers at least once; Amazon may repeat), shuffled.
        bodies: list[Any] = [
            order_change_body(
                o["seller_id"],
                o["amazon_order_id"],
                changed_at=parse_time(o["last_updated"]),
                marketplace_id=o["marketplace_id"],
                status=o["status"],
            )
            for o in truth
            for _ in range(3)
        ]
        poison = ['{"NotificationType": "ORDER_CHANGE", "Payload": {}}', "<xml>not json</xml>"]
        random.Random(7).shuffle(bodies)
        half = len(bodies) // 2
        _send(pipeline, [*bodies[:half], poison[0]])
        wait_for(lambda: len(read_all(bootstrap, ORDERS_DOWNLOADED)) >= 3, what="the first orders are sent")
        pipeline.restart(STAGE)  # SIGKILL with messages in hand, then started again
        _send(pipeline, [*bodies[half:], poison[1]])

        def sent() -> Counter[str]:
            return Counter(
                d.order.amazon_order_id
                for d in read_all(bootstrap, ORDERS_DOWNLOADED)
                if isinstance(d, OrderDownloaded)
            )

        wait_for(
            lambda: len(sent()) == len(truth) and _queue_depth(pipeline) == 0, 180, what="every order is sent"
        )
        dlq = AMAZON_NOTIFICATIONS.dlq
        assert dlq is not None

        def dead_letters() -> dict[Any, EventDeadLettered]:
            # By event id: a record dead-lettered just before the kill, its offset not yet committed, is
            # read and dead-lettered again after the restart; every copy carries the same event id.
            return {envelope.event_id: envelope.payload for envelope in read_envelopes(bootstrap, dlq)}

        wait_for(lambda: len(dead_letters()) == 2, what="both poison messages are dead-lettered")
        counts = sent()
        assert set(counts) == {o["amazon_order_id"] for o in truth}
        assert max(counts.values()) == 1, counts.most_common(3)
        assert {d.found_by for d in read_all(bootstrap, ORDERS_DOWNLOADED)} == {"notification"}
        reasons = sorted(letter.error for letter in dead_letters().values())
        assert reasons[0].startswith(
            "ORDER_CHANGE notification not as Amazon sends it: Payload.OrderChangeNotification"
        )
        assert reasons[1].startswith("the message is not JSON")
        assert pipeline.dead_processes() == []


def test_orders_placed_after_the_subscription_come_by_notification_alone(tmp_path: Path) -> None:
    """Amazon's fast path end to end: the simulator sends ORDER_CHANGE to the queue the channel was
    subscribed to (`notifications setup`), and with no poll running every new order reaches
    amazon.orders.downloaded once, found by its notification."""
    scenario = tiny_scenario(
        orders={"count": 12, "history_s": 0, "arrival_window_s": 600},
        time_scale=60,
        start=None,
        notifications={"lag_s": [1, 20], "late": {"p_late": 0.0, "max_late_s": 0}, "duplicate": 0.2},
    )
    with local_pipeline(
        scenario=scenario,
        run_dir=tmp_path / "run",
        stages=(STAGE,),
        backoffice=False,
        extra_env={"ORDERSYNC_NOTIFICATIONS__WAIT_TIME_S": "1"},
    ) as pipeline:
        assert pipeline.simulator is not None
        bootstrap = pipeline.env["ORDERSYNC_KAFKA__BOOTSTRAP"]

        def downloaded() -> Counter[str]:
            return Counter(d.order.amazon_order_id for d in read_all(bootstrap, ORDERS_DOWNLOADED))

        def notified() -> set[str]:
            """The orders Amazon sent a notification of (those placed after the subscription)."""
            truth = pipeline.simulator.state.truth_notifications(status="sent")  # type: ignore[union-attr]
            return {n["amazon_order_id"] for n in truth["notifications"]}

        def all_sent() -> bool:
            sim = pipeline.simulator
            assert sim is not None
            return (
                len(sim.state.truth_orders()) == 12
                and sim.state.truth_notifications()["counts"]["pending"] == 0
            )

        wait_for(all_sent, 120, what="every order is placed and its notification sent")
        assert len(notified()) >= 10  # the first ones may come before the subscription
        wait_for(lambda: set(downloaded()) == notified(), 120, what="every notified order is downloaded")
        truth = pipeline.simulator.state.truth_notifications()
        assert truth["counts"]["duplicated"] > 0  # Amazon repeated some: sent once each all the same
        versions = Counter(
            (d.order.amazon_order_id, d.order.last_update_date)
            for d in read_all(bootstrap, ORDERS_DOWNLOADED)
        )
        assert max(versions.values()) == 1
        assert {d.found_by for d in read_all(bootstrap, ORDERS_DOWNLOADED)} == {"notification"}
