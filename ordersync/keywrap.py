"""Key-encryption keys: what wraps a secret before it is stored and unwraps it when it is read. The
privacy key ring (:mod:`ordersync.privacy.keyring`) wraps buyers' data keys with them, the secret store
(:mod:`ordersync.secret_store`) channel credentials.

- :class:`LocalWrapper`: AES-256-GCM keys from the settings (``privacy.kek``, ``secrets.kek``): the
  current one wraps, it and the retired ones (``previous_keks``) unwrap, each wrapped secret bound to
  its name (``key_id``, the associated data).
- :class:`KmsWrapper`: an AWS KMS key (Encrypt / Decrypt, the name as encryption context).

The caller records the wrapper's :attr:`~KeyWrapper.name` beside what it wrapped, so a rotated key
still opens what it wrapped.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ordersync.errors import ConfigurationError

#: A local key-encryption key: AES-256.
KEY_BYTES = 32
#: AES-GCM's nonce, stored before the ciphertext.
NONCE_BYTES = 12


class KeyWrapper(Protocol):
    """A key-encryption key: wraps and unwraps data keys."""

    @property
    def name(self) -> str: ...

    async def wrap(self, secret: bytes, key_id: str) -> bytes: ...

    async def unwrap(self, wrapped: bytes, key_id: str, wrapped_by: str) -> bytes: ...


def local_key(name: str, value: str, section: str = "privacy") -> bytes:
    try:
        key = base64.b64decode(value, validate=True)
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise ConfigurationError(f"{section} key-encryption key {name!r} must be {KEY_BYTES} bytes in base64")
    return key


class LocalWrapper:
    """Key-encryption keys from the settings: the current one wraps; it and the retired ones unwrap.
    ``section`` names the settings they come from in error messages (``privacy``, ``secrets``)."""

    def __init__(self, current_name: str, keys: Mapping[str, str], *, section: str = "privacy") -> None:
        self._name = current_name
        self._section = section
        self._keys = {name: local_key(name, value, section) for name, value in keys.items()}
        if current_name not in self._keys:
            raise ConfigurationError(f"{section}: no key-encryption key named {current_name!r}")

    @property
    def name(self) -> str:
        return f"local:{self._name}"

    async def wrap(self, secret: bytes, key_id: str) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + AESGCM(self._keys[self._name]).encrypt(nonce, secret, key_id.encode())

    async def unwrap(self, wrapped: bytes, key_id: str, wrapped_by: str) -> bytes:
        name = wrapped_by.removeprefix("local:")
        kek = self._keys.get(name)
        if not wrapped_by.startswith("local:") or kek is None:
            section = self._section
            raise ConfigurationError(
                f"{section}: key {key_id} was wrapped by {wrapped_by}, which is not configured"
                f" ({section}.kek, {section}.previous_keks or {section}.kms_key_id)"
            )
        try:
            return AESGCM(kek).decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], key_id.encode())
        except InvalidTag as exc:
            raise ConfigurationError(
                f"{self._section}: key {key_id} does not unwrap with {wrapped_by}"
            ) from exc


class KmsWrapper:
    """An AWS KMS key wraps the data keys (Encrypt / Decrypt, the data key's name as context)."""

    def __init__(self, kms: Any, key_id: str) -> None:
        self._kms = kms
        self._key_id = key_id

    @property
    def name(self) -> str:
        return f"kms:{self._key_id}"

    async def wrap(self, secret: bytes, key_id: str) -> bytes:
        answer = await self._kms.encrypt(
            KeyId=self._key_id, Plaintext=secret, EncryptionContext={"ordersync:data-key": key_id}
        )
        return bytes(answer["CiphertextBlob"])

    async def unwrap(self, wrapped: bytes, key_id: str, wrapped_by: str) -> bytes:
        answer = await self._kms.decrypt(
            CiphertextBlob=wrapped, EncryptionContext={"ordersync:data-key": key_id}
        )
        return bytes(answer["Plaintext"])
