"""`ordersync schemas export`: a JSON Schema per event that real events validate against."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from typer.testing import CliRunner

from ordersync.cli import app
from ordersync.schemas import codec
from ordersync.schemas.envelope import Envelope
from ordersync.schemas.events import OrderDownloaded
from ordersync.schemas.topics import CATALOGUE
from tests.factories import order

pytestmark = pytest.mark.unit


def test_export_writes_one_schema_per_event_that_real_events_validate_against(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["schemas", "export", str(tmp_path)])
    assert result.exit_code == 0, result.output
    expected = {f"{e.event_type()}.v{e.schema_version}.json" for spec in CATALOGUE for e in spec.events}
    assert {p.name for p in tmp_path.iterdir()} == expected
    schema = json.loads((tmp_path / f"OrderDownloaded.v{OrderDownloaded.schema_version}.json").read_text())
    event = Envelope.wrap(
        OrderDownloaded(channel="acme-us", order=order()), seller_id="A1ACME", correlation_id="c"
    )
    jsonschema.validate(json.loads(codec.encode(event)), schema)
    broken = json.loads(codec.encode(event))
    broken["payload"]["order"]["order_status"] = "Lost"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("run", "dev", "topics", "sim", "schemas", "listings", "demo", "backoffice"):
        assert command in result.output
