"""The Channels page's Amazon routes against the simulator, without a browser: a channel's check
(``/api/channels/test``: ok, or LWA's refusal shown), its marketplaces discovered
(``/api/channels/discover``), a file channel's dashboard change taken back (``/api/channels/revert``),
and the edges of Amazon's authorization callback (a tampered state, a state of another admin, the
"continue" page without a session, a re-authorization that replaces only the credentials, a consent
of another seller, the secret store unreachable). The whole consent in chromium is
test_channels_browser.py's."""

from __future__ import annotations

import base64
import os
import re
import secrets
from collections.abc import Iterator
from contextlib import AsyncExitStack
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import redis.asyncio as aioredis
import yaml
from pydantic import SecretStr
from starlette.testclient import TestClient

from ordersync.amazon.authorization import sign_state
from ordersync.dashboard import create_app
from ordersync.ops.audit import AuditFilter, AuditLog
from ordersync.ops.users import UserStore
from ordersync.schemas.events import AuditRecorded
from ordersync.secret_store import open_secret_store
from ordersync.settings import (
    AmazonSettings,
    AuthorizationSettings,
    AwsSettings,
    SecretsSettings,
    Settings,
)
from ordersync.simulator import RunningSimulator, SimulatorState
from ordersync.simulator.testing import TEST_APPLICATION, TEST_SELLER, tiny_scenario
from ordersync.state.channel_registry import read_view
from tests.factories import dashboard_settings
from tests.stage.test_amazon_authorization_sim import read_page
from tests.stage.test_dashboard_accounts import RecordingSink, csrf_of, sign_in

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("topics")]

APP_ID = "amzn1.sp.solution.test"
US, CA, MX = "ATVPDKIKX0DER", "A2EUQ1WTGCTBG2", "A1AM78C64UM0Y8"
SECOND, THIRD = "A2SECONDSELLER", "A3THIRDSELLER"
ADMIN, OTHER_ADMIN, VIEWER, OPERATOR = (
    ("ada", "admin-password-1"),
    ("alan", "admin-password-2"),
    ("vera", "viewer-password-1"),
    ("otto", "operator-pw-2"),
)
#: Nothing listens there.
CLOSED = "http://127.0.0.1:1"


@pytest.fixture(scope="module")
def sim() -> Iterator[RunningSimulator]:
    def seller(seller_id: str, marketplaces: list[str], token: str) -> dict[str, Any]:
        return {
            "seller_id": seller_id,
            "region": "na",
            "marketplaces": marketplaces,
            "applications": [{**TEST_APPLICATION, "refresh_token": token}],
            "catalogue_size": 1,
            "orders": {"count": 1},
        }

    scenario = tiny_scenario(
        orders={"count": 2, "history_s": 3600},
        extra_sellers=[seller(SECOND, [US, CA], "Atzr|second"), seller(THIRD, [US, MX], "Atzr|third")],
        start=None,
        time_scale=1,
    )
    with RunningSimulator(SimulatorState(scenario)) as running:
        yield running


def _credentials(refresh_token: str) -> dict[str, Any]:
    return {
        "client_id": {"value": TEST_APPLICATION["client_id"]},
        "client_secret": {"value": TEST_APPLICATION["client_secret"]},
        "refresh_token": {"value": refresh_token},
    }


def _channels_file(path: Path) -> Path:
    """The file's channels: the test seller (works), the second seller with only one of its two
    marketplaces, and a seller whose refresh token the simulator refuses."""
    channels = [
        {
            "name": "sim-us",
            "seller_id": TEST_SELLER,
            "region": "na",
            "marketplaces": [US],
            "credentials": _credentials(TEST_APPLICATION["refresh_token"]),
        },
        {
            "name": "second-us",
            "seller_id": SECOND,
            "region": "na",
            "marketplaces": [US],
            "credentials": _credentials("Atzr|second"),
        },
        {
            "name": "refused-us",
            "seller_id": "A9REFUSED",
            "region": "na",
            "marketplaces": [US],
            "credentials": _credentials("Atzr|nobody-knows-this-one"),
        },
    ]
    path.write_text(yaml.safe_dump({"channels": channels}))
    return path


def _settings(  # noqa: PLR0917 - what each test has
    sim: RunningSimulator, redis_url: str, prefix: str, tmp_path: Path, bootstrap: str, aws: AwsSettings
) -> Settings:
    base = dashboard_settings(
        redis_url, prefix, _channels_file(tmp_path / "channels.yaml"), kafka_bootstrap=bootstrap
    )
    kek = SecretStr(base64.b64encode(os.urandom(32)).decode())
    amazon = AmazonSettings(
        endpoint=sim.base_url,
        lwa_endpoint=sim.lwa_url,
        time_scale=1,
        request_timeout_s=10,
        authorization=AuthorizationSettings(
            application_id=APP_ID,
            client_id=TEST_APPLICATION["client_id"],
            client_secret=SecretStr(TEST_APPLICATION["client_secret"]),
            seller_central_url=sim.base_url,
            state_secret=SecretStr(secrets.token_urlsafe(32)),
        ),
    )
    return base.model_copy(
        update={
            "secrets": SecretsSettings(bucket=f"secrets-{prefix}".lower()[:60], kek=kek),
            "aws": aws,
            "amazon": amazon,
        }
    )


async def _users(redis_client: aioredis.Redis, prefix: str) -> None:
    users = UserStore(redis_client, prefix)
    await users.add(ADMIN[0], "admin", ADMIN[1], "test")
    await users.add(OTHER_ADMIN[0], "admin", OTHER_ADMIN[1], "test")
    await users.add(VIEWER[0], "viewer", VIEWER[1], "test")
    await users.add(OPERATOR[0], "operator", OPERATOR[1], "test")


async def _audit(redis_client: aioredis.Redis, prefix: str, action: str) -> list[AuditRecorded]:
    page = await AuditLog(redis_client, prefix).page(AuditFilter(action=action), limit=100)
    return [entry for _, entry in page.entries]


async def _secret(settings: Settings, name: str) -> str:
    async with AsyncExitStack() as stack:
        store = await open_secret_store(settings, stack)
        return (await store.get(name)).get_secret_value()


def _consent_url(client: TestClient, name: str, region: str = "na") -> str:
    """The admin's "Authorize with Amazon": where the dashboard sends the browser."""
    answer = client.get(
        "/channels/authorize", params={"name": name, "region": region}, follow_redirects=False
    )
    assert answer.status_code == 303, answer.text
    return str(answer.headers["location"])


def _consent(url: str, seller_id: str) -> str:
    """The seller's browser on the simulator's Seller Central: the account chosen, Confirm pressed;
    the dashboard's callback (path and query) Amazon sends the browser back to."""
    page = read_page(httpx.get(url, timeout=10))
    assert page.form["id"] == "consent-form", page.error_code
    form = {**page.fields, "selling_partner_id": seller_id}
    action = urlsplit(url)._replace(path=page.form["action"], query="").geturl()
    answer = httpx.post(action, data=form, follow_redirects=False, timeout=10)
    assert answer.status_code == 302, answer.text
    back = urlsplit(answer.headers["location"])
    assert (back.netloc, back.path) == ("testserver", "/channels/authorized")
    return f"{back.path}?{back.query}"


def _authorize(client: TestClient, name: str, seller_id: str) -> httpx.Response:
    """The whole consent, the callback answered (not followed)."""
    callback = _consent(_consent_url(client, name), seller_id)
    answer: httpx.Response = client.get(callback, follow_redirects=False)
    return answer


# --- test ------------------------------------------------------------------------------------------------


async def test_a_channel_is_checked_against_amazon(  # noqa: PLR0917 - fixtures
    sim: RunningSimulator,
    redis_url: str,
    redis_key_prefix: str,
    redis_client: aioredis.Redis,
    kafka_bootstrap: str,
    aws: AwsSettings,
    tmp_path: Path,
) -> None:
    await _users(redis_client, redis_key_prefix)
    settings = _settings(sim, redis_url, redis_key_prefix, tmp_path, kafka_bootstrap, aws)
    with TestClient(create_app(settings, audit_sink=RecordingSink())) as client:
        head = {"X-CSRF-Token": sign_in(client, *ADMIN)}

        ok = client.post("/api/channels/test", json={"name": "sim-us"}, headers=head)
        assert ok.status_code == 200, ok.text
        report = ok.json()
        assert report["ok"] is True, report
        assert report["auth"] == "access token granted"
        assert report["status"] == 200
        lines = report["lines"]
        assert lines[0].startswith("channel      sim-us (seller A1TESTSELLER, region na")
        assert lines[1] == f"endpoint     {sim.base_url}"
        assert any(line.startswith(f"marketplaces {US}: accepted") for line in lines)
        assert lines[-1] == "result       OK"
        assert TEST_APPLICATION["refresh_token"] not in ok.text
        assert TEST_APPLICATION["client_secret"] not in ok.text

        # LWA refuses the refresh token: the failure is the answer, not a 500.
        refused = client.post("/api/channels/test", json={"name": "refused-us"}, headers=head)
        assert refused.status_code == 200, refused.text
        report = refused.json()
        assert report["ok"] is False
        assert report["auth"].startswith("refused: invalid_grant"), report
        assert report["lines"][-1] == "result       FAILED"
        assert "Atzr|nobody-knows-this-one" not in refused.text

        unknown = client.post("/api/channels/test", json={"name": "nowhere"}, headers=head)
        assert unknown.status_code == 404
        assert "nowhere" in unknown.json()["error"]

    audited = await _audit(redis_client, redis_key_prefix, "channel.test")
    outcomes = sorted((e.targets[0] if e.targets else "", e.outcome) for e in audited)
    assert ("sim-us", "sent") in outcomes
    assert ("refused-us", "failed") in outcomes
    assert ("nowhere", "refused") in outcomes

    for user in (VIEWER, OPERATOR):
        with TestClient(create_app(settings, audit_sink=RecordingSink())) as client:
            head = {"X-CSRF-Token": sign_in(client, *user)}
            for route in ("test", "discover", "revert"):
                answer = client.post(f"/api/channels/{route}", json={"name": "sim-us"}, headers=head)
                assert answer.status_code == 403, (user, route, answer.text)


async def test_discovery_lists_the_sellers_marketplaces(  # noqa: PLR0917 - fixtures
    sim: RunningSimulator,
    redis_url: str,
    redis_key_prefix: str,
    redis_client: aioredis.Redis,
    kafka_bootstrap: str,
    aws: AwsSettings,
    tmp_path: Path,
) -> None:
    await _users(redis_client, redis_key_prefix)
    settings = _settings(sim, redis_url, redis_key_prefix, tmp_path, kafka_bootstrap, aws)
    with TestClient(create_app(settings, audit_sink=RecordingSink())) as client:
        head = {"X-CSRF-Token": sign_in(client, *ADMIN)}
        found = client.post("/api/channels/discover", json={"name": "second-us"}, headers=head)
        assert found.status_code == 200, found.text
        answer = found.json()
        assert answer["participating"] == [US, CA]
        assert [
            (p["marketplace_id"], p["country_code"], p["participating"]) for p in answer["participations"]
        ] == [
            (US, "US", True),
            (CA, "CA", True),
        ]
        assert all(p["suspended_listings"] is False for p in answer["participations"])
        # The definition (the channel's own, no page YAML given) with both marketplaces.
        definition = yaml.safe_load(answer["yaml"])
        assert definition["name"] == "second-us"
        assert definition["seller_id"] == SECOND
        assert definition["marketplaces"] == [US, CA]
        assert "Atzr|second" not in found.text

        # The page's YAML given: it is what comes back, with the marketplaces replaced.
        page_yaml = (
            "name: second-us\nseller_id: A2SECONDSELLER\nregion: na\nmarketplaces: [X]\n"
            "sales_order_prefix: SE\n"
        )
        found = client.post(
            "/api/channels/discover", json={"name": "second-us", "yaml": page_yaml}, headers=head
        )
        assert found.status_code == 200, found.text
        definition = yaml.safe_load(found.json()["yaml"])
        assert definition["marketplaces"] == [US, CA]
        assert definition["sales_order_prefix"] == "SE"

        # LWA refusing the channel's token: Amazon's answer, not a 500.
        refused = client.post("/api/channels/discover", json={"name": "refused-us"}, headers=head)
        assert refused.status_code == 502, refused.text
        unknown = client.post("/api/channels/discover", json={"name": "nowhere"}, headers=head)
        assert unknown.status_code == 404
    audited = await _audit(redis_client, redis_key_prefix, "channel.discover")
    assert any(e.outcome == "sent" and e.detail == f"{US},{CA}" for e in audited)


async def test_a_file_channel_changed_in_the_dashboard_is_reverted(  # noqa: PLR0917 - fixtures
    sim: RunningSimulator,
    redis_url: str,
    redis_key_prefix: str,
    redis_client: aioredis.Redis,
    kafka_bootstrap: str,
    aws: AwsSettings,
    tmp_path: Path,
) -> None:
    await _users(redis_client, redis_key_prefix)
    settings = _settings(sim, redis_url, redis_key_prefix, tmp_path, kafka_bootstrap, aws)
    with TestClient(create_app(settings, audit_sink=RecordingSink())) as client:
        head = {"X-CSRF-Token": sign_in(client, *ADMIN)}

        def listed() -> dict[str, dict[str, Any]]:
            return {c["name"]: c for c in client.get("/api/channels").json()["channels"]}

        # Never changed: nothing to take back.
        never = client.post("/api/channels/revert", json={"name": "sim-us"}, headers=head)
        assert never.status_code == 422, never.text
        assert "no dashboard change" in str(never.json()["problems"])

        off = client.post("/api/channels/active", json={"name": "sim-us", "active": False}, headers=head)
        assert off.status_code == 200, off.text
        assert (listed()["sim-us"]["source"], listed()["sim-us"]["active"]) == ("dashboard", False)

        back = client.post("/api/channels/revert", json={"name": "sim-us"}, headers=head)
        assert back.status_code == 200, back.text
        assert back.json() == {"name": "sim-us", "source": "file"}
        assert (listed()["sim-us"]["source"], listed()["sim-us"]["active"]) == ("file", True)
        found = await read_view(redis_client, redis_key_prefix)
        assert found is not None
        assert found[1]["sim-us"].channel is None
        # Taken back once: there is nothing more to take back.
        again = client.post("/api/channels/revert", json={"name": "sim-us"}, headers=head)
        assert again.status_code == 422

        # A channel only the registry has: not the file's to take back.
        definition = (
            "name: new-us\nseller_id: A7NEWSELLER\nregion: na\nmarketplaces: [ATVPDKIKX0DER]\n"
            "credentials:\n  client_id: {env: NEW_CLIENT_ID}\n  client_secret: {env: NEW_CLIENT_SECRET}\n"
            "  refresh_token: {env: NEW_REFRESH_TOKEN}\n"
        )
        saved = client.post("/api/channels/save", json={"name": "new-us", "yaml": definition}, headers=head)
        assert saved.status_code == 200, saved.text
        only = client.post("/api/channels/revert", json={"name": "new-us"}, headers=head)
        assert only.status_code == 422, only.text
        assert listed()["new-us"]["source"] == "dashboard"
        unknown = client.post("/api/channels/revert", json={"name": "nowhere"}, headers=head)
        assert unknown.status_code == 404
    outcomes = [e.outcome for e in await _audit(redis_client, redis_key_prefix, "channel.revert")]
    assert sorted(outcomes) == ["refused", "refused", "refused", "refused", "sent"]


async def test_the_authorization_callbacks_edges(  # noqa: PLR0917 - fixtures
    sim: RunningSimulator,
    redis_url: str,
    redis_key_prefix: str,
    redis_client: aioredis.Redis,
    kafka_bootstrap: str,
    aws: AwsSettings,
    tmp_path: Path,
) -> None:
    await _users(redis_client, redis_key_prefix)
    settings = _settings(sim, redis_url, redis_key_prefix, tmp_path, kafka_bootstrap, aws)
    key = settings.amazon.authorization.state_secret
    assert key is not None
    with TestClient(create_app(settings, audit_sink=RecordingSink())) as client:
        sign_in(client, *ADMIN)

        # The consent URI: the simulator's Seller Central, the state signed, back to this dashboard.
        url = _consent_url(client, "third-us")
        query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
        assert url.startswith(f"{sim.base_url}/apps/authorize/consent?")
        assert query["application_id"] == APP_ID
        assert query["redirect_uri"] == "http://testserver/channels/authorized"
        callback = _consent(url, THIRD)

        # A tampered state: another payload under the genuine signature.
        genuine = parse_qs(urlsplit(callback).query)["state"][0]
        forged = sign_state(key, {"channel": "evil", "region": "na", "user": ADMIN[0], "nonce": "n"})
        tampered = forged.split(".")[0] + "." + ".".join(genuine.split(".")[1:])
        assert tampered != genuine
        answer = client.get(callback.replace(genuine, tampered), follow_redirects=False)
        assert answer.status_code == 400, answer.text
        assert "not accepted" in answer.text
        refused = await _audit(redis_client, redis_key_prefix, "channel.authorize")
        assert [e.outcome for e in refused] == ["refused"]

        # A state signed for another admin.
        theirs = sign_state(
            key, {"channel": "third-us", "region": "na", "user": OTHER_ADMIN[0], "nonce": "n"}
        )
        answer = client.get(callback.replace(genuine, theirs), follow_redirects=False)
        assert answer.status_code == 403, answer.text
        assert "another user" in answer.text

        # The genuine callback: the channel added, its secrets in the store, its marketplaces discovered.
        answer = client.get(callback, follow_redirects=False)
        assert answer.status_code == 303, answer.text
        assert answer.headers["location"] == "/channels?authorized=third-us"
        found = await read_view(redis_client, redis_key_prefix)
        assert found is not None
        first = found[1]["third-us"].channel
        assert first is not None
        assert (first.seller_id, first.marketplaces, first.active) == (THIRD, (US, MX), True)
        assert first.stored_secrets() == ["client_id", "client_secret", "refresh_token"]
        token = await _secret(settings, "channels/third-us/refresh_token")
        assert token.startswith("Atzr|")
        assert token != "Atzr|third"
        checked = client.post(
            "/api/channels/test", json={"name": "third-us"}, headers={"X-CSRF-Token": csrf_of(client)}
        )
        assert checked.json()["ok"] is True, checked.text

        # Authorized again: only the credentials are replaced (the same store references).
        answer = _authorize(client, "third-us", THIRD)
        assert answer.status_code == 303, answer.text
        found = await read_view(redis_client, redis_key_prefix)
        assert found is not None
        assert found[1]["third-us"].channel == first
        renewed = await _secret(settings, "channels/third-us/refresh_token")
        assert renewed.startswith("Atzr|")
        assert renewed != token
        assert await _secret(settings, "channels/third-us/client_id") == TEST_APPLICATION["client_id"]

        # The second seller's consent for the third seller's channel: refused, nothing changed.
        answer = _authorize(client, "third-us", SECOND)
        assert answer.status_code == 409, answer.text
        assert await _secret(settings, "channels/third-us/refresh_token") == renewed
        outcomes = [e.outcome for e in await _audit(redis_client, redis_key_prefix, "channel.authorize")]
        assert sorted(outcomes) == ["refused", "refused", "refused", "sent", "sent"]

        # The file's channel (its credentials inline in the file) authorized again: the new token is the
        # application's, so all three credentials move to the secret store; the record holds none.
        answer = _authorize(client, "sim-us", TEST_SELLER)
        assert answer.status_code == 303, answer.text
        found = await read_view(redis_client, redis_key_prefix)
        assert found is not None
        moved = found[1]["sim-us"]
        assert moved.channel is not None
        assert moved.channel.stored_secrets() == ["client_id", "client_secret", "refresh_token"]
        assert not moved.credentials_from_file
        checked = client.post(
            "/api/channels/test", json={"name": "sim-us"}, headers={"X-CSRF-Token": csrf_of(client)}
        )
        assert checked.json()["ok"] is True, checked.text

    # Back from Amazon without the session (SameSite=Strict): the page sends the browser on from here.
    with TestClient(create_app(settings, audit_sink=RecordingSink())) as stranger:
        answer = stranger.get(callback, follow_redirects=False)
        assert answer.status_code == 200, answer.text
        assert "Back from Amazon" in answer.text
        link = re.search(r'<a href="([^"]+)" id="continue"', answer.text)
        assert link is not None
        target = urlsplit(unescape(link.group(1)))
        assert target.path == "/channels/authorized"
        continued = {k: v[0] for k, v in parse_qs(target.query).items()}
        assert continued["continued"] == "1"
        assert continued["state"] == genuine
        # Followed, still without a session: refused (a sign-in is needed), no second answer page.
        followed = stranger.get(unescape(link.group(1)), follow_redirects=False)
        assert followed.status_code == 401, followed.text
        assert "Back from Amazon" not in followed.text


async def test_with_the_secret_store_unreachable_nothing_is_saved(  # noqa: PLR0917 - fixtures
    sim: RunningSimulator,
    redis_url: str,
    redis_key_prefix: str,
    redis_client: aioredis.Redis,
    kafka_bootstrap: str,
    aws: AwsSettings,
    tmp_path: Path,
) -> None:
    await _users(redis_client, redis_key_prefix)
    closed = aws.model_copy(update={"endpoint_url": CLOSED})
    settings = _settings(sim, redis_url, redis_key_prefix, tmp_path, kafka_bootstrap, closed)
    with TestClient(create_app(settings, audit_sink=RecordingSink())) as client:
        sign_in(client, *ADMIN)
        answer = _authorize(client, "third-us", THIRD)
        assert answer.status_code == 503, answer.text
        assert "secret store is unavailable" in answer.text
        listed = {c["name"] for c in client.get("/api/channels").json()["channels"]}
        assert "third-us" not in listed
    found = await read_view(redis_client, redis_key_prefix)
    assert found is None or "third-us" not in found[1]
    outcomes = [e.outcome for e in await _audit(redis_client, redis_key_prefix, "channel.authorize")]
    assert outcomes == ["failed"]
