"""Sending the simulator's ORDER_CHANGE notifications to Amazon SQS, as Amazon does.

:class:`NotificationSender` runs in a thread with its own event loop, so no HTTP handler ever waits on
AWS: it takes the notifications due on the simulated clock from the state, sends each to the queue its
destination's ARN names (``get_queue_url`` with the ARN's queue name and account, in the ARN's region,
through ``aws``' endpoint and credentials) and reports each outcome back. A send that fails (SQS
unreachable, the queue missing) is tried again after a growing pause in real time, for as long as the
simulator runs; nothing the sender meets stops the simulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import threading
import time
from typing import Any, Self

from ordersync.aws import sqs_client
from ordersync.settings import AwsSettings
from ordersync.simulator.notifications import Delivery, parse_sqs_arn
from ordersync.simulator.state import SimulatorState

log = logging.getLogger(__name__)

#: Longest real pause between two looks at the simulated clock (changes fall due as it runs).
POLL_S = 0.2
#: Real seconds before the next try of a failed send, by failures so far (the last one repeats).
RETRY_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
#: One send (queue lookup included) given up after this long, and tried again.
SEND_TIMEOUT_S = 30.0
START_TIMEOUT_S = 10.0
#: How long stop() lets a send in flight finish before cancelling it.
STOP_GRACE_S = 2.0


def describe(exc: BaseException) -> str:
    """A failed send in a line: AWS's error code when it answered, else the exception."""
    response = getattr(exc, "response", None)
    code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
    text = str(exc) or type(exc).__name__
    return f"{code}: {text}" if code else f"{type(exc).__name__}: {text}"


class NotificationSender:
    """Delivers the state's due ORDER_CHANGE notifications to SQS from a background thread::

    sender = NotificationSender(state, Settings().aws).start()
    ...
    sender.stop()
    """

    def __init__(self, state: SimulatorState, aws: AwsSettings, *, poll_s: float = POLL_S) -> None:
        self._state = state
        self._aws = aws
        self._poll_s = poll_s
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Event | None = None
        self._stopping = threading.Event()
        #: Failed sends waiting for their next try: (real monotonic time, tie-break, delivery, failures).
        self._retries: list[tuple[float, int, Delivery, int]] = []
        self._retry_seq = itertools.count()
        self._queue_urls: dict[str, str] = {}
        self._clients: dict[str, Any] = {}
        self._failing = False

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError("already running")
        ready = threading.Event()
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._thread_main, args=(ready,), name="ordersync-simulator-sqs", daemon=True
        )
        self._thread.start()
        if not ready.wait(START_TIMEOUT_S):
            raise RuntimeError("the notification sender did not start")
        self._state.attach_notification_sender(self.wake)
        log.info("ORDER_CHANGE notifications go to SQS (%s)", self._aws.endpoint_url or "AWS")
        return self

    def stop(self) -> None:
        self._state.attach_notification_sender(None)
        self._stopping.set()
        self.wake()
        thread, loop, task = self._thread, self._loop, self._task
        if thread is not None:
            thread.join(timeout=STOP_GRACE_S)
            if thread.is_alive() and loop is not None and task is not None:
                # A send hanging on an unreachable endpoint: the simulator stops anyway.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(task.cancel)
                thread.join(timeout=START_TIMEOUT_S)
        self._thread = None

    def wake(self) -> None:
        """Look at the clock now (from any thread): a notification may have fallen due."""
        loop, event = self._loop, self._wakeup
        if loop is None or event is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(event.set)

    def _thread_main(self, ready: threading.Event) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            asyncio.run(self._main(ready))

    async def _main(self, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._wakeup = asyncio.Event()
        ready.set()
        async with contextlib.AsyncExitStack() as clients:
            while not self._stopping.is_set():
                self._wakeup.clear()
                try:
                    await self._round(clients)
                    wait = self._pause()
                except Exception:  # the sender must outlive anything it meets
                    log.exception("the notification sender failed a round; it goes on")
                    wait = self._poll_s
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wakeup.wait()
        self._loop = None

    async def _round(self, clients: contextlib.AsyncExitStack) -> None:
        now = time.monotonic()
        batch: list[tuple[Delivery, int]] = []
        while self._retries and self._retries[0][0] <= now:
            _, _, delivery, failures = heapq.heappop(self._retries)
            batch.append((delivery, failures))
        batch.extend((delivery, 0) for delivery in self._state.take_due_notifications())
        for delivery, failures in batch:
            if self._stopping.is_set():
                return
            await self._send(clients, delivery, failures)

    def _pause(self) -> float:
        wait = self._poll_s
        if self._retries:
            wait = min(wait, self._retries[0][0] - time.monotonic())
        due = self._state.real_seconds_to_next_notification()
        if due is not None:
            wait = min(wait, due)
        return max(0.0, wait)

    async def _send(self, clients: contextlib.AsyncExitStack, delivery: Delivery, failures: int) -> None:
        try:
            async with asyncio.timeout(SEND_TIMEOUT_S):
                region, account, name = parse_sqs_arn(delivery.arn)
                client = self._clients.get(region)
                if client is None:
                    # The queue's own region: one endpoint serves every region locally, AWS does not.
                    regional = self._aws.model_copy(update={"region": region})
                    client = self._clients[region] = await clients.enter_async_context(sqs_client(regional))
                url = self._queue_urls.get(delivery.arn)
                if url is None:
                    answer = await client.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)
                    url = self._queue_urls[delivery.arn] = str(answer["QueueUrl"])
                await client.send_message(QueueUrl=url, MessageBody=delivery.body)
        except Exception as exc:  # any failure is a failed send, tried again
            self._queue_urls.pop(delivery.arn, None)  # the queue may have been recreated
            error = describe(exc)
            self._state.notification_failed(delivery, error)
            if not self._failing:
                log.warning(
                    "could not send an ORDER_CHANGE notification to %s (%s); retrying", delivery.arn, error
                )
                self._failing = True
            pause = RETRY_S[min(failures, len(RETRY_S) - 1)]
            heapq.heappush(
                self._retries, (time.monotonic() + pause, next(self._retry_seq), delivery, failures + 1)
            )
            return
        if self._failing:
            log.info("ORDER_CHANGE notifications reach SQS again")
            self._failing = False
        self._state.notification_sent(delivery)
