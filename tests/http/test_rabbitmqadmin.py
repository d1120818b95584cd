"""`rabbitmqadmin` (the Python script shipped with rabbitmq-server 3.10.8) against the management API.

What rabbitmqadmin 3.10.8 relies on (it makes no version check and does not call /api/overview
unless asked to `show overview`):
- declare sends every optional field as a JSON *string*: {"durable": "true", "auto_delete": "false",
  "internal": "false"} for exchanges and queues, {"count": "1"} for get; it also puts "vhost" and
  the object's name into the body. The server must accept these string booleans and numbers.
- declare binding is POST /api/bindings/{vhost}/e/{source}/{q|e}/{destination}; delete binding
  uses properties_key, "~" when not given.
- list uses ?columns=...; with -f raw_json it prints the body as received.
- exit status 1 with "*** <reason>" on stderr for 400 (reason read from the JSON body),
  "*** Access refused: <path>" for 401 and "*** Not found: <path>" for 404.

Override the script with FERRYMQ_RABBITMQADMIN=/path/to/rabbitmqadmin.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest

from mgmtapi import HOST, PASSWORD, USER, http_port, poll, q, wait_closed_by_broker

ADMIN = os.environ.get("FERRYMQ_RABBITMQADMIN") or shutil.which("rabbitmqadmin") or "/usr/bin/rabbitmqadmin"

pytestmark = pytest.mark.skipif(not os.path.exists(ADMIN), reason=f"rabbitmqadmin not found at {ADMIN}")


def admin(*args: str, user: str = USER, password: str = PASSWORD, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [ADMIN, "-H", HOST, "-P", str(http_port()), "-u", user, "-p", password, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if check:
        assert proc.returncode == 0, (cmd, proc.returncode, proc.stdout, proc.stderr)
    return proc


def admin_json(*args: str):
    return json.loads(admin("-f", "raw_json", *args).stdout)


def test_show_overview():
    [overview] = admin_json("show", "overview")
    assert isinstance(overview["rabbitmq_version"], str)
    # The default table output reads these columns.
    out = admin("show", "overview").stdout
    for column in ("rabbitmq_version", "cluster_name", "queue_totals.messages", "object_totals.queues"):
        assert column in out


def test_list_builtin_objects():
    exchanges = admin_json("list", "exchanges")
    assert {"amq.direct", "amq.topic", "amq.fanout", "amq.headers"} <= {x["name"] for x in exchanges}
    assert "/" in [v["name"] for v in admin_json("list", "vhosts")]
    assert "guest" in [u["name"] for u in admin_json("list", "users")]
    assert any(p["user"] == "guest" and p["vhost"] == "/" for p in admin_json("list", "permissions"))
    assert len(admin_json("list", "nodes")) >= 1
    for kind in ("connections", "channels", "consumers", "queues", "bindings", "parameters", "policies",
                 "operator_policies"):
        assert isinstance(admin_json("list", kind), list), kind
    # Table output with default columns (?columns=name,type etc.).
    out = admin("list", "exchanges").stdout
    assert "amq.direct" in out and re.search(r"\|\s*name\s*\|\s*type\s*\|", out), out


def test_queue_exchange_binding_publish_get(res):
    queue, exchange = res.queue(), res.exchange()
    out = admin("declare", "queue", f"name={queue}", "durable=false").stdout
    assert "queue declared" in out
    assert "exchange declared" in admin("declare", "exchange", f"name={exchange}", "type=topic").stdout
    assert "binding declared" in admin(
        "declare", "binding", f"source={exchange}", f"destination={queue}", "routing_key=a.#").stdout

    queues = {x["name"]: x for x in admin_json("list", "queues")}
    assert queues[queue]["durable"] is False
    exchanges = {x["name"]: x for x in admin_json("-V", "/", "list", "exchanges")}
    assert exchanges[exchange]["type"] == "topic" and exchanges[exchange]["durable"] is True
    bindings = admin_json("list", "bindings")
    assert any(b["source"] == exchange and b["destination"] == queue and b["routing_key"] == "a.#" for b in bindings)
    # Column selection in table form.
    out = admin("list", "queues", "name", "durable").stdout
    assert queue in out

    assert "Message published" in admin("publish", f"exchange={exchange}", "routing_key=a.b", "payload=hello").stdout
    assert "NOT routed" in admin("publish", f"exchange={exchange}", "routing_key=x.y", "payload=lost").stdout
    [msg] = admin_json("get", f"queue={queue}", "ackmode=ack_requeue_false")
    assert (msg["payload"], msg["routing_key"], msg["exchange"], msg["redelivered"]) == ("hello", "a.b", exchange, False)
    assert admin_json("get", f"queue={queue}") == []

    # Publish from stdin (base64 upload), purge, then delete everything.
    proc = subprocess.run([ADMIN, "-H", HOST, "-P", str(http_port()), "-u", USER, "-p", PASSWORD,
                           "publish", "exchange=amq.default", f"routing_key={queue}"],
                          input="from stdin", capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert "queue purged" in admin("purge", "queue", f"name={queue}").stdout
    assert admin_json("get", f"queue={queue}") == []

    assert "binding deleted" in admin(
        "delete", "binding", f"source={exchange}", "destination_type=queue", f"destination={queue}",
        "properties_key=a.%23").stdout
    assert not any(b["source"] == exchange for b in admin_json("list", "bindings"))
    assert "exchange deleted" in admin("delete", "exchange", f"name={exchange}").stdout
    assert "queue deleted" in admin("delete", "queue", f"name={queue}").stdout
    assert queue not in [x["name"] for x in admin_json("list", "queues")]


def test_exchange_to_exchange_binding(res):
    src, dst = res.exchange("src"), res.exchange("dst")
    admin("declare", "exchange", f"name={src}", "type=direct", "durable=false")
    admin("declare", "exchange", f"name={dst}", "type=fanout", "durable=false")
    admin("declare", "binding", f"source={src}", f"destination={dst}", "destination_type=exchange", "routing_key=k")
    assert any(b["source"] == src and b["destination"] == dst and b["destination_type"] == "exchange"
               for b in admin_json("list", "bindings"))
    admin("delete", "binding", f"source={src}", "destination_type=exchange", f"destination={dst}", "properties_key=k")
    assert not any(b["source"] == src for b in admin_json("list", "bindings"))


def test_export_and_import_definitions(res, tmp_path):
    queue = res.queue()
    admin("declare", "queue", f"name={queue}", "durable=true")
    exported = tmp_path / "exported.json"
    out = admin("export", str(exported)).stdout
    assert "Exported definitions" in out
    body = json.loads(exported.read_text())
    assert {"users", "vhosts", "queues", "exchanges", "bindings", "policies"} <= set(body)
    assert any(x["name"] == queue for x in body["queues"])

    # Import a small document: a queue, an exchange and a binding in vhost "/".
    imported_q, imported_x = res.queue("imported"), res.exchange("imported")
    document = {
        "queues": [{"name": imported_q, "vhost": "/", "durable": True, "auto_delete": False, "arguments": {}}],
        "exchanges": [{"name": imported_x, "vhost": "/", "type": "fanout", "durable": True, "auto_delete": False,
                       "internal": False, "arguments": {}}],
        "bindings": [{"source": imported_x, "vhost": "/", "destination": imported_q, "destination_type": "queue",
                      "routing_key": "", "arguments": {}}],
    }
    path = tmp_path / "import.json"
    path.write_text(json.dumps(document))
    assert "Uploaded definitions" in admin("import", str(path)).stdout
    assert imported_q in [x["name"] for x in admin_json("list", "queues")]
    assert any(b["source"] == imported_x and b["destination"] == imported_q for b in admin_json("list", "bindings"))

    # Per-vhost export (-V /) has no users or vhosts.
    vhost_export = tmp_path / "vhost.json"
    admin("-V", "/", "export", str(vhost_export))
    vhost_body = json.loads(vhost_export.read_text())
    assert "users" not in vhost_body and any(x["name"] == imported_q for x in vhost_body["queues"])

    # A broken document: exit 1 and the server's reason on stderr.
    broken = tmp_path / "broken.json"
    broken.write_text('{"queues": [')
    proc = admin("import", str(broken), check=False)
    assert proc.returncode == 1 and proc.stderr.startswith("***"), (proc.stdout, proc.stderr)


def test_policy(res):
    name = res.policy()
    pattern = f"^{re.escape(res.prefix)}\\."
    out = admin("declare", "policy", f"name={name}", f"pattern={pattern}", 'definition={"max-length":5}',
                "priority=1", "apply-to=queues").stdout
    assert "policy declared" in out
    [policy] = [p for p in admin_json("list", "policies") if p["name"] == name]
    assert policy["definition"] == {"max-length": 5} and policy["priority"] == 1 and policy["apply-to"] == "queues"
    assert policy["pattern"] == pattern and policy["vhost"] == "/"
    assert "policy deleted" in admin("delete", "policy", f"name={name}").stdout
    assert name not in [p["name"] for p in admin_json("list", "policies")]


def test_operator_policy(res):
    name = res.operator_policy()
    admin("declare", "operator_policy", f"name={name}", f"pattern=^{re.escape(res.prefix)}",
          'definition={"max-length":50}', "apply-to=queues")
    assert any(p["name"] == name for p in admin_json("list", "operator_policies"))
    admin("delete", "operator_policy", f"name={name}")
    assert not any(p["name"] == name for p in admin_json("list", "operator_policies"))


def test_parameter(res):
    name = res.parameter("federation-upstream")
    out = admin("declare", "parameter", "component=federation-upstream", f"name={name}",
                'value={"uri":"amqp://h","ack-mode":"on-publish"}').stdout
    assert "parameter declared" in out
    [param] = [p for p in admin_json("list", "parameters") if p["name"] == name]
    assert param["component"] == "federation-upstream" and param["vhost"] == "/"
    assert param["value"] == {"uri": "amqp://h", "ack-mode": "on-publish"}
    assert "parameter deleted" in admin("delete", "parameter", "component=federation-upstream", f"name={name}").stdout
    assert not any(p["name"] == name for p in admin_json("list", "parameters"))


def test_vhost_user_permission(res):
    vhost, user = res.vhost(), res.user()
    assert "vhost declared" in admin("declare", "vhost", f"name={vhost}").stdout
    assert "user declared" in admin("declare", "user", f"name={user}", "password=pw", "tags=monitoring").stdout
    assert "permission declared" in admin("declare", "permission", f"vhost={vhost}", f"user={user}",
                                          "configure=.*", "write=.*", "read=").stdout
    assert vhost in [v["name"] for v in admin_json("list", "vhosts")]
    [u] = [u for u in admin_json("list", "users") if u["name"] == user]
    assert u["tags"] == ["monitoring"]
    assert {"user": user, "vhost": vhost, "configure": ".*", "write": ".*", "read": ""} in admin_json("list", "permissions")
    # The new user can list queues with its own credentials (monitoring tag).
    assert isinstance(json.loads(admin("-f", "raw_json", "list", "queues", user=user, password="pw").stdout), list)
    admin("delete", "permission", f"vhost={vhost}", f"user={user}")
    admin("delete", "user", f"name={user}")
    admin("delete", "vhost", f"name={vhost}")
    assert vhost not in [v["name"] for v in admin_json("list", "vhosts")]


def test_close_connection(res, connect, api):
    label = res.name("conn")
    conn = connect(client_properties={"connection_name": label})

    def find():
        return next((c["name"] for c in admin_json("list", "connections")
                     if c.get("client_properties", {}).get("connection_name") == label), None)

    name = poll(find, what="connection listed by rabbitmqadmin")
    assert "connection closed" in admin("close", "connection", f"name={name}").stdout
    assert wait_closed_by_broker(conn).reply_code == 320
    poll(lambda: api.get(f"/connections/{q(name)}").status_code == 404, what="connection gone")


def test_errors_exit_1(res):
    missing = res.name("missing")
    proc = admin("get", f"queue={missing}", check=False)
    assert proc.returncode == 1 and "Not found" in proc.stderr, proc.stderr

    proc = admin("list", "queues", password="wrong", check=False)
    assert proc.returncode == 1 and "Access refused" in proc.stderr, proc.stderr

    # 400: the reason from the JSON body is printed.
    proc = admin("declare", "exchange", f"name={res.exchange()}", "type=no-such-type", check=False)
    assert proc.returncode == 1 and "no-such-type" in proc.stderr, proc.stderr

    # Usage errors never reach the server.
    proc = admin("declare", "queue", check=False)
    assert proc.returncode == 1 and "mandatory argument" in proc.stderr
