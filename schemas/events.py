"""Every event ordersync reads or writes, as frozen pydantic models with past-tense names.

The Amazon order model here is ordersync's own, normalised from both Orders API versions (v0 and
2026-01-01), so that stages after download never care which version a channel uses.
"""

from __future__ import annotations

import base64
from datetime import date
from decimal import Decimal
from typing import Annotated, ClassVar, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    model_validator,
)

from ordersync.channels import Channel
from ordersync.schemas.envelope import Event
from ordersync.settings import EasyShipDocumentType

OrderStatus = Literal[
    "PendingAvailability",
    "Pending",
    "Unshipped",
    "PartiallyShipped",
    "Shipped",
    "InvoiceUnconfirmed",
    "Canceled",
    "Unfulfillable",
]
FulfillmentChannel = Literal["AFN", "MFN"]
NonEmptyStr = Annotated[str, Field(min_length=1)]
#: A seller SKU as another system sends it: Amazon's SKUs are 1 to 40 characters (Seller Central's
#: inventory file rule), so a longer one can never match a listing and is refused at the door.
SellerSku = Annotated[str, Field(min_length=1, max_length=40)]
PositiveInt = Annotated[int, Field(gt=0)]
AmazonOrderId = Annotated[str, Field(pattern=r"^\d{3}-\d{7}-\d{7}$")]


class _Value(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


#: ``<seller id>/<YYYY-MM-DD>[/r<days>]``: the data key of a seller's orders delivered on one day
#: (ordersync.privacy), kept 30 days after it or, with the suffix, the longer retention a law requires.
DATA_KEY_ID = r"^(?P<seller>[A-Z0-9]{1,40})/(?P<day>\d{4}-\d{2}-\d{2})(?:/r(?P<days>\d{2,4}))?$"


class Sealed(_Value):
    """A buyer's personal fields, encrypted (AES-GCM, ordersync.privacy): readable only while their data
    key exists."""

    key_id: str = Field(pattern=DATA_KEY_ID)
    nonce: str = Field(min_length=16, max_length=16)  # 12 bytes, base64
    ciphertext: str = Field(min_length=24, max_length=64_000)


class Money(_Value):
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
    amount: Decimal


class Address(_Value):
    name: str | None = None
    line1: str | None = None
    line2: str | None = None
    line3: str | None = None
    city: str | None = None
    county: str | None = None
    state_or_region: str | None = None
    postal_code: str | None = None
    country_code: str | None = None
    phone: str | None = None


class AmazonOrderItem(_Value):
    order_item_id: NonEmptyStr
    asin: NonEmptyStr
    seller_sku: str | None = None
    title: str | None = None
    quantity_ordered: Annotated[int, Field(ge=0)]
    quantity_shipped: Annotated[int, Field(ge=0)] = 0
    #: Price of the whole line (unit price x quantity), as Amazon gives it. None while Pending.
    item_price: Money | None = None
    item_tax: Money | None = None
    shipping_price: Money | None = None
    shipping_tax: Money | None = None
    shipping_discount: Money | None = None
    promotion_discount: Money | None = None
    #: "MarketplaceFacilitator" when Amazon collects and remits the tax itself.
    tax_collection_model: str | None = None
    is_gift: bool = False
    #: Gift wrap the buyer paid for, and the gift message (v0: the item's BuyerInfo; 2026-01-01: the
    #: GIFT_WRAP proceeds and the packing gift option).
    gift_wrap_price: Money | None = None
    gift_wrap_tax: Money | None = None
    gift_message: str | None = None
    buyer_requested_cancel: bool = False
    #: Programmes of the item (v0's AmazonPrograms: FBM_SHIP_PLUS, SUBSCRIBE_AND_SAVE).
    programs: tuple[str, ...] = ()


#: Programmes that decide how a seller-fulfilled shipment reaches Amazon (ordersync.consumers).
SHIP_PLUS = "FBM_SHIP_PLUS"
EASY_SHIP = "AMAZON_EASY_SHIP"


class AssociatedOrder(_Value):
    """Another order this one is related to (Amazon's associatedOrders; v0's ReplacedOrderId)."""

    amazon_order_id: NonEmptyStr
    #: REPLACEMENT_ORIGINAL_ID, EXCHANGE_ORIGINAL_ID.
    association_type: NonEmptyStr


class AmazonOrder(_Value):
    amazon_order_id: AmazonOrderId
    seller_id: NonEmptyStr
    marketplace_id: NonEmptyStr
    order_status: OrderStatus
    fulfillment_channel: FulfillmentChannel
    purchase_date: AwareDatetime
    last_update_date: AwareDatetime
    order_total: Money | None = None
    ship_service_level: str | None = None
    shipment_service_level_category: str | None = None
    is_prime: bool = False
    is_business_order: bool = False
    buyer_email: str | None = None
    buyer_name: str | None = None
    shipping_address: Address | None = None
    earliest_ship_date: AwareDatetime | None = None
    latest_ship_date: AwareDatetime | None = None
    #: Amazon's delivery promise. Its start is when the buyer's personal data's 30 days begin: a
    #: delivery on time is never followed by more than 30 days of it (ordersync.privacy).
    earliest_delivery_date: AwareDatetime | None = None
    latest_delivery_date: AwareDatetime | None = None
    #: Items when the API embeds them (2026-01-01); None when they must be fetched (v0).
    items: tuple[AmazonOrderItem, ...] | None = None
    api_version: Literal["v0", "2026-01-01"]
    #: The buyer's personal data (name, e-mail, the address's name, lines, postal code and phone, gift
    #: messages), sealed; the fields themselves are then empty. None: the order carries none.
    personal: Sealed | None = None
    #: Amazon's programmes of the order (2026-01-01 ``programs``; from v0's flags: IsPrime, IsBusinessOrder,
    #: IsPremiumOrder, EasyShipShipmentStatus, IsISPU, IsIBA, OrderType Preorder).
    programs: tuple[str, ...] = ()
    associated_orders: tuple[AssociatedOrder, ...] = ()

    def in_program(self, program: str) -> bool:
        """Whether the order, or any of its items, is in ``program``."""
        return program in self.programs or any(program in item.programs for item in self.items or ())


# --- amazon.orders.downloaded / amazon.orders.enriched -------------------------------------------


#: Which task found an order: the regular poll, a catch-up scan, a reconciliation, an operator retry,
#: or Amazon's ORDER_CHANGE notification.
FoundBy = Literal["poll", "catch-up", "reconciliation", "retry", "notification"]


class OrderDownloaded(Event):
    """An order as listed by getOrders/searchOrders: new, or changed since it was last seen."""

    # 2: sealed personal data; 3: programmes, associated orders, the delivery promise's start (codec
    # upcasts both)
    schema_version: ClassVar[int] = 3

    channel: NonEmptyStr
    order: AmazonOrder
    found_by: FoundBy = "poll"


class OrderEnriched(Event):
    """An order with its items (fetched through getOrderItems, or embedded by searchOrders)."""

    # 2: sealed personal data; 3: programmes, associated orders, the delivery promise's start (codec
    # upcasts both)
    schema_version: ClassVar[int] = 3

    channel: NonEmptyStr
    order: AmazonOrder

    @model_validator(mode="after")
    def _has_items(self) -> OrderEnriched:
        if self.order.items is None:
            raise ValueError("an enriched order carries its items")
        return self


class DownloadCursorSaved(Event):
    """A channel's download window is complete: every order Amazon listed up to ``last_updated_before``
    (Amazon's own bound) is on ``amazon.orders.downloaded``. The latest per channel is the cursor."""

    channel: NonEmptyStr
    last_updated_before: AwareDatetime


# --- amazon.notifications --------------------------------------------------------------------------

#: The largest notification body kept whole (SQS allows up to 1 MiB; an ORDER_CHANGE is a few KB). A
#: larger one is kept cut to this, and dead-lettered as such.
MAX_NOTIFICATION_CHARS = 256 * 1024


class AmazonNotificationReceived(Event):
    """A message as Amazon put it on the notifications queue, copied to Kafka before the queue forgets
    it: ``body`` is Amazon's JSON, unparsed (the stage that reads it validates it, and dead-letters
    what is not an ORDER_CHANGE of a configured channel)."""

    queue: NonEmptyStr
    message_id: NonEmptyStr
    body: Annotated[str, Field(max_length=MAX_NOTIFICATION_CHARS)]
    #: Set when the body was longer than ``MAX_NOTIFICATION_CHARS`` characters and was cut.
    body_chars: Annotated[int, Field(ge=0)] | None = None
    #: When Amazon sent it (SQS's SentTimestamp), and how often the queue delivered it so far.
    sent_at: AwareDatetime | None = None
    receive_count: Annotated[int, Field(ge=1)] = 1
    received_at: AwareDatetime


# --- orders.imported / orders.import-failed ------------------------------------------------------


class SalesOrderLine(_Value):
    order_item_id: NonEmptyStr
    seller_sku: str | None
    asin: NonEmptyStr
    stock_code: NonEmptyStr
    quantity: Annotated[int, Field(ge=0)]
    unit_price: Decimal
    tax: Decimal
    line_total: Decimal
    is_gift: bool = False


class GiftLine(_Value):
    order_item_id: NonEmptyStr
    gift_wrap_charge: Decimal
    gift_wrap_tax: Decimal = Decimal(0)
    gift_message: str | None = None


class SalesOrder(_Value):
    code: NonEmptyStr
    channel: NonEmptyStr
    seller_id: NonEmptyStr
    marketplace_id: NonEmptyStr
    amazon_order_id: AmazonOrderId
    order_status: OrderStatus
    fulfillment_channel: FulfillmentChannel
    purchase_date: AwareDatetime
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
    customer_name: str | None
    customer_email: str | None
    shipping_address: Address | None
    ship_service_level: str | None
    lines: tuple[SalesOrderLine, ...]
    shipping_charge: Decimal = Decimal(0)
    shipping_tax: Decimal = Decimal(0)
    promotion_discount: Decimal = Decimal(0)
    total: Decimal
    #: The channel's default order shipping method (also the carrier name on write-back).
    shipping_method: str | None = None
    #: Gift wrap charged to the buyer, one line per wrapped item, included in ``total``.
    gift_lines: tuple[GiftLine, ...] = ()
    #: True when unit prices and line totals include the tax (the channel's "tax included in prices").
    prices_include_tax: bool = False
    #: The buyer's personal data as the Amazon order sealed it (the customer and address fields and gift
    #: messages then empty): opened by whoever may read it, unreadable once its key is destroyed.
    personal: Sealed | None = None
    #: The order's and its items' programmes (Ship+ and Easy Ship orders are not confirmed by the seller).
    programs: tuple[str, ...] = ()
    associated_orders: tuple[AssociatedOrder, ...] = ()
    #: Amazon's ship-by deadline: a confirmation after it is a late shipment.
    latest_ship_date: AwareDatetime | None = None


class OrderImported(Event):
    """A sales order the back-office should create (first import of this Amazon order)."""

    # 2: sealed personal data; 3: programmes, associated orders, the delivery promise's start (codec
    # upcasts both)
    schema_version: ClassVar[int] = 3

    sales_order: SalesOrder


class OrderLineState(_Value):
    order_item_id: NonEmptyStr
    quantity_ordered: Annotated[int, Field(ge=0)]
    quantity_shipped: Annotated[int, Field(ge=0)]
    buyer_requested_cancel: bool = False


class OrderUpdated(Event):
    """An imported order changed on Amazon (status, shipped quantities, a buyer's cancel request)."""

    channel: NonEmptyStr
    sales_order_code: NonEmptyStr
    amazon_order_id: AmazonOrderId
    order_status: OrderStatus
    lines: tuple[OrderLineState, ...]
    changed_at: AwareDatetime


class OrderCancelled(Event):
    """An imported order was cancelled on Amazon (by the buyer, or by Amazon): cancel the sales order."""

    channel: NonEmptyStr
    sales_order_code: NonEmptyStr
    amazon_order_id: AmazonOrderId
    reason: NonEmptyStr
    buyer_requested: bool
    cancelled_at: AwareDatetime


ImportFailureReason = Literal[
    "unknown_stock_code",
    "no_shipping_address",
    "pending_no_prices",
    "no_items",
    "invalid_order",
]


class OrderImportFailed(Event):
    channel: NonEmptyStr
    amazon_order_id: AmazonOrderId
    reason_code: ImportFailureReason
    #: A sentence a person understands, e.g. "Unknown stock code for seller SKU ABC-1 (ASIN B0...)".
    reason: NonEmptyStr


# --- invoices.issued (written by the back-office) -------------------------------------------------


class ShippedLine(_Value):
    """One line of a package: the Amazon order item (or the seller SKU) and how many were shipped."""

    order_item_id: str | None = None
    seller_sku: SellerSku | None = None
    quantity: PositiveInt

    @model_validator(mode="after")
    def _identified(self) -> ShippedLine:
        if not self.order_item_id and not self.seller_sku:
            raise ValueError("a shipped line names order_item_id or seller_sku")
        return self


class Package(_Value):
    carrier_code: NonEmptyStr
    carrier_name: str | None = None
    shipping_method: str | None = None
    tracking_number: NonEmptyStr
    ship_date: AwareDatetime
    lines: Annotated[tuple[ShippedLine, ...], Field(min_length=1)]
    label_bought_on_amazon: bool = Field(
        False,
        description="The label was bought through Amazon (Buy Shipping, Ship+): its purchase confirmed the"
        " shipment on Amazon, so ordersync sends nothing for this package.",
    )


class InvoiceIssued(Event):
    """The back-office invoiced (and shipped) an imported order."""

    schema_version: ClassVar[int] = 2  # 2: label_bought_on_amazon (codec upcasts 1)

    invoice_number: NonEmptyStr
    amazon_order_id: AmazonOrderId
    sales_order_code: str | None = None
    packages: Annotated[tuple[Package, ...], Field(min_length=1)]


# --- shipments.requested / confirmed / failed ----------------------------------------------------


class ShipmentItem(_Value):
    order_item_id: NonEmptyStr
    quantity: PositiveInt


class ShipmentRequested(Event):
    """Confirm one package of an order on Amazon (from an invoice, or straight from a warehouse)."""

    schema_version: ClassVar[int] = 2  # 2: label_bought_on_amazon (codec upcasts 1)

    channel: NonEmptyStr
    amazon_order_id: AmazonOrderId
    #: Positive number, unique within the order (Amazon's packageReferenceId).
    package_reference_id: Annotated[str, Field(pattern=r"^[1-9]\d{0,17}$")]
    carrier_code: NonEmptyStr
    carrier_name: str | None = None
    shipping_method: str | None = None
    tracking_number: NonEmptyStr
    ship_date: AwareDatetime
    items: Annotated[tuple[ShipmentItem, ...], Field(min_length=1)]
    source: str | None = Field(None, description="What asked for it, e.g. the invoice number.")
    label_bought_on_amazon: bool = Field(
        False,
        description="The label was bought through Amazon (Buy Shipping): its purchase confirmed the"
        " shipment, so ordersync sends nothing.",
    )


#: How Amazon learnt of the shipment; "already-confirmed": an earlier try whose answer was lost landed;
#: "amazon-label": a label bought through Amazon (Buy Shipping, Ship+) confirmed it; "easy-ship": Amazon's
#: carrier ships it (Easy Ship). The last two are not sent by ordersync at all (``note`` says why).
ConfirmationMethod = Literal["confirmShipment", "feed", "already-confirmed", "amazon-label", "easy-ship"]


class ShipmentConfirmed(Event):
    schema_version: ClassVar[int] = 2  # 2: methods amazon-label and easy-ship, note (codec upcasts 1)

    channel: NonEmptyStr
    amazon_order_id: AmazonOrderId
    package_reference_id: NonEmptyStr
    method: ConfirmationMethod
    #: Calls made to Amazon for it (0: nothing had to be sent).
    attempts: Annotated[int, Field(ge=0)]
    carrier_code: NonEmptyStr
    tracking_number: NonEmptyStr
    quantity: PositiveInt
    confirmed_at: AwareDatetime
    #: Why nothing was sent, for amazon-label and easy-ship.
    note: str | None = None


class ShipmentFailed(Event):
    channel: NonEmptyStr
    amazon_order_id: AmazonOrderId
    package_reference_id: NonEmptyStr
    attempts: Annotated[int, Field(ge=0)]
    error_code: NonEmptyStr
    error_message: NonEmptyStr
    carrier_code: NonEmptyStr
    shipping_method: str | None = None
    tracking_number: NonEmptyStr
    ship_date: AwareDatetime
    quantity: PositiveInt


# --- packages.packed (written by the back-office or WMS) and packages.scheduled: Easy Ship --------------


class PackedSize(_Value):
    """A packed package as measured: centimetres and grams (Amazon's Easy Ship units)."""

    length_cm: Annotated[Decimal, Field(gt=0)]
    width_cm: Annotated[Decimal, Field(gt=0)]
    height_cm: Annotated[Decimal, Field(gt=0)]
    weight_g: Annotated[Decimal, Field(gt=0)]


class PackagePacked(Event):
    """An Easy Ship order's package is packed: ordersync schedules Amazon's pick-up (or drop-off) of it in
    a handover slot (Easy Ship API), and Amazon makes its label and tax invoice."""

    channel: NonEmptyStr
    amazon_order_id: AmazonOrderId
    #: The order's items in the package (empty: every item of the order).
    items: tuple[ShipmentItem, ...] = ()
    #: None: proposed from Amazon's catalog (the package size of a one-unit order's product).
    size: PackedSize | None = None
    #: A handover slot id listed earlier, or "earliest".
    slot: NonEmptyStr = "earliest"
    #: PICKUP or DROPOFF; None: whatever the slot offers.
    handover: Literal["PICKUP", "DROPOFF"] | None = None
    #: Printed on the label to help the packer find the package.
    identifier: Annotated[str, Field(max_length=50)] | None = None
    packed_at: AwareDatetime


class PackageScheduled(Event):
    """Amazon scheduled the package's handover: its slot, Amazon's package id, invoice and tracking."""

    channel: NonEmptyStr
    amazon_order_id: AmazonOrderId
    scheduled_package_id: str | None
    slot_id: NonEmptyStr
    slot_start: AwareDatetime | None
    slot_end: AwareDatetime | None
    handover: str | None
    status: str | None
    invoice_number: str | None
    tracking_id: str | None
    size: PackedSize
    #: "packer" (sent with the package) or "catalog" (proposed from Amazon's catalog).
    size_from: Literal["packer", "catalog"]
    #: Calls to createScheduledPackage it took (a slot filled in between costs one more).
    attempts: PositiveInt
    scheduled_at: AwareDatetime


class PackageSchedulingFailed(Event):
    """Amazon would not schedule the package (or ordersync could not ask): why, in Amazon's words."""

    channel: NonEmptyStr
    amazon_order_id: AmazonOrderId
    error_code: NonEmptyStr
    error_message: NonEmptyStr
    attempts: Annotated[int, Field(ge=0)]
    failed_at: AwareDatetime


class PackageDocumentsReady(Event):
    """An Easy Ship package's documents (label, invoice, warranty) as Amazon made them, stored: where to
    fetch the PDF. The PDF itself never travels in Kafka."""

    channel: NonEmptyStr
    amazon_order_id: AmazonOrderId
    scheduled_package_id: str | None
    document_types: tuple[EasyShipDocumentType, ...]
    #: The POST_EASYSHIP_DOCUMENTS feed that asked for them, and Amazon's ReportReferenceId.
    feed_id: NonEmptyStr
    report_reference_id: NonEmptyStr
    #: ``s3://bucket/key`` (S3 storage) or ``file:///path`` (a local directory).
    location: NonEmptyStr
    content_type: Literal["application/pdf"] = "application/pdf"
    size_bytes: PositiveInt
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    stored_at: AwareDatetime


class PackageDocumentsFailed(Event):
    """Amazon made no documents for the package (its feed message was refused, or every attempt failed):
    Amazon's code and message, or ordersync's reason."""

    channel: NonEmptyStr
    amazon_order_id: AmazonOrderId
    document_types: tuple[EasyShipDocumentType, ...]
    feed_id: str | None
    error_code: NonEmptyStr
    error_message: NonEmptyStr
    failed_at: AwareDatetime


# --- orders.cancellation-requested (written by the back-office) -----------------------------------


class OrderCancellationRequested(Event):
    """The seller cancels an order in the back-office; ordersync tells Amazon by an order
    acknowledgement with StatusCode Failure (POST_ORDER_ACKNOWLEDGEMENT_DATA), batched per seller."""

    channel: NonEmptyStr
    amazon_order_id: AmazonOrderId
    reason: str | None = Field(
        None, description="Amazon's CancelReason; None: the channel's cancellation_reason."
    )
    requested_at: AwareDatetime


class OrderCancellationResult(Event):
    """What Amazon's processing report said about a cancellation sent from the back-office."""

    channel: NonEmptyStr
    amazon_order_id: AmazonOrderId
    cancelled: bool
    reason: str
    feed_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None


# --- orders.acknowledgement-results (written by shipment-write-back) ---------------------------------


class OrderAcknowledgementResult(Event):
    """Whether Amazon took the order acknowledgement (StatusCode Success) that tells it the seller's own
    order number, the sales-order code (MerchantOrderID): ``acknowledged``, or why not (Amazon's
    message, or ordersync's reason for not sending it, then without a feed)."""

    channel: NonEmptyStr
    amazon_order_id: AmazonOrderId
    merchant_order_id: NonEmptyStr
    acknowledged: bool
    feed_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None


# --- inventory.levels (written by the back-office) ------------------------------------------------


class InventoryLevelChanged(Event):
    schema_version: ClassVar[int] = 2  # 2: handling time and restock date (codec upcasts 1)

    channel: NonEmptyStr
    seller_sku: SellerSku
    quantity: Annotated[int, Field(ge=0)]
    observed_at: AwareDatetime
    lead_time_to_ship_max_days: Annotated[int, Field(ge=0, le=30)] | None = Field(
        None,
        description="The seller's handling time for this SKU, sent with the quantity; unset: Amazon keeps"
        " what it has (never reset to its default).",
    )
    restock_date: date | None = Field(
        None,
        description="When the SKU is back in stock, sent with the quantity; unset: Amazon keeps its own.",
    )


# --- channel.listings (written by the back-office; compacted) -------------------------------------


class ListingChanged(Event):
    """One channel listing, in the listings CSV's columns (:mod:`ordersync.state.listings`); the latest per
    (seller, Merchant SKU) wins.

    ``client_sku_id`` None removes the listing."""

    channel: NonEmptyStr
    merchant_sku: SellerSku
    client_sku_id: str | None = None
    channel_serial_no: str | None = None
    channel_sku_id: str | None = None
    ean: str | None = None
    asin: str | None = None


# --- config.channels -----------------------------------------------------------------------------


class ChannelConfigured(Event):
    """A channel added or changed while ordersync runs (the dashboard, ``ordersync channels``), whole: its
    settings and its credentials by reference (environment, file or secret store; never a secret), or
    ``channel`` None: the change taken back, the channels file's definition applies again.

    ``namespace`` is the installation (its Redis key prefix), so installations sharing a cluster keep
    apart; ``revision`` orders the changes of one channel (the latest wins)."""

    namespace: NonEmptyStr
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")]
    channel: Channel | None
    revision: Annotated[int, Field(ge=0)]
    operator: str | None = None
    #: The channel's credentials are the channels file's channel's of the same name (a file channel
    #: changed in the dashboard keeps its file's credentials, which may be inline there).
    credentials_from_file: bool = False

    @model_validator(mode="after")
    def _names_itself_and_keeps_no_secret(self) -> ChannelConfigured:
        if self.channel is None:
            return self
        if self.channel.name != self.name:
            raise ValueError(f"the record of channel {self.name!r} defines channel {self.channel.name!r}")
        inline = self.channel.inline_secrets()
        if inline:
            raise ValueError(
                f"channel {self.name}: {', '.join(inline)} given inline; a record names secrets by"
                " reference only (env, file or store)"
            )
        return self


# --- ops.commands ---------------------------------------------------------------------------------


OperatorCommand = Literal["ignore", "unignore", "retry-download", "retry-import", "retry-writeback"]


class OperatorCommandIssued(Event):
    """An operator asked for an action on orders (from the CLI or the dashboard)."""

    command: OperatorCommand
    channel: NonEmptyStr
    amazon_order_ids: Annotated[tuple[AmazonOrderId, ...], Field(min_length=1, max_length=1000)]
    operator: str | None = None


class TaskRunRequested(Event):
    """An operator asked a periodic task to run now for a channel ("Synchronize now"), from the CLI or
    the dashboard; the stage that owns the task runs it at once instead of at its next scheduled run."""

    task: Annotated[str, Field(min_length=1, max_length=64)]
    channel: NonEmptyStr
    operator: str | None = None


def _base64(value: str) -> str:
    base64.b64decode(value, validate=True)
    return value


#: Bytes carried as base64 text (an original record, kept whole): refused unless it decodes.
Base64Text = Annotated[str, AfterValidator(_base64)]


# --- every .dlq companion -------------------------------------------------------------------------


class EventDeadLettered(Event):
    """An input that could not be processed, kept whole with why and where it came from."""

    source_topic: NonEmptyStr
    source_partition: Annotated[int, Field(ge=0)]
    source_offset: Annotated[int, Field(ge=0)]
    source_key: str | None
    #: The original bytes, base64-encoded, so a replay after a fix sends exactly what arrived; empty
    #: when the original was too large to copy (``original_size_bytes`` is then set).
    original_value_b64: Base64Text
    stage: NonEmptyStr
    error_type: NonEmptyStr
    error: NonEmptyStr
    dead_lettered_at: AwareDatetime
    #: Set when the original (this many bytes) was too large to copy here: it is read at
    #: ``source_topic``/``source_partition``/``source_offset`` while the topic retains it.
    original_size_bytes: Annotated[int, Field(ge=0)] | None = None

    def original_value(self) -> bytes:
        return base64.b64decode(self.original_value_b64)


# --- the redrive tiers -----------------------------------------------------------------------------


class RecordParked(Event):
    """A record a stage could not process yet, waiting on a redrive tier until ``due_at``.

    Parked for its own transient failure (``behind`` unset), or behind an earlier parked record of the
    same order (``behind`` names it), so one order's records are never processed out of order.
    """

    stage: NonEmptyStr
    source_topic: NonEmptyStr
    source_partition: Annotated[int, Field(ge=0)]
    source_offset: Annotated[int, Field(ge=0)]
    source_key: str | None
    #: The original bytes, base64-encoded: the record is processed from these when due.
    original_value_b64: Base64Text
    #: 1-based tier whose topic carries this record.
    tier: Annotated[int, Field(ge=1)]
    #: Tries made after the first failure (0 for the first parking).
    tries: Annotated[int, Field(ge=0)]
    first_failed_at: AwareDatetime
    parked_at: AwareDatetime
    due_at: AwareDatetime
    deadline_at: AwareDatetime
    error_type: NonEmptyStr
    error: NonEmptyStr
    behind: str | None = None

    def original_value(self) -> bytes:
        return base64.b64decode(self.original_value_b64)

    @property
    def record_id(self) -> str:
        """Where the original was read: what the order's waiting line holds."""
        return record_id(self.source_topic, self.source_partition, self.source_offset)


def record_id(topic: str, partition: int, offset: int) -> str:
    """A record's place in Kafka, as ``topic:partition:offset``."""
    return f"{topic}:{partition}:{offset}"


# --- operators' handling of dead letters -------------------------------------------------------------


class DeadLetterHandled(Event):
    """An operator replayed a dead letter, or resolved it (with a note saying why nothing more is done)."""

    dlq_topic: NonEmptyStr
    dlq_partition: Annotated[int, Field(ge=0)]
    dlq_offset: Annotated[int, Field(ge=0)]
    action: Literal["replayed", "resolved"]
    operator: Annotated[str, Field(min_length=1, max_length=64)]
    note: Annotated[str, Field(max_length=500)] = ""
    handled_at: AwareDatetime

    @property
    def letter_id(self) -> str:
        return record_id(self.dlq_topic, self.dlq_partition, self.dlq_offset)


# --- ops.audit ------------------------------------------------------------------------------------------

#: What a dashboard account may do: read; also act on orders and see buyers' personal data; also manage
#: the accounts (ordersync.ops.users).
DashboardRole = Literal["viewer", "operator", "admin"]
#: Done (sent to the pipeline, or carried out), refused (nothing done, with the reason), or failed.
AuditOutcome = Literal["sent", "refused", "failed"]


class AuditRecorded(Event):
    """Something a person or an API client did or tried, in the dashboard or with the CLI: an action on
    orders, dead letters or alerts, a change to an account, a sign-in or sign-out (ordersync.ops.audit).
    Never a password, a token or a buyer's personal data."""

    entry_id: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
    at: AwareDatetime
    #: A user name, ``api-token`` / ``read-token`` (the shared tokens), ``cli:<os user>``, or ``(unknown)``.
    actor: Annotated[str, Field(min_length=1, max_length=80)]
    role: DashboardRole | None = None
    via: Literal["dashboard", "api", "cli"]
    #: ``sign-in``, ``order.ignore``, ``dead-letter.replay``, ``alert.snooze``, ``user.role`` ...
    action: Annotated[str, Field(pattern=r"^[a-z][a-z-]*(\.[a-z][a-z-]*)?$", max_length=64)]
    #: What it was done to: ``channel/order id``, dead letter ids, an alert's fingerprint, a user name.
    targets: Annotated[tuple[Annotated[str, Field(max_length=300)], ...], Field(max_length=1000)] = ()
    outcome: AuditOutcome
    reason: Annotated[str, Field(max_length=2000)] = ""
    detail: Annotated[str, Field(max_length=2000)] = ""
    #: The client's address, for the dashboard.
    client: Annotated[str, Field(max_length=64)] | None = None
