"""The secret store on a real S3 protocol server (moto's, on loopback): values round-trip, are never
stored in the clear, are bound to their name, do not open with another key-encryption key, survive a
rotation; channels naming stored secrets are opened; and ``ordersync secrets`` reads the value from
standard input and never shows it."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from ordersync.aws import aws_client
from ordersync.channels import SecretRef
from ordersync.cli import app
from ordersync.logs import redact
from ordersync.privacy import new_kek
from ordersync.secret_store import (
    SecretMissing,
    SecretUnreadable,
    object_key,
    open_channel_secrets,
    open_secret_store,
)
from ordersync.settings import AwsSettings, PrivacySettings, SecretsSettings, Settings, get_settings
from tests.factories import channel

pytestmark = pytest.mark.stage

NAME = "channels/acme-us/refresh-token"
TOKEN = "Atzr|IwEBIA-the-refresh-token-0123456789"


@pytest.fixture
def settings(aws: AwsSettings) -> Settings:
    return Settings(
        aws=aws,
        secrets=SecretsSettings(bucket=f"secrets-{uuid.uuid4().hex[:12]}", kek=SecretStr(new_kek())),
        privacy=PrivacySettings(),
    )


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as opened:
        yield opened


async def _raw_object(aws: AwsSettings, bucket: str, key: str) -> bytes:
    async with aws_client(aws, "s3") as s3:
        answer = await s3.get_object(Bucket=bucket, Key=key)
        async with answer["Body"] as body:
            return bytes(await body.read())


async def test_a_secret_round_trips_and_is_stored_encrypted(
    settings: Settings, aws: AwsSettings, stack: AsyncExitStack
) -> None:
    store = await open_secret_store(settings, stack)  # the bucket is created
    await store.put(NAME, SecretStr(TOKEN))
    assert (await store.get(NAME)).get_secret_value() == TOKEN
    # Another process (no cache) reads it too.
    other = await open_secret_store(settings, stack)
    assert (await other.get(NAME)).get_secret_value() == TOKEN
    # What S3 holds names the secret and its key-encryption key, never the value.
    raw = await _raw_object(aws, settings.secrets.bucket, f"secrets/{NAME}.json")
    assert TOKEN.encode() not in raw
    assert b"the-refresh-token" not in raw
    record = json.loads(raw)
    assert record["name"] == NAME
    assert record["wrapped_by"] == "local:local-1"
    # Put again: the value is replaced.
    await store.put(NAME, SecretStr(TOKEN + "-new"))
    assert (await open_secret_store(settings, stack)).wrapped_by == "local:local-1"
    assert (await (await open_secret_store(settings, stack)).get(NAME)).get_secret_value() == TOKEN + "-new"


async def test_another_key_encryption_key_cannot_read_it(settings: Settings, stack: AsyncExitStack) -> None:
    await (await open_secret_store(settings, stack)).put(NAME, SecretStr(TOKEN))
    stranger = settings.model_copy(
        update={"secrets": settings.secrets.model_copy(update={"kek": SecretStr(new_kek())})}
    )
    with pytest.raises(SecretUnreadable, match="does not decrypt") as raised:
        await (await open_secret_store(stranger, stack)).get(NAME)
    message = str(raised.value)
    assert NAME in message
    assert TOKEN not in message
    assert "the-refresh-token" not in message
    assert raised.value.__cause__ is None
    # Nor does a key of another name (a retired one no longer configured).
    renamed = stranger.model_copy(
        update={"secrets": stranger.secrets.model_copy(update={"kek_id": "local-2"})}
    )
    with pytest.raises(SecretUnreadable, match=r"encrypted by local:local-1.*secrets\.previous_keks"):
        await (await open_secret_store(renamed, stack)).get(NAME)


async def test_a_record_copied_under_another_name_does_not_decrypt(
    settings: Settings, aws: AwsSettings, stack: AsyncExitStack
) -> None:
    store = await open_secret_store(settings, stack)
    await store.put(NAME, SecretStr(TOKEN))
    record = json.loads(await _raw_object(aws, settings.secrets.bucket, object_key(NAME)))
    record["name"] = "channels/evil/refresh-token"
    async with aws_client(aws, "s3") as s3:
        await s3.put_object(
            Bucket=settings.secrets.bucket,
            Key=object_key("channels/evil/refresh-token"),
            Body=json.dumps(record).encode(),
        )
    with pytest.raises(SecretUnreadable, match="channels/evil/refresh-token"):
        await store.get("channels/evil/refresh-token")


async def test_a_rotated_key_encryption_key_still_reads_and_rewrap_moves_them(
    settings: Settings, stack: AsyncExitStack
) -> None:
    await (await open_secret_store(settings, stack)).put(NAME, SecretStr(TOKEN))
    await (await open_secret_store(settings, stack)).put("other", SecretStr("another-secret-value"))
    secrets = settings.secrets
    rotated = settings.model_copy(
        update={
            "secrets": secrets.model_copy(
                update={
                    "kek": SecretStr(new_kek()),
                    "kek_id": "local-2",
                    "previous_keks": {"local-1": secrets.kek},
                }
            )
        }
    )
    during = await open_secret_store(rotated, stack)
    assert (await during.get(NAME)).get_secret_value() == TOKEN
    assert await during.rewrap() == 2
    assert await during.rewrap() == 0
    after = rotated.model_copy(update={"secrets": rotated.secrets.model_copy(update={"previous_keks": {}})})
    store = await open_secret_store(after, stack)
    assert store.wrapped_by == "local:local-2"
    assert (await store.get(NAME)).get_secret_value() == TOKEN
    assert (await store.get("other")).get_secret_value() == "another-secret-value"


async def test_names_and_delete(settings: Settings, stack: AsyncExitStack) -> None:
    store = await open_secret_store(settings, stack)
    assert await store.names() == []
    for name in (NAME, "b-token", "channels/acme-de/refresh-token"):
        await store.put(name, SecretStr(f"value-of-{name}"))
    assert await store.names() == ["b-token", "channels/acme-de/refresh-token", NAME]
    await store.get(NAME)  # cached now
    await store.delete(NAME)
    assert await store.names() == ["b-token", "channels/acme-de/refresh-token"]
    with pytest.raises(SecretMissing, match=f"secret '{NAME}' is not in the secret store"):
        await store.get(NAME)
    with pytest.raises(SecretMissing):
        await (await open_secret_store(settings, stack)).get(NAME)
    with pytest.raises(SecretMissing):
        await store.delete(NAME)


async def test_empty_and_oversized_values_are_refused(settings: Settings, stack: AsyncExitStack) -> None:
    store = await open_secret_store(settings, stack)
    with pytest.raises(ValueError, match="empty"):
        await store.put(NAME, SecretStr(""))
    with pytest.raises(ValueError, match="longer than 4096 bytes"):
        await store.put(NAME, SecretStr("x" * 4097))
    assert await store.names() == []


async def test_the_privacy_key_encryption_key_serves_when_secrets_has_none(
    aws: AwsSettings, stack: AsyncExitStack
) -> None:
    # What `ordersync dev up` and the demo configure: privacy.kek only.
    settings = Settings(
        aws=aws,
        secrets=SecretsSettings(bucket=f"secrets-{uuid.uuid4().hex[:12]}"),
        privacy=PrivacySettings(kek=SecretStr(new_kek())),
    )
    store = await open_secret_store(settings, stack)
    assert store.section == "privacy"
    await store.put(NAME, SecretStr(TOKEN))
    assert (await (await open_secret_store(settings, stack)).get(NAME)).get_secret_value() == TOKEN


async def test_kms_encrypts_the_secrets(settings: Settings, aws: AwsSettings, stack: AsyncExitStack) -> None:
    async with aws_client(aws, "kms") as kms:
        created = await kms.create_key(Description="ordersync secrets test", KeyUsage="ENCRYPT_DECRYPT")
    key = created["KeyMetadata"]["Arn"]
    local = await open_secret_store(settings, stack)
    await local.put("by-local", SecretStr("a-value-the-local-key-encrypted"))
    # The move to KMS: the local key stays configured until rewrap is done.
    moving = settings.model_copy(update={"secrets": settings.secrets.model_copy(update={"kms_key_id": key})})
    store = await open_secret_store(moving, stack)
    assert store.wrapped_by == f"kms:{key}"
    await store.put(NAME, SecretStr(TOKEN))
    raw = await _raw_object(aws, settings.secrets.bucket, object_key(NAME))
    assert TOKEN.encode() not in raw
    assert json.loads(raw)["wrapped_by"] == f"kms:{key}"
    assert (await store.get(NAME)).get_secret_value() == TOKEN
    assert (await store.get("by-local")).get_secret_value() == "a-value-the-local-key-encrypted"
    assert await store.rewrap() == 1


async def test_open_channel_secrets_replaces_store_references_only(
    settings: Settings, stack: AsyncExitStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await open_secret_store(settings, stack)
    await store.put(NAME, SecretStr(TOKEN))
    await store.put("channels/acme-us/client-secret", SecretStr("amzn1.oa2-cs.v1.the-client-secret"))
    monkeypatch.setenv("ACME_LWA_CLIENT_ID", "amzn1.application-oa2-client.acme")
    declared = channel(
        credentials={
            "client_id": {"env": "ACME_LWA_CLIENT_ID"},
            "client_secret": {"store": "channels/acme-us/client-secret"},
            "refresh_token": {"store": NAME},
        }
    )
    opened = await open_channel_secrets(declared, store)
    credentials = opened.credentials
    assert credentials.client_id == SecretRef(env="ACME_LWA_CLIENT_ID")
    assert credentials.refresh_token.store is None
    assert credentials.refresh_token.resolve("t").get_secret_value() == TOKEN
    assert credentials.client_secret.resolve("t").get_secret_value() == "amzn1.oa2-cs.v1.the-client-secret"
    assert opened.model_copy(update={"credentials": declared.credentials}) == declared  # nothing else changed
    assert declared.credentials.refresh_token.store == NAME  # the declared channel is as it was
    # Logs mask the opened values from now on, whatever a line calls them.
    assert TOKEN not in redact(f"refreshing with {TOKEN}")
    assert "the-client-secret" not in redact("secret=amzn1.oa2-cs.v1.the-client-secret")
    # A missing secret is named, with how to store it.
    missing = channel(
        credentials={
            "client_id": {"env": "ACME_LWA_CLIENT_ID"},
            "client_secret": {"value": "inline-secret"},
            "refresh_token": {"store": "channels/nobody/refresh-token"},
        }
    )
    with pytest.raises(SecretMissing, match=r"channels/nobody/refresh-token.*ordersync secrets put"):
        await open_channel_secrets(missing, store)


@pytest.fixture
def cli_env(
    settings: Settings, aws: AwsSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Settings]:
    """The environment of ``ordersync secrets``: the session's S3 server and a key of its own."""
    assert aws.endpoint_url is not None
    assert settings.secrets.kek is not None
    monkeypatch.setenv("ORDERSYNC_STATE_DIR", str(tmp_path / "state"))  # never a developer's `dev up`
    monkeypatch.setenv("ORDERSYNC_AWS__ENDPOINT_URL", aws.endpoint_url)
    monkeypatch.setenv("ORDERSYNC_AWS__ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("ORDERSYNC_AWS__SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("ORDERSYNC_SECRETS__BUCKET", settings.secrets.bucket)
    monkeypatch.setenv("ORDERSYNC_SECRETS__KEK", settings.secrets.kek.get_secret_value())
    monkeypatch.delenv("ORDERSYNC_PRIVACY__KEK", raising=False)
    get_settings.cache_clear()
    yield settings
    get_settings.cache_clear()


def test_the_cli_reads_the_value_from_stdin_and_never_shows_it(cli_env: Settings) -> None:
    runner = CliRunner()
    put = runner.invoke(app, ["secrets", "put", NAME], input=TOKEN + "\n")
    assert put.exit_code == 0, put.output
    assert put.stdout == f"stored {NAME} (encrypted by local:local-1)\n"
    listed = runner.invoke(app, ["secrets", "list"])
    assert listed.exit_code == 0, listed.output
    assert listed.stdout == f"{NAME}\n"
    for result in (put, listed):
        assert TOKEN not in result.output
        assert "the-refresh-token" not in result.output

    async def stored() -> str:
        async with AsyncExitStack() as stack:
            return (await (await open_secret_store(cli_env, stack)).get(NAME)).get_secret_value()

    assert asyncio.run(stored()) == TOKEN  # the trailing newline dropped, nothing else
    # The value is never an argument.
    assert runner.invoke(app, ["secrets", "put", NAME, TOKEN]).exit_code == 2
    # Bad input, an unknown name, an empty value: one line each, the documented exit codes.
    bad = runner.invoke(app, ["secrets", "put", "../escape"], input="x-value\n")
    assert bad.exit_code == 2
    assert "is not valid" in bad.stderr
    assert runner.invoke(app, ["secrets", "put", "empty"], input="\n").exit_code == 2
    unknown = runner.invoke(app, ["secrets", "delete", "nobody"])
    assert unknown.exit_code == 3
    assert "not in the secret store" in unknown.stderr
    deleted = runner.invoke(app, ["secrets", "delete", NAME])
    assert (deleted.exit_code, deleted.stdout) == (0, f"deleted {NAME}\n")
    assert runner.invoke(app, ["secrets", "list"]).stdout == ""


def test_the_cli_without_a_key_encryption_key_is_a_configuration_error(
    cli_env: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ORDERSYNC_SECRETS__KEK")
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["secrets", "list"])
    assert result.exit_code == 7
    assert "no key-encryption key" in result.stderr


def test_after_dev_up_the_cli_needs_no_key_of_its_own(
    aws: AwsSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ordersync dev up`` records the local AWS server and a privacy key-encryption key in its state
    file; the secret store works from those alone."""
    assert aws.endpoint_url is not None
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    dev_state = {"aws_endpoint_url": aws.endpoint_url, "privacy_kek": new_kek()}
    (state_dir / "dev.json").write_text(json.dumps(dev_state))
    monkeypatch.setenv("ORDERSYNC_STATE_DIR", str(state_dir))
    for variable in (
        "ORDERSYNC_AWS__ENDPOINT_URL",
        "ORDERSYNC_AWS__ACCESS_KEY_ID",
        "ORDERSYNC_AWS__SECRET_ACCESS_KEY",
        "ORDERSYNC_PRIVACY__KEK",
        "ORDERSYNC_SECRETS__KEK",
        "ORDERSYNC_SECRETS__KMS_KEY_ID",
    ):
        monkeypatch.delenv(variable, raising=False)
    # Only so that this test's bucket is its own on the session's server.
    monkeypatch.setenv("ORDERSYNC_SECRETS__BUCKET", f"secrets-{uuid.uuid4().hex[:12]}")
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        put = runner.invoke(app, ["secrets", "put", NAME], input=TOKEN)
        assert put.exit_code == 0, put.output
        assert "encrypted by local:local-1" in put.stdout
        listed = runner.invoke(app, ["secrets", "list"])
        assert (listed.exit_code, listed.stdout) == (0, f"{NAME}\n")
    finally:
        get_settings.cache_clear()
