"""Single sign-on with an OpenID Connect provider (``dashboard.oidc``): the authorization code flow with
PKCE, the provider found by discovery (``<issuer>/.well-known/openid-configuration``), its ID token
verified (signature by the provider's JWKS, ``iss``, ``aud``, ``exp``, ``nonce``, ``azp``, ``at_hash``):
authlib's PKCE (RFC 7636) and OpenID Connect ID token claims, joserfc's JWT signature check, and the few
HTTP requests made with httpx (authlib's own httpx client warns that its httpx support is deprecated in
favour of the httpx2 fork; ordersync uses httpx).

authlib's Starlette integration keeps the flow's state in Starlette's cookie session
(``SessionMiddleware``), which the dashboard does not use: it has server-side sessions of its own. So the
flow is kept server-side too: ``GET /login/oidc`` makes a random ``state``, ``nonce`` and PKCE
``code_verifier`` and keeps them in Redis (:data:`ordersync.state.keys.OIDC_FLOW`, under the SHA-256 of
the state, for ``flow_max_age_s``) together with the SHA-256 of a random *binding* value that only the
browser gets, in the cookie ``ordersync_oidc`` (``HttpOnly``, ``SameSite=Lax``: the provider's redirect
back is a cross-site navigation, which would not carry a ``Strict`` cookie; path ``/login/oidc``). The
callback takes the flow out of Redis (once: a replayed redirect finds nothing) and needs the same
browser's binding, so a sign-in another site started cannot be finished in someone else's browser (login
CSRF). The session cookie itself is ``SameSite=Strict`` and is not sent to the callback: the callback
relies on nothing but the flow and the binding, and answers with a page of this site that goes on to
where the user was going (a redirect at the end of a cross-site chain would not carry the new session's
cookie either).

Who signs in: the claim ``username_claim`` (``email``, refused when the provider says it is not verified;
or ``preferred_username``), as a dashboard user name. Their role: the highest that ``role_map`` gives for
the values of ``roles_claim`` (a list or one string; compared in any case), else ``default_role``, else
refused. The account is made at the first sign-in (``auto_create``) or updated, as a single sign-on
account without a password (:meth:`ordersync.ops.users.UserStore.single_sign_on`); a disabled account
stays refused.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlencode

import httpx
import redis.asyncio as aioredis
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from authlib.oidc.core import CodeIDToken
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry

from ordersync.ops.users import ROLE_RANK, Role, UserProblem, checked_name
from ordersync.settings import OidcSettings
from ordersync.state import keys

log = logging.getLogger(__name__)

#: The browser's half of a flow under way (its value's SHA-256 is kept with the flow).
OIDC_COOKIE = "ordersync_oidc"
LOGIN_PATH = "/login/oidc"
CALLBACK_PATH = "/login/oidc/callback"
#: Discovery and the provider's keys are read again after this long (keys also when a token names a
#: key not known yet: the provider rotated them).
METADATA_MAX_AGE_S = 3600.0
#: Clock skew allowed between the provider and the dashboard for ``exp``, ``iat`` and ``nbf``.
LEEWAY_S = 60
HTTP_TIMEOUT_S = 10.0


class SignInRefused(Exception):
    """The single sign-on does not sign anyone in: ``message`` for the person, ``reason`` for the audit
    and the log, ``user`` when the provider named one."""

    def __init__(self, status_code: int, message: str, reason: str = "", user: str | None = None) -> None:
        super().__init__(reason or message)
        self.status_code = status_code
        self.message = message
        self.reason = reason or message
        self.user = user


@dataclass(frozen=True)
class SignedIn:
    """Who the provider vouched for, and the role its claims give (None: no role)."""

    name: str
    role: Role | None
    subject: str
    target: str


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def claim_values(value: object) -> list[str]:
    """A roles or groups claim's values: a list of strings, or one string (space- or comma-separated)."""
    if isinstance(value, str):
        return [part for part in value.replace(",", " ").split() if part]
    if isinstance(value, list | tuple):
        return [item for item in value if isinstance(item, str) and item]
    return []


def mapped_role(claims: Mapping[str, Any], settings: OidcSettings) -> Role | None:
    """The role ``claims`` give: the highest that ``role_map`` names for a value of ``roles_claim`` (in
    any case), else ``default_role`` (None: refused)."""
    if settings.roles_claim is None:
        return settings.default_role
    table = {group.casefold(): role for group, role in settings.role_map.items()}
    found = [
        table[v.casefold()] for v in claim_values(claims.get(settings.roles_claim)) if v.casefold() in table
    ]
    if not found:
        return settings.default_role
    return max(found, key=lambda role: ROLE_RANK[role])


def user_name_of(claims: Mapping[str, Any], settings: OidcSettings) -> str:
    """The dashboard user name of ``claims`` (lower case); raises :class:`SignInRefused`."""
    claim = settings.username_claim
    value = claims.get(claim)
    if not isinstance(value, str) or not value.strip():
        raise SignInRefused(
            403, f"the provider gave no {claim} for you", f"the ID token has no {claim} claim"
        )
    if claim == "email" and claims.get("email_verified") is False:
        raise SignInRefused(
            403, "the provider has not verified your e-mail address", "email_verified is false"
        )
    try:
        return checked_name(value)
    except UserProblem as exc:
        raise SignInRefused(403, f"your {claim} is not a dashboard user name: {exc}") from None


class OidcSignIn:
    """The dashboard's client of the provider: the flows under way are kept in ``redis``."""

    def __init__(self, settings: OidcSettings, prefix: str, *, clock: Any = time.monotonic) -> None:
        if settings.issuer is None or settings.client_id is None:
            raise ValueError("dashboard.oidc.issuer and client_id are needed for single sign-on")
        self.settings = settings
        self.issuer = settings.issuer.rstrip("/")
        self.client_id = settings.client_id
        self.prefix = prefix
        self._monotonic = clock
        self._metadata: tuple[float, dict[str, Any]] | None = None
        self._jwks: tuple[float, dict[str, Any]] | None = None

    # --- the provider ------------------------------------------------------------------------------

    async def metadata(self) -> dict[str, Any]:
        """The provider's discovery document (cached); its issuer must be the configured one."""
        now = self._monotonic()
        if self._metadata is not None and now - self._metadata[0] < METADATA_MAX_AGE_S:
            return self._metadata[1]
        url = self.issuer + "/.well-known/openid-configuration"
        try:
            async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_S) as http:
                answer = await http.get(url)
                answer.raise_for_status()
                found = answer.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise SignInRefused(
                502, "the sign-in provider cannot be reached: try again later", f"discovery at {url}: {exc}"
            ) from None
        if not isinstance(found, dict) or str(found.get("issuer", "")).rstrip("/") != self.issuer:
            raise SignInRefused(
                502, "the sign-in provider is misconfigured", f"discovery at {url} names another issuer"
            )
        for needed in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            if not isinstance(found.get(needed), str):
                raise SignInRefused(502, "the sign-in provider is misconfigured", f"discovery: no {needed}")
        self._metadata = (now, found)
        return found

    async def key_set(self, *, force: bool = False) -> KeySet:
        now = self._monotonic()
        if force or self._jwks is None or now - self._jwks[0] >= METADATA_MAX_AGE_S:
            uri = (await self.metadata())["jwks_uri"]
            try:
                async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_S) as http:
                    answer = await http.get(uri)
                    answer.raise_for_status()
                    self._jwks = (now, answer.json())
            except (httpx.HTTPError, ValueError) as exc:
                raise SignInRefused(
                    502, "the sign-in provider cannot be reached: try again later", f"JWKS at {uri}: {exc}"
                ) from None
        return KeySet.import_key_set(cast(Any, self._jwks[1]))

    # --- the flow ------------------------------------------------------------------------------------

    async def begin(self, redis: aioredis.Redis, redirect_uri: str, target: str) -> tuple[str, str]:
        """A new flow: the provider's authorization URL to send the browser to, and the binding value for
        :data:`OIDC_COOKIE`."""
        metadata = await self.metadata()
        state, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        verifier, binding = secrets.token_urlsafe(48), secrets.token_urlsafe(32)
        endpoint = str(metadata["authorization_endpoint"])
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self.client_id,
                "redirect_uri": redirect_uri,
                "scope": self.settings.scopes,
                "state": state,
                "nonce": nonce,
                "code_challenge": create_s256_code_challenge(verifier),
                "code_challenge_method": "S256",
            }
        )
        url = endpoint + ("&" if "?" in endpoint else "?") + query
        flow = {
            "binding": _digest(binding),
            "nonce": nonce,
            "verifier": verifier,
            "redirect_uri": redirect_uri,
            "target": target,
        }
        await redis.set(
            keys.OIDC_FLOW.key(self.prefix, _digest(state)), json.dumps(flow), ex=self.settings.flow_max_age_s
        )
        return str(url), binding

    async def finish(self, redis: aioredis.Redis, params: Mapping[str, str], binding: str) -> SignedIn:
        """The provider's redirect (``params``: its query) in the browser that holds ``binding``: the flow
        taken (once), the code exchanged, the ID token verified; raises :class:`SignInRefused`."""
        state = params.get("state", "")
        if not state or len(state) > 512:
            raise SignInRefused(400, "the sign-in came back without its state: start again", "no state")
        raw = cast(str | None, await redis.getdel(keys.OIDC_FLOW.key(self.prefix, _digest(state))))
        if raw is None:
            raise SignInRefused(
                400, "this sign-in is unknown or has expired: start again", "unknown, used or expired state"
            )
        flow = json.loads(raw)
        if not binding or not hmac.compare_digest(_digest(binding), str(flow["binding"])):
            raise SignInRefused(
                400,
                "this sign-in was started in another browser: start again here",
                "the flow's browser binding cookie is missing or wrong",
            )
        if error := params.get("error"):
            described = params.get("error_description", "")[:200]
            raise SignInRefused(
                403,
                "the sign-in provider did not sign you in" + (f": {described}" if described else ""),
                f"the provider answered {error[:64]}" + (f": {described}" if described else ""),
            )
        code = params.get("code", "")
        if not code:
            raise SignInRefused(400, "the sign-in came back without a code: start again", "no code")
        claims = await self.exchange(code, flow)
        name = user_name_of(claims, self.settings)
        return SignedIn(
            name=name,
            role=mapped_role(claims, self.settings),
            subject=str(claims.get("sub", "")),
            target=str(flow["target"]),
        )

    async def exchange(self, code: str, flow: Mapping[str, Any]) -> dict[str, Any]:
        """The code exchanged for tokens (with the PKCE verifier), the ID token verified; its claims (with
        the userinfo endpoint's, when a claim the dashboard needs is not in the ID token)."""
        metadata = await self.metadata()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": str(flow["redirect_uri"]),
            "code_verifier": str(flow["verifier"]),
        }
        secret = self.settings.client_secret
        basic = None
        if secret is None:
            form["client_id"] = self.client_id  # a public client: PKCE is its proof
        else:
            basic = httpx.BasicAuth(self.client_id, secret.get_secret_value())  # client_secret_basic
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_S) as http:
            try:
                answer = await http.post(
                    str(metadata["token_endpoint"]),
                    data=form,
                    auth=basic if basic is not None else httpx.USE_CLIENT_DEFAULT,
                    headers={"Accept": "application/json"},
                )
                token = answer.json()
            except (httpx.HTTPError, ValueError) as exc:
                raise SignInRefused(
                    502, "the sign-in provider cannot be reached: try again later", f"token endpoint: {exc}"
                ) from None
            if answer.status_code != 200 or not isinstance(token, dict):
                error = (
                    token.get("error", answer.status_code) if isinstance(token, dict) else answer.status_code
                )
                raise SignInRefused(
                    403,
                    "the sign-in provider did not accept the sign-in: start again",
                    f"token endpoint answered {str(error)[:64]}",
                )
            id_token = token.get("id_token")
            if not isinstance(id_token, str):
                raise SignInRefused(403, "the sign-in provider sent no ID token", "no id_token in the answer")
            access_token = token.get("access_token")
            claims = await self.verified(id_token, str(flow["nonce"]), access_token, metadata)
            wanted = [self.settings.username_claim, self.settings.roles_claim]
            endpoint = metadata.get("userinfo_endpoint")
            if any(c is not None and c not in claims for c in wanted) and endpoint and access_token:
                claims = {**(await self.userinfo(http, str(endpoint), str(access_token), claims)), **claims}
        return claims

    async def verified(
        self, id_token: str, nonce: str, access_token: object, metadata: Mapping[str, Any]
    ) -> dict[str, Any]:
        algorithms = metadata.get("id_token_signing_alg_values_supported") or ["RS256"]
        registry = JWSRegistry(algorithms=[a for a in algorithms if a != "none"], strict_check_header=False)
        try:
            try:
                decoded = jwt.decode(id_token, await self.key_set(), registry=registry)
            except InvalidKeyIdError:
                decoded = jwt.decode(id_token, await self.key_set(force=True), registry=registry)
            params: dict[str, Any] = {"nonce": nonce, "client_id": self.client_id}
            if isinstance(access_token, str):
                params["access_token"] = access_token
            checked = CodeIDToken(
                decoded.claims,
                decoded.header,
                {
                    "iss": {"essential": True, "value": str(metadata["issuer"])},
                    "aud": {"essential": True, "value": self.client_id},
                    "exp": {"essential": True},
                    "nonce": {"essential": True, "value": nonce},
                },
                params,
            )
            checked.validate(leeway=LEEWAY_S)
        except (JoseError, ValueError, KeyError, TypeError) as exc:
            raise SignInRefused(
                403, "the sign-in provider's ID token was not accepted: start again", f"ID token: {exc}"
            ) from None
        return dict(checked)

    async def userinfo(
        self, http: httpx.AsyncClient, endpoint: str, access_token: str, claims: Mapping[str, Any]
    ) -> dict[str, Any]:
        try:
            answer = await http.get(endpoint, headers={"Authorization": f"Bearer {access_token}"})
            answer.raise_for_status()
            found = answer.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise SignInRefused(
                502, "the sign-in provider cannot be reached: try again later", f"userinfo: {exc}"
            ) from None
        if not isinstance(found, dict) or found.get("sub") != claims.get("sub"):
            raise SignInRefused(
                403, "the sign-in provider's answer was not accepted", "userinfo: another sub"
            )
        return found
