"""A deliberately small AMQP 0-9-1 wire helper for tests that send bad input.

Client libraries refuse to produce malformed traffic, so the bad-input tests build
frames by hand with ``struct``. This module knows just enough of the protocol to
perform the connection handshake, open channels, send a few methods and content
frames, and decode the replies a broker sends back (connection.close and
channel.close in particular).

Frame layout (AMQP 0-9-1 section 4.2.3)::

    type:octet  channel:short  size:long  payload:size octets  frame-end:octet (0xCE)
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass
from decimal import Decimal

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"

FRAME_METHOD = 1
FRAME_HEADER = 2
FRAME_BODY = 3
FRAME_HEARTBEAT = 8
FRAME_END = 0xCE

# (class_id, method_id) pairs used by the tests.
CONNECTION_START = (10, 10)
CONNECTION_START_OK = (10, 11)
CONNECTION_SECURE = (10, 20)
CONNECTION_TUNE = (10, 30)
CONNECTION_TUNE_OK = (10, 31)
CONNECTION_OPEN = (10, 40)
CONNECTION_OPEN_OK = (10, 41)
CONNECTION_CLOSE = (10, 50)
CONNECTION_CLOSE_OK = (10, 51)
CHANNEL_OPEN = (20, 10)
CHANNEL_OPEN_OK = (20, 11)
CHANNEL_CLOSE = (20, 40)
CHANNEL_CLOSE_OK = (20, 41)
EXCHANGE_DECLARE = (40, 10)
EXCHANGE_DECLARE_OK = (40, 11)
QUEUE_DECLARE = (50, 10)
QUEUE_DECLARE_OK = (50, 11)
BASIC_PUBLISH = (60, 40)

BASIC_CLASS_ID = 60


class WireError(Exception):
    """The peer sent something this helper cannot make sense of."""


class PeerClosed(Exception):
    """The socket reached EOF (or was reset) while a frame was expected."""


# --------------------------------------------------------------------------
# Field encoding
# --------------------------------------------------------------------------


def octet(value: int) -> bytes:
    return struct.pack(">B", value)


def short(value: int) -> bytes:
    return struct.pack(">H", value)


def long_(value: int) -> bytes:
    return struct.pack(">I", value)


def longlong(value: int) -> bytes:
    return struct.pack(">Q", value)


def shortstr(value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    if len(raw) > 255:
        raise ValueError("shortstr longer than 255 octets")
    return struct.pack(">B", len(raw)) + raw


def longstr(value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return struct.pack(">I", len(raw)) + raw


def bits(*flags: bool) -> bytes:
    """Pack up to eight consecutive bit fields into one octet, first flag in bit 0."""
    if len(flags) > 8:
        raise ValueError("more than 8 bits in one octet")
    value = 0
    for index, flag in enumerate(flags):
        if flag:
            value |= 1 << index
    return octet(value)


def _field_value(value) -> bytes:
    # The type tags follow RabbitMQ's reading of the 0-9-1 errata, which is what
    # every broker and client in practice speaks.
    if value is None:
        return b"V"
    if isinstance(value, bool):
        return b"t" + octet(1 if value else 0)
    if isinstance(value, int):
        if -(2**31) <= value < 2**31:
            return b"I" + struct.pack(">i", value)
        return b"l" + struct.pack(">q", value)
    if isinstance(value, float):
        return b"d" + struct.pack(">d", value)
    if isinstance(value, Decimal):
        sign, digits, exponent = value.as_tuple()
        unscaled = int("".join(map(str, digits)) or "0")
        if sign:
            unscaled = -unscaled
        return b"D" + octet(max(0, -exponent)) + struct.pack(">i", unscaled)
    if isinstance(value, (str, bytes)):
        return b"S" + longstr(value)
    if isinstance(value, dict):
        return b"F" + table(value)
    if isinstance(value, (list, tuple)):
        body = b"".join(_field_value(item) for item in value)
        return b"A" + long_(len(body)) + body
    raise TypeError(f"cannot encode {type(value).__name__} as a field value")


def table(fields: dict | None) -> bytes:
    body = b"".join(shortstr(name) + _field_value(value) for name, value in (fields or {}).items())
    return long_(len(body)) + body


# --------------------------------------------------------------------------
# Field decoding
# --------------------------------------------------------------------------


class Reader:
    """Sequential decoder over one method payload."""

    def __init__(self, data: bytes, offset: int = 0):
        self.data = data
        self.pos = offset

    def _take(self, count: int) -> bytes:
        if self.pos + count > len(self.data):
            raise WireError("field runs past the end of the payload")
        chunk = self.data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def _unpack(self, fmt: str):
        return struct.unpack(fmt, self._take(struct.calcsize(fmt)))[0]

    def octet(self) -> int:
        return self._unpack(">B")

    def short(self) -> int:
        return self._unpack(">H")

    def long(self) -> int:
        return self._unpack(">I")

    def longlong(self) -> int:
        return self._unpack(">Q")

    def shortstr(self) -> str:
        return self._take(self.octet()).decode("utf-8", "replace")

    def longstr(self) -> bytes:
        return self._take(self.long())

    def table(self) -> dict:
        end = self.pos + self.long()
        result = {}
        while self.pos < end:
            name = self.shortstr()
            result[name] = self.field_value()
        return result

    def field_value(self):
        tag = self._take(1)
        simple = {
            b"t": ">B",
            b"b": ">b",
            b"B": ">B",
            b"s": ">h",
            b"u": ">H",
            b"I": ">i",
            b"i": ">I",
            b"l": ">q",
            b"T": ">Q",
            b"f": ">f",
            b"d": ">d",
        }
        if tag in simple:
            value = self._unpack(simple[tag])
            return bool(value) if tag == b"t" else value
        if tag == b"D":
            scale = self.octet()
            return Decimal(self._unpack(">i")).scaleb(-scale)
        if tag == b"S":
            return self.longstr()
        if tag == b"x":
            return self.longstr()
        if tag == b"F":
            return self.table()
        if tag == b"A":
            end = self.pos + self.long()
            items = []
            while self.pos < end:
                items.append(self.field_value())
            return items
        if tag == b"V":
            return None
        raise WireError(f"unknown field type tag {tag!r}")


# --------------------------------------------------------------------------
# Frames
# --------------------------------------------------------------------------


def frame(frame_type: int, channel: int, payload: bytes, end: int = FRAME_END) -> bytes:
    """One complete frame; ``end`` can be overridden to produce a bad frame-end octet."""
    return struct.pack(">BHI", frame_type, channel, len(payload)) + payload + octet(end)


def method_frame(channel: int, method: tuple[int, int], args: bytes = b"") -> bytes:
    class_id, method_id = method
    return frame(FRAME_METHOD, channel, short(class_id) + short(method_id) + args)


def content_header_frame(
    channel: int,
    body_size: int,
    class_id: int = BASIC_CLASS_ID,
    property_flags: int = 0,
    properties: bytes = b"",
) -> bytes:
    payload = short(class_id) + short(0) + longlong(body_size) + short(property_flags) + properties
    return frame(FRAME_HEADER, channel, payload)


def content_body_frame(channel: int, body: bytes) -> bytes:
    return frame(FRAME_BODY, channel, body)


def heartbeat_frame() -> bytes:
    return frame(FRAME_HEARTBEAT, 0, b"")


# Argument builders for the methods the tests send.


def start_ok_args(user: str, password: str, client_properties: dict | None = None) -> bytes:
    response = b"\x00" + user.encode() + b"\x00" + password.encode()
    return table(client_properties) + shortstr("PLAIN") + longstr(response) + shortstr("en_US")


def tune_ok_args(channel_max: int, frame_max: int, heartbeat: int) -> bytes:
    return short(channel_max) + long_(frame_max) + short(heartbeat)


def open_args(vhost: str) -> bytes:
    return shortstr(vhost) + shortstr("") + bits(False)


def close_args(code: int = 200, text: str = "Goodbye", class_id: int = 0, method_id: int = 0) -> bytes:
    return short(code) + shortstr(text) + short(class_id) + short(method_id)


def channel_open_args() -> bytes:
    return shortstr("")


def queue_declare_args(
    queue: str,
    passive: bool = False,
    durable: bool = False,
    exclusive: bool = False,
    auto_delete: bool = False,
    nowait: bool = False,
    arguments: dict | None = None,
) -> bytes:
    return short(0) + shortstr(queue) + bits(passive, durable, exclusive, auto_delete, nowait) + table(arguments)


def exchange_declare_args(
    exchange: str,
    exchange_type: str,
    passive: bool = False,
    durable: bool = False,
    auto_delete: bool = False,
    internal: bool = False,
    nowait: bool = False,
    arguments: dict | None = None,
) -> bytes:
    return (
        short(0)
        + shortstr(exchange)
        + shortstr(exchange_type)
        + bits(passive, durable, auto_delete, internal, nowait)
        + table(arguments)
    )


def publish_args(exchange: str, routing_key: str, mandatory: bool = False, immediate: bool = False) -> bytes:
    return short(0) + shortstr(exchange) + shortstr(routing_key) + bits(mandatory, immediate)


@dataclass
class Frame:
    type: int
    channel: int
    payload: bytes

    @property
    def method(self) -> tuple[int, int] | None:
        if self.type != FRAME_METHOD or len(self.payload) < 4:
            return None
        return struct.unpack(">HH", self.payload[:4])

    def args(self) -> Reader:
        return Reader(self.payload, 4)


@dataclass
class Close:
    """A decoded connection.close or channel.close."""

    channel: int
    reply_code: int
    reply_text: str
    class_id: int
    method_id: int

    @property
    def connection_level(self) -> bool:
        return self.channel == 0


def parse_close(f: Frame) -> Close:
    r = f.args()
    return Close(f.channel, r.short(), r.shortstr(), r.short(), r.short())


# --------------------------------------------------------------------------
# Connection
# --------------------------------------------------------------------------


class WireConnection:
    """A raw socket to the broker with frame-level send and receive."""

    def __init__(self, host: str, port: int, timeout: float = 5.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self._buf = b""
        self.server_properties: dict = {}
        self.channel_max = 0
        self.frame_max = 0
        self.heartbeat = 0
        self.server_heartbeat = 0

    # -- plumbing ---------------------------------------------------------

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def try_send(self, data: bytes) -> bool:
        """Send, returning False instead of raising when the peer already went away."""
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def _recv_into_buffer(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("timed out waiting for data")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError as exc:
            raise PeerClosed("connection reset by peer") from exc
        if not chunk:
            raise PeerClosed("peer closed the connection")
        self._buf += chunk

    def read_exact(self, count: int, timeout: float | None = None) -> bytes:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while len(self._buf) < count:
            self._recv_into_buffer(deadline)
        data, self._buf = self._buf[:count], self._buf[count:]
        return data

    def read_all_until_eof(self, timeout: float) -> bytes:
        """Everything the peer sends until it closes; raises socket.timeout if it does not."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._recv_into_buffer(deadline)
            except PeerClosed:
                data, self._buf = self._buf, b""
                return data

    def read_frame(self, timeout: float | None = None) -> Frame:
        deadline_timeout = self.timeout if timeout is None else timeout
        start = time.monotonic()
        header = self.read_exact(7, deadline_timeout)
        frame_type, channel, size = struct.unpack(">BHI", header)
        left = max(0.01, deadline_timeout - (time.monotonic() - start))
        payload = self.read_exact(size + 1, left)
        if payload[-1] != FRAME_END:
            raise WireError(f"bad frame end 0x{payload[-1]:02x} from peer")
        return Frame(frame_type, channel, payload[:-1])

    def read_method(self, timeout: float | None = None, skip_heartbeats: bool = True) -> Frame:
        while True:
            f = self.read_frame(timeout)
            if f.type == FRAME_HEARTBEAT and skip_heartbeats:
                continue
            return f

    def expect_method(self, method: tuple[int, int], timeout: float | None = None) -> Frame:
        f = self.read_method(timeout)
        if f.method != method:
            if f.method == CONNECTION_CLOSE or f.method == CHANNEL_CLOSE:
                c = parse_close(f)
                raise WireError(f"expected {method}, broker closed: {c.reply_code} {c.reply_text}")
            raise WireError(f"expected method {method}, got frame type {f.type} method {f.method}")
        return f

    # -- protocol steps -------------------------------------------------------

    def send_method(self, channel: int, method: tuple[int, int], args: bytes = b"") -> None:
        self.send(method_frame(channel, method, args))

    def start(self, header: bytes = PROTOCOL_HEADER) -> Frame:
        """Send the protocol header and read connection.start."""
        self.send(header)
        f = self.expect_method(CONNECTION_START)
        r = f.args()
        r.octet(), r.octet()  # version major / minor
        self.server_properties = r.table()
        return f

    def handshake(
        self,
        user: str = "guest",
        password: str = "guest",
        vhost: str = "/",
        heartbeat: int = 0,
        channel_max: int | None = None,
        frame_max: int | None = None,
        client_properties: dict | None = None,
        open_vhost: bool = True,
    ) -> None:
        """Start → StartOk (PLAIN) → Tune → TuneOk → Open → OpenOk.

        ``channel_max``/``frame_max`` default to what the server proposes. With
        ``open_vhost=False`` the handshake stops after TuneOk (for tests that send
        their own connection.open).
        """
        self.start()
        props = {"product": "ferrymq-tests", "capabilities": {"authentication_failure_close": True}}
        if client_properties is not None:
            props = client_properties
        self.send_method(0, CONNECTION_START_OK, start_ok_args(user, password, props))
        tune = self.expect_method(CONNECTION_TUNE)
        r = tune.args()
        server_channel_max, server_frame_max, self.server_heartbeat = r.short(), r.long(), r.short()
        self.channel_max = server_channel_max if channel_max is None else channel_max
        self.frame_max = server_frame_max if frame_max is None else frame_max
        self.heartbeat = heartbeat
        self.send_method(0, CONNECTION_TUNE_OK, tune_ok_args(self.channel_max, self.frame_max, heartbeat))
        if open_vhost:
            self.send_method(0, CONNECTION_OPEN, open_args(vhost))
            self.expect_method(CONNECTION_OPEN_OK)

    def open_channel(self, channel: int) -> None:
        self.send_method(channel, CHANNEL_OPEN, channel_open_args())
        self.expect_method(CHANNEL_OPEN_OK)

    def wait_for_close(self, timeout: float = 5.0) -> Close | None:
        """Read until the broker sends connection.close or channel.close.

        Returns the decoded close, or None when the socket closed without one.
        A connection.close is answered with close-ok, as a polite client would.
        Raises socket.timeout when neither happens in time.
        """
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("broker neither closed nor sent a close method")
            try:
                f = self.read_frame(left)
            except PeerClosed:
                return None
            if f.method == CONNECTION_CLOSE:
                self.try_send(method_frame(0, CONNECTION_CLOSE_OK))
                return parse_close(f)
            if f.method == CHANNEL_CLOSE:
                return parse_close(f)

    def socket_closed_within(self, timeout: float) -> bool:
        """True when the peer closes the socket within ``timeout`` (all data read is dropped)."""
        try:
            self.read_all_until_eof(timeout)
            return True
        except socket.timeout:
            return False
