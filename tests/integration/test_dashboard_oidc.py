"""Single sign-on (``dashboard.oidc``) against a real OpenID provider on loopback (oidc-provider-mock: a
Flask app with authlib's authorization server, in a thread), the dashboard through starlette's TestClient
on the real Redis, no broker (the audit goes to a recording sink). The provider's authorization page is
driven as a person would: its form posted with the subject to sign in as. Nothing inside the process is
replaced: discovery, the code exchange, the JWKS and the ID token are the provider's own.

A user whose group maps to operator lands signed in as an operator and can act; a user with no mapped
role, a disabled account, a changed state, a callback in another browser, a replayed callback and an ID
token whose nonce is not the flow's are refused, each audited."""

from __future__ import annotations

import re
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx
import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr
from starlette.testclient import TestClient

from ordersync.dashboard import create_app
from ordersync.ops.audit import AuditFilter, AuditLog
from ordersync.ops.users import UserStore
from ordersync.schemas.events import AuditRecorded
from ordersync.settings import OidcSettings, Settings
from tests.factories import dashboard_settings, write_channels_file
from tests.stage.test_dashboard_accounts import RecordingSink

with warnings.catch_warnings():
    # oidc-provider-mock 0.3.4 imports authlib.jose, which authlib deprecates (for joserfc) from 1.7 on.
    warnings.simplefilter("ignore", DeprecationWarning)
    from oidc_provider_mock import run_server_in_thread

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(120),
    # The provider (oidc-provider-mock 0.3.4, in its thread) uses authlib APIs that authlib 1.7+
    # deprecates: its warnings, not ordersync's.
    pytest.mark.filterwarnings("ignore:get_jwt_config:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::authlib.deprecate.AuthlibDeprecationWarning"),
]

NO_BROKER = "127.0.0.1:1"
CALLBACK = "http://testserver/login/oidc/callback"
CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


@pytest.fixture(scope="module")
def provider() -> Iterator[str]:
    """The provider's issuer URL (clients must register, so the redirect URI is checked)."""
    with run_server_in_thread(require_client_registration=True) as server:
        yield f"http://localhost:{server.server_port}"


@pytest.fixture(scope="module")
def registered(provider: str) -> tuple[str, str]:
    """The dashboard's client id and secret at the provider."""
    answer = httpx.post(provider + "/oauth2/clients", json={"redirect_uris": [CALLBACK]})
    assert answer.status_code == 201, answer.text
    return answer.json()["client_id"], answer.json()["client_secret"]


@pytest.fixture
def tag() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture
def settings(
    redis_url: str, redis_key_prefix: str, tmp_path: Path, provider: str, registered: tuple[str, str]
) -> Settings:
    base = dashboard_settings(
        redis_url,
        redis_key_prefix,
        write_channels_file(tmp_path / "channels.yaml"),
        kafka_bootstrap=NO_BROKER,
    )
    oidc = OidcSettings(
        issuer=provider,
        provider_name="Acme ID",
        client_id=registered[0],
        client_secret=SecretStr(registered[1]),
        roles_claim="groups",
        role_map={"ordersync-operators": "operator", "ordersync-admins": "admin", "everyone": "viewer"},
    )
    return base.model_copy(update={"dashboard": base.dashboard.model_copy(update={"oidc": oidc})})


def person(provider: str, sub: str, claims: dict[str, Any]) -> None:
    """A user at the provider, with their claims."""
    assert httpx.put(f"{provider}/users/{sub}", json=claims).status_code == 204


def to_provider(client: TestClient, target: str = "/tasks") -> str:
    """``GET /login/oidc``: the provider's authorization URL the dashboard sends the browser to."""
    answer = client.get("/login/oidc", params={"next": target}, follow_redirects=False)
    assert answer.status_code == 303, answer.text
    assert "ordersync_oidc" in answer.headers["set-cookie"]
    assert "samesite=lax" in answer.headers["set-cookie"].lower()
    return answer.headers["location"]


def authorize(url: str, sub: str) -> str:
    """The provider's authorization page, its form posted as ``sub``: the callback URL it redirects to."""
    with httpx.Client() as browser:
        page = browser.get(url)
        assert page.status_code == 200, page.text
        assert 'name="sub"' in page.text
        answer = browser.post(url, data={"sub": sub})
    assert answer.status_code == 302, answer.text
    location = answer.headers["location"]
    assert location.startswith(CALLBACK + "?")
    return location


def back(client: TestClient, callback: str) -> httpx.Response:
    parts = urlsplit(callback)
    return client.get(f"{parts.path}?{parts.query}", follow_redirects=False)


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    return urlunsplit(parts._replace(query=urlencode({**query, **changes})))


async def sign_ins(redis_client: aioredis.Redis, prefix: str) -> list[AuditRecorded]:
    page = await AuditLog(redis_client, prefix).page(AuditFilter(action="sign-in"), limit=100)
    return [entry for _, entry in page.entries]


async def test_an_operator_signs_in_through_the_provider_and_acts(
    settings: Settings, provider: str, redis_client: aioredis.Redis, redis_key_prefix: str, tag: str
) -> None:
    email = f"olga-{tag}@example.com"
    person(provider, f"sub-{tag}", {"email": email, "groups": ["everyone", "ordersync-operators"]})
    with TestClient(create_app(settings, audit_sink=RecordingSink())) as client:
        login = client.get("/login").text
        assert 'id="sso-sign-in"' in login
        assert "Sign in with Acme ID" in login
        url = to_provider(client)
        query = parse_qs(urlsplit(url).query)
        assert url.startswith(provider + "/oauth2/authorize?")
        assert query["code_challenge_method"] == ["S256"]
        assert len(query["code_challenge"][0]) == 43
        assert query["redirect_uri"] == [CALLBACK]
        assert query["scope"] == ["openid email profile"]
        assert query["nonce"][0]
        assert query["state"][0]

        landed = back(client, authorize(url, f"sub-{tag}"))
        assert landed.status_code == 200, landed.text
        assert 'http-equiv="refresh" content="0;url=/tasks"' in landed.text
        assert "ordersync_session" in landed.headers.get("set-cookie", "")

        tasks = client.get("/tasks")
        assert tasks.status_code == 200
        assert 'data-role="operator"' in tasks.text
        assert email in tasks.text
        # An operator acts: admitted (the alert is not there: 404, not 403) and reads the audit.
        csrf = CSRF_META.search(tasks.text)
        assert csrf is not None
        acted = client.post(
            "/api/alerts/actions",
            json={"action": "acknowledge", "fingerprint": "api-status:nowhere:orders"},
            headers={"X-CSRF-Token": csrf.group(1)},
        )
        assert acted.status_code == 404, acted.text
        assert client.get("/audit").status_code == 200

        # The account: a single sign-on account, without a password.
        user = await UserStore(redis_client, redis_key_prefix).require(email)
        assert (user.role, user.sso, user.password_hash) == ("operator", True, "")
        # Another browser on another replica: a password sign-in is refused.
        with TestClient(create_app(settings, audit_sink=RecordingSink())) as stranger:
            password = stranger.post(
                "/login", data={"username": email, "password": "x" * 20, "next": "/"}, follow_redirects=False
            )
        assert password.status_code == 403

        # The provider moves the user to viewers: the next sign-in gives that role.
        person(provider, f"sub-{tag}", {"email": email, "groups": ["everyone"]})
        assert back(client, authorize(to_provider(client), f"sub-{tag}")).status_code == 200
        assert 'data-role="viewer"' in client.get("/tasks").text

    entries = [e for e in await sign_ins(redis_client, redis_key_prefix) if e.actor == email]
    outcomes = [(e.outcome, e.detail, e.role) for e in reversed(entries)]
    assert outcomes[0] == ("sent", "method: oidc", "operator")
    assert outcomes[-1] == ("sent", "method: oidc", "viewer")
    assert any(e.outcome == "refused" and "single sign-on" in e.reason for e in entries)


async def test_a_user_without_a_mapped_role_or_disabled_is_refused(
    settings: Settings, provider: str, redis_client: aioredis.Redis, redis_key_prefix: str, tag: str
) -> None:
    stranger = f"sam-{tag}@example.com"
    person(provider, f"stranger-{tag}", {"email": stranger, "groups": ["sales"]})
    disabled = f"dora-{tag}@example.com"
    person(provider, f"disabled-{tag}", {"email": disabled, "groups": ["ordersync-operators"]})
    users = UserStore(redis_client, redis_key_prefix)
    await users.single_sign_on(disabled, "operator", create=True, by="test")
    await users.set_disabled(disabled, True, "test")
    with TestClient(create_app(settings, audit_sink=RecordingSink())) as client:
        refused = back(client, authorize(to_provider(client), f"stranger-{tag}"))
        assert refused.status_code == 403
        assert "has no role on this dashboard" in refused.text
        assert "ordersync_session" not in refused.headers.get("set-cookie", "")
        assert await users.get(stranger) is None
        off = back(client, authorize(to_provider(client), f"disabled-{tag}"))
        assert off.status_code == 403
        assert "you may not sign in" in off.text
        assert "ordersync_session" not in off.headers.get("set-cookie", "")
        assert client.get("/tasks").status_code == 401
    entries = {e.actor: e for e in await sign_ins(redis_client, redis_key_prefix)}
    assert entries[stranger].outcome == "refused"
    assert "no role mapped" in entries[stranger].reason
    assert entries[stranger].detail == "method: oidc"
    assert (entries[disabled].outcome, entries[disabled].reason) == ("refused", "the user is disabled")


async def test_a_changed_state_another_browser_and_a_replay_are_refused(
    settings: Settings, provider: str, redis_client: aioredis.Redis, redis_key_prefix: str, tag: str
) -> None:
    email = f"otto-{tag}@example.com"
    person(provider, f"sub-{tag}", {"email": email, "groups": ["ordersync-operators"]})
    sink = RecordingSink()
    # Two browsers, each on a dashboard of its own (replicas share Redis, as in production).
    with (
        TestClient(create_app(settings, audit_sink=sink)) as client,
        TestClient(create_app(settings, audit_sink=sink)) as elsewhere,
    ):
        callback = authorize(to_provider(client), f"sub-{tag}")
        tampered = back(client, with_query(callback, state="not-the-state"))
        assert tampered.status_code == 400
        assert "unknown or has expired" in tampered.text

        # The redirect opened in another browser (no binding cookie): refused, and the flow is spent.
        other = back(elsewhere, callback)
        assert other.status_code == 400
        assert "started in another browser" in other.text
        assert back(client, callback).status_code == 400

        # A sign-in finished once cannot be replayed.
        callback = authorize(to_provider(client), f"sub-{tag}")
        assert back(client, callback).status_code == 200
        assert back(client, callback).status_code == 400
    reasons = [e.reason for e in await sign_ins(redis_client, redis_key_prefix) if e.outcome == "refused"]
    assert "unknown, used or expired state" in reasons
    assert "the flow's browser binding cookie is missing or wrong" in reasons


async def test_an_id_token_with_another_nonce_is_refused(
    settings: Settings, provider: str, redis_client: aioredis.Redis, redis_key_prefix: str, tag: str
) -> None:
    """The authorization request's nonce changed on its way to the provider: the provider puts that
    nonce in the ID token, which is not the flow's."""
    email = f"nina-{tag}@example.com"
    person(provider, f"sub-{tag}", {"email": email, "groups": ["ordersync-operators"]})
    with TestClient(create_app(settings, audit_sink=RecordingSink())) as client:
        url = with_query(to_provider(client), nonce="another-nonce")
        refused = back(client, authorize(url, f"sub-{tag}"))
        assert refused.status_code == 403
        assert "ID token was not accepted" in refused.text
        assert "ordersync_session" not in refused.headers.get("set-cookie", "")
    assert await UserStore(redis_client, redis_key_prefix).get(email) is None
    entries = [e for e in await sign_ins(redis_client, redis_key_prefix) if e.outcome == "refused"]
    assert any("nonce" in e.reason for e in entries), [e.reason for e in entries]
