"""Seller Central's side of Amazon's website authorization workflow, and the Sellers API's answer.

``GET /apps/authorize/consent?application_id=...&state=...[&version=beta][&redirect_uri=...]`` is the
consent page a seller's browser is sent to (the simulator's base URL stands for every region's Seller
Central). It names the application and offers the scenario's sellers (no sign-in is simulated: a
select named ``selling_partner_id`` when the scenario has several sellers, the one seller otherwise: a
scenario switch, since on Amazon the seller signed in decides) and a ``Confirm`` button (form
``consent-form``). Confirming (``POST`` of that form) mints an authorization code and answers 302 to
the redirect URI with ``spapi_oauth_code``, ``state`` (unchanged) and ``selling_partner_id``.
Amazon's OAuth login-URI hop (the appstore workflow's ``amazon_callback_uri``) is not simulated.

Errors are pages, as on Seller Central, with the code in ``#error-code``: MD1000 (a draft application
without ``version=beta``), MD5101 (a ``redirect_uri`` not registered for the application), MD9100 (no
redirect URI: none registered and none given), and the simulator's own ``UnknownApplication`` and
``UnknownSeller``.

The code is good for :data:`AUTHORIZATION_CODE_TTL_S` simulated seconds, once, at LWA
(``grant_type=authorization_code``) with the same ``redirect_uri`` and the application's client
credentials (:meth:`ordersync.simulator.state.SimulatorState.issue_access_token`).
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from typing import Any
from urllib.parse import urlencode

from ordersync.simulator.scenario import MARKETPLACES, Application, Scenario, SellerScenario

#: The consent page's path (Seller Central's).
CONSENT_PATH = "/apps/authorize/consent"
#: An authorization code is exchanged within 5 minutes, or never (docs "Website Authorization Workflow").
AUTHORIZATION_CODE_TTL_S = 300.0

#: The default language of each marketplace the simulator knows (Sellers API ``defaultLanguageCode``).
MARKETPLACE_LANGUAGES: dict[str, str] = {
    "US": "en_US",
    "CA": "en_CA",
    "MX": "es_MX",
    "BR": "pt_BR",
    "DE": "de_DE",
    "GB": "en_GB",
    "FR": "fr_FR",
    "IT": "it_IT",
    "ES": "es_ES",
    "NL": "nl_NL",
    "BE": "fr_BE",
    "IE": "en_IE",
    "SE": "sv_SE",
    "PL": "pl_PL",
    "TR": "tr_TR",
    "ZA": "en_ZA",
    "EG": "ar_EG",
    "SA": "ar_SA",
    "AE": "en_AE",
    "IN": "en_IN",
    "JP": "ja_JP",
    "AU": "en_AU",
    "SG": "en_SG",
}


@dataclass(frozen=True)
class ConsentError:
    """A Seller Central error page: HTTP status, Amazon's code (MD1000 ...) and its words."""

    status: int
    code: str
    message: str


@dataclass(frozen=True)
class Consent:
    """A consent request that passed Seller Central's checks: the application, the redirect URI the
    code will be issued for, and what the form carries back."""

    application: Application
    redirect_uri: str
    state: str
    version: str | None
    sellers: tuple[SellerScenario, ...]


@dataclass
class AuthorizationCode:
    """An authorization code minted by a confirmed consent: whose, for which client and redirect URI,
    minted when (simulated epoch seconds)."""

    seller_id: str
    client_id: str
    redirect_uri: str
    issued_at: float


def check_consent(scenario: Scenario, query: dict[str, str]) -> Consent | ConsentError:
    """Seller Central's checks of a consent request (the consent URI's query, or the confirming form)."""
    application_id = query.get("application_id", "")
    app = scenario.application(application_id) if application_id else None
    if app is None:
        return ConsentError(
            404, "UnknownApplication", f"No application {application_id or '(none)'} is registered."
        )
    version = query.get("version") or None
    if app.draft and version != "beta":
        return ConsentError(
            400,
            "MD1000",
            "This application is in Draft state: authorize it with version=beta in the authorization URI.",
        )
    asked = query.get("redirect_uri") or None
    if app.redirect_uris:
        if asked is not None and asked not in app.redirect_uris:
            return ConsentError(
                400, "MD5101", "The redirect URI does not match one registered for the application."
            )
        redirect_uri = asked or app.redirect_uris[0]
    elif asked is None:
        return ConsentError(
            400, "MD9100", "The application has no OAuth redirect URI and the request named none."
        )
    else:
        redirect_uri = asked
    return Consent(app, redirect_uri, query.get("state", ""), version, scenario.sellers)


def redirect_location(consent: Consent, code: str, seller_id: str) -> str:
    """Where Amazon sends the browser after the seller confirmed: the redirect URI with the code."""
    query = urlencode({"state": consent.state, "selling_partner_id": seller_id, "spapi_oauth_code": code})
    separator = "&" if "?" in consent.redirect_uri else "?"
    return f"{consent.redirect_uri}{separator}{query}"


def _page(title: str, body: str) -> str:
    return (
        '<!doctype html>\n<html lang="en">\n<head><meta charset="utf-8">'
        f"<title>{escape(title)} - Seller Central (simulated)</title></head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )


def _seller_label(seller: SellerScenario) -> str:
    names = ", ".join(MARKETPLACES[m].sales_channel for m in seller.marketplaces)
    return f"{seller.seller_id} ({names})"


def consent_page(consent: Consent) -> str:
    """The consent page: the application, the selling account(s) that may consent, Confirm."""
    app_id = escape(consent.application.solution_id)
    hidden = {
        "application_id": consent.application.solution_id,
        "state": consent.state,
        "redirect_uri": consent.redirect_uri,
    }
    if consent.version:
        hidden["version"] = consent.version
    fields = "\n".join(
        f'  <input type="hidden" name="{escape(k)}" value="{escape(v)}">' for k, v in hidden.items()
    )
    if len(consent.sellers) > 1:
        options = "\n".join(
            f'    <option value="{escape(s.seller_id)}">{escape(_seller_label(s))}</option>'
            for s in consent.sellers
        )
        account = (
            '  <label for="selling_partner_id">Selling account</label>\n'
            f'  <select id="selling_partner_id" name="selling_partner_id">\n{options}\n  </select>'
        )
    else:
        seller = consent.sellers[0]
        account = (
            f'  <input type="hidden" name="selling_partner_id" value="{escape(seller.seller_id)}">\n'
            f'  <p id="selling-account">Selling account: {escape(_seller_label(seller))}</p>'
        )
    body = (
        f"<h1>Authorize {app_id}</h1>\n"
        f'<p id="application-id">{app_id}</p>\n'
        "<p>This application asks for access to your selling account's data through the Selling Partner"
        " API. Confirm to authorize it.</p>\n"
        f'<form id="consent-form" method="post" action="{CONSENT_PATH}">\n{fields}\n{account}\n'
        '  <button type="submit" id="confirm">Confirm</button>\n</form>'
    )
    return _page(f"Authorize {consent.application.solution_id}", body)


def error_page(error: ConsentError) -> str:
    body = (
        "<h1>We're sorry</h1>\n"
        f'<p>Error code: <span id="error-code">{escape(error.code)}</span></p>\n'
        f'<p id="error-message">{escape(error.message)}</p>'
    )
    return _page(f"Error {error.code}", body)


def marketplace_participations(seller: SellerScenario) -> dict[str, Any]:
    """getMarketplaceParticipations' answer for ``seller``: its scenario marketplaces, in each of which it
    participates, with no listing suspended."""
    payload = []
    for marketplace_id in seller.marketplaces:
        marketplace = MARKETPLACES[marketplace_id]
        payload.append(
            {
                "marketplace": {
                    "id": marketplace.marketplace_id,
                    "name": marketplace.sales_channel,
                    "countryCode": marketplace.country_code,
                    "defaultCurrencyCode": marketplace.currency,
                    "defaultLanguageCode": MARKETPLACE_LANGUAGES.get(marketplace.country_code, "en_US"),
                    "domainName": "www." + marketplace.sales_channel.lower(),
                },
                "participation": {"isParticipating": True, "hasSuspendedListings": False},
                "storeName": seller.store_name or f"{seller.seller_id} Store",
            }
        )
    return {"payload": payload}
