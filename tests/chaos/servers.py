"""Servers a chaos test can kill and start again."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from ordersync.dev.devinfra import find_free_port, redis_server_binary, wait_for_port


class AofRedis:
    """A redis-server on a fixed port with an append-only file, which the test can SIGKILL and restart."""

    def __init__(self, work_dir: Path) -> None:
        self.port = find_free_port()
        self.work_dir = work_dir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = [
            redis_server_binary(),
            "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.work_dir),
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
        ]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, start_new_session=True)
        wait_for_port("127.0.0.1", self.port, timeout=30)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
