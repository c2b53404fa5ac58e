"""The Redis key catalogue: every key family ordersync writes, once, as ``schemas/topics.py`` is for Kafka.

A key is ``<prefix>:<family>:<parts...>`` (``prefix`` is ``settings.redis.key_prefix``, default
:data:`ordersync.settings.DEFAULT_PREFIX`). A part written ``{seller}`` is a Redis Cluster hash tag:
every key of one
seller (or seller-application pair) lands in one slot, so pipelines and scripts over them work on a
cluster. Each family says what it holds, how long it lives, which stage writes it and what rebuilds
it when Redis is lost (Kafka is the record; Redis is fast state).

``python -m ordersync.state.keys`` prints the catalogue as the Markdown table of ``docs/ops.md``
("Redis keys"); a test keeps the two the same.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from typing import Literal

#: Dedupe marks and sales-order codes outlive Amazon's 90-day order-change horizon with margin; so does
#: per-order state of orders not imported (an imported order's working state lives as long as the order:
#: ORDER_LIFE, ordersync.state.lifetime).
ORDER_STATE_TTL_S = 120 * 86400
#: The catalogue's word for "until the order closes" (ordersync.state.lifetime).
ORDER_LIFE = "the order's life (order_state: delivery + 30 days, at least 7 after the last write)"

RedisType = Literal["string", "hash", "set", "sorted set", "list", "stream", "several", "pub/sub channel"]
_PART = re.compile(r"^(\{[a-z_]+\}|<[a-z_]+>|[a-z][a-z0-9-]*)$")


@dataclass(frozen=True)
class KeyFamily:
    """One family of keys: ``<prefix>:<name>:<parts>``.

    ``parts`` name the variable parts in order: ``{seller}`` (a hash tag), ``<order_id>`` (a plain
    value) or a literal word. ``ttl`` and ``rebuilt_from`` are for people: the catalogue's table.
    """

    name: str
    parts: tuple[str, ...]
    type: RedisType
    owner: str
    ttl: str
    holds: str
    rebuilt_from: str = "-"

    def __post_init__(self) -> None:
        for part in (self.name, *self.parts):
            if not _PART.match(part):
                raise ValueError(f"key family {self.name}: bad part {part!r}")

    @property
    def variables(self) -> tuple[str, ...]:
        return tuple(p for p in self.parts if p[0] in "{<")

    def key(self, prefix: str, *values: str, detail: tuple[str, ...] = ()) -> str:
        """The key for ``values``, one per variable part, in order; ``detail`` parts follow, for
        families whose table row names them ``<detail>`` (several sub-keys)."""
        if len(values) != len(self.variables):
            raise ValueError(
                f"key family {self.name} takes {len(self.variables)} values "
                f"({', '.join(self.variables) or 'none'}), not {len(values)}"
            )
        given = iter(values)
        rendered = []
        for part in self.parts:
            if part.startswith("{"):
                rendered.append("{" + next(given) + "}")
            elif part.startswith("<"):
                rendered.append(next(given))
            else:
                rendered.append(part)
        return ":".join((prefix, self.name, *rendered, *detail))

    @property
    def pattern(self) -> str:
        return ":".join(("<prefix>", self.name, *self.parts))


def _order_family(
    name: str,
    owner: str,
    holds: str,
    rebuilt_from: str,
    type_: RedisType = "string",
    *,
    ttl: str = ORDER_LIFE,
) -> KeyFamily:
    return KeyFamily(name, ("{seller}", "<order_id>"), type_, owner, ttl, holds, rebuilt_from)


# --- order download and enrichment ---------------------------------------------------------------------
CURSOR = KeyFamily(
    "cursor",
    ("<channel>",),
    "string",
    "order-download",
    "none",
    "Amazon's last LastUpdatedBefore of the channel, saved after Kafka acknowledged the window",
    "amazon.orders.cursors (compacted; written first)",
)
DOWNLOADED = _order_family(
    "downloaded",
    "order-download",
    "the LastUpdateDate of the order version last sent (dedupe mark)",
    "amazon.orders.downloaded",
    ttl="120 days",
)
DOWNLOAD_CLAIM = KeyFamily(
    "download-claim",
    ("{seller}", "<order_id>"),
    "string",
    "order-download, order-notifications",
    "the claim TTL (a sender that died)",
    "the LastUpdateDate of the order version one sender is sending right now: a poll and a notification"
    " of the same version send it once",
    "not rebuilt: a claim lost with Redis lets a version be sent twice at most (deduplicated downstream)",
)
ENRICHED = _order_family(
    "enriched",
    "item-fetch",
    "the LastUpdateDate of the order version last enriched (dedupe mark)",
    "amazon.orders.enriched",
    ttl="120 days",
)
ORDER_STATUS = _order_family(
    "order",
    "every order stage",
    "the order's status fields (channel, Amazon status, stage reached, reasons, dates)",
    "the order topics",
    "hash",
    ttl="imported: the order's life; else 120 days after its first write",
)
# --- import -------------------------------------------------------------------------------------------
IMPORTED = _order_family(
    "imported",
    "import",
    "the LastUpdateDate of the order version last imported (dedupe mark; with no sales order beside it,"
    " the order is closed: imported, its life over, never imported again)",
    "orders.imported",
    ttl="120 days",
)
LAST_ENRICHED = _order_family(
    "enriched-order",
    "import",
    "the last enriched order (JSON), for Retry Import and Un-ignore without calling Amazon; deleted once"
    " the order is imported",
    "amazon.orders.enriched",
    ttl="120 days",
)
IGNORED = _order_family(
    "ignored",
    "import",
    "set while an operator has the order ignored (the operator's name)",
    "ops.commands",
    ttl="120 days",
)
SALES_ORDER = _order_family(
    "sales-order", "import", "the sales order built for the order (JSON)", "orders.imported"
)
SALES_ORDER_CODE = _order_family(
    "so-code", "import", "the order's sales-order code, never reused", "orders.imported", ttl="120 days"
)
SALES_ORDER_SEQUENCE = KeyFamily(
    "so-seq",
    ("<code_prefix>",),
    "string",
    "import",
    "none",
    "the last sales-order number given under a code prefix",
    "the highest code on orders.imported, plus 100 (codes given but not published when Redis was lost)",
)
LISTINGS = KeyFamily(
    "listings",
    ("<channel>",),
    "hash",
    "import (listings loader)",
    "none",
    "seller SKU -> back-office stock code",
    "channel.listings (compacted)",
)
LISTINGS_ROWS = KeyFamily(
    "listings",
    ("<channel>", "rows"),
    "hash",
    "import (listings loader)",
    "none",
    "the channel's listing rows (JSON) by seller SKU",
    "channel.listings (compacted)",
)
LISTINGS_INDEX = KeyFamily(
    "listings",
    ("<channel>", "by", "<index>"),
    "hash",
    "import (listings loader)",
    "none",
    "another identifier (ASIN, EAN, ...) -> seller SKU",
    "channel.listings (compacted)",
)
# --- Easy Ship packing ----------------------------------------------------------------------------------
EASY_SHIP_PACKAGE = _order_family(
    "easyship",
    "shipment-write-back (packing)",
    "the order's Easy Ship package outcome: Scheduled (Amazon's package id, slot) or Failed, so a replayed"
    " package is never scheduled twice",
    "packages.scheduled",
    "hash",
)
# --- product data (Catalog Items) -----------------------------------------------------------------------
PRODUCT = KeyFamily(
    "product",
    ("{marketplace}", "<asin>"),
    "string",
    "products (CLI)",
    "products.cache_ttl_s",
    "a product's catalog data (JSON): title, brand, image, item and package sizes, identifiers",
    "not rebuilt: read from Amazon again",
)
PRODUCT_SKU = KeyFamily(
    "product-sku",
    ("{marketplace}", "<seller>", "<sku>"),
    "string",
    "products (CLI)",
    "products.cache_ttl_s",
    "the ASIN of a seller SKU in a marketplace",
    "not rebuilt: read from Amazon again",
)
# --- invoices and shipments ---------------------------------------------------------------------------
REQUESTED = _order_family(
    "requested", "invoice-issued", "quantity requested per order item so far", "shipments.requested", "hash"
)
INVOICE_SEEN = KeyFamily(
    "invoice",
    ("{seller}", "<order_id>", "<invoice>"),
    "string",
    "invoice-issued",
    ORDER_LIFE,
    "set once an invoice's quantities were counted",
    "shipments.requested",
)
PACKAGE = KeyFamily(
    "package",
    ("{seller}", "<order_id>", "<invoice>", "<index>"),
    "string",
    "invoice-issued",
    ORDER_LIFE,
    "the package reference id given to one package of an invoice",
    "shipments.requested",
)
PACKAGE_SEQUENCE = _order_family(
    "package-seq", "invoice-issued", "the last package number of the order", "shipments.requested"
)
SHIPMENT = KeyFamily(
    "shipment",
    ("{seller}", "<order_id>", "<package_id>"),
    "hash",
    "shipment-write-back",
    ORDER_LIFE,
    "one package's write-back state (status, attempts, feed, errors, the request)",
    "shipments.requested, shipments.confirmed, shipments.failed",
)
WRITEBACK_PACKAGES = _order_family(
    "wb-packages", "shipment-write-back", "the order's package ids", "shipments.requested", "set"
)
WRITEBACK_RECENT = KeyFamily(
    "wb-recent",
    ("{seller}", "<window>"),
    "string",
    "shipment-write-back",
    "2 auto windows",
    "requests seen in one auto-mode window (feed or confirm)",
)
WRITEBACK_PENDING = KeyFamily(
    "wb-pending",
    ("{seller}",),
    "hash",
    "shipment-write-back",
    "none",
    "packages parked for the next fulfilment feed",
    "shipments.requested (each unsettled request published again)",
)
WRITEBACK_INFLIGHT = KeyFamily(
    "wb-inflight",
    ("{seller}",),
    "hash",
    "shipment-write-back",
    "none",
    "the fulfilment feed in flight: its id, batch and start",
    "shipments.requested (each unsettled request published again)",
)
WRITEBACK_LOCK = KeyFamily(
    "wb-lock", ("{seller}",), "string", "shipment-write-back", "lock TTL", "the seller's feed lock"
)
WRITEBACK_LAST_FEED = KeyFamily(
    "wb-last-feed",
    ("{seller}",),
    "string",
    "shipment-write-back",
    "flush interval",
    "when the last fulfilment feed was sent",
)
CANCEL_PENDING = KeyFamily(
    "cancel-pending",
    ("{seller}",),
    "hash",
    "shipment-write-back",
    "none",
    "back-office cancellations parked for the next acknowledgement feed",
    "orders.cancellation-requested (each unanswered request published again)",
)
CANCEL_INFLIGHT = KeyFamily(
    "cancel-inflight",
    ("{seller}",),
    "hash",
    "shipment-write-back",
    "none",
    "the acknowledgement feed in flight",
    "orders.cancellation-requested (each unanswered request published again)",
)
CANCEL_LOCK = KeyFamily(
    "cancel-lock",
    ("{seller}",),
    "string",
    "shipment-write-back",
    "lock TTL",
    "the seller's cancellation feed lock",
)
ACK_PENDING = KeyFamily(
    "ack-pending",
    ("{seller}",),
    "hash",
    "shipment-write-back",
    "none",
    "imported orders parked for the next order acknowledgement (StatusCode Success, MerchantOrderID)",
    "orders.imported (each order of an acknowledging channel without a result, parked again)",
)
ACK_INFLIGHT = KeyFamily(
    "ack-inflight",
    ("{seller}",),
    "hash",
    "shipment-write-back",
    "none",
    "the order acknowledgement feed in flight: its id, batch, orders and start",
    "orders.imported (each order of an acknowledging channel without a result, parked again)",
)
ACK_LOCK = KeyFamily(
    "ack-lock",
    ("{seller}",),
    "string",
    "shipment-write-back",
    "lock TTL",
    "the seller's order acknowledgement feed lock",
)
ACK_LAST_FEED = KeyFamily(
    "ack-last-feed",
    ("{seller}",),
    "string",
    "shipment-write-back",
    "flush interval",
    "when the last order acknowledgement feed was sent",
)
ESDOC_PENDING = KeyFamily(
    "esdoc-pending",
    ("{seller}",),
    "hash",
    "shipment-write-back (packing documents)",
    "none",
    "scheduled Easy Ship packages parked for the next POST_EASYSHIP_DOCUMENTS feed",
    "packages.scheduled (each package without a documents outcome, parked again)",
)
ESDOC_INFLIGHT = KeyFamily(
    "esdoc-inflight",
    ("{seller}",),
    "hash",
    "shipment-write-back (packing documents)",
    "none",
    "the POST_EASYSHIP_DOCUMENTS feed in flight: its id, batch, orders and start",
    "packages.scheduled (each package without a documents outcome, parked again)",
)
ESDOC_LOCK = KeyFamily(
    "esdoc-lock",
    ("{seller}",),
    "string",
    "shipment-write-back (packing documents)",
    "lock TTL",
    "the seller's Easy Ship documents lock (feeds and downloads)",
)
ESDOC_LAST_FEED = KeyFamily(
    "esdoc-last-feed",
    ("{seller}",),
    "string",
    "shipment-write-back (packing documents)",
    "flush interval",
    "when the last POST_EASYSHIP_DOCUMENTS feed was sent",
)
ESDOC_FETCH = KeyFamily(
    "esdoc-fetch",
    ("{seller}",),
    "hash",
    "shipment-write-back (packing documents)",
    "none",
    "documents Amazon made and not yet downloaded: <ReportReferenceId>|<order> -> the order's package",
    "packages.scheduled (each package without a documents outcome, asked again)",
)
# --- inventory ----------------------------------------------------------------------------------------
INVENTORY_LATEST = KeyFamily(
    "inv-latest",
    ("{seller}",),
    "hash",
    "inventory",
    "none",
    "the newest quantity observed per SKU (JSON with its time)",
    "inventory.levels",
)
INVENTORY_PENDING = KeyFamily(
    "inv-pending",
    ("{seller}",),
    "hash",
    "inventory",
    "none",
    "SKUs whose quantity differs from what Amazon accepted last",
    "inventory.levels",
)
INVENTORY_SENT = KeyFamily(
    "inv-sent",
    ("{seller}",),
    "hash",
    "inventory",
    "none",
    "the quantity Amazon accepted last per SKU",
    "unknown after a loss: every SKU's latest level is sent again",
)
INVENTORY_ERRORS = KeyFamily(
    "inv-errors", ("{seller}",), "hash", "inventory", "none", "Amazon's last refusal per SKU"
)
INVENTORY_INFLIGHT = KeyFamily(
    "inv-inflight",
    ("{seller}",),
    "hash",
    "inventory",
    "none",
    "the listings feed in flight",
    "inventory.levels (its SKUs are sent again)",
)
INVENTORY_LOCK = KeyFamily(
    "inv-lock", ("{seller}",), "string", "inventory", "lock TTL", "the seller's inventory feed lock"
)
INVENTORY_FAST = KeyFamily(
    "inv-fast",
    ("{seller}",),
    "hash",
    "inventory",
    "none",
    "levels at or under inventory.fast_threshold, sent by patchListingsItem before the next feed",
    "inventory.levels",
)
INVENTORY_FBA = KeyFamily(
    "inv-fba",
    ("{seller}",),
    "set",
    "inventory",
    "none",
    "SKUs Amazon fulfils (seen on AFN orders): no merchant quantity is ever sent for them",
    "orders.imported",
)
INVENTORY_LAST_FLUSH = KeyFamily(
    "inv-last-flush",
    ("{seller}",),
    "string",
    "inventory",
    "flush interval",
    "when the last inventory feed was sent",
)
# --- stage coordination and health ---------------------------------------------------------------------
LEASE = KeyFamily(
    "lease",
    ("<job>", "<scope>"),
    "string",
    "order-download, inventory",
    "lease TTL",
    "which worker does a per-channel job (download polling, stock flushes)",
)
GENERATION = KeyFamily(
    "generation",
    ("<stage>",),
    "string",
    "every stage: each rebuilds its state from Kafka (its orders' redrive waiting lines at least)",
    "none",
    "an id the stage writes once its state is in Redis: its absence tells the stage Redis lost its state"
    " (a restart without persistence, a failover to a replica that lagged) or never had it",
    "a new id, then each stage's rebuild",
)
COMMAND_PROGRESS = KeyFamily(
    "command-progress",
    ("<event_id>",),
    "hash",
    "order-download (retry-download)",
    "the redrive deadline, plus a day",
    "per order of one operator command, its outcome so far (done, or Amazon's refusal), so a command"
    " tried again after a transient fault does not repeat the orders already done",
    "not rebuilt: after a loss a command tried again repeats its orders (each is idempotent)",
)
PARKED = KeyFamily(
    "parked",
    ("<stage>", "<record_key>"),
    "list",
    "every stage that consumes a topic",
    "the redrive deadline, plus a day",
    "one order's waiting line on the redrive tiers: the records (topic:partition:offset) parked in the"
    " order they arrived; only the first is tried, the others wait behind it",
    "the records parked on the redrive tiers not settled yet, from each tier partition's next offset to"
    " handle, in the order they were first parked",
)
TASK = KeyFamily(
    "task",
    ("<task>", "<scope>"),
    "hash",
    "every stage",
    "none",
    "a task's health: last run, last success, last result or error; a periodic task's schedule (every_s,"
    " next_run) and the last Synchronize now (run_requested_at, run_requested_by)",
)
TASKS = KeyFamily("tasks", (), "set", "every stage", "none", "the index of task health records")
CHANNEL_REGISTRY = KeyFamily(
    "channel-registry",
    (),
    "hash",
    "dashboard and CLI (ordersync.state.channel_registry)",
    "none",
    "the channel registry's view: channel name -> its latest ChannelConfigured (JSON)",
    "config.channels (compacted), by the first stage that finds the view gone",
)
CHANNEL_REGISTRY_REVISION = KeyFamily(
    "channel-registry",
    ("revision",),
    "string",
    "dashboard and CLI (ordersync.state.channel_registry)",
    "none",
    "a token changed at every change of the view (stages compare it every few seconds); absent: the view"
    " is not loaded",
    "config.channels (compacted), with the view",
)
TASK_WAKEUPS = KeyFamily(
    "task-wakeups",
    (),
    "pub/sub channel",
    "order-download, inventory, shipment-write-back (an operator's ops.task-requests)",
    "none (a message, not a key)",
    "Synchronize now: [task, scope] published to wake the workers pausing that task",
    "nothing to rebuild: a wake-up lost costs only the early run; the task runs on its schedule",
)
HEALTH_ACCOUNT = KeyFamily(
    "health",
    ("{seller}", "<channel>", "<api>"),
    "several",
    "every stage calling Amazon",
    "minutes: 2 windows; last call: 30 days",
    "SP-API call outcomes per account and API (sub-keys: by minute, the last call)",
)
HEALTH_ACCOUNTS = KeyFamily(
    "health", ("accounts",), "set", "every stage calling Amazon", "none", "the accounts with API health"
)
NOTIFICATIONS = KeyFamily(
    "notifications", (), "sorted set", "every stage, the projection", "none", "operator notifications"
)
NOTIFICATION_DEDUPE = KeyFamily(
    "notifications",
    ("dedupe", "<dedupe_key>"),
    "string",
    "every stage, the projection",
    "notification dedupe window",
    "set while a notification of the same cause is not repeated",
)
HEARTBEATS = KeyFamily(
    "heartbeats",
    (),
    "hash",
    "every stage worker",
    "none",
    "each stage worker's last heartbeat: <stage>|<worker> -> when (wall clock), for 'stage not reporting'",
)
ALERTS = KeyFamily(
    "alerts",
    ("active",),
    "hash",
    "status-projection (alerts)",
    "none",
    "firing, acknowledged or snoozed alerts: fingerprint -> the alert and who acted on it",
)
ALERTS_HISTORY = KeyFamily(
    "alerts",
    ("history",),
    "list",
    "status-projection (alerts)",
    "none (capped)",
    "resolved alerts, newest first",
)
ALERTS_BASELINE = KeyFamily(
    "alerts",
    ("baseline",),
    "hash",
    "status-projection (alerts)",
    "none",
    "what the alert rules last saw: dead letters per topic and when each last grew",
)
ALERTS_LOCK = KeyFamily(
    "alerts", ("lock",), "string", "status-projection (alerts)", "lock TTL", "one worker evaluates at a time"
)
DLQ_REPLAYED = KeyFamily(
    "dlq-replayed",
    ("<dlq_topic>",),
    "hash",
    "ordersync dlq replay",
    "none",
    "dead letters claimed or replayed, by partition and offset (each is replayed once)",
)
# --- dashboard accounts and the audit trail (ordersync.ops.users, ordersync.ops.audit) --------------------
USERS = KeyFamily(
    "users",
    (),
    "hash",
    "ordersync users (CLI), dashboard (admins)",
    "none",
    "dashboard accounts: user name -> role, Argon2id password hash, disabled, created and changed (when,"
    " by whom)",
    "not rebuilt (no password hash leaves Redis): keep Redis persistent and backed up, or add the accounts"
    " again with ordersync users add; ops.audit tells who they were",
)
SESSION = KeyFamily(
    "session",
    ("<session_hash>",),
    "hash",
    "dashboard (sign-in)",
    "dashboard.session_idle_s after the last request, never past dashboard.session_max_s",
    "a signed-in session, under the SHA-256 of its cookie: user, CSRF token, signed in at, last request at",
    "not rebuilt: people sign in again",
)
USER_SESSIONS = KeyFamily(
    "user-sessions",
    ("<user>",),
    "set",
    "dashboard (sign-in)",
    "dashboard.session_max_s",
    "the sessions of one user, ended together when the user's role or password changes or the user is"
    " disabled",
    "not rebuilt: people sign in again",
)
SIGN_IN_FAILURES = KeyFamily(
    "sign-in-failures",
    ("<user>",),
    "hash",
    "dashboard (sign-in)",
    "dashboard.sign_in_lock_s",
    "failed sign-ins of one user name (existing or not) in a row, and until when the name is locked",
    "not rebuilt: the count starts again",
)
OIDC_FLOW = KeyFamily(
    "oidc-flow",
    ("<state_hash>",),
    "string",
    "dashboard (single sign-on)",
    "dashboard.oidc.flow_max_age_s",
    "a single sign-on under way, under the SHA-256 of its state: nonce, PKCE verifier, the browser's"
    " binding, where to go after; read once at the provider's redirect",
    "not rebuilt: people sign in again",
)
AUDIT = KeyFamily(
    "{audit}",
    (),
    "stream",
    "dashboard, ordersync users (ordersync.ops.audit)",
    "none (capped at dashboard.audit_kept entries)",
    "the newest audit entries, for the audit page and ordersync audit list",
    "ops.audit (the whole trail)",
)
AUDIT_UNSENT = KeyFamily(
    "{audit}",
    ("unsent",),
    "hash",
    "dashboard, ordersync users (ordersync.ops.audit)",
    "none (emptied as Kafka acknowledges)",
    "audit entries not yet acknowledged by Kafka: entry id -> entry; the dashboard sends them to ops.audit"
    " and deletes them once acknowledged",
    "-",
)
READ_MODEL = KeyFamily(
    "{rm}",
    ("<generation>", "<detail>"),
    "several",
    "status-projection",
    "orders: status_model.retention_days after their last update; old generations deleted",
    "the status read model: facts and rows per order, grid indexes, dead-letter sets",
    "every topic (ordersync status-model rebuild)",
)
TRENDS_HOURLY = KeyFamily(
    "{rm}",
    ("<generation>", "trend", "<channel>", "<hour>"),
    "hash",
    "status-projection",
    "31 days past its UTC hour (ordersync.state.trends.KEEP)",
    "one UTC hour of a channel for the Trends page: orders downloaded, imported, confirmed (each order once,"
    " in the hour of its first such fact) and the write-back lag of the packages confirmed that hour (lag_n,"
    " lag_sum, lag_max, histogram lag_b0 to lag_b23)",
    "every topic (ordersync status-model rebuild: the series are part of the model's generation), for the"
    " hours the topics and the 31 days still hold",
)
TRENDS_FAILURES = KeyFamily(
    "{rm}",
    ("<generation>", "trend-fail", "<channel>", "<day>"),
    "hash",
    "status-projection",
    "31 days past its UTC day",
    "one UTC day's failures of a channel: import|<reason code>, write-back|<error code>, dead-letter|<stage>:"
    " <error type> -> count",
    "every topic (ordersync status-model rebuild), for the days the topics and the 31 days still hold",
)
TRENDS_CHANNELS = KeyFamily(
    "{rm}",
    ("<generation>", "trend-channels"),
    "set",
    "status-projection",
    "the generation's",
    "the channels with trend counts (what the Trends page reads)",
    "every topic (ordersync status-model rebuild)",
)
QUOTA_HOURLY = KeyFamily(
    "quota",
    ("{seller}", "<channel>", "<hour>"),
    "hash",
    "every stage calling Amazon (ordersync.state.health)",
    "31 days past its UTC hour",
    "SP-API calls of an account in one UTC hour, per operation: <operation>|calls, |throttled (answered"
    " 429), |waited (waited for a rate-limiter token)",
    "not rebuilt: Amazon's calls are not on Kafka; after a loss the Trends page's quota charts start again",
)
RATE_LIMIT = KeyFamily(
    "rl",
    ("{seller_app}", "<operation>"),
    "hash",
    "every stage calling Amazon",
    "idle buckets expire",
    "the GCRA bucket of one operation for a seller and application (rl-epoch, rl-srv, rl-mark, rlq, "
    "rlqx: its epoch, server identity and waiters)",
    "starts empty after a loss, by design",
)

#: Every family, in the order of the documentation's table.
CATALOGUE: tuple[KeyFamily, ...] = (
    CURSOR,
    DOWNLOADED,
    ENRICHED,
    ORDER_STATUS,
    IMPORTED,
    LAST_ENRICHED,
    IGNORED,
    SALES_ORDER,
    SALES_ORDER_CODE,
    SALES_ORDER_SEQUENCE,
    CHANNEL_REGISTRY,
    CHANNEL_REGISTRY_REVISION,
    LISTINGS,
    LISTINGS_ROWS,
    LISTINGS_INDEX,
    PRODUCT,
    PRODUCT_SKU,
    EASY_SHIP_PACKAGE,
    REQUESTED,
    INVOICE_SEEN,
    PACKAGE,
    PACKAGE_SEQUENCE,
    SHIPMENT,
    WRITEBACK_PACKAGES,
    WRITEBACK_RECENT,
    WRITEBACK_PENDING,
    WRITEBACK_INFLIGHT,
    WRITEBACK_LOCK,
    WRITEBACK_LAST_FEED,
    CANCEL_PENDING,
    CANCEL_INFLIGHT,
    CANCEL_LOCK,
    ACK_PENDING,
    ACK_INFLIGHT,
    ACK_LOCK,
    ACK_LAST_FEED,
    ESDOC_PENDING,
    ESDOC_INFLIGHT,
    ESDOC_LOCK,
    ESDOC_LAST_FEED,
    ESDOC_FETCH,
    INVENTORY_LATEST,
    INVENTORY_PENDING,
    INVENTORY_SENT,
    INVENTORY_ERRORS,
    INVENTORY_INFLIGHT,
    INVENTORY_LOCK,
    INVENTORY_FAST,
    INVENTORY_FBA,
    INVENTORY_LAST_FLUSH,
    DOWNLOAD_CLAIM,
    LEASE,
    GENERATION,
    COMMAND_PROGRESS,
    PARKED,
    TASK,
    TASKS,
    TASK_WAKEUPS,
    HEARTBEATS,
    ALERTS,
    ALERTS_HISTORY,
    ALERTS_BASELINE,
    ALERTS_LOCK,
    HEALTH_ACCOUNT,
    HEALTH_ACCOUNTS,
    NOTIFICATIONS,
    NOTIFICATION_DEDUPE,
    DLQ_REPLAYED,
    USERS,
    SESSION,
    USER_SESSIONS,
    SIGN_IN_FAILURES,
    OIDC_FLOW,
    AUDIT,
    AUDIT_UNSENT,
    READ_MODEL,
    TRENDS_HOURLY,
    TRENDS_FAILURES,
    TRENDS_CHANNELS,
    QUOTA_HOURLY,
    RATE_LIMIT,
)


def seller_family(name: str) -> KeyFamily:
    """The catalogued family ``<prefix>:<name>:{seller}`` (the feed engine's per-seller keys)."""
    for family in CATALOGUE:
        if family.name == name and family.parts == ("{seller}",):
            return family
    raise KeyError(f"no per-seller key family {name!r} in the catalogue")


#: Dedupe marks by the name the stages give them.
MARKS: dict[str, KeyFamily] = {f.name: f for f in (DOWNLOADED, ENRICHED, IMPORTED)}
#: An imported order's working state: gone when the order closes (ordersync.state.lifetime).
WORKING_STATE: tuple[KeyFamily, ...] = (
    ORDER_STATUS,
    SALES_ORDER,
    REQUESTED,
    INVOICE_SEEN,
    PACKAGE,
    PACKAGE_SEQUENCE,
    SHIPMENT,
    WRITEBACK_PACKAGES,
    EASY_SHIP_PACKAGE,
)


def markdown_table() -> str:
    """The catalogue as the Markdown table of ``docs/ops.md``."""
    lines = [
        "| Key | Type | Written by | Lives | Holds | Rebuilt from |",
        "|---|---|---|---|---|---|",
    ]
    for family in CATALOGUE:
        cells = (
            f"`{family.pattern}`",
            family.type,
            family.owner,
            family.ttl,
            family.holds,
            family.rebuilt_from,
        )
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(markdown_table())
