"""What "Synchronize now" accepts before anything is sent, which stage runs which task, and a schedule as
people read it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ordersync.pipeline.schedule import (
    ALL_CHANNELS,
    SCHEDULABLE,
    SchedulableTask,
    TaskRequestRejected,
    build_task_request,
    every,
    owned_task,
    tasks_of,
)
from ordersync.pipeline.stages import STAGES
from ordersync.settings import Settings
from tests.factories import CHANNEL, OTHER_CHANNEL, SELLER, write_channels_file

pytestmark = pytest.mark.unit


def test_every_task_belongs_to_a_stage_and_says_its_scope() -> None:
    assert set(SCHEDULABLE) == {"download", "inventory", "inventory-urgent", "write-back"}
    assert {task.stage for task in SCHEDULABLE.values()} <= set(STAGES)
    assert tasks_of("inventory") == ("inventory", "inventory-urgent")
    assert tasks_of("import") == ()
    assert SCHEDULABLE["download"].scope(CHANNEL) == CHANNEL
    # A task that serves every channel at once is woken whichever channel is named.
    shared = SchedulableTask(
        "reconcile-all", "status-projection", "a task for every channel", per_channel=False
    )
    assert shared.scope(CHANNEL) == ALL_CHANNELS


def test_a_request_is_checked_before_it_is_sent(tmp_path: Path) -> None:
    path = write_channels_file(tmp_path / "channels.yaml")
    settings = Settings(channels_file=path)
    envelope = build_task_request(settings, "download", CHANNEL, "dana")
    assert envelope.seller_id == SELLER
    owned = owned_task("order-download", envelope)
    assert owned is not None
    assert (owned[0].name, owned[1].channel, owned[1].operator) == ("download", CHANNEL, "dana")
    assert owned_task("inventory", envelope) is None
    with pytest.raises(TaskRequestRejected, match="unknown task 'reindex'"):
        build_task_request(settings, "reindex", CHANNEL, None)
    with pytest.raises(TaskRequestRejected, match="no channel named 'nowhere'"):
        build_task_request(settings, "download", "nowhere", None)
    # A deactivated channel's tasks do not run: asking is refused rather than silently ignored.
    data = yaml.safe_load(path.read_text())
    data["channels"][1]["active"] = False
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(TaskRequestRejected, match="not active"):
        build_task_request(settings, "inventory", OTHER_CHANNEL, None)


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(None, ""), (0.5, "0.5s"), (45, "45s"), (60, "1m"), (90, "1m 30s"), (3600, "1h"), (5400, "1h 30m")],
)
def test_a_schedule_as_people_read_it(seconds: float | None, shown: str) -> None:
    assert every(seconds) == shown
