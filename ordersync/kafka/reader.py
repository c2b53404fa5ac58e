"""One bounded topic reader: a topic's partitions (or several topics') read up to where they ended when
the reading began. Replay, the status model's rebuild and the tests read through it.

Partitions are assigned explicitly, with no consumer group and nothing committed, and read from an
explicit offset or from the beginning. Each stops at the high watermark the consumer's own first fetch of
it reported, captured once, so records appended meanwhile (a replay's own re-published ones too) are not
read; a partition that is empty reaches its high watermark (0) at its first fetch. The reader never asks
the broker for the end of a partition or for offsets by time: ListOffsets LATEST and offsets_for_times
are wrong on the embedded broker, and a timestamp lookup has batch granularity even on Kafka. An offset
past a partition's end reads nothing of it; one below its start (retention deleted it) reads from the
earliest record kept, the only offset asked of the broker.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import OffsetOutOfRangeError

from ordersync.errors import Permanent, Unreachable
from ordersync.kafka.admin import kafka_client_config
from ordersync.settings import KafkaSettings

POLL_TIMEOUT_MS = 500
#: Give up when no partition made progress for this long (broker down, partition offline).
READ_STALL_S = 60.0

#: (records read so far, records to read in all once every partition's end is known).
ProgressHook = Callable[[int, int | None], None]


class TopicMissing(Permanent):
    """A topic or partition asked for is not on the broker."""


class ReadStalled(Unreachable):
    """No partition made progress for the reader's stall time."""


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class PartitionRange:
    """What was read of one partition: offsets ``start`` (included) to ``end`` (excluded)."""

    topic: str
    partition: int
    start: int
    end: int


class TopicReader:
    """Reads ``topics`` (one name or several) from ``from_offset`` (None: the beginning) up to each
    partition's high watermark as first fetched, in offset order per partition.

    ``partitions`` narrows a single topic; ``positions`` names exactly the (topic, partition)s to read,
    each from its own offset (``topics`` and ``from_offset`` are then unused). A topic or partition not
    on the broker raises :class:`TopicMissing`; with ``skip_missing`` a missing topic is left out
    instead (and listed in :attr:`missing_topics`). ``stop_at``: a record for which it is true ends its
    partition there (that record is not read). No progress for ``stall_s`` raises :class:`ReadStalled`.
    It holds a consumer: use it as a context manager, and read once, through :meth:`records` or
    :meth:`batches`.
    """

    def __init__(
        self,
        kafka: KafkaSettings | str,
        topics: str | Sequence[str],
        *,
        partitions: Sequence[int] | None = None,
        from_offset: int | None = None,
        positions: Mapping[tuple[str, int], int] | None = None,
        skip_missing: bool = False,
        stop_at: Callable[[Record], bool] | None = None,
        client_id: str = "ordersync-reader",
        max_poll_records: int = 500,
        stall_s: float = READ_STALL_S,
    ) -> None:
        names = [topics] if isinstance(topics, str) else list(topics)
        if partitions is not None and len(names) != 1:
            raise ValueError("partitions narrow a single topic")
        settings = KafkaSettings(bootstrap=kafka) if isinstance(kafka, str) else kafka
        self.names = names
        self.stop_at = stop_at
        self.stall_s = stall_s
        self.missing_topics: list[str] = []
        self.ends: dict[TopicPartition, int] = {}
        self.done: set[TopicPartition] = set()
        #: Records read so far (none past a partition's end or its ``stop_at`` record).
        self.read = 0
        self.consumer: Any = KafkaConsumer(
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="none",  # an offset out of range is handled here, never silently reset
            fetch_max_wait_ms=100,
            max_poll_records=max_poll_records,
            **kafka_client_config(settings, client_id=client_id),
        )
        try:
            if positions is not None:
                self.tps = [TopicPartition(topic, partition) for topic, partition in positions]
                if self.tps:
                    self.consumer.assign(self.tps)
                for tp in self.tps:
                    self.consumer.seek(tp, positions[(tp.topic, tp.partition)])
                self.starts = {tp: positions[(tp.topic, tp.partition)] for tp in self.tps}
            elif from_offset is None:
                self.tps = self._assign(partitions, skip_missing=skip_missing)
                if self.tps:
                    self.consumer.seek_to_beginning(*self.tps)
                self.starts = {tp: int(self.consumer.position(tp)) for tp in self.tps}
            else:
                self.tps = self._assign(partitions, skip_missing=skip_missing)
                for tp in self.tps:
                    self.consumer.seek(tp, from_offset)
                self.starts = dict.fromkeys(self.tps, from_offset)
        except BaseException:
            self.consumer.close()
            raise
        self._last_progress = time.monotonic()

    def _assign(self, partitions: Sequence[int] | None, *, skip_missing: bool) -> list[TopicPartition]:
        tps: list[TopicPartition] = []
        for name in self.names:
            available = sorted(self.consumer.partitions_for_topic(name) or ())
            if not available and skip_missing:
                self.missing_topics.append(name)
                continue
            if not available:
                raise TopicMissing(f"topic {name} does not exist on the broker (ordersync topics create)")
            chosen = list(partitions) if partitions is not None else available
            missing = sorted(set(chosen) - set(available))
            if missing:
                raise TopicMissing(f"{name} has no partition {missing[0]} (it has {len(available)})")
            tps += [TopicPartition(name, p) for p in chosen]
        if tps:
            self.consumer.assign(tps)
        return tps

    def __enter__(self) -> TopicReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self.consumer.close()

    # --- reading ------------------------------------------------------------------------------------

    def records(self, progress: ProgressHook | None = None) -> Iterator[Record]:
        """Every record, partition by partition in offset order (partitions interleaved)."""
        for batch in self.batches(progress):
            yield from batch

    def batches(self, progress: ProgressHook | None = None) -> Iterator[list[Record]]:
        """The records of each fetch (never an empty list), until every partition reached its end.
        ``progress`` is called after each fetch."""
        while len(self.done) < len(self.tps):
            try:
                fetched = self.consumer.poll(timeout_ms=POLL_TIMEOUT_MS)
            except OffsetOutOfRangeError as exc:
                self._out_of_range(exc)
                continue
            self._capture_ends()
            batch: list[Record] = []
            for tp, raws in fetched.items():
                if tp not in self.done:
                    self._last_progress = time.monotonic()
                    self._keep(tp, raws, batch)
            self._finish_partitions()
            if batch:
                yield batch
            if progress is not None:
                progress(self.read, self.total())
            if len(self.done) < len(self.tps) and time.monotonic() - self._last_progress > self.stall_s:
                raise ReadStalled(self._stall_message())

    def _capture_ends(self) -> None:
        # Captured once: records appended later are not read.
        for tp in self.tps:
            if tp not in self.done and tp not in self.ends:
                highwater = self.consumer.highwater(tp)
                if highwater is not None:
                    self.ends[tp] = highwater
                    self._last_progress = time.monotonic()

    def _keep(self, tp: TopicPartition, raws: list[Any], batch: list[Record]) -> None:
        for raw in raws:
            end = self.ends.get(tp)
            if end is not None and raw.offset >= end:
                return
            record = Record(
                topic=tp.topic,
                partition=tp.partition,
                offset=raw.offset,
                timestamp_ms=raw.timestamp,
                key=raw.key,
                value=raw.value,
                headers=tuple((name, bytes(value or b"")) for name, value in raw.headers or ()),
            )
            if self.stop_at is not None and self.stop_at(record):
                self.ends[tp] = raw.offset
                return
            self.read += 1
            batch.append(record)

    def _finish_partitions(self) -> None:
        for tp, end in self.ends.items():
            if tp not in self.done and self.consumer.position(tp) >= end:
                self.done.add(tp)
                self.consumer.pause(tp)

    def _out_of_range(self, exc: OffsetOutOfRangeError) -> None:
        """Below the log (retention deleted the start): read from the earliest kept; above it: nothing
        to read. Only EARLIEST is asked of the broker."""
        positions = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
        earliest = self.consumer.beginning_offsets(list(positions))
        for tp, offset in positions.items():
            if offset < earliest.get(tp, 0):
                self.consumer.seek(tp, earliest[tp])
                self.starts[tp] = earliest[tp]
            else:
                self.done.add(tp)
                self.consumer.pause(tp)

    def _stall_message(self) -> str:
        unanswered = [f"{tp.topic}[{tp.partition}]" for tp in self.tps if tp not in self.ends]
        waiting = [f"{tp.topic}[{tp.partition}]" for tp in self.tps if tp not in self.done]
        return (
            f"no progress for {self.stall_s:.0f}s reading {', '.join(waiting)}; no fetch answered for: "
            f"{', '.join(unanswered) or 'none (positions stopped short)'}; is the broker up?"
        )

    # --- what was read -------------------------------------------------------------------------------

    def total(self) -> int | None:
        """Records to read in all, once every partition's end is known."""
        if any(tp not in self.ends and tp not in self.done for tp in self.tps):
            return None
        return sum(max(0, end - self.starts[tp]) for tp, end in self.ends.items())

    def ranges(self) -> list[PartitionRange]:
        return [
            PartitionRange(
                topic=tp.topic,
                partition=tp.partition,
                start=self.starts[tp],
                end=max(self.starts[tp], self.ends.get(tp, self.starts[tp])),
            )
            for tp in self.tps
        ]


def read_topic(
    kafka: KafkaSettings | str,
    topics: str | Sequence[str],
    *,
    from_offset: int | None = None,
    positions: Mapping[tuple[str, int], int] | None = None,
    skip_missing: bool = False,
    client_id: str = "ordersync-reader",
) -> Iterator[Record]:
    """Every record of ``topics`` from ``from_offset`` (None: the beginning) up to each partition's high
    watermark as first fetched: :class:`TopicReader` for the simple case."""
    with TopicReader(
        kafka,
        topics,
        from_offset=from_offset,
        positions=positions,
        skip_missing=skip_missing,
        client_id=client_id,
    ) as reader:
        yield from reader.records()
