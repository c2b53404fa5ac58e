"""The whole pipeline under a backlog: what each order costs in CPU, Redis and Kafka, and how fast the
pipeline drains it, with 1 and 2 workers per stage.

Prints figures; asserts nothing. Runs every stage as its own processes (``LocalPipeline``: order-download,
item-fetch, import, invoice-issued, shipment-write-back, inventory, status-projection; N workers each, one
consumer group per stage) and the back-office stand-in (it invoices every imported order, so orders get
confirmed) on the embedded broker and Redis, against the simulator with one seller whose whole backlog is
on Amazon before the download starts. Amazon's quota is lifted (every operation's usage plan 1,000/s,
burst 10,000, told to ordersync through the channel's ``rate_limits``), its feeds take seconds and the
write-back sends one every 5 s (``writeback.feed_flush_interval_s``; 120 s by default), so the pipeline
itself is measured, not Amazon's limits. Amazon's clock runs at real time (``--time-scale 1``): the
download's periodic re-scans (the last 48 hours every hour) come as often as they would in production:

    .venv/bin/python bench/pipeline.py [--orders 5000] [--workers 1,2] [--orders-api 2026-01-01]

Each run starts the other stages first and waits until every process answers ``/readyz``; the counters
(CPU, Redis, Kafka) are read then and again once the pipeline has drained, so the stages'
start-up is left out, except order-download's own (started when the measurement starts: it begins to
download at once). Per run:

- orders/s imported and confirmed: orders over the time from the download's start to the last order's
  first ``OrderImported`` / ``ShipmentConfirmed`` record (record timestamps), and between the 10th and
  the 90th percentile of those times (the steady rate, without the ramp and the tail); time to drain:
  from the download's start until every order is confirmed on the simulated Amazon and has its
  ``ShipmentConfirmed`` on shipments.confirmed (a feed's outcome comes after Amazon applied it);
- CPU ms per order per process (utime + stime from /proc/<pid>/stat, summed over each process's
  session, so anything it spawns counts): each stage process, the broker, Redis, the back-office
  stand-in, moto, and this process (the simulator runs in a thread of it);
- Redis: commands per order (INFO commandstats, every command Redis ran, those a Lua script ran
  included) with the top commands, script calls per order, round trips per order (INFO stats
  ``total_reads_processed``: requests Redis read from clients; a pipeline, a MULTI/EXEC block or a
  script call that arrives in one read counts once, as one round trip of the client), used_memory and
  keys per order, and the key families by memory (MEMORY USAGE of every key, at the end);
- Kafka: records and bytes per order on every catalogue topic (records appended during the run, read
  back from the topics up to their end), by topic; orders imported or confirmed more than once, and
  shipments.failed by reason.

Linux only (/proc).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from kafka import KafkaConsumer, TopicPartition

from ordersync.amazon.models import default_plans
from ordersync.channels import OrdersApiVersion
from ordersync.dev.demo import LocalPipeline
from ordersync.kafka.admin import kafka_client_config
from ordersync.kafka.reader import TopicReader
from ordersync.schemas.codec import decode
from ordersync.schemas.events import OrderImported, ShipmentConfirmed, ShipmentFailed
from ordersync.schemas.topics import CATALOGUE, ORDERS_IMPORTED, SHIPMENTS_CONFIRMED, SHIPMENTS_FAILED
from ordersync.settings import DEFAULT_PREFIX, KafkaSettings
from ordersync.simulator.scenario import Scenario
from ordersync.state.keys import WORKING_STATE

SELLER = "A1BENCHPIPE"
#: Every stage but the notifications one (the backlog is on Amazon before the start: nothing to notify).
STAGES = (
    "item-fetch",
    "import",
    "invoice-issued",
    "shipment-write-back",
    "inventory",
    "status-projection",
    "order-download",  # last: its start is the start of the measurement
)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
READY_TIMEOUT_S = 180.0


def scenario(orders: int, time_scale: float) -> Scenario:
    """One seller with ``orders`` seller-fulfilled orders placed in the simulated hour before the start;
    nothing pending, cancelled, unmapped or shipped by Amazon, so every order is to be confirmed."""
    lifted = {operation: {"rate": 1000.0, "burst": 10_000} for operation in default_plans()}
    profile: dict[str, Any] = {
        "count": orders,
        "history_s": 3600,
        "arrival_window_s": 0,
        "items_per_order": [1, 3],
        "pending_share": 0.0,
        "afn_share": 0.0,
        "cancel_share": 0.0,
        "unknown_sku_share": 0.0,
    }
    seller = {
        "seller_id": SELLER,
        "region": "na",
        "marketplaces": ["ATVPDKIKX0DER"],
        "applications": [
            {"client_id": "amzn1.bench", "client_secret": "s", "refresh_token": f"Atzr|{SELLER}"}
        ],
        "catalogue_size": 40,
        "usage_plans": lifted,
        "orders": profile,
    }
    return Scenario.model_validate(
        {
            "name": "bench-pipeline",
            "seed": 19,
            "time_scale": time_scale,
            # Amazon processes a fulfilment feed in seconds, not minutes: the pipeline is measured.
            "feeds": {"queue_delay_s": [1, 2], "duration_s": [1, 5], "stall_share": 0.0},
            "sellers": [seller],
        }
    )


# --- counters --------------------------------------------------------------------------------------


def cpu_by_session() -> dict[int, float]:
    """CPU seconds (user + system, and those of reaped children) of every process, summed per session."""
    totals: dict[int, float] = defaultdict(float)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        fields = stat[stat.rindex(")") + 2 :].split()
        session = int(fields[3])
        totals[session] += sum(int(v) for v in fields[11:15]) / CLOCK_TICKS
    return totals


def own_cpu_s() -> float:
    times = os.times()
    return times.user + times.system


@dataclass
class RedisFigures:
    commands: Counter[str]
    reads: int
    used_memory: int
    keys: int


def redis_figures(client: redis.Redis) -> RedisFigures:
    stats = client.info("stats")
    commands = Counter(
        {
            name.removeprefix("cmdstat_"): int(row["calls"])
            for name, row in client.info("commandstats").items()
        }
    )
    memory = client.info("memory")
    return RedisFigures(
        commands, int(stats["total_reads_processed"]), int(memory["used_memory"]), client.dbsize()
    )


def key_families(client: redis.Redis) -> dict[str, tuple[int, int]]:
    """Per key family (the part after the prefix): keys and bytes (MEMORY USAGE)."""
    families: dict[str, tuple[int, int]] = {}
    batch: list[str] = []

    def measure() -> None:
        with client.pipeline(transaction=False) as pipe:
            for key in batch:
                pipe.memory_usage(key, samples=0)
            sizes = pipe.execute()
        for key, size in zip(batch, sizes, strict=True):
            parts = key.split(":")
            family = parts[1] if parts[0] == DEFAULT_PREFIX and len(parts) > 1 else parts[0]
            if family == "{rm}" and len(parts) > 3:  # the status model: {rm}:g<generation>:<what>:...
                family = f"{{rm}}:{parts[3]}"
            count, total = families.get(family, (0, 0))
            families[family] = (count + 1, total + int(size or 0))
        batch.clear()

    for key in client.scan_iter(count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            measure()
    if batch:
        measure()
    return families


@dataclass
class TopicFigures:
    records: Counter[str] = field(default_factory=Counter)
    bytes: Counter[str] = field(default_factory=Counter)
    imported_at: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    confirmed_at: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    #: shipments.failed by Amazon's error code and message (the start of it).
    failures: Counter[str] = field(default_factory=Counter)


def read_topics(bootstrap: str) -> TopicFigures:
    """Every record on the catalogue's topics; when each order was imported and confirmed (record
    timestamps, seconds)."""
    figures = TopicFigures()
    with TopicReader(bootstrap, [spec.name for spec in CATALOGUE], skip_missing=True) as reader:
        for record in reader.records():
            figures.records[record.topic] += 1
            figures.bytes[record.topic] += len(record.value or b"") + len(record.key or b"")
            if record.value is None:
                continue
            if record.topic == ORDERS_IMPORTED.name:
                payload = decode(record.value, ORDERS_IMPORTED).payload
                if isinstance(payload, OrderImported):
                    figures.imported_at[payload.sales_order.amazon_order_id].append(
                        record.timestamp_ms / 1000
                    )
            elif record.topic == SHIPMENTS_CONFIRMED.name:
                payload = decode(record.value, SHIPMENTS_CONFIRMED).payload
                if isinstance(payload, ShipmentConfirmed):
                    figures.confirmed_at[payload.amazon_order_id].append(record.timestamp_ms / 1000)
            elif record.topic == SHIPMENTS_FAILED.name:
                failed = decode(record.value, SHIPMENTS_FAILED).payload
                if isinstance(failed, ShipmentFailed):
                    figures.failures[f"{failed.error_code}: {failed.error_message[:100]}"] += 1
    return figures


class ConfirmedCounter(threading.Thread):
    """Counts the orders with a ``ShipmentConfirmed`` on shipments.confirmed as they come (a plain consumer
    of that one topic): the pipeline has drained once every order has one."""

    def __init__(self, bootstrap: str) -> None:
        super().__init__(name="confirmed-counter", daemon=True)
        self._kafka = KafkaSettings(bootstrap=bootstrap)
        self._stop_event = threading.Event()
        self.orders: set[str] = set()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)

    def run(self) -> None:
        consumer = KafkaConsumer(
            fetch_max_wait_ms=100,
            enable_auto_commit=False,
            **kafka_client_config(self._kafka),
        )
        partitions = [
            TopicPartition(SHIPMENTS_CONFIRMED.name, p)
            for p in sorted(consumer.partitions_for_topic(SHIPMENTS_CONFIRMED.name) or ())
        ]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        while not self._stop_event.is_set():
            for records in consumer.poll(timeout_ms=200).values():
                for record in records:
                    payload = decode(record.value, SHIPMENTS_CONFIRMED).payload
                    if isinstance(payload, ShipmentConfirmed):
                        self.orders.add(payload.amazon_order_id)
        consumer.close()


def confirmed_on_amazon(pipeline: LocalPipeline) -> int:
    """Orders the seller confirmed on the simulated Amazon (the simulator's counter: cheap to poll)."""
    assert pipeline.simulator is not None
    shipments = pipeline.simulator.state.counters_json()["shipments"]
    return sum(int(counts["confirmed"]) for counts in shipments.values())


# --- one run ---------------------------------------------------------------------------------------


@dataclass
class Run:
    orders: int
    workers: int
    orders_api: str
    drain_s: float = 0.0
    cpu_s: dict[str, float] = field(default_factory=dict)
    redis_before: RedisFigures | None = None
    redis_after: RedisFigures | None = None
    families_before: dict[str, tuple[int, int]] = field(default_factory=dict)
    families_after: dict[str, tuple[int, int]] = field(default_factory=dict)
    topics_before: TopicFigures = field(default_factory=TopicFigures)
    topics_after: TopicFigures = field(default_factory=TopicFigures)
    started_at: float = 0.0
    throttled: int = 0


def wait_ready(pipeline: LocalPipeline, names: list[str]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    waiting = list(names)
    while waiting:
        dead = pipeline.dead_processes()
        if dead:
            raise RuntimeError(f"died at start: {', '.join(dead)}; logs in {pipeline.run_dir}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"not ready after {READY_TIMEOUT_S:.0f} s: {', '.join(waiting)}")
        waiting = [name for name in waiting if not pipeline.ready(name)]
        time.sleep(0.5)


def sessions(pipeline: LocalPipeline) -> dict[str, int]:
    """Process (session leader) id of everything measured apart, by the name printed."""
    pids = {name: process.pid for name, process in pipeline.processes.items()}
    if "backoffice" in pids:
        pids["back-office stand-in"] = pids.pop("backoffice")
    for name, server in (
        ("broker", pipeline.broker),
        ("redis", pipeline.redis_server),
        ("moto", pipeline.aws_server),
    ):
        if server is not None and server.pid is not None:
            pids[name] = server.pid
    return pids


def run(orders: int, workers: int, args: argparse.Namespace) -> Run:
    result = Run(orders, workers, args.orders_api)
    orders_api: OrdersApiVersion = args.orders_api
    bench = scenario(orders, args.time_scale)
    run_dir = Path(tempfile.mkdtemp(prefix="ordersync-bench-"))
    try:
        pipeline = LocalPipeline(
            scenario=bench,
            run_dir=run_dir,
            stages=STAGES[:-1],
            orders_api=orders_api,
            workers=workers,
            web_ports=True,
            extra_env={
                "ORDERSYNC_LOG_LEVEL": "WARNING",
                "ORDERSYNC_WRITEBACK__MODE": args.writeback_mode,
                # A fulfilment feed every few seconds, its result read every second, rather than every
                # 2 minutes and 30 s: the drain time measures the pipeline, not the flush timer.
                "ORDERSYNC_WRITEBACK__FEED_FLUSH_INTERVAL_S": "5",
                "ORDERSYNC_WRITEBACK__FEED_POLL_INTERVAL_S": "1",
            },
        )
        try:
            pipeline.start()
            wait_ready(pipeline, [name for stage in STAGES[:-1] for name in pipeline.stage_processes(stage)])
            client = redis.Redis.from_url(pipeline.env["ORDERSYNC_REDIS__URL"], decode_responses=True)
            bootstrap = pipeline.env["ORDERSYNC_KAFKA__BOOTSTRAP"]
            result.topics_before = read_topics(bootstrap)
            result.families_before = key_families(client)
            result.redis_before = redis_figures(client)
            cpu_before, own_before = cpu_by_session(), own_cpu_s()
            result.started_at = time.time()
            started = time.monotonic()
            pipeline.start_stage("order-download")
            deadline = started + args.timeout
            counter = ConfirmedCounter(bootstrap)
            counter.start()
            # Drained: every order confirmed on Amazon, and its outcome on shipments.confirmed (a feed's
            # outcome is published once the stage has read the feed's result).
            while len(counter.orders) < orders or confirmed_on_amazon(pipeline) < orders:
                dead = pipeline.dead_processes()
                if dead:
                    raise RuntimeError(f"died: {', '.join(dead)}; logs in {pipeline.run_dir}")
                if time.monotonic() > deadline:
                    print(
                        f"  timed out: {confirmed_on_amazon(pipeline)} of {orders} confirmed on Amazon,"
                        f" {len(counter.orders)} on shipments.confirmed",
                        file=sys.stderr,
                    )
                    break
                time.sleep(0.2)
            result.drain_s = time.monotonic() - started
            cpu_after, own_after = cpu_by_session(), own_cpu_s()
            counter.stop()
            result.redis_after = redis_figures(client)
            for name, pid in sessions(pipeline).items():
                result.cpu_s[name] = cpu_after.get(pid, 0.0) - cpu_before.get(pid, 0.0)
            result.cpu_s["this process (simulator, bench)"] = own_after - own_before
            result.topics_after = read_topics(bootstrap)
            result.families_after = key_families(client)
            _, result.throttled, _ = pipeline.truth()
            client.close()
        finally:
            pipeline.stop()
    finally:
        if args.keep_logs:
            print(f"  logs in {run_dir}", file=sys.stderr)
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
    return result


# --- the figures -----------------------------------------------------------------------------------


def _rates(label: str, times: dict[str, list[float]], run: Run) -> str:
    firsts = sorted(min(at) for at in times.values())
    if len(firsts) < 10:
        return f"  {label}: {len(firsts)} orders"
    total_s = firsts[-1] - run.started_at
    cuts = statistics.quantiles(firsts, n=10)
    middle = len(firsts) * 0.8 / max(cuts[8] - cuts[0], 1e-9)
    twice = sum(1 for at in times.values() if len(at) > 1)
    return (
        f"  {label:<10}{len(firsts):>6} orders, last at {total_s:6.1f} s: "
        f"{len(firsts) / total_s:6.1f}/s overall, {middle:6.1f}/s from the 10th to the 90th percentile;"
        f" {twice} more than once"
    )


def report(run: Run) -> None:
    n = run.orders
    before, after = run.redis_before, run.redis_after
    assert before is not None
    assert after is not None
    print(
        f"\n{n:,} orders (Orders {run.orders_api}), {run.workers} worker(s) per stage, "
        f"Amazon's quota lifted; 429s: {run.throttled}"
    )
    print(
        f"  drained {run.drain_s:.1f} s after the download's start (every order confirmed on Amazon and its"
        " ShipmentConfirmed on shipments.confirmed)"
    )
    print(_rates("imported", run.topics_after.imported_at, run))
    print(_rates("confirmed", run.topics_after.confirmed_at, run))
    for reason, count in run.topics_after.failures.most_common(5):
        print(f"  shipments.failed: {count} x {reason}")

    print(
        "  CPU ms per order (utime + stime of each process's session; the start-up of every process but"
        " order-download's left out)"
    )
    stages = {name: s for name, s in run.cpu_s.items() if name not in _INFRA}
    for name, seconds in sorted(stages.items(), key=lambda kv: -kv[1]):
        print(f"    {name:<34}{seconds * 1000 / n:8.2f}")
    stage_total = sum(stages.values())
    print(f"    {'= ordersync stages':<34}{stage_total * 1000 / n:8.2f}")
    for name in _INFRA:
        if name in run.cpu_s:
            print(f"    {name:<34}{run.cpu_s[name] * 1000 / n:8.2f}")
    pipeline_total = stage_total + run.cpu_s.get("broker", 0) + run.cpu_s.get("redis", 0)
    print(f"    {'= stages + broker + Redis':<34}{pipeline_total * 1000 / n:8.2f}")
    print(f"    {'= every process':<34}{sum(run.cpu_s.values()) * 1000 / n:8.2f}")

    commands = after.commands - before.commands
    commands.pop("info", None)  # this script's own
    scripts = sum(
        commands[name] for name in ("eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro")
    )
    round_trips = after.reads - before.reads
    print(
        f"  Redis per order: {sum(commands.values()) / n:.1f} commands (INFO commandstats: all Redis ran,"
        f" those inside scripts included), {scripts / n:.1f} script calls,"
        f" {round_trips / n:.1f} round trips (INFO total_reads_processed: a pipeline, MULTI/EXEC block or"
        f" script call read at once counts one)"
    )
    top = ", ".join(f"{name} {calls / n:.1f}" for name, calls in commands.most_common(12))
    print(f"    top commands per order: {top}")
    memory = after.used_memory - before.used_memory
    print(
        f"    used_memory {memory / n:,.0f} bytes per order,"
        f" {(after.keys - before.keys) / n:.1f} keys per order"
    )
    growth = {
        family: (
            count - run.families_before.get(family, (0, 0))[0],
            size - run.families_before.get(family, (0, 0))[1],
        )
        for family, (count, size) in run.families_after.items()
    }
    rows = sorted(((f, c, s) for f, (c, s) in growth.items() if c or s), key=lambda row: -row[2])
    families = ", ".join(f"{f} {c / n:.2f} keys {s / n:,.0f} B" for f, c, s in rows[:10])
    print(f"    key families per order (MEMORY USAGE): {families}")
    # Once an order closes (ordersync.state.lifetime) its working state expires; the rest stays: its
    # marks for 120 days, the status model for its retention.
    working = {family.name for family in WORKING_STATE}
    kept = [(f, s) for f, _, s in rows if f not in working]
    model = sum(s for f, s in kept if f.startswith("{rm}"))
    stages = sum(s for f, s in kept if not f.startswith("{rm}"))
    print(
        f"    once closed (after delivery): {(model + stages) / n:,.0f} B per order kept,"
        f" {stages / n:,.0f} B by the stages (marks, codes), {model / n:,.0f} B by the status model"
    )

    records = run.topics_after.records - run.topics_before.records
    sizes = run.topics_after.bytes - run.topics_before.bytes
    print(
        f"  Kafka per order: {sum(records.values()) / n:.2f} records, {sum(sizes.values()) / n:,.0f} bytes"
        " (keys and values, every catalogue topic)"
    )
    by_topic = ", ".join(f"{topic} {count / n:.2f}" for topic, count in records.most_common())
    print(f"    records per order by topic: {by_topic}")


_INFRA = ("broker", "redis", "back-office stand-in", "moto", "this process (simulator, bench)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--orders", type=int, default=5000, help="the backlog on Amazon (the issue: 5,000, 10,000)"
    )
    parser.add_argument("--workers", default="1,2", help="processes per stage, comma-separated: one run each")
    parser.add_argument("--orders-api", choices=("v0", "2026-01-01"), default="2026-01-01")
    parser.add_argument(
        "--writeback-mode", choices=("auto", "feed", "confirm"), default="auto", help="writeback.mode"
    )
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="the simulated Amazon's clock rate; faster, the download's hourly re-scans of the last 48 hours"
        " (each re-downloads the whole backlog) come every real minute and inflate every figure",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep each run's folder of logs")
    parser.add_argument("--timeout", type=float, default=900.0, help="give a run up after this many seconds")
    args = parser.parse_args()
    for workers in (int(w) for w in args.workers.split(",")):
        report(run(args.orders, workers, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
