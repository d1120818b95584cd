"""FerryMQ against a real RabbitMQ 3.10 node: definitions import and queue federation both ways.

Run (the suite starts and stops both brokers itself; see conftest.py):

    python3 -m pytest tests/interop -q          # FERRYMQ_BIN=/path/to/ferrymq to test another build

Needs Debian's rabbitmq-server (3.10.8 here) and `pip install requests pika pytest`. Without
rabbitmq-server every test errors with a clear message instead of being skipped. About a minute
with the RabbitMQ boot.

1. A definitions export of RabbitMQ (user with password hash, vhost, permissions, queue with
   arguments, exchange, binding, policy) is imported unchanged by FerryMQ, twice; the user logs in
   with its original password over HTTP and AMQP.
2. FerryMQ pulls a backlog and live traffic from a RabbitMQ upstream queue (the migration
   direction) only once a local consumer exists: exactly once, in order, properties intact.
3. RabbitMQ's own federation plugin pulls from FerryMQ as its upstream (the way back).
4. A proxy cuts the FerryMQ -> RabbitMQ link every second while 3000 messages flow; nothing is
   lost, and the redeliveries RabbitMQ makes are removed by message-id.

RabbitMQ's management statistics lag by 5 s, so RabbitMQ queue depths are read with a passive
queue.declare over AMQP (message_count = ready messages, consumer_count = consumers).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter

import pika
import pytest

from mgmtapi import poll, q

EXPECTED_HEADERS = ("seq", "phase", "x-origin")


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def uid() -> str:
    return uuid.uuid4().hex[:8]


def depth(channel, queue: str) -> tuple[int, int]:
    """(ready messages, consumers) of `queue` via a passive declare."""
    ok = channel.queue_declare(queue, passive=True).method
    return ok.message_count, ok.consumer_count


def properties(message_id: str, seq: int, phase: str) -> pika.BasicProperties:
    return pika.BasicProperties(
        delivery_mode=2,
        message_id=message_id,
        content_type="application/json",
        correlation_id=f"corr-{seq}",
        app_id="interop-suite",
        timestamp=1_700_000_000 + seq,
        headers={"seq": seq, "phase": phase, "x-origin": "rabbitmq"},
    )


def publish(channel, queue: str, message_id: str, seq: int, phase: str) -> None:
    """Publish one persistent message (the channel is in confirm mode, so this waits for the ack)."""
    body = json.dumps({"id": message_id, "seq": seq}).encode()
    channel.basic_publish("", queue, body, properties(message_id, seq, phase), mandatory=True)


class LivePublisher(threading.Thread):
    """Publishes `count` messages to `queue` on its own connection with confirms, `gap` s apart;
    `published` holds the message ids in confirmed order."""

    def __init__(self, broker, queue: str, prefix: str, count: int, first_seq: int, gap: float = 0.0):
        super().__init__(daemon=True)
        self.broker, self.queue, self.prefix = broker, queue, prefix
        self.count, self.first_seq, self.gap = count, first_seq, gap
        self.published: list[str] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            conn = pika.BlockingConnection(self.broker.params())
            try:
                ch = conn.channel()
                ch.confirm_delivery()
                for seq in range(self.first_seq, self.first_seq + self.count):
                    mid = f"{self.prefix}{seq}"
                    publish(ch, self.queue, mid, seq, "live")
                    self.published.append(mid)
                    if self.gap:
                        time.sleep(self.gap)
            finally:
                conn.close()
        except BaseException as exc:  # reported by the test
            self.error = exc


def ferry_links(ferrymq, queue: str) -> list[dict]:
    return [link for link in ferrymq.api.json("/federation-links") if link.get("queue") == queue and link.get("vhost") == "/"]


def ferry_link(ferrymq, queue: str) -> dict | None:
    links = ferry_links(ferrymq, queue)
    assert len(links) <= 1, links
    return links[0] if links else None


def federate_on_ferrymq(ferrymq, cleanup, upstream: str, policy: str, pattern: str, uri: str, **value) -> None:
    """Create a federation upstream and a policy (applying to queues) on FerryMQ."""
    definition = value.pop("definition", {"federation-upstream-set": "all"})
    body = {"uri": uri, "reconnect-delay": 1, "ack-mode": "on-confirm", "prefetch-count": 1000, **value}
    ferrymq.api.ok("PUT", f"/parameters/federation-upstream/%2F/{q(upstream)}", {"value": body}, expect=(201, 204))
    cleanup(lambda: ferrymq.api.delete(f"/parameters/federation-upstream/%2F/{q(upstream)}"))
    ferrymq.api.ok(
        "PUT", f"/policies/%2F/{q(policy)}", {"pattern": pattern, "definition": definition, "apply-to": "queues"}, expect=(201, 204)
    )
    cleanup(lambda: ferrymq.api.delete(f"/policies/%2F/{q(policy)}"))


def delete_queue_on_both(cleanup, queue: str, *brokers) -> None:
    for broker in brokers:
        cleanup(lambda api=broker.api: api.delete(f"/queues/%2F/{q(queue)}"))


def stop_link_and_check_upstream_empty(ferrymq, policy: str, upstream_channel, queue: str) -> None:
    """Delete the policy, wait until the link's consumer has left the upstream queue, then the
    upstream queue must hold nothing: every message taken was acked (unacked ones would have
    been requeued when the link's channel closed)."""
    ferrymq.api.ok("DELETE", f"/policies/%2F/{q(policy)}", expect=(200, 204))
    poll(lambda: depth(upstream_channel, queue)[1] == 0, timeout=15, what="the link's consumer leaving the upstream queue")
    time.sleep(0.3)  # a requeue after the channel close is not instantaneous
    ready, _ = depth(upstream_channel, queue)
    assert ready == 0, f"{ready} messages went back to the upstream queue when the link stopped (taken but never acked)"


def assert_x_received_from(headers: dict, uri_prefix: str, queue: str) -> dict:
    hops = headers.get("x-received-from")
    assert isinstance(hops, list) and hops, headers
    hop = hops[-1]
    assert isinstance(hop, dict), hops
    uri = hop.get("uri")
    if isinstance(uri, bytes):
        uri = uri.decode()
    assert isinstance(uri, str) and uri.startswith(uri_prefix), hop
    assert "guest" not in uri and "@" not in uri, f"credentials leaked into x-received-from: {hop}"
    hop_queue = hop.get("queue")
    assert (hop_queue.decode() if isinstance(hop_queue, bytes) else hop_queue) == queue, hop
    return hop


# --------------------------------------------------------------------------
# 1. Definitions
# --------------------------------------------------------------------------


def test_rabbitmq_definitions_import_unchanged_and_users_keep_passwords(ferrymq, rabbitmq, cleanup, connect):
    tag = uid()
    vhost, user, password = f"interop-vh-{tag}", f"interop-user-{tag}", f"pw-{uuid.uuid4().hex}"
    queue, exchange, policy = f"orders.{tag}", f"orders-x-{tag}", f"orders-limits-{tag}"
    queue_args = {"x-message-ttl": 60000, "x-max-length": 1000, "x-dead-letter-exchange": "orders-dlx"}
    policy_body = {"pattern": f"^orders\\.{tag}$", "definition": {"max-length-bytes": 1048576}, "priority": 7, "apply-to": "queues"}
    for broker in (rabbitmq, ferrymq):
        cleanup(lambda api=broker.api: api.delete(f"/users/{q(user)}"))
        cleanup(lambda api=broker.api: api.delete(f"/vhosts/{q(vhost)}"))

    r = rabbitmq.api
    r.ok("PUT", f"/vhosts/{q(vhost)}", {}, expect=201)
    r.ok("PUT", f"/users/{q(user)}", {"password": password, "tags": "management"}, expect=201)
    r.ok("PUT", f"/permissions/{q(vhost)}/{q(user)}", {"configure": ".*", "write": ".*", "read": ".*"}, expect=201)
    r.ok("PUT", f"/queues/{q(vhost)}/{q(queue)}", {"durable": True, "auto_delete": False, "arguments": queue_args}, expect=201)
    r.ok("PUT", f"/exchanges/{q(vhost)}/{q(exchange)}", {"type": "topic", "durable": True, "auto_delete": False, "internal": False, "arguments": {}}, expect=201)
    r.ok("POST", f"/bindings/{q(vhost)}/e/{q(exchange)}/q/{q(queue)}", {"routing_key": "orders.#", "arguments": {}}, expect=201)
    r.ok("PUT", f"/policies/{q(vhost)}/{q(policy)}", policy_body, expect=201)

    resp = r.get("/definitions")
    assert resp.status_code == 200, resp.text
    export = resp.json()
    exported_user = next(u for u in export["users"] if u["name"] == user)
    assert exported_user["hashing_algorithm"] == "rabbit_password_hashing_sha256", exported_user
    assert password not in resp.text  # only the salted hash travels

    for attempt in (1, 2):  # a second import of the same document must be harmless
        imported = ferrymq.api.post("/definitions", data=resp.content, headers={"content-type": "application/json"})
        assert 200 <= imported.status_code < 300, (attempt, imported.status_code, imported.text)

        f = ferrymq.api
        f.json(f"/vhosts/{q(vhost)}")
        got_user = f.json(f"/users/{q(user)}")
        tags = got_user["tags"]
        assert (tags.split(",") if isinstance(tags, str) else tags) == ["management"], got_user
        assert got_user["password_hash"] == exported_user["password_hash"], got_user
        assert [u["name"] for u in f.json("/users")].count(user) == 1
        perm = f.json(f"/permissions/{q(vhost)}/{q(user)}")
        assert (perm["configure"], perm["write"], perm["read"]) == (".*", ".*", ".*"), perm
        got_queue = f.json(f"/queues/{q(vhost)}/{q(queue)}")
        assert got_queue["durable"] is True and got_queue["auto_delete"] is False, got_queue
        assert got_queue["arguments"] == queue_args, got_queue
        assert got_queue.get("policy") == policy, got_queue
        got_exchange = f.json(f"/exchanges/{q(vhost)}/{q(exchange)}")
        assert (got_exchange["type"], got_exchange["durable"]) == ("topic", True), got_exchange
        bindings = f.json(f"/bindings/{q(vhost)}/e/{q(exchange)}/q/{q(queue)}")
        assert [b["routing_key"] for b in bindings] == ["orders.#"], bindings
        got_policy = f.json(f"/policies/{q(vhost)}/{q(policy)}")
        assert {k: got_policy.get(k) for k in policy_body} == policy_body, got_policy

    # The imported user logs in with its original password: HTTP ...
    who = ferrymq.api.session.get(ferrymq.api.url("/whoami"), auth=(user, password), timeout=10)
    assert who.status_code == 200, (who.status_code, who.text)
    assert who.json()["name"] == user, who.text
    wrong = ferrymq.api.session.get(ferrymq.api.url("/whoami"), auth=(user, password + "x"), timeout=10)
    assert wrong.status_code == 401, (wrong.status_code, wrong.text)

    # ... and AMQP, into the imported vhost, where the imported binding routes into the imported queue.
    conn = connect(ferrymq, virtual_host=vhost, credentials=pika.PlainCredentials(user, password))
    ch = conn.channel()
    ch.confirm_delivery()
    ch.basic_publish(exchange, "orders.eu.created", b"order-1", mandatory=True)
    method, _props, body = ch.basic_get(queue, auto_ack=True)
    assert method is not None and body == b"order-1"
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        pika.BlockingConnection(ferrymq.params(virtual_host=vhost, credentials=pika.PlainCredentials(user, "not-" + password)))


# --------------------------------------------------------------------------
# 2. FerryMQ downstream, RabbitMQ upstream (migrating off RabbitMQ)
# --------------------------------------------------------------------------


def test_ferrymq_pulls_backlog_and_live_traffic_from_rabbitmq(ferrymq, rabbitmq, cleanup, connect):
    tag = uid()
    queue, upstream, policy = f"metric.cpu.{tag}", f"rabbit-{tag}", f"federate-metrics-{tag}"
    backlog, live_count = 500, 300
    delete_queue_on_both(cleanup, queue, rabbitmq, ferrymq)

    rch = connect(rabbitmq).channel()
    rch.queue_declare(queue, durable=True)
    rch.confirm_delivery()
    expected = [f"{tag}-{seq}" for seq in range(backlog)]
    for seq, mid in enumerate(expected):
        publish(rch, queue, mid, seq, "backlog")
    assert depth(rch, queue)[0] == backlog

    federate_on_ferrymq(ferrymq, cleanup, upstream, policy, f"^metric\\.cpu\\.{tag}$", rabbitmq.amqp_uri())
    fconn = connect(ferrymq)
    fch = fconn.channel()
    fch.queue_declare(queue, durable=True)

    # The link appears, but without a local consumer it pauses and nothing moves.
    link = poll(lambda: (l := ferry_link(ferrymq, queue)) and l["status"] == "paused" and l, timeout=15, what="a paused link")
    assert link["upstream"] == upstream and link["upstream_queue"] == queue, link
    assert link["uri"].startswith(f"amqp://127.0.0.1:{rabbitmq.amqp_port}") and "guest" not in link["uri"], link
    time.sleep(1.0)
    assert depth(rch, queue)[0] == backlog, "messages left RabbitMQ although FerryMQ has no consumer"
    assert depth(fch, queue)[0] == 0
    link = ferry_link(ferrymq, queue)
    assert link["status"] == "paused" and link["messages_transferred"] == 0, link

    # Live publishing to RabbitMQ continues while a consumer on FerryMQ drains everything.
    live = LivePublisher(rabbitmq, queue, f"{tag}-", live_count, first_seq=backlog, gap=0.01)
    live.start()
    received: list[tuple[str, pika.BasicProperties, bytes]] = []

    def on_message(ch, method, props, body):
        received.append((props.message_id, props, body))
        ch.basic_ack(method.delivery_tag)

    fch.basic_qos(prefetch_count=100)
    fch.basic_consume(queue, on_message)
    deadline = time.monotonic() + 60
    while (live.is_alive() or len(received) < backlog + len(live.published)) and time.monotonic() < deadline:
        fconn.process_data_events(time_limit=0.2)
    fconn.process_data_events(time_limit=1.0)  # anything extra (a duplicate) would arrive now
    live.join(timeout=5)
    assert live.error is None, f"live publisher failed: {live.error!r}"
    expected += live.published
    assert len(live.published) == live_count

    ids = [mid for mid, _, _ in received]
    dups = {mid: n for mid, n in Counter(ids).items() if n > 1}
    assert not dups, f"duplicates: {dups}"
    missing = [mid for mid in expected if mid not in set(ids)]
    assert not missing, f"{len(missing)} messages never arrived, first {missing[:5]}"
    assert ids == expected, "messages arrived out of publish order"

    for mid, props, body in received:
        seq = int(mid.rsplit("-", 1)[1])
        want = properties(mid, seq, "backlog" if seq < backlog else "live")
        assert json.loads(body) == {"id": mid, "seq": seq}
        for field in ("message_id", "content_type", "correlation_id", "app_id", "timestamp", "delivery_mode"):
            assert getattr(props, field) == getattr(want, field), (mid, field, props)
        headers = props.headers or {}
        assert {k: headers.get(k) for k in EXPECTED_HEADERS} == want.headers, (mid, headers)
        hop = assert_x_received_from(headers, f"amqp://127.0.0.1:{rabbitmq.amqp_port}", queue)
        assert hop.get("redelivered") is False, (mid, hop)

    poll(lambda: depth(rch, queue)[0] == 0, timeout=10, what="RabbitMQ queue empty")
    link = ferry_link(ferrymq, queue)
    assert link["status"] == "running", link
    assert link["messages_transferred"] == len(expected) and link["duplicates_dropped"] == 0, link
    stop_link_and_check_upstream_empty(ferrymq, policy, rch, queue)


# --------------------------------------------------------------------------
# 3. RabbitMQ downstream, FerryMQ upstream (the way back)
# --------------------------------------------------------------------------


def test_rabbitmq_federation_pulls_from_ferrymq_upstream(ferrymq, rabbitmq, cleanup, connect):
    tag = uid()
    queue, upstream, policy = f"wayback.{tag}", f"ferrymq-{tag}", f"federate-wayback-{tag}"
    total = 600
    r = rabbitmq.api
    delete_queue_on_both(cleanup, queue, rabbitmq, ferrymq)
    r.ok("PUT", f"/parameters/federation-upstream/%2F/{q(upstream)}", {"value": {"uri": ferrymq.amqp_uri(), "reconnect-delay": 1}}, expect=(201, 204))
    cleanup(lambda: r.delete(f"/parameters/federation-upstream/%2F/{q(upstream)}"))
    r.ok("PUT", f"/policies/%2F/{q(policy)}", {"pattern": f"^wayback\\.{tag}$", "definition": {"federation-upstream": upstream}, "apply-to": "queues"}, expect=(201, 204))
    cleanup(lambda: r.delete(f"/policies/%2F/{q(policy)}"))

    fch = connect(ferrymq).channel()
    fch.queue_declare(queue, durable=True)
    fch.confirm_delivery()
    rconn = connect(rabbitmq)
    rch = rconn.channel()
    rch.queue_declare(queue, durable=True)

    def rabbit_link():
        links = [l for l in r.json("/federation-links") if l.get("queue") == queue and l.get("upstream") == upstream]
        return links[0] if links else None

    link = poll(lambda: (l := rabbit_link()) and l.get("status") == "running" and l, timeout=30, what="RabbitMQ's link running")

    # Half before RabbitMQ has a consumer (it waits on FerryMQ), half while it consumes.
    expected = [f"{tag}-{seq}" for seq in range(total)]
    for seq, mid in enumerate(expected[: total // 2]):
        publish(fch, queue, mid, seq, "before")
    received: list[str] = []
    hops: list[dict] = []

    def on_message(ch, method, props, body):
        received.append(props.message_id)
        hops.append(assert_x_received_from(props.headers or {}, f"amqp://127.0.0.1:{ferrymq.amqp_port}", queue))
        ch.basic_ack(method.delivery_tag)

    rch.basic_qos(prefetch_count=100)
    rch.basic_consume(queue, on_message)
    for seq, mid in enumerate(expected[total // 2 :], start=total // 2):
        publish(fch, queue, mid, seq, "live")
        if seq % 50 == 0:
            rconn.process_data_events(time_limit=0)
    deadline = time.monotonic() + 60
    while len(received) < total and time.monotonic() < deadline:
        rconn.process_data_events(time_limit=0.2)
    rconn.process_data_events(time_limit=1.0)

    dups = {mid: n for mid, n in Counter(received).items() if n > 1}
    assert not dups, f"duplicates: {dups}"
    missing = sorted(set(expected) - set(received))
    assert not missing, f"{len(missing)} of {total} never reached RabbitMQ (first {missing[:5]}); link: {rabbit_link()}"
    assert len(received) == total

    link = rabbit_link()
    assert link is not None and link.get("status") == "running", link
    assert "error" not in link, link
    # RabbitMQ acked everything it took (ack-mode on-confirm) and FerryMQ processed the acks.
    poll(lambda: ferrymq.api.queue(queue).get("messages") == 0, timeout=10, what="FerryMQ queue empty, nothing unacked")
    assert depth(fch, queue)[0] == 0


# --------------------------------------------------------------------------
# 4. Link cuts with a RabbitMQ upstream
# --------------------------------------------------------------------------


def test_link_cuts_lose_nothing_and_duplicates_are_dropped_by_message_id(
    ferrymq, rabbitmq, cleanup, connect, cutting_proxy, record_property
):
    tag = uid()
    queue, upstream, policy = f"cut.{tag}", f"cut-{tag}", f"federate-cut-{tag}"
    total = 3000
    delete_queue_on_both(cleanup, queue, rabbitmq, ferrymq)
    proxy = cutting_proxy(rabbitmq.amqp_port, interval=1.0)

    rch = connect(rabbitmq).channel()
    rch.queue_declare(queue, durable=True)
    federate_on_ferrymq(
        ferrymq, cleanup, upstream, policy, f"^cut\\.{tag}$", rabbitmq.amqp_uri(proxy.port),
        **{"reconnect-delay": 0.2, "definition": {"federation-upstream": upstream}},
    )
    fconn = connect(ferrymq)
    fch = fconn.channel()
    fch.queue_declare(queue, durable=True)
    consumed: list[str] = []
    fch.basic_qos(prefetch_count=0)  # never acks: the consumer always has capacity
    fch.basic_consume(queue, lambda ch, method, props, body: consumed.append(props.message_id))
    poll(lambda: (l := ferry_link(ferrymq, queue)) and l["status"] == "running", timeout=15, what="link running")

    proxy.cutting.set()
    publisher = LivePublisher(rabbitmq, queue, f"{tag}-", total, first_seq=0)
    publisher.start()
    deadline = time.monotonic() + 90
    while publisher.is_alive() and time.monotonic() < deadline:
        fconn.process_data_events(time_limit=0.2)
    proxy.cutting.clear()
    assert not publisher.is_alive(), "publishing to RabbitMQ did not finish"
    assert publisher.error is None, f"publisher failed: {publisher.error!r}"
    assert len(publisher.published) == total

    # Settle: the link reconnects a last time and drains; counters stop moving.
    last, stable = None, 0
    while stable < 4 and time.monotonic() < deadline:
        fconn.process_data_events(time_limit=0.5)
        link = ferry_link(ferrymq, queue)
        now = (depth(rch, queue)[0], len(consumed), link["messages_transferred"], link["duplicates_dropped"], link["status"])
        stable = stable + 1 if now == last and now[0] == 0 and now[4] == "running" else 0
        last = now
    assert stable >= 4, f"did not settle: (rabbit ready, consumed, transferred, dropped, status) = {last}"
    link = ferry_link(ferrymq, queue)
    summary = (
        f"cuts={proxy.cuts} proxied_connections={proxy.accepted} reconnects={link['reconnects']} "
        f"transferred={link['messages_transferred']} duplicates_dropped={link['duplicates_dropped']}"
    )
    print(summary)
    record_property("link_cut_summary", summary)

    stop_link_and_check_upstream_empty(ferrymq, policy, rch, queue)

    # The consumer never acked: close it (its messages go back to the FerryMQ queue) and count.
    fch.close()
    gch = fconn.channel()
    drained: list[str] = []
    while True:
        method, props, _body = gch.basic_get(queue, auto_ack=True)
        if method is None:
            break
        drained.append(props.message_id)

    for what, ids in (("consumer deliveries", consumed), ("queue contents", drained)):
        counts = Counter(ids)
        dups = {mid: n for mid, n in counts.items() if n > 1}
        lost = set(publisher.published) - set(counts)
        extra = set(counts) - set(publisher.published)
        assert not lost, f"{what}: {len(lost)} of {total} lost ({summary})"
        assert not dups, f"{what}: {len(dups)} duplicated, e.g. {list(dups.items())[:5]} ({summary})"
        assert not extra, f"{what}: unexpected ids {sorted(extra)[:5]}"
    assert proxy.cuts > 0 and link["reconnects"] > 0, summary
    assert link["messages_transferred"] == total, summary
