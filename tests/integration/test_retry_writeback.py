"""`ordersync orders retry-writeback` end to end: a shipment Amazon fails on every attempt is parked on
the redrive tiers, tried again, and ends as ShipmentFailed at the redrive deadline; once Amazon is
healthy again, the operator's command (an ops.commands event carried out by the shipment-write-back
stage, its own process) sends it again: ShipmentConfirmed follows, the simulated Amazon holds the
package once, and a second command sends nothing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kafka import KafkaProducer

from ordersync.dev.demo import local_pipeline
from ordersync.redis_client import redis_client
from ordersync.schemas.codec import encode
from ordersync.schemas.envelope import Envelope
from ordersync.schemas.events import ShipmentConfirmed, ShipmentFailed, ShipmentItem, ShipmentRequested
from ordersync.schemas.topics import SHIPMENTS_CONFIRMED, SHIPMENTS_FAILED, SHIPMENTS_REQUESTED, order_key
from ordersync.settings import RedisSettings
from ordersync.simulator.testing import tiny_scenario
from ordersync.state.store import Store
from tests.topics import read_all, wait_for

pytestmark = pytest.mark.integration

MAX_ATTEMPTS = 2


def _task(redis_url: str, channel: str) -> dict[str, str]:
    async def read() -> dict[str, str]:
        redis = redis_client(RedisSettings(url=redis_url))
        try:
            return await Store(redis).task("retry-writeback", channel)
        finally:
            await redis.aclose()

    return asyncio.run(read())


def test_retry_writeback_confirms_a_failed_shipment_once(tmp_path: Path) -> None:
    scenario = tiny_scenario(orders={"count": 1, "history_s": 3600}, time_scale=60, start=None)
    with local_pipeline(
        scenario=scenario,
        run_dir=tmp_path / "run",
        stages=("shipment-write-back",),
        backoffice=False,
        extra_env={
            "ORDERSYNC_WRITEBACK__MODE": "confirm",
            "ORDERSYNC_WRITEBACK__MAX_ATTEMPTS": str(MAX_ATTEMPTS),
            "ORDERSYNC_WRITEBACK__RETRY_BACKOFF_S": "0.1",
            # The first redrive (1 minute of the simulator's time later) is the last try.
            "ORDERSYNC_REDRIVE__DEADLINE_S": "1",
        },
    ) as pipeline:
        assert pipeline.simulator is not None
        sim = pipeline.simulator.state
        bootstrap = pipeline.env["ORDERSYNC_KAFKA__BOOTSTRAP"]
        channel = pipeline.channel_names()[0]
        (truth,) = sim.truth_orders()
        order_id = truth["amazon_order_id"]
        seller = truth["seller_id"]
        assert truth["status"] == "Unshipped"

        # Amazon answers 500 to every attempt the stage makes, in line and on the redrive.
        sim.force_fault({"fault": "500", "operation": "confirmShipment", "count": 2 * MAX_ATTEMPTS})
        request = ShipmentRequested(
            channel=channel,
            amazon_order_id=order_id,
            package_reference_id="1",
            carrier_code="UPS",
            tracking_number="1Z-RETRY-WB",
            ship_date=datetime.now(UTC),
            items=tuple(
                ShipmentItem(order_item_id=i["order_item_id"], quantity=i["quantity_ordered"])
                for i in truth["items"]
            ),
            source="warehouse",
        )
        envelope = Envelope.wrap(
            request, seller_id=seller, marketplace_id=truth["marketplace_id"], correlation_id="wh-1"
        )
        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
        producer.send(
            SHIPMENTS_REQUESTED.name, key=order_key(seller, order_id).encode(), value=encode(envelope)
        ).get(timeout=30)
        producer.close()

        wait_for(lambda: read_all(bootstrap, SHIPMENTS_FAILED), timeout_s=90)
        (failed,) = read_all(bootstrap, SHIPMENTS_FAILED)
        assert isinstance(failed, ShipmentFailed)
        assert failed.attempts == 2 * MAX_ATTEMPTS
        assert sim.truth_order(order_id)["shipments"] == []

        # The outage is over (the forced faults are spent): the operator retries the write-back.
        assert "sent as event" in pipeline.cli("orders", "retry-writeback", "--channel", channel, order_id)
        wait_for(lambda: read_all(bootstrap, SHIPMENTS_CONFIRMED), timeout_s=90)
        (confirmed,) = read_all(bootstrap, SHIPMENTS_CONFIRMED)
        assert isinstance(confirmed, ShipmentConfirmed)
        assert confirmed.amazon_order_id == order_id
        assert confirmed.package_reference_id == "1"
        assert confirmed.method == "confirmShipment"
        assert confirmed.attempts == 1
        shipments = sim.truth_order(order_id)["shipments"]
        assert len(shipments) == 1

        # Asked again: the stage records the command (task health) and sends nothing.
        redis_url = pipeline.env["ORDERSYNC_REDIS__URL"]
        first_run = _task(redis_url, channel)["last_run"]
        pipeline.cli("orders", "retry-writeback", "--channel", channel, order_id)
        wait_for(lambda: _task(redis_url, channel)["last_run"] != first_run, timeout_s=90)
        assert _task(redis_url, channel)["last_result"] == (
            f"0 package(s) sent again for 1 order(s); {order_id} nothing sent again: no package of it failed"
        )
        assert len(read_all(bootstrap, SHIPMENTS_CONFIRMED)) == 1
        assert len(read_all(bootstrap, SHIPMENTS_FAILED)) == 1
        assert sim.truth_order(order_id)["shipments"] == shipments
        calls = sim.counters_json()["sellers"][seller]["confirmShipment"]["calls"]
        assert calls == 2 * MAX_ATTEMPTS + 1

        rejected = pipeline.cli_result("orders", "retry-writeback", "--channel", "no-such-channel", order_id)
        assert rejected.returncode == 3  # an unknown name (ordersync.cli.common.ExitCode)
