"""Listings on the dashboard, on the real Redis and the embedded broker: a CSV uploaded in the page lands
on channel.listings and in Redis, the grid searches any part of a SKU, stock code, ASIN or EAN whatever
the case, one row is fixed by hand, a wrong file is refused whole with every problem, and with Kafka
down nothing is written anywhere. Each change is audited."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis.asyncio as aioredis
from starlette.testclient import TestClient

from ordersync.dashboard import create_app
from ordersync.ops.audit import AuditFilter, AuditLog
from ordersync.schemas.events import ListingChanged
from ordersync.schemas.topics import CHANNEL_LISTINGS
from ordersync.state.listings import listing_rows
from ordersync.state.store import Store
from tests.factories import CHANNEL, OPERATOR_TOKEN, dashboard_settings, write_channels_file
from tests.topics import read_all, wait_for

pytestmark = pytest.mark.integration

NO_BROKER = "127.0.0.1:1"
ACT = {"X-Operator-Token": OPERATOR_TOKEN}
CSV = """Client SKU Id,Channel Serial No.,Channel SKU Id,EAN,ASIN,Merchant SKU
MUG-RED,,,4006381333931,B0MUGRED01,Red-Mug-11oz
MUG-BLUE,,,,B0MUGBLUE1,blue-mug-11oz
TEE-L,,,,,TEE-Large
"""


def _listed(bootstrap: str, sku: str) -> list[ListingChanged]:
    return [
        e
        for e in read_all(bootstrap, CHANNEL_LISTINGS)
        if isinstance(e, ListingChanged) and e.merchant_sku == sku
    ]


@pytest.mark.usefixtures("topics")
async def test_upload_search_and_fix_one_row(
    redis_url: str, redis_key_prefix: str, redis_client: aioredis.Redis, kafka_bootstrap: str, tmp_path: Path
) -> None:
    channels = write_channels_file(tmp_path / "channels.yaml")
    settings = dashboard_settings(redis_url, redis_key_prefix, channels, kafka_bootstrap=kafka_bootstrap)
    store = Store(redis_client, redis_key_prefix)
    with TestClient(create_app(settings)) as client:
        answer = client.post("/api/listings/upload", json={"channel": CHANNEL, "csv": CSV}, headers=ACT)
        assert answer.status_code == 200, answer.text
        assert answer.json()["loaded"] == 3
        rows = await listing_rows(store, CHANNEL)
        assert {sku: r.stock_code for sku, r in rows.items()} == {
            "Red-Mug-11oz": "MUG-RED",
            "blue-mug-11oz": "MUG-BLUE",
            "TEE-Large": "TEE-L",
        }
        wait_for(lambda: len(_listed(kafka_bootstrap, "Red-Mug-11oz")) == 1, timeout_s=30)

        # Search: any part, any case, of any identifier.
        found = client.get("/api/listings", params={"channel": CHANNEL, "q": "mug-11"}).json()
        assert sorted(r["seller_sku"] for r in found["rows"]) == ["Red-Mug-11oz", "blue-mug-11oz"]
        assert client.get("/api/listings", params={"channel": CHANNEL, "q": "b0mugblue"}).json()["total"] == 1
        assert client.get("/api/listings", params={"channel": CHANNEL, "q": "333931"}).json()["total"] == 1
        page = client.get("/listings", params={"channel": CHANNEL, "q": "tee"}).text
        assert 'data-sku="TEE-Large"' in page
        assert 'data-sku="Red-Mug-11oz"' not in page

        # One row fixed by hand: the stock code of the large tee changes.
        fixed = client.post(
            "/api/listings/row",
            json={"channel": CHANNEL, "row": {"Merchant SKU": "TEE-Large", "Client SKU Id": "TEE-L-2026"}},
            headers=ACT,
        )
        assert fixed.status_code == 200, fixed.text
        assert (await listing_rows(store, CHANNEL))["TEE-Large"].stock_code == "TEE-L-2026"
        wait_for(
            lambda: (
                [e.client_sku_id for e in _listed(kafka_bootstrap, "TEE-Large")] == ["TEE-L", "TEE-L-2026"]
            )
        )

        # A wrong file is refused whole, every problem named, nothing written.
        bad = "Client SKU Id,Merchant SKU\nMUG-GREEN,green-mug\n,no-code\nX," + "s" * 41 + "\n"
        refused = client.post("/api/listings/upload", json={"channel": CHANNEL, "csv": bad}, headers=ACT)
        assert refused.status_code == 422
        problems = refused.json()["problems"]
        assert any("line 3: Client SKU Id is empty" in p for p in problems)
        assert any("line 4: seller SKU of 41 characters" in p for p in problems)
        assert "green-mug" not in await listing_rows(store, CHANNEL)
        too_long = client.post(
            "/api/listings/row",
            json={"channel": CHANNEL, "row": {"Merchant SKU": "s" * 41, "Client SKU Id": "X"}},
            headers=ACT,
        )
        assert too_long.status_code == 422
        assert (
            client.post(
                "/api/listings/upload", json={"channel": "nowhere", "csv": CSV}, headers=ACT
            ).status_code
            == 404
        )
        assert client.post("/api/listings/upload", json={"channel": CHANNEL, "csv": CSV}).status_code == 403

    trail = AuditLog(redis_client, redis_key_prefix)
    entries = [e for _, e in (await trail.page(AuditFilter(), limit=100)).entries]
    assert sorted((e.action, e.outcome) for e in entries if e.action.startswith("listings.")) == [
        ("listings.row", "refused"),
        ("listings.row", "sent"),
        ("listings.upload", "refused"),
        ("listings.upload", "refused"),
        ("listings.upload", "refused"),
        ("listings.upload", "sent"),
    ]


async def test_with_kafka_down_nothing_is_loaded(
    redis_url: str, redis_key_prefix: str, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    channels = write_channels_file(tmp_path / "channels.yaml")
    settings = dashboard_settings(redis_url, redis_key_prefix, channels, kafka_bootstrap=NO_BROKER)
    with TestClient(create_app(settings)) as client:
        answer = client.post("/api/listings/upload", json={"channel": CHANNEL, "csv": CSV}, headers=ACT)
        assert answer.status_code == 503
        assert "nothing was loaded" in answer.json()["error"]
    assert await listing_rows(Store(redis_client, redis_key_prefix), CHANNEL) == {}
