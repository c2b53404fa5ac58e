"""Small builders of valid events for tests, and the fixtures' data that several test modules share
(a test module imports from here, never from another test module)."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

import yaml
from pydantic import SecretStr

from ordersync.channels import Channel
from ordersync.schemas.codec import encode
from ordersync.schemas.envelope import Envelope, Event
from ordersync.schemas.events import (
    Address,
    AmazonOrder,
    AmazonOrderItem,
    EventDeadLettered,
    InvoiceIssued,
    Money,
    OperatorCommandIssued,
    OrderDownloaded,
    OrderEnriched,
    OrderImported,
    OrderImportFailed,
    Package,
    SalesOrder,
    SalesOrderLine,
    ShipmentConfirmed,
    ShipmentFailed,
    ShipmentItem,
    ShipmentRequested,
    ShippedLine,
)
from ordersync.schemas.topics import (
    INVOICES_ISSUED,
    OPS_COMMANDS,
    ORDERS_DOWNLOADED,
    ORDERS_ENRICHED,
    ORDERS_IMPORT_FAILED,
    ORDERS_IMPORTED,
    SHIPMENTS_CONFIRMED,
    SHIPMENTS_FAILED,
    SHIPMENTS_REQUESTED,
    order_key,
)
from ordersync.settings import DashboardSettings, Settings

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


def order_change_body(
    seller_id: str = "A1ACME",
    order_id: str = "111-1111111-1111111",
    *,
    changed_at: datetime = T0,
    marketplace_id: str = "ATVPDKIKX0DER",
    status: str = "Unshipped",
    notification_id: str = "5c7d8b9e-0000-4000-8000-000000000001",
) -> str:
    """An ORDER_CHANGE notification's body as Amazon sends it (Amazon's schema example, these values)."""
    stamp = changed_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return json.dumps(
        {
            "NotificationVersion": "1.0",
            "NotificationType": "ORDER_CHANGE",
            "PayloadVersion": "1.0",
            "EventTime": stamp,
            "Payload": {
                "OrderChangeNotification": {
                    "NotificationLevel": "OrderLevel",
                    "SellerId": seller_id,
                    "AmazonOrderId": order_id,
                    "OrderChangeType": "OrderStatusChange",
                    "OrderChangeTrigger": {
                        "TimeOfOrderChange": stamp,
                        "ChangeReason": "Order status changed",
                    },
                    "Summary": {
                        "MarketplaceId": marketplace_id,
                        "OrderStatus": status,
                        "PurchaseDate": stamp,
                        "DestinationPostalCode": "98101",
                        "FulfillmentType": "MFN",
                        "OrderType": "StandardOrder",
                        "NumberOfItemsShipped": 0,
                        "NumberOfItemsUnshipped": 1,
                        "OrderItems": [
                            {
                                "OrderItemId": "OIID1",
                                "SellerSKU": "SKU-1",
                                "SupplySourceId": "ss-1",
                                "Quantity": 1,
                            }
                        ],
                    },
                }
            },
            "NotificationMetadata": {
                "ApplicationId": "amzn1.sellerapps.app.ordersync",
                "SubscriptionId": "sub-1",
                "PublishTime": stamp,
                "NotificationId": notification_id,
            },
        }
    )


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


# --- The dead-letter tests' order (tests/integration/test_dead_letters.py, test_dlq_replay.py) --------

DLQ_ORDER_ID = "222-2222222-2222222"
DLQ_ITEM_ID = "33333333333333"


def dlq_sales_order(seller: str) -> SalesOrder:
    """The order's sales order on channel ``dlq-test``: one line of 2 units."""
    return one_line_sales_order(
        seller, DLQ_ORDER_ID, channel="dlq-test", order_item_id=DLQ_ITEM_ID, quantity=2
    )


def dlq_invoice(seller: str, number: str, order_id: str = DLQ_ORDER_ID, quantity: int = 1) -> bytes:
    """An invoices.issued record for the order's line."""
    return invoice_record(seller, number, order_id, DLQ_ITEM_ID, quantity)


# --- Two accounts, as the status read model and the dashboard tests fill them -------------------------

SELLER, CHANNEL, US = "A1ACME", "acme-us", "ATVPDKIKX0DER"
OTHER_SELLER, OTHER_CHANNEL, CA = "A2OTHER", "other-ca", "A2EUQ1WTGCTBG2"
ITEM = "11111111111111"


class AppliesEvents(Protocol):
    """What folds events (the status read model's ``apply``)."""

    async def apply(self, topic: str, envelope: Envelope[Any]) -> Any: ...


# --- A recorded run (tests/stage/test_readmodel.py, test_readmodel_fold.py, test_status_projection.py) -

OK = "111-0000001-0000001"
RETRIED = "111-0000002-0000002"
WRITEBACK_FAILED = "111-0000003-0000003"
IGNORED = "111-0000004-0000004"
DEAD_LETTERED = "111-0000005-0000005"
PENDING = "222-0000006-0000006"

Recorded = list[tuple[str, Envelope[Any]]]


class RecordedRun:
    """Builds a recorded run: each event a minute after the previous one, as the pipeline wrote it."""

    def __init__(self, seller: str = SELLER) -> None:
        self.events: Recorded = []
        self.clock = T0
        self.seller = seller

    def add(
        self, topic: str, event: Event, *, seller: str | None = None, marketplace: str | None = None
    ) -> None:
        seller = seller or self.seller
        self.clock += timedelta(minutes=1)
        envelope = Envelope.wrap(
            event, seller_id=seller, marketplace_id=marketplace, correlation_id="run", occurred_at=self.clock
        )
        self.events.append((topic, envelope))

    def order_flow(
        self,
        order_id: str,
        *,
        sku: str = "SKU-1",
        seller: str | None = None,
        channel: str = CHANNEL,
        marketplace: str = "ATVPDKIKX0DER",
        purchased_days_ago: int = 0,
        enrich: bool = True,
    ) -> OrderEnriched:
        seller = seller or self.seller
        downloaded = order(
            amazon_order_id=order_id,
            seller_id=seller,
            marketplace_id=marketplace,
            purchase_date=T0 - timedelta(days=purchased_days_ago),
            items=None,
        )
        self.add(ORDERS_DOWNLOADED.name, OrderDownloaded(channel=channel, order=downloaded), seller=seller)
        enriched = OrderEnriched(
            channel=channel,
            order=downloaded.model_copy(update={"items": (item(order_item_id=ITEM, seller_sku=sku),)}),
        )
        if enrich:
            self.add(ORDERS_ENRICHED.name, enriched, seller=seller, marketplace=marketplace)
        return enriched

    def imported(self, order_id: str, code: str, sku: str = "SKU-1") -> None:
        sales_order = SalesOrder(
            code=code,
            channel=CHANNEL,
            seller_id=self.seller,
            marketplace_id="ATVPDKIKX0DER",
            amazon_order_id=order_id,
            order_status="Unshipped",
            fulfillment_channel="MFN",
            purchase_date=T0,
            currency="USD",
            customer_name="Jane Doe",
            customer_email=None,
            shipping_address=None,
            ship_service_level="Std",
            shipping_method="Standard",
            lines=(
                SalesOrderLine(
                    order_item_id=ITEM,
                    seller_sku=sku,
                    asin="B000000001",
                    stock_code=f"STK-{sku}",
                    quantity=2,
                    unit_price=Decimal("10.00"),
                    tax=Decimal("0.80"),
                    line_total=Decimal("20.00"),
                ),
            ),
            total=Decimal("26.59"),
        )
        self.add(ORDERS_IMPORTED.name, OrderImported(sales_order=sales_order))

    def import_failed(self, order_id: str, sku: str) -> None:
        self.add(
            ORDERS_IMPORT_FAILED.name,
            OrderImportFailed(
                channel=CHANNEL,
                amazon_order_id=order_id,
                reason_code="unknown_stock_code",
                reason=f"Unknown stock code for seller SKU {sku} (ASIN B000000001)",
            ),
        )

    def shipped(self, order_id: str, code: str) -> ShipmentRequested:
        self.add(
            INVOICES_ISSUED.name,
            InvoiceIssued(
                invoice_number=f"INV-{order_id[-3:]}",
                amazon_order_id=order_id,
                sales_order_code=code,
                packages=(
                    Package(
                        carrier_code="UPS",
                        shipping_method="Ground",
                        tracking_number=f"1Z{order_id[-7:]}",
                        ship_date=T0,
                        lines=(ShippedLine(order_item_id=ITEM, quantity=2),),
                    ),
                ),
            ),
        )
        request = ShipmentRequested(
            channel=CHANNEL,
            amazon_order_id=order_id,
            package_reference_id="1",
            carrier_code="UPS",
            shipping_method="Ground",
            tracking_number=f"1Z{order_id[-7:]}",
            ship_date=T0,
            items=(ShipmentItem(order_item_id=ITEM, quantity=2),),
            source=f"invoice INV-{order_id[-3:]}",
        )
        self.add(SHIPMENTS_REQUESTED.name, request)
        return request

    def confirmed(self, request: ShipmentRequested) -> None:
        """Amazon confirmed the package ``request`` asked for (confirmShipment, first attempt)."""
        self.add(
            SHIPMENTS_CONFIRMED.name,
            ShipmentConfirmed(
                channel=request.channel,
                amazon_order_id=request.amazon_order_id,
                package_reference_id=request.package_reference_id,
                method="confirmShipment",
                attempts=1,
                carrier_code=request.carrier_code,
                tracking_number=request.tracking_number,
                quantity=sum(item.quantity for item in request.items),
                confirmed_at=self.clock,
            ),
        )

    def command(self, command: str, *order_ids: str) -> None:
        self.add(
            OPS_COMMANDS.name,
            OperatorCommandIssued(
                command=command,  # type: ignore[arg-type]
                channel=CHANNEL,
                amazon_order_ids=order_ids,
                operator="ops",
            ),
        )


def recorded_run(seller: str = SELLER, other_seller: str = OTHER_SELLER) -> Recorded:
    """download -> enrich -> import -> invoice -> confirmed; import failed then retried OK; write-back
    failed after 5 attempts; ignored; dead-lettered; one Pending order of another account."""
    run = RecordedRun(seller)
    # 1. The happy path.
    run.order_flow(OK, purchased_days_ago=3)
    run.imported(OK, "SO00000001")
    run.confirmed(run.shipped(OK, "SO00000001"))
    # 2. Unknown SKU, fixed listings, Retry Import.
    run.order_flow(RETRIED, sku="UNMAPPED-7", purchased_days_ago=2)
    run.import_failed(RETRIED, "UNMAPPED-7")
    run.command("retry-import", RETRIED)
    run.imported(RETRIED, "SO00000002", sku="UNMAPPED-7")
    # 3. Amazon refuses the shipment confirmation 5 times.
    run.order_flow(WRITEBACK_FAILED, sku="SKU-3", purchased_days_ago=1)
    run.imported(WRITEBACK_FAILED, "SO00000003", sku="SKU-3")
    run.shipped(WRITEBACK_FAILED, "SO00000003")
    run.add(
        SHIPMENTS_FAILED.name,
        ShipmentFailed(
            channel=CHANNEL,
            amazon_order_id=WRITEBACK_FAILED,
            package_reference_id="1",
            attempts=5,
            error_code="InvalidInput",
            error_message="The carrier code is not valid for this marketplace",
            carrier_code="UPS",
            shipping_method="Ground",
            tracking_number="1Z0000003",
            ship_date=T0,
            quantity=2,
        ),
    )
    # 4. Failed, then ignored by an operator.
    run.order_flow(IGNORED, sku="GONE-1", purchased_days_ago=4)
    run.import_failed(IGNORED, "GONE-1")
    run.command("ignore", IGNORED)
    # 5. The import stage could not process the enriched order: dead-lettered.
    enriched = run.order_flow(DEAD_LETTERED, sku="SKU-5", purchased_days_ago=5, enrich=False)
    original = Envelope.wrap(enriched, seller_id=seller, correlation_id="run", occurred_at=run.clock)
    run.add(
        f"{ORDERS_ENRICHED.name}.dlq",
        EventDeadLettered(
            source_topic=ORDERS_ENRICHED.name,
            source_partition=0,
            source_offset=42,
            source_key=order_key(seller, DEAD_LETTERED),
            original_value_b64=base64.b64encode(encode(original)).decode(),
            stage="import",
            error_type="Permanent",
            error="channel acme-us: tax rule refused the order",
            dead_lettered_at=run.clock,
        ),
    )
    # 6. Another account, another marketplace: downloaded only, so Pending.
    run.order_flow(
        PENDING,
        seller=other_seller,
        channel=OTHER_CHANNEL,
        marketplace=CA,
        purchased_days_ago=0,
        enrich=False,
    )
    return run.events


# --- The dashboard's orders (tests/integration/test_dashboard_*.py) ------------------------------------

OPERATOR_TOKEN = "op-token-for-tests"
SUCCESSES = 120


@dataclass
class Orders:
    """The orders filled in, by what happened to them."""

    success: list[str] = field(default_factory=list)
    import_failed: list[str] = field(default_factory=list)
    writeback_failed: str = ""
    ignored: str = ""
    pending: list[str] = field(default_factory=list)
    tracking_number: str = ""
    bad_sku: str = "BAD-SKU-9"
    purchase: dict[str, datetime] = field(default_factory=dict)

    @property
    def failed(self) -> set[str]:
        return {*self.import_failed, self.writeback_failed}

    @property
    def total(self) -> int:
        return len(self.success) + len(self.failed) + 1 + len(self.pending)


class _DashboardFiller:
    def __init__(self, model: AppliesEvents) -> None:
        self.model = model
        self.clock = T0

    async def add(
        self, topic: str, event: Event, seller: str = SELLER, marketplace: str | None = None
    ) -> None:
        self.clock += timedelta(seconds=10)
        envelope = Envelope.wrap(
            event, seller_id=seller, marketplace_id=marketplace, correlation_id="test", occurred_at=self.clock
        )
        await self.model.apply(topic, envelope)

    async def downloaded(
        self,
        order_id: str,
        purchased: datetime,
        *,
        sku: str = "SKU-1",
        seller: str = SELLER,
        channel: str = CHANNEL,
        marketplace: str = US,
    ) -> None:
        downloaded = order(
            amazon_order_id=order_id,
            seller_id=seller,
            marketplace_id=marketplace,
            purchase_date=purchased,
            last_update_date=purchased,
            items=None,
        )
        await self.add(
            ORDERS_DOWNLOADED.name, OrderDownloaded(channel=channel, order=downloaded), seller, marketplace
        )
        items = (item(order_item_id=ITEM, seller_sku=sku),)
        enriched = OrderEnriched(channel=channel, order=downloaded.model_copy(update={"items": items}))
        await self.add(ORDERS_ENRICHED.name, enriched, seller, marketplace)

    async def imported(self, order_id: str, purchased: datetime, sku: str = "SKU-1") -> None:
        line = SalesOrderLine(
            order_item_id=ITEM,
            seller_sku=sku,
            asin="B000000001",
            stock_code=f"STK-{sku}",
            quantity=2,
            unit_price=Decimal("10.00"),
            tax=Decimal("0.80"),
            line_total=Decimal("20.00"),
        )
        sales_order = SalesOrder(
            code=f"SO{order_id[-6:]}",
            channel=CHANNEL,
            seller_id=SELLER,
            marketplace_id=US,
            amazon_order_id=order_id,
            order_status="Unshipped",
            fulfillment_channel="MFN",
            purchase_date=purchased,
            currency="USD",
            customer_name=None,
            customer_email=None,
            shipping_address=None,
            ship_service_level="Std",
            lines=(line,),
            total=Decimal("26.59"),
        )
        await self.add(ORDERS_IMPORTED.name, OrderImported(sales_order=sales_order))

    async def import_failed(self, order_id: str, sku: str) -> None:
        failed = OrderImportFailed(
            channel=CHANNEL,
            amazon_order_id=order_id,
            reason_code="unknown_stock_code",
            reason=f"Unknown stock code for seller SKU {sku} (ASIN B000000001)",
        )
        await self.add(ORDERS_IMPORT_FAILED.name, failed)


async def fill_read_model(model: AppliesEvents) -> Orders:
    """120 imported orders over 60 days, 3 failed imports (unknown SKU), 1 failed write-back, 1 ignored,
    2 Pending orders of another account and marketplace."""
    orders = Orders()
    fill = _DashboardFiller(model)
    for n in range(SUCCESSES):
        order_id = f"111-{n:07d}-{n:07d}"
        purchased = T0 - timedelta(days=n % 60, hours=n % 7)
        await fill.downloaded(order_id, purchased)
        await fill.imported(order_id, purchased)
        orders.success.append(order_id)
        orders.purchase[order_id] = purchased
    for n in range(3):
        order_id = f"222-{n:07d}-{n:07d}"
        purchased = T0 - timedelta(days=1, hours=n)
        await fill.downloaded(order_id, purchased, sku=orders.bad_sku)
        await fill.import_failed(order_id, orders.bad_sku)
        orders.import_failed.append(order_id)
        orders.purchase[order_id] = purchased
    # Imported, invoiced, and Amazon refused the shipment confirmation 5 times.
    orders.writeback_failed = "333-0000001-0000001"
    orders.tracking_number = "1ZTRACK0000001"
    purchased = T0 - timedelta(days=2)
    orders.purchase[orders.writeback_failed] = purchased
    await fill.downloaded(orders.writeback_failed, purchased, sku="SKU-3")
    await fill.imported(orders.writeback_failed, purchased, sku="SKU-3")
    shipped = {
        "channel": CHANNEL,
        "amazon_order_id": orders.writeback_failed,
        "package_reference_id": "1",
        "carrier_code": "UPS",
        "shipping_method": "Ground",
        "tracking_number": orders.tracking_number,
        "ship_date": T0,
    }
    requested = ShipmentRequested(**shipped, items=(ShipmentItem(order_item_id=ITEM, quantity=2),))
    await fill.add(SHIPMENTS_REQUESTED.name, requested)
    failed = ShipmentFailed(
        **shipped,
        attempts=5,
        error_code="InvalidInput",
        error_message="The carrier code is not valid for this marketplace",
        quantity=2,
    )
    await fill.add(SHIPMENTS_FAILED.name, failed)
    # Failed, then ignored by an operator.
    orders.ignored = "444-0000001-0000001"
    orders.purchase[orders.ignored] = T0 - timedelta(days=3)
    await fill.downloaded(orders.ignored, T0 - timedelta(days=3), sku="GONE-1")
    await fill.import_failed(orders.ignored, "GONE-1")
    ignore = OperatorCommandIssued(command="ignore", channel=CHANNEL, amazon_order_ids=(orders.ignored,))
    await fill.add(OPS_COMMANDS.name, ignore)
    # Another account on another marketplace, held as Pending (no import yet).
    for n in range(2):
        order_id = f"555-{n:07d}-{n:07d}"
        orders.purchase[order_id] = T0 - timedelta(hours=n)
        await fill.downloaded(
            order_id, T0 - timedelta(hours=n), seller=OTHER_SELLER, channel=OTHER_CHANNEL, marketplace=CA
        )
        orders.pending.append(order_id)
    return orders


def write_channels_file(path: Path) -> Path:
    credentials = {
        "client_id": {"value": "amzn1.application-oa2-client.test"},
        "client_secret": {"value": "secret"},
        "refresh_token": {"value": "Atzr|refresh"},
    }
    channels = [
        {
            "name": CHANNEL,
            "seller_id": SELLER,
            "region": "na",
            "marketplaces": [US],
            "credentials": credentials,
        },
        {
            "name": OTHER_CHANNEL,
            "seller_id": OTHER_SELLER,
            "region": "na",
            "marketplaces": [CA],
            "credentials": credentials,
        },
    ]
    path.write_text(yaml.safe_dump({"channels": channels}))
    return path


def dashboard_settings(
    redis_url: str,
    key_prefix: str,
    channels_file: Path,
    *,
    kafka_bootstrap: str | None = None,
    operator_token: str | None = OPERATOR_TOKEN,
    read_token: str | None = None,
) -> Settings:
    """The environment's settings (security included) aimed at the test's Redis, prefix and broker."""
    base = Settings()
    return base.model_copy(
        update={
            "redis": base.redis.model_copy(update={"url": redis_url, "key_prefix": key_prefix}),
            "kafka": base.kafka.model_copy(update={"bootstrap": kafka_bootstrap or base.kafka.bootstrap}),
            "channels_file": channels_file,
            "dashboard": DashboardSettings(
                operator_token=SecretStr(operator_token) if operator_token else None,
                read_token=SecretStr(read_token) if read_token else None,
            ),
        }
    )
