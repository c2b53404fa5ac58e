"""What counts as an outage (kept and tried again) rather than a fault of the work, and the log line
an outage repeats, written once a minute."""

from __future__ import annotations

import pytest
from aiokafka import errors as kafka_errors
from redis import exceptions as redis_errors

from ordersync.errors import AmazonRejected, InvalidEvent, Permanent, QuotaUnavailable, Retryable, is_outage
from ordersync.logs import EveryInterval

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "error",
    [
        redis_errors.ConnectionError("refused"),
        redis_errors.BusyLoadingError("loading the AOF"),
        redis_errors.TimeoutError("timed out"),
        redis_errors.ReadOnlyError("You can't write against a read only replica."),
        kafka_errors.KafkaConnectionError("no broker"),
        kafka_errors.KafkaTimeoutError(),
        kafka_errors.NotLeaderForPartitionError(),
        ConnectionRefusedError(),
        QuotaUnavailable("the limiter fails closed"),
    ],
)
def test_outages(error: BaseException) -> None:
    assert is_outage(error)


@pytest.mark.parametrize(
    "error",
    [
        redis_errors.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
        kafka_errors.MessageSizeTooLargeError(),
        InvalidEvent("not JSON"),
        Permanent("unknown stock code"),
        Retryable("Amazon answered 503 eight times"),
        AmazonRejected("confirmShipment", 400, "InvalidInput", "bad"),
        RecursionError(),
        KeyError("x"),
    ],
)
def test_faults_of_the_work_are_not_outages(error: BaseException) -> None:
    assert not is_outage(error)


def test_a_repeated_line_is_let_through_once_per_interval_with_the_count_held_back() -> None:
    now = [0.0]
    every = EveryInterval(60.0, clock=lambda: now[0])
    assert every.due("redis") == 0
    assert every.due("redis") is None
    assert every.due("kafka") == 0  # keys are independent
    now[0] = 30.0
    assert every.due("redis") is None
    now[0] = 60.0
    assert every.due("redis") == 2
    every.forget("redis")
    assert every.due("redis") == 0
