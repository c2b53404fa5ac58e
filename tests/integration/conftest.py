"""The dashboard served by uvicorn for the browser tests: on the test's Redis, with the read model filled
(``filled``, which a module may override), against no broker unless the module's ``dashboard_bootstrap``
names one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ordersync.dashboard import RunningDashboard
from tests.factories import Orders, dashboard_settings, write_channels_file

#: Nothing listens there.
NO_BROKER = "127.0.0.1:1"


@pytest.fixture
def dashboard_bootstrap() -> str:
    return NO_BROKER


@pytest.fixture
def dashboard(
    filled: Orders, redis_url: str, redis_key_prefix: str, dashboard_bootstrap: str, tmp_path: Path
) -> Iterator[RunningDashboard]:
    settings = dashboard_settings(
        redis_url,
        redis_key_prefix,
        write_channels_file(tmp_path / "channels.yaml"),
        kafka_bootstrap=dashboard_bootstrap,
    )
    with RunningDashboard(settings) as running:
        yield running
