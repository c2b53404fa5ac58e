"""Which parts of an order are the buyer's personal data, and the order with them sealed or opened.

Personal (Amazon's "Access Orders PII" list for Orders 2026-01-01, which v0's restricted data matches):
the buyer's name and e-mail, the delivery address's name, lines, postal code and phone, and gift
messages. The rest stays readable (city, region, country, items, money, dates) so routing, dedupe, the
import and the status model work without any key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from ordersync.errors import PersonalDataExpired
from ordersync.privacy.sealing import RETENTION_DAYS, DataKey, key_id_for, seal, unseal
from ordersync.schemas.events import AmazonOrder, Sealed

if TYPE_CHECKING:
    from ordersync.channels import Channel
    from ordersync.privacy.keyring import KeyRing

#: The address fields that identify a person; city, county, region and country do not.
PERSONAL_ADDRESS_FIELDS = ("name", "line1", "line2", "line3", "postal_code", "phone")
#: Delivery assumed this long after the latest ship date when Amazon gives no delivery promise ...
SHIP_TO_DELIVERY = timedelta(days=14)
#: ... or after the purchase when it gives neither (a Pending order).
PURCHASE_TO_DELIVERY = timedelta(days=30)


def subject(order: AmazonOrder) -> str:
    """What a sealed value is bound to: the seller's order."""
    return f"{order.seller_id}:{order.amazon_order_id}"


def personal_fields(order: AmazonOrder) -> dict[str, str]:
    """The order's personal data in the clear, by field (empty when it carries none)."""
    fields: dict[str, str] = {}
    if order.buyer_name:
        fields["buyer_name"] = order.buyer_name
    if order.buyer_email:
        fields["buyer_email"] = order.buyer_email
    address = order.shipping_address
    if address is not None:
        for name in PERSONAL_ADDRESS_FIELDS:
            value = getattr(address, name)
            if value:
                fields[f"address.{name}"] = value
    for item in order.items or ():
        if item.gift_message:
            fields[f"gift_message.{item.order_item_id}"] = item.gift_message
    return fields


def without_personal(order: AmazonOrder) -> AmazonOrder:
    """The order with every personal field emptied (and nothing sealed)."""
    update: dict[str, object] = {"buyer_name": None, "buyer_email": None, "personal": None}
    if order.shipping_address is not None:
        update["shipping_address"] = order.shipping_address.model_copy(
            update=dict.fromkeys(PERSONAL_ADDRESS_FIELDS)
        )
    if order.items is not None:
        update["items"] = tuple(item.model_copy(update={"gift_message": None}) for item in order.items)
    return order.model_copy(update=update)


def with_personal(order: AmazonOrder, fields: dict[str, str]) -> AmazonOrder:
    """The order with ``fields`` (as :func:`personal_fields` names them) back in the clear."""
    update: dict[str, object] = {
        "buyer_name": fields.get("buyer_name"),
        "buyer_email": fields.get("buyer_email"),
        "personal": None,
    }
    if order.shipping_address is not None:
        update["shipping_address"] = order.shipping_address.model_copy(
            update={name: fields.get(f"address.{name}") for name in PERSONAL_ADDRESS_FIELDS}
        )
    if order.items is not None:
        update["items"] = tuple(
            item.model_copy(update={"gift_message": fields.get(f"gift_message.{item.order_item_id}")})
            for item in order.items
        )
    return order.model_copy(update=update)


@dataclass(frozen=True)
class Retention:
    """How long a channel keeps its buyers' personal data: ``days`` after delivery (30 unless a law,
    named by ``reason``, requires more), delivery assumed ``ship_to_delivery`` after the latest ship date
    when Amazon promises none."""

    days: int = RETENTION_DAYS
    reason: str | None = None
    ship_to_delivery: timedelta = SHIP_TO_DELIVERY

    @classmethod
    def of(cls, channel: Channel) -> Retention:
        return cls(
            channel.personal_data_retention_days,
            channel.personal_data_retention_reason,
            timedelta(days=channel.delivery_allowance_days),
        )


def delivered_by(order: AmazonOrder, ship_to_delivery: timedelta = SHIP_TO_DELIVERY) -> datetime:
    """When the order's personal data's retention starts: the start of Amazon's delivery promise (so a
    delivery on time is followed by at most the retention, never more), else its end, else the latest
    ship date plus ``ship_to_delivery``, else the purchase plus :data:`PURCHASE_TO_DELIVERY`."""
    if order.earliest_delivery_date is not None:
        return order.earliest_delivery_date
    if order.latest_delivery_date is not None:
        return order.latest_delivery_date
    if order.latest_ship_date is not None:
        return order.latest_ship_date + ship_to_delivery
    return order.purchase_date + PURCHASE_TO_DELIVERY


def key_id_of(order: AmazonOrder, retention: Retention) -> str:
    """The data key ``order``'s personal data is sealed with under ``retention``."""
    return key_id_for(order.seller_id, delivered_by(order, retention.ship_to_delivery), retention.days)


def sealed_with(order: AmazonOrder, key: DataKey) -> AmazonOrder:
    """The order with its personal fields sealed with ``key`` into ``personal`` and emptied."""
    sealed: Sealed = seal(personal_fields(order), key, subject(order))
    return without_personal(order).model_copy(update={"personal": sealed})


async def seal_order(order: AmazonOrder, ring: KeyRing, retention: Retention | None = None) -> AmazonOrder:
    """The order with its personal data sealed under the key of its day of delivery and retention; an
    order whose data may no longer be kept (its retention after that day ended) loses it instead.
    Already sealed: unchanged."""
    if order.personal is not None:
        return order
    if not personal_fields(order):
        return order
    retention = retention or Retention()
    try:
        key = await ring.sealing_key(key_id_of(order, retention), reason=retention.reason)
        await ring.check_not_erased(key.key_id, subject(order))
    except PersonalDataExpired:  # its time is up, or it was erased: Amazon's copy is not kept again
        return without_personal(order)
    return sealed_with(order, key)


async def open_order(order: AmazonOrder, ring: KeyRing) -> AmazonOrder:
    """The order with its personal data in the clear; :class:`PersonalDataExpired` once its key is gone
    (:class:`PersonalDataErased` once it was erased)."""
    if order.personal is None:
        return order
    return with_personal(order, await open_sealed(order.personal, subject(order), ring))


async def open_sealed(sealed: Sealed, subject: str, ring: KeyRing) -> dict[str, str]:
    """The fields ``sealed`` holds for ``subject``; :class:`PersonalDataExpired` once its key is gone,
    :class:`PersonalDataErased` once the subject's data was erased."""
    key = await ring.opening_key(sealed.key_id)
    await ring.check_not_erased(sealed.key_id, subject)
    return unseal(sealed, key, subject)
