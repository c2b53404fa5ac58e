"""AWS clients from the settings tree: Amazon SQS, where Amazon sends its notifications; S3 and KMS,
where the keys of buyers' personal data are kept and wrapped.

Production reaches AWS (credentials from the settings, else the SDK's own chain: environment, profile,
the container's or instance's role); dev, tests and the demo reach the local server `ordersync dev up`
starts (``aws.endpoint_url``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from ordersync.settings import AwsSettings

#: What SQS answers for a queue that does not exist (the JSON protocol's and the query protocol's codes).
MISSING_QUEUE_CODES = frozenset({"QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue"})
#: A long poll waits up to 20 s for a message: reads must be allowed longer than that.
READ_TIMEOUT_S = 40


def client_arguments(aws: AwsSettings) -> dict[str, Any]:
    """The keyword arguments of ``create_client`` for ``aws`` (region, endpoint, credentials if set)."""
    arguments: dict[str, Any] = {
        "region_name": aws.region,
        "config": AioConfig(read_timeout=READ_TIMEOUT_S, retries={"max_attempts": 3, "mode": "standard"}),
    }
    if aws.endpoint_url:
        arguments["endpoint_url"] = aws.endpoint_url
    if aws.access_key_id is not None and aws.secret_access_key is not None:
        arguments["aws_access_key_id"] = aws.access_key_id.get_secret_value()
        arguments["aws_secret_access_key"] = aws.secret_access_key.get_secret_value()
    return arguments


@contextlib.asynccontextmanager
async def aws_client(aws: AwsSettings, service: str) -> AsyncIterator[Any]:
    """A client of an AWS service (aiobotocore: "sqs", "s3", "kms"), closed on exit."""
    arguments = client_arguments(aws)
    if service == "s3" and aws.endpoint_url:
        # A local server answers on one host: buckets in the path, not in the host name.
        arguments["config"] = arguments["config"].merge(AioConfig(s3={"addressing_style": "path"}))
    async with get_session().create_client(service, **arguments) as client:
        yield client


#: What S3 answers for an object or bucket that does not exist (GET, HEAD).
S3_MISSING_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "404", "NotFound"})


def s3_missing(exc: ClientError) -> bool:
    """Whether S3's ``exc`` says the object (or bucket) does not exist."""
    return str(exc.response.get("Error", {}).get("Code")) in S3_MISSING_CODES


async def ensure_bucket(s3: Any, bucket: str) -> None:
    """Create ``bucket`` with the S3 client ``s3`` unless it exists."""
    try:
        await s3.head_bucket(Bucket=bucket)
    except ClientError as exc:
        if not s3_missing(exc):
            raise
        await s3.create_bucket(Bucket=bucket)


@contextlib.asynccontextmanager
async def sqs_client(aws: AwsSettings) -> AsyncIterator[Any]:
    """An SQS client (aiobotocore), closed on exit."""
    async with aws_client(aws, "sqs") as client:
        yield client


def queue_name(queue_url: str) -> str:
    """The queue's name: the last part of its URL."""
    return queue_url.rstrip("/").rsplit("/", 1)[-1]


async def queue_arn(sqs: Any, queue_url: str) -> str:
    """The ARN of the queue at ``queue_url`` (what Amazon's notification destination names)."""
    answer = await sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
    return str(answer["Attributes"]["QueueArn"])


async def ensure_queue(aws: AwsSettings, name: str) -> tuple[str, str]:
    """The standard queue ``name``, created if it does not exist: its URL and ARN (what Amazon's
    notification destination names)."""
    url, arn, _ = await find_or_create_queue(aws, name)
    return url, arn


async def find_or_create_queue(aws: AwsSettings, name: str) -> tuple[str, str, bool]:
    """The standard queue ``name``'s URL and ARN, and whether it was created now."""
    async with sqs_client(aws) as sqs:
        try:
            url, created = str((await sqs.get_queue_url(QueueName=name))["QueueUrl"]), False
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in MISSING_QUEUE_CODES:
                raise
            url, created = str((await sqs.create_queue(QueueName=name))["QueueUrl"]), True
        return url, await queue_arn(sqs, url), created
