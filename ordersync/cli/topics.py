"""``ordersync topics``: create and list the catalogue's Kafka topics."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import typer
from kafka.errors import KafkaError

from ordersync.kafka.admin import TopicCreationError, create_topics, partitions_of, topic_partitions
from ordersync.schemas.topics import CATALOGUE
from ordersync.settings import Settings, get_settings

topics_app = typer.Typer(help="Create and list the catalogue's Kafka topics.", no_args_is_help=True)


@contextlib.contextmanager
def _exit_on_kafka_error(settings: Settings) -> Iterator[None]:
    """One line instead of a traceback: exit 5 when the cluster cannot be reached, 1 when it refuses."""
    from ordersync.cli.common import ExitCode, fail

    try:
        yield
    except TopicCreationError as exc:
        raise fail(ExitCode.FAILED, f"Kafka at {settings.kafka.bootstrap}: {exc}") from exc
    except KafkaError as exc:
        raise fail(
            ExitCode.KAFKA,
            f"Kafka at {settings.kafka.bootstrap} cannot be reached: {type(exc).__name__}: {exc}",
        ) from exc


@topics_app.command("create")
def create_command() -> None:
    """Create every catalogue topic that does not exist yet (safe to run again)."""
    settings = get_settings()
    with _exit_on_kafka_error(settings):
        created = set(create_topics(settings))
        partitions = topic_partitions(settings, [spec.name for spec in CATALOGUE])
    width = max(len(spec.name) for spec in CATALOGUE)
    for spec in CATALOGUE:
        wanted = partitions_of(spec, settings)
        has = partitions.get(spec.name)
        state = "created" if spec.name in created else "already there"
        note = f" (has {has} partitions, the catalogue says {wanted})" if has not in (None, wanted) else ""
        typer.echo(f"{spec.name:<{width}}  {state}{note}")
    typer.echo(
        f"{len(created)} created, {len(CATALOGUE) - len(created)} already there ({settings.kafka.bootstrap})"
    )


@topics_app.command("list")
def list_command() -> None:
    """List the cluster's topics with their partitions, and catalogue topics that are missing."""
    settings = get_settings()
    with _exit_on_kafka_error(settings):
        partitions = topic_partitions(settings)
    catalogued = {spec.name for spec in CATALOGUE}
    names = sorted(partitions.keys() | catalogued)
    width = max((len(name) for name in names), default=0)
    for name in names:
        if name not in partitions:
            typer.echo(f"{name:<{width}}  MISSING (run `ordersync topics create`)")
        else:
            origin = "" if name in catalogued else "  (not in the catalogue)"
            typer.echo(f"{name:<{width}}  {partitions[name]} partitions{origin}")
