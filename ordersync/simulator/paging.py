"""Opaque, tamper-proof pagination tokens.

A token carries the whole query and the position to resume after, signed with the simulator's
random key, so a token from another simulator, another seller or another operation, or a corrupted
one, is refused with Amazon's 400 InvalidInput. Standard base64 (with ``+``, ``/`` and ``=``), as
Amazon's tokens are: a client that does not URL-encode them breaks here as it would against Amazon.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from typing import Any

_SIGNATURE_BYTES = 16


class TokenCodec:
    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or secrets.token_bytes(32)

    def encode(self, kind: str, seller_id: str, payload: dict[str, Any]) -> str:
        data = json.dumps({"k": kind, "s": seller_id, "p": payload}, separators=(",", ":"), sort_keys=True)
        raw = data.encode()
        signature = hmac.new(self._key, raw, hashlib.sha256).digest()[:_SIGNATURE_BYTES]
        return base64.b64encode(signature + raw).decode()

    def decode(self, kind: str, seller_id: str, token: str) -> dict[str, Any] | None:
        """The payload, or None for a token this simulator did not issue for this seller and kind."""
        try:
            blob = base64.b64decode(token.encode(), validate=True)
        except (binascii.Error, ValueError):
            return None
        signature, raw = blob[:_SIGNATURE_BYTES], blob[_SIGNATURE_BYTES:]
        expected = hmac.new(self._key, raw, hashlib.sha256).digest()[:_SIGNATURE_BYTES]
        if not hmac.compare_digest(signature, expected):
            return None
        try:
            data = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(data, dict) or data.get("k") != kind or data.get("s") != seller_id:
            return None
        payload = data.get("p")
        return payload if isinstance(payload, dict) else None
