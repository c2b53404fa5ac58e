"""The status projection as its own process on the embedded broker and Redis: it folds a recorded run
written to the topics (a record that is not an event is skipped, the stage keeps going), and
``ordersync status-model rebuild`` into another key prefix, reading every topic again from its first
offset, gives exactly the live model; ``orders list|show``, ``export failed`` and ``status`` read it."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kafka import KafkaProducer

from ordersync.dev.devinfra import stop_process_group
from ordersync.redis_client import redis_client
from ordersync.schemas.codec import encode
from ordersync.schemas.topics import SHIPMENTS_CONFIRMED, by_name, order_key
from ordersync.settings import RedisSettings
from ordersync.state.readmodel import OrderFilter, ReadModel, facts_of
from ordersync.state.store import Store
from tests.factories import (
    CHANNEL,
    DEAD_LETTERED,
    IGNORED,
    OK,
    OTHER_CHANNEL,
    PENDING,
    RETRIED,
    WRITEBACK_FAILED,
    recorded_run,
)
from tests.topics import wait_for

pytestmark = pytest.mark.integration

EXPECTED = {
    OK: "Success",
    RETRIED: "Success",
    WRITEBACK_FAILED: "Failed",
    IGNORED: "Ignored",
    DEAD_LETTERED: "Failed",
}


def _channels_file(tmp_path: Path, sellers: dict[str, str]) -> Path:
    secret = {"value": "x"}
    path = tmp_path / "channels.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "channels": [
                    {
                        "name": name,
                        "seller_id": seller,
                        "marketplaces": ["ATVPDKIKX0DER"],
                        "credentials": {
                            "client_id": secret,
                            "client_secret": secret,
                            "refresh_token": secret,
                        },
                    }
                    for name, seller in sellers.items()
                ]
            }
        )
    )
    return path


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ordersync.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def projection(
    ordersync_env: dict[str, str], topics: tuple[str, ...], tmp_path: Path
) -> Iterator[tuple[str, str, dict[str, str]]]:
    seller = f"A{uuid.uuid4().hex[:10].upper()}"
    other = f"A{uuid.uuid4().hex[:10].upper()}"
    channels = _channels_file(tmp_path, {CHANNEL: seller, OTHER_CHANNEL: other})
    env = {
        **ordersync_env,
        "ORDERSYNC_CHANNELS_FILE": str(channels),
        # The recorded run is dated 2026-11-20 and this process prunes by the host's clock: keep its
        # orders whatever day the test runs (the rebuild it is compared with does not prune).
        "ORDERSYNC_STATUS_MODEL__RETENTION_DAYS": "36500",
    }
    with (tmp_path / "stage.log").open("wb") as log:  # the stage writes to its own copy
        process = subprocess.Popen(
            [sys.executable, "-m", "ordersync.cli", "run", "status-projection"],
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield seller, other, env
        assert process.poll() is None, (tmp_path / "stage.log").read_text()[-3000:]
    finally:
        stop_process_group(process.pid, grace_s=10)
        process.wait(timeout=10)


def _model_state(env: dict[str, str], prefix: str) -> dict[str, Any]:
    """Every order of the model (paged through the grid) with its detail, the DLQ sizes, the skips."""

    async def read() -> dict[str, Any]:
        redis = redis_client(RedisSettings(url=env["ORDERSYNC_REDIS__URL"]))
        model = ReadModel(redis, prefix, notify_dlq=False)
        try:
            rows: list[dict[str, Any]] = []
            offset = 0
            while True:
                page = await model.orders(
                    OrderFilter(), sort="amazon_order_id", descending=False, offset=offset, limit=100
                )
                rows += [row.model_dump(mode="json") for row in page.rows]
                offset += 100
                if offset >= page.total:
                    break
            details = {}
            for row in rows:
                detail = await model.order(row["seller_id"], row["amazon_order_id"])
                assert detail is not None
                details[f"{row['seller_id']}:{row['amazon_order_id']}"] = detail.model_dump(mode="json")
            return {
                "rows": rows,
                "details": details,
                "dlq": [size.model_dump(mode="json") for size in await model.dlq_sizes()],
                "skipped": await model.skipped(),
                "counts": await model.counts(),
            }
        finally:
            await redis.aclose()

    return asyncio.run(read())


def _differences(live: dict[str, Any], rebuilt: dict[str, Any]) -> str:
    """What differs between two model states, briefly (the states hold the whole session's orders)."""
    lines = []
    for part in ("dlq", "skipped", "counts"):
        if live[part] != rebuilt[part]:
            lines.append(f"{part}: live {live[part]} != rebuilt {rebuilt[part]}")
    live_rows = {f"{r['seller_id']}:{r['amazon_order_id']}": r for r in live["rows"]}
    rebuilt_rows = {f"{r['seller_id']}:{r['amazon_order_id']}": r for r in rebuilt["rows"]}
    lines.append(f"orders only live: {sorted(live_rows.keys() - rebuilt_rows.keys())[:5]}")
    lines.append(f"orders only rebuilt: {sorted(rebuilt_rows.keys() - live_rows.keys())[:5]}")
    for key in sorted(live_rows.keys() & rebuilt_rows.keys()):
        if live_rows[key] != rebuilt_rows[key] or live["details"][key] != rebuilt["details"][key]:
            fields = [f for f in live_rows[key] if live_rows[key][f] != rebuilt_rows[key].get(f)]
            detail_differs = live["details"][key] != rebuilt["details"][key]
            lines.append(f"{key}: row fields {fields}; detail differs: {detail_differs}")
            if len(lines) > 12:
                break
    return "live model != rebuilt model:\n" + "\n".join(lines)


def test_live_projection_then_rebuild_gives_the_same_model(
    projection: tuple[str, str, dict[str, str]],
) -> None:
    seller, other, env = projection
    prefix = env["ORDERSYNC_REDIS__KEY_PREFIX"]
    producer = KafkaProducer(bootstrap_servers=env["ORDERSYNC_KAFKA__BOOTSTRAP"], acks="all")
    for topic, envelope in recorded_run(seller, other):
        if by_name(topic).key == "channel":
            key = CHANNEL
        else:
            ((target, _),) = facts_of(topic, envelope)
            key = order_key(target.seller_id, target.amazon_order_id)
        producer.send(topic, key=key.encode(), value=encode(envelope))
    # Not an event at all: skipped and counted, the projection keeps going.
    producer.send(SHIPMENTS_CONFIRMED.name, key=f"{seller}:{OK}".encode(), value=b"{not json")
    producer.flush()
    producer.close()

    def folded() -> bool:
        rows = _model_state(env, prefix)["rows"]
        status = {r["amazon_order_id"]: r["status"] for r in rows if r["seller_id"] == seller}
        pending = {r["amazon_order_id"]: r["status"] for r in rows if r["seller_id"] == other}
        return status == EXPECTED and pending == {PENDING: "Pending"}

    wait_for(folded, timeout_s=90)
    wait_for(lambda: _model_state(env, prefix)["skipped"].get(SHIPMENTS_CONFIRMED.name, 0) >= 1, 30)

    # The rebuild reads everything on the topics up to their high watermarks (other tests' records of
    # this session too); once the live projection has caught up with the same records, both agree.
    rebuilt_prefix = f"{prefix}-rebuilt"
    rebuilt = _cli(env, "status-model", "rebuild", "--prefix", rebuilt_prefix)
    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
    assert "orders:" in rebuilt.stdout
    expected = _model_state(env, rebuilt_prefix)
    assert {
        r["amazon_order_id"]: r["status"] for r in expected["rows"] if r["seller_id"] == seller
    } == EXPECTED
    try:
        wait_for(lambda: _model_state(env, prefix) == expected, timeout_s=60)
    except AssertionError:
        raise AssertionError(_differences(_model_state(env, prefix), expected)) from None

    # Rebuilding the live model in place while the projection keeps running gives the same model.
    in_place = _cli(env, "status-model", "rebuild")
    assert in_place.returncode == 0, in_place.stderr[-3000:]
    assert _model_state(env, prefix) == expected

    # The CLI reads the same model.
    listed = _cli(env, "orders", "list", "--status", "failed", "--seller", seller, "--json")
    assert listed.returncode == 0, listed.stderr
    page = json.loads(listed.stdout)
    assert {row["amazon_order_id"] for row in page["rows"]} == {WRITEBACK_FAILED, DEAD_LETTERED}
    assert page["total"] == 2

    shown = _cli(env, "orders", "show", WRITEBACK_FAILED, "--channel", CHANNEL, "--json")
    assert shown.returncode == 0, shown.stderr
    detail = json.loads(shown.stdout)
    if isinstance(detail, list):  # the same order id of another seller folded by an earlier run
        (detail,) = [d for d in detail if d["row"]["seller_id"] == seller]
    assert detail["row"]["error_code"] == "InvalidInput"
    assert detail["shipments"][0]["tracking_number"] == "1Z0000003"
    digits = f"{uuid.uuid4().int:040d}"  # an order id no test of the session used
    never_seen = f"{digits[:3]}-{digits[3:10]}-{digits[10:17]}"
    assert _cli(env, "orders", "show", never_seen).returncode == 3  # unknown (ExitCode.NOT_FOUND)

    exported = _cli(env, "export", "failed", "--since", "2026-01-01", "--stage", "write-back")
    assert exported.returncode == 0, exported.stderr
    rows = [r for r in csv.DictReader(io.StringIO(exported.stdout)) if r["seller_id"] == seller]
    assert [(r["amazon_order_id"], r["tracking_number"], r["attempts"]) for r in rows] == [
        (WRITEBACK_FAILED, "1Z0000003", "5")
    ]

    status = _cli(env, "status")
    assert status.returncode == 0, status.stderr
    assert CHANNEL in status.stdout
    assert "amazon.orders.enriched.dlq" in status.stdout
    # The retention task ran as the stage started (nothing due: the orders are kept a century here).
    assert "0 orders removed" in str(_task(env, prefix, "read-model-retention"))


def _task(env: dict[str, str], prefix: str, name: str) -> dict[str, str]:
    """A task's health as the stage recorded it."""

    async def read() -> dict[str, str]:
        redis = redis_client(RedisSettings(url=env["ORDERSYNC_REDIS__URL"]))
        try:
            return await Store(redis, prefix).task(name, "all")
        finally:
            await redis.aclose()

    return asyncio.run(read())
