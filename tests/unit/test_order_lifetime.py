"""When an imported order's working state ends: its delivery (as the privacy rules reckon it) plus the
days after delivery, or its sealed data's longer retention; never sooner than a while after a write."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ordersync.schemas.events import SalesOrder, Sealed
from ordersync.settings import OrderStateSettings, Settings
from ordersync.state.lifetime import OrderLifetime
from tests.factories import one_line_sales_order

pytestmark = pytest.mark.unit

NOW = datetime(2027, 3, 1, 8, 30, tzinfo=UTC)
LIFE = OrderLifetime(after_delivery=timedelta(days=30), after_last_write=timedelta(days=7))


def sales_order(**changes: object) -> SalesOrder:
    base = one_line_sales_order(
        "A1ACME", "111-1111111-1111111", channel="acme", order_item_id="1", quantity=1
    )
    return base.model_copy(update=changes)


def sealed(key_id: str) -> Sealed:
    return Sealed(key_id=key_id, nonce="A" * 16, ciphertext="B" * 24)


def test_a_sealed_order_closes_when_its_delivery_days_data_key_is_destroyed() -> None:
    order = sales_order(personal=sealed("A1ACME/2027-02-10"))
    # The key of 10 February goes at that day's end plus 30 days.
    assert LIFE.closes_at(order) == datetime(2027, 3, 13, tzinfo=UTC)


def test_a_longer_retention_keeps_the_order_open_as_long_as_its_data() -> None:
    order = sales_order(personal=sealed("A1ACME/2027-02-10/r90"))
    assert LIFE.closes_at(order) == datetime(2027, 2, 11, tzinfo=UTC) + timedelta(days=90)
    longer = OrderLifetime(after_delivery=timedelta(days=120))
    assert longer.closes_at(order) == datetime(2027, 2, 11, tzinfo=UTC) + timedelta(days=120)


def test_without_sealed_data_delivery_is_two_weeks_after_the_ship_by_date_or_a_month_after_purchase() -> None:
    ship_by = datetime(2027, 2, 1, 23, 59, tzinfo=UTC)
    assert LIFE.closes_at(sales_order(latest_ship_date=ship_by)) == ship_by + timedelta(days=14 + 30)
    purchase = datetime(2027, 1, 5, 9, 0, tzinfo=UTC)
    assert LIFE.closes_at(sales_order(purchase_date=purchase)) == purchase + timedelta(days=30 + 30)


def test_a_write_keeps_the_state_until_the_order_closes_and_at_least_the_days_after_a_write() -> None:
    open_order = sales_order(latest_ship_date=NOW + timedelta(days=2))
    assert LIFE.ttl_s(open_order, NOW) == int(timedelta(days=2 + 14 + 30).total_seconds())
    # Written after it closed (a late invoice, a retry): kept a week from the write, not dropped at once.
    closed_order = sales_order(latest_ship_date=NOW - timedelta(days=90))
    assert LIFE.ttl_s(closed_order, NOW) == int(timedelta(days=7).total_seconds())


def test_the_lifetime_comes_from_the_settings_with_their_bounds() -> None:
    settings = Settings(order_state=OrderStateSettings(after_delivery_days=45, after_last_write_days=3))
    life = OrderLifetime.of(settings.order_state)
    assert life == OrderLifetime(after_delivery=timedelta(days=45), after_last_write=timedelta(days=3))
    assert OrderLifetime.of(Settings().order_state) == OrderLifetime()
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        OrderStateSettings(after_delivery_days=0)
