"""``ordersync dashboard``: the operators' web page over the status read model and the API health board.

Server-rendered pages (Jinja2, autoescaped) with a small vanilla script, no build step and nothing loaded
from another host, so it works offline and behind a strict Content-Security-Policy. Every filter, sort
and page is done by :class:`ordersync.state.readmodel.ReadModel` in Redis, so the grid stays fast at 100,000+
orders. Actions are ``ops.commands`` events (:func:`ordersync.ops.commands.publish_command`) and need the
operator role: a signed-in operator or admin (:mod:`ordersync.ops.users`, sessions with CSRF tokens), or
the operator token; without accounts, reading is open or needs the read token, as configured
(:class:`DashboardSettings`). Every action, account change, sign-in and sign-out is audited
(:mod:`ordersync.ops.audit`, ``ops.audit``).
"""

from __future__ import annotations

from ordersync.dashboard.app import create_app
from ordersync.dashboard.server import RunningDashboard, serve

__all__ = ["RunningDashboard", "create_app", "serve"]
