"""Buyers' personal data under Amazon's Data Protection Policy: sealed field by field with a data key
per seller and day of delivery, the keys wrapped and kept apart, destroyed 30 days after the day."""

from ordersync.privacy.keyring import KeyRing, new_kek, open_key_ring
from ordersync.privacy.sealing import RETENTION_DAYS, DataKey, Sealed, key_id_for, seal, shred_after, unseal

__all__ = [
    "RETENTION_DAYS",
    "DataKey",
    "KeyRing",
    "Sealed",
    "key_id_for",
    "new_kek",
    "open_key_ring",
    "seal",
    "shred_after",
    "unseal",
]
