"""The accounts' and the audit's pure parts: every POST route is admitted with a role, names, roles and
passwords checked, Argon2 hashes, the audit entry as an event of ``ops.audit`` and its filter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError
from starlette.routing import Route

from ordersync.dashboard import create_app
from ordersync.ops.audit import ACTIONS, MAX_TARGETS, AuditFilter, envelope_of, new_entry
from ordersync.ops.users import (
    UserProblem,
    checked_name,
    checked_password,
    hash_password,
    password_matches,
    role_at_least,
)
from ordersync.schemas import codec
from ordersync.schemas.events import AuditRecorded
from ordersync.schemas.topics import CATALOGUE, OPS_AUDIT, by_name
from tests.factories import dashboard_settings

pytestmark = pytest.mark.unit

AT = datetime(2026, 11, 25, 10, 30, tzinfo=UTC)


def test_every_post_route_is_admitted_with_the_role_it_needs(tmp_path: Path) -> None:
    app = create_app(dashboard_settings("redis://127.0.0.1:1/0", "unit", tmp_path / "channels.yaml"))
    admissions = {}
    for route in app.routes:
        if isinstance(route, Route) and "POST" in (route.methods or ()):
            admission = route.endpoint.__dict__.get("admission")
            assert admission is not None, f"POST {route.path} is not admitted"
            admissions[route.path] = admission[0]
    assert admissions == {
        "/users": "admin",
        "/users/{name}": "admin",
        "/login": None,
        "/logout": None,
        "/api/alerts/actions": "operator",
        "/api/dead-letters/actions": "operator",
        "/api/actions": "operator",
        "/api/tasks/run": "operator",
        "/api/listings/upload": "operator",
        "/api/listings/row": "operator",
        "/api/channels/save": "admin",
        "/api/channels/active": "admin",
        "/api/channels/revert": "admin",
        "/api/channels/test": "admin",
        "/api/channels/discover": "admin",
        "/api/users": "admin",
        "/api/users/{name}": "admin",
        "/preferences/timezone": None,
    }


def test_roles_rank_viewer_operator_admin() -> None:
    assert role_at_least("admin", "operator")
    assert role_at_least("operator", "operator")
    assert not role_at_least("viewer", "operator")
    assert not role_at_least(None, "viewer")
    assert not role_at_least("root", "viewer")


@pytest.mark.parametrize(
    ("given", "problem"),
    [
        ("", "not a user name"),
        ("ann smith", "not a user name"),
        ("-ann", "not a user name"),
        ("a" * 65, "not a user name"),
        ("api-token", "reserved"),
        ("Anonymous", "reserved"),
    ],
)
def test_bad_user_names_are_refused(given: str, problem: str) -> None:
    with pytest.raises(UserProblem, match=problem):
        checked_name(given)


def test_names_are_trimmed_and_lower_cased_and_passwords_checked() -> None:
    assert checked_name("  Ann.Smith@Ops ") == "ann.smith@ops"
    with pytest.raises(UserProblem, match="too short"):
        checked_password("x" * 11)
    with pytest.raises(UserProblem, match="too long"):
        checked_password("x" * 1025)
    with pytest.raises(UserProblem, match="only spaces"):
        checked_password(" " * 12)
    assert checked_password("twelve chars") == "twelve chars"


def test_passwords_are_kept_as_argon2id_hashes() -> None:
    stored = hash_password("correct horse battery")
    assert stored.startswith("$argon2id$")
    assert "correct horse" not in stored
    assert hash_password("correct horse battery") != stored  # salted
    assert password_matches("correct horse battery", stored)
    assert not password_matches("correct horse batterY", stored)
    assert not password_matches("correct horse battery", "not a hash")


def test_an_entry_travels_on_ops_audit_keyed_by_its_actor_with_its_own_event_id() -> None:
    assert OPS_AUDIT in CATALOGUE
    assert by_name("ops.audit") is OPS_AUDIT
    assert OPS_AUDIT.key == "actor"
    entry = new_entry(
        actor="ana",
        role="operator",
        via="dashboard",
        action="order.ignore",
        outcome="sent",
        at=AT,
        targets=["acme-us/111-1111111-1111111"],
        detail="acme-us: event x",
        client="10.0.0.7",
    )
    envelope = envelope_of(entry)
    assert str(envelope.event_id).replace("-", "") == entry.entry_id
    back = codec.decode(codec.encode(envelope), OPS_AUDIT)
    assert back.payload_as(AuditRecorded) == entry
    # Sent twice, it is the same event.
    assert envelope_of(entry).event_id == envelope.event_id
    # Made one after the other, entries sort in that order.
    later = new_entry(actor="ana", via="cli", action="sign-out", outcome="sent", at=AT)
    assert later.entry_id > entry.entry_id


def test_an_entry_keeps_at_most_its_limit_of_targets_and_refuses_what_is_not_an_action() -> None:
    many = new_entry(
        actor="ana",
        via="api",
        action="order.retry-import",
        outcome="refused",
        at=AT,
        targets=map(str, range(1500)),
    )
    assert len(many.targets) == MAX_TARGETS
    assert many.detail == "500 more targets not listed"
    with pytest.raises(ValidationError):
        new_entry(actor="ana", via="api", action="Order Ignore!", outcome="sent", at=AT)
    with pytest.raises(ValidationError):
        new_entry(actor="ana", via="api", action="sign-in", outcome="maybe", at=AT)  # type: ignore[arg-type]
    # Every action the trail offers as a filter is one an entry may name.
    assert {new_entry(actor="a", via="cli", action=a, outcome="sent", at=AT).action for a in ACTIONS} == set(
        ACTIONS
    )


def test_the_filter_takes_an_action_or_its_family_and_a_half_open_time_range() -> None:
    entry = new_entry(actor="ana", via="dashboard", action="dead-letter.replay", outcome="failed", at=AT)
    assert AuditFilter().matches(entry)
    assert AuditFilter(action="dead-letter").matches(entry)
    assert AuditFilter(action="dead-letter.replay", actor="ana", outcome="failed").matches(entry)
    assert not AuditFilter(action="dead").matches(entry)
    assert not AuditFilter(action="dead-letter.resolve").matches(entry)
    assert not AuditFilter(actor="bob").matches(entry)
    assert not AuditFilter(outcome="sent").matches(entry)
    assert AuditFilter(since=AT, until=AT + timedelta(seconds=1)).matches(entry)
    assert not AuditFilter(until=AT).matches(entry)
    assert not AuditFilter(since=AT + timedelta(microseconds=1)).matches(entry)


def test_a_form_of_this_site_posted_with_origin_null_is_told_apart_by_sec_fetch_site() -> None:
    from ordersync.dashboard.app import _same_origin  # noqa: PLC0415 - the middleware's rule itself

    host = {"host": "dash.example:8080"}
    # The pages' no-referrer policy makes Chromium send "Origin: null" with their own forms.
    assert _same_origin({**host, "origin": "null", "sec-fetch-site": "same-origin"})
    assert not _same_origin({**host, "origin": "null", "sec-fetch-site": "cross-site"})
    assert not _same_origin({**host, "origin": "null"})  # a sandboxed frame, an old browser: refused
    assert _same_origin({**host, "origin": "http://dash.example:8080"})
    assert not _same_origin({**host, "origin": "https://evil.example"})
    assert _same_origin(host)  # curl, scripts
    assert not _same_origin({**host, "sec-fetch-site": "same-site"})
