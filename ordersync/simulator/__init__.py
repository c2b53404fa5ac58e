"""The SP-API simulator: Amazon's Orders (v0 and 2026-01-01), Tokens and LWA endpoints over a
seeded, deterministic scenario on a scalable clock, with Amazon's throttling, visibility lag and
faults, plus a control and truth API under ``/_sim/``.

In-process::

    from ordersync.simulator import RunningSimulator, load_scenario

    with RunningSimulator(load_scenario("demo", seed=1, time_scale=20)) as sim:
        ...  # sim.base_url, sim.lwa_url, sim.state

From the command line: ``ordersync sim serve --scenario demo --time-scale 20``.
"""

from __future__ import annotations

from ordersync.simulator.app import create_app
from ordersync.simulator.clock import SimClock
from ordersync.simulator.runner import RunningSimulator
from ordersync.simulator.scenario import Scenario, load_scenario
from ordersync.simulator.state import SimResponse, SimulatorState
from ordersync.simulator.validation import SpApiError

__all__ = [
    "RunningSimulator",
    "Scenario",
    "SimClock",
    "SimResponse",
    "SimulatorState",
    "SpApiError",
    "create_app",
    "load_scenario",
]
