"""The ``ordersync`` command: the root, which mounts each command group lazily.

Each group lives in its own module of this package and is imported only when it runs (or its own
``--help`` is asked for): ``ordersync --help`` reads the table below and loads neither Kafka clients
nor the simulator.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from typer.core import TyperGroup


@dataclass(frozen=True)
class Entry:
    """One command or group of the root: where it lives and its one-line help for ``--help``."""

    module: str
    attribute: str
    help: str


#: The root's commands, in the order ``--help`` lists them. A group's attribute is its ``typer.Typer``;
#: a single command's is its function.
COMMANDS: dict[str, Entry] = {
    "run": Entry("ordersync.cli.run", "run", "Run one stage's worker until stopped (SIGTERM or Ctrl-C)."),
    "dashboard": Entry(
        "ordersync.cli.run", "dashboard", "The operators' web page: status, orders grid and actions, export."
    ),
    "status": Entry(
        "ordersync.cli.status", "status", "Per channel: orders by status, API health, tasks, dead letters."
    ),
    "orders": Entry("ordersync.cli.orders", "orders_app", "List and show orders; ignore, retry them."),
    "export": Entry(
        "ordersync.cli.export", "export_app", "Export orders as CSV (failed write-backs, imports)."
    ),
    "replay": Entry(
        "ordersync.cli.replay", "replay_command", "Copy a topic's records back onto it (or another)."
    ),
    "dlq": Entry("ordersync.cli.replay", "dlq_app", "Dead letters: list, show, send back to their source."),
    "status-model": Entry("ordersync.cli.status", "status_model_app", "The status read model: rebuild it."),
    "listings": Entry(
        "ordersync.cli.listings",
        "listings_app",
        "Channel listings: Amazon seller SKU -> back-office stock code.",
    ),
    "topics": Entry("ordersync.cli.topics", "topics_app", "Create and list the catalogue's Kafka topics."),
    "quota": Entry("ordersync.cli.quota", "quota_app", "Amazon quota per seller and operation."),
    "products": Entry(
        "ordersync.cli.products", "products_app", "Product data from Amazon's catalog: title, image, sizes."
    ),
    "amazon": Entry("ordersync.cli.amazon", "amazon_app", "Amazon SP-API: check a channel's access."),
    "notifications": Entry(
        "ordersync.cli.notifications",
        "notifications_app",
        "Amazon's ORDER_CHANGE notifications: subscribe channels.",
    ),
    "alerts": Entry("ordersync.cli.alerts", "alerts_app", "Alerts firing now; acknowledge or snooze one."),
    "users": Entry(
        "ordersync.cli.users", "users_app", "The dashboard's accounts: add, list, set roles, disable."
    ),
    "audit": Entry("ordersync.cli.audit", "audit_app", "The audit trail: who did what, when, how it ended."),
    "tasks": Entry(
        "ordersync.cli.tasks", "tasks_app", "Periodic tasks: schedules and next runs; run one now."
    ),
    "privacy": Entry("ordersync.cli.privacy", "privacy_app", "Buyers' personal data: its keys."),
    "channels": Entry(
        "ordersync.cli.channels",
        "channels_app",
        "The channels every stage follows: list, activate, deactivate, import, export.",
    ),
    "secrets": Entry(
        "ordersync.cli.secrets", "secrets_app", "The secret store of channel credentials: put, list, delete."
    ),
    "settings": Entry(
        "ordersync.cli.settings", "settings_app", "Every setting as an environment variable; check them."
    ),
    "schemas": Entry("ordersync.cli.schemas", "schemas_app", "The event schemas as JSON Schema."),
    "sim": Entry("ordersync.cli.sim", "sim_app", "The Amazon SP-API simulator."),
    "dev": Entry("ordersync.cli.dev", "dev_app", "Start, stop and show the embedded broker and Redis."),
    "demo": Entry(
        "ordersync.cli.dev", "demo", "Everything on one machine against the simulator, with the dashboard."
    ),
    "backoffice": Entry(
        "ordersync.cli.dev", "backoffice", "A back-office stand-in (demo, tests): invoices imported orders."
    ),
}


def load_command(name: str) -> Any:
    """The click command of a root entry, importing its module now."""
    entry = COMMANDS[name]
    target: Any = getattr(importlib.import_module(entry.module), entry.attribute)
    command: Any
    if isinstance(target, typer.Typer):
        command = typer.main.get_group(target)  # a group even when it has one command
    else:
        single = typer.Typer()
        single.command(name)(target)
        command = typer.main.get_command(single)
    command.name = name
    command.help = command.help or entry.help
    return command


class LazyRoot(TyperGroup):
    """The root group: lists every entry from :data:`COMMANDS` and imports one only to run it.

    Contexts, formatters and commands are typed ``Any``: typer ships its own copy of click, whose
    module is private."""

    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in COMMANDS:
            return None
        return load_command(cmd_name)

    def invoke(self, ctx: Any) -> Any:
        """Run the command; whatever it raises ends it with one line on stderr and the exit code of
        :class:`ordersync.cli.common.ExitCode` (the traceback too with ``--debug``)."""
        from typer import Abort, Exit
        from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError

        try:
            return super().invoke(ctx)
        except (Exit, Abort, NoArgsIsHelpError, KeyboardInterrupt):
            raise
        except UsageError as exc:
            if debug_enabled():
                raise
            # typer's own code (2), on one line: what is wrong, and where the help is.
            where = exc.ctx.command_path if exc.ctx is not None else ctx.command_path
            _echo_error(f"{exc.format_message()} (see {where} --help)")
            raise Exit(exc.exit_code) from None
        except ClickException:
            raise
        except Exception as exc:
            if debug_enabled():
                raise
            from ordersync.cli.common import failure_of

            code, message = failure_of(exc)
            _echo_error(message)
            raise Exit(int(code)) from None

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        # The short help comes from the table: listing the commands must not import them.
        rows = [(name, entry.help) for name, entry in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


#: ``ordersync --debug ...`` (or ``ORDERSYNC_DEBUG=1``): a failure's traceback instead of one line.
_DEBUG = {"on": False}


def debug_enabled() -> bool:
    flag = os.environ.get("ORDERSYNC_DEBUG", "").strip().lower()
    return _DEBUG["on"] or flag in ("1", "true", "yes", "on")


def _echo_error(message: str) -> None:
    from ordersync.cli.common import one_line

    typer.echo(f"error: {one_line(message)}", err=True)


#: The exit codes, as :class:`ordersync.cli.common.ExitCode` defines them (kept here so that ``--help``
#: imports nothing heavy; a unit test checks they agree).
EXIT_CODES_EPILOG = (
    "Exit codes: 0 done, 1 the command ran and reports a failure, 2 bad input (malformed value, unknown"
    " option or value), 3 unknown channel, seller, order, topic or stage, 4 Redis unreachable, 5 Kafka"
    " unreachable, 6 Amazon SP-API unreachable or credentials refused, 7 configuration error (settings,"
    " channels file), 8 AWS (key store, S3, SQS) unreachable. Failures are one line on stderr; --debug"
    " (or ORDERSYNC_DEBUG=1) adds the traceback."
)

app = typer.Typer(
    cls=LazyRoot,
    help="ordersync: keeps an Amazon seller's back-office in sync with Amazon, on Kafka.",
    epilog=EXIT_CODES_EPILOG,
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,  # a failure is one line (or, with --debug, Python's traceback)
    pretty_exceptions_show_locals=False,  # locals may hold secrets
)


@app.callback()
def _root(
    debug: Annotated[
        bool, typer.Option("--debug", help="On a failure, print the traceback (also ORDERSYNC_DEBUG=1).")
    ] = False,
) -> None:
    """ordersync: keeps an Amazon seller's back-office in sync with Amazon, on Kafka."""
    _DEBUG["on"] = debug


def main() -> None:
    app()
