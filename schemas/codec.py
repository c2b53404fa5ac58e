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

#: (event_type, from_version) -> function turning that version's payload into version + 1.
_UPCASTERS: dict[tuple[str, int], Upcaster] = {}


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


def decode(raw: bytes | None, topic: TopicSpec) -> Envelope[Event]:
    """Parse, upcast and validate one record value of ``topic``."""
    if raw is None:
        raise InvalidEvent(f"{topic.name}: empty record (tombstone) where an event was expected")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidEvent(f"{topic.name}: not JSON: {exc}") from exc
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
