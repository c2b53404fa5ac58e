"""Small builders of valid events for tests."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from ordersync.channels import Channel
from ordersync.schemas.codec import encode
from ordersync.schemas.envelope import Envelope
from ordersync.schemas.events import (
    Address,
    AmazonOrder,
    AmazonOrderItem,
    InvoiceIssued,
    Money,
    Package,
    SalesOrder,
    SalesOrderLine,
    ShippedLine,
)

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


def one_line_sales_order(
    seller_id: str, amazon_order_id: str, *, channel: str, order_item_id: str, quantity: int
) -> SalesOrder:
    """An imported sales order of one line (SKU-1 at 10 USD), as the import stage saves it."""
    total = Decimal(10 * quantity)
    line = SalesOrderLine(
        order_item_id=order_item_id,
        seller_sku="SKU-1",
        asin="B000000001",
        stock_code="STK-1",
        quantity=quantity,
        unit_price=Decimal(10),
        tax=Decimal(0),
        line_total=total,
    )
    return SalesOrder(
        code="SO00000001",
        channel=channel,
        seller_id=seller_id,
        marketplace_id="ATVPDKIKX0DER",
        amazon_order_id=amazon_order_id,
        order_status="Unshipped",
        fulfillment_channel="MFN",
        purchase_date=T0,
        currency="USD",
        customer_name="Jane",
        customer_email=None,
        shipping_address=None,
        ship_service_level="Std",
        lines=(line,),
        total=total,
    )


def invoice_record(
    seller_id: str, number: str, amazon_order_id: str, order_item_id: str, quantity: int = 1
) -> bytes:
    """The bytes of an invoices.issued record: one UPS package of ``quantity`` units of one line."""
    package = Package(
        carrier_code="UPS",
        tracking_number=f"1Z{number}",
        ship_date=T0,
        lines=(ShippedLine(order_item_id=order_item_id, quantity=quantity),),
    )
    invoice = InvoiceIssued(invoice_number=number, amazon_order_id=amazon_order_id, packages=(package,))
    return encode(Envelope.wrap(invoice, seller_id=seller_id, correlation_id=number))
