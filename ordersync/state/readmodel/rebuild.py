"""The rebuild: drop the status model and fold every folded topic again, from its first offset up to the
high watermark each partition's first fetch reported (:mod:`ordersync.kafka.reader`).

Safe while the status projection runs: the fold is idempotent and order-insensitive, and what is written
after the rebuild started is the live projection's part. ``ordersync status-model rebuild`` runs it.

It folds every record the topics still hold, orders past the model's retention
(``status_model.retention_days``) too: skipping them would need the retention here as well, and the
status projection's hourly pruning (:meth:`ReadModel.prune`) removes them anyway. Until it does, the
rebuilt model and its counts include them.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from ordersync.errors import InvalidEvent
from ordersync.kafka.reader import ProgressHook, ReadStalled, Record, TopicReader
from ordersync.schemas.codec import decode
from ordersync.schemas.envelope import Envelope, Event
from ordersync.schemas.topics import TopicSpec
from ordersync.settings import Settings
from ordersync.state.readmodel.facts import FOLDED_TOPICS
from ordersync.state.readmodel.model import ReadModel
from ordersync.state.readmodel.rows import OverallStatus

#: A rebuild gives up when no partition made progress for this long (broker gone).
REBUILD_IDLE_TIMEOUT_S = 60.0
#: Records one fetch hands over (folded as one batch, its orders concurrently).
_BATCH_RECORDS = 2000


@dataclass
class RebuildResult:
    records: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    orders: int = 0
    by_status: dict[OverallStatus, int] = field(default_factory=dict)
    missing_topics: list[str] = field(default_factory=list)
    seconds: float = 0.0


async def rebuild(
    settings: Settings,
    model: ReadModel,
    *,
    progress: ProgressHook | None = None,
    idle_timeout_s: float = REBUILD_IDLE_TIMEOUT_S,
) -> RebuildResult:
    """Reset ``model`` and fold every folded topic from its first offset up to the high watermark each
    partition's first fetch reported. ``progress(done, total)`` is called as records are read (total
    None until every partition's end is known). Topics not on the broker are skipped and listed."""
    started = time.monotonic()
    result = RebuildResult()
    specs = {spec.name: spec for spec in FOLDED_TOPICS}
    try:
        with TopicReader(
            settings.kafka,
            list(specs),
            skip_missing=True,
            client_id="ordersync-status-rebuild",
            max_poll_records=_BATCH_RECORDS,
            stall_s=idle_timeout_s,
        ) as reader:
            result.missing_topics = list(reader.missing_topics)
            await model.reset()
            if not reader.tps:
                return result
            for batch in reader.batches(progress):
                await _fold(batch, specs, model, result)
        result.by_status = await model.counts()
        result.orders = sum(result.by_status.values())
        return result
    except ReadStalled as exc:
        raise RuntimeError(f"rebuild stalled: {exc}") from exc
    finally:
        result.seconds = time.monotonic() - started


async def _fold(
    batch: list[Record], specs: dict[str, TopicSpec], model: ReadModel, result: RebuildResult
) -> None:
    envelopes: list[tuple[str, Envelope[Event]]] = []
    for record in batch:
        spec = specs[record.topic]
        try:
            envelopes.append((spec.name, decode(record.value, spec)))
        except InvalidEvent:
            result.skipped[spec.name] += 1
            await model.count_skipped(spec.name, record.partition, record.offset)
            continue
        result.records[spec.name] += 1
    # One transaction per order of the batch, several orders at once: the fold is order-insensitive.
    await model.apply_many(envelopes)
