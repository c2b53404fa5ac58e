"""The import-related channel settings: validated on load with clear errors, and their effect on the
sales order (pure logic; the Redis-backed settings are in ``tests/stage/test_import_settings.py``)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from ordersync.channels import load_channels
from ordersync.errors import ConfigurationError
from ordersync.schemas.events import Money
from ordersync.streams.order_import import build_sales_order, check_importable, not_imported_because
from tests.factories import channel, item, order

pytestmark = pytest.mark.unit

USD = "USD"


def _channels_file(tmp_path: Path, **settings: object) -> Path:
    data = {
        "name": "acme-us",
        "seller_id": "A1ACME",
        "marketplaces": ["ATVPDKIKX0DER"],
        "credentials": {
            "client_id": {"value": "id"},
            "client_secret": {"value": "secret"},
            "refresh_token": {"value": "refresh"},
        },
        **settings,
    }
    path = tmp_path / "channels.yaml"
    path.write_text(yaml.safe_dump({"channels": [data]}))
    return path


def test_every_import_setting_loads_from_the_channels_file(tmp_path: Path) -> None:
    path = _channels_file(
        tmp_path,
        active=False,
        sync_level="stock only",
        fulfillment_channels=["MFN"],
        product_identification="EAN",
        sku_crop=[{"strip_prefix": "FBA-"}, {"regex": "-(NEW|USED)$", "replace": ""}],
        default_shipping_service="Standard",
        default_shipping_method="UPS Ground",
        cancellation_reason="NoInventory",
        ignore_amazon_tax=True,
        prices_include_tax=True,
        sales_order_prefix="AMZ",
        upload_order_status=False,
    )
    (chan,) = load_channels(path).channels
    assert (chan.active, chan.sync_level, chan.fulfillment_channels) == (False, "stock only", ("MFN",))
    assert chan.product_identification == "EAN"
    assert chan.crop_sku("FBA-ABC-1-NEW") == "ABC-1"
    assert (chan.default_shipping_service, chan.default_shipping_method) == ("Standard", "UPS Ground")
    assert chan.cancellation_reason == "NoInventory"
    assert (chan.ignore_amazon_tax, chan.prices_include_tax, chan.upload_order_status) == (True, True, False)
    assert chan.sales_order_prefix == "AMZ"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"sync_level": "orders only"}, "channels.0.sync_level"),
        ({"product_identification": "UPC"}, "channels.0.product_identification"),
        ({"sku_crop": [{"regex": "(unclosed"}]}, "does not compile"),
        ({"sku_crop": [{"strip_prefix": "A", "strip_suffix": "B"}]}, "exactly one of"),
        ({"fulfillment_channels": ["FBM"]}, "channels.0.fulfillment_channels"),
        ({"ignore_amazon_tax": "sometimes"}, "channels.0.ignore_amazon_tax"),
        ({"sales_order_prefix": "X" * 17}, "channels.0.sales_order_prefix"),
        ({"upload_order_staus": False}, "upload_order_staus"),
    ],
)
def test_bad_import_settings_are_refused_on_load_naming_the_field(
    tmp_path: Path, settings: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message.replace(".", r"\.").replace("(", r"\(")):
        load_channels(_channels_file(tmp_path, **settings))


def test_active_disabled_channel_imports_nothing() -> None:
    assert not_imported_because(channel(active=False), order()) == "the channel is disabled"
    assert not_imported_because(channel(), order()) is None


def test_sync_level_stock_only_imports_nothing() -> None:
    assert not_imported_because(channel(sync_level="stock only"), order()) == "the channel syncs stock only"
    assert not_imported_because(channel(sync_level="orders and stock"), order()) is None


def test_fulfillment_channels_limit_what_is_imported() -> None:
    mfn_only = channel(fulfillment_channels=["MFN"])
    why = not_imported_because(mfn_only, order(fulfillment_channel="AFN"))
    assert why == "fulfilled by AFN; the channel imports MFN"
    assert not_imported_because(mfn_only, order(fulfillment_channel="MFN")) is None


def test_sku_crop_rules_apply_before_mapping() -> None:
    chan = channel(sku_crop=[{"strip_prefix": "FBA-"}, {"strip_suffix": "-B"}, {"regex": r"\s+"}])
    amazon = order(items=(item(seller_sku="FBA-SKU 1-B"),))
    assert check_importable(amazon, {"SKU1": "STK-1"}, chan) is None
    sales = build_sales_order(amazon, chan, {"SKU1": "STK-1"}, "SO1")
    assert sales.lines[0].stock_code == "STK-1"
    assert sales.lines[0].seller_sku == "FBA-SKU 1-B"  # Amazon's SKU is kept for write-back
    refused = check_importable(amazon, {}, chan)
    assert refused is not None
    assert (
        refused.reason == "Unknown stock code for seller SKU FBA-SKU 1-B (ASIN B000000001, looked up as SKU1)"
    )


def test_product_identification_by_asin_maps_the_items_asin() -> None:
    chan = channel(product_identification="asin")
    amazon = order(items=(item(seller_sku="whatever", asin="B0ASIN0001"),))
    assert check_importable(amazon, {"whatever": "S"}, chan) is not None
    sales = build_sales_order(amazon, chan, {"B0ASIN0001": "STK-A"}, "SO1")
    assert sales.lines[0].stock_code == "STK-A"


def test_default_shipping_service_is_kept_with_the_channel_for_shipment_upload() -> None:
    assert channel(default_shipping_service="Std Domestic").default_shipping_service == "Std Domestic"
    sales = build_sales_order(order(ship_service_level="Expedited"), channel(), {"SKU-1": "S"}, "SO1")
    assert sales.ship_service_level == "Expedited"  # the sales order keeps Amazon's


def test_default_shipping_method_is_on_the_sales_order() -> None:
    sales = build_sales_order(order(), channel(default_shipping_method="UPS Ground"), {"SKU-1": "S"}, "SO1")
    assert sales.shipping_method == "UPS Ground"
    # Left empty: Amazon's value.
    amazon = order(ship_service_level="Expedited")
    assert build_sales_order(amazon, channel(), {"SKU-1": "S"}, "SO1").shipping_method == "Expedited"
    # ... and the carrier name on write-back when the back-office gives none (unless set apart).
    assert channel(default_shipping_method="UPS Ground").default_carrier == "UPS Ground"
    assert channel(default_shipping_method="UPS Ground", default_carrier="UPS").default_carrier == "UPS"


def test_order_cancellation_reason_is_kept_with_the_channel() -> None:
    assert channel(cancellation_reason="NoInventory").cancellation_reason == "NoInventory"
    assert channel().cancellation_reason is None


def test_dont_upload_order_status_is_kept_with_the_channel() -> None:
    assert channel(upload_order_status=False).upload_order_status is False
    assert channel().upload_order_status is True


def test_ignore_amazon_tax_books_no_tax() -> None:
    amazon = order(
        items=(item(shipping_tax=Money(currency=USD, amount=Decimal("0.40"))),),
    )
    sales = build_sales_order(amazon, channel(ignore_amazon_tax=True), {"SKU-1": "S"}, "SO1")
    assert sales.lines[0].tax == 0
    assert sales.shipping_tax == 0
    assert sales.total == Decimal("20.00") + Decimal("4.99")
    booked = build_sales_order(amazon, channel(), {"SKU-1": "S"}, "SO1")
    assert booked.total == Decimal("20.00") + Decimal("1.60") + Decimal("4.99") + Decimal("0.40")


def test_tax_included_in_prices_does_not_add_the_tax_again() -> None:
    amazon = order(items=(item(shipping_tax=Money(currency=USD, amount=Decimal("0.40"))),))
    sales = build_sales_order(amazon, channel(prices_include_tax=True), {"SKU-1": "S"}, "SO1")
    assert sales.prices_include_tax is True
    assert sales.lines[0].tax == Decimal("1.60")  # shown, inside the price
    assert sales.lines[0].line_total == Decimal("20.00")
    assert sales.lines[0].unit_price == Decimal("10.00")
    assert sales.total == Decimal("20.00") + Decimal("4.99")


def test_sales_order_code_prefix_is_the_channels() -> None:
    sales = build_sales_order(order(), channel(sales_order_prefix="AMZ"), {"SKU-1": "S"}, "AMZ00000001")
    assert sales.code == "AMZ00000001"
    assert channel().sales_order_prefix == "SO"


def test_gift_items_are_marked_on_their_line() -> None:
    sales = build_sales_order(order(items=(item(is_gift=True),)), channel(), {"SKU-1": "S"}, "SO1")
    assert sales.lines[0].is_gift is True
