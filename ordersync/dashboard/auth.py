"""Who may read and who may act.

- Reading is open unless ``dashboard.read_token`` is set; then a request shows the read token (or the
  operator token) as ``Authorization: Bearer ...``, or carries the cookie ``/login`` sets.
- Actions always need ``dashboard.operator_token`` in the ``X-Operator-Token`` header, and are refused
  outright when none is configured.
- Buyers' personal data (the order page's buyer panel, its JSON, the CSV export's personal columns)
  is opened only for a request carrying the operator token (header, bearer, or the cookie of a sign-in
  with it); everyone else sees it hidden. A header, never a cookie: a page on another site cannot make the
  browser send it, so actions need no other CSRF defence.

Tokens are compared in constant time and never logged. The cookie holds an HMAC of the token, not the
token itself.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Literal

from pydantic import SecretStr
from starlette.requests import Request

from ordersync.settings import DashboardSettings

READ_COOKIE = "ordersync_dashboard_read"
OPERATOR_HEADER = "x-operator-token"
_COOKIE_CONTEXT = b"ordersync-dashboard-read-cookie-v1"

ReadAccess = Literal["granted", "missing", "refused"]
OperatorAccess = Literal["granted", "disabled", "missing", "refused"]


def tokens_equal(given: str, expected: SecretStr) -> bool:
    """Constant-time comparison, so the answer time says nothing about how much of a guess was right."""
    return hmac.compare_digest(given.encode(), expected.get_secret_value().encode())


def cookie_value(token: SecretStr) -> str:
    """What the read cookie holds for ``token``: a keyed hash, useless as a token elsewhere."""
    return hmac.new(token.get_secret_value().encode(), _COOKIE_CONTEXT, hashlib.sha256).hexdigest()


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def _reading_tokens(settings: DashboardSettings) -> list[SecretStr]:
    return [t for t in (settings.read_token, settings.operator_token) if t is not None]


def read_access(request: Request, settings: DashboardSettings) -> ReadAccess:
    if settings.read_token is None:
        return "granted"
    tokens = _reading_tokens(settings)
    given = bearer_token(request)
    if given is not None:
        # Every token is compared, so which one matched (if any) does not show in the timing.
        matches = [tokens_equal(given, token) for token in tokens]
        return "granted" if any(matches) else "refused"
    cookie = request.cookies.get(READ_COOKIE)
    if cookie:
        matches = [hmac.compare_digest(cookie.encode(), cookie_value(t).encode()) for t in tokens]
        return "granted" if any(matches) else "refused"
    return "missing"


def login_token_valid(given: str, settings: DashboardSettings) -> SecretStr | None:
    """The configured token ``given`` matches (read or operator), for the read cookie."""
    found: SecretStr | None = None
    for token in _reading_tokens(settings):
        if tokens_equal(given, token):
            found = token
    return found


def operator_access(request: Request, settings: DashboardSettings) -> OperatorAccess:
    if settings.operator_token is None:
        return "disabled"
    given = request.headers.get(OPERATOR_HEADER, "").strip()
    if not given:
        return "missing"
    return "granted" if tokens_equal(given, settings.operator_token) else "refused"


def personal_data_access(request: Request, settings: DashboardSettings) -> bool:
    """Whether the request may see buyers' personal data: it carries the operator token (the header,
    a bearer token, or the cookie ``/login`` set for it). The read token alone never may."""
    token = settings.operator_token
    if token is None:
        return False
    presented = [request.headers.get(OPERATOR_HEADER, "").strip(), bearer_token(request) or ""]
    matches = [tokens_equal(given, token) for given in presented if given]
    cookie = request.cookies.get(READ_COOKIE)
    if cookie:
        matches.append(hmac.compare_digest(cookie.encode(), cookie_value(token).encode()))
    return any(matches)
