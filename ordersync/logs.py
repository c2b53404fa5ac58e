"""Logging for every ordersync process: plain or JSON lines, secrets never printed.

Settings hold secrets as ``SecretStr`` (they format as ``**********``); nothing here formats a secret
value, and the JSON formatter only emits the message, level, logger, time, explicit ``extra`` keys and
the record being processed (:func:`log_context`: stage, topic, partition, offset, key, seller_id,
order_id), so every line a stage logs while handling one record names the order. Both formatters also
mask what looks like a credential in a message or a traceback (LWA tokens, ``client_secret=...``,
a password in a URL), in case an exception quotes one.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from pydantic import BaseModel, SecretStr

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}

#: What the current task is processing; set by StageRuntime.process for one record.
_CONTEXT: ContextVar[Mapping[str, object]] = ContextVar("ordersync_log_context", default=MappingProxyType({}))

MASK = "**********"
_SECRET_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # LWA access and refresh tokens (Atza|..., Atzr|...).
    (re.compile(r"Atz[a-z]\|[A-Za-z0-9_\-+/=|.%]+"), MASK),
    # key=value and "key": "value" forms of credential fields.
    (
        re.compile(
            r"""(?i)((?:client_secret|refresh_token|access_token|x-amz-access-token|restrictedDataToken"""
            r"""|password|passwd|authorization|api[_-]?key|secret_key)["']?\s*[:=]\s*["']?)([^\s"'&,;}]+)"""
        ),
        r"\1" + MASK,
    ),
    # user:password@ in URLs (redis://, kafka SASL...).
    (re.compile(r"(?i)([a-z][a-z0-9+.\-]*://[^/\s:@]*:)([^@\s/]+)(@)"), r"\1" + MASK + r"\3"),
)


#: The values of every secret this process was configured with (:func:`remember_secrets`).
_REMEMBERED: set[str] = set()
#: Shorter values are not remembered: masking them would mask ordinary words.
_MIN_REMEMBERED = 8


def remember_secrets(*sources: object) -> None:
    """Mask the value of every ``SecretStr`` inside ``sources`` (settings, the channels file) in every
    log line from now on, whatever a message calls it: a token pasted into a URL's query string, an
    exception quoting a request, a header dumped by a library."""
    stack: list[object] = list(sources)
    while stack:
        item = stack.pop()
        if isinstance(item, SecretStr):
            value = item.get_secret_value()
            if len(value) >= _MIN_REMEMBERED:
                _REMEMBERED.add(value)
        elif isinstance(item, BaseModel):
            stack.extend(getattr(item, name) for name in type(item).model_fields)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend(item)


def redact(text: str) -> str:
    """``text`` with every remembered secret and anything that looks like a credential masked."""
    for value in _REMEMBERED:
        if value in text:
            text = text.replace(value, MASK)
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def current_log_context() -> Mapping[str, object]:
    return _CONTEXT.get()


@contextmanager
def log_context(**fields: object) -> Iterator[None]:
    """Every line logged inside (in this task) carries ``fields`` (None values are left out)."""
    token = _CONTEXT.set({**_CONTEXT.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def bind_log_context(**fields: object) -> None:
    """Add fields to the current ``log_context`` (e.g. the order id once the record is decoded)."""
    _CONTEXT.set({**_CONTEXT.get(), **{k: v for k, v in fields.items() if v is not None}})


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        entry.update(_CONTEXT.get())
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return redact(json.dumps(entry, default=str))


class PlainFormatter(logging.Formatter):
    """Human lines, with the record being processed appended and credentials masked."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = _CONTEXT.get()
        if context:
            line += " [" + " ".join(f"{k}={v}" for k, v in context.items()) + "]"
        return redact(line)


def logging_config(level: str = "INFO", *, json_lines: bool = False) -> dict[str, Any]:
    """The same setup as :func:`configure_logging`, as a ``logging.config.dictConfig`` (the faust
    worker applies its ``logging_config`` when it starts, replacing its own colour handlers)."""
    formatter = "ordersync.logs.JsonFormatter" if json_lines else "ordersync.logs.PlainFormatter"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"ordersync": {"()": formatter}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "ordersync",
            }
        },
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {"httpx": {"level": "WARNING"}},
    }


def configure_logging(level: str = "INFO", *, json_lines: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else PlainFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Per-request lines from the HTTP client would drown the pipeline's own.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    handler.addFilter(RepeatedClientLines())


class RepeatedClientLines(logging.Filter):
    """The Kafka clients log every failed reconnect (about 57 error lines a second per stage while the
    broker is away): each such line (logger and message template) passes once a minute, with the
    number held back since. ordersync's own lines are not touched."""

    NOISY = ("aiokafka", "kafka", "faust.transport", "mode")

    def __init__(self, interval_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._every = EveryInterval(interval_s, clock)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or not record.name.startswith(self.NOISY):
            return True
        held = self._every.due(f"{record.name}:{record.msg}")
        if held is None:
            return False
        if held:
            record.msg = f"{record.msg} ({held} more like this held back)"
        return True


class EveryInterval:
    """Lets a repeated log line through once per ``interval_s`` per key and counts what it held back,
    so a stage that cannot reach Redis or the broker says so once a minute, not 50 times a second."""

    def __init__(self, interval_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def due(self, key: str) -> int | None:
        """None while ``key`` was logged less than ``interval_s`` ago (one more held back); otherwise
        how many were held back since, and the interval starts again."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            self._held[key] = self._held.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._held.pop(key, 0)

    def forget(self, key: str) -> None:
        self._last.pop(key, None)
        self._held.pop(key, None)
