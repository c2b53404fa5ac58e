"""What of an order is the buyer's personal data: sealed together, the rest readable, opened back to the
same order; the key chosen by the day Amazon promises delivery."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from pydantic import SecretStr

from ordersync.channels import ChannelsFile
from ordersync.errors import ConfigurationError
from ordersync.pipeline.stages import check_privacy
from ordersync.privacy import DataKey, new_kek, shred_after, unseal
from ordersync.privacy.orders import (
    PURCHASE_TO_DELIVERY,
    SHIP_TO_DELIVERY,
    Retention,
    delivered_by,
    key_id_of,
    personal_fields,
    sealed_with,
    subject,
    with_personal,
    without_personal,
)
from ordersync.schemas.events import Address, AmazonOrder
from ordersync.settings import PrivacySettings, Settings
from ordersync.streams.order_import import build_sales_order
from tests.factories import T0, channel, item, order

pytestmark = pytest.mark.unit

ADDRESS = Address(
    name="Jane Buyer",
    line1="1 Main St",
    line2="Apt 2",
    city="Seattle",
    state_or_region="WA",
    postal_code="98101",
    country_code="US",
    phone="+1 206 555 0100",
)


def _personal_order():  # type: ignore[no-untyped-def]
    return order(
        buyer_name="Jane Buyer",
        buyer_email="jane@example.com",
        shipping_address=ADDRESS,
        items=(item(gift_message="Happy birthday"),),
    )


def test_the_personal_fields_are_the_buyer_the_address_lines_and_gift_messages() -> None:
    fields = personal_fields(_personal_order())
    assert fields == {
        "buyer_name": "Jane Buyer",
        "buyer_email": "jane@example.com",
        "address.name": "Jane Buyer",
        "address.line1": "1 Main St",
        "address.line2": "Apt 2",
        "address.postal_code": "98101",
        "address.phone": "+1 206 555 0100",
        f"gift_message.{_personal_order().items[0].order_item_id}": "Happy birthday",
    }
    assert personal_fields(order(shipping_address=Address(city="Seattle", country_code="US"))) == {}


def test_without_personal_data_the_order_keeps_what_routes_and_imports_it() -> None:
    full = _personal_order()
    bare = without_personal(full)
    assert personal_fields(bare) == {}
    assert bare.shipping_address == Address(city="Seattle", state_or_region="WA", country_code="US")
    assert bare.items is not None
    assert full.items is not None
    assert bare.items[0].item_price == full.items[0].item_price
    assert (bare.amazon_order_id, bare.last_update_date) == (full.amazon_order_id, full.last_update_date)
    assert with_personal(bare, personal_fields(full)) == full


def _key(order: AmazonOrder) -> DataKey:
    key_id = f"{order.seller_id}/2026-12-03"
    return DataKey(key_id, os.urandom(32), shred_after(key_id))


def test_sealed_personal_data_opens_back_to_the_same_order() -> None:
    full = _personal_order()
    key = _key(full)
    sealed = sealed_with(full, key)
    assert "Jane" not in sealed.model_dump_json()
    assert sealed.personal is not None
    assert with_personal(sealed, unseal(sealed.personal, key, subject(sealed))) == full


def test_the_key_follows_the_delivery_promise_else_the_ship_date_else_the_purchase() -> None:
    promised = T0 + timedelta(days=5)
    assert delivered_by(order(latest_delivery_date=promised, latest_ship_date=T0)) == promised
    # The promise's start, when Amazon gives it: an on-time delivery is never kept past its 30 days.
    window = order(earliest_delivery_date=promised - timedelta(days=2), latest_delivery_date=promised)
    assert delivered_by(window) == promised - timedelta(days=2)
    assert (
        delivered_by(order(latest_ship_date=T0 + timedelta(days=2)))
        == T0 + timedelta(days=2) + SHIP_TO_DELIVERY
    )
    assert delivered_by(order()) == order().purchase_date + PURCHASE_TO_DELIVERY


def test_a_channel_keeps_personal_data_longer_only_with_the_law_that_requires_it() -> None:
    assert Retention.of(channel()) == Retention(30, None, SHIP_TO_DELIVERY)
    with pytest.raises(ValueError, match="needs personal_data_retention_reason"):
        channel(personal_data_retention_days=365)
    with pytest.raises(ValueError, match="greater than or equal to 30"):
        channel(personal_data_retention_days=10, personal_data_retention_reason="none")
    kept = channel(
        personal_data_retention_days=3650,
        personal_data_retention_reason="German tax code (AO 147): invoices 10 years",
        delivery_allowance_days=5,
    )
    retention = Retention.of(kept)
    assert (retention.days, retention.ship_to_delivery) == (3650, timedelta(days=5))
    shipped_by = order(latest_ship_date=T0)
    assert key_id_of(shipped_by, retention) == (f"A1ACME/{(T0 + timedelta(days=5)).date().isoformat()}/r3650")
    assert key_id_of(shipped_by, Retention()) == f"A1ACME/{(T0 + SHIP_TO_DELIVERY).date().isoformat()}"


def test_a_sales_order_carries_the_sealed_data_and_no_personal_field() -> None:
    sealed = sealed_with(_personal_order(), _key(_personal_order()))
    sales = build_sales_order(sealed, channel(), {"SKU-1": "S"}, "SO1")
    assert sales.personal == sealed.personal
    assert (sales.customer_name, sales.customer_email) == (None, None)
    assert sales.shipping_address is not None
    assert (sales.shipping_address.name, sales.shipping_address.city) == (None, "Seattle")
    assert "Jane" not in sales.model_dump_json()


def test_a_stage_serving_personal_data_does_not_start_without_a_key_encryption_key() -> None:
    allowed = ChannelsFile(channels=(channel(fetch_pii=True), channel(name="other", seller_id="A2OTHER")))
    with pytest.raises(ConfigurationError, match="acme-us fetch buyers' personal data"):
        check_privacy(Settings(privacy=PrivacySettings()), allowed)
    check_privacy(Settings(privacy=PrivacySettings(kek=SecretStr(new_kek()))), allowed)
    check_privacy(Settings(privacy=PrivacySettings(kms_key_id="alias/ordersync")), allowed)
    check_privacy(Settings(privacy=PrivacySettings()), ChannelsFile(channels=(channel(),)))
