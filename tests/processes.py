"""Stage processes for the chaos and integration tests: a channels file, a stage started as the user
starts it (``ordersync run STAGE``), and its readiness."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import yaml


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
