"""Fixtures of the third-party tier (python-amazon-sp-api against the simulator): see harness.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ordersync.simulator.state import SimulatorState
from tests.thirdparty.harness import HttpsSimulator, Tls, client_kwargs_for, make_tls, thirdparty_scenario


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def sim(tls: Tls, monkeypatch: pytest.MonkeyPatch) -> Iterator[HttpsSimulator]:
    """The simulator on loopback over HTTPS. At teardown, every SP-API response it sent must conform
    to Amazon's models."""
    # The library's document upload/download clients take their trust from the environment only.
    monkeypatch.setenv("SSL_CERT_FILE", str(tls.ca_bundle))
    # The library would replace any marketplace given to a client by this one.
    monkeypatch.delenv("SP_API_DEFAULT_MARKETPLACE", raising=False)
    with HttpsSimulator(SimulatorState(thirdparty_scenario()), tls) as running:
        yield running
        running.assert_conforms()


@pytest.fixture
def client_kwargs(sim: HttpsSimulator) -> dict[str, Any]:
    """Keyword arguments for any of the library's clients, aimed at ``sim``."""
    return client_kwargs_for(sim)
