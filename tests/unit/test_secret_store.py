"""The secret store's pure parts: valid names (no path tricks), the four kinds of credential reference,
the store refusing to open without a key-encryption key, and channels naming no stored secret passing
through untouched."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from ordersync.channels import SecretRef, load_channels
from ordersync.errors import ConfigurationError
from ordersync.keywrap import LocalWrapper
from ordersync.privacy import new_kek
from ordersync.secret_store import (
    InvalidSecretName,
    SecretStore,
    associated_data,
    object_key,
    open_channel_secrets,
    open_secret_store,
    valid_name,
)
from ordersync.settings import PrivacySettings, SecretsSettings, Settings
from tests.factories import channel

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "name",
    [
        "a",
        "acme-us",
        "channels/acme-us/refresh-token",
        "v1.2_x",
        "0/1/2",
        "a" * 128,
        "a..b",  # dots inside a part are only dots
    ],
)
def test_valid_names(name: str) -> None:
    assert valid_name(name) == name
    assert object_key(name) == f"secrets/{name}.json"


@pytest.mark.parametrize(
    "name",
    [
        "",
        "a" * 129,
        "Acme",
        "acme us",
        "../etc/passwd",
        "a/../b",
        "a/./b",
        "./a",
        "a//b",
        "/a",
        "a/",
        ".hidden",
        "-a",
        "a/-b",
        "a\\b",
        "a\nb",
        "é",
    ],
)
def test_invalid_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidSecretName, match=r"secret name .* is not valid"):
        valid_name(name)
    with pytest.raises(InvalidSecretName):
        object_key(name)
    with pytest.raises(ValidationError, match="is not valid"):
        SecretRef(store=name)


def test_associated_data_binds_the_name() -> None:
    assert associated_data("acme/refresh") == "ordersync-secret:acme/refresh"
    assert associated_data("a") != associated_data("b")


def test_the_four_kinds_of_reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDERSYNC_TEST_TOKEN", "from-the-environment")
    assert SecretRef(env="ORDERSYNC_TEST_TOKEN").resolve("t").get_secret_value() == "from-the-environment"
    secret_file = tmp_path / "token"
    secret_file.write_text("from-a-file\n")
    assert SecretRef(file=secret_file).resolve("t").get_secret_value() == "from-a-file"
    assert SecretRef(value=SecretStr("inline")).resolve("t").get_secret_value() == "inline"
    # A store reference cannot be resolved synchronously: it is opened from the store first.
    stored = SecretRef(store="channels/acme-us/refresh-token")
    with pytest.raises(ConfigurationError, match="must be opened from it first") as raised:
        stored.resolve("channel acme-us refresh_token")
    assert "channel acme-us refresh_token" in str(raised.value)
    assert "channels/acme-us/refresh-token" in str(raised.value)
    with pytest.raises(ConfigurationError, match="give one of env, file, value or store"):
        SecretRef().resolve("t")


@pytest.mark.parametrize(
    "other", [{"env": "X"}, {"file": "/run/secrets/x"}, {"value": "inline-value"}], ids=str
)
def test_a_store_reference_names_only_the_store(other: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="names only the store"):
        SecretRef.model_validate({"store": "acme/token", **other})


def test_the_channels_file_takes_store_references(tmp_path: Path) -> None:
    path = tmp_path / "channels.yaml"
    path.write_text(
        "channels:\n"
        "  - name: acme-us\n"
        "    seller_id: A1ACME\n"
        "    marketplaces: [ATVPDKIKX0DER]\n"
        "    credentials:\n"
        "      client_id: {env: ACME_LWA_CLIENT_ID}\n"
        "      client_secret: {store: channels/acme-us/client-secret}\n"
        "      refresh_token: {store: channels/acme-us/refresh-token}\n"
    )
    credentials = load_channels(path).by_name("acme-us").credentials
    assert credentials.refresh_token.store == "channels/acme-us/refresh-token"
    assert credentials.client_id.env == "ACME_LWA_CLIENT_ID"
    path.write_text(path.read_text().replace("channels/acme-us/refresh-token", "../refresh-token"))
    with pytest.raises(ConfigurationError, match=r"refresh_token\.store: .*is not valid"):
        load_channels(path)


async def test_the_store_refuses_to_open_without_a_key_encryption_key() -> None:
    settings = Settings(secrets=SecretsSettings(), privacy=PrivacySettings())
    async with AsyncExitStack() as stack:
        with pytest.raises(ConfigurationError, match=r"secrets: no key-encryption key.*secrets\.kek"):
            await open_secret_store(settings, stack)


async def test_a_malformed_secrets_kek_is_named_as_such() -> None:
    settings = Settings(secrets=SecretsSettings(kek=SecretStr("too-short")))
    async with AsyncExitStack() as stack:
        with pytest.raises(ConfigurationError, match="secrets key-encryption key 'local-1' must be 32 bytes"):
            await open_secret_store(settings, stack)


class _Unreachable:
    """An S3 client that fails the test if it is used."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"S3 was reached: {name}")


async def test_a_channel_naming_no_stored_secret_is_returned_unchanged() -> None:
    store = SecretStore(_Unreachable(), "unused", LocalWrapper("local-1", {"local-1": new_kek()}))
    plain = channel()
    assert await open_channel_secrets(plain, store) is plain
