"""A back-office stand-in for the demo and the end-to-end tests: behaves as an ERP would.

It consumes ``orders.imported`` with a plain Kafka client (kafka-python, not faust: another system,
same codec, same bytes) and, a short delay after each merchant-fulfilled order arrives, invoices and
ships it: it publishes ``invoices.issued`` with carrier, service, tracking, ship date and every line.
Orders fulfilled by Amazon (AFN) are never invoiced for shipping: Amazon ships them.

An Easy Ship order is also packed: right after its invoice, a ``PackagePacked`` (its items, a size in
cm and g, the earliest slot) goes to ``packages.packed``, and the shipment write-back stage schedules
Amazon's pick-up, as a warehouse would have it.

Against the simulator (``simulator_url``) it also plays the seller's shipping desk: a Ship+ order (and
``label_share`` of the others) ships with a label bought through Amazon, which confirms it on Amazon,
and the invoice says so (``label_bought_on_amazon``). An Easy Ship order in a marketplace where the
simulator runs no Easy Ship API (a scenario may put Easy Ship orders anywhere) cannot be scheduled: it
is handed to Amazon's carrier through the simulator's control API instead of being packed.
"""

from __future__ import annotations

import heapq
import logging
import random
import signal
import time
from collections.abc import Collection
from datetime import UTC, datetime
from decimal import Decimal
from types import FrameType
from typing import Literal

import httpx
from kafka import KafkaConsumer, KafkaProducer

from ordersync.errors import InvalidEvent
from ordersync.kafka.admin import kafka_client_config
from ordersync.schemas.codec import decode, encode
from ordersync.schemas.envelope import Envelope, Event
from ordersync.schemas.events import (
    EASY_SHIP,
    SHIP_PLUS,
    InvoiceIssued,
    OrderCancelled,
    OrderImported,
    Package,
    PackagePacked,
    PackedSize,
    SalesOrder,
    ShipmentItem,
    ShippedLine,
)
from ordersync.schemas.topics import INVOICES_ISSUED, ORDERS_IMPORTED, PACKAGES_PACKED, order_key
from ordersync.settings import Settings

log = logging.getLogger(__name__)
CARRIERS = (("UPS", "Ground"), ("USPS", "Priority Mail"), ("FedEx", "Home Delivery"), ("DHL", "Paket"))


def invoice_for(
    order: SalesOrder, rng: random.Random, now: datetime, *, label_bought_on_amazon: bool = False
) -> InvoiceIssued:
    carrier, service = rng.choice(CARRIERS)
    return InvoiceIssued(
        invoice_number=f"INV-{order.code}",
        amazon_order_id=order.amazon_order_id,
        sales_order_code=order.code,
        packages=(
            Package(
                carrier_code=carrier,
                shipping_method=service,
                tracking_number=f"{carrier[:2].upper()}{rng.randrange(10**11, 10**12)}",
                # Never before the purchase (a time-scaled simulator's clock runs ahead of ours).
                ship_date=max(now, order.purchase_date),
                lines=tuple(
                    ShippedLine(order_item_id=line.order_item_id, quantity=line.quantity)
                    for line in order.lines
                    if line.quantity > 0
                ),
                label_bought_on_amazon=label_bought_on_amazon,
            ),
        ),
    )


def packed_for(order: SalesOrder, rng: random.Random, now: datetime) -> PackagePacked:
    """The packer's report of an Easy Ship order's one package: every item, a box that grows with the
    units in it and its weight, for the earliest handover slot."""
    units = sum(line.quantity for line in order.lines if line.quantity > 0)
    return PackagePacked(
        channel=order.channel,
        amazon_order_id=order.amazon_order_id,
        items=tuple(
            ShipmentItem(order_item_id=line.order_item_id, quantity=line.quantity)
            for line in order.lines
            if line.quantity > 0
        ),
        size=PackedSize(
            length_cm=Decimal(30),
            width_cm=Decimal(20),
            height_cm=Decimal(8 + 6 * min(units, 10)),
            weight_g=Decimal(150 + sum(rng.randrange(250, 900) for _ in range(units))),
        ),
        slot="earliest",
        identifier=order.code[:50],
        packed_at=max(now, order.purchase_date),
    )


def ships_by_amazon(
    order: SalesOrder, rng: random.Random, label_share: float, easy_ship_marketplaces: Collection[str] | None
) -> Literal["label", "easy-ship", "packed"] | None:
    """How the shipping desk ships ``order`` when not with its own label: Easy Ship orders packed for a
    scheduled pick-up ("packed"), or handed to Amazon's carrier on the simulator ("easy-ship") where its
    marketplace is not in ``easy_ship_marketplaces`` (None: Easy Ship runs everywhere); Ship+ orders (and
    ``label_share`` of the rest) with a label bought through Amazon."""
    if EASY_SHIP in order.programs:
        if easy_ship_marketplaces is None or order.marketplace_id in easy_ship_marketplaces:
            return "packed"
        return "easy-ship"
    if SHIP_PLUS in order.programs or (label_share > 0 and rng.random() < label_share):
        return "label"
    return None


def easy_ship_marketplaces_of(simulator_url: str) -> frozenset[str]:
    """The marketplaces where the simulator runs Amazon's Easy Ship API (its scenario)."""
    answer = httpx.get(f"{simulator_url}/_sim/scenario", timeout=10).raise_for_status()
    return frozenset(answer.json()["easy_ship"]["marketplaces"])


def _ship_on_simulator(simulator_url: str, order: SalesOrder, by: str) -> None:
    """Buy the label through Amazon, or hand the package to Easy Ship's carrier, on the simulator."""
    answer = httpx.post(
        f"{simulator_url}/_sim/orders/{order.amazon_order_id}/amazon-shipment", json={"by": by}, timeout=10
    )
    if answer.status_code != 200:
        log.warning("%s: the simulator did not ship it by %s: %s", order.amazon_order_id, by, answer.text)


def _invoice_and_pack(
    producer: KafkaProducer,
    order: SalesOrder,
    correlation: str,
    rng: random.Random,
    by_amazon: Literal["label", "easy-ship", "packed"] | None,
) -> None:
    """Publish the order's invoice, then, for an Easy Ship order to be scheduled, its package packed."""
    now = datetime.now(UTC)
    events: list[tuple[str, Event]] = [
        (INVOICES_ISSUED.name, invoice_for(order, rng, now, label_bought_on_amazon=by_amazon == "label"))
    ]
    if by_amazon == "packed":
        events.append((PACKAGES_PACKED.name, packed_for(order, rng, now)))
    for topic, event in events:
        envelope = Envelope.wrap(
            event, seller_id=order.seller_id, marketplace_id=order.marketplace_id, correlation_id=correlation
        )
        producer.send(
            topic, key=order_key(order.seller_id, order.amazon_order_id).encode(), value=encode(envelope)
        )


def run_backoffice(
    settings: Settings,
    *,
    delay_s: float = 1.0,
    seed: int = 7,
    simulator_url: str | None = None,
    label_share: float = 0.0,
) -> None:
    """Invoice every imported merchant-fulfilled order ``delay_s`` after it arrives (and pack the Easy Ship
    ones), until SIGTERM."""
    stop = False

    def request_stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    config = kafka_client_config(settings.kafka)
    consumer = KafkaConsumer(
        ORDERS_IMPORTED.name,
        group_id="ordersync-backoffice-standin",
        auto_offset_reset="earliest",
        enable_auto_commit=True,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        fetch_max_wait_ms=100,
        **config,
    )
    producer = KafkaProducer(acks="all", linger_ms=5, **config)
    rng = random.Random(seed)
    easy_ship_marketplaces = easy_ship_marketplaces_of(simulator_url) if simulator_url else None
    due: list[tuple[float, str, SalesOrder, str]] = []
    invoiced: set[str] = set()
    cancelled: set[str] = set()
    try:
        while not stop:
            for records in consumer.poll(timeout_ms=200).values():
                for record in records:
                    try:
                        envelope = decode(record.value, ORDERS_IMPORTED)
                    except InvalidEvent as exc:
                        log.error("skipped an unreadable orders.imported record: %s", exc)
                        continue
                    payload = envelope.payload
                    if isinstance(payload, OrderCancelled):
                        cancelled.add(payload.amazon_order_id)
                        continue
                    if not isinstance(payload, OrderImported):
                        continue  # updates: nothing to invoice
                    order = payload.sales_order
                    if order.fulfillment_channel == "AFN" or order.amazon_order_id in invoiced:
                        continue
                    invoiced.add(order.amazon_order_id)
                    heapq.heappush(
                        due,
                        (time.monotonic() + delay_s, order.amazon_order_id, order, envelope.correlation_id),
                    )
            while due and due[0][0] <= time.monotonic():
                _, _, order, correlation = heapq.heappop(due)
                if order.amazon_order_id in cancelled:
                    continue  # an ERP does not ship a cancelled order
                by_amazon = ships_by_amazon(order, rng, label_share, easy_ship_marketplaces)
                if simulator_url and by_amazon in ("label", "easy-ship"):
                    _ship_on_simulator(simulator_url, order, str(by_amazon))
                _invoice_and_pack(producer, order, correlation, rng, by_amazon)
            producer.flush()
    finally:
        producer.flush()
        producer.close()
        consumer.close()
