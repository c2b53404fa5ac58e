"""Dashboard actions through the JSON API, on the embedded broker: orders of two channels become one
``ops.commands`` event each, as the CLI would publish them; with Kafka unreachable nothing is claimed
sent."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.testclient import TestClient

from ordersync.dashboard import create_app
from ordersync.schemas.events import OperatorCommandIssued
from ordersync.schemas.topics import OPS_COMMANDS
from tests.factories import (
    CHANNEL,
    OPERATOR_TOKEN,
    OTHER_CHANNEL,
    Orders,
    dashboard_settings,
    write_channels_file,
)
from tests.topics import read_all

pytestmark = pytest.mark.integration


def _retry_downloads(bootstrap: str, order_ids: set[str]) -> list[OperatorCommandIssued]:
    return [
        event
        for event in read_all(bootstrap, OPS_COMMANDS)
        if isinstance(event, OperatorCommandIssued)
        and event.command == "retry-download"
        and set(event.amazon_order_ids) & order_ids
    ]


@pytest.mark.usefixtures("topics")
def test_an_action_on_two_channels_sends_one_event_per_channel(
    filled: Orders, redis_url: str, redis_key_prefix: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = dashboard_settings(
        redis_url,
        redis_key_prefix,
        write_channels_file(tmp_path / "channels.yaml"),
        kafka_bootstrap=kafka_bootstrap,
    )
    acme = filled.import_failed[:2]
    other = filled.pending[:1]
    orders = [{"channel": CHANNEL, "amazon_order_id": o} for o in acme]
    orders += [{"channel": OTHER_CHANNEL, "amazon_order_id": o} for o in other]
    # The same order twice is sent once.
    orders.append({"channel": CHANNEL, "amazon_order_id": acme[0]})
    with TestClient(create_app(settings)) as client:
        answer = client.post(
            "/api/actions",
            json={"action": "retry-download", "orders": orders, "operator": "ana"},
            headers={"X-Operator-Token": OPERATOR_TOKEN},
        )
    assert answer.status_code == 200, answer.text
    published = {p["channel"]: p for p in answer.json()["published"]}
    assert published[CHANNEL]["amazon_order_ids"] == acme
    assert published[OTHER_CHANNEL]["amazon_order_ids"] == other

    events = _retry_downloads(kafka_bootstrap, {*acme, *other})
    assert sorted((e.channel, e.amazon_order_ids) for e in events) == [
        (CHANNEL, tuple(acme)),
        (OTHER_CHANNEL, tuple(other)),
    ]
    assert {e.operator for e in events} == {"dashboard:ana"}


def test_kafka_unreachable_is_reported_and_nothing_claimed_sent(
    filled: Orders, redis_url: str, redis_key_prefix: str, tmp_path: Path
) -> None:
    settings = dashboard_settings(
        redis_url,
        redis_key_prefix,
        write_channels_file(tmp_path / "channels.yaml"),
        kafka_bootstrap="127.0.0.1:1",  # nothing listens there
    )
    with TestClient(create_app(settings)) as client:
        answer = client.post(
            "/api/actions",
            json={
                "action": "ignore",
                "orders": [{"channel": CHANNEL, "amazon_order_id": filled.import_failed[0]}],
            },
            headers={"X-Operator-Token": OPERATOR_TOKEN},
        )
    assert answer.status_code == 503
    body = answer.json()
    assert body["published"] == []
    assert body["not_sent"] == [CHANNEL]
    assert "Kafka did not take the command" in body["error"]
