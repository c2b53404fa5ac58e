"""The Channels page on the real Redis, the embedded broker and the AWS test server: an admin saves a
channel (validated as the channels file is, every problem by field; two channels of one seller refused),
types its credentials into the secret store (never into the Kafka record or the page), deactivates it
(the registry follows), and a viewer or operator is refused; with Kafka down nothing is saved."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr
from starlette.testclient import TestClient

from ordersync.channels import load_channels
from ordersync.dashboard import create_app
from ordersync.dashboard.channels import channel_yaml
from ordersync.kafka.reader import read_topic
from ordersync.ops.users import UserStore
from ordersync.schemas.topics import CONFIG_CHANNELS
from ordersync.settings import AwsSettings, SecretsSettings, Settings
from ordersync.state.channel_registry import read_view
from tests.factories import SELLER, dashboard_settings, write_channels_file
from tests.stage.test_dashboard_accounts import sign_in

pytestmark = pytest.mark.integration

NO_BROKER = "127.0.0.1:1"
ADMIN, VIEWER, OPERATOR = (
    ("ada", "admin-password-1"),
    ("vera", "viewer-password-1"),
    ("otto", "operator-pw-2"),
)
TOKEN = "Atzr|typed-refresh-token-never-shown"
YAML = """name: new-de
seller_id: A9NEWSELLER
region: eu
marketplaces: [A1PA6795UKMFR9]
credentials:
  client_id: {env: NEW_CLIENT_ID}
  client_secret: {env: NEW_CLIENT_SECRET}
"""


def _settings(
    redis_url: str, prefix: str, tmp_path: Path, bootstrap: str, aws: AwsSettings | None = None
) -> Settings:
    base = dashboard_settings(
        redis_url, prefix, write_channels_file(tmp_path / "channels.yaml"), kafka_bootstrap=bootstrap
    )
    kek = SecretStr(base64.b64encode(os.urandom(32)).decode())
    update: dict[str, object] = {"secrets": SecretsSettings(bucket=f"secrets-{prefix}".lower()[:60], kek=kek)}
    if aws is not None:
        update["aws"] = aws
    return base.model_copy(update=update)


async def _users(redis_client: aioredis.Redis, prefix: str) -> None:
    users = UserStore(redis_client, prefix)
    await users.add(ADMIN[0], "admin", ADMIN[1], "test")
    await users.add(VIEWER[0], "viewer", VIEWER[1], "test")
    await users.add(OPERATOR[0], "operator", OPERATOR[1], "test")


@pytest.mark.usefixtures("topics")
async def test_an_admin_adds_edits_and_deactivates_a_channel(  # noqa: PLR0917 - fixtures
    redis_url: str,
    redis_key_prefix: str,
    redis_client: aioredis.Redis,
    kafka_bootstrap: str,
    aws: AwsSettings,
    tmp_path: Path,
) -> None:
    await _users(redis_client, redis_key_prefix)
    settings = _settings(redis_url, redis_key_prefix, tmp_path, kafka_bootstrap, aws)
    with TestClient(create_app(settings)) as client:
        csrf = sign_in(client, *ADMIN)
        head = {"X-CSRF-Token": csrf}

        def save(yaml: str, **credentials: str) -> tuple[int, dict[str, object]]:
            body = {"name": "new-de", "yaml": yaml, "credentials": credentials}
            answer = client.post("/api/channels/save", json=body, headers=head)
            return answer.status_code, answer.json()

        # Invalid: every problem named by its field.
        status, answer = save(YAML.replace("region: eu", "region: mars"))
        assert status == 422
        problems = answer["problems"]
        assert isinstance(problems, list)
        assert any(p.startswith("region:") for p in problems)
        assert any(p.startswith("credentials.refresh_token:") for p in problems)
        # Two channels of one seller and region: refused.
        status, answer = save(
            YAML.replace("A9NEWSELLER", SELLER).replace("region: eu", "region: na"), refresh_token=TOKEN
        )
        assert status == 422
        assert "one channel per seller and region" in str(answer["problems"])

        # Valid, with the refresh token typed: kept in the secret store, named by reference.
        status, answer = save(YAML, refresh_token=TOKEN)
        assert status == 200, answer
        assert answer["saved"] == "added"
        found = await read_view(redis_client, redis_key_prefix)
        assert found is not None
        record = found[1]["new-de"]
        assert record.channel is not None
        assert record.channel.credentials.refresh_token.store == "channels/new-de/refresh_token"
        # Every record's bytes, garbage other tests put on the topic included.
        raw = [
            (r.value or b"").decode(errors="replace")
            for r in read_topic(kafka_bootstrap, CONFIG_CHANNELS.name)
        ]
        assert any("new-de" in r for r in raw)
        assert not any(TOKEN in r for r in raw)
        page = client.get("/channels").text
        assert 'data-channel="new-de"' in page
        assert TOKEN not in page
        assert "channels/new-de/refresh_token" in page
        listed = {c["name"]: c for c in client.get("/api/channels").json()["channels"]}
        assert listed["new-de"]["source"] == "dashboard"
        assert listed["acme-us"]["source"] == "file"

        # Deactivated: the registry (and the page) follow.
        off = client.post("/api/channels/active", json={"name": "new-de", "active": False}, headers=head)
        assert off.status_code == 200, off.text
        found = await read_view(redis_client, redis_key_prefix)
        assert found is not None
        channel = found[1]["new-de"].channel
        assert channel is not None
        assert channel.active is False
        assert (
            'data-channel="new-de" data-source="dashboard" data-active="false"'
            in client.get("/channels").text
        )
        unknown = client.post("/api/channels/active", json={"name": "nowhere", "active": True}, headers=head)
        assert unknown.status_code == 404

        # The file's channel, its credentials inline in the file: deactivated, then saved as the page
        # shows it (credentials masked); the record says "the file's credentials", never the values.
        off = client.post("/api/channels/active", json={"name": "acme-us", "active": False}, headers=head)
        assert off.status_code == 200, off.text
        in_file = load_channels(settings.channels_file).by_name("acme-us")
        shown = channel_yaml(in_file.model_copy(update={"active": False}))  # as the page shows it now
        assert "**********" in shown
        assert "Atzr|refresh" not in shown
        assert "**********" in client.get("/channels").text  # the page shows it so, too
        edited = {"name": "acme-us", "yaml": shown + "sales_order_prefix: AC\n"}
        answer = client.post("/api/channels/save", json=edited, headers=head)
        assert answer.status_code == 200, answer.text
        found = await read_view(redis_client, redis_key_prefix)
        assert found is not None
        record = found[1]["acme-us"]
        assert record.credentials_from_file
        assert record.channel is not None
        assert record.channel.active is False
        assert record.channel.sales_order_prefix == "AC"
        # Every record's bytes, garbage other tests put on the topic included.
        raw = [
            (r.value or b"").decode(errors="replace")
            for r in read_topic(kafka_bootstrap, CONFIG_CHANNELS.name)
        ]
        assert not any("Atzr|refresh" in r for r in raw)
        listed = {c["name"]: c for c in client.get("/api/channels").json()["channels"]}
        assert listed["acme-us"]["source"] == "dashboard"
        assert listed["acme-us"]["active"] is False

    for user in (VIEWER, OPERATOR):
        with TestClient(create_app(settings)) as client:
            csrf = sign_in(client, *user)
            refused = client.post(
                "/api/channels/save",
                json={"name": "new-de", "yaml": YAML},
                headers={"X-CSRF-Token": csrf},
            )
            assert refused.status_code == 403
            assert "Channels" in client.get("/channels").text
            assert "Authorize with Amazon" not in client.get("/channels").text


async def test_with_kafka_down_nothing_is_saved(
    redis_url: str, redis_key_prefix: str, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    await _users(redis_client, redis_key_prefix)
    settings = _settings(redis_url, redis_key_prefix, tmp_path, NO_BROKER)
    with TestClient(create_app(settings)) as client:
        csrf = sign_in(client, *ADMIN)
        yaml = YAML + "  refresh_token: {env: NEW_REFRESH_TOKEN}\n"
        answer = client.post(
            "/api/channels/save", json={"name": "new-de", "yaml": yaml}, headers={"X-CSRF-Token": csrf}
        )
        assert answer.status_code == 503
        assert "nothing was saved" in answer.json()["error"]
        assert 'data-channel="new-de"' not in client.get("/channels").text
    assert await read_view(redis_client, redis_key_prefix) is None
