"""The SP-API simulator: Amazon's Orders (v0 and 2026-01-01), Feeds 2021-06-30 and Reports 2021-06-30
(with the presigned document URLs they hand out; the order report
GET_FLAT_FILE_ALL_ORDERS_DATA_BY_LAST_UPDATE_GENERAL), Tokens, Notifications v1 (ORDER_CHANGE sent to
subscribed SQS queues), Easy Ship 2022-03-23 (handover slots, scheduled packages, the
POST_EASYSHIP_DOCUMENTS feed's PDFs), Catalog Items 2022-04-01 and LWA endpoints over a seeded,
deterministic scenario on a scalable clock, with Amazon's throttling, visibility lag, feed queues,
report delays, notification delivery (lag, loss, duplicates) and faults (500/503, slow answers,
timeouts, dropped connections), plus a control and truth API under ``/_sim/``:

``/_sim/orders`` (GET, POST), ``/_sim/orders/{id}``, ``/status`` and ``/amazon-shipment`` (shipped by
a label bought through Amazon, or by Easy Ship's carrier), ``/_sim/feeds`` and
``/_sim/feeds/{id}`` (feeds with their messages' outcomes and reports), ``/_sim/easyship/packages``
(scheduled Easy Ship packages with their slot, status and timeline), ``/_sim/listings`` (SKU ->
quantity per seller, as JSON_LISTINGS_FEED feeds left it), ``/_sim/notifications`` (ORDER_CHANGE
notifications sent, lost, duplicated or pending, destinations and subscriptions; PUT changes the
delivery knobs), ``/_sim/reports`` and ``/_sim/reports/{id}`` (reports with their status, lag, lines
and document; PUT changes the report knobs), ``/_sim/counters`` (with the confirmations refused by
programme), ``/_sim/clock`` and
``/advance``, ``/_sim/faults`` (rates) and ``/_sim/faults/next`` (force the next requests' fault),
``/_sim/usage-plans`` (change a seller's plan while running), ``/_sim/buckets/reset``,
``/_sim/tokens/revoke``, ``/_sim/catalogue``, ``/_sim/scenario``, ``/_sim/user-agents`` (the
User-Agent header of each operation's last request).

In-process::

    from ordersync.settings import Settings
    from ordersync.simulator import RunningSimulator, load_scenario

    with RunningSimulator(load_scenario("demo", seed=1, time_scale=20), aws=Settings().aws) as sim:
        ...  # sim.base_url, sim.lwa_url, sim.state

``aws`` (optional) is where ORDER_CHANGE notifications are sent (SQS); without it subscriptions are
accepted and notifications scheduled, but none is sent.

From the command line: ``ordersync sim serve --scenario demo --time-scale 20`` (notifications go to
SQS through the settings' ``aws.*``; ``--no-sqs``: none is sent).
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
