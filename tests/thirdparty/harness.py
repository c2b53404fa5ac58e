"""The third-party tier's harness: python-amazon-sp-api (``sp_api``), unchanged, against the
simulator over HTTPS.

The library is configured only through what it offers its users:

* ``credentials`` (``lwa_app_id``, ``lwa_client_secret``, ``refresh_token``), the documented dict;
* ``marketplace``: the clients read a marketplace's ``endpoint``, ``marketplace_id`` and ``region``
  (docs/architecture.rst: "Marketplaces ... expose the SP-API endpoint URL, the marketplaceId, the
  region"); 2.1.x has no other endpoint override (no ``endpoint`` argument, no environment variable),
  so :class:`SimulatorMarketplace` is a marketplace with the simulator's endpoint;
* ``auth_token_client_class``: the clients build their LWA client from this class; 2.1.x has no
  setting for the LWA URL either (``AccessTokenClient`` posts to its ``scheme + host + path``), so
  :func:`lwa_client_class` is that class with the simulator's host;
* ``verify``: the TLS trust of the clients' and the LWA client's HTTP transports.

Why HTTPS: the library derives the ``Host`` header from the endpoint as ``endpoint[8:]``, i.e. it
assumes ``https://`` (Amazon serves nothing else); over ``http://`` it would send ``Host:
27.0.0.1:…`` and the simulator's presigned document URLs would point there. So the simulator is served
with a throw-away test CA (trustme). The document upload and download (``create_feed_document``,
``get_feed_document``) use a bare ``httpx.Client()`` that ignores the client's ``verify``; they trust
the CA through ``SSL_CERT_FILE``, httpx's own environment setting.

Every response the library receives is recorded on the server side (:class:`WireRecorder`) and, at
the end of each test, validated against the operation's response in Amazon's models for its status
code (:func:`ordersync.simulator.testing.validate_response`, the conformance tests' validator).
"""

from __future__ import annotations

import json
import re
import ssl
import uuid
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import trustme
import uvicorn
from sp_api.auth import AccessTokenClient
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ordersync.amazon.models import load_model
from ordersync.simulator.app import create_app
from ordersync.simulator.runner import RunningSimulator
from ordersync.simulator.scenario import Scenario
from ordersync.simulator.state import OPERATIONS, SimulatorState
from ordersync.simulator.testing import TEST_CLIENT_ID, TEST_CLIENT_SECRET, tiny_scenario, validate_response

US = "ATVPDKIKX0DER"
LOOPBACK = "127.0.0.1"


# --- what went over the wire -----------------------------------------------------------------------


@dataclass
class Exchange:
    """One HTTP request to the simulator and the response the client received."""

    method: str
    path: str
    query: str
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class WireRecorder:
    """ASGI middleware keeping every request's method, path and the full response sent back.

    It also answers ``Connection: close``: the library never closes its LWA client's connection, and
    over TLS an idle connection left open holds the server's shutdown until the TLS close times out.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.exchanges: list[Exchange] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        exchange = Exchange(scope["method"], scope["path"], scope.get("query_string", b"").decode())
        self.exchanges.append(exchange)

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                exchange.status = message["status"]
                exchange.headers = {k.decode(): v.decode() for k, v in message.get("headers", [])}
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            elif message["type"] == "http.response.body":
                exchange.body += message.get("body", b"")
            await send(message)

        await self.app(scope, receive, recording_send)


@cache
def _operation_routes() -> tuple[tuple[str, re.Pattern[str], str], ...]:
    """(HTTP method, path pattern, simulator operation key) of every operation, from Amazon's models."""
    routes: list[tuple[str, re.Pattern[str], str]] = []
    for key, op in OPERATIONS.items():
        for template, methods in load_model(op.api)["paths"].items():
            for method, spec in methods.items():
                if isinstance(spec, dict) and spec.get("operationId") == op.operation_id:
                    pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
                    routes.append((method.upper(), re.compile(f"^{pattern}$"), key))
    return tuple(routes)


def operation_of(method: str, path: str) -> str | None:
    """The simulator's key of the SP-API operation a request calls (``getOrder@2026-01-01`` ...)."""
    for route_method, pattern, key in _operation_routes():
        if route_method == method and pattern.match(path):
            return key
    return None


# --- the simulator over HTTPS --------------------------------------------------------------------------


@dataclass(frozen=True)
class Tls:
    server_cert: Path
    server_key: Path
    ca_bundle: Path

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_bundle))


def make_tls(directory: Path) -> Tls:
    """A throw-away CA and a certificate for 127.0.0.1 signed by it, as files in ``directory``."""
    ca = trustme.CA()
    server = ca.issue_cert(LOOPBACK)
    files = Tls(directory / "server.pem", directory / "server.key", directory / "ca.pem")
    server.cert_chain_pems[0].write_to_path(str(files.server_cert))
    for extra in server.cert_chain_pems[1:]:
        extra.write_to_path(str(files.server_cert), append=True)
    server.private_key_pem.write_to_path(str(files.server_key))
    ca.cert_pem.write_to_path(str(files.ca_bundle))
    return files


class HttpsSimulator(RunningSimulator):
    """:class:`RunningSimulator` over TLS, recording the wire."""

    name = "simulator (https)"

    def __init__(self, state: SimulatorState, tls: Tls) -> None:
        self.tls = tls
        self.recorder = WireRecorder(create_app(state))
        super().__init__(state, host=LOOPBACK)

    def config(self, host: str, port: int, log_level: str) -> uvicorn.Config:
        return uvicorn.Config(
            self.recorder,
            host=host,
            port=port,
            log_level=log_level,
            access_log=False,
            lifespan="off",
            ssl_certfile=str(self.tls.server_cert),
            ssl_keyfile=str(self.tls.server_key),
            # Should a connection stay open all the same (see WireRecorder), stop waiting after 1 s.
            timeout_graceful_shutdown=1,
        )

    @property
    def base_url(self) -> str:
        return f"https://{LOOPBACK}:{self.port}"

    @property
    def exchanges(self) -> list[Exchange]:
        return self.recorder.exchanges

    # --- the control API, over HTTPS like everything else ---

    def control(self, method: str, path: str, body: Any = None) -> Any:
        with httpx.Client(base_url=self.base_url, verify=self.tls.client_context(), timeout=10) as http:
            response = http.request(method, path, json=body)
        response.raise_for_status()
        return response.json() if response.content else None

    def advance_clock(self, seconds: float) -> None:
        self.control("POST", "/_sim/clock/advance", {"seconds": seconds})

    # --- what the library received ---

    def sp_api_exchanges(self, operation: str | None = None) -> list[tuple[str, Exchange]]:
        found = [(operation_of(e.method, e.path), e) for e in self.exchanges]
        return [(op, e) for op, e in found if op is not None and operation in (None, op)]

    def assert_conforms(self) -> int:
        """Validate every SP-API response sent so far against Amazon's models; returns how many."""
        checked = 0
        for key, exchange in self.sp_api_exchanges():
            op = OPERATIONS[key]
            try:
                validate_response(op.api, op.operation_id, exchange.status, exchange.json(), exchange.headers)
            except Exception as exc:
                raise AssertionError(
                    f"{exchange.method} {exchange.path}?{exchange.query} answered {exchange.status} "
                    f"{exchange.body[:500]!r}, which {op.api} {op.operation_id} does not allow: {exc}"
                ) from exc
            checked += 1
        for exchange in self.exchanges:
            if exchange.path == "/auth/o2/token":
                assert exchange.status == 200, exchange.body
                assert exchange.json()["token_type"] == "bearer"
        return checked


def thirdparty_scenario(**top: Any) -> Scenario:
    """The tier's seller: the test seller with its own refresh token (the library caches access
    tokens process-wide by refresh token, so each simulator gets a token no other one issued), a
    frozen clock (``time_scale: 0``; tests move it through ``/_sim/clock/advance``), feeds that
    queue one second and process one, and a few dozen unshipped seller-fulfilled orders."""
    refresh_token = f"Atzr|thirdparty-{uuid.uuid4().hex}"
    application = {
        "client_id": TEST_CLIENT_ID,
        "client_secret": TEST_CLIENT_SECRET,
        "refresh_token": refresh_token,
    }
    top.setdefault(
        "feeds",
        {"queue_delay_s": [1, 1], "duration_s": [1, 1], "stall_share": 0, "compress_reports": True},
    )
    return tiny_scenario(orders={"count": 45}, seller={"applications": [application]}, **top)


# --- the library's configuration --------------------------------------------------------------------


@dataclass(frozen=True)
class SimulatorMarketplace:
    """A marketplace as the library's clients read one (``Marketplaces.US``'s three attributes),
    served by the simulator."""

    endpoint: str
    marketplace_id: str = US
    region: str = "us-east-1"


def lwa_client_class(sim: HttpsSimulator) -> type[AccessTokenClient]:
    """``AccessTokenClient`` for the simulator's LWA: it requests ``scheme + host + path``."""
    return type("SimulatorAccessTokenClient", (AccessTokenClient,), {"host": f"{LOOPBACK}:{sim.port}"})


def client_kwargs_for(sim: HttpsSimulator) -> dict[str, Any]:
    """Keyword arguments for any of the library's clients, aimed at ``sim``: the documented
    credentials dict, the marketplace (endpoint), the LWA client class, TLS trust, a timeout."""
    app = sim.state.scenario.sellers[0].applications[0]
    return {
        "marketplace": SimulatorMarketplace(sim.base_url),
        "credentials": {
            "refresh_token": app.refresh_token,
            "lwa_app_id": app.client_id,
            "lwa_client_secret": app.client_secret,
        },
        "auth_token_client_class": lwa_client_class(sim),
        "verify": sim.tls.client_context(),
        "timeout": 10,
    }
