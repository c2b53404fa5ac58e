"""Buyers' personal data 30 days after delivery, end to end: the "Done when" of the personal-data issue.

Two sellers allowed personal data (one on Orders v0 with Restricted Data Tokens, one on 2026-01-01 by
role) place a few orders each; every stage and the back-office stand-in run until each order is
imported, invoiced and confirmed on Amazon, its personal data sealed under its day of delivery's key.
Then Amazon's clock (the simulator's) moves past every order's delivery + 30 days, and the stages are
restarted reading that clock: in a local pipeline a stage reads the host's clock
(:class:`ordersync.clock.SystemClock`), so each restarted process gets a ``sitecustomize`` that makes
that clock follow the simulator's (:data:`AMAZON_CLOCK_SHIM`). The status-projection stage's hourly
shredding task destroys the keys as it starts; ``ordersync privacy shred`` finds nothing left to do.

Then: the key store holds none of those keys; every sealed value on every topic or Redis key stays
shut, even for a key ring whose clock is put back before the shredding; no name, street, postal code,
phone or e-mail of any order is readable in any topic (from offset 0), Redis key or log; the orders
fetched again from Amazon after the expiry (Retry Download, through every stage) lose their personal
data instead of being sealed under a new key; the status model still lists every order with the same
status and its history; the dashboard's pages, JSON and CSV export answer, with the buyer shown as
expired to the operator; a replay of the order topics and a status-model rebuild from the topics go
through; no stage process died and nothing was dead-lettered.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from kafka import KafkaConsumer, TopicPartition
from pydantic import SecretStr
from starlette.testclient import TestClient

from ordersync.clock import Clock, EpochClock, ManualClock
from ordersync.dashboard import create_app
from ordersync.dev.demo import LocalPipeline, local_pipeline
from ordersync.dev.devinfra import stop_process_group
from ordersync.errors import PersonalDataExpired
from ordersync.kafka.reader import TopicReader
from ordersync.pipeline.stages import STAGES
from ordersync.privacy import shred_after
from ordersync.privacy.keyring import KeyRing, open_key_ring
from ordersync.privacy.orders import PURCHASE_TO_DELIVERY, open_order
from ordersync.schemas.events import AmazonOrder, OrderDownloaded, OrderEnriched
from ordersync.schemas.topics import CATALOGUE, ORDERS_DOWNLOADED, ORDERS_ENRICHED, TopicSpec
from ordersync.settings import Settings
from ordersync.simulator.scenario import Scenario
from ordersync.simulator.testing import TEST_APPLICATION, tiny_scenario
from ordersync.state.readmodel import FOLDED_TOPICS
from tests.personal_data import leaked, log_text, personal_strings, redis_text, topic_text
from tests.topics import read_all, wait_for

pytestmark = pytest.mark.integration

T = TypeVar("T")
SELLERS = ("A1TESTSELLER", "A2TESTSELLER")
ORDERS_PER_SELLER = 5
ORDERS = ORDERS_PER_SELLER * len(SELLERS)
TIME_SCALE = 60
OPERATOR_TOKEN = "operator-token-for-the-expiry-test"
#: The row fields that say where an order stands and are none of the buyer's: unchanged by the expiry.
STATUS_FIELDS = (
    "channel",
    "status",
    "import_status",
    "invoice_status",
    "writeback_status",
    "amazon_status",
    "fulfillment_channel",
    "sales_order_code",
    "skus",
    "purchase_date",
)
#: Consumer groups (faust app ids) that must have read a topic to its end.
ITEM_FETCH_GROUP, IMPORT_GROUP = "ordersync-item-fetch", "ordersync-import"
PROJECTION_GROUP = "ordersync-status-projection"
#: A data key's name inside a sealed value, wherever it is kept (JSON on topics and in Redis).
SEALED_KEY_ID = re.compile(r'"key_id":\s*"([A-Z0-9]{1,40}/\d{4}-\d{2}-\d{2}(?:/r\d+)?)"')

#: Put on PYTHONPATH as ``sitecustomize.py`` for the restarted stages and the CLI: ordersync's system
#: clock (every stage's "Amazon now") then follows the simulator's clock, given by AMAZON_CLOCK as
#: "<Amazon epoch>,<host epoch at that instant>,<time scale>". Nothing else in the process moves.
CLOCK_VARIABLE = "TESTS_AMAZON_CLOCK"
AMAZON_CLOCK_SHIM = f'''\
import os

_spec = os.environ.get("{CLOCK_VARIABLE}")
if _spec:
    import time
    from datetime import UTC, datetime

    import ordersync.clock

    _amazon, _host, _scale = (float(part) for part in _spec.split(","))

    def _amazon_now(self):
        return datetime.fromtimestamp(_amazon + (time.time() - _host) * _scale, UTC)

    ordersync.clock.SystemClock.now = _amazon_now
'''


def _scenario() -> Scenario:
    profile = {
        "count": ORDERS_PER_SELLER,
        "history_s": 0,
        "arrival_window_s": 300,
        "items_per_order": [1, 2],
        "pending_share": 0.0,
        "afn_share": 0.0,
        "cancel_share": 0.0,
    }
    second = {
        "seller_id": SELLERS[1],
        "region": "na",
        "marketplaces": ["ATVPDKIKX0DER"],
        "applications": [{**TEST_APPLICATION, "refresh_token": "Atzr|second"}],
        "catalogue_size": 10,
        "orders": profile,
    }
    return tiny_scenario(
        orders=profile, extra_sellers=[second], time_scale=TIME_SCALE, start=None, pii_requires_rdt=True
    )


# --- the key ring, as the stages have it -------------------------------------------------------------


def _with_ring(settings: Settings, clock: Clock, action: Callable[[KeyRing], Awaitable[T]]) -> T:
    async def run() -> T:
        async with AsyncExitStack() as stack:
            return await action(await open_key_ring(settings.privacy, settings.aws, clock, stack))

    return asyncio.run(run())


async def _key_ids(ring: KeyRing) -> set[str]:
    return set(await ring.store.key_ids())


def _opening(orders: list[AmazonOrder]) -> Callable[[KeyRing], Awaitable[list[AmazonOrder | str]]]:
    """Each order opened, or the name of the error opening it raised."""

    async def action(ring: KeyRing) -> list[AmazonOrder | str]:
        opened: list[AmazonOrder | str] = []
        for order in orders:
            try:
                opened.append(await open_order(order, ring))
            except Exception as exc:  # which error it was is the finding
                opened.append(type(exc).__name__)
        return opened

    return action


def _opening_keys(key_ids: Iterable[str]) -> Callable[[KeyRing], Awaitable[dict[str, str]]]:
    """Per key name: what asking the ring for it to open data gave ("opened" or the error's name)."""

    async def action(ring: KeyRing) -> dict[str, str]:
        found: dict[str, str] = {}
        for key_id in sorted(key_ids):
            try:
                await ring.opening_key(key_id)
                found[key_id] = "opened"
            except Exception as exc:  # which error it was is the finding
                found[key_id] = type(exc).__name__
        return found

    return action


# --- the pipeline's topics and consumer groups -------------------------------------------------------


def _enriched(bootstrap: str) -> list[OrderEnriched]:
    return [e for e in read_all(bootstrap, ORDERS_ENRICHED) if isinstance(e, OrderEnriched)]


def _downloaded(bootstrap: str) -> list[OrderDownloaded]:
    return [d for d in read_all(bootstrap, ORDERS_DOWNLOADED) if isinstance(d, OrderDownloaded)]


def _dead_letters(bootstrap: str) -> Counter[str]:
    found: Counter[str] = Counter()
    for spec in CATALOGUE:
        if spec.name.endswith(".dlq"):
            with TopicReader(bootstrap, spec.name, skip_missing=True) as reader:
                found[spec.name] += sum(1 for _ in reader.records())
    return +found


def _behind(bootstrap: str, group: str, specs: Iterable[TopicSpec]) -> dict[str, int]:
    """Per partition, how many records ``group`` has not committed yet (reads its offsets, does not
    join it)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        partitions = [
            TopicPartition(spec.name, p)
            for spec in specs
            for p in sorted(consumer.partitions_for_topic(spec.name) or ())
        ]
        behind = {}
        for tp, end in consumer.end_offsets(partitions).items():
            committed = consumer.committed(tp) or 0
            if committed < end:
                behind[f"{tp.topic}[{tp.partition}]"] = end - committed
        return behind
    finally:
        consumer.close(autocommit=False)


def _caught_up(bootstrap: str) -> bool:
    """Item fetch, import and the status projection have read their order topics to the end."""
    return not (
        _behind(bootstrap, ITEM_FETCH_GROUP, [ORDERS_DOWNLOADED])
        or _behind(bootstrap, IMPORT_GROUP, [ORDERS_ENRICHED])
        or _behind(bootstrap, PROJECTION_GROUP, FOLDED_TOPICS)
    )


# --- the stages, restarted on Amazon's clock -----------------------------------------------------------


def _stop_stages(pipeline: LocalPipeline, stages: Iterable[str]) -> None:
    """Stop the stages' processes as an orchestrator would (SIGTERM, all at once)."""
    processes = [pipeline.processes.pop(name) for name in stages]
    with ThreadPoolExecutor(len(processes)) as pool:
        list(pool.map(lambda p: stop_process_group(p.pid, grace_s=20.0), processes))
    for process in processes:
        process.wait(timeout=10)


def _on_amazons_clock(pipeline: LocalPipeline, run_dir: Path, amazon_epoch: float, host_epoch: float) -> None:
    """From now on, every stage started and every CLI run reads Amazon's clock."""
    shim = run_dir / "amazon-clock"
    shim.mkdir(exist_ok=True)
    (shim / "sitecustomize.py").write_text(AMAZON_CLOCK_SHIM)
    path = os.pathsep.join(p for p in (str(shim), os.environ.get("PYTHONPATH", "")) if p)
    pipeline.env["PYTHONPATH"] = path
    pipeline.env[CLOCK_VARIABLE] = f"{amazon_epoch!r},{host_epoch!r},{float(TIME_SCALE)!r}"


def _advance_amazon(pipeline: LocalPipeline, seconds: float) -> tuple[float, float]:
    """Move the simulator's clock on by ``seconds``; Amazon's epoch then, and the host's at that instant."""
    assert pipeline.simulator is not None
    with httpx.Client(base_url=pipeline.simulator.base_url, timeout=30) as http:
        before = time.time()
        answer = http.post("/_sim/clock/advance", json={"seconds": seconds}).raise_for_status().json()
        after = time.time()
    return float(answer["now_epoch"]), (before + after) / 2


# --- the dashboard --------------------------------------------------------------------------------------


@dataclass
class DashboardView:
    """What the dashboard answered, order by order."""

    rows: dict[str, dict[str, Any]]
    histories: dict[str, list[dict[str, Any]]]
    pages: dict[str, tuple[int, str]]
    buyers: dict[str, dict[str, Any]]
    grid: tuple[int, str]
    export: tuple[int, str]
    personal_export: tuple[int, str]
    tasks: list[dict[str, Any]]


def _dashboard(settings: Settings, clock: Clock) -> DashboardView:
    """Every order through the dashboard as the operator sees it (operator token: the buyer opened)."""
    operator = settings.dashboard.model_copy(update={"operator_token": SecretStr(OPERATOR_TOKEN)})
    as_operator = {"x-operator-token": OPERATOR_TOKEN}
    with TestClient(create_app(settings.model_copy(update={"dashboard": operator}), clock)) as client:
        listed = client.get("/api/orders", params={"limit": "500"})
        assert listed.status_code == 200, listed.text
        rows = {row["amazon_order_id"]: row for row in listed.json()["rows"]}
        histories, pages, buyers = {}, {}, {}
        for order_id, row in rows.items():
            seller = row["seller_id"]
            detail = client.get(f"/api/orders/{seller}/{order_id}")
            assert detail.status_code == 200, detail.text
            histories[order_id] = detail.json()["history"]
            page = client.get(f"/orders/{seller}/{order_id}", headers=as_operator)
            pages[order_id] = (page.status_code, page.text)
            buyer = client.get(f"/api/orders/{seller}/{order_id}/personal", headers=as_operator)
            assert buyer.status_code == 200, buyer.text
            buyers[order_id] = buyer.json()
        grid = client.get("/")
        export = client.get("/export.csv")
        personal_export = client.get("/export.csv", params={"personal": "1"}, headers=as_operator)
        tasks = client.get("/api/tasks").json()["tasks"]
    return DashboardView(
        rows=rows,
        histories=histories,
        pages=pages,
        buyers=buyers,
        grid=(grid.status_code, grid.text),
        export=(export.status_code, export.text),
        personal_export=(personal_export.status_code, personal_export.text),
        tasks=tasks,
    )


def _status(row: dict[str, Any]) -> dict[str, Any]:
    return {name: row[name] for name in STATUS_FIELDS}


def _csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def _all_confirmed(pipeline: LocalPipeline, clock: Clock) -> bool:
    """Every order is confirmed on Amazon and the status model says so."""
    truth = pipeline.truth()[0]
    if len(truth) != ORDERS or not all(o["status"] == "Shipped" and o["confirmed_by_seller"] for o in truth):
        return False
    settings = pipeline.settings()
    with TestClient(create_app(settings, clock)) as client:
        rows = client.get("/api/orders", params={"limit": "500"}).json()["rows"]
    return len(rows) == ORDERS and all(
        (r["status"], r["invoice_status"], r["writeback_status"], r["amazon_status"])
        == ("Success", "invoiced", "confirmed", "Shipped")
        for r in rows
    )


@pytest.mark.timeout(600)
def test_personal_data_is_unreadable_everywhere_30_days_after_delivery(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    stages = tuple(STAGES)
    with local_pipeline(
        scenario=_scenario(),
        run_dir=run_dir,
        stages=stages,
        fetch_pii=True,
        extra_env={"ORDERSYNC_NOTIFICATIONS__WAIT_TIME_S": "1"},
    ) as pipeline:
        assert pipeline.simulator is not None
        simulator = pipeline.simulator
        bootstrap = pipeline.env["ORDERSYNC_KAFKA__BOOTSTRAP"]
        redis_url = pipeline.env["ORDERSYNC_REDIS__URL"]
        settings = pipeline.settings()
        amazon_clock = EpochClock(simulator.state.now)

        # --- before: every order through every stage, its personal data sealed and openable ------------
        wait_for(lambda: len(simulator.state.truth_orders()) == ORDERS, 120, what="every order placed")
        wait_for(lambda: _all_confirmed(pipeline, amazon_clock), 300, what="every order confirmed on Amazon")
        wait_for(lambda: _caught_up(bootstrap), 120, what="the stages caught up")
        assert not pipeline.dead_processes()
        personal = personal_strings(pipeline)
        order_ids = {o["amazon_order_id"] for o in simulator.state.truth_orders()}
        sealed_before = [e.order for e in _enriched(bootstrap) if e.order.personal is not None]
        delivered_by = max(
            e.order.latest_delivery_date or e.order.purchase_date + PURCHASE_TO_DELIVERY
            for e in _enriched(bootstrap)
        )
        keys_before = _with_ring(settings, amazon_clock, _key_ids)
        opened_before = _with_ring(settings, amazon_clock, _opening(sealed_before))
        before = _dashboard(settings, amazon_clock)
        enriched_before = Counter(e.order.amazon_order_id for e in _enriched(bootstrap))

        # --- Amazon's clock past every order's delivery + 30 days; the stages restarted on it -----------
        due = max(shred_after(key_id) for key_id in keys_before)
        _stop_stages(pipeline, stages)
        rewound = ManualClock(amazon_clock.now())  # a key ring whose clock stays before the shredding
        # Past every key's retention and past the end of every order's delivery promise + 30 days.
        target = max(due, delivered_by + timedelta(days=30)) + timedelta(minutes=30)
        amazon_epoch, host_epoch = _advance_amazon(pipeline, (target - amazon_clock.now()).total_seconds())
        amazon_after = datetime.fromtimestamp(amazon_epoch, UTC)
        _on_amazons_clock(pipeline, run_dir, amazon_epoch, host_epoch)
        for stage in stages:
            pipeline.start_process(stage, ["run", stage])
        # status-projection's shredding task runs as it starts, then every hour of Amazon's.
        wait_for(
            lambda: not _with_ring(settings, amazon_clock, _key_ids) & keys_before,
            180,
            what="the keys shredded by the status-projection stage",
        )

        # The stage logs what it destroyed just after destroying it: the line may follow the keys' removal.
        def destroyed_logged() -> bool:
            text = (run_dir / "status-projection.log").read_text(errors="replace")
            destroyed = "\n".join(line for line in text.splitlines() if "keys destroyed:" in line)
            return all(key_id in destroyed for key_id in keys_before)

        wait_for(destroyed_logged, 30, what="the status-projection stage's log of the keys it destroyed")
        projection_log = (run_dir / "status-projection.log").read_text(errors="replace")
        manual_shred = pipeline.cli("privacy", "shred")

        # --- orders fetched again from Amazon after the expiry, through every stage --------------------
        for channel in pipeline.channel_names():
            seller = channel.upper()
            mine = sorted(
                o["amazon_order_id"] for o in simulator.state.truth_orders() if o["seller_id"] == seller
            )
            pipeline.cli("orders", "retry-download", "--channel", channel, *mine)

        def retried() -> set[str]:
            return {d.order.amazon_order_id for d in _downloaded(bootstrap) if d.found_by == "retry"}

        def enriched_again() -> set[str]:
            now = Counter(e.order.amazon_order_id for e in _enriched(bootstrap))
            return {order_id for order_id in order_ids if now[order_id] > enriched_before[order_id]}

        wait_for(lambda: retried() == order_ids, 180, what="every order downloaded again")
        wait_for(lambda: enriched_again() == order_ids, 180, what="every order enriched again")
        wait_for(lambda: _caught_up(bootstrap), 180, what="the stages caught up after the retries")
        retried_downloads = [d.order for d in _downloaded(bootstrap) if d.found_by == "retry"]
        enriched_now = _enriched(bootstrap)
        after_retry = _dashboard(settings, amazon_clock)

        # --- a replay of the order topics, and the status model rebuilt from the topics ----------------
        replays = {
            spec.name: json.loads(pipeline.cli("replay", spec.name, "--from-offset", "0", "--json"))
            for spec in (ORDERS_DOWNLOADED, ORDERS_ENRICHED)
        }
        wait_for(lambda: _caught_up(bootstrap), 180, what="the stages caught up after the replay")
        rebuild_output = pipeline.cli("status-model", "rebuild")
        wait_for(lambda: _caught_up(bootstrap), 60, what="the status projection caught up")
        after = _dashboard(settings, amazon_clock)
        dead = pipeline.dead_processes()
        dead_letters = _dead_letters(bootstrap)
        topics, stored = topic_text(bootstrap), redis_text(redis_url)
        keys_after = _with_ring(settings, amazon_clock, _key_ids)
        referenced = set(SEALED_KEY_ID.findall(topics)) | set(SEALED_KEY_ID.findall(stored))
        keys_opened_now = _with_ring(settings, amazon_clock, _opening_keys(referenced | keys_before))
        keys_opened_rewound = _with_ring(settings, rewound, _opening_keys(referenced | keys_before))
        still_sealed = [e.order for e in _enriched(bootstrap) if e.order.personal is not None]
        opened_now = _with_ring(settings, amazon_clock, _opening(still_sealed))
        opened_rewound = _with_ring(settings, rewound, _opening(still_sealed))
    logs = log_text(run_dir)

    # Sanity: before the expiry the data was there, sealed, and opened (so this test can fail).
    assert len(personal) > 20
    assert {key_id.split("/")[0] for key_id in keys_before} == set(SELLERS)
    assert {o.seller_id for o in sealed_before} == set(SELLERS)
    assert all(isinstance(o, AmazonOrder) for o in opened_before), opened_before
    opened = [o for o in opened_before if isinstance(o, AmazonOrder)]
    shown = {o.buyer_name for o in opened} | {o.shipping_address.line1 for o in opened if o.shipping_address}
    assert len(shown & personal) >= ORDERS // 2
    assert {b["state"] for b in before.buyers.values()} == {"open"}, before.buyers
    assert any(value in before.pages[o][1] for o in order_ids for value in personal)  # the operator sees it

    # Amazon's clock is past every order's delivery + 30 days, and past every key's retention.
    assert amazon_after >= delivered_by + timedelta(days=30)
    assert amazon_after >= due
    # Shredded by status-projection's task (it logs what it destroyed); the CLI found nothing left.
    destroyed = "\n".join(line for line in projection_log.splitlines() if "keys destroyed:" in line)
    for key_id in keys_before:
        assert key_id in destroyed, f"status-projection did not log destroying {key_id}"
    assert "no key was due" in manual_shred
    # The key store keeps none of those keys, and none was made again for those days.
    assert not keys_after & keys_before, keys_after
    # Every sealed value, wherever it is kept, stays shut: on Amazon's clock, and on a clock put back.
    assert referenced, "no sealed value found on the topics or in Redis"
    assert referenced <= keys_before, referenced - keys_before
    assert set(keys_opened_now.values()) == {PersonalDataExpired.__name__}, keys_opened_now
    assert set(keys_opened_rewound.values()) == {PersonalDataExpired.__name__}, keys_opened_rewound
    assert still_sealed
    assert set(opened_now) == {PersonalDataExpired.__name__}, opened_now
    assert set(opened_rewound) == {PersonalDataExpired.__name__}, opened_rewound

    # No name, street, postal code, phone or e-mail readable anywhere.
    for where, text in (("a topic", topics), ("Redis", stored), ("a log", logs)):
        found = leaked(personal, text)
        assert not found, f"{len(found)} personal values in the clear in {where}, e.g. {found[:3]}"
    # Fetched again from Amazon after the expiry: the personal data is dropped, not sealed anew.
    assert {o.amazon_order_id for o in retried_downloads} == order_ids
    assert all(o.personal is None and o.buyer_name is None for o in retried_downloads)
    refetched = [e.order for e in enriched_now if e.order.personal is None]
    assert {o.amazon_order_id for o in refetched} >= order_ids
    assert all(
        o.shipping_address is None or (o.shipping_address.name, o.shipping_address.line1) == (None, None)
        for o in refetched
    )

    # The status model lists every order, with the status it had, and its history.
    for view in (after_retry, after):
        assert set(view.rows) == order_ids
        assert {o: _status(r) for o, r in view.rows.items()} == {
            o: _status(r) for o, r in before.rows.items()
        }
        for order_id in order_ids:
            assert len(view.histories[order_id]) >= len(before.histories[order_id])
    # The dashboard: pages, the operator's buyer panel (expired), the CSV export with and without it.
    assert after.grid[0] == 200
    assert all(o in after.grid[1] for o in order_ids)
    for order_id, (status_code, page) in after.pages.items():
        assert status_code == 200
        assert order_id in page
        assert 'data-state="expired"' in page
    assert {b["state"] for b in after.buyers.values()} == {"expired"}, after.buyers
    assert all(not b["fields"] for b in after.buyers.values())
    assert after.export[0] == 200
    assert {r["amazon_order_id"] for r in _csv_rows(after.export[1])} == order_ids
    assert after.personal_export[0] == 200
    exported = _csv_rows(after.personal_export[1])
    assert {r["amazon_order_id"] for r in exported} == order_ids
    assert {r["personal_data"] for r in exported} == {"expired"}
    shredding = [t for t in after.tasks if t["task"] == "privacy-shredding"]
    assert shredding
    assert shredding[0]["last_error"] is None, shredding

    # The replay went through, the rebuild folded every order, and nothing died or was dead-lettered.
    for topic, summary in replays.items():
        assert summary["read"] > 0, (topic, summary)
        assert summary["sent"] == summary["read"], (topic, summary)
    assert f"{ORDERS} orders" in rebuild_output, rebuild_output
    assert not dead, f"stage process(es) died: {dead}; logs in {run_dir}"
    assert not dead_letters, dead_letters
    assert "could not be folded" not in logs
