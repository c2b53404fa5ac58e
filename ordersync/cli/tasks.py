"""``ordersync tasks``: each periodic task's schedule and next run, and "Synchronize now"
(:mod:`ordersync.pipeline.schedule`)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ordersync.cli.common import (
    CLI_KAFKA_TIMEOUT_MS,
    ExitCode,
    channel_named,
    fail,
    when,
    with_read_model,
)
from ordersync.pipeline.schedule import every
from ordersync.settings import get_settings
from ordersync.state.readmodel import ReadModel
from ordersync.state.readmodel.rows import TaskRow

tasks_app = typer.Typer(help="Periodic tasks: schedules, next runs; run one now.", no_args_is_help=True)


@tasks_app.callback()
def _group() -> None:
    """The stages' periodic tasks (download, inventory, write-back ...): when each runs next, and
    asking one to run now."""


@tasks_app.command("list")
def tasks_list(
    channel: Annotated[str | None, typer.Option("--channel", "-c", help="Only this channel's tasks.")] = None,
) -> None:
    """Every task with its schedule, next run, last run and result, and the last run asked for now."""
    settings = get_settings()
    if channel is not None:
        channel_named(settings, channel)

    async def read(model: ReadModel) -> list[TaskRow]:
        return await model.tasks()

    rows = [
        row for row in with_read_model(settings, read) if channel is None or row.scope in (channel, "all")
    ]
    if not rows:
        typer.echo("no task has run yet")
        return
    table = Table(title="tasks", title_justify="left")
    for column in ("task", "scope", "every", "next run", "last run", "result", "run now asked"):
        table.add_column(column, overflow="fold")
    for row in rows:
        asked = f"{when(row.run_requested_at)} by {row.run_requested_by}" if row.run_requested_at else ""
        result = row.last_result or ""
        if row.last_error_at and (row.last_success is None or row.last_error_at > row.last_success):
            result = f"failed: {row.last_error}"
        table.add_row(
            row.task, row.scope, every(row.every_s), when(row.next_run), when(row.last_run), result, asked
        )
    Console().print(table)


@tasks_app.command("run")
def tasks_run(
    task: Annotated[str, typer.Argument(help="download, inventory, inventory-urgent or write-back.")],
    channel: Annotated[str, typer.Option("--channel", "-c", help="The channel to run it for.")],
    operator: Annotated[
        str | None, typer.Option("--operator", help="Who asks (default: your login).")
    ] = None,
) -> None:
    """Run a periodic task now for a channel instead of at its next scheduled run ("Synchronize now").
    The stage that owns the task wakes it; `tasks list` shows when it ran."""
    from kafka.errors import KafkaError

    from ordersync.pipeline.schedule import SCHEDULABLE, TaskRequestRejected, publish_task_request

    settings = get_settings()
    if task not in SCHEDULABLE:
        raise fail(
            ExitCode.NOT_FOUND, f"unknown task {task!r}; tasks that can run now: {', '.join(SCHEDULABLE)}"
        )
    channel_named(settings, channel)
    try:
        event_id = publish_task_request(
            settings,
            task,
            channel,
            operator=operator,
            wait_s=CLI_KAFKA_TIMEOUT_MS / 1000,
            client_id="ordersync-cli",
        )
    except TaskRequestRejected as exc:
        raise fail(ExitCode.USAGE, str(exc)) from exc
    except KafkaError as exc:
        raise fail(
            ExitCode.KAFKA,
            f"Kafka at {settings.kafka.bootstrap} cannot be reached ({type(exc).__name__}: {exc});"
            f" run of {task} not asked",
        ) from exc
    owner = SCHEDULABLE[task].stage
    typer.echo(f"{task} on {channel}: run asked of {owner} as event {event_id}")
