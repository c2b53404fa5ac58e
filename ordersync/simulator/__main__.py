"""``python -m ordersync.simulator serve ...``."""

from __future__ import annotations

from ordersync.simulator.cli import sim_app

sim_app(prog_name="python -m ordersync.simulator")
