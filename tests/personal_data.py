"""What the tests of buyers' personal data share: the personal strings the simulator gave out, and the
text of every topic (from offset 0), every Redis key and every process log of a local pipeline, to look
for them in the clear."""

from __future__ import annotations

from pathlib import Path

import redis

from ordersync.dev.demo import LocalPipeline
from ordersync.kafka.reader import TopicReader
from ordersync.schemas.topics import CATALOGUE


def personal_strings(pipeline: LocalPipeline) -> set[str]:
    """What of each order the simulator would show only to an application with the roles."""
    assert pipeline.simulator is not None
    found: set[str] = set()
    for order in pipeline.simulator.state.book.orders.values():
        found |= {order.buyer_name, order.buyer_email}
        if order.address is not None:
            address = order.address
            found |= {address.name, address.line1, address.postal_code, address.phone}
            if address.line2:
                found.add(address.line2)
    return {value for value in found if value and len(value) >= 5}


def topic_text(bootstrap: str) -> str:
    """Every record value of every catalogue topic, from offset 0 up to its end."""
    parts: list[str] = []
    for spec in CATALOGUE:
        with TopicReader(bootstrap, spec.name, skip_missing=True) as reader:
            parts.extend(r.value.decode("utf-8", "replace") for r in reader.records() if r.value)
    return "\n".join(parts)


def redis_text(url: str) -> str:
    """Every value of every Redis key, whatever its type."""
    client = redis.Redis.from_url(url)
    parts: list[str] = []
    try:
        for key in client.scan_iter(count=1000):
            kind = client.type(key)
            if kind == b"string":
                parts.append(repr(client.get(key)))
            elif kind == b"hash":
                parts.append(repr(client.hgetall(key)))
            elif kind == b"list":
                parts.append(repr(client.lrange(key, 0, -1)))
            elif kind == b"set":
                parts.append(repr(client.smembers(key)))
            elif kind == b"zset":
                parts.append(repr(client.zrange(key, 0, -1)))
            elif kind == b"stream":
                parts.append(repr(client.xrange(key)))
    finally:
        client.close()
    return "\n".join(parts)


def log_text(run_dir: Path) -> str:
    """Every process log of the local pipeline run in ``run_dir``."""
    return "\n".join(path.read_text(errors="replace") for path in run_dir.glob("*.log"))


def leaked(personal: set[str], text: str) -> list[str]:
    """The personal strings ``text`` holds in the clear."""
    return sorted(value for value in personal if value in text)
