"""Shared fixtures for the Python wire-compatibility suite.

The suite talks to a broker at 127.0.0.1:$FERRYMQ_AMQP_PORT as guest/guest on
vhost "/". It is written for FerryMQ and validated against RabbitMQ 3.10:

    FERRYMQ_AMQP_PORT=5672 python3 -m pytest tests/python -q
    FERRYMQ_AMQP_PORT=5730 FERRYMQ_REFERENCE=rabbitmq python3 -m pytest tests/python -q

Tests marked ``ferrymq_only`` pin a behaviour where FerryMQ deliberately differs
from RabbitMQ 3.10; they are skipped when FERRYMQ_REFERENCE=rabbitmq.

Every test gets its own names (queues, exchanges) so tests are independent and
can be re-run against a broker that still holds leftovers of an earlier run.
"""

from __future__ import annotations

import os
import re
import socket
import uuid

import pika
import pytest

import amqpwire

HOST = "127.0.0.1"
USER = "guest"
PASSWORD = "guest"
VHOST = "/"


def amqp_port() -> int:
    raw = os.environ.get("FERRYMQ_AMQP_PORT", "")
    if not raw.isdigit():
        raise pytest.UsageError("set FERRYMQ_AMQP_PORT to the AMQP port of the broker under test")
    return int(raw)


def reference_broker() -> str:
    """'rabbitmq' when the suite runs against the RabbitMQ reference, '' for FerryMQ."""
    return os.environ.get("FERRYMQ_REFERENCE", "").strip().lower()


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "ferrymq_only: FerryMQ's intended behaviour where it differs from RabbitMQ 3.10; "
        "skipped when FERRYMQ_REFERENCE=rabbitmq",
    )


def pytest_collection_modifyitems(config, items):
    if reference_broker() != "rabbitmq":
        return
    skip = pytest.mark.skip(reason="FerryMQ-only behaviour (FERRYMQ_REFERENCE=rabbitmq)")
    for item in items:
        if "ferrymq_only" in item.keywords:
            item.add_marker(skip)


def pytest_sessionstart(session):
    # Fail fast with one clear message instead of every test timing out.
    port = amqp_port()
    try:
        socket.create_connection((HOST, port), timeout=3).close()
    except OSError as exc:
        raise pytest.UsageError(f"no broker listening on {HOST}:{port}: {exc}") from exc


# --------------------------------------------------------------------------
# Connection parameters and connections
# --------------------------------------------------------------------------


def connection_parameters(**overrides) -> pika.ConnectionParameters:
    settings = dict(
        host=HOST,
        port=amqp_port(),
        virtual_host=VHOST,
        credentials=pika.PlainCredentials(USER, PASSWORD),
        connection_attempts=1,
        socket_timeout=5,
        blocked_connection_timeout=10,
        heartbeat=30,
    )
    settings.update(overrides)
    return pika.ConnectionParameters(**settings)


@pytest.fixture
def port() -> int:
    return amqp_port()


@pytest.fixture
def connect():
    """Factory for extra pika connections; all are closed at teardown."""
    opened: list[pika.BlockingConnection] = []

    def _connect(**overrides) -> pika.BlockingConnection:
        conn = pika.BlockingConnection(connection_parameters(**overrides))
        opened.append(conn)
        return conn

    yield _connect
    for conn in opened:
        if conn.is_open:
            try:
                conn.close()
            except Exception:
                pass


@pytest.fixture
def connection(connect) -> pika.BlockingConnection:
    return connect()


@pytest.fixture
def channel(connection):
    return connection.channel()


# --------------------------------------------------------------------------
# Unique names and cleanup
# --------------------------------------------------------------------------


class Names:
    """Hands out per-test unique names and deletes what they named at teardown."""

    def __init__(self, test_name: str):
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", test_name)[:80]
        self.prefix = f"pytest.{slug}.{uuid.uuid4().hex[:8]}"
        self.queues: list[str] = []
        self.exchanges: list[str] = []

    def queue(self, suffix: str = "q") -> str:
        name = f"{self.prefix}.{suffix}"
        self.queues.append(name)
        return name

    def exchange(self, suffix: str = "x") -> str:
        name = f"{self.prefix}.{suffix}"
        self.exchanges.append(name)
        return name

    def cleanup(self) -> None:
        if not (self.queues or self.exchanges):
            return
        try:
            conn = pika.BlockingConnection(connection_parameters())
        except Exception:
            return  # a broken broker is reported by the test itself
        try:
            ch = conn.channel()
            for kind, names in (("queue", self.queues), ("exchange", self.exchanges)):
                for name in names:
                    try:
                        if kind == "queue":
                            ch.queue_delete(name)
                        else:
                            ch.exchange_delete(name)
                    except pika.exceptions.ChannelClosedByBroker:
                        ch = conn.channel()
        finally:
            if conn.is_open:
                conn.close()


@pytest.fixture
def names(request):
    n = Names(request.node.name)
    yield n
    n.cleanup()


# --------------------------------------------------------------------------
# Raw wire connections
# --------------------------------------------------------------------------


@pytest.fixture
def wire():
    """Factory for raw-socket AMQP connections (see amqpwire.py); all closed at teardown."""
    opened: list[amqpwire.WireConnection] = []

    def _open(timeout: float = 5.0) -> amqpwire.WireConnection:
        conn = amqpwire.WireConnection(HOST, amqp_port(), timeout=timeout)
        opened.append(conn)
        return conn

    yield _open
    for conn in opened:
        conn.close()
