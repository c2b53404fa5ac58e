"""What sealing buyers' personal data costs: per order, in events/s through the stages, and at the key store.

Prints figures (and a markdown table for the README); asserts nothing. With a real Redis and moto's S3
server holding the wrapped day keys (a local key-encryption key, as ``ordersync privacy new-kek`` makes):

- **per order**: ``seal_order`` / ``open_order`` of orders with a full address (name, one or two lines,
  postal code, phone), the buyer's name and e-mail and 1-3 items (some with a gift message), the day
  key in memory; and the AES-GCM step alone (``seal`` / ``unseal`` of the fields);
- **through the stages**: the stage code unchanged, each record through ``StageRuntime.process`` (decode,
  the waiting-line check, the handler, the recording producer's encode; the stage tests' harness,
  :class:`ordersync.dev.testing.RecordingRuntime`), for one channel with ``fetch_pii: false`` (nothing
  sealed: Amazon sends no personal data, any that came would be dropped) and the same channel with
  ``fetch_pii: true`` (sealed), fresh orders each run, the two modes taking turns every ``--chunk``
  orders (so that what slows the machine for a while slows both), medians of the runs reported:

  - item fetch of Orders v0 merchant-fulfilled orders: the order as downloaded (its postal code sealed
    by the download), its items, and with ``fetch_pii`` the full address; opened, joined and sealed
    again. Amazon's answers (getOrderItems, getOrderAddress) come from memory, so the figures are the
    stage's own work, not Amazon's latency nor its quota (getOrderItems: 0.5/s per seller);
  - import of what that item fetch emitted (it copies ``personal`` to the sales order, opens nothing);
  - order download's ``emit_if_new`` of Orders 2026-01-01 orders (buyer and recipient embedded): where a
    2026-01-01 channel's orders are sealed (their item fetch then seals nothing);

- **the key store**: ``seal_order`` of the first order of a new day of delivery (its key made, wrapped
  and stored in S3), ``open_order`` in a process that does not hold the day key (read from S3 and
  unwrapped: another stage, or after the 10-minute cache), a key lookup in memory. Through
  ``seal_order`` / ``open_order``, so every S3 request the key ring makes per key is counted.

It starts its own redis-server and moto server (``ordersync.dev.devinfra``) unless
``ORDERSYNC_REDIS__URL`` / ``ORDERSYNC_AWS__ENDPOINT_URL`` are set (then it writes under a fresh Redis key
prefix, removed at the end, and a fresh bucket).

    .venv/bin/python bench/privacy.py [--orders 1000] [--repeats 7] [--micro 2000] [--new-keys 20]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import random
import statistics
import string
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal, cast

from pydantic import SecretStr

from ordersync.amazon.client import SpApiClient
from ordersync.channels import Channel, ChannelsFile
from ordersync.clock import SYSTEM_CLOCK
from ordersync.dev.testing import Emitted, Message, Record, RecordingRuntime, channels_of
from ordersync.kafka.faust_app import make_app
from ordersync.pipeline.runtime import StageRuntime
from ordersync.privacy import new_kek, seal, unseal
from ordersync.privacy.keyring import KeyRing, open_key_ring
from ordersync.privacy.orders import open_order, personal_fields, seal_order, subject, without_personal
from ordersync.producers.download_send import downloaded_event, emit_if_new
from ordersync.ratelimit import InMemoryRateLimiter, PlanBook
from ordersync.schemas.codec import encode
from ordersync.schemas.envelope import Envelope, Event
from ordersync.schemas.events import Address, AmazonOrder, AmazonOrderItem, Money
from ordersync.schemas.topics import ORDERS_DOWNLOADED, ORDERS_ENRICHED, ORDERS_IMPORTED, TopicSpec
from ordersync.settings import LOCAL_AWS_KEY, AwsSettings, PrivacySettings, RedisSettings, Settings
from ordersync.simulator.testing import tiny_scenario
from ordersync.streams import item_fetch, order_import

Mode = Literal["plain", "sealed"]
Handler = Callable[[StageRuntime, Envelope[Event]], Awaitable[None]]
MODES: tuple[Mode, Mode] = ("plain", "sealed")
MARKETPLACE = "ATVPDKIKX0DER"
SKUS = 300
#: A seller of its own for the key-store figures, so its days are first used there.
KEY_SELLER = "A9BENCHKEYS"

# --- orders as Amazon gives them ---------------------------------------------------------------------

_FIRST = ("Olivia", "Liam", "Emma", "Noah", "Ava", "Mateo", "Sophia", "Lucas", "Isabella", "Ethan", "Zoë")
_LAST = ("Johnson", "García", "Smith", "Nguyen", "Williams", "O'Brien", "Martínez", "Kowalski", "Okafor")
_STREETS = (
    "Westlake Avenue North",
    "Maple Street",
    "Martin Luther King Jr Boulevard",
    "Old Orchard Road",
    "Elm Street",
    "Sunset Boulevard",
    "Commonwealth Avenue",
)
_CITIES = (
    ("Seattle", "WA", "98109"),
    ("Austin", "TX", "78701"),
    ("Brooklyn", "NY", "11201"),
    ("Columbus", "OH", "43215"),
    ("San Diego", "CA", "92101"),
    ("Denver", "CO", "80202"),
)
_GIFTS = (
    "Happy birthday, Sam! Love from Grandma and Grandpa",
    "Congratulations on the new job - so proud of you. x",
    "Merry Christmas!",
)
_WORDS = ("Stainless", "Steel", "Insulated", "Water", "Bottle", "32 oz", "Wireless", "Earbuds", "Charging")


@dataclass(frozen=True)
class Bought:
    """One order in full, as a seller allowed personal data sees it (2026-01-01 embeds all of it)."""

    order: AmazonOrder
    items: tuple[AmazonOrderItem, ...]
    address: Address


def _usd(amount: Decimal) -> Money:
    return Money(currency="USD", amount=amount)


def _bought(rng: random.Random, seller_id: str, order_id: str, now: datetime) -> Bought:
    city, state, postal = rng.choice(_CITIES)
    name = f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
    address = Address(
        name=name,
        line1=f"{rng.randint(1, 9999)} {rng.choice(_STREETS)}",
        line2=rng.choice((None, None, f"Apt {rng.randint(1, 40)}{rng.choice('ABCD')}", "Suite 210")),
        city=city,
        state_or_region=state,
        postal_code=f"{postal}-{rng.randint(1000, 9999)}" if rng.random() < 0.5 else postal,
        country_code="US",
        phone=f"+1 {rng.randint(201, 989)}-555-{rng.randint(0, 9999):04d}",
    )
    gift = rng.random() < 0.08
    items = []
    for n in range(rng.choices((1, 2, 3), weights=(60, 30, 10))[0]):
        quantity = rng.choice((1, 1, 1, 2))
        price = Decimal(rng.randint(599, 8999)) / 100 * quantity
        items.append(
            AmazonOrderItem(
                order_item_id=str(rng.randrange(10**13, 10**14)),
                asin="B0" + "".join(rng.choices(string.ascii_uppercase + string.digits, k=8)),
                seller_sku=f"SKU-{rng.randrange(SKUS):05d}",
                title=" ".join(rng.sample(_WORDS, 5)),
                quantity_ordered=quantity,
                item_price=_usd(price),
                item_tax=_usd((price * Decimal("0.0825")).quantize(Decimal("0.01"))),
                shipping_price=_usd(Decimal("4.99") if n == 0 else Decimal(0)),
                shipping_tax=_usd(Decimal(0)),
                is_gift=gift,
                gift_message=rng.choice(_GIFTS) if gift and n == 0 else None,
            )
        )
    purchased = now - timedelta(seconds=rng.randrange(6 * 3600))
    delivery = rng.randint(3, 9)
    total = sum((item.item_price.amount for item in items if item.item_price), Decimal(0))
    order = AmazonOrder(
        amazon_order_id=order_id,
        seller_id=seller_id,
        marketplace_id=MARKETPLACE,
        order_status="Unshipped",
        fulfillment_channel="MFN",
        purchase_date=purchased,
        last_update_date=purchased + timedelta(minutes=rng.randint(1, 30)),
        order_total=_usd(total),
        ship_service_level="Std US D2D Dom",
        buyer_name=name,
        buyer_email="".join(rng.choices(string.ascii_lowercase + string.digits, k=16))
        + "@marketplace.amazon.com",
        shipping_address=address,
        latest_ship_date=purchased + timedelta(days=2),
        # About a week of delivery days: a handful of day keys per seller, as in steady operation.
        earliest_delivery_date=purchased + timedelta(days=delivery),
        latest_delivery_date=purchased + timedelta(days=delivery + 2),
        items=tuple(items),
        api_version="2026-01-01",
    )
    return Bought(order, tuple(items), address)


def orders(seller_id: str, run: int, count: int, seed: int) -> list[Bought]:
    """``count`` orders no other run has (the run's number is in every order id)."""
    rng = random.Random(seed * 1000 + run)
    now = datetime.now(UTC)
    return [
        _bought(rng, seller_id, f"{100 + run:03d}-{n:07d}-{rng.randrange(10**7):07d}", now)
        for n in range(count)
    ]


def listed_v0(bought: Bought) -> AmazonOrder:
    """The order as Orders v0's getOrders lists it: no items, no buyer, the address without name, lines or
    phone (city, region, postal code, country)."""
    full = bought.address
    return bought.order.model_copy(
        update={
            "api_version": "v0",
            "items": None,
            "buyer_name": None,
            "buyer_email": None,
            "shipping_address": Address(
                city=full.city,
                state_or_region=full.state_or_region,
                postal_code=full.postal_code,
                country_code=full.country_code,
            ),
        }
    )


# --- the harness ---------------------------------------------------------------------------------------


class PreSupplied:
    """Amazon's answers to item fetch (getOrderItems, getOrderAddress), from memory."""

    def __init__(self) -> None:
        self.items: dict[str, tuple[AmazonOrderItem, ...]] = {}
        self.addresses: dict[str, Address] = {}

    async def get_order_items(self, amazon_order_id: str) -> tuple[AmazonOrderItem, ...]:
        return self.items[amazon_order_id]

    async def get_order_address(self, amazon_order_id: str) -> Address | None:
        return self.addresses.get(amazon_order_id)


class BenchRuntime(RecordingRuntime):
    """The stage tests' recording runtime, its Amazon client answering from :class:`PreSupplied`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.answers = PreSupplied()

    def amazon(self, channel: Channel) -> SpApiClient:
        return cast(SpApiClient, self.answers)


def records(spec: TopicSpec, envelopes: list[Envelope[Any]], keys: list[str]) -> list[Record]:
    return [
        Record(Message(encode(envelope), key.encode(), spec.name, offset=offset))
        for offset, (envelope, key) in enumerate(zip(envelopes, keys, strict=True))
    ]


def channel_files(channels: ChannelsFile) -> dict[Mode, ChannelsFile]:
    """The scenario's one channel without and with ``fetch_pii``."""
    (channel,) = channels.channels
    return {
        mode: channels.model_copy(
            update={"channels": (channel.model_copy(update={"fetch_pii": mode == "sealed"}),)}
        )
        for mode in MODES
    }


async def runtime_for(stage: str, settings: Settings, channels: ChannelsFile) -> BenchRuntime:
    """A started runtime of ``stage``, as ``tests/stage/conftest.py``'s ``make_runtime`` makes one."""
    limiter = InMemoryRateLimiter(plans=PlanBook.from_channels(channels.channels, time_scale=1000))
    runtime = BenchRuntime(stage, settings, make_app(stage, settings), channels, limiter=limiter)
    await runtime.start()
    return runtime


async def through(runtime: BenchRuntime, spec: TopicSpec, inputs: list[Record], stage: Handler) -> float:
    """Seconds ``runtime`` takes to process ``inputs`` one after the other, as its agent does a
    partition's records (Kafka aside)."""

    async def handle(envelope: Envelope[Event]) -> None:
        await stage(runtime, envelope)

    started = time.perf_counter()
    for record in inputs:
        await runtime.process(spec, record, handle)  # type: ignore[arg-type]  # faust's EventT, in part
    return time.perf_counter() - started


async def sent_if_new(runtime: BenchRuntime, channel: Channel, listed: list[AmazonOrder]) -> float:
    """Seconds order download takes to send ``listed`` (each sealed first where the channel says)."""
    started = time.perf_counter()
    for order in listed:
        await emit_if_new(runtime, channel, order, "poll")
    return time.perf_counter() - started


STAGES = ("item fetch", "import", "order download")


@dataclass
class StageFigures:
    """Per stage and mode: seconds per event of each run, and the sizes of the events emitted."""

    seconds: dict[tuple[str, Mode], list[float]] = field(default_factory=dict)
    sizes: dict[tuple[str, Mode], list[int]] = field(default_factory=dict)


async def interleaved(
    runtime: BenchRuntime,
    files: dict[Mode, ChannelsFile],
    inputs: dict[Mode, list[Any]],
    step: Callable[[BenchRuntime, Channel, list[Any]], Awaitable[float]],
    chunk: int,
) -> dict[Mode, tuple[float, list[Emitted]]]:
    """``step`` over each mode's ``inputs`` in chunks, the modes taking turns (ABBA), so that what
    slows the machine for a while slows both alike: per mode, the seconds spent and what was emitted."""
    spent: dict[Mode, float] = dict.fromkeys(MODES, 0.0)
    emitted: dict[Mode, list[Emitted]] = {mode: [] for mode in MODES}
    gc.collect()  # the garbage of what ran before, not this
    count = len(inputs[MODES[0]])
    for turn, start in enumerate(range(0, count, chunk)):
        for mode in MODES if turn % 2 == 0 else MODES[::-1]:
            runtime.channels = files[mode]
            runtime.emitted.clear()
            spent[mode] += await step(runtime, files[mode].channels[0], inputs[mode][start : start + chunk])
            emitted[mode] += runtime.emitted
    return {mode: (spent[mode], emitted[mode]) for mode in MODES}


async def stage_run(
    runtimes: dict[str, BenchRuntime],
    files: dict[Mode, ChannelsFile],
    bought: dict[Mode, list[Bought]],
    chunk: int,
) -> dict[tuple[str, Mode], tuple[float, list[int]]]:
    """One run through the three stages, each mode with its own orders: per stage and mode, seconds per
    event and the sizes of the events emitted."""
    fetch, importer, download = (runtimes[stage] for stage in STAGES)
    fetch.answers = PreSupplied()
    downloaded: dict[Mode, list[Record]] = {}
    for mode in MODES:
        channel = files[mode].channels[0]
        events = []
        for b in bought[mode]:
            order_id = b.order.amazon_order_id
            # Gift messages are personal data: Amazon gives them only to an application allowed it.
            items = (
                b.items
                if channel.fetch_pii
                else tuple(i.model_copy(update={"gift_message": None}) for i in b.items)
            )
            fetch.answers.items[order_id] = items
            fetch.answers.addresses[order_id] = b.address
            # As order download sends the v0 order: its postal code sealed, or dropped.
            events.append(downloaded_event(channel, await download.sealed(channel, listed_v0(b))))
        downloaded[mode] = records(ORDERS_DOWNLOADED, events, [e.correlation_id for e in events])

    def handling(
        spec: TopicSpec, stage: Handler
    ) -> Callable[[BenchRuntime, Channel, list[Any]], Awaitable[float]]:
        return lambda runtime, _, inputs: through(runtime, spec, inputs, stage)

    found: dict[tuple[str, Mode], tuple[float, list[int]]] = {}

    def note(stage: str, results: dict[Mode, tuple[float, list[Emitted]]], topic: TopicSpec) -> None:
        for mode, (seconds, emitted) in results.items():
            sizes = [len(encode(e.envelope)) for e in emitted if e.topic == topic.name]
            _check(stage, len(sizes), len(bought[mode]))
            found[(stage, mode)] = (seconds / len(bought[mode]), sizes)

    # Item fetch of the downloaded v0 orders, Amazon's answers from memory.
    fetched = await interleaved(
        fetch, files, downloaded, handling(ORDERS_DOWNLOADED, item_fetch.handle), chunk
    )
    note("item fetch", fetched, ORDERS_ENRICHED)
    # Import of what item fetch emitted, as read off amazon.orders.enriched.
    enriched = {}
    for mode, (_, emitted) in fetched.items():
        kept = [e for e in emitted if e.topic == ORDERS_ENRICHED.name]
        enriched[mode] = records(ORDERS_ENRICHED, [e.envelope for e in kept], [e.key for e in kept])
    imported = await interleaved(
        importer, files, enriched, handling(ORDERS_ENRICHED, order_import.handle), chunk
    )
    note("import", imported, ORDERS_IMPORTED)
    # Order download of 2026-01-01 orders as Amazon lists them for the channel (personal data only with
    # fetch_pii), each sent if new: sealed first.
    listed = {
        mode: [b.order if mode == "sealed" else without_personal(b.order) for b in bought[mode]]
        for mode in MODES
    }
    note("order download", await interleaved(download, files, listed, sent_if_new, chunk), ORDERS_DOWNLOADED)
    return found


def _check(stage: str, emitted: int, expected: int) -> None:
    if emitted != expected:  # not a figure: a run whose records did not go through measures nothing
        raise SystemExit(f"{stage}: {emitted} events emitted for {expected} records; see the log above")


async def stages(
    settings: Settings, channels: ChannelsFile, args: argparse.Namespace, figures: StageFigures
) -> None:
    files = channel_files(channels)
    runtimes = {
        "item fetch": await runtime_for(item_fetch.STAGE, settings, channels),
        "import": await runtime_for(order_import.STAGE, settings, channels),
        "order download": await runtime_for("order-download", settings, channels),
    }
    seller = channels.channels[0].seller_id
    runs = iter(range(1, 900))

    def fresh(count: int) -> dict[Mode, list[Bought]]:
        return {mode: orders(seller, next(runs), count, args.seed) for mode in MODES}

    try:
        await runtimes["import"].store.set_listings(
            channels.channels[0].name, {f"SKU-{n:05d}": f"STK-{n:05d}" for n in range(SKUS)}
        )
        # A first run, not counted: connections, caches, the day keys made and opened.
        await stage_run(runtimes, files, fresh(args.warmup), args.chunk)
        for repeat in range(args.repeats):
            found = await stage_run(runtimes, files, fresh(args.orders), args.chunk)
            for (stage, mode), (per_event, sizes) in found.items():
                figures.seconds.setdefault((stage, mode), []).append(per_event)
                figures.sizes[(stage, mode)] = sizes
            print(
                f"  run {repeat + 1}: "
                + "; ".join(
                    f"{stage} {1 / found[(stage, 'plain')][0]:,.0f} / {1 / found[(stage, 'sealed')][0]:,.0f}"
                    for stage in STAGES
                )
            )
        means = [
            f"{topic.name} {statistics.mean(figures.sizes[(stage, 'plain')]):,.0f} ->"
            f" {statistics.mean(figures.sizes[(stage, 'sealed')]):,.0f}"
            for stage, topic in zip(
                STAGES, (ORDERS_ENRICHED, ORDERS_IMPORTED, ORDERS_DOWNLOADED), strict=True
            )
        ]
        print("  events emitted, mean bytes without -> with sealing: " + "; ".join(means))
    finally:
        for runtime in runtimes.values():
            await runtime.close()


# --- per order, and the key store --------------------------------------------------------------------


def _per_op(passes: list[float], count: int) -> float:
    """Median seconds per operation over ``passes`` (each the seconds of ``count`` operations)."""
    return statistics.median(passes) / count


async def per_order(ring: KeyRing, args: argparse.Namespace) -> dict[str, float]:
    """Seconds per order: seal_order, open_order (day key in memory), and AES-GCM alone."""
    bought = [b.order for b in orders("A1BENCHSEAL", 1, args.micro, args.seed)]
    for order in bought:  # the day keys made and in memory before anything is timed
        await seal_order(order, ring)
    sealed = [await seal_order(order, ring) for order in bought]
    keys = {
        order.personal.key_id: await ring.opening_key(order.personal.key_id)
        for order in sealed
        if order.personal
    }
    fields = [
        (personal_fields(o), keys[s.personal.key_id], subject(o))
        for o, s in zip(bought, sealed, strict=True)
        if s.personal
    ]
    boxes = [(seal(f, key, who), key, who) for f, key, who in fields]
    passes: dict[str, list[float]] = {name: [] for name in ("seal_order", "open_order", "seal", "unseal")}
    for _ in range(args.passes):
        started = time.perf_counter()
        for order in bought:
            await seal_order(order, ring)
        passes["seal_order"].append(time.perf_counter() - started)
        started = time.perf_counter()
        for order in sealed:
            await open_order(order, ring)
        passes["open_order"].append(time.perf_counter() - started)
        started = time.perf_counter()
        for f, key, who in fields:
            seal(f, key, who)
        passes["seal"].append(time.perf_counter() - started)
        started = time.perf_counter()
        for box, key, who in boxes:
            unseal(box, key, who)
        passes["unseal"].append(time.perf_counter() - started)
    found = {name: _per_op(p, len(bought)) for name, p in passes.items()}
    found["fields"] = statistics.mean(len(f) for f, _, _ in fields)
    found["plain_bytes"] = statistics.mean(len(o.model_dump_json()) for o in bought)
    found["sealed_bytes"] = statistics.mean(len(o.model_dump_json()) for o in sealed)
    return found


async def key_store(privacy: PrivacySettings, aws: AwsSettings, args: argparse.Namespace) -> dict[str, float]:
    """Seconds per order whose day key is: new (made on first use), stored but not in memory (opened
    from S3), in memory; and the key ring's opening. Through ``seal_order`` / ``open_order``, so whatever
    the key ring does with S3 per key (the key, the erasures beside it) is counted."""
    now = datetime.now(UTC)
    # One order per day of delivery, a seller of its own: each order the first of its day.
    bought = orders(KEY_SELLER, 1, args.new_keys + 1, args.seed)
    days = [
        b.order.model_copy(
            update={
                "earliest_delivery_date": now + timedelta(days=20 + n),
                "latest_delivery_date": now + timedelta(days=22 + n),
            }
        )
        for n, b in enumerate(bought)
    ]

    async def each(
        call: Callable[[AmazonOrder], Awaitable[AmazonOrder]], given: list[AmazonOrder]
    ) -> list[float]:
        spent = []
        for order in given:
            started = time.perf_counter()
            await call(order)
            spent.append(time.perf_counter() - started)
        return spent

    async with AsyncExitStack() as stack:
        started = time.perf_counter()
        ring = await open_key_ring(privacy, aws, SYSTEM_CLOCK, stack)
        opened_s = time.perf_counter() - started
        sealed = [await seal_order(days[0], ring)]  # the S3 client's first requests, not counted
        made = []
        for order in days[1:]:
            started = time.perf_counter()
            sealed.append(await seal_order(order, ring))
            made.append(time.perf_counter() - started)
        in_memory = await each(lambda o: seal_order(o, ring), days[1:] * 20)
        key_ids = [o.personal.key_id for o in sealed if o.personal]
        cached = [0.0]
        for _ in range(20):
            started = time.perf_counter()
            for key_id in key_ids:
                await ring.sealing_key(key_id)
            cached.append((time.perf_counter() - started) / len(key_ids))
    async with AsyncExitStack() as stack:  # another process: nothing in memory
        ring = await open_key_ring(privacy, aws, SYSTEM_CLOCK, stack)
        await open_order(sealed[0], ring)
        fetched = await each(lambda o: open_order(o, ring), sealed[1:])
    return {
        "open_ring": opened_s,
        "made": statistics.median(made),
        "fetched": statistics.median(fetched),
        "in_memory": statistics.median(in_memory),
        "cached": statistics.median(cached[1:]),
    }


# --- the report --------------------------------------------------------------------------------------


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f} µs" if seconds < 1e-4 else f"{seconds * 1e6:,.0f} µs"


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f} ms"


def _median(values: list[float]) -> float:
    return statistics.median(values)


def table(micro: dict[str, float], stage: StageFigures, keys: dict[str, float]) -> str:
    """The figures as a markdown table for the README."""
    rows = [
        "| | `fetch_pii: false` (nothing sealed) | `fetch_pii: true` (sealed) | cost of sealing |",
        "|---|---:|---:|---:|",
    ]
    for name in ("seal_order", "open_order"):
        per = micro[name]
        rows.append(
            f"| `{name}`, one order (day key in memory) | | {_us(per)} ({1 / per:,.0f}/s) |"
            f" {_us(per)} per order |"
        )
    rows.append(
        f"| of which AES-256-GCM with JSON and base64 (`seal`; `unseal`) | |"
        f" {_us(micro['seal'])}; {_us(micro['unseal'])} | |"
    )
    labels = {
        "item fetch": "item fetch, events/s (v0 merchant-fulfilled orders, Amazon's answers from memory)",
        "import": "import, events/s (item fetch's output)",
        "order download": "order download's `emit_if_new`, events/s (2026-01-01 orders)",
    }
    for name in STAGES:
        plain = stage.seconds[(name, "plain")]
        sealed = stage.seconds[(name, "sealed")]
        # Paired: each sealed run against the plain run next to it.
        extra = _median([s - p for s, p in zip(sealed, plain, strict=True)])
        change = _median([p / s - 1 for s, p in zip(sealed, plain, strict=True)])
        rows.append(
            f"| {labels[name]} | {1 / _median(plain):,.0f} | {1 / _median(sealed):,.0f} |"
            f" {extra * 1e6:+,.0f} µs per event ({change:+.1%} events/s) |"
        )
    plain_size = statistics.mean(stage.sizes[("item fetch", "plain")])
    sealed_size = statistics.mean(stage.sizes[("item fetch", "sealed")])
    rows.append(
        f"| `amazon.orders.enriched` event, bytes (mean) | {plain_size:,.0f} | {sealed_size:,.0f} |"
        f" {sealed_size - plain_size:+,.0f} bytes |"
    )
    rows += [
        f"| `seal_order`, first order of a new day of delivery (its key made, stored in S3) | |"
        f" {_ms(keys['made'])} | once per seller and day |",
        f"| `open_order`, a day key not in the process's memory (read from S3) | | {_ms(keys['fetched'])} |"
        " per process, seller and day, every 10 min |",
        f"| day key lookup, in memory | | {_us(keys['cached'])} | |",
    ]
    return "\n".join(rows)


async def run(redis_url: str, aws: AwsSettings, args: argparse.Namespace) -> None:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    privacy = PrivacySettings(key_bucket=f"bench-keys-{uuid.uuid4().hex[:12]}", kek=SecretStr(new_kek()))
    settings = Settings(redis=RedisSettings(url=redis_url, key_prefix=prefix), aws=aws, privacy=privacy)
    channels = channels_of(tiny_scenario())
    print(
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}; Redis {redis_url}, S3 {aws.endpoint_url}"
    )
    print("\nthe key store ...")
    keys = await key_store(privacy, aws, args)
    print(
        f"  key ring opened (S3 client, bucket checked) {_ms(keys['open_ring'])}; seal_order of the first"
        f" order of a day {_ms(keys['made'])}, of later ones {_us(keys['in_memory'])}; open_order with the"
        f" key read from S3 {_ms(keys['fetched'])}; key lookup in memory {_us(keys['cached'])}"
    )
    print(f"\nper order ({args.micro:,} orders, median of {args.passes} passes) ...")
    async with AsyncExitStack() as stack:
        micro = await per_order(await open_key_ring(privacy, aws, SYSTEM_CLOCK, stack), args)
    print(
        f"  seal_order {_us(micro['seal_order'])}, open_order {_us(micro['open_order'])},"
        f" seal {_us(micro['seal'])}, unseal {_us(micro['unseal'])};"
        f" {micro['fields']:.1f} personal fields per order; the order as JSON"
        f" {micro['plain_bytes']:,.0f} bytes in the clear, {micro['sealed_bytes']:,.0f} sealed"
    )
    print(
        f"\nthrough the stages ({args.repeats} runs of {args.orders:,} orders per mode, the modes taking"
        f" turns every {args.chunk}; {args.warmup} orders per mode first, not counted); events/s without"
        " / with sealing ..."
    )
    figures = StageFigures()
    try:
        await stages(settings, channels, args, figures)
    finally:
        await _forget(redis_url, prefix)
    print()
    print(table(micro, figures, keys))
    print(
        f"\n({os.cpu_count()} CPUs, Python {platform.python_version()}; Redis and moto's S3 on the same"
        f" machine; stages: medians of {args.repeats} runs of {args.orders:,} orders per mode)"
    )


async def _forget(redis_url: str, prefix: str) -> None:
    """Remove the bench's keys (a Redis given by ``ORDERSYNC_REDIS__URL`` is someone's)."""
    import redis.asyncio as aioredis  # noqa: PLC0415

    client = aioredis.Redis.from_url(redis_url)
    try:
        async for key in client.scan_iter(match=f"{prefix}*", count=1000):
            await client.delete(key)
    finally:
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orders", type=int, default=1000, help="orders per run through the stages")
    parser.add_argument("--repeats", type=int, default=7, help="runs through the stages (medians)")
    parser.add_argument("--warmup", type=int, default=200, help="orders per mode first, not counted")
    parser.add_argument("--chunk", type=int, default=100, help="orders per turn of a mode within a run")
    parser.add_argument("--micro", type=int, default=2000, help="orders sealed and opened per pass")
    parser.add_argument("--passes", type=int, default=7, help="passes over them (median reported)")
    parser.add_argument("--new-keys", type=int, default=20, help="day keys made and opened from S3")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if not 1 <= args.repeats <= 400 or min(args.orders, args.warmup, args.chunk, args.micro, args.passes) < 1:
        parser.error("--repeats from 1 to 400; sizes at least 1")
    from ordersync.dev.devinfra import EmbeddedAws, EmbeddedRedis  # noqa: PLC0415

    with ExitStack() as stack:
        redis_url = os.environ.get("ORDERSYNC_REDIS__URL") or stack.enter_context(EmbeddedRedis()).url
        endpoint = (
            os.environ.get("ORDERSYNC_AWS__ENDPOINT_URL") or stack.enter_context(EmbeddedAws()).endpoint_url
        )
        aws = AwsSettings(
            endpoint_url=endpoint,
            access_key_id=SecretStr(LOCAL_AWS_KEY),
            secret_access_key=SecretStr(LOCAL_AWS_KEY),
        )
        asyncio.run(run(redis_url, aws, args))


if __name__ == "__main__":
    main()
