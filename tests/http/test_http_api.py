"""RabbitMQ-compatible management HTTP API: paths, status codes and JSON shapes.

Validated against RabbitMQ 3.10.8. Where RabbitMQ's answer is surprising the test says so, because
FerryMQ copies it on purpose (tools such as rabbitmqadmin, Terraform providers and monitoring
agents were written against it):
- every authorisation failure is 401, never 403 (wrong password, a user without a management tag,
  a monitoring user writing, a management user outside its vhosts);
- no Authorization header: 401 with an empty body and WWW-Authenticate; wrong credentials: 401
  with WWW-Authenticate and {"error": "not_authorized", "reason": "Login failed"};
- an unsupported method on a known path is 405 with an empty body and an Allow header, even
  without credentials; an unknown path is 404 with a JSON body;
- queue statistics (messages, policy, message_stats) appear only after the first stats tick.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import time
import uuid

import pika
import pytest

from mgmtapi import (
    HOST,
    Api,
    amqp_port,
    as_user,
    assert_error,
    connection_parameters,
    poll,
    q,
    shape,
    wait_closed_by_broker,
)

JSON_HEADERS = {"content-type": "application/json"}


def make_user(api: Api, res, tags: str, suffix: str = "u") -> tuple[str, str]:
    name = res.user(suffix)
    password = uuid.uuid4().hex
    api.ok("PUT", f"/users/{q(name)}", {"password": password, "tags": tags}, expect=201)
    return name, password


def grant(api: Api, user: str, vhost: str = "/", pattern: str = ".*") -> None:
    api.ok(
        "PUT",
        f"/permissions/{q(vhost)}/{q(user)}",
        {"configure": pattern, "write": pattern, "read": pattern},
        expect=(201, 204),
    )


def names_of(items) -> list[str]:
    return [item["name"] for item in items]


# ==========================================================================
# Authentication and authorisation
# ==========================================================================


def test_no_credentials_is_401_with_basic_challenge(anon):
    resp = anon.get("/overview")
    assert resp.status_code == 401
    assert resp.headers.get("www-authenticate", "").lower().startswith("basic"), resp.headers
    # RabbitMQ sends an empty body here; if a body is sent it must be the usual error object.
    if resp.content:
        assert_error(resp, 401)


def test_wrong_password_is_401_json(api):
    resp = as_user("guest", "not-the-password").get("/overview")
    body = assert_error(resp, 401)
    shape("error_401", body)
    assert resp.headers.get("www-authenticate", "").lower().startswith("basic")


def test_unknown_user_is_401(api):
    resp = as_user(f"nobody-{uuid.uuid4().hex[:8]}", "x").get("/whoami")
    assert_error(resp, 401)


def test_user_without_tags_is_not_a_management_user(api, res):
    # RabbitMQ: 401 {"error":"not_authorised","reason":"Not management user"} (not 403).
    name, password = make_user(api, res, tags="")
    user = as_user(name, password)
    for path in ("/overview", "/whoami", "/queues"):
        body = assert_error(user.get(path), 401)
    shape("error_401_not_management_user", body)


def test_monitoring_user_reads_everything_but_cannot_administer(api, res):
    name, password = make_user(api, res, tags="monitoring")
    mon = as_user(name, password)
    # Monitoring sees all vhosts and all queues, without any permissions.
    assert mon.json("/queues") is not None
    assert "/" in names_of(mon.json("/vhosts"))
    assert mon.json("/whoami") == {"name": name, "tags": ["monitoring"]}
    # Administration is refused: 401 "Not administrator user" (RabbitMQ never answers 403 here).
    vhost = res.vhost()
    shape("error_401_not_administrator", assert_error(mon.put(f"/vhosts/{q(vhost)}", {}), 401))
    assert api.get(f"/vhosts/{q(vhost)}").status_code == 404
    assert_error(mon.get("/users"), 401)
    assert_error(mon.get("/permissions"), 401)


def test_policymaker_can_manage_policies_monitoring_cannot(api, res):
    pm_name, pm_password = make_user(api, res, tags="policymaker", suffix="pm")
    mon_name, mon_password = make_user(api, res, tags="monitoring", suffix="mon")
    grant(api, pm_name)
    grant(api, mon_name)
    pm, mon = as_user(pm_name, pm_password), as_user(mon_name, mon_password)
    policy = res.policy()
    body = {"pattern": f"^{re.escape(res.prefix)}", "definition": {"max-length": 10}, "priority": 0, "apply-to": "queues"}

    assert_error(mon.put(f"/policies/%2F/{q(policy)}", body), 401)
    assert pm.put(f"/policies/%2F/{q(policy)}", body).status_code == 201
    assert pm.json(f"/policies/%2F/{q(policy)}")["definition"] == {"max-length": 10}
    param = res.parameter("federation-upstream")
    assert pm.put(f"/parameters/federation-upstream/%2F/{q(param)}", {"value": {"uri": "amqp://localhost:1"}}).status_code == 201
    assert pm.delete(f"/parameters/federation-upstream/%2F/{q(param)}").status_code == 204
    assert pm.delete(f"/policies/%2F/{q(policy)}").status_code == 204
    # Policymaker is still not an administrator.
    assert_error(pm.get("/users"), 401)


def test_policymaker_needs_permissions_on_the_vhost(api, res):
    name, password = make_user(api, res, tags="policymaker")
    policy = res.policy()
    resp = as_user(name, password).put(
        f"/policies/%2F/{q(policy)}", {"pattern": "^nothing-matches$", "definition": {"max-length": 1}}
    )
    assert_error(resp, 401)


def test_management_user_sees_only_its_vhosts(api, res):
    vhost = res.vhost()
    api.ok("PUT", f"/vhosts/{q(vhost)}", {}, expect=201)
    grant(api, "guest", vhost)
    queue = res.queue(vhost=vhost)
    api.declare_queue(queue, vhost=vhost)
    name, password = make_user(api, res, tags="management")
    grant(api, name, vhost)
    user = as_user(name, password)

    assert user.json("/whoami") == {"name": name, "tags": ["management"]}
    assert names_of(user.json("/vhosts")) == [vhost]
    queues = user.json("/queues")
    assert {item["vhost"] for item in queues} == {vhost}
    assert queue in names_of(queues)
    assert user.json(f"/queues/{q(vhost)}/{q(queue)}")["name"] == queue
    # Outside its vhosts: 401 "User not authorised to access virtual host".
    assert_error(user.get("/queues/%2F"), 401)
    assert_error(user.get("/users"), 401)


# ==========================================================================
# Overview, whoami, nodes
# ==========================================================================


def test_overview(api, res):
    # queue_totals stays {} until some queue has reported statistics.
    api.declare_queue(res.queue())
    body = poll(lambda: (lambda b: b if b.get("queue_totals") else None)(api.json("/overview")), what="queue_totals")
    shape("overview", body)
    for key in ("management_version", "rabbitmq_version", "product_name", "cluster_name", "node"):
        assert isinstance(body[key], str) and body[key], key
    totals = body["object_totals"]
    for key in ("connections", "channels", "exchanges", "queues", "consumers"):
        assert isinstance(totals[key], int), key
    assert totals["queues"] >= 1 and totals["exchanges"] >= 7
    for key in ("messages", "messages_ready", "messages_unacknowledged"):
        assert isinstance(body["queue_totals"][key], int), key
    assert isinstance(body["message_stats"], dict)
    listeners = body["listeners"]
    assert isinstance(listeners, list)
    for listener in listeners:
        assert isinstance(listener["protocol"], str) and isinstance(listener["port"], int)
        assert isinstance(listener["node"], str)
    assert {"protocol": "amqp", "port": amqp_port()} in [{"protocol": l["protocol"], "port": l["port"]} for l in listeners]
    types = {t["name"] for t in body["exchange_types"]}
    assert {"direct", "fanout", "topic", "headers"} <= types


def test_overview_columns(api):
    body = api.json("/overview", params={"columns": "rabbitmq_version,object_totals.queues"})
    # Top-level keys only: RabbitMQ keeps all of object_totals for "object_totals.queues".
    assert set(body) == {"rabbitmq_version", "object_totals"}
    assert isinstance(body["object_totals"]["queues"], int)


def test_whoami(api):
    body = api.json("/whoami")
    shape("whoami", body)
    assert body == {"name": "guest", "tags": ["administrator"]}


def test_nodes(api):
    nodes = api.json("/nodes")
    shape("nodes", nodes)
    assert isinstance(nodes, list) and len(nodes) >= 1
    node = nodes[0]
    for key in ("name", "type"):
        assert isinstance(node[key], str), key
    assert node["running"] is True
    for key in ("mem_used", "mem_limit", "fd_used", "fd_total", "sockets_used", "proc_used", "proc_total",
                "disk_free", "disk_free_limit", "uptime", "processors"):
        assert isinstance(node[key], int), key
    assert node["mem_alarm"] is False and node["disk_free_alarm"] is False
    assert isinstance(node["partitions"], list)
    one = api.json(f"/nodes/{q(node['name'])}")
    shape("node", one)
    assert one["name"] == node["name"] and one["running"] is True


# ==========================================================================
# Vhosts
# ==========================================================================


def test_vhosts_list_and_default(api):
    vhosts = api.json("/vhosts")
    shape("vhosts", vhosts)
    assert "/" in names_of(vhosts)
    body = api.json("/vhosts/%2F")
    assert body["name"] == "/"
    assert isinstance(body["tracing"], bool)
    assert isinstance(body["description"], str)
    assert isinstance(body["tags"], list)


def test_vhost_lifecycle(api, res):
    vhost = res.vhost()
    path = f"/vhosts/{q(vhost)}"
    assert api.put(path, {"description": "made by pytest", "tags": "a,b"}).status_code == 201
    assert api.put(path, {"description": "made by pytest", "tags": "a,b"}).status_code == 204
    body = api.json(path)
    shape("vhost", body)
    assert body["name"] == vhost
    assert body["description"] == "made by pytest"
    assert body["tags"] == ["a", "b"]
    assert vhost in names_of(api.json("/vhosts"))

    name, _ = make_user(api, res, tags="management")
    grant(api, name, vhost)
    perms = api.json(f"{path}/permissions")
    assert {"user": name, "vhost": vhost, "configure": ".*", "write": ".*", "read": ".*"} in perms

    assert api.delete(path).status_code == 204
    shape("error_404", assert_error(api.get(path), 404))
    assert_error(api.delete(path), 404)


# ==========================================================================
# Users
# ==========================================================================


def test_users_list_and_get(api):
    users = api.json("/users")
    shape("users", users)
    guest = next(u for u in users if u["name"] == "guest")
    assert guest["tags"] == ["administrator"]
    assert isinstance(guest["password_hash"], str) and guest["password_hash"]
    assert isinstance(guest["hashing_algorithm"], str)
    assert "password" not in guest
    assert api.json("/users/guest")["name"] == "guest"


def test_user_with_password(api, res):
    name = res.user()
    path = f"/users/{q(name)}"
    assert api.put(path, {"password": "s3cret", "tags": "management"}).status_code == 201
    body = api.json(path)
    shape("user", body)
    assert body["name"] == name
    assert body["tags"] == ["management"]
    assert isinstance(body["password_hash"], str) and body["password_hash"] != "s3cret"
    assert "password" not in body
    assert as_user(name, "s3cret").json("/whoami") == {"name": name, "tags": ["management"]}

    # Update (204): new password and tags take effect.
    assert api.put(path, {"password": "other", "tags": "monitoring,management"}).status_code == 204
    assert sorted(api.json(path)["tags"]) == ["management", "monitoring"]
    assert_error(as_user(name, "s3cret").get("/whoami"), 401)
    assert as_user(name, "other").get("/whoami").status_code == 200

    assert api.delete(path).status_code == 204
    assert_error(api.get(path), 404)
    assert_error(api.delete(path), 404)
    assert_error(as_user(name, "other").get("/whoami"), 401)


def test_user_with_password_hash(api, res):
    # rabbit_password_hashing_sha256: base64(salt(4) + sha256(salt + password)).
    salt = os.urandom(4)
    password_hash = base64.b64encode(salt + hashlib.sha256(salt + b"hashed-pw").digest()).decode()
    name = res.user()
    resp = api.put(
        f"/users/{q(name)}",
        {"password_hash": password_hash, "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": "management"},
    )
    assert resp.status_code == 201, resp.text
    body = api.json(f"/users/{q(name)}")
    assert body["password_hash"] == password_hash
    assert body["hashing_algorithm"] == "rabbit_password_hashing_sha256"
    assert as_user(name, "hashed-pw").json("/whoami")["name"] == name
    assert_error(as_user(name, "wrong").get("/whoami"), 401)


def test_user_permissions_listing(api, res):
    name, _ = make_user(api, res, tags="")
    assert api.json(f"/users/{q(name)}/permissions") == []
    grant(api, name)
    assert api.json(f"/users/{q(name)}/permissions") == [
        {"user": name, "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}
    ]


# ==========================================================================
# Permissions
# ==========================================================================


def test_permissions_lifecycle(api, res):
    name, _ = make_user(api, res, tags="management")
    path = f"/permissions/%2F/{q(name)}"
    assert_error(api.get(path), 404)
    body = {"configure": "^c", "write": "^w", "read": "^r"}
    assert api.put(path, body).status_code == 201
    assert api.put(path, body).status_code == 204
    got = api.json(path)
    shape("permission", got)
    assert got == {"user": name, "vhost": "/", "configure": "^c", "write": "^w", "read": "^r"}
    listing = api.json("/permissions")
    shape("permissions", listing)
    assert got in listing
    for entry in listing:
        assert set(entry) >= {"user", "vhost", "configure", "write", "read"}

    # A missing key is a 400 with a reason.
    assert_error(api.put(path, {"configure": ".*", "write": ".*"}), 400)
    assert api.delete(path).status_code == 204
    assert_error(api.get(path), 404)
    assert_error(api.delete(path), 404)


def test_permissions_for_unknown_user_or_vhost_is_400(api, res):
    # RabbitMQ: 400 "vhost_or_user_not_found" (not 404).
    body = {"configure": ".*", "write": ".*", "read": ".*"}
    assert_error(api.put(f"/permissions/%2F/{q(res.name('ghost'))}", body), 400)
    name, _ = make_user(api, res, tags="")
    assert_error(api.put(f"/permissions/{q(res.name('novhost'))}/{q(name)}", body), 400)


# ==========================================================================
# Exchanges
# ==========================================================================

EXCHANGE_KEYS = {"name", "vhost", "type", "durable", "auto_delete", "internal", "arguments"}


def test_exchanges_list(api):
    everything = api.json("/exchanges")
    in_default = api.json("/exchanges/%2F")
    shape("exchanges", in_default)
    for listing in (everything, in_default):
        for item in listing:
            assert set(item) >= EXCHANGE_KEYS, item
    assert {item["vhost"] for item in in_default} == {"/"}
    by_name = {item["name"]: item for item in in_default}
    # The default exchange is listed with the empty name.
    assert by_name[""]["type"] == "direct"
    for name, type_ in (("amq.direct", "direct"), ("amq.fanout", "fanout"), ("amq.topic", "topic"),
                        ("amq.headers", "headers"), ("amq.match", "headers")):
        assert by_name[name]["type"] == type_
        assert by_name[name]["durable"] is True


def test_exchange_lifecycle(api, res):
    name = res.exchange()
    path = f"/exchanges/%2F/{q(name)}"
    body = {"type": "direct", "durable": True, "auto_delete": False, "internal": False, "arguments": {}}
    assert api.put(path, body).status_code == 201
    assert api.put(path, body).status_code == 204
    got = api.json(path)
    shape("exchange", got)
    assert set(got) >= EXCHANGE_KEYS
    assert (got["name"], got["vhost"], got["type"], got["durable"], got["auto_delete"], got["internal"], got["arguments"]) == (
        name, "/", "direct", True, False, False, {})
    assert name in names_of(api.json("/exchanges/%2F"))
    # Redeclaring with another type: 400 (inequivalent arg 'type').
    assert_error(api.put(path, {**body, "type": "fanout"}), 400)
    assert api.delete(path).status_code == 204
    assert_error(api.get(path), 404)
    assert_error(api.delete(path), 404)


def test_exchange_with_arguments(api, res):
    alt = res.exchange("alt")
    name = res.exchange()
    api.declare_exchange(alt, "fanout")
    api.declare_exchange(name, "topic", arguments={"alternate-exchange": alt})
    got = api.json(f"/exchanges/%2F/{q(name)}")
    assert got["type"] == "topic" and got["arguments"] == {"alternate-exchange": alt}


def test_exchange_errors(api, res):
    assert_error(api.get(f"/exchanges/%2F/{q(res.name('missing'))}"), 404)
    bad_json = api.put(f"/exchanges/%2F/{q(res.exchange())}", data="{not json", headers=JSON_HEADERS)
    assert_error(bad_json, 400)
    shape("error_400", assert_error(api.put(f"/exchanges/%2F/{q(res.exchange('bogus'))}", {"type": "no-such-type"}), 400))
    # An unknown vhost: 404 {"error":"not_found","reason":"vhost_not_found"}.
    assert_error(api.put(f"/exchanges/{q(res.name('novhost'))}/x", {"type": "direct"}), 404)
    # The amq. prefix is reserved; RabbitMQ answers 401 "Access refused." (AMQP's 403 mapped to 401).
    resp = api.put(f"/exchanges/%2F/amq.{q(res.name('reserved'))}", {"type": "direct"})
    assert resp.status_code in (401, 403), resp.text
    assert set(resp.json()) >= {"error", "reason"}
    assert api.get(f"/exchanges/%2F/amq.{q(res.name('reserved'))}").status_code == 404


def test_exchange_bindings_source_and_destination(api, res):
    src, dst, queue = res.exchange("src"), res.exchange("dst"), res.queue()
    api.declare_exchange(src, "direct")
    api.declare_exchange(dst, "fanout")
    api.declare_queue(queue)
    api.ok("POST", f"/bindings/%2F/e/{q(src)}/q/{q(queue)}", {"routing_key": "to-q", "arguments": {}}, expect=201)
    api.ok("POST", f"/bindings/%2F/e/{q(src)}/e/{q(dst)}", {"routing_key": "to-x", "arguments": {}}, expect=201)

    source = api.json(f"/exchanges/%2F/{q(src)}/bindings/source")
    assert {(b["source"], b["destination"], b["destination_type"], b["routing_key"]) for b in source} == {
        (src, queue, "queue", "to-q"), (src, dst, "exchange", "to-x")}
    assert api.json(f"/exchanges/%2F/{q(src)}/bindings/destination") == []
    destination = api.json(f"/exchanges/%2F/{q(dst)}/bindings/destination")
    assert [(b["source"], b["destination"], b["destination_type"]) for b in destination] == [(src, dst, "exchange")]


def test_publish_via_http(api, res):
    queue = res.queue()
    api.declare_queue(queue)
    resp = api.post(
        "/exchanges/%2F/amq.default/publish",
        {"properties": {}, "routing_key": queue, "payload": "hi", "payload_encoding": "string"},
    )
    assert resp.status_code == 200
    shape("publish", resp.json())
    assert resp.json() == {"routed": True}
    assert api.publish(res.name("nobody-bound"), "lost") == {"routed": False}
    # base64 payloads are decoded before publishing.
    resp = api.post(
        "/exchanges/%2F/amq.default/publish",
        {"properties": {}, "routing_key": queue, "payload": base64.b64encode(b"bytes\x00").decode(), "payload_encoding": "base64"},
    )
    assert resp.json() == {"routed": True}
    got = api.post(f"/queues/%2F/{q(queue)}/get", {"count": 2, "ackmode": "ack_requeue_false", "encoding": "base64"}).json()
    assert [base64.b64decode(m["payload"]) for m in got] == [b"hi", b"bytes\x00"]


def test_publish_errors(api, res):
    # Missing payload_encoding: 400.
    resp = api.post("/exchanges/%2F/amq.default/publish", {"properties": {}, "routing_key": "x", "payload": "p"})
    assert_error(resp, 400)
    # Unknown exchange: RabbitMQ answers 400 with reason "404 NOT_FOUND - no exchange ...".
    resp = api.post(
        f"/exchanges/%2F/{q(res.name('missing'))}/publish",
        {"properties": {}, "routing_key": "x", "payload": "p", "payload_encoding": "string"},
    )
    assert resp.status_code in (400, 404), resp.text
    assert set(resp.json()) >= {"error", "reason"}


# ==========================================================================
# Queues
# ==========================================================================

QUEUE_KEYS = {"name", "vhost", "durable", "auto_delete", "exclusive", "arguments"}
QUEUE_STATS_KEYS = {"messages", "messages_ready", "messages_unacknowledged", "consumers", "policy", "state", "memory"}


def test_queue_lifecycle(api, res):
    name = res.queue()
    path = f"/queues/%2F/{q(name)}"
    body = {"durable": True, "auto_delete": False, "arguments": {"x-max-priority": 5}}
    assert api.put(path, body).status_code == 201
    assert api.put(path, body).status_code == 204
    got = api.json(path)
    assert set(got) >= QUEUE_KEYS
    assert (got["name"], got["vhost"], got["durable"], got["auto_delete"], got["exclusive"], got["arguments"]) == (
        name, "/", True, False, False, {"x-max-priority": 5})
    # Redeclaring with another durability: 400 (inequivalent arg 'durable').
    assert_error(api.put(path, {**body, "durable": False}), 400)
    assert name in names_of(api.json("/queues"))
    assert name in names_of(api.json("/queues/%2F"))
    assert api.delete(path).status_code == 204
    assert_error(api.get(path), 404)
    assert_error(api.delete(path), 404)


def test_queue_declare_errors(api, res):
    assert_error(api.put(f"/queues/%2F/{q(res.queue('bad-arg'))}", {"arguments": {"x-max-length": "abc"}}), 400)
    assert_error(api.put(f"/queues/%2F/{q(res.queue('bad-json'))}", data="[nope", headers=JSON_HEADERS), 400)
    assert_error(api.get(f"/queues/%2F/{q(res.name('missing'))}"), 404)


def test_queue_statistics(api, res, connect):
    name = res.queue()
    api.declare_queue(name, durable=True)
    for i in range(3):
        assert api.publish(name, f"m{i}") == {"routed": True}
    # One message unacknowledged on a channel.
    ch = connect().channel()
    method, _, _ = ch.basic_get(name, auto_ack=False)
    assert method is not None

    body = api.queue_with_stats(name, pred=lambda b: b.get("messages") == 3 and b.get("messages_unacknowledged") == 1)
    shape("queue", body)
    assert set(body) >= QUEUE_KEYS | QUEUE_STATS_KEYS
    assert body["messages_ready"] == 2
    assert body["consumers"] == 0
    assert body["policy"] is None
    assert body["state"] == "running"
    assert isinstance(body["memory"], int)
    stats = body["message_stats"]
    assert isinstance(stats, dict)
    assert stats["publish"] == 3
    assert isinstance(stats.get("publish_details", {}).get("rate"), (int, float))
    listed = next(item for item in api.json("/queues/%2F") if item["name"] == name)
    shape("queues", [listed])
    assert listed["messages"] == 3


def test_queue_bindings(api, res):
    queue, exchange = res.queue(), res.exchange()
    api.declare_queue(queue)
    api.declare_exchange(exchange, "topic")
    api.ok("POST", f"/bindings/%2F/e/{q(exchange)}/q/{q(queue)}", {"routing_key": "a.#", "arguments": {}}, expect=201)
    bindings = api.json(f"/queues/%2F/{q(queue)}/bindings")
    shape("queue_bindings", bindings)
    # The implicit binding from the default exchange is listed too.
    assert {(b["source"], b["routing_key"], b["destination_type"]) for b in bindings} == {
        ("", queue, "queue"), (exchange, "a.#", "queue")}
    for b in bindings:
        assert set(b) >= {"source", "vhost", "destination", "destination_type", "routing_key", "arguments", "properties_key"}


def test_queue_purge(api, res):
    name = res.queue()
    api.declare_queue(name)
    for i in range(5):
        api.publish(name, f"m{i}")
    assert api.delete(f"/queues/%2F/{q(name)}/contents").status_code == 204
    got = api.post(f"/queues/%2F/{q(name)}/get", {"count": 10, "ackmode": "ack_requeue_false", "encoding": "auto"})
    assert got.json() == []
    assert_error(api.delete(f"/queues/%2F/{q(res.name('missing'))}/contents"), 404)


def test_queue_delete_if_empty(api, res):
    name = res.queue()
    api.declare_queue(name)
    api.publish(name, "keep me")
    assert_error(api.delete(f"/queues/%2F/{q(name)}", params={"if-empty": "true"}), 400)
    assert api.get(f"/queues/%2F/{q(name)}").status_code == 200
    assert api.delete(f"/queues/%2F/{q(name)}").status_code == 204


def test_queue_get(api, res):
    name = res.queue()
    api.declare_queue(name)
    api.publish(name, "first", properties={"content_type": "text/plain", "headers": {"k": "v"}, "delivery_mode": 2})
    api.publish(name, "second")
    path = f"/queues/%2F/{q(name)}/get"

    # Peek (requeue): the message stays.
    resp = api.post(path, {"count": 1, "ackmode": "ack_requeue_true", "encoding": "auto"})
    assert resp.status_code == 200
    msgs = resp.json()
    shape("queue_get", msgs)
    assert isinstance(msgs, list) and len(msgs) == 1
    msg = msgs[0]
    assert set(msg) >= {"payload", "payload_bytes", "redelivered", "exchange", "routing_key", "message_count",
                        "properties", "payload_encoding"}
    assert (msg["payload"], msg["payload_bytes"], msg["payload_encoding"]) == ("first", 5, "string")
    assert (msg["exchange"], msg["routing_key"], msg["redelivered"]) == ("", name, False)
    assert msg["message_count"] == 1  # messages left in the queue after this one
    props = msg["properties"]
    assert props["content_type"] == "text/plain"
    assert props["headers"] == {"k": "v"}
    assert props["delivery_mode"] == 2

    # Take both; the first is now redelivered. RabbitMQ renders empty properties as [] (an empty
    # Erlang proplist), not {}.
    msgs = api.post(path, {"count": 5, "ackmode": "ack_requeue_false", "encoding": "auto"}).json()
    assert [(m["payload"], m["redelivered"], m["message_count"]) for m in msgs] == [("first", True, 1), ("second", False, 0)]
    assert msgs[1]["properties"] in ({}, [])
    assert api.post(path, {"count": 1, "ackmode": "ack_requeue_false", "encoding": "auto"}).json() == []

    # Missing ackmode: 400; missing queue: 404.
    assert_error(api.post(path, {"count": 1, "encoding": "auto"}), 400)
    missing = f"/queues/%2F/{q(res.name('missing'))}/get"
    assert_error(api.post(missing, {"count": 1, "ackmode": "ack_requeue_false", "encoding": "auto"}), 404)


def test_queue_get_truncate_and_binary(api, res):
    name = res.queue()
    api.declare_queue(name)
    api.post("/exchanges/%2F/amq.default/publish", {"properties": {}, "routing_key": name,
                                                    "payload": base64.b64encode(b"\xff\x00\x01abc").decode(),
                                                    "payload_encoding": "base64"})
    api.publish(name, "0123456789")
    msgs = api.post(f"/queues/%2F/{q(name)}/get",
                    {"count": 2, "ackmode": "ack_requeue_false", "encoding": "auto", "truncate": 4}).json()
    # encoding=auto: non-UTF-8 payloads come back base64-encoded; truncate cuts the payload,
    # payload_bytes keeps the full size.
    assert msgs[0]["payload_encoding"] == "base64"
    assert base64.b64decode(msgs[0]["payload"]) == b"\xff\x00\x01a"
    assert msgs[0]["payload_bytes"] == 6
    assert (msgs[1]["payload"], msgs[1]["payload_encoding"], msgs[1]["payload_bytes"]) == ("0123", "string", 10)


# ==========================================================================
# Bindings
# ==========================================================================

BINDING_KEYS = {"source", "vhost", "destination", "destination_type", "routing_key", "arguments", "properties_key"}


def test_bindings_listing(api, res):
    queue, exchange = res.queue(), res.exchange()
    api.declare_queue(queue)
    api.declare_exchange(exchange)
    api.ok("POST", f"/bindings/%2F/e/{q(exchange)}/q/{q(queue)}", {"routing_key": "rk", "arguments": {}}, expect=201)
    everything = api.json("/bindings")
    in_default = api.json("/bindings/%2F")
    shape("bindings", [b for b in in_default if b["destination"] == queue])
    for listing in (everything, in_default):
        for b in listing:
            assert set(b) >= BINDING_KEYS, b
        assert any(b["source"] == exchange and b["destination"] == queue for b in listing)
    assert {b["vhost"] for b in in_default} == {"/"}


def test_binding_lifecycle(api, res):
    queue, exchange = res.queue(), res.exchange()
    api.declare_queue(queue)
    api.declare_exchange(exchange)
    base = f"/bindings/%2F/e/{q(exchange)}/q/{q(queue)}"
    resp = api.post(base, {"routing_key": "rk", "arguments": {}})
    assert resp.status_code == 201
    # RabbitMQ's Location is relative to the request path: "<queue>/<properties_key>".
    assert resp.headers["location"].endswith("/rk"), resp.headers
    # Binding again is idempotent.
    assert api.post(base, {"routing_key": "rk", "arguments": {}}).status_code == 201
    resp = api.post(base, {"routing_key": "rk2", "arguments": {"x-match": "all", "k": "v"}})
    assert resp.status_code == 201

    listing = api.json(base)
    assert len(listing) == 2
    by_rk = {b["routing_key"]: b for b in listing}
    plain, with_args = by_rk["rk"], by_rk["rk2"]
    assert set(plain) >= BINDING_KEYS
    assert (plain["source"], plain["destination"], plain["destination_type"], plain["vhost"], plain["arguments"]) == (
        exchange, queue, "queue", "/", {})
    # properties_key: the routing key alone without arguments, "rk~<hash>" with arguments.
    assert plain["properties_key"] == "rk"
    assert with_args["properties_key"] != "rk2" and with_args["properties_key"].startswith("rk2~")
    assert with_args["arguments"] == {"x-match": "all", "k": "v"}
    assert resp.headers["location"].endswith("/" + with_args["properties_key"])

    one = api.json(f"{base}/{q(plain['properties_key'])}")
    shape("binding", one)
    assert one == plain
    assert api.json(f"{base}/{q(with_args['properties_key'])}") == with_args
    assert_error(api.get(f"{base}/no-such-key"), 404)

    assert api.delete(f"{base}/{q(with_args['properties_key'])}").status_code == 204
    assert_error(api.get(f"{base}/{q(with_args['properties_key'])}"), 404)
    assert_error(api.delete(f"{base}/{q(with_args['properties_key'])}"), 404)
    assert [b["routing_key"] for b in api.json(base)] == ["rk"]


def test_binding_with_empty_routing_key(api, res):
    queue, exchange = res.queue(), res.exchange()
    api.declare_queue(queue)
    api.declare_exchange(exchange, "fanout")
    base = f"/bindings/%2F/e/{q(exchange)}/q/{q(queue)}"
    assert api.post(base, {}).status_code == 201
    [binding] = api.json(base)
    assert binding["routing_key"] == ""
    assert binding["properties_key"] == "~"
    assert api.delete(f"{base}/~").status_code == 204
    assert api.json(base) == []


def test_binding_routes_messages(api, res):
    queue, exchange = res.queue(), res.exchange()
    api.declare_queue(queue)
    api.declare_exchange(exchange, "direct")
    api.ok("POST", f"/bindings/%2F/e/{q(exchange)}/q/{q(queue)}", {"routing_key": "rk"}, expect=201)
    assert api.publish("rk", "via binding", exchange=exchange) == {"routed": True}
    assert api.publish("other", "nowhere", exchange=exchange) == {"routed": False}
    msgs = api.post(f"/queues/%2F/{q(queue)}/get", {"count": 5, "ackmode": "ack_requeue_false", "encoding": "auto"}).json()
    assert [(m["payload"], m["exchange"], m["routing_key"]) for m in msgs] == [("via binding", exchange, "rk")]


def test_binding_errors(api, res):
    queue, exchange = res.queue(), res.exchange()
    api.declare_queue(queue)
    api.declare_exchange(exchange)
    assert_error(api.post(f"/bindings/%2F/e/{q(exchange)}/q/{q(res.name('missing-q'))}", {"routing_key": "x"}), 404)
    assert_error(api.post(f"/bindings/%2F/e/{q(res.name('missing-x'))}/q/{q(queue)}", {"routing_key": "x"}), 404)


def test_exchange_to_exchange_binding(api, res):
    src, dst, queue = res.exchange("src"), res.exchange("dst"), res.queue()
    api.declare_exchange(src, "topic")
    api.declare_exchange(dst, "fanout")
    api.declare_queue(queue)
    api.ok("POST", f"/bindings/%2F/e/{q(dst)}/q/{q(queue)}", {}, expect=201)
    base = f"/bindings/%2F/e/{q(src)}/e/{q(dst)}"
    resp = api.post(base, {"routing_key": "a.*", "arguments": {}})
    assert resp.status_code == 201
    [binding] = api.json(base)
    # properties_key is the percent-encoded routing key ("a.%2A"); Location encodes it once more.
    assert resp.headers["location"].endswith("/" + q(binding["properties_key"])), resp.headers
    shape("binding_e2e", binding)
    assert (binding["source"], binding["destination"], binding["destination_type"], binding["routing_key"]) == (
        src, dst, "exchange", "a.*")
    assert api.json(f"{base}/{q(binding['properties_key'])}") == binding
    assert api.publish("a.b", "hop", exchange=src) == {"routed": True}
    assert api.publish("x.b", "no hop", exchange=src) == {"routed": False}
    assert api.delete(f"{base}/{q(binding['properties_key'])}").status_code == 204
    assert api.json(base) == []


# ==========================================================================
# Connections, channels, consumers
# ==========================================================================


def find_connection(api: Api, connection_name: str):
    def look():
        for conn in api.json("/connections"):
            if conn.get("client_properties", {}).get("connection_name") == connection_name:
                return conn
        return None

    return poll(look, what=f"connection {connection_name!r} in /api/connections")


class LiveConnection:
    """One pika connection with a channel (prefetch 7) consuming from a queue, shared by the
    connection/channel/consumer tests of this module: RabbitMQ lists a new connection only after a
    statistics tick (up to 5 s), so waiting once keeps the suite fast."""

    def __init__(self, api: Api):
        tag = uuid.uuid4().hex[:8]
        self.label = f"pytest.live-connection.{tag}"
        self.queue = f"pytest.live-connection.{tag}.q"
        self.consumer_tag = f"pytest.live-connection.{tag}.ctag"
        api.declare_queue(self.queue)
        self.conn = pika.BlockingConnection(connection_parameters(client_properties={"connection_name": self.label}))
        self.channel = self.conn.channel()
        self.channel.basic_qos(prefetch_count=7)
        self.channel.basic_consume(self.queue, lambda *a: None, auto_ack=False, consumer_tag=self.consumer_tag)


@pytest.fixture(scope="module")
def live(api):
    live = LiveConnection(api)
    yield live
    if live.conn.is_open:
        try:
            live.conn.close()
        except Exception:
            pass
    api.delete(f"/queues/%2F/{q(live.queue)}")


def test_connections_and_channels(api, res, live):
    found = find_connection(api, live.label)
    name = found["name"]
    assert isinstance(name, str) and name
    path = f"/connections/{q(name)}"
    body = api.json(path)
    shape("connection", body)
    assert body["name"] == name
    assert body["user"] == "guest" and body["vhost"] == "/"
    assert body["peer_host"] == HOST and isinstance(body["peer_port"], int)
    assert body["port"] == amqp_port()
    assert body["state"] == "running"
    assert isinstance(body["channels"], int)  # refreshed with the statistics, so not checked for 1
    assert isinstance(body["protocol"], str)
    assert isinstance(body["node"], str)
    assert isinstance(body["connected_at"], int)
    assert body["client_properties"]["connection_name"] == live.label
    assert body["client_properties"]["product"] == "Pika Python Client Library"
    assert isinstance(body["client_properties"]["capabilities"], dict)
    shape("connections", [found])
    assert name in names_of(api.json("/vhosts/%2F/connections"))

    channels = poll(lambda: api.json(f"{path}/channels"), what="channels of the connection")
    assert len(channels) == 1
    channel = channels[0]
    assert set(channel) >= {"name", "number", "user", "vhost", "connection_details", "consumer_count",
                            "prefetch_count", "state", "messages_unacknowledged"}
    assert channel["number"] == 1
    assert channel["prefetch_count"] == 7
    assert channel["connection_details"]["name"] == name
    assert channel["connection_details"]["peer_port"] == body["peer_port"]
    shape("channels", channels)
    assert channel["name"] in names_of(api.json("/channels"))
    one = api.json(f"/channels/{q(channel['name'])}")
    shape("channel", one)
    assert one["name"] == channel["name"] and one["number"] == 1

    assert_error(api.get(f"/connections/{q(res.name('missing'))}"), 404)
    assert_error(api.get(f"/channels/{q(res.name('missing'))}"), 404)


def test_consumers(api, live):
    def find(path):
        return next((c for c in api.json(path) if c["consumer_tag"] == live.consumer_tag), None)

    consumer = poll(lambda: find("/consumers/%2F"), what="consumer in /api/consumers/%2F")
    shape("consumer", consumer)
    assert consumer["queue"] == {"name": live.queue, "vhost": "/"}
    assert consumer["ack_required"] is True
    assert consumer["prefetch_count"] == 7
    assert consumer["exclusive"] is False
    assert consumer["arguments"] == {}
    details = consumer["channel_details"]
    assert set(details) >= {"name", "number", "connection_name", "peer_host", "peer_port", "user"}
    assert details["number"] == 1 and details["user"] == "guest"
    assert find("/consumers") == consumer


def test_close_connection(api, live):
    # Runs after the other tests of the shared connection: it closes it.
    name = find_connection(api, live.label)["name"]
    resp = api.delete(f"/connections/{q(name)}", headers={"X-Reason": "closed by pytest"})
    assert resp.status_code == 204
    closed = wait_closed_by_broker(live.conn)
    assert closed.reply_code == 320
    assert "closed by pytest" in closed.reply_text
    poll(lambda: api.get(f"/connections/{q(name)}").status_code == 404, what="connection gone")
    assert_error(api.delete(f"/connections/{q(name)}"), 404)


# ==========================================================================
# Parameters and global parameters
# ==========================================================================


def test_federation_upstream_parameter(api, res):
    name = res.parameter("federation-upstream")
    path = f"/parameters/federation-upstream/%2F/{q(name)}"
    value = {"uri": "amqp://localhost:1234", "ack-mode": "on-confirm"}
    assert api.put(path, {"value": value}).status_code == 201
    assert api.put(path, {"value": value}).status_code == 204
    got = api.json(path)
    shape("parameter", got)
    assert got == {"value": value, "vhost": "/", "component": "federation-upstream", "name": name}
    for listing in ("/parameters", "/parameters/federation-upstream", "/parameters/federation-upstream/%2F"):
        assert got in api.json(listing), listing
    # Upstreams are validated: no uri, or a bad ack-mode, is a 400.
    assert_error(api.put(path, {"value": {"ack-mode": "on-confirm"}}), 400)
    assert_error(api.put(path, {"value": {"uri": "amqp://h", "ack-mode": "sometimes"}}), 400)
    assert api.json(path)["value"] == value
    assert api.delete(path).status_code == 204
    assert_error(api.get(path), 404)
    assert_error(api.delete(path), 404)


def test_parameter_errors(api, res):
    resp = api.put(f"/parameters/no-such-component/%2F/{q(res.name('p'))}", {"value": {"uri": "amqp://h"}})
    assert resp.status_code in (400, 404), resp.text  # RabbitMQ: 400 "component ... not found"
    assert set(resp.json()) >= {"error", "reason"}
    assert_error(api.put(f"/parameters/federation-upstream/{q(res.name('novhost'))}/p", {"value": {"uri": "amqp://h"}}), 404)


def test_federation_upstream_set_parameter(api, res):
    up = res.parameter("federation-upstream", "up")
    api.ok("PUT", f"/parameters/federation-upstream/%2F/{q(up)}", {"value": {"uri": "amqp://localhost:1"}}, expect=201)
    name = res.parameter("federation-upstream-set", "set")
    path = f"/parameters/federation-upstream-set/%2F/{q(name)}"
    assert api.put(path, {"value": [{"upstream": up}]}).status_code == 201
    assert api.json(path)["value"] == [{"upstream": up}]


def test_global_parameters(api, res):
    listing = api.json("/global-parameters")
    assert isinstance(listing, list)
    for entry in listing:
        assert set(entry) >= {"name", "value"}
    name = res.global_parameter()
    path = f"/global-parameters/{q(name)}"
    assert api.put(path, {"value": {"a": 1}}).status_code == 201
    got = api.json(path)
    shape("global_parameter", got)
    assert got == {"name": name, "value": {"a": 1}}
    assert got in api.json("/global-parameters")
    assert api.delete(path).status_code == 204
    assert_error(api.get(path), 404)


# ==========================================================================
# Policies
# ==========================================================================

POLICY_KEYS = {"vhost", "name", "pattern", "apply-to", "definition", "priority"}


def test_policy_lifecycle(api, res):
    name = res.policy()
    path = f"/policies/%2F/{q(name)}"
    body = {"pattern": r"^x\.", "definition": {"max-length": 10}, "priority": 1, "apply-to": "queues"}
    assert api.put(path, body).status_code == 201
    assert api.put(path, body).status_code == 204
    got = api.json(path)
    shape("policy", got)
    assert got == {"vhost": "/", "name": name, "pattern": r"^x\.", "apply-to": "queues",
                   "definition": {"max-length": 10}, "priority": 1}
    assert got in api.json("/policies")
    assert got in api.json("/policies/%2F")
    assert api.delete(path).status_code == 204
    assert_error(api.get(path), 404)
    assert_error(api.delete(path), 404)


def test_policy_validation(api, res):
    path = f"/policies/%2F/{q(res.policy())}"
    for body in (
        {"pattern": "^x", "definition": {"max-length": "ten"}},      # bad value
        {"pattern": "^x", "definition": {"max-length": 1}, "apply-to": "nothing"},
        {"definition": {"max-length": 1}},                           # no pattern
        {"pattern": "^x", "definition": {}},                         # empty definition
        {"pattern": "(", "definition": {"max-length": 1}},           # bad regex
    ):
        assert_error(api.put(path, body), 400)
    assert api.get(path).status_code == 404


@pytest.mark.ferrymq_only
def test_policy_unknown_keys_are_kept_with_a_warning(api, res):
    # RabbitMQ refuses unknown definition keys; FerryMQ keeps them (a definitions file
    # from another broker must import) and says in the answer that they are ignored.
    path = f"/policies/%2F/{q(res.policy())}"
    resp = api.put(path, {"pattern": "^x", "definition": {"ha-mode": "all", "max-length": 5}})
    assert resp.status_code == 201, resp.text
    assert any("ha-mode" in w for w in resp.json()["warnings"])
    assert api.json(path)["definition"] == {"ha-mode": "all", "max-length": 5}
    assert api.delete(path).status_code == 204


def message_count(ch, queue: str) -> int:
    return ch.queue_declare(queue, passive=True).method.message_count


def test_policy_applies_live(api, res, connect):
    prefix = res.name("x")
    policy = res.policy()
    queue = res.queue("x.q")
    assert queue.startswith(prefix + ".")
    api.ok("PUT", f"/policies/%2F/{q(policy)}",
           {"pattern": f"^{re.escape(prefix)}\\.", "definition": {"max-length": 10}, "priority": 1, "apply-to": "queues"},
           expect=201)
    api.declare_queue(queue)

    # The limit applies as soon as the queue exists (checked live over AMQP, not via statistics).
    ch = connect().channel()
    ch.confirm_delivery()  # a passive declare is not ordered after unconfirmed publishes in RabbitMQ
    for i in range(20):
        ch.basic_publish("", queue, f"m{i}".encode())
    poll(lambda: message_count(ch, queue) == 10, timeout=5, what="10 messages")
    msgs = api.post(f"/queues/%2F/{q(queue)}/get", {"count": 1, "ackmode": "ack_requeue_true", "encoding": "auto"}).json()
    assert msgs[0]["payload"] == "m10"  # max-length drops from the head

    # The queue's GET names the policy once statistics are in.
    body = api.queue_with_stats(queue, pred=lambda b: b.get("policy") == policy)
    shape("queue_with_policy", body)
    assert body["effective_policy_definition"] == {"max-length": 10}

    # Deleting the policy lifts the limit.
    assert api.delete(f"/policies/%2F/{q(policy)}").status_code == 204

    def grows():
        ch.basic_publish("", queue, b"probe")
        return message_count(ch, queue) > 10

    poll(grows, timeout=5, what="the queue to grow past 10 messages")
    before = message_count(ch, queue)
    for i in range(20):
        ch.basic_publish("", queue, f"n{i}".encode())
    assert message_count(ch, queue) == before + 20


def test_operator_policies(api, res):
    name = res.operator_policy()
    path = f"/operator-policies/%2F/{q(name)}"
    body = {"pattern": f"^{re.escape(res.prefix)}", "definition": {"max-length": 100}, "priority": 1, "apply-to": "queues"}
    assert api.put(path, body).status_code == 201
    got = api.json(path)
    shape("operator_policy", got)
    assert got == {"vhost": "/", "name": name, "pattern": body["pattern"], "apply-to": "queues",
                   "definition": {"max-length": 100}, "priority": 1}
    assert got in api.json("/operator-policies")
    assert got in api.json("/operator-policies/%2F")
    # Operator policies accept only a few keys; federation is not one of them.
    assert_error(api.put(path, {**body, "definition": {"federation-upstream-set": "all"}}), 400)
    assert api.delete(path).status_code == 204
    assert_error(api.get(path), 404)


# ==========================================================================
# Federation links
# ==========================================================================


def setup_queue_federation(api: Api, res) -> tuple[str, str, str]:
    """A queue link from this broker to itself: <prefix>.down pulls from <prefix>.up."""
    upstream = res.parameter("federation-upstream", "self")
    policy = res.policy("fed")
    up_q, down_q = res.queue("up"), res.queue("down")
    api.declare_queue(up_q)
    api.ok("PUT", f"/parameters/federation-upstream/%2F/{q(upstream)}",
           {"value": {"uri": f"amqp://guest:guest@{HOST}:{amqp_port()}", "queue": up_q, "reconnect-delay": 1}},
           expect=201)
    api.ok("PUT", f"/policies/%2F/{q(policy)}",
           {"pattern": f"^{re.escape(down_q)}$", "definition": {"federation-upstream": upstream}, "apply-to": "queues"},
           expect=201)
    api.declare_queue(down_q)
    return upstream, up_q, down_q


def find_link(api: Api, down_q: str, status: str | None = None):
    def look():
        for link in api.json("/federation-links/%2F"):
            if link.get("queue") == down_q and (status is None or link.get("status") == status):
                return link
        return None

    return poll(look, what=f"federation link of {down_q!r}" + (f" with status {status!r}" if status else ""))


def test_federation_links(api, res, connect):
    upstream, up_q, down_q = setup_queue_federation(api, res)
    link = find_link(api, down_q)
    assert link["type"] == "queue"
    assert link["upstream"] == upstream
    assert link["vhost"] == "/"
    assert link["upstream_queue"] == up_q
    assert isinstance(link["status"], str)
    assert isinstance(link["uri"], str) and "guest:guest@" not in link["uri"]
    assert isinstance(link["timestamp"], str)
    assert any(item.get("queue") == down_q for item in api.json("/federation-links"))

    # A message published upstream reaches a consumer of the downstream queue.
    assert api.publish(up_q, "federated") == {"routed": True}
    ch = connect().channel()
    ch.basic_qos(prefetch_count=10)
    received = []
    ch.basic_consume(down_q, lambda c, m, p, body: received.append(body), auto_ack=True)
    deadline = time.monotonic() + 10
    while not received and time.monotonic() < deadline:
        ch.connection.process_data_events(time_limit=0.2)
    assert received == [b"federated"]
    # With a consumer attached the link is running on both brokers.
    shape("federation_link", find_link(api, down_q, status="running"))


@pytest.mark.ferrymq_only
def test_federation_link_paused_without_consumers(api, res, connect):
    # RabbitMQ always reports "running" (rabbitmq-server#8321); FerryMQ shows that a link pulls
    # only while the local queue has a consumer with spare capacity.
    upstream, up_q, down_q = setup_queue_federation(api, res)
    link = find_link(api, down_q, status="paused")
    assert link["upstream"] == upstream
    ch = connect().channel()
    ch.basic_qos(prefetch_count=10)
    ch.basic_consume(down_q, lambda *a: None, auto_ack=False)
    find_link(api, down_q, status="running")
    ch.close()
    find_link(api, down_q, status="paused")


# ==========================================================================
# Definitions
# ==========================================================================

DEFINITION_KEYS = {"rabbit_version", "users", "vhosts", "permissions", "parameters", "global_parameters",
                   "policies", "queues", "exchanges", "bindings"}


def test_definitions_export(api, res):
    queue, exchange = res.queue(), res.exchange()
    api.declare_queue(queue, durable=True)
    api.declare_exchange(exchange, "topic", durable=True)
    api.ok("POST", f"/bindings/%2F/e/{q(exchange)}/q/{q(queue)}", {"routing_key": "a.b"}, expect=201)
    body = api.json("/definitions")
    shape("definitions", body)
    assert set(body) >= DEFINITION_KEYS
    assert isinstance(body["rabbit_version"], str)
    for key in DEFINITION_KEYS - {"rabbit_version"}:
        assert isinstance(body[key], list), key
    assert {"name": "/"} in [{"name": v["name"]} for v in body["vhosts"]]
    guest = next(u for u in body["users"] if u["name"] == "guest")
    assert set(guest) >= {"name", "password_hash", "hashing_algorithm", "tags"}
    assert {"name": queue, "vhost": "/", "durable": True, "auto_delete": False, "arguments": {}} in body["queues"]
    assert any(x["name"] == exchange and x["type"] == "topic" and x["vhost"] == "/" for x in body["exchanges"])
    assert {"source": exchange, "vhost": "/", "destination": queue, "destination_type": "queue",
            "routing_key": "a.b", "arguments": {}} in body["bindings"]
    # Built-in exchanges (amq.*, the default) are not exported.
    assert not any(x["name"] == "" or x["name"].startswith("amq.") for x in body["exchanges"])

    vhost_body = api.json("/definitions/%2F")
    shape("definitions_vhost", vhost_body)
    assert set(vhost_body) >= {"rabbit_version", "parameters", "policies", "queues", "exchanges", "bindings"}
    assert {"name": queue, "durable": True, "auto_delete": False, "arguments": {}} in vhost_body["queues"]


def test_definitions_import(api, res):
    user, queue, exchange = res.user(), res.queue(), res.exchange()
    salt = os.urandom(4)
    password_hash = base64.b64encode(salt + hashlib.sha256(salt + b"imported").digest()).decode()
    document = {
        "users": [{"name": user, "password_hash": password_hash, "hashing_algorithm": "rabbit_password_hashing_sha256",
                   "tags": "management"}],
        "permissions": [{"user": user, "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}],
        "queues": [{"name": queue, "vhost": "/", "durable": True, "auto_delete": False,
                    "arguments": {"x-max-length": 3}}],
        "exchanges": [{"name": exchange, "vhost": "/", "type": "fanout", "durable": True, "auto_delete": False,
                       "internal": False, "arguments": {}}],
        "bindings": [{"source": exchange, "vhost": "/", "destination": queue, "destination_type": "queue",
                      "routing_key": "", "arguments": {}}],
    }
    shape("definitions_import_request", document)
    resp = api.post("/definitions", document)
    assert resp.status_code in (200, 201, 204), resp.text
    got = api.json(f"/queues/%2F/{q(queue)}")
    assert got["durable"] is True and got["arguments"] == {"x-max-length": 3}
    assert api.json(f"/exchanges/%2F/{q(exchange)}")["type"] == "fanout"
    assert api.publish("", "through import", exchange=exchange) == {"routed": True}
    assert as_user(user, "imported").json("/whoami") == {"name": user, "tags": ["management"]}
    assert api.json(f"/permissions/%2F/{q(user)}")["configure"] == ".*"


def test_definitions_vhost_round_trip(api, res):
    queue = res.queue()
    api.declare_queue(queue, durable=True, arguments={"x-message-ttl": 60000})
    exported = api.json("/definitions/%2F")
    assert api.delete(f"/queues/%2F/{q(queue)}").status_code == 204
    only_mine = {**exported, "queues": [x for x in exported["queues"] if x["name"] == queue],
                 "exchanges": [], "bindings": [], "policies": [], "parameters": []}
    resp = api.post("/definitions/%2F", only_mine)
    assert resp.status_code in (200, 201, 204), resp.text
    assert api.json(f"/queues/%2F/{q(queue)}")["arguments"] == {"x-message-ttl": 60000}


def test_definitions_import_rejects_broken_documents(api, res):
    # Not JSON.
    assert_error(api.post("/definitions", data="{broken", headers=JSON_HEADERS), 400)
    # A queue in a vhost that does not exist (RabbitMQ: reason ["no_such_vhost", ...]).
    missing_vhost = {"queues": [{"name": res.queue(), "vhost": res.name("novhost"), "durable": True,
                                 "auto_delete": False, "arguments": {}}]}
    assert_error(api.post("/definitions", missing_vhost), 400)
    # Permissions of a user that does not exist.
    ghost = {"permissions": [{"user": res.name("ghost"), "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}]}
    assert_error(api.post("/definitions", ghost), 400)
    # An invalid policy.
    policy = res.policy()
    bad_policy = {"policies": [{"vhost": "/", "name": policy, "pattern": "^x", "apply-to": "queues",
                                "definition": {"max-length": "many"}, "priority": 0}]}
    assert_error(api.post("/definitions", bad_policy), 400)
    assert api.get(f"/policies/%2F/{q(policy)}").status_code == 404
    # Export of an unknown vhost.
    assert_error(api.get(f"/definitions/{q(res.name('novhost'))}"), 400)


# ==========================================================================
# Health checks
# ==========================================================================


def test_aliveness_test(api):
    try:
        body = api.json("/aliveness-test/%2F")
        shape("aliveness_test", body)
        assert body == {"status": "ok"}
    finally:
        # RabbitMQ leaves a queue named "aliveness-test" behind in the vhost.
        api.delete("/queues/%2F/aliveness-test")
    assert_error(api.get(f"/aliveness-test/no-such-vhost-{uuid.uuid4().hex[:6]}"), 404)


@pytest.mark.parametrize("path", [
    "/health/checks/alarms",
    "/health/checks/local-alarms",
    "/health/checks/virtual-hosts",
    "/health/checks/protocol-listener/amqp",
])
def test_health_checks_ok(api, path):
    body = api.json(path)
    assert body["status"] == "ok"


def test_health_check_port_listener(api, anon):
    body = api.json(f"/health/checks/port-listener/{amqp_port()}")
    shape("health_check_port_listener", body)
    assert body["status"] == "ok" and body["port"] == amqp_port()
    # Nothing listens on port 1: 503 {"status": "failed", "reason": ..., "missing": 1, ...}.
    resp = api.get("/health/checks/port-listener/1")
    assert resp.status_code == 503
    shape("health_check_failed", resp.json())
    assert resp.json()["status"] == "failed" and resp.json()["missing"] == 1
    resp = api.get("/health/checks/protocol-listener/no-such-protocol")
    assert resp.status_code == 503 and resp.json()["status"] == "failed"
    # Health checks require credentials too.
    assert anon.get("/health/checks/alarms").status_code == 401


# ==========================================================================
# Pagination, sorting, columns
# ==========================================================================

PAGE_KEYS = {"items", "page", "page_size", "page_count", "item_count", "filtered_count", "total_count"}


@pytest.fixture
def five_queues(api, res):
    prefix = res.name("pg")
    queues = [res.queue(f"pg.{c}") for c in "abcde"]
    for queue in queues:
        api.declare_queue(queue)
    return prefix, queues


def test_pagination(api, five_queues):
    prefix, queues = five_queues
    params = {"page": 1, "page_size": 2, "name": prefix, "use_regex": "false", "sort": "name"}
    body = api.json("/queues", params=params)
    shape("queues_paged", body)
    assert set(body) >= PAGE_KEYS
    assert (body["page"], body["page_size"], body["page_count"], body["item_count"], body["filtered_count"]) == (1, 2, 3, 2, 5)
    assert body["total_count"] >= 5
    assert names_of(body["items"]) == queues[:2]
    assert set(body["items"][0]) >= QUEUE_KEYS

    last = api.json("/queues", params={**params, "page": 3})
    assert (last["page"], last["item_count"]) == (3, 1)
    assert names_of(last["items"]) == queues[4:]

    per_vhost = api.json("/queues/%2F", params=params)
    assert names_of(per_vhost["items"]) == queues[:2] and per_vhost["filtered_count"] == 5

    # Past the last page: 400 {"error": "page_out_of_range", ...}.
    shape("error_page_out_of_range", assert_error(api.get("/queues", params={**params, "page": 4}), 400))
    assert_error(api.get("/queues", params={**params, "page": 0}), 400)
    # page_size is capped at 500.
    assert_error(api.get("/queues", params={**params, "page_size": 501}), 400)


def test_pagination_name_filter(api, five_queues):
    prefix, queues = five_queues
    regex = f"^{re.escape(prefix)}\\.[ab]$"
    body = api.json("/queues", params={"page": 1, "page_size": 100, "name": regex, "use_regex": "true", "sort": "name"})
    assert names_of(body["items"]) == queues[:2] and body["filtered_count"] == 2
    # Without use_regex the filter is a case-insensitive substring match.
    body = api.json("/queues", params={"page": 1, "page_size": 100, "name": prefix.upper(), "use_regex": "false"})
    assert sorted(names_of(body["items"])) == queues


def test_sorting_and_columns(api, five_queues):
    prefix, queues = five_queues
    body = api.json("/queues", params={"page": 1, "page_size": 2, "name": prefix, "use_regex": "false",
                                       "sort": "name", "sort_reverse": "true", "columns": "name,messages"})
    assert names_of(body["items"]) == [queues[4], queues[3]]
    for item in body["items"]:
        # "messages" appears once the queue has reported statistics.
        assert "name" in item and set(item) <= {"name", "messages"}

    # Without page, sort/columns apply to the plain list.
    plain = api.json("/queues/%2F", params={"sort": "name", "sort_reverse": "true", "columns": "name,vhost"})
    assert isinstance(plain, list)
    mine = [item for item in plain if item["name"].startswith(prefix)]
    assert mine == [{"name": n, "vhost": "/"} for n in reversed(queues)]
    all_names = names_of(plain)
    assert all_names == sorted(all_names, reverse=True)


def test_pagination_of_exchanges(api):
    body = api.json("/exchanges/%2F", params={"page": 1, "page_size": 3, "columns": "name,type", "sort": "name"})
    assert set(body) >= PAGE_KEYS
    assert body["item_count"] == 3 and len(body["items"]) == 3
    assert all(set(item) == {"name", "type"} for item in body["items"])


# ==========================================================================
# Methods and unknown paths
# ==========================================================================


def test_unsupported_method_is_405(api, anon):
    for method, path in (("POST", "/overview"), ("DELETE", "/overview"), ("PUT", "/nodes"), ("POST", "/vhosts/%2F"),
                         ("PATCH", "/queues")):
        resp = api.request(method, path)
        assert resp.status_code == 405, (method, path, resp.status_code, resp.text)
        assert "GET" in resp.headers.get("allow", ""), resp.headers
    # The method check comes before authentication.
    assert anon.post("/overview").status_code == 405


def test_unknown_path_is_404_json(api, anon):
    body = assert_error(api.get("/nope"), 404)
    assert isinstance(body["reason"], str)
    # Routing comes before authentication.
    assert anon.get("/nope").status_code == 404


# ==========================================================================
# FerryMQ extensions
# ==========================================================================


@pytest.mark.ferrymq_only
def test_prometheus_metrics(api):
    resp = api.session.get(f"{api.base}/metrics", timeout=10)
    assert resp.status_code == 200
    assert resp.headers.get("content-type", "").startswith("text/plain")
    assert any(line.startswith("# TYPE ") for line in resp.text.splitlines())


@pytest.mark.ferrymq_only
def test_openapi_document(api):
    body = api.json("/openapi.json")
    assert str(body["openapi"]).startswith("3.")
    assert isinstance(body["paths"], dict)
    assert any(path.endswith("/overview") for path in body["paths"])
    assert any("queues" in path for path in body["paths"])
