"""``ordersync users`` and ``ordersync audit`` on a real Redis (typer's CliRunner, in process): a fresh
install's first admin, every change and its exit code, what the audit trail says of them (and what it
sends to Kafka: a recording sink stands in, except once, where Kafka really is unreachable), and the
admin made here signing in to the dashboard."""

from __future__ import annotations

import asyncio
import getpass
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from starlette.testclient import TestClient
from typer.testing import CliRunner, Result

from ordersync.cli import app
from ordersync.dashboard import create_app
from ordersync.ops.audit import AuditFilter, AuditLog
from ordersync.ops.users import UserStore
from ordersync.schemas.events import AuditRecorded
from ordersync.settings import Settings, get_settings
from tests.factories import dashboard_settings, write_channels_file
from tests.stage.test_dashboard_accounts import RecordingSink

pytestmark = pytest.mark.stage

NO_BROKER = "127.0.0.1:1"
ADMIN_PASSWORD = "the-first-admin-pass"


@pytest.fixture
def sink(monkeypatch: pytest.MonkeyPatch) -> RecordingSink:
    recording = RecordingSink()
    monkeypatch.setattr("ordersync.cli.audit.cli_sink", lambda settings: recording)
    return recording


@pytest.fixture
def env(redis_url: str, redis_key_prefix: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("ORDERSYNC_REDIS__URL", redis_url)
    monkeypatch.setenv("ORDERSYNC_REDIS__KEY_PREFIX", redis_key_prefix)
    monkeypatch.setenv("ORDERSYNC_KAFKA__BOOTSTRAP", NO_BROKER)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


async def ordersync(*args: str, stdin: str | None = None) -> Result:
    return await asyncio.to_thread(CliRunner().invoke, app, list(args), input=stdin)


async def trail_entries(redis: aioredis.Redis, prefix: str, **criteria: Any) -> list[AuditRecorded]:
    page = await AuditLog(redis, prefix).page(AuditFilter(**criteria), limit=500)
    return [entry for _, entry in page.entries]


@pytest.mark.usefixtures("env")
async def test_users_commands_change_the_accounts_with_exit_codes_and_audit_each_change(
    redis_client: aioredis.Redis, redis_key_prefix: str, sink: RecordingSink
) -> None:
    empty = await ordersync("users", "list")
    assert empty.exit_code == 0
    assert "no user: add the first admin" in empty.output

    # A fresh install's first admin, the password on standard input.
    added = await ordersync(
        "users", "add", "Ada", "--role", "admin", "--password-stdin", stdin=ADMIN_PASSWORD + "\n"
    )
    assert added.exit_code == 0, added.output
    assert "added ada (admin)" in added.output
    # ... or typed twice at the prompt.
    prompted = await ordersync("users", "add", "bob", "--role", "operator", stdin="bobs-password-123\n" * 2)
    assert prompted.exit_code == 0, prompted.output

    store = UserStore(redis_client, redis_key_prefix)
    user, _ = await store.authenticate("ada", ADMIN_PASSWORD)
    assert user is not None
    assert user.role == "admin"
    assert user.created_by == f"cli:{getpass.getuser()}"
    assert ADMIN_PASSWORD not in (await redis_client.hget(f"{redis_key_prefix}:users", "ada") or "")

    for args, code, words in (
        (("users", "add", "ada", "--role", "viewer", "--password-stdin"), 2, "exists already"),
        (("users", "add", "carl", "--role", "boss", "--password-stdin"), 2, "--role 'boss': one of viewer"),
        (("users", "add", "carl", "--role", "viewer", "--password-stdin"), 2, "too short"),
        (("users", "add", "Carl Smith", "--role", "viewer", "--password-stdin"), 2, "is not a user name"),
        (("users", "add", "api-token", "--role", "viewer", "--password-stdin"), 2, "reserved"),
        (("users", "set-role", "ghost", "viewer"), 3, "no user 'ghost'"),
        (("users", "set-role", "ada", "operator"), 2, "last enabled admin"),
        (("users", "disable", "ada"), 2, "last enabled admin"),
        (("users", "passwd", "ghost", "--password-stdin"), 3, "no user 'ghost'"),
    ):
        stdin = "short\n" if "carl" in args else "long-enough-password\n"
        result = await ordersync(*args, stdin=stdin)
        assert result.exit_code == code, (args, result.output)
        assert words in result.output, (args, result.output)

    assert (await ordersync("users", "set-role", "bob", "viewer")).output.strip() == (
        "bob: operator -> viewer; sessions ended"
    )
    assert (await ordersync("users", "disable", "bob")).exit_code == 0
    assert (await store.require("bob")).disabled
    assert (await store.authenticate("bob", "bobs-password-123"))[0] is None
    assert (await ordersync("users", "enable", "bob")).exit_code == 0
    passwd = await ordersync("users", "passwd", "bob", "--password-stdin", stdin="bobs-new-password-4\n")
    assert passwd.exit_code == 0, passwd.output
    assert (await store.authenticate("bob", "bobs-new-password-4"))[0] is not None

    listed = await ordersync("users", "list")
    lines = listed.output.splitlines()
    assert lines[0].split()[:3] == ["ada", "admin", "enabled"]
    assert lines[1].split()[:3] == ["bob", "viewer", "enabled"]

    me = f"cli:{getpass.getuser()}"
    entries = await trail_entries(redis_client, redis_key_prefix)
    done = [(e.action, e.targets, e.outcome) for e in reversed(entries) if e.outcome == "sent"]
    assert done == [
        ("user.add", ("ada",), "sent"),
        ("user.add", ("bob",), "sent"),
        ("user.role", ("bob",), "sent"),
        ("user.disable", ("bob",), "sent"),
        ("user.enable", ("bob",), "sent"),
        ("user.password", ("bob",), "sent"),
    ]
    assert {(e.actor, e.via) for e in entries} == {(me, "cli")}
    refused = [e for e in entries if e.outcome == "refused"]
    assert {e.action for e in refused} == {"user.add", "user.role", "user.disable", "user.password"}
    assert any("last enabled admin" in e.reason for e in refused)
    # Each went to Kafka (here: the recording sink) at once, and none waits in the outbox.
    assert {e.entry_id for e in sink.sent} == {e.entry_id for e in entries}
    assert await AuditLog(redis_client, redis_key_prefix).unsent_count() == 0
    everything = json.dumps([e.model_dump(mode="json") for e in entries])
    for secret in (ADMIN_PASSWORD, "bobs-password-123", "bobs-new-password-4", "long-enough-password"):
        assert secret not in everything


@pytest.mark.usefixtures("env")
async def test_audit_list_filters_pages_and_refuses_bad_input(
    redis_client: aioredis.Redis, redis_key_prefix: str, sink: RecordingSink
) -> None:
    for name in ("ann", "ben", "cat"):
        assert (
            await ordersync("users", "add", name, "--role", "viewer", "--password-stdin", stdin="p" * 12)
        ).exit_code == 0
    assert (await ordersync("users", "set-role", "ben", "operator")).exit_code == 0
    assert (await ordersync("users", "set-role", "zed", "operator")).exit_code == 3

    everything = await ordersync("audit", "list")
    assert everything.exit_code == 0
    lines = everything.output.splitlines()
    assert len(lines) == 5
    assert "user.role  refused  zed" in lines[0]
    assert "user.role  sent  ben  (viewer -> operator; sessions ended)" in lines[1]
    assert lines[4].split("  ")[3:6] == ["cli", "user.add", "sent"]

    refused = await ordersync("audit", "list", "--outcome", "refused")
    assert len(refused.output.splitlines()) == 1
    roles = await ordersync("audit", "list", "--action", "user.role", "--json")
    parsed = [json.loads(line) for line in roles.output.splitlines()]
    assert [(p["targets"], p["outcome"]) for p in parsed] == [(["zed"], "refused"), (["ben"], "sent")]
    family = await ordersync("audit", "list", "--action", "user", "--user", f"cli:{getpass.getuser()}")
    assert len(family.output.splitlines()) == 5
    assert (await ordersync("audit", "list", "--user", "nobody")).output.strip() == "no audit entry matches"
    assert (
        await ordersync("audit", "list", "--since", "2000-01-01", "--until", "2000-01-02")
    ).output.strip() == ("no audit entry matches")

    first = await ordersync("audit", "list", "--limit", "2")
    ids = [line.split()[0] for line in first.output.splitlines() if not line.startswith("(")]
    assert len(ids) == 2
    rest = await ordersync("audit", "list", "--older", ids[-1])
    assert len(rest.output.splitlines()) == 3

    for args in (
        ("--outcome", "maybe"),
        ("--older", "yesterday"),
        ("--since", "not a date"),
        ("--since", "2026-01-02", "--until", "2026-01-01"),
        ("--limit", "0"),
    ):
        bad = await ordersync("audit", "list", *args)
        assert bad.exit_code == 2, (args, bad.output)


@pytest.mark.usefixtures("env")
async def test_with_kafka_down_the_change_stands_and_its_entry_waits_in_redis(
    redis_client: aioredis.Redis, redis_key_prefix: str
) -> None:
    result = await ordersync("users", "add", "dora", "--role", "operator", "--password-stdin", stdin="p" * 12)
    assert result.exit_code == 0, result.output
    assert "added dora (operator)" in result.output
    assert "warning: Kafka did not take the audit entry" in result.output
    [waiting] = await AuditLog(redis_client, redis_key_prefix).unsent()
    assert (waiting.action, waiting.targets, waiting.outcome) == ("user.add", ("dora",), "sent")


@pytest.mark.usefixtures("env", "sink")
async def test_the_admin_made_with_the_cli_signs_in_to_a_fresh_dashboard(
    redis_url: str, redis_key_prefix: str, tmp_path: Path
) -> None:
    settings: Settings = dashboard_settings(
        redis_url,
        redis_key_prefix,
        write_channels_file(tmp_path / "channels.yaml"),
        kafka_bootstrap=NO_BROKER,
    )
    assert (
        await ordersync("users", "add", "root", "--role", "admin", "--password-stdin", stdin=ADMIN_PASSWORD)
    ).exit_code == 0
    with TestClient(create_app(settings, audit_sink=RecordingSink())) as client:
        assert client.get("/").status_code == 401
        signed_in = client.post("/login", data={"username": "root", "password": ADMIN_PASSWORD})
        assert signed_in.status_code == 200  # followed to the grid
        assert 'id="tab-users"' in signed_in.text
        assert 'data-user="root" data-role="admin"' in client.get("/users").text
