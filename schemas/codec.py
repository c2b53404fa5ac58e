"""The one codec: envelope <-> bytes, shared by faust agents and plain Kafka clients so the bytes match.

Decoding validates against the topic's catalogue entry and brings old schema versions up to date with
the registered upcasters; anything that fails raises :class:`~ordersync.errors.InvalidEvent` with a
sentence saying why, which the stage routes to the topic's dead-letter companion.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from ordersync.errors import InvalidEvent
from ordersync.schemas.envelope import Envelope, Event
from ordersync.schemas.topics import TopicSpec

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]

#: The largest record value a stage reads. Amazon's largest order with its items is far below this;
#: anything bigger is another system's mistake and goes to the dead-letter topic (by reference, see
#: :class:`~ordersync.schemas.events.EventDeadLettered`), never into memory-hungry parsing.
MAX_RECORD_BYTES = 512 * 1024
#: The deepest nesting of objects and arrays a record may have (ordersync's own events nest about 6
#: deep). Bounding it keeps a hostile record from exhausting the parser's recursion.
MAX_NESTING = 32


def _only_added_optional_fields(payload: dict[str, Any]) -> dict[str, Any]:
    """A version that only added optional fields: the older payload is valid as it is."""
    return payload


#: (event_type, from_version) -> function turning that version's payload into version + 1.
_UPCASTERS: dict[tuple[str, int], Upcaster] = {
    # Version 2: the order's sealed personal data and delivery promise (AmazonOrder.personal and
    # .latest_delivery_date, SalesOrder.personal). A version-1 reader meets a version-2 event as "newer
    # than this build knows" (dead-lettered, replayed once upgraded), never as a malformed one.
    ("OrderDownloaded", 1): _only_added_optional_fields,
    ("OrderEnriched", 1): _only_added_optional_fields,
    ("OrderImported", 1): _only_added_optional_fields,
    # Version 3 of the order events: programmes, associated orders, the delivery promise's start
    # (AmazonOrder, AmazonOrderItem and SalesOrder fields with defaults).
    ("OrderDownloaded", 2): _only_added_optional_fields,
    ("OrderEnriched", 2): _only_added_optional_fields,
    ("OrderImported", 2): _only_added_optional_fields,
    # Version 2 of the shipment events: a label bought on Amazon, and what follows from it.
    ("InvoiceIssued", 1): _only_added_optional_fields,
    ("ShipmentRequested", 1): _only_added_optional_fields,
    ("ShipmentConfirmed", 1): _only_added_optional_fields,
    # Version 2 of a stock level: the handling time and restock date sent with it.
    ("InventoryLevelChanged", 1): _only_added_optional_fields,
}


def upcaster(event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
    """Register a payload upcaster from ``from_version`` to ``from_version + 1``."""

    def register(fn: Upcaster) -> Upcaster:
        _UPCASTERS[(event_type, from_version)] = fn
        return fn

    return register


def encode(envelope: Envelope[Any]) -> bytes:
    return envelope.model_dump_json().encode()


def encode_key(key: str) -> bytes:
    return key.encode()


def _nesting_exceeds(data: Any, limit: int) -> bool:
    """Whether objects and arrays nest deeper than ``limit`` (iteratively: no recursion to exhaust)."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def decode(raw: bytes | None, topic: TopicSpec) -> Envelope[Event]:
    """Parse, upcast and validate one record value of ``topic``."""
    if raw is None:
        raise InvalidEvent(f"{topic.name}: empty record (tombstone) where an event was expected")
    if len(raw) > MAX_RECORD_BYTES:
        raise InvalidEvent(
            f"{topic.name}: record of {len(raw)} bytes is over the {MAX_RECORD_BYTES}-byte limit"
        )
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidEvent(f"{topic.name}: not JSON: {exc}") from exc
    except RecursionError as exc:
        raise InvalidEvent(f"{topic.name}: JSON nested deeper than {MAX_NESTING} levels") from exc
    if _nesting_exceeds(data, MAX_NESTING):
        raise InvalidEvent(f"{topic.name}: JSON nested deeper than {MAX_NESTING} levels")
    if not isinstance(data, dict):
        raise InvalidEvent(f"{topic.name}: expected a JSON object, got {type(data).__name__}")
    event_type = data.get("event_type")
    model = topic.accepts(event_type) if isinstance(event_type, str) else None
    if model is None:
        allowed = ", ".join(e.event_type() for e in topic.events)
        raise InvalidEvent(f"{topic.name}: event_type {event_type!r} is not one of: {allowed}")
    version = data.get("schema_version")
    if not isinstance(version, int) or version < 1:
        raise InvalidEvent(f"{topic.name}: schema_version must be a positive integer, got {version!r}")
    if version > model.schema_version:
        raise InvalidEvent(
            f"{topic.name}: {event_type} version {version} is newer than this build knows "
            f"({model.schema_version}); upgrade ordersync"
        )
    payload = data.get("payload")
    while version < model.schema_version:
        step = _UPCASTERS.get((event_type, version))  # type: ignore[arg-type]
        if step is None or not isinstance(payload, dict):
            raise InvalidEvent(f"{topic.name}: no upcaster for {event_type} version {version}")
        payload = step(payload)
        version += 1
    data = {**data, "payload": payload, "schema_version": version}
    try:
        return Envelope[model].model_validate(data)  # type: ignore[valid-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()[:10]
        )
        raise InvalidEvent(f"{topic.name}: invalid {event_type}: {problems}") from exc
