"""Stopping loops whose cancellation a library swallowed.

On Python 3.11, ``asyncio.wait_for`` returns the inner result instead of raising when a cancellation
arrives just as the inner call completes (fixed in 3.12). aiosmtplib waits on every SMTP reply that
way and redis-py on every command sent with a socket timeout, so a periodic loop cancelled at shutdown
could go on for ever. The task still counts the request (``Task.cancelling``), so a loop that checks it
between steps stops as asked.
"""

from __future__ import annotations

import asyncio


def raise_if_cancel_requested() -> None:
    """Raise ``CancelledError`` when this task was asked to stop and the request was swallowed."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


__all__ = ["raise_if_cancel_requested"]
