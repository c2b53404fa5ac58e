"""Who may read and who may act.

Without accounts (the tokens alone):

- Reading is open unless ``dashboard.read_token`` is set; then a request shows the read token (or the
  operator token) as ``Authorization: Bearer ...``, or carries the cookie ``/login`` sets.
- Actions need ``dashboard.operator_token`` in the ``X-Operator-Token`` header, and are refused
  outright when none is configured.
- Buyers' personal data (the order page's buyer panel, its JSON, the CSV export's personal columns)
  is opened only for a request carrying the operator token (header, bearer, or the cookie of a sign-in
  with it); everyone else sees it hidden. A header, never a cookie: a page on another site cannot make the
  browser send it, so actions need no other CSRF defence.

With accounts (:mod:`ordersync.ops.users`): from the first one on, nothing is open; the browser signs in
with a user name and password at ``/login`` and gets a session cookie (``HttpOnly``, ``SameSite=Strict``),
and the signed-in user's role decides what the request may do (:class:`Principal`): ``viewer`` reads,
``operator`` also acts and sees personal data, ``admin`` also manages the accounts. A state-changing
request carrying a live session also needs the session's CSRF token (header ``X-CSRF-Token``, or the form
field ``csrf_token``). The tokens keep working for API clients: the operator token is the principal
``api-token`` with the operator role, the read token ``read-token`` with the viewer role.

Tokens are compared in constant time and never logged. The cookie holds an HMAC of the token, not the
token itself.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Literal

from pydantic import SecretStr
from starlette.requests import Request

from ordersync.ops.users import Role, Session, role_at_least
from ordersync.settings import DashboardSettings

READ_COOKIE = "ordersync_dashboard_read"
OPERATOR_HEADER = "x-operator-token"
#: The signed-in user's session (a random id; Redis keeps only its hash).
SESSION_COOKIE = "ordersync_session"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
#: Sent by the page's own background refreshes: they do not count as the user's activity.
BACKGROUND_HEADER = "x-ordersync-background"
#: The principals of the shared tokens and of open reading (no account may take these names).
API_CLIENT = "api-token"
READER = "read-token"
ANONYMOUS = "anonymous"
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


Via = Literal["session", "token", "open", "none"]


@dataclass(frozen=True)
class Principal:
    """Who a request comes from, and with which role (None: it may not even read).

    ``via``: a signed-in user's ``session``; a ``token`` (the shared tokens); ``open`` reading (no read
    token and no account); ``none`` (nothing valid: ``refusal`` says whether a credential was missing or
    wrong, ``session_ended`` whether the browser's session just ended)."""

    name: str
    role: Role | None
    via: Via
    session: Session | None = None
    refusal: ReadAccess = "granted"
    session_ended: bool = False

    def may(self, role: Role) -> bool:
        return role_at_least(self.role, role)


def token_role(request: Request, settings: DashboardSettings) -> tuple[Role | None, ReadAccess]:
    """The best role the request's tokens give: ``operator`` for the operator token (header, bearer, or
    the cookie of a sign-in with it), ``viewer`` for the read token; else why not (``missing``: no
    credential at all, ``refused``: one that matches nothing)."""
    header = request.headers.get(OPERATOR_HEADER, "").strip()
    bearer = bearer_token(request) or ""
    cookie = request.cookies.get(READ_COOKIE) or ""
    operator, read = settings.operator_token, settings.read_token
    # Every comparison is made, so which one matched (if any) does not show in the timing.
    as_operator = operator is not None and any(
        [
            *(tokens_equal(given, operator) for given in (header, bearer) if given),
            _cookie_matches(cookie, operator),
        ]
    )
    as_reader = read is not None and any(
        [bool(bearer) and tokens_equal(bearer, read), _cookie_matches(cookie, read)]
    )
    if as_operator:
        return "operator", "granted"
    if as_reader:
        return "viewer", "granted"
    return None, ("refused" if header or bearer or cookie else "missing")


def _cookie_matches(cookie: str, token: SecretStr) -> bool:
    return bool(cookie) and hmac.compare_digest(cookie.encode(), cookie_value(token).encode())
