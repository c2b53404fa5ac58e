"""``ordersync amazon check`` against the simulator (typer's CliRunner on the sub-app)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from ordersync.cli.amazon import amazon_app
from ordersync.settings import get_settings
from ordersync.simulator import RunningSimulator, SimulatorState
from ordersync.simulator.testing import (
    TEST_CLIENT_ID,
    TEST_CLIENT_SECRET,
    TEST_REFRESH_TOKEN,
    TEST_SELLER,
    tiny_scenario,
)

pytestmark = pytest.mark.stage

US = "ATVPDKIKX0DER"


@pytest.fixture
def sim() -> Iterator[RunningSimulator]:
    # The wall clock as the simulated start: the check asks for orders of the last hour.
    with RunningSimulator(SimulatorState(tiny_scenario(orders={"count": 3}, start=None))) as running:
        yield running


def channel(
    name: str, orders_api: str, refresh_token: str = TEST_REFRESH_TOKEN, marketplaces: list[str] | None = None
) -> dict[str, object]:
    return {
        "name": name,
        "seller_id": TEST_SELLER,
        "region": "na",
        "marketplaces": marketplaces or [US],
        "orders_api": orders_api,
        "credentials": {
            "client_id": {"value": TEST_CLIENT_ID},
            "client_secret": {"value": TEST_CLIENT_SECRET},
            "refresh_token": {"value": refresh_token},
        },
    }


@pytest.fixture
def configured(sim: RunningSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "channels.yaml"
    # Channels must differ in seller or region: one file per case is simpler.
    monkeypatch.setenv("ORDERSYNC_CHANNELS_FILE", str(path))
    monkeypatch.setenv("ORDERSYNC_AMAZON__ENDPOINT", sim.base_url)
    monkeypatch.setenv("ORDERSYNC_AMAZON__LWA_ENDPOINT", sim.lwa_url)
    get_settings.cache_clear()
    return path


def run(path: Path, spec: dict[str, object], *extra: str) -> tuple[int, str]:
    path.write_text(yaml.safe_dump({"channels": [spec]}))
    get_settings.cache_clear()
    result = CliRunner().invoke(
        amazon_app, ["check", "--channel", str(spec["name"]), "--local-quota", *extra]
    )
    return result.exit_code, result.output


def test_check_reports_auth_region_marketplaces_and_learned_limits(
    configured: Path, sim: RunningSimulator
) -> None:
    code, output = run(configured, channel("acme-v0", "v0"))
    assert code == 0, output
    assert "access token granted" in output
    assert "getOrders: HTTP 200" in output
    assert f"marketplaces {US}: accepted" in output
    assert "learned from Amazon: getOrders 0.0167/s" in output
    assert "enforced getOrders: 0.0167/s, burst 20" in output
    assert sim.state.counters.get(TEST_SELLER, "getOrders").calls == 1  # one call, nothing more

    code, output = run(configured, channel("acme-new", "2026-01-01"), "--json")
    assert code == 0, output
    report = json.loads(output)
    assert report["operation"] == "searchOrders"
    assert report["rate_limits_learned"] == {"searchOrders": "0.0056"}
    assert report["endpoint"] == sim.base_url


def test_check_fails_clearly_on_refused_credentials_and_foreign_marketplaces(configured: Path) -> None:
    code, output = run(configured, channel("bad-token", "v0", refresh_token="Atzr|wrong"))
    assert code == 6  # Amazon refused (ordersync.cli.common.ExitCode)
    assert "refused: invalid_grant" in output
    assert "FAILED" in output
    code, output = run(configured, channel("foreign", "v0", marketplaces=["A2EUQ1WTGCTBG2"]))
    assert code == 6
    assert "InvalidInput" in output
    assert "refused" in output
    code, output = run(
        configured,
        {**channel("x", "v0"), "name": "known"},
    )
    assert code == 0
    result = CliRunner().invoke(amazon_app, ["check", "--channel", "unknown", "--local-quota"])
    assert result.exit_code == 3  # an unknown name (ordersync.cli.common.ExitCode)
