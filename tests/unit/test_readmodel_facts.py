"""Facts as the status read model keeps them in Redis: the typed facts read back as they were written,
and their stored form is the one every earlier version wrote (so a model in Redis needs no rebuild)."""

from __future__ import annotations

import pytest

from ordersync.state.readmodel.facts import decode_fact, encode_fact, facts_of
from tests.factories import DEAD_LETTERED, OK, recorded_run

pytestmark = pytest.mark.unit

#: The stored form of some facts of the recorded run, as the first version of the model wrote them.
STORED = {
    (OK, "OrderEnriched"): (
        '{"at":"2026-11-20T12:02:00.000000Z","d":{"channel":"acme-us","fc":"MFN","items":[{"asin":'
        '"B000000001","currency":"USD","item_price":"20.00","order_item_id":"11111111111111",'
        '"quantity_ordered":2,"quantity_shipped":0,"seller_sku":"SKU-1","title":null}],"lud":'
        '"2026-11-20T12:00:00.000000Z","mkt":"ATVPDKIKX0DER","pd":"2026-11-17T12:00:00.000000Z",'
        '"status":"Unshipped"},"mkt":"ATVPDKIKX0DER","summary":"items fetched: 1 line(s) (Unshipped)",'
        '"topic":"amazon.orders.enriched","type":"OrderEnriched"}'
    ),
    (OK, "InvoiceIssued"): (
        '{"at":"2026-11-20T12:04:00.000000Z","d":{"code":"SO00000001","invoice":"INV-001","packages":'
        '[{"carrier_code":"UPS","carrier_name":null,"lines":[{"order_item_id":"11111111111111",'
        '"quantity":2,"seller_sku":null}],"ship_date":"2026-11-20T12:00:00Z","shipping_method":"Ground",'
        '"tracking_number":"1Z0000001"}]},"summary":"invoice INV-001 issued (1 package(s))","topic":'
        '"invoices.issued","type":"InvoiceIssued"}'
    ),
    (OK, "ShipmentRequested"): (
        '{"at":"2026-11-20T12:05:00.000000Z","d":{"carrier_code":"UPS","channel":"acme-us","items":'
        '[{"order_item_id":"11111111111111","quantity":2}],"package":"1","ship_date":'
        '"2026-11-20T12:00:00.000000Z","shipping_method":"Ground","source":"invoice INV-001",'
        '"tracking_number":"1Z0000001"},"summary":"package 1 requested: UPS 1Z0000001","topic":'
        '"shipments.requested","type":"ShipmentRequested"}'
    ),
    (DEAD_LETTERED, "EventDeadLettered"): (
        '{"at":"2026-11-20T12:23:00.000000Z","d":{"channel":"acme-us","error":"channel acme-us: tax rule '
        'refused the order","error_type":"Permanent","original":{"channel":"acme-us","fc":"MFN","items":'
        '[{"asin":"B000000001","currency":"USD","item_price":"20.00","order_item_id":"11111111111111",'
        '"quantity_ordered":2,"quantity_shipped":0,"seller_sku":"SKU-5","title":null}],"lud":'
        '"2026-11-20T12:00:00.000000Z","mkt":"ATVPDKIKX0DER","pd":"2026-11-15T12:00:00.000000Z","ssl":'
        'null,"status":"Unshipped"},"original_type":"OrderEnriched","processing_stage":"import",'
        '"source_offset":42,"source_partition":0,"source_topic":"amazon.orders.enriched","stage":"import"},'
        '"summary":"dead-lettered by import (amazon.orders.enriched): channel acme-us: tax rule refused '
        'the order","topic":"amazon.orders.enriched.dlq","type":"EventDeadLettered"}'
    ),
}


def test_every_fact_reads_back_as_written() -> None:
    for topic, envelope in recorded_run():
        for _, fact in facts_of(topic, envelope):
            assert decode_fact(fact.event_id, encode_fact(fact)) == fact


def test_the_stored_form_is_unchanged() -> None:
    stored = {
        (target.amazon_order_id, fact.event_type): encode_fact(fact)
        for topic, envelope in recorded_run()
        for target, fact in facts_of(topic, envelope)
    }
    for key, expected in STORED.items():
        assert stored[key] == expected, key
