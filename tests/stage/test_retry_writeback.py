"""Retry Write-back at stage level: a package that failed every attempt on Amazon is sent again by an
operator's command, through the normal confirmShipment path, once; confirmed packages and unknown
orders are left alone, and a command delivered twice does not retry twice."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from typing import Any

import pytest

from ordersync.consumers import fulfillment_feed
from ordersync.consumers.shipment_write_back import handle, retry_writeback
from ordersync.schemas.codec import encode
from ordersync.schemas.envelope import Envelope
from ordersync.schemas.events import (
    OperatorCommandIssued,
    ShipmentConfirmed,
    ShipmentFailed,
    ShipmentItem,
    ShipmentRequested,
)
from ordersync.schemas.topics import REDRIVE_TIERS, SHIPMENTS_CONFIRMED, SHIPMENTS_FAILED, SHIPMENTS_REQUESTED
from ordersync.settings import RedriveSettings, WriteBackSettings
from ordersync.simulator.runner import RunningSimulator
from ordersync.simulator.testing import tiny_scenario
from ordersync.state import keys
from tests.records import Message, Record, parked

pytestmark = pytest.mark.stage

UNKNOWN_ORDER = "999-0000000-0000000"


def _whole_order_package(channel: str, truth: dict[str, Any], *, tracking_number: str) -> ShipmentRequested:
    """Package "1": every item of the simulator's order, by UPS."""
    return ShipmentRequested(
        channel=channel,
        amazon_order_id=truth["amazon_order_id"],
        package_reference_id="1",
        carrier_code="UPS",
        tracking_number=tracking_number,
        ship_date=datetime.now(UTC),
        items=tuple(
            ShipmentItem(order_item_id=i["order_item_id"], quantity=i["quantity_ordered"])
            for i in truth["items"]
        ),
    )


def _command(channel: str, seller: str, *order_ids: str) -> Envelope[OperatorCommandIssued]:
    command = OperatorCommandIssued(
        command="retry-writeback", channel=channel, amazon_order_ids=order_ids, operator="test"
    )
    return Envelope.wrap(command, seller_id=seller, correlation_id=f"retry-writeback:{channel}")


async def test_a_failed_package_is_sent_again_once_and_confirmed(make_runtime: Any) -> None:
    scenario = tiny_scenario(orders={"count": 1, "afn_share": 0.0, "pending_share": 0.0})
    with RunningSimulator(scenario) as sim:
        runtime = await make_runtime("shipment-write-back", scenario, sim)
        runtime.settings = runtime.settings.model_copy(
            update={"writeback": WriteBackSettings(mode="confirm", max_attempts=2, retry_backoff_s=0.01)}
        )
        (truth,) = sim.state.truth_orders()
        order_id = truth["amazon_order_id"]
        channel = runtime.channels.channels[0]
        request = _whole_order_package(channel.name, truth, tracking_number="1Z-RETRY")
        # Amazon fails every attempt (an outage): after max_attempts the request is parked on the
        # redrive tiers, tried again when due, and fails only on its last try, at the redrive deadline.
        runtime.settings = runtime.settings.model_copy(
            update={"redrive": RedriveSettings(delays_s=(60.0, 60.0, 60.0), deadline_s=30.0)}
        )
        sim.state.force_fault({"fault": "500", "operation": "confirmShipment", "count": 4})
        write_back = partial(handle, runtime)
        await runtime.serve(SHIPMENTS_REQUESTED, write_back)
        envelope = Envelope.wrap(
            request, seller_id=channel.seller_id, marketplace_id=truth["marketplace_id"], correlation_id="c"
        )
        key = f"{channel.seller_id}:{order_id}".encode()
        source = Record(Message(encode(envelope), key, SHIPMENTS_REQUESTED.name))
        await runtime.process(SHIPMENTS_REQUESTED, source, write_back)  # type: ignore[arg-type]
        assert not runtime.payloads(SHIPMENTS_FAILED.name), "failed before the redrive deadline"
        [(tier_record, copy)] = parked(runtime)
        assert copy.error_type == "AmazonUnavailable"
        state = await runtime.store.shipment_state(channel.seller_id, order_id, "1")
        assert (state["status"], state["attempts"]) == ("Pending", "2")
        assert "request" in state  # kept for a retry-writeback
        sim.state.advance_clock(61)
        await runtime.process(REDRIVE_TIERS[0], tier_record, runtime._redrive)  # type: ignore[arg-type]
        (failed,) = runtime.payloads(SHIPMENTS_FAILED.name)
        assert isinstance(failed, ShipmentFailed)
        assert failed.attempts == 4
        assert not runtime.payloads(SHIPMENTS_CONFIRMED.name)
        assert sim.state.truth_order(order_id)["shipments"] == []

        # The outage is over (the forced faults are spent); the operator retries the order.
        command = _command(channel.name, channel.seller_id, order_id, UNKNOWN_ORDER)
        await retry_writeback(runtime, command)
        (confirmed,) = runtime.payloads(SHIPMENTS_CONFIRMED.name)
        assert isinstance(confirmed, ShipmentConfirmed)
        assert confirmed.method == "confirmShipment"
        assert confirmed.attempts == 1, "attempts start again"
        assert confirmed.tracking_number == "1Z-RETRY"
        state = await runtime.store.shipment_state(channel.seller_id, order_id, "1")
        assert state["status"] == "Success"
        assert state["retried_by"] == str(command.event_id)
        assert "request" not in state  # confirmed is final: what a retry would send is not kept
        assert state["tracking"] == "1Z-RETRY"
        assert len(sim.state.truth_order(order_id)["shipments"]) == 1
        task = await runtime.store.task("retry-writeback", channel.name)
        assert task["last_result"] == (
            f"1 package(s) sent again for 2 order(s); {UNKNOWN_ORDER} no shipment known"
            " (not invoiced yet, or invoiced before this stage ran)"
        )

        # The same command delivered again, and a new one: the confirmed package is never re-sent.
        await retry_writeback(runtime, command)
        await retry_writeback(runtime, _command(channel.name, channel.seller_id, order_id))
        assert len(runtime.payloads(SHIPMENTS_CONFIRMED.name)) == 1
        assert len(runtime.payloads(SHIPMENTS_FAILED.name)) == 1
        calls = sim.state.counters_json()["sellers"][channel.seller_id]
        assert calls["confirmShipment"]["calls"] == 5  # 2 failed attempts, 2 on the redrive, 1 retry
        assert len(sim.state.truth_order(order_id)["shipments"]) == 1


async def test_a_package_failing_again_is_not_retried_by_the_same_command_twice(make_runtime: Any) -> None:
    scenario = tiny_scenario(orders={"count": 1, "afn_share": 0.0, "pending_share": 0.0})
    with RunningSimulator(scenario) as sim:
        runtime = await make_runtime("shipment-write-back", scenario, sim)
        runtime.settings = runtime.settings.model_copy(
            update={"writeback": WriteBackSettings(mode="confirm", max_attempts=1, retry_backoff_s=0.01)}
        )
        (truth,) = sim.state.truth_orders()
        order_id = truth["amazon_order_id"]
        channel = runtime.channels.channels[0]
        first = truth["items"][0]
        # Amazon refuses it (more units than ordered): a permanent refusal, failed at once.
        request = ShipmentRequested(
            channel=channel.name,
            amazon_order_id=order_id,
            package_reference_id="1",
            carrier_code="UPS",
            tracking_number="1Z-OVER",
            ship_date=datetime.now(UTC),
            items=(
                ShipmentItem(order_item_id=first["order_item_id"], quantity=first["quantity_ordered"] + 5),
            ),
        )
        await handle(
            runtime,
            Envelope.wrap(
                request,
                seller_id=channel.seller_id,
                marketplace_id=truth["marketplace_id"],
                correlation_id="c",
            ),
        )
        command = _command(channel.name, channel.seller_id, order_id)
        await retry_writeback(runtime, command)  # still refused: a second ShipmentFailed
        await retry_writeback(runtime, command)  # redelivered: nothing more
        failures = runtime.payloads(SHIPMENTS_FAILED.name)
        assert len(failures) == 2
        assert all(isinstance(f, ShipmentFailed) and f.attempts == 1 for f in failures)
        assert failures[-1].error_code == "InvalidInput"
        calls = sim.state.counters_json()["sellers"][channel.seller_id]
        assert calls["confirmShipment"]["calls"] == 2


async def test_in_feed_mode_a_failed_package_goes_in_the_next_feed(make_runtime: Any) -> None:
    scenario = tiny_scenario(
        orders={"count": 1}, feeds={"queue_delay_s": [0, 0], "duration_s": [10, 10], "stall_share": 0.0}
    )
    with RunningSimulator(scenario) as sim:
        runtime = await make_runtime("shipment-write-back", scenario, sim)
        runtime.settings = runtime.settings.model_copy(
            update={
                "writeback": WriteBackSettings(mode="feed", max_attempts=1, retry_backoff_s=0),
                # createFeed failing is Amazon down: retried past max_attempts until this deadline.
                "redrive": RedriveSettings(deadline_s=0.5),
            }
        )
        channel = runtime.channels.channels[0]
        (truth,) = sim.state.truth_orders()
        order_id = truth["amazon_order_id"]
        request = _whole_order_package(channel.name, truth, tracking_number="1Z-FEED")
        await handle(
            runtime,
            Envelope.wrap(
                request,
                seller_id=channel.seller_id,
                marketplace_id=truth["marketplace_id"],
                correlation_id="c",
            ),
        )
        # createFeed fails (Amazon down): tried past its only attempt until the redrive deadline.
        sim.state.force_fault({"fault": "500", "operation": "createFeed", "count": 20})
        assert await fulfillment_feed.run_feeds(runtime, channel) is None
        assert not runtime.payloads(SHIPMENTS_FAILED.name), "given up before the redrive deadline"
        sim.state.advance_clock(1)
        assert await fulfillment_feed.run_feeds(runtime, channel) is None
        (failed,) = runtime.payloads(SHIPMENTS_FAILED.name)
        assert isinstance(failed, ShipmentFailed)
        sim.state.clear_forced_faults()

        await retry_writeback(runtime, _command(channel.name, channel.seller_id, order_id))
        assert await fulfillment_feed.pending_count(runtime, channel.seller_id) == 1
        feed_id = await fulfillment_feed.run_feeds(runtime, channel)
        assert feed_id is not None
        sim.state.advance_clock(60)
        assert await fulfillment_feed.check_inflight(runtime, channel)
        (confirmed,) = runtime.payloads(SHIPMENTS_CONFIRMED.name)
        assert isinstance(confirmed, ShipmentConfirmed)
        assert confirmed.method == "feed"
        assert len(sim.state.truth_order(order_id)["shipments"]) == 1


async def test_a_package_failed_before_requests_were_kept_is_released_for_a_replay(
    make_runtime: Any,
) -> None:
    scenario = tiny_scenario(orders={"count": 1})
    with RunningSimulator(scenario) as sim:
        runtime = await make_runtime("shipment-write-back", scenario, sim)
        runtime.settings = runtime.settings.model_copy(
            update={"writeback": WriteBackSettings(mode="confirm", retry_backoff_s=0.01)}
        )
        channel = runtime.channels.channels[0]
        (truth,) = sim.state.truth_orders()
        order_id = truth["amazon_order_id"]
        request = _whole_order_package(channel.name, truth, tracking_number="1Z-OLD")
        envelope = Envelope.wrap(
            request, seller_id=channel.seller_id, marketplace_id=truth["marketplace_id"], correlation_id="c"
        )
        # What an earlier version left: a failed package, indexed, without its request.
        store = runtime.store
        await store.update_shipment_state(channel.seller_id, order_id, "1", status="Failed", attempts=5)
        await store.redis.sadd(store.key_of(keys.WRITEBACK_PACKAGES, channel.seller_id, order_id), "1")
        await handle(runtime, envelope)  # a replayed request: its result was published already
        assert runtime.emitted == []

        await retry_writeback(runtime, _command(channel.name, channel.seller_id, order_id))
        assert runtime.emitted == [], "nothing to send without the request"
        state = await store.shipment_state(channel.seller_id, order_id, "1")
        assert (state["status"], state["attempts"]) == ("Retrying", "0")

        await handle(runtime, envelope)  # the operator replays shipments.requested for the order
        (confirmed,) = runtime.payloads(SHIPMENTS_CONFIRMED.name)
        assert isinstance(confirmed, ShipmentConfirmed)
        assert confirmed.attempts == 1
        assert len(sim.state.truth_order(order_id)["shipments"]) == 1
