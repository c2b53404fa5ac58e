"""The dead-letter page's pure parts: personal data masked wherever it sits, letters counted by stage
and reason, filters, and actions refused whole when they name no letter, no operator or no note."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest

from ordersync.cli.replay import letter_json, original_text
from ordersync.dashboard.dead_letters import (
    ActionProblem,
    Handling,
    LetterFilter,
    build_board,
    original_shown,
    parse_letter_action,
)
from ordersync.ops.replay import DeadLetter
from ordersync.privacy.masking import MASK, mask_personal
from ordersync.schemas.events import EventDeadLettered

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)


def _dead(
    offset: int, stage: str, error_type: str, original: bytes = b"{}", *, minutes: int = 0
) -> DeadLetter:
    letter = EventDeadLettered(
        source_topic="invoices.issued",
        source_partition=0,
        source_offset=offset,
        source_key=f"A1SELLER:111-0000000-{offset:07d}",
        original_value_b64=base64.b64encode(original).decode(),
        stage=stage,
        error_type=error_type,
        error=f"reason {offset}",
        dead_lettered_at=T0 + timedelta(minutes=minutes),
    )
    return DeadLetter(
        dlq_topic="invoices.issued.dlq",
        partition=0,
        offset=offset,
        timestamp_ms=0,
        key=letter.source_key,
        letter=letter,
    )


def test_personal_data_is_masked_at_any_depth_but_the_country_stays() -> None:
    event = {
        "payload": {
            "amazon_order_id": "111-1",
            "buyer_email": "a@b.c",
            "customer_name": "Jane",
            "shipping_address": {
                "name": "Jane",
                "line1": "1 Main St",
                "postal_code": "1000",
                "country_code": "DE",
            },
            "lines": [{"sku": "S1", "name": "a product name"}],
            "buyer_name": None,
        }
    }
    masked = mask_personal(event)["payload"]
    assert masked["amazon_order_id"] == "111-1"
    assert masked["buyer_email"] == masked["customer_name"] == MASK
    assert masked["shipping_address"] == {
        "name": MASK,
        "line1": MASK,
        "postal_code": MASK,
        "country_code": "DE",
    }
    assert masked["lines"] == [{"sku": "S1", "name": MASK}]
    assert masked["buyer_name"] is None


def test_an_original_that_is_not_json_is_not_shown() -> None:
    assert original_shown(_dead(1, "import", "InvalidEvent", b"Jane Buyer, 1 Main St")) == (
        "(not JSON; not shown, it may hold personal data)"
    )
    shown = json.loads(original_shown(_dead(2, "import", "InvalidEvent", b'{"buyer_email": "x@y.z"}')))
    assert shown == {"buyer_email": MASK}


def test_letters_are_counted_by_stage_and_reason_and_listed_newest_first() -> None:
    letters = [
        _dead(1, "invoice-issued", "Permanent", minutes=1),
        _dead(2, "invoice-issued", "Permanent", minutes=3),
        _dead(3, "invoice-issued", "InvalidEvent", minutes=2),
        _dead(4, "import", "Retryable", minutes=4),
    ]
    handled = {
        "invoices.issued.dlq:0:2": Handling(state="resolved", operator="ana", at=T0, note="done by hand")
    }
    board = build_board(letters, handled, LetterFilter())
    assert (board.total, board.open) == (4, 3)
    assert [(g.stage, g.error_type, g.open, g.handled) for g in board.groups] == [
        ("import", "Retryable", 1, 0),
        ("invoice-issued", "InvalidEvent", 1, 0),
        ("invoice-issued", "Permanent", 1, 1),
    ]
    assert [row.offset for row in board.letters] == [4, 3, 1]
    every = build_board(letters, handled, LetterFilter(state="all", stage="invoice-issued"))
    assert [row.offset for row in every.letters] == [2, 3, 1]
    assert every.letters[0].handling.operator == "ana"
    permanent = build_board(letters, handled, LetterFilter(state="all", error_type="Permanent"))
    assert [row.offset for row in permanent.letters] == [2, 1]
    assert len(build_board(letters, {}, LetterFilter(), shown=2).letters) == 2


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"action": "resolve", "letters": [{"topic": "invoices.issued.dlq", "partition": 0, "offset": 1}],
          "operator": "ana"}, "note: say why"),
        ({"action": "replay", "letters": [], "operator": "ana"}, "letters: Tuple should have at least 1"),
        ({"action": "replay", "letters": [{"topic": "invoices.issued.dlq", "partition": 0, "offset": 1}]},
         "operator: Field required"),
        ({"action": "replay", "letters": [{"topic": "invoices.issued", "partition": 0, "offset": 1}],
          "operator": "ana"}, "not dead-letter topics: invoices.issued"),
        ({"action": "delete", "letters": [{"topic": "invoices.issued.dlq", "partition": 0, "offset": 1}],
          "operator": "ana"}, "action: Input should be 'replay' or 'resolve'"),
    ],
)  # fmt: skip
def test_an_action_is_refused_whole_with_the_reason(body: object, problem: str) -> None:
    with pytest.raises(ActionProblem, match=problem):
        parse_letter_action(body)


def test_dlq_show_masks_personal_data_unless_asked_unmasked() -> None:
    record = {
        "payload": {"customer_name": "Jane Buyer", "ship_to": {"line1": "1 Main", "country_code": "US"}}
    }
    dead = _dead(1, "import", "InvalidEvent", json.dumps(record).encode())
    masked = json.loads(original_text(dead, masked=True) or "")
    assert masked["payload"] == {"customer_name": MASK, "ship_to": {"line1": MASK, "country_code": "US"}}
    assert "Jane" in (original_text(dead, masked=False) or "")
    assert "Jane" not in json.dumps(letter_json(dead, None, masked=True))
    not_json = _dead(2, "import", "InvalidEvent", b"Jane, 1 Main St")
    assert "(not JSON: withheld" in (original_text(not_json, masked=True) or "")
    binary = _dead(3, "import", "InvalidEvent", b"\xff\xfe")
    assert letter_json(binary, None, masked=True)["original_b64"] is None
    assert letter_json(binary, None, masked=False)["original_b64"] is not None
