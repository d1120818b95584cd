"""Fault injection: clients that vanish mid-frame, mid-publish, mid-confirm and with unacked
deliveries; a proxy that delays and one that half-closes; SIGKILL under load; a full disk.
Each test checks that nothing confirmed is lost and that the broker keeps serving.
The results are tabulated in docs/reliability.md."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import pika
import pytest

from conftest import REPO, start_broker, stop_broker

sys.path.insert(0, str(REPO / "tests" / "python"))
import amqpwire  # noqa: E402
from amqpwire import WireConnection, bits, method_frame, short, shortstr  # noqa: E402


def params(port: int, **kw) -> pika.ConnectionParameters:
    return pika.ConnectionParameters("127.0.0.1", port, **{"connection_attempts": 1, "socket_timeout": 5, **kw})


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    b = start_broker(tmp_path_factory.mktemp("faults"))
    yield b
    stop_broker(b)


def connections(broker) -> int:
    return len(broker.api("GET", "/connections").json())


def depth(broker, queue: str) -> int:
    conn = pika.BlockingConnection(params(broker.amqp))
    n = conn.channel().queue_declare(queue, passive=True).method.message_count
    conn.close()
    return n


def serving(broker) -> None:
    conn = pika.BlockingConnection(params(broker.amqp))
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_publish("", q, b"ping")
    assert ch.basic_get(q, auto_ack=True)[2] == b"ping"
    conn.close()


def drain(ch, queue: str) -> list[str]:
    """Every message in `queue`, taken with basic.get and auto-ack."""
    got = []
    while True:
        m, _, body = ch.basic_get(queue, auto_ack=True)
        if m is None:
            return got
        got.append(body.decode())


def wait_connections(broker, n: int) -> None:
    deadline = time.monotonic() + 10
    while connections(broker) != n:
        assert time.monotonic() < deadline, f"{connections(broker)} connections left, expected {n}"
        time.sleep(0.1)


def test_client_vanishing_mid_frame(broker):
    base = connections(broker)
    c = WireConnection("127.0.0.1", broker.amqp)
    c.handshake()
    c.open_channel(1)
    frame = method_frame(1, (50, 10), short(0) + shortstr("half") + bits(False) + amqpwire.table({}))
    c.send(frame[: len(frame) // 2])
    c.close()
    wait_connections(broker, base)
    serving(broker)


def test_client_vanishing_mid_publish_enqueues_nothing(broker):
    queue = f"mid-publish-{uuid.uuid4().hex[:6]}"
    setup = pika.BlockingConnection(params(broker.amqp))
    setup.channel().queue_declare(queue, durable=True)
    setup.close()
    c = WireConnection("127.0.0.1", broker.amqp)
    c.handshake()
    c.open_channel(1)
    c.send(method_frame(1, (60, 40), short(0) + shortstr("") + shortstr(queue) + bits(False, False)))
    c.send(amqpwire.content_header_frame(1, 1000))
    c.send(amqpwire.content_body_frame(1, b"x" * 400))  # 400 of 1000 bytes, then gone
    c.close()
    time.sleep(0.3)
    assert depth(broker, queue) == 0, "a partial message was enqueued"
    serving(broker)


def test_client_vanishing_mid_confirm_loses_nothing_confirmed(broker):
    queue = f"mid-confirm-{uuid.uuid4().hex[:6]}"
    conn = pika.BlockingConnection(params(broker.amqp))
    ch = conn.channel()
    ch.queue_declare(queue, durable=True)
    ch.confirm_delivery()
    for i in range(200):
        ch.basic_publish("", queue, f"confirmed-{i}".encode(), pika.BasicProperties(delivery_mode=2))
    # Then a raw publisher sends 200 more with confirms on and vanishes before reading them.
    c = WireConnection("127.0.0.1", broker.amqp)
    c.handshake()
    c.open_channel(1)
    c.send(method_frame(1, (85, 10), bits(False)))
    c.expect_method((85, 11))
    for i in range(200):
        c.send(method_frame(1, (60, 40), short(0) + shortstr("") + shortstr(queue) + bits(False, False)))
        body = f"unconfirmed-{i}".encode()
        c.send(amqpwire.content_header_frame(1, len(body), property_flags=1 << 12, properties=bytes([2])))
        c.send(amqpwire.content_body_frame(1, body))
    c.close()
    time.sleep(0.5)
    got = drain(ch, queue)
    assert [b for b in got if b.startswith("confirmed-")] == [f"confirmed-{i}" for i in range(200)]
    assert len(set(got)) == len(got), "duplicates"
    conn.close()


def test_consumer_vanishing_with_unacked_messages_gets_them_redelivered(broker):
    queue = f"unacked-{uuid.uuid4().hex[:6]}"
    conn = pika.BlockingConnection(params(broker.amqp))
    ch = conn.channel()
    ch.queue_declare(queue, durable=True)
    for i in range(50):
        ch.basic_publish("", queue, str(i).encode())
    c = WireConnection("127.0.0.1", broker.amqp)
    c.handshake()
    c.open_channel(1)
    c.send(method_frame(1, (60, 20), short(0) + shortstr(queue) + shortstr("doomed") + bits(False, False, False, False) + amqpwire.table({})))
    c.expect_method((60, 21))
    c.read_frame(2)  # at least one delivery is in flight, none acked
    c.close()
    deadline = time.monotonic() + 10
    while depth(broker, queue) != 50:
        assert time.monotonic() < deadline, f"{depth(broker, queue)} of 50 back in the queue"
        time.sleep(0.1)
    m, _, _ = ch.basic_get(queue, auto_ack=True)
    assert m.redelivered
    conn.close()


class Proxy(threading.Thread):
    """127.0.0.1:port → target; `delay` seconds added to every chunk in both directions."""

    def __init__(self, target: int, delay: float = 0.0):
        super().__init__(daemon=True)
        self.target, self.delay = target, delay
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(16)
        self.port = self.server.getsockname()[1]
        self.socks: list[socket.socket] = []

    def run(self):
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.socks += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self.pump, args=(a, b), daemon=True).start()

    def pump(self, src, dst):
        try:
            while data := src.recv(65536):
                if self.delay:
                    time.sleep(self.delay)
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)  # pass half-closes through
        except OSError:
            pass

    def close(self):
        self.server.close()
        for s in self.socks:
            try:
                s.close()
            except OSError:
                pass


def test_slow_network_confirms_everything(broker):
    proxy = Proxy(broker.amqp, delay=0.05)
    proxy.start()
    queue = f"slow-net-{uuid.uuid4().hex[:6]}"
    try:
        conn = pika.BlockingConnection(params(proxy.port, socket_timeout=10, blocked_connection_timeout=30))
        ch = conn.channel()
        ch.queue_declare(queue, durable=True)
        ch.confirm_delivery()
        for i in range(30):
            ch.basic_publish("", queue, str(i).encode(), pika.BasicProperties(delivery_mode=2))
        conn.close()
    finally:
        proxy.close()
    assert depth(broker, queue) == 30


def test_half_closed_client_is_cleaned_up(broker):
    base = connections(broker)
    c = WireConnection("127.0.0.1", broker.amqp)
    c.handshake()
    c.open_channel(1)
    c.sock.shutdown(socket.SHUT_WR)  # the client will send nothing more but still reads
    assert c.socket_closed_within(10), "the broker kept a half-closed connection open"
    c.close()
    wait_connections(broker, base)
    serving(broker)


def test_sigkill_under_load_loses_nothing_confirmed(tmp_path):
    b = start_broker(tmp_path / "b")
    queue = "under-load"
    confirmed: list[str] = []
    stop = threading.Event()

    def publish():
        try:
            conn = pika.BlockingConnection(params(b.amqp))
            ch = conn.channel()
            ch.queue_declare(queue, durable=True)
            ch.confirm_delivery()
            i = 0
            while not stop.is_set():
                body = f"m-{i}"
                ch.basic_publish("", queue, body.encode(), pika.BasicProperties(delivery_mode=2))
                confirmed.append(body)  # basic_publish returned: the broker confirmed it
                i += 1
        except Exception:
            pass  # the broker was killed under us

    threads = [threading.Thread(target=publish, daemon=True)]
    threads[0].start()
    time.sleep(1.5)
    os.kill(b.proc.pid, signal.SIGKILL)
    b.proc.wait()
    stop.set()
    threads[0].join(5)
    assert len(confirmed) > 100, "too little load to mean anything"
    # Restart on the same data directory.
    b2 = start_broker(tmp_path / "b2-work", data_dir=b.log.parent / "data")
    try:
        conn = pika.BlockingConnection(params(b2.amqp))
        ch = conn.channel()
        got = drain(ch, queue)
        missing = set(confirmed) - set(got)
        assert not missing, f"{len(missing)} confirmed messages lost"
        assert len(set(got)) == len(got), "duplicates after recovery"
        conn.close()
    finally:
        stop_broker(b2)


@pytest.fixture
def tmpfs(tmp_path):
    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.fail(f"cannot mount a small tmpfs for the disk-full test (needs root): {r.stderr}", pytrace=False)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def run_bounded(work, outcome: dict, expected: type[BaseException], key: str, seconds: float) -> bool:
    """Runs `work` in a thread for at most `seconds`; the `expected` exception lands in
    outcome[key], any other in outcome["error"]. Whether it finished: a client that
    waits for an answer the broker never gives must fail the test, not hang it."""

    def run():
        try:
            work()
        except expected as e:
            outcome[key] = e
        except Exception as e:  # anything else is reported by the caller
            outcome["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    return not t.is_alive()


def assert_failed_store_fails_a_commit(b):
    """A transaction with a persistent message cannot commit on a failed store: the
    client gets 541 INTERNAL_ERROR, not a commit-ok and not a wait without end."""
    outcome: dict = {}

    def commit():
        conn = pika.BlockingConnection(params(b.amqp))
        ch = conn.channel()
        ch.tx_select()
        ch.basic_publish("", "fill", b"in a transaction", pika.BasicProperties(delivery_mode=2))
        ch.tx_commit()
        outcome["committed"] = True

    finished = run_bounded(commit, outcome, pika.exceptions.ConnectionClosedByBroker, "closed", 30)
    assert finished, "tx.commit waited forever on a failed store"
    closed = outcome.get("closed")
    assert closed is not None and closed.reply_code == 541, outcome
    assert "durable store failed" in closed.reply_text, closed


def test_disk_full_nacks_what_it_cannot_store_and_a_restart_recovers(tmpfs, tmp_path):
    filler = tmpfs / "filler"
    filler.write_bytes(b"\0" * (6 << 20))  # freed later, to make room again
    data = tmpfs / "data"
    # No disk alarm (limit 1 byte): the store's own writes run into ENOSPC.
    b = start_broker(tmp_path / "w1", "disk_free_limit = 1\n", data_dir=data)
    outcome: dict = {"confirmed": 0}

    def fill():
        conn = pika.BlockingConnection(params(b.amqp))
        ch = conn.channel()
        ch.queue_declare("fill", durable=True)
        ch.confirm_delivery()
        body = b"x" * 256 * 1024
        for _ in range(200):  # 50 MiB into what is left of 24 MiB
            ch.basic_publish("", "fill", body, pika.BasicProperties(delivery_mode=2))
            outcome["confirmed"] += 1

    finished = run_bounded(fill, outcome, pika.exceptions.NackError, "nacked", 60)
    try:
        assert finished, "a publisher waited forever for a confirm the full disk could not give"
        assert "nacked" in outcome, outcome
        assert b.proc.poll() is None, "the broker died on a full disk"
        assert "durable store failed" in b.log_text()
        serving(b)  # transient work goes on
        assert_failed_store_fails_a_commit(b)
    finally:
        stop_broker(b)
    # Free space, restart on the same data: every confirmed message is back.
    filler.unlink()
    b2 = start_broker(tmp_path / "w2", "disk_free_limit = 1\n", data_dir=data)
    try:
        conn = pika.BlockingConnection(params(b2.amqp))
        ch = conn.channel()
        recovered = ch.queue_declare("fill", durable=True).method.message_count
        assert recovered >= outcome["confirmed"], (recovered, outcome)
        ch.queue_delete("fill")
        ch.confirm_delivery()
        ch.queue_declare("after", durable=True)
        ch.basic_publish("", "after", b"space again", pika.BasicProperties(delivery_mode=2))
        assert ch.basic_get("after", auto_ack=True)[2] == b"space again"
        conn.close()
    finally:
        stop_broker(b2)


def test_a_federation_link_into_a_failed_store_leaves_its_messages_upstream(tmpfs, tmp_path):
    """A downstream whose disk fills while its link pulls: the link must not keep the
    upstream's messages unacknowledged for good; it says why it stopped."""
    (tmpfs / "filler").write_bytes(b"\0" * (16 << 20))
    up = start_broker(tmp_path / "up")
    down = start_broker(tmp_path / "down", "disk_free_limit = 1\n", data_dir=tmpfs / "data")
    try:
        conn = pika.BlockingConnection(params(up.amqp))
        ch = conn.channel()
        ch.queue_declare("fed", durable=True)
        ch.confirm_delivery()
        body = b"y" * 256 * 1024
        for _ in range(60):  # 15 MiB for a downstream with about 8 MiB free
            ch.basic_publish("", "fed", body, pika.BasicProperties(delivery_mode=2))
        conn.close()
        value = {"uri": f"amqp://guest:guest@127.0.0.1:{up.amqp}", "prefetch-count": 20, "reconnect-delay": 1}
        assert down.api("PUT", "/parameters/federation-upstream/%2F/up", {"value": value}).status_code in (201, 204)
        policy = {"pattern": "^fed$", "definition": {"federation-upstream": "up"}, "apply-to": "queues"}
        assert down.api("PUT", "/policies/%2F/fed", policy).status_code in (201, 204)
        dconn = pika.BlockingConnection(params(down.amqp))
        dch = dconn.channel()
        dch.queue_declare("fed", durable=True)
        dch.basic_consume("fed", lambda c, m, p, b: c.basic_ack(m.delivery_tag))  # demand
        deadline = time.monotonic() + 60
        link = None
        while time.monotonic() < deadline:
            dconn.process_data_events(0.2)
            links = down.api("GET", "/federation-links").json()
            link = links[0] if links else None
            if link and link.get("status") == "error" and "store failed" in (link.get("error") or ""):
                break
        else:
            pytest.fail(f"the link never reported the failed store: {link}")
        # The upstream gets its in-flight messages back: none stays with the link.
        deadline = time.monotonic() + 20
        while True:
            dconn.process_data_events(0.2)
            q = up.api("GET", "/queues/%2F/fed").json()
            if q.get("messages_unacknowledged", 0) == 0:
                break
            assert time.monotonic() < deadline, f"the link keeps upstream messages: {q}"
        assert "durable store failed" in down.log_text()
        dconn.close()
    finally:
        stop_broker(down)
        stop_broker(up)


def test_disk_alarm_blocks_publishers_and_unblocks(tmpfs, tmp_path):
    # A limit above the free space: the alarm is on from the start.
    b = start_broker(tmp_path / "w", "disk_free_limit = 100000000\n", data_dir=tmpfs / "data")
    try:
        blocked = []
        conn = pika.BlockingConnection(params(b.amqp, blocked_connection_timeout=60))
        conn.add_on_connection_blocked_callback(lambda *a: blocked.append(True))
        ch = conn.channel()
        ch.queue_declare("alarmed", durable=True)
        ch.basic_publish("", "alarmed", b"one")
        deadline = time.monotonic() + 10
        while not blocked:
            assert time.monotonic() < deadline, "no connection.blocked under the disk alarm"
            conn.process_data_events(0.2)
        alarms = b.api("GET", "/health/checks/alarms")
        assert alarms.status_code == 503, alarms.text
        # Connections that do not publish are not blocked: a consumer still works.
        reader = pika.BlockingConnection(params(b.amqp))
        rch = reader.channel()
        rch.queue_declare("alarmed", durable=True)
        rch.basic_get("alarmed", auto_ack=True)  # answered (the queue may hold "one" or not)
        reader.close()
        # (The blocked publisher is not read from, so it cannot close politely either;
        # stopping the broker ends it.)
    finally:
        stop_broker(b)
