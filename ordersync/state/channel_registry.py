"""The channel registry: channels added and changed while ordersync runs (the dashboard, ``ordersync
channels``), which every stage follows without a restart.

- **The record** is the compacted topic ``config.channels``: one :class:`ChannelConfigured` per change,
  the channel whole, its credentials by reference only (environment, file, secret store). A change is
  written there first, acknowledged by Kafka, then to Redis.
- **The view** is a Redis hash (channel name -> its latest record) and a revision token changed with it.
  A stage reads the token every ``stage.channel_refresh_s`` and the hash when the token moved; the first
  stage to find the token gone (Redis lost its state) reads the topic again and writes the view back.
- **The channels file** is the installation's base: a channel the registry names replaces the file's
  channel of that name, a channel only the file names stays as the file says. ``ordersync channels
  import`` copies a file into the registry; ``ordersync channels export`` writes the effective set out.
- Records carry the installation's ``namespace`` (its Redis key prefix), so installations sharing one
  cluster never see each other's channels.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Literal, cast

import redis.asyncio as aioredis
from kafka import KafkaProducer
from pydantic import ValidationError

from ordersync.channels import Channel, ChannelsFile, LwaCredentials, SecretRef
from ordersync.clock import Clock
from ordersync.errors import ConfigurationError, InvalidEvent
from ordersync.kafka.admin import bounded_producer_config
from ordersync.kafka.reader import read_topic
from ordersync.logs import EveryInterval, remember_secrets
from ordersync.schemas.codec import decode, encode
from ordersync.schemas.envelope import Envelope
from ordersync.schemas.events import ChannelConfigured
from ordersync.schemas.topics import CONFIG_CHANNELS
from ordersync.settings import Settings
from ordersync.state import keys

log = logging.getLogger(__name__)

#: What a record holding :attr:`ChannelConfigured.credentials_from_file` names instead of credentials.
FROM_FILE = SecretRef(env="ORDERSYNC_CHANNELS_FILE_CREDENTIALS")

ChannelSource = Literal["file", "registry"]

#: Writes each given record whose revision is newer than the one held (a rebuild racing a change keeps
#: the change), then a new revision token: always for a rebuild (ARGV[1] "1": the view is now loaded),
#: only when there is one for a change (a change alone never makes a lost view look loaded).
_APPLY = """
for i = 3, #ARGV, 3 do
  local held = redis.call('HGET', KEYS[1], ARGV[i])
  if (not held) or tonumber(cjson.decode(held)['revision']) < tonumber(ARGV[i + 1]) then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 2])
  end
end
if ARGV[1] == '1' or redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('SET', KEYS[2], ARGV[2])
end
return 1
"""


def record_key(namespace: str, name: str) -> str:
    """The record's Kafka key: one per installation and channel (compaction keeps the latest)."""
    return f"{namespace}/{name}"


def _view_keys(prefix: str) -> tuple[str, str]:
    return keys.CHANNEL_REGISTRY.key(prefix), keys.CHANNEL_REGISTRY_REVISION.key(prefix)


async def apply_records(
    redis: aioredis.Redis, prefix: str, records: Mapping[str, ChannelConfigured], *, loaded: bool
) -> None:
    """Write ``records`` to the view (each only if newer than the one held). ``loaded``: they are the
    whole topic (a rebuild), so the view is complete from now on."""
    args: list[str] = ["1" if loaded else "0", uuid.uuid4().hex]
    for name, record in records.items():
        args += [name, str(record.revision), record.model_dump_json()]
    view, revision = _view_keys(prefix)
    await cast(Awaitable[object], redis.eval(_APPLY, 2, view, revision, *args))


async def read_view(redis: aioredis.Redis, prefix: str) -> tuple[str, dict[str, ChannelConfigured]] | None:
    """The view's revision token and records; None when the view is not loaded (Redis lost it, or it was
    never built). A record that does not validate is left out and logged."""
    view, revision = _view_keys(prefix)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.get(revision)
        pipe.hgetall(view)
        token, raw = await pipe.execute()
    if token is None:
        return None
    records: dict[str, ChannelConfigured] = {}
    for name, value in cast(dict[bytes | str, bytes | str], raw).items():
        key = name.decode() if isinstance(name, bytes) else name
        try:
            records[key] = ChannelConfigured.model_validate_json(value)
        except ValidationError as exc:
            log.error("channel registry: the view's record of %r does not validate, left out: %s", key, exc)
    return (token.decode() if isinstance(token, bytes) else str(token)), records


def read_records(settings: Settings) -> dict[str, ChannelConfigured]:
    """This installation's latest record per channel on ``config.channels`` (blocking: run it in a
    thread). A record that does not decode is skipped: it was never applied."""
    namespace = settings.redis.key_prefix
    latest: dict[str, ChannelConfigured] = {}
    for record in read_topic(
        settings.kafka, CONFIG_CHANNELS.name, skip_missing=True, client_id="channel-registry"
    ):
        try:
            event = decode(record.value, CONFIG_CHANNELS).payload_as(ChannelConfigured)
        except InvalidEvent as exc:
            log.warning("config.channels offset %s: not a channel record, skipped: %s", record.offset, exc)
            continue
        if event.namespace != namespace:
            continue
        known = latest.get(event.name)
        if known is None or known.revision <= event.revision:
            latest[event.name] = event
    return latest


async def rebuild_view(settings: Settings, redis: aioredis.Redis) -> int:
    """The view again from ``config.channels``; returns the records it holds."""
    records = await asyncio.to_thread(read_records, settings)
    await apply_records(redis, settings.redis.key_prefix, records, loaded=True)
    log.warning("channel registry: view rebuilt from config.channels (%d channel records)", len(records))
    return len(records)


def publish_record(settings: Settings, record: ChannelConfigured, *, wait_s: float = 10.0) -> None:
    """``record`` on ``config.channels``; returns once Kafka acknowledged it, raises ``KafkaError`` within
    about ``wait_s`` otherwise. Blocking: run it in a thread."""
    producer = KafkaProducer(
        acks="all", **bounded_producer_config(settings.kafka, wait_s, client_id="channel-registry")
    )
    try:
        seller = record.channel.seller_id if record.channel is not None else "config"
        envelope = Envelope.wrap(record, seller_id=seller, correlation_id=f"channel:{record.name}")
        sent = producer.send(
            CONFIG_CHANNELS.name,
            key=record_key(record.namespace, record.name).encode(),
            value=encode(envelope),
        )
        producer.flush(timeout=wait_s)
        sent.get(timeout=wait_s)
    finally:
        producer.close(timeout=2)


def merge(
    base: ChannelsFile, records: Mapping[str, ChannelConfigured]
) -> tuple[ChannelsFile, dict[str, ChannelSource]]:
    """The effective channels: the file's, each replaced by the registry's of the same name, then the
    registry's others (in name order); with where each comes from. Raises :class:`ConfigurationError`
    naming the problem when the result is not a valid set (two channels of one seller and region)."""
    files = {channel.name: channel for channel in base.channels}
    defined: dict[str, Channel] = {}
    for name, record in records.items():
        if record.channel is None:
            continue
        if record.credentials_from_file:
            if name not in files:
                raise ConfigurationError(
                    f"channel registry: {name} takes its credentials from the channels file, which no"
                    " longer declares it"
                )
            defined[name] = record.channel.model_copy(update={"credentials": files[name].credentials})
        else:
            defined[name] = record.channel
    channels: list[Channel] = []
    sources: dict[str, ChannelSource] = {}
    for channel in base.channels:
        replaced = defined.pop(channel.name, None)
        channels.append(replaced or channel)
        sources[channel.name] = "file" if replaced is None else "registry"
    for name in sorted(defined):
        channels.append(defined[name])
        sources[name] = "registry"
    try:
        return ChannelsFile(channels=tuple(channels)), sources
    except ValidationError as exc:
        problems = "; ".join(err["msg"] for err in exc.errors())
        raise ConfigurationError(f"channel registry: {problems}") from exc


def next_revision(clock: Clock, held: ChannelConfigured | None) -> int:
    """A revision after ``held``'s: the time in microseconds (a double holds it exactly, as Redis's Lua
    reads it), or one more than the last where clocks disagree."""
    now = int(clock.now().timestamp() * 1_000_000)
    return now if held is None else max(now, held.revision + 1)


async def save_channel(
    settings: Settings,
    redis: aioredis.Redis,
    base: ChannelsFile,
    name: str,
    channel: Channel | None,
    *,
    clock: Clock,
    operator: str | None,
    wait_s: float = 10.0,
) -> ChannelConfigured:
    """Add or change channel ``name`` (``channel`` None: the registry's definition taken back). Checked
    against every other channel first (:func:`merge`); then on Kafka (acknowledged), then in the view.
    Kafka down: nothing changes (``KafkaError``)."""
    found = await read_view(redis, settings.redis.key_prefix)
    if found is None:
        await rebuild_view(settings, redis)
        found = await read_view(redis, settings.redis.key_prefix)
    held = found[1].get(name) if found is not None else None
    from_file = next((c for c in base.channels if c.name == name), None)
    keeps_file_credentials = (
        channel is not None and from_file is not None and channel.credentials == from_file.credentials
    )
    if channel is not None and keeps_file_credentials:
        placeholder = LwaCredentials(client_id=FROM_FILE, client_secret=FROM_FILE, refresh_token=FROM_FILE)
        channel = channel.model_copy(update={"credentials": placeholder})
    record = ChannelConfigured(
        namespace=settings.redis.key_prefix,
        name=name,
        channel=channel,
        revision=next_revision(clock, held),
        operator=operator,
        credentials_from_file=keeps_file_credentials,
    )
    records = {**(found[1] if found is not None else {}), name: record}
    merge(base, records)  # refused here, before anything is written
    await asyncio.to_thread(publish_record, settings, record, wait_s=wait_s)
    await apply_records(redis, settings.redis.key_prefix, {name: record}, loaded=False)
    return record


class ChannelRegistry:
    """What one stage process knows of the channels: a snapshot, replaced when the registry changes.

    ``fixed`` (the file's or a test's channels) never changes; a followed one (a stage process) looks
    every ``stage.channel_refresh_s`` (:meth:`follow`) and when a record names a channel it does not know
    (:meth:`refresh`). ``open_secrets`` opens a channel's secret-store references (the channel with its
    secrets in memory); channels without any are taken as they are."""

    def __init__(
        self,
        base: ChannelsFile,
        *,
        settings: Settings | None = None,
        redis: Callable[[], aioredis.Redis] | None = None,
        open_secrets: Callable[[Channel], Awaitable[Channel]] | None = None,
    ) -> None:
        self.base = base
        self._settings = settings
        self._redis = redis
        self._open_secrets = open_secrets
        self.snapshot = base
        self.sources: dict[str, ChannelSource] = {c.name: "file" for c in base.channels}
        self._token: str | None = None
        self._opened: dict[str, tuple[Channel, Channel]] = {}
        self._changed = asyncio.Event()
        self._lock = asyncio.Lock()
        self._listeners: list[Callable[[ChannelsFile], None]] = []
        self._log = EveryInterval()
        #: Set once the registry was read (at once for a fixed one).
        self.loaded = asyncio.Event()
        if not self.follows:
            self.loaded.set()

    @property
    def follows(self) -> bool:
        return self._settings is not None and self._redis is not None

    def on_change(self, listener: Callable[[ChannelsFile], None]) -> None:
        """``listener`` is called with each new snapshot."""
        self._listeners.append(listener)

    def replace(self, channels: ChannelsFile) -> None:
        """Take ``channels`` as the snapshot now (a test's, or the registry's)."""
        self.snapshot = channels
        for listener in self._listeners:
            listener(channels)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def change(self) -> asyncio.Event:
        """Set at the next change of the snapshot (take it before reading the snapshot)."""
        return self._changed

    async def _opened_channel(self, channel: Channel) -> Channel:
        if self._open_secrets is None:
            return channel
        known = self._opened.get(channel.name)
        if known is not None and known[0] == channel:
            return known[1]  # the same definition: its secrets are open already
        opened = await self._open_secrets(channel)
        self._opened[channel.name] = (channel, opened)
        return opened

    async def refresh(self, *, force: bool = False) -> bool:
        """Read the registry (one GET when nothing changed); True when the snapshot changed. ``force``:
        read the view even if the token did not move."""
        settings, redis_of = self._settings, self._redis
        if settings is None or redis_of is None:
            return False
        async with self._lock:
            redis = redis_of()
            prefix = settings.redis.key_prefix
            token = await redis.get(keys.CHANNEL_REGISTRY_REVISION.key(prefix))
            text = None if token is None else (token.decode() if isinstance(token, bytes) else str(token))
            if text is not None and text == self._token and not force:
                return False
            found = await read_view(redis, prefix)
            if found is None:
                await rebuild_view(settings, redis)
                found = await read_view(redis, prefix)
            if found is None:
                return False  # lost again at once: the next look rebuilds it
            token_now, records = found
            channels, sources = merge(self.base, records)
            opened = ChannelsFile(channels=tuple([await self._opened_channel(c) for c in channels.channels]))
            remember_secrets(opened)
            self._token = token_now
            first = not self.loaded.is_set()
            self.loaded.set()
            self.sources = sources
            if opened == self.snapshot:
                return False
            if not first:
                log.warning("channel registry changed: %s", ", ".join(_differences(self.snapshot, opened)))
            self.replace(opened)
            return True

    async def follow(
        self, every_s: float, survive: Callable[[str, Callable[[], Awaitable[object]]], Awaitable[bool]]
    ) -> None:
        """Look every ``every_s`` for as long as the stage runs; an outage or an invalid registry keeps
        the last snapshot (``survive`` reports it)."""
        while True:
            await survive("channel registry", self.refresh)
            await asyncio.sleep(every_s)


def _differences(before: ChannelsFile, after: ChannelsFile) -> list[str]:
    old = {c.name: c for c in before.channels}
    new = {c.name: c for c in after.channels}
    said = [f"{name} added" for name in sorted(new.keys() - old.keys())]
    said += [f"{name} removed" for name in sorted(old.keys() - new.keys())]
    for name in sorted(old.keys() & new.keys()):
        if old[name] != new[name]:
            changed = [
                f for f in type(new[name]).model_fields if getattr(old[name], f) != getattr(new[name], f)
            ]
            said.append(f"{name} changed ({', '.join(changed)})")
    return said


def export_channels(channels: ChannelsFile) -> dict[str, object]:
    """``channels`` as the channels file's YAML holds them (credentials as references, an inline value
    masked)."""
    return {"channels": [json.loads(c.model_dump_json(exclude_defaults=True)) for c in channels.channels]}
