"""The dashboard's dead-letter page on the embedded broker: letters by stage and reason, decoded with the
buyer's personal data masked; Replay sends an original back to its topic once, Resolve needs a note, and
the page says who did what (recorded on ``ops.dead-letter-actions``)."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer
from starlette.testclient import TestClient

from ordersync.dashboard import create_app
from ordersync.kafka.reader import read_topic
from ordersync.schemas.codec import encode
from ordersync.schemas.envelope import Envelope
from ordersync.schemas.events import DeadLetterHandled, EventDeadLettered
from ordersync.schemas.topics import INVOICES_ISSUED, OPS_DEAD_LETTER_ACTIONS, ORDERS_ENRICHED
from tests.factories import OPERATOR_TOKEN, dashboard_settings, invoice_record, write_channels_file
from tests.topics import read_all

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("topics")]

BUYER_EMAIL = "jane.buyer@marketplace.amazon.com"


def _letter(source_topic: str, key: str, original: bytes, error_type: str, error: str) -> bytes:
    letter = EventDeadLettered(
        source_topic=source_topic,
        source_partition=0,
        source_offset=7,
        source_key=key,
        original_value_b64=base64.b64encode(original).decode(),
        stage="import" if source_topic == ORDERS_ENRICHED.name else "invoice-issued",
        error_type=error_type,
        error=error,
        dead_lettered_at=datetime.now(UTC),
    )
    return encode(Envelope.wrap(letter, seller_id=key.split(":", maxsplit=1)[0], correlation_id=key))


def _rows(client: TestClient, seller: str) -> dict[str, dict[str, Any]]:
    answer = client.get("/api/dead-letters?state=all")
    assert answer.status_code == 200, answer.text
    return {
        row["source_topic"]: row
        for row in answer.json()["letters"]
        if (row["key"] or "").startswith(f"{seller}:")
    }


def test_dead_letters_are_shown_masked_replayed_once_and_resolved_with_a_note(
    redis_url: str, redis_key_prefix: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    seller = f"A{uuid.uuid4().hex[:10].upper()}"
    key = f"{seller}:111-2223334-4445556"
    enriched = json.dumps(
        {
            "event_type": "OrderEnriched",
            "payload": {
                "amazon_order_id": "111-2223334-4445556",
                "buyer_email": BUYER_EMAIL,
                "shipping_address": {"name": "Jane Buyer", "line1": "1 Main St", "country_code": "US"},
            },
        }
    ).encode()
    invoice = invoice_record(seller, "INV-DL", "111-2223334-4445556", "1")
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    for source, original, kind, error in (
        (
            ORDERS_ENRICHED,
            enriched,
            "InvalidEvent",
            "amazon.orders.enriched: payload.currency: Field required",
        ),
        (INVOICES_ISSUED, invoice, "Permanent", "order 111-2223334-4445556 was never imported"),
    ):
        assert source.dlq is not None
        producer.send(
            source.dlq.name, key=key.encode(), value=_letter(source.name, key, original, kind, error)
        )
    producer.flush()
    producer.close()
    settings = dashboard_settings(
        redis_url,
        redis_key_prefix,
        write_channels_file(tmp_path / "channels.yaml"),
        kafka_bootstrap=kafka_bootstrap,
    )
    operator = {"X-Operator-Token": OPERATOR_TOKEN}
    with TestClient(create_app(settings)) as client:
        page = client.get("/dead-letters")
        assert page.status_code == 200
        assert key in page.text
        assert "payload.currency: Field required" in page.text
        assert BUYER_EMAIL not in page.text
        assert "Jane Buyer" not in page.text
        assert "1 Main St" not in page.text
        rows = _rows(client, seller)
        masked = json.loads(rows[ORDERS_ENRICHED.name]["original"])
        assert masked["payload"]["buyer_email"] == "•••"
        assert masked["payload"]["shipping_address"] == {"name": "•••", "line1": "•••", "country_code": "US"}
        assert {r["handling"]["state"] for r in rows.values()} == {"open"}

        def ref(row: dict[str, Any]) -> dict[str, Any]:
            return {"topic": row["dlq_topic"], "partition": row["partition"], "offset": row["offset"]}

        enriched_row, invoice_row = rows[ORDERS_ENRICHED.name], rows[INVOICES_ISSUED.name]
        no_note = {"action": "resolve", "letters": [ref(enriched_row)], "operator": "ana"}
        refused = client.post("/api/dead-letters/actions", json=no_note, headers=operator)
        assert refused.status_code == 422
        assert "note" in refused.json()["problems"][0]
        no_token = client.post("/api/dead-letters/actions", json={**no_note, "note": "x"})
        assert no_token.status_code == 403

        resolved = client.post(
            "/api/dead-letters/actions",
            json={**no_note, "note": "garbage from the old ERP; order imported by hand"},
            headers=operator,
        )
        assert resolved.status_code == 200, resolved.text
        assert resolved.json()["done"] == 1
        replay = {"action": "replay", "letters": [ref(invoice_row)], "operator": "bo"}
        replayed = client.post("/api/dead-letters/actions", json=replay, headers=operator)
        assert replayed.status_code == 200, replayed.text
        assert replayed.json()["done"] == 1
        again = client.post("/api/dead-letters/actions", json=replay, headers=operator)
        assert again.json()["done"] == 0
        assert again.json()["replay"]["skipped"] == {"already replayed": 1}

        rows = _rows(client, seller)
        assert rows[ORDERS_ENRICHED.name]["handling"]["state"] == "resolved"
        assert rows[ORDERS_ENRICHED.name]["handling"]["operator"] == "ana"
        assert rows[ORDERS_ENRICHED.name]["handling"]["note"].startswith("garbage from the old ERP")
        assert rows[INVOICES_ISSUED.name]["handling"]["state"] == "replayed"
        assert rows[INVOICES_ISSUED.name]["handling"]["operator"] == "bo"
        open_rows = client.get("/api/dead-letters").json()["letters"]
        assert not [r for r in open_rows if (r["key"] or "").startswith(f"{seller}:")]
        page = client.get("/dead-letters?state=all")
        assert "garbage from the old ERP" in page.text

    # The original went back to its topic once, under its key.
    sent_back = [
        r
        for r in read_topic(kafka_bootstrap, INVOICES_ISSUED.name)
        if r.key == key.encode() and r.value == invoice
    ]
    assert len(sent_back) == 1
    handled = [
        h
        for h in read_all(kafka_bootstrap, OPS_DEAD_LETTER_ACTIONS)
        if isinstance(h, DeadLetterHandled)
        and h.letter_id in {f"{r['dlq_topic']}:{r['partition']}:{r['offset']}" for r in rows.values()}
    ]
    assert sorted((h.action, h.operator) for h in handled) == [("replayed", "bo"), ("resolved", "ana")]
