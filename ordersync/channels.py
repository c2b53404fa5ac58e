"""Channels: one seller account in one Amazon region, with its marketplaces, credentials and settings.

Declared in the YAML file named by ``ORDERSYNC_CHANNELS_FILE``::

    channels:
      - name: acme-us
        seller_id: A2ACMESELLER
        region: na
        marketplaces: [ATVPDKIKX0DER, A2EUQ1WTGCTBG2]
        orders_api: "2026-01-01"
        credentials:                     # by reference: never the secret itself in the file
          client_id: {env: ACME_LWA_CLIENT_ID}
          client_secret: {env: ACME_LWA_CLIENT_SECRET}
          refresh_token: {file: /run/secrets/acme_refresh_token}
        rate_limits:                     # Amazon's dynamic usage plans for this account, if raised
          getOrders: {rate: 0.0334, burst: 20}

Loading validates every channel and names the channel and field of each problem.
"""

from __future__ import annotations

import os
import re
from datetime import date
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from ordersync.errors import ConfigurationError, UnknownChannel
from ordersync.settings import Region

OrdersApiVersion = Literal["v0", "2026-01-01"]
FulfillmentChannel = Literal["AFN", "MFN"]
ImportableStatus = Literal["Unshipped", "PartiallyShipped", "Shipped", "InvoiceUnconfirmed"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


#: A secret store name (``{store: NAME}``): lower-case letters, digits and ``. _ -`` in parts joined by
#: single ``/``, each part starting with a letter or digit (no ``..``, no empty or hidden part), at most
#: 128 characters; e.g. ``channels/acme-us/refresh-token``.
SECRET_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*(?:/[a-z0-9][a-z0-9._-]*)*")
SECRET_NAME_MAX = 128


def check_secret_name(name: str) -> str:
    """``name`` if it is a valid secret store name (:data:`SECRET_NAME`), else :class:`ValueError`
    saying why (the name is not a secret: it may be shown)."""
    if not (len(name) <= SECRET_NAME_MAX and SECRET_NAME.fullmatch(name)):
        raise ValueError(
            f"secret name {name!r} is not valid: up to {SECRET_NAME_MAX} lower-case letters, digits and"
            " '._-', in parts joined by single '/', each part starting with a letter or digit"
        )
    return name


class SecretRef(_Frozen):
    """Where a secret lives: an environment variable, a file, the secret store (``ordersync secrets``;
    opened with :func:`ordersync.secret_store.open_channel_secrets`), or (for the simulator) inline."""

    env: str | None = None
    file: Path | None = None
    value: SecretStr | None = None
    store: str | None = None

    @field_validator("store")
    @classmethod
    def _store_name(cls, value: str | None) -> str | None:
        return None if value is None else check_secret_name(value)

    @model_validator(mode="after")
    def _store_alone(self) -> SecretRef:
        if self.store is not None and (
            self.env is not None or self.file is not None or self.value is not None
        ):
            raise ValueError("a store reference names only the store: not env, file or value as well")
        return self

    def resolve(self, what: str) -> SecretStr:
        if self.env is not None:
            found = os.environ.get(self.env)
            if found is None:
                raise ConfigurationError(f"{what}: environment variable {self.env} is not set")
            return SecretStr(found)
        if self.file is not None:
            try:
                return SecretStr(self.file.read_text().strip())
            except OSError as exc:
                raise ConfigurationError(f"{what}: cannot read {self.file}: {exc.strerror}") from exc
        if self.value is not None:
            return self.value
        if self.store is not None:
            raise ConfigurationError(
                f"{what}: secret {self.store!r} is in the secret store and must be opened from it first"
                " (ordersync.secret_store.open_channel_secrets)"
            )
        raise ConfigurationError(f"{what}: give one of env, file, value or store")


class LwaCredentials(_Frozen):
    client_id: SecretRef
    client_secret: SecretRef
    refresh_token: SecretRef
    #: When the LWA client secret expires (Amazon makes applications rotate it): an alert warns
    #: ``alerts.credentials_warn_days`` before.
    client_secret_expires_at: date | None = None


class UsagePlan(_Frozen):
    """A token bucket: ``burst`` tokens, refilled at ``rate`` per second."""

    rate: Annotated[float, Field(gt=0)]
    burst: Annotated[int, Field(ge=1)]


SyncLevel = Literal["orders and stock", "stock only"]
#: Which Amazon identifier maps an order item to a back-office stock code: the seller SKU (listings
#: column Merchant SKU, else Channel SKU Id), the item's ASIN (column ASIN), the seller SKU read as an
#: EAN (column EAN), or the seller SKU matched against one of the listings columns.
ProductIdentification = Literal[
    "seller_sku",
    "asin",
    "ean",
    "Client SKU Id",
    "Channel Serial No.",
    "Channel SKU Id",
    "EAN",
    "ASIN",
    "Merchant SKU",
]


class SkuCropRule(_Frozen):
    """One rewrite of the Amazon seller SKU before it is mapped; a rule does one of the three."""

    strip_prefix: Annotated[str, Field(min_length=1)] | None = None
    strip_suffix: Annotated[str, Field(min_length=1)] | None = None
    regex: Annotated[str, Field(min_length=1)] | None = None
    replace: str = ""

    @model_validator(mode="after")
    def _one_rule(self) -> SkuCropRule:
        given = [n for n in ("strip_prefix", "strip_suffix", "regex") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("a crop rule gives exactly one of strip_prefix, strip_suffix, regex")
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise ValueError(f"regex {self.regex!r} does not compile: {exc}") from exc
        return self

    def apply(self, sku: str) -> str:
        if self.strip_prefix is not None:
            return sku.removeprefix(self.strip_prefix)
        if self.strip_suffix is not None:
            return sku.removesuffix(self.strip_suffix)
        return re.sub(self.regex or "", self.replace, sku)


class Channel(_Frozen):
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")]
    seller_id: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9]+$")]
    region: Region = "na"
    marketplaces: Annotated[tuple[str, ...], Field(min_length=1, max_length=50)]
    active: bool = True
    orders_api: OrdersApiVersion = "2026-01-01"
    fulfillment_channels: tuple[FulfillmentChannel, ...] = ("MFN", "AFN")
    #: Orders first seen in another status are not imported (Pending ones are held until paid);
    #: changes to orders already imported always flow on.
    import_statuses: tuple[ImportableStatus, ...] = (
        "Unshipped",
        "PartiallyShipped",
        "Shipped",
        "InvoiceUnconfirmed",
    )
    credentials: LwaCredentials
    rate_limits: dict[str, UsagePlan] = Field(default_factory=dict)
    sales_order_prefix: Annotated[str, Field(max_length=16)] = "SO"
    default_carrier: str | None = Field(
        None, description="Carrier name on write-back when the back-office gives none."
    )
    writeback_mode: Literal["feed", "confirm", "auto"] | None = Field(
        None, description="Shipment write-back mode of this channel (None: settings.writeback.mode)."
    )
    fetch_pii: bool = Field(
        False,
        description="Ask Amazon for buyers' personal data (name, e-mail, the recipient's street and phone):"
        " Restricted Data Tokens on Orders v0, includedData BUYER and RECIPIENT on 2026-01-01. Needs the"
        " application's restricted roles and a purpose Amazon's Data Protection Policy allows (shipping"
        " the seller's own orders, tax, invoicing). Without it, v0 orders carry city, region, postal code"
        " and country, and 2026-01-01 orders no address.",
    )
    personal_data_retention_days: int = Field(
        30,
        ge=30,
        le=3650,
        description="Days after delivery this channel's buyers' personal data is kept (Amazon's Data"
        " Protection Policy: 30, more only where a law requires it; the reason is then required).",
    )
    personal_data_retention_reason: Annotated[str, Field(min_length=3, max_length=500)] | None = Field(
        None,
        description="The law that requires keeping personal data beyond 30 days after delivery (e.g. a"
        " tax code's invoice retention); recorded with every data key it governs.",
    )
    delivery_allowance_days: int = Field(
        14,
        ge=1,
        le=90,
        description="When Amazon promises no delivery date: days after the latest ship date an order"
        " counts as delivered (its personal data's 30 days start then).",
    )
    stock_buffer_units: int = Field(
        0,
        ge=0,
        description="Units of each SKU held back from Amazon (sent: quantity minus this, at least 0).",
    )
    stock_buffer_share: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Share of each SKU's quantity held back from Amazon (0.1: 90 % offered, rounded down),"
        " before stock_buffer_units.",
    )
    #: "stock only": no order of this channel is imported (stock levels still flow).
    sync_level: SyncLevel = "orders and stock"
    product_identification: ProductIdentification = "seller_sku"
    #: Applied in order to the seller SKU before mapping (e.g. strip "FBA-", a "-NEW" suffix).
    sku_crop: tuple[SkuCropRule, ...] = ()
    default_shipping_service: str | None = Field(
        None,
        description="Shipping service on shipment upload when the back-office's does not match one"
        " Amazon allows.",
    )
    default_shipping_method: str | None = Field(
        None,
        description="Shipping method on the sales order; also the carrier name on write-back when the"
        " back-office gives none.",
    )
    cancellation_reason: str | None = Field(
        None, description="Reason sent to Amazon when the back-office cancels an order."
    )
    ignore_amazon_tax: bool = Field(False, description="Book no tax from Amazon on the sales order.")
    prices_include_tax: bool = Field(
        False, description="Amazon's prices already include the tax (VAT marketplaces)."
    )
    upload_order_status: bool = Field(
        True, description="False: the channel's \u201cdon't upload order status\u201d, no write-back."
    )
    acknowledge_orders: bool = Field(
        False,
        description="Tell Amazon each imported order's sales-order code (MerchantOrderID, shown as"
        " SellerOrderId) by an order acknowledgement with StatusCode Success, batched per seller on the"
        " createFeed lane `acknowledgement` (after shipments; stock keeps its reserved feed). Nothing is"
        " sent with upload_order_status false.",
    )

    @model_validator(mode="before")
    @classmethod
    def _carrier_from_shipping_method(cls, data: object) -> object:
        # The default order shipping method is also the carrier name on write-back, unless a
        # default_carrier is given.
        if isinstance(data, dict) and data.get("default_shipping_method") and not data.get("default_carrier"):
            return {**data, "default_carrier": data["default_shipping_method"]}
        return data

    @model_validator(mode="after")
    def _retention_has_a_reason(self) -> Channel:
        if self.personal_data_retention_days > 30 and not (self.personal_data_retention_reason or "").strip():
            raise ValueError(
                "personal_data_retention_days above 30 needs personal_data_retention_reason: the law that"
                " requires it (Amazon allows longer retention only for that)"
            )
        return self

    def inline_secrets(self) -> list[str]:
        """The credentials given inline (``value``), which only the channels file may hold."""
        creds = self.credentials
        refs = {
            "client_id": creds.client_id,
            "client_secret": creds.client_secret,
            "refresh_token": creds.refresh_token,
        }
        return [name for name, ref in refs.items() if ref.value is not None]

    def stored_secrets(self) -> list[str]:
        """The credentials kept in the secret store (opened by the stage that uses the channel)."""
        creds = self.credentials
        refs = {
            "client_id": creds.client_id,
            "client_secret": creds.client_secret,
            "refresh_token": creds.refresh_token,
        }
        return [name for name, ref in refs.items() if getattr(ref, "store", None) is not None]

    def offered(self, quantity: int) -> int:
        """What Amazon is told of ``quantity`` in stock: less the channel's buffer, never below 0."""
        return max(0, int(quantity * (1 - self.stock_buffer_share)) - self.stock_buffer_units)

    def crop_sku(self, sku: str) -> str:
        for rule in self.sku_crop:
            sku = rule.apply(sku)
        return sku

    @field_validator("marketplaces")
    @classmethod
    def _no_duplicate_marketplaces(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError("a marketplace is listed twice")
        return value


class ChannelsFile(_Frozen):
    channels: tuple[Channel, ...]

    @field_validator("channels")
    @classmethod
    def _unique(cls, value: tuple[Channel, ...]) -> tuple[Channel, ...]:
        names = [c.name for c in value]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"channel names must be unique: {', '.join(dupes)}")
        sellers = [(c.seller_id, c.region) for c in value]
        dup_sellers = sorted({s for s, r in sellers if sellers.count((s, r)) > 1})
        if dup_sellers:
            raise ValueError(f"one channel per seller and region: {', '.join(dup_sellers)}")
        return value

    def by_name(self, name: str) -> Channel:
        for channel in self.channels:
            if channel.name == name:
                return channel
        raise UnknownChannel(f"no channel named {name!r} (known: {', '.join(self.names())})")

    def by_seller(self, seller_id: str) -> Channel:
        for channel in self.channels:
            if channel.seller_id == seller_id:
                return channel
        raise UnknownChannel(f"no channel for seller {seller_id!r}")

    def selling(self, seller_id: str, marketplace_id: str) -> Channel:
        """The channel of ``seller_id`` that sells in ``marketplace_id``."""
        for channel in self.channels:
            if channel.seller_id == seller_id and marketplace_id in channel.marketplaces:
                return channel
        raise UnknownChannel(f"no channel of seller {seller_id!r} sells in marketplace {marketplace_id!r}")

    def names(self) -> list[str]:
        return [c.name for c in self.channels]

    def active(self) -> tuple[Channel, ...]:
        return tuple(c for c in self.channels if c.active)


def load_channels(path: Path) -> ChannelsFile:
    """Read and validate the channels file; every problem is reported with its location."""
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigurationError(f"channels file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"channels file {path}: not valid YAML: {exc}") from exc
    try:
        return ChannelsFile.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
        raise ConfigurationError(f"channels file {path}: {problems}") from exc
