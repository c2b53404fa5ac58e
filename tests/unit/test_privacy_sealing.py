"""Personal fields sealed with AES-GCM: they open only with their key, for their own order, unaltered;
each day of deliveries has its key, destroyed 30 days after the day."""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime, timedelta, timezone

import pytest

from ordersync.errors import ConfigurationError, InvalidEvent
from ordersync.privacy import DataKey, key_id_for, new_kek, retention_of, seal, shred_after, unseal
from ordersync.privacy.keyring import LocalWrapper
from ordersync.schemas.events import Sealed

pytestmark = pytest.mark.unit

SUBJECT = "A1ACME:111-1111111-1111111"
FIELDS = {"buyer_name": "Jane Buyer", "line1": "1 Main St", "phone": "+1 555 0100"}


def _key(key_id: str = "A1ACME/2026-12-03") -> DataKey:
    return DataKey(key_id, os.urandom(32), shred_after(key_id))


def test_sealed_fields_open_with_their_key_for_their_order() -> None:
    key = _key()
    sealed = seal(FIELDS, key, SUBJECT)
    assert "Jane" not in sealed.model_dump_json()
    assert unseal(sealed, key, SUBJECT) == FIELDS
    # A fresh nonce each time: the same fields never seal to the same text.
    assert seal(FIELDS, key, SUBJECT).ciphertext != sealed.ciphertext


def test_sealed_fields_do_not_open_for_another_order_or_altered() -> None:
    key = _key()
    sealed = seal(FIELDS, key, SUBJECT)
    with pytest.raises(InvalidEvent, match="does not open"):
        unseal(sealed, key, "A1ACME:222-2222222-2222222")
    raw = bytearray(base64.b64decode(sealed.ciphertext))
    raw[0] ^= 1
    altered = sealed.model_copy(update={"ciphertext": base64.b64encode(bytes(raw)).decode()})
    with pytest.raises(InvalidEvent, match="does not open"):
        unseal(altered, key, SUBJECT)
    with pytest.raises(InvalidEvent, match="does not open"):
        unseal(sealed, DataKey(key.key_id, os.urandom(32), key.shred_after), SUBJECT)


def test_a_data_key_never_shows_its_secret() -> None:
    key = _key()
    assert key.secret.hex() not in repr(key)
    assert base64.b64encode(key.secret).decode() not in f"{key}"


def test_each_day_of_deliveries_has_its_key_destroyed_thirty_days_after_the_day() -> None:
    key_id = key_id_for("A1ACME", datetime(2026, 12, 3, 15, tzinfo=UTC))
    assert key_id == "A1ACME/2026-12-03"
    assert key_id_for("A1ACME", datetime(2026, 12, 3, 23, 59, tzinfo=UTC)) == key_id
    # The day is UTC's: 20:00 in New York on 12-03 is 12-04.
    new_york = timezone(timedelta(hours=-5))
    assert key_id_for("A1ACME", datetime(2026, 12, 3, 20, tzinfo=new_york)) == "A1ACME/2026-12-04"
    assert shred_after(key_id) == datetime(2027, 1, 3, tzinfo=UTC)  # 12-04 00:00 + 30 days
    with pytest.raises(ValueError, match="not a data key"):
        shred_after("A1ACME/2026-02-30")


def test_a_longer_retention_by_law_is_its_own_key_that_says_when_it_goes() -> None:
    delivered = datetime(2026, 12, 3, 15, tzinfo=UTC)
    ten_years = key_id_for("A1ACME", delivered, retention_days=3650)
    assert ten_years == "A1ACME/2026-12-03/r3650"
    assert ten_years != key_id_for("A1ACME", delivered)
    assert retention_of(ten_years) == 3650
    assert retention_of("A1ACME/2026-12-03") == 30
    assert shred_after(ten_years) == datetime(2026, 12, 4, tzinfo=UTC) + timedelta(days=3650)
    assert key_id_for("A1ACME", delivered, retention_days=30) == "A1ACME/2026-12-03"
    with pytest.raises(ValueError, match="at least 30 days"):
        key_id_for("A1ACME", delivered, retention_days=7)
    Sealed(key_id=ten_years, nonce="A" * 16, ciphertext="A" * 24)  # events carry it


def test_a_sealed_value_is_checked_before_it_is_opened() -> None:
    with pytest.raises(ValueError, match="key_id"):
        Sealed(key_id="../../etc", nonce="A" * 16, ciphertext="A" * 24)


async def test_a_local_key_encryption_key_wraps_and_rotation_keeps_old_keys_readable() -> None:
    old, new = new_kek(), new_kek()
    before = LocalWrapper("k1", {"k1": old})
    secret = os.urandom(32)
    wrapped = await before.wrap(secret, "A1ACME/2026-12-03")
    assert secret not in wrapped
    after = LocalWrapper("k2", {"k1": old, "k2": new})
    assert after.name == "local:k2"
    assert await after.unwrap(wrapped, "A1ACME/2026-12-03", before.name) == secret
    # The wrapped key belongs to its name: it does not unwrap as another day's.
    with pytest.raises(ConfigurationError, match="does not unwrap"):
        await after.unwrap(wrapped, "A1ACME/2026-12-04", before.name)
    # A retired key no longer configured: a clear error, not garbage.
    with pytest.raises(ConfigurationError, match="not configured"):
        await LocalWrapper("k2", {"k2": new}).unwrap(wrapped, "A1ACME/2026-12-03", before.name)


def test_a_key_encryption_key_must_be_thirty_two_bytes() -> None:
    with pytest.raises(ConfigurationError, match="32 bytes"):
        LocalWrapper("k1", {"k1": base64.b64encode(b"short").decode()})
    with pytest.raises(ConfigurationError, match="32 bytes"):
        LocalWrapper("k1", {"k1": "not base64!"})
