"""Bad input on the wire: malformed frames, protocol violations, failed logins.

Each test sends hand-built frames (see amqpwire.py) and asserts what the broker
does about it: the exact reply code of the connection.close / channel.close it
sends (as RabbitMQ sends it), or that it drops the socket where RabbitMQ drops it.
After every test a fresh pika connection must still be able to publish and get a
message: no bad client may take the broker down.

Reply texts are checked where clients and people rely on them; for framing errors
only the "<CODE_NAME> - " prefix is pinned, since RabbitMQ's detail is an Erlang
term that FerryMQ need not imitate.
"""

from __future__ import annotations

import random
import socket
import struct
import time

import pika
import pytest

import amqpwire as w
from conftest import connection_parameters

FRAME_ERROR = 501
COMMAND_INVALID = 503
CHANNEL_ERROR = 504
UNEXPECTED_FRAME = 505
NOT_ALLOWED = 530
NOT_IMPLEMENTED = 540
ACCESS_REFUSED = 403


@pytest.fixture(autouse=True)
def broker_still_serves_clients():
    """After each bad-input case, a new well-behaved client gets full service."""
    yield
    conn = pika.BlockingConnection(connection_parameters())
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        q = ch.queue_declare("", exclusive=True).method.queue
        ch.basic_publish("", q, b"still alive")
        assert ch.basic_get(q, auto_ack=True)[2] == b"still alive"
    finally:
        conn.close()


def assert_connection_close(close: w.Close | None, code: int, text_prefix: str, method=(0, 0)):
    assert close is not None, "broker dropped the socket without sending connection.close"
    assert close.connection_level, f"expected connection.close, got channel.close on {close.channel}"
    assert close.reply_code == code, close
    assert close.reply_text.startswith(text_prefix), close
    if method is not None:
        assert (close.class_id, close.method_id) == method, close


def open_with_channel(wire, channel: int = 1) -> w.WireConnection:
    conn = wire()
    conn.handshake()
    conn.open_channel(channel)
    return conn


# --------------------------------------------------------------------------
# Before the handshake
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(b"AMQP\x00\x00\x09\x00", id="amqp-0-9-0"),
        pytest.param(b"AMQP\x00\x01\x00\x00", id="amqp-1-0"),
        pytest.param(b"HTTP/1.1", id="http-version"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", id="http-request"),
    ],
)
def test_unsupported_protocol_header_gets_0_9_1_header_and_close(wire, header):
    """An unsupported protocol header is answered with 'AMQP 0 0 9 1' and the socket is closed."""
    conn = wire()
    conn.send(header)
    assert conn.read_all_until_eof(timeout=3) == w.PROTOCOL_HEADER


def test_valid_header_gets_connection_start(wire):
    """Baseline for the cases above: the 0-9-1 header yields connection.start 0-9 offering PLAIN."""
    conn = wire()
    conn.send(w.PROTOCOL_HEADER)
    start = conn.expect_method(w.CONNECTION_START)
    r = start.args()
    assert (r.octet(), r.octet()) == (0, 9)
    props = r.table()
    mechanisms = r.longstr().split()
    assert b"PLAIN" in mechanisms
    assert props["capabilities"]["authentication_failure_close"] is True
    assert props["capabilities"]["consumer_cancel_notify"] is True


# --------------------------------------------------------------------------
# Authentication and vhost
# --------------------------------------------------------------------------


def _start_ok_with_password(conn, password: str, capability: bool) -> None:
    conn.start()
    props = {"product": "ferrymq-tests", "capabilities": {"authentication_failure_close": capability}}
    conn.send_method(0, w.CONNECTION_START_OK, w.start_ok_args("guest", password, props))


def test_wrong_password_with_auth_failure_close_gets_403(wire):
    """Bad credentials from a client advertising authentication_failure_close: connection.close 403."""
    conn = wire()
    _start_ok_with_password(conn, "not-the-password", capability=True)
    close = conn.wait_for_close(timeout=5)
    assert_connection_close(
        close,
        ACCESS_REFUSED,
        "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. "
        "For details see the broker logfile.",
    )
    assert conn.socket_closed_within(3)


def test_wrong_password_without_capability_just_closes_socket(wire):
    """Bad credentials from a client without authentication_failure_close: socket closed, no close method
    (RabbitMQ waits ~3 s first, to slow down password guessing)."""
    conn = wire()
    _start_ok_with_password(conn, "not-the-password", capability=False)
    assert conn.wait_for_close(timeout=6) is None


def test_open_of_unknown_vhost_is_530(wire):
    """connection.open naming a vhost that does not exist: connection.close 530 NOT_ALLOWED."""
    conn = wire()
    conn.handshake(open_vhost=False)
    conn.send_method(0, w.CONNECTION_OPEN, w.open_args("no-such-vhost"))
    close = conn.wait_for_close()
    assert_connection_close(close, NOT_ALLOWED, "NOT_ALLOWED - vhost no-such-vhost not found", method=(10, 40))


# --------------------------------------------------------------------------
# Framing errors
# --------------------------------------------------------------------------


def test_random_bytes_after_handshake_are_frame_error(wire):
    """Garbage after the handshake: connection.close 501 FRAME_ERROR (its 7-byte header is nonsense)."""
    conn = wire()
    conn.handshake()
    garbage = random.Random(42).randbytes(64)  # starts 9d 79 b1 a3 ...: type 157, huge size
    conn.send(garbage)
    assert_connection_close(conn.wait_for_close(), FRAME_ERROR, "FRAME_ERROR - ")


def test_unknown_frame_type_is_frame_error(wire):
    """A well-formed frame of an undefined type (7): connection.close 501 FRAME_ERROR."""
    conn = wire()
    conn.handshake()
    conn.send(w.frame(7, 0, b"abc"))
    assert_connection_close(conn.wait_for_close(), FRAME_ERROR, "FRAME_ERROR - ")


@pytest.mark.parametrize(
    "bad_frame",
    [
        pytest.param(w.method_frame(1, w.QUEUE_DECLARE, w.queue_declare_args("", exclusive=True)), id="method-ch1"),
        pytest.param(w.heartbeat_frame(), id="heartbeat-ch0"),
    ],
)
def test_bad_frame_end_octet_is_frame_error(wire, bad_frame):
    """A frame whose last octet is 0xFF instead of 0xCE: connection.close 501 FRAME_ERROR."""
    conn = open_with_channel(wire)
    conn.send(bad_frame[:-1] + b"\xff")
    assert_connection_close(conn.wait_for_close(), FRAME_ERROR, "FRAME_ERROR - ")


@pytest.mark.parametrize("size", [2**31, None], ids=["2GiB", "frame_max+1"])
def test_oversized_frame_is_rejected_before_its_payload(wire, size):
    """A frame header declaring a payload above frame_max: 501 FRAME_ERROR at once, without waiting
    for (or buffering) the payload, which this test never sends."""
    conn = wire()
    conn.handshake()
    declared = conn.frame_max + 1 if size is None else size
    started = time.monotonic()
    conn.send(struct.pack(">BHI", w.FRAME_METHOD, 0, declared))
    close = conn.wait_for_close(timeout=3)
    assert time.monotonic() - started < 2
    assert_connection_close(close, FRAME_ERROR, "FRAME_ERROR - ")


def test_truncated_frame_then_disconnect_leaves_server_healthy(wire):
    """A client that sends half a frame and hangs up must not disturb the server (checked by the
    autouse fixture) nor its other connections."""
    bystander = open_with_channel(wire)
    for cut in (3, 7, 12):
        conn = wire()
        conn.handshake()
        conn.open_channel(1)
        full = w.method_frame(1, w.QUEUE_DECLARE, w.queue_declare_args("", exclusive=True))
        conn.send(full[:cut])
        conn.close()
    # The earlier connection still answers on its channel.
    bystander.send_method(1, w.QUEUE_DECLARE, w.queue_declare_args("", exclusive=True))
    ok = bystander.expect_method(w.QUEUE_DECLARE_OK)
    assert ok.args().shortstr().startswith("amq.gen-")


# --------------------------------------------------------------------------
# Channel and method sequencing
# --------------------------------------------------------------------------


def test_method_on_unopened_channel_is_504(wire):
    """A class method on a channel that was never opened: connection.close 504 CHANNEL_ERROR."""
    conn = wire()
    conn.handshake()
    conn.send_method(3, w.QUEUE_DECLARE, w.queue_declare_args("", exclusive=True))
    assert_connection_close(
        conn.wait_for_close(), CHANNEL_ERROR, "CHANNEL_ERROR - expected 'channel.open'", method=(50, 10)
    )


def test_second_channel_open_is_504(wire):
    """channel.open on a channel that is already open: connection.close 504 CHANNEL_ERROR."""
    conn = open_with_channel(wire)
    conn.send_method(1, w.CHANNEL_OPEN, w.channel_open_args())
    assert_connection_close(conn.wait_for_close(), CHANNEL_ERROR, "CHANNEL_ERROR - ", method=(20, 10))


def test_non_connection_method_on_channel_zero_is_504(wire):
    """queue.declare on channel 0 (reserved for connection methods): connection.close 504 CHANNEL_ERROR."""
    conn = wire()
    conn.handshake()
    conn.send_method(0, w.QUEUE_DECLARE, w.queue_declare_args("", exclusive=True))
    assert_connection_close(conn.wait_for_close(), CHANNEL_ERROR, "CHANNEL_ERROR - ", method=(50, 10))


def test_content_body_without_publish_is_505(wire):
    """A content body frame where a method is expected: connection.close 505 UNEXPECTED_FRAME."""
    conn = open_with_channel(wire)
    conn.send(w.content_body_frame(1, b"hello"))
    assert_connection_close(conn.wait_for_close(), UNEXPECTED_FRAME, "UNEXPECTED_FRAME - ")


def test_content_header_without_publish_is_505(wire):
    """A content header frame with no basic.publish before it: connection.close 505 UNEXPECTED_FRAME."""
    conn = open_with_channel(wire)
    conn.send(w.content_header_frame(1, body_size=5))
    assert_connection_close(conn.wait_for_close(), UNEXPECTED_FRAME, "UNEXPECTED_FRAME - ")


def test_publish_followed_by_body_without_header_is_505(wire):
    """basic.publish then a body frame (header skipped): 505 UNEXPECTED_FRAME naming basic.publish."""
    conn = open_with_channel(wire)
    conn.send(
        w.method_frame(1, w.BASIC_PUBLISH, w.publish_args("", "nowhere")) + w.content_body_frame(1, b"hello")
    )
    assert_connection_close(conn.wait_for_close(), UNEXPECTED_FRAME, "UNEXPECTED_FRAME - ", method=(60, 40))


def test_heartbeat_on_non_zero_channel_is_505(wire):
    """A heartbeat frame must use channel 0; on channel 1 it is a 505 UNEXPECTED_FRAME."""
    conn = open_with_channel(wire)
    conn.send(w.frame(w.FRAME_HEARTBEAT, 1, b""))
    assert_connection_close(conn.wait_for_close(), UNEXPECTED_FRAME, "UNEXPECTED_FRAME - ")


@pytest.mark.parametrize(
    "channel,method",
    [(1, (60, 999)), (1, (999, 10)), (0, (10, 99))],
    ids=["unknown-basic-method", "unknown-class", "unknown-connection-method"],
)
def test_unknown_class_or_method_id_ends_the_connection(wire, channel, method):
    """An undefined class/method id ends the connection. RabbitMQ 3.10 drops the socket without a
    close method; a broker that does send connection.close must use 540 NOT_IMPLEMENTED or 503
    COMMAND_INVALID. Either way nothing more may be served on that connection."""
    conn = open_with_channel(wire)
    conn.send(w.method_frame(channel, method, b"\x00\x00\x00\x00"))
    close = conn.wait_for_close(timeout=3)
    if close is not None:
        assert close.connection_level, close
        assert close.reply_code in (NOT_IMPLEMENTED, COMMAND_INVALID), close
        assert conn.socket_closed_within(3)
    # The connection is gone: a further request gets no answer.
    conn.try_send(w.method_frame(1, w.QUEUE_DECLARE, w.queue_declare_args("", exclusive=True)))
    assert conn.socket_closed_within(2)


def test_publish_immediate_is_540(wire):
    """basic.publish with immediate=true: connection.close 540 NOT_IMPLEMENTED (as RabbitMQ since 3.0)."""
    conn = open_with_channel(wire)
    conn.send(
        w.method_frame(1, w.BASIC_PUBLISH, w.publish_args("", "nowhere", immediate=True))
        + w.content_header_frame(1, body_size=2)
        + w.content_body_frame(1, b"hi")
    )
    assert_connection_close(
        conn.wait_for_close(), NOT_IMPLEMENTED, "NOT_IMPLEMENTED - immediate=true", method=(60, 40)
    )


# --------------------------------------------------------------------------
# Negotiated limits
# --------------------------------------------------------------------------


def test_opening_more_channels_than_channel_max_is_530(wire):
    """With channel_max=2 negotiated, opening a third channel: connection.close 530 NOT_ALLOWED."""
    conn = wire()
    conn.handshake(channel_max=2)
    conn.open_channel(1)
    conn.open_channel(2)
    conn.send_method(3, w.CHANNEL_OPEN, w.channel_open_args())
    close = conn.wait_for_close()
    assert_connection_close(close, NOT_ALLOWED, "NOT_ALLOWED - ")
    assert "channel_max" in close.reply_text


@pytest.mark.ferrymq_only
def test_channel_id_above_channel_max_is_refused(wire):
    """Channel numbers are 1..channel_max: channel.open on a higher id ends the connection with
    504 CHANNEL_ERROR or 530 NOT_ALLOWED. (RabbitMQ 3.10 only counts channels and opens it.)"""
    conn = wire()
    conn.handshake(channel_max=10)
    conn.send_method(11, w.CHANNEL_OPEN, w.channel_open_args())
    close = conn.wait_for_close()
    assert close is not None and close.connection_level, close
    assert close.reply_code in (CHANNEL_ERROR, NOT_ALLOWED), close


def test_missed_heartbeats_close_the_socket(wire):
    """With heartbeat=1 s negotiated and a silent client, the server keeps sending heartbeats and
    closes the socket after about two missed intervals (RabbitMQ: ~3 s, no close method)."""
    conn = wire()
    conn.handshake(heartbeat=1)
    started = time.monotonic()
    heartbeats = 0
    closed_at = None
    while time.monotonic() - started < 6:
        try:
            f = conn.read_frame(timeout=6 - (time.monotonic() - started))
        except w.PeerClosed:
            closed_at = time.monotonic() - started
            break
        except socket.timeout:
            break
        if f.type == w.FRAME_HEARTBEAT:
            assert f.channel == 0
            heartbeats += 1
        else:
            assert f.method == w.CONNECTION_CLOSE, f
    assert closed_at is not None, "server kept a silent connection open for 6 s"
    assert 1.5 <= closed_at <= 4.5, closed_at
    assert heartbeats >= 1


def test_heartbeats_from_client_keep_connection_alive(wire):
    """Counterpart of the above: a client that sends a heartbeat every ~0.5 s stays connected past 3 s."""
    conn = wire()
    conn.handshake(heartbeat=1)
    conn.open_channel(1)
    deadline = time.monotonic() + 3.5
    while time.monotonic() < deadline:
        conn.send(w.heartbeat_frame())
        time.sleep(0.5)
    conn.send_method(1, w.QUEUE_DECLARE, w.queue_declare_args("", exclusive=True))
    assert conn.expect_method(w.QUEUE_DECLARE_OK).channel == 1
