"""The status read model: every outcome topic folded into Redis, for the dashboard and the CLI.

One job per module:

- :mod:`.rows`: what the model answers with (grid rows, order details, pages, tasks, DLQ sizes) and
  the grid's filter;
- :mod:`.facts`: what each event says about an order, as a typed fact, and how a fact is kept in Redis;
- :mod:`.fold`: an order's row and detail from its facts, a pure function of the set of facts (one
  small reducer per event type);
- :mod:`.model`: :class:`ReadModel`, the model in Redis: the fold applied with check-and-set, the
  indexes, the queries, and the removal of orders past the retention (:meth:`ReadModel.prune`);
- :mod:`.export`: the CSV a person uses to check orders by hand in Seller Central;
- :mod:`.rebuild`: the model rebuilt from the topics (``ordersync status-model rebuild``; not imported
  here, it needs the Kafka client).
"""

from ordersync.state.readmodel.export import failed_orders_csv_header, order_csv_rows, write_orders_csv
from ordersync.state.readmodel.facts import DLQ_FAILED_STAGE, DLQ_TRACK, FOLDED_TOPICS, Fact, Target, facts_of
from ordersync.state.readmodel.fold import Derived, derive
from ordersync.state.readmodel.model import DLQ_NOTIFY_WITHIN, LATE_NOTIFY_WITHIN, PRUNE_BATCH, ReadModel
from ordersync.state.readmodel.rows import (
    DEADLINES,
    EASY_SHIP_STATES,
    FAILED_STAGES,
    OVERALL_STATUSES,
    CommandOrder,
    CommandOutcome,
    CommandState,
    Deadline,
    DlqSize,
    EasyShipState,
    FailedStage,
    OrderDetail,
    OrderFilter,
    OrderRow,
    OrdersPage,
    OverallStatus,
    ShipByState,
    ShipmentTimeliness,
    SortKey,
    StatusCounts,
    TaskRow,
)

__all__ = [
    "DEADLINES",
    "DLQ_FAILED_STAGE",
    "DLQ_NOTIFY_WITHIN",
    "DLQ_TRACK",
    "EASY_SHIP_STATES",
    "FAILED_STAGES",
    "FOLDED_TOPICS",
    "LATE_NOTIFY_WITHIN",
    "OVERALL_STATUSES",
    "PRUNE_BATCH",
    "CommandOrder",
    "CommandOutcome",
    "CommandState",
    "Deadline",
    "Derived",
    "DlqSize",
    "EasyShipState",
    "Fact",
    "FailedStage",
    "OrderDetail",
    "OrderFilter",
    "OrderRow",
    "OrdersPage",
    "OverallStatus",
    "ReadModel",
    "ShipByState",
    "ShipmentTimeliness",
    "SortKey",
    "StatusCounts",
    "Target",
    "TaskRow",
    "derive",
    "facts_of",
    "failed_orders_csv_header",
    "order_csv_rows",
    "write_orders_csv",
]
