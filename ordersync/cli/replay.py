"""``ordersync replay`` and ``ordersync dlq list|show|replay``, over :mod:`ordersync.ops.replay`.

Exit status (:class:`ordersync.cli.common.ExitCode`): 0 done (also when nothing matched), 1 a record not
acknowledged, 2 refused as asked (bad filter or time, a target that does not accept the events), 3 an
unknown topic or stage, 4 Redis unreachable, 5 Kafka unreachable; nothing is sent when refused.
"""

from __future__ import annotations

import asyncio
import getpass
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import typer
from kafka.errors import KafkaError
from redis.exceptions import RedisError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ordersync.cli.common import ExitCode, cli_redis, fail, redis_described
from ordersync.errors import Retryable
from ordersync.kafka.reader import ProgressHook
from ordersync.ops.replay import (
    DeadLetter,
    DeadLetterQueueSummary,
    DeadLetterSelection,
    ReplayLedger,
    ReplayRejected,
    ReplayRequest,
    ReplaySummary,
    dead_letter_topics,
    parse_filters,
    parse_time,
    read_dead_letters,
    replay_dead_letters,
    replay_topic,
    select_dead_letters,
    summarize,
)
from ordersync.privacy.masking import mask_personal
from ordersync.settings import Settings, get_settings
from ordersync.state.store import Store

T = TypeVar("T")
out = Console(soft_wrap=True)  # long lines (JSON, errors) stay whole for copy and paste
err = Console(stderr=True)

dlq_app = typer.Typer(
    help="Dead letters: list them, show them, send them back to their source topic after a fix.",
    no_args_is_help=True,
)

FilterOption = Annotated[
    list[str] | None,
    typer.Option(
        "--filter",
        help="key=value, repeatable (all must match): an envelope field (seller_id, event_type, "
        "marketplace_id, correlation_id), a payload field anywhere in the event (channel, "
        "amazon_order_id, seller_sku...) or a dotted path (payload.order.order_status); * is a wildcard.",
    ),
]


@contextmanager
def _exit_codes() -> Iterator[None]:
    """Refusals exit 2 (an unknown topic or stage 3), Kafka or Redis unreachable 5 or 4, each with one
    clear line."""
    try:
        yield
    except ReplayRejected as exc:
        text = str(exc)
        unknown = "is not a catalogue topic" in text or "is neither a stage" in text
        raise fail(ExitCode.NOT_FOUND if unknown else ExitCode.USAGE, f"refused: {text}") from exc
    except (KafkaError, Retryable) as exc:
        settings = get_settings()
        raise fail(
            ExitCode.KAFKA, f"Kafka at {settings.kafka.bootstrap}: {type(exc).__name__}: {exc}"
        ) from exc
    except (RedisError, OSError) as exc:
        settings = get_settings()
        raise fail(ExitCode.REDIS, f"Redis at {redis_described(settings.redis)}: {exc}") from exc


@contextmanager
def _progress(description: str) -> Iterator[ProgressHook]:
    """A progress bar on stderr (stdout stays clean for --json and redirection)."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task(description, total=None)

        def update(done: int, total: int | None) -> None:
            progress.update(task, completed=done, total=total)

        yield update


def _with_store(settings: Settings, work: Callable[[Store], Any]) -> Any:
    async def run() -> Any:
        redis = cli_redis(settings)
        try:
            return await work(Store(redis, settings.redis.key_prefix))
        finally:
            await redis.aclose()

    return asyncio.run(run())


def replay_command(
    topic: Annotated[str, typer.Argument(help="A catalogue topic, e.g. shipments.requested.")],
    *,
    from_offset: Annotated[
        int | None, typer.Option("--from-offset", min=0, help="Start at this offset of each partition.")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(help="Only records written at or after TIME (ISO 8601, UTC if no zone; or 2h, 3d ago)."),
    ] = None,
    until: Annotated[str | None, typer.Option(help="Only records written before TIME.")] = None,
    partition: Annotated[int | None, typer.Option(min=0, help="Only this partition.")] = None,
    filters: FilterOption = None,
    to: Annotated[
        str | None,
        typer.Option(help="Publish to this catalogue topic (default: TOPIC itself, to be processed again)."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be sent; send nothing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Re-publish a topic's records so the consuming stage processes them again (idempotently).

    Key, value and headers are kept as they were; records are selected by offset, record time and
    fields, and read up to the end each partition had when the replay started."""
    settings = get_settings()
    with _exit_codes():
        now = datetime.now(UTC)
        request = ReplayRequest(
            topic=topic,
            to=to,
            from_offset=from_offset,
            since=parse_time(since, now=now) if since else None,
            until=parse_time(until, now=now) if until else None,
            partition=partition,
            filters=parse_filters(filters or ()),
            dry_run=dry_run,
        )
        with _progress(f"reading {topic}") as progress:
            summary = replay_topic(settings, request, progress=progress)
    if as_json:
        typer.echo(summary.model_dump_json(indent=2))
    else:
        _print_replay(summary)
    if summary.failed:
        err.print(
            f"[red]{summary.failed} record(s) not acknowledged by Kafka[/], first: "
            f"{escape(summary.first_error or '')}"
        )
        raise typer.Exit(1)


def _print_replay(summary: ReplaySummary) -> None:
    verb = "would send" if summary.dry_run else "sent"
    ranges = ", ".join(f"p{r.partition} {r.start}..{r.end}" for r in summary.ranges)
    out.print(f"read {summary.read} record(s) of {summary.source} ({ranges})")
    out.print(
        f"{summary.matched} matched; {verb} {summary.sent if not summary.dry_run else summary.matched}"
        f" to {summary.target}"
    )
    if summary.skipped_not_accepted:
        out.print(f"{summary.skipped_not_accepted} skipped: not an event {summary.target} accepts")
    if summary.by_event_type:
        table = Table("event type", "records")
        for event_type, count in sorted(summary.by_event_type.items()):
            table.add_row(event_type, str(count))
        out.print(table)
    if summary.sample_keys:
        out.print("first keys: " + ", ".join(summary.sample_keys), markup=False)


# --- dlq ------------------------------------------------------------------------------------------


def _letters(
    settings: Settings, selection: DeadLetterSelection, filters: list[str] | None
) -> list[DeadLetter]:
    parsed = parse_filters(filters or ())
    with _progress("reading dead letters") as progress:
        letters = read_dead_letters(settings.kafka, selection, filters=parsed, progress=progress)
        return sorted(letters, key=lambda d: (d.timestamp_ms, d.dlq_topic, d.partition, d.offset))


def _replayed_positions(settings: Settings, topics: tuple[str, ...]) -> dict[str, set[str]] | None:
    """Positions already sent back, per DLQ; None when Redis cannot be reached (shown as unknown)."""

    async def read(store: Store) -> dict[str, set[str]]:
        ledger = ReplayLedger(store)
        found: dict[str, set[str]] = {}
        for topic in topics:
            entries = await ledger.replayed(topic)
            found[topic] = {pos for pos, entry in entries.items() if entry.get("state") == "replayed"}
        return found

    try:
        result: dict[str, set[str]] = _with_store(settings, read)
    except (RedisError, OSError) as exc:
        err.print(f"[yellow]Redis not reachable, replayed state unknown:[/] {escape(str(exc))}")
        return None
    return result


def when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else "-"


@dlq_app.command("list")
def dlq_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Every dead-letter topic: letters, how many were replayed, oldest and newest, by error and stage."""
    settings = get_settings()
    topics = tuple(spec.name for spec in dead_letter_topics())
    with _exit_codes():
        letters = _letters(settings, DeadLetterSelection(topics=topics), None)
    replayed = _replayed_positions(settings, topics)
    summaries: list[DeadLetterQueueSummary] = [
        summarize(
            topic,
            [d for d in letters if d.dlq_topic == topic],
            None if replayed is None else replayed.get(topic, set()),
        )
        for topic in topics
    ]
    if as_json:
        typer.echo(json.dumps([s.model_dump(mode="json") for s in summaries], indent=2))
        return
    # One block per DLQ holding letters (fits any terminal width); the empty ones on one line.
    for s in summaries:
        if not s.letters:
            continue
        replayed_text = "replayed unknown" if s.replayed is None else f"{s.replayed} replayed"
        out.print(
            f"[bold]{s.topic}[/]: {s.letters} letter(s), {replayed_text}, "
            f"oldest {when(s.oldest)}, newest {when(s.newest)} (UTC)",
            highlight=False,
        )
        out.print(
            "  by error type: " + ", ".join(f"{k} {v}" for k, v in sorted(s.by_error_type.items())),
            markup=False,
        )
        out.print("  by stage: " + ", ".join(f"{k} {v}" for k, v in sorted(s.by_stage.items())), markup=False)
    empty = [s.topic for s in summaries if not s.letters]
    if empty:
        out.print(f"no dead letters in: {', '.join(empty)}", highlight=False)


def letter_json(dead: DeadLetter, replayed: set[str] | None, *, masked: bool) -> dict[str, Any]:
    letter = dead.letter
    text = original_text(dead, masked=masked)
    return {
        "dlq_topic": dead.dlq_topic,
        "partition": dead.partition,
        "offset": dead.offset,
        "key": dead.key,
        "replayed": None if replayed is None else dead.position in replayed,
        "problem": dead.problem,
        **(
            {
                "stage": letter.stage,
                "source_topic": letter.source_topic,
                "source_partition": letter.source_partition,
                "source_offset": letter.source_offset,
                "source_key": letter.source_key,
                "error_type": letter.error_type,
                "error": letter.error,
                "dead_lettered_at": letter.dead_lettered_at.isoformat(),
                "original": json.loads(text) if text and _is_json(text) else text,
                # Bytes cannot be masked field by field: withheld unless asked for unmasked.
                "original_b64": None if text is not None or masked else letter.original_value_b64,
            }
            if letter
            else {}
        ),
    }


def original_text(dead: DeadLetter, *, masked: bool) -> str | None:
    """The original's text; masked, its buyers' personal data hidden (text that is not JSON cannot be
    masked field by field: withheld)."""
    text = dead.original_text()
    if text is None or not masked:
        return text
    try:
        document = json.loads(text)
    except ValueError:
        return "(not JSON: withheld, it may hold personal data; --unmasked shows it)"
    return json.dumps(mask_personal(document), ensure_ascii=False)


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


@dlq_app.command("show")
def dlq_show(
    name: Annotated[str, typer.Argument(help="A stage (e.g. invoice-issued), a DLQ or its source topic.")],
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many (the oldest first).")] = 20,
    filters: FilterOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per line, original included.")
    ] = False,
    unmasked: Annotated[
        bool,
        typer.Option(
            "--unmasked",
            help="Show originals as they are; by default names, e-mails, phones and addresses are masked"
            " (a record from another system may carry them in the clear).",
        ),
    ] = False,
) -> None:
    """The dead letters, decoded: where they came from, the key, the error and the original event
    (buyers' personal data masked unless --unmasked)."""
    settings = get_settings()
    with _exit_codes():
        selection = select_dead_letters(name)
        letters = _letters(settings, selection, filters)
    replayed_by_topic = _replayed_positions(settings, selection.topics)
    shown = letters[:limit]
    for dead in shown:
        replayed = None if replayed_by_topic is None else replayed_by_topic.get(dead.dlq_topic, set())
        data = letter_json(dead, replayed, masked=not unmasked)
        if as_json:
            typer.echo(json.dumps(data))
            continue
        out.rule(f"{dead.dlq_topic} {dead.position}" + (" (replayed)" if data["replayed"] else ""))
        if dead.letter is None:
            out.print(f"[red]not a dead letter:[/] {escape(dead.problem or '')}")
            continue
        letter = dead.letter
        out.print(
            f"stage {letter.stage}, from {letter.source_topic}[{letter.source_partition}]"
            f"@{letter.source_offset}, key {letter.source_key}, at {when(letter.dead_lettered_at)}",
            markup=False,
        )
        out.print(f"[bold]{escape(letter.error_type)}[/]: {escape(letter.error)}", highlight=False)
        text = original_text(dead, masked=not unmasked)
        out.print(
            text if text is not None else f"(binary, {len(letter.original_value())} bytes)",
            markup=False,
            highlight=False,
        )
    if not as_json:
        more = len(letters) - len(shown)
        err.print(f"{len(shown)} shown" + (f", {more} more (--limit)" if more > 0 else ""))


@dlq_app.command("replay")
def dlq_replay(
    name: Annotated[str, typer.Argument(help="A stage (e.g. invoice-issued), a DLQ or its source topic.")],
    *,
    filters: FilterOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be sent; send nothing.")
    ] = False,
    again: Annotated[
        bool, typer.Option("--again", help="Also send letters that were replayed before.")
    ] = False,
    operator: Annotated[str | None, typer.Option(help="Who asks, for the record.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Send dead letters back to their source topic after the cause was fixed; each once.

    The original bytes and key go back to the partition they came from; a letter already sent back is
    skipped unless --again."""
    settings = get_settings()
    with _exit_codes():
        selection = select_dead_letters(name)
        letters = _letters(settings, selection, filters)

        async def run(store: Store) -> Any:
            return await replay_dead_letters(
                settings,
                letters,
                ReplayLedger(store),
                dry_run=dry_run,
                again=again,
                operator=operator or getpass.getuser(),
            )

        summary = _with_store(settings, run)
    if as_json:
        typer.echo(summary.model_dump_json(indent=2))
    else:
        verb = "would send" if dry_run else "sent"
        out.print(f"{len(letters)} dead letter(s) selected; {verb} {summary.to_send}")
        for source, count in sorted(summary.by_source.items()):
            out.print(f"  to {source}: {count}", markup=False)
        for event_type, count in sorted(summary.by_event_type.items()):
            out.print(f"  {event_type}: {count}", markup=False)
        for reason, count in sorted(summary.skipped.items()):
            out.print(
                f"  {count} skipped: {reason}"
                + (" (--again sends them)" if reason == "already replayed" else "")
            )
        if summary.sample_keys:
            out.print("first keys: " + ", ".join(summary.sample_keys), markup=False)
    if summary.failed:
        err.print(
            f"[red]{summary.failed} letter(s) not acknowledged by Kafka[/], first: "
            f"{escape(summary.first_error or '')}"
        )
        raise typer.Exit(1)
