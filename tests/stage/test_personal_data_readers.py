"""Who may read buyers' personal data on the dashboard (real Redis, moto's S3 for the keys, starlette's
TestClient): the operator token opens the buyer panel, its JSON and the CSV's personal columns, and
every opening is logged without the data; the read token, or no token, sees it hidden; an erased or
expired order says so instead of failing."""

from __future__ import annotations

import csv
import io
import logging
import uuid
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr
from starlette.testclient import TestClient

from ordersync.cli.privacy import erase_order
from ordersync.clock import ManualClock
from ordersync.dashboard import create_app
from ordersync.privacy import key_id_for, new_kek, seal, shred_after
from ordersync.privacy.keyring import KeyRing, open_key_ring
from ordersync.schemas.events import Address
from ordersync.settings import AwsSettings, PrivacySettings, Settings
from ordersync.state.readmodel import ReadModel
from ordersync.state.store import Store
from tests.factories import (
    CHANNEL,
    OPERATOR_TOKEN,
    SELLER,
    Orders,
    dashboard_settings,
    fill_read_model,
    one_line_sales_order,
    write_channels_file,
)

pytestmark = pytest.mark.stage

READ_TOKEN = "read-token-for-tests"
DELIVERED = datetime(2026, 12, 3, 15, tzinfo=UTC)
BUYER = {
    "buyer_name": "Jane Q. Buyer",
    "buyer_email": "jane.buyer@example.invalid",
    "address.name": "Jane Q. Buyer",
    "address.line1": "17 Larkspur Lane",
    "address.postal_code": "98101",
    "address.phone": "+1 206 555 0134",
}


async def _setup(
    redis_client: aioredis.Redis, prefix: str, settings: Settings, stack: AsyncExitStack
) -> tuple[Orders, str, KeyRing, ManualClock]:
    filled = await fill_read_model(ReadModel(redis_client, prefix, notify_dlq=False))
    order_id = filled.success[0]
    clock = ManualClock(DELIVERED)
    ring = await open_key_ring(settings.privacy, settings.aws, clock, stack)
    sealed = seal(BUYER, await ring.sealing_key(key_id_for(SELLER, DELIVERED)), f"{SELLER}:{order_id}")
    sales = one_line_sales_order(SELLER, order_id, channel=CHANNEL, order_item_id="1", quantity=1)
    sales = sales.model_copy(
        update={
            "customer_name": None,
            "shipping_address": Address(city="Seattle", country_code="US"),
            "personal": sealed,
        }
    )
    await Store(redis_client, prefix).save_sales_order(sales)
    return filled, order_id, ring, clock


@pytest.fixture
def settings(redis_url: str, redis_key_prefix: str, tmp_path: Path, aws: AwsSettings) -> Settings:
    """The dashboard's settings with a key-encryption key and a key bucket of the test's own."""
    base = dashboard_settings(redis_url, redis_key_prefix, write_channels_file(tmp_path / "channels.yaml"))
    privacy = PrivacySettings(key_bucket=f"keys-{uuid.uuid4().hex[:12]}", kek=SecretStr(new_kek()))
    return base.model_copy(update={"privacy": privacy, "aws": aws})


async def test_only_the_operator_token_opens_the_buyer_and_each_opening_is_logged(
    redis_client: aioredis.Redis,
    redis_key_prefix: str,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with AsyncExitStack() as stack:
        _, order_id, _, clock = await _setup(redis_client, redis_key_prefix, settings, stack)
    page_path = f"/orders/{SELLER}/{order_id}"
    personal_path = f"/api/orders/{SELLER}/{order_id}/personal"
    operator = {"x-operator-token": OPERATOR_TOKEN}
    caplog.set_level(logging.INFO, logger="ordersync.privacy.access")
    with TestClient(create_app(settings, clock)) as client:
        # Without the operator token: hidden everywhere, refused where asked for outright.
        page = client.get(page_path)
        assert page.status_code == 200
        assert 'data-state="hidden"' in page.text
        assert "Larkspur" not in page.text
        assert client.get(personal_path).status_code == 403
        assert client.get("/export.csv", params={"personal": "1"}).status_code == 403
        plain = client.get("/export.csv").text
        assert "buyer_name" not in plain.splitlines()[0]
        assert caplog.records == []

        # With it: opened, and the opening logged without the data.
        opened = client.get(page_path, headers=operator)
        assert 'data-state="open"' in opened.text
        assert "17 Larkspur Lane" in opened.text
        assert "jane.buyer@example.invalid" in opened.text
        answer = client.get(personal_path, headers=operator).json()
        assert answer["state"] == "open"
        assert answer["fields"]["address.phone"] == "+1 206 555 0134"
        exported = client.get("/export.csv", params={"personal": "1"}, headers=operator)
        rows = list(csv.DictReader(io.StringIO(exported.text)))
        ours = [row for row in rows if row["amazon_order_id"] == order_id]
        assert ours
        assert ours[0]["ship_to_line1"] == "17 Larkspur Lane"
        assert ours[0]["personal_data"] == "open"
        # An order imported without personal data says so.
        assert {row["personal_data"] for row in rows if row["amazon_order_id"] != order_id} <= {
            "not imported",
            "none",
        }
        logged = [r.getMessage() for r in caplog.records]
        assert any(f"{SELLER}:{order_id}" in line and "order page" in line for line in logged)
        assert any("CSV export" in line for line in logged)
        assert not any("Larkspur" in line or "Jane" in line for line in logged)

        # A sign-in with the operator token opens it in the browser too; the read token does not.
        assert client.post("/login", data={"token": OPERATOR_TOKEN, "next": page_path}).status_code == 200
        assert 'data-state="open"' in client.get(page_path).text
        client.cookies.clear()

    read_only = settings.model_copy(
        update={"dashboard": settings.dashboard.model_copy(update={"read_token": SecretStr(READ_TOKEN)})}
    )
    with TestClient(create_app(read_only, clock)) as client:
        page = client.get(page_path, headers={"authorization": f"Bearer {READ_TOKEN}"})
        assert 'data-state="hidden"' in page.text
        assert client.get(personal_path, headers={"authorization": f"Bearer {READ_TOKEN}"}).status_code == 403


async def test_erased_and_expired_data_are_said_to_be_gone(
    redis_client: aioredis.Redis,
    redis_key_prefix: str,
    settings: Settings,
) -> None:
    operator = {"x-operator-token": OPERATOR_TOKEN}
    async with AsyncExitStack() as stack:
        filled, order_id, ring, clock = await _setup(redis_client, redis_key_prefix, settings, stack)
        personal_path = f"/api/orders/{SELLER}/{order_id}/personal"
        key_id = key_id_for(SELLER, DELIVERED)
        store = Store(redis_client, redis_key_prefix)
        model = ReadModel(redis_client, redis_key_prefix, notify_dlq=False)
        erase = partial(
            erase_order, ring, store, model, by="privacy officer", note="request 42", shred_day=False
        )
        with pytest.raises(ValueError, match="not in the status model"):
            await erase("999-0000000-0000000", channel=None, key_id=None)
        with pytest.raises(ValueError, match="holds personal data; give --key-id"):
            await erase(filled.success[1], channel=None, key_id=None)  # imported without personal data
        erased = await erase(order_id, channel=None, key_id=None)  # the key read from its sales order
        assert (erased.subject, erased.key_id) == (f"{SELLER}:{order_id}", key_id)
        with TestClient(create_app(settings, clock)) as client:
            answer = client.get(personal_path, headers=operator).json()
            assert answer["state"] == "erased"
            assert answer["fields"] == {}
            assert "erased on request" in answer["note"]
        clock.advance((shred_after(key_id) - clock.now()).total_seconds())
        assert await ring.shred_due() == [key_id]
        with TestClient(create_app(settings, clock)) as client:
            answer = client.get(personal_path, headers=operator).json()
            assert answer["state"] == "expired"
            page = client.get(f"/orders/{SELLER}/{order_id}", headers=operator)
            assert page.status_code == 200
            assert 'data-state="expired"' in page.text
