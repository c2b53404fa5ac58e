"""The versioned envelope every event travels in, and the base of every event.

Wire form (JSON, UTF-8)::

    {"event_id": "...", "event_type": "OrderDownloaded", "schema_version": 1,
     "occurred_at": "2026-11-24T10:00:00Z", "seller_id": "A2...", "marketplace_id": "ATVPDKIKX0DER",
     "correlation_id": "...", "payload": {...}}

``event_type`` and ``schema_version`` name the payload model; an older version is brought up to the
current one by the upcasters registered in :mod:`ordersync.schemas.codec` before it is validated.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar, Generic, TypeVar, cast

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field


class Event(BaseModel):
    """A fact that happened: frozen, past-tense name, a version of its own."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Bump when the payload changes incompatibly, and register an upcaster from the old version.
    schema_version: ClassVar[int] = 1

    @classmethod
    def event_type(cls) -> str:
        return cls.__name__


EventT = TypeVar("EventT", bound=Event)
E = TypeVar("E", bound=Event)


def utc_now() -> datetime:
    return datetime.now(UTC)


class Envelope(BaseModel, Generic[EventT]):
    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    event_type: str
    schema_version: int
    occurred_at: AwareDatetime = Field(default_factory=utc_now)
    seller_id: str
    marketplace_id: str | None = None
    correlation_id: str
    payload: EventT

    @classmethod
    def wrap(
        cls,
        payload: EventT,
        *,
        seller_id: str,
        correlation_id: str,
        marketplace_id: str | None = None,
        occurred_at: datetime | None = None,
        event_id: uuid.UUID | None = None,
    ) -> Envelope[EventT]:
        """``event_id``: where the same event may be sent again (a copy made before a crash), one derived
        from what it is about, so every copy is one event to those who count by id; else a new one."""
        extra: dict[str, Any] = {} if occurred_at is None else {"occurred_at": occurred_at}
        if event_id is not None:
            extra["event_id"] = event_id
        # Parametrised with the payload's own class: an Envelope[Event] would serialise only the
        # fields of the base class.
        model: type[Envelope[EventT]] = cast(Any, Envelope)[type(payload)]
        return model(
            event_type=payload.event_type(),
            schema_version=payload.schema_version,
            seller_id=seller_id,
            marketplace_id=marketplace_id,
            correlation_id=correlation_id,
            payload=payload,
            **extra,
        )

    def payload_as(self, model: type[E]) -> E:
        """The payload as ``model``; the codec already checked the type against the topic."""
        if not isinstance(self.payload, model):
            raise TypeError(f"expected {model.__name__}, got {type(self.payload).__name__}")
        return self.payload
