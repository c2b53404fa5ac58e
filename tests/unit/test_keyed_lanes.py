"""Keyed lanes: records of one key one after another in their order, records of other keys meanwhile,
back-pressure on the reader, and a lane that dies stops the reader instead of being skipped."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from types import SimpleNamespace

import pytest

from ordersync.pipeline.lanes import KeyedLanes, lane_of
from ordersync.pipeline.runtime import _InHand

pytestmark = pytest.mark.unit


def keys_in_distinct_lanes(lanes: int, count: int) -> list[bytes]:
    found: dict[int, bytes] = {}
    number = 0
    while len(found) < count:
        key = f"A1SELLER:111-0000000-{number:07d}".encode()
        found.setdefault(lane_of(key, lanes), key)
        number += 1
    return list(found.values())


async def test_records_of_one_key_run_one_at_a_time_in_their_order() -> None:
    rng = random.Random(7)
    seen: dict[bytes, list[int]] = defaultdict(list)
    running: dict[bytes, int] = defaultdict(int)
    overlap = []

    async def work(item: tuple[bytes, int]) -> None:
        key, number = item
        running[key] += 1
        overlap.append(running[key])
        await asyncio.sleep(rng.random() / 1000)
        seen[key].append(number)
        running[key] -= 1

    keys = [f"K{k}".encode() for k in range(5)]
    async with KeyedLanes(3, work) as lanes:
        for number in range(200):
            key = rng.choice(keys)
            await lanes.put(key, (key, number))
        await lanes.drain()
    assert sum(len(v) for v in seen.values()) == 200
    for numbers in seen.values():
        assert numbers == sorted(numbers)
    assert max(overlap) == 1


async def test_a_key_waiting_holds_up_only_its_own_lane() -> None:
    blocked, other = keys_in_distinct_lanes(4, 2)
    release = asyncio.Event()
    done: list[bytes] = []

    async def work(key: bytes) -> None:
        if key == blocked:
            await release.wait()
        done.append(key)

    async with KeyedLanes(4, work) as lanes:
        await lanes.put(blocked, blocked)
        for _ in range(3):
            await lanes.put(other, other)
        await asyncio.sleep(0.01)
        assert done == [other, other, other]  # went past the blocked key
        release.set()
        await lanes.drain()
    assert done == [other, other, other, blocked]


async def test_the_reader_waits_while_a_lane_is_full() -> None:
    release = asyncio.Event()

    async def work(item: int) -> None:
        await release.wait()

    async with KeyedLanes(1, work, depth=2) as lanes:
        for item in range(3):  # one in hand, two queued
            await lanes.put(b"k", item)
        fourth = asyncio.ensure_future(lanes.put(b"k", 3))
        await asyncio.sleep(0.01)
        assert not fourth.done()
        release.set()
        await asyncio.wait_for(fourth, 1)
        await lanes.drain()


async def test_a_lane_that_died_stops_the_reader() -> None:
    async def work(item: int) -> None:
        raise ValueError(f"a bug with {item}")

    async def read(lanes: KeyedLanes[int]) -> None:
        for item in range(1, 10):
            await lanes.put(b"k", item)

    async with KeyedLanes(2, work, depth=1) as lanes:
        with pytest.raises(RuntimeError, match="a keyed lane stopped") as raised:
            await read(lanes)
        assert isinstance(raised.value.__cause__, ValueError)


async def test_leaving_cancels_what_was_not_worked_on() -> None:
    worked: list[int] = []
    release = asyncio.Event()

    async def work(item: int) -> None:
        await release.wait()
        worked.append(item)

    async with KeyedLanes(1, work) as lanes:
        for item in range(3):
            await lanes.put(b"k", item)
        await asyncio.sleep(0.01)
    release.set()
    await asyncio.sleep(0.01)
    assert worked == []


def test_a_key_always_maps_to_the_same_lane_and_no_key_to_the_first() -> None:
    assert lane_of(b"A1SELLER:111", 8) == lane_of(b"A1SELLER:111", 8)
    assert lane_of(None, 8) == 0
    assert {lane_of(f"k{n}".encode(), 8) for n in range(100)} == set(range(8))
    with pytest.raises(ValueError, match="at least 1"):
        KeyedLanes(0, lambda item: asyncio.sleep(0))


def test_lag_is_measured_from_the_first_record_not_settled() -> None:
    next_offsets: dict[tuple[str, int], int] = {}
    in_hand = _InHand(next_offsets)

    def message(offset: int) -> SimpleNamespace:
        return SimpleNamespace(topic="t", partition=0, offset=offset)

    for offset in (10, 11, 12):
        in_hand.taken(message(offset))
    in_hand.done(message(12))
    assert next_offsets[("t", 0)] == 10  # 10 and 11 are still in hand
    in_hand.done(message(10))
    assert next_offsets[("t", 0)] == 11
    in_hand.done(message(11))
    assert next_offsets[("t", 0)] == 13
