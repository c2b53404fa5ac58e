"""Buyers' personal data under Amazon's Data Protection Policy: sealed field by field with a data key
per seller and day of delivery, the keys wrapped and kept apart, destroyed 30 days after the day.

The package itself holds the sealing (:mod:`ordersync.privacy.sealing`; the sealed value is the event
schemas' ``Sealed``); the key ring, which talks to S3 and KMS, is :mod:`ordersync.privacy.keyring`, and
what of an order is personal, :mod:`ordersync.privacy.orders`."""

from ordersync.privacy.sealing import (
    RETENTION_DAYS,
    DataKey,
    key_id_for,
    new_kek,
    retention_of,
    seal,
    shred_after,
    unseal,
)

__all__ = [
    "RETENTION_DAYS",
    "DataKey",
    "key_id_for",
    "new_kek",
    "retention_of",
    "seal",
    "shred_after",
    "unseal",
]
