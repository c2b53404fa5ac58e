"""``ordersync users``: the dashboard's accounts (:mod:`ordersync.ops.users`): add, list, change a role,
disable, enable, reset a password. The first admin of a fresh install is made here.

Every change is audited (``ops.audit``, and the audit page's copy in Redis) with the actor
``cli:<os user>``; changing a role or a password, or disabling a user, ends the user's dashboard
sessions. Passwords are read from a prompt (asked twice) or, with ``--password-stdin``, from the first
line of standard input; never from an argument, which would land in the shell's history.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer

from ordersync.cli.common import ExitCode, cli_actor, cli_redis, fail, when
from ordersync.ops.users import (
    MIN_PASSWORD_CHARS,
    ROLE_MEANINGS,
    ROLES,
    User,
    UserExists,
    UserNotFound,
    UserProblem,
    UserStore,
)
from ordersync.settings import get_settings

T = TypeVar("T")

users_app = typer.Typer(help="The dashboard's accounts: add, list, set roles, disable, reset passwords.")

_ROLE_HELP = "; ".join(f"{role}: {meaning}" for role, meaning in ROLE_MEANINGS.items())


@users_app.callback(no_args_is_help=True)
def _group() -> None:
    """The dashboard's accounts. Roles: viewer reads; operator also acts on orders, dead letters and
    alerts and sees buyers' personal data; admin also manages the accounts."""


def _run(action: str, targets: list[str], work: Callable[[UserStore], Awaitable[T]], detail: str = "") -> T:
    """``work`` on the accounts, then its audit entry (refused ones too): the exit code says how it
    ended."""
    from ordersync.cli.audit import record_cli_entry

    settings = get_settings()

    async def run() -> T:
        redis = cli_redis(settings)
        try:
            store = UserStore(redis, settings.redis.key_prefix)
            try:
                result = await work(store)
            except (UserProblem, UserNotFound) as exc:
                await record_cli_entry(settings, redis, action, "refused", targets=targets, reason=str(exc))
                raise
            await record_cli_entry(
                settings, redis, action, "sent", targets=targets, detail=_detail(detail, result)
            )
            return result
        finally:
            await redis.aclose()

    try:
        return asyncio.run(run())
    except UserNotFound as exc:
        raise fail(ExitCode.NOT_FOUND, f"{exc} (see `ordersync users list`)") from None
    except UserExists as exc:
        raise fail(ExitCode.USAGE, f"{exc} (`ordersync users passwd` or `set-role` change it)") from None
    except UserProblem as exc:
        raise fail(ExitCode.USAGE, str(exc)) from None


def _detail(detail: str, result: object) -> str:
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], User):
        before, user = result
        return f"{before} -> {user.role}" + ("; sessions ended" if before != user.role else "")
    return detail


def _password(password_stdin: bool, name: str) -> str:
    if password_stdin:
        line = sys.stdin.readline()
        return line[:-1] if line.endswith("\n") else line
    return str(
        typer.prompt(
            f"Password for {name} (at least {MIN_PASSWORD_CHARS} characters)",
            hide_input=True,
            confirmation_prompt=True,
        )
    )


_PasswordStdin = Annotated[
    bool,
    typer.Option(
        "--password-stdin", help="Read the password from the first line of standard input (no prompt)."
    ),
]


def _checked_role(role: str) -> str:
    if role not in ROLES:
        raise fail(ExitCode.USAGE, f"--role {role!r}: one of {', '.join(ROLES)} ({_ROLE_HELP})")
    return role


@users_app.command("add")
def users_add(
    name: Annotated[str, typer.Argument(help="The user name: lower-case letters, digits and . _ @ -.")],
    role: Annotated[str, typer.Option("--role", help=f"One of {', '.join(ROLES)}.")],
    password_stdin: _PasswordStdin = False,
) -> None:
    """Add an account (the first admin of a fresh install too)."""
    role = _checked_role(role)
    password = _password(password_stdin, name)
    by = cli_actor()
    user = _run(
        "user.add", [name.strip().lower()[:64]], lambda s: s.add(name, role, password, by), f"role {role}"
    )
    typer.echo(f"added {user.name} ({user.role})")


@users_app.command("list")
def users_list() -> None:
    """Every account: name, role, state, when made and last changed, and by whom."""
    settings = get_settings()

    async def read() -> list[User]:
        redis = cli_redis(settings)
        try:
            return await UserStore(redis, settings.redis.key_prefix).list()
        finally:
            await redis.aclose()

    users = asyncio.run(read())
    if not users:
        typer.echo("no user: add the first admin with `ordersync users add NAME --role admin`")
        return
    width = max(len(u.name) for u in users)
    for user in users:
        state = "disabled" if user.disabled else "enabled"
        typer.echo(
            f"{user.name:{width}}  {user.role:8}  {state:8}  created {when(user.created_at)} by"
            f" {user.created_by}, changed {when(user.changed_at)} by {user.changed_by}"
        )


@users_app.command("set-role")
def users_set_role(
    name: Annotated[str, typer.Argument(help="The user.")],
    role: Annotated[str, typer.Argument(help=f"One of {', '.join(ROLES)}.")],
) -> None:
    """Change a user's role; the user's sessions end."""
    role = _checked_role(role)
    by = cli_actor()
    before, user = _run("user.role", [name[:64]], lambda s: s.set_role(name, role, by))
    typer.echo(f"{user.name}: {before} -> {user.role}" + ("; sessions ended" if before != user.role else ""))


@users_app.command("disable")
def users_disable(name: Annotated[str, typer.Argument(help="The user.")]) -> None:
    """Disable a user: no sign-in, and every session ends."""
    by = cli_actor()
    user = _run("user.disable", [name[:64]], lambda s: s.set_disabled(name, True, by), "sessions ended")
    typer.echo(f"{user.name} disabled; sessions ended")


@users_app.command("enable")
def users_enable(name: Annotated[str, typer.Argument(help="The user.")]) -> None:
    """Enable a disabled user again."""
    by = cli_actor()
    user = _run("user.enable", [name[:64]], lambda s: s.set_disabled(name, False, by))
    typer.echo(f"{user.name} enabled")


@users_app.command("passwd")
def users_passwd(
    name: Annotated[str, typer.Argument(help="The user.")],
    password_stdin: _PasswordStdin = False,
) -> None:
    """Set a user's password; the user's sessions end."""
    password = _password(password_stdin, name)
    by = cli_actor()
    user = _run("user.password", [name[:64]], lambda s: s.set_password(name, password, by), "sessions ended")
    typer.echo(f"password of {user.name} set; sessions ended")
