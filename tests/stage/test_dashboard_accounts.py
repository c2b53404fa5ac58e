"""The dashboard's accounts through the app (starlette's TestClient) on a real Redis, no broker: sign-in,
wrong passwords and the lock they lead to, sessions ending when idle or too old (on an injected clock),
CSRF tokens, what each role may POST, sessions ended by a role change, a password reset or disabling, the
audit trail (entries, filters, paging, who may read it, Kafka down), and the operator token for API
clients. The audit's Kafka producer is the one seam replaced: a recording sink stands in for it."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from kafka.errors import KafkaTimeoutError
from starlette.testclient import TestClient

from ordersync.clock import ManualClock
from ordersync.dashboard import create_app
from ordersync.ops.audit import AuditFilter, AuditLog
from ordersync.ops.users import UserStore
from ordersync.schemas.events import AuditRecorded
from ordersync.settings import Settings
from tests.factories import (
    CHANNEL,
    OPERATOR_TOKEN,
    Orders,
    dashboard_settings,
    write_channels_file,
)

pytestmark = pytest.mark.stage

#: Nothing listens there: these tests never reach Kafka (the audit goes to the recording sink).
NO_BROKER = "127.0.0.1:1"
NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
PASSWORDS = {
    "vera": "viewer-password-1",
    "otto": "operator-password-2",
    "ada": "admin-password-3",
}
ROLES = {"vera": "viewer", "otto": "operator", "ada": "admin"}
IDLE_S, MAX_S, FAILURES, LOCK_S = 600, 3600, 3, 300
CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


class RecordingSink:
    """Stands in for ops.audit: keeps what it is sent; ``down`` makes it fail as Kafka would."""

    def __init__(self) -> None:
        self.sent: list[AuditRecorded] = []
        self.attempts = 0
        self.down = False
        self._lock = threading.Lock()

    def send(self, entries: Sequence[AuditRecorded]) -> None:
        with self._lock:
            self.attempts += 1
            if self.down:
                raise KafkaTimeoutError("no broker (the test's)")
            self.sent.extend(entries)

    def close(self) -> None:
        pass


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW)


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()


@pytest.fixture
def settings(redis_url: str, redis_key_prefix: str, tmp_path: Path) -> Settings:
    base = dashboard_settings(
        redis_url,
        redis_key_prefix,
        write_channels_file(tmp_path / "channels.yaml"),
        kafka_bootstrap=NO_BROKER,
    )
    dashboard = base.dashboard.model_copy(
        update={
            "session_idle_s": IDLE_S,
            "session_max_s": MAX_S,
            "sign_in_failures": FAILURES,
            "sign_in_lock_s": LOCK_S,
        }
    )
    return base.model_copy(update={"dashboard": dashboard})


@pytest.fixture
async def users(redis_client: aioredis.Redis, redis_key_prefix: str, clock: ManualClock) -> UserStore:
    store = UserStore(redis_client, redis_key_prefix, clock=clock)
    for name, password in PASSWORDS.items():
        await store.add(name, ROLES[name], password, "test")
    return store


@pytest.fixture
def trail(redis_client: aioredis.Redis, redis_key_prefix: str) -> AuditLog:
    return AuditLog(redis_client, redis_key_prefix)


@contextmanager
def browser(settings: Settings, clock: ManualClock, sink: RecordingSink) -> Iterator[TestClient]:
    """A browser of its own on a dashboard of its own (replicas share Redis, as in production)."""
    with TestClient(create_app(settings, clock, audit_sink=sink)) as client:
        yield client


def sign_in(client: TestClient, name: str, password: str | None = None) -> str:
    """Sign ``name`` in; returns the session's CSRF token (as the pages carry it)."""
    answer = client.post(
        "/login",
        data={"username": name, "password": password or PASSWORDS[name], "next": "/tasks"},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/tasks"
    return csrf_of(client)


def csrf_of(client: TestClient) -> str:
    match = CSRF_META.search(client.get("/login").text)
    assert match, "no CSRF token on the page: not signed in"
    return match.group(1)


async def entries(trail: AuditLog, **criteria: Any) -> list[AuditRecorded]:
    page = await trail.page(AuditFilter(**criteria), limit=500)
    return [entry for _, entry in page.entries]


def wait_until(condition: Any, timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


async def redis_text(redis: aioredis.Redis, prefix: str) -> str:
    """Every value under the test's prefix, whatever its type."""
    parts: list[str] = []
    async for key in redis.scan_iter(f"{prefix}:*"):
        kind = await redis.type(key)
        if kind == "hash":
            parts.append(repr(await redis.hgetall(key)))
        elif kind == "set":
            parts.append(repr(await redis.smembers(key)))
        elif kind == "stream":
            parts.append(repr(await redis.xrange(key)))
        elif kind == "string":
            parts.append(repr(await redis.get(key)))
        parts.append(key)
    return "\n".join(parts)


@pytest.mark.usefixtures("users")
async def test_sign_in_gives_a_strict_session_cookie_and_the_header_shows_who(
    *,
    settings: Settings,
    clock: ManualClock,
    sink: RecordingSink,
    trail: AuditLog,
    redis_client: aioredis.Redis,
    redis_key_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    with browser(settings, clock, sink) as client:
        # With accounts, nothing is open any more: the page asks for a user name and password.
        page = client.get("/")
        assert page.status_code == 401
        assert 'name="username"' in page.text
        assert 'name="token"' not in page.text
        assert client.get("/api/orders").status_code == 401

        wrong = client.post("/login", data={"username": "otto", "password": "not-the-password-9"})
        assert wrong.status_code == 403
        assert "the user name or the password is wrong" in wrong.text
        unknown = client.post("/login", data={"username": "nobody", "password": "whatever-it-is-1"})
        assert unknown.status_code == 403
        assert "the user name or the password is wrong" in unknown.text
        assert "ordersync_session" not in client.cookies

        signed_in = client.post(
            "/login",
            data={"username": " Otto ", "password": PASSWORDS["otto"], "next": "/?status=Failed"},
            follow_redirects=False,
        )
        assert signed_in.status_code == 303
        assert signed_in.headers["location"] == "/?status=Failed"
        cookie_header = signed_in.headers["set-cookie"].lower()
        assert "ordersync_session=" in cookie_header
        assert "httponly" in cookie_header
        assert "samesite=strict" in cookie_header
        assert "secure" not in cookie_header
        session_id = client.cookies["ordersync_session"]
        page = client.get("/")
        assert page.status_code == 200
        assert 'id="signed-in" data-user="otto" data-role="operator"' in page.text
        assert 'id="logout-form"' in page.text
        assert 'id="tab-audit"' in page.text
        assert 'id="tab-users"' not in page.text  # an admin's
        # The session id is the cookie's alone: Redis keeps its hash.
        assert session_id not in await redis_text(redis_client, redis_key_prefix)

        # Sign out: a POST with the session's CSRF token; the session is gone.
        csrf = csrf_of(client)
        assert client.post("/logout", follow_redirects=False).status_code == 403
        out = client.post("/logout", data={"csrf_token": csrf}, follow_redirects=False)
        assert out.status_code == 303
        assert out.headers["location"] == "/login"
        client.cookies.set("ordersync_session", session_id)  # an old cookie kept by the browser
        assert client.get("/").status_code == 401

    secure = settings.model_copy(
        update={"dashboard": settings.dashboard.model_copy(update={"cookie_secure": True})}
    )
    with browser(secure, clock, sink) as client:
        answer = client.post(
            "/login", data={"username": "vera", "password": PASSWORDS["vera"]}, follow_redirects=False
        )
        assert "secure" in answer.headers["set-cookie"].lower()

    sign_ins = await entries(trail, action="sign-in")
    assert [(e.actor, e.outcome, e.reason) for e in reversed(sign_ins)] == [
        ("otto", "refused", "wrong password"),
        ("(unknown)", "refused", "unknown user name"),
        ("otto", "sent", ""),
        ("vera", "sent", ""),
    ]
    assert sign_ins[1].role == "operator"
    assert sign_ins[1].client
    [sign_out] = await entries(trail, action="sign-out")
    assert (sign_out.actor, sign_out.outcome) == ("otto", "sent")
    # No password, no session id, ever: not in the trail, not in the log.
    everything = await redis_text(redis_client, redis_key_prefix) + caplog.text
    for secret in (*PASSWORDS.values(), "not-the-password-9", "whatever-it-is-1", session_id):
        assert secret not in everything


@pytest.mark.usefixtures("users")
async def test_failed_sign_ins_lock_the_user_name_for_a_while(
    settings: Settings, clock: ManualClock, sink: RecordingSink, trail: AuditLog
) -> None:
    with browser(settings, clock, sink) as client:
        for _ in range(FAILURES):
            assert (
                client.post("/login", data={"username": "otto", "password": "guess-guess-guess"}).status_code
                == 403
            )
        # Locked: even the right password is refused, without being checked.
        locked = client.post("/login", data={"username": "otto", "password": PASSWORDS["otto"]})
        assert locked.status_code == 429
        assert "too many failed sign-ins" in locked.text
        assert 0 < int(locked.headers["retry-after"]) <= LOCK_S
        # A name without an account locks the same way: the lock tells nothing about which names exist.
        for _ in range(FAILURES):
            client.post("/login", data={"username": "mallory", "password": "guess-guess-guess"})
        assert client.post("/login", data={"username": "mallory", "password": "x" * 12}).status_code == 429

        clock.advance(LOCK_S - 10)
        assert (
            client.post("/login", data={"username": "otto", "password": PASSWORDS["otto"]}).status_code == 429
        )
        clock.advance(11)
        sign_in(client, "otto")
        # A success starts the count again: one wrong password is not a lock.
        client.cookies.clear()
        assert (
            client.post("/login", data={"username": "otto", "password": "guess-guess-guess"}).status_code
            == 403
        )
        sign_in(client, "otto")

    refused = await entries(trail, action="sign-in", outcome="refused", actor="otto")
    reasons = [e.reason for e in reversed(refused)]
    assert reasons[FAILURES - 1].startswith("wrong password; the user name is locked until")
    assert reasons[FAILURES : FAILURES + 2] == ["user name locked", "user name locked"]


@pytest.mark.usefixtures("users")
async def test_a_session_ends_when_idle_and_at_its_absolute_limit(
    settings: Settings, clock: ManualClock, sink: RecordingSink
) -> None:
    with browser(settings, clock, sink) as client:
        sign_in(client, "vera")
        clock.advance(IDLE_S - 1)
        assert client.get("/tasks").status_code == 200  # activity: the idle time starts again
        clock.advance(IDLE_S - 1)
        assert client.get("/tasks").status_code == 200
        # The page's own background refreshes are not the user's activity.
        clock.advance(IDLE_S - 100)
        assert client.get("/api/health", headers={"X-Ordersync-Background": "1"}).status_code == 200
        clock.advance(101)
        ended = client.get("/tasks")
        assert ended.status_code == 401
        assert "your session has ended: sign in again" in ended.text

        # However busy, a session ends MAX_S after its sign-in.
        sign_in(client, "vera")
        for _ in range(MAX_S // (IDLE_S - 1)):
            clock.advance(IDLE_S - 1)
            assert client.get("/tasks").status_code == 200
        clock.advance(IDLE_S - 1)
        assert client.get("/tasks").status_code == 401
        assert client.get("/api/orders").json()["error"] == "your session has ended: sign in again"


@pytest.mark.usefixtures("users")
async def test_state_changing_requests_of_a_session_need_its_csrf_token(
    settings: Settings, clock: ManualClock, sink: RecordingSink, trail: AuditLog
) -> None:
    body = {"fingerprint": "api-status:nowhere:orders", "action": "acknowledge"}
    with browser(settings, clock, sink) as client:
        csrf = sign_in(client, "otto")
        missing = client.post("/api/alerts/actions", json=body)
        assert missing.status_code == 403
        assert "CSRF token is missing or wrong" in missing.json()["error"]
        wrong = client.post("/api/alerts/actions", json=body, headers={"X-CSRF-Token": csrf[:-2] + "xx"})
        assert wrong.status_code == 403
        # The right token gets the request in: then the alert is unknown (404), nothing else.
        right = client.post("/api/alerts/actions", json=body, headers={"X-CSRF-Token": csrf})
        assert right.status_code == 404, right.text
        # Forms carry it as a field.
        tz = {"tz": "Europe/Berlin", "next": "/tasks"}
        assert client.post("/preferences/timezone", data=tz, follow_redirects=False).status_code == 403
        moved = client.post("/preferences/timezone", data={**tz, "csrf_token": csrf}, follow_redirects=False)
        assert moved.status_code == 303
        # Another session's token is no good here.
        with browser(settings, clock, sink) as other:
            their = sign_in(other, "ada")
        assert (
            client.post("/api/alerts/actions", json=body, headers={"X-CSRF-Token": their}).status_code == 403
        )

    refused = await entries(trail, action="alert.acknowledge", outcome="refused")
    assert [e.reason.split(":")[0] for e in reversed(refused)] == [
        "the CSRF token is missing or wrong",
        "the CSRF token is missing or wrong",
        "no alert 'api-status",
        "the CSRF token is missing or wrong",
    ]
    assert {e.actor for e in refused} == {"otto"}
    assert all(e.targets == ("api-status:nowhere:orders",) for e in refused)


@pytest.mark.usefixtures("users")
async def test_each_role_may_post_what_it_may_and_is_refused_the_rest(
    settings: Settings, clock: ManualClock, sink: RecordingSink, trail: AuditLog, filled: Orders
) -> None:
    # Each request gets past the admission only to be refused by what it asks (409/422/404), so no
    # broker is needed; a 403 is the admission's refusal.
    order = {"action": "ignore", "orders": [{"channel": CHANNEL, "amazon_order_id": filled.writeback_failed}]}
    letters = {"action": "replay", "letters": [{"topic": "not-a-dlq", "partition": 0, "offset": 1}]}
    alert = {"fingerprint": "api-status:nowhere:orders", "action": "snooze", "snooze_s": 3600}
    expected = {
        "vera": {"order": 403, "letters": 403, "alert": 403, "api-user": 403, "form-user": 403},
        "otto": {"order": 409, "letters": 422, "alert": 404, "api-user": 403, "form-user": 403},
        "ada": {"order": 409, "letters": 422, "alert": 404, "api-user": 201, "form-user": 303},
    }
    for name, wanted in expected.items():
        with browser(settings, clock, sink) as client:
            csrf = sign_in(client, name)
            headers = {"X-CSRF-Token": csrf}
            got = {
                "order": client.post("/api/actions", json=order, headers=headers).status_code,
                "letters": client.post(
                    "/api/dead-letters/actions", json=letters, headers=headers
                ).status_code,
                "alert": client.post("/api/alerts/actions", json=alert, headers=headers).status_code,
                "api-user": client.post(
                    "/api/users",
                    json={"name": f"new-by-{name}", "role": "viewer", "password": "a-long-password-1"},
                    headers=headers,
                ).status_code,
                "form-user": client.post(
                    "/users/vera",
                    data={"csrf_token": csrf, "change": "password", "password": f"reset-by-{name}-123"},
                    follow_redirects=False,
                ).status_code,
            }
            assert got == wanted, name
            page = client.get("/").text
            buttons = re.findall(r'<button type="button" class="action"[^>]*>', page)
            assert len(buttons) == 5
            if name == "vera":
                # Disabled, each saying why; no token or name field to fill.
                assert all(
                    "disabled" in b
                    and 'title="Your role (viewer) may not act: an operator or an admin may."' in b
                    for b in buttons
                )
                assert 'data-enabled="no"' in page
                refused = client.post("/api/actions", json=order, headers=headers).json()
                assert (
                    refused["error"]
                    == "your role (viewer) may not act on orders: an operator or an admin may"
                )
            else:
                assert 'id="actions" data-enabled="yes"' in page
            assert 'id="operator-token"' not in page
            assert 'id="operator-name"' not in page

    by_vera = await entries(trail, actor="vera", outcome="refused")
    assert {e.action for e in by_vera} >= {
        "order.ignore",
        "dead-letter.replay",
        "alert.snooze",
        "user.add",
        "user.password",
    }
    [order_refusal, *_] = [e for e in by_vera if e.action == "order.ignore"]
    assert order_refusal.targets == (f"{CHANNEL}/{filled.writeback_failed}",)
    assert "may not act on orders" in order_refusal.reason
    # What got past the admission and was refused by the order's state is audited with that reason.
    [by_otto] = await entries(trail, actor="otto", action="order.ignore")
    assert by_otto.outcome == "refused"
    assert "already imported" in by_otto.reason
    [added] = await entries(trail, action="user.add", outcome="sent")
    assert (added.actor, added.targets, added.detail) == ("ada", ("new-by-ada",), "role viewer")


@pytest.mark.usefixtures("users")
async def test_a_role_change_a_password_reset_or_disabling_ends_the_users_sessions(
    settings: Settings, clock: ManualClock, sink: RecordingSink, trail: AuditLog, users: UserStore
) -> None:
    with browser(settings, clock, sink) as otto, browser(settings, clock, sink) as admin:
        sign_in(otto, "otto")
        csrf = sign_in(admin, "ada")
        assert 'id="tab-users"' in admin.get("/tasks").text
        listed = admin.get("/users")
        assert listed.status_code == 200
        assert 'data-user="otto" data-role="operator" data-state="enabled"' in listed.text

        # The role: otto's session ends; signed in again, otto is a viewer.
        changed = admin.post(
            "/users/otto",
            data={"csrf_token": csrf, "change": "role", "role": "viewer"},
            follow_redirects=False,
        )
        assert changed.status_code == 303
        assert "The role of otto changed" in admin.get(changed.headers["location"]).text
        assert otto.get("/tasks").status_code == 401
        sign_in(otto, "otto")
        assert 'data-role="viewer"' in otto.get("/tasks").text

        # Disabled (through the JSON API): the session ends and signing in is refused.
        api = {"X-CSRF-Token": csrf}
        disabled = admin.post("/api/users/otto", json={"disabled": True}, headers=api)
        assert disabled.status_code == 200
        assert disabled.json()["disabled"] is True
        assert "password_hash" not in disabled.json()
        assert otto.get("/tasks").status_code == 401
        assert (
            otto.post("/login", data={"username": "otto", "password": PASSWORDS["otto"]}).status_code == 403
        )
        assert admin.post("/api/users/otto", json={"disabled": False}, headers=api).status_code == 200
        sign_in(otto, "otto")

        # A password reset ends the sessions too; the old password is refused, the new one works.
        reset = admin.post("/api/users/otto", json={"password": "a-brand-new-password"}, headers=api)
        assert reset.status_code == 200
        assert otto.get("/tasks").status_code == 401
        assert (
            otto.post("/login", data={"username": "otto", "password": PASSWORDS["otto"]}).status_code == 403
        )
        sign_in(otto, "otto", "a-brand-new-password")

        # Refused, with the reason: the last admin, a short password, a duplicate, an unknown user.
        last = admin.post("/api/users/ada", json={"role": "operator"}, headers=api)
        assert last.status_code == 422
        assert "last enabled admin" in last.json()["error"]
        assert (
            admin.post(
                "/api/users", json={"name": "x1", "role": "viewer", "password": "short"}, headers=api
            ).status_code
            == 422
        )
        duplicate = admin.post(
            "/api/users", json={"name": "otto", "role": "viewer", "password": "long-enough-pass"}, headers=api
        )
        assert duplicate.status_code == 409
        assert admin.post("/api/users/ghost", json={"role": "viewer"}, headers=api).status_code == 404
        assert (
            admin.post("/api/users/otto", json={"role": "viewer", "password": "x"}, headers=api).status_code
            == 422
        )
        form_error = admin.post(
            "/users",
            data={"csrf_token": csrf, "name": "Bad Name", "role": "viewer", "password": "long-enough-pass"},
        )
        assert form_error.status_code == 422
        assert "is not a user name" in form_error.text
        assert [u["name"] for u in admin.get("/api/users").json()["users"]] == ["ada", "otto", "vera"]
        # The operator token never manages accounts.
        token = admin.post(
            "/api/users",
            json={"name": "bot", "role": "admin", "password": "long-enough-pass"},
            headers={"X-Operator-Token": OPERATOR_TOKEN},
        )
        assert token.status_code == 403
        assert "needs an admin's sign-in" in token.json()["error"]

    assert (await users.require("otto")).role == "viewer"
    changes = await entries(trail, action="user")
    assert [(e.action, e.outcome, e.targets, e.detail) for e in reversed(changes) if e.outcome == "sent"] == [
        ("user.role", "sent", ("otto",), "operator -> viewer; sessions ended"),
        ("user.disable", "sent", ("otto",), "sessions ended"),
        ("user.enable", "sent", ("otto",), ""),
        ("user.password", "sent", ("otto",), "sessions ended"),
    ]
    refused = [e for e in changes if e.outcome == "refused"]
    assert {e.actor for e in refused} == {"ada", "api-token"}
    assert "a-brand-new-password" not in repr([e.model_dump() for e in changes])


@pytest.mark.usefixtures("users")
async def test_the_audit_trail_filters_pages_and_is_for_operators_and_admins(
    settings: Settings, clock: ManualClock, sink: RecordingSink, trail: AuditLog, filled: Orders
) -> None:
    order = {"action": "retry-import", "orders": [{"channel": CHANNEL, "amazon_order_id": filled.success[0]}]}
    with browser(settings, clock, sink) as client:
        # 09:00 otto signs in and tries an action the order refuses; 11:00 vera signs in and is refused.
        csrf = sign_in(client, "otto")
        assert client.post("/api/actions", json=order, headers={"X-CSRF-Token": csrf}).status_code == 409
        clock.advance(2 * 3600)
        client.cookies.clear()
        csrf = sign_in(client, "vera")
        assert client.post("/api/actions", json=order, headers={"X-CSRF-Token": csrf}).status_code == 403
        # A viewer may not read the trail.
        assert client.get("/api/audit").status_code == 403
        assert client.get("/audit").status_code == 403
        assert 'id="tab-audit"' not in client.get("/tasks").text

        client.cookies.clear()
        clock.advance(3600)
        sign_in(client, "otto")
        everything = client.get("/api/audit").json()
        listed = [(e["actor"], e["action"], e["outcome"]) for e in everything["entries"]]
        assert listed == [
            ("otto", "sign-in", "sent"),
            ("vera", "order.retry-import", "refused"),
            ("vera", "sign-in", "sent"),
            ("otto", "order.retry-import", "refused"),
            ("otto", "sign-in", "sent"),
        ]
        assert everything["older"] is None

        def listed_for(**params: str) -> list[tuple[str, str]]:
            answer = client.get("/api/audit", params=params)
            assert answer.status_code == 200, answer.text
            return [(e["actor"], e["action"]) for e in answer.json()["entries"]]

        assert listed_for(user="vera") == [("vera", "order.retry-import"), ("vera", "sign-in")]
        assert listed_for(action="order") == [("vera", "order.retry-import"), ("otto", "order.retry-import")]
        assert listed_for(action="sign-in", outcome="sent", user="otto") == [
            ("otto", "sign-in"),
            ("otto", "sign-in"),
        ]
        assert listed_for(outcome="refused", user="otto") == [("otto", "order.retry-import")]
        assert listed_for(since="2026-11-25T10:00:00Z", until="2026-11-25T11:30:00Z") == [
            ("vera", "order.retry-import"),
            ("vera", "sign-in"),
        ]
        assert len(listed_for(since="2026-11-25", until="2026-11-25")) == 5  # the whole day
        assert listed_for(until="2026-11-25T09:00:00Z") == []

        # Paging: newest first, the cursor of the last one shown.
        first = client.get("/api/audit", params={"limit": "2"}).json()
        assert [e["actor"] for e in first["entries"]] == ["otto", "vera"]
        second = client.get("/api/audit", params={"limit": "2", "older": first["older"]}).json()
        third = client.get("/api/audit", params={"limit": "2", "older": second["older"]}).json()
        assert [e["action"] for e in second["entries"] + third["entries"]] == [
            "sign-in",
            "order.retry-import",
            "sign-in",
        ]
        assert third["older"] is None

        for bad in ({"outcome": "maybe"}, {"since": "yesterday"}, {"older": "x"}, {"limit": "0"}):
            assert client.get("/api/audit", params=bad).status_code == 400, bad

        page = client.get("/audit", params={"user": "vera"})
        assert page.status_code == 200
        rows = re.findall(
            r'<tr data-entry="[^"]+" data-action="([^"]+)" data-actor="([^"]+)" data-outcome="(\w+)"',
            page.text,
        )
        assert rows == [("order.retry-import", "vera", "refused"), ("sign-in", "vera", "sent")]
        assert f"{CHANNEL}/{filled.success[0]}" in page.text
        assert "your role (viewer) may not act on orders" in page.text
        paged = client.get("/audit", params={"limit": "2"}).text
        assert 'id="audit-older"' in paged

    with browser(settings, clock, sink) as admin:
        sign_in(admin, "ada")
        assert admin.get("/audit").status_code == 200
        # Kafka got them all, each once (the dashboard sends them as they come).
        wait_until(lambda: len(sink.sent) == 6)
    assert len({e.entry_id for e in sink.sent}) == 6
    assert await trail.unsent_count() == 0


async def test_the_operator_token_still_works_for_api_clients(
    *,
    settings: Settings,
    clock: ManualClock,
    sink: RecordingSink,
    trail: AuditLog,
    filled: Orders,
    users: UserStore,
) -> None:
    order = {
        "action": "unignore",
        "orders": [{"channel": CHANNEL, "amazon_order_id": filled.import_failed[0]}],
        "operator": "ops-bot",
    }
    token = {"X-Operator-Token": OPERATOR_TOKEN}
    with browser(settings, clock, sink) as client:
        # Reading with the token as a bearer, acting with it in the header: no session, no CSRF token.
        assert (
            client.get("/api/orders", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}).status_code
            == 200
        )
        answer = client.post("/api/actions", json=order, headers=token)
        assert answer.status_code == 409, answer.text  # past the admission: the order is not ignored
        assert (
            client.post("/api/actions", json=order, headers={"X-Operator-Token": "guess"}).status_code == 403
        )
        # The operator role sees the trail and buyers' personal data.
        assert (
            client.get("/api/audit", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}).status_code == 200
        )
        # A session cookie does not stand in for the header, nor the header for an admin.
        csrf = sign_in(client, "vera")
        assert client.post("/api/actions", json=order, headers={"X-CSRF-Token": csrf}).status_code == 403

    [by_token] = await entries(trail, actor="api-token", action="order.unignore")
    [refused] = await entries(trail, actor="(token)", action="order.unignore")
    assert (by_token.role, by_token.via, by_token.outcome) == ("operator", "api", "refused")
    assert "not ignored" in by_token.reason
    assert (refused.outcome, refused.reason) == ("refused", "the operator token is not valid")
    assert OPERATOR_TOKEN not in repr(by_token.model_dump()) + repr(refused.model_dump())
    assert await users.any()


@pytest.mark.usefixtures("users")
async def test_entries_made_while_kafka_is_down_wait_in_redis_and_go_out_when_it_is_back(
    settings: Settings,
    clock: ManualClock,
    sink: RecordingSink,
    trail: AuditLog,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink.down = True
    with browser(settings, clock, sink) as client:
        sign_in(client, "otto")
        wait_until(lambda: sink.attempts >= 1)
        wait_until(lambda: "Kafka did not take" in caplog.text)
        page = client.get("/audit")
        assert re.search(r"\d+ audit entr(y is|ies are) not on Kafka yet", page.text)
        assert client.get("/api/audit").json()["unsent"] >= 1
        assert sink.sent == []
        kept = await trail.unsent()
        assert [e.action for e in kept] == ["sign-in"]
        error = next(r for r in caplog.records if "Kafka did not take" in r.getMessage())
        assert error.levelno == logging.ERROR

        # Kafka is back: the next entry wakes the sender, which sends what waited too.
        sink.down = False
        client.post("/logout", data={"csrf_token": csrf_of(client)})
        wait_until(lambda: len(sink.sent) == 2)
    assert [e.action for e in sink.sent] == ["sign-in", "sign-out"]
    assert await trail.unsent_count() == 0
    assert {e.entry_id for e in sink.sent} == {e.entry_id for e in await entries(trail)}


async def test_with_redis_down_the_pages_say_so_and_the_probes_still_answer(
    tmp_path: Path, clock: ManualClock, sink: RecordingSink
) -> None:
    # Who asks is looked up in Redis first: with Redis down that is the answer (503), not a crash.
    down = dashboard_settings(
        "redis://127.0.0.1:1/0",
        "down",
        write_channels_file(tmp_path / "channels.yaml"),
        kafka_bootstrap=NO_BROKER,
    )
    with browser(down, clock, sink) as client:
        page = client.get("/")
        assert page.status_code == 503
        assert "Redis is unreachable" in page.text
        assert client.post("/login", data={"username": "otto", "password": "x" * 12}).status_code == 503
        assert client.get("/api/audit").status_code == 503
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 503
