"""Feed bodies and stage wiring of the write-back and inventory stages (no servers)."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

from ordersync.amazon.feeds import AcknowledgementMessage, order_acknowledgement_feed
from ordersync.consumers.fulfillment_feed import feed_would_be_late, near_deadline
from ordersync.pipeline.stages import STAGES, build_stage
from ordersync.settings import Settings, WriteBackSettings

pytestmark = pytest.mark.unit

CHANNELS = """
channels:
  - name: acme
    seller_id: A2ACME
    marketplaces: [ATVPDKIKX0DER]
    writeback_mode: feed
    cancellation_reason: NoInventory
    credentials:
      client_id: {value: x}
      client_secret: {value: y}
      refresh_token: {value: z}
"""


def test_acknowledgement_feed_cancels_each_item_with_its_reason() -> None:
    content = order_acknowledgement_feed(
        "A2ACME",
        [
            AcknowledgementMessage(
                1, "111-0000000-0000001", "Failure", (("i1", "NoInventory"), ("i2", None))
            ),
            AcknowledgementMessage(2, "111-0000000-0000002", "Failure"),
        ],
    )
    root = etree.fromstring(content)
    assert root.findtext("MessageType") == "OrderAcknowledgement"
    assert root.findtext("Header/MerchantIdentifier") == "A2ACME"
    messages = root.findall("Message")
    assert [m.findtext("MessageID") for m in messages] == ["1", "2"]
    first = messages[0].find("OrderAcknowledgement")
    assert first is not None
    assert first.findtext("StatusCode") == "Failure"
    assert [i.findtext("CancelReason") for i in first.findall("Item")] == ["NoInventory", None]
    assert messages[1].findall("OrderAcknowledgement/Item") == []


def test_the_inventory_stage_is_registered(tmp_path: Path) -> None:
    channels = tmp_path / "channels.yaml"
    channels.write_text(CHANNELS)
    settings = Settings(channels_file=channels)
    assert STAGES["inventory"] == "ordersync.consumers.inventory"
    app, runtime = build_stage("inventory", settings)
    assert "inventory-levels" in app.agents
    app, runtime = build_stage("shipment-write-back", settings)
    assert {"shipment-write-back", "seller-cancellations"} <= set(app.agents)
    assert runtime.channels.channels[0].writeback_mode == "feed"
    assert runtime.channels.channels[0].cancellation_reason == "NoInventory"


def test_writeback_defaults() -> None:
    settings = WriteBackSettings()
    assert settings.mode == "auto"
    assert settings.max_attempts == 5
    assert settings.feed_max_messages == 10_000


def test_a_package_goes_directly_only_when_the_next_feed_would_confirm_it_too_late() -> None:
    # The next feed goes in an hour and takes 15 minutes; half an hour of margin: 1 h 45 min.
    timing = {"now": 0.0, "next_feed_at": 3600.0, "feed_expected_s": 900.0, "margin_s": 1800.0}
    assert feed_would_be_late(ship_by=6299.0, **timing)
    assert not feed_would_be_late(ship_by=6300.0, **timing)
    # A feed that could go now: only the processing time and the margin count.
    assert not feed_would_be_late(ship_by=2700.0, **{**timing, "next_feed_at": -10.0})
    assert feed_would_be_late(ship_by=2699.0, **{**timing, "next_feed_at": -10.0})
    # Already past its deadline: late whatever happens, so sooner is better.
    assert feed_would_be_late(ship_by=-5.0, **timing)
    assert near_deadline(now=1000.0, ship_by=2800.0, margin_s=1800.0)
    assert not near_deadline(now=1000.0, ship_by=2801.0, margin_s=1800.0)
