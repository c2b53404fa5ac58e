"""Amazon's website authorization workflow from ordersync's side, without a network: the consent URI per
region and draft state, the signed state (tampering, another key, expiry), the code exchange at LWA
(form, User-Agent, refusals mapped to the pipeline's errors), and marketplace discovery through the
client's one rate-limited request path."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit

import httpx
import pytest
from pydantic import SecretStr

from ordersync.amazon.authorization import (
    Authorization,
    AuthorizationStateError,
    AuthorizationStateExpired,
    consent_url,
    exchange_code,
    read_state,
    sign_state,
)
from ordersync.amazon.client import QuotaGrant, SpApiClient, user_agent
from ordersync.amazon.sellers import Participation, discover_marketplaces, parse_participations
from ordersync.channels import Channel, LwaCredentials, SecretRef
from ordersync.errors import AmazonRejected, AmazonUnavailable, ConfigurationError, Permanent
from ordersync.ratelimit import InMemoryRateLimiter, PlanBook
from ordersync.settings import AmazonSettings, AuthorizationSettings, Settings

pytestmark = pytest.mark.unit

APP_ID = "amzn1.sp.solution.3f1b0a6e-0000-4c2d-9e8f-123456789abc"
CLIENT_ID = "amzn1.application-oa2-client.abc"
CLIENT_SECRET = "the-client-secret"
REDIRECT = "https://dashboard.example/amazon/callback"
KEY = "a-state-signing-key"


def settings(**auth: Any) -> AmazonSettings:
    base: dict[str, Any] = {
        "application_id": APP_ID,
        "client_id": CLIENT_ID,
        "client_secret": SecretStr(CLIENT_SECRET),
        **auth,
    }
    return AmazonSettings(
        lwa_endpoint="https://lwa.example/auth/o2/token", authorization=AuthorizationSettings(**base)
    )


@pytest.mark.parametrize(
    ("region", "base"),
    [
        ("na", "https://sellercentral.amazon.com"),
        ("eu", "https://sellercentral-europe.amazon.com"),
        ("fe", "https://sellercentral.amazon.co.jp"),
    ],
)
def test_the_consent_uri_is_seller_centrals_of_the_region(region: Any, base: str) -> None:
    url = consent_url(settings(), region, "st.ate")
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == base
    assert parts.path == "/apps/authorize/consent"
    assert parse_qsl(parts.query) == [("application_id", APP_ID), ("state", "st.ate")]


def test_a_draft_application_asks_for_the_beta_version_and_the_redirect_uri_is_carried() -> None:
    url = consent_url(settings(draft=True, redirect_uri=REDIRECT), "eu", "s")
    query = parse_qs(urlsplit(url).query)
    assert query == {
        "application_id": [APP_ID],
        "state": ["s"],
        "version": ["beta"],
        "redirect_uri": [REDIRECT],
    }
    # An explicit redirect URI wins over the configured one.
    other = consent_url(settings(redirect_uri=REDIRECT), "na", "s", redirect_uri="https://other.example/cb")
    assert parse_qs(urlsplit(other).query)["redirect_uri"] == ["https://other.example/cb"]


def test_seller_central_url_overrides_every_region() -> None:
    auth = settings(seller_central_url="http://127.0.0.1:8100/").authorization
    for region in ("na", "eu", "fe"):
        assert auth.consent_base_for(region) == "http://127.0.0.1:8100/apps/authorize/consent"


def test_no_application_id_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="APPLICATION_ID"):
        consent_url(settings(application_id=None), "na", "s")


def test_the_authorization_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDERSYNC_AMAZON__AUTHORIZATION__APPLICATION_ID", APP_ID)
    monkeypatch.setenv("ORDERSYNC_AMAZON__AUTHORIZATION__CLIENT_SECRET", CLIENT_SECRET)
    monkeypatch.setenv("ORDERSYNC_AMAZON__AUTHORIZATION__DRAFT", "true")
    monkeypatch.setenv("ORDERSYNC_AMAZON__AUTHORIZATION__STATE_MAX_AGE_S", "60")
    auth = Settings().amazon.authorization
    assert (auth.application_id, auth.draft, auth.state_max_age_s) == (APP_ID, True, 60)
    assert auth.client_secret is not None
    assert CLIENT_SECRET not in repr(auth)
    assert Settings().amazon.authorization.redirect_uri is None


# --- the state ---------------------------------------------------------------------------------------


def test_a_signed_state_reads_back_within_its_age() -> None:
    payload = {"user": "alice", "region": "eu", "nonce": "n-1"}
    state = sign_state(SecretStr(KEY), payload)
    assert read_state(KEY, state, 900) == payload
    assert set(state) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")


@pytest.mark.parametrize(
    "tamper",
    [
        lambda s: s[:-5] + ("A" if s[-5] != "A" else "B") + s[-4:],  # the signature
        lambda s: ("e" if s[0] != "e" else "f") + s[1:],  # the payload
        lambda s: s.split(".")[0],  # the signature cut off
        lambda s: "",
    ],
)
def test_a_changed_state_is_refused(tamper: Callable[[str], str]) -> None:
    state = sign_state(KEY, {"user": "alice"})
    with pytest.raises(AuthorizationStateError) as caught:
        read_state(KEY, tamper(state), 900)
    assert isinstance(caught.value, Permanent)
    assert not isinstance(caught.value, AuthorizationStateExpired)


def test_a_state_signed_with_another_key_is_refused() -> None:
    with pytest.raises(AuthorizationStateError):
        read_state(KEY, sign_state("another-key", {"user": "alice"}), 900)


def test_an_old_state_is_expired() -> None:
    now = time.time()
    state = sign_state(KEY, {"user": "alice"}, issued_at=now - 901)
    with pytest.raises(AuthorizationStateExpired, match="900 s"):
        read_state(KEY, state, 900)
    # Just within its age, by an explicit clock.
    assert read_state(KEY, state, 900, now=now - 1) == {"user": "alice"}
    with pytest.raises(AuthorizationStateExpired):
        read_state(KEY, sign_state(KEY, {"a": 1}, issued_at=100.0), 10, now=111.0)


def test_no_signing_key_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="STATE_SECRET"):
        sign_state(SecretStr(""), {"a": 1})


# --- the code exchange -------------------------------------------------------------------------------


def lwa(answer: httpx.Response, seen: list[httpx.Request]) -> httpx.AsyncClient:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answer

    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


async def test_the_code_is_exchanged_for_the_refresh_token() -> None:
    seen: list[httpx.Request] = []
    answer = httpx.Response(
        200,
        json={
            "access_token": "Atza|a",
            "refresh_token": "Atzr|new",
            "token_type": "bearer",
            "expires_in": 3600,
        },
    )
    async with lwa(answer, seen) as http:
        result = await exchange_code(http, settings(), "ANcode", REDIRECT)
    assert result == Authorization(refresh_token=SecretStr("Atzr|new"))
    assert "Atzr|new" not in repr(result)
    assert not hasattr(result, "access_token")
    (request,) = seen
    assert str(request.url) == "https://lwa.example/auth/o2/token"
    assert dict(parse_qsl(request.content.decode())) == {
        "grant_type": "authorization_code",
        "code": "ANcode",
        "redirect_uri": REDIRECT,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    }
    assert request.headers["user-agent"] == user_agent("ordersync")


async def test_a_refused_code_is_permanent_with_lwas_error(caplog: pytest.LogCaptureFixture) -> None:
    answer = httpx.Response(
        400, json={"error": "invalid_grant", "error_description": "The authorization code is invalid"}
    )
    async with lwa(answer, []) as http:
        with pytest.raises(AmazonRejected) as caught:
            await exchange_code(http, settings(), "ANcode", REDIRECT)
    assert (caught.value.status, caught.value.code) == (400, "invalid_grant")
    assert isinstance(caught.value, Permanent)
    assert CLIENT_SECRET not in str(caught.value)
    assert CLIENT_SECRET not in caplog.text


async def test_lwa_down_is_retryable_and_an_answer_without_refresh_token_is_refused() -> None:
    async with lwa(httpx.Response(503, text="down"), []) as http:
        with pytest.raises(AmazonUnavailable):
            await exchange_code(http, settings(), "ANcode", REDIRECT)
    async with lwa(httpx.Response(200, json={"access_token": "Atza|a"}), []) as http:
        with pytest.raises(AmazonRejected, match="refresh_token"):
            await exchange_code(http, settings(), "ANcode", REDIRECT)


async def test_no_client_credentials_is_a_configuration_error() -> None:
    async with lwa(httpx.Response(500), []) as http:
        with pytest.raises(ConfigurationError, match="CLIENT_SECRET"):
            await exchange_code(http, settings(client_secret=None), "ANcode", REDIRECT)


# --- marketplace discovery ---------------------------------------------------------------------------


def participation(marketplace_id: str, country: str, participating: bool) -> dict[str, Any]:
    return {
        "marketplace": {
            "id": marketplace_id,
            "name": f"Amazon.{country.lower()}",
            "countryCode": country,
            "defaultCurrencyCode": "EUR",
            "defaultLanguageCode": f"{country.lower()}_{country}",
            "domainName": f"www.amazon.{country.lower()}",
        },
        "participation": {"isParticipating": participating, "hasSuspendedListings": False},
        "storeName": "Store",
    }


class RecordingQuota:
    """The in-memory limiter, recording what was asked of it."""

    def __init__(self) -> None:
        self.inner = InMemoryRateLimiter(plans=PlanBook(time_scale=100_000))
        self.asked: list[tuple[str, str]] = []

    async def acquire(
        self, operation: str, seller_id: str, *, lane: str = "default", feed_type: str | None = None
    ) -> QuotaGrant:
        self.asked.append((operation, seller_id))
        return await self.inner.acquire(operation, seller_id, lane=lane, feed_type=feed_type)

    async def observe_rate_limit(self, operation: str, seller_id: str, rate_per_s: float) -> None:
        await self.inner.observe_rate_limit(operation, seller_id, rate_per_s)

    async def on_throttled(self, operation: str, seller_id: str, *, feed_type: str | None = None) -> None:
        await self.inner.on_throttled(operation, seller_id, feed_type=feed_type)


def test_get_marketplace_participations_has_amazons_plan() -> None:
    assert PlanBook().amazon_plan("getMarketplaceParticipations", "A1SELLER") == (0.016, 15)


async def test_discovery_lists_participating_marketplaces_first_through_the_limiter() -> None:
    body = {
        "payload": [
            participation("A1PA6795UKMFR9", "DE", False),
            participation("A13V1IB3VIYZZH", "FR", True),
            participation("A1RKKUPIHCS9HS", "ES", False),
            participation("APJ6JRA9NG5V4", "IT", True),
        ]
    }
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/auth/o2/token":
            return httpx.Response(200, json={"access_token": "Atza|x", "expires_in": 3600})
        seen.append(request)
        return httpx.Response(200, json=body, headers={"x-amzn-RateLimit-Limit": "0.016"})

    channel = Channel(
        name="eu",
        seller_id="A1SELLER",
        region="eu",
        marketplaces=("A1PA6795UKMFR9",),
        credentials=LwaCredentials(
            client_id=SecretRef(value=SecretStr("id")),
            client_secret=SecretRef(value=SecretStr("secret")),
            refresh_token=SecretRef(value=SecretStr("Atzr|x")),
        ),
    )
    quota = RecordingQuota()
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        client = SpApiClient(channel=channel, amazon=AmazonSettings(), limiter=quota, http=http)
        found = await discover_marketplaces(client)
    assert [p.marketplace_id for p in found] == [
        "A13V1IB3VIYZZH",
        "APJ6JRA9NG5V4",
        "A1PA6795UKMFR9",
        "A1RKKUPIHCS9HS",
    ]
    assert [p.is_participating for p in found] == [True, True, False, False]
    assert found[0].marketplace.country_code == "FR"
    assert quota.asked == [("getMarketplaceParticipations", "A1SELLER")]
    (request,) = seen
    assert request.method == "GET"
    assert str(request.url) == "https://sellingpartnerapi-eu.amazon.com/sellers/v1/marketplaceParticipations"
    assert client.last_rate_limits["getMarketplaceParticipations"] == "0.016"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"payload": {}},
        {"payload": [{"marketplace": {"id": "X"}, "participation": {"isParticipating": True}}]},
        {"payload": [{"marketplace": participation("X", "DE", True)["marketplace"]}]},
    ],
)
def test_an_answer_that_is_not_the_models_is_refused(body: Any) -> None:
    with pytest.raises(AmazonRejected, match="UnexpectedResponse"):
        parse_participations(body)


def test_amazons_own_example_parses() -> None:
    from ordersync.amazon.models import load_model  # noqa: PLC0415

    operation = load_model("sellers")["paths"]["/sellers/v1/marketplaceParticipations"]["get"]
    example = operation["responses"]["200"]["examples"]
    (found,) = parse_participations(example)
    assert found == Participation.model_validate(
        {
            "marketplace": {
                "id": "ATVPDKIKX0DER",
                "name": "Amazon.com",
                "countryCode": "US",
                "defaultCurrencyCode": "USD",
                "defaultLanguageCode": "en_US",
                "domainName": "www.amazon.com",
            },
            "is_participating": True,
            "has_suspended_listings": False,
            "store_name": "BestSellerStore",
        }
    )
