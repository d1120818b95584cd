//! Encoding outbound frames.
//!
//! Rare methods go through amq-protocol's generator. The per-message frames
//! (deliver, get-ok, return, content header and body, confirms) are written by
//! hand straight into the connection's write buffer: no intermediate structs,
//! no property re-encoding.

use crate::frame::{kind, FRAME_END, FRAME_OVERHEAD};
use amq_protocol::frame::{gen_frame, AMQPFrame, WriteContext};
use amq_protocol::protocol::AMQPClass;
use ferrymq_broker::message::Message;

/// Appends a method frame built by amq-protocol.
pub fn method(buf: &mut Vec<u8>, channel: u16, class: AMQPClass) {
    let frame = AMQPFrame::Method(channel, class);
    // Encoded separately so a failure cannot lose frames already in `buf`.
    let result =
        gen_frame(&frame)(WriteContext::from(Vec::with_capacity(64))).map(|ctx| ctx.into_inner().0);
    match result {
        Ok(b) => buf.extend_from_slice(&b),
        // Generation into a Vec only fails on values the protocol cannot carry
        // (e.g. a short string over 255 bytes); those are validated before we get here.
        Err(e) => tracing::error!("cannot encode {frame}: {e}"),
    }
}

fn begin(buf: &mut Vec<u8>, kind: u8, channel: u16) -> usize {
    buf.push(kind);
    buf.extend_from_slice(&channel.to_be_bytes());
    let at = buf.len();
    buf.extend_from_slice(&[0, 0, 0, 0]);
    at
}

fn end(buf: &mut Vec<u8>, size_at: usize) {
    let size = (buf.len() - size_at - 4) as u32;
    buf[size_at..size_at + 4].copy_from_slice(&size.to_be_bytes());
    buf.push(FRAME_END);
}

fn short_str(buf: &mut Vec<u8>, s: &str) {
    let b = &s.as_bytes()[..s.len().min(255)];
    buf.push(b.len() as u8);
    buf.extend_from_slice(b);
}

/// Appends the content header and body frames of `message`.
pub fn content(buf: &mut Vec<u8>, channel: u16, message: &Message, frame_max: usize) {
    content_with_properties(buf, channel, message, &message.raw_properties, frame_max);
}

/// Appends the content header (with `properties`, already encoded) and body frames.
fn content_with_properties(
    buf: &mut Vec<u8>,
    channel: u16,
    message: &Message,
    properties: &[u8],
    frame_max: usize,
) {
    let at = begin(buf, kind::HEADER, channel);
    buf.extend_from_slice(&60u16.to_be_bytes());
    buf.extend_from_slice(&0u16.to_be_bytes());
    buf.extend_from_slice(&(message.body.len() as u64).to_be_bytes());
    buf.extend_from_slice(properties);
    end(buf, at);
    let chunk = frame_max - FRAME_OVERHEAD;
    for part in message.body.chunks(chunk) {
        let at = begin(buf, kind::BODY, channel);
        buf.extend_from_slice(part);
        end(buf, at);
    }
}

/// Appends the `basic.deliver` method frame alone.
fn deliver_method(
    buf: &mut Vec<u8>,
    channel: u16,
    consumer_tag: &str,
    delivery_tag: u64,
    redelivered: bool,
    message: &Message,
) {
    let at = begin(buf, kind::METHOD, channel);
    buf.extend_from_slice(&[0, 60, 0, 60]);
    short_str(buf, consumer_tag);
    buf.extend_from_slice(&delivery_tag.to_be_bytes());
    buf.push(redelivered as u8);
    short_str(buf, &message.exchange);
    short_str(buf, &message.routing_key);
    end(buf, at);
}

/// Appends `basic.deliver` with its content.
#[allow(clippy::too_many_arguments)]
pub fn deliver(
    buf: &mut Vec<u8>,
    channel: u16,
    consumer_tag: &str,
    delivery_tag: u64,
    redelivered: bool,
    message: &Message,
    frame_max: usize,
) {
    deliver_method(
        buf,
        channel,
        consumer_tag,
        delivery_tag,
        redelivered,
        message,
    );
    content(buf, channel, message, frame_max);
}

/// Appends `basic.deliver` whose properties carry one more string header
/// (`key` = `value`), spliced into the encoded properties without decoding them.
#[allow(clippy::too_many_arguments)]
pub fn deliver_with_header(
    buf: &mut Vec<u8>,
    channel: u16,
    consumer_tag: &str,
    delivery_tag: u64,
    redelivered: bool,
    message: &Message,
    frame_max: usize,
    header: (&str, &str),
) {
    deliver_method(
        buf,
        channel,
        consumer_tag,
        delivery_tag,
        redelivered,
        message,
    );
    let mut properties = Vec::with_capacity(message.raw_properties.len() + 64);
    properties_with_header(&message.raw_properties, header.0, header.1, &mut properties);
    content_with_properties(buf, channel, message, &properties, frame_max);
}

/// Writes encoded basic properties with a string header added: sets the headers
/// flag and inserts a one-entry table, or appends the entry to the existing table.
/// Basic properties use a single 16-bit flag word: content-type (bit 15) and
/// content-encoding (bit 14) are short strings ahead of headers (bit 13).
pub fn properties_with_header(raw: &[u8], key: &str, value: &str, out: &mut Vec<u8>) {
    let mut entry = Vec::with_capacity(key.len() + value.len() + 6);
    short_str(&mut entry, key);
    entry.push(b'S');
    entry.extend_from_slice(&(value.len() as u32).to_be_bytes());
    entry.extend_from_slice(value.as_bytes());
    let flags = u16::from_be_bytes([raw[0], raw[1]]);
    let mut pos = 2;
    for bit in [15u16, 14] {
        if flags & (1 << bit) != 0 {
            pos += 1 + raw[pos] as usize;
        }
    }
    if flags & (1 << 13) != 0 {
        let len = u32::from_be_bytes(raw[pos..pos + 4].try_into().expect("4 bytes")) as usize;
        out.extend_from_slice(&raw[..pos]);
        out.extend_from_slice(&((len + entry.len()) as u32).to_be_bytes());
        out.extend_from_slice(&raw[pos + 4..pos + 4 + len]);
        out.extend_from_slice(&entry);
        out.extend_from_slice(&raw[pos + 4 + len..]);
    } else {
        out.extend_from_slice(&(flags | (1 << 13)).to_be_bytes());
        out.extend_from_slice(&raw[2..pos]);
        out.extend_from_slice(&(entry.len() as u32).to_be_bytes());
        out.extend_from_slice(&entry);
        out.extend_from_slice(&raw[pos..]);
    }
}

/// Appends `basic.get-ok` with its content.
pub fn get_ok(
    buf: &mut Vec<u8>,
    channel: u16,
    delivery_tag: u64,
    redelivered: bool,
    message_count: u32,
    message: &Message,
    frame_max: usize,
) {
    let at = begin(buf, kind::METHOD, channel);
    buf.extend_from_slice(&[0, 60, 0, 71]);
    buf.extend_from_slice(&delivery_tag.to_be_bytes());
    buf.push(redelivered as u8);
    short_str(buf, &message.exchange);
    short_str(buf, &message.routing_key);
    buf.extend_from_slice(&message_count.to_be_bytes());
    end(buf, at);
    content(buf, channel, message, frame_max);
}

/// Appends `basic.return` with its content.
pub fn basic_return(
    buf: &mut Vec<u8>,
    channel: u16,
    code: u16,
    text: &str,
    message: &Message,
    frame_max: usize,
) {
    let at = begin(buf, kind::METHOD, channel);
    buf.extend_from_slice(&[0, 60, 0, 50]);
    buf.extend_from_slice(&code.to_be_bytes());
    short_str(buf, text);
    short_str(buf, &message.exchange);
    short_str(buf, &message.routing_key);
    end(buf, at);
    content(buf, channel, message, frame_max);
}

/// Appends a publisher-confirm `basic.ack` or `basic.nack`.
pub fn confirm(buf: &mut Vec<u8>, channel: u16, tag: u64, multiple: bool, ack: bool) {
    let at = begin(buf, kind::METHOD, channel);
    if ack {
        buf.extend_from_slice(&[0, 60, 0, 80]);
        buf.extend_from_slice(&tag.to_be_bytes());
        buf.push(multiple as u8);
    } else {
        buf.extend_from_slice(&[0, 60, 0, 120]);
        buf.extend_from_slice(&tag.to_be_bytes());
        // bits: multiple, requeue=false
        buf.push(multiple as u8);
    }
    end(buf, at);
}

/// Appends a heartbeat frame.
pub fn heartbeat(buf: &mut Vec<u8>) {
    buf.extend_from_slice(&[kind::HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::frame::parse_frame;
    use amq_protocol::protocol::{basic, AMQPClass};
    use bytes::Bytes;

    #[test]
    fn header_splices_into_any_properties() {
        use amq_protocol::types::{AMQPValue, FieldTable};
        let mut existing = FieldTable::default();
        existing.insert("a".into(), AMQPValue::LongString("b".into()));
        let cases = [
            basic::AMQPProperties::default(),
            basic::AMQPProperties::default()
                .with_content_type("text/plain".into())
                .with_priority(4),
            basic::AMQPProperties::default()
                .with_content_encoding("gzip".into())
                .with_headers(existing)
                .with_message_id("m1".into()),
        ];
        for props in cases {
            let raw = ferrymq_broker::message::encode_properties(&props);
            let mut out = Vec::new();
            properties_with_header(&raw, "x-id", "abc-1", &mut out);
            let m = Message::from_wire(
                String::new(),
                String::new(),
                Bytes::from(out),
                Bytes::new(),
                std::time::Instant::now(),
            )
            .expect("valid properties");
            let got = m.properties();
            let headers = got.headers().clone().expect("headers");
            assert_eq!(
                headers.inner().get("x-id"),
                Some(&AMQPValue::LongString("abc-1".into()))
            );
            if let Some(h) = props.headers() {
                for (k, v) in h.inner() {
                    assert_eq!(headers.inner().get(k), Some(v));
                }
            }
            assert_eq!(got.content_type(), props.content_type());
            assert_eq!(got.content_encoding(), props.content_encoding());
            assert_eq!(got.priority(), props.priority());
            assert_eq!(got.message_id(), props.message_id());
        }
    }

    #[test]
    fn deliver_parses_back() {
        let props = basic::AMQPProperties::default().with_priority(3);
        let m = Message::new(
            "ex".into(),
            "rk".into(),
            props.clone(),
            Bytes::from_static(b"hello world"),
        );
        let mut buf = Vec::new();
        deliver(&mut buf, 7, "ctag", 42, true, &m, 4096 + 8);
        let (rest, f) = parse_frame(&buf[..]).unwrap();
        match f {
            AMQPFrame::Method(7, AMQPClass::Basic(basic::AMQPMethod::Deliver(d))) => {
                assert_eq!(d.consumer_tag.as_str(), "ctag");
                assert_eq!(d.delivery_tag, 42);
                assert!(d.redelivered);
                assert_eq!(d.exchange.as_str(), "ex");
                assert_eq!(d.routing_key.as_str(), "rk");
            }
            other => panic!("unexpected {other:?}"),
        }
        let (rest, f) = parse_frame(rest).unwrap();
        match f {
            AMQPFrame::Header(7, h) => {
                assert_eq!(h.body_size, 11);
                assert_eq!(h.properties, props);
            }
            other => panic!("unexpected {other:?}"),
        }
        let (rest, f) = parse_frame(rest).unwrap();
        assert_eq!(f, AMQPFrame::Body(7, b"hello world".to_vec()));
        assert!(rest.is_empty());
    }

    #[test]
    fn body_split_by_frame_max() {
        let m = Message::new(
            String::new(),
            "q".into(),
            Default::default(),
            Bytes::from(vec![1u8; 25]),
        );
        let mut buf = Vec::new();
        content(&mut buf, 1, &m, 18);
        let (mut rest, _) = parse_frame(&buf[..]).unwrap();
        let mut total = 0;
        while !rest.is_empty() {
            let (r, f) = parse_frame(rest).unwrap();
            if let AMQPFrame::Body(_, b) = f {
                assert!(b.len() <= 10);
                total += b.len();
            }
            rest = r;
        }
        assert_eq!(total, 25);
    }
}
