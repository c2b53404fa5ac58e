"""The channel registry through the real path: a running order-download stage (its own process, on the
embedded broker) picks up a channel added to the registry, downloading its orders without a restart,
and stops polling a channel deactivated there; a Redis that lost the registry's view gets it back from
``config.channels``; a record holding a secret is refused."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
import yaml
from kafka import KafkaProducer
from pydantic import ValidationError
from typer.testing import CliRunner, Result

from ordersync.channels import Channel, ChannelsFile, load_channels
from ordersync.cli import app
from ordersync.clock import SYSTEM_CLOCK
from ordersync.dev.demo import local_pipeline
from ordersync.errors import ConfigurationError
from ordersync.schemas.events import ChannelConfigured
from ordersync.schemas.topics import CONFIG_CHANNELS
from ordersync.settings import DEFAULT_PREFIX, Settings, get_settings
from ordersync.simulator.testing import TEST_APPLICATION, TEST_SELLER, tiny_scenario
from ordersync.state import keys
from ordersync.state.channel_registry import (
    ChannelRegistry,
    merge,
    read_records,
    read_view,
    save_channel,
)
from tests.factories import CHANNEL, OTHER_CHANNEL, SELLER, write_channels_file
from tests.topics import wait_for

pytestmark = pytest.mark.integration

SECOND = "A2SECONDSELLER"
SECOND_TOKEN = "Atzr|second-seller"


def _second_channel(tmp_path: Path, *, active: bool = True) -> Channel:
    """The second seller's channel, its credentials in files (a registry record names secrets only by
    reference)."""
    secrets = {}
    for name, value in (
        ("client_id", TEST_APPLICATION["client_id"]),
        ("client_secret", TEST_APPLICATION["client_secret"]),
        ("refresh_token", SECOND_TOKEN),
    ):
        path = tmp_path / f"second-{name}"
        path.write_text(value)
        secrets[name] = {"file": str(path)}
    return Channel.model_validate(
        {
            "name": SECOND.lower(),
            "seller_id": SECOND,
            "region": "na",
            "marketplaces": ["A2EUQ1WTGCTBG2"],
            "active": active,
            "credentials": secrets,
        }
    )


def test_a_running_stage_follows_channels_added_and_deactivated_in_the_registry(tmp_path: Path) -> None:
    second = {
        "seller_id": SECOND,
        "region": "na",
        "marketplaces": ["A2EUQ1WTGCTBG2"],
        "applications": [{**TEST_APPLICATION, "refresh_token": SECOND_TOKEN}],
        "catalogue_size": 3,
        "orders": {"count": 4, "history_s": 3600, "arrival_window_s": 0, "pending_share": 0.0},
    }
    scenario = tiny_scenario(
        orders={"count": 3, "history_s": 3600}, extra_sellers=[second], time_scale=60, start=None
    )
    with local_pipeline(
        scenario=scenario,
        run_dir=tmp_path / "run",
        stages=("order-download",),
        backoffice=False,
        file_sellers=(TEST_SELLER,),
        extra_env={"ORDERSYNC_STAGE__CHANNEL_REFRESH_S": "1"},
    ) as pipeline:
        env = pipeline.env
        prefix = env.get("ORDERSYNC_REDIS__KEY_PREFIX", DEFAULT_PREFIX)
        client = redis.Redis.from_url(env["ORDERSYNC_REDIS__URL"], decode_responses=True)
        settings = Settings.model_validate(
            {
                "kafka": {"bootstrap": env["ORDERSYNC_KAFKA__BOOTSTRAP"]},
                "redis": {"url": env["ORDERSYNC_REDIS__URL"], "key_prefix": prefix},
                "channels_file": env["ORDERSYNC_CHANNELS_FILE"],
            }
        )
        base = load_channels(settings.channels_file)
        first = base.channels[0].name

        def task_row(channel: str) -> dict[str, str]:
            return client.hgetall(keys.TASK.key(prefix, "download", channel))  # type: ignore[return-value]

        def downloaded(seller: str) -> int:
            return sum(1 for _ in client.scan_iter(f"{prefix}:downloaded:*{seller}*"))

        wait_for(lambda: "last_run" in task_row(first), what="the file's channel downloaded")
        assert downloaded(SECOND) == 0
        assert task_row(SECOND.lower()) == {}

        async def save(channel: Channel | None, name: str) -> None:
            async with aioredis.Redis.from_url(env["ORDERSYNC_REDIS__URL"]) as writer:
                await save_channel(settings, writer, base, name, channel, clock=SYSTEM_CLOCK, operator="test")

        # Added while the stage runs: its orders come down, no restart.
        asyncio.run(save(_second_channel(tmp_path), SECOND.lower()))
        wait_for(lambda: downloaded(SECOND) >= 4, timeout_s=60, what="the added channel's orders downloaded")

        # The file's channel deactivated in the registry: its polling stops.
        stopped = base.channels[0].model_copy(update={"active": False})
        asyncio.run(save(stopped, first))
        time.sleep(3)  # the change reaches the stage (refresh 1 s), a round in flight ends
        settled = task_row(first)["last_run"]
        second_runs = task_row(SECOND.lower())["last_run"]
        wait_for(
            lambda: task_row(SECOND.lower())["last_run"] != second_runs,
            timeout_s=30,
            what="the added channel polled again",
        )
        time.sleep(2)
        assert task_row(first)["last_run"] == settled, "a deactivated channel was polled"

        # Redis loses the view: the next reader rebuilds it from config.channels, latest per channel.
        client.delete(keys.CHANNEL_REGISTRY.key(prefix), keys.CHANNEL_REGISTRY_REVISION.key(prefix))
        records = read_records(settings)
        assert set(records) == {first, SECOND.lower()}
        assert records[first].channel is not None
        assert records[first].channel.active is False

        async def rebuilt() -> ChannelsFile:
            async with aioredis.Redis.from_url(env["ORDERSYNC_REDIS__URL"]) as reader:
                registry = ChannelRegistry(base, settings=settings, redis=lambda: reader)
                assert await registry.refresh()
                assert registry.sources == {first: "registry", SECOND.lower(): "registry"}
                assert await read_view(reader, prefix) is not None
                return registry.snapshot

        snapshot = asyncio.run(rebuilt())
        assert [c.name for c in snapshot.active()] == [SECOND.lower()]
        client.close()


def test_the_registry_refuses_a_channel_clashing_with_another_or_holding_a_secret(tmp_path: Path) -> None:
    base = ChannelsFile(channels=(_second_channel(tmp_path),))
    inline = _second_channel(tmp_path).model_dump()
    inline["credentials"]["refresh_token"] = {"value": "Atzr|inline"}
    with pytest.raises(ValidationError, match="inline"):
        ChannelConfigured(
            namespace="x", name=SECOND.lower(), channel=Channel.model_validate(inline), revision=1
        )
    clash = _second_channel(tmp_path).model_copy(update={"name": "another-name"})
    with pytest.raises(ConfigurationError, match="one channel per seller and region"):
        merge(
            base,
            {
                "another-name": ChannelConfigured(
                    namespace="x", name="another-name", channel=clash, revision=1
                )
            },
        )


@pytest.fixture
def cli_env(
    *,
    redis_url: str,
    redis_key_prefix: str,
    kafka_bootstrap: str,
    topics: tuple[str, ...],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Path]:
    """The CLI aimed at the session's Redis (this test's prefix) and broker, with the factories' channels
    file (credentials inline, as a test's file has them)."""
    channels_file = write_channels_file(tmp_path / "channels.yaml")
    monkeypatch.setenv("ORDERSYNC_REDIS__URL", redis_url)
    monkeypatch.setenv("ORDERSYNC_REDIS__KEY_PREFIX", redis_key_prefix)
    monkeypatch.setenv("ORDERSYNC_KAFKA__BOOTSTRAP", kafka_bootstrap)
    monkeypatch.setenv("ORDERSYNC_CHANNELS_FILE", str(channels_file))
    get_settings.cache_clear()
    yield channels_file
    get_settings.cache_clear()


def _cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def test_the_channels_commands_list_change_import_and_export_with_exit_codes(
    cli_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    listed = _cli("channels", "list")
    assert listed.exit_code == 0, listed.output
    assert [line.split()[-2:] for line in listed.output.splitlines()] == [["active", "file"]] * 2

    # A file channel deactivated: the registry records it, with "the file's credentials", never them.
    off = _cli("channels", "deactivate", CHANNEL)
    assert off.exit_code == 0, off.output
    listed = _cli("channels", "list").output
    assert f"{CHANNEL} " in listed
    assert "inactive  registry" in listed
    records = read_records(get_settings())
    assert records[CHANNEL].credentials_from_file
    assert "Atzr|refresh" not in records[CHANNEL].model_dump_json()
    assert _cli("channels", "activate", "nowhere").exit_code == 3

    # Import: inline credentials refused (the registry keeps no secret), references taken.
    imported = tmp_path / "more.yaml"
    more = {
        "name": "more-de",
        "seller_id": "A9MORESELLER",
        "region": "eu",
        "marketplaces": ["A1PA6795UKMFR9"],
        "credentials": {
            "client_id": {"env": "MORE_ID"},
            "client_secret": {"env": "MORE_SECRET"},
            "refresh_token": {"value": "Atzr|more-inline"},
        },
    }
    imported.write_text(yaml.safe_dump({"channels": [more]}))
    refused = _cli("channels", "import", str(imported))
    assert refused.exit_code == 2
    assert "inline" in refused.output
    assert "more-de" not in read_records(get_settings())
    # Two channels of one seller: refused, nothing saved.
    clash = {**more, "name": "clash", "seller_id": SELLER, "region": "na"}
    clash["credentials"] = {**more["credentials"], "refresh_token": {"env": "MORE_TOKEN"}}
    imported.write_text(yaml.safe_dump({"channels": [clash]}))
    assert _cli("channels", "import", str(imported)).exit_code == 2
    more["credentials"]["refresh_token"] = {"file": str(tmp_path / "more-token")}
    imported.write_text(yaml.safe_dump({"channels": [more]}))
    taken = _cli("channels", "import", str(imported))
    assert taken.exit_code == 0, taken.output
    assert read_records(get_settings())["more-de"].channel is not None

    exported = yaml.safe_load(_cli("channels", "export").output)
    names = {c["name"]: c for c in exported["channels"]}
    assert set(names) == {CHANNEL, OTHER_CHANNEL, "more-de"}
    assert names[CHANNEL]["active"] is False
    assert names["more-de"]["credentials"]["client_id"] == {"env": "MORE_ID"}

    # Kafka down: nothing changes, exit code 5.
    monkeypatch.setenv("ORDERSYNC_KAFKA__BOOTSTRAP", "127.0.0.1:1")
    get_settings.cache_clear()
    down = _cli("channels", "deactivate", OTHER_CHANNEL)
    assert down.exit_code == 5, down.output
    still = next(line for line in _cli("channels", "list").output.splitlines() if OTHER_CHANNEL in line)
    assert "inactive" not in still


def test_garbage_on_the_registry_topic_is_skipped_by_every_reader(
    *, kafka_bootstrap: str, topics: tuple[str, ...], redis_key_prefix: str
) -> None:
    settings = Settings.model_validate(
        {"kafka": {"bootstrap": kafka_bootstrap}, "redis": {"key_prefix": redis_key_prefix}}
    )
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    key = f"{redis_key_prefix}/{CHANNEL}".encode()
    for value in (b"\x00not json", b'{"event_type": "ChannelConfigured"}', b"[]", None):
        producer.send(CONFIG_CHANNELS.name, key=key, value=value).get(timeout=30)
    producer.close()
    assert read_records(settings) == {}
