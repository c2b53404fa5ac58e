"""Task schedules, their next run, and "Synchronize now".

A stage's periodic task (a channel's download round, its inventory feed, its write-back feeds) pauses
between rounds with :meth:`Wakeups.pause`, which records in the task's health hash how often it runs
(``every_s``) and when it runs next (``next_run``, on the stage's clock), so the dashboard and
``ordersync tasks list`` show the schedule.

An operator asks for a run now with a :class:`~ordersync.schemas.events.TaskRunRequested` event on
``ops.task-requests`` (the CLI and the dashboard: :func:`publish_task_request`): the record, kept in Kafka
like every operator command. The stage that owns the task consumes it (:func:`handle_task_request`),
notes the request in the task's health (``run_requested_at``/``_by``) and publishes a wake-up on the
Redis channel ``TASK_WAKEUPS``; every worker of the stage listens (:meth:`Wakeups.listen`) and the one whose
loop pauses for that task and scope runs at once. A worker that does not hold the channel's lease wakes
too and finds nothing to do: the lease keeps the run single. A wake-up lost with Redis costs nothing but
the early run: the task still runs on its schedule.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import redis.asyncio as aioredis
from kafka import KafkaProducer
from pydantic import ValidationError

from ordersync.channels import load_channels
from ordersync.clock import Clock
from ordersync.errors import ConfigurationError, Permanent
from ordersync.kafka.admin import bounded_producer_config
from ordersync.schemas.codec import encode
from ordersync.schemas.envelope import Envelope, Event
from ordersync.schemas.events import TaskRunRequested
from ordersync.schemas.topics import OPS_TASK_REQUESTS
from ordersync.settings import Settings
from ordersync.state import keys

log = logging.getLogger(__name__)

#: Every task scope of a task that runs once for all channels.
ALL_CHANNELS = "all"


@dataclass(frozen=True)
class SchedulableTask:
    """A periodic task an operator may run now: its name (as task health names it), the stage that runs
    it, what it does, and whether it runs per channel (else once for every channel)."""

    name: str
    stage: str
    title: str
    per_channel: bool = True
    #: Feed families whose flush pacing a run now skips once for the channel's seller (the feed goes at
    #: once, still under the shared createFeed quota).
    flush_families: tuple[str, ...] = ()

    def scope(self, channel: str) -> str:
        return channel if self.per_channel else ALL_CHANNELS


#: The tasks "Synchronize now" can start, by name.
SCHEDULABLE: Mapping[str, SchedulableTask] = {
    task.name: task
    for task in (
        SchedulableTask("download", "order-download", "download new and changed orders (getOrders)"),
        SchedulableTask(
            "inventory", "inventory", "send pending stock levels (inventory feed)", flush_families=("inv",)
        ),
        SchedulableTask(
            "inventory-urgent", "inventory", "send stock levels that fell to zero (patchListingsItem)"
        ),
        SchedulableTask(
            "write-back",
            "shipment-write-back",
            "send pending shipment confirmations and cancellations, check feeds in flight",
            flush_families=("wb",),
        ),
    )
}


def tasks_of(stage: str) -> tuple[str, ...]:
    return tuple(name for name, task in SCHEDULABLE.items() if task.stage == stage)


def every(seconds: float | None) -> str:
    """``90`` -> ``1m 30s``: a schedule as people read it."""
    if seconds is None:
        return ""
    whole = round(seconds)
    if whole < 60:
        return f"{seconds:g}s"
    minutes, rest = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m {rest}s" if rest else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes}m" if minutes else f"{hours}h"


class TaskRequestRejected(Permanent):
    """The request names no schedulable task or no configured channel; nothing was sent."""


def build_task_request(
    settings: Settings, task: str, channel: str, operator: str | None
) -> Envelope[TaskRunRequested]:
    if task not in SCHEDULABLE:
        raise TaskRequestRejected(f"unknown task {task!r}; tasks that can run now: {', '.join(SCHEDULABLE)}")
    try:
        found = load_channels(settings.channels_file).by_name(channel)
        event = TaskRunRequested(task=task, channel=channel, operator=operator or getpass.getuser())
    except (ConfigurationError, ValidationError) as exc:
        raise TaskRequestRejected(str(exc)) from exc
    if not found.active:
        raise TaskRequestRejected(f"channel {channel!r} is not active: its tasks do not run")
    return Envelope.wrap(event, seller_id=found.seller_id, correlation_id=f"run-now:{task}:{channel}")


def publish_task_request(
    settings: Settings,
    task: str,
    channel: str,
    *,
    operator: str | None = None,
    wait_s: float = 10.0,
    client_id: str = "ordersync",
) -> str:
    """Validate and publish one request; returns its event id once Kafka has acknowledged it. Kafka down:
    ``KafkaError`` within about ``wait_s`` (an operator waits for the answer)."""
    envelope = build_task_request(settings, task, channel, operator)
    producer = KafkaProducer(
        acks="all", **bounded_producer_config(settings.kafka, wait_s, client_id=client_id)
    )
    try:
        producer.send(OPS_TASK_REQUESTS.name, key=channel.encode(), value=encode(envelope)).get(
            timeout=wait_s
        )
    finally:
        producer.close(timeout=2)
    return str(envelope.event_id)


def _iso(value: datetime) -> str:
    # As Store.record_task writes its times (fixed width, UTC).
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Wakeups:
    """One worker's paused tasks and the wake-ups that end a pause early.

    ``time_scale``: how many of the clock's seconds pass in one wall second (the simulator may run
    faster than real time), so ``next_run`` is on the same clock as the task's ``last_run``."""

    def __init__(self, redis: aioredis.Redis, prefix: str, clock: Clock, time_scale: float = 1.0) -> None:
        self.redis = redis
        self.prefix = prefix
        self.clock = clock
        self.time_scale = time_scale
        self.channel = keys.TASK_WAKEUPS.key(prefix)
        self._events: dict[tuple[str, str], asyncio.Event] = {}

    def _event(self, task: str, scope: str) -> asyncio.Event:
        return self._events.setdefault((task, scope), asyncio.Event())

    async def pause(self, task: str, scope: str, seconds: float) -> bool:
        """Wait ``seconds`` (wall) before the task's next run, or less when a run is asked for; the
        schedule is recorded first. True when woken early. Redis down: the pause still happens."""
        event = self._event(task, scope)
        next_run = self.clock.now() + timedelta(seconds=seconds * self.time_scale)
        try:
            # With the index the tasks page lists from: a task that records no result of its own (the
            # write-back tick) still shows its schedule.
            pipe = self.redis.pipeline(transaction=False)
            pipe.hset(
                keys.TASK.key(self.prefix, task, scope),
                mapping={"every_s": f"{seconds * self.time_scale:g}", "next_run": _iso(next_run)},
            )
            pipe.sadd(keys.TASKS.key(self.prefix), json.dumps([task, scope]))
            await pipe.execute()
        except (aioredis.RedisError, OSError) as exc:  # the schedule is for people; the run goes on
            log.debug("%s %s: schedule not recorded: %s", task, scope, exc)
        if event.is_set():
            event.clear()
            return True
        try:
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation.
            async with asyncio.timeout(max(0.0, seconds)):
                await event.wait()
        except TimeoutError:
            return False
        event.clear()
        return True

    def wake(self, task: str, scope: str) -> None:
        """End the pause of ``task`` for ``scope`` in this worker (or the next one, if it runs now)."""
        self._event(task, scope).set()

    async def request(self, task: str, scope: str, *, by: str, at: datetime) -> int:
        """Note the request in the task's health and wake every worker listening; returns how many
        workers heard it."""
        await self.redis.hset(
            keys.TASK.key(self.prefix, task, scope),
            mapping={"run_requested_at": _iso(at), "run_requested_by": by},
        )
        heard: int = await self.redis.publish(self.channel, json.dumps([task, scope]))
        return heard

    async def listen(self, *, reconnect_s: float = 1.0) -> None:
        """Wake this worker's pauses on every request published, forever; Redis lost: subscribe again."""
        while True:
            try:
                async with self.redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self.channel)
                    async for message in pubsub.listen():
                        self._on_message(message)
            except (aioredis.RedisError, OSError) as exc:
                log.warning("task wake-ups: Redis subscription lost (%s); subscribing again", exc)
            await asyncio.sleep(reconnect_s)

    def _on_message(self, message: Mapping[str, object]) -> None:
        data = message.get("data")
        try:
            task, scope = json.loads(data if isinstance(data, str | bytes) else "")
        except (ValueError, TypeError):
            log.warning("task wake-ups: unreadable message ignored")
            return
        if isinstance(task, str) and isinstance(scope, str):
            self.wake(task, scope)


def owned_task(stage: str, envelope: Envelope[Event]) -> tuple[SchedulableTask, TaskRunRequested] | None:
    """The task a request names, when ``stage`` runs it (a task of another stage is that stage's; a name
    no release knows is logged and left)."""
    request = envelope.payload_as(TaskRunRequested)
    task = SCHEDULABLE.get(request.task)
    if task is None:
        unknown = request.task
        log.warning(
            "run-now request %s names a task this release does not know: %r", envelope.event_id, unknown
        )
        return None
    return (task, request) if task.stage == stage else None


__all__ = [
    "ALL_CHANNELS",
    "SCHEDULABLE",
    "SchedulableTask",
    "TaskRequestRejected",
    "Wakeups",
    "build_task_request",
    "every",
    "owned_task",
    "publish_task_request",
    "tasks_of",
]
