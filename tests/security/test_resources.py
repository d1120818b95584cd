"""Resource protection: a consumer that stops reading its socket stops receiving (the broker
does not move the queue into its connection buffer), and a message announced larger than max_message_size is refused from its
header, before any of the body is read."""

from __future__ import annotations

import sys
import time

import pika
import pytest

from conftest import REPO, start_broker, stop_broker

sys.path.insert(0, str(REPO / "tests" / "python"))
import amqpwire  # noqa: E402
from amqpwire import WireConnection, bits, method_frame, shortstr, short, table  # noqa: E402


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    b = start_broker(tmp_path_factory.mktemp("resources"), "max_message_size = 1048576\n")
    yield b
    stop_broker(b)


def test_a_consumer_that_stops_reading_does_not_fill_broker_memory(broker):
    queue, size, count = "slow-consumer", 64 * 1024, 1200  # 75 MiB in all
    pub = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.amqp, connection_attempts=1))
    ch = pub.channel()
    ch.queue_declare(queue)
    ch.confirm_delivery()  # every publish is in the queue when basic_publish returns
    # A raw client consumes without acks (the broker may send as fast as it likes) and
    # then never reads its socket again.
    slow = WireConnection("127.0.0.1", broker.amqp)
    slow.sock.setsockopt(amqpwire.socket.SOL_SOCKET, amqpwire.socket.SO_RCVBUF, 64 * 1024)
    slow.handshake()
    slow.open_channel(1)
    slow.send(method_frame(1, (60, 20), short(0) + shortstr(queue) + shortstr("slow") + bits(False, True, False, False) + table({})))
    slow.expect_method((60, 21))
    body = b"x" * size
    for _ in range(count):
        ch.basic_publish("", queue, body)
    time.sleep(1.0)
    q = broker.api("GET", f"/queues/%2F/{queue}").json()
    # Deliveries stop at the connection's outbound high-water mark (4 MiB) plus what the
    # kernel buffers on both sides (autotuned, a few MiB); the rest, most of the 75 MiB,
    # waits in the queue instead of piling up in the broker's buffers.
    in_flight = count - q["messages_ready"]
    assert in_flight <= 300, f"{in_flight} messages ({in_flight * size >> 20} MiB) left the queue for a client that reads nothing"

    # Nothing is stuck: other consumers still get the messages.
    got = 0
    for _ in range(5):
        if ch.basic_get(queue, auto_ack=True)[0]:
            got += 1
    assert got == 5
    slow.close()
    ch.queue_delete(queue)
    pub.close()


def test_an_oversized_message_is_refused_from_its_header(broker):
    with WireConnection("127.0.0.1", broker.amqp) as c:
        c.handshake()
        c.open_channel(1)
        c.send(method_frame(1, (60, 40), short(0) + shortstr("") + shortstr("q") + bits(False, False)))
        c.send(amqpwire.content_header_frame(1, 1 << 30))
        close = c.wait_for_close(5)
        assert close is not None and close.reply_code == 406, close
        assert "message size 1073741824 is larger than configured max size 1048576" in close.reply_text
    # The broker is unaffected.
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.amqp, connection_attempts=1))
    conn.channel().queue_declare("", exclusive=True)
    conn.close()
