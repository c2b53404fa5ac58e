"""Grid actions on selected orders: checked whole before anything is sent, then one ``ops.commands``
event per channel (:func:`ordersync.ops.commands.publish_command`, the CLI's own path).

Checked: the request's form, the channels, and each order against the read model: it must be an order
of that channel's account, in a state the action applies to (:func:`action_refusal`, the same rules
that enable the buttons on the pages). One problem refuses the whole request; nothing is sent."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping
from typing import Annotated, Any

from kafka.errors import KafkaError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from ordersync.channels import ChannelsFile
from ordersync.ops.commands import CommandRejected, publish_command
from ordersync.schemas.events import OperatorCommand
from ordersync.settings import Settings
from ordersync.state.readmodel import OrderRow
from ordersync.state.readmodel.fold import CANCELLED_ON_AMAZON, IMPORT_OK

log = logging.getLogger(__name__)

#: The buttons, in the order shown, with their labels.
ACTION_LABELS: dict[OperatorCommand, str] = {
    "ignore": "Ignore",
    "unignore": "Un-ignore",
    "retry-download": "Retry Download",
    "retry-import": "Retry Import",
    "retry-writeback": "Retry Write-back",
}


class ActionRejected(ValueError):
    """The request names no valid action on valid orders; nothing was sent. ``conflict``: every order
    exists but one's state does not allow the action (HTTP 409, not 422)."""

    def __init__(self, problems: list[str], *, conflict: bool = False) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems
        self.conflict = conflict


def _ignore_refusal(row: OrderRow) -> str | None:
    if row.status == "Ignored":
        return "already ignored"
    if row.import_status in IMPORT_OK.values():
        return f"already imported ({row.import_status}): ignore applies only before the import"
    return None


def _download_refusal(row: OrderRow) -> str | None:
    if row.download_status == "failed" or row.import_status not in IMPORT_OK.values():
        return None
    return f"already imported ({row.import_status}): Amazon's later changes arrive by themselves"


def _import_refusal(row: OrderRow) -> str | None:
    if row.import_status in ("failed", "held"):
        return None
    return f"its import did not fail (import: {row.import_status or 'not yet'})"


def _writeback_refusal(row: OrderRow) -> str | None:
    if row.writeback_status == "failed":
        return None
    if row.writeback_status == CANCELLED_ON_AMAZON:
        return "cancelled on Amazon: there is nothing to write back"
    return f"its write-back did not fail (write-back: {row.writeback_status or 'not yet'})"


_REFUSALS: dict[str, Callable[[OrderRow], str | None]] = {
    "ignore": _ignore_refusal,
    "unignore": lambda row: None if row.status == "Ignored" else "not ignored",
    "retry-download": _download_refusal,
    "retry-import": _import_refusal,
    "retry-writeback": _writeback_refusal,
}


def action_refusal(action: str, row: OrderRow) -> str | None:
    """Why the order's state does not allow ``action`` (None: it does). The pages enable each button
    by the same rule, and ``POST /api/actions`` refuses by it: ignore only before the import, un-ignore
    only an ignored order, retry-import only after a failed (or held) import, retry-writeback only
    after a failed write-back, retry-download until the order is imported (or when its download
    failed); nothing but un-ignore on an ignored order."""
    rule = _REFUSALS.get(action)
    if rule is None:
        return f"unknown action {action}"
    if row.status == "Ignored" and action not in ("ignore", "unignore"):
        return "ignored: un-ignore it first"
    return rule(row)


def allowed_actions(row: OrderRow) -> tuple[OperatorCommand, ...]:
    """The actions the order's state allows, in the buttons' order."""
    return tuple(action for action in ACTION_LABELS if action_refusal(action, row) is None)


def check_orders(
    action: OperatorCommand,
    plan: Mapping[str, tuple[str, ...]],
    sellers: Mapping[str, str],
    rows: Mapping[tuple[str, str], OrderRow],
) -> None:
    """Every order of ``plan`` (channel -> ids) must be in the read model as an order of its channel's
    account (``sellers``: channel -> seller id; ``rows``: (seller, order id) -> row) and in a state
    that allows ``action``; raises :class:`ActionRejected` listing every problem."""
    unknown: list[str] = []
    refused: list[str] = []
    for channel, ids in plan.items():
        seller = sellers.get(channel)
        for order_id in ids:
            row = rows.get((seller, order_id)) if seller else None
            if row is None or (row.channel and row.channel != channel):
                unknown.append(
                    f"{order_id}: not an order of {channel} (seller {seller or '?'}) in the read model"
                )
                continue
            why = action_refusal(action, row)
            if why is not None:
                refused.append(f"{order_id}: {ACTION_LABELS[action]} refused: {why} (status {row.status})")
    if unknown or refused:
        raise ActionRejected(unknown + refused, conflict=not unknown)


class OrderRef(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    channel: Annotated[str, Field(min_length=1, max_length=63)]
    amazon_order_id: Annotated[str, Field(pattern=r"^\d{3}-\d{7}-\d{7}$")]


class ActionRequest(BaseModel):
    """The body of ``POST /api/actions``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    action: OperatorCommand
    orders: Annotated[tuple[OrderRef, ...], Field(min_length=1)]
    #: Who asks, for the record (the event's ``operator``); the token says nothing about who.
    operator: Annotated[str | None, Field(max_length=64, pattern=r"^[\w .@+-]*$")] = None


class PublishedCommand(BaseModel):
    model_config = ConfigDict(frozen=True)

    channel: str
    command: OperatorCommand
    amazon_order_ids: tuple[str, ...]
    event_id: str


def parse_action(body: Any) -> ActionRequest:
    try:
        return ActionRequest.model_validate(body)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = ".".join(str(p) for p in error["loc"]) or "body"
            problems.append(f"{where}: {error['msg']}")
        raise ActionRejected(problems) from None


def plan_action(
    request: ActionRequest, known_channels: Collection[str], max_orders: int
) -> dict[str, tuple[str, ...]]:
    """Order ids per channel, each once, in the order selected; every problem at once."""
    problems: list[str] = []
    unknown = sorted({o.channel for o in request.orders} - set(known_channels))
    if unknown:
        known = ", ".join(sorted(known_channels)) or "none configured"
        problems.append(f"unknown channel {', '.join(unknown)} (known: {known})")
    by_channel: dict[str, dict[str, None]] = {}
    for ref in request.orders:
        by_channel.setdefault(ref.channel, {})[ref.amazon_order_id] = None
    for channel, ids in by_channel.items():
        if len(ids) > max_orders:
            problems.append(f"{len(ids)} orders of {channel} selected; one action takes at most {max_orders}")
    if problems:
        raise ActionRejected(problems)
    return {channel: tuple(ids) for channel, ids in by_channel.items()}


def operator_name(request: ActionRequest) -> str:
    name = (request.operator or "").strip()
    return f"dashboard:{name}" if name else "dashboard"


class ActionOutcome(BaseModel):
    model_config = ConfigDict(frozen=True)

    published: tuple[PublishedCommand, ...]
    #: Why the remaining channels were not sent (Kafka unreachable ...); None: everything was sent.
    failure: str | None = None
    not_sent: tuple[str, ...] = ()


async def publish_action(
    settings: Settings, configured: ChannelsFile, request: ActionRequest, plan: dict[str, tuple[str, ...]]
) -> ActionOutcome:
    """Publish one command per channel, in a thread (kafka-python blocks until the broker acknowledges).

    Raises :class:`ActionRejected` when the first command is refused before sending (the channels file
    disagrees). A broker failure stops there and says which channels were sent and which were not;
    sending again is safe, every command is idempotent."""
    published: list[PublishedCommand] = []
    operator = operator_name(request)
    channels = list(plan)
    for index, channel in enumerate(channels):
        ids = plan[channel]
        try:
            event_id = await run_in_threadpool(
                publish_command, settings, configured, request.action, channel, ids, operator=operator
            )
        except CommandRejected as exc:
            if not published:
                raise ActionRejected([str(exc)]) from exc
            return ActionOutcome(
                published=tuple(published), failure=str(exc), not_sent=tuple(channels[index:])
            )
        except KafkaError as exc:
            log.warning("dashboard action %s on %s not sent: %s", request.action, channel, type(exc).__name__)
            return ActionOutcome(
                published=tuple(published),
                failure=f"Kafka did not take the command ({type(exc).__name__}: {exc})",
                not_sent=tuple(channels[index:]),
            )
        log.info(
            "dashboard action %s on %d order(s) of %s sent as event %s by %s",
            request.action,
            len(ids),
            channel,
            event_id,
            operator,
        )
        published.append(
            PublishedCommand(channel=channel, command=request.action, amazon_order_ids=ids, event_id=event_id)
        )
    return ActionOutcome(published=tuple(published))
