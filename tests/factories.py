"""Small builders of valid events for tests."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from ordersync.channels import Channel
from ordersync.schemas.events import Address, AmazonOrder, AmazonOrderItem, Money

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def channel(**overrides: Any) -> Channel:
    data: dict[str, Any] = {
        "name": "acme-us",
        "seller_id": "A1ACME",
        "region": "na",
        "marketplaces": ["ATVPDKIKX0DER"],
        "credentials": {
            "client_id": {"value": "amzn1.application-oa2-client.test"},
            "client_secret": {"value": "secret"},
            "refresh_token": {"value": "Atzr|refresh"},
        },
    }
    data.update(overrides)
    return Channel.model_validate(data)


def item(**overrides: Any) -> AmazonOrderItem:
    data: dict[str, Any] = {
        "order_item_id": "11111111111111",
        "asin": "B000000001",
        "seller_sku": "SKU-1",
        "quantity_ordered": 2,
        "item_price": Money(currency="USD", amount=Decimal("20.00")),
        "item_tax": Money(currency="USD", amount=Decimal("1.60")),
        "shipping_price": Money(currency="USD", amount=Decimal("4.99")),
    }
    data.update(overrides)
    return AmazonOrderItem(**data)


def order(**overrides: Any) -> AmazonOrder:
    data: dict[str, Any] = {
        "amazon_order_id": "111-1111111-1111111",
        "seller_id": "A1ACME",
        "marketplace_id": "ATVPDKIKX0DER",
        "order_status": "Unshipped",
        "fulfillment_channel": "MFN",
        "purchase_date": T0,
        "last_update_date": T0,
        "order_total": Money(currency="USD", amount=Decimal("26.59")),
        "shipping_address": Address(name="Jane Doe", line1="1 Main St", city="Seattle", country_code="US"),
        "items": (item(),),
        "api_version": "v0",
    }
    data.update(overrides)
    return AmazonOrder(**data)
