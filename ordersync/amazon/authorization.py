"""Amazon's website authorization workflow of a public application (docs "Website Authorization
Workflow"), from ordersync's side:

1. :func:`consent_url`: where the seller's browser goes, Seller Central's consent page of the seller's
   region, ``{seller_central}/apps/authorize/consent?application_id=...&state=...`` (``&version=beta``
   while the application is a draft: without it Amazon shows error MD1000), with the ``redirect_uri``
   when one is configured (it must be one registered for the application: MD5101 otherwise);
2. the seller confirms; Amazon redirects the browser to the redirect URI with ``spapi_oauth_code``,
   ``state`` (unchanged) and ``selling_partner_id``; :func:`read_state` checks that the state is one we
   signed (:func:`sign_state`) and not older than ``state_max_age_s``;
3. :func:`exchange_code`: the code (valid 5 minutes, once) exchanged at LWA for the seller's refresh
   token (:class:`Authorization`); the access token LWA sends with it is dropped, the client gets its
   own when it calls;
4. :func:`ordersync.amazon.sellers.discover_marketplaces`: the new channel's marketplaces.

The state is the workflow's protection against cross-site request forgery: sign into it what ties the
redirect to the browser that started it (a session id, the dashboard user) and check it on return.
Secrets (client secret, code, refresh token, state key) are never logged.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer
from pydantic import SecretStr

from ordersync.amazon.client import lwa_token_request, user_agent
from ordersync.errors import AmazonRejected, ConfigurationError, Permanent
from ordersync.settings import AmazonSettings, Region

log = logging.getLogger(__name__)

#: Keeps a state signed here from being accepted where the same key signs something else.
STATE_SALT = "ordersync.amazon.authorization.state"
#: The operation name LWA's answers to a code exchange are reported under.
OPERATION = "lwaAuthorizationCode"


class AuthorizationStateError(Permanent):
    """The ``state`` Amazon's redirect brought back is not one we signed, was changed, or is not a
    signed mapping: the redirect does not belong to a consent this application started."""


class AuthorizationStateExpired(AuthorizationStateError):
    """The ``state`` is ours but older than the allowed age: the seller must start again."""


@dataclass(frozen=True)
class Authorization:
    """What an authorization code bought: the seller's LWA refresh token (the access token LWA sent
    with it is not kept)."""

    refresh_token: SecretStr


def consent_url(
    settings: AmazonSettings, region: Region, state: str, *, redirect_uri: str | None = None
) -> str:
    """The consent URI of ``region``'s Seller Central for the configured application, carrying
    ``state``; ``version=beta`` for a draft application; ``redirect_uri`` (default: the configured
    one; none: Amazon uses the application's first registered one)."""
    auth = settings.authorization
    if not auth.application_id:
        raise ConfigurationError(
            "amazon.authorization.application_id is not set (ORDERSYNC_AMAZON__AUTHORIZATION__"
            "APPLICATION_ID): the application's id in Amazon's Solution Provider Portal"
        )
    if not state:
        raise ValueError("the consent URI needs a state")
    query = {"application_id": auth.application_id, "state": state}
    if auth.draft:
        query["version"] = "beta"
    redirect = redirect_uri or auth.redirect_uri
    if redirect:
        query["redirect_uri"] = redirect
    return f"{auth.consent_base_for(region)}?{urlencode(query)}"


class _TimestampSignerAt(TimestampSigner):
    """itsdangerous' signer with the time given instead of read from the wall clock."""

    now: float | None = None

    def get_timestamp(self) -> int:
        return super().get_timestamp() if self.now is None else int(self.now)


def _serializer(secret: str | bytes | SecretStr, now: float | None) -> URLSafeTimedSerializer:
    key = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
    if not key:
        raise ConfigurationError(
            "no key to sign the authorization state: set amazon.authorization.state_secret"
            " (ORDERSYNC_AMAZON__AUTHORIZATION__STATE_SECRET) or pass one"
        )
    signer = type("_Signer", (_TimestampSignerAt,), {"now": now})
    return URLSafeTimedSerializer(key, salt=STATE_SALT, signer=signer)


def sign_state(
    secret: str | bytes | SecretStr, payload: Mapping[str, Any], *, issued_at: float | None = None
) -> str:
    """``payload`` (JSON-serialisable) signed with ``secret`` and stamped with the time (``issued_at``,
    epoch seconds; default: now), URL-safe: the consent URI's ``state``."""
    return str(_serializer(secret, issued_at).dumps(dict(payload)))


def read_state(
    secret: str | bytes | SecretStr, state: str, max_age_s: int, *, now: float | None = None
) -> dict[str, Any]:
    """The payload of a ``state`` :func:`sign_state` made with ``secret`` at most ``max_age_s`` ago
    (``now``: epoch seconds; default: the wall clock). A changed, foreign or malformed state:
    :class:`AuthorizationStateError`; an old one: :class:`AuthorizationStateExpired`."""
    try:
        payload = _serializer(secret, now).loads(state, max_age=max_age_s)
    except SignatureExpired as exc:
        raise AuthorizationStateExpired(
            f"the authorization state is older than {max_age_s} s: start the authorization again"
        ) from exc
    except BadSignature as exc:
        raise AuthorizationStateError(
            "the authorization state is not one this application signed (changed, or from elsewhere)"
        ) from exc
    if not isinstance(payload, dict):
        raise AuthorizationStateError("the authorization state does not hold a signed mapping")
    return payload


async def exchange_code(
    http: httpx.AsyncClient, settings: AmazonSettings, code: str, redirect_uri: str
) -> Authorization:
    """Exchange the authorization code of Amazon's redirect (``spapi_oauth_code``) for the seller's
    refresh token at LWA (``grant_type=authorization_code``), with the application's client id and
    secret and the ``redirect_uri`` the consent was given for.

    Refused (a used, expired or unknown code, another redirect URI, wrong client credentials; LWA's
    ``invalid_grant``, ``invalid_client`` ...): :class:`AmazonRejected` with LWA's error as its code
    (permanent: a code is never good again). LWA unreachable or failing: :class:`AmazonUnavailable`
    (the code stays valid until its 5 minutes are up). Missing settings: :class:`ConfigurationError`."""
    auth = settings.authorization
    if not auth.client_id or auth.client_secret is None:
        raise ConfigurationError(
            "amazon.authorization.client_id and client_secret are needed to exchange an authorization"
            " code (ORDERSYNC_AMAZON__AUTHORIZATION__CLIENT_ID / __CLIENT_SECRET)"
        )
    if not code:
        raise AmazonRejected(OPERATION, None, "invalid_request", "Amazon's redirect carried no code")
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "client_id": auth.client_id,
        "client_secret": auth.client_secret.get_secret_value(),
    }
    headers = {"user-agent": user_agent(settings.user_agent_app)}
    body = await lwa_token_request(http, settings.lwa_endpoint, form, headers=headers, operation=OPERATION)
    refresh_token = body.get("refresh_token")
    if not isinstance(refresh_token, str) or not refresh_token:
        raise AmazonRejected(OPERATION, 200, "UnexpectedResponse", "LWA's answer carried no refresh_token")
    log.info("exchanged an authorization code for a refresh token (client %s)", auth.client_id)
    return Authorization(refresh_token=SecretStr(refresh_token))
