"""Order acknowledgements, the pure parts: the XML with MerchantOrderID (as ordersync writes it and as
the simulator reads it, in OrderAcknowledgement.xsd's order), what becomes of an imported order, the
stage's wiring, and the acknowledgement lane behind shipments with stock keeping its reserved feed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from lxml import etree

from ordersync.amazon.feeds import AcknowledgementMessage, order_acknowledgement_feed
from ordersync.consumers.acknowledgement import FEEDS, LANE, PendingAcknowledgement, messages, verdict
from ordersync.errors import QuotaTimeout
from ordersync.pipeline.stages import build_stage
from ordersync.ratelimit import InMemoryRateLimiter, PlanBook
from ordersync.ratelimit.limiter import limiter_options
from ordersync.schemas.events import OrderAcknowledgementResult
from ordersync.schemas.topics import ORDERS_ACKNOWLEDGEMENT_RESULTS
from ordersync.settings import Settings
from ordersync.simulator.feeds import MessageError, parse_acknowledgement, parse_envelope
from ordersync.state.readmodel import FOLDED_TOPICS, derive, facts_of
from ordersync.state.readmodel.facts import decode_fact, encode_fact
from tests.factories import CHANNEL, OK, RecordedRun, channel
from tests.factories import SELLER as SELLER_ID

pytestmark = pytest.mark.unit

SELLER = "A2ACME"
ORDER = "111-0000000-0000001"


def _bodies(content: bytes) -> list[etree._Element]:
    return [body for _, body in parse_envelope(content, "OrderAcknowledgement", SELLER)]


def test_success_carries_the_merchant_order_id_right_after_the_amazon_order_id() -> None:
    batch = {
        1: PendingAcknowledgement(order_id=ORDER, channel="acme", merchant_order_id="SO00000042"),
        2: PendingAcknowledgement(order_id="111-0000000-0000002", channel="acme", merchant_order_id="SO7"),
    }
    content = order_acknowledgement_feed(SELLER, messages(batch))
    bodies = _bodies(content)
    assert [[child.tag for child in body] for body in bodies] == [
        ["AmazonOrderID", "MerchantOrderID", "StatusCode"]
    ] * 2
    assert [body.findtext("MerchantOrderID") for body in bodies] == ["SO00000042", "SO7"]
    assert {body.findtext("StatusCode") for body in bodies} == {"Success"}
    # The simulator reads it back as Amazon would.
    parsed = parse_acknowledgement(1, bodies[0])
    assert (parsed.order_id, parsed.status_code, parsed.merchant_order_id, parsed.items) == (
        ORDER,
        "Success",
        "SO00000042",
        (),
    )


def test_a_cancellation_has_no_merchant_order_id() -> None:
    content = order_acknowledgement_feed(
        SELLER, [AcknowledgementMessage(1, ORDER, "Failure", (("i1", "NoInventory"),))]
    )
    (body,) = _bodies(content)
    assert [child.tag for child in body] == ["AmazonOrderID", "StatusCode", "Item"]
    assert parse_acknowledgement(1, body).merchant_order_id is None


@pytest.mark.parametrize(
    "inner",
    [
        # MerchantOrderID after StatusCode: not the XSD's sequence.
        f"<AmazonOrderID>{ORDER}</AmazonOrderID><StatusCode>Success</StatusCode>"
        "<MerchantOrderID>SO1</MerchantOrderID>",
        f"<AmazonOrderID>{ORDER}</AmazonOrderID><MerchantOrderID> </MerchantOrderID>"
        "<StatusCode>Success</StatusCode>",
    ],
)
def test_the_simulator_refuses_a_misplaced_or_empty_merchant_order_id(inner: str) -> None:
    element = etree.fromstring(f"<OrderAcknowledgement>{inner}</OrderAcknowledgement>")
    with pytest.raises(MessageError):
        parse_acknowledgement(1, element)


def test_what_becomes_of_an_imported_orders_acknowledgement() -> None:
    on = channel(acknowledge_orders=True)
    assert channel().acknowledge_orders is False, "off by default"
    assert verdict(channel(), "MFN", {}) == "off"
    assert verdict(channel(acknowledge_orders=True, upload_order_status=False), "MFN", {}) == "off"
    assert verdict(on, "AFN", {}) == "not-seller-fulfilled"
    assert verdict(on, "MFN", {}) == "send"
    assert verdict(on, "MFN", {"acknowledgement": "Pending"}) == "send"  # (the caller checks the queue)
    assert verdict(on, "MFN", {"acknowledgement": "Success"}) == "settled"
    assert verdict(on, "MFN", {"acknowledgement": "Failed"}) == "settled"
    assert verdict(on, "MFN", {"amazon_status": "Canceled"}) == "cancelled"
    assert verdict(on, "MFN", {"seller_cancellation": "Success"}) == "cancelled"
    assert verdict(on, "MFN", {"seller_cancellation": "Failed", "amazon_status": "Shipped"}) == "send"


def test_the_parked_order_reads_back_as_it_was_parked() -> None:
    entry = PendingAcknowledgement(
        order_id=ORDER, channel="acme", merchant_order_id="SO1", correlation_id="c", marketplace_id="M"
    )
    entry.attempts, entry.outcome_unknown, entry.not_before = 2, True, 12.5
    assert FEEDS.kind.loads(entry.field, entry.dumps()) == entry
    assert FEEDS.kind.from_record(entry.record()) == entry


def test_the_write_back_stage_reads_orders_imported_for_the_acknowledgements(tmp_path: Path) -> None:
    channels = tmp_path / "channels.yaml"
    channels.write_text(
        "channels:\n  - name: acme\n    seller_id: A2ACME\n    marketplaces: [ATVPDKIKX0DER]\n"
        "    acknowledge_orders: true\n    credentials:\n      client_id: {value: x}\n"
        "      client_secret: {value: y}\n      refresh_token: {value: z}\n"
    )
    app, runtime = build_stage("shipment-write-back", Settings(channels_file=channels))
    assert {"shipment-write-back", "seller-cancellations", "order-acknowledgements"} <= set(app.agents)
    assert runtime.channels.by_name("acme").acknowledge_orders


# --- the acknowledgement lane, with the default settings -------------------------------------------------

FEED = "createFeed"
RATE, BURST = 1 / 120, 15  # Amazon's createFeed: 30 an hour, burst 15


class _Clock:
    """Seconds that move only when the test says; a sleeper stays asleep until cancelled."""

    def __init__(self) -> None:
        self.now = 100_000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        await asyncio.Event().wait()


async def _take_now(limiter: InMemoryRateLimiter, lane: str) -> bool:
    try:
        await limiter.acquire(FEED, SELLER, lane=lane, timeout=0)
    except QuotaTimeout:
        return False
    return True


async def test_shipments_pass_a_waiting_acknowledgement_feed_and_stock_keeps_its_reserved_feed() -> None:
    clock = _Clock()
    limiter = InMemoryRateLimiter(
        plans=PlanBook({FEED: (RATE, BURST)}),
        clock=clock,
        sleep=clock.sleep,
        **limiter_options(Settings()),
    )
    assert LANE in limiter.lane_reserves
    assert not await _take_now(limiter, "packing")  # the bucket starts empty ...
    clock.now += 10 * BURST / RATE  # ... and fills up
    # Shipments take all but the inventory run's reserved feed.
    while await _take_now(limiter, "packing"):
        pass
    clock.now += 1 / RATE  # one more token: two in the bucket, one of them reserved for stock
    acknowledging = asyncio.create_task(limiter.acquire(FEED, SELLER, lane=LANE, timeout=3600))
    await asyncio.sleep(0)
    assert not acknowledging.done(), "an acknowledgement feed never takes the last tokens"
    # Queued behind it, a fulfillment feed goes first, and the inventory run finds its reserved feed.
    assert await _take_now(limiter, "packing")
    assert await _take_now(limiter, "inventory")
    assert not acknowledging.done()
    acknowledging.cancel()
    with pytest.raises(asyncio.CancelledError):
        await acknowledging


# --- the status model -------------------------------------------------------------------------------------


def test_the_status_model_shows_the_acknowledgement_in_the_history_and_fails_nothing() -> None:
    run = RecordedRun()
    run.order_flow(OK)
    run.imported(OK, "SO00000001")
    for acknowledged in (False, True):
        result = OrderAcknowledgementResult(
            channel=CHANNEL,
            amazon_order_id=OK,
            merchant_order_id="SO00000001",
            acknowledged=acknowledged,
            feed_id="50001" if acknowledged else None,
            error_code=None if acknowledged else "FeedFailed",
            error_message=None if acknowledged else "feed 50000 ended FATAL",
        )
        run.add(ORDERS_ACKNOWLEDGEMENT_RESULTS.name, result)
    assert ORDERS_ACKNOWLEDGEMENT_RESULTS in FOLDED_TOPICS
    facts = [
        fact
        for topic, envelope in run.events
        for target, fact in facts_of(topic, envelope)
        if target.amazon_order_id == OK
    ]
    for fact in facts:
        assert decode_fact(fact.event_id, encode_fact(fact)) == fact
    derived = derive(SELLER_ID, OK, facts)
    assert derived.row.status == "Success"
    summaries = [entry["summary"] for entry in derived.history[-2:]]
    assert summaries == [
        "not acknowledged on Amazon: FeedFailed feed 50000 ended FATAL",
        "acknowledged on Amazon as SO00000001 (feed 50001)",
    ]
