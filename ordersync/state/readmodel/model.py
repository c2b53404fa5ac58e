"""The status read model in Redis: :class:`ReadModel` folds events into it and answers the grid's and the
CLI's queries.

:meth:`ReadModel.apply` adds the event as one fact (:mod:`.facts`) to the order's fact hash (keyed by
``event_id``), re-derives the order's row from all its facts (:mod:`.fold`), and writes the row and the
index entries that changed in one check-and-set script (the order's facts only grow, so their count is
their version). Hence applying an event twice, or the same events in another order (replay, partitions
read at different speeds, several workers), gives the same model, and :mod:`.rebuild` can rebuild it
from the topics.

:meth:`ReadModel.prune` removes the orders last updated before a date (the status projection's hourly
retention task): an order's facts, row and every index entry, with the same check-and-set, so an order
that receives a fact meanwhile stays.

Keys, under ``{prefix}:{rm}:g<generation>:`` (one hash tag, so the multi-key commands also work on a
Redis Cluster slot; :meth:`ReadModel.reset` moves to a new, empty generation in one command):
``facts:<order>`` (hash event_id -> fact), ``row:<order>`` (the derived row, JSON), sorted sets per
sort key (``z:purchase_date``, ``z:updated_at``, ``z:status``, ``z:ship_by``, ``z:id``: every order
with score 0, so its member order is the order-id order and ``ZRANGEBYLEX`` finds prefixes), sets per
status, seller, channel, marketplace, SKU, failed stage and Easy Ship state
(``s:easy-ship:awaiting-pickup``), DLQ record sets per topic. Deadlines:
``z:await-ship`` holds only the orders awaiting shipment, scored by their ship-by date (the grid's
at-risk / overdue filter is a score range of it, measured from the model's clock at query time, so the
fold itself never reads a clock); ``s:confirmed:<seller>`` and ``s:late:<seller>`` hold the orders
ordersync confirmed and those it confirmed after their ship-by date. Search: ``z:sku-names`` holds every
seller SKU folded once, as ``<lower case>\t<SKU>`` (score 0), so a case-insensitive substring search
scans the SKU names (far fewer than the orders) and unions their ``s:sku:`` sets. Operator commands:
``cmd:<event id>`` (hash order member -> that order's outcome of the command, JSON) and ``z:commands``
(event ids by the command's time). An order member is
``amazon_order_id|seller_id``. Grid queries intersect the sets with the sort key's sorted set into a
short-lived key (``ZINTERSTORE`` with weight 0 for the filters) and page with ``ZRANGE ... LIMIT``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast, get_args

import redis.asyncio as aioredis

from ordersync.clock import SYSTEM_CLOCK, Clock
from ordersync.schemas.envelope import Envelope, Event
from ordersync.schemas.events import EventDeadLettered
from ordersync.schemas.topics import CATALOGUE
from ordersync.settings import DEFAULT_PREFIX
from ordersync.state import keys, trends
from ordersync.state.health import HealthBoard
from ordersync.state.readmodel.facts import (
    FOLDED_TOPICS,
    CancellationResultFact,
    DownloadedFact,
    EasyShipDocumentsFact,
    EasyShipFact,
    Fact,
    ImportedFact,
    ImportFailedFact,
    InvoicedFact,
    ShipmentConfirmedFact,
    ShipmentFailedFact,
    ShipmentRequestedFact,
    Target,
    decode_fact,
    encode_fact,
    facts_of,
    parse_iso,
)
from ordersync.state.readmodel.fold import CONFIRMED_BY_ORDERSYNC, Derived, derive
from ordersync.state.readmodel.rows import (
    EASY_SHIP_STATES,
    OVERALL_STATUSES,
    CommandOrder,
    CommandOutcome,
    Deadline,
    DlqSize,
    EasyShipState,
    OrderDetail,
    OrderFilter,
    OrderRow,
    OrdersPage,
    OverallStatus,
    ShipmentTimeliness,
    SortKey,
    StatusCounts,
    TaskRow,
)
from ordersync.state.trends import TrendWrites

log = logging.getLogger(__name__)

#: A status sorts by this rank, then by purchase date (the score is rank * _RANK_SPAN + epoch seconds).
_STATUS_RANK: dict[str, int] = {"Failed": 0, "Pending": 1, "Success": 2, "Ignored": 3}
#: A search scans at most this many SKU names' matches, and this many order ids' matches.
SEARCH_MAX_SKUS = 500
SEARCH_MAX_IDS = 10_000
#: The order-id part of a search: digits and dashes (an id, or a part of one).
_ID_TEXT = frozenset("0123456789-")
_ORDER_ID_LENGTH = 19
_RANK_SPAN = 10_000_000_000
#: DLQ growth is a live alert: records dead-lettered longer ago than this (a rebuild) notify nobody.
DLQ_NOTIFY_WITHIN = timedelta(hours=24)
#: Likewise a late confirmation: one confirmed longer ago than this (a rebuild) notifies nobody.
LATE_NOTIFY_WITHIN = timedelta(hours=24)
#: The at-risk lead time when none is given (``health.ship_by_lead_s``'s default: 4 hours).
DEFAULT_SHIP_BY_LEAD = timedelta(hours=4)
#: The ship_by sort score of an order without a ship-by date: after every dated order, earliest first.
_NO_SHIP_BY = 253402300799.0  # 9999-12-31T23:59:59Z
#: Order ids a seller's timeliness names (the earliest ship-by first).
_DUE_IDS_SHOWN = 5
_TEMP_TTL_S = 300
_ITERATION_TTL_S = 3600
_WATCH_RETRIES = 50
#: Orders one model folds at once (each holds a Redis connection while it does).
_FOLD_CONCURRENCY = 32
#: Orders whose states one batch of :meth:`ReadModel.apply_many` reads (and writes) in one round trip.
FOLD_BATCH = 200
#: Orders one :meth:`ReadModel.prune` call removes at most: one script of about 15 commands per order,
#: a few milliseconds of Redis, so folds and queries are never held up long.
PRUNE_BATCH = 500


def _epoch(value: datetime | None) -> float:
    return value.timestamp() if value is not None else 0.0


def _member(seller_id: str, amazon_order_id: str) -> str:
    return f"{amazon_order_id}|{seller_id}"


def _split_member(member: str) -> tuple[str, str]:
    order_id, seller = member.split("|", 1)
    return seller, order_id


# The fold's two scripts. Every key is under the model's {rm} hash tag, so on a Redis Cluster they all
# share one slot; the order's keys are derived from the generation inside the script.
_READ_ORDER = """
local generation = redis.call('GET', KEYS[1]) or '0'
local root = ARGV[1] .. ':g' .. generation .. ':'
local facts = redis.call('HGETALL', root .. 'facts:' .. ARGV[2])
local reply = {generation, tostring(#facts / 2), redis.call('GET', root .. 'row:' .. ARGV[2]) or '',
               redis.call('HGET', root .. 'seller-channel', ARGV[3]) or ''}
for i = 1, #facts do reply[#reply + 1] = facts[i] end
return reply
"""

# ARGV: generation, facts key, facts count read, then commands as (argument count, command, args...);
# HSET-IF-GREATER (key, field, number) keeps the larger of the field's number and the one given (the
# trends' largest lag of an hour).
_WRITE_ORDER = """
if (redis.call('GET', KEYS[1]) or '0') ~= ARGV[1] then return 0 end
if redis.call('HLEN', ARGV[2]) ~= tonumber(ARGV[3]) then return 0 end
local i = 4
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  if ARGV[i + 1] == 'HSET-IF-GREATER' then
    local old = tonumber(redis.call('HGET', ARGV[i + 2], ARGV[i + 3]))
    if not old or old < tonumber(ARGV[i + 4]) then
      redis.call('HSET', ARGV[i + 2], ARGV[i + 3], ARGV[i + 4])
    end
  else
    redis.call(unpack(ARGV, i + 1, i + n))
  end
  i = i + n + 1
end
return 1
"""

# A dead letter counted once (its event id in the topic's set): the topic's latest, and the day's count of
# its reason on the trends. KEYS: the topic's set, dlq-last. ARGV: event id, topic, epoch seconds, then
# for the trends ('' first when its day is past keeping): the failures key up to the channel, the key
# after it, the seller-channel hash, the channel ('' when the letter names none: the seller's, else
# ARGV[9]), the seller, the fallback channel, the field, the expiry (seconds), the channels set.
_COUNT_DEAD_LETTER = """
local added = redis.call('SADD', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], 'GT', ARGV[3], ARGV[2])
if added == 1 and ARGV[4] ~= '' then
  local channel = ARGV[7]
  if channel == '' then channel = redis.call('HGET', ARGV[6], ARGV[8]) or ARGV[9] end
  local key = ARGV[4] .. channel .. ARGV[5]
  redis.call('HINCRBY', key, ARGV[10], 1)
  redis.call('EXPIRE', key, ARGV[11])
  redis.call('SADD', ARGV[12], channel)
end
return added
"""

# A page of the orders of a sorted set (KEYS[1], by rank) that are members of every set KEYS[2..]:
# ARGV offset, limit, descending (1/0), chunk.
_WALK = """
local offset, limit, chunk = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[4])
local found, skipped, position = {}, 0, 0
while #found < limit do
  local batch
  if ARGV[3] == '1' then
    batch = redis.call('ZRANGE', KEYS[1], position, position + chunk - 1, 'REV')
  else
    batch = redis.call('ZRANGE', KEYS[1], position, position + chunk - 1)
  end
  if #batch == 0 then break end
  for _, member in ipairs(batch) do
    local matches = true
    for i = 2, #KEYS do
      if redis.call('SISMEMBER', KEYS[i], member) == 0 then matches = false break end
    end
    if matches then
      if skipped < offset then skipped = skipped + 1
      else
        found[#found + 1] = member
        if #found >= limit then break end
      end
    end
  end
  position = position + chunk
end
return found
"""
# The prune's script. ARGV: generation, then per order: facts key, facts count read, row key, row read
# ('' for none), the number of arguments that follow for it, then its commands as (argument count,
# command, args...); ZREM-IF-GONE (sorted set, hash, member) removes the member once the hash is gone.
# An order is removed only if its facts count and row are still those read: a fact folded meanwhile
# (the count is the order's version) or a row rewritten keeps it.
_PRUNE = """
if (redis.call('GET', KEYS[1]) or '0') ~= ARGV[1] then return 0 end
local removed, i = 0, 2
while i <= #ARGV do
  local last = i + 4 + tonumber(ARGV[i + 4])
  if redis.call('HLEN', ARGV[i]) == tonumber(ARGV[i + 1])
      and (redis.call('GET', ARGV[i + 2]) or '') == ARGV[i + 3] then
    local j = i + 5
    while j <= last do
      local n = tonumber(ARGV[j])
      if ARGV[j + 1] == 'ZREM-IF-GONE' then
        -- (sorted set, hash, member): the member leaves the sorted set once the hash is gone
        if redis.call('EXISTS', ARGV[j + 3]) == 0 then redis.call('ZREM', ARGV[j + 2], ARGV[j + 4]) end
      else
        redis.call(unpack(ARGV, j + 1, j + n))
      end
      j = j + n + 1
    end
    removed = removed + 1
  end
  i = last + 1
end
return removed
"""

# The search: the orders whose SKU or id contains a text, into KEYS[3] (a sorted set, score 0).
# KEYS: z:sku-names, z:id, destination. ARGV: the SKU names' glob ('' for none), the ids' glob ('' for
# none), the prefix of the SKU sets' keys, the most SKU names and the most ids, the exact SKU's set key,
# the ids' prefix ('' for none: its index range, no scan).
# Bounded: the SKU names are one entry per SKU; the ids' scan reads z:id (one entry per order) and is
# only asked for a text of digits and dashes. Returns {SKU names matched, ids matched, truncated (0/1)}.
_SEARCH = """
local dest = KEYS[3]
local truncated = 0
local sets = {ARGV[6]}
if ARGV[1] ~= '' then
  local cursor = '0'
  repeat
    local reply = redis.call('ZSCAN', KEYS[1], cursor, 'MATCH', ARGV[1], 'COUNT', 1000)
    cursor = reply[1]
    for i = 1, #reply[2], 2 do
      if #sets > tonumber(ARGV[4]) then truncated = 1 break end
      local name = reply[2][i]
      sets[#sets + 1] = ARGV[3] .. string.sub(name, string.find(name, '\t', 1, true) + 1)
    end
  until cursor == '0' or truncated == 1
end
local ids = 0
redis.call('DEL', dest)
if ARGV[7] ~= '' then
  -- an id or the start of one: its range of z:id (every member scores 0, so lex order is id order)
  local found = redis.call('ZRANGE', KEYS[2], '[' .. ARGV[7], '[' .. ARGV[7] .. '~', 'BYLEX', 'LIMIT', 0,
                           tonumber(ARGV[5]))
  for i = 1, #found, 1000 do
    local batch = {}
    for j = i, math.min(i + 999, #found) do
      batch[#batch + 1] = 0
      batch[#batch + 1] = found[j]
    end
    redis.call('ZADD', dest, unpack(batch))
  end
  ids = #found
end
if ARGV[2] ~= '' then
  local cursor = '0'
  local batch = {}
  repeat
    local reply = redis.call('ZSCAN', KEYS[2], cursor, 'MATCH', ARGV[2], 'COUNT', 1000)
    cursor = reply[1]
    for i = 1, #reply[2], 2 do
      if ids >= tonumber(ARGV[5]) then truncated = 1 break end
      batch[#batch + 1] = 0
      batch[#batch + 1] = reply[2][i]
      ids = ids + 1
      if #batch >= 1000 then redis.call('ZADD', dest, unpack(batch)) batch = {} end
    end
  until cursor == '0' or truncated == 1
  if #batch > 0 then redis.call('ZADD', dest, unpack(batch)) end
end
redis.call('ZUNIONSTORE', dest, #sets + 1, dest, unpack(sets))
return {#sets - 1, ids, truncated}
"""


def _glob_escape(text: str) -> str:
    """``text`` matched literally by Redis' glob (MATCH)."""
    return "".join("\\" + c if c in "\\*?[]" else c for c in text)


#: The walk is used while it should visit at most this many orders, or the filter's size if larger.
_WALK_MIN_VISITS = 5000
_WALK_CHUNK = 2000


@dataclass(frozen=True)
class _FoldPlan:
    """One order's fold, decided: the write script's arguments (past its key), the derived row, and the
    stored row it replaces."""

    args: list[str]
    derived: Derived
    old_raw: str | None


class _Writes:
    """Redis commands for the write script, applied atomically when the order did not change."""

    def __init__(self) -> None:
        self.commands: list[tuple[str, ...]] = []

    def add(self, *command: str) -> None:
        self.commands.append(command)

    def args(self) -> list[str]:
        flat: list[str] = []
        for command in self.commands:
            flat += [str(len(command)), *command]
        return flat


class _Space:
    """The keys of one generation of the model (a reset starts a new, empty generation at once)."""

    def __init__(self, base: str, generation: str) -> None:
        self.generation = generation
        self.root = f"{base}:g{generation}"

    def __call__(self, *parts: str) -> str:
        return ":".join((self.root, *parts))

    def sort(self, sort: SortKey) -> str:
        return self("z", "id" if sort == "amazon_order_id" else sort)

    def confirmed(self, seller_id: str) -> str:
        """The seller's orders ordersync confirmed a shipment of."""
        return self("s", "confirmed", seller_id)

    def late(self, seller_id: str) -> str:
        """The seller's orders ordersync confirmed after their ship-by date."""
        return self("s", "late", seller_id)

    def index_sets(self, row: OrderRow, failed_stages: Iterable[str]) -> set[str]:
        keys = {
            self("s", "status", row.status),
            self("s", "seller", row.seller_id),
            self("s", "channel", row.channel),
            self("s", "mkt", row.marketplace_id or ""),
        }
        keys.update(self("s", "sku", sku) for sku in row.skus)
        keys.update(self("s", "failed", stage) for stage in failed_stages)
        if row.confirmed_at is not None:
            keys.add(self.confirmed(row.seller_id))
        if row.confirmed_late:
            keys.add(self.late(row.seller_id))
        if row.awaiting_pickup:
            keys.add(self("s", "easy-ship", "awaiting-pickup"))
        return keys


def _scores(row: OrderRow) -> dict[str, float]:
    """The order's score in each sorted set it belongs to (``await-ship`` only while it awaits
    shipment)."""
    purchase = _epoch(row.purchase_date)
    scores = {
        "purchase_date": purchase,
        "updated_at": _epoch(row.updated_at),
        "status": _STATUS_RANK[row.status] * _RANK_SPAN + purchase,
        "ship_by": _epoch(row.ship_by) if row.ship_by is not None else _NO_SHIP_BY,
        "id": 0.0,
    }
    if row.awaiting_shipment and row.ship_by is not None:
        scores["await-ship"] = _epoch(row.ship_by)
    return scores


def _stored_indexes(space: _Space, raw: str) -> tuple[OrderRow, set[str], dict[str, float]]:
    """A stored row, the index sets it put its order in and its score in each sorted set: what a fold
    that changes the row takes back, and what a prune removes with the order."""
    stored = json.loads(raw)
    row = OrderRow.model_validate(stored["row"])
    scores = _scores(row)
    if "ship_by" not in stored["row"]:
        scores.pop("ship_by")  # stored before z:ship_by existed: not in it yet
    return row, space.index_sets(row, stored["failed_stages"]), scores


def _stored_row(raw: str | None) -> OrderRow | None:
    return OrderRow.model_validate(json.loads(raw)["row"]) if raw else None


def _late_by_text(late_by: timedelta) -> str:
    """1 h 20 min, 2 d 3 h, 45 min."""
    minutes = max(1, int(late_by.total_seconds() // 60))
    days, minutes = divmod(minutes, 1440)
    hours, minutes = divmod(minutes, 60)
    if days:
        return f"{days} d {hours} h"
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


def _filter_sets(space: _Space, filter: OrderFilter) -> list[str]:
    """The index sets of the filter's plain conditions (status, seller, channel, marketplace, failed
    stage, Easy Ship state): an order matches them when it is a member of every one."""
    return [
        space("s", kind, value)
        for kind, value in (
            ("status", filter.status),
            ("seller", filter.seller_id),
            ("channel", filter.channel),
            ("mkt", filter.marketplace_id),
            ("failed", filter.failed_stage),
            ("easy-ship", filter.easy_ship),
        )
        if value
    ]


def _command_entries(row: OrderRow, commands: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The order's commands as stored with its row and in each command's hash."""
    return [
        {
            "event_id": c["event_id"],
            "command": c["command"],
            "channel": row.channel,
            "operator": c.get("operator"),
            "at": c["at"],
            "outcome": c["outcome"],
            "reason": c.get("reason"),
            "settled_at": c.get("settled_at"),
        }
        for c in commands
    ]


def _command_outcome(event_id: str, raw: dict[str, str]) -> CommandOutcome:
    entries = sorted(((member, json.loads(value)) for member, value in raw.items()), key=lambda e: e[0])
    orders = []
    for member, entry in entries:
        seller, order_id = _split_member(member)
        orders.append(
            CommandOrder(
                seller_id=seller,
                amazon_order_id=order_id,
                outcome=entry["outcome"],
                reason=entry.get("reason"),
                settled_at=parse_iso(entry.get("settled_at")),
            )
        )
    first = entries[0][1] if entries else {}
    return CommandOutcome(
        event_id=event_id,
        command=first.get("command"),
        channel=first.get("channel"),
        operator=first.get("operator"),
        at=parse_iso(first.get("at")),
        orders=tuple(orders),
    )


def _write_search_and_commands(
    writes: _Writes,
    *,
    space: _Space,
    member: str,
    row: OrderRow,
    old_sets: set[str],
    commands: list[dict[str, Any]],
    old_raw: str | None,
) -> None:
    """The SKU names a new SKU of the order adds to the search, and each command of the order whose
    outcome changed, into its command hash and ``z:commands``."""
    for sku in sorted(row.skus):
        if space("s", "sku", sku) not in old_sets:
            writes.add("ZADD", space("z", "sku-names"), "0", f"{sku.lower()}\t{sku}")
    old_commands = {c["event_id"]: c for c in json.loads(old_raw).get("commands", ())} if old_raw else {}
    for command in commands:
        if old_commands.get(command["event_id"]) != command:
            writes.add("HSET", space("cmd", command["event_id"]), member, json.dumps(command))
            writes.add(
                "ZADD",
                space("z", "commands"),
                repr(_epoch(parse_iso(command["at"]))),
                command["event_id"],
            )


def _loaded_facts(raw: dict[str, str]) -> list[Fact]:
    return [decode_fact(event_id, value) for event_id, value in raw.items()]


#: The shipment request's ``source`` of a package asked for by an invoice (streams.invoice_issued).
_INVOICE_SOURCE = "invoice "


def _record_trends(trend: TrendWrites, facts: list[Fact], new_ids: set[str], order_channel: str) -> None:
    """What the facts new to an order (``new_ids``; ``facts`` are all of them) add to the trends
    (:mod:`ordersync.state.trends`): the order downloaded, imported or confirmed in the hour of its
    earliest fact of that kind (counted when that fact is among them), each failure among them, and the
    write-back lag of each package ordersync confirmed whose request and confirmation are both known
    only now. Dead letters are counted once per letter, with their topics
    (:meth:`ReadModel._count_dead_letter`)."""
    firsts: dict[trends.OrderMetric, list[Fact]] = {metric: [] for metric in trends.ORDER_METRICS}
    for fact in sorted(facts, key=lambda f: (f.at, f.event_id)):
        data = fact.data
        if isinstance(data, DownloadedFact):
            firsts["downloaded"].append(fact)
        elif isinstance(data, ImportedFact):
            firsts["imported"].append(fact)
        elif isinstance(data, ShipmentConfirmedFact):
            firsts["confirmed"].append(fact)
        elif fact.event_id in new_ids:
            _record_failure(trend, fact, _channel_of(fact, order_channel))
    for metric, found in firsts.items():
        # Counted once, in the hour of the order's earliest fact of the kind: by the fold that brings it,
        # which moves the count from the hour of the one known before, if any (facts fold in any order).
        if not found or found[0].event_id not in new_ids:
            continue
        before = next((f for f in found if f.event_id not in new_ids), None)
        if before is not None:
            trend.count(_channel_of(before, order_channel), _at(before), metric, -1)
        trend.count(_channel_of(found[0], order_channel), _at(found[0]), metric)
    _record_lags(trend, facts, new_ids, order_channel)


def _channel_of(fact: Fact, order_channel: str) -> str:
    return getattr(fact.data, "channel", None) or order_channel


def _at(fact: Fact) -> datetime:
    return cast(datetime, parse_iso(fact.at))


def _record_failure(trend: TrendWrites, fact: Fact, channel: str) -> None:
    """An import or write-back failure, by its reason, on its day."""
    data, at = fact.data, _at(fact)
    if isinstance(data, ImportFailedFact) and data.reason_code != "pending_no_prices":
        trend.failure(channel, at, "import", data.reason_code, "ImportFailed")
    elif isinstance(data, ShipmentFailedFact):
        trend.failure(channel, at, "write-back", data.error_code, "ShipmentFailed")
    elif isinstance(data, CancellationResultFact) and not data.cancelled:
        trend.failure(channel, at, "write-back", data.error_code, "CancellationRefused")
    elif isinstance(data, EasyShipFact | EasyShipDocumentsFact) and data.error_code is not None:
        trend.failure(channel, at, "write-back", data.error_code, "EasyShipRefused")


def _record_lags(trend: TrendWrites, facts: list[Fact], new_ids: set[str], order_channel: str) -> None:
    """The write-back lag of each package ordersync confirmed (confirmShipment, a feed) that this fold
    completes, in the hour of Amazon's first confirmation: from its invoice issued (a request from a
    warehouse, without an invoice: its first request). A package is complete once its request, its
    confirmation and the invoice its request names are all folded, in whichever order they come."""
    seen = _Packages()
    before = _Packages()
    for fact in facts:
        seen.add(fact)
        if fact.event_id not in new_ids:
            before.add(fact)
    for package in seen.confirmed:
        lag = seen.lag(package)
        if lag is None or before.lag(package) is not None:
            continue  # not complete yet, or counted by the fold that completed it
        end, seconds, channel = lag
        trend.lag(channel or order_channel, end, seconds)


class _Packages:
    """An order's shipment requests, ordersync's confirmations and its invoices, by package."""

    def __init__(self) -> None:
        self.requested: dict[str, list[Fact]] = {}
        self.confirmed: dict[str, list[ShipmentConfirmedFact]] = {}
        self.invoiced: dict[str, str] = {}

    def add(self, fact: Fact) -> None:
        data = fact.data
        if isinstance(data, ShipmentConfirmedFact) and data.method in CONFIRMED_BY_ORDERSYNC:
            self.confirmed.setdefault(data.package_reference_id, []).append(data)
        elif isinstance(data, ShipmentRequestedFact):
            self.requested.setdefault(data.package_reference_id, []).append(fact)
        elif isinstance(data, InvoicedFact):
            self.invoiced[data.invoice_number] = min(fact.at, self.invoiced.get(data.invoice_number, fact.at))

    def lag(self, package: str) -> tuple[datetime, float, str] | None:
        """(Amazon's first confirmation, the lag in seconds, the channel), None while not complete."""
        requests, confirmations = self.requested.get(package), self.confirmed.get(package)
        if not requests or not confirmations:
            return None
        starts = []
        for request in requests:
            source = cast(ShipmentRequestedFact, request.data).source or ""
            if source.startswith(_INVOICE_SOURCE):
                invoice = self.invoiced.get(source.removeprefix(_INVOICE_SOURCE))
                if invoice is None:
                    return None  # its invoice is not folded yet
                starts.append(invoice)
            starts.append(request.at)
        end = cast(datetime, parse_iso(min(c.confirmed_at for c in confirmations)))
        start = cast(datetime, parse_iso(min(starts)))
        return end, (end - start).total_seconds(), confirmations[0].channel


class ReadModel:
    """The read model of one key prefix (``settings.redis.key_prefix``).

    Its keys live under ``{prefix}:{rm}:g<generation>:``; :meth:`reset` moves to the next generation in
    one command (every fold in flight notices and retries there), then deletes the old one.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        prefix: str = DEFAULT_PREFIX,
        *,
        notify_dlq: bool = True,
        notify_late: bool = True,
        clock: Clock = SYSTEM_CLOCK,
        ship_by_lead: timedelta = DEFAULT_SHIP_BY_LEAD,
    ) -> None:
        """``clock``: what "live" is measured against for notifications, and "now" for the deadline
        filter (Amazon's clock); ``ship_by_lead``: how near its ship-by date an order awaiting shipment
        is at risk (``health.ship_by_lead_s``)."""
        self.redis = redis
        self.prefix = prefix
        self.clock = clock
        self.ship_by_lead = ship_by_lead
        #: Tell the health board when an order is confirmed after its ship-by date (the live projection).
        self.notify_late = notify_late
        self.base = f"{prefix}:{keys.READ_MODEL.name}"
        #: Tell the health board when a dead-letter topic grows (the live projection does).
        self.notify_dlq = notify_dlq
        self._generation_key = f"{self.base}:generation"
        # Folds of one order in this process wait for each other rather than collide on WATCH.
        self._order_locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}
        self._concurrency = asyncio.Semaphore(_FOLD_CONCURRENCY)
        self._read_order = redis.register_script(_READ_ORDER)
        self._write_order = redis.register_script(_WRITE_ORDER)
        self._walk_script = redis.register_script(_WALK)
        self._prune_script = redis.register_script(_PRUNE)
        self._search_script = redis.register_script(_SEARCH)
        self._count_dead_letter_script = redis.register_script(_COUNT_DEAD_LETTER)

    async def _space(self, client: Any = None) -> _Space:
        generation = await (client or self.redis).get(self._generation_key)
        return _Space(self.base, str(generation or 0))

    # --- the fold -----------------------------------------------------------------------------------

    async def apply(self, topic: str, envelope: Envelope[Event]) -> None:
        """Fold one event (idempotent: the same event again changes nothing)."""
        await self.apply_many([(topic, envelope)])

    async def apply_many(self, events: Iterable[tuple[str, Envelope[Event]]]) -> None:
        """Fold several events, those of one order in one transaction (a batch of the status
        projection, a rebuild's batches): every order's state read in one round trip, every order
        written in another (:data:`FOLD_BATCH` orders at a time); an order that changed in between (a
        fold of another topic's agent, another worker) is folded again on its own."""
        by_order: dict[Target, dict[str, str]] = {}
        for topic, envelope in events:
            about = facts_of(topic, envelope)
            if isinstance(envelope.payload, EventDeadLettered):
                channel = next((c for _, f in about if (c := getattr(f.data, "channel", None))), "")
                await self._count_dead_letter(topic, envelope, envelope.payload, channel)
            for target, fact in about:
                by_order.setdefault(target, {})[fact.event_id] = encode_fact(fact)
        if len(by_order) == 1:
            ((target, facts),) = by_order.items()
            await self._apply_facts(target, facts)
            return
        orders = list(by_order.items())
        for start in range(0, len(orders), FOLD_BATCH):
            await self._fold_batch(orders[start : start + FOLD_BATCH])

    async def _fold_batch(self, orders: list[tuple[Target, dict[str, str]]]) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for target, _ in orders:
                # EVAL, not the registered script: in a pipeline that costs redis-py a SCRIPT EXISTS trip.
                pipe.eval(_READ_ORDER, 1, self._generation_key, self.base, target.member, target.seller_id)
            states = await pipe.execute()
        planned = [
            (target, new_facts, plan)
            for (target, new_facts), state in zip(orders, states, strict=True)
            if (plan := self._plan(target, new_facts, cast(list[str], state))) is not None
        ]
        if not planned:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for _, _, plan in planned:
                pipe.eval(_WRITE_ORDER, 1, self._generation_key, *plan.args)
            done = await pipe.execute()
        for (target, new_facts, plan), written in zip(planned, done, strict=True):
            if written:
                await self._notify_if_newly_late(plan.derived.row, plan.old_raw)
            else:
                await self._apply_facts(target, new_facts)

    async def _apply_facts(self, target: Target, new_facts: dict[str, str]) -> None:
        member = target.member
        lock, users = self._order_locks.setdefault(member, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock, self._concurrency:
                await self._fold_order(target, new_facts)
        finally:
            users[0] -= 1
            if not users[0]:
                del self._order_locks[member]

    async def _fold_order(self, target: Target, new_facts: dict[str, str]) -> None:
        """Read the order's facts, derive its row, write both if nothing changed meanwhile.

        Two round trips, each one script. The check-and-set needs no version key: an order's facts only
        ever grow (an event id always maps to the same fact), so their count is their version."""
        member = target.member
        for _ in range(_WATCH_RETRIES):
            state = cast(
                list[str],
                await self._read_order(
                    keys=[self._generation_key], args=[self.base, member, target.seller_id]
                ),
            )
            plan = self._plan(target, new_facts, state)
            if plan is None:
                return
            if await self._write_order(keys=[self._generation_key], args=plan.args):
                await self._notify_if_newly_late(plan.derived.row, plan.old_raw)
                return
        raise RuntimeError(f"read model: order {member} kept changing under {_WATCH_RETRIES} attempts")

    def _plan(self, target: Target, new_facts: dict[str, str], state: list[str]) -> _FoldPlan | None:
        """What folding ``new_facts`` into the order read as ``state`` (the read script's reply)
        writes, or None when it changes nothing."""
        member = target.member
        # (The seller's channel, 4th, is not used: an order's row comes from its own facts only, or the
        # model would depend on the order records are folded in.)
        generation, facts_count, old_raw = state[:3]
        space = _Space(self.base, generation or "0")
        raw_facts = dict(zip(state[4::2], state[5::2], strict=True))
        added = {k: v for k, v in new_facts.items() if raw_facts.get(k) != v}
        # Only facts new to the order count on the trends: one folded again (a redelivery) adds nothing.
        new_ids = added.keys() - raw_facts.keys()
        raw_facts.update(added)
        facts = _loaded_facts(raw_facts)
        derived = derive(target.seller_id, target.amazon_order_id, facts)
        writes = _Writes()
        if added:
            writes.add("HSET", space("facts", member), *(x for pair in added.items() for x in pair))
        self._write_row(writes, space, member, derived, old_raw or None)
        if not writes.commands:
            return None
        if new_ids:
            trend = TrendWrites(self.prefix, space.generation, self.clock.now())
            _record_trends(trend, facts, new_ids, derived.row.channel)
            for command in trend.commands():
                writes.add(*command)
        args = [generation or "0", space("facts", member), facts_count, *writes.args()]
        return _FoldPlan(args=args, derived=derived, old_raw=old_raw or None)

    def _write_row(
        self,
        writes: _Writes,
        space: _Space,
        member: str,
        derived: Derived,
        old_raw: str | None,
    ) -> None:
        """Write the row and the index entries that changed (all of them for a new row)."""
        row = derived.row
        stored: dict[str, Any] = {
            "row": row.model_dump(mode="json"),
            "failed_stages": list(derived.failed_stages),
        }
        commands = _command_entries(row, derived.commands)
        if commands:
            # (Only orders that received a command carry them: every other stored row stays the same.)
            stored["commands"] = commands
        encoded = json.dumps(stored, separators=(",", ":"))
        if encoded == old_raw:
            return
        new_sets = space.index_sets(row, derived.failed_stages)
        new_scores = _scores(row)
        old_sets: set[str] = set()
        old_scores: dict[str, float] = {}
        old_row: OrderRow | None = None
        if old_raw:
            old_row, old_sets, old_scores = _stored_indexes(space, old_raw)
        for key in sorted(old_sets - new_sets):
            writes.add("SREM", key, member)
        for key in sorted(new_sets - old_sets):
            writes.add("SADD", key, member)
        _write_search_and_commands(
            writes, space=space, member=member, row=row, old_sets=old_sets, commands=commands, old_raw=old_raw
        )
        for name in sorted(old_scores.keys() - new_scores.keys()):
            writes.add("ZREM", space("z", name), member)
        for name, score in new_scores.items():
            if old_scores.get(name) != score:
                writes.add("ZADD", space("z", name), repr(score), member)
        writes.add("SET", space("row", member), encoded)
        if row.channel and (old_row is None or old_row.channel != row.channel):
            writes.add("SADD", space("sellers"), f"{row.channel}|{row.seller_id}")
            writes.add("HSET", space("seller-channel"), row.seller_id, row.channel)

    async def _count_dead_letter(
        self, topic: str, envelope: Envelope[Event], letter: EventDeadLettered, channel: str = ""
    ) -> None:
        """Count a dead letter once: in its topic's set, and on the trends' failures of its day (of
        ``channel``, else of its seller's channel), in one script."""
        space = await self._space()
        day = trends.day_start(envelope.occurred_at)
        ttl = trends.ttl_s(day + trends.DAY, self.clock.now())
        head, _, tail = trends.failures_key(self.prefix, space.generation, "\0", day).partition("\0")
        reason = f"dead-letter|{trends.reason_text(f'{letter.stage}: {letter.error_type}', 'unknown')}"
        added = await self._count_dead_letter_script(
            keys=[space("dlq", topic), space("dlq-last")],
            args=[
                str(envelope.event_id),
                topic,
                repr(envelope.occurred_at.timestamp()),
                head if ttl > 0 else "",
                tail,
                space("seller-channel"),
                channel,
                envelope.seller_id,
                trends.NO_CHANNEL,
                reason,
                str(ttl),
                trends.channels_key(self.prefix, space.generation),
            ],
        )
        if not added or not self.notify_dlq:
            return
        if self.clock.now() - envelope.occurred_at > DLQ_NOTIFY_WITHIN:
            return
        hour = envelope.occurred_at.astimezone(UTC).strftime("%Y-%m-%dT%H")
        try:
            await HealthBoard(self.redis, self.prefix).notify(
                "dlq-growth",
                f"{topic} received dead letters (latest from {letter.stage}: {letter.error})"[:500],
                severity="warning",
                dedupe_key=f"dlq-growth:{topic}:{hour}",
                at=envelope.occurred_at,
            )
        except Exception:  # a notification must never stop the fold
            log.exception("could not notify DLQ growth of %s", topic)

    async def _notify_if_newly_late(self, row: OrderRow, old_raw: str | None) -> None:
        """Tell the operators when this fold made the order confirmed late, unless that confirmation is
        older than :data:`LATE_NOTIFY_WITHIN` (a rebuild folding old history)."""
        if not row.confirmed_late or not self.notify_late or row.confirmed_at is None:
            return
        old_row = _stored_row(old_raw)
        if old_row is not None and old_row.confirmed_late:
            return
        if self.clock.now() - row.confirmed_at > LATE_NOTIFY_WITHIN:
            return
        late_by = row.confirmed_at - cast(datetime, row.ship_by)
        message = (
            f"{row.channel} ({row.seller_id}): order {row.amazon_order_id} was confirmed late, "
            f"{_late_by_text(late_by)} after its ship-by date {row.ship_by:%Y-%m-%d %H:%M} UTC "
            "(counts toward the Late Shipment Rate)"
        )
        try:
            await HealthBoard(self.redis, self.prefix).notify(
                "late-shipment",
                message,
                severity="warning",
                channel=row.channel or None,
                dedupe_key=f"late-shipment:{row.seller_id}:{row.amazon_order_id}",
                at=row.confirmed_at,
            )
        except Exception:  # a notification must never stop the fold
            log.exception("could not notify the late confirmation of %s", row.amazon_order_id)

    async def count_skipped(self, topic: str, partition: int, offset: int) -> None:
        """Record an undecodable record the projection skipped (counted once per position)."""
        space = await self._space()
        await self.redis.sadd(space("skipped", topic), f"{partition}:{offset}")

    async def skipped(self) -> dict[str, int]:
        """Records per topic the projection skipped because they are not valid events."""
        space = await self._space()
        pipe = self.redis.pipeline(transaction=False)
        for spec in FOLDED_TOPICS:
            pipe.scard(space("skipped", spec.name))
        results = await pipe.execute()
        return {spec.name: int(n) for spec, n in zip(FOLDED_TOPICS, results, strict=True) if n}

    # --- retention ----------------------------------------------------------------------------------

    async def prune(self, before: datetime, limit: int = PRUNE_BATCH) -> int:
        """Remove at most ``limit`` orders last updated before ``before`` (the row's ``updated_at``, the
        ``z:updated_at`` score), oldest first: the facts, the row and every index entry; how many.

        The index entries are those the stored row put the order in, derived as the fold derives them.
        An order whose facts or row changed after they were read here (a fact folded meanwhile) is
        kept. Call again until it returns 0; a fact of a removed order folded later (a replay, a
        rebuild) brings the order back from that fact, and a later call removes it again if old."""
        if limit <= 0:  # (a negative LIMIT count would be every order)
            return 0
        space = await self._space()
        members = cast(
            list[str],
            await self.redis.zrange(
                space("z", "updated_at"), "-inf", f"({_epoch(before)}", byscore=True, offset=0, num=limit
            ),
        )
        if not members:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        for member in members:
            pipe.hlen(space("facts", member))
            pipe.get(space("row", member))
        read = await pipe.execute()
        args: list[str] = []
        for member, facts_count, raw_row in zip(members, read[::2], read[1::2], strict=True):
            removal = self._removal(space, member, raw_row)
            args += [space("facts", member), str(facts_count), space("row", member), raw_row or ""]
            args += [str(len(removal)), *removal]
        # One script: the checks and the removals of the whole batch are atomic, no fold in between.
        removed = await self._prune_script(keys=[self._generation_key], args=[space.generation, *args])
        return int(removed)

    @staticmethod
    def _removal(space: _Space, member: str, raw_row: str | None) -> list[str]:
        """The commands (as the scripts take them) removing an order stored with ``raw_row``."""
        writes = _Writes()
        writes.add("UNLINK", space("facts", member), space("row", member))
        if raw_row:
            for command in json.loads(raw_row).get("commands", ()):
                writes.add("HDEL", space("cmd", command["event_id"]), member)
                # A command of pruned orders only leaves the list of commands with its last order.
                writes.add(
                    "ZREM-IF-GONE",
                    space("z", "commands"),
                    space("cmd", command["event_id"]),
                    command["event_id"],
                )
            _, sets, scores = _stored_indexes(space, raw_row)
            for key in sorted(sets):
                writes.add("SREM", key, member)
            for name in sorted(scores):
                writes.add("ZREM", space("z", name), member)
        else:
            # No row to derive its entries from (never written so): at least out of every sorted set,
            # or it would stay at the head of z:updated_at and be read by every prune.
            for sort in get_args(SortKey):
                writes.add("ZREM", space.sort(sort), member)
            writes.add("ZREM", space("z", "await-ship"), member)
        return writes.args()

    # --- queries ------------------------------------------------------------------------------------

    async def _materialize(
        self,
        space: _Space,
        filter: OrderFilter,
        sort: SortKey,
        *,
        snapshot: bool = False,
        ttl_s: int = _TEMP_TTL_S,
    ) -> tuple[str, tuple[float, str] | None, list[str]]:
        """The sorted set holding the filter's orders scored by ``sort``; the score range still to apply
        (purchase-date bounds when sorting by purchase date) and the temporary keys to drop. With
        ``snapshot`` the result is always a copy, so paging through it is stable while orders change."""
        temps: list[str] = []

        def temp() -> str:
            name = space("tmp", uuid.uuid4().hex)
            temps.append(name)
            return name

        filters = _filter_sets(space, filter)
        pipe = self.redis.pipeline(transaction=False)
        if filter.deadline:
            by_deadline = temp()
            low_due, high_due = self._deadline_range(filter.deadline)
            pipe.zrangestore(by_deadline, space("z", "await-ship"), low_due, high_due, byscore=True)
            filters.append(by_deadline)
        text = (filter.text or "").strip()
        if text:
            by_text = temp()
            await self._search(space, text, by_text)
            filters.append(by_text)
        score_range: tuple[float, str] | None = None
        low = _epoch(filter.since) if filter.since else float("-inf")
        high = f"({_epoch(filter.until)}" if filter.until else "+inf"
        if filter.since or filter.until:
            if sort == "purchase_date":
                score_range = (low, high)
            else:
                by_date = temp()
                pipe.zrangestore(by_date, space("z", "purchase_date"), low, high, byscore=True)
                filters.append(by_date)
        source = space.sort(sort)
        if filters or snapshot:
            result = temp()
            pipe.zinterstore(result, {source: 1, **dict.fromkeys(filters, 0)})
            source = result
        for name in temps:
            pipe.expire(name, ttl_s)
        if len(pipe):
            await pipe.execute()
        return source, score_range, temps

    async def _search(self, space: _Space, text: str, destination: str) -> tuple[int, int, bool]:
        """The orders a search text finds, into ``destination`` (score 0): those with a seller SKU
        containing it in any case (a scan of the SKU names, one per SKU, at most
        :data:`SEARCH_MAX_SKUS` of them, and the SKU exactly as typed), and, for a text of digits and
        dashes, those whose id contains it (a scan of the order ids, at most :data:`SEARCH_MAX_IDS`
        found), and those whose id starts with it (its index range: a whole id needs no scan). Returns
        (SKUs, ids, truncated)."""
        lowered = text.lower()
        id_glob = ""
        if set(text) <= _ID_TEXT and len(text) < _ORDER_ID_LENGTH:
            id_glob = f"*{_glob_escape(text)}*|*"
        found = await self._search_script(
            keys=[space("z", "sku-names"), space("z", "id"), destination],
            args=[
                f"*{_glob_escape(lowered)}*\t*",
                id_glob,
                space("s", "sku", ""),
                SEARCH_MAX_SKUS,
                SEARCH_MAX_IDS,
                space("s", "sku", text),
                # Order ids are digits and dashes: "~" sorts after all of them, closing the prefix range.
                text,
            ],
        )
        skus, ids, truncated = (int(n) for n in found)
        if truncated:
            log.info("search %r: stopped at %d SKUs and %d order ids", text[:40], skus, ids)
        return skus, ids, bool(truncated)

    async def orders(
        self,
        filter: OrderFilter,
        *,
        sort: SortKey = "purchase_date",
        descending: bool = True,
        offset: int = 0,
        limit: int = 50,
    ) -> OrdersPage:
        """One page of the grid, with the exact number of orders the filter matches."""
        offset, limit = max(0, offset), max(0, limit)
        space = await self._space()
        walked = await self._walk(space, filter, sort=sort, descending=descending, offset=offset, limit=limit)
        if walked is not None:
            members, total = walked
            rows = await self._rows(space, members)
            return OrdersPage(rows=tuple(rows), total=total, offset=offset, limit=limit)
        source, score_range, temps = await self._materialize(space, filter, sort)
        try:
            members, total = await self._page(source, score_range, descending, offset, limit)
        finally:
            if temps:
                await self.redis.delete(*temps)
        rows = await self._rows(space, members)
        return OrdersPage(rows=tuple(rows), total=total, offset=offset, limit=limit)

    async def _walk(
        self, space: _Space, filter: OrderFilter, *, sort: SortKey, descending: bool, offset: int, limit: int
    ) -> tuple[list[str], int] | None:
        """A page of a filter made of sets only, without building the intersection: count with
        ``SINTERCARD`` and walk the sort key's sorted set until the page is full. Chosen when the walk is
        expected to visit fewer orders than the intersection holds (a broad filter, the first pages);
        None when the intersection is cheaper."""
        if filter.text or filter.since or filter.until or filter.deadline:
            return None
        sets: list[Any] = _filter_sets(space, filter)
        if not sets:
            return None
        pipe = self.redis.pipeline(transaction=False)
        pipe.sintercard(len(sets), sets)
        pipe.zcard(space.sort(sort))
        total, everything = (int(n) for n in await pipe.execute())
        if not total or not limit or offset >= total:
            return [], total
        expected_visits = (offset + limit) * everything / total
        if expected_visits > max(total, _WALK_MIN_VISITS):
            return None
        chunk = min(_WALK_CHUNK, int(expected_visits) + 16)
        members = await self._walk_script(
            keys=[space.sort(sort), *sets], args=[offset, limit, 1 if descending else 0, chunk]
        )
        return cast(list[str], members), total

    def _deadline_range(self, deadline: Deadline) -> tuple[float | str, float | str]:
        """The ``z:await-ship`` score range of a deadline filter, as of the model's clock: overdue is a
        ship-by date before now, at risk one from now to now + the lead time."""
        now = self.clock.now()
        if deadline == "overdue":
            return "-inf", f"({_epoch(now)}"
        return _epoch(now), _epoch(now + self.ship_by_lead)

    async def _page(
        self,
        source: str,
        score_range: tuple[float, str] | None,
        descending: bool,
        offset: int,
        limit: int,
    ) -> tuple[list[str], int]:
        pipe = self.redis.pipeline(transaction=True)
        if score_range is None:
            pipe.zcard(source)
            if limit:
                pipe.zrange(source, offset, offset + limit - 1, desc=descending)
        else:
            low, high = score_range
            pipe.zcount(source, low, high)
            if limit:
                start, end = (high, low) if descending else (low, high)
                pipe.zrange(source, start, end, desc=descending, byscore=True, offset=offset, num=limit)
        results = await pipe.execute()
        total = int(results[0])
        members = cast(list[str], results[1]) if limit else []
        return members, total

    async def _rows(self, space: _Space, members: list[str]) -> list[OrderRow]:
        if not members:
            return []
        raws = cast(list[str | None], await self.redis.mget([space("row", m) for m in members]))
        return [OrderRow.model_validate(json.loads(raw)["row"]) for raw in raws if raw]

    async def rows_of(self, orders: Iterable[tuple[str, str]]) -> dict[tuple[str, str], OrderRow]:
        """The rows of (seller id, order id) pairs, in one round trip; orders never seen are left out."""
        wanted = list(dict.fromkeys(orders))
        if not wanted:
            return {}
        space = await self._space()
        raws = cast(list[str | None], await self.redis.mget([space("row", _member(s, o)) for s, o in wanted]))
        return {
            pair: OrderRow.model_validate(json.loads(raw)["row"])
            for pair, raw in zip(wanted, raws, strict=True)
            if raw
        }

    async def order(self, seller_id: str, amazon_order_id: str) -> OrderDetail | None:
        """One order with its lines, packages, errors and history; None when never seen."""
        return await self._order(await self._space(), _member(seller_id, amazon_order_id))

    async def _order(self, space: _Space, member: str) -> OrderDetail | None:
        seller_id, amazon_order_id = _split_member(member)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hgetall(space("facts", member))
        pipe.get(space("row", member))
        raw_facts, raw_row = await pipe.execute()
        if not raw_facts or not raw_row:
            return None
        derived = derive(seller_id, amazon_order_id, _loaded_facts(raw_facts))
        row = OrderRow.model_validate(json.loads(raw_row)["row"])
        return OrderDetail(
            row=row,
            lines=tuple(derived.lines),
            shipments=tuple(derived.shipments),
            errors=tuple(derived.errors),
            history=tuple(derived.history),
            easy_ship=derived.easy_ship,
            commands=tuple(derived.commands),
        )

    async def find(self, amazon_order_id: str, channel: str | None = None) -> list[OrderDetail]:
        """Every order with this id (one per seller, normally one), optionally of one channel."""
        space = await self._space()
        members = cast(
            list[str],
            await self.redis.zrangebylex(
                space("z", "id"), f"[{amazon_order_id}|", f"[{amazon_order_id}|\x7f"
            ),
        )
        found: list[OrderDetail] = []
        for member in members:
            detail = await self._order(space, member)
            if detail is not None and (channel is None or detail.row.channel == channel):
                found.append(detail)
        return found

    async def iter_orders(self, filter: OrderFilter, *, batch: int = 500) -> AsyncIterator[OrderDetail]:
        """Every order the filter matches, oldest purchase first, with its detail."""
        space = await self._space()
        # A snapshot that outlives a slow reader (a CSV download paced by the client).
        source, score_range, temps = await self._materialize(
            space, filter, "purchase_date", snapshot=True, ttl_s=_ITERATION_TTL_S
        )
        try:
            offset = 0
            while True:
                await self.redis.expire(source, _ITERATION_TTL_S)
                members, _ = await self._page(source, score_range, False, offset, batch)
                for member in members:
                    detail = await self._order(space, member)
                    if detail is not None:
                        yield detail
                if len(members) < batch:
                    return
                offset += batch
        finally:
            if temps:
                await self.redis.delete(*temps)

    async def easy_ship_counts(self, channel: str | None = None) -> dict[EasyShipState, int]:
        """Orders per Easy Ship state the grid filters on (of one channel, or of all)."""
        space = await self._space()
        pipe = self.redis.pipeline(transaction=False)
        for state in EASY_SHIP_STATES:
            if channel is None:
                pipe.scard(space("s", "easy-ship", state))
            else:
                pipe.sintercard(2, [space("s", "easy-ship", state), space("s", "channel", channel)])
        results = await pipe.execute()
        return {state: int(n) for state, n in zip(EASY_SHIP_STATES, results, strict=True)}

    async def counts(self, channel: str | None = None) -> dict[OverallStatus, int]:
        """Orders per overall status (of one channel, or of all)."""
        space = await self._space()
        pipe = self.redis.pipeline(transaction=False)
        for status in OVERALL_STATUSES:
            if channel is None:
                pipe.scard(space("s", "status", status))
            else:
                pipe.sintercard(2, [space("s", "status", status), space("s", "channel", channel)])
        results = await pipe.execute()
        return {status: int(n) for status, n in zip(OVERALL_STATUSES, results, strict=True)}

    async def status_counts(self) -> StatusCounts:
        """Orders per overall status in all, per account (channel and seller, as :meth:`sellers`) and
        of no known account: the one count the grid, the status key and ``ordersync status`` show (the
        status sets the grid's status filter reads, so they always agree)."""
        space = await self._space()
        accounts = await self.sellers()
        pipe = self.redis.pipeline(transaction=False)
        for status in OVERALL_STATUSES:
            pipe.scard(space("s", "status", status))
        for channel, seller in accounts:
            for status in OVERALL_STATUSES:
                pipe.sintercard(
                    3,
                    [
                        space("s", "status", status),
                        space("s", "seller", seller),
                        space("s", "channel", channel),
                    ],
                )
        results = [int(n) for n in await pipe.execute()]
        width = len(OVERALL_STATUSES)
        total = dict(zip(OVERALL_STATUSES, results[:width], strict=True))
        per_account: list[tuple[str, str, dict[OverallStatus, int]]] = []
        unattributed = dict(total)
        for i, (channel, seller) in enumerate(accounts):
            counts = dict(zip(OVERALL_STATUSES, results[width * (i + 1) : width * (i + 2)], strict=True))
            per_account.append((channel, seller, counts))
            for status, n in counts.items():
                unattributed[status] -= n
        return StatusCounts(total=total, accounts=tuple(per_account), unattributed=unattributed)

    async def command(self, event_id: str) -> CommandOutcome:
        """An operator command's outcome per order, as folded so far (no order yet: not folded yet)."""
        space = await self._space()
        raw = cast(dict[str, str], await self.redis.hgetall(space("cmd", event_id)))
        return _command_outcome(event_id, raw)

    async def recent_commands(self, limit: int = 20) -> list[CommandOutcome]:
        """The latest operator commands folded, newest first, each with its orders' outcomes."""
        space = await self._space()
        ids = cast(
            list[str], await self.redis.zrange(space("z", "commands"), 0, max(0, limit - 1), desc=True)
        )
        if not ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for event_id in ids:
            pipe.hgetall(space("cmd", event_id))
        found: list[CommandOutcome] = []
        gone: list[str] = []
        for event_id, raw in zip(ids, await pipe.execute(), strict=True):
            if raw:
                found.append(_command_outcome(event_id, cast(dict[str, str], raw)))
            else:
                gone.append(event_id)  # every order of it was pruned
        if gone:
            await self.redis.zrem(space("z", "commands"), *gone)
        return found

    async def shipment_timeliness(self) -> list[ShipmentTimeliness]:
        """Per account the model has seen: orders ordersync confirmed and those confirmed late, and the
        orders awaiting shipment now overdue or at risk (as of the model's clock and lead time)."""
        space = await self._space()
        accounts = await self.sellers()
        now = self.clock.now()
        pipe = self.redis.pipeline(transaction=False)
        for _, seller in accounts:
            pipe.scard(space.confirmed(seller))
            pipe.scard(space.late(seller))
        pipe.zrange(
            space("z", "await-ship"), "-inf", _epoch(now + self.ship_by_lead), byscore=True, withscores=True
        )
        results = await pipe.execute()
        due = cast(list[tuple[str, float]], results[-1])
        overdue: dict[str, int] = {}
        at_risk: dict[str, int] = {}
        due_ids: dict[str, list[str]] = {}
        for member, score in due:  # earliest ship-by first
            seller, order_id = _split_member(member)
            counter = overdue if score < _epoch(now) else at_risk
            counter[seller] = counter.get(seller, 0) + 1
            shown = due_ids.setdefault(seller, [])
            if len(shown) < _DUE_IDS_SHOWN:
                shown.append(order_id)
        return [
            ShipmentTimeliness(
                channel=channel,
                seller_id=seller,
                confirmed=int(results[2 * i]),
                late=int(results[2 * i + 1]),
                at_risk=at_risk.get(seller, 0),
                overdue=overdue.get(seller, 0),
                due_order_ids=tuple(due_ids.get(seller, ())),
            )
            for i, (channel, seller) in enumerate(accounts)
        ]

    async def dlq_sizes(self) -> list[DlqSize]:
        """Dead letters per DLQ topic the projection has read (all of them, replayed or not)."""
        space = await self._space()
        topics = [spec.name for spec in CATALOGUE if spec.name.endswith(".dlq")]
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrange(space("dlq-last"), 0, -1, withscores=True)
        for topic in topics:
            pipe.scard(space("dlq", topic))
        results = await pipe.execute()
        last = dict(cast(list[tuple[str, float]], results[0]))
        sizes: list[DlqSize] = []
        for topic, count in zip(topics, results[1:], strict=True):
            at = last.get(topic)
            sizes.append(
                DlqSize(
                    topic=topic,
                    records=int(count),
                    last_at=datetime.fromtimestamp(at, UTC) if at is not None else None,
                )
            )
        return sizes

    async def tasks(self) -> list[TaskRow]:
        """Task health recorded by the stages (:meth:`ordersync.state.store.Store.record_task`)."""
        from ordersync.state.store import Store  # noqa: PLC0415 - avoids an import cycle through settings

        store = Store(self.redis, self.prefix)
        members = sorted(cast(set[str], await self.redis.smembers(store.key_of(keys.TASKS))))
        rows: list[TaskRow] = []
        for member in members:
            task, scope = json.loads(member)
            fields = await store.task(task, scope)
            if not fields:
                continue
            rows.append(
                TaskRow(
                    task=task,
                    scope=scope,
                    last_run=parse_iso(fields.get("last_run")),
                    last_success=parse_iso(fields.get("last_success")),
                    last_result=fields.get("last_result"),
                    last_error=fields.get("last_error"),
                    last_error_at=parse_iso(fields.get("last_error_at")),
                    every_s=float(fields["every_s"]) if fields.get("every_s") else None,
                    next_run=parse_iso(fields.get("next_run")),
                    run_requested_at=parse_iso(fields.get("run_requested_at")),
                    run_requested_by=fields.get("run_requested_by"),
                )
            )
        return rows

    async def sellers(self) -> list[tuple[str, str]]:
        """(channel, seller_id) of every account the model has seen."""
        space = await self._space()
        members = cast(set[str], await self.redis.smembers(space("sellers")))
        return sorted(cast(tuple[str, str], tuple(m.split("|", 1))) for m in members)

    async def reset(self) -> None:
        """Drop the whole model (before a rebuild); task health and other state are not touched.

        The next generation starts empty at once; the old one's keys are deleted afterwards."""
        old = await self._space()
        await self.redis.incr(self._generation_key)
        batch: list[str] = []
        async for name in self.redis.scan_iter(match=f"{old.root}:*", count=1000):
            batch.append(name)
            if len(batch) >= 1000:
                await self.redis.unlink(*batch)
                batch = []
        if batch:
            await self.redis.unlink(*batch)
