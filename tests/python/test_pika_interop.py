"""Cross-client interop: the broker as seen through pika's BlockingConnection.

Each test pins one piece of AMQP 0-9-1 (plus RabbitMQ extension) behaviour that
real applications depend on, and asserts the values the broker hands back, not
merely that no exception was raised.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timezone
from decimal import Decimal

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker, UnroutableError

# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def message_count(ch, queue: str) -> int:
    return ch.queue_declare(queue, passive=True).method.message_count


def drain(ch, queue: str) -> list[bytes]:
    """Take every ready message off ``queue`` with auto-ack basic.get, in order."""
    bodies = []
    while True:
        method, _props, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            return bodies
        bodies.append(body)


def wait_until(predicate, connection, timeout: float = 5.0):
    """Pump ``connection``'s events until ``predicate()`` is truthy or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        connection.process_data_events(time_limit=0.02)
    return predicate()


def get_within(ch, queue: str, timeout: float = 5.0):
    """basic.get (auto-ack) until a message shows up or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        method, props, body = ch.basic_get(queue, auto_ack=True)
        if method is not None or time.monotonic() >= deadline:
            return method, props, body
        time.sleep(0.02)


def route_and_collect(ch, exchange: str, queues: dict[str, str], publishes, **publish_kwargs):
    """Publish ``(routing_key, body, headers)`` triples with confirms, then drain each queue.

    Returns {label: set(bodies)} for the queues given as {label: queue_name}.
    """
    for routing_key, body, headers in publishes:
        props = pika.BasicProperties(headers=headers) if headers is not None else None
        ch.basic_publish(exchange, routing_key, body, properties=props, **publish_kwargs)
    return {label: set(drain(ch, q)) for label, q in queues.items()}


@pytest.fixture
def confirm_channel(channel):
    channel.confirm_delivery()
    return channel


# --------------------------------------------------------------------------
# Exchanges and routing
# --------------------------------------------------------------------------


def test_direct_exchange_routes_on_exact_routing_key(confirm_channel, names):
    """A direct exchange delivers to the queues bound with exactly the publish's routing key."""
    ch = confirm_channel
    x = names.exchange("direct")
    ch.exchange_declare(x, exchange_type="direct")
    queues = {"red": names.queue("red"), "green": names.queue("green"), "both": names.queue("both")}
    for q in queues.values():
        ch.queue_declare(q)
    ch.queue_bind(queues["red"], x, routing_key="red")
    ch.queue_bind(queues["green"], x, routing_key="green")
    ch.queue_bind(queues["both"], x, routing_key="red")
    ch.queue_bind(queues["both"], x, routing_key="green")

    got = route_and_collect(
        ch,
        x,
        queues,
        [("red", b"r", None), ("green", b"g", None), ("blue", b"b", None), ("RED", b"R", None)],
    )
    assert got == {"red": {b"r"}, "green": {b"g"}, "both": {b"r", b"g"}}


def test_fanout_exchange_copies_to_every_bound_queue(confirm_channel, names):
    """A fanout exchange ignores the routing key and gives each bound queue its own copy."""
    ch = confirm_channel
    x = names.exchange("fanout")
    ch.exchange_declare(x, exchange_type="fanout")
    queues = {str(i): names.queue(f"f{i}") for i in range(3)}
    for q in queues.values():
        ch.queue_declare(q)
        ch.queue_bind(q, x, routing_key="ignored")

    got = route_and_collect(ch, x, queues, [("anything", b"one", None), ("", b"two", None)])
    assert got == {label: {b"one", b"two"} for label in queues}


TOPIC_BINDINGS = {
    "star_middle": "stock.*.nyse",
    "star_tail": "stock.*",
    "hash_tail": "stock.#",
    "hash_middle": "stock.#.nyse",
    "hash_only": "#",
    "hash_head": "#.nyse",
    "literal": "stock.usd.nyse",
}

# routing key -> binding labels that must match it
TOPIC_EXPECTATIONS = {
    "stock.usd.nyse": {"star_middle", "hash_tail", "hash_middle", "hash_only", "hash_head", "literal"},
    "stock.usd": {"star_tail", "hash_tail", "hash_only"},
    # '#' matches zero words: "stock.#" matches "stock", "stock.#.nyse" matches "stock.nyse".
    "stock": {"hash_tail", "hash_only"},
    "stock.nyse": {"star_tail", "hash_tail", "hash_middle", "hash_only", "hash_head"},
    # '*' matches exactly one word, never zero and never two.
    "stock.eur.gbp.nyse": {"hash_tail", "hash_middle", "hash_only", "hash_head"},
    "nyse": {"hash_only", "hash_head"},
    "bond.usd.nyse": {"hash_only", "hash_head"},
    # An empty routing key is zero words: only a lone '#' matches it.
    "": {"hash_only"},
}


def test_topic_exchange_star_and_hash_wildcards(confirm_channel, names):
    """Topic routing: '*' is exactly one word, '#' is zero or more words (incl. zero at either end)."""
    ch = confirm_channel
    x = names.exchange("topic")
    ch.exchange_declare(x, exchange_type="topic")
    queues = {}
    for label, pattern in TOPIC_BINDINGS.items():
        queues[label] = names.queue(label)
        ch.queue_declare(queues[label])
        ch.queue_bind(queues[label], x, routing_key=pattern)

    publishes = [(key, key.encode() or b"<empty>", None) for key in TOPIC_EXPECTATIONS]
    got = route_and_collect(ch, x, queues, publishes)

    expected = {label: set() for label in TOPIC_BINDINGS}
    for key, labels in TOPIC_EXPECTATIONS.items():
        for label in labels:
            expected[label].add(key.encode() or b"<empty>")
    assert got == expected


def test_headers_exchange_x_match_all_and_any(confirm_channel, names):
    """Headers routing: x-match=all needs every bound header equal, x-match=any needs one; keys are ignored."""
    ch = confirm_channel
    x = names.exchange("headers")
    ch.exchange_declare(x, exchange_type="headers")
    queues = {"all": names.queue("all"), "any": names.queue("any")}
    for q in queues.values():
        ch.queue_declare(q)
    ch.queue_bind(queues["all"], x, arguments={"x-match": "all", "format": "pdf", "type": "report"})
    ch.queue_bind(queues["any"], x, arguments={"x-match": "any", "format": "pdf", "type": "report"})

    publishes = [
        ("k", b"both", {"format": "pdf", "type": "report"}),
        ("k", b"both+extra", {"format": "pdf", "type": "report", "lang": "en"}),
        ("k", b"format-only", {"format": "pdf"}),
        ("k", b"type-only", {"type": "report", "format": "zip"}),
        ("k", b"neither", {"format": "zip", "type": "log"}),
        ("k", b"no-headers", None),
    ]
    got = route_and_collect(ch, x, queues, publishes)
    assert got == {
        "all": {b"both", b"both+extra"},
        "any": {b"both", b"both+extra", b"format-only", b"type-only"},
    }


def test_exchange_declare_is_idempotent_and_passive_sees_it(channel, names):
    """Re-declaring an exchange with identical settings succeeds; a passive declare finds it."""
    for kind in ("direct", "fanout", "topic", "headers"):
        x = names.exchange(kind)
        channel.exchange_declare(x, exchange_type=kind)
        channel.exchange_declare(x, exchange_type=kind)
        ok = channel.exchange_declare(x, exchange_type=kind, passive=True)
        assert ok.method.NAME == "Exchange.DeclareOk"


@pytest.mark.ferrymq_only
def test_unknown_exchange_type_is_channel_level_406(connection, names):
    """An unknown exchange type closes only the channel with 406 PRECONDITION_FAILED (RabbitMQ 4
    behaviour; RabbitMQ 3.10 closes the whole connection with 503 COMMAND_INVALID)."""
    ch = connection.channel()
    with pytest.raises(ChannelClosedByBroker) as info:
        ch.exchange_declare(names.exchange("weird"), exchange_type="x-no-such-type")
    assert info.value.reply_code == 406
    assert info.value.reply_text.startswith("PRECONDITION_FAILED - ")
    assert connection.is_open
    q = connection.channel().queue_declare("", exclusive=True).method.queue
    assert q.startswith("amq.gen-")


# --------------------------------------------------------------------------
# Publishing, confirms, consuming
# --------------------------------------------------------------------------


def test_publisher_confirms_ack_routable_publishes(confirm_channel, names):
    """With confirm.select, each routable publish is acked and the messages are in the queue."""
    ch = confirm_channel
    q = names.queue()
    ch.queue_declare(q)
    for i in range(10):
        ch.basic_publish("", q, f"m{i}".encode(), mandatory=True)
    assert message_count(ch, q) == 10
    assert drain(ch, q) == [f"m{i}".encode() for i in range(10)]


def test_unroutable_mandatory_publish_is_returned(confirm_channel, names):
    """A mandatory publish that routes nowhere comes back as basic.return 312 NO_ROUTE (pika: UnroutableError)."""
    ch = confirm_channel
    missing = names.queue("nobody-home")
    with pytest.raises(UnroutableError) as info:
        ch.basic_publish("", missing, b"lost", mandatory=True)
    (returned,) = info.value.messages
    assert returned.method.reply_code == 312
    assert returned.method.reply_text == "NO_ROUTE"
    assert returned.method.exchange == ""
    assert returned.method.routing_key == missing
    assert returned.body == b"lost"
    # Without mandatory the same publish is silently dropped and still confirmed.
    ch.basic_publish("", missing, b"dropped")


def test_basic_consume_with_manual_ack_delivers_in_order(connection, channel, names):
    """basic.consume delivers messages in publish order with increasing delivery tags; acks remove them."""
    q = names.queue()
    channel.queue_declare(q)
    channel.confirm_delivery()
    bodies = [f"msg-{i}".encode() for i in range(5)]
    for body in bodies:
        channel.basic_publish("", q, body)

    received = []

    def on_message(ch, method, props, body):
        received.append((method.delivery_tag, method.redelivered, body))
        ch.basic_ack(method.delivery_tag)

    tag = channel.basic_consume(q, on_message, auto_ack=False)
    assert tag in channel.consumer_tags
    wait_until(lambda: len(received) == len(bodies), connection)
    assert [b for _, _, b in received] == bodies
    tags = [t for t, _, _ in received]
    assert tags == sorted(tags) and len(set(tags)) == len(tags)
    assert not any(redelivered for _, redelivered, _ in received)
    channel.basic_cancel(tag)
    declare = channel.queue_declare(q, passive=True).method
    assert (declare.message_count, declare.consumer_count) == (0, 0)


def test_basic_get_reports_remaining_count_and_empty(channel, names):
    """basic.get-ok carries the remaining message count; an empty queue answers basic.get-empty."""
    q = names.queue()
    channel.queue_declare(q)
    channel.confirm_delivery()
    for body in (b"a", b"b", b"c"):
        channel.basic_publish("", q, body)

    method, props, body = channel.basic_get(q)
    assert (body, method.message_count, method.redelivered) == (b"a", 2, False)
    assert method.exchange == "" and method.routing_key == q
    channel.basic_ack(method.delivery_tag)
    method, _, body = channel.basic_get(q, auto_ack=True)
    assert (body, method.message_count) == (b"b", 1)
    method, _, body = channel.basic_get(q, auto_ack=True)
    assert (body, method.message_count) == (b"c", 0)
    assert channel.basic_get(q) == (None, None, None)


def test_nack_with_requeue_redelivers_in_original_order(channel, names):
    """basic.nack(multiple, requeue) puts messages back at their old positions, flagged redelivered."""
    q = names.queue()
    channel.queue_declare(q)
    channel.confirm_delivery()
    for body in (b"one", b"two", b"three"):
        channel.basic_publish("", q, body)

    tags = []
    for expected in (b"one", b"two", b"three"):
        method, _, body = channel.basic_get(q)
        assert body == expected and not method.redelivered
        tags.append(method.delivery_tag)
    channel.basic_nack(tags[-1], multiple=True, requeue=True)

    again = []
    for _ in range(3):
        method, _, body = channel.basic_get(q)
        again.append((body, method.redelivered))
        channel.basic_ack(method.delivery_tag)
    assert again == [(b"one", True), (b"two", True), (b"three", True)]
    assert message_count(channel, q) == 0


def test_reject_without_requeue_discards_message(channel, names):
    """basic.reject(requeue=False) without a dead-letter exchange drops the message for good."""
    q = names.queue()
    channel.queue_declare(q)
    channel.confirm_delivery()
    channel.basic_publish("", q, b"bad")
    channel.basic_publish("", q, b"good")
    method, _, body = channel.basic_get(q)
    assert body == b"bad"
    channel.basic_reject(method.delivery_tag, requeue=False)
    assert drain(channel, q) == [b"good"]
    assert message_count(channel, q) == 0


def test_message_properties_round_trip(channel, names):
    """All basic properties, including a headers table with nested tables/arrays, survive unchanged."""
    q = names.queue()
    channel.queue_declare(q)
    channel.confirm_delivery()
    stamp = 1_700_000_000
    headers = {
        "string": "text ünïcode",
        "int": 42,
        "negative": -7,
        "big": 2**40,
        "true": True,
        "false": False,
        "decimal": Decimal("3.14"),
        "when": datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
        "raw": b"\x00\x01\xff",
        "void": None,
        "nested": {"level": 1, "inner": {"level": 2, "tags": ["a", "b"]}},
        "array": [1, "two", {"three": 3}, [4, 5]],
    }
    props = pika.BasicProperties(
        content_type="application/json",
        content_encoding="gzip",
        headers=headers,
        delivery_mode=2,
        priority=7,
        correlation_id="corr-123",
        reply_to="reply.queue",
        expiration="600000",
        message_id="msg-456",
        timestamp=stamp,
        type="order.created",
        user_id="guest",
        app_id="pytest",
    )
    channel.basic_publish("", q, b'{"k": 1}', properties=props)
    method, got, body = channel.basic_get(q, auto_ack=True)
    assert body == b'{"k": 1}'
    assert got.content_type == "application/json"
    assert got.content_encoding == "gzip"
    assert got.delivery_mode == 2
    assert got.priority == 7
    assert got.correlation_id == "corr-123"
    assert got.reply_to == "reply.queue"
    assert got.expiration == "600000"
    assert got.message_id == "msg-456"
    assert got.timestamp == stamp
    assert got.type == "order.created"
    assert got.user_id == "guest"
    assert got.app_id == "pytest"
    assert got.headers == headers


def test_empty_and_multi_frame_bodies_round_trip(channel, names):
    """A zero-length body and a body larger than frame_max (split into several body frames) arrive intact."""
    q = names.queue()
    channel.queue_declare(q)
    channel.confirm_delivery()
    big = bytes(range(256)) * 2048  # 512 KiB, several frames at the default 128 KiB frame_max
    channel.basic_publish("", q, b"")
    channel.basic_publish("", q, big)
    assert drain(channel, q) == [b"", big]


# --------------------------------------------------------------------------
# Declarations and their errors
# --------------------------------------------------------------------------


def test_passive_declare_of_missing_queue_is_404(connection, names):
    """queue.declare(passive) of a missing queue closes the channel with 404 and RabbitMQ's wording."""
    ch = connection.channel()
    missing = names.queue("missing")
    with pytest.raises(ChannelClosedByBroker) as info:
        ch.queue_declare(missing, passive=True)
    assert info.value.reply_code == 404
    assert info.value.reply_text == f"NOT_FOUND - no queue '{missing}' in vhost '/'"
    assert connection.is_open  # channel-level error only


def test_redeclare_with_different_arguments_is_406(connection, names):
    """Re-declaring a queue with different x-arguments closes the channel with 406 PRECONDITION_FAILED."""
    ch = connection.channel()
    q = names.queue()
    ch.queue_declare(q, arguments={"x-max-length": 10})
    ch.queue_declare(q, arguments={"x-max-length": 10})  # identical: fine
    with pytest.raises(ChannelClosedByBroker) as info:
        ch.queue_declare(q, arguments={"x-max-length": 20})
    assert info.value.reply_code == 406
    assert info.value.reply_text.startswith(
        f"PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue '{q}' in vhost '/'"
    )
    assert connection.is_open
    ch2 = connection.channel()
    with pytest.raises(ChannelClosedByBroker) as info:
        ch2.queue_declare(q, durable=True, arguments={"x-max-length": 10})
    assert info.value.reply_code == 406
    assert info.value.reply_text.startswith(
        f"PRECONDITION_FAILED - inequivalent arg 'durable' for queue '{q}' in vhost '/'"
    )


def test_exclusive_queue_is_locked_for_other_connections(connect, names):
    """An exclusive queue is usable only by its declaring connection; others get 405 RESOURCE_LOCKED."""
    owner = connect()
    owner_ch = owner.channel()
    q = names.queue("exclusive")
    owner_ch.queue_declare(q, exclusive=True)

    other = connect()
    with pytest.raises(ChannelClosedByBroker) as info:
        other.channel().queue_declare(q)
    assert info.value.reply_code == 405
    assert info.value.reply_text.startswith(
        f"RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{q}' in vhost '/'"
    )
    with pytest.raises(ChannelClosedByBroker) as info:
        other.channel().basic_get(q)
    assert info.value.reply_code == 405

    # The owner keeps working with it, and it vanishes with the owner's connection.
    owner_ch.confirm_delivery()
    owner_ch.basic_publish("", q, b"mine")
    assert owner_ch.basic_get(q, auto_ack=True)[2] == b"mine"
    owner.close()
    probe = connect().channel()
    with pytest.raises(ChannelClosedByBroker) as info:
        probe.queue_declare(q, passive=True)
    assert info.value.reply_code == 404


def test_queue_purge_and_delete_report_message_counts(channel, names):
    """queue.purge-ok and queue.delete-ok carry the number of messages removed."""
    q = names.queue()
    channel.queue_declare(q)
    channel.confirm_delivery()
    for i in range(4):
        channel.basic_publish("", q, b"p%d" % i)
    assert channel.queue_purge(q).method.message_count == 4
    assert message_count(channel, q) == 0
    for i in range(2):
        channel.basic_publish("", q, b"d%d" % i)
    assert channel.queue_delete(q).method.message_count == 2


def test_server_named_queue(channel):
    """queue.declare with an empty name makes the server pick an 'amq.gen-' name."""
    ok = channel.queue_declare("", exclusive=True).method
    assert ok.queue.startswith("amq.gen-")
    assert (ok.message_count, ok.consumer_count) == (0, 0)


# --------------------------------------------------------------------------
# Queue arguments: dead-lettering, TTL, max-length
# --------------------------------------------------------------------------


def _declare_dlx(ch, names):
    dlx = names.exchange("dlx")
    dlq = names.queue("dead")
    ch.exchange_declare(dlx, exchange_type="fanout")
    ch.queue_declare(dlq)
    ch.queue_bind(dlq, dlx)
    return dlx, dlq


def test_reject_dead_letters_with_x_death_header(channel, names):
    """Rejecting from a queue with x-dead-letter-exchange republishes there with x-death and x-first-death-*."""
    dlx, dlq = _declare_dlx(channel, names)
    src = names.queue("src")
    channel.queue_declare(src, arguments={"x-dead-letter-exchange": dlx})
    channel.confirm_delivery()
    channel.basic_publish("", src, b"doomed", properties=pika.BasicProperties(headers={"orig": "yes"}))

    method, _, _ = channel.basic_get(src)
    channel.basic_reject(method.delivery_tag, requeue=False)

    method, props, body = get_within(channel, dlq)
    assert body == b"doomed"
    assert method.exchange == dlx
    assert method.routing_key == src
    headers = props.headers
    assert headers["orig"] == "yes"
    (death,) = headers["x-death"]
    assert death["reason"] == "rejected"
    assert death["queue"] == src
    assert death["exchange"] == ""
    assert death["routing-keys"] == [src]
    assert death["count"] == 1
    assert isinstance(death["time"], datetime)
    assert headers["x-first-death-reason"] == "rejected"
    assert headers["x-first-death-queue"] == src
    assert headers["x-first-death-exchange"] == ""


def test_message_ttl_expires_messages(channel, names):
    """x-message-ttl removes messages once they are older than the TTL (dead-lettered with reason 'expired')."""
    dlx, dlq = _declare_dlx(channel, names)
    q = names.queue("ttl")
    channel.queue_declare(q, arguments={"x-message-ttl": 150, "x-dead-letter-exchange": dlx})
    keep = names.queue("no-ttl")
    channel.queue_declare(keep)
    channel.confirm_delivery()
    channel.basic_publish("", q, b"short-lived")
    channel.basic_publish("", keep, b"long-lived")

    method, props, body = get_within(channel, dlq)
    assert body == b"short-lived"
    assert props.headers["x-death"][0]["reason"] == "expired"
    assert props.headers["x-death"][0]["queue"] == q
    assert message_count(channel, q) == 0
    assert channel.basic_get(q) == (None, None, None)
    assert message_count(channel, keep) == 1


def test_max_length_drops_oldest_messages(channel, names):
    """x-max-length (default overflow drop-head) keeps only the newest N messages."""
    q = names.queue()
    channel.queue_declare(q, arguments={"x-max-length": 3})
    channel.confirm_delivery()
    for i in range(6):
        channel.basic_publish("", q, b"m%d" % i)
    assert message_count(channel, q) == 3
    assert drain(channel, q) == [b"m3", b"m4", b"m5"]


# --------------------------------------------------------------------------
# Flow control, cancel notification, transactions, RPC
# --------------------------------------------------------------------------


def test_prefetch_one_allows_a_single_unacked_delivery(connection, channel, names):
    """basic.qos(prefetch_count=1): the next delivery waits until the previous one is acked."""
    q = names.queue()
    channel.queue_declare(q)
    channel.confirm_delivery()
    for i in range(3):
        channel.basic_publish("", q, b"q%d" % i)
    channel.basic_qos(prefetch_count=1)

    delivered = []
    channel.basic_consume(q, lambda ch, m, p, b: delivered.append((m.delivery_tag, b)))

    for expected in (b"q0", b"q1", b"q2"):
        wait_until(lambda: delivered, connection)
        connection.process_data_events(time_limit=0.15)  # room for a wrongly sent extra delivery
        assert [b for _, b in delivered] == [expected]
        tag, _ = delivered.pop()
        channel.basic_ack(tag)
    connection.process_data_events(time_limit=0.1)
    assert delivered == []


def test_consumer_is_notified_when_its_queue_is_deleted(connect, names):
    """Deleting a queue sends basic.cancel to its consumers (consumer_cancel_notify); pika runs on_cancel."""
    conn = connect()
    ch = conn.channel()
    q = names.queue()
    ch.queue_declare(q)
    cancels = []
    ch.add_on_cancel_callback(lambda frame: cancels.append(frame.method))
    tag = ch.basic_consume(q, lambda *args: None)

    connect().channel().queue_delete(q)
    wait_until(lambda: cancels, conn)
    assert len(cancels) == 1
    assert cancels[0].NAME == "Basic.Cancel"
    assert cancels[0].consumer_tag == tag
    assert tag not in ch.consumer_tags
    assert ch.is_open


def test_transactions_commit_and_rollback(connect, names):
    """tx.select: publishes and acks take effect on tx.commit only; tx.rollback discards them."""
    conn = connect()
    ch = conn.channel()
    q = names.queue()
    ch.queue_declare(q)
    observer = connect().channel()

    ch.tx_select()
    ch.basic_publish("", q, b"committed")
    assert message_count(observer, q) == 0
    ch.tx_commit()
    assert message_count(observer, q) == 1

    ch.basic_publish("", q, b"rolled-back")
    ch.tx_rollback()
    assert message_count(observer, q) == 1

    # An ack inside a rolled-back transaction does not happen: the message stays
    # unacked and returns to the queue (redelivered) when the channel closes.
    method, _, body = ch.basic_get(q)
    assert body == b"committed"
    ch.basic_ack(method.delivery_tag)
    ch.tx_rollback()
    ch.close()
    method, _, body = observer.basic_get(q, auto_ack=True)
    assert (body, method.redelivered) == (b"committed", True)
    assert observer.basic_get(q) == (None, None, None)


def test_direct_reply_to_rpc_round_trip(connect, names):
    """Direct reply-to: a reply published to the 'amq.rabbitmq.reply-to.*' name reaches the requester."""
    client_conn = connect()
    client = client_conn.channel()
    server = connect().channel()
    requests = names.queue("rpc")
    server.queue_declare(requests)

    replies = []
    client.basic_consume(
        "amq.rabbitmq.reply-to",
        lambda ch, m, p, b: replies.append((p.correlation_id, b)),
        auto_ack=True,
    )
    corr = uuid.uuid4().hex
    client.basic_publish(
        "",
        requests,
        b"ping",
        properties=pika.BasicProperties(reply_to="amq.rabbitmq.reply-to", correlation_id=corr),
    )

    method, props, body = get_within(server, requests)
    assert body == b"ping"
    assert props.reply_to.startswith("amq.rabbitmq.reply-to.")
    assert props.reply_to != "amq.rabbitmq.reply-to"
    server.basic_publish(
        "", props.reply_to, b"pong", properties=pika.BasicProperties(correlation_id=props.correlation_id)
    )
    server.basic_ack(method.delivery_tag)

    wait_until(lambda: replies, client_conn)
    assert replies == [(corr, b"pong")]
