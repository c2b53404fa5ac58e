"""Buyers' personal data opened for those allowed to read it, and only for them.

Who may: the dashboard's operator (the operator token), whoever runs the CLI with the key-encryption
key (``orders show --personal``, ``export failed --personal``), and a back-office adapter given the same
keys (:func:`open_sales_order`: the sales order with its customer and address in the clear, to ship
it). Everyone else sees the data masked or not at all. Every opening is logged on the
``ordersync.privacy.access`` logger with the order, the reader and the purpose, never the data (the
audit trail Amazon's policy asks for).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from ordersync.errors import PersonalDataErased, PersonalDataExpired
from ordersync.privacy.orders import PERSONAL_ADDRESS_FIELDS, open_sealed
from ordersync.schemas.events import SalesOrder, Sealed

if TYPE_CHECKING:
    from ordersync.privacy.keyring import KeyRing

access_log = logging.getLogger("ordersync.privacy.access")

#: How each personal field (as :func:`ordersync.privacy.orders.personal_fields` names it) is labelled.
LABELS: Mapping[str, str] = {
    "buyer_name": "Buyer",
    "buyer_email": "Buyer e-mail",
    "address.name": "Ship to",
    "address.line1": "Address line 1",
    "address.line2": "Address line 2",
    "address.line3": "Address line 3",
    "address.postal_code": "Postal code",
    "address.phone": "Phone",
}

#: open: here it is; hidden: this reader may not see it; none: nothing kept; expired / erased: gone;
#: not imported: no sales order yet; no key: no key-encryption key (or key store) where this runs.
BuyerState = Literal["open", "hidden", "none", "expired", "erased", "not imported", "no key"]


@dataclass(frozen=True)
class BuyerData:
    """An order's personal data as a permitted reader gets it: open, or why not."""

    state: BuyerState
    fields: Mapping[str, str] = field(default_factory=dict)
    note: str = ""

    def labelled(self) -> list[tuple[str, str]]:
        """(label, value) in a stable order, gift messages last."""
        shown = [(LABELS[name], self.fields[name]) for name in LABELS if self.fields.get(name)]
        shown += [
            (f"Gift message ({name.removeprefix('gift_message.')})", value)
            for name, value in sorted(self.fields.items())
            if name.startswith("gift_message.")
        ]
        return shown

    def as_json(self) -> dict[str, object]:
        return {"state": self.state, "fields": dict(self.fields), "note": self.note}


async def open_for_reader(
    sealed: Sealed | None, subject: str, ring: KeyRing | None, *, reader: str, purpose: str
) -> BuyerData:
    """``sealed`` (the personal data of ``subject``, ``seller:order``) opened for ``reader``, who needs
    it for ``purpose``; the opening is logged. Never raises for data that is gone: it says so."""
    if sealed is None:
        return BuyerData("none", note="no personal data kept (the channel does not fetch it, or none came)")
    if ring is None:
        return BuyerData("no key", note="no key-encryption key is configured where this runs")
    try:
        fields = await open_sealed(sealed, subject, ring)
    except PersonalDataErased as exc:
        return BuyerData("erased", note=str(exc))
    except PersonalDataExpired as exc:
        return BuyerData("expired", note=str(exc))
    access_log.info("personal data of %s opened by %s for %s", subject, reader, purpose)
    return BuyerData("open", fields)


async def buyer_data(
    order: SalesOrder | None, ring: KeyRing | None, *, reader: str, purpose: str
) -> BuyerData:
    """The personal data of a stored sales order (None: the order is not imported yet)."""
    if order is None:
        return BuyerData("not imported", note="the order is not imported yet: no sales order holds its data")
    subject = f"{order.seller_id}:{order.amazon_order_id}"
    return await open_for_reader(order.personal, subject, ring, reader=reader, purpose=purpose)


async def open_sales_order(order: SalesOrder, ring: KeyRing, *, reader: str) -> SalesOrder:
    """For a back-office adapter that ships or invoices: ``order`` with its customer and delivery
    address in the clear. :class:`PersonalDataExpired` once its key is gone (or
    :class:`PersonalDataErased`): ship with what is left, or ask the seller."""
    if order.personal is None:
        return order
    subject = f"{order.seller_id}:{order.amazon_order_id}"
    fields = await open_sealed(order.personal, subject, ring)
    access_log.info("personal data of %s opened by %s for shipping", subject, reader)
    update: dict[str, object] = {
        "customer_name": fields.get("buyer_name") or fields.get("address.name"),  # as the import books it
        "customer_email": fields.get("buyer_email"),
        "personal": None,
    }
    if order.shipping_address is not None:
        update["shipping_address"] = order.shipping_address.model_copy(
            update={name: fields.get(f"address.{name}") for name in PERSONAL_ADDRESS_FIELDS}
        )
    return order.model_copy(update=update)
