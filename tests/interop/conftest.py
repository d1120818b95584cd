"""Fixtures for the RabbitMQ interoperability suite: one real RabbitMQ 3.10 node and one FerryMQ
broker, both started by the suite itself for the whole session.

    # needs: apt-get install -y rabbitmq-server; pip install requests pika pytest
    python3 -m pytest tests/interop -q

- RabbitMQ is started with tests/fixtures/rabbitmq.sh on free non-default ports (its own node
  name, mnesia dir and Erlang cookie) and stopped at the end of the session. Boot takes 10-40 s.
  When rabbitmq-server is not installed the fixture FAILS (it does not skip): this suite exists
  to prove interoperability, and a green run without RabbitMQ would prove nothing.
- FerryMQ is started from target/debug/ferrymq (override with FERRYMQ_BIN=/path/to/ferrymq) with a
  temporary data dir, and terminated at the end. Its stdout is captured to a file; when a test
  fails, the tail of that log (and of the RabbitMQ node's log) is attached to the report.

Helpers (Api, poll, q) come from tests/http/mgmtapi.py. Tests use uuid-based names and delete
what they create, so test order does not matter and one node serves the whole session.
"""

from __future__ import annotations

import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pika
import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "http"))

from mgmtapi import HOST, PASSWORD, USER, Api  # noqa: E402

RABBITMQ_SH = REPO / "tests" / "fixtures" / "rabbitmq.sh"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


class BrokerApi(Api):
    """mgmtapi.Api aimed at an explicit base URL (mgmtapi reads its port from the environment)."""

    def __init__(self, http_port: int, auth: tuple[str, str] | None = (USER, PASSWORD)):
        self.base = f"http://{HOST}:{http_port}"
        self.session = requests.Session()
        self.session.auth = auth


@dataclass
class Broker:
    kind: str  # "rabbitmq" | "ferrymq"
    amqp_port: int
    http_port: int
    api: BrokerApi
    log_path: Path

    def params(self, **overrides) -> pika.ConnectionParameters:
        settings = dict(
            host=HOST,
            port=self.amqp_port,
            virtual_host="/",
            credentials=pika.PlainCredentials(USER, PASSWORD),
            connection_attempts=1,
            socket_timeout=5,
            blocked_connection_timeout=30,
            heartbeat=30,
        )
        settings.update(overrides)
        return pika.ConnectionParameters(**settings)

    def amqp_uri(self, port: int | None = None) -> str:
        return f"amqp://{USER}:{PASSWORD}@{HOST}:{port or self.amqp_port}"

    def log_tail(self, lines: int = 80) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(cannot read {self.log_path}: {exc})"
        return ANSI.sub("", "\n".join(text.splitlines()[-lines:]))


# --------------------------------------------------------------------------
# Ports
# --------------------------------------------------------------------------


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _rabbit_ports() -> tuple[int, int]:
    """AMQP and management ports for a RabbitMQ node; its distribution port is AMQP + 20000."""
    for _ in range(200):
        amqp = random.randint(21000, 44000)
        mgmt = random.randint(10000, 19999)
        if mgmt == 15672:
            continue
        if all(_port_free(p) for p in (amqp, mgmt, amqp + 20000)):
            return amqp, mgmt
    raise RuntimeError("no free ports for RabbitMQ")


def _ephemeral_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------
# Brokers (session)
# --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def rabbitmq():
    if subprocess.run(["bash", str(RABBITMQ_SH), "installed"]).returncode != 0:
        pytest.fail(
            "rabbitmq-server is not installed; the interop suite needs a real RabbitMQ 3.10 node "
            "(apt-get install -y rabbitmq-server)",
            pytrace=False,
        )
    name = f"ferryinterop{os.getpid()}"
    amqp, mgmt = _rabbit_ports()
    started = subprocess.run(
        ["bash", str(RABBITMQ_SH), "start", name, str(amqp), str(mgmt)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    if started.returncode != 0:
        subprocess.run(["bash", str(RABBITMQ_SH), "stop", name], capture_output=True, timeout=120)
        pytest.fail(
            f"RabbitMQ node {name} did not start (amqp {amqp}, management {mgmt}):\n"
            f"{started.stdout}\n{started.stderr}",
            pytrace=False,
        )
    log = Path(f"/tmp/ferrymq-rabbit/{name}/log/{name}@localhost.log")
    try:
        yield Broker("rabbitmq", amqp, mgmt, BrokerApi(mgmt), log)
    finally:
        subprocess.run(["bash", str(RABBITMQ_SH), "stop", name], capture_output=True, timeout=180)


@pytest.fixture(scope="session")
def ferrymq(tmp_path_factory):
    binary = Path(os.environ.get("FERRYMQ_BIN") or REPO / "target" / "debug" / "ferrymq")
    if not os.access(binary, os.X_OK):
        pytest.fail(f"FerryMQ binary {binary} is missing or not executable (cargo build, or set FERRYMQ_BIN)", pytrace=False)
    work = tmp_path_factory.mktemp("ferrymq")
    log_path = work / "ferrymq.stdout"
    amqp, http = _ephemeral_port(), _ephemeral_port()
    env = dict(os.environ, NO_COLOR="1")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(binary), "--amqp-bind", f"{HOST}:{amqp}", "--http-bind", f"{HOST}:{http}", "--data-dir", str(work / "data")],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    broker = Broker("ferrymq", amqp, http, BrokerApi(http), log_path)
    try:
        deadline = time.monotonic() + 30
        while "HTTP management API ready" not in ANSI.sub("", log_path.read_text(errors="replace")):
            if proc.poll() is not None:
                pytest.fail(f"FerryMQ exited with {proc.returncode} during start:\n{broker.log_tail()}", pytrace=False)
            if time.monotonic() > deadline:
                pytest.fail(f"FerryMQ not ready within 30 s:\n{broker.log_tail()}", pytrace=False)
            time.sleep(0.05)
        yield broker
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On failure, attach the tail of each broker's log to the report."""
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed:
        return
    for fixture in ("ferrymq", "rabbitmq"):
        broker = getattr(item, "funcargs", {}).get(fixture)
        if isinstance(broker, Broker):
            rep.sections.append((f"{fixture} log tail ({broker.log_path})", broker.log_tail()))


# --------------------------------------------------------------------------
# Per-test helpers
# --------------------------------------------------------------------------


@pytest.fixture
def cleanup():
    """Register callables to run at teardown, last registered first; failures are ignored."""
    actions: list[Callable[[], object]] = []
    yield actions.append
    for action in reversed(actions):
        try:
            action()
        except Exception:
            pass


@pytest.fixture
def connect():
    """connect(broker, **params) -> an open pika BlockingConnection, closed at teardown."""
    opened: list[pika.BlockingConnection] = []

    def _connect(broker: Broker, **overrides) -> pika.BlockingConnection:
        conn = pika.BlockingConnection(broker.params(**overrides))
        opened.append(conn)
        return conn

    yield _connect
    for conn in reversed(opened):
        if conn.is_open:
            try:
                conn.close()
            except Exception:
                pass


class CuttingProxy:
    """TCP proxy 127.0.0.1:port -> 127.0.0.1:target_port. While `cutting` is set it closes every
    open connection (both sides) every `interval` seconds; `cuts` counts rounds that closed any."""

    def __init__(self, target_port: int, interval: float = 1.0):
        self.target = (HOST, target_port)
        self.interval = interval
        self.listener = socket.create_server((HOST, 0))
        self.port = self.listener.getsockname()[1]
        self.cutting = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self.accepted = 0
        self.cuts = 0
        for target in (self._accept_loop, self._cut_loop):
            threading.Thread(target=target, daemon=True).start()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self.accepted += 1
                self._open.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            self._close(src)
            self._close(dst)

    def _close(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.discard(sock)
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()

    def cut_all(self) -> None:
        with self._lock:
            socks = list(self._open)
        if socks:
            self.cuts += 1
        for sock in socks:
            self._close(sock)

    def _cut_loop(self) -> None:
        while not self._stop.wait(self.interval):
            if self.cutting.is_set():
                self.cut_all()

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        self.cut_all()


@pytest.fixture
def cutting_proxy():
    """cutting_proxy(target_port, interval) -> a started CuttingProxy, closed at teardown."""
    proxies: list[CuttingProxy] = []

    def _make(target_port: int, interval: float = 1.0) -> CuttingProxy:
        proxy = CuttingProxy(target_port, interval)
        proxies.append(proxy)
        return proxy

    yield _make
    for proxy in proxies:
        proxy.close()
