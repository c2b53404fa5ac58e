"""``ordersync audit``: the audit trail (:mod:`ordersync.ops.audit`), newest first, with the audit page's
filters; and how the CLI's own changes are audited (:func:`record_cli_entry`)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Annotated

import typer

from ordersync.cli.common import ExitCode, cli_actor, cli_redis, fail, one_line, parse_time
from ordersync.ops.audit import (
    OUTCOMES,
    AuditFilter,
    AuditLog,
    AuditPage,
    AuditSink,
    KafkaAuditSink,
    flush,
    new_entry,
)
from ordersync.settings import Settings, get_settings

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from ordersync.schemas.events import AuditOutcome, AuditRecorded

audit_app = typer.Typer(help="The audit trail: who did what, when, and how it ended.")


@audit_app.callback(no_args_is_help=True)
def _group() -> None:
    """The audit trail of the dashboard and the CLI: actions, account changes, sign-ins and sign-outs.
    Redis keeps the newest entries (``dashboard.audit_kept``); ``ops.audit`` on Kafka keeps them all."""


def cli_sink(settings: Settings) -> AuditSink:
    """Where the CLI sends its audit entries: ``ops.audit``, with the CLI's bounded Kafka waits."""
    from ordersync.cli.common import CLI_KAFKA_TIMEOUT_MS

    return KafkaAuditSink(settings, timeout_ms=CLI_KAFKA_TIMEOUT_MS)


async def record_cli_entry(
    settings: Settings,
    redis: aioredis.Redis,
    action: str,
    outcome: AuditOutcome,
    *,
    targets: Iterable[str] = (),
    reason: str = "",
    detail: str = "",
) -> None:
    """Audit a command's change: into Redis (the stream and the outbox), then at once to Kafka. When
    Kafka does not take it, a warning says so and the entry waits in Redis for the dashboard to send
    it; the command's own outcome stands."""
    from ordersync.clock import SYSTEM_CLOCK

    trail = AuditLog(redis, settings.redis.key_prefix, kept=settings.dashboard.audit_kept)
    entry = new_entry(
        actor=cli_actor(),
        via="cli",
        action=action,
        outcome=outcome,
        at=SYSTEM_CLOCK.now(),
        targets=targets,
        reason=reason,
        detail=detail,
    )
    if not await trail.record(entry):
        typer.echo("warning: Redis did not take the audit entry; it is in the log only", err=True)
        return
    sink = cli_sink(settings)
    try:
        await flush(trail, sink)
    except Exception as exc:  # Kafka unreachable or refusing: the entry waits in the outbox
        typer.echo(
            f"warning: Kafka did not take the audit entry ({one_line(str(exc) or type(exc).__name__, 200)});"
            " it is kept in Redis and the dashboard sends it to ops.audit once Kafka answers",
            err=True,
        )
    finally:
        sink.close()


def entry_line(entry: AuditRecorded) -> str:
    """One entry as ``audit list`` prints it."""
    who = f"{entry.actor} ({entry.role})" if entry.role else entry.actor
    shown = ", ".join(entry.targets[:3]) + (
        f" and {len(entry.targets) - 3} more" if len(entry.targets) > 3 else ""
    )
    words = "; ".join(part for part in (entry.reason, entry.detail) if part)
    at = entry.at.strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"{at}  {who}  {entry.via}  {entry.action}  {entry.outcome}  {shown}" + (
        f"  ({words})" if words else ""
    )


@audit_app.command("list")
def audit_list(
    *,
    user: Annotated[
        str | None, typer.Option("--user", help="Only this actor (a user name, api-token...).")
    ] = None,
    action: Annotated[
        str | None, typer.Option("--action", help="An action (order.ignore) or its family (order, user...).")
    ] = None,
    outcome: Annotated[str | None, typer.Option("--outcome", help=f"One of {', '.join(OUTCOMES)}.")] = None,
    since: Annotated[str | None, typer.Option("--since", help="From (ISO date or date-time, UTC).")] = None,
    until: Annotated[str | None, typer.Option("--until", help="Before (ISO date or date-time, UTC).")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000, help="At most this many.")] = 50,
    older: Annotated[
        str | None,
        typer.Option("--older", help="Entries older than this id (the last line's, for the next page)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per entry, with its id.")] = False,
) -> None:
    """The newest audit entries, filtered, newest first."""
    if outcome is not None and outcome not in OUTCOMES:
        raise fail(ExitCode.USAGE, f"--outcome {outcome!r}: one of {', '.join(OUTCOMES)}")
    if older is not None and not re.fullmatch(r"\d{1,20}-\d{1,20}", older):
        raise fail(ExitCode.USAGE, f"--older {older[:40]!r}: an entry's id, as listed (1732530000000-0)")
    start, end = parse_time(since, "--since"), parse_time(until, "--until")
    if start is not None and end is not None and start >= end:
        raise fail(ExitCode.USAGE, "--since must come before --until")
    chosen = AuditFilter(actor=user, action=action, outcome=outcome, since=start, until=end)
    settings = get_settings()

    async def read() -> AuditPage:
        redis = cli_redis(settings)
        try:
            trail = AuditLog(redis, settings.redis.key_prefix, kept=settings.dashboard.audit_kept)
            return await trail.page(chosen, older_than=older, limit=limit)
        finally:
            await redis.aclose()

    page = asyncio.run(read())
    if not page.entries and not as_json:
        typer.echo("no audit entry matches")
        return
    for stream_id, entry in page.entries:
        if as_json:
            typer.echo(json.dumps({"id": stream_id, **entry.model_dump(mode="json")}, ensure_ascii=False))
        else:
            typer.echo(f"{stream_id}  {entry_line(entry)}")
    if page.older and not as_json:
        typer.echo(f"(more: --older {page.older})", err=True)
