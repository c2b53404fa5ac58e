"""Single sign-on's pure parts: the role the provider's claims give, the user name they name, and the
settings' checks (``dashboard.oidc``)."""

from __future__ import annotations

from typing import Any, get_args

import pytest
from pydantic import ValidationError

from ordersync.dashboard.oidc import SignInRefused, claim_values, mapped_role, user_name_of
from ordersync.schemas.events import DashboardRole
from ordersync.settings import OidcSettings, _DashboardRole

pytestmark = pytest.mark.unit

MAPPED = OidcSettings(
    issuer="https://id.example.com",
    client_id="ordersync",
    roles_claim="groups",
    role_map={"Ordersync-Viewers": "viewer", "ordersync-operators": "operator", "ordersync-admins": "admin"},
)


def test_the_settings_roles_are_the_dashboards() -> None:
    assert get_args(_DashboardRole) == get_args(DashboardRole)


@pytest.mark.parametrize(
    ("groups", "role"),
    [
        (["ordersync-operators"], "operator"),
        (["ordersync-viewers", "ordersync-admins", "ordersync-operators"], "admin"),  # the highest wins
        (["ORDERSYNC-OPERATORS", "sales"], "operator"),  # any case
        ("ordersync-viewers ordersync-operators", "operator"),  # one string
        ("ordersync-viewers,sales", "viewer"),
        (["sales"], None),
        ([], None),
        (None, None),
        ([7, {"x": 1}], None),
    ],
)
def test_the_highest_mapped_role_wins(groups: object, role: str | None) -> None:
    assert mapped_role({"groups": groups} if groups is not None else {}, MAPPED) == role


def test_the_default_role_applies_when_nothing_maps() -> None:
    with_default = MAPPED.model_copy(update={"default_role": "viewer"})
    assert mapped_role({"groups": ["sales"]}, with_default) == "viewer"
    assert mapped_role({"groups": ["ordersync-admins"]}, with_default) == "admin"
    no_claim = OidcSettings(issuer="https://id.example.com", client_id="c", default_role="operator")
    assert mapped_role({"groups": ["ordersync-admins"]}, no_claim) == "operator"
    assert mapped_role({}, OidcSettings()) is None


def test_claim_values() -> None:
    assert claim_values(["a", "", 3, "b"]) == ["a", "b"]
    assert claim_values("a, b  c") == ["a", "b", "c"]
    assert claim_values({"a": 1}) == []


@pytest.mark.parametrize(
    ("claims", "claim", "name"),
    [
        ({"email": "Olga@Example.com"}, "email", "olga@example.com"),
        ({"email": "olga@example.com", "email_verified": True}, "email", "olga@example.com"),
        ({"preferred_username": "olga.k", "email": "x@y.z"}, "preferred_username", "olga.k"),
    ],
)
def test_the_user_name(claims: dict[str, Any], claim: str, name: str) -> None:
    assert user_name_of(claims, MAPPED.model_copy(update={"username_claim": claim})) == name


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({}, "gave no email"),
        ({"email": ""}, "gave no email"),
        ({"email": "olga@example.com", "email_verified": False}, "not verified"),
        ({"email": "api-token"}, "not a dashboard user name"),
        ({"email": "Olga Smith <olga@example.com>"}, "not a dashboard user name"),
    ],
)
def test_a_user_name_refused(claims: dict[str, Any], message: str) -> None:
    with pytest.raises(SignInRefused) as refused:
        user_name_of(claims, MAPPED)
    assert message in refused.value.message
    assert refused.value.status_code == 403


def test_the_settings_need_a_client_and_openid() -> None:
    assert OidcSettings().issuer is None
    with pytest.raises(ValidationError, match="client_id is needed"):
        OidcSettings(issuer="https://id.example.com")
    with pytest.raises(ValidationError, match="must include openid"):
        OidcSettings(issuer="https://id.example.com", client_id="c", scopes="email profile")
    with pytest.raises(ValidationError):
        OidcSettings(role_map={"g": "superuser"})  # type: ignore[dict-item]
