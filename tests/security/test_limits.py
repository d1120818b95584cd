"""Limits: vhost max-queues and max-connections, user max-connections and max-channels (set
through RabbitMQ's /api/vhost-limits and /api/user-limits), the global max_connections, and the
delay on failed logins. Each refusal is the AMQP code and text RabbitMQ gives."""

from __future__ import annotations

import socket
import time
import uuid

import pika
import pytest
import requests

from conftest import start_broker, stop_broker


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    b = start_broker(tmp_path_factory.mktemp("limits"), "max_connections = 12\n")
    yield b
    stop_broker(b)


def connect(broker, user="guest", password="guest", vhost="/"):
    return pika.BlockingConnection(
        pika.ConnectionParameters("127.0.0.1", broker.amqp, vhost, pika.PlainCredentials(user, password),
                                  connection_attempts=1, socket_timeout=5)
    )


def new_vhost(broker) -> str:
    name = f"lim-{uuid.uuid4().hex[:6]}"
    assert broker.api("PUT", f"/vhosts/{name}").status_code == 201
    assert broker.api("PUT", f"/permissions/{name}/guest", {"configure": ".*", "write": ".*", "read": ".*"}).status_code in (201, 204)
    return name


def test_vhost_queue_limit(broker):
    vhost = new_vhost(broker)
    assert broker.api("PUT", f"/vhost-limits/{vhost}/max-queues", {"value": 2}).status_code == 204
    assert broker.api("GET", f"/vhost-limits/{vhost}").json() == [{"vhost": vhost, "value": {"max-queues": 2}}]
    conn = connect(broker, vhost=vhost)
    ch = conn.channel()
    ch.queue_declare("q1")
    ch.queue_declare("q2")
    ch.queue_declare("q1")  # redeclaring an existing queue is not a new queue
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare("q3")
    assert e.value.reply_code == 406
    assert f"cannot declare queue 'q3' in vhost '{vhost}': vhost queue limit (2) is reached" in e.value.reply_text
    # Over HTTP too, with the same reason.
    r = broker.api("PUT", f"/queues/{vhost}/q3", {"durable": True})
    assert r.status_code == 400 and "vhost queue limit (2)" in r.json()["reason"], r.text
    # Limits are part of the definitions, in RabbitMQ's place for them.
    defs = broker.api("GET", "/definitions").json()
    assert {"component": "vhost-limits", "name": "limits", "vhost": vhost, "value": {"max-queues": 2}} in [
        {k: p[k] for k in ("component", "name", "vhost", "value")} for p in defs["parameters"]
    ]
    # Clearing the limit lifts it.
    assert broker.api("DELETE", f"/vhost-limits/{vhost}/max-queues").status_code == 204
    assert broker.api("GET", f"/vhost-limits/{vhost}").json() == []
    conn.channel().queue_declare("q3")
    conn.close()


def test_vhost_connection_limit(broker):
    vhost = new_vhost(broker)
    assert broker.api("PUT", f"/vhost-limits/{vhost}/max-connections", {"value": 1}).status_code == 204
    first = connect(broker, vhost=vhost)
    # pika reports a close during connection.open as a probable access denial.
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as e:
        connect(broker, vhost=vhost)
    assert "(530)" in str(e.value) and "connection limit (1) is reached" in str(e.value)
    connect(broker).close()  # other vhosts are not affected
    first.close()
    time.sleep(0.2)
    connect(broker, vhost=vhost).close()


def test_user_connection_and_channel_limits(broker):
    user = f"u{uuid.uuid4().hex[:6]}"
    assert broker.api("PUT", f"/users/{user}", {"password": "pw", "tags": ""}).status_code == 201
    assert broker.api("PUT", f"/permissions/%2F/{user}", {"configure": ".*", "write": ".*", "read": ".*"}).status_code == 201
    assert broker.api("PUT", f"/user-limits/{user}/max-connections", {"value": 1}).status_code == 204
    assert broker.api("PUT", f"/user-limits/{user}/max-channels", {"value": "2"}).status_code == 204
    assert broker.api("GET", f"/user-limits/{user}").json() == [{"user": user, "value": {"max-connections": 1, "max-channels": 2}}]
    conn = connect(broker, user, "pw")
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as e:
        connect(broker, user, "pw")
    assert "(530)" in str(e.value) and "user connection limit (1) is reached" in str(e.value)
    conn.channel()
    conn.channel()
    with pytest.raises((pika.exceptions.ConnectionClosedByBroker, pika.exceptions.ChannelClosedByBroker)) as e:
        conn.channel()
    assert "maximum allowed user limit (2)" in str(e.value)
    users = {u["name"]: u for u in broker.api("GET", "/definitions").json()["users"]}
    assert users[user]["limits"] == {"max-connections": 1, "max-channels": 2}
    # Changing the user's tags keeps the limits.
    assert broker.api("PUT", f"/users/{user}", {"tags": "monitoring"}).status_code == 204
    assert broker.api("GET", f"/user-limits/{user}").json()[0]["value"]["max-channels"] == 2


def test_bad_limits_are_refused(broker):
    vhost = new_vhost(broker)
    r = broker.api("PUT", f"/vhost-limits/{vhost}/max-queue", {"value": 1})
    assert r.status_code == 400 and "unknown limit 'max-queue'" in r.json()["reason"]
    r = broker.api("PUT", f"/vhost-limits/{vhost}/max-queues", {"value": "lots"})
    assert r.status_code == 400 and "must be an integer" in r.json()["reason"]
    assert broker.api("PUT", "/vhost-limits/no-such-vhost/max-queues", {"value": 1}).status_code == 404
    assert broker.api("PUT", "/user-limits/no-such-user/max-channels", {"value": 1}).status_code == 404
    assert broker.api("GET", f"/vhost-limits/{vhost}").json() == []


def test_global_connection_limit_drops_extra_sockets(broker):
    held = [connect(broker) for _ in range(12 - len(broker.api("GET", "/connections").json()))]
    try:
        with pytest.raises(pika.exceptions.AMQPConnectionError):
            connect(broker)
        assert "max_connections (12) reached" in broker.log_text()
    finally:
        for c in held:
            c.close()
    time.sleep(0.3)
    connect(broker).close()


def test_failed_logins_are_answered_slowly(broker):
    start = time.monotonic()
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        connect(broker, "guest", "wrong")
    assert time.monotonic() - start >= 0.9
    start = time.monotonic()
    connect(broker).close()
    assert time.monotonic() - start < 0.9
    # The management API waits half as long on a wrong password.
    start = time.monotonic()
    r = requests.get(f"http://127.0.0.1:{broker.http}/api/overview", auth=("guest", "wrong"), timeout=10)
    assert r.status_code == 401 and time.monotonic() - start >= 0.45
    start = time.monotonic()
    assert broker.api("GET", "/overview").status_code == 200
    assert time.monotonic() - start < 0.45
