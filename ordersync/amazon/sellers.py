"""Sellers API v1 (``sellers.json``): the marketplaces a seller can list in, from
``getMarketplaceParticipations`` (``GET /sellers/v1/marketplaceParticipations``, 0.016 per second,
burst 15: a call when a channel is set up, not a poll).

:func:`discover_marketplaces` is what a new channel's marketplaces come from once the seller has
authorised the application (:mod:`ordersync.amazon.authorization`).
"""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ordersync.errors import AmazonRejected

OPERATION = "getMarketplaceParticipations"
PATH = "/sellers/v1/marketplaceParticipations"


class _AmazonModel(BaseModel):
    """Amazon's camelCase names read by alias; unknown fields ignored (Amazon adds fields)."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


class Marketplace(_AmazonModel):
    """A marketplace as the Sellers API describes it."""

    id: str = Field(min_length=1)
    name: str
    country_code: str = Field(alias="countryCode")
    default_currency_code: str = Field(alias="defaultCurrencyCode")
    default_language_code: str = Field(alias="defaultLanguageCode")
    domain_name: str | None = Field(None, alias="domainName")


class Participation(_AmazonModel):
    """One marketplace of the seller: whether the seller participates in it, and whether its listings
    there are suspended (the seller's Listing Status set to Inactive)."""

    marketplace: Marketplace
    is_participating: bool
    has_suspended_listings: bool
    store_name: str | None = None

    @property
    def marketplace_id(self) -> str:
        return self.marketplace.id


def parse_participations(body: Any, *, status: int | None = 200) -> tuple[Participation, ...]:
    """getMarketplaceParticipations' payload, or :class:`AmazonRejected` when it is not the model's."""
    payload = body.get("payload") if isinstance(body, dict) else None
    if not isinstance(payload, list):
        raise AmazonRejected(OPERATION, status, "UnexpectedResponse", "no list of participations")
    found = []
    for raw in payload:
        if not isinstance(raw, dict):
            raise AmazonRejected(OPERATION, status, "UnexpectedResponse", "a participation is not an object")
        participation = raw.get("participation")
        if not isinstance(participation, dict):
            raise AmazonRejected(OPERATION, status, "UnexpectedResponse", "a participation lacks its flags")
        try:
            found.append(
                Participation.model_validate(
                    {
                        "marketplace": raw.get("marketplace"),
                        "is_participating": participation.get("isParticipating"),
                        "has_suspended_listings": participation.get("hasSuspendedListings"),
                        "store_name": raw.get("storeName"),
                    }
                )
            )
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False)
            )
            raise AmazonRejected(OPERATION, status, "UnexpectedResponse", problems[:500]) from exc
    return tuple(found)


class ParticipationsSource(Protocol):
    """What discovery needs of a client: :class:`ordersync.amazon.client.SpApiClient` is one (typed here
    so that this module, which the client imports, does not import it back)."""

    async def get_marketplace_participations(self) -> tuple[Participation, ...]: ...


async def discover_marketplaces(client: ParticipationsSource) -> list[Participation]:
    """The seller's marketplaces (one getMarketplaceParticipations call, under the rate limiter):
    those the seller participates in first, then the others, each group in Amazon's order."""
    participations = await client.get_marketplace_participations()
    return sorted(participations, key=lambda p: not p.is_participating)
