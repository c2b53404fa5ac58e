"""Buyers' personal data masked in what people are shown without the right to read it (dead letters
on the dashboard and in ``ordersync dlq show``): by field name, wherever it sits in an event, since a
dead letter may be another system's record that never went through the sealing."""

from __future__ import annotations

from typing import Any

#: Fields that hold a buyer's personal data wherever they appear in an event; an address object is
#: masked whole but for its country.
PERSONAL_FIELDS = frozenset(
    {"buyer_name", "buyer_email", "customer_name", "customer_email", "name", "phone", "email", "gift_message"}
)
ADDRESS_FIELDS = frozenset({"shipping_address", "address", "ship_to", "ship_from_address"})
MASK = "•••"


def mask_personal(value: Any, *, in_address: bool = False) -> Any:
    """``value`` (a decoded event) with the buyer's personal data replaced by a mask."""
    if isinstance(value, dict):
        masked: dict[str, Any] = {}
        for key, item in value.items():
            if item is None:
                masked[key] = None
            elif in_address and key != "country_code":
                masked[key] = MASK
            elif key in ADDRESS_FIELDS:
                masked[key] = mask_personal(item, in_address=True)
            elif key in PERSONAL_FIELDS and not isinstance(item, (dict, list)):
                masked[key] = MASK
            else:
                masked[key] = mask_personal(item)
        return masked
    if isinstance(value, list):
        return [mask_personal(item, in_address=in_address) for item in value]
    return value
