"""Amazon's website authorization workflow against the simulator over real HTTP: the consent page,
the seller's confirmation and Amazon's redirect, the code exchanged at LWA by ordersync's
:func:`exchange_code`, the new refresh token used for a real SP-API call (getMarketplaceParticipations
through :class:`SpApiClient`), and each refusal: a code used twice, another redirect URI, an expired
code, a draft application without version=beta, an unregistered redirect URI."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from pydantic import SecretStr

from ordersync.amazon.authorization import (
    Authorization,
    consent_url,
    exchange_code,
    read_state,
    sign_state,
)
from ordersync.amazon.client import SpApiClient
from ordersync.amazon.sellers import discover_marketplaces
from ordersync.channels import Channel, LwaCredentials, SecretRef
from ordersync.errors import AmazonRejected
from ordersync.ratelimit import InMemoryRateLimiter, PlanBook
from ordersync.settings import AmazonSettings, AuthorizationSettings
from ordersync.simulator import RunningSimulator, SimulatorState
from ordersync.simulator.testing import (
    TEST_APPLICATION,
    TEST_CLIENT_ID,
    TEST_CLIENT_SECRET,
    TEST_SELLER,
    tiny_scenario,
    validate_response,
)

pytestmark = pytest.mark.stage

#: The default application id the simulator derives from the test client id.
APP_ID = "amzn1.sp.solution.test"
DRAFT_CLIENT = "amzn1.application-oa2-client.draft"
DRAFT_APP_ID = "amzn1.sp.solution.draft-app"
REGISTERED = "https://dashboard.example/amazon/callback"
CALLBACK = "http://127.0.0.1:9/amazon/callback"
EU_SELLER = "A2EUROPESELLER"
KEY = "state-key"
DE, FR, IT = "A1PA6795UKMFR9", "A13V1IB3VIYZZH", "APJ6JRA9NG5V4"


@pytest.fixture(scope="module")
def sim() -> Iterator[RunningSimulator]:
    eu = {
        "seller_id": EU_SELLER,
        "region": "eu",
        "marketplaces": [DE, FR, IT],
        "applications": [
            {**TEST_APPLICATION, "refresh_token": "Atzr|eu"},
            {
                "client_id": DRAFT_CLIENT,
                "client_secret": "draft-secret",
                "refresh_token": "Atzr|draft",
                "application_id": DRAFT_APP_ID,
                "draft": True,
                "redirect_uris": [REGISTERED],
            },
        ],
        "store_name": "Euro Store",
        "orders": {"count": 1},
    }
    with RunningSimulator(SimulatorState(tiny_scenario(orders={"count": 1}, extra_sellers=[eu]))) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


def amazon(sim: RunningSimulator, **auth: Any) -> AmazonSettings:
    base: dict[str, Any] = {
        "application_id": APP_ID,
        "client_id": TEST_CLIENT_ID,
        "client_secret": SecretStr(TEST_CLIENT_SECRET),
        "seller_central_url": sim.base_url,
        "redirect_uri": CALLBACK,
        **auth,
    }
    return AmazonSettings(
        endpoint=sim.base_url, lwa_endpoint=sim.lwa_url, authorization=AuthorizationSettings(**base)
    )


class FormReader(HTMLParser):
    """The consent page's form: its fields (hidden inputs, the select's options) and its button."""

    def __init__(self) -> None:
        super().__init__()
        self.form: dict[str, str] = {}
        self.fields: dict[str, str] = {}
        self.options: list[str] = []
        self.selects: list[str] = []
        self.buttons: list[str] = []
        self.error_code = ""
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.form = a
        elif tag == "input":
            self.fields[a["name"]] = a.get("value", "")
        elif tag == "select":
            self.selects.append(a["name"])
        elif tag == "option":
            self.options.append(a["value"])
        elif tag == "button":
            self._in = "button"
        elif a.get("id") == "error-code":
            self._in = "error"

    def handle_data(self, data: str) -> None:
        if self._in == "button":
            self.buttons.append(data.strip())
        elif self._in == "error":
            self.error_code += data.strip()

    def handle_endtag(self, tag: str) -> None:
        self._in = None


def read_page(response: httpx.Response) -> FormReader:
    reader = FormReader()
    reader.feed(response.text)
    return reader


@dataclass(frozen=True)
class Redirect:
    url: str
    code: str
    state: str
    seller_id: str


async def consent(
    http: httpx.AsyncClient, url: str, seller_id: str | None = None
) -> tuple[Redirect, FormReader]:
    """The seller's browser: open the consent URI, choose the account, press Confirm."""
    page = await http.get(url)
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    reader = read_page(page)
    assert reader.form["id"] == "consent-form"
    assert reader.buttons == ["Confirm"]
    form = dict(reader.fields)
    if reader.options:  # a browser sends the selected option: the first unless the seller chose
        form["selling_partner_id"] = reader.options[0]
    if seller_id is not None:
        form["selling_partner_id"] = seller_id
    action = urlsplit(url)._replace(path=reader.form["action"], query="").geturl()
    answer = await http.post(action, data=form, follow_redirects=False)
    assert answer.status_code == 302, answer.text
    location = answer.headers["location"]
    query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    assert set(query) == {"spapi_oauth_code", "state", "selling_partner_id"}
    redirect = Redirect(location, query["spapi_oauth_code"], query["state"], query["selling_partner_id"])
    return redirect, reader


def channel(seller_id: str, refresh_token: SecretStr, marketplaces: tuple[str, ...]) -> Channel:
    return Channel(
        name=f"new-{seller_id.lower()}",
        seller_id=seller_id,
        region="eu" if seller_id == EU_SELLER else "na",
        marketplaces=marketplaces,
        credentials=LwaCredentials(
            client_id=SecretRef(value=SecretStr(TEST_CLIENT_ID)),
            client_secret=SecretRef(value=SecretStr(TEST_CLIENT_SECRET)),
            refresh_token=SecretRef(value=refresh_token),
        ),
    )


async def test_the_whole_website_workflow_ends_in_a_working_channel(
    sim: RunningSimulator, http: httpx.AsyncClient
) -> None:
    settings = amazon(sim)
    state = sign_state(KEY, {"user": "alice", "region": "eu"})
    url = consent_url(settings, "eu", state)
    assert url.startswith(f"{sim.base_url}/apps/authorize/consent?application_id={APP_ID}&state=")

    redirect, page = await consent(http, url, EU_SELLER)
    # Several sellers in the scenario: the page offers each in a select.
    assert page.selects == ["selling_partner_id"]
    assert page.options == [TEST_SELLER, EU_SELLER]
    assert redirect.url.startswith(CALLBACK + "?")
    assert redirect.state == state
    assert redirect.seller_id == EU_SELLER
    assert read_state(KEY, redirect.state, settings.authorization.state_max_age_s) == {
        "user": "alice",
        "region": "eu",
    }

    authorization = await exchange_code(http, settings, redirect.code, CALLBACK)
    assert isinstance(authorization, Authorization)
    token = authorization.refresh_token.get_secret_value()
    assert token.startswith("Atzr|")
    assert token not in {"Atzr|eu", "Atzr|draft"}

    # The minted refresh token works for SP-API calls on the seller's behalf.
    limiter = InMemoryRateLimiter(plans=PlanBook(time_scale=100_000))
    client = SpApiClient(
        channel=channel(EU_SELLER, authorization.refresh_token, (DE,)),
        amazon=settings,
        limiter=limiter,
        http=http,
    )
    found = await discover_marketplaces(client)
    assert [p.marketplace_id for p in found] == [DE, FR, IT]
    assert all(p.is_participating and not p.has_suspended_listings for p in found)
    assert [(p.marketplace.name, p.marketplace.country_code) for p in found] == [
        ("Amazon.de", "DE"),
        ("Amazon.fr", "FR"),
        ("Amazon.it", "IT"),
    ]
    assert found[0].marketplace.default_currency_code == "EUR"
    assert found[0].marketplace.default_language_code == "de_DE"
    assert found[0].store_name == "Euro Store"
    assert client.last_rate_limits["getMarketplaceParticipations"] == "0.016"

    # The code was good once.
    with pytest.raises(AmazonRejected) as caught:
        await exchange_code(http, settings, redirect.code, CALLBACK)
    assert (caught.value.status, caught.value.code) == (400, "invalid_grant")


async def test_the_code_must_come_back_with_its_redirect_uri_and_within_5_minutes(
    sim: RunningSimulator, http: httpx.AsyncClient
) -> None:
    settings = amazon(sim)
    redirect, _ = await consent(http, consent_url(settings, "na", "s1"))
    assert redirect.seller_id == TEST_SELLER  # the select's first account
    with pytest.raises(AmazonRejected) as caught:
        await exchange_code(http, settings, redirect.code, "http://127.0.0.1:9/elsewhere")
    assert caught.value.code == "invalid_grant"
    # The refused attempt left the code usable with the right redirect URI.
    authorization = await exchange_code(http, settings, redirect.code, CALLBACK)
    assert authorization.refresh_token.get_secret_value().startswith("Atzr|")

    late, _ = await consent(http, consent_url(settings, "na", "s2"))
    sim.state.advance_clock(301)
    with pytest.raises(AmazonRejected) as caught:
        await exchange_code(http, settings, late.code, CALLBACK)
    assert (caught.value.status, caught.value.code) == (400, "invalid_grant")

    # Another application's credentials cannot use the code either.
    other, _ = await consent(http, consent_url(settings, "na", "s3"))
    wrong = amazon(sim, client_id=DRAFT_CLIENT, client_secret=SecretStr("draft-secret"))
    with pytest.raises(AmazonRejected) as caught:
        await exchange_code(http, wrong, other.code, CALLBACK)
    assert caught.value.code == "invalid_grant"
    bad_secret = amazon(sim, client_secret=SecretStr("nope"))
    with pytest.raises(AmazonRejected) as caught:
        await exchange_code(http, bad_secret, other.code, CALLBACK)
    assert (caught.value.status, caught.value.code) == (401, "invalid_client")


async def test_a_draft_application_needs_the_beta_version(
    sim: RunningSimulator, http: httpx.AsyncClient
) -> None:
    published = amazon(sim, application_id=DRAFT_APP_ID, redirect_uri=None)
    refused = await http.get(consent_url(published, "eu", "s"))
    assert refused.status_code == 400
    assert read_page(refused).error_code == "MD1000"

    draft = amazon(
        sim,
        application_id=DRAFT_APP_ID,
        client_id=DRAFT_CLIENT,
        client_secret=SecretStr("draft-secret"),
        draft=True,
        redirect_uri=None,
    )
    url = consent_url(draft, "eu", "s")
    assert "version=beta" in url
    # No redirect_uri: Amazon uses the application's registered one.
    redirect, page = await consent(http, url, EU_SELLER)
    assert page.fields["version"] == "beta"
    assert redirect.url.startswith(REGISTERED + "?")
    authorization = await exchange_code(http, draft, redirect.code, REGISTERED)
    assert authorization.refresh_token.get_secret_value().startswith("Atzr|")


async def test_a_redirect_uri_must_be_a_registered_one(
    sim: RunningSimulator, http: httpx.AsyncClient
) -> None:
    draft = amazon(
        sim, application_id=DRAFT_APP_ID, draft=True, redirect_uri="https://evil.example/amazon/callback"
    )
    refused = await http.get(consent_url(draft, "eu", "s"))
    assert refused.status_code == 400
    assert read_page(refused).error_code == "MD5101"
    # The confirming form is checked the same way.
    posted = await http.post(
        f"{sim.base_url}/apps/authorize/consent",
        data={
            "application_id": DRAFT_APP_ID,
            "version": "beta",
            "state": "s",
            "redirect_uri": "https://evil.example/cb",
            "selling_partner_id": EU_SELLER,
        },
    )
    assert posted.status_code == 400
    assert read_page(posted).error_code == "MD5101"


async def test_unknown_applications_and_sellers_get_error_pages(
    sim: RunningSimulator, http: httpx.AsyncClient
) -> None:
    unknown = await http.get(consent_url(amazon(sim, application_id="amzn1.sp.solution.nope"), "na", "s"))
    assert unknown.status_code == 404
    assert read_page(unknown).error_code == "UnknownApplication"
    # The lenient switch (no redirect URI registered) still needs one in the request.
    none = await http.get(f"{sim.base_url}/apps/authorize/consent?application_id={APP_ID}&state=s")
    assert read_page(none).error_code == "MD9100"
    posted = await http.post(
        f"{sim.base_url}/apps/authorize/consent",
        data={
            "application_id": APP_ID,
            "state": "s",
            "redirect_uri": CALLBACK,
            "selling_partner_id": "NOBODY",
        },
    )
    assert posted.status_code == 400
    assert read_page(posted).error_code == "UnknownSeller"


def test_a_single_seller_consents_without_a_select() -> None:
    with RunningSimulator(SimulatorState(tiny_scenario(orders={"count": 1}))) as sim:
        url = f"{sim.base_url}/apps/authorize/consent?application_id={APP_ID}&state=s&redirect_uri={CALLBACK}"
        page = read_page(httpx.get(url))
        assert page.selects == []
        assert page.fields["selling_partner_id"] == TEST_SELLER
        assert page.buttons == ["Confirm"]


async def test_get_marketplace_participations_conforms_and_is_throttled(
    sim: RunningSimulator, http: httpx.AsyncClient
) -> None:
    token = await http.post(
        sim.lwa_url,
        data={
            "grant_type": "refresh_token",
            "refresh_token": "Atzr|eu",
            "client_id": TEST_CLIENT_ID,
            "client_secret": TEST_CLIENT_SECRET,
        },
    )
    headers = {"x-amz-access-token": token.json()["access_token"]}
    url = f"{sim.base_url}/sellers/v1/marketplaceParticipations"
    sim.state.reset_buckets()
    statuses = []
    for _ in range(16):  # burst 15; the simulator's clock stands still in this scenario
        response = await http.get(url, headers=headers)
        statuses.append(response.status_code)
        validate_response(
            "sellers",
            "getMarketplaceParticipations",
            response.status_code,
            response.json(),
            dict(response.headers),
        )
    assert statuses == [200] * 15 + [429]
    assert sim.state.counters.get(EU_SELLER, "getMarketplaceParticipations").throttled == 1
