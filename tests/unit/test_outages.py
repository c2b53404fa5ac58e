"""What counts as an outage (kept and tried again) rather than a fault of the work, and the log line
an outage repeats, written once a minute."""

from __future__ import annotations

import logging

import pytest
from aiokafka import errors as kafka_errors
from pydantic import SecretStr
from redis import exceptions as redis_errors

from ordersync.errors import AmazonRejected, InvalidEvent, Permanent, QuotaUnavailable, Retryable, is_outage
from ordersync.kafka.reader import ReadStalled
from ordersync.logs import MASK, EveryInterval, RepeatedClientLines, redact, remember_secrets

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
        ReadStalled("no progress for 60s reading pipeline.redrive.1[0]; is the broker up?"),
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


def test_the_kafka_clients_reconnect_noise_passes_once_a_minute() -> None:
    now = [0.0]
    noise = RepeatedClientLines(60.0, clock=lambda: now[0])

    def line(name: str, msg: str, level: int = logging.ERROR) -> logging.LogRecord:
        return logging.LogRecord(name, level, __file__, 1, msg, ("127.0.0.1:9092",), None)

    assert noise.filter(line("aiokafka.conn", "Unable connect to %s"))
    assert not any(noise.filter(line("aiokafka.conn", "Unable connect to %s")) for _ in range(56))
    assert noise.filter(line("ordersync.pipeline.runtime", "stalled"))  # our own lines always pass
    assert noise.filter(line("aiokafka.conn", "connected", logging.INFO))  # below warnings: untouched
    now[0] = 60.0
    again = line("aiokafka.conn", "Unable connect to %s")
    assert noise.filter(again)
    assert again.getMessage() == "Unable connect to 127.0.0.1:9092 (56 more like this held back)"


def test_a_remembered_secret_is_masked_whatever_it_is_called() -> None:
    channel_token = "Atzr|not-really-but-" + "x" * 20
    remember_secrets({"credentials": SecretStr("s3cr3t-client-value")}, (SecretStr(channel_token),))
    line = "GET /orders?t=s3cr3t-client-value&x=1 failed; header=" + channel_token
    assert redact(line) == f"GET /orders?t={MASK}&x=1 failed; header={MASK}"
