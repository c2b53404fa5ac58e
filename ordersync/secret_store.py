"""The secret store: channel credentials (the LWA refresh token Amazon gives when an operator adds a
channel, a client secret) kept encrypted in S3, never in Kafka events, Redis or logs.

- **Storage**: one S3 object per secret, ``secrets/<name>.json`` in ``secrets.bucket`` (created if
  missing), holding the name, the encrypted value, the name of the key-encryption key that encrypted it
  and when. Names are :data:`ordersync.channels.SECRET_NAME` (lower case, parts joined by ``/``, no
  ``..``), so a name is always one object below ``secrets/``.
- **Encryption**: each value is encrypted by a key-encryption key with the secret's name in the
  associated data (``ordersync-secret:<name>``), so a record copied under another name does not
  decrypt: a local AES-GCM key (``secrets.kek``) or an AWS KMS key (``secrets.kms_key_id``; the name
  in the encryption context), the wrappers of :mod:`ordersync.keywrap` the privacy key ring uses too.
  Without either, the privacy key-encryption keys serve (``privacy.kek`` ..., which ``ordersync dev
  up`` and the demo make); without those too the store refuses to open. A rotated local key still
  decrypts what it encrypted while it is in ``previous_keks``; :meth:`SecretStore.rewrap` re-encrypts
  every secret with the current one.
- **Reading**: :meth:`SecretStore.get` raises :class:`SecretMissing` or :class:`SecretUnreadable`
  (both :class:`~ordersync.errors.ConfigurationError`) naming the secret, never its value. Opened
  values stay in process memory for at most :data:`CACHE_S`.
- **Channels**: a channel's credentials may name a secret (``refresh_token: {store: NAME}``);
  :func:`open_channel_secrets` returns the channel with those references opened (inline ``SecretStr``
  values, masked in every log line from then on).
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError
from pydantic import SecretStr

from ordersync.aws import aws_client, ensure_bucket, s3_missing
from ordersync.channels import Channel, LwaCredentials, SecretRef, check_secret_name
from ordersync.errors import ConfigurationError
from ordersync.keywrap import KeyWrapper, KmsWrapper, LocalWrapper
from ordersync.logs import remember_secrets
from ordersync.settings import Settings

#: How long an opened secret stays in memory (a value put or deleted by another process is seen by
#: this one within this time).
CACHE_S = 60.0
#: Where the secrets are in the bucket: ``secrets/<name>.json``.
PREFIX = "secrets/"
SUFFIX = ".json"
#: The longest value kept (AWS KMS encrypts at most 4096 bytes; an LWA refresh token is under 1 KB).
MAX_VALUE_BYTES = 4096
#: What a record's ``format`` says.
FORMAT = 1
#: KMS's answers that mean "this key cannot decrypt that" (not "KMS is down").
_KMS_REFUSALS = frozenset(
    {
        "InvalidCiphertextException",
        "IncorrectKeyException",
        "AccessDeniedException",
        "NotFoundException",
        "DisabledException",
        "KMSInvalidStateException",
    }
)


class SecretMissing(ConfigurationError):
    """No secret of that name is in the store."""


class SecretUnreadable(ConfigurationError):
    """The stored secret does not decrypt with the configured key-encryption keys (or is not a secret
    record at all)."""


class InvalidSecretName(ValueError):
    """The name is not a valid secret store name (:data:`ordersync.channels.SECRET_NAME`)."""


def valid_name(name: str) -> str:
    """``name`` if it is a valid secret store name, else :class:`InvalidSecretName`."""
    try:
        return check_secret_name(name)
    except ValueError as exc:
        raise InvalidSecretName(str(exc)) from None


def associated_data(name: str) -> str:
    """What a secret's encryption is bound to: its name (prefixed, so that no key of the privacy key
    ring, which the same key-encryption key may wrap, is ever mistaken for a secret)."""
    return f"ordersync-secret:{name}"


def object_key(name: str) -> str:
    """The S3 key of secret ``name``."""
    return f"{PREFIX}{valid_name(name)}{SUFFIX}"


def _kind(wrapper_name: str) -> str:
    return wrapper_name.split(":", 1)[0]


class SecretStore:
    """Put, get, delete and list the secrets of one bucket; encrypt with ``current``, decrypt with the
    wrapper of the kind (``local``, ``kms``) that encrypted each."""

    def __init__(
        self,
        s3: Any,
        bucket: str,
        current: KeyWrapper,
        others: tuple[KeyWrapper, ...] = (),
        *,
        section: str = "secrets",
        cache_s: float = CACHE_S,
    ) -> None:
        self._s3 = s3
        self.bucket = bucket
        self._current = current
        self._wrappers = {_kind(w.name): w for w in (*others, current)}
        #: The settings the keys come from (``secrets``, or ``privacy`` when the store falls back).
        self.section = section
        self._cache_s = cache_s
        self._opened: dict[str, tuple[SecretStr, float]] = {}

    @property
    def wrapped_by(self) -> str:
        """The key-encryption key new secrets are encrypted with (``local:<kek_id>``, ``kms:<key>``)."""
        return self._current.name

    def _cached(self, name: str) -> SecretStr | None:
        entry = self._opened.get(name)
        if entry is None:
            return None
        if time.monotonic() >= entry[1]:
            del self._opened[name]
            return None
        return entry[0]

    def _remember(self, name: str, value: SecretStr) -> None:
        if self._cache_s > 0:
            self._opened[name] = (value, time.monotonic() + self._cache_s)

    async def _record(self, name: str) -> dict[str, Any]:
        try:
            answer = await self._s3.get_object(Bucket=self.bucket, Key=object_key(name))
        except ClientError as exc:
            if s3_missing(exc):
                raise SecretMissing(
                    f"secret {name!r} is not in the secret store (bucket {self.bucket});"
                    f" `ordersync secrets put {name}` stores it"
                ) from None
            raise
        async with answer["Body"] as body:
            raw = await body.read()
        try:
            record = json.loads(raw)
            if not isinstance(record, dict) or record.get("name") != name:
                raise ValueError("not this secret's record")
            base64.b64decode(record["ciphertext"], validate=True)
            str(record["wrapped_by"])
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise SecretUnreadable(
                f"secret {name!r}: the object {object_key(name)} in bucket {self.bucket} is not a secret"
                " record of that name"
            ) from None
        return record

    async def _seal(self, name: str, plain: bytes) -> bytes:
        record = {
            "format": FORMAT,
            "name": name,
            "ciphertext": base64.b64encode(await self._current.wrap(plain, associated_data(name))).decode(),
            "wrapped_by": self._current.name,
            "updated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        return json.dumps(record).encode()

    async def _open(self, name: str, record: dict[str, Any]) -> bytes:
        wrapped_by = str(record["wrapped_by"])
        wrapper = self._wrappers.get(_kind(wrapped_by))
        section = self.section
        if wrapper is None:
            raise SecretUnreadable(
                f"secret {name!r} was encrypted by {wrapped_by}, which is not configured ({section}.kek,"
                f" {section}.previous_keks or {section}.kms_key_id)"
            )
        ciphertext = base64.b64decode(record["ciphertext"])
        try:
            return await wrapper.unwrap(ciphertext, associated_data(name), wrapped_by)
        except ConfigurationError:
            pass  # LocalWrapper: not configured, or a different key of that name; said below
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) not in _KMS_REFUSALS:
                raise  # KMS did not answer: not the secret's fault
        raise SecretUnreadable(
            f"secret {name!r} does not decrypt: it was encrypted by {wrapped_by}, and the configured"
            f" key-encryption keys ({section}.kek, {section}.previous_keks, {section}.kms_key_id) do not"
            " open it"
        )

    async def put(self, name: str, value: SecretStr) -> None:
        """Store ``value`` as secret ``name`` (replacing the one of that name, if any), encrypted with
        the current key-encryption key."""
        valid_name(name)
        plain = value.get_secret_value().encode()
        if not plain:
            raise ValueError(f"secret {name!r}: the value is empty")
        if len(plain) > MAX_VALUE_BYTES:
            raise ValueError(f"secret {name!r}: the value is longer than {MAX_VALUE_BYTES} bytes")
        body = await self._seal(name, plain)
        await self._s3.put_object(Bucket=self.bucket, Key=object_key(name), Body=body)
        self._remember(name, value)

    async def get(self, name: str) -> SecretStr:
        """The value of secret ``name``: :class:`SecretMissing` if there is none, :class:`SecretUnreadable`
        if it does not decrypt with the configured keys."""
        valid_name(name)
        cached = self._cached(name)
        if cached is not None:
            return cached
        plain = await self._open(name, await self._record(name))
        try:
            value = SecretStr(plain.decode())
        except UnicodeDecodeError:
            raise SecretUnreadable(f"secret {name!r}: the decrypted value is not UTF-8 text") from None
        self._remember(name, value)
        return value

    async def exists(self, name: str) -> bool:
        """Whether secret ``name`` is stored (it is not opened)."""
        try:
            await self._s3.head_object(Bucket=self.bucket, Key=object_key(name))
        except ClientError as exc:
            if s3_missing(exc):
                return False
            raise
        return True

    async def delete(self, name: str) -> None:
        """Remove secret ``name``; :class:`SecretMissing` if there is none."""
        if not await self.exists(name):
            raise SecretMissing(f"secret {name!r} is not in the secret store (bucket {self.bucket})")
        await self._s3.delete_object(Bucket=self.bucket, Key=object_key(name))
        self._opened.pop(name, None)

    async def names(self) -> list[str]:
        """The names of the secrets stored, sorted (their values are not read)."""
        found: list[str] = []
        paginator = self._s3.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=PREFIX):
            for entry in page.get("Contents") or []:
                key = str(entry["Key"])
                if not key.endswith(SUFFIX):
                    continue
                name = key.removeprefix(PREFIX).removesuffix(SUFFIX)
                try:
                    found.append(valid_name(name))
                except InvalidSecretName:
                    continue  # not put by ordersync
        return sorted(found)

    async def rewrap(self) -> int:
        """Encrypt every secret with the current key-encryption key (after a rotation: then the previous
        key can be removed from ``previous_keks``); how many were re-encrypted."""
        done = 0
        for name in await self.names():
            record = await self._record(name)
            if record["wrapped_by"] == self._current.name:
                continue
            plain = await self._open(name, record)
            await self._s3.put_object(
                Bucket=self.bucket, Key=object_key(name), Body=await self._seal(name, plain)
            )
            done += 1
        return done


async def open_secret_store(settings: Settings, stack: AsyncExitStack) -> SecretStore:
    """The secret store the settings describe (``secrets``, its keys falling back to ``privacy``'s),
    its bucket created if missing; its AWS clients close with ``stack``. A clear
    :class:`~ordersync.errors.ConfigurationError` when no key-encryption key is configured."""
    secrets, privacy = settings.secrets, settings.privacy
    if secrets.wraps_keys:
        section, kek, kek_id, previous, kms_key_id = (
            "secrets",
            secrets.kek,
            secrets.kek_id,
            secrets.previous_keks,
            secrets.kms_key_id,
        )
    elif privacy.wraps_keys:
        section, kek, kek_id, previous, kms_key_id = (
            "privacy",
            privacy.kek,
            privacy.kek_id,
            privacy.previous_keks,
            privacy.kms_key_id,
        )
    else:
        raise ConfigurationError(
            "secrets: no key-encryption key to encrypt the secrets with: set secrets.kek"
            " (ORDERSYNC_SECRETS__KEK; `ordersync privacy new-kek` prints one) or secrets.kms_key_id, or"
            " the privacy ones the store falls back to (privacy.kek, privacy.kms_key_id)"
        )
    local: KeyWrapper | None = None
    if kek is not None:
        keys = {key_name: key.get_secret_value() for key_name, key in previous.items()}
        keys[kek_id] = kek.get_secret_value()
        local = LocalWrapper(kek_id, keys, section=section)
    s3 = await stack.enter_async_context(aws_client(settings.aws, "s3"))
    if kms_key_id:
        kms = KmsWrapper(await stack.enter_async_context(aws_client(settings.aws, "kms")), kms_key_id)
        store = SecretStore(s3, secrets.bucket, kms, (local,) if local is not None else (), section=section)
    else:
        assert local is not None  # wraps_keys: a local key when there is no KMS key
        store = SecretStore(s3, secrets.bucket, local, section=section)
    await ensure_bucket(s3, secrets.bucket)
    return store


async def _opened(ref: SecretRef, store: SecretStore) -> SecretRef:
    if ref.store is None:
        return ref
    return SecretRef(value=await store.get(ref.store))


async def open_channel_secrets(channel: Channel, store: SecretStore) -> Channel:
    """``channel`` with every credential that names the secret store (``{store: NAME}``) opened into an
    inline value, each remembered so that logs mask it; a channel naming none is returned as it is,
    without reaching S3. :class:`SecretMissing` or :class:`SecretUnreadable` name the secret."""
    credentials = channel.credentials
    refs = {
        "client_id": credentials.client_id,
        "client_secret": credentials.client_secret,
        "refresh_token": credentials.refresh_token,
    }
    if all(ref.store is None for ref in refs.values()):
        return channel
    opened = {field: await _opened(ref, store) for field, ref in refs.items()}
    remember_secrets(*(ref.value for field, ref in opened.items() if refs[field].store is not None))
    new_credentials: LwaCredentials = credentials.model_copy(update=opened)
    return channel.model_copy(update={"credentials": new_credentials})
