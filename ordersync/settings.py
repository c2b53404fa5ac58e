"""The one settings tree: environment variables with the prefix ``ORDERSYNC_``, nested with ``__``.

``ORDERSYNC_KAFKA__BOOTSTRAP=broker:9092`` sets ``settings.kafka.bootstrap``. Where a variable is not set
and ``ordersync dev up`` is running, the embedded broker's and Redis's addresses are taken from its state
file, so commands run after ``dev up`` find them without any export.

Secrets are ``SecretStr``: they print as ``**********`` and never reach a log line or an event.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

Region = Literal["na", "eu", "fe"]

#: Amazon's SP-API endpoints per region (docs: sp-api-endpoints).
AMAZON_REGION_ENDPOINTS: dict[str, str] = {
    "na": "https://sellingpartnerapi-na.amazon.com",
    "eu": "https://sellingpartnerapi-eu.amazon.com",
    "fe": "https://sellingpartnerapi-fe.amazon.com",
}


#: Seller Central per region: where a seller consents to a public application (docs: website
#: authorization workflow, "Authorization URI details").
SELLER_CENTRAL_URLS: dict[str, str] = {
    "na": "https://sellercentral.amazon.com",
    "eu": "https://sellercentral-europe.amazon.com",
    "fe": "https://sellercentral.amazon.co.jp",
}
#: The consent page's path under Seller Central (``?application_id=...&state=...[&version=beta]``).
CONSENT_PATH = "/apps/authorize/consent"


#: The prefix of every Redis key when ``ORDERSYNC_REDIS__KEY_PREFIX`` is not set (the key catalogue,
#: :mod:`ordersync.state.keys`, builds every key under it).
DEFAULT_PREFIX = "os"
#: The credentials given to the local SQS-protocol server of `ordersync dev up` (it checks none).
LOCAL_AWS_KEY = "ordersync-local"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(_Frozen):
    bootstrap: str = Field("127.0.0.1:9092", description="Comma-separated host:port list of Kafka brokers.")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="SSL: TLS; SASL_SSL: SASL (e.g. SCRAM) over TLS, for production clusters."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="SASL mechanism with SASL_* protocols (unset: PLAIN)."
    )
    sasl_username: str | None = Field(None, description="SASL user name.")
    sasl_password: SecretStr | None = Field(None, description="SASL password.")
    ssl_cafile: Path | None = Field(None, description="CA bundle for TLS to the brokers.")
    # Mutual TLS: brokers that authenticate clients by certificate (ssl.client.auth=required).
    ssl_certfile: Path | None = Field(None, description="Client certificate (PEM) for mutual TLS.")
    ssl_keyfile: Path | None = Field(None, description="Private key (PEM) of ssl_certfile.")
    ssl_key_password: SecretStr | None = Field(None, description="Password of ssl_keyfile, if encrypted.")
    # Short group timeouts: a stage restarted after a crash is back in seconds, and the embedded
    # broker needs them (its defaults make every group join take about 30 s).
    session_timeout_s: float = 6.0
    rebalance_timeout_s: float = 6.0
    heartbeat_interval_s: float = 1.0
    # How long a fetch waits for data: per-hop latency follows it on the embedded broker.
    fetch_max_wait_ms: int = Field(50, ge=1, le=1500)


class RedisSettings(_Frozen):
    url: str = Field("redis://127.0.0.1:6379/0", description="redis:// or rediss:// URL (no password here).")
    password: SecretStr | None = Field(None, description="Redis AUTH password, kept out of the URL.")
    username: str | None = Field(None, description="Redis ACL user name (unset: the default user).")
    key_prefix: str = Field(
        DEFAULT_PREFIX, description="Prefix of every key ordersync writes, to share a Redis."
    )
    socket_timeout_s: float = 2.0
    # One pool per client (the stage's, the rate limiter's): a command waits for a free connection
    # instead of failing, so a burst of work (a thousand channels polled) queues rather than crashes.
    max_connections: int = Field(
        64,
        ge=1,
        description="Connections each Redis client of a process may open; more commands at once wait for"
        " one (keep processes x clients x this under Redis's maxclients).",
    )
    pool_timeout_s: float = Field(
        20.0,
        gt=0,
        description="Longest wait for a free pooled connection; past it the command fails as Redis"
        " unavailable (the stage stalls and tries again) rather than waiting forever.",
    )
    # TLS options apply to rediss:// URLs only; without ssl_ca_certs the system's CAs verify Redis.
    ssl_ca_certs: Path | None = Field(None, description="CA bundle for Redis's certificate (rediss://).")
    ssl_certfile: Path | None = Field(None, description="Client certificate (PEM) for mutual TLS to Redis.")
    ssl_keyfile: Path | None = Field(None, description="Private key (PEM) of ssl_certfile.")

    @field_validator("url")
    @classmethod
    def _no_tls_options_in_the_url(cls, url: str) -> str:
        # redis-py lets a URL's query override the TLS settings: ?ssl_cert_reqs=none would silently
        # switch certificate checks off. TLS is configured by the ssl_* settings only.
        options = [name for name in parse_qs(urlsplit(url).query) if name.lower().startswith("ssl")]
        if options:
            raise ValueError(
                f"the Redis URL carries TLS options ({', '.join(options)}); set them with"
                " ORDERSYNC_REDIS__SSL_CA_CERTS / __SSL_CERTFILE / __SSL_KEYFILE instead (certificates are"
                " always verified)"
            )
        return url


class AuthorizationSettings(_Frozen):
    """Amazon's website authorization workflow of a public application: the seller consents in Seller
    Central, Amazon redirects the browser to ``redirect_uri`` with an authorization code, and the code is
    exchanged at LWA for the seller's refresh token (:mod:`ordersync.amazon.authorization`)."""

    application_id: str | None = Field(
        None, description="The application's id in Amazon's Solution Provider Portal (amzn1.sp.solution...)."
    )
    client_id: str | None = Field(
        None, description="The application's LWA client id: exchanges codes, stored with new channels."
    )
    client_secret: SecretStr | None = Field(None, description="The application's LWA client secret.")
    seller_central_url: str | None = Field(
        None,
        description="Seller Central base URL for every region (e.g. the simulator); unset: Amazon's, per"
        " region.",
    )
    draft: bool = Field(
        False, description="The application is a draft: consent URIs carry version=beta (Amazon: MD1000)."
    )
    redirect_uri: str | None = Field(
        None, description="The dashboard's callback URL, as registered with Amazon for the application."
    )
    state_secret: SecretStr | None = Field(
        None, description="Key signing the consent's state parameter; unset: the caller passes one."
    )
    state_max_age_s: int = Field(
        900, gt=0, description="A state older than this is refused when Amazon's redirect brings it back."
    )

    def seller_central_for(self, region: Region) -> str:
        """Seller Central's base URL for ``region`` (``seller_central_url`` when set)."""
        return (self.seller_central_url or SELLER_CENTRAL_URLS[region]).rstrip("/")

    def consent_base_for(self, region: Region) -> str:
        """The consent page of ``region``'s Seller Central, without its query."""
        return self.seller_central_for(region) + CONSENT_PATH


class AmazonSettings(_Frozen):
    endpoint: str | None = Field(
        None,
        description="SP-API base URL for every region (e.g. the simulator); unset: Amazon's, per region.",
    )
    lwa_endpoint: str = Field("https://api.amazon.com/auth/o2/token", description="LWA token endpoint.")
    application_id: str = Field(
        "ordersync", description="Names the application in rate-limit keys: Amazon limits per seller+app."
    )
    user_agent_app: str = Field(
        "ordersync",
        min_length=1,
        max_length=100,
        description="Application name in the User-Agent header of every SP-API and LWA request"
        " (AppName/AppVersion (Language=Python/3.x; Platform=...), as Amazon asks).",
    )
    request_timeout_s: float = Field(30.0, gt=0)
    time_scale: float = Field(
        1.0,
        gt=0,
        description="Multiplies every rate Amazon grants. 1 for Amazon; the simulator's --time-scale for it.",
    )
    authorization: AuthorizationSettings = AuthorizationSettings()

    def endpoint_for(self, region: Region) -> str:
        return (self.endpoint or AMAZON_REGION_ENDPOINTS[region]).rstrip("/")


class AwsSettings(_Frozen):
    """The AWS services ordersync reads: Amazon SQS (the queue Amazon sends ORDER_CHANGE notifications to).
    Unset credentials: the AWS SDK's own chain (environment, profile, the container's or instance's
    role)."""

    region: str = Field("us-east-1", description="AWS region of the queue.")
    endpoint_url: str | None = Field(
        None, description="SQS endpoint; unset: AWS's. `ordersync dev up` sets a local SQS-protocol server."
    )
    access_key_id: SecretStr | None = Field(None, description="AWS access key id (unset: the SDK's chain).")
    secret_access_key: SecretStr | None = Field(None, description="AWS secret access key.")


class NotificationsSettings(_Frozen):
    """``ordersync run order-notifications``: Amazon's ORDER_CHANGE notifications from an SQS queue."""

    queue_url: str | None = Field(
        None,
        description="URL of the standard SQS queue Amazon sends ORDER_CHANGE to (one queue may carry many"
        " sellers); unset: the stage has nothing to read and channels are polled at the budget's pace.",
    )
    queue_name: str = Field(
        "ordersync-order-change",
        description="The queue `ordersync notifications setup` creates when queue_url is unset.",
    )
    wait_time_s: int = Field(20, ge=0, le=20, description="SQS long-poll wait per receive (AWS: at most 20).")
    max_messages: int = Field(10, ge=1, le=10, description="Messages per receive (AWS: at most 10).")
    visibility_timeout_s: int = Field(
        120,
        ge=10,
        le=43200,
        description="How long a received message stays hidden: it must outlast a getOrder under throttling"
        " and the Kafka send; a message not deleted by then is delivered again (at-least-once).",
    )
    silence_s: float = Field(
        1800.0,
        gt=0,
        description="No notification for this long while polling still finds changed orders: notifications"
        " count as stopped, the channel polls at the budget's pace and the dashboard says so.",
    )
    subscription_check_s: float = Field(
        3600.0,
        gt=0,
        description="How often (Amazon's seconds) order-notifications asks Amazon (getSubscription,"
        " getDestinations) whether each channel's ORDER_CHANGE subscription still sends to the queue it"
        " reads; a missing or misdirected one counts as notifications stopped at once.",
    )


class PrivacySettings(_Frozen):
    """Buyers' personal data: sealed (AES-GCM) with a data key per seller and day of delivery; each key
    wrapped by a key-encryption key (a local one, or AWS KMS) and kept in an S3 bucket apart from the
    data; destroyed 30 days after its day (crypto-shredding: every copy sealed with it, in Kafka, Redis
    or a backup, becomes unreadable at once)."""

    key_bucket: str = Field(
        "ordersync-personal-data-keys",
        description="S3 bucket of the wrapped data keys (one object each). Keep versioning off: a destroyed"
        " key must be gone, not a previous version.",
    )
    kek: SecretStr | None = Field(
        None,
        description="The local key-encryption key, 32 bytes in base64 (`ordersync privacy new-kek`);"
        " unset: kms_key_id wraps the keys.",
    )
    kek_id: str = Field(
        "local-1",
        min_length=1,
        max_length=64,
        description="The local key-encryption key's name, recorded with each key it wraps.",
    )
    previous_keks: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Retired local key-encryption keys by name: still unwrap keys they wrapped until"
        " `ordersync privacy rewrap` has wrapped every key with the current one.",
    )
    kms_key_id: str | None = Field(
        None, description="AWS KMS key (id, ARN or alias) wrapping the data keys instead of a local key."
    )

    @property
    def wraps_keys(self) -> bool:
        """Whether a key-encryption key is configured (local or KMS): data keys can be made and opened."""
        return self.kek is not None or bool(self.kms_key_id)


class SecretsSettings(_Frozen):
    """The secret store (``ordersync secrets``, ordersync/secret_store.py): channel credentials such as
    the LWA refresh token a channel's ``{store: NAME}`` names, one S3 object each, every value
    encrypted (AES-GCM, its name as associated data) by a key-encryption key: a local one, or AWS KMS.
    When neither ``kek`` nor ``kms_key_id`` is set, the privacy key-encryption keys (``privacy.kek``,
    ``privacy.kek_id``, ``privacy.previous_keks``, ``privacy.kms_key_id``) wrap the secrets instead (so
    ``ordersync dev up`` and the demo need nothing more); with none of them the store refuses."""

    bucket: str = Field(
        "ordersync-secrets",
        min_length=3,
        description="S3 bucket of the encrypted secrets (secrets/<name>.json), created if missing.",
    )
    kek: SecretStr | None = Field(
        None,
        description="The local key-encryption key of the secrets, 32 bytes in base64 (`ordersync privacy"
        " new-kek` prints one); unset: kms_key_id, else the privacy key-encryption keys.",
    )
    kek_id: str = Field(
        "local-1",
        min_length=1,
        max_length=64,
        description="The local key-encryption key's name, recorded with each secret it encrypts.",
    )
    previous_keks: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Retired local key-encryption keys by name: still decrypt the secrets they encrypted"
        " until `ordersync secrets rewrap` has encrypted every secret with the current one.",
    )
    kms_key_id: str | None = Field(
        None, description="AWS KMS key (id, ARN or alias) encrypting the secrets instead of a local key."
    )

    @property
    def wraps_keys(self) -> bool:
        """Whether the secrets have a key-encryption key of their own (else the privacy ones serve)."""
        return self.kek is not None or bool(self.kms_key_id)


class FeedTypeLimit(_Frozen):
    """A feed type's own token bucket, checked together with createFeed's."""

    rate: float = Field(gt=0, description="Feeds of this type per second.")
    burst: int = Field(ge=1)


def _default_lane_reserves() -> dict[str, int]:
    return {"default": 0, "packing": 0, "inventory": 1, "acknowledgement": 4}


def _default_feed_type_limits() -> dict[str, FeedTypeLimit]:
    return {"JSON_LISTINGS_FEED": FeedTypeLimit(rate=5 / 300, burst=5)}


class RateLimitSettings(_Frozen):
    acquire_timeout_s: float = Field(600.0, gt=0, description="Longest wait for one Amazon token.")
    send_deadline_s: float = Field(
        2.0, gt=0, description="A granted token must be used within this time, or the request is dropped."
    )
    lane_reserves: dict[str, int] = Field(
        default_factory=_default_lane_reserves,
        description="Tokens each lane must leave in a bucket it shares: shipments (packing) first, then"
        " inventory beyond its reserved feed, then order acknowledgements (acknowledgement).",
    )
    inventory_lane: str = Field("inventory", description="The lane of the inventory feeds.")
    inventory_reserved_feeds: int = Field(
        1, ge=0, description="createFeed tokens reserved for the inventory lane per flush interval (0: none)."
    )
    inventory_flush_interval_s: float = Field(3600.0, gt=0, description="The inventory flush interval.")
    inventory_reservation_lead_s: float = Field(
        600.0, ge=0, description="The reservation starts this long before each flush interval begins."
    )
    feed_type_limits_enabled: bool = Field(True, description="Check feed types' own limits with createFeed.")
    feed_type_limits: dict[str, FeedTypeLimit] = Field(
        default_factory=_default_feed_type_limits,
        description="Feed types with their own limit (Amazon: JSON_LISTINGS_FEED 5 per 5 minutes).",
    )
    failover_quarantine: bool = Field(
        True, description="Treat every bucket as empty when Redis turns out to be another server (failover)."
    )
    wait_replicas: int = Field(
        0, ge=0, description="Replicas that must acknowledge a grant (Redis WAIT) before it is used; 0: off."
    )
    wait_timeout_ms: int = Field(50, ge=0, description="How long WAIT waits for the replicas.")
    plan_margin: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Share of every operation's rate left unused (0.1: grant 90 %), for accounts whose"
        " dynamic usage plan is below Amazon's documented one before its first answer says so.",
    )
    plan_margins: dict[str, float] = Field(
        default_factory=dict,
        description="The margin per operation (createFeed=0.1), overriding plan_margin for it.",
    )


class DownloadSettings(_Frozen):
    poll_interval_s: float = Field(60.0, gt=0, description="Pause between download rounds per channel.")
    max_concurrent_channels: int = Field(
        64,
        ge=1,
        description="Channels whose download round runs at once (Amazon requests, Redis, the CPU); the"
        " others wait their turn. A round waiting for its seller's quota holds its turn meanwhile (at a"
        " first start with many channels, the first windows take a few minutes per this many channels).",
    )
    overlap_s: float = Field(900.0, ge=0, description="Each round re-reads this much before the cursor.")
    initial_lookback_s: float = Field(7 * 86400.0, gt=0, description="First run: how far back to look.")
    catch_up_interval_s: float = Field(3600.0, gt=0, description="How often to re-scan the last 48 hours.")
    catch_up_window_s: float = Field(
        49 * 3600.0,
        gt=0,
        description="The rolling re-scan's window: 48 hours, plus an interval, so that a change Amazon "
        "shows 48 hours late is still inside the next run's window.",
    )
    fba_catch_up_interval_s: float = Field(
        6 * 3600.0, gt=0, description="How often to re-scan orders fulfilled by Amazon (reported late)."
    )
    fba_catch_up_window_s: float = Field(7 * 86400.0, gt=0, description="The FBA re-scan's window.")
    reconciliation_interval_s: float = Field(
        86400.0, gt=0, description="How often to list the previous day's orders and emit any not seen."
    )
    # The listing budget (searchOrders: about 20 calls an hour): how the poll and the catch-ups share it.
    budget_share: float = Field(
        0.9,
        gt=0,
        le=1,
        description="Share of the listing operation's rate the download plans to spend; the rest absorbs"
        " page tokens refused and restarted scans.",
    )
    notified_budget_share: float = Field(
        0.45,
        gt=0,
        le=1,
        description="The same while Amazon's ORDER_CHANGE notifications flow (the poll is their backup).",
    )
    poll_share: float = Field(
        0.6,
        gt=0,
        le=1,
        description="Share of the planned budget the poll comes first for; catch-ups get the rest.",
    )
    notified_poll_interval_s: float = Field(
        1800.0, gt=0, description="Poll interval while notifications flow (Amazon's seconds)."
    )
    max_poll_interval_s: float = Field(
        3600.0,
        gt=0,
        description="The poll never waits longer than this (Amazon's seconds), even when its share of the"
        " budget cannot pay for the seller's change rate.",
    )
    min_overlap_s: float = Field(
        120.0, ge=0, description="The overlap the poll may be cut to when the budget is short."
    )
    max_catch_up_interval_s: float = Field(
        7 * 86400.0,
        gt=0,
        description="A catch-up the budget pays for only less often than this is skipped (Amazon's seconds).",
    )
    # Reconciliation from Amazon's order report (GET_FLAT_FILE_ALL_ORDERS_DATA_BY_LAST_UPDATE_GENERAL):
    # a quota of its own, so it does not depend on the listing budget. Amazon's seconds.
    report_reconciliation: bool = Field(
        True, description="Reconcile each channel from Amazon's order report."
    )
    report_interval_s: float = Field(86400.0, gt=0, description="How often each channel is reconciled.")
    report_lag_s: float = Field(
        3600.0, ge=0, description="The report ends this long ago: Amazon's report is up to 30 minutes behind."
    )
    report_overlap_s: float = Field(
        3600.0, ge=0, description="Each report begins this long before the last ended."
    )
    report_first_window_s: float = Field(2 * 86400.0, gt=0, description="The first report's window.")
    report_max_window_s: float = Field(
        7 * 86400.0, gt=0, description="The longest window one report covers (after a long stop)."
    )
    report_poll_s: float = Field(
        60.0, gt=0, description="getReport every this long while the report is made."
    )
    report_timeout_s: float = Field(
        4 * 3600.0, gt=0, description="A report not done after this long is given up until the next run."
    )
    report_check_s: float = Field(300.0, gt=0, description="How often the task looks whether a run is due.")


class WriteBackSettings(_Frozen):
    max_attempts: int = Field(5, ge=1)
    retry_backoff_s: float = Field(30.0, ge=0)
    mode: Literal["feed", "confirm", "auto"] = Field(
        "auto",
        description="feed: one POST_ORDER_FULFILLMENT_DATA feed per seller with every pending shipment;"
        " confirm: confirmShipment per package; auto: confirm while the backlog is small, feed when large."
        " A channel's writeback_mode overrides it.",
    )
    auto_feed_threshold: int = Field(
        20, ge=0, description="auto: shipments of a seller within auto_window_s above which they go by feed."
    )
    auto_window_s: float = Field(60.0, gt=0, description="auto: the window the backlog is counted in.")
    feed_flush_interval_s: float = Field(
        120.0, gt=0, description="At most how often a seller's pending shipments are sent in a feed."
    )
    feed_poll_interval_s: float = Field(30.0, gt=0, description="getFeed polling interval.")
    feed_timeout_s: float = Field(
        3600.0, gt=0, description="A feed not done after this long is stalled: its outcome is unknown."
    )
    feed_max_messages: int = Field(10_000, ge=1, le=10_000, description="Messages per fulfillment feed.")
    max_concurrent_channels: int = Field(
        16,
        ge=1,
        description="Channels whose write-back feed round runs at once; the others wait their turn. Each"
        " channel has its own loop, so a seller waiting for its createFeed token holds up no other seller"
        " beyond its turn.",
    )
    acknowledge_flush_interval_s: float = Field(
        1200.0,
        gt=0,
        description="At most how often a seller's imported orders are acknowledged in one feed (channels"
        " with acknowledge_orders; Amazon advises one feed of a type per 20 minutes at most).",
    )
    ship_by_direct: bool = Field(
        True,
        description="feed and auto modes: a package whose order's latest ship date would pass before a"
        " feed could confirm it (the next flush, plus feed_expected_s, plus ship_by_margin_s) goes by"
        " confirmShipment at once, and one inside a feed still not done within ship_by_margin_s of its"
        " deadline is read on Amazon and confirmed directly. A late confirmation counts against the"
        " seller's Late Shipment Rate.",
    )
    feed_expected_s: float = Field(
        900.0, ge=0, description="How long Amazon usually takes to process a fulfillment feed."
    )
    ship_by_margin_s: float = Field(
        1800.0, ge=0, description="Safety margin before an order's latest ship date (ship_by_direct)."
    )
    easy_ship_bulk_window_s: float = Field(
        1.0,
        ge=0,
        description="Easy Ship packages of one seller and marketplace whose slot is chosen within this"
        " many (wall) seconds of each other are scheduled in one createScheduledPackageBulk call instead"
        " of one createScheduledPackage each; 0: one call per package.",
    )
    easy_ship_bulk_max: int = Field(
        50, ge=2, le=100, description="Packages per createScheduledPackageBulk call (Amazon: 100 at most)."
    )


class InvoiceSettings(_Frozen):
    """The invoice-issued stage."""

    sales_order_wait_s: float = Field(
        10.0,
        ge=0,
        description="How long an invoice waits in line for its order's sales order (imported a moment ago,"
        " or stored late after an outage) before it is parked on the redrive tiers; it is dead-lettered as"
        " never imported at the redrive deadline.",
    )


#: How many redrive tiers there are: the catalogue has one topic per tier.
REDRIVE_TIER_COUNT = 3


class RedriveSettings(_Frozen):
    """Retry tiers: a record whose transient fault (a timeout, Amazon's 5xx, auth refused for a while)
    outlived the in-line retries waits on a redrive topic and is tried again later, with growing delays,
    until ``deadline_s`` after it first failed; only then is it dead-lettered for a person."""

    delays_s: tuple[float, ...] = Field(
        (60.0, 900.0, 7200.0),
        min_length=REDRIVE_TIER_COUNT,
        max_length=REDRIVE_TIER_COUNT,
        description="Delay of each redrive tier: the first retry waits the first, the second the second,"
        " every later one the last (1 minute, 15 minutes, 2 hours).",
    )
    deadline_s: float = Field(
        86400.0,
        gt=0,
        description="A record is retried until this long after its first failure (the last try may come one"
        " tier delay later), then dead-lettered with its last error.",
    )

    @field_validator("delays_s")
    @classmethod
    def _growing(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(delay <= 0 for delay in value) or list(value) != sorted(value):
            raise ValueError("redrive delays must be positive and never shrink from one tier to the next")
        return value


class InventorySettings(_Frozen):
    """The inventory producer; it flushes every ``ratelimit.inventory_flush_interval_s`` (the interval of
    its reserved createFeed token)."""

    max_messages: int = Field(25_000, ge=1, le=25_000, description="Messages per JSON_LISTINGS_FEED.")
    feed_poll_interval_s: float = Field(30.0, gt=0, description="getFeed polling interval.")
    feed_timeout_s: float = Field(3600.0, gt=0, description="Stop polling a feed after this long.")
    fast_threshold: int = Field(
        0,
        ge=-1,
        description="A level that drops to this quantity or below (after the channel's buffer) goes to"
        " Amazon at once by patchListingsItem instead of waiting for the next feed (oversells hurt"
        " most); -1: off.",
    )
    fast_interval_s: float = Field(
        10.0, gt=0, description="How often the urgent levels are sent (patchListingsItem, 5/s per seller)."
    )
    max_concurrent_channels: int = Field(
        16,
        ge=1,
        description="Channels whose feed round (and, apart, urgent round) runs at once; the others wait"
        " their turn.",
    )


class StageSettings(_Frozen):
    channel_refresh_s: float = Field(
        3.0,
        gt=0,
        description="How often a stage looks for channels added or changed in the channel registry (one"
        " Redis GET): a change reaches every stage within this, without a restart.",
    )
    partitions: int = Field(
        12,
        ge=1,
        description="Partitions of every catalogue topic at creation: the most workers a stage can use."
        " 12 divides evenly among 1, 2, 3, 4, 6 and 12 workers (docs/deploy.md, Scaling).",
    )
    replication_factor: int = Field(1, ge=1)
    concurrency: int = Field(
        8,
        ge=1,
        description="Records of different keys (orders, SKUs, channels) one worker handles at once per"
        " topic; those of one key always one after another, in their order. 1: one record at a time.",
    )
    web_port: int | None = Field(None, description="Port of the stage's /metrics and health endpoints.")
    heartbeat_s: float = Field(
        15.0, gt=0, description="How often each stage worker records that it is alive (wall seconds)."
    )
    generation_check_s: float = Field(
        10.0,
        gt=0,
        description="How often a stage that rebuilds state from Kafka checks that Redis still holds it.",
    )
    web_host: str = Field(
        "0.0.0.0",
        description="Address the stage's /metrics /healthz /readyz server listens on (with web_port).",
    )
    worker_id: str | None = Field(
        None,
        description="This worker's name on the leases of per-channel jobs (order polling, inventory feeds);"
        " unset: the host name. A worker restarted under the same name takes its leases back at once.",
    )
    lease_ttl_s: float = Field(
        120.0,
        gt=0,
        description="How long a worker's lease on a per-channel job lasts unrenewed: a standby replica takes"
        " the job over this long after its holder stopped.",
    )


class HealthSettings(_Frozen):
    """How the per-account API health (Green/Yellow/Red/None) is judged from recorded SP-API calls."""

    window_s: float = Field(900.0, gt=0, description="Calls of this last period are judged (15 minutes).")
    yellow_error_rate: float = Field(
        0.05, ge=0, le=1, description="Yellow when more than this share of calls in the window failed."
    )
    red_error_rate: float = Field(
        0.5, ge=0, le=1, description="Red when more than this share of calls in the window failed."
    )
    min_calls: int = Field(
        3,
        ge=1,
        description="Error rates are judged only from this many calls on (fewer: each failure Yellow).",
    )
    stale_after_s: float = Field(600.0, gt=0, description="None when no call was recorded for this long.")
    throttled_yellow_rate: float = Field(
        0.2,
        ge=0,
        le=1,
        description="Sustained throttling: Yellow when more than this share of calls got 429.",
    )
    throttled_min_minutes: int = Field(
        3,
        ge=1,
        description="Sustained throttling: 429s in at least this many distinct minutes of the window.",
    )
    notifications_kept: int = Field(1000, ge=1, description="Notifications kept, newest first.")
    notification_dedupe_s: float = Field(
        3600.0, ge=0, description="A repeated notification is held back this long."
    )
    ship_by_lead_s: float = Field(
        14400.0,
        gt=0,
        description=(
            "An order awaiting shipment is at risk of a late shipment this long (Amazon's seconds) before "
            "its latest ship date: the grid's at-risk filter and the ship-by notification (4 hours)."
        ),
    )


class ProductSettings(_Frozen):
    """Product data from Amazon's Catalog Items API (``ordersync products show``), kept in Redis."""

    cache_ttl_s: float = Field(
        7 * 86400.0,
        ge=60,
        description="How long a product's catalog data (title, image, dimensions, weight) is kept before"
        " it is read from Amazon again (getCatalogItem, 2 a second per seller).",
    )


#: Amazon's Easy Ship document types (EasyshipDocuments.xsd): the shipping label, the tax invoice, and the
#: warranty (only for items scheduled with serial numbers).
EasyShipDocumentType = Literal["ShippingLabel", "Invoice", "Warranty"]


class DocumentSettings(_Frozen):
    """Easy Ship documents (shipping label, tax invoice, warranty): asked for with the
    POST_EASYSHIP_DOCUMENTS feed, downloaded once Amazon made them, and stored as PDFs in an S3 bucket
    (``aws``'s endpoint and credentials), or a local directory. Events carry where they are, never the
    PDF."""

    types: tuple[EasyShipDocumentType, ...] = Field(
        ("ShippingLabel", "Invoice"),
        min_length=1,
        description="The documents asked for each scheduled package (Warranty only where the items were"
        " scheduled with serial numbers).",
    )
    bucket: str = Field("ordersync-documents", min_length=3, description="S3 bucket of the PDFs.")
    prefix: str = Field(
        "easyship/", description="Key prefix of the PDFs: <prefix><seller>/<order>/<reference>.pdf."
    )
    server_side_encryption: Literal["AES256", "aws:kms"] = Field(
        "AES256", description="S3 server-side encryption of every PDF (they hold buyers' addresses)."
    )
    kms_key_id: str | None = Field(None, description="aws:kms: the KMS key (unset: the bucket's default).")
    directory: Path | None = Field(
        None, description="Store the PDFs in this local directory instead of S3 (dev without an S3 server)."
    )
    flush_interval_s: float = Field(
        300.0,
        gt=0,
        description="At most how often a seller's scheduled packages are asked for their documents in one"
        " feed (each feed spends a createFeed token shared with shipments and stock).",
    )
    max_messages: int = Field(500, ge=1, le=10_000, description="Packages per POST_EASYSHIP_DOCUMENTS feed.")


class OrderStateSettings(_Frozen):
    """How long the stages keep an order's working state in Redis (its sales order, invoices counted,
    package numbers, write-back state, status fields): until the order's life ends, not a fixed horizon.
    Its dedupe marks and sales-order code stay 120 days (Amazon's order-change horizon), so a later
    version of a closed order is never imported again."""

    after_delivery_days: int = Field(
        30,
        ge=1,
        le=3650,
        description="Days after delivery (Amazon's delivery promise, as the privacy rules reckon it, or the"
        " channel's longer personal-data retention) an imported order's working state is kept; then it is"
        " closed: later invoices and shipment requests for it are dead-lettered with that reason.",
    )
    after_last_write_days: int = Field(
        7,
        ge=1,
        le=3650,
        description="At least this many days after it was last written an order's working state is kept,"
        " whatever its delivery date: an order still being invoiced or written back never loses it.",
    )


class StatusModelSettings(_Frozen):
    """The status read model (the status projection folds it; the dashboard and ``ordersync orders`` read
    it)."""

    # The orders' dedupe marks' horizon (ordersync.state.keys.ORDER_STATE_TTL_S, not imported: the
    # settings sit below the state package; a test keeps the two equal), so the model lists every order
    # the stages still recognise.
    retention_days: int = Field(
        120,
        ge=1,
        le=36_500,
        description="An order leaves the status model this many days (Amazon's time) after its last update;"
        " the status projection removes such orders every hour. A rebuild folds older orders back from the"
        " topics until the next removal. At most 36500 (a century: in effect, kept).",
    )


def _default_dashboard_page_sizes() -> tuple[int, ...]:
    return (50, 100, 500)


class AlertSettings(_Frozen):
    """Alerts that reach people: rules evaluated by the status-projection stage every ``interval_s`` on
    what the stages record in Redis (API status, feeds FATAL, dead letters, orders at risk of shipping
    late, stage heartbeats, credentials nearing expiry), delivered to the dashboard's notifications and,
    where configured, to webhooks (Slack-compatible) and by e-mail; acknowledged or snoozed by people."""

    enabled: bool = Field(True, description="Evaluate the alert rules.")
    interval_s: float = Field(30.0, gt=0, description="How often the rules are evaluated (wall seconds).")
    repeat_s: float = Field(
        4 * 3600.0,
        ge=0,
        description="A firing alert nobody acknowledged is delivered again this often (0: never again).",
    )
    webhook_urls: tuple[SecretStr, ...] = Field(
        (),
        description='Webhooks each alert is POSTed to as JSON ({"text": ..., "alert": {...}}: Slack\'s'
        " incoming webhooks read the text). Secret: such URLs carry their token.",
    )
    smtp_host: str | None = Field(None, description="SMTP server for e-mail alerts; unset: no e-mail.")
    smtp_port: int = Field(587, ge=1, le=65535)
    smtp_starttls: bool = Field(True, description="Upgrade the SMTP connection with STARTTLS.")
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    email_from: str = Field("ordersync@localhost", description="Sender of alert e-mails.")
    email_to: tuple[str, ...] = Field((), description="Recipients of alert e-mails.")
    dashboard_url: str | None = Field(None, description="The dashboard's address, linked from alerts.")
    stage_silent_s: float = Field(
        120.0, gt=0, description="A stage worker whose heartbeat is older than this is not reporting."
    )
    dead_letters_window_s: float = Field(
        3600.0, gt=0, description="Dead letters added within this window raise 'dead letters growing'."
    )
    credentials_warn_days: int = Field(
        30, ge=0, description="Warn this many days before a channel's LWA client secret expires."
    )
    send_timeout_s: float = Field(10.0, gt=0, description="A webhook or SMTP delivery gives up after this.")


#: The dashboard's roles (ordersync.schemas.events.DashboardRole; not imported: settings import nothing
#: of ordersync).
_DashboardRole = Literal["viewer", "operator", "admin"]


class OidcSettings(_Frozen):
    """Single sign-on with an OpenID Connect provider (authorization code flow with PKCE; the dashboard's
    own sessions follow): unset ``issuer``, no single sign-on (ordersync.dashboard.oidc)."""

    issuer: str | None = Field(
        None,
        description="The provider's issuer URL (its /.well-known/openid-configuration is read); unset: no"
        " single sign-on.",
    )
    provider_name: str = Field(
        "single sign-on", max_length=64, description='The login page\'s button: "Sign in with <this>".'
    )
    client_id: str | None = Field(None, description="The dashboard's client id at the provider.")
    client_secret: SecretStr | None = Field(
        None, description="The client's secret; unset: a public client (PKCE only)."
    )
    scopes: str = Field("openid email profile", description="Scopes asked for, space-separated.")
    redirect_uri: str | None = Field(
        None,
        description="The callback URL registered at the provider; unset: this dashboard's"
        " /login/oidc/callback as the browser reached it.",
    )
    username_claim: Literal["email", "preferred_username"] = Field(
        "email", description="The ID token's claim that names the ordersync user."
    )
    roles_claim: str | None = Field(
        None, description="The ID token's claim listing the user's groups or roles (e.g. groups)."
    )
    role_map: dict[str, _DashboardRole] = Field(
        default_factory=dict,
        description="A group or role of roles_claim -> the ordersync role it gives (any case; the highest"
        " wins), as JSON.",
    )
    default_role: _DashboardRole | None = Field(
        None, description="The role of a user none of whose groups is mapped; unset: such a user is refused."
    )
    auto_create: bool = Field(
        True, description="Make the account of a user's first single sign-on; false: an admin adds it first."
    )
    flow_max_age_s: int = Field(
        600, ge=30, le=3600, description="A sign-in must come back from the provider within this long."
    )

    @model_validator(mode="after")
    def _client_with_issuer(self) -> OidcSettings:
        if self.issuer is not None and not self.client_id:
            raise ValueError("dashboard.oidc.client_id is needed with dashboard.oidc.issuer")
        if self.issuer is not None and "openid" not in self.scopes.split():
            raise ValueError("dashboard.oidc.scopes must include openid")
        return self


class DashboardSettings(_Frozen):
    """``ordersync dashboard``: the operators' web page and its JSON API."""

    # Loopback by default: the page can publish operator actions and shows order data, so it is
    # reachable from the network only when someone chooses it (containers: HOST=0.0.0.0, with tokens).
    host: str = Field("127.0.0.1", description="Listen address; 0.0.0.0 in a container.")
    port: int = Field(8080, ge=1, le=65535, description="Listen port.")
    operator_token: SecretStr | None = Field(
        None,
        description="Token an operator gives for actions (Ignore, Retry ...); unset: actions are disabled.",
    )
    read_token: SecretStr | None = Field(
        None, description="When set, reading the page and the JSON API needs this token too (or operator's)."
    )
    page_sizes: tuple[PositiveInt, ...] = Field(
        default_factory=_default_dashboard_page_sizes,
        min_length=1,
        description="Page sizes offered in the orders grid.",
    )
    max_page_size: int = Field(500, ge=1, le=5000, description="Largest page the JSON API returns.")
    max_action_orders: int = Field(
        1000, ge=1, le=1000, description="Most orders one action may name (one ops.commands event a channel)."
    )
    cookie_secure: bool = Field(
        False, description="Mark the sign-in cookies Secure (set it when served over HTTPS)."
    )
    session_idle_s: int = Field(
        1800, ge=60, le=86400, description="A user's session ends after this long without a request."
    )
    session_max_s: int = Field(
        43200,
        ge=300,
        le=30 * 86400,
        description="A user's session ends this long after signing in, however busy.",
    )
    sign_in_failures: int = Field(
        5, ge=1, le=100, description="Failed sign-ins in a row that lock a user name for sign_in_lock_s."
    )
    sign_in_lock_s: int = Field(
        300, ge=1, le=86400, description="How long a user name stays locked after too many failed sign-ins."
    )
    audit_kept: int = Field(
        20000,
        ge=100,
        le=1_000_000,
        description="Newest audit entries kept in Redis for the audit page (ops.audit keeps every one).",
    )
    oidc: OidcSettings = OidcSettings()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ORDERSYNC_", env_nested_delimiter="__", frozen=True, extra="ignore"
    )

    kafka: KafkaSettings = KafkaSettings()
    redis: RedisSettings = RedisSettings()
    amazon: AmazonSettings = AmazonSettings()
    aws: AwsSettings = AwsSettings()
    notifications: NotificationsSettings = NotificationsSettings()
    privacy: PrivacySettings = PrivacySettings()
    secrets: SecretsSettings = SecretsSettings()
    ratelimit: RateLimitSettings = RateLimitSettings()
    download: DownloadSettings = DownloadSettings()
    writeback: WriteBackSettings = WriteBackSettings()
    invoice: InvoiceSettings = InvoiceSettings()
    redrive: RedriveSettings = RedriveSettings()
    inventory: InventorySettings = InventorySettings()
    stage: StageSettings = StageSettings()
    health: HealthSettings = HealthSettings()
    order_state: OrderStateSettings = OrderStateSettings()
    products: ProductSettings = ProductSettings()
    documents: DocumentSettings = DocumentSettings()
    status_model: StatusModelSettings = StatusModelSettings()
    dashboard: DashboardSettings = DashboardSettings()
    alerts: AlertSettings = AlertSettings()
    channels_file: Path = Field(Path("channels.yaml"), description="YAML file declaring the channels.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool = Field(False, description="One JSON object per log line.")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Order is precedence: explicit arguments, then the environment, then `ordersync dev up`.
        return (init_settings, env_settings, _DevStateSource(settings_cls), file_secret_settings)


def dev_state_file() -> Path:
    """Where ``ordersync dev up`` records the addresses of what it started."""
    base = os.environ.get("ORDERSYNC_STATE_DIR") or os.environ.get("XDG_STATE_HOME")
    root = Path(base) if base else Path.home() / ".local" / "state"
    return (root if os.environ.get("ORDERSYNC_STATE_DIR") else root / "ordersync") / "dev.json"


class _DevStateSource(PydanticBaseSettingsSource):
    """Broker, Redis and local AWS addresses of a running ``ordersync dev up``, below the environment."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = dev_state_file()
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        values: dict[str, Any] = {}
        if state.get("kafka_bootstrap"):
            values["kafka"] = {"bootstrap": state["kafka_bootstrap"]}
        if state.get("redis_url"):
            values["redis"] = {"url": state["redis_url"]}
        if state.get("aws_endpoint_url"):
            # The local server accepts any credentials; the SDK wants some.
            values["aws"] = {
                "endpoint_url": state["aws_endpoint_url"],
                "access_key_id": LOCAL_AWS_KEY,
                "secret_access_key": LOCAL_AWS_KEY,
            }
        if state.get("privacy_kek"):
            values["privacy"] = {"kek": state["privacy_kek"]}
        return values


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once."""
    return Settings()
