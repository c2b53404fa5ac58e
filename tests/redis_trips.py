"""Counting Redis round trips at the socket, for the tests that hold stages to a number of them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from redis.asyncio.connection import AbstractConnection


class TripCounter:
    def __init__(self) -> None:
        self.trips = 0


@contextmanager
def counting_trips(monkeypatch: pytest.MonkeyPatch) -> Iterator[TripCounter]:
    """Every request written to a Redis socket (a pipeline is one) while the block runs."""
    counter = TripCounter()
    send: Callable[..., Awaitable[None]] = AbstractConnection.send_packed_command

    async def counted(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        counter.trips += 1
        await send(self, command, check_health)

    with monkeypatch.context() as patch:
        patch.setattr(AbstractConnection, "send_packed_command", counted)
        yield counter
