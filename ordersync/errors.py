"""The one error hierarchy the pipeline acts on.

Every failure a stage can meet is one of three kinds, and the kind alone decides what happens:

- :class:`Throttled`: Amazon (or our own quota) says "not now". Wait and try again; never counts as a
  failed attempt.
- :class:`Retryable`: a transient fault (timeout, 5xx, Redis unreachable). Try again with backoff; counts
  as an attempt where attempts are limited (shipment write-back).
- :class:`Permanent`: retrying the same input cannot succeed (Amazon's 4xx, an invalid event, an unknown
  stock code). Record the reason, route it (dead-letter topic or a failure event) and move on.
"""

from __future__ import annotations

from aiokafka import errors as kafka_errors
from botocore import exceptions as aws_errors
from redis import exceptions as redis_errors


class PipelineError(Exception):
    """Base of every error a stage routes by kind."""

    kind: str = "error"


class Throttled(PipelineError):
    """Wait ``retry_after_s`` and try again; not a failed attempt."""

    kind = "throttled"

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Retryable(PipelineError):
    """A transient fault: try again with backoff."""

    kind = "retryable"


class Permanent(PipelineError):
    """Retrying the same input cannot succeed."""

    kind = "permanent"


class AmazonApiError(PipelineError):
    """What Amazon answered: operation, HTTP status, Amazon's error code and message, request id."""

    def __init__(
        self,
        operation: str,
        status: int | None,
        code: str,
        message: str,
        request_id: str | None = None,
    ) -> None:
        super().__init__(f"{operation}: {status or 'no response'} {code}: {message}")
        self.operation = operation
        self.status = status
        self.code = code
        self.amazon_message = message
        self.request_id = request_id


class AmazonThrottled(AmazonApiError, Throttled):
    """HTTP 429 QuotaExceeded."""

    def __init__(
        self,
        operation: str,
        status: int | None,
        code: str,
        message: str,
        request_id: str | None = None,
        *,
        retry_after_s: float = 1.0,
    ) -> None:
        AmazonApiError.__init__(self, operation, status, code, message, request_id)
        self.retry_after_s = retry_after_s


class AmazonUnavailable(AmazonApiError, Retryable):
    """5xx, a timeout or a dropped connection: the outcome is unknown or transient."""


class AmazonRejected(AmazonApiError, Permanent):
    """4xx other than 429: Amazon refused the request as sent."""


class QuotaUnavailable(Retryable):
    """The rate limiter cannot decide (Redis unreachable): fail closed, send nothing."""


class QuotaTimeout(Throttled):
    """No token within the caller's timeout."""


class InvalidEvent(Permanent):
    """An input event that does not parse or validate; it goes to the topic's dead-letter companion."""


class ConfigurationError(Permanent):
    """Settings or the channels file are wrong; the message says where."""


class UnknownChannel(ConfigurationError):
    """No channel of that name, seller or marketplace: a stage following the channel registry looks again
    before it gives up (a channel just added reaches every stage within seconds)."""


class PersonalDataExpired(Permanent):
    """The key that sealed a buyer's personal data was destroyed (30 days after delivery, or the order
    came from Amazon after that): the data is gone by design. A stage goes on without it."""


class PersonalDataErased(PersonalDataExpired):
    """The buyer's personal data was erased on request (``ordersync privacy erase``) before its key's
    time: ordersync never opens or keeps it again, as if its key were gone."""


class LeaseLost(PipelineError):
    """Another worker took this channel's polling over (ours had stopped renewing): stop the round."""


class StateLost(PipelineError):
    """Redis lost a stage's state (restarted empty) while a record was being handled: an outage, so the
    record is tried again once the state is rebuilt from Kafka."""


class Unreachable(Retryable):
    """A server made no progress for a while (a Kafka read no partition of which moved): an outage."""


#: Redis cannot be reached, or refuses writes for a while (loading its append-only file after a
#: restart, a replica promoted by a failover, a cluster resharding).
_REDIS_OUTAGES = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.ReadOnlyError,
    redis_errors.ClusterDownError,
    redis_errors.TryAgainError,
)


#: AWS (the SQS queue of Amazon's notifications) cannot be reached, or the connection broke.
_AWS_OUTAGES = (aws_errors.ConnectionError, aws_errors.HTTPClientError)


def is_outage(error: BaseException) -> bool:
    """Whether ``error`` says Redis, the broker or the network is down rather than that the work is
    wrong: the work is kept and tried again once they answer, never dead-lettered. The rate limiter
    failing closed (:class:`QuotaUnavailable`) is one, and Redis found empty (:class:`StateLost`)."""
    if isinstance(error, (QuotaUnavailable, StateLost, Unreachable, OSError, *_REDIS_OUTAGES, *_AWS_OUTAGES)):
        return True
    if isinstance(error, kafka_errors.KafkaError):
        return bool(error.retriable) or isinstance(
            error, (kafka_errors.KafkaConnectionError, kafka_errors.KafkaTimeoutError)
        )
    return False
