"""Easy Ship packing's decisions without Kafka or Amazon: which slot, what a refusal means, what is
refused before asking."""

from __future__ import annotations

import pytest

from ordersync.amazon.easyship import HandoverSlot
from ordersync.consumers.packing import choose_slot, eligibility, refusal
from ordersync.errors import AmazonRejected
from tests.factories import one_line_sales_order

pytestmark = pytest.mark.unit

EARLY = HandoverSlot("early", handover_method="PICKUP")
DROP = HandoverSlot("drop", handover_method="DROPOFF")
LATE = HandoverSlot("late", handover_method="PICKUP")


def test_the_packers_slot_when_still_listed_else_the_earliest_of_the_method_not_tried() -> None:
    slots = (EARLY, DROP, LATE)
    assert choose_slot(slots, "late", None, set()) == LATE
    assert choose_slot(slots, "gone", None, set()) == EARLY
    assert choose_slot(slots, "earliest", "DROPOFF", set()) == DROP
    assert choose_slot(slots, "early", None, {"early"}) == DROP
    assert choose_slot(slots, "earliest", "PICKUP", {"early", "late"}) is None


def test_a_filled_slot_means_the_next_an_existing_package_is_read_and_the_rest_is_final() -> None:
    def refused(code: str) -> AmazonRejected:
        return AmazonRejected("createScheduledPackage", 400, code, "refused")

    assert refusal(refused("RetryableAfterGettingNewSlots")) == "next-slot"
    assert refusal(refused("ScheduleWindowExpired")) == "next-slot"
    assert refusal(refused("ScheduledPackageAlreadyExists")) == "already-scheduled"
    assert refusal(refused("InvalidInput")) == "final"


def test_an_order_outside_easy_ship_or_of_no_known_marketplace_is_refused_before_asking() -> None:
    order = one_line_sales_order("A1ACME", "111-1111111-1111111", channel="c", order_item_id="1", quantity=1)
    not_easy_ship = eligibility(order, "A21TJRUUN4KGV")
    assert not_easy_ship is not None
    assert not_easy_ship.code == "NotEasyShip"
    easy_ship = order.model_copy(update={"programs": ("AMAZON_EASY_SHIP",)})
    assert eligibility(easy_ship, "A21TJRUUN4KGV") is None
    assert eligibility(None, "A21TJRUUN4KGV") is None  # not imported here: Amazon decides
    unknown = eligibility(None, None)
    assert unknown is not None
    assert unknown.code == "UnknownMarketplace"
