"""Operator actions on orders, published as events on ``ops.commands`` (from the CLI, later the
dashboard), so the stage that owns the action carries it out, at least once and idempotently."""

from __future__ import annotations

import getpass
from collections.abc import Mapping, Sequence

from kafka import KafkaProducer
from pydantic import ValidationError

from ordersync.channels import ChannelsFile
from ordersync.errors import ConfigurationError, Permanent
from ordersync.kafka.admin import bounded_producer_config
from ordersync.schemas.codec import encode
from ordersync.schemas.envelope import Envelope
from ordersync.schemas.events import OperatorCommand, OperatorCommandIssued
from ordersync.schemas.topics import OPS_COMMANDS
from ordersync.settings import Settings

#: The longest a command's outcome is written in its task health.
MAX_OUTCOME_CHARS = 2000


def outcome_detail(headline: str, exceptions: Mapping[str, str]) -> str:
    """A multi-order command's result as its task health shows it: ``headline`` (how many orders went
    through), then each order that did not, with its own outcome (Amazon's words where Amazon refused)."""
    parts = [headline, *(f"{order_id} {outcome}" for order_id, outcome in exceptions.items())]
    return "; ".join(parts)[:MAX_OUTCOME_CHARS]


class CommandRejected(Permanent):
    """The command is not valid (unknown channel, malformed order id); nothing was sent."""


def build_command(
    channels: ChannelsFile,
    command: OperatorCommand,
    channel: str,
    order_ids: Sequence[str],
    operator: str | None,
) -> Envelope[OperatorCommandIssued]:
    """The command, for a channel of ``channels`` (the file's and the registry's)."""
    try:
        seller = channels.by_name(channel).seller_id
        event = OperatorCommandIssued(
            command=command,
            channel=channel,
            amazon_order_ids=tuple(order_ids),
            operator=operator or getpass.getuser(),
        )
    except (ConfigurationError, ValidationError) as exc:
        raise CommandRejected(str(exc)) from exc
    return Envelope.wrap(event, seller_id=seller, correlation_id=f"{command}:{channel}")


def publish_command(
    settings: Settings,
    channels: ChannelsFile,
    command: OperatorCommand,
    channel: str,
    order_ids: Sequence[str],
    *,
    operator: str | None = None,
    wait_s: float = 10.0,
) -> str:
    """Validate and publish one command; returns its event id once Kafka has acknowledged it, raises
    ``KafkaError`` within about ``wait_s`` when Kafka is down. Blocking: run it in a thread."""
    envelope = build_command(channels, command, channel, order_ids, operator)
    producer = KafkaProducer(
        acks="all", **bounded_producer_config(settings.kafka, wait_s, client_id="ordersync-commands")
    )
    try:
        producer.send(OPS_COMMANDS.name, key=channel.encode(), value=encode(envelope)).get(timeout=wait_s)
    finally:
        producer.close(timeout=2)
    return str(envelope.event_id)
