"""The Channels page's helpers: a channel's definition as the YAML the page edits (the channels file's
keys, credentials as references), the definition read back and validated by :class:`Channel` exactly as
the file is (every problem named by its field), the credentials an admin types (kept in the secret store
under ``channels/<name>/<field>``, the definition naming them ``{store: ...}``), and a quick look at
whether Kafka listens at all (a TCP connect, never a thread left blocking on a broker that is down).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from typing import Any

import yaml
from pydantic import ValidationError

from ordersync.channels import Channel, ChannelsFile

#: How the page shows a credential the channels file gives inline (pydantic's mask of a SecretStr).
MASKED = "**********"
#: The credentials an admin may type on the page (each goes straight into the secret store).
CREDENTIAL_FIELDS = ("client_id", "client_secret", "refresh_token")
#: The longest definition the page takes.
MAX_YAML = 64 * 1024
#: How long the look at Kafka's listeners waits for a connection.
KAFKA_CONNECT_TIMEOUT_S = 1.5


class ChannelProblems(ValueError):
    """The definition is not a valid channel: every problem, each naming its field."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def secret_name(channel: str, field: str) -> str:
    """Where a credential typed on the page for ``channel`` is kept in the secret store."""
    return f"channels/{channel}/{field}"


def definition(channel: Channel) -> dict[str, Any]:
    """``channel`` as the channels file holds it: its settings other than the defaults (``active``,
    ``region`` and ``orders_api`` always), credentials as references (an inline value masked)."""
    found: dict[str, Any] = json.loads(channel.model_dump_json(exclude_defaults=True))
    shown = {
        "name": channel.name,
        "seller_id": channel.seller_id,
        "region": channel.region,
        "marketplaces": list(channel.marketplaces),
        "active": channel.active,
        "orders_api": channel.orders_api,
    }
    return {**shown, **{k: v for k, v in found.items() if k not in shown}}


def channel_yaml(channel: Channel | Mapping[str, Any]) -> str:
    data = definition(channel) if isinstance(channel, Channel) else dict(channel)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)


def _problems(exc: ValidationError) -> list[str]:
    return [
        f"{'.'.join(str(p) for p in e['loc']) or 'channel'}: {e['msg']}"
        for e in exc.errors(include_url=False)
    ]


def read_mapping(text: str) -> dict[str, Any]:
    """The YAML's mapping, or :class:`ChannelProblems`."""
    if len(text) > MAX_YAML:
        raise ChannelProblems([f"yaml: longer than {MAX_YAML} characters"])
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise ChannelProblems([f"yaml: {where}{getattr(exc, 'problem', None) or exc}"]) from None
    if not isinstance(data, dict):
        raise ChannelProblems(["yaml: give the channel as a mapping (name, seller_id, region, ...)"])
    return data


def keeps_file_credentials(channel: Channel, in_file: Channel | None) -> bool:
    """Whether ``channel`` takes its credentials unchanged from the channels file's channel (the registry
    then records that, never the values, which the file may hold inline)."""
    return in_file is not None and channel.credentials == in_file.credentials


def parse_definition(
    name: str, text: str, typed: Mapping[str, str], in_file: Channel | None = None
) -> Channel:
    """Channel ``name`` from the page's YAML, with the credentials typed on the page (``typed``: field ->
    value; only the non-empty ones) named by their secret store references. A credential shown masked
    (the channels file's inline value, ``in_file``) stays the file's. Refused (every problem): not YAML,
    another name, anything :class:`Channel` refuses, a credential given inline."""
    data = read_mapping(text)
    given = data.setdefault("name", name)
    if given != name:
        raise ChannelProblems([f"name: the definition names {given!r}, not {name!r}"])
    if typed:
        credentials = data.get("credentials")
        credentials = dict(credentials) if isinstance(credentials, dict) else {}
        for field in typed:
            credentials[field] = {"store": secret_name(name, field)}
        data["credentials"] = credentials
    try:
        channel = Channel.model_validate(data)
    except ValidationError as exc:
        raise ChannelProblems(_problems(exc)) from None
    if in_file is not None:
        masked = {
            field: getattr(in_file.credentials, field)
            for field in channel.inline_secrets()
            if getattr(channel.credentials, field).value.get_secret_value() == MASKED
            and field in in_file.inline_secrets()
        }
        if masked:
            channel = channel.model_copy(
                update={"credentials": channel.credentials.model_copy(update=masked)}
            )
    inline = [] if keeps_file_credentials(channel, in_file) else channel.inline_secrets()
    if inline:
        raise ChannelProblems(
            [
                f"credentials.{field}: given inline; the registry keeps no secret: name it by env, file or"
                " store, or type it in the credential fields (kept in the secret store)"
                for field in inline
            ]
        )
    return channel


def with_channel(channels: ChannelsFile, name: str, channel: Channel | None) -> list[str]:
    """The problems of ``channels`` with ``name`` replaced by ``channel`` (two channels of one seller
    and region ...): checked before anything is stored."""
    others = [c for c in channels.channels if c.name != name]
    try:
        ChannelsFile(channels=(*others, *([channel] if channel is not None else [])))
    except ValidationError as exc:
        return [e["msg"] for e in exc.errors(include_url=False)]
    return []


def with_marketplaces(text: str | None, fallback: Channel, marketplaces: list[str]) -> str:
    """The definition (the page's YAML when it reads as a mapping, else ``fallback``'s) with
    ``marketplaces`` in it."""
    data: dict[str, Any] | None = None
    if text:
        with contextlib.suppress(ChannelProblems):
            data = read_mapping(text)
    if data is None:
        data = definition(fallback)
    data["marketplaces"] = list(marketplaces)
    return channel_yaml(data)


async def kafka_listens(bootstrap: str, timeout_s: float = KAFKA_CONNECT_TIMEOUT_S) -> bool:
    """Whether one of the bootstrap servers takes a TCP connection (not that Kafka answers): a broker
    that is down is told at once, never by a client blocking a thread for its bootstrap timeout."""
    for server in (s.strip().split("://")[-1] for s in bootstrap.split(",")):
        host, _, port = server.rpartition(":")
        if not host or not port.isdigit():
            continue
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(host.strip("[]"), int(port)), timeout=timeout_s
            )
        except (OSError, TimeoutError):
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True
    return False
