"""Personal fields sealed with AES-GCM (``cryptography``), bound to the order they belong to.

A :class:`Sealed` value is what travels in events and sits in Redis in place of the fields: the name of
the data key (seller and day of delivery), a fresh 96-bit nonce and the ciphertext of the fields as
JSON. The associated data binds it to its key and its subject (seller and order): a sealed value moved
to another order does not open.
"""

from __future__ import annotations

import base64
import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ordersync.errors import InvalidEvent
from ordersync.schemas.events import DATA_KEY_ID, Sealed

#: AES-256 keys; Amazon's policy asks for AES-128 or stronger.
KEY_BYTES = 32
NONCE_BYTES = 12
#: Days after the day of delivery ends before that day's keys are destroyed (Amazon's Data Protection
#: Policy: personal data no longer than 30 days after delivery, unless a law requires more).
RETENTION_DAYS = 30
#: The key of one seller's orders delivered (at the latest) on one day (UTC). A day, not a week: the
#: data is gone 30 to 31 days after delivery, never 37.
KEY_ID = re.compile(DATA_KEY_ID)


@dataclass(frozen=True)
class DataKey:
    """A data key in the clear (memory only, never written anywhere unwrapped)."""

    key_id: str
    secret: bytes
    shred_after: datetime

    def __repr__(self) -> str:  # never the secret, in a log or a traceback
        return f"DataKey({self.key_id!r}, shred_after={self.shred_after.isoformat()})"


def new_kek() -> str:
    """A fresh local key-encryption key, base64 (for ``ORDERSYNC_PRIVACY__KEK``)."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode()


def key_id_for(seller_id: str, delivered_by: datetime, retention_days: int = RETENTION_DAYS) -> str:
    """The data key of ``seller_id``'s orders delivered (at the latest) on ``delivered_by``'s day (UTC),
    kept ``retention_days`` after that day. The retention is part of the name, so a channel that must
    keep data longer never shares a key with one that must not, and the key says when it goes."""
    if retention_days < RETENTION_DAYS:
        raise ValueError(f"personal data is kept at least {RETENTION_DAYS} days after delivery")
    day = delivered_by.astimezone(UTC).date().isoformat()
    suffix = "" if retention_days == RETENTION_DAYS else f"/r{retention_days}"
    return f"{seller_id}/{day}{suffix}"


def retention_of(key_id: str) -> int:
    """The days after its day that ``key_id`` is kept."""
    match = KEY_ID.match(key_id)
    if match is None:
        raise ValueError(f"not a data key name: {key_id!r}")
    return int(match["days"]) if match["days"] else RETENTION_DAYS


def shred_after(key_id: str) -> datetime:
    """When the key ``key_id`` must be destroyed: its retention after its day ends."""
    match = KEY_ID.match(key_id)
    if match is None:
        raise ValueError(f"not a data key name: {key_id!r}")
    try:
        day = datetime.fromisoformat(match["day"]).replace(tzinfo=UTC)
    except ValueError as exc:
        raise ValueError(f"not a data key name: {key_id!r}") from exc
    return day + timedelta(days=1 + retention_of(key_id))


def _associated(key_id: str, subject: str) -> bytes:
    return f"ordersync/1|{key_id}|{subject}".encode()


def seal(fields: dict[str, str], key: DataKey, subject: str) -> Sealed:
    """``fields`` encrypted with ``key`` for ``subject`` (``seller_id:amazon_order_id``)."""
    nonce = os.urandom(NONCE_BYTES)
    plain = json.dumps(fields, separators=(",", ":"), sort_keys=True).encode()
    ciphertext = AESGCM(key.secret).encrypt(nonce, plain, _associated(key.key_id, subject))
    return Sealed(
        key_id=key.key_id,
        nonce=base64.b64encode(nonce).decode(),
        ciphertext=base64.b64encode(ciphertext).decode(),
    )


def unseal(sealed: Sealed, key: DataKey, subject: str) -> dict[str, str]:
    """The fields ``sealed`` holds; :class:`InvalidEvent` when it was altered or is another subject's."""
    if key.key_id != sealed.key_id:
        raise ValueError(f"{sealed.key_id} is not opened by {key.key_id}")
    try:
        plain = AESGCM(key.secret).decrypt(
            base64.b64decode(sealed.nonce, validate=True),
            base64.b64decode(sealed.ciphertext, validate=True),
            _associated(key.key_id, subject),
        )
    except (InvalidTag, ValueError) as exc:
        raise InvalidEvent(f"sealed personal data of {subject} does not open: altered or misplaced") from exc
    fields = json.loads(plain)
    if not isinstance(fields, dict) or not all(isinstance(v, str) for v in fields.values()):
        raise InvalidEvent(f"sealed personal data of {subject} is not a set of fields")
    return fields
