"""``ordersync demo``: the whole pipeline on one machine, and the harness the end-to-end tests share.

:class:`LocalPipeline` starts the embedded broker and Redis, the SP-API simulator with a scenario, the
catalogue's topics, the channels file and listings the back-office would provide, every stage as its
own process, and the back-office stand-in. :class:`OutcomeWatcher` reads the outcome topics like any
Kafka client. :func:`account` compares what the simulated Amazon holds with what the pipeline did,
order by order.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import redis
import yaml
from kafka import KafkaConsumer, TopicPartition
from pydantic import SecretStr
from rich.console import Console
from rich.live import Live
from rich.table import Table

from ordersync.aws import ensure_queue
from ordersync.channels import OrdersApiVersion
from ordersync.dashboard.server import RunningDashboard
from ordersync.dev.devinfra import (
    EmbeddedAws,
    EmbeddedBroker,
    EmbeddedRedis,
    find_free_port,
    stop_process_group,
)
from ordersync.errors import InvalidEvent
from ordersync.kafka.admin import create_topics, kafka_client_config
from ordersync.pipeline.stages import STAGES
from ordersync.privacy import new_kek
from ordersync.schemas.codec import decode
from ordersync.schemas.events import (
    EASY_SHIP,
    OrderCancelled,
    OrderImported,
    OrderImportFailed,
    PackageDocumentsFailed,
    PackageDocumentsReady,
    PackageScheduled,
    PackageSchedulingFailed,
    ShipmentFailed,
)
from ordersync.schemas.topics import (
    CATALOGUE,
    INVOICES_ISSUED,
    ORDER_FLOW,
    ORDERS_DOWNLOADED,
    ORDERS_ENRICHED,
    ORDERS_IMPORTED,
    PACKAGES_DOCUMENTS,
    PACKAGES_PACKED,
    PACKAGES_SCHEDULED,
    SHIPMENTS_CONFIRMED,
    SHIPMENTS_FAILED,
    by_name,
)
from ordersync.settings import (
    DEFAULT_PREFIX,
    LOCAL_AWS_KEY,
    AmazonSettings,
    AuthorizationSettings,
    AwsSettings,
    KafkaSettings,
    PrivacySettings,
    RedisSettings,
    Settings,
)
from ordersync.simulator.runner import RunningSimulator
from ordersync.simulator.scenario import Scenario, load_scenario
from ordersync.state import keys
from ordersync.state.listings import ListingRow, listings_csv

#: The order flow, and an Easy Ship order's package: packed, scheduled, its documents stored.
WATCHED_TOPICS = (*ORDER_FLOW, PACKAGES_PACKED, PACKAGES_SCHEDULED, PACKAGES_DOCUMENTS)


# --- what the pipeline did, read from its topics -------------------------------------------------


@dataclass
class Outcomes:
    """Order ids seen per topic, the latest failure reasons, and the Easy Ship packages' outcomes."""

    orders: dict[str, set[str]] = field(default_factory=lambda: {spec.name: set() for spec in WATCHED_TOPICS})
    import_failures: dict[str, str] = field(default_factory=dict)
    cancelled: set[str] = field(default_factory=set)
    shipment_failures: dict[str, str] = field(default_factory=dict)
    dead_letters: int = 0
    #: Easy Ship orders whose package Amazon scheduled, and why the others' was not.
    scheduled: set[str] = field(default_factory=set)
    scheduling_failures: dict[str, str] = field(default_factory=dict)
    #: Easy Ship orders whose documents are stored: where (``s3://bucket/key``); why the others' are not.
    documents: dict[str, str] = field(default_factory=dict)
    documents_failures: dict[str, str] = field(default_factory=dict)

    def count(self, topic: str) -> int:
        return len(self.orders[topic])


class OutcomeWatcher(threading.Thread):
    """Reads the outcome topics from the start, as any Kafka client would (no consumer group)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(name="outcome-watcher", daemon=True)
        self._settings = settings
        self._lock = threading.Lock()
        self._outcomes = Outcomes()
        self._stop_event = threading.Event()
        self.error: BaseException | None = None

    def snapshot(self) -> Outcomes:
        with self._lock:
            return Outcomes(
                orders={k: set(v) for k, v in self._outcomes.orders.items()},
                import_failures=dict(self._outcomes.import_failures),
                cancelled=set(self._outcomes.cancelled),
                shipment_failures=dict(self._outcomes.shipment_failures),
                dead_letters=self._outcomes.dead_letters,
                scheduled=set(self._outcomes.scheduled),
                scheduling_failures=dict(self._outcomes.scheduling_failures),
                documents=dict(self._outcomes.documents),
                documents_failures=dict(self._outcomes.documents_failures),
            )

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)

    def run(self) -> None:
        try:
            consumer = KafkaConsumer(
                fetch_max_wait_ms=100, enable_auto_commit=False, **kafka_client_config(self._settings.kafka)
            )
            specs = {
                spec.name: spec
                for spec in (*WATCHED_TOPICS, *(s for s in CATALOGUE if s.name.endswith(".dlq")))
            }
            partitions = [
                TopicPartition(name, p)
                for name in specs
                for p in sorted(consumer.partitions_for_topic(name) or ())
            ]
            consumer.assign(partitions)
            consumer.seek_to_beginning(*partitions)
            while not self._stop_event.is_set():
                for tp, records in consumer.poll(timeout_ms=200).items():
                    for record in records:
                        self._record(specs[tp.topic].name, record.value)
            consumer.close()
        except BaseException as exc:  # reported by the demo, never swallowed
            self.error = exc

    def _record(self, topic: str, value: bytes) -> None:
        with self._lock:
            if topic.endswith(".dlq"):
                self._outcomes.dead_letters += 1
                return
            try:
                envelope = decode(value, by_name(topic))
            except InvalidEvent:
                return
            payload = envelope.payload
            order_id = getattr(payload, "amazon_order_id", None)
            if order_id is None:
                inner = getattr(payload, "order", None) or getattr(payload, "sales_order", None)
                order_id = getattr(inner, "amazon_order_id", None)
            if order_id is None:
                return
            if topic == ORDERS_IMPORTED.name and not isinstance(payload, OrderImported):
                if isinstance(payload, OrderCancelled):
                    self._outcomes.cancelled.add(order_id)
                return  # updates and cancellations of orders counted when imported
            self._outcomes.orders[topic].add(order_id)
            self._record_package(order_id, payload)
            if isinstance(payload, OrderImportFailed):
                self._outcomes.import_failures[order_id] = payload.reason_code
            elif topic == ORDERS_IMPORTED.name:
                self._outcomes.import_failures.pop(order_id, None)
            elif isinstance(payload, ShipmentFailed):
                self._outcomes.shipment_failures[order_id] = f"{payload.error_code}: {payload.error_message}"

    def _record_package(self, order_id: str, payload: object) -> None:
        """An Easy Ship package's outcome: a success stands, a failure counts until one comes."""
        outcomes = self._outcomes
        if isinstance(payload, PackageScheduled):
            outcomes.scheduled.add(order_id)
            outcomes.scheduling_failures.pop(order_id, None)
        elif isinstance(payload, PackageSchedulingFailed) and order_id not in outcomes.scheduled:
            outcomes.scheduling_failures[order_id] = f"{payload.error_code}: {payload.error_message}"
        elif isinstance(payload, PackageDocumentsReady):
            outcomes.documents[order_id] = payload.location
            outcomes.documents_failures.pop(order_id, None)
        elif isinstance(payload, PackageDocumentsFailed) and order_id not in outcomes.documents:
            outcomes.documents_failures[order_id] = f"{payload.error_code}: {payload.error_message}"


# --- order-by-order accounting -------------------------------------------------------------------


@dataclass
class Accounting:
    on_amazon: int
    categories: Counter[str]
    unaccounted: list[str]
    throttled: int
    sim_calls: int

    @property
    def complete(self) -> bool:
        return not self.unaccounted


def account(
    truth: list[dict[str, Any]],
    outcomes: Outcomes,
    throttled: int,
    calls: int,
    *,
    easy_ship_packages: set[str] | None = None,
    documents_expected: bool = False,
) -> Accounting:
    """Every order on the simulated Amazon must end in exactly one known state.

    An Easy Ship order ordersync scheduled counts once Amazon holds its package (``easy_ship_packages``:
    the orders it does, when known) and, with ``documents_expected``, once its documents are stored or
    failed: Amazon's carrier picks it up hours later, after the demo."""
    categories: Counter[str] = Counter()
    unaccounted: list[str] = []
    imported = outcomes.orders[ORDERS_IMPORTED.name]
    for order in truth:
        order_id = order["amazon_order_id"]
        status = order["status"]
        if status == "Canceled":
            categories["cancelled on Amazon"] += 1
        elif status in ("Pending", "PendingAvailability"):
            categories["awaiting payment on Amazon"] += 1
        elif order["fulfillment_channel"] == "AFN" and order_id in imported:
            categories["imported, fulfilled by Amazon"] += 1
        elif order_id in outcomes.import_failures:
            categories[f"import failed: {outcomes.import_failures[order_id]}"] += 1
        elif order_id in outcomes.shipment_failures:
            categories["write-back failed"] += 1
        elif EASY_SHIP in order.get("programs", ()) and (
            order_id in outcomes.scheduled or order_id in outcomes.scheduling_failures
        ):
            easy_ship = _easy_ship_category(order_id, outcomes, easy_ship_packages, documents_expected)
            if easy_ship is None:
                unaccounted.append(f"{order_id} (Easy Ship, {status}, package or documents awaited)")
            else:
                categories[easy_ship] += 1
        elif (
            order["fulfillment_channel"] == "MFN" and status == "Shipped" and order.get("confirmed_by_seller")
        ):
            categories["confirmed on Amazon"] += 1
        elif order["fulfillment_channel"] == "MFN" and status == "Shipped" and order.get("shipments"):
            categories["shipped by an Amazon label or Easy Ship"] += 1
        else:
            unaccounted.append(f"{order_id} ({order['fulfillment_channel']}, {status})")
    return Accounting(len(truth), categories, unaccounted, throttled, calls)


def _easy_ship_category(
    order_id: str, outcomes: Outcomes, on_amazon: set[str] | None, documents_expected: bool
) -> str | None:
    """The accounting category of an Easy Ship order whose package ordersync scheduled or failed to;
    None while its outcome is incomplete."""
    if order_id in outcomes.scheduling_failures:
        return "Easy Ship scheduling failed"
    if on_amazon is not None and order_id not in on_amazon:
        return None
    if order_id in outcomes.documents:
        return "Easy Ship package scheduled, documents stored"
    if order_id in outcomes.documents_failures:
        return "Easy Ship package scheduled, documents failed"
    return None if documents_expected else "Easy Ship package scheduled"


# --- the local pipeline --------------------------------------------------------------------------


def channels_for(
    scenario: Scenario,
    *,
    plans_known: bool = True,
    orders_api: OrdersApiVersion | None = None,
    fetch_pii: bool = False,
) -> dict[str, Any]:
    """A channels file for the scenario's sellers; both Orders API versions are exercised (one seller
    in two on each) unless ``orders_api`` names one for all.
    ``plans_known``: each seller's usage plans in its channel's ``rate_limits``; without them the
    rate limiter starts from Amazon's documented plans and learns from the answers' headers.
    ``fetch_pii``: every channel asks for buyers' personal data (kept sealed)."""
    channels = []
    for index, seller in enumerate(scenario.sellers):
        app = seller.applications[0]
        channels.append(
            {
                "name": f"{seller.seller_id.lower()}",
                "seller_id": seller.seller_id,
                "region": seller.region,
                "marketplaces": list(seller.marketplaces),
                "orders_api": orders_api or ("v0" if index % 2 == 0 else "2026-01-01"),
                "fetch_pii": fetch_pii,
                "credentials": {
                    "client_id": {"value": app.client_id},
                    "client_secret": {"value": app.client_secret},
                    "refresh_token": {"value": app.refresh_token},
                },
                "rate_limits": {op: plan.model_dump() for op, plan in seller.usage_plans.items()}
                if plans_known
                else {},
            }
        )
    return {"channels": channels}


class LocalPipeline:
    """Everything ``make demo`` runs, started and stopped as one (also the e2e tests' harness)."""

    def __init__(
        self,
        *,
        scenario: Scenario,
        run_dir: Path,
        stages: tuple[str, ...] = tuple(STAGES),
        kafka_bootstrap: str | None = None,
        redis_url: str | None = None,
        extra_env: dict[str, str] | None = None,
        backoffice: bool = True,
        plans_known: bool = True,
        orders_api: OrdersApiVersion | None = None,
        fetch_pii: bool = False,
        label_share: float = 0.0,
        workers: int = 1,
        web_ports: bool = False,
        file_sellers: tuple[str, ...] | None = None,
    ) -> None:
        """``file_sellers``: only these sellers' channels go into the channels file (None: every
        seller's); the others can be added to the channel registry while the pipeline runs.
        ``label_share``: the back-office stand-in ships that share of ordinary seller-fulfilled
        orders with labels bought through Amazon (Ship+ and Easy Ship orders ship through Amazon always).
        ``workers``: processes per stage, in the stage's one consumer group (Kafka shares the partitions
        among them); the first is named after the stage, the others ``<stage>-2``, ``<stage>-3``...
        ``web_ports``: each stage process serves ``/readyz`` and ``/metrics`` on a port of its own
        (:attr:`web_ports`, :meth:`ready`)."""
        if workers < 1:
            raise ValueError(f"a stage needs at least one worker, not {workers}")
        self.scenario = scenario
        self.run_dir = run_dir
        self.stages = stages
        self._kafka_bootstrap = kafka_bootstrap
        self._redis_url = redis_url
        self._extra_env = extra_env or {}
        self._backoffice = backoffice
        self._plans_known = plans_known
        self._orders_api = orders_api
        self._fetch_pii = fetch_pii
        self._label_share = label_share
        self.workers = workers
        self._serve_web = web_ports
        self._file_sellers = file_sellers
        #: Signs the state of the dashboard's "Add a channel with Amazon" (the simulator's consent).
        self._state_secret = SecretStr(secrets.token_urlsafe(32))
        #: Stage process name -> the port its /readyz and /metrics answer on (with ``web_ports``).
        self.web_ports: dict[str, int] = {}
        #: Stage process name -> (stage, the environment it adds to :attr:`env`).
        self._stage_processes: dict[str, tuple[str, dict[str, str]]] = {}
        self._broker: EmbeddedBroker | None = None
        self._redis: EmbeddedRedis | None = None
        self._aws: EmbeddedAws | None = None
        self.simulator: RunningSimulator | None = None
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.env: dict[str, str] = {}
        #: Amazon's notifications queue on the local SQS server.
        self.queue_url = self.queue_arn = ""

    @property
    def broker(self) -> EmbeddedBroker | None:
        """The embedded broker this pipeline started (None when it was given one)."""
        return self._broker

    @property
    def redis_server(self) -> EmbeddedRedis | None:
        """The embedded Redis this pipeline started (None when it was given one)."""
        return self._redis

    @property
    def aws_server(self) -> EmbeddedAws | None:
        """The local AWS server (moto) this pipeline started."""
        return self._aws

    # -- start ---------------------------------------------------------------------------------

    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self._kafka_bootstrap is None:
            self._broker = EmbeddedBroker().start()
            self._kafka_bootstrap = self._broker.bootstrap
        if self._redis_url is None:
            self._redis = EmbeddedRedis().start()
            self._redis_url = self._redis.url
        # Amazon's notifications queue (SQS), on moto's server.
        self._aws = EmbeddedAws().start()
        aws = AwsSettings(
            endpoint_url=self._aws.endpoint_url,
            access_key_id=SecretStr(LOCAL_AWS_KEY),
            secret_access_key=SecretStr(LOCAL_AWS_KEY),
        )
        self.queue_url, self.queue_arn = asyncio.run(ensure_queue(aws, "ordersync-order-change"))
        # The simulator sends ORDER_CHANGE notifications to the queue, as Amazon does.
        self.simulator = RunningSimulator(self.scenario, aws=aws)
        self.simulator.start()
        channels_file = self.run_dir / "channels.yaml"
        channels = channels_for(
            self.scenario,
            plans_known=self._plans_known,
            orders_api=self._orders_api,
            fetch_pii=self._fetch_pii,
        )
        if self._file_sellers is not None:
            channels["channels"] = [c for c in channels["channels"] if c["seller_id"] in self._file_sellers]
        channels_file.write_text(yaml.safe_dump(channels, sort_keys=False))
        self.env = {
            "ORDERSYNC_KAFKA__BOOTSTRAP": self._kafka_bootstrap,
            "ORDERSYNC_REDIS__URL": self._redis_url,
            "ORDERSYNC_AMAZON__ENDPOINT": self.simulator.base_url,
            "ORDERSYNC_AMAZON__LWA_ENDPOINT": f"{self.simulator.base_url}/auth/o2/token",
            "ORDERSYNC_AMAZON__TIME_SCALE": str(self.scenario.time_scale),
            "ORDERSYNC_CHANNELS_FILE": str(channels_file),
            "ORDERSYNC_STATE_DIR": str(self.run_dir),
            "ORDERSYNC_DOWNLOAD__POLL_INTERVAL_S": "1",
            "ORDERSYNC_DOWNLOAD__INITIAL_LOOKBACK_S": str(30 * 86400),
            "ORDERSYNC_WRITEBACK__RETRY_BACKOFF_S": "0.5",
            # A documents feed each createFeed refill (30 an hour): the demo's labels within seconds.
            "ORDERSYNC_DOCUMENTS__FLUSH_INTERVAL_S": "120",
            "ORDERSYNC_AWS__ENDPOINT_URL": self._aws.endpoint_url,
            "ORDERSYNC_AWS__ACCESS_KEY_ID": LOCAL_AWS_KEY,
            "ORDERSYNC_AWS__SECRET_ACCESS_KEY": LOCAL_AWS_KEY,
            "ORDERSYNC_NOTIFICATIONS__QUEUE_URL": self.queue_url,
            # Buyers' personal data of fetch_pii channels, sealed; the keys in moto's S3.
            "ORDERSYNC_PRIVACY__KEK": new_kek(),
            **self._extra_env,
        }
        settings = self.settings()
        create_topics(settings)
        self._load_listings()
        if "order-notifications" in self.stages:
            # Each channel's ORDER_CHANGE subscription, through Amazon's Notifications API.
            self.cli("notifications", "setup")
        for stage in self.stages:
            self.start_stage(stage)
        if self._backoffice:
            self.start_process(
                "backoffice",
                [
                    "backoffice",
                    "--delay",
                    "0.5",
                    "--simulator",
                    self.simulator.base_url,
                    "--label-share",
                    str(self._label_share),
                ],
            )

    def settings(self) -> Settings:
        """The settings the stages run with, as far as a test or the demo reaches what they reach; with
        the simulator's application for the website authorization (the dashboard's Channels page)."""
        env = self.env
        app = self.scenario.sellers[0].applications[0]
        amazon = AmazonSettings(
            endpoint=env["ORDERSYNC_AMAZON__ENDPOINT"],
            lwa_endpoint=env["ORDERSYNC_AMAZON__LWA_ENDPOINT"],
            time_scale=float(env["ORDERSYNC_AMAZON__TIME_SCALE"]),
            authorization=AuthorizationSettings(
                application_id=app.solution_id,
                client_id=app.client_id,
                client_secret=SecretStr(app.client_secret),
                seller_central_url=env["ORDERSYNC_AMAZON__ENDPOINT"],
                draft=app.draft,
                state_secret=self._state_secret,
            ),
        )
        return Settings(
            amazon=amazon,
            kafka=KafkaSettings(bootstrap=env["ORDERSYNC_KAFKA__BOOTSTRAP"]),
            redis=RedisSettings(url=env["ORDERSYNC_REDIS__URL"]),
            channels_file=Path(env["ORDERSYNC_CHANNELS_FILE"]),
            aws=AwsSettings(
                endpoint_url=env["ORDERSYNC_AWS__ENDPOINT_URL"],
                access_key_id=SecretStr(env["ORDERSYNC_AWS__ACCESS_KEY_ID"]),
                secret_access_key=SecretStr(env["ORDERSYNC_AWS__SECRET_ACCESS_KEY"]),
            ),
            privacy=PrivacySettings(kek=SecretStr(env["ORDERSYNC_PRIVACY__KEK"])),
        )

    def _load_listings(self) -> None:
        """What the back-office knows: the catalogue's SKUs, through the real `listings import`."""
        assert self.simulator is not None
        for seller in self.scenario.sellers:
            if self._file_sellers is not None and seller.seller_id not in self._file_sellers:
                continue  # no channel yet: one added later loads its own
            products = self.simulator.state.catalogue(seller.seller_id)
            rows = [ListingRow(f"STK-{p.sku}", p.sku, p.asin, p.ean) for p in products]
            path = self.run_dir / f"listings-{seller.seller_id}.csv"
            path.write_text(listings_csv(rows))
            self.cli("listings", "import", str(path), "--channel", seller.seller_id.lower())

    def channel_names(self) -> list[str]:
        return [
            channel["name"]
            for channel in channels_for(self.scenario, orders_api=self._orders_api)["channels"]
        ]

    def cli_result(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``ordersync ARGS`` against this pipeline."""
        return subprocess.run(
            [sys.executable, "-m", "ordersync.cli", *args],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def cli(self, *args: str) -> str:
        """Run ``ordersync ARGS``; its output, or an error with what it printed."""
        done = self.cli_result(*args)
        if done.returncode != 0:
            raise RuntimeError(f"ordersync {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    def start_process(
        self, name: str, args: list[str], *, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``ordersync ARGS`` as process ``name`` (its log: ``<name>.log``), with ``env`` added."""
        # The child writes to its own copy of the descriptor; ours is closed once it has started.
        with (self.run_dir / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "ordersync.cli", *args],
                env={**os.environ, **self.env, **(env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes[name] = process
        return process

    def start_stage(self, stage: str) -> list[str]:
        """Start :attr:`workers` processes of ``stage`` (one consumer group); returns their names."""
        names = [stage if index == 1 else f"{stage}-{index}" for index in range(1, self.workers + 1)]
        for index, name in enumerate(names, start=1):
            env: dict[str, str] = {}
            if self.workers > 1:
                # Leases and claims are per worker id (default: the host name, the same for all of them
                # here); two workers under one id would both hold a channel's lease.
                env["ORDERSYNC_STAGE__WORKER_ID"] = f"local-{index}"
            if self._serve_web:
                self.web_ports[name] = find_free_port()
                env["ORDERSYNC_STAGE__WEB_PORT"] = str(self.web_ports[name])
                env["ORDERSYNC_STAGE__WEB_HOST"] = "127.0.0.1"
            self._stage_processes[name] = (stage, env)
            self._start_stage_process(name)
        return names

    def _start_stage_process(self, name: str) -> None:
        stage, env = self._stage_processes[name]
        self.start_process(name, ["run", stage], env=env)

    def stage_processes(self, stage: str) -> list[str]:
        """The names of ``stage``'s processes."""
        return [name for name, (of, _) in self._stage_processes.items() if of == stage]

    def ready(self, name: str) -> bool:
        """Whether stage process ``name`` answers ``/readyz`` with 200 (needs ``web_ports``)."""
        try:
            answer = httpx.get(f"http://127.0.0.1:{self.web_ports[name]}/readyz", timeout=5)
        except httpx.HTTPError:
            return False
        return answer.status_code == 200

    def kill(self, name: str) -> None:
        """SIGKILL one process (crash tests)."""
        process = self.processes.pop(name)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def restart(self, name: str) -> None:
        """SIGKILL a stage's process (by its name: the stage's, or ``<stage>-2``...) and start it again
        with the same worker id, as an orchestrator would after a crash."""
        self.kill(name)
        if name in self._stage_processes:
            self._start_stage_process(name)
        else:
            self.start_process(name, ["run", name])

    # -- observe -------------------------------------------------------------------------------

    def truth(self) -> tuple[list[dict[str, Any]], int, int]:
        """Every order the simulator holds, and how many calls and 429s it counted."""
        assert self.simulator is not None
        with httpx.Client(base_url=self.simulator.base_url, timeout=30) as http:
            orders = http.get("/_sim/orders").raise_for_status().json()["orders"]
            counters = http.get("/_sim/counters").raise_for_status().json()
        throttled = sum(c.get("throttled", 0) for c in counters["operations"])
        calls = sum(c.get("calls", 0) for c in counters["operations"])
        return orders, throttled, calls

    def easy_ship_orders(self) -> set[str]:
        """The orders whose Easy Ship package the simulated Amazon holds (scheduled)."""
        assert self.simulator is not None
        with httpx.Client(base_url=self.simulator.base_url, timeout=30) as http:
            packages = http.get("/_sim/easyship/packages").raise_for_status().json()["packages"]
        return {package["scheduledPackageId"]["amazonOrderId"] for package in packages}

    @property
    def documents_expected(self) -> bool:
        """Whether each scheduled Easy Ship package gets its documents stored (the shipment write-back
        stage runs)."""
        return "shipment-write-back" in self.stages

    def operation_counts(self, operation: str) -> tuple[int, int]:
        """The calls the simulator counted of ``operation``, every seller's, and how many it answered 429."""
        assert self.simulator is not None
        with httpx.Client(base_url=self.simulator.base_url, timeout=30) as http:
            rows = http.get("/_sim/counters").raise_for_status().json()["operations"]
        mine = [row for row in rows if row["operation"] == operation]
        return sum(row.get("calls", 0) for row in mine), sum(row.get("throttled", 0) for row in mine)

    def imported_at(self, orders: list[dict[str, Any]]) -> dict[str, float]:
        """When the import stage published each of ``orders``' sales order (epoch seconds, host time;
        the order's status record in Redis), for those it did."""
        client = redis.Redis.from_url(self.env["ORDERSYNC_REDIS__URL"], decode_responses=True)
        prefix = self.env.get("ORDERSYNC_REDIS__KEY_PREFIX", DEFAULT_PREFIX)
        try:
            with client.pipeline(transaction=False) as batch:
                for order in orders:
                    batch.hget(
                        keys.ORDER_STATUS.key(prefix, order["seller_id"], order["amazon_order_id"]),
                        "imported_at",
                    )
                values = batch.execute()
        finally:
            client.close()
        return {
            order["amazon_order_id"]: datetime.fromisoformat(value).timestamp()
            for order, value in zip(orders, values, strict=True)
            if value
        }

    def dead_processes(self) -> list[str]:
        return [name for name, p in self.processes.items() if p.poll() is not None]

    # -- stop ----------------------------------------------------------------------------------

    def stop(self) -> None:
        for name, process in list(self.processes.items()):
            stop_process_group(process.pid, grace_s=10.0)
            process.wait(timeout=10)
            del self.processes[name]
        if self.simulator is not None:
            self.simulator.stop()
        if self._redis is not None:
            self._redis.stop()
        if self._aws is not None:
            self._aws.stop()
        if self._broker is not None:
            self._broker.stop()


@contextmanager
def local_pipeline(**kwargs: Any) -> Iterator[LocalPipeline]:
    pipeline = LocalPipeline(**kwargs)
    try:
        pipeline.start()
        yield pipeline
    finally:
        pipeline.stop()


def wait_until_accounted(
    pipeline: LocalPipeline, watcher: OutcomeWatcher, *, timeout_s: float, on_tick: Any = None
) -> Accounting:
    """Wait until the simulator's arrivals are over and every order is accounted for twice in a row."""
    deadline = time.monotonic() + timeout_s
    arrivals_end = time.monotonic() + max(
        seller.orders.arrival_window_s for seller in pipeline.scenario.sellers
    ) / max(pipeline.scenario.time_scale, 1e-9)
    streak = 0
    while True:
        truth, throttled, calls = pipeline.truth()
        accounting = account(
            truth,
            watcher.snapshot(),
            throttled,
            calls,
            easy_ship_packages=pipeline.easy_ship_orders(),
            documents_expected=pipeline.documents_expected,
        )
        if on_tick is not None:
            on_tick(accounting, watcher.snapshot())
        dead = pipeline.dead_processes()
        if dead:
            raise RuntimeError(
                f"stage process(es) died: {', '.join(dead)}; see the logs in {pipeline.run_dir}"
            )
        streak = streak + 1 if accounting.complete and time.monotonic() >= arrivals_end else 0
        if streak >= 2 or time.monotonic() >= deadline:
            return accounting
        time.sleep(1.0)


def progress_table(
    accounting: Accounting | None, outcomes: Outcomes, elapsed_s: float, final: bool = False
) -> Table:
    """The demo's live view, and its final result."""
    title = "ordersync demo: result" if final else "ordersync demo: orders flowing (Ctrl-C stops everything)"
    grid = Table(title=title, show_header=True)
    grid.add_column("")
    grid.add_column("orders", justify="right")
    grid.add_row("on Amazon (simulator)", str(accounting.on_amazon if accounting else "-"))
    grid.add_row("downloaded", str(outcomes.count(ORDERS_DOWNLOADED.name)))
    grid.add_row("items fetched", str(outcomes.count(ORDERS_ENRICHED.name)))
    grid.add_row("imported as sales orders", str(outcomes.count(ORDERS_IMPORTED.name)))
    for reason, n in sorted(Counter(outcomes.import_failures.values()).items()):
        grid.add_row(f"  import failed: {reason}", str(n))
    grid.add_row("invoiced by the back-office", str(outcomes.count(INVOICES_ISSUED.name)))
    grid.add_row("confirmed on Amazon", str(outcomes.count(SHIPMENTS_CONFIRMED.name)))
    grid.add_row("write-back failed", str(outcomes.count(SHIPMENTS_FAILED.name)))
    if accounting:
        # The other final states (cancelled, fulfilled by Amazon...), under the write-back.
        for category, n in sorted(accounting.categories.items()):
            if not category.startswith(("import failed", "confirmed", "Easy Ship")):
                grid.add_row(f"  {category}", str(n))
    grid.add_row("Easy Ship packages packed", str(outcomes.count(PACKAGES_PACKED.name)))
    grid.add_row("  scheduled for pick-up", str(len(outcomes.scheduled)))
    grid.add_row("  scheduling failed", str(len(outcomes.scheduling_failures)))
    grid.add_row("  documents stored (S3)", str(len(outcomes.documents)))
    grid.add_row("  documents failed", str(len(outcomes.documents_failures)))
    if accounting:
        grid.add_row("unaccounted for", str(len(accounting.unaccounted)))
        grid.add_row("429s received from Amazon", str(accounting.throttled))
        grid.add_row("Amazon calls made", str(accounting.sim_calls))
    grid.add_row("elapsed", f"{elapsed_s:.0f} s")
    return grid


def easy_ship_summary(outcomes: Outcomes) -> str:
    """One line on the Easy Ship packages: scheduled, documents stored, and where the first one is."""
    line = (
        f"Easy Ship: {len(outcomes.scheduled)} package(s) scheduled, "
        f"{len(outcomes.documents)} with their documents stored"
    )
    if outcomes.documents:
        order_id, location = min(outcomes.documents.items())
        line += f", e.g. {order_id}: {location}"
    failures = len(outcomes.scheduling_failures) + len(outcomes.documents_failures)
    return line + (f"; {failures} failed" if failures else "")


def _demo_dashboard(pipeline: LocalPipeline, console: Console) -> RunningDashboard:
    """The dashboard over the demo's status model, with a fresh operator token for its actions."""
    token = secrets.token_urlsafe(12)
    settings = pipeline.settings()
    dashboard_settings = settings.dashboard.model_copy(update={"operator_token": SecretStr(token)})
    dashboard = RunningDashboard(settings.model_copy(update={"dashboard": dashboard_settings})).start()
    console.print(f"dashboard: [bold]{dashboard.base_url}[/] (operator token for actions: {token})")
    return dashboard


def cli_exports(env: dict[str, str]) -> str:
    """The ``export`` line a shell needs for ``ordersync status`` or ``orders ...`` to reach the demo's
    Kafka, Redis (and key prefix), channels and simulated Amazon; no secret is in it."""
    reach = ("KAFKA__BOOTSTRAP", "REDIS__URL", "REDIS__KEY_PREFIX", "CHANNELS_FILE", "AMAZON__ENDPOINT")
    names = [f"ORDERSYNC_{name}" for name in (*reach, "AMAZON__LWA_ENDPOINT")]
    values = {"ORDERSYNC_REDIS__KEY_PREFIX": DEFAULT_PREFIX, **env}
    return "export " + " ".join(f"{name}={shlex.quote(values[name])}" for name in names)


def run_demo(*, time_scale: float, seed: int, timeout_s: float, keep: bool = False) -> int:
    """Run the demo; returns the exit status (non-zero when any order is unaccounted for). ``keep``:
    leave everything running after the summary, to look around the dashboard, until Ctrl-C."""
    console = Console()
    scenario = load_scenario("demo", seed=seed, time_scale=time_scale)
    started = time.monotonic()

    def table(accounting: Accounting | None, outcomes: Outcomes, final: bool = False) -> Table:
        return progress_table(accounting, outcomes, time.monotonic() - started, final)

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM stops everything the demo started, as Ctrl-C does

    signal.signal(signal.SIGTERM, interrupt)
    run_dir = Path(tempfile.mkdtemp(prefix="ordersync-demo-"))
    console.print(
        f"[bold]ordersync demo[/]: {sum(s.orders.count for s in scenario.sellers)} orders, "
        f"{len(scenario.sellers)} sellers, simulated Amazon at {time_scale}x; logs in {run_dir}"
    )
    pipeline = LocalPipeline(scenario=scenario, run_dir=run_dir)
    watcher: OutcomeWatcher | None = None
    dashboard: RunningDashboard | None = None
    accounting: Accounting | None = None
    try:
        with console.status("starting the broker, Redis, the simulator and the stages..."):
            pipeline.start()
        console.print(cli_exports(pipeline.env), markup=False, soft_wrap=True)
        dashboard = _demo_dashboard(pipeline, console)
        watcher = OutcomeWatcher(pipeline.settings())
        watcher.start()
        with Live(table(None, Outcomes()), console=console, refresh_per_second=2) as live:
            accounting = wait_until_accounted(
                pipeline,
                watcher,
                timeout_s=timeout_s,
                on_tick=lambda acc, out: live.update(table(acc, out)),
            )
            outcomes = watcher.snapshot()
            live.update(table(accounting, outcomes, final=True))
        console.print()
        console.print(easy_ship_summary(outcomes))
        feeds, feeds_throttled = pipeline.operation_counts("createFeed")
        console.print(f"createFeed: {feeds} call(s), {feeds_throttled} answered 429 (over Amazon's quota)")
        if keep:
            console.print(f"everything keeps running; the dashboard is at {dashboard.base_url}; Ctrl-C stops")
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        if not keep or accounting is None:
            console.print("[yellow]interrupted: stopping everything[/]")
            return 130
    finally:
        # A second Ctrl-C must not cut the cleanup short and leave processes behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if watcher is not None:
            watcher.stop()
        if dashboard is not None:
            dashboard.stop()
        pipeline.stop()
    if accounting.unaccounted:
        console.print(
            f"[red]{len(accounting.unaccounted)} order(s) unaccounted for[/], e.g. "
            + ", ".join(accounting.unaccounted[:5])
        )
        return 1
    if accounting.throttled:
        console.print(f"[red]Amazon answered 429 {accounting.throttled} time(s)[/]")
        return 1
    console.print("[green]every order is accounted for, with zero 429s[/]")
    return 0
