"""The dashboard's dead-letter page: every dead letter of every stage, by stage and reason, decoded with
the buyer's personal data masked; an operator replays letters (their originals go back to their source
topic, each once) or resolves them with a note, and the page says who did what, when.

Dead letters are read from their topics; what operators did is itself a topic
(``ops.dead-letter-actions``, the latest per letter wins), so nothing of it lives only in Redis. A
replay also goes through the replay ledger in Redis, as ``ordersync dlq replay`` does, so a letter is
never sent twice by two operators at once; replays made from the command line show there too.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from ordersync.clock import Clock
from ordersync.kafka.reader import read_topic
from ordersync.ops.replay import (
    DeadLetter,
    DeadLetterReplaySummary,
    DeadLetterSelection,
    Publisher,
    ReplayLedger,
    dead_letter_topics,
    read_dead_letters,
    replay_dead_letters,
    source_of,
)
from ordersync.privacy.masking import mask_personal
from ordersync.schemas.codec import decode, encode
from ordersync.schemas.envelope import Envelope
from ordersync.schemas.events import DeadLetterHandled, record_id
from ordersync.schemas.topics import OPS_DEAD_LETTER_ACTIONS
from ordersync.settings import Settings
from ordersync.state.store import Store

#: Letters listed on the page (newest first); the summary counts every letter.
SHOWN_LETTERS = 200
MAX_ORIGINAL_CHARS = 20_000
LetterState = Literal["open", "replayed", "resolved"]


def original_shown(dead: DeadLetter) -> str:
    """The original record for people: pretty JSON with personal data masked, or why it cannot be."""
    letter = dead.letter
    if letter is None:
        return f"(the dead letter itself is unreadable: {dead.problem})"
    if letter.original_size_bytes is not None:
        return (
            f"({letter.original_size_bytes} bytes, too large to copy: read it at {letter.source_topic}"
            f" partition {letter.source_partition} offset {letter.source_offset})"
        )
    text = dead.original_text()
    if text is None:
        return "(not text)"
    try:
        document = json.loads(text)
    except ValueError:
        return "(not JSON; not shown, it may hold personal data)"
    shown = json.dumps(mask_personal(document), indent=2, ensure_ascii=False, default=str)
    return shown if len(shown) <= MAX_ORIGINAL_CHARS else shown[:MAX_ORIGINAL_CHARS] + "\n…"


class Handling(BaseModel):
    model_config = ConfigDict(frozen=True)

    state: LetterState
    operator: str | None = None
    at: datetime | None = None
    note: str = ""


class LetterRow(BaseModel):
    """One dead letter as the page and the API show it."""

    model_config = ConfigDict(frozen=True)

    id: str
    dlq_topic: str
    partition: int
    offset: int
    dead_lettered_at: datetime
    stage: str
    source_topic: str
    key: str | None
    error_type: str
    error: str
    original: str
    handling: Handling


class ReasonGroup(BaseModel):
    model_config = ConfigDict(frozen=True)

    stage: str
    source_topic: str
    error_type: str
    open: int
    handled: int


class DeadLetterBoard(BaseModel):
    model_config = ConfigDict(frozen=True)

    total: int
    open: int
    groups: tuple[ReasonGroup, ...]
    letters: tuple[LetterRow, ...]
    stages: tuple[str, ...]


class LetterFilter(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    stage: str | None = None
    source_topic: str | None = None
    error_type: str | None = None
    state: Literal["open", "all"] = "open"


def handlings(settings: Settings) -> dict[str, Handling]:
    """What operators did with each letter, from ``ops.dead-letter-actions`` (the latest wins)."""
    found: dict[str, Handling] = {}
    for record in read_topic(settings.kafka, OPS_DEAD_LETTER_ACTIONS.name, skip_missing=True):
        try:
            handled = decode(record.value, OPS_DEAD_LETTER_ACTIONS).payload_as(DeadLetterHandled)
        except (ValueError, TypeError, ValidationError):
            continue  # only ordersync writes it; an unreadable record says nothing about a letter
        found[handled.letter_id] = Handling(
            state=handled.action, operator=handled.operator, at=handled.handled_at, note=handled.note
        )
    return found


def _replayed_by_ledger(ledger: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> dict[str, Handling]:
    """Replays the ledger knows of (the command line's among them), by letter id."""
    found: dict[str, Handling] = {}
    for topic, positions in ledger.items():
        for position, entry in positions.items():
            if entry.get("state") != "replayed":
                continue
            partition, offset = position.split(":", 1)
            at = entry.get("at")
            found[record_id(topic, int(partition), int(offset))] = Handling(
                state="replayed",
                operator=entry.get("operator") or None,
                at=datetime.fromisoformat(at) if isinstance(at, str) else None,
            )
    return found


def all_dead_letters(settings: Settings) -> list[DeadLetter]:
    topics = tuple(spec.name for spec in dead_letter_topics())
    return list(read_dead_letters(settings.kafka, DeadLetterSelection(topics=topics)))


def build_board(
    letters: Sequence[DeadLetter],
    handled: Mapping[str, Handling],
    chosen: LetterFilter,
    *,
    shown: int = SHOWN_LETTERS,
) -> DeadLetterBoard:
    """The page's content: a count per stage, source topic and error type; the letters ``chosen``
    selects, newest first."""
    groups: Counter[tuple[str, str, str, bool]] = Counter()
    rows: list[LetterRow] = []
    for dead in letters:
        row = _row(dead, handled.get(record_id(dead.dlq_topic, dead.partition, dead.offset)))
        groups[(row.stage, row.source_topic, row.error_type, row.handling.state == "open")] += 1
        if _chosen(row, chosen):
            rows.append(row)
    rows.sort(key=lambda r: r.dead_lettered_at, reverse=True)
    reasons = sorted({(stage, topic, kind) for stage, topic, kind, _ in groups})
    return DeadLetterBoard(
        total=sum(groups.values()),
        open=sum(n for (_, _, _, is_open), n in groups.items() if is_open),
        groups=tuple(
            ReasonGroup(
                stage=stage,
                source_topic=topic,
                error_type=kind,
                open=groups[(stage, topic, kind, True)],
                handled=groups[(stage, topic, kind, False)],
            )
            for stage, topic, kind in reasons
        ),
        letters=tuple(rows[:shown]),
        stages=tuple(sorted({stage for stage, _, _ in reasons})),
    )


def _row(dead: DeadLetter, handling: Handling | None) -> LetterRow:
    letter = dead.letter
    return LetterRow(
        id=record_id(dead.dlq_topic, dead.partition, dead.offset),
        dlq_topic=dead.dlq_topic,
        partition=dead.partition,
        offset=dead.offset,
        dead_lettered_at=letter.dead_lettered_at
        if letter
        else datetime.fromtimestamp(dead.timestamp_ms / 1000, UTC),
        stage=letter.stage if letter else "(unreadable)",
        source_topic=letter.source_topic if letter else dead.dlq_topic.removesuffix(".dlq"),
        key=letter.source_key if letter else dead.key,
        error_type=letter.error_type if letter else "(unreadable)",
        error=letter.error if letter else dead.problem or "",
        original=original_shown(dead),
        handling=handling or Handling(state="open"),
    )


def _chosen(row: LetterRow, chosen: LetterFilter) -> bool:
    return (
        (chosen.state == "all" or row.handling.state == "open")
        and (chosen.stage is None or row.stage == chosen.stage)
        and (chosen.source_topic is None or row.source_topic == chosen.source_topic)
        and (chosen.error_type is None or row.error_type == chosen.error_type)
    )


# --- actions -------------------------------------------------------------------------------------


class LetterRef(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    topic: Annotated[str, Field(min_length=1, max_length=249)]
    partition: Annotated[int, Field(ge=0)]
    offset: Annotated[int, Field(ge=0)]

    @property
    def id(self) -> str:
        return record_id(self.topic, self.partition, self.offset)


class LetterAction(BaseModel):
    """The body of ``POST /api/dead-letters/actions``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    action: Literal["replay", "resolve"]
    letters: Annotated[tuple[LetterRef, ...], Field(min_length=1, max_length=1000)]
    #: Who does it: required, it is what the page shows beside the letter.
    operator: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[\w .@+-]+$")]
    note: Annotated[str, Field(max_length=500)] = ""


class ActionProblem(ValueError):
    """The action cannot be carried out as asked; nothing was done."""


def parse_letter_action(body: Any) -> LetterAction:
    try:
        action = LetterAction.model_validate(body)
    except ValidationError as exc:
        raise ActionProblem(
            "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors())
        ) from None
    if action.action == "resolve" and not action.note.strip():
        raise ActionProblem("note: say why the letters need nothing more (it is kept with them)")
    dlqs = {spec.name for spec in dead_letter_topics()}
    unknown = sorted({ref.topic for ref in action.letters if ref.topic not in dlqs})
    if unknown:
        raise ActionProblem(f"not dead-letter topics: {', '.join(unknown)}")
    return action


class ActionOutcome(BaseModel):
    model_config = ConfigDict(frozen=True)

    action: Literal["replay", "resolve"]
    asked: int
    done: int
    missing: tuple[str, ...]
    replay: DeadLetterReplaySummary | None = None


def pick(letters: Iterable[DeadLetter], refs: Sequence[LetterRef]) -> tuple[list[DeadLetter], list[str]]:
    """The letters ``refs`` name, and the ids of those not found."""
    wanted = {ref.id for ref in refs}
    found = [d for d in letters if record_id(d.dlq_topic, d.partition, d.offset) in wanted]
    seen = {record_id(d.dlq_topic, d.partition, d.offset) for d in found}
    return found, sorted(wanted - seen)


def handled_records(
    letters: Iterable[DeadLetter], action: LetterAction, clock: Clock
) -> list[tuple[str, bytes]]:
    """The ``ops.dead-letter-actions`` records (key, value) saying ``action`` was done to ``letters``."""
    records = []
    for dead in letters:
        handled = DeadLetterHandled(
            dlq_topic=dead.dlq_topic,
            dlq_partition=dead.partition,
            dlq_offset=dead.offset,
            action="replayed" if action.action == "replay" else "resolved",
            operator=action.operator,
            note=action.note.strip(),
            handled_at=clock.now(),
        )
        seller = (dead.letter.source_key or "").split(":", 1)[0] if dead.letter else ""
        envelope = Envelope.wrap(handled, seller_id=seller or "unknown", correlation_id=handled.letter_id)
        records.append((handled.letter_id, encode(envelope)))
    return records


async def carry_out(settings: Settings, store: Store, action: LetterAction, clock: Clock) -> ActionOutcome:
    """Replay or resolve the letters ``action`` names; a replay sends each original back once (the
    ledger), then records who did it. Blocking Kafka calls run in a thread."""
    letters, missing = pick(await run_in_threadpool(all_dead_letters, settings), action.letters)
    summary = None
    done = letters
    if action.action == "replay":
        ledger = ReplayLedger(store)
        before = {d.dlq_topic: await ledger.replayed(d.dlq_topic) for d in letters}
        summary = await replay_dead_letters(settings, letters, ledger, operator=action.operator)
        after = {topic: await ledger.replayed(topic) for topic in before}
        done = [
            d
            for d in letters
            if source_of(d) is not None
            and after[d.dlq_topic].get(d.position, {}).get("run") == ledger.run
            and before[d.dlq_topic].get(d.position) != after[d.dlq_topic].get(d.position)
        ]
    records = handled_records(done, action, clock)
    if records:
        await run_in_threadpool(_publish, settings, records)
    return ActionOutcome(
        action=action.action,
        asked=len(action.letters),
        done=len(done),
        missing=tuple(missing),
        replay=summary,
    )


def _publish(settings: Settings, records: Sequence[tuple[str, bytes]]) -> None:
    publisher = Publisher(settings.kafka)
    try:
        pending = [
            publisher.send(OPS_DEAD_LETTER_ACTIONS.name, key.encode(), value) for key, value in records
        ]
        for sent in pending:
            sent.get(timeout=60)
    finally:
        publisher.close()


def load_board(
    settings: Settings, ledger: Mapping[str, Mapping[str, Mapping[str, Any]]], chosen: LetterFilter
) -> DeadLetterBoard:
    """The board from the topics (blocking: run it in a thread); ``ledger``: the replay ledger's
    entries per DLQ topic."""
    handled = {**_replayed_by_ledger(ledger), **handlings(settings)}
    return build_board(all_dead_letters(settings), handled, chosen)
