"""``ordersync channels``: the channels every stage follows (:mod:`ordersync.state.channel_registry`):
list them, activate or deactivate one, import a channels file into the registry, export the effective
set as a channels file.

A change goes to ``config.channels`` first (acknowledged by Kafka), then to Redis's view; every stage
follows it within ``stage.channel_refresh_s``, without a restart. A registry record never holds a
secret: ``import`` refuses a channel whose credentials are given inline unless ``--to-secret-store``
moves them into the secret store (``channels/<name>/<field>``) and names them there.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
import yaml

from ordersync.cli.common import ExitCode, cli_actor, cli_redis, effective_channels, fail
from ordersync.settings import Settings, get_settings

if TYPE_CHECKING:
    from ordersync.channels import Channel

channels_app = typer.Typer(
    help="The channels every stage follows: list, activate, deactivate, import, export.",
    no_args_is_help=True,
)

#: How long a change waits for Kafka's acknowledgement.
KAFKA_WAIT_S = 10.0


@channels_app.callback()
def _group() -> None:
    """The channels: the channels file's, and the channel registry's (the dashboard's Channels page)."""


def _sources(settings: Settings) -> dict[str, str]:
    from ordersync.state.channel_registry import read_view

    async def view() -> dict[str, str]:
        client = cli_redis(settings)
        try:
            found = await read_view(client, settings.redis.key_prefix)
        finally:
            await client.aclose()
        return {name: "registry" for name in (found[1] if found is not None else {})}

    return asyncio.run(view())


@channels_app.command("list")
def list_channels() -> None:
    """Every channel: seller, region, marketplaces, whether active, and where it is defined."""
    settings = get_settings()
    channels = effective_channels(settings)
    sources = _sources(settings)
    if not channels.channels:
        typer.echo("no channel: add one on the dashboard's Channels page or with `ordersync channels import`")
        return
    for channel in channels.channels:
        typer.echo(
            f"{channel.name:<24} {channel.seller_id:<16} {channel.region:<3}"
            f" {','.join(channel.marketplaces):<32} {'active' if channel.active else 'inactive':<9}"
            f" {sources.get(channel.name, 'file')}"
        )


def _save(settings: Settings, channel: Channel, operator: str) -> None:
    from ordersync.channels import ChannelsFile, load_channels
    from ordersync.clock import SYSTEM_CLOCK
    from ordersync.state.channel_registry import save_channel

    base = (
        load_channels(settings.channels_file)
        if settings.channels_file.exists()
        else ChannelsFile(channels=())
    )

    async def save() -> None:
        client = cli_redis(settings)
        try:
            await save_channel(
                settings,
                client,
                base,
                channel.name,
                channel,
                clock=SYSTEM_CLOCK,
                operator=operator,
                wait_s=KAFKA_WAIT_S,
            )
        finally:
            await client.aclose()

    asyncio.run(save())


def _set_active(name: str, active: bool) -> None:
    from ordersync.errors import UnknownChannel

    settings = get_settings()
    try:
        channel = effective_channels(settings).by_name(name)
    except UnknownChannel as exc:
        raise fail(ExitCode.NOT_FOUND, str(exc)) from exc
    _save(settings, channel.model_copy(update={"active": active}), cli_actor())
    typer.echo(f"{name}: {'activated' if active else 'deactivated'}; every stage follows within seconds")


_Name = Annotated[str, typer.Argument(help="The channel's name.", show_default=False)]


@channels_app.command("activate")
def activate(name: _Name) -> None:
    """Activate a channel: its orders are downloaded, its stock and shipments sent."""
    _set_active(name, True)


@channels_app.command("deactivate")
def deactivate(name: _Name) -> None:
    """Deactivate a channel: nothing of it runs until it is activated again (its data is kept)."""
    _set_active(name, False)


async def _to_store(settings: Settings, channel: Channel) -> Channel:
    """``channel`` with its inline credentials moved into the secret store."""
    from ordersync.channels import SecretRef
    from ordersync.secret_store import open_secret_store

    inline = channel.inline_secrets()
    if not inline:
        return channel
    moved = {}
    async with AsyncExitStack() as stack:
        store = await open_secret_store(settings, stack)
        for field in inline:
            ref = getattr(channel.credentials, field)
            name = f"channels/{channel.name}/{field}"
            await store.put(name, ref.value)
            moved[field] = SecretRef(store=name)
    return channel.model_copy(update={"credentials": channel.credentials.model_copy(update=moved)})


@channels_app.command("import")
def import_channels(
    path: Annotated[Path, typer.Argument(help="A channels file (YAML, the channels file's format).")],
    to_secret_store: Annotated[
        bool,
        typer.Option(
            "--to-secret-store",
            help="Move credentials given inline into the secret store (channels/<name>/<field>).",
        ),
    ] = False,
) -> None:
    """Add or replace every channel of a channels file in the registry (validated as the file is, with
    every other channel); none is written unless all are valid."""
    from pydantic import ValidationError

    from ordersync.channels import ChannelsFile, load_channels
    from ordersync.errors import ConfigurationError

    settings = get_settings()
    try:
        found = load_channels(path)
    except ConfigurationError as exc:
        raise fail(ExitCode.USAGE, str(exc)) from exc
    if not to_secret_store:
        inline = [f"{c.name}: {', '.join(c.inline_secrets())}" for c in found.channels if c.inline_secrets()]
        if inline:
            raise fail(
                ExitCode.USAGE,
                f"credentials given inline ({'; '.join(inline)}): the registry keeps no secret; name them"
                " by env, file or store, or give --to-secret-store",
            )
    # All checked together with the other channels before anything is written: one invalid, none saved.
    current = effective_channels(settings)
    imported = {c.name: c for c in found.channels}
    together = [imported.pop(c.name, c) for c in current.channels] + list(imported.values())
    try:
        ChannelsFile(channels=tuple(together))
    except ValidationError as exc:
        problems = "; ".join(str(e["msg"]) for e in exc.errors())
        raise fail(ExitCode.USAGE, f"{path}: {problems}") from exc
    operator = cli_actor()
    for given in found.channels:
        channel = asyncio.run(_to_store(settings, given)) if to_secret_store else given
        _save(settings, channel, operator)
        typer.echo(f"{channel.name}: saved in the channel registry")


@channels_app.command("export")
def export_channels(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of standard output.")
    ] = None,
) -> None:
    """The effective channels (the file's and the registry's) as a channels file: credentials as
    references, a value the file gives inline masked."""
    from ordersync.state.channel_registry import export_channels as exported

    text = yaml.safe_dump(exported(effective_channels(get_settings())), sort_keys=False, allow_unicode=True)
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text)
        typer.echo(f"written: {output}")


__all__ = ["channels_app"]
