"""The simulator over real HTTP: RunningSimulator (uvicorn in a thread), httpx, and the CLI."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from ordersync.simulator import RunningSimulator, SimulatorState
from ordersync.simulator.clock import epoch_to_iso
from ordersync.simulator.testing import TEST_SELLER, lwa_form, tiny_scenario, validate_against_model

pytestmark = pytest.mark.stage

US = "ATVPDKIKX0DER"


@pytest.fixture
def sim() -> Iterator[RunningSimulator]:
    state = SimulatorState(tiny_scenario(orders={"count": 250}))
    with RunningSimulator(state) as running:
        yield running


@pytest.fixture
def http(sim: RunningSimulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.base_url, timeout=10) as client:
        yield client


def login(http: httpx.Client, sim: RunningSimulator) -> dict[str, str]:
    response = http.post("/auth/o2/token", data=lwa_form(sim.state.scenario))
    assert response.status_code == 200, response.text
    return {"x-amz-access-token": response.json()["access_token"]}


def test_lwa_over_http_form_and_refusals(sim: RunningSimulator, http: httpx.Client) -> None:
    form = lwa_form(sim.state.scenario)
    assert http.post(sim.lwa_url, data=form).json()["token_type"] == "bearer"
    assert http.post(sim.lwa_url, json=form).status_code == 200  # LWA accepts JSON too
    refused = http.post(sim.lwa_url, data={**form, "refresh_token": "Atzr|other"})
    assert (refused.status_code, refused.json()["error"]) == (400, "invalid_grant")
    assert http.post(sim.lwa_url, data={**form, "client_secret": "no"}).status_code == 401


def test_403_without_token_carries_request_id_only(http: httpx.Client) -> None:
    response = http.get(
        "/orders/v0/orders", params={"MarketplaceIds": US, "LastUpdatedAfter": "2026-01-01T00:00:00Z"}
    )
    assert response.status_code == 403
    assert response.json()["errors"][0]["code"] == "Unauthorized"
    assert response.headers["x-amzn-RequestId"]
    assert "x-amzn-RateLimit-Limit" not in response.headers


def test_get_orders_pages_over_http_and_validates(sim: RunningSimulator, http: httpx.Client) -> None:
    headers = login(http, sim)
    now = sim.state.now()
    params = {
        "MarketplaceIds": US,
        "LastUpdatedAfter": epoch_to_iso(now - 3 * 86400),
        "MaxResultsPerPage": "100",
    }
    seen: list[str] = []
    while True:
        response = http.get("/orders/v0/orders", params=params, headers=headers)
        assert response.status_code == 200, response.text
        assert response.headers["x-amzn-RateLimit-Limit"] == "0.0167"
        body = response.json()
        validate_against_model("orders-v0", "GetOrdersResponse", body)
        seen.extend(o["AmazonOrderId"] for o in body["payload"]["Orders"])
        token = body["payload"].get("NextToken")
        if not token:
            break
        # httpx URL-encodes the token's + / = as a correct client must.
        params = {"MarketplaceIds": US, "NextToken": token}
    expected = {
        o["amazon_order_id"] for o in sim.state.truth_orders() if o["last_updated"] <= epoch_to_iso(now - 120)
    }
    assert len(seen) == len(set(seen))
    assert set(seen) == expected


def test_repeated_query_key_reads_the_first_value(sim: RunningSimulator, http: httpx.Client) -> None:
    headers = login(http, sim)
    after = epoch_to_iso(sim.state.now() - 86400)
    query = httpx.QueryParams(
        [("MarketplaceIds", "A2EUQ1WTGCTBG2"), ("MarketplaceIds", US), ("LastUpdatedAfter", after)]
    )
    assert http.get("/orders/v0/orders", params=query, headers=headers).status_code == 400


def test_confirm_shipment_over_http_shows_in_the_truth_api(sim: RunningSimulator, http: httpx.Client) -> None:
    headers = login(http, sim)
    order = http.get("/_sim/orders", params={"status": "Unshipped"}).json()["orders"][0]
    body = {
        "marketplaceId": order["marketplace_id"],
        "packageDetail": {
            "packageReferenceId": "1",
            "carrierCode": "UPS",
            "trackingNumber": "1Z999",
            "shipDate": "2026-01-05T08:00:00Z",
            "orderItems": [
                {"orderItemId": i["order_item_id"], "quantity": i["quantity_ordered"]} for i in order["items"]
            ],
        },
    }
    path = f"/orders/v0/orders/{order['amazon_order_id']}/shipmentConfirmation"
    response = http.post(path, json=body, headers=headers)
    assert response.status_code == 204
    assert response.content == b""
    assert response.headers["x-amzn-RateLimit-Limit"] == "2.0"
    truth = http.get(f"/_sim/orders/{order['amazon_order_id']}").json()
    assert truth["status"] == "Shipped"
    assert truth["shipments"][0]["tracking_number"] == "1Z999"
    again = http.post(
        path,
        json={**body, "packageDetail": {**body["packageDetail"], "packageReferenceId": "2"}},
        headers=headers,
    )
    assert again.json()["errors"][0]["code"] == "PackageToUpdateNotFound"
    assert http.post(path, content=b"{not json", headers=headers).status_code == 400


def test_throttling_and_counters_over_http(sim: RunningSimulator, http: httpx.Client) -> None:
    headers = login(http, sim)
    params = {"MarketplaceIds": US, "LastUpdatedAfter": epoch_to_iso(sim.state.now() - 3600)}
    statuses = [http.get("/orders/v0/orders", params=params, headers=headers).status_code for _ in range(22)]
    assert statuses == [200] * 20 + [429] * 2
    throttled = http.get("/orders/v0/orders", params=params, headers=headers)
    assert throttled.json()["errors"][0]["code"] == "QuotaExceeded"
    assert "x-amzn-RateLimit-Limit" not in throttled.headers
    counters = http.get("/_sim/counters").json()
    get_orders = counters["sellers"][TEST_SELLER]["getOrders"]
    assert (get_orders["calls"], get_orders["throttled"]) == (23, 3)
    row = next(r for r in counters["operations"] if r["operation"] == "getOrders")
    assert (row["seller_id"], row["calls"], row["throttled"]) == (TEST_SELLER, 23, 3)
    clock = http.post("/_sim/clock/advance", json={"seconds": 61}).json()
    assert clock["time_scale"] == 0
    assert http.get("/orders/v0/orders", params=params, headers=headers).status_code == 200


def test_control_api(sim: RunningSimulator, http: httpx.Client) -> None:
    created = http.post("/_sim/orders", json={"items": [{"unmapped": True}], "pending_s": 60})
    assert created.status_code == 201
    order_id = created.json()["amazon_order_id"]
    assert created.json()["status"] == "Pending"
    assert (
        http.post(f"/_sim/orders/{order_id}/status", json={"status": "Canceled"}).json()["status"]
        == "Canceled"
    )
    assert http.post(f"/_sim/orders/{order_id}/status", json={"status": "Shipped"}).status_code == 400
    assert http.get("/_sim/orders/111-0000000-0000000").status_code == 404
    assert http.post("/_sim/orders", json={"bogus": 1}).status_code == 400
    assert len(http.get("/_sim/catalogue").json()[TEST_SELLER]) == 10
    scenario = http.get("/_sim/scenario").json()
    assert scenario["sellers"][0]["applications"] == [{"client_id": "amzn1.application-oa2-client.test"}]
    assert http.post("/_sim/faults", json={"http_503": 1.0}).status_code == 200
    headers = login(http, sim)
    unavailable = http.get(f"/orders/v0/orders/{order_id}", headers=headers)
    assert unavailable.status_code == 503
    assert "x-amzn-RateLimit-Limit" not in unavailable.headers
    http.post("/_sim/faults", json={})
    assert http.get(f"/orders/v0/orders/{order_id}", headers=headers).status_code == 200
    assert http.post("/_sim/tokens/revoke").json()["revoked"] >= 1
    assert http.get(f"/orders/v0/orders/{order_id}", headers=headers).status_code == 403


async def test_async_context_and_scaled_refill_in_real_time() -> None:
    # 120 simulated seconds per real second: a getOrders token (every ~60 s) comes back in ~0.5 s.
    state = SimulatorState(tiny_scenario(time_scale=120, start=None))
    async with RunningSimulator(state) as sim, httpx.AsyncClient(base_url=sim.base_url, timeout=10) as http:
        token = (await http.post("/auth/o2/token", data=lwa_form(state.scenario))).json()["access_token"]
        headers = {"x-amz-access-token": token}
        params = {"MarketplaceIds": US, "LastUpdatedAfter": epoch_to_iso(state.now() - 3600)}
        statuses = [
            (await http.get("/orders/v0/orders", params=params, headers=headers)).status_code
            for _ in range(21)
        ]
        assert 429 in statuses
        await asyncio.sleep(0.6)
        assert (await http.get("/orders/v0/orders", params=params, headers=headers)).status_code == 200


def test_running_simulator_loads_a_built_in_scenario_by_name() -> None:
    with RunningSimulator("demo", seed=2, time_scale=0) as sim:
        clock = httpx.get(f"{sim.base_url}/_sim/clock", timeout=10).json()
        assert clock["time_scale"] == 0
        assert clock["orders"] + clock["orders_upcoming"] == 328
        assert sim.state.scenario.seed == 2
        assert sim.state.catalogue("A1DEMOSELLERUS")[0].sku == "US-MUG-001"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_cli_serves_a_scenario_and_logs_its_url() -> None:
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "ordersync.cli",
        "sim",
        "serve",
        "--port",
        str(port),
        "--scenario",
        "demo",
        "--time-scale",
        "20",
        "--seed",
        "3",
    ]
    process = subprocess.Popen(
        command, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    try:
        deadline = time.monotonic() + 20
        clock = None
        while time.monotonic() < deadline:
            try:
                clock = httpx.get(f"http://127.0.0.1:{port}/_sim/clock", timeout=1).json()
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        assert clock is not None, "the CLI simulator did not answer"
        assert clock["time_scale"] == 20
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=10)
    assert f"http://127.0.0.1:{port}" in stderr
