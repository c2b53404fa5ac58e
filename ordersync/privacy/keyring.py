"""The data keys of buyers' personal data: made on first use, kept wrapped in S3 apart from the data,
opened on demand, destroyed when their retention ends.

- **Wrapping**: each data key is encrypted by a key-encryption key before it is stored: a local one
  from the settings (``privacy.kek``, AES-GCM) or an AWS KMS key (``privacy.kms_key_id``; Encrypt and
  Decrypt with the key's name as encryption context). The stored record names the wrapping key, so a
  rotated key-encryption key still opens the keys it wrapped (``privacy.previous_keks``) until
  :meth:`KeyRing.rewrap` has wrapped them all with the current one; no downtime.
- **Storage**: one S3 object per key (``dek/<seller>/<YYYY-MM-DD>.json``), created only if absent
  (S3's conditional write), so two stages making the same day's key at once agree on one.
- **Shredding**: :meth:`KeyRing.shred_due` deletes every key whose day ended its retention ago (30 days,
  or the longer one its name carries);
  a key asked for after that (or for a day already past it) raises :class:`PersonalDataExpired`, and
  keys opened in memory are forgotten by then.

- **Erasure**: :meth:`KeyRing.erase` marks one order's data erased beside its key
  (``erased/<key>/<seller>:<order>.json``); no worker opens or seals it again, and the marks go with
  the key.

- **Erasure**: :meth:`KeyRing.erase` marks one order's data erased beside its key
  (``erased/<key>/<seller>:<order>.json``); no worker opens or seals it again, and the marks go with
  the key.

Plain data keys live in process memory only, for at most ``CACHE_S``.
"""

from __future__ import annotations

import base64
import json
import os
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from ordersync.aws import aws_client, ensure_bucket
from ordersync.clock import Clock
from ordersync.errors import ConfigurationError, PersonalDataErased, PersonalDataExpired
from ordersync.keywrap import KeyWrapper, KmsWrapper, LocalWrapper
from ordersync.privacy.sealing import KEY_BYTES, DataKey, retention_of, shred_after
from ordersync.settings import AwsSettings, PrivacySettings

#: How long an opened data key stays in memory (never past its shredding).
CACHE_S = 600.0
#: How long a worker trusts its list of a key's erased orders: an erasure reaches every stage this soon.
ERASURES_CACHE_S = 60.0
KEY_PREFIX = "dek/"
ERASED_PREFIX = "erased/"
#: A destroyed key leaves a marker, so a worker whose clock runs behind never makes it again ...
SHREDDED_PREFIX = "shredded/"
#: ... kept this long after the key was due, then removed.
SHREDDED_MARKER_KEPT = timedelta(days=366)


@dataclass(frozen=True)
class StoredKey:
    """A data key as kept: wrapped, with the name of what wrapped it."""

    key_id: str
    wrapped: bytes
    wrapped_by: str
    created_at: str
    #: Why the key is kept longer than 30 days after its day (the law the channel names), if it is.
    retention_reason: str | None = None

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "key_id": self.key_id,
                "wrapped": base64.b64encode(self.wrapped).decode(),
                "wrapped_by": self.wrapped_by,
                "created_at": self.created_at,
                "retention_days": retention_of(self.key_id),
                "retention_reason": self.retention_reason,
            }
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> StoredKey:
        data = json.loads(raw)
        return cls(
            data["key_id"],
            base64.b64decode(data["wrapped"]),
            data["wrapped_by"],
            data["created_at"],
            data.get("retention_reason"),
        )


def _missing(exc: ClientError) -> bool:
    return str(exc.response.get("Error", {}).get("Code")) in {"NoSuchKey", "404", "NotFound"}


class S3KeyStore:
    """The wrapped keys in an S3 bucket, one object each."""

    def __init__(self, s3: Any, bucket: str) -> None:
        self._s3 = s3
        self.bucket = bucket

    @staticmethod
    def _object(key_id: str) -> str:
        return f"{KEY_PREFIX}{key_id}.json"

    @staticmethod
    def _erasure(key_id: str, subject: str) -> str:
        return f"{ERASED_PREFIX}{key_id}/{subject}.json"

    async def ensure_bucket(self) -> None:
        await ensure_bucket(self._s3, self.bucket)

    async def get(self, key_id: str) -> StoredKey | None:
        try:
            answer = await self._s3.get_object(Bucket=self.bucket, Key=self._object(key_id))
        except ClientError as exc:
            if _missing(exc):
                return None
            raise
        async with answer["Body"] as body:
            return StoredKey.from_json(await body.read())

    async def create(self, key: StoredKey) -> bool:
        """Store ``key`` unless one of that name exists; whether it was stored."""
        try:
            await self._s3.put_object(
                Bucket=self.bucket, Key=self._object(key.key_id), Body=key.to_json(), IfNoneMatch="*"
            )
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code"))
            if code in {"PreconditionFailed", "412", "ConditionalRequestConflict"}:
                return False
            raise
        return True

    async def replace(self, key: StoredKey) -> None:
        await self._s3.put_object(Bucket=self.bucket, Key=self._object(key.key_id), Body=key.to_json())

    async def delete(self, key_id: str) -> None:
        await self._s3.delete_object(Bucket=self.bucket, Key=self._object(key_id))

    async def _names(self, prefix: str) -> list[str]:
        found: list[str] = []
        paginator = self._s3.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for entry in page.get("Contents") or []:
                found.append(str(entry["Key"]).removeprefix(prefix).removesuffix(".json"))
        return found

    async def key_ids(self) -> list[str]:
        return await self._names(KEY_PREFIX)

    async def add_erasure(self, key_id: str, subject: str, record: bytes) -> None:
        """Note that ``subject``'s data sealed with ``key_id`` was erased (kept beside the key, and
        destroyed with it)."""
        await self._s3.put_object(Bucket=self.bucket, Key=self._erasure(key_id, subject), Body=record)

    async def erasures(self, key_id: str) -> set[str]:
        """The subjects erased from ``key_id``'s data."""
        return set(await self._names(f"{ERASED_PREFIX}{key_id}/"))

    async def mark_shredded(self, key_id: str, at: str) -> None:
        body = json.dumps({"key_id": key_id, "shredded_at": at}).encode()
        await self._s3.put_object(Bucket=self.bucket, Key=f"{SHREDDED_PREFIX}{key_id}.json", Body=body)

    async def is_shredded(self, key_id: str) -> bool:
        try:
            await self._s3.head_object(Bucket=self.bucket, Key=f"{SHREDDED_PREFIX}{key_id}.json")
        except ClientError as exc:
            if _missing(exc):
                return False
            raise
        return True

    async def shredded_ids(self) -> list[str]:
        return await self._names(SHREDDED_PREFIX)

    async def forget_shredded(self, key_id: str) -> None:
        await self._s3.delete_object(Bucket=self.bucket, Key=f"{SHREDDED_PREFIX}{key_id}.json")

    async def delete_erasures(self, key_id: str) -> None:
        for subject in await self.erasures(key_id):
            await self._s3.delete_object(Bucket=self.bucket, Key=self._erasure(key_id, subject))


class KeyRing:
    """Get-or-create, open, destroy and re-wrap data keys; the one door to them."""

    def __init__(self, store: S3KeyStore, wrapper: KeyWrapper, clock: Clock) -> None:
        self.store = store
        self.wrapper = wrapper
        self.clock = clock
        self._opened: dict[str, tuple[DataKey, float]] = {}
        self._erased: dict[str, tuple[frozenset[str], float]] = {}

    def _cached(self, key_id: str) -> DataKey | None:
        entry = self._opened.get(key_id)
        if entry is None:
            return None
        key, until = entry
        if time.monotonic() >= until or self.clock.now() >= key.shred_after:
            del self._opened[key_id]
            return None
        return key

    def _remember(self, key: DataKey) -> DataKey:
        self._opened[key.key_id] = (key, time.monotonic() + CACHE_S)
        return key

    def _expired(self, key_id: str, due: datetime) -> PersonalDataExpired:
        return PersonalDataExpired(
            f"personal data of {key_id} expired: its key was destroyed {retention_of(key_id)} days after"
            f" that day's deliveries ({due.date().isoformat()})"
        )

    async def _existing(self, key_id: str, due: datetime) -> DataKey | None:
        """The key ``key_id`` if it exists (from memory, else the store, unwrapped), None if it does not;
        :class:`PersonalDataExpired` once its retention ended."""
        if self.clock.now() >= due:
            raise self._expired(key_id, due)
        cached = self._cached(key_id)
        if cached is not None:
            return cached
        stored = await self.store.get(key_id)
        if stored is None:
            return None
        secret = await self.wrapper.unwrap(stored.wrapped, stored.key_id, stored.wrapped_by)
        return self._remember(DataKey(stored.key_id, secret, due))

    async def sealing_key(self, key_id: str, reason: str | None = None) -> DataKey:
        """The key to seal data of ``key_id`` with, made now if there is none yet (recording ``reason``,
        the law behind a retention beyond 30 days); an expired day raises :class:`PersonalDataExpired`
        (data that must not be kept is not sealed, it is dropped)."""
        due = shred_after(key_id)
        existing = await self._existing(key_id, due)
        if existing is not None:
            return existing
        if await self.store.is_shredded(key_id):
            raise self._expired(key_id, due)  # destroyed already, by a worker whose clock is ahead
        secret = os.urandom(KEY_BYTES)
        wrapped = await self.wrapper.wrap(secret, key_id)
        if await self.store.create(
            StoredKey(key_id, wrapped, self.wrapper.name, self.clock.now().isoformat(), reason)
        ):
            return self._remember(DataKey(key_id, secret, due))
        existing = await self._existing(key_id, due)  # made meanwhile by another worker: that one
        if existing is None:
            raise self._expired(key_id, due)  # made and destroyed meanwhile
        return existing

    async def opening_key(self, key_id: str) -> DataKey:
        """The key that opens data sealed with ``key_id``; :class:`PersonalDataExpired` once destroyed."""
        due = shred_after(key_id)
        existing = await self._existing(key_id, due)
        if existing is None:
            raise self._expired(key_id, due)
        return existing

    async def shred_due(self) -> list[str]:
        """Destroy every key whose retention ended; the names destroyed. Markers of keys destroyed more
        than :data:`SHREDDED_MARKER_KEPT` ago go too."""
        now = self.clock.now()
        destroyed = []
        for key_id in await self.store.key_ids():
            try:
                due = shred_after(key_id)
            except ValueError:
                continue  # not ordersync's
            if now >= due:
                await self.shred(key_id)
                destroyed.append(key_id)
        for key_id in await self.store.shredded_ids():
            try:
                old = now >= shred_after(key_id) + SHREDDED_MARKER_KEPT
            except ValueError:
                continue
            if old:
                await self.store.forget_shredded(key_id)
        return destroyed

    async def shred(self, key_id: str) -> None:
        """Destroy ``key_id`` now (its day's retention ended, or an operator destroys it early): every
        copy of what it sealed is unreadable from then on, and the key is never made again."""
        await self.store.mark_shredded(key_id, self.clock.now().isoformat())
        await self.store.delete(key_id)
        await self.store.delete_erasures(key_id)  # nothing left to refuse
        self._opened.pop(key_id, None)
        self._erased.pop(key_id, None)

    async def erased(self, key_id: str) -> frozenset[str]:
        """The orders (``seller:order``) whose data sealed with ``key_id`` was erased on request."""
        entry = self._erased.get(key_id)
        if entry is not None and time.monotonic() < entry[1]:
            return entry[0]
        subjects = frozenset(await self.store.erasures(key_id))
        self._erased[key_id] = (subjects, time.monotonic() + ERASURES_CACHE_S)
        return subjects

    async def erase(self, key_id: str, subject: str, *, by: str, note: str = "") -> None:
        """Erase ``subject``'s personal data before its key's time (a deletion request): no stage opens
        or seals it again (every worker knows within :data:`ERASURES_CACHE_S`); the sealed copies become
        undecryptable when ``key_id`` is destroyed, or at once with :meth:`shred`."""
        shred_after(key_id)  # a data key's name, or ValueError
        record = {"subject": subject, "erased_at": self.clock.now().isoformat(), "by": by, "note": note}
        await self.store.add_erasure(key_id, subject, json.dumps(record).encode())
        self._erased.pop(key_id, None)

    async def check_not_erased(self, key_id: str, subject: str) -> None:
        """:class:`PersonalDataErased` when ``subject``'s data under ``key_id`` was erased."""
        if subject in await self.erased(key_id):
            raise PersonalDataErased(f"personal data of {subject} was erased on request")

    async def rewrap(self) -> int:
        """Wrap every key with the current key-encryption key (after a rotation); how many were."""
        done = 0
        for key_id in await self.store.key_ids():
            stored = await self.store.get(key_id)
            if stored is None or stored.wrapped_by == self.wrapper.name:
                continue
            secret = await self.wrapper.unwrap(stored.wrapped, key_id, stored.wrapped_by)
            wrapped = await self.wrapper.wrap(secret, key_id)
            await self.store.replace(
                StoredKey(key_id, wrapped, self.wrapper.name, stored.created_at, stored.retention_reason)
            )
            done += 1
        return done


class _LocalOrKms:
    """The current wrapper (KMS) with the local key beside it during a move: each key is unwrapped by the
    kind of key that wrapped it."""

    def __init__(self, current: KeyWrapper, others: tuple[KeyWrapper, ...]) -> None:
        self._current = current
        self._others = others

    @property
    def name(self) -> str:
        return self._current.name

    async def wrap(self, secret: bytes, key_id: str) -> bytes:
        return await self._current.wrap(secret, key_id)

    async def unwrap(self, wrapped: bytes, key_id: str, wrapped_by: str) -> bytes:
        for wrapper in (self._current, *self._others):
            if wrapped_by.split(":", 1)[0] == wrapper.name.split(":", 1)[0]:
                return await wrapper.unwrap(wrapped, key_id, wrapped_by)
        raise ConfigurationError(
            f"privacy: key {key_id} was wrapped by {wrapped_by}, which is not configured"
        )


async def open_key_ring(
    privacy: PrivacySettings, aws: AwsSettings, clock: Clock, stack: AsyncExitStack
) -> KeyRing:
    """The key ring the settings describe; its AWS clients close with ``stack``."""
    if not privacy.wraps_keys:
        raise ConfigurationError(
            "privacy: no key-encryption key (privacy.kek or privacy.kms_key_id); `ordersync privacy new-kek`"
            " prints a local one"
        )
    s3 = await stack.enter_async_context(aws_client(aws, "s3"))
    local: KeyWrapper | None = None
    if privacy.kek is not None:
        keys = {name: value.get_secret_value() for name, value in privacy.previous_keks.items()}
        keys[privacy.kek_id] = privacy.kek.get_secret_value()
        local = LocalWrapper(privacy.kek_id, keys)
    if privacy.kms_key_id:
        kms = KmsWrapper(await stack.enter_async_context(aws_client(aws, "kms")), privacy.kms_key_id)
        wrapper: KeyWrapper = _LocalOrKms(kms, (local,) if local is not None else ())
    else:
        assert local is not None  # wraps_keys: a local key when there is no KMS key
        wrapper = local
    store = S3KeyStore(s3, privacy.key_bucket)
    await store.ensure_bucket()
    return KeyRing(store, wrapper, clock)
