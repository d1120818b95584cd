//! The on-disk record of one message.
//!
//! `u32 len | u32 crc32c(payload) | payload`, where the payload is
//! `u8 flags | [u64 identity] | u64 received_ms | u8 len, exchange |
//! u8 len, routing key | u32 len, encoded properties | body`. The identity (a
//! federated message's digest, flag [`IDENTIFIED`]) rides in the record so that it
//! is durable in the same write and fsync as the message.
//!
//! The checksum starts from a per-segment seed ([`seed`]): segment files are
//! reused, and a whole record left from a file's earlier life, at an offset where
//! a record of its current life could start, must not pass for one. An end mark
//! ([`end_mark`]) after the last record of each write says where the records end.

use crate::message::Message;
use bytes::Bytes;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Where a record lives: segment number and byte offset of its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Loc {
    /// Segment number.
    pub segment: u32,
    /// Offset of the record header within the segment.
    pub offset: u32,
}

const REDELIVERED_BIT: u64 = 1 << 63;

impl Loc {
    /// Packs the location and a redelivered flag into 8 bytes (the paged form).
    pub fn pack(self, redelivered: bool) -> u64 {
        ((self.segment as u64) << 32)
            | self.offset as u64
            | if redelivered { REDELIVERED_BIT } else { 0 }
    }

    /// Unpacks [`Loc::pack`].
    pub fn unpack(r: u64) -> (Loc, bool) {
        (
            Loc {
                segment: ((r & !REDELIVERED_BIT) >> 32) as u32,
                offset: r as u32,
            },
            r & REDELIVERED_BIT != 0,
        )
    }
}

/// Bytes before the payload.
pub const HEADER: usize = 8;
/// Written after the records of every write to a segment (the next write
/// overwrites it): a header no record has (a payload is never empty), so a scan
/// stops there instead of reading what a reused file held before. Its checksum
/// field is tied to the segment, so zeros (a hole a crash can leave) are still
/// damage, not an end.
pub fn end_mark(seed: u32) -> [u8; HEADER] {
    let mut mark = [0; HEADER];
    mark[4..].copy_from_slice(&(!seed).to_be_bytes());
    mark
}

/// The checksum seed of records in segment `segment` of a store that reuses
/// segment files. Distinct segments have distinct seeds (an odd multiplier is a
/// bijection), and CRC32C from different seeds differs for every payload, so a
/// record from a file's earlier life always fails the check. Stores written
/// before files were reused use seed 0 (plain CRC32C).
pub fn seed(segment: u32) -> u32 {
    segment.wrapping_add(1).wrapping_mul(0x9E37_79B1)
}
const PERSISTENT: u8 = 1;
/// The record carries an identity digest after the flags.
const IDENTIFIED: u8 = 2;

/// Appends the record of `m` (with its identity digest, if any) to `buf`,
/// checksummed from `seed`.
pub fn encode(buf: &mut Vec<u8>, m: &Message, seed: u32, identity: Option<u64>) {
    let start = buf.len();
    buf.extend_from_slice(&[0; HEADER]);
    let mut flags = if m.is_persistent() { PERSISTENT } else { 0 };
    if identity.is_some() {
        flags |= IDENTIFIED;
    }
    buf.push(flags);
    if let Some(d) = identity {
        buf.extend_from_slice(&d.to_le_bytes());
    }
    let age = m.received_at.elapsed();
    let received_ms = SystemTime::now()
        .checked_sub(age)
        .unwrap_or(UNIX_EPOCH)
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    buf.extend_from_slice(&received_ms.to_be_bytes());
    let ex = &m.exchange.as_bytes()[..m.exchange.len().min(255)];
    buf.push(ex.len() as u8);
    buf.extend_from_slice(ex);
    let rk = &m.routing_key.as_bytes()[..m.routing_key.len().min(255)];
    buf.push(rk.len() as u8);
    buf.extend_from_slice(rk);
    buf.extend_from_slice(&(m.raw_properties.len() as u32).to_be_bytes());
    buf.extend_from_slice(&m.raw_properties);
    buf.extend_from_slice(&m.body);
    let payload_len = (buf.len() - start - HEADER) as u32;
    let crc = crc32c::crc32c_append(seed, &buf[start + HEADER..]);
    buf[start..start + 4].copy_from_slice(&payload_len.to_be_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_be_bytes());
}

/// Size of the record `encode` writes for `m` (`identified`: with an identity).
pub fn encoded_len(m: &Message, identified: bool) -> usize {
    HEADER
        + 1
        + if identified { 8 } else { 0 }
        + 8
        + 1
        + m.exchange.len().min(255)
        + 1
        + m.routing_key.len().min(255)
        + 4
        + m.raw_properties.len()
        + m.body.len()
}

/// Result of reading one record.
pub enum Read {
    /// A valid record.
    Record(Message),
    /// Not enough bytes for a whole record: a torn tail.
    Truncated,
    /// The checksum or the layout does not match: corruption.
    Corrupt,
}

/// What a recovery scan learns about a record without decoding it.
pub enum Scan {
    /// A valid record.
    Record {
        /// Delivery mode 2.
        persistent: bool,
        /// Body size.
        size: u64,
        /// Total record length (header included).
        len: usize,
        /// Identity digest, if the record carries one.
        identity: Option<u64>,
    },
    /// The [`END`] mark: no more records.
    End,
    /// Not enough bytes for a whole record: a torn tail.
    Truncated,
    /// The checksum or the layout does not match: corruption.
    Corrupt,
}

/// Why the bytes at a position hold no whole, intact record.
enum Damage {
    Truncated,
    Corrupt,
}

/// The payload of the record at the start of `data`, its length and checksum checked.
fn checked_payload(data: &[u8], seed: u32) -> Result<&[u8], Damage> {
    if data.len() < HEADER {
        return Err(Damage::Truncated);
    }
    let len = u32::from_be_bytes(data[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_be_bytes(data[4..8].try_into().expect("4 bytes"));
    let payload = data.get(HEADER..HEADER + len).ok_or(Damage::Truncated)?;
    if crc32c::crc32c_append(seed, payload) != crc {
        return Err(Damage::Corrupt);
    }
    Ok(payload)
}

/// Checks the record at the start of `data` (CRC from `seed`, layout) without allocating.
pub fn scan(data: &[u8], seed: u32) -> Scan {
    if data.starts_with(&end_mark(seed)) {
        return Scan::End;
    }
    let p = match checked_payload(data, seed) {
        Ok(p) => p,
        Err(Damage::Truncated) => return Scan::Truncated,
        Err(Damage::Corrupt) => return Scan::Corrupt,
    };
    let fixed = || -> Option<Scan> {
        let flags = *p.first()?;
        let (identity, mut at) = if flags & IDENTIFIED != 0 {
            (Some(u64::from_le_bytes(p.get(1..9)?.try_into().ok()?)), 9)
        } else {
            (None, 1)
        };
        at += 8;
        at += 1 + *p.get(at)? as usize;
        at += 1 + *p.get(at)? as usize;
        let plen = u32::from_be_bytes(p.get(at..at + 4)?.try_into().ok()?) as usize;
        at += 4 + plen;
        let body = p.len().checked_sub(at)?;
        Some(Scan::Record {
            persistent: flags & PERSISTENT != 0,
            size: body as u64,
            len: HEADER + p.len(),
            identity,
        })
    };
    fixed().unwrap_or(Scan::Corrupt)
}

/// Decodes the record at the start of `data` (CRC from `seed`).
pub fn decode(data: &[u8], seed: u32) -> Read {
    Decoder::new().decode(data, seed)
}

/// Decodes a run of records read back together. It reads the clocks once for the
/// run, and consecutive records with the same properties (one publisher's stream,
/// as a rule) share one copy of them: a refill then allocates per message for the
/// body and routing key only.
pub struct Decoder {
    /// Wall-clock now, in ms since the epoch (records carry wall-clock receive times).
    now_ms: u64,
    /// The same moment on this process's monotonic clock.
    now: Instant,
    /// The properties of the last record decoded.
    last_properties: Bytes,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// A decoder whose clock reading is now.
    pub fn new() -> Self {
        Decoder {
            now_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            now: Instant::now(),
            last_properties: Bytes::new(),
        }
    }

    /// Decodes the record at the start of `data` (CRC from `seed`).
    pub fn decode(&mut self, data: &[u8], seed: u32) -> Read {
        match checked_payload(data, seed).map(|p| self.decode_payload(p)) {
            Ok(Some(m)) => Read::Record(m),
            Err(Damage::Truncated) => Read::Truncated,
            Ok(None) | Err(Damage::Corrupt) => Read::Corrupt,
        }
    }

    fn decode_payload(&mut self, p: &[u8]) -> Option<Message> {
        let mut at = 0usize;
        let mut take = |n: usize| -> Option<&[u8]> {
            let s = p.get(at..at + n)?;
            at += n;
            Some(s)
        };
        let flags = take(1)?[0];
        if flags & IDENTIFIED != 0 {
            take(8)?;
        }
        let received_ms = u64::from_be_bytes(take(8)?.try_into().ok()?);
        let exlen = take(1)?[0] as usize;
        let exchange = String::from_utf8(take(exlen)?.to_vec()).ok()?;
        let rklen = take(1)?[0] as usize;
        let routing_key = String::from_utf8(take(rklen)?.to_vec()).ok()?;
        let plen = u32::from_be_bytes(take(4)?.try_into().ok()?) as usize;
        let raw = take(plen)?;
        let properties = if raw == &self.last_properties[..] {
            self.last_properties.clone()
        } else {
            self.last_properties = Bytes::copy_from_slice(raw);
            self.last_properties.clone()
        };
        let body = Bytes::copy_from_slice(p.get(at..)?);
        // Re-anchor the receive time on this process's monotonic clock so TTLs keep counting.
        let age = Duration::from_millis(self.now_ms.saturating_sub(received_ms));
        let received_at = self.now.checked_sub(age).unwrap_or(self.now);
        Message::from_wire(exchange, routing_key, properties, body, received_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::protocol::basic::AMQPProperties;

    #[test]
    fn roundtrip_and_corruption() {
        let m = Message::new(
            "ex".into(),
            "rk".into(),
            AMQPProperties::default().with_delivery_mode(2),
            Bytes::from_static(b"body"),
        );
        for identity in [None, Some(0xfeed_f00d_u64)] {
            let mut buf = Vec::new();
            encode(&mut buf, &m, 0, identity);
            assert_eq!(buf.len(), encoded_len(&m, identity.is_some()));
            assert!(matches!(scan(&buf, 0),
                Scan::Record { persistent: true, size: 4, len, identity: i } if len == buf.len() && i == identity));
            match decode(&buf, 0) {
                Read::Record(d) => {
                    assert_eq!(
                        (d.exchange.as_str(), d.routing_key.as_str(), &d.body[..]),
                        ("ex", "rk", &b"body"[..])
                    );
                    assert_eq!(d.properties(), m.properties());
                }
                _ => panic!("valid record"),
            }
        }
        let mut buf = Vec::new();
        encode(&mut buf, &m, 0, None);
        assert!(matches!(decode(&buf[..buf.len() - 1], 0), Read::Truncated));
        let mut flipped = buf.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x40;
        assert!(matches!(decode(&flipped, 0), Read::Corrupt));
    }

    #[test]
    fn a_run_of_records_shares_equal_properties_and_keeps_each_ones_own() {
        let make = |props: AMQPProperties, body: &'static [u8]| {
            let m = Message::new("".into(), "rk".into(), props, Bytes::from_static(body));
            let mut buf = Vec::new();
            encode(&mut buf, &m, 0, None);
            buf
        };
        let persistent = AMQPProperties::default().with_delivery_mode(2);
        let typed = persistent.clone().with_content_type("text/plain".into());
        let records = [
            make(persistent.clone(), b"a"),
            make(persistent.clone(), b"b"),
            make(typed.clone(), b"c"),
            make(persistent.clone(), b"d"),
            make(AMQPProperties::default(), b"e"),
        ];
        let mut decoder = Decoder::new();
        let read: Vec<Message> = records
            .iter()
            .map(|r| match decoder.decode(r, 0) {
                Read::Record(m) => m,
                _ => panic!("valid record"),
            })
            .collect();
        let wanted = [
            &persistent,
            &persistent,
            &typed,
            &persistent,
            &AMQPProperties::default(),
        ];
        for ((m, props), body) in read.iter().zip(wanted).zip([b"a", b"b", b"c", b"d", b"e"]) {
            assert_eq!(m.properties(), props);
            assert_eq!(&m.body[..], body);
        }
        // A record keeps its age: five seconds old when written, still as old read back.
        let mut aged = Message::new("".into(), "rk".into(), persistent.clone(), Bytes::new());
        aged.received_at = Instant::now() - Duration::from_secs(5);
        let mut buf = Vec::new();
        encode(&mut buf, &aged, 0, None);
        let Read::Record(back) = decoder.decode(&buf, 0) else {
            panic!("valid record");
        };
        let age = back.received_at.elapsed();
        assert!(
            age >= Duration::from_millis(4990) && age < Duration::from_secs(7),
            "{age:?}"
        );
        // Equal neighbours share one copy; a change starts a new one.
        assert_eq!(
            read[0].raw_properties.as_ptr(),
            read[1].raw_properties.as_ptr()
        );
        assert_ne!(
            read[1].raw_properties.as_ptr(),
            read[3].raw_properties.as_ptr()
        );
        assert!(read[3].is_persistent() && !read[4].is_persistent());
    }

    #[test]
    fn a_record_from_another_segment_never_passes() {
        let m = Message::new(
            String::new(),
            "q".into(),
            AMQPProperties::default().with_delivery_mode(2),
            Bytes::from_static(b"same bytes"),
        );
        for (old, new) in [(0u32, 1u32), (1, 2), (7, 8), (41, 3), (u32::MAX - 1, 0)] {
            assert_ne!(seed(old), seed(new));
            let mut buf = Vec::new();
            encode(&mut buf, &m, seed(old), None);
            assert!(matches!(scan(&buf, seed(old)), Scan::Record { .. }));
            assert!(
                matches!(scan(&buf, seed(new)), Scan::Corrupt),
                "{old} read as {new}"
            );
            assert!(matches!(decode(&buf, seed(new)), Read::Corrupt));
        }
        // Legacy stores (seed 0) read plain CRC32C records.
        let mut buf = Vec::new();
        encode(&mut buf, &m, 0, None);
        let crc = u32::from_be_bytes(buf[4..8].try_into().unwrap());
        assert_eq!(crc, crc32c::crc32c(&buf[HEADER..]));
        // The end mark stops a scan, whatever follows it; zeros are no end mark.
        let mut ended = end_mark(seed(3)).to_vec();
        ended.extend_from_slice(&buf);
        assert!(matches!(scan(&ended, seed(3)), Scan::End));
        assert!(matches!(scan(&ended, seed(4)), Scan::Corrupt));
        assert!(matches!(scan(&[0; 64], seed(3)), Scan::Corrupt));
    }
}
