"""Scenarios: who sells what, how orders arrive and live, and what goes wrong, as validated YAML.

A scenario is seeded: the same file and seed give the same sellers, catalogue, orders, timelines,
visibility lags, notification deliveries and faults (for the same sequence of requests). Two are built in:
``default`` (one US seller, a few hundred orders over the past days) and ``demo`` (three sellers, one
of them in Easy Ship in India, 328 orders arriving over the first simulated minutes). Format::

    name: demo
    seed: 7                      # --seed overrides it
    start: 2026-01-05T09:00:00Z  # optional; default: the wall clock when the simulator starts
    time_scale: 20               # optional; --time-scale overrides it
    pii_requires_rdt: true       # Orders v0: names/address lines/buyer only with a Restricted Data Token
    pii_without_role: omit       # Orders 2026-01-01, BUYER/RECIPIENT asked without the role: omit | forbidden
    easy_ship_confirm: refuse    # confirmShipment of an Easy Ship order: refuse (400) | accept
    access_token_lifetime_s: 3600
    visibility_lag: {p_late: 0.1, max_late_s: 600}
    faults: {http_500: 0.0, http_503: 0.0, timeout: 0.0, drop: 0.0, slow: 0.0, slow_s: 2, timeout_s: 60}
    feeds:                       # Feeds API processing (simulated seconds)
      queue_delay_s: [5, 60]     # IN_QUEUE at least this long
      duration_s: [30, 300]      # IN_PROGRESS this long
      stall_share: 0.02          # feeds stuck IN_QUEUE an extra stall_s
      stall_s: [3600, 14400]
      listings_limit: separate   # JSON_LISTINGS_FEED's 5-per-5-minutes limit: separate | shared
      compress_reports: true     # result documents GZIP, as Amazon's often are
    notifications:               # ORDER_CHANGE sent to subscribed SQS queues (simulated seconds);
      enabled: true              # undocumented by Amazon, every knob: a scenario switch
      lag_s: [1, 10]             # delivery lag after the change, uniform ...
      late: {p_late: 0.01, max_late_s: 900}   # ... plus a heavy tail for a few
      loss: 0.0                  # share never sent
      duplicate: 0.0             # share sent twice (same NotificationId) ...
      duplicate_after_s: [0, 60] # ... the second copy this much later
      reorder: 0.0               # share held back up to reorder_s more (arrive after later changes)
      reorder_s: 300
    reports:                     # Reports API (simulated seconds; undocumented by Amazon unless said)
      queue_delay_s: [10, 60]    # IN_QUEUE this long ...
      duration_s: [60, 240]      # ... then IN_PROGRESS this long, then DONE
      lag_s: [0, 1800]           # changes this recent when the report is requested are not in it
      empty: cancelled           # a report with no data: cancelled (the model's word) | done
      compress: true             # documents GZIP
      document_kept_s: 2592000   # documents kept 30 days (Amazon's order reports)
      reports_kept_s: 7776000    # reports listed 90 days (getReports' createdSince)
      max_order_age_s: 63072000  # orders older than two years left out (Amazon's order reports)
      expired_document: invalid  # getReportDocument of an expired document: invalid (400) | not_found
      columns: null              # the header; null: Amazon's documented columns
    easy_ship:                   # Easy Ship API 2022-03-23 (undocumented by Amazon: scenario switches)
      marketplaces: [A21TJRUUN4KGV]  # where Easy Ship runs
      slot_days: 3               # handover slots offered for today and the next days (UTC) ...
      slot_windows_h: [[10, 13], [14, 17]]  # ... one per window of UTC hours ...
      slot_capacity: 10          # ... each taking this many packages per marketplace
      slot_cutoff_s: 3600        # a slot is offered until this long before it starts
      max_side_cm: 120           # bigger or heavier packages get no slot (404 TimeSlotNotAvailable)
      max_weight_g: 30000
      pickup_after_s: 1800       # ReadyForPickup -> PickedUp (order Shipped) this long after the slot starts
      delivery_after_s: 172800   # PickedUp -> Delivered
      documents_fatal: false     # POST_EASYSHIP_DOCUMENTS feeds end FATAL
      units_any_case: true       # "Cm"/"G" as Amazon's guide writes them, beside the model's "cm"/"g"
    sellers:
      - seller_id: A1DEMOSELLERUS
        region: na
        marketplaces: [ATVPDKIKX0DER]
        applications:            # the LWA apps this seller authorised
          - {client_id: amzn1.application-oa2-client.demo, client_secret: s3cret, refresh_token: Atzr|us,
             pii_roles: [direct_to_consumer_delivery, tax_invoicing, tax_remittance],  # default: all three
             application_id: amzn1.sp.solution.demo,  # consent URIs' id; default: from the client id
             draft: false,                # true: consent URIs need version=beta (MD1000)
             redirect_uris: []}           # registered redirect URIs; []: any the consent URI names
        store_name: Demo Store US        # getMarketplaceParticipations' storeName; default: "<id> Store"
        usage_plans:             # per-account overrides of Amazon's default plans
          getOrders: {rate: 0.0334, burst: 20}
        catalogue:               # the SKUs the seller's back-office knows; or catalogue_size: N
          - {sku: MUG-001, asin: B0DEMO0001, ean: "4006381333931", title: Mug, price: "12.90"}
        orders:
          count: 150
          history_s: 0           # first order this long before start ...
          arrival_window_s: 1200 # ... last one this long after start
          items_per_order: [1, 3]
          quantity: [1, 3]
          pending_share: 0.2
          pending_duration_s: [60, 300]
          afn_share: 0.2
          afn_ship_delay_s: [600, 3600]
          cancel_share: 0.03
          cancel_after_s: [120, 3600]
          unknown_sku_share: 0.05   # orders with one item whose SKU starts with UNMAPPED-
          missing_address_share: 0.0
          preorder_share: 0.0          # PendingAvailability until released
          preorder_release_s: [3600, 259200]
          ship_plus_share: 0.0         # seller-fulfilled in Ship+: confirmShipment answers 400
          easy_ship_share: 0.0         # seller-fulfilled in Easy Ship (e.g. an India seller, A21TJRUUN4KGV)
          invoice_unconfirmed_share: 0.0   # shipped by the seller, InvoiceUnconfirmed a while first
          invoice_confirm_s: [600, 86400]
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ordersync.amazon.models import default_plans
from ordersync.errors import ConfigurationError
from ordersync.settings import Region

#: SKU prefix of items the seller's back-office does not know.
UNMAPPED_SKU_PREFIX = "UNMAPPED-"


@dataclass(frozen=True)
class Marketplace:
    marketplace_id: str
    region: Region
    country_code: str
    currency: str
    sales_channel: str
    #: Minor-unit digits of the currency (JPY has none).
    decimals: int = 2


#: Amazon's marketplaces (docs: marketplace-ids), by id.
MARKETPLACES: dict[str, Marketplace] = {
    m.marketplace_id: m
    for m in (
        Marketplace("ATVPDKIKX0DER", "na", "US", "USD", "Amazon.com"),
        Marketplace("A2EUQ1WTGCTBG2", "na", "CA", "CAD", "Amazon.ca"),
        Marketplace("A1AM78C64UM0Y8", "na", "MX", "MXN", "Amazon.com.mx"),
        Marketplace("A2Q3Y263D00KWC", "na", "BR", "BRL", "Amazon.com.br"),
        Marketplace("A1PA6795UKMFR9", "eu", "DE", "EUR", "Amazon.de"),
        Marketplace("A1F83G8C2ARO7P", "eu", "GB", "GBP", "Amazon.co.uk"),
        Marketplace("A13V1IB3VIYZZH", "eu", "FR", "EUR", "Amazon.fr"),
        Marketplace("APJ6JRA9NG5V4", "eu", "IT", "EUR", "Amazon.it"),
        Marketplace("A1RKKUPIHCS9HS", "eu", "ES", "EUR", "Amazon.es"),
        Marketplace("A1805IZSGTT6HS", "eu", "NL", "EUR", "Amazon.nl"),
        Marketplace("AMEN7PMS3EDWL", "eu", "BE", "EUR", "Amazon.com.be"),
        Marketplace("A28R8C7NBKEWEA", "eu", "IE", "EUR", "Amazon.ie"),
        Marketplace("A2NODRKZP88ZB9", "eu", "SE", "SEK", "Amazon.se"),
        Marketplace("A1C3SOZRARQ6R3", "eu", "PL", "PLN", "Amazon.pl"),
        Marketplace("A33AVAJ2PDY3EV", "eu", "TR", "TRY", "Amazon.com.tr"),
        Marketplace("AE08WJ6YKNBMC", "eu", "ZA", "ZAR", "Amazon.co.za"),
        Marketplace("ARBP9OOSHTCHU", "eu", "EG", "EGP", "Amazon.eg"),
        Marketplace("A17E79C6D8DWNP", "eu", "SA", "SAR", "Amazon.sa"),
        Marketplace("A2VIGQ35RCS4UG", "eu", "AE", "AED", "Amazon.ae"),
        Marketplace("A21TJRUUN4KGV", "eu", "IN", "INR", "Amazon.in"),
        Marketplace("A1VC38T7YXB528", "fe", "JP", "JPY", "Amazon.co.jp", decimals=0),
        Marketplace("A39IBJ37TRP1C6", "fe", "AU", "AUD", "Amazon.com.au"),
        Marketplace("A19VAU5U5O7RUS", "fe", "SG", "SGD", "Amazon.sg"),
    )
}

Share = Annotated[float, Field(ge=0, le=1)]
NonNegative = Annotated[float, Field(ge=0)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _ordered_pair(value: tuple[float, float], what: str) -> None:
    if value[0] > value[1]:
        raise ValueError(f"{what}: the lower bound {value[0]} exceeds the upper bound {value[1]}")


class UsagePlanOverride(_Frozen):
    """A token bucket replacing Amazon's default plan of one operation for one seller."""

    rate: Annotated[float, Field(gt=0)]
    burst: Annotated[int, Field(ge=1)]


#: Amazon's restricted roles that open customer data (docs "Access Orders PII", "Get order
#: information"): Direct-to-Consumer Delivery (shipping address; the buyer's email on seller-fulfilled
#: orders), Tax Invoicing and Tax Remittance (either one: the buyer's name and buyer information).
PiiRole = Literal["direct_to_consumer_delivery", "tax_invoicing", "tax_remittance"]
PII_ROLES: tuple[PiiRole, ...] = ("direct_to_consumer_delivery", "tax_invoicing", "tax_remittance")


#: The prefix of an LWA client id; :attr:`Application.solution_id` derives an application id from the rest.
LWA_CLIENT_PREFIX = "amzn1.application-oa2-client."
#: The prefix of an application id in Amazon's Solution Provider Portal (the consent URI's application_id).
SOLUTION_PREFIX = "amzn1.sp.solution."


class Application(_Frozen):
    """An LWA application the seller authorised, with the refresh token it was given.

    ``pii_roles``: the restricted roles the application holds for this seller (default: all three,
    an application that passed Amazon's review; ``[]`` models one without them). Orders 2026-01-01
    shows buyer and recipient data only to an application with the role; Orders v0 only through a
    Restricted Data Token, and only the data of the roles held.

    The website authorization workflow (``/apps/authorize/consent``, :mod:`ordersync.simulator.consent`)
    knows the application by ``application_id`` (the consent URI's ``application_id``; default
    :attr:`solution_id`: ``amzn1.sp.solution.`` and the client id without its
    ``amzn1.application-oa2-client.`` prefix). ``draft``: the application is not published yet, so its
    consent URI must carry ``version=beta`` (Amazon's MD1000 otherwise). ``redirect_uris``: the OAuth
    redirect URIs registered for it; a consent URI's ``redirect_uri`` must be one of them (MD5101). None
    registered (the default) is the simulator's lenient switch: any ``redirect_uri`` the consent URI
    carries is accepted (and one is then required). The entries of one client id in several sellers
    must agree on these three.
    """

    client_id: Annotated[str, Field(min_length=1)]
    client_secret: Annotated[str, Field(min_length=1)]
    refresh_token: Annotated[str, Field(min_length=1)]
    pii_roles: tuple[PiiRole, ...] = PII_ROLES
    application_id: Annotated[str, Field(min_length=1)] | None = None
    draft: bool = False
    redirect_uris: tuple[Annotated[str, Field(pattern=r"^https?://[^\s]+$")], ...] = ()

    @property
    def solution_id(self) -> str:
        """The application id consent URIs name: ``application_id``, else one derived from the client id."""
        if self.application_id:
            return self.application_id
        return SOLUTION_PREFIX + self.client_id.removeprefix(LWA_CLIENT_PREFIX)

    @field_validator("pii_roles")
    @classmethod
    def _distinct_roles(cls, value: tuple[PiiRole, ...]) -> tuple[PiiRole, ...]:
        if len(set(value)) != len(value):
            raise ValueError("a role is listed twice")
        return value


class Product(_Frozen):
    sku: Annotated[str, Field(min_length=1, max_length=40)]
    asin: Annotated[str, Field(pattern=r"^[A-Z0-9]{10}$")]
    ean: Annotated[str, Field(pattern=r"^[0-9]{8,14}$")]
    title: Annotated[str, Field(min_length=1)]
    price: Annotated[Decimal, Field(gt=0)]

    @field_validator("sku")
    @classmethod
    def _not_unmapped(cls, value: str) -> str:
        if value.startswith(UNMAPPED_SKU_PREFIX):
            raise ValueError(f"catalogue SKUs must not start with {UNMAPPED_SKU_PREFIX}")
        return value


class OrderProfile(_Frozen):
    """How one seller's orders arrive and live. Durations are simulated seconds; pairs are ranges."""

    count: Annotated[int, Field(ge=0, le=1_000_000)] = 300
    history_s: NonNegative = 3 * 86400.0
    arrival_window_s: NonNegative = 0.0
    items_per_order: tuple[int, int] = (1, 3)
    quantity: tuple[int, int] = (1, 3)
    pending_share: Share = 0.15
    pending_duration_s: tuple[NonNegative, NonNegative] = (300.0, 4 * 3600.0)
    afn_share: Share = 0.2
    afn_ship_delay_s: tuple[NonNegative, NonNegative] = (3600.0, 2 * 86400.0)
    cancel_share: Share = 0.03
    cancel_after_s: tuple[NonNegative, NonNegative] = (600.0, 86400.0)
    unknown_sku_share: Share = 0.0
    missing_address_share: Share = 0.0
    expedited_share: Share = 0.1
    #: Pre-orders: PendingAvailability until their release, then Pending/Unshipped as usual.
    preorder_share: Share = 0.0
    preorder_release_s: tuple[NonNegative, NonNegative] = (3600.0, 3 * 86400.0)
    #: Seller-fulfilled orders in Ship+ (shipped with a Ship+ label; confirmShipment refused) and in
    #: Easy Ship (Amazon's carrier ships them).
    ship_plus_share: Share = 0.0
    easy_ship_share: Share = 0.0
    #: Seller-fulfilled orders that, once fully shipped, stay InvoiceUnconfirmed for a while.
    invoice_unconfirmed_share: Share = 0.0
    invoice_confirm_s: tuple[NonNegative, NonNegative] = (600.0, 86400.0)
    #: The seller's handling time: the latest ship date comes this long after the purchase (after a
    #: pre-order's release); a seller's confirmation after it is a late shipment.
    ship_within_s: tuple[NonNegative, NonNegative] = (2 * 86400.0, 2 * 86400.0)

    @model_validator(mode="after")
    def _ranges(self) -> OrderProfile:
        if self.items_per_order[0] < 1 or self.quantity[0] < 1:
            raise ValueError("items_per_order and quantity start at 1")
        for name in (
            "items_per_order",
            "quantity",
            "pending_duration_s",
            "afn_ship_delay_s",
            "cancel_after_s",
            "preorder_release_s",
            "invoice_confirm_s",
            "ship_within_s",
        ):
            _ordered_pair(getattr(self, name), name)
        return self


class SellerScenario(_Frozen):
    seller_id: Annotated[str, Field(pattern=r"^[A-Z0-9]{4,20}$")]
    region: Region = "na"
    marketplaces: Annotated[tuple[str, ...], Field(min_length=1, max_length=50)]
    applications: Annotated[tuple[Application, ...], Field(min_length=1)]
    usage_plans: dict[str, UsagePlanOverride] = Field(default_factory=dict)
    catalogue: tuple[Product, ...] = ()
    catalogue_size: Annotated[int, Field(ge=1, le=100_000)] = 40
    orders: OrderProfile = OrderProfile()
    #: The store's name in getMarketplaceParticipations (default: "<seller_id> Store").
    store_name: Annotated[str, Field(min_length=1)] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> SellerScenario:
        if len(set(self.marketplaces)) != len(self.marketplaces):
            raise ValueError("a marketplace is listed twice")
        for marketplace_id in self.marketplaces:
            known = MARKETPLACES.get(marketplace_id)
            if known is None:
                raise ValueError(f"unknown marketplace id {marketplace_id}")
            if known.region != self.region:
                raise ValueError(
                    f"marketplace {marketplace_id} is in region {known.region}, not {self.region}"
                )
        unknown_ops = sorted(set(self.usage_plans) - set(default_plans()))
        if unknown_ops:
            raise ValueError(f"usage_plans: unknown operations {', '.join(unknown_ops)}")
        skus = [p.sku for p in self.catalogue]
        if len(set(skus)) != len(skus):
            raise ValueError("catalogue: a SKU is listed twice")
        return self


class VisibilityLag(_Frozen):
    """A change stamped T is queryable by getOrders/searchOrders only from T + lag: with probability
    ``p_late`` the lag is uniform in (0, max_late_s], else 0."""

    p_late: Share = 0.0
    max_late_s: NonNegative = 0.0


class Faults(_Frozen):
    """Fractions of authorised, unthrottled SP-API requests that go wrong, drawn in this order.

    ``http_500`` / ``http_503``: answered 500 InternalFailure / 503 ServiceUnavailable without running
    the operation. ``timeout``: the operation runs, then the server holds the connection ``timeout_s``
    real seconds and closes it without an answer (the client's timeout fires first). ``drop``: the
    operation runs and the connection is closed without an answer. ``slow``: answered normally after
    ``slow_s`` real seconds. Timeouts and drops leave the caller not knowing whether the request took
    effect, as on Amazon.
    """

    http_500: Share = 0.0
    http_503: Share = 0.0
    timeout: Share = 0.0
    drop: Share = 0.0
    slow: Share = 0.0
    slow_s: Annotated[float, Field(ge=0, le=600)] = 2.0
    timeout_s: Annotated[float, Field(ge=0, le=3600)] = 60.0

    @model_validator(mode="after")
    def _total(self) -> Faults:
        if self.http_500 + self.http_503 + self.timeout + self.drop + self.slow > 1:
            raise ValueError("http_500 + http_503 + timeout + drop + slow exceeds 1")
        return self


class FeedProfile(_Frozen):
    """How the Feeds API processes feeds (simulated seconds; pairs are uniform ranges).

    Feeds of one seller and one family (order feeds, listings/inventory feeds) are processed one
    after another: each waits in IN_QUEUE at least ``queue_delay_s`` after its creation and until
    the previous one ended, then stays IN_PROGRESS ``duration_s``. A ``stall_share`` of feeds sit in
    IN_QUEUE an extra ``stall_s`` (docs#1151: stuck for hours).

    ``listings_limit``: JSON_LISTINGS_FEED's own limit of 5 createFeed calls per 5 minutes per
    seller and region, either ``separate`` (such a call takes a token only from its own bucket; the
    model says this limit "differs from" createFeed's) or ``shared`` (it needs a token from both).
    """

    queue_delay_s: tuple[NonNegative, NonNegative] = (5.0, 60.0)
    duration_s: tuple[NonNegative, NonNegative] = (30.0, 300.0)
    stall_share: Share = 0.02
    stall_s: tuple[NonNegative, NonNegative] = (3600.0, 4 * 3600.0)
    listings_limit: Literal["shared", "separate"] = "separate"
    compress_reports: bool = Field(
        True, description="Result documents GZIP-compressed, as Amazon's often are."
    )
    document_url_ttl_s: Annotated[float, Field(gt=0)] = 300.0

    @model_validator(mode="after")
    def _ranges(self) -> FeedProfile:
        for name in ("queue_delay_s", "duration_s", "stall_s"):
            _ordered_pair(getattr(self, name), name)
        return self


class NotificationProfile(_Frozen):
    """How Amazon delivers ORDER_CHANGE notifications to a subscribed SQS queue (simulated seconds;
    pairs are uniform ranges). Amazon documents neither its delivery lag nor a loss or duplicate rate
    (undocumented: every knob here is a scenario switch); it asks integrators to keep a backup to
    notifications, and standard SQS delivers at least once, in no particular order. The defaults are
    Amazon behaving well: seconds of lag, a rare late one, nothing lost or doubled.

    Each notification is due ``lag_s`` after the change, plus ``late`` (with probability ``p_late``,
    uniform up to ``max_late_s``), plus, for a ``reorder`` share, up to ``reorder_s`` more (so a later
    change of the same order can arrive first). A ``loss`` share is never sent; a ``duplicate`` share
    is sent twice with the same body, the second copy ``duplicate_after_s`` after the first.
    ``enabled: false`` sends nothing (subscriptions are still accepted), as when notifications stop.
    The draws come from the scenario's seed, the same number per notification whatever the shares, so
    changing one knob changes only what it governs.
    """

    enabled: bool = True
    lag_s: tuple[NonNegative, NonNegative] = (1.0, 10.0)
    late: VisibilityLag = VisibilityLag(p_late=0.01, max_late_s=900.0)
    loss: Share = 0.0
    duplicate: Share = 0.0
    duplicate_after_s: tuple[NonNegative, NonNegative] = (0.0, 60.0)
    reorder: Share = 0.0
    reorder_s: NonNegative = 300.0

    @model_validator(mode="after")
    def _ranges(self) -> NotificationProfile:
        for name in ("lag_s", "duplicate_after_s"):
            _ordered_pair(getattr(self, name), name)
        return self


class ReportProfile(_Frozen):
    """How the Reports API makes reports (simulated seconds; pairs are uniform ranges).

    Amazon documents neither how long a report waits or takes ("IN_QUEUE: It may be waiting for another
    IN_PROGRESS report", reports_2021-06-30.json) nor how far behind its data is beyond "up to a
    30-minute delay" (docs "Order Reports"): each report waits ``queue_delay_s``, then is IN_PROGRESS
    ``duration_s``; the changes made in the last ``lag_s`` before it was requested are not in it.
    Documented by Amazon: order reports are retained 30 days (``document_kept_s``) and support orders
    less than two years old (``max_order_age_s``; older ones are left out, as Amazon does not say that
    it refuses the request); reports are listed 90 days (``reports_kept_s``, getReports' createdSince);
    a report with no data is CANCELLED ("an automatic cancellation if there is no data to return";
    ``empty: done`` gives a DONE report whose document has only the header instead). Not documented:
    the answer to getReportDocument for an expired document (``expired_document``: ``invalid``, 400
    InvalidInput as for an id Amazon does not know, jlevers/selling-partner-api#487; ``not_found``, 404).
    ``columns``: the document's header, in order (None: Amazon's documented columns; other names come
    out empty), for clients that must cope with Amazon's per-account variations.
    """

    queue_delay_s: tuple[NonNegative, NonNegative] = (10.0, 60.0)
    duration_s: tuple[NonNegative, NonNegative] = (60.0, 240.0)
    lag_s: tuple[NonNegative, NonNegative] = (0.0, 1800.0)
    empty: Literal["cancelled", "done"] = "cancelled"
    compress: bool = True
    document_kept_s: Annotated[float, Field(gt=0)] = 30 * 86400.0
    reports_kept_s: Annotated[float, Field(gt=0)] = 90 * 86400.0
    max_order_age_s: Annotated[float, Field(gt=0)] = 2 * 365 * 86400.0
    expired_document: Literal["invalid", "not_found"] = "invalid"
    columns: tuple[Annotated[str, Field(min_length=1, pattern=r"^[^\t\r\n]+$")], ...] | None = None

    @model_validator(mode="after")
    def _ranges(self) -> ReportProfile:
        for name in ("queue_delay_s", "duration_s", "lag_s"):
            _ordered_pair(getattr(self, name), name)
        if self.columns is not None and (not self.columns or len(set(self.columns)) != len(self.columns)):
            raise ValueError("columns: give at least one column, each once")
        return self


class EasyShipProfile(_Frozen):
    """How Amazon's Easy Ship API 2022-03-23 behaves (simulated seconds). The model documents the
    operations, the minimums (dimensions 0.01 cm, weight 11 g) and the units; everything else here is
    undocumented by Amazon, so a scenario switch:

    ``marketplaces``: where Easy Ship runs (others: 404 RegionNotSupported); India by default.
    Handover slots: every day for ``slot_days`` days from today (UTC), one per ``slot_windows_h``
    pair of UTC hours (Amazon's slots are local; the simulator keeps UTC), offered until
    ``slot_cutoff_s`` before they start, each taking ``slot_capacity`` packages per marketplace.
    ``max_side_cm`` / ``max_weight_g``: a package above either gets no slot (404 TimeSlotNotAvailable,
    as the model's error table says of "invalid weight and dimension parameters").
    A scheduled package is ReadyForPickup, PickedUp ``pickup_after_s`` after its slot starts (the
    order becomes Shipped then), Delivered ``delivery_after_s`` later. ``default_package_cm`` /
    ``default_package_g``: the package of an order scheduled (createScheduledPackage/Bulk) without
    listing slots for it first. ``documents_fatal``: POST_EASYSHIP_DOCUMENTS feeds end FATAL.
    ``units_any_case``: the model allows only "cm" and "grams"/"g", while Amazon's use case guide sends
    "Cm" and "G"; on (Amazon's own example works), units match in any case; off, only as the model spells
    them.
    """

    marketplaces: tuple[str, ...] = ("A21TJRUUN4KGV",)
    slot_days: Annotated[int, Field(ge=1, le=30)] = 3
    slot_windows_h: Annotated[tuple[tuple[int, int], ...], Field(min_length=1)] = ((10, 13), (14, 17))
    slot_capacity: Annotated[int, Field(ge=1)] = 10
    slot_cutoff_s: NonNegative = 3600.0
    handover_method: Literal["PICKUP", "DROPOFF"] = "PICKUP"
    max_side_cm: Annotated[float, Field(gt=0)] = 120.0
    max_weight_g: Annotated[float, Field(gt=0)] = 30000.0
    pickup_after_s: NonNegative = 1800.0
    delivery_after_s: NonNegative = 2 * 86400.0
    default_package_cm: tuple[float, float, float] = (25.0, 20.0, 10.0)
    default_package_g: Annotated[float, Field(ge=11)] = 500.0
    documents_fatal: bool = False
    units_any_case: bool = True

    @model_validator(mode="after")
    def _windows(self) -> EasyShipProfile:
        for start, end in self.slot_windows_h:
            if not 0 <= start < end <= 24:
                raise ValueError(f"slot_windows_h: ({start}, {end}) is not a window of UTC hours")
        unknown = [m for m in self.marketplaces if m not in MARKETPLACES]
        if unknown:
            raise ValueError(f"marketplaces: unknown marketplace ids {', '.join(unknown)}")
        return self


class Scenario(_Frozen):
    name: str = "custom"
    seed: int = 0
    start: AwareDatetime | None = None
    time_scale: Annotated[float, Field(ge=0)] = 1.0
    pii_requires_rdt: bool = True
    #: Orders 2026-01-01 asked for BUYER or RECIPIENT by an application without the role: Amazon does
    #: not document the answer. ``omit``: 200 without the personal fields (city, region and country of
    #: the address stay); ``forbidden``: 403 Unauthorized.
    pii_without_role: Literal["omit", "forbidden"] = "omit"
    #: confirmShipment (or a fulfilment feed message) for an Easy Ship order: refused (400) or accepted.
    #: Amazon documents that Easy Ship orders ship through Easy Ship, not what a confirmation gets.
    easy_ship_confirm: Literal["refuse", "accept"] = "refuse"
    access_token_lifetime_s: Annotated[int, Field(ge=1)] = 3600
    visibility_lag: VisibilityLag = VisibilityLag()
    faults: Faults = Faults()
    feeds: FeedProfile = FeedProfile()
    notifications: NotificationProfile = NotificationProfile()
    reports: ReportProfile = ReportProfile()
    easy_ship: EasyShipProfile = EasyShipProfile()
    sellers: Annotated[tuple[SellerScenario, ...], Field(min_length=1)]

    @model_validator(mode="after")
    def _unique(self) -> Scenario:
        ids = [s.seller_id for s in self.sellers]
        if len(set(ids)) != len(ids):
            raise ValueError("seller ids must be unique")
        creds = [(a.client_id, a.refresh_token) for s in self.sellers for a in s.applications]
        if len(set(creds)) != len(creds):
            raise ValueError("one (client_id, refresh_token) pair may authorise only one seller")
        secrets: dict[str, str] = {}
        for seller in self.sellers:
            for app in seller.applications:
                if secrets.setdefault(app.client_id, app.client_secret) != app.client_secret:
                    raise ValueError(f"client {app.client_id} has two different client secrets")
        published: dict[str, tuple[str, bool, tuple[str, ...]]] = {}
        clients: dict[str, str] = {}
        for seller in self.sellers:
            for app in seller.applications:
                facts = (app.solution_id, app.draft, app.redirect_uris)
                if published.setdefault(app.client_id, facts) != facts:
                    raise ValueError(
                        f"client {app.client_id}: application_id, draft and redirect_uris differ between"
                        " sellers"
                    )
                if clients.setdefault(app.solution_id, app.client_id) != app.client_id:
                    raise ValueError(f"application id {app.solution_id} names two client ids")
        return self

    def application(self, application_id: str) -> Application | None:
        """The application consent URIs call ``application_id`` (:attr:`Application.solution_id`)."""
        for seller in self.sellers:
            for app in seller.applications:
                if app.solution_id == application_id:
                    return app
        return None

    def seller(self, seller_id: str) -> SellerScenario:
        for seller in self.sellers:
            if seller.seller_id == seller_id:
                return seller
        raise KeyError(seller_id)


BUILTIN_SCENARIOS = ("default", "demo")


def builtin_scenario_text(name: str) -> str:
    if name not in BUILTIN_SCENARIOS:
        raise ConfigurationError(f"no built-in scenario {name!r} (known: {', '.join(BUILTIN_SCENARIOS)})")
    return resources.files("ordersync.simulator").joinpath("scenarios", f"{name}.yaml").read_text()


def parse_scenario(raw: Any, where: str = "scenario") -> Scenario:
    try:
        return Scenario.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
        raise ConfigurationError(f"{where}: {problems}") from exc


def load_scenario(
    path: str | Path | None = None,
    seed: int | None = None,
    *,
    time_scale: float | None = None,
    start: datetime | None = None,
) -> Scenario:
    """Read a scenario file, or a built-in one by name (``default``, ``demo``); ``None`` is ``default``.

    ``seed``, ``time_scale`` and ``start`` override the file's values when given.
    """
    name = "default" if path is None else str(path)
    if name in BUILTIN_SCENARIOS and not Path(name).exists():
        text, where = builtin_scenario_text(name), f"built-in scenario {name}"
    else:
        try:
            text, where = Path(name).read_text(), f"scenario {name}"
        except OSError as exc:
            raise ConfigurationError(f"scenario {name}: {exc.strerror}") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"{where}: not valid YAML: {exc}") from exc
    scenario = parse_scenario(raw, where)
    updates: dict[str, Any] = {}
    if seed is not None:
        updates["seed"] = seed
    if time_scale is not None:
        updates["time_scale"] = time_scale
    if start is not None:
        updates["start"] = start
    # Validate the overrides too (model_copy alone would not).
    return parse_scenario({**scenario.model_dump(), **updates}, where) if updates else scenario
