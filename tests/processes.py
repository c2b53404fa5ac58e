"""Stage processes for the chaos and integration tests: a channels file, a stage started as the user
starts it (``ordersync run STAGE``), its readiness, and the sales orders it needs in Redis."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import httpx
import yaml

from ordersync.redis_client import redis_client
from ordersync.schemas.events import SalesOrder
from ordersync.settings import RedisSettings
from ordersync.state.store import Store


def write_channels(path: Path, name: str, seller_id: str) -> Path:
    """A channels file of one channel (placeholder credentials: nothing here reaches Amazon)."""
    secret = {"value": "x"}
    channel = {
        "name": name,
        "seller_id": seller_id,
        "marketplaces": ["ATVPDKIKX0DER"],
        "credentials": {"client_id": secret, "client_secret": secret, "refresh_token": secret},
    }
    path.write_text(yaml.safe_dump({"channels": [channel]}))
    return path


def start_stage(stage: str, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """``ordersync run STAGE`` in its own process group, its output in ``log_path``."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "ordersync.cli", "run", stage],
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def ready(port: int) -> bool:
    """Whether the stage serving ``/readyz`` on ``port`` says it is ready."""
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def store_sales_orders(redis_url: str, prefix: str, orders: Iterable[SalesOrder]) -> None:
    """Put imported sales orders into Redis, as the import stage would have, for a stage to invoice."""

    async def save() -> None:
        redis = redis_client(RedisSettings(url=redis_url))
        try:
            store = Store(redis, prefix)
            for order in orders:
                await store.save_sales_order(order)
        finally:
            await redis.aclose()

    asyncio.run(save())
