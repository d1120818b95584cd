//! Connections, frames and publish templates of the lean client.
//!
//! Setup traffic (handshake, declares, qos, consume, confirm.select) goes through amq-protocol's
//! generated codec, where clarity matters more than speed. The hot path never builds an
//! `AMQPFrame`: a publish is a pre-encoded byte template copied into a large write buffer, and
//! incoming frames are split on the 7-byte frame header in place, reading only the fields a load
//! generator needs (delivery tag, confirm tag, body size). That keeps the client's CPU per message
//! a small fraction of any broker's, so the broker is what a benchmark measures.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use amq_protocol::frame::{gen_frame, AMQPContentHeader, AMQPFrame, WriteContext};
use amq_protocol::protocol::{basic, channel, connection, parse_class, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable, LongString, ShortString};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::uri::AmqpUri;

/// Frame type of a method frame.
pub const FRAME_METHOD: u8 = 1;
/// Frame type of a content header frame.
pub const FRAME_HEADER: u8 = 2;
/// Frame type of a content body frame.
pub const FRAME_BODY: u8 = 3;
/// Frame type of a heartbeat frame.
pub const FRAME_HEARTBEAT: u8 = 8;
const FRAME_END: u8 = 0xCE;
/// type (1) + channel (2) + payload size (4).
const FRAME_HEADER_LEN: usize = 7;
/// Header plus the frame-end octet: what a frame costs beyond its payload.
const FRAME_OVERHEAD: usize = FRAME_HEADER_LEN + 1;

/// Class and method ids the hot path recognises without decoding.
pub mod ids {
    /// connection.close
    pub const CONNECTION_CLOSE: (u16, u16) = (10, 50);
    /// connection.close-ok
    pub const CONNECTION_CLOSE_OK: (u16, u16) = (10, 51);
    /// connection.blocked (RabbitMQ extension: the broker stopped reading publishers)
    pub const CONNECTION_BLOCKED: (u16, u16) = (10, 60);
    /// connection.unblocked
    pub const CONNECTION_UNBLOCKED: (u16, u16) = (10, 61);
    /// channel.close
    pub const CHANNEL_CLOSE: (u16, u16) = (20, 40);
    /// basic.cancel (sent by the broker when the queue goes away)
    pub const BASIC_CANCEL: (u16, u16) = (60, 30);
    /// basic.deliver
    pub const BASIC_DELIVER: (u16, u16) = (60, 60);
    /// basic.ack (a publisher confirm when sent by the broker)
    pub const BASIC_ACK: (u16, u16) = (60, 80);
    /// basic.nack (a negative publisher confirm)
    pub const BASIC_NACK: (u16, u16) = (60, 120);
}

/// Frame size assumed until connection.tune says otherwise; generous so that a broker's large
/// connection.start (server properties) is never refused.
const INITIAL_FRAME_MAX: u32 = 128 * 1024;
/// Frame size we propose when the broker places no limit (tune frame_max = 0).
const DEFAULT_FRAME_MAX: u32 = 128 * 1024;
/// How much the reader asks the socket for at once: big reads amortise the syscall over
/// thousands of small deliveries.
const READ_CHUNK: usize = 256 * 1024;
/// How long a polite connection.close waits for close-ok before giving up.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

fn protocol_error(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// One frame as it sits in the read buffer; borrowing avoids a copy per frame.
#[derive(Debug)]
pub struct Frame<'a> {
    /// Frame type (`FRAME_METHOD`, `FRAME_HEADER`, `FRAME_BODY`, `FRAME_HEARTBEAT`).
    pub kind: u8,
    /// Channel number.
    pub channel: u16,
    /// Payload, without the 7-byte header and the frame-end octet.
    pub payload: &'a [u8],
}

impl Frame<'_> {
    /// `(class id, method id)` of a method frame, `None` for other frames.
    pub fn method_id(&self) -> Option<(u16, u16)> {
        if self.kind != FRAME_METHOD || self.payload.len() < 4 {
            return None;
        }
        let p = self.payload;
        Some((
            u16::from_be_bytes([p[0], p[1]]),
            u16::from_be_bytes([p[2], p[3]]),
        ))
    }

    /// Fully decodes a method frame with amq-protocol; for the rare, non-hot methods.
    pub fn decode_method(&self) -> io::Result<AMQPClass> {
        parse_class(self.payload)
            .map(|(_, class)| class)
            .map_err(|e| protocol_error(format!("undecodable method frame: {e:?}")))
    }

    /// The error a connection.close or channel.close frame stands for.
    pub fn close_error(&self) -> io::Error {
        match self.decode_method() {
            Ok(method) => close_error(&method)
                .unwrap_or_else(|| protocol_error(format!("expected a close, got {method:?}"))),
            Err(e) => e,
        }
    }

    /// Delivery tag of a basic.deliver, read in place: consumer tag (short string) then u64.
    pub fn deliver_tag(&self) -> Option<u64> {
        let args = self.payload.get(4..)?;
        let tag_len = *args.first()? as usize;
        let tag = args.get(1 + tag_len..9 + tag_len)?;
        Some(u64::from_be_bytes(tag.try_into().ok()?))
    }

    /// `(delivery tag, multiple)` of a basic.ack or basic.nack, read in place.
    pub fn confirm_tag(&self) -> Option<(u64, bool)> {
        let args = self.payload.get(4..13)?;
        let tag = u64::from_be_bytes(args[..8].try_into().ok()?);
        Some((tag, args[8] & 1 == 1))
    }

    /// Body size announced by a content header frame.
    pub fn body_size(&self) -> Option<u64> {
        let size = self.payload.get(4..12)?;
        Some(u64::from_be_bytes(size.try_into().ok()?))
    }
}

/// The read half of a plain TCP or a TLS connection.
type ReadSide = Box<dyn AsyncRead + Send + Unpin>;
/// The write half of a plain TCP or a TLS connection.
type WriteSide = Box<dyn AsyncWrite + Send + Unpin>;

/// The read side of a connection: one buffer, many frames per socket read.
pub struct FrameReader {
    half: ReadSide,
    /// The socket, for the socket-level read tricks; `None` under TLS.
    fd: Option<RawFd>,
    buf: Vec<u8>,
    /// Start of the first unparsed byte in `buf`.
    pos: usize,
    /// Largest payload accepted; checked on the header before waiting for the rest, so a
    /// corrupt length cannot make us buffer gigabytes.
    max_payload: usize,
}

impl FrameReader {
    fn new(half: ReadSide, fd: Option<RawFd>) -> Self {
        Self {
            half,
            fd,
            buf: Vec::with_capacity(READ_CHUNK),
            pos: 0,
            max_payload: INITIAL_FRAME_MAX as usize - FRAME_OVERHEAD,
        }
    }

    /// Reads whatever the socket has (at least one byte, or 0 at end of stream).
    pub async fn fill(&mut self) -> io::Result<usize> {
        self.compact();
        self.half.read_buf(&mut self.buf).await
    }

    /// Asks the kernel not to report the socket readable before `bytes` are buffered
    /// (SO_RCVLOWAT), so that a consumer of a broker sending one small TCP segment per delivery
    /// is woken once per batch instead of once per segment. Pair it with [`Self::sweep`] on a
    /// timer, or the tail of a stream smaller than `bytes` would never be read.
    pub fn set_low_water(&self, bytes: usize) -> io::Result<()> {
        let Some(fd) = self.fd else {
            return Err(io::ErrorKind::Unsupported.into());
        };
        let value = libc::c_int::try_from(bytes.max(1)).unwrap_or(libc::c_int::MAX);
        // SAFETY: setsockopt reads one c_int from a valid pointer, on a socket we own.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVLOWAT,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Reads what the kernel holds right now, below the low-water mark too, without waiting
    /// (tokio only reads once the socket was reported readable). Returns the bytes read.
    pub fn sweep(&mut self) -> io::Result<usize> {
        let Some(fd) = self.fd else {
            return Ok(0); // under TLS the next fill reads whatever is there
        };
        self.compact();
        let spare = self.buf.spare_capacity_mut();
        // SAFETY: recv writes at most `spare.len()` bytes into the Vec's spare capacity.
        let n = unsafe {
            libc::recv(
                fd,
                spare.as_mut_ptr().cast(),
                spare.len(),
                libc::MSG_DONTWAIT,
            )
        };
        match n {
            0 => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "broker closed the connection",
            )),
            n if n > 0 => {
                // SAFETY: the kernel initialised these n bytes.
                unsafe { self.buf.set_len(self.buf.len() + n as usize) };
                Ok(n as usize)
            }
            _ => match io::Error::last_os_error() {
                e if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
                e => Err(e),
            },
        }
    }

    /// Drops parsed bytes and makes room for a large read.
    fn compact(&mut self) {
        if self.pos > 0 {
            // Only the tail of a partial frame is left, so this move is small.
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 2 {
            self.buf.reserve(READ_CHUNK);
        }
    }

    /// The next complete frame already buffered, if any.
    pub fn next_frame(&mut self) -> io::Result<Option<Frame<'_>>> {
        let avail = &self.buf[self.pos..];
        if avail.len() < FRAME_HEADER_LEN {
            return Ok(None);
        }
        let kind = avail[0];
        if !matches!(
            kind,
            FRAME_METHOD | FRAME_HEADER | FRAME_BODY | FRAME_HEARTBEAT
        ) {
            // "AMQP" here means the broker answered our protocol header with its own: refused.
            return Err(protocol_error(format!(
                "unexpected frame type {kind} (first bytes {:?})",
                &avail[..FRAME_HEADER_LEN]
            )));
        }
        let size = u32::from_be_bytes([avail[3], avail[4], avail[5], avail[6]]) as usize;
        if size > self.max_payload {
            return Err(protocol_error(format!(
                "frame of {size} bytes exceeds frame_max"
            )));
        }
        if avail.len() < size + FRAME_OVERHEAD {
            return Ok(None);
        }
        if avail[FRAME_HEADER_LEN + size] != FRAME_END {
            return Err(protocol_error("missing frame-end octet"));
        }
        self.pos += size + FRAME_OVERHEAD;
        Ok(Some(Frame {
            kind,
            channel: u16::from_be_bytes([avail[1], avail[2]]),
            payload: &avail[FRAME_HEADER_LEN..FRAME_HEADER_LEN + size],
        }))
    }

    /// Waits for the next method frame, skipping content and heartbeats, and decodes it.
    async fn next_method(&mut self) -> io::Result<(u16, AMQPClass)> {
        loop {
            while let Some(frame) = self.next_frame()? {
                if frame.kind == FRAME_METHOD {
                    return Ok((frame.channel, frame.decode_method()?));
                }
            }
            if self.fill().await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "broker closed the connection",
                ));
            }
        }
    }

    /// Reads and drops frames until connection.close-ok (or the broker hangs up).
    pub async fn wait_close_ok(&mut self) -> io::Result<()> {
        loop {
            while let Some(frame) = self.next_frame()? {
                if frame.method_id() == Some(ids::CONNECTION_CLOSE_OK) {
                    return Ok(());
                }
            }
            if self.fill().await? == 0 {
                return Ok(());
            }
        }
    }
}

/// The write side of a connection: frames accumulate in one buffer and go out in one syscall.
pub struct FrameWriter {
    half: WriteSide,
    buf: Vec<u8>,
    /// Bytes of `buf` already written: lets an interrupted flush resume where it stopped
    /// instead of resending (and corrupting) half-written frames.
    written: usize,
}

impl FrameWriter {
    fn new(half: WriteSide) -> Self {
        Self {
            half,
            buf: Vec::with_capacity(READ_CHUNK),
            written: 0,
        }
    }

    /// The pending output, for callers that append pre-encoded frames themselves.
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Appends a method frame encoded by amq-protocol.
    pub fn push_method(&mut self, channel: u16, method: AMQPClass) -> io::Result<()> {
        encode(&AMQPFrame::Method(channel, method), &mut self.buf)
    }

    /// Appends basic.ack, hand-encoded because a consumer sends one per few deliveries.
    pub fn push_ack(&mut self, channel: u16, delivery_tag: u64, multiple: bool) {
        encode_ack(&mut self.buf, channel, delivery_tag, multiple);
    }

    /// Appends a heartbeat frame.
    pub fn push_heartbeat(&mut self) {
        self.buf
            .extend_from_slice(&[FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END]);
    }

    /// Whether frames are waiting to be written.
    pub fn has_pending(&self) -> bool {
        self.written < self.buf.len()
    }

    /// Appends basic.nack.
    pub fn push_nack(&mut self, channel: u16, delivery_tag: u64, multiple: bool, requeue: bool) {
        let _ = self.push_method(
            channel,
            AMQPClass::Basic(basic::AMQPMethod::Nack(basic::Nack {
                delivery_tag,
                multiple,
                requeue,
            })),
        );
    }

    /// Appends connection.close (reply 200), the start of a polite goodbye.
    pub fn push_close(&mut self) -> io::Result<()> {
        self.push_method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
                reply_code: 200,
                reply_text: "closing".into(),
                class_id: 0,
                method_id: 0,
            })),
        )
    }

    /// Writes out everything buffered. Cancel-safe: dropping the future mid-way loses
    /// nothing, and the next call continues with the first unwritten byte.
    pub async fn flush(&mut self) -> io::Result<()> {
        while self.written < self.buf.len() {
            match self.half.write(&self.buf[self.written..]).await? {
                0 => return Err(io::ErrorKind::WriteZero.into()),
                n => self.written += n,
            }
        }
        self.half.flush().await?;
        self.buf.clear();
        self.written = 0;
        Ok(())
    }
}

fn encode_ack(b: &mut Vec<u8>, channel: u16, delivery_tag: u64, multiple: bool) {
    b.push(FRAME_METHOD);
    b.extend_from_slice(&channel.to_be_bytes());
    b.extend_from_slice(&13u32.to_be_bytes()); // class 2 + method 2 + tag 8 + bits 1
    b.extend_from_slice(&ids::BASIC_ACK.0.to_be_bytes());
    b.extend_from_slice(&ids::BASIC_ACK.1.to_be_bytes());
    b.extend_from_slice(&delivery_tag.to_be_bytes());
    b.push(u8::from(multiple));
    b.push(FRAME_END);
}

fn encode(frame: &AMQPFrame, out: &mut Vec<u8>) -> io::Result<()> {
    let ctx = WriteContext::from(std::mem::take(out));
    let ctx = gen_frame(frame)(ctx).map_err(|e| protocol_error(format!("encode: {e:?}")))?;
    *out = ctx.into_inner().0;
    Ok(())
}

/// An open connection with channel-level RPC for setup; split it for the hot path.
pub struct Connection {
    reader: FrameReader,
    writer: FrameWriter,
    frame_max: u32,
    /// What the broker said about itself in connection.start.
    pub server_properties: FieldTable,
    /// Negotiated heartbeat interval in seconds (0 = none).
    pub heartbeat: u16,
}

impl Connection {
    /// Connects, authenticates with PLAIN, accepts the broker's frame_max and channel_max,
    /// disables heartbeats (a benchmark connection is never idle long, and a missed heartbeat
    /// under full load would abort the run), and opens the vhost.
    pub async fn open(uri: &AmqpUri, name: &str) -> io::Result<Self> {
        Self::open_as(uri, name, "ferryperf", 0).await
    }

    /// [`Connection::open`] with the product name the broker shows for this client and a
    /// heartbeat to ask for (seconds, 0 = none; the smaller of ours and the broker's wins).
    /// With heartbeats on, the caller must send heartbeat frames ([`FrameWriter::push_heartbeat`])
    /// and watch for silence: [`Connection::heartbeat`] is the negotiated interval.
    pub async fn open_as(
        uri: &AmqpUri,
        name: &str,
        product: &str,
        heartbeat: u16,
    ) -> io::Result<Self> {
        let stream = TcpStream::connect(uri.address()).await?;
        // Latency runs send one small message at a time; Nagle would hold it back.
        stream.set_nodelay(true)?;
        let (reader, writer) = if uri.tls {
            let tls = crate::tls::connect(uri, stream).await?;
            let (r, w) = tokio::io::split(tls);
            (
                FrameReader::new(Box::new(r), None),
                FrameWriter::new(Box::new(w)),
            )
        } else {
            let fd = stream.as_raw_fd();
            let (r, w) = stream.into_split();
            (
                FrameReader::new(Box::new(r), Some(fd)),
                FrameWriter::new(Box::new(w)),
            )
        };
        let mut conn = Self {
            reader,
            writer,
            frame_max: INITIAL_FRAME_MAX,
            server_properties: FieldTable::default(),
            heartbeat: 0,
        };
        conn.writer.buf.extend_from_slice(b"AMQP\x00\x00\x09\x01");
        conn.writer.flush().await?;

        let start = match conn.reader.next_method().await? {
            (0, AMQPClass::Connection(connection::AMQPMethod::Start(s))) => s,
            (_, other) => return Err(unexpected("connection.start", &other)),
        };
        conn.server_properties = start.server_properties.clone();
        let mechanisms = String::from_utf8_lossy(start.mechanisms.as_bytes()).into_owned();
        if !mechanisms.split_whitespace().any(|m| m == "PLAIN") {
            return Err(protocol_error(format!(
                "broker offers no PLAIN authentication ({mechanisms})"
            )));
        }
        let response = format!("\0{}\0{}", uri.user, uri.password);
        conn.writer.push_method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                client_properties: client_properties(name, product),
                mechanism: "PLAIN".into(),
                response: LongString::from(response),
                locale: "en_US".into(),
            })),
        )?;
        conn.writer.flush().await?;

        let tune = match conn.reader.next_method().await? {
            (0, AMQPClass::Connection(connection::AMQPMethod::Tune(t))) => t,
            (_, other) => return Err(unexpected("connection.tune", &other)),
        };
        let frame_max = match tune.frame_max {
            0 => DEFAULT_FRAME_MAX,
            n => n,
        };
        let heartbeat = match (heartbeat, tune.heartbeat) {
            (0, _) => 0,
            (ours, 0) => ours,
            (ours, theirs) => ours.min(theirs),
        };
        conn.heartbeat = heartbeat;
        conn.writer.push_method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
                channel_max: tune.channel_max,
                frame_max,
                heartbeat,
            })),
        )?;
        conn.frame_max = frame_max;
        conn.reader.max_payload = (frame_max as usize).saturating_sub(FRAME_OVERHEAD);

        let vhost = short(&uri.vhost)?;
        match conn
            .call(
                0,
                AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
                    virtual_host: vhost,
                })),
            )
            .await?
        {
            AMQPClass::Connection(connection::AMQPMethod::OpenOk(_)) => Ok(conn),
            other => Err(unexpected("connection.open-ok", &other)),
        }
    }

    /// Negotiated maximum frame size (header and frame-end included).
    pub fn frame_max(&self) -> u32 {
        self.frame_max
    }

    /// Opens channel `channel`.
    pub async fn open_channel(&mut self, channel: u16) -> io::Result<()> {
        match self
            .call(
                channel,
                AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
            )
            .await?
        {
            AMQPClass::Channel(channel::AMQPMethod::OpenOk(_)) => Ok(()),
            other => Err(unexpected("channel.open-ok", &other)),
        }
    }

    /// Sends a synchronous method and returns the broker's reply on the same channel.
    /// A channel.close or connection.close from the broker is answered (so the broker can
    /// release it) and becomes an error carrying the broker's reply text.
    pub async fn call(&mut self, channel: u16, method: AMQPClass) -> io::Result<AMQPClass> {
        self.writer.push_method(channel, method)?;
        self.writer.flush().await?;
        loop {
            let (ch, reply) = self.reader.next_method().await?;
            if let Some(error) = close_error(&reply) {
                let close_ok = match reply {
                    AMQPClass::Connection(_) => AMQPClass::Connection(
                        connection::AMQPMethod::CloseOk(connection::CloseOk {}),
                    ),
                    _ if ch == channel => {
                        AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {}))
                    }
                    _ => continue, // another channel's trouble is not this call's
                };
                self.writer.push_method(ch, close_ok)?;
                let _ = self.writer.flush().await;
                return Err(error);
            }
            if ch == channel {
                return Ok(reply);
            }
            // A stray method on another channel: not ours to answer during setup.
        }
    }

    /// Closes politely: connection.close, then waits (briefly) for close-ok.
    pub async fn close(self) -> io::Result<()> {
        let (mut reader, mut writer) = self.into_parts();
        close_parts(&mut reader, &mut writer).await
    }

    /// Splits into independently owned read and write sides for the hot path.
    pub fn into_parts(self) -> (FrameReader, FrameWriter) {
        (self.reader, self.writer)
    }
}

/// Polite close on a split connection: send connection.close, drain until close-ok.
pub async fn close_parts(reader: &mut FrameReader, writer: &mut FrameWriter) -> io::Result<()> {
    writer.push_close()?;
    writer.flush().await?;
    match tokio::time::timeout(CLOSE_TIMEOUT, reader.wait_close_ok()).await {
        Ok(result) => result,
        Err(_) => Ok(()), // the socket is dropped right after; nothing is lost by not waiting
    }
}

fn unexpected(wanted: &str, got: &AMQPClass) -> io::Error {
    close_error(got).unwrap_or_else(|| protocol_error(format!("expected {wanted}, got {got:?}")))
}

/// The error a broker's connection.close or channel.close stands for (with its reply code and
/// text); `None` for any other method.
pub fn close_error(method: &AMQPClass) -> Option<io::Error> {
    let (what, code, text) = match method {
        AMQPClass::Connection(connection::AMQPMethod::Close(c)) => {
            ("connection", c.reply_code, &c.reply_text)
        }
        AMQPClass::Channel(channel::AMQPMethod::Close(c)) => {
            ("channel", c.reply_code, &c.reply_text)
        }
        _ => return None,
    };
    Some(io::Error::new(
        io::ErrorKind::ConnectionAborted,
        format!("broker closed the {what}: {code} {text}"),
    ))
}

/// A short string, with the 255-byte limit reported as an error instead of a panic.
pub fn short(s: &str) -> io::Result<ShortString> {
    ShortString::try_new(s).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

fn client_properties(name: &str, product: &str) -> FieldTable {
    let mut caps = FieldTable::default();
    for cap in [
        "publisher_confirms",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "authentication_failure_close",
    ] {
        caps.insert(cap.into(), AMQPValue::Boolean(true));
    }
    let mut props = FieldTable::default();
    let text = |s: &str| AMQPValue::LongString(LongString::from(s));
    props.insert("product".into(), text(product));
    props.insert("version".into(), text(env!("CARGO_PKG_VERSION")));
    props.insert("platform".into(), text("Rust/tokio"));
    props.insert("connection_name".into(), text(name));
    props.insert("capabilities".into(), AMQPValue::FieldTable(caps));
    props
}

/// A basic.publish with header and body, encoded once and copied per message.
#[derive(Clone, Debug)]
pub struct PublishTemplate {
    bytes: Vec<u8>,
    /// Offset of the first body byte, where the send timestamp goes; `None` when the body is
    /// shorter than a timestamp.
    stamp_at: Option<usize>,
}

impl PublishTemplate {
    /// Encodes method, header and body frames (the body split to fit `frame_max`).
    pub fn new(
        channel: u16,
        exchange: &str,
        routing_key: &str,
        properties: basic::AMQPProperties,
        body: &[u8],
        frame_max: u32,
    ) -> io::Result<Self> {
        let mut bytes = Vec::new();
        let publish = basic::Publish {
            exchange: short(exchange)?,
            routing_key: short(routing_key)?,
            mandatory: false,
            immediate: false,
        };
        encode(
            &AMQPFrame::Method(
                channel,
                AMQPClass::Basic(basic::AMQPMethod::Publish(publish)),
            ),
            &mut bytes,
        )?;
        encode(
            &AMQPFrame::Header(
                channel,
                AMQPContentHeader {
                    class_id: 60,
                    body_size: body.len() as u64,
                    properties,
                },
            ),
            &mut bytes,
        )?;
        let stamp_at = (body.len() >= 8).then_some(bytes.len() + FRAME_HEADER_LEN);
        let chunk = (frame_max as usize).saturating_sub(FRAME_OVERHEAD).max(1);
        for part in body.chunks(chunk) {
            encode(&AMQPFrame::Body(channel, part.to_vec()), &mut bytes)?;
        }
        Ok(Self { bytes, stamp_at })
    }

    /// Encoded size of one message (all three frame kinds).
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Never true: a template always holds the three frames of a message.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Appends `n` copies, writing `stamp` (little-endian) into the first 8 body bytes of each.
    /// One stamp per batch is as accurate as one per message: the batch leaves in one write.
    pub fn append(&self, out: &mut Vec<u8>, n: usize, stamp: u64) {
        let base = out.len();
        out.reserve(n * self.bytes.len());
        for _ in 0..n {
            out.extend_from_slice(&self.bytes);
        }
        if let Some(at) = self.stamp_at {
            let stamp = stamp.to_le_bytes();
            for i in 0..n {
                let o = base + i * self.bytes.len() + at;
                out[o..o + 8].copy_from_slice(&stamp);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::frame::parse_frame;

    #[test]
    fn template_frames_parse_back() {
        let body: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        // A tiny frame_max forces the body into several frames.
        let props = basic::AMQPProperties::default().with_delivery_mode(2);
        let t = PublishTemplate::new(1, "x", "rk", props, &body, 136).unwrap();
        let mut out = Vec::new();
        t.append(&mut out, 2, 0x0102_0304_0506_0708);
        assert_eq!(out.len(), 2 * t.len());
        let mut rest = &out[..];
        let mut bodies = Vec::new();
        while !rest.is_empty() {
            let (r, frame) = parse_frame(rest).unwrap();
            if let AMQPFrame::Body(_, b) = frame {
                bodies.push(b);
            }
            rest = r;
        }
        assert_eq!(bodies.len(), 6); // 300 bytes in 128-byte chunks, twice
        assert_eq!(&bodies[0][..8], &0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(&bodies[0][8..], &body[8..128]);
    }

    #[test]
    fn hand_encoded_ack_matches_codec() {
        let mut expected = Vec::new();
        encode(
            &AMQPFrame::Method(
                3,
                AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                    delivery_tag: 77,
                    multiple: true,
                })),
            ),
            &mut expected,
        )
        .unwrap();
        let mut buf = Vec::new();
        encode_ack(&mut buf, 3, 77, true);
        assert_eq!(buf, expected);
        let frame = Frame {
            kind: FRAME_METHOD,
            channel: 3,
            payload: &buf[FRAME_HEADER_LEN..buf.len() - 1],
        };
        assert_eq!(frame.method_id(), Some(ids::BASIC_ACK));
        assert_eq!(frame.confirm_tag(), Some((77, true)));
    }

    #[test]
    fn deliver_tag_in_place() {
        let mut payload = Vec::new();
        encode(
            &AMQPFrame::Method(
                1,
                AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
                    consumer_tag: "ctag-1".into(),
                    delivery_tag: 123_456,
                    redelivered: false,
                    exchange: "".into(),
                    routing_key: "q".into(),
                })),
            ),
            &mut payload,
        )
        .unwrap();
        let frame = Frame {
            kind: FRAME_METHOD,
            channel: 1,
            payload: &payload[FRAME_HEADER_LEN..payload.len() - 1],
        };
        assert_eq!(frame.method_id(), Some(ids::BASIC_DELIVER));
        assert_eq!(frame.deliver_tag(), Some(123_456));
    }
}
