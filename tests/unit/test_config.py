from __future__ import annotations

from pathlib import Path

import pytest

from ordersync.channels import load_channels
from ordersync.errors import ConfigurationError
from ordersync.settings import Settings, StatusModelSettings
from ordersync.state.keys import ORDER_STATE_TTL_S
from ordersync.state.listings import ListingsRejected, parse_listings_csv

pytestmark = pytest.mark.unit

CHANNELS = """
channels:
  - name: acme-us
    seller_id: A1ACME
    region: na
    marketplaces: [ATVPDKIKX0DER, A2EUQ1WTGCTBG2]
    credentials:
      client_id: {env: ACME_CLIENT_ID}
      client_secret: {env: ACME_CLIENT_SECRET}
      refresh_token: {file: REFRESH}
    rate_limits:
      getOrders: {rate: 0.0334, burst: 20}
"""


def test_settings_come_from_the_environment_nested_with_double_underscore(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ORDERSYNC_STATE_DIR", "/nonexistent")
    monkeypatch.setenv("ORDERSYNC_KAFKA__BOOTSTRAP", "broker-1:9092,broker-2:9092")
    monkeypatch.setenv("ORDERSYNC_REDIS__URL", "redis://cache:6379/2")
    monkeypatch.setenv("ORDERSYNC_REDIS__PASSWORD", "hunter2")
    monkeypatch.setenv("ORDERSYNC_AMAZON__ENDPOINT", "http://127.0.0.1:8100/")
    monkeypatch.setenv("ORDERSYNC_AMAZON__LWA_ENDPOINT", "http://127.0.0.1:8100/auth/o2/token")
    monkeypatch.setenv("ORDERSYNC_CHANNELS_FILE", "/etc/ordersync/channels.yaml")
    settings = Settings()
    assert settings.kafka.bootstrap == "broker-1:9092,broker-2:9092"
    assert settings.redis.url == "redis://cache:6379/2"
    assert settings.amazon.endpoint_for("eu") == "http://127.0.0.1:8100"
    assert settings.channels_file == Path("/etc/ordersync/channels.yaml")
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in str(settings.model_dump())
    with pytest.raises(ValueError, match="frozen"):
        settings.log_level = "DEBUG"  # type: ignore[misc]


def test_amazon_endpoint_defaults_to_the_region(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDERSYNC_STATE_DIR", "/nonexistent")
    assert Settings().amazon.endpoint_for("fe") == "https://sellingpartnerapi-fe.amazon.com"


def test_dev_state_file_fills_in_what_the_environment_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORDERSYNC_STATE_DIR", str(tmp_path))
    # The suite may itself run against servers named in the environment (see tests/conftest.py).
    monkeypatch.delenv("ORDERSYNC_KAFKA__BOOTSTRAP", raising=False)
    monkeypatch.delenv("ORDERSYNC_REDIS__URL", raising=False)
    monkeypatch.delenv("ORDERSYNC_PRIVACY__KEK", raising=False)
    kek = "A" * 43 + "="
    (tmp_path / "dev.json").write_text(
        '{"kafka_bootstrap": "127.0.0.1:1234", "redis_url": "redis://127.0.0.1:5/0",'
        f' "privacy_kek": "{kek}"}}'
    )
    assert Settings().kafka.bootstrap == "127.0.0.1:1234"
    dev_kek = Settings().privacy.kek
    assert dev_kek is not None
    assert dev_kek.get_secret_value() == kek
    monkeypatch.setenv("ORDERSYNC_KAFKA__BOOTSTRAP", "env:9092")
    settings = Settings()
    assert settings.kafka.bootstrap == "env:9092"
    assert settings.redis.url == "redis://127.0.0.1:5/0"


def test_channels_resolve_credentials_by_reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "REFRESH").write_text("Atzr|token\n")
    path = tmp_path / "channels.yaml"
    path.write_text(CHANNELS.replace("file: REFRESH", f"file: {tmp_path / 'REFRESH'}"))
    monkeypatch.setenv("ACME_CLIENT_ID", "client")
    monkeypatch.setenv("ACME_CLIENT_SECRET", "s3cret")
    channel = load_channels(path).by_name("acme-us")
    assert channel.marketplaces == ("ATVPDKIKX0DER", "A2EUQ1WTGCTBG2")
    assert channel.rate_limits["getOrders"].rate == 0.0334
    assert channel.credentials.refresh_token.resolve("x").get_secret_value() == "Atzr|token"
    assert channel.credentials.client_secret.resolve("x").get_secret_value() == "s3cret"
    monkeypatch.delenv("ACME_CLIENT_SECRET")
    with pytest.raises(ConfigurationError, match="ACME_CLIENT_SECRET is not set"):
        channel.credentials.client_secret.resolve("acme-us client_secret")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s.replace("region: na", "region: mars"), "channels.0.region"),
        (lambda s: s.replace("[ATVPDKIKX0DER, A2EUQ1WTGCTBG2]", "[]"), "channels.0.marketplaces"),
        (lambda s: s + s.split("channels:\n")[1], "channel names must be unique"),
        (lambda s: s.replace("seller_id: A1ACME", "seller_id: 'A1 ACME'"), "channels.0.seller_id"),
        (lambda s: "channels: [", "not valid YAML"),
    ],
)
def test_bad_channels_files_say_where(tmp_path: Path, edit, message: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "channels.yaml"
    path.write_text(edit(CHANNELS))
    with pytest.raises(ConfigurationError, match=message):
        load_channels(path)


def test_listings_csv_maps_merchant_sku_to_client_sku() -> None:
    listings = parse_listings_csv(
        "Client SKU Id,Channel Serial No.,Channel SKU Id,EAN,ASIN,Merchant SKU\n"
        "STK-1,,CH-1,4006381333931,B000000001,SKU-1\n"
        "STK-2,,CH-2,,B000000002,\n"
    )
    assert listings.by_seller_sku() == {"SKU-1": "STK-1", "CH-2": "STK-2"}


def test_listings_csv_reports_every_bad_row_and_applies_nothing() -> None:
    with pytest.raises(ListingsRejected) as caught:
        parse_listings_csv(
            "Client SKU Id,Channel SKU Id,EAN,ASIN,Merchant SKU\n"
            ",,,B1,SKU-1\n"
            "STK-2,,,B2,SKU-2\n"
            "STK-3,,,B3,SKU-2\n"
        )
    assert caught.value.problems == [
        "line 2: Client SKU Id is empty",
        "line 4: seller SKU SKU-2 is already mapped on line 3",
    ]
    with pytest.raises(ListingsRejected, match="header"):
        parse_listings_csv("sku,code\nA,B\n")


def test_a_listings_csv_with_a_sku_longer_than_amazons_is_refused_whole() -> None:
    csv_text = (
        "Client SKU Id,Channel Serial No.,Channel SKU Id,EAN,ASIN,Merchant SKU\nSTK-1,,,,,SKU-1\nSTK-2,,,,,"
        + "M" * 41
    )
    with pytest.raises(ListingsRejected, match="line 3: seller SKU of 41 characters"):
        parse_listings_csv(csv_text + "\n")


def test_the_status_model_retention_defaults_to_the_stage_states_horizon(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The model must not show an order whose per-order stage state has expired.
    assert StatusModelSettings().retention_days * 86400 == ORDER_STATE_TTL_S
    monkeypatch.setenv("ORDERSYNC_STATE_DIR", "/nonexistent")
    monkeypatch.setenv("ORDERSYNC_STATUS_MODEL__RETENTION_DAYS", "30")
    assert Settings().status_model.retention_days == 30
    monkeypatch.setenv("ORDERSYNC_STATUS_MODEL__RETENTION_DAYS", "0")
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        Settings()
    # A cut-off before year 1 could not be computed.
    monkeypatch.setenv("ORDERSYNC_STATUS_MODEL__RETENTION_DAYS", "1000000")
    with pytest.raises(ValueError, match="less than or equal to 36500"):
        Settings()
