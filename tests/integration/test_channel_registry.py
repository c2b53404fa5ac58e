"""The channel registry through the real path: a running order-download stage (its own process, on the
embedded broker) picks up a channel added to the registry, downloading its orders without a restart,
and stops polling a channel deactivated there; a Redis that lost the registry's view gets it back from
``config.channels``; a record holding a secret is refused."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from pydantic import ValidationError

from ordersync.channels import Channel, ChannelsFile, load_channels
from ordersync.clock import SYSTEM_CLOCK
from ordersync.dev.demo import local_pipeline
from ordersync.errors import ConfigurationError
from ordersync.schemas.events import ChannelConfigured
from ordersync.settings import DEFAULT_PREFIX, Settings
from ordersync.simulator.testing import TEST_APPLICATION, TEST_SELLER, tiny_scenario
from ordersync.state import keys
from ordersync.state.channel_registry import (
    ChannelRegistry,
    merge,
    read_records,
    read_view,
    save_channel,
)
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
