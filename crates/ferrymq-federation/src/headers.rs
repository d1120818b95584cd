//! Rewriting a federated message's encoded properties without decoding them:
//! take out the upstream's `x-ferrymq-id`, add the `x-received-from` entry, and
//! read the identity and `message-id` on the way. Decoding and re-encoding the
//! properties through the codec allocates a map and a string per field and cost
//! more than everything else a link does per message; this keeps a link at
//! local-queue speed. Anything unusual (an existing `x-received-from`, a field
//! type we do not skip) returns `None` and the caller takes the decoding path.

/// What a fast rewrite produced.
#[derive(Debug, PartialEq, Eq)]
pub struct Rewritten {
    /// The new encoded properties.
    pub properties: Vec<u8>,
    /// The identity recorded in the hop entry.
    pub identity: Option<String>,
}

/// Flag bits of basic properties, in wire order.
const CONTENT_TYPE: u16 = 1 << 15;
const CONTENT_ENCODING: u16 = 1 << 14;
const HEADERS: u16 = 1 << 13;
const DELIVERY_MODE: u16 = 1 << 12;
const PRIORITY: u16 = 1 << 11;
const CORRELATION_ID: u16 = 1 << 10;
const REPLY_TO: u16 = 1 << 9;
const EXPIRATION: u16 = 1 << 8;
const MESSAGE_ID: u16 = 1 << 7;

fn short_str(buf: &[u8], at: usize) -> Option<usize> {
    let len = *buf.get(at)? as usize;
    (at + 1 + len <= buf.len()).then_some(at + 1 + len)
}

fn u32_at(buf: &[u8], at: usize) -> Option<usize> {
    Some(u32::from_be_bytes(buf.get(at..at + 4)?.try_into().ok()?) as usize)
}

/// Offset just past the field value of type `kind` starting at `at`.
fn skip_value(buf: &[u8], kind: u8, at: usize) -> Option<usize> {
    let end = match kind {
        b't' | b'b' | b'B' => at + 1,
        b's' | b'u' => at + 2,
        b'I' | b'i' | b'f' => at + 4,
        b'l' | b'L' | b'd' | b'T' => at + 8,
        b'D' => at + 5,
        b'V' => at,
        b'S' | b'x' | b'A' | b'F' => at + 4 + u32_at(buf, at)?,
        _ => return None,
    };
    (end <= buf.len()).then_some(end)
}

/// Appends a short string.
fn put_short(out: &mut Vec<u8>, s: &str) {
    let s = &s.as_bytes()[..s.len().min(255)];
    out.push(s.len() as u8);
    out.extend_from_slice(s);
}

/// Appends a table entry with a long-string value.
fn put_text(out: &mut Vec<u8>, key: &str, value: &str) {
    put_short(out, key);
    out.push(b'S');
    out.extend_from_slice(&(value.len() as u32).to_be_bytes());
    out.extend_from_slice(value.as_bytes());
}

/// The `x-received-from` header entry (an array holding one table).
pub struct Hop<'a> {
    /// Upstream URI without credentials.
    pub uri: &'a str,
    /// Upstream queue.
    pub queue: &'a str,
    /// The upstream's redelivered flag.
    pub redelivered: bool,
    /// The upstream's cluster name.
    pub cluster_name: &'a str,
}

fn encode_hop_entry(hop: &Hop<'_>, identity: Option<&str>, identity_key: &str, out: &mut Vec<u8>) {
    put_short(out, "x-received-from");
    out.push(b'A');
    let array_at = out.len();
    out.extend_from_slice(&[0; 4]);
    out.push(b'F');
    let table_at = out.len();
    out.extend_from_slice(&[0; 4]);
    put_text(out, "uri", hop.uri);
    put_text(out, "queue", hop.queue);
    put_short(out, "redelivered");
    out.push(b't');
    out.push(hop.redelivered as u8);
    put_text(out, "cluster-name", hop.cluster_name);
    if let Some(id) = identity {
        put_text(out, identity_key, id);
    }
    let table_len = (out.len() - table_at - 4) as u32;
    out[table_at..table_at + 4].copy_from_slice(&table_len.to_be_bytes());
    out[array_at..array_at + 4].copy_from_slice(&(table_len + 5).to_be_bytes());
}

/// Reads the identity header and `message-id`. `identity` is computed from them
/// (so the entry can carry it), then the properties are rebuilt with the
/// identity header removed and an `x-received-from` entry added.
pub fn rewrite(
    raw: &[u8],
    identity_header: &str,
    identity_key: &str,
    hop: &Hop<'_>,
    identity: impl FnOnce(Option<&str>, Option<&str>) -> Option<String>,
) -> Option<Rewritten> {
    let flags = u16::from_be_bytes(raw.get(..2)?.try_into().ok()?);
    if flags & 1 != 0 {
        return None; // a second flag word: not basic properties as clients send them
    }
    let mut pos = 2;
    if flags & CONTENT_TYPE != 0 {
        pos = short_str(raw, pos)?;
    }
    if flags & CONTENT_ENCODING != 0 {
        pos = short_str(raw, pos)?;
    }
    // Everything goes straight into one buffer: flags, the fields before the
    // headers, a table-length placeholder, the kept entries, the hop entry.
    let mut out = Vec::with_capacity(raw.len() + 192);
    out.extend_from_slice(&(flags | HEADERS).to_be_bytes());
    out.extend_from_slice(&raw[2..pos]);
    let table_at = out.len();
    out.extend_from_slice(&[0; 4]);
    let mut ferrymq_id = None;
    let after_headers = if flags & HEADERS != 0 {
        let len = u32_at(raw, pos)?;
        let end = pos + 4 + len;
        if end > raw.len() {
            return None;
        }
        let mut at = pos + 4;
        while at < end {
            let key_end = short_str(raw, at)?;
            let key = &raw[at + 1..key_end];
            let kind = *raw.get(key_end)?;
            let value_end = skip_value(raw, kind, key_end + 1)?;
            if value_end > end {
                return None; // an entry overrunning its table: let the codec judge it
            }
            if key == b"x-received-from" {
                return None; // already federated once: the decoding path handles hops
            }
            if key == identity_header.as_bytes() && kind == b'S' {
                ferrymq_id = Some(std::str::from_utf8(&raw[key_end + 5..value_end]).ok()?);
            } else {
                out.extend_from_slice(&raw[at..value_end]);
            }
            at = value_end;
        }
        end
    } else {
        pos
    };
    // message-id: past delivery-mode, priority, correlation-id, reply-to, expiration.
    let mut at = after_headers;
    if flags & DELIVERY_MODE != 0 {
        at += 1;
    }
    if flags & PRIORITY != 0 {
        at += 1;
    }
    for bit in [CORRELATION_ID, REPLY_TO, EXPIRATION] {
        if flags & bit != 0 {
            at = short_str(raw, at)?;
        }
    }
    let message_id = if flags & MESSAGE_ID != 0 {
        let end = short_str(raw, at)?;
        Some(std::str::from_utf8(&raw[at + 1..end]).ok()?)
    } else {
        None
    };
    let id = identity(ferrymq_id, message_id);
    encode_hop_entry(hop, id.as_deref(), identity_key, &mut out);
    let table_len = (out.len() - table_at - 4) as u32;
    out[table_at..table_at + 4].copy_from_slice(&table_len.to_be_bytes());
    out.extend_from_slice(&raw[after_headers..]);
    Some(Rewritten {
        properties: out,
        identity: id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::protocol::basic::AMQPProperties;
    use amq_protocol::types::{AMQPValue, FieldTable};
    use ferrymq_broker::message::{encode_properties, Message};
    use std::time::Instant;

    fn decode(raw: Vec<u8>) -> AMQPProperties {
        Message::from_wire(
            String::new(),
            String::new(),
            raw.into(),
            Default::default(),
            Instant::now(),
        )
        .expect("valid")
        .properties()
        .clone()
    }

    const HOP: Hop<'static> = Hop {
        uri: "amqp://h:5672/%2F",
        queue: "q",
        redelivered: true,
        cluster_name: "up",
    };

    #[test]
    fn matches_the_codec() {
        let mut headers = FieldTable::default();
        headers.insert("x-ferrymq-id".into(), AMQPValue::LongString("abc-7".into()));
        headers.insert("n".into(), AMQPValue::LongInt(5));
        headers.insert("t".into(), AMQPValue::Timestamp(9));
        let mut nested = FieldTable::default();
        nested.insert("k".into(), AMQPValue::Boolean(true));
        headers.insert("nested".into(), AMQPValue::FieldTable(nested));
        let cases = [
            AMQPProperties::default(),
            AMQPProperties::default()
                .with_content_type("text/plain".into())
                .with_delivery_mode(2)
                .with_priority(4)
                .with_correlation_id("c".into())
                .with_expiration("1000".into())
                .with_message_id("mid".into())
                .with_timestamp(5)
                .with_app_id("app".into()),
            AMQPProperties::default()
                .with_content_encoding("gzip".into())
                .with_headers(headers.clone())
                .with_reply_to("r".into())
                .with_message_id("m2".into()),
        ];
        for props in cases {
            let raw = encode_properties(&props);
            // What the identity function was given: the header and message-id.
            let mut read = None;
            let r = rewrite(&raw, "x-ferrymq-id", "ferrymq-id", &HOP, |f, m| {
                read = Some((f.map(String::from), m.map(String::from)));
                f.or(m).map(String::from)
            })
            .expect("fast path");
            let (ferrymq_id, message_id) = read.expect("identity asked for");
            assert_eq!(
                message_id.as_deref(),
                props.message_id().as_ref().map(|m| m.as_str())
            );
            let got = decode(r.properties);
            assert_eq!(got.content_type(), props.content_type());
            assert_eq!(got.content_encoding(), props.content_encoding());
            assert_eq!(got.delivery_mode(), props.delivery_mode());
            assert_eq!(got.priority(), props.priority());
            assert_eq!(got.message_id(), props.message_id());
            assert_eq!(got.timestamp(), props.timestamp());
            assert_eq!(got.app_id(), props.app_id());
            assert_eq!(got.reply_to(), props.reply_to());
            let h = got.headers().clone().unwrap();
            assert!(h.inner().get("x-ferrymq-id").is_none());
            if let Some(orig) = props.headers() {
                assert_eq!(ferrymq_id.as_deref(), Some("abc-7"));
                for key in ["n", "t", "nested"] {
                    assert_eq!(h.inner().get(key), orig.inner().get(key), "{key}");
                }
            }
            let Some(AMQPValue::FieldArray(hops)) = h.inner().get("x-received-from") else {
                panic!("no x-received-from");
            };
            let Some(AMQPValue::FieldTable(entry)) = hops.as_slice().first() else {
                panic!("empty")
            };
            let e = entry.inner();
            assert_eq!(e.get("queue"), Some(&AMQPValue::LongString("q".into())));
            assert_eq!(e.get("redelivered"), Some(&AMQPValue::Boolean(true)));
            assert_eq!(
                e.get("cluster-name"),
                Some(&AMQPValue::LongString("up".into()))
            );
            let expected_id = ferrymq_id.or(message_id);
            assert_eq!(r.identity, expected_id);
            assert_eq!(
                e.get("ferrymq-id"),
                expected_id
                    .map(|id| AMQPValue::LongString(id.as_str().into()))
                    .as_ref()
            );
        }
    }

    #[test]
    fn existing_hops_take_the_slow_path() {
        let mut headers = FieldTable::default();
        headers.insert(
            "x-received-from".into(),
            AMQPValue::FieldArray(Default::default()),
        );
        let raw = encode_properties(&AMQPProperties::default().with_headers(headers));
        assert!(rewrite(&raw, "x-ferrymq-id", "ferrymq-id", &HOP, |_, _| None).is_none());
    }
}
