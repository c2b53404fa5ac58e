"""THE topic catalogue: the only place a topic name is spelled.

Each topic names its key, the event types it carries (one schema each, versioned by the envelope), its
partitions and cleanup policy, who writes it, and its dead-letter companion when another system writes
to it. Keys keep one order's (or one SKU's) events on one partition, hence in order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ordersync.schemas.envelope import Event
from ordersync.schemas.events import (
    AmazonNotificationReceived,
    AuditRecorded,
    ChannelConfigured,
    DeadLetterHandled,
    DownloadCursorSaved,
    EventDeadLettered,
    InventoryLevelChanged,
    InvoiceIssued,
    ListingChanged,
    OperatorCommandIssued,
    OrderAcknowledgementResult,
    OrderCancellationRequested,
    OrderCancellationResult,
    OrderCancelled,
    OrderDownloaded,
    OrderEnriched,
    OrderImported,
    OrderImportFailed,
    OrderUpdated,
    PackageDocumentsFailed,
    PackageDocumentsReady,
    PackagePacked,
    PackageScheduled,
    PackageSchedulingFailed,
    RecordParked,
    ShipmentConfirmed,
    ShipmentFailed,
    ShipmentRequested,
    TaskRunRequested,
)
from ordersync.settings import REDRIVE_TIER_COUNT

KeyKind = Literal["order", "sku", "channel", "source", "letter", "actor", "config"]

KEY_FORMATS: dict[KeyKind, str] = {
    "order": "seller_id:amazon_order_id",
    "sku": "seller_id:seller_sku",
    "channel": "channel",
    "source": "the parked record's own key",
    "letter": "dlq_topic:partition:offset",
    "actor": "who did it (a user name, api-token, cli:<os user>)",
    "config": "namespace/channel (the installation's Redis key prefix, the channel's name)",
}


@dataclass(frozen=True)
class TopicSpec:
    name: str
    key: KeyKind
    events: tuple[type[Event], ...]
    writer: str
    description: str
    cleanup_policy: Literal["delete", "compact"] = "delete"
    #: Written by a system outside ordersync: every record is validated, failures go to the DLQ.
    external: bool = False
    #: None: the catalogue's default partition count (settings.stage.partitions).
    partitions: int | None = None
    dlq: TopicSpec | None = field(default=None, compare=False)

    def accepts(self, event_type: str) -> type[Event] | None:
        for event in self.events:
            if event.event_type() == event_type:
                return event
        return None


def _dlq_of(name: str, key: KeyKind) -> TopicSpec:
    return TopicSpec(
        name=f"{name}.dlq",
        key=key,
        events=(EventDeadLettered,),
        writer="the stage that consumed the source topic",
        description=f"Records of {name} that failed validation or processing, with the reason.",
    )


def _external(name: str, key: KeyKind, **kwargs: object) -> TopicSpec:
    return TopicSpec(name=name, key=key, external=True, dlq=_dlq_of(name, key), **kwargs)  # type: ignore[arg-type]


def _consumed(name: str, key: KeyKind, **kwargs: object) -> TopicSpec:
    """An internal topic a stage consumes: it gets a dead-letter companion too, so nothing is lost."""
    return TopicSpec(name=name, key=key, dlq=_dlq_of(name, key), **kwargs)  # type: ignore[arg-type]


ORDERS_DOWNLOADED = _consumed(
    "amazon.orders.downloaded",
    key="order",
    events=(OrderDownloaded,),
    writer="order-download",
    description="Orders listed by Amazon, new or changed, deduplicated on (seller, order, LastUpdateDate).",
)
AMAZON_NOTIFICATIONS = _consumed(
    "amazon.notifications",
    key="order",
    events=(AmazonNotificationReceived,),
    writer="order-notifications (each message of Amazon's SQS queue, before it is deleted there)",
    description="Amazon's ORDER_CHANGE notifications as received, keyed by the order they name (unknown:"
    " the message id when they name none); read by order-notifications, which fetches each order.",
)
ORDERS_ENRICHED = _consumed(
    "amazon.orders.enriched",
    key="order",
    events=(OrderEnriched,),
    writer="item-fetch",
    description="Downloaded orders with their items (and address where configured).",
)
ORDERS_IMPORTED = _consumed(
    "orders.imported",
    key="order",
    events=(OrderImported, OrderUpdated, OrderCancelled),
    writer="import",
    description="Sales orders for the back-office (the contract it consumes), then their updates and "
    "cancellations; one sales order per Amazon order, ever.",
)
ORDERS_IMPORT_FAILED = TopicSpec(
    name="orders.import-failed",
    key="order",
    events=(OrderImportFailed,),
    writer="import",
    description="Orders that could not become a sales order, with a reason code and a sentence.",
)
INVOICES_ISSUED = _external(
    "invoices.issued",
    key="order",
    events=(InvoiceIssued,),
    writer="the back-office (ERP)",
    description="Invoices issued for imported orders, with the packages shipped.",
)
SHIPMENTS_REQUESTED = _external(
    "shipments.requested",
    key="order",
    events=(ShipmentRequested,),
    writer="invoice-issued (or a warehouse system directly)",
    description="One package of an order to confirm on Amazon.",
)
SHIPMENTS_CONFIRMED = TopicSpec(
    name="shipments.confirmed",
    key="order",
    events=(ShipmentConfirmed,),
    writer="shipment-write-back",
    description="Packages Amazon accepted as shipped.",
)
SHIPMENTS_FAILED = TopicSpec(
    name="shipments.failed",
    key="order",
    events=(ShipmentFailed,),
    writer="shipment-write-back",
    description="Packages that could not be confirmed after every attempt, with Amazon's message.",
)
INVENTORY_LEVELS = _external(
    "inventory.levels",
    key="sku",
    events=(InventoryLevelChanged,),
    writer="the back-office (ERP/WMS)",
    description="Stock available to sell per channel and SKU; the latest value wins.",
    cleanup_policy="compact",
)
PACKAGES_PACKED = _external(
    "packages.packed",
    key="order",
    events=(PackagePacked,),
    writer="the back-office or WMS (Easy Ship orders)",
    description="An Easy Ship order's package packed: its items, size, preferred handover slot and method;"
    " ordersync schedules its pick-up or drop-off with Amazon.",
)
PACKAGES_SCHEDULED = TopicSpec(
    name="packages.scheduled",
    key="order",
    events=(PackageScheduled, PackageSchedulingFailed),
    writer="shipment-write-back (packing)",
    description="Per packed Easy Ship package, its handover slot, Amazon's package id, invoice and tracking,"
    " or why Amazon would not schedule it.",
)
PACKAGES_DOCUMENTS = TopicSpec(
    name="packages.documents",
    key="order",
    events=(PackageDocumentsReady, PackageDocumentsFailed),
    writer="shipment-write-back (packing documents)",
    description="Per scheduled Easy Ship package, where its label and invoice PDFs are stored (S3), or why"
    " Amazon made none.",
)
ORDERS_CANCELLATION_REQUESTED = _external(
    "orders.cancellation-requested",
    key="order",
    events=(OrderCancellationRequested,),
    writer="the back-office (ERP/WMS)",
    description="Orders the seller cancels; sent to Amazon as order acknowledgements (Failure).",
)
ORDERS_CANCELLATION_RESULTS = TopicSpec(
    name="orders.cancellation-results",
    key="order",
    events=(OrderCancellationResult,),
    writer="shipment-write-back",
    description="Per order, whether Amazon accepted the seller's cancellation, with Amazon's message.",
)
ORDERS_ACKNOWLEDGEMENT_RESULTS = TopicSpec(
    name="orders.acknowledgement-results",
    key="order",
    events=(OrderAcknowledgementResult,),
    writer="shipment-write-back",
    description="Per imported order of a channel with acknowledge_orders, whether Amazon took its"
    " acknowledgement (StatusCode Success, the sales-order code as MerchantOrderID), or why not.",
)
CHANNEL_LISTINGS = _external(
    "channel.listings",
    key="sku",
    events=(ListingChanged,),
    writer="the back-office (ERP/PIM)",
    description="Channel listings (the listings CSV's columns): which stock code an Amazon SKU, ASIN or"
    " EAN is; the latest per SKU wins.",
    cleanup_policy="compact",
)
OPS_COMMANDS = _external(
    "ops.commands",
    key="channel",
    events=(OperatorCommandIssued,),
    writer="ordersync CLI and dashboard (operators)",
    description="Operator actions on orders: ignore, retry download, retry import, retry write-back.",
)

OPS_TASK_REQUESTS = _external(
    "ops.task-requests",
    key="channel",
    events=(TaskRunRequested,),
    writer="ordersync CLI and dashboard (operators)",
    description="Synchronize now: a periodic task (download, inventory, write-back) asked to run at"
    " once for a channel; the stage that owns the task wakes it.",
)

OPS_DEAD_LETTER_ACTIONS = TopicSpec(
    name="ops.dead-letter-actions",
    key="letter",
    events=(DeadLetterHandled,),
    writer="ordersync dashboard (operators)",
    description="Who replayed or resolved which dead letter, when, with their note; the latest per letter"
    " wins.",
    cleanup_policy="compact",
)
OPS_AUDIT = TopicSpec(
    name="ops.audit",
    key="actor",
    events=(AuditRecorded,),
    writer="ordersync dashboard and CLI (ordersync.ops.audit)",
    description="The audit trail: every action and account change made in the dashboard or with the CLI,"
    " and every sign-in and sign-out, with who, when, what and the outcome; give it the retention your"
    " audit policy asks for.",
)

CONFIG_CHANNELS = TopicSpec(
    name="config.channels",
    key="config",
    events=(ChannelConfigured,),
    writer="ordersync dashboard and CLI (ordersync.state.channel_registry)",
    description="The channel registry: each channel added or changed while ordersync runs, whole, with its"
    " credentials by reference only; every stage follows it without a restart. The latest per channel"
    " wins; a channel the file also declares is replaced.",
    cleanup_policy="compact",
)

#: The redrive tiers: records a stage could not process yet (a transient fault outlived its in-line
#: retries), each tier waiting a longer delay (``settings.redrive.delays_s``) before the stage tries
#: again. A tier's delay is fixed, so its records are due in the order they were written.
DOWNLOAD_CURSORS = TopicSpec(
    name="amazon.orders.cursors",
    key="channel",
    events=(DownloadCursorSaved,),
    writer="order-download",
    description="Each channel's download cursor (Amazon's LastUpdatedBefore of the last complete window),"
    " written before Redis's copy; the latest per channel wins.",
    cleanup_policy="compact",
)
REDRIVE_TIERS: tuple[TopicSpec, ...] = tuple(
    _consumed(
        f"pipeline.redrive.{tier}",
        key="source",
        events=(RecordParked,),
        writer="every stage that consumes a topic",
        description=f"Redrive tier {tier}: records waiting for their next try (tier delay {tier} of"
        " settings.redrive.delays_s), keyed as their source record so one order's stay in order.",
    )
    for tier in range(1, REDRIVE_TIER_COUNT + 1)
)

#: An order's way through the pipeline: download to confirmed shipment (the demo watches these).
ORDER_FLOW: tuple[TopicSpec, ...] = (
    ORDERS_DOWNLOADED,
    ORDERS_ENRICHED,
    ORDERS_IMPORTED,
    ORDERS_IMPORT_FAILED,
    INVOICES_ISSUED,
    SHIPMENTS_REQUESTED,
    SHIPMENTS_CONFIRMED,
    SHIPMENTS_FAILED,
)

#: Every topic ordersync uses, dead-letter companions included, in pipeline order.
CATALOGUE: tuple[TopicSpec, ...] = tuple(
    spec
    for main in (
        AMAZON_NOTIFICATIONS,
        *ORDER_FLOW,
        ORDERS_CANCELLATION_REQUESTED,
        ORDERS_CANCELLATION_RESULTS,
        ORDERS_ACKNOWLEDGEMENT_RESULTS,
        PACKAGES_PACKED,
        PACKAGES_SCHEDULED,
        PACKAGES_DOCUMENTS,
        INVENTORY_LEVELS,
        CHANNEL_LISTINGS,
        OPS_COMMANDS,
        OPS_TASK_REQUESTS,
        OPS_DEAD_LETTER_ACTIONS,
        OPS_AUDIT,
        CONFIG_CHANNELS,
        DOWNLOAD_CURSORS,
        *REDRIVE_TIERS,
    )
    for spec in ((main, main.dlq) if main.dlq else (main,))
)


def by_name(name: str) -> TopicSpec:
    for spec in CATALOGUE:
        if spec.name == name:
            return spec
    raise KeyError(f"{name!r} is not in the topic catalogue")


def order_key(seller_id: str, amazon_order_id: str) -> str:
    return f"{seller_id}:{amazon_order_id}"


def sku_key(seller_id: str, seller_sku: str) -> str:
    return f"{seller_id}:{seller_sku}"
