"""Helpers for the management HTTP API suite: an HTTP client for /api, polling, unique names
with cleanup, pika connection parameters. Fixtures wrapping them live in conftest.py.

A module of its own (not conftest) so that `from mgmtapi import ...` is unambiguous when
tests/python, which has its own conftest.py, is collected in the same run.
"""


from __future__ import annotations

import json
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

import pika
import pytest
import requests

HOST = "127.0.0.1"
USER = "guest"
PASSWORD = "guest"
VHOST = "/"


def _port(var: str) -> int:
    raw = os.environ.get(var, "")
    if not raw.isdigit():
        raise pytest.UsageError(f"set {var} (see tests/http/conftest.py)")
    return int(raw)


def http_port() -> int:
    return _port("FERRYMQ_HTTP_PORT")


def amqp_port() -> int:
    return _port("FERRYMQ_AMQP_PORT")


def reference_broker() -> str:
    """'rabbitmq' when the suite runs against the RabbitMQ reference, '' for FerryMQ."""
    return os.environ.get("FERRYMQ_REFERENCE", "").strip().lower()


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def q(segment: str) -> str:
    """Percent-encode one path segment: vhost '/' becomes '%2F'."""
    return quote(segment, safe="")


def poll(fn: Callable[[], Any], timeout: float = 15.0, interval: float = 0.2, what: str = "") -> Any:
    """Call fn until it returns something truthy and return that; fail after `timeout` seconds.

    The management statistics of RabbitMQ are emitted every 5 s, so anything read from them
    (queue message counts, policy names on queues, connection lists) must be polled.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or fn}; last value: {last!r}")
        time.sleep(interval)


def shape(name: str, body: Any) -> None:
    """Save a sample response as $FERRYMQ_HTTP_SHAPES_DIR/<name>.json (no-op when unset)."""
    out = os.environ.get("FERRYMQ_HTTP_SHAPES_DIR")
    if not out:
        return
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    (path / f"{name}.json").write_text(json.dumps(body, indent=2, ensure_ascii=False) + "\n")


def assert_error(resp: requests.Response, status: int) -> dict:
    """The response has `status` and a JSON body {"error": ..., "reason": ...}."""
    assert resp.status_code == status, (resp.status_code, resp.text)
    assert resp.headers.get("content-type", "").startswith("application/json"), resp.headers
    body = resp.json()
    assert isinstance(body, dict), body
    assert "error" in body and "reason" in body, body
    return body


class Api:
    """Thin client for the management API; paths are relative to /api (e.g. '/queues/%2F')."""

    def __init__(self, auth: tuple[str, str] | None = (USER, PASSWORD)):
        self.base = f"http://{HOST}:{http_port()}"
        self.session = requests.Session()
        self.session.auth = auth

    def url(self, path: str) -> str:
        return self.base + ("" if path.startswith("/api") else "/api") + path

    def request(self, method: str, path: str, body: Any = None, **kw) -> requests.Response:
        if body is not None and "data" not in kw:
            kw["json"] = body
        kw.setdefault("timeout", 10)
        try:
            return self.session.request(method, self.url(path), **kw)
        except requests.ConnectionError as exc:
            # RabbitMQ 3.10 now and then closes a keep-alive connection after answering an error
            # (seen after PUT into a missing vhost, ~1 in 400) without "connection: close"; the
            # next request on that pooled connection then dies before any response byte. Only
            # that case is retried, once, on a fresh connection.
            if "RemoteDisconnected" not in repr(exc):
                raise
            self.session.close()
            return self.session.request(method, self.url(path), **kw)

    def get(self, path: str, **kw) -> requests.Response:
        return self.request("GET", path, **kw)

    def put(self, path: str, body: Any = None, **kw) -> requests.Response:
        return self.request("PUT", path, body, **kw)

    def post(self, path: str, body: Any = None, **kw) -> requests.Response:
        return self.request("POST", path, body, **kw)

    def delete(self, path: str, **kw) -> requests.Response:
        return self.request("DELETE", path, **kw)

    def json(self, path: str, **kw) -> Any:
        """GET that must answer 200 with a JSON body."""
        resp = self.get(path, **kw)
        assert resp.status_code == 200, (path, resp.status_code, resp.text)
        assert resp.headers.get("content-type", "").startswith("application/json"), resp.headers
        return resp.json()

    def ok(self, method: str, path: str, body: Any = None, expect=(200, 201, 204), **kw) -> requests.Response:
        resp = self.request(method, path, body, **kw)
        expect = (expect,) if isinstance(expect, int) else expect
        assert resp.status_code in expect, (method, path, resp.status_code, resp.text)
        return resp

    # Convenience for objects in vhost '/'.
    def declare_queue(self, name: str, vhost: str = VHOST, **body) -> requests.Response:
        body.setdefault("durable", False)
        body.setdefault("auto_delete", False)
        body.setdefault("arguments", {})
        return self.ok("PUT", f"/queues/{q(vhost)}/{q(name)}", body, expect=(201, 204))

    def declare_exchange(self, name: str, type_: str = "direct", vhost: str = VHOST, **body) -> requests.Response:
        body = {"type": type_, "durable": False, "auto_delete": False, "internal": False, "arguments": {}, **body}
        return self.ok("PUT", f"/exchanges/{q(vhost)}/{q(name)}", body, expect=(201, 204))

    def publish(self, routing_key: str, payload: str, exchange: str = "amq.default", properties=None) -> dict:
        resp = self.ok(
            "POST",
            f"/exchanges/%2F/{q(exchange)}/publish",
            {"properties": properties or {}, "routing_key": routing_key, "payload": payload, "payload_encoding": "string"},
            expect=200,
        )
        return resp.json()

    def queue(self, name: str, vhost: str = VHOST) -> dict:
        return self.json(f"/queues/{q(vhost)}/{q(name)}")

    def queue_with_stats(self, name: str, timeout: float = 15.0, pred: Callable[[dict], bool] | None = None) -> dict:
        """GET the queue until its statistics fields are present (and `pred` holds)."""

        def ready():
            body = self.queue(name)
            if "messages" not in body:
                return None
            if pred is not None and not pred(body):
                return None
            return body

        return poll(ready, timeout=timeout, what=f"statistics of queue {name!r}")


def as_user(name: str, password: str) -> Api:
    return Api(auth=(name, password))


# --------------------------------------------------------------------------
# Unique names and cleanup
# --------------------------------------------------------------------------


class Resources:
    """Per-test unique names; every object named through it is deleted at teardown (via HTTP)."""

    def __init__(self, api: Api, test_name: str):
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", test_name)[:60]
        self.api = api
        self.prefix = f"pytest.{slug}.{uuid.uuid4().hex[:8]}"
        self._cleanups: list[str] = []  # API paths to DELETE, in creation order

    def name(self, suffix: str = "n") -> str:
        return f"{self.prefix}.{suffix}"

    def _track(self, path: str) -> None:
        self._cleanups.append(path)

    def queue(self, suffix: str = "q", vhost: str = VHOST) -> str:
        n = self.name(suffix)
        self._track(f"/queues/{q(vhost)}/{q(n)}")
        return n

    def exchange(self, suffix: str = "x", vhost: str = VHOST) -> str:
        n = self.name(suffix)
        self._track(f"/exchanges/{q(vhost)}/{q(n)}")
        return n

    def user(self, suffix: str = "u") -> str:
        n = self.name(suffix)
        self._track(f"/users/{q(n)}")
        return n

    def vhost(self, suffix: str = "vh") -> str:
        n = self.name(suffix)
        self._track(f"/vhosts/{q(n)}")
        return n

    def policy(self, suffix: str = "pol", vhost: str = VHOST) -> str:
        n = self.name(suffix)
        self._track(f"/policies/{q(vhost)}/{q(n)}")
        return n

    def operator_policy(self, suffix: str = "opol", vhost: str = VHOST) -> str:
        n = self.name(suffix)
        self._track(f"/operator-policies/{q(vhost)}/{q(n)}")
        return n

    def parameter(self, component: str, suffix: str = "param", vhost: str = VHOST) -> str:
        n = self.name(suffix)
        self._track(f"/parameters/{q(component)}/{q(vhost)}/{q(n)}")
        return n

    def global_parameter(self, suffix: str = "gparam") -> str:
        n = self.name(suffix)
        self._track(f"/global-parameters/{q(n)}")
        return n

    def cleanup(self) -> None:
        # Reverse order: policies and parameters before the queues they match, queues and
        # exchanges before the vhosts that hold them.
        for path in reversed(self._cleanups):
            try:
                self.api.delete(path, timeout=5)
            except requests.RequestException:
                pass


# --------------------------------------------------------------------------
# AMQP connections (pika)
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


def wait_closed_by_broker(conn: pika.BlockingConnection, timeout: float = 10.0):
    """Run pika's I/O until the broker closes the connection; return the exception.

    RabbitMQ keeps a connection it closed (DELETE /api/connections/{name}) listed until the
    client answers connection.close-ok, so the client must be driven.
    """
    deadline = time.monotonic() + timeout
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as closed:
        while time.monotonic() < deadline:
            conn.process_data_events(time_limit=0.2)
    return closed.value
