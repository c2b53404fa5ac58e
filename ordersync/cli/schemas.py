"""``ordersync schemas export``: one JSON Schema per event, for teams in other languages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

schemas_app = typer.Typer(help="The event schemas.", no_args_is_help=True)


@schemas_app.command("export")
def schemas_export(
    directory: Annotated[Path, typer.Argument(help="Folder to write the JSON Schemas into.")],
) -> None:
    """Write one JSON Schema per event (in its envelope), for teams in other languages."""
    from ordersync.schemas.envelope import Envelope
    from ordersync.schemas.topics import CATALOGUE

    directory.mkdir(parents=True, exist_ok=True)
    written: set[str] = set()
    for spec in CATALOGUE:
        for event in spec.events:
            name = f"{event.event_type()}.v{event.schema_version}.json"
            if name in written:
                continue
            schema = Envelope[event].model_json_schema()  # type: ignore[valid-type]
            schema["title"] = event.event_type()
            schema["description"] = (event.__doc__ or "").strip()
            (directory / name).write_text(json.dumps(schema, indent=2) + "\n")
            written.add(name)
            typer.echo(f"{directory / name}")
