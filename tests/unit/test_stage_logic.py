"""The pure steps of each stage, without Kafka, Redis or Amazon."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from ordersync.consumers.shipment_package import classify_attempt_error, confirmed_by_amazon
from ordersync.errors import AmazonRejected, AmazonUnavailable, InvalidEvent
from ordersync.producers.order_download import (
    V0_RETIREMENT,
    daily_reconciliation,
    rolling,
    v0_retirement_notice,
    window_start,
)
from ordersync.schemas.events import (
    InvoiceIssued,
    Money,
    OperatorCommand,
    OperatorCommandIssued,
    OrderCancelled,
    OrderDownloaded,
    OrderUpdated,
    Package,
    ShippedLine,
)
from ordersync.settings import DownloadSettings
from ordersync.streams.invoice_issued import check_quantities, shipment_requests, shipped_quantities
from ordersync.streams.item_fetch import enrich, hold_reason
from ordersync.streams.order_import import build_sales_order, check_importable, ignored_after, order_change
from tests.factories import T0, channel, item, order

pytestmark = pytest.mark.unit


# --- download ------------------------------------------------------------------------------------


def test_window_starts_at_cursor_minus_overlap_or_the_initial_lookback() -> None:
    settings = DownloadSettings(overlap_s=900, initial_lookback_s=86400)
    assert window_start(T0, T0 + timedelta(hours=1), settings) == T0 - timedelta(minutes=15)
    assert window_start(None, T0, settings) == T0 - timedelta(days=1)


# --- item fetch ----------------------------------------------------------------------------------


def test_pending_orders_are_held_and_unshipped_go_on() -> None:
    assert hold_reason(order(order_status="Pending")) is not None
    assert hold_reason(order(order_status="PendingAvailability")) is not None
    assert hold_reason(order(order_status="Unshipped")) is None


def test_enrich_uses_fetched_items_or_the_embedded_ones() -> None:
    downloaded = OrderDownloaded(channel="acme-us", order=order(items=None))
    fetched = (item(order_item_id="22"),)
    assert enrich(downloaded, fetched).order.items == fetched
    embedded = OrderDownloaded(channel="acme-us", order=order())
    assert enrich(embedded, None).order.items == order().items
    with pytest.raises(ValueError, match="carries its items"):
        enrich(downloaded, None)


# --- import --------------------------------------------------------------------------------------


def test_importable_order_becomes_a_sales_order_with_prices_and_tax() -> None:
    codes = {"SKU-1": "STK-1"}
    assert check_importable(order(), codes) is None
    sales = build_sales_order(order(), channel(), codes, "SO00000001")
    (line,) = sales.lines
    assert line.stock_code == "STK-1"
    assert line.unit_price == Decimal("10.00")
    assert line.tax == Decimal("1.60")
    assert sales.shipping_charge == Decimal("4.99")
    assert sales.total == Decimal("20.00") + Decimal("1.60") + Decimal("4.99")
    assert sales.currency == "USD"


def test_marketplace_facilitator_tax_is_not_booked_as_the_sellers() -> None:
    facilitated = order(items=(item(tax_collection_model="MarketplaceFacilitator"),))
    sales = build_sales_order(facilitated, channel(), {"SKU-1": "STK-1"}, "SO1")
    assert sales.lines[0].tax == Decimal(0)
    assert sales.total == Decimal("24.99")


@pytest.mark.parametrize(
    ("amazon_order", "codes", "reason_code", "sentence"),
    [
        (order(), {}, "unknown_stock_code", "Unknown stock code for seller SKU SKU-1 (ASIN B000000001)"),
        (order(shipping_address=None), {"SKU-1": "S"}, "no_shipping_address", "No shipping address yet"),
        (order(order_status="Pending"), {"SKU-1": "S"}, "pending_no_prices", "Pending: no prices yet"),
        (order(items=(item(item_price=None),)), {"SKU-1": "S"}, "pending_no_prices", "Pending"),
        (order(items=()), {"SKU-1": "S"}, "no_items", "no items"),
    ],
)
def test_refusals_carry_a_code_and_a_sentence(amazon_order, codes, reason_code, sentence) -> None:  # type: ignore[no-untyped-def]
    refused = check_importable(amazon_order, codes)
    assert refused is not None
    assert refused.reason_code == reason_code
    assert sentence in refused.reason


def test_amazon_fulfilled_orders_need_no_address() -> None:
    assert check_importable(order(fulfillment_channel="AFN", shipping_address=None), {"SKU-1": "S"}) is None


def test_an_address_is_awaited_only_where_amazon_sends_one() -> None:
    unaddressed = order(shipping_address=None, api_version="2026-01-01")
    codes = {"SKU-1": "S"}
    # 2026-01-01 without personal data: the recipient is never asked for, so none will come.
    assert check_importable(unaddressed, codes, channel(orders_api="2026-01-01")) is None
    with_pii = channel(orders_api="2026-01-01", fetch_pii=True)
    refused = check_importable(unaddressed, codes, with_pii)
    assert refused is not None
    assert refused.reason_code == "no_shipping_address"
    # v0 lists city, region, postal code and country to everyone: an order without them is not ready.
    refused_v0 = check_importable(order(shipping_address=None), codes, channel(orders_api="v0"))
    assert refused_v0 is not None
    assert refused_v0.reason_code == "no_shipping_address"


# --- invoice issued ------------------------------------------------------------------------------


def _invoice(*quantities: int, item_id: str = "11111111111111") -> InvoiceIssued:
    return InvoiceIssued(
        invoice_number="INV-1",
        amazon_order_id="111-1111111-1111111",
        packages=tuple(
            Package(
                carrier_code="UPS",
                tracking_number=f"1Z{n}",
                ship_date=T0,
                lines=(ShippedLine(order_item_id=item_id, quantity=q),),
            )
            for n, q in enumerate(quantities)
        ),
    )


def test_invoice_packages_become_one_request_each() -> None:
    sales = build_sales_order(order(), channel(), {"SKU-1": "S"}, "SO1")
    invoice = _invoice(1, 1)
    packages = shipped_quantities(invoice, sales)
    check_quantities(invoice, sales, packages, already={})
    requests = shipment_requests(invoice, sales, packages, ["1", "2"])
    assert [r.package_reference_id for r in requests] == ["1", "2"]
    assert [r.tracking_number for r in requests] == ["1Z0", "1Z1"]
    assert all(r.items[0].quantity == 1 for r in requests)


def test_invoice_lines_may_name_the_seller_sku() -> None:
    sales = build_sales_order(order(), channel(), {"SKU-1": "S"}, "SO1")
    invoice = InvoiceIssued(
        invoice_number="INV-2",
        amazon_order_id="111-1111111-1111111",
        packages=(
            Package(
                carrier_code="UPS",
                tracking_number="1Z",
                ship_date=T0,
                lines=(ShippedLine(seller_sku="SKU-1", quantity=2),),
            ),
        ),
    )
    assert shipped_quantities(invoice, sales) == [{"11111111111111": 2}]


def test_invoice_rejects_unknown_items_and_over_shipping() -> None:
    sales = build_sales_order(order(), channel(), {"SKU-1": "S"}, "SO1")
    with pytest.raises(InvalidEvent, match="has no item 999"):
        shipped_quantities(_invoice(1, item_id="999"), sales)
    invoice = _invoice(2)
    packages = shipped_quantities(invoice, sales)
    with pytest.raises(InvalidEvent, match="only 1 of 2 are left"):
        check_quantities(invoice, sales, packages, already={"11111111111111": 1})


# --- write-back ----------------------------------------------------------------------------------


def test_write_back_retries_unknown_outcomes_and_stops_on_refusals() -> None:
    timeout = AmazonUnavailable("confirmShipment", None, "ReadTimeout", "no answer")
    refused = AmazonRejected("confirmShipment", 400, "InvalidInput", "bad carrier")
    fulfilled = AmazonRejected("confirmShipment", 400, "PackageToUpdateNotFound", "already fulfilled")
    assert classify_attempt_error(timeout, False).retry
    assert classify_attempt_error(timeout, False).outcome_unknown
    assert not classify_attempt_error(refused, False).retry
    # "already fulfilled" is our own earlier try only when that try's outcome was unknown.
    assert classify_attempt_error(fulfilled, True).already_confirmed
    assert not classify_attempt_error(fulfilled, False).already_confirmed


def test_money_must_have_a_currency_code() -> None:
    with pytest.raises(ValueError, match="currency"):
        Money(currency="usd", amount=Decimal(1))


# --- import: later versions of an imported order ----------------------------------------------------


def test_a_cancelled_order_becomes_one_cancellation_naming_the_buyer() -> None:
    sales = build_sales_order(order(), channel(), {"SKU-1": "S"}, "SO1")
    cancelled = order_change(
        sales, order(order_status="Canceled", items=(item(buyer_requested_cancel=True),)), None
    )
    assert isinstance(cancelled, OrderCancelled)
    assert cancelled.sales_order_code == "SO1"
    assert cancelled.buyer_requested
    by_amazon = order_change(sales, order(order_status="Canceled"), None)
    assert isinstance(by_amazon, OrderCancelled)
    assert not by_amazon.buyer_requested


def test_shipping_progress_is_an_update_and_an_unchanged_state_is_nothing() -> None:
    sales = build_sales_order(order(), channel(), {"SKU-1": "S"}, "SO1")
    shipped = order(order_status="Shipped", items=(item(quantity_shipped=2),))
    update = order_change(sales, shipped, None)
    assert isinstance(update, OrderUpdated)
    assert update.order_status == "Shipped"
    assert update.lines[0].quantity_shipped == 2
    known = update.model_dump_json(include={"order_status", "lines"})
    assert order_change(sales, shipped, known) is None


def test_rolling_catch_ups_overlap_however_far_apart_they_run() -> None:
    plan = rolling(49 * 3600)
    (first,), reached = plan(T0, None)
    assert first.updated_after == T0 - timedelta(hours=49)
    # The next run comes 3 days later: it still reaches back 49 hours before where the last one ended.
    (second,), _ = plan(T0 + timedelta(days=3), reached)
    assert second.updated_after == T0 - timedelta(hours=49)


def test_reconciliation_covers_every_day_since_the_last_one_at_most_a_week() -> None:
    cursor = T0  # 2026-11-20 12:00
    days, reached = daily_reconciliation(cursor, None)
    assert [(q.created_after, q.created_before) for q in days] == [
        (T0.replace(hour=0) - timedelta(days=1), T0.replace(hour=0))
    ]
    later, _ = daily_reconciliation(cursor + timedelta(days=3), reached)
    assert [q.created_after for q in later] == [reached + timedelta(days=d) for d in range(3)]
    long_after, _ = daily_reconciliation(cursor + timedelta(days=30), reached)
    assert len(long_after) == 7


def test_gift_wrap_becomes_a_gift_line_in_the_total() -> None:
    wrapped = item(
        is_gift=True,
        gift_wrap_price=Money(currency="USD", amount=Decimal("3.99")),
        gift_wrap_tax=Money(currency="USD", amount=Decimal("0.32")),
        gift_message="Happy birthday",
    )
    sales = build_sales_order(order(items=(wrapped,)), channel(), {"SKU-1": "S"}, "SO1")
    (gift,) = sales.gift_lines
    assert (gift.gift_wrap_charge, gift.gift_wrap_tax, gift.gift_message) == (
        Decimal("3.99"),
        Decimal("0.32"),
        "Happy birthday",
    )
    assert sales.lines[0].is_gift
    assert sales.total == Decimal("20.00") + Decimal("1.60") + Decimal("4.99") + Decimal("3.99") + Decimal(
        "0.32"
    )
    plain = build_sales_order(order(), channel(), {"SKU-1": "S"}, "SO2")
    assert plain.gift_lines == ()


def test_ignore_marks_replayed_from_the_commands_end_as_the_last_command_left_them() -> None:
    def command(
        name: OperatorCommand, channel_name: str, *orders: str, operator: str | None = "ana"
    ) -> OperatorCommandIssued:
        return OperatorCommandIssued(
            command=name, channel=channel_name, amazon_order_ids=orders, operator=operator
        )

    a, b, c = "111-0000001-0000001", "111-0000002-0000002", "111-0000003-0000003"
    commands = [
        command("ignore", "us", a, b),
        command("retry-import", "us", a),  # not an ignore decision
        command("unignore", "us", b),
        command("ignore", "us", c, operator=None),
        command("ignore", "elsewhere", a),  # another deployment's channel
        command("unignore", "us", c),
        command("ignore", "us", c, operator="bo"),
    ]
    assert ignored_after(commands, {"us": "A1US"}) == {
        f"A1US:{a}": "ana",
        f"A1US:{b}": None,
        f"A1US:{c}": "bo",
    }


def test_a_channel_on_orders_v0_is_told_from_90_days_before_amazon_removes_it() -> None:
    on_v0, on_2026 = channel(orders_api="v0"), channel(orders_api="2026-01-01")
    assert v0_retirement_notice(on_v0, V0_RETIREMENT - timedelta(days=91)) is None
    notice = v0_retirement_notice(on_v0, V0_RETIREMENT - timedelta(days=89, hours=1))
    assert notice is not None
    assert "2027-03-27 (in 89 days)" in notice
    assert "orders_api to 2026-01-01" in notice
    gone = v0_retirement_notice(on_v0, V0_RETIREMENT + timedelta(days=1))
    assert gone is not None
    assert "already" in gone
    assert v0_retirement_notice(on_2026, V0_RETIREMENT) is None


# --- Amazon's programmes in the write-back ---------------------------------------------------------


def test_programmes_reach_the_sales_order_and_decide_what_the_write_back_sends() -> None:
    ship_plus = order(items=(item(programs=("FBM_SHIP_PLUS",)),), programs=("PRIME",))
    sales = build_sales_order(ship_plus, channel(), {"SKU-1": "S"}, "SO1")
    assert sales.programs == ("PRIME", "FBM_SHIP_PLUS")
    assert ship_plus.in_program("FBM_SHIP_PLUS")
    assert sales.latest_ship_date == ship_plus.latest_ship_date
    invoice = _invoice(1, 1)
    labelled = invoice.model_copy(
        update={
            "packages": tuple(p.model_copy(update={"label_bought_on_amazon": True}) for p in invoice.packages)
        }
    )
    plain_sales = build_sales_order(order(), channel(), {"SKU-1": "S"}, "SO1")
    packages = shipped_quantities(labelled, plain_sales)
    (request, *_) = shipment_requests(labelled, plain_sales, packages, ["1", "2"])
    assert request.label_bought_on_amazon
    # What is not confirmed, and why: Ship+ and Easy Ship by programme, a bought label by the request.
    plain_request = request.model_copy(update={"label_bought_on_amazon": False})
    assert confirmed_by_amazon(plain_request, ()) is None
    assert confirmed_by_amazon(plain_request, ("PRIME",)) is None
    method, why = confirmed_by_amazon(plain_request, sales.programs) or ("", "")
    assert (method, "Ship+" in why) == ("amazon-label", True)
    assert (confirmed_by_amazon(plain_request, ("AMAZON_EASY_SHIP",)) or ("",))[0] == "easy-ship"
    assert (confirmed_by_amazon(request, ()) or ("",))[0] == "amazon-label"
