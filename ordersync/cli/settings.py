"""``ordersync settings``: every setting as an environment variable; check the environment."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from ordersync.ops.envdoc import env_settings, render_env_file, report_env_problems

settings_app = typer.Typer(help="The settings: every environment variable, documented.", no_args_is_help=True)


@settings_app.command("env")
def env_command(
    output: Annotated[
        Path | None, typer.Option(help="Write to this file instead of standard output.")
    ] = None,
) -> None:
    """Print every setting as a commented env file with its default (deploy/example.env)."""
    text = render_env_file()
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text)
        typer.echo(f"{output}: {len(env_settings())} settings")


@settings_app.command("check")
def check_command() -> None:
    """Check this process's environment: ORDERSYNC_* variables that set nothing, and invalid values
    (exit 7 when there are any)."""
    problems = report_env_problems(os.environ)
    for problem in problems:
        typer.echo(problem, err=True)
    if problems:
        raise typer.Exit(7)  # ExitCode.CONFIG (not imported: this command loads nothing heavy)
    typer.echo("settings: every ORDERSYNC_* variable is a setting and every value is valid")
