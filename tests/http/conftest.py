"""Fixtures for the management HTTP API suite (RabbitMQ-compatible API, `rabbitmqadmin`).

The suite talks to a broker's management API at 127.0.0.1:$FERRYMQ_HTTP_PORT as guest/guest
(HTTP basic auth) and, where it needs to publish or hold connections open, to its AMQP port
$FERRYMQ_AMQP_PORT. It is written for FerryMQ and validated against RabbitMQ 3.10.8:

    # needs: pip install requests pika pytest
    FERRYMQ_HTTP_PORT=15672 FERRYMQ_AMQP_PORT=5672 python3 -m pytest tests/http -q

    bash tests/fixtures/rabbitmq.sh start httpref 5741 15741
    FERRYMQ_HTTP_PORT=15741 FERRYMQ_AMQP_PORT=5741 FERRYMQ_REFERENCE=rabbitmq \
        python3 -m pytest tests/http -q
    bash tests/fixtures/rabbitmq.sh stop httpref

Tests marked ``ferrymq_only`` pin FerryMQ behaviour RabbitMQ 3.10 does not have (a `paused`
federation link status, `/metrics`, `/api/openapi.json`); they are skipped when
FERRYMQ_REFERENCE=rabbitmq.

Helpers (the Api client, poll, shape, Resources) are in mgmtapi.py; tests import them from there.
Set FERRYMQ_HTTP_SHAPES_DIR=/some/dir to save one pretty-printed sample response per endpoint
(`shape("queue", body)` in the tests) -- run it once against each broker and diff the key sets.

Assertions are on status codes and on the field names and types that operators' tools read,
never on values that differ between brokers (node names, versions, rates). The management
statistics of RabbitMQ (queue counters, connection and channel lists) refresh every 5 s, so
such checks go through ``poll``. Every test uses its own uuid-based names and deletes what it
created, so runs are independent of each other and of leftovers.
"""

from __future__ import annotations

import socket

import pika
import pytest

from mgmtapi import HOST, Api, Resources, amqp_port, connection_parameters, http_port, reference_broker


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


@pytest.fixture(scope="session", autouse=True)
def broker_reachable():
    """Fail fast with one clear message (the error is cached for the session) instead of every
    test timing out. A fixture rather than pytest_sessionstart, so that a run collecting
    tests/python as well does not demand the HTTP port unless these tests are selected."""
    for what, port in (("management HTTP", http_port()), ("AMQP", amqp_port())):
        try:
            socket.create_connection((HOST, port), timeout=3).close()
        except OSError as exc:
            raise pytest.UsageError(f"no {what} listener on {HOST}:{port}: {exc}") from exc


# --------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def api() -> Api:
    return Api()


@pytest.fixture
def anon() -> Api:
    return Api(auth=None)


@pytest.fixture
def res(api, request):
    r = Resources(api, request.node.name)
    yield r
    r.cleanup()


@pytest.fixture
def connect():
    """Factory for pika connections; all are closed at teardown."""
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
